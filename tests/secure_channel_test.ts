/**
 * The client's ServerChannel against the server's ClientChannels, with no
 * network between them: the handshake, queued messages, both directions,
 * tampered and replayed input dropped without a reply or effect, a
 * man-in-the-middle's key refused, rekeying, re-handshaking after a server
 * restart, and with another instance of the same key after a failover.
 */
import { assert, assertEquals, assertNotEquals } from "@std/assert";
import { SeededRandom } from "../lib/random.ts";
import { generateKeyPair } from "../lib/crypto/key_pair.ts";
import { type ChannelInput, ServerChannel } from "../lib/client/server_channel.ts";
import { ClientChannels } from "../lib/server/client_channels.ts";
import { ServerGuard } from "../lib/client/server_guard.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";

const encoder = new TextEncoder(), decoder = new TextDecoder();
const ROUTE = "udp 127.0.0.1 40000";
const SOURCE = { address: "127.0.0.1", port: 40_000 };

function sentOn(input: ChannelInput): Uint8Array[] {
  if (input.kind !== "established") throw new Error(`Expected a handshake, got ${input.kind}`);
  return input.send;
}

function textOf(input: ChannelInput): string {
  if (input.kind !== "message") throw new Error(`Expected a message, got ${input.kind}`);
  return decoder.decode(input.plaintext);
}

function setUp(seed = 1) {
  const random = new SeededRandom(seed);
  const serverKeys = generateKeyPair(random);
  const server = new ClientChannels({ staticKeyPair: serverKeys, random });
  const client = new ServerChannel({
    serverKey: serverKeys.publicKey,
    staticKeyPair: generateKeyPair(random),
    random,
  });
  return { random, serverKeys, server, client };
}

/** Delivers client datagrams to the server; returns the server's replies and the messages it opened. */
function toServer(server: ClientChannels, datagrams: Uint8Array[], now: number) {
  const replies: Uint8Array[] = [], messages: string[] = [];
  for (const bytes of datagrams) {
    const input = server.receive(bytes, ROUTE, SOURCE, now);
    if (input.kind === "reply") replies.push(input.bytes);
    if (input.kind === "message" && input.plaintext.length > 0) {
      messages.push(decoder.decode(input.plaintext));
    }
  }
  return { replies, messages };
}

/** Runs the handshake with messages queued; returns what the server opened. */
function connect(client: ServerChannel, server: ClientChannels, now: number, ...texts: string[]) {
  const first = texts.flatMap((t) => client.send(encoder.encode(t), now));
  const { replies } = toServer(server, first, now);
  assertEquals(replies.length, 1);
  return toServer(server, sentOn(client.receive(replies[0], now)), now);
}

Deno.test("ServerChannel queues messages until the IK handshake completes, then both ways work", () => {
  const { client, server } = setUp();
  const first = client.send(encoder.encode("register alice"), 0);
  assertEquals(first.length, 1, "only the initiation leaves before the handshake");
  const initiationBytes = first[0].length;
  const { replies } = toServer(server, first, 0);
  assert(replies[0].length < initiationBytes, "the response is smaller than the initiation");
  const established = client.receive(replies[0], 5);
  assertEquals(toServer(server, sentOn(established), 5).messages, ["register alice"]);
  // The server answers on the route the session proved itself on.
  const sealed = server.seal(ROUTE, encoder.encode("register_ok"), 6)!;
  assertEquals(textOf(client.receive(sealed, 7)), "register_ok");
  assertEquals(server.seal("udp 127.0.0.1 9", encoder.encode("x"), 8), undefined);
  // The server knows the client's static key, for the peers' introductions.
  assertEquals(server.clientKey(ROUTE)?.length, 32);
  assert(!new TextDecoder("latin1").decode(sealed).includes("register_ok"));
});

