/**
 * The pieces of lib/crypto composed the way the client and server cores
 * will use them (docs/SECURE_CHANNEL.md), as an executable sketch for the
 * integration: a client reaches a loaded server through a cookie round
 * trip, completes IK with a login payload, exchanges transport datagrams
 * both ways, and rekeys without losing a message; replays and strangers
 * are dropped without a reply.
 */
import { assert, assertEquals, assertThrows } from "@std/assert";
import { SeededRandom } from "../lib/random.ts";
import { CookieChecker, type SourceAddress } from "../lib/crypto/cookie_checker.ts";
import { CookieGenerator } from "../lib/crypto/cookie_generator.ts";
import { CryptoError } from "../lib/crypto/crypto_error.ts";
import { HandshakeState } from "../lib/crypto/handshake_state.ts";
import { generateKeyPair, type KeyPair } from "../lib/crypto/key_pair.ts";
import {
  decodeSecureDatagram,
  encodeSecureDatagram,
  type SecureDatagram,
} from "../lib/crypto/secure_datagram.ts";
import { TransportSession } from "../lib/crypto/transport_session.ts";

const encoder = new TextEncoder(), decoder = new TextDecoder();
const PROLOGUE = encoder.encode("switchboard/3 client-server");
const CLIENT_ADDRESS: SourceAddress = { address: "198.51.100.7", port: 41_000 };

/** The server side: validates MACs, answers handshakes, keeps sessions by index. */
class Server {
  readonly keys: KeyPair;
  readonly checker: CookieChecker;
  readonly sessions = new Map<number, { session: TransportSession; peer: number }>();
  underLoad = false;
  #random: SeededRandom;

  constructor(random: SeededRandom) {
    this.#random = random;
    this.keys = generateKeyPair(random);
    this.checker = new CookieChecker(this.keys.publicKey, { random });
  }

  /** One datagram in; at most one datagram out, never larger than what came in unless authenticated. */
  receive(
    bytes: Uint8Array,
    from: SourceAddress,
    now: number,
  ): { reply?: Uint8Array; text?: string } {
    const datagram = decodeSecureDatagram(bytes);
    if (datagram.kind === "initiation") {
      const verdict = this.checker.check(bytes, from, now, this.underLoad);
      if (verdict.kind === "drop") return {};
      if (verdict.kind === "cookie") {
        return {
          reply: encodeSecureDatagram({
            kind: "cookie_reply",
            receiver: datagram.sender,
            ...verdict.reply,
          }),
        };
      }
      const handshake = new HandshakeState({
        pattern: "IK",
        initiator: false,
        staticKeyPair: this.keys,
        prologue: PROLOGUE,
        random: this.#random,
      });
      const login = decoder.decode(handshake.readMessage(datagram.handshake));
      const index = 1_000 + this.sessions.size;
      const response = encodeSecureDatagram({
        kind: "response",
        sender: index,
        receiver: datagram.sender,
        handshake: handshake.writeMessage(encoder.encode(`welcome ${login}`)),
      });
      const reply = new CookieGenerator(handshake.remoteStaticKey!).addMacs(response, now);
      this.sessions.set(index, {
        session: new TransportSession(handshake.split(), { now, initiator: false }),
        peer: datagram.sender,
      });
      return { reply };
    }
    if (datagram.kind === "transport") {
      const entry = this.sessions.get(datagram.receiver);
      if (entry === undefined) return {};
      const text = decoder.decode(entry.session.open(datagram.counter, datagram.ciphertext, now));
      const echo = entry.session.seal(encoder.encode(`echo ${text}`), now);
      return {
        text,
        reply: encodeSecureDatagram({ kind: "transport", receiver: entry.peer, ...echo }),
      };
    }
    return {};
  }
}

/** The client side: one handshake at a time, the current session and the one before. */
class Client {
  readonly keys: KeyPair;
  readonly macs: CookieGenerator;
  readonly ownChecker: CookieChecker;
  handshake: HandshakeState | undefined;
  index = 0;
  current: { session: TransportSession; peer: number; index: number } | undefined;
  previous: { session: TransportSession; peer: number; index: number } | undefined;
  #random: SeededRandom;
  #serverKey: Uint8Array;

  constructor(random: SeededRandom, serverKey: Uint8Array) {
    this.#random = random;
    this.#serverKey = serverKey;
    this.keys = generateKeyPair(random);
    this.macs = new CookieGenerator(serverKey);
    this.ownChecker = new CookieChecker(this.keys.publicKey, { random });
  }

  initiation(now: number, login: string): Uint8Array {
    this.handshake = new HandshakeState({
      pattern: "IK",
      initiator: true,
      staticKeyPair: this.keys,
      remoteStaticKey: this.#serverKey,
      prologue: PROLOGUE,
      random: this.#random,
    });
    this.index++;
    const handshake = this.handshake.writeMessage(encoder.encode(login));
    return this.macs.addMacs(
      encodeSecureDatagram({ kind: "initiation", sender: this.index, handshake }),
      now,
    );
  }

