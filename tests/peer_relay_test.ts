/**
 * The server's introductions and relay (`lib/server/peer_relay.ts`), alone
 * and through `ServerCore`: both sides learn each other's candidates and one
 * probe key at once, only the two parties may relay, each introduction has
 * its rate limit, quota and log lines, and the table stays bounded; across
 * instances (peer news passed between two relays) the same holds.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { MetricsObserver } from "../lib/io/metrics_observer.ts";
import { SeededRandom } from "../lib/random.ts";
import { type PeerNews, PeerRelay, type PeerRelayLimits } from "../lib/server/peer_relay.ts";
import type { PresenceRecord } from "../lib/server/store.ts";
import { Registry } from "../lib/server/registry.ts";
import { ServerCore } from "../lib/server/server_core.ts";
import type { Endpoint, ServerEvent, ServerOutput } from "../lib/server/server_event.ts";
import { SessionTable } from "../lib/server/session_table.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import type { Message, MessageOf } from "../lib/wire/messages.ts";

const SESSION = "8c3f1a2b4d5e6f70";
const ALICE_AT: Endpoint = { transport: "udp", address: "203.0.113.1", port: 40000 };
const BOB_AT: Endpoint = { transport: "udp", address: "198.51.100.2", port: 41000 };

function setup(limits: Partial<PeerRelayLimits> = {}) {
  const sessions = new SessionTable(30_000);
  const token = (n: number) => new Uint8Array(16).fill(n);
  const alice = sessions.open(0, {
    name: "Alice",
    token: token(1),
    ip: ALICE_AT.address,
    udpPort: ALICE_AT.port,
    tcpPort: 0,
  }).session;
  const bob = sessions.open(0, {
    name: "Bob",
    token: token(2),
    ip: BOB_AT.address,
    udpPort: BOB_AT.port,
    tcpPort: 0,
  }).session;
  const outputs: ServerOutput[] = [];
  const events: ServerEvent[] = [];
  const relay = new PeerRelay({
    sessions,
    random: new SeededRandom(1),
    output: (o) => outputs.push(o),
    emit: (e) => events.push(e),
    limits,
  });
  return { sessions, alice, bob, relay, outputs, events };
}

function introduce(name: string, session = SESSION): MessageOf<"introduce"> {
  return {
    type: "introduce",
    reqId: 7,
    client: "0123456789abcdef",
    token: new Uint8Array(16),
    name,
    session,
    hosts: [{ ip: "192.168.1.10", port: 5000 }, { ip: "fd00::10", port: 5000 }],
  };
}

/** The reply when it is one (fails the test on a refusal). */
function ok(reply: ReturnType<PeerRelay["introduce"]>): MessageOf<"introduce_ok"> {
  if ("code" in reply) throw new Error(`refused: ${reply.reason}`);
  return reply;
}

/** The first send of a message type among outputs. */
function sent<T extends Message["type"]>(
  outputs: readonly ServerOutput[],
  type: T,
): { to: Endpoint; message: MessageOf<T> } {
  for (const o of outputs) {
    if (o.type === "send" && o.message.type === type) {
      return { to: o.to, message: o.message as MessageOf<T> };
    }
  }
  throw new Error(`no ${type} was sent`);
}

function relayed(payload: number, session = SESSION): MessageOf<"relay"> {
  return { type: "relay", session, payload: new Uint8Array(payload) };
}

