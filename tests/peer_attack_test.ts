/**
 * An attacker's pass at peer sessions on real sockets (loopback): the real
 * server and client drivers, and an attacker with UDP sockets of its own on
 * other loopback addresses. Bob sits behind a recorder, so the attacker holds
 * a copy of everything that reached him. Each attack must change nothing
 * Bob's user sees, and cost bounded work:
 *
 * - Alice's captured `peer_connect`, replayed during the session, after it
 *   ended, and from another address: no request shown, no lookup;
 * - a forged `peer_sealed` under the live session id: nothing delivered;
 * - a `peer_connect` that presents Alice's vouched key without her private
 *   key: nothing shown, no answer, no lookup;
 * - a flood of fresh initiations from many source addresses: the lookups it
 *   causes stop at the budget for all addresses, and Alice and Bob keep
 *   chatting through it.
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import type { ClientEvent } from "../lib/client/client_event.ts";
import { MAX_REQUEST_WORK_PER_SECOND } from "../lib/client/peer_requests.ts";
import { generateKeyPair, type KeyPair } from "../lib/crypto/key_pair.ts";
import { cryptoRandom } from "../lib/random.ts";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { ServerDriver } from "../lib/io/server_driver.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import { forgeInitiation } from "./_peer_keys.ts";
import { RecordingNat } from "./_recording_nat.ts";

const HOST = "127.0.0.1";
const FAST_RETRY = { initialMs: 100, maxMs: 400, jitter: 0.2, giveUpMs: 10_000 };

/** Waits (at most 20 s) until `check` holds. */
async function until(check: () => boolean, what: string): Promise<void> {
  const end = performance.now() + 20_000;
  while (!check()) {
    if (performance.now() > end) throw new Error(`never saw ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A socket on another loopback address, keeping what it receives. */
function attacker(
  ip: string,
): { socket: Deno.DatagramConn; got: Uint8Array[]; done: Promise<void> } {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: ip, port: 0 });
  const got: Uint8Array[] = [];
  const done = (async () => {
    try {
      for await (const [data] of socket) got.push(data.slice());
    } catch {
      // closed
    }
  })();
  return { socket, got, done };
}

Deno.test("an attacker's replays, forgeries, a borrowed key and a flood change nothing for Bob", async () => {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_peer_attack_" });
  const server = await ServerDriver.start({
    host: HOST,
    udpPort: 0,
    tcpPort: 0,
    dataDir: join(dir, "server"),
    version: "0.0.0-test",
  });
  const recorder = new RecordingNat(server.udpPort);
  const mallory = attacker("127.0.0.66");
  const bobEvents: ClientEvent[] = [];
  const aliceEvents: ClientEvent[] = [];
  const clients: ClientDriver[] = [];
  try {
    const alice = await ClientDriver.open({
      serverHost: HOST,
      serverPort: server.udpPort,
      udpPort: 0,
      tcpPort: 5001,
      name: "Alice",
      via: "udp",
      retry: FAST_RETRY,
      // Straight between the peers, where the recorder sees what travels (no relay).
      traverse: false,
      onEvent: (event) => aliceEvents.push(event),
    });
    clients.push(alice);
    const bob = await ClientDriver.open({
      serverHost: HOST,
      serverPort: recorder.insidePort(server.udpPort),
      udpPort: 0,
      tcpPort: 5002,
      name: "Bob",
      via: "udp",
      retry: FAST_RETRY,
      traverse: false,
      onEvent: (event) => bobEvents.push(event),
    });
    clients.push(bob);
    for (const client of [alice, bob]) {
      assert((await client.run({ kind: "hello" })).ok);
      assert((await client.run({ kind: "register" })).ok);
    }
    const bobAt: Deno.NetAddr = { transport: "udp", hostname: HOST, port: recorder.port };
    const aliceKey = server.core.sessions.byName("Alice")!.key!;
    const bobKey = server.core.sessions.byName("Bob")!.key!;
    const requests = () => bobEvents.filter((e) => e.kind.startsWith("request")).length;
    const lookups = () => server.core.stats.requests;

    const accepted = bob.run({ kind: "accept" });
    assert((await alice.run({ kind: "connect", name: "Bob" })).ok);
    assert((await accepted).ok);
    assert((await alice.run({ kind: "send", text: "first" })).ok);
    const toBob = recorder.datagrams.filter((d) => d.peer && d.toHost).map((d) => d.bytes);
    const captured = toBob.map((bytes) => decodeMessage(bytes));
    const connect = toBob[captured.findIndex((m) => m.type === "peer_connect")];
    const sealed = captured.find((m) => m.type === "peer_sealed");
    if (connect === undefined || sealed?.type !== "peer_sealed") throw new Error("no capture");
    assertEquals(requests(), 1);

    // 1. The captured peer_connect, replayed during the session, from Mallory's address.
    let before = lookups();
    for (let i = 0; i < 20; i++) await mallory.socket.send(connect, bobAt);
    // 2. A forged peer_sealed under the live session id: every counter, random bytes.
    for (let counter = 0; counter < 50; counter++) {
      const forged = encodeMessage({
        type: "peer_sealed",
        session: sealed.session,
        counter,
        sealed: cryptoRandom.bytes(40),
      });
      await mallory.socket.send(forged, bobAt);
    }
    // 3. Alice's vouched key presented without her private key (any private key will do).
    const borrowed: KeyPair = { ...generateKeyPair(cryptoRandom), publicKey: aliceKey };
    const withBorrowedKey = forgeInitiation({
      session: "0badc0ffee000001",
      keys: borrowed,
      to: bobKey,
      name: "Alice",
      atMs: Date.now(),
    });
    for (let i = 0; i < 5; i++) await mallory.socket.send(withBorrowedKey, bobAt);
    assert((await alice.run({ kind: "send", text: "second" })).ok);
    assertEquals(requests(), 1, "no request shown for a replay or a borrowed key");
    assert(lookups() - before <= 2, `${lookups() - before} requests to the server`);
    const texts = () => bobEvents.flatMap((e) => e.kind === "message" ? [e.text] : []);
    assertEquals(texts(), ["first", "second"], "nothing forged was delivered");

    // 4. A flood of fresh initiations (a stranger's own key, claiming Alice) from
    // 40 loopback addresses at once, while Alice and Bob chat.
    const floods = Array.from({ length: 40 }, (_, i) => attacker(`127.0.${7 + (i >> 8)}.${i + 2}`));
    const mallet = generateKeyPair(cryptoRandom);
    before = lookups();
    let sent = 0;
    const started = performance.now();
    const flood = (async () => {
      for (let round = 0; performance.now() - started < 1500; round++) {
        for (const [i, source] of floods.entries()) {
          const session = (0x5000_0000_0000_0000n + BigInt(round * 64 + i)).toString(16);
          const bytes = forgeInitiation({
            session,
            keys: mallet,
            to: bobKey,
            name: "Alice",
            atMs: Date.now() + round,
          });
          await source.socket.send(bytes, bobAt);
          sent++;
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    for (let i = 0; i < 5; i++) assert((await alice.run({ kind: "send", text: `during ${i}` })).ok);
    await flood;
    const seconds = (performance.now() - started) / 1000;
    await new Promise((resolve) => setTimeout(resolve, 300));
    const caused = lookups() - before;
    assert(sent > 200, `only ${sent} initiations sent`);
    // Bob's heartbeats and Alice's sends count too: a few more than the budget.
    assert(
      caused <= MAX_REQUEST_WORK_PER_SECOND * (1 + seconds) + 15,
      `${sent} initiations in ${seconds.toFixed(1)} s caused ${caused} requests to the server`,
    );
    assert(texts().includes("during 4"), "the chat went on through the flood");
    // Refusals are smaller than what they answer, and no more than the lookups made.
    const replies = floods.flatMap((f) => f.got);
    assert(replies.every((r) => r.length < withBorrowedKey.length));
    assert(replies.length <= caused + 8, `${replies.length} replies`);
    for (const f of floods) f.socket.close();
    await Promise.all(floods.map((f) => f.done));

    // 5. After the session ended: the replayed connect shows nothing, from any address.
    assert((await alice.run({ kind: "terminate", name: "Bob" })).ok);
    await until(() => bobEvents.some((e) => e.kind === "peer_ended"), "the end of the session");
    const shown = bobEvents.length;
    before = lookups();
    for (let i = 0; i < 10; i++) await mallory.socket.send(connect, bobAt);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assertEquals(bobEvents.slice(shown).map((e) => e.kind), []);
    assert(lookups() - before <= 2, `${lookups() - before} requests to the server`);
    assert(mallory.got.every((r) => r.length <= connect.length), "no reply larger than the replay");
  } finally {
    for (const client of clients) await client.close();
    mallory.socket.close();
    await mallory.done;
    await recorder.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
