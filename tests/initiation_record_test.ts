/**
 * The initiation timestamp rule of the client-server channel: message 1
 * carries the client's TAI64N timestamp, and the server drops a replayed
 * initiation (during the session, after it ended, long after) without a
 * reply, a session or the second half of the handshake, while channels of
 * one key whose initiations cross (UDP and TCP) are both served.
 */
import { assert, assertEquals } from "@std/assert";
import { ServerChannel } from "../lib/client/server_channel.ts";
import {
  InitiationRecord,
  MAX_RECENT,
  REORDER_WINDOW_MS,
} from "../lib/crypto/initiation_record.ts";
import { tai64n, TimestampSource } from "../lib/crypto/introduction.ts";
import { generateKeyPair } from "../lib/crypto/key_pair.ts";
import { SeededRandom } from "../lib/random.ts";
import { ClientChannels } from "../lib/server/client_channels.ts";

const encoder = new TextEncoder();
const UDP = "udp 127.0.0.1 40000", TCP = "tcp 7";
const SOURCE = { address: "127.0.0.1", port: 40_000 };
const T0 = Date.UTC(2026, 11, 6, 20);
const KEY = new Uint8Array(32).fill(1);
const eph = (n: number) => new Uint8Array(32).fill(n);

Deno.test("InitiationRecord admits new initiations, refuses repeats and what falls below its floor", () => {
  const record = new InitiationRecord();
  assertEquals(record.admit(KEY, tai64n(T0), eph(1)), "fresh");
  assertEquals(record.admit(KEY, tai64n(T0), eph(1)), "replayed");
  // Another channel of the same key, made a little earlier, arriving later: served.
  assertEquals(record.admit(KEY, tai64n(T0 - 5), eph(2)), "fresh");
  assertEquals(record.admit(KEY, tai64n(T0 - 5), eph(2)), "replayed");
  // Beyond the reorder window behind the greatest: stale, whatever its ephemeral key.
  assertEquals(record.admit(KEY, tai64n(T0 + REORDER_WINDOW_MS + 2000), eph(3)), "fresh");
  assertEquals(record.admit(KEY, tai64n(T0), eph(1)), "stale");
  assertEquals(record.admit(KEY, tai64n(T0 + 1000), eph(9)), "stale");
  // Another key has its own record.
  assertEquals(record.admit(new Uint8Array(32), tai64n(T0), eph(1)), "fresh");
});

Deno.test("InitiationRecord forgets nothing it would then accept: past MAX_RECENT the floor rises", () => {
  const record = new InitiationRecord();
  for (let i = 0; i <= MAX_RECENT; i++) {
    assertEquals(record.admit(KEY, tai64n(T0 + i), eph(i)), "fresh");
  }
  // The oldest left the recent set, and the floor took its timestamp: its replay is stale.
  assertEquals(record.admit(KEY, tai64n(T0), eph(0)), "stale");
  for (let i = 1; i <= MAX_RECENT; i++) {
    assertEquals(record.admit(KEY, tai64n(T0 + i), eph(i)), "replayed");
  }
});

Deno.test("InitiationRecord keeps at most maxKeys keys, the least recently used leaving", () => {
  const record = new InitiationRecord(2);
  const key = (n: number) => new Uint8Array(32).fill(n);
  record.admit(key(1), tai64n(T0), eph(1));
  record.admit(key(2), tai64n(T0), eph(1));
  record.admit(key(1), tai64n(T0 + 1), eph(2)); // key 1 used again
  record.admit(key(3), tai64n(T0), eph(1)); // key 2 leaves
  assertEquals(record.size, 2);
  assertEquals(record.admit(key(1), tai64n(T0 + 1), eph(2)), "replayed");
  assertEquals(record.admit(key(2), tai64n(T0), eph(1)), "fresh", "forgotten, so served again");
});