Deno.test("PeerRelay.introduce() tells both sides each other's candidates and one probe key", () => {
  const { relay, alice, bob, outputs, events } = setup();
  const reply = ok(relay.introduce(0, alice, introduce("bob")));
  assertEquals(reply.session, SESSION);
  assertEquals(reply.probeKey.length, 16);
  // Bob has given no host candidates yet: only where the server sees him.
  assertEquals(reply.candidates, [{ ip: BOB_AT.address, port: BOB_AT.port }]);
  assertEquals(outputs.length, 1);
  const push = sent(outputs, "introduction");
  assertEquals(push.to, BOB_AT);
  assertEquals(push.message.token, bob.token);
  assertEquals(push.message.name, "Alice");
  assertEquals(push.message.probeKey, reply.probeKey);
  assertEquals(push.message.candidates, [
    { ip: ALICE_AT.address, port: ALICE_AT.port },
    { ip: "192.168.1.10", port: 5000 },
    { ip: "fd00::10", port: 5000 },
  ]);
  assertEquals(events.map((e) => e.kind), ["introduced"]);

  // Bob introduces himself back for the same session: same key, Alice's hosts.
  const back = ok(relay.introduce(10, bob, { ...introduce("Alice"), hosts: [] }));
  assertEquals(back.probeKey, reply.probeKey);
  assertEquals(back.candidates.length, 3);
  assertEquals(relay.size, 1);
});

Deno.test("PeerRelay.introduce() refuses an offline peer, oneself and another pair's session id", () => {
  const { relay, alice, sessions } = setup();
  assertEquals(relay.introduce(0, alice, introduce("Carol")), {
    code: "not_online",
    reason: '"Carol" is not online',
  });
  assertEquals(
    (relay.introduce(0, alice, introduce("alice")) as { code: string }).code,
    "bad_request",
  );
  assert(!("code" in relay.introduce(0, alice, introduce("Bob"))));
  const carol = sessions.open(0, {
    name: "Carol",
    token: new Uint8Array(16).fill(3),
    ip: "192.0.2.3",
    udpPort: 3,
    tcpPort: 0,
  }).session;
  assertEquals(
    (relay.introduce(0, carol, introduce("Bob")) as { code: string }).code,
    "bad_request",
  );
});

Deno.test("PeerRelay.relay() forwards between the two parties only, and logs start and end", () => {
  const { relay, alice, outputs, events } = setup({ idleMs: 1_000 });
  // Nothing is relayed before an introduction.
  assertEquals(relay.relay(0, ALICE_AT, relayed(100)), "refused");
  relay.introduce(0, alice, introduce("Bob"));
  outputs.length = 0;
  assertEquals(relay.relay(1, ALICE_AT, relayed(100)), "relayed");
  assertEquals(outputs, [{ type: "send", to: BOB_AT, message: relayed(100) }]);
  assertEquals(relay.relay(2, BOB_AT, relayed(50)), "relayed");
  assertEquals(outputs[1], { type: "send", to: ALICE_AT, message: relayed(50) });
  // A stranger, or a party from another port, is refused.
  assertEquals(relay.relay(3, { ...ALICE_AT, port: 40001 }, relayed(10)), "refused");
  assertEquals(relay.relay(3, { ...BOB_AT, address: "192.0.2.99" }, relayed(10)), "refused");
  assertEquals(relay.relay(3, ALICE_AT, relayed(10, "0000000000000001")), "refused");
  // An IPv4-mapped source counts as its IPv4 address.
  assertEquals(
    relay.relay(4, { ...ALICE_AT, address: `::ffff:${ALICE_AT.address}` }, relayed(1)),
    "relayed",
  );
  assertEquals(relay.stats.relayed, 3);
  assertEquals(relay.stats.relayedBytes, 151);
  assertEquals(relay.stats.refused, 4);
  assertEquals(relay.nextTimeout(), 1_004);
  relay.onTimeout(1_004);
  assertEquals(relay.size, 0);
  assertEquals(events.filter((e) => e.kind !== "introduced"), [
    { kind: "relay_started", session: SESSION, a: "Alice", b: "Bob" },
    { kind: "relay_ended", session: SESSION, a: "Alice", b: "Bob", bytes: 151, datagrams: 3 },
  ]);
});