Deno.test("ClientChannels drops bit-flipped, truncated, replayed and stale datagrams without reply or effect", () => {
  const { client, server } = setUp(2);
  connect(client, server, 0, "hello");
  const datagrams = Array.from(
    { length: 2100 },
    (_, i) => client.send(encoder.encode(`m${i}`), 10)[0],
  );
  const [m0, m1] = datagrams;
  for (let bit = 0; bit < m1.length * 8; bit += 7) {
    const flipped = m1.slice();
    flipped[bit >> 3] ^= 1 << (bit & 7);
    assertEquals(server.receive(flipped, ROUTE, SOURCE, 11).kind, "dropped", `bit ${bit}`);
  }
  for (let length = 0; length < m1.length; length += 3) {
    assertEquals(server.receive(m1.subarray(0, length), ROUTE, SOURCE, 11).kind, "dropped");
  }
  // None of that moved the window: the real m1 still opens, once.
  assertEquals(toServer(server, [m1], 12).messages, ["m1"]);
  assertEquals(server.receive(m1, ROUTE, SOURCE, 12), { kind: "dropped", reason: "replayed" });
  // Far ahead, then m0 is older than the 2048-message window remembers.
  assertEquals(toServer(server, [datagrams[2099]], 13).messages, ["m2099"]);
  assertEquals(server.receive(m0, ROUTE, SOURCE, 13), { kind: "dropped", reason: "stale_counter" });
  // A replayed or flipped initiation gets nothing back that the client could use.
  assertEquals(
    server.receive(Uint8Array.of(0x53, 0x57, 3, 0x84), ROUTE, SOURCE, 14).kind,
    "dropped",
  );
});

Deno.test("ServerChannel refuses a man-in-the-middle that presents its own server key", () => {
  const { client, random } = setUp(3);
  // The MITM's server cannot even check the initiation's mac1: no answer at all.
  const mitm = new ClientChannels({ staticKeyPair: generateKeyPair(random), random });
  const initiation = client.send(encoder.encode("login alice secret"), 0);
  assertEquals(mitm.receive(initiation[0], ROUTE, SOURCE, 0), {
    kind: "dropped",
    reason: "bad_mac1",
  });
  // A client that was told the MITM's key talks only to the MITM, never to the real server.
  const { server } = setUp(3);
  const fooled = new ServerChannel({
    serverKey: generateKeyPair(random).publicKey,
    staticKeyPair: generateKeyPair(random),
    random,
  });
  const sent = fooled.send(encoder.encode("x"), 0);
  assertEquals(server.receive(sent[0], ROUTE, SOURCE, 0).kind, "dropped");
  // A forged response (another responder's keys) does not establish the client's session.
  const otherServer = new ClientChannels({ staticKeyPair: generateKeyPair(random), random });
  const other = new ServerChannel({
    serverKey: generateKeyPair(random).publicKey,
    staticKeyPair: generateKeyPair(random),
    random,
  });
  const forged = otherServer.receive(other.send(encoder.encode("x"), 0)[0], ROUTE, SOURCE, 0);
  assertEquals(forged.kind, "dropped");
  assertEquals(client.isEstablished, false);
});

Deno.test("ServerChannel rekeys when due and keeps every message across the change", () => {
  const random = new SeededRandom(4);
  const serverKeys = generateKeyPair(random);
  const limits = { rekeyAfterMs: 1_000, rejectAfterMs: 1_500 };
  const server = new ClientChannels({ staticKeyPair: serverKeys, random, limits });
  const client = new ServerChannel({
    serverKey: serverKeys.publicKey,
    staticKeyPair: generateKeyPair(random),
    random,
    limits,
  });
  connect(client, server, 0, "a");
  // Rekey due: the initiation and the message under the old keys leave together.
  const both = client.send(encoder.encode("b"), 1_100);
  assertEquals(both.length, 2);
  const { replies, messages } = toServer(server, both, 1_100);
  assertEquals(messages, ["b"]);
  const established = client.receive(replies[0], 1_110);
  assertEquals(client.handshakes, 2);
  toServer(server, sentOn(established), 1_110);
  // Past the old keys' age, everything flows under the new ones.
  assertEquals(toServer(server, client.send(encoder.encode("c"), 1_600), 1_600).messages, ["c"]);
  assertEquals(textOf(client.receive(server.seal(ROUTE, encoder.encode("d"), 1_600)!, 1_600)), "d");
});

Deno.test("ServerChannel re-handshakes with a restarted server once a request goes unanswered", () => {
  const { client, server, serverKeys, random } = setUp(5);
  connect(client, server, 0, "login");
  const restarted = new ClientChannels({ staticKeyPair: serverKeys, random });
  const lost = client.send(encoder.encode("heartbeat"), 100);
  assertEquals(restarted.receive(lost[0], ROUTE, SOURCE, 100), {
    kind: "dropped",
    reason: "unknown_index",
  });
  // The retransmission says the earlier attempts went unanswered: an initiation leaves too.
  const retry = client.send(encoder.encode("heartbeat"), 1_600, true);
  assertEquals(retry.length, 2);
  const { replies } = toServer(restarted, retry, 1_600);
  sentOn(client.receive(replies[0], 1_610));
  assertEquals(toServer(restarted, client.send(encoder.encode("login"), 1_620), 1_620).messages, [
    "login",
  ]);
  assertNotEquals(restarted.seal(ROUTE, encoder.encode("ok"), 1_630), undefined);
});