function setUp() {
  const random = new SeededRandom(3);
  const serverKeys = generateKeyPair(random);
  const clientKeys = generateKeyPair(random);
  const server = new ClientChannels({ staticKeyPair: serverKeys, random });
  const timestamps = new TimestampSource();
  const channel = () =>
    new ServerChannel({
      serverKey: serverKeys.publicKey,
      staticKeyPair: clientKeys,
      random,
      timestamps,
    });
  return { random, serverKeys, server, channel };
}

Deno.test("ClientChannels drops a replayed initiation without a reply, during and after its session", () => {
  const { server, channel } = setUp();
  const client = channel();
  const [initiation] = client.send(encoder.encode("hello"), T0);
  const first = server.receive(initiation, UDP, SOURCE, T0);
  assertEquals(first.kind, "reply");
  const sessions = server.size;
  // The copy an eavesdropper kept, replayed at once, a minute later, and after the
  // session's keys expired (180 s) and were swept: dropped, no reply, no session.
  for (const at of [T0, T0 + 60_000, T0 + 200_000, T0 + 3_600_000]) {
    assertEquals(server.receive(initiation, UDP, SOURCE, at), {
      kind: "dropped",
      reason: "replayed",
    });
  }
  assert(server.size <= sessions);
  assertEquals(server.dropped.get("replayed"), 4);
  // From another address and port too: the record is per key, not per route.
  assertEquals(
    server.receive(initiation, "udp 10.0.0.9 5", { address: "10.0.0.9", port: 5 }, T0 + 1).kind,
    "dropped",
  );
});

Deno.test("ClientChannels drops an old initiation once newer ones of the key moved the floor past it", () => {
  const { server, channel } = setUp();
  const old = channel().initiate(T0);
  assertEquals(server.receive(old, UDP, SOURCE, T0).kind, "reply");
  // The client's later channels (a restart an hour on, and more) handshake as usual.
  for (let i = 0; i < MAX_RECENT + 2; i++) {
    const later = channel().initiate(T0 + 3_600_000 + i);
    assertEquals(server.receive(later, UDP, SOURCE, T0 + 3_600_000 + i).kind, "reply");
  }
  assertEquals(server.receive(old, UDP, SOURCE, T0 + 3_600_100), {
    kind: "dropped",
    reason: "stale_timestamp",
  });
});

Deno.test("ClientChannels serves a key's UDP and TCP initiations when they arrive crossed", () => {
  const { server, channel } = setUp();
  const udp = channel(), tcp = channel();
  const udpFirst = udp.send(encoder.encode("over udp"), T0);
  const tcpFirst = tcp.send(encoder.encode("over tcp"), T0 + 3);
  // The TCP initiation (made later) arrives first; the UDP one is still served.
  const tcpReply = server.receive(tcpFirst[0], TCP, SOURCE, T0 + 4);
  const udpReply = server.receive(udpFirst[0], UDP, SOURCE, T0 + 5);
  if (tcpReply.kind !== "reply" || udpReply.kind !== "reply") throw new Error("no reply");
  const opened: string[] = [];
  const pairs = [[udp, udpReply.bytes, UDP], [tcp, tcpReply.bytes, TCP]] as const;
  for (const [channel, reply, route] of pairs) {
    const input = channel.receive(reply, T0 + 6);
    if (input.kind !== "established") throw new Error(`got ${input.kind}`);
    for (const bytes of input.send) {
      const got = server.receive(bytes, route, SOURCE, T0 + 7);
      if (got.kind === "message") opened.push(new TextDecoder().decode(got.plaintext));
    }
  }
  assertEquals(opened.sort(), ["over tcp", "over udp"]);
});

Deno.test("ClientChannels drops an initiation without its timestamp (the payload is the rule's)", () => {
  const { server, serverKeys, random } = setUp();
  // A client that writes an empty payload, as before the rule: refused, no reply.
  const bare = new ServerChannel({
    serverKey: serverKeys.publicKey,
    staticKeyPair: generateKeyPair(random),
    random,
    timestamps: { next: () => new Uint8Array(0) } as unknown as TimestampSource,
  });
  assertEquals(server.receive(bare.initiate(T0), UDP, SOURCE, T0), {
    kind: "dropped",
    reason: "malformed",
  });
});