Deno.test("PeerRelay.relay() holds each session to its rate and its quota, reporting once a period", () => {
  const { relay, alice, events } = setup({
    bytesPerSecond: 10_000,
    burstBytes: 2_000,
    quotaBytes: 5_000,
    reportEveryMs: 1_000,
  });
  relay.introduce(0, alice, introduce("Bob"));
  assertEquals(relay.relay(0, ALICE_AT, relayed(1_000)), "relayed");
  assertEquals(relay.relay(0, BOB_AT, relayed(1_000)), "relayed");
  // The burst is spent: both directions share one bucket.
  assertEquals(relay.relay(0, ALICE_AT, relayed(1_000)), "limited");
  assertEquals(relay.relay(1, ALICE_AT, relayed(1_000)), "limited");
  // 100 ms refill 1,000 bytes at 10 kB/s.
  assertEquals(relay.relay(100, ALICE_AT, relayed(1_000)), "relayed");
  assertEquals(relay.relay(300, ALICE_AT, relayed(1_000)), "relayed");
  assertEquals(relay.relay(500, ALICE_AT, relayed(1_000)), "relayed");
  // 5,000 bytes relayed: the quota is used up, whatever the rate allows.
  assertEquals(relay.relay(5_000, ALICE_AT, relayed(1)), "limited");
  assertEquals(relay.stats.limited, 3);
  assertEquals(events.filter((e) => e.kind === "relay_limited"), [
    {
      kind: "relay_limited",
      session: SESSION,
      name: "Alice",
      why: "rate",
      dropped: 1,
      bytes: 2_000,
    },
    {
      kind: "relay_limited",
      session: SESSION,
      name: "Alice",
      why: "quota",
      dropped: 2,
      bytes: 5_000,
    },
  ]);
});

Deno.test("PeerRelay keeps at most perName introductions per name and total in all", () => {
  const { relay, alice } = setup({ perName: 3, total: 100 });
  for (let i = 0; i < 10; i++) {
    relay.introduce(i, alice, introduce("Bob", i.toString(16).padStart(16, "0")));
  }
  assertEquals(relay.size, 3);
  // The newest are kept.
  assertEquals(relay.relay(20, ALICE_AT, relayed(1, "0000000000000009")), "relayed");
  assertEquals(relay.relay(20, ALICE_AT, relayed(1, "0000000000000001")), "refused");
});

Deno.test("PeerRelay: a third client's introductions to a party never push the party's session out", () => {
  const { relay, alice, bob, sessions } = setup({ perName: 3, total: 100 });
  const mallory = sessions.open(0, {
    name: "Mallory",
    token: new Uint8Array(16).fill(3),
    ip: "192.0.2.66",
    udpPort: 6666,
    tcpPort: 0,
  }).session;
  ok(relay.introduce(0, alice, introduce("Bob")));
  assertEquals(relay.relay(1, ALICE_AT, relayed(1)), "relayed");
  for (let i = 0; i < 10; i++) {
    ok(relay.introduce(2, mallory, introduce("Alice", `ee${i.toString(16).padStart(14, "0")}`)));
    ok(relay.introduce(2, mallory, introduce("Bob", `ff${i.toString(16).padStart(14, "0")}`)));
  }
  assertEquals(relay.relay(3, ALICE_AT, relayed(1)), "relayed");
  assertEquals(relay.relay(3, BOB_AT, relayed(1)), "relayed");
  // Mallory's own are held to perName all the same.
  assertEquals(relay.size, 1 + 3);
  ok(relay.introduce(4, bob, introduce("Alice", "0000000000000002")));
  assertEquals(relay.size, 1 + 3 + 1);
});