Deno.test("ClientChannels answers an initiation under load with a cookie for its port, then serves the one that brings it", () => {
  const { client, server } = setUp(6);
  const first = client.send(encoder.encode("register"), 0);
  const cookie = server.receive(first[0], ROUTE, SOURCE, 0, true);
  if (cookie.kind !== "reply") throw new Error(`expected a cookie reply, got ${cookie.kind}`);
  assertEquals(cookie.bytes.length, 64);
  assert(cookie.bytes.length < first[0].length, "the cookie is smaller than the initiation");
  assertEquals(server.size, 0, "no state for a cookie");
  assertEquals(client.receive(cookie.bytes, 10).kind, "dropped");
  // The next send carries mac2; from another port of the same address it is not valid.
  const second = client.send(encoder.encode("register"), 500);
  const otherPort = server.receive(second[0], ROUTE, { ...SOURCE, port: 40_001 }, 500, true);
  assertEquals(otherPort.kind === "reply" && otherPort.bytes.length, 64, "another cookie");
  const served = server.receive(second[0], ROUTE, SOURCE, 500, true);
  if (served.kind !== "reply") throw new Error(`expected a response, got ${served.kind}`);
  assertEquals(served.bytes[3], 0x82);
  assertEquals(server.size, 1);
});

Deno.test("ServerGuard.moved handshakes at once with another instance of the same key, and only the same key", () => {
  const random = new SeededRandom(9);
  const serverKeys = generateKeyPair(random);
  const guard = new ServerGuard({
    staticKeyPair: generateKeyPair(random),
    random,
    server: "a:3000",
    pinnedKey: serverKeys.publicKey,
  });
  const heartbeat = {
    type: "heartbeat",
    reqId: 7,
    client: "00000000000000aa",
    token: new Uint8Array(16),
  } as const;
  const a = new ClientChannels({ staticKeyPair: serverKeys, random });
  const { replies } = toServer(a, guard.outgoing(heartbeat, 0, 1), 0);
  assertEquals(guard.incoming(replies[0], 5).send.length, 1, "the queued heartbeat");
  // Instance A is gone; B holds the same key but has no session with this client.
  const b = new ClientChannels({ staticKeyPair: serverKeys, random });
  const moved = guard.moved(100, "b:3000");
  assertEquals(moved.length, 1);
  // Sent before B answers: it waits for B's keys (A's would be lost on B).
  assertEquals(guard.outgoing({ ...heartbeat, reqId: 8 }, 101, 1), []);
  const answer = toServer(b, moved, 100).replies;
  assertEquals(answer.length, 1, "B answers the initiation");
  const flushed = guard.incoming(answer[0], 105).send;
  assertEquals(flushed.length, 1, "the heartbeat that waited");
  const waited = b.receive(flushed[0], ROUTE, SOURCE, 106);
  assertEquals(waited.kind === "message" && decodeMessage(waited.plaintext).type, "heartbeat");
  const opened = b.receive(guard.outgoing(heartbeat, 110, 2)[0], ROUTE, SOURCE, 110);
  assertEquals(opened.kind === "message" && decodeMessage(opened.plaintext).type, "heartbeat");
  // An instance with another key cannot complete it: the pin holds across instances.
  const impostor = new ClientChannels({ staticKeyPair: generateKeyPair(random), random });
  assertEquals(toServer(impostor, guard.moved(200, "c:3000"), 200).replies, []);
  // Before the key is known there is nothing to move.
  const fresh = new ServerGuard({
    staticKeyPair: generateKeyPair(random),
    random,
    server: "a:3000",
  });
  assertEquals(fresh.moved(0, "b:3000"), []);
});