  receive(bytes: Uint8Array, now: number): string | undefined {
    const datagram: SecureDatagram = decodeSecureDatagram(bytes);
    if (datagram.kind === "cookie_reply" && datagram.receiver === this.index) {
      this.macs.consumeReply(datagram, now);
      return undefined;
    }
    if (datagram.kind === "response" && datagram.receiver === this.index && this.handshake) {
      if (this.ownChecker.check(bytes, CLIENT_ADDRESS, now, false).kind !== "accept") {
        return undefined;
      }
      const welcome = decoder.decode(this.handshake.readMessage(datagram.handshake));
      this.previous = this.current;
      this.current = {
        session: new TransportSession(this.handshake.split(), { now, initiator: true }),
        peer: datagram.sender,
        index: this.index,
      };
      this.handshake = undefined;
      return welcome;
    }
    if (datagram.kind === "transport") {
      for (const entry of [this.current, this.previous]) {
        if (entry !== undefined && datagram.receiver === entry.index) {
          return decoder.decode(entry.session.open(datagram.counter, datagram.ciphertext, now));
        }
      }
    }
    return undefined;
  }

  send(text: string, now: number): Uint8Array {
    const { session, peer } = this.current!;
    return encodeSecureDatagram({
      kind: "transport",
      receiver: peer,
      ...session.seal(encoder.encode(text), now),
    });
  }
}

Deno.test("secure flow: cookie under load, IK login, transport both ways, rekey, replays dropped", () => {
  const random = new SeededRandom(18);
  const server = new Server(random);
  const client = new Client(random, server.keys.publicKey);
  server.underLoad = true;

  // Under load, the first initiation gets only a cookie reply, smaller than itself.
  const first = client.initiation(0, "alice");
  const cookie = server.receive(first, CLIENT_ADDRESS, 0).reply!;
  assert(cookie.length < first.length);
  assertEquals(client.receive(cookie, 10), undefined);

  // With mac2, the next one is served: the response carries the login's answer.
  const response = server.receive(client.initiation(20, "alice"), CLIENT_ADDRESS, 20).reply!;
  assertEquals(client.receive(response, 30), "welcome alice");

  // Transport both ways; a replayed datagram is refused and has no effect.
  const hello = client.send("hello", 40);
  const echoed = server.receive(hello, CLIENT_ADDRESS, 40);
  assertEquals(echoed.text, "hello");
  assertEquals(client.receive(echoed.reply!, 50), "echo hello");
  assertEquals(
    assertThrows(() => server.receive(hello, CLIENT_ADDRESS, 60), CryptoError).code,
    "replayed",
  );

  // After two minutes the client rekeys; a datagram sealed under the old keys still opens.
  assert(client.current!.session.rekeyDue(120_040));
  const late = client.send("sent before the rekey", 120_040);
  const rekeyed =
    server.receive(client.initiation(120_050, "alice"), CLIENT_ADDRESS, 120_050).reply;
  // The cookie from 20 ms in is older than two minutes by now: under load this is another cookie.
  assertEquals(decodeSecureDatagram(rekeyed!).kind, "cookie_reply");
  client.receive(rekeyed!, 120_060);
  const response2 = server.receive(client.initiation(120_070, "alice"), CLIENT_ADDRESS, 120_070)
    .reply!;
  assertEquals(client.receive(response2, 120_080), "welcome alice");
  const lateEcho = server.receive(late, CLIENT_ADDRESS, 120_090);
  assertEquals(lateEcho.text, "sent before the rekey");
  assertEquals(client.receive(lateEcho.reply!, 120_095), "echo sent before the rekey");
  assertEquals(
    server.receive(client.send("after", 120_100), CLIENT_ADDRESS, 120_100).text,
    "after",
  );
});

Deno.test("secure flow: a stranger without the server key, or from another port, gets no handshake", () => {
  const random = new SeededRandom(19);
  const server = new Server(random);
  const stranger = new Client(random, generateKeyPair(random).publicKey);
  assertEquals(server.receive(stranger.initiation(0, "mallory"), CLIENT_ADDRESS, 0), {});

  server.underLoad = true;
  const client = new Client(random, server.keys.publicKey);
  client.receive(server.receive(client.initiation(0, "bob"), CLIENT_ADDRESS, 0).reply!, 0);
  const otherPort = { ...CLIENT_ADDRESS, port: CLIENT_ADDRESS.port + 1 };
  const reply = server.receive(client.initiation(1, "bob"), otherPort, 1).reply!;
  assertEquals(decodeSecureDatagram(reply).kind, "cookie_reply");
  assertEquals(server.sessions.size, 0);
});