Deno.test("ServerCore: introduce needs a live session, is answered and pushes the introduction", () => {
  const core = new ServerCore({
    registry: new Registry(),
    random: new SeededRandom(3),
    tcpPort: 3001,
    version: "test",
  });
  const drain = () => {
    const out: ServerOutput[] = [];
    for (let o = core.poll(); o; o = core.poll()) out.push(o);
    return out;
  };
  const register = (name: string, at: Endpoint, reqId: number) => {
    core.handle(0, at, {
      type: "register",
      reqId,
      client: `00000000000000${reqId.toString().padStart(2, "0")}`,
      name,
      udpPort: at.port,
      tcpPort: 5001,
    }, 312);
    for (const o of drain()) if (o.type === "persist") core.persisted(o.version, 0);
    return sent(drain(), "register_ok").message.token;
  };
  // Each client's channel key, as the secure layer reports it with every request.
  const alice = { ...ALICE_AT, clientKey: new Uint8Array(32).fill(1) };
  const bob = { ...BOB_AT, clientKey: new Uint8Array(32).fill(2) };
  const aliceToken = register("Alice", alice, 1);
  const bobToken = register("Bob", bob, 2);
  core.handle(10, alice, { ...introduce("Bob"), token: new Uint8Array(16) }, 100);
  assertEquals(sent(drain(), "error").message.code, ERROR_CODES.not_logged_in);

  core.handle(10, alice, { ...introduce("Bob"), token: aliceToken }, 100);
  const sends = drain().filter((o) => o.type === "send");
  assertEquals(sends.map((o) => o.type === "send" && o.message.type).sort(), [
    "introduce_ok",
    "introduction",
  ]);
  assertEquals(sent(sends, "introduction").message.token, bobToken);
  core.handle(11, bob, relayed(64), 78);
  assertEquals(drain().filter((o) => o.type === "send"), [
    { type: "send", to: ALICE_AT, message: relayed(64) },
  ]);
  assertEquals(core.relay(12, { ...BOB_AT, port: 1 }, relayed(1)), "refused");
  assertEquals(core.relayStats.relayed, 1);

  // Bob's NAT forgets him and maps him to a new port: his next request (its
  // token proves him) moves his session, and the relay follows.
  const moved = { ...bob, port: 41_001 };
  assertEquals(core.relay(13, moved, relayed(1)), "refused");
  core.handle(14, moved, {
    type: "heartbeat",
    reqId: 9,
    client: "0000000000000002",
    token: bobToken,
  }, 34);
  drain();
  assertEquals(core.sessions.byName("Bob")?.udpPort, 41_001);
  assertEquals(core.relay(15, moved, relayed(1)), "relayed");
  assertEquals(core.relay(15, BOB_AT, relayed(1)), "refused");
});

Deno.test("MetricsObserver counts the bytes the relay forwards", async () => {
  const zero = () => 0;
  const metrics = new MetricsObserver("test", {
    registered: zero,
    active: zero,
    watchers: zero,
    tcpConnections: zero,
    storageBytes: () => Promise.resolve(0),
    uptimeSeconds: zero,
    counters: () => ({
      presenceResent: 0,
      authFailures: 0,
      undersized: 0,
      tcpRefused: 0,
      tcpTimedOut: 0,
    }),
  });
  metrics.sent(BOB_AT, relayed(100));
  metrics.sent(ALICE_AT, relayed(23));
  metrics.sent(ALICE_AT, { type: "heartbeat_ok", reqId: 1 });
  assertMatch(await metrics.render(), /^switchboard_relay_bytes_total 123$/m);
});

/** Two instances' relays, Alice's session on A and Bob's on B, their peer news passed by hand. */
function twoInstances(limits: Partial<PeerRelayLimits> = {}) {
  const secret = new Uint8Array(32).fill(9);
  const side = (name: string, at: Endpoint, other: string, otherAt: Endpoint, seed: number) => {
    const sessions = new SessionTable(30_000);
    const session = sessions.open(0, {
      name,
      token: new Uint8Array(16).fill(seed),
      ip: at.address,
      udpPort: at.port,
      tcpPort: 0,
    }).session;
    const record: PresenceRecord = {
      name: other,
      ip: otherAt.address,
      udpPort: otherAt.port,
      tcpPort: 0,
      since: 0,
      instance: other === "Bob" ? "B" : "A",
    };
    const outputs: ServerOutput[] = [];
    const relay = new PeerRelay({
      sessions,
      random: new SeededRandom(seed),
      output: (o) => outputs.push(o),
      emit: () => {},
      limits,
      remote: (n) => n.toLowerCase() === other.toLowerCase() ? record : undefined,
      secret: () => secret,
    });
    return { session, relay, outputs };
  };
  const a = side("Alice", ALICE_AT, "Bob", BOB_AT, 1);
  const b = side("Bob", BOB_AT, "Alice", ALICE_AT, 2);
  /** Delivers the peer news each side published to the other, and returns it. */
  const pass = (now: number): PeerNews[] => {
    const news: PeerNews[] = [];
    for (const [from, to] of [[a, b], [b, a]] as const) {
      for (const o of from.outputs.splice(0)) {
        if (o.type === "peer_store") {
          news.push(o.news);
          to.relay.news(now, o.news);
        } else from.outputs.push(o);
      }
    }
    return news;
  };
  return { a, b, pass };
}