Deno.test("ServerGuard checks the key with a clear hello when a request goes unanswered, and refuses another key at once, failing what is in flight", () => {
  const random = new SeededRandom(11);
  const serverKeys = generateKeyPair(random);
  const guard = new ServerGuard({
    staticKeyPair: generateKeyPair(random),
    random,
    server: "a:3000",
    pinnedKey: serverKeys.publicKey,
  });
  const heartbeat = (reqId: number) =>
    ({ type: "heartbeat", reqId, client: "00000000000000aa", token: new Uint8Array(16) }) as const;
  const server = new ClientChannels({ staticKeyPair: serverKeys, random });
  const { replies } = toServer(server, guard.outgoing(heartbeat(1), 0, 1), 0);
  guard.incoming(replies[0], 5);
  const clear = (datagrams: Uint8Array[]) => datagrams.filter((d) => (d[3] & 0x80) === 0);
  assertEquals(clear(guard.outgoing(heartbeat(2), 10, 1)), [], "a first attempt asks nothing");
  // Unanswered: the retransmission carries a clear hello of the guard's own (once a second).
  const probes = clear(guard.outgoing(heartbeat(2), 600, 2));
  assertEquals(probes.length, 1);
  assertEquals(clear(guard.outgoing(heartbeat(2), 900, 3)), [], "at most one a second");
  const hello = decodeMessage(probes[0]);
  if (hello.type !== "hello") throw new Error(`expected a hello, got ${hello.type}`);
  // The server came back with another key: its hello_ok says so.
  const other = generateKeyPair(random).publicKey;
  const helloOk = encodeMessage({
    type: "hello_ok",
    reqId: hello.reqId,
    tcpPort: 3001,
    serverVersion: "x",
    auth: 0,
    leaseMs: 30_000,
    serverKey: other,
  });
  const input = guard.incoming(helloOk, 1000);
  assert(input.refused?.includes("has changed"), input.refused);
  // Every request in flight (neither heartbeat was answered) fails with that line.
  assertEquals(
    input.messages.map((m) => m.type === "error" && [m.reqId, m.message]),
    [[1, input.refused], [2, input.refused]],
  );
  assertEquals(guard.outgoing(heartbeat(3), 1100, 1), [], "nothing more goes to it");
  assertEquals(guard.refusal, input.refused);
});

Deno.test("ServerGuard ignores a clear bad_request to its first hello (a truncated copy drew it) and still takes the real answer", () => {
  const random = new SeededRandom(13);
  const serverKeys = generateKeyPair(random);
  const guard = new ServerGuard({
    staticKeyPair: generateKeyPair(random),
    random,
    server: "a:3000",
  });
  const sent = guard.outgoing({ type: "hello", reqId: 5, client: "00000000000000aa" }, 0, 1);
  assertEquals(sent.length, 1, "a clear hello: no key to handshake with yet");
  const refusal = (code: number) =>
    encodeMessage({
      type: "error",
      reqId: 5,
      code,
      message: "Pad hello to 312 bytes (it came in 227)",
    });
  const altered = guard.incoming(refusal(ERROR_CODES.bad_request), 3);
  assertEquals(altered.messages, [], "our hello was padded: the refusal is of someone else's copy");
  // Other refusals are the server's word on our hello, and the core hears them.
  assertEquals(guard.incoming(refusal(ERROR_CODES.busy), 4).messages.map((m) => m.type), ["error"]);
  const answer = guard.incoming(
    encodeMessage({
      type: "hello_ok",
      reqId: 5,
      tcpPort: 3001,
      serverVersion: "x",
      auth: 0,
      leaseMs: 30_000,
      serverKey: serverKeys.publicKey,
    }),
    6,
  );
  assertEquals(answer.messages.map((m) => m.type), ["hello_ok"]);
});

Deno.test("ServerGuard says another instance answered with another key after a move, and names the pin's entry under the first", () => {
  const random = new SeededRandom(12);
  const serverKeys = generateKeyPair(random);
  const guard = new ServerGuard({
    staticKeyPair: generateKeyPair(random),
    random,
    server: "a:3000",
    pinnedKey: serverKeys.publicKey,
    pinFile: "known_servers.json",
  });
  const moved = guard.moved(0, "b:3000");
  assertEquals(moved.length, 1);
  const heartbeat = {
    type: "heartbeat",
    reqId: 1,
    client: "00000000000000aa",
    token: new Uint8Array(16),
  } as const;
  const probe = guard.outgoing(heartbeat, 2000, 2).filter((d) => (d[3] & 0x80) === 0);
  const hello = decodeMessage(probe[0]);
  if (hello.type !== "hello") throw new Error(`expected a hello, got ${hello.type}`);
  const input = guard.incoming(
    encodeMessage({
      type: "hello_ok",
      reqId: hello.reqId,
      tcpPort: 3001,
      serverVersion: "x",
      auth: 0,
      leaseMs: 30_000,
      serverKey: generateKeyPair(random).publicKey,
    }),
    2001,
  );
  assert(
    input.dropped?.startsWith("b:3000, another instance of a:3000, has another key ("),
    input.dropped,
  );
  assert(
    input.dropped?.includes("remove the entry of a:3000 from known_servers.json"),
    input.dropped,
  );
});
