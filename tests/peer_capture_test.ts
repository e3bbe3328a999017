/**
 * Peer sessions on real sockets, seen from the path (protocol version 3):
 * Bob sits behind a small NAT that keeps a copy of every datagram, so Alice
 * sees him at the NAT's address and he sees her at another port of it. The
 * capture of a whole peer session (connect, chat both ways, sendfile) holds
 * no chat text, no file bytes and no name; the request is verified by key
 * although the addresses differ; and datagrams the NAT flips, cuts or
 * replays on their way to Bob change nothing.
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import type { ClientEvent } from "../lib/client/client_event.ts";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { ServerDriver } from "../lib/io/server_driver.ts";
import { MAX_DATAGRAM_BYTES } from "../lib/wire/messages.ts";
import { RecordingNat } from "./_recording_nat.ts";

const HOST = "127.0.0.1";
const FAST_RETRY = { initialMs: 100, maxMs: 400, jitter: 0.2, giveUpMs: 10_000 };

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

const text = (s: string) => new TextEncoder().encode(s);

/** Waits (at most 20 s) until `events` holds one that `match` takes. */
async function eventually(
  events: ClientEvent[],
  match: (event: ClientEvent) => boolean,
  what: string,
): Promise<ClientEvent> {
  const until = performance.now() + 20_000;
  while (performance.now() < until) {
    const found = events.find(match);
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`never saw ${what}: ${JSON.stringify(events.map((e) => e.kind))}`);
}

Deno.test("a captured peer session behind a NAT holds no chat text, file bytes or name; tampering changes nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_peer_capture_" });
  const server = await ServerDriver.start({
    host: HOST,
    udpPort: 0,
    tcpPort: 0,
    dataDir: join(dir, "server"),
    version: "0.0.0-test",
  });
  const nat = new RecordingNat(server.udpPort);
  const bobEvents: ClientEvent[] = [];
  const clients: ClientDriver[] = [];
  const content = new Uint8Array(200_000).map((_, i) => (i * 7919 + (i >> 8) * 31) & 0xff);
  await Deno.writeFile(join(dir, "plans.bin"), content);
  try {
    const alice = await ClientDriver.open({
      serverHost: HOST,
      serverPort: server.udpPort,
      udpPort: 0,
      tcpPort: 5001,
      name: "Alice Peer",
      via: "udp",
      retry: FAST_RETRY,
      // What travels straight between the peers (traversal would start on the relay).
      traverse: false,
      downloadDir: join(dir, "alice"),
    });
    clients.push(alice);
    const bob = await ClientDriver.open({
      serverHost: HOST,
      serverPort: nat.insidePort(server.udpPort),
      udpPort: 0,
      tcpPort: 5002,
      name: "Bob Peer",
      via: "udp",
      retry: FAST_RETRY,
      // What travels straight between the peers (traversal would start on the relay).
      traverse: false,
      downloadDir: join(dir, "bob"),
      acceptFiles: true,
      onEvent: (event) => bobEvents.push(event),
    });
    clients.push(bob);
    for (const client of [alice, bob]) {
      assert((await client.run({ kind: "hello" })).ok);
      assert((await client.run({ kind: "register" })).ok);
    }
    // The server has Bob at the NAT's outside port; Bob sees Alice at another port of the NAT.
    assertEquals(
      server.core.sessions.byName("Bob Peer")?.udpPort,
      (nat.outside.addr as Deno.NetAddr).port,
    );
    const accepted = bob.run({ kind: "accept" });
    const connected = await alice.run({ kind: "connect", name: "Bob Peer" });
    assert(connected.ok, JSON.stringify(connected));
    assert((await accepted).ok, "verified by key, whatever the address");
    const request = await eventually(bobEvents, (e) => e.kind === "request", "the request");
    assert(request.kind === "request" && request.udpPort !== alice.udpPort);

    assert((await alice.run({ kind: "send", text: "the owl flies at dawn" })).ok);
    assert((await bob.run({ kind: "send", text: "the fox sleeps at noon" })).ok);
    const offer = await alice.sendFile(join(dir, "plans.bin"));
    assert(offer.ok, JSON.stringify(offer));
    await eventually(bobEvents, (e) => e.kind === "file_done", "the file arrive");
    assertEquals(await Deno.readFile(join(dir, "bob", "plans.bin")), content);

    const peer = nat.datagrams.filter((d) => d.peer);
    assert(peer.length > 150, `${peer.length} peer datagrams`);
    assert(peer.every((d) => d.bytes.length <= MAX_DATAGRAM_BYTES));
    const seen = nat.peerBytes();
    for (
      const secret of [
        text("the owl flies at dawn"),
        text("the fox sleeps at noon"),
        text("Alice Peer"),
        text("plans.bin"),
        content.subarray(100_000, 100_032),
        content.subarray(0, 32),
      ]
    ) {
      assert(!contains(seen, secret), `the capture holds ${new TextDecoder().decode(secret)}`);
    }

    // On the way to Bob, each datagram from Alice now comes bit-flipped, cut short,
    // then whole, then again (a replay): only the whole one counts, once.
    nat.tamper = (bytes) => {
      const flipped = bytes.slice();
      flipped[flipped.length - 1] ^= 0x40;
      return [flipped, bytes.subarray(0, bytes.length - 3), bytes, bytes];
    };
    assert((await alice.run({ kind: "send", text: "one" })).ok);
    assert((await alice.run({ kind: "send", text: "two" })).ok);
    nat.tamper = undefined;
    assert((await bob.run({ kind: "send", text: "still here" })).ok);
    const texts = bobEvents.flatMap((e) => e.kind === "message" ? [e.text] : []);
    assertEquals(texts, ["the owl flies at dawn", "one", "two"]);
    const peers = await bob.run({ kind: "peers" });
    if (!peers.ok || peers.command !== "peers") throw new Error(JSON.stringify(peers));
    assertEquals(peers.peers.map((p) => [p.name, p.state]), [["Alice Peer", "open"]]);
  } finally {
    for (const client of clients) await client.close();
    await nat.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