Deno.test("PeerRelay across instances: introductions made at once on both agree on one probe key", () => {
  const { a, b, pass } = twoInstances();
  const fromA = ok(a.relay.introduce(0, a.session, introduce("Bob")));
  const fromB = ok(b.relay.introduce(0, b.session, { ...introduce("Alice"), hosts: [] }));
  assertEquals(fromA.probeKey, fromB.probeKey);
  assertEquals(fromA.candidates, [{ ip: BOB_AT.address, port: BOB_AT.port }]);
  const news = pass(1);
  assertEquals(news.map((n) => [n.kind, n.instance, n.to]), [
    ["introduce", "B", "Bob"],
    ["introduce", "A", "Alice"],
  ]);
  const toBob = sent(b.outputs, "introduction");
  assertEquals(toBob.to, BOB_AT);
  assertEquals(toBob.message.token, b.session.token);
  assertEquals(toBob.message.probeKey, fromA.probeKey);
  assertEquals(toBob.message.candidates.length, 3);
  assertEquals(sent(a.outputs, "introduction").message.probeKey, fromA.probeKey);
  // Each instance now knows the other party's host candidates.
  assertEquals(ok(b.relay.introduce(2, b.session, introduce("Alice"))).candidates.length, 3);
});

Deno.test("PeerRelay across instances: relayed datagrams cross only for an introduced pair, charged where they enter", () => {
  const { a, b, pass } = twoInstances({ burstBytes: 1500, bytesPerSecond: 1000 });
  // Before any introduction, nothing crosses.
  assertEquals(a.relay.relay(0, ALICE_AT, relayed(10)), "refused");
  ok(a.relay.introduce(0, a.session, introduce("Bob")));
  pass(0);
  b.outputs.length = 0;
  assertEquals(a.relay.relay(1, ALICE_AT, relayed(1000)), "relayed");
  assertEquals(a.relay.relay(1, ALICE_AT, relayed(1000)), "limited");
  assertEquals(a.relay.relay(1, { ...ALICE_AT, port: 1 }, relayed(10)), "refused");
  const news = pass(2);
  assertEquals(news.length, 1);
  assertEquals(b.outputs, [{ type: "send", to: BOB_AT, message: relayed(1000) }]);
  // And back, from B to A.
  assertEquals(b.relay.relay(3, BOB_AT, relayed(5)), "relayed");
  pass(3);
  assertEquals(sent(a.outputs, "relay"), { to: ALICE_AT, message: relayed(5) });
  // News of a session this instance never saw introduced, or for a name not here, is dropped.
  b.outputs.length = 0;
  b.relay.news(4, { ...news[0], session: "0000000000000002" } as PeerNews);
  b.relay.news(4, { ...news[0], to: "Carol" } as PeerNews);
  assertEquals(b.outputs, []);
});

Deno.test("PeerRelay: a peer on another instance is not_online without the instances' shared secret", () => {
  const sessions = new SessionTable(30_000);
  const alice = sessions.open(0, {
    name: "Alice",
    token: new Uint8Array(16),
    ip: ALICE_AT.address,
    udpPort: ALICE_AT.port,
    tcpPort: 0,
  }).session;
  const relay = new PeerRelay({
    sessions,
    random: new SeededRandom(1),
    output: () => {},
    emit: () => {},
    remote: () => ({ name: "Bob", ip: "", udpPort: 1, tcpPort: 0, since: 0, instance: "B" }),
  });
  const reply = relay.introduce(0, alice, introduce("Bob"));
  assertEquals("code" in reply && reply.code, "not_online");
});
