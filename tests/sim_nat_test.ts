/**
 * The simulator's NAT: RFC 4787's mapping classes (section 4.1), filtering
 * classes (section 5), binding timeouts on the virtual clock (section 4.3),
 * hairpinning (section 6), through a {@linkcode SimNetwork}; and a real
 * client behind a NAT in a {@linkcode Simulation}.
 */
import { assert, assertEquals, assertNotEquals, assertThrows } from "@std/assert";
import { SeededRandom } from "../lib/random.ts";
import { NO_IMPAIRMENT, SimNetwork, type SimPacket } from "../lib/sim/sim_network.ts";
import { type NatBehavior, SimNat } from "../lib/sim/sim_nat.ts";
import { Simulation } from "../lib/sim/simulation.ts";
import type { ClientStatus, CommandResult } from "../lib/client/client_event.ts";

function statusOf(result: CommandResult | undefined): ClientStatus {
  if (result?.ok !== true || result.command !== "status") {
    throw new Error(`Not a status: ${JSON.stringify(result)}`);
  }
  return result;
}

const INSIDE = "10.0.0.2:5000";
const INSIDE2 = "10.0.0.3:5000";
const SERVER = "192.0.2.1:3000";
const SERVER_PORT2 = "192.0.2.1:3002";
const OTHER = "192.0.2.9:3000";
const PUBLIC = "203.0.113.1";

function setUp(options: ConstructorParameters<typeof SimNat>[1] = {}) {
  const net = new SimNetwork(new SeededRandom(1), NO_IMPAIRMENT);
  const nat = new SimNat(PUBLIC, options);
  nat.addHost("10.0.0.2");
  nat.addHost("10.0.0.3");
  net.addNat(nat);
  return { net, nat };
}

/** Sends one datagram at `now` and returns what arrived (1 ms later). */
function hop(net: SimNetwork, now: number, from: string, to: string): SimPacket[] {
  net.send(now, from, to, new Uint8Array([1]));
  return net.deliverDue(now + 1);
}

/** The public endpoint `from` leaves with towards `to`. */
function seenAs(net: SimNetwork, now: number, from: string, to: string): string {
  const [packet] = hop(net, now, from, to);
  assert(packet !== undefined, `nothing from ${from} reached ${to}`);
  return packet.from;
}

Deno.test("SimNat endpoint-independent mapping keeps one public port for every destination", () => {
  const { net } = setUp({ mapping: "endpoint-independent" });
  const a = seenAs(net, 0, INSIDE, SERVER);
  assert(a.startsWith(`${PUBLIC}:`));
  assertEquals(seenAs(net, 10, INSIDE, SERVER_PORT2), a);
  assertEquals(seenAs(net, 20, INSIDE, OTHER), a);
  assertNotEquals(seenAs(net, 30, INSIDE2, SERVER), a, "another inside endpoint, another port");
});

Deno.test("SimNat address-dependent mapping changes port with the destination address only", () => {
  const { net } = setUp({ mapping: "address-dependent" });
  const a = seenAs(net, 0, INSIDE, SERVER);
  assertEquals(seenAs(net, 10, INSIDE, SERVER_PORT2), a);
  assertNotEquals(seenAs(net, 20, INSIDE, OTHER), a);
});

Deno.test("SimNat address-and-port-dependent mapping (symmetric) changes port with the destination port", () => {
  const { net } = setUp({ mapping: "address-and-port-dependent" });
  const a = seenAs(net, 0, INSIDE, SERVER);
  const b = seenAs(net, 10, INSIDE, SERVER_PORT2);
  assertNotEquals(b, a);
  assertEquals(seenAs(net, 20, INSIDE, SERVER), a, "the first binding still holds");
});

const FILTERING: [NatBehavior, { samePortOtherHost: boolean; sameHostOtherPort: boolean }][] = [
  ["endpoint-independent", { samePortOtherHost: true, sameHostOtherPort: true }],
  ["address-dependent", { samePortOtherHost: false, sameHostOtherPort: true }],
  ["address-and-port-dependent", { samePortOtherHost: false, sameHostOtherPort: false }],
];

for (const [filtering, lets] of FILTERING) {
  Deno.test(`SimNat ${filtering} filtering lets in whom RFC 4787 says`, () => {
    const { net, nat } = setUp({ filtering });
    const pub = seenAs(net, 0, INSIDE, SERVER);
    assertEquals(hop(net, 10, SERVER, pub).map((p) => p.to), [INSIDE], "the reply always passes");
    assertEquals(hop(net, 20, OTHER, pub).length === 1, lets.samePortOtherHost);
    assertEquals(hop(net, 30, SERVER_PORT2, pub).length === 1, lets.sameHostOtherPort);
    assert(nat.stats.filtered <= 2);
  });
}

Deno.test("SimNat drops unsolicited datagrams and hides inside addresses", () => {
  const { net, nat } = setUp({ filtering: "endpoint-independent" });
  assertEquals(hop(net, 0, SERVER, `${PUBLIC}:40000`), [], "no binding yet");
  assertEquals(nat.stats.filtered, 1);
  assertEquals(hop(net, 10, SERVER, INSIDE), [], "an inside address is not routable");
  assertEquals(hop(net, 20, INSIDE2, INSIDE).map((p) => p.from), [INSIDE2], "same LAN: direct");
});

Deno.test("SimNat bindings expire on the virtual clock unless outbound traffic refreshes them", () => {
  const { net, nat } = setUp({ filtering: "endpoint-independent", bindingTimeoutMs: 30_000 });
  const pub = seenAs(net, 0, INSIDE, SERVER);
  // Inbound traffic does not refresh (RFC 4787 REQ-6 asks only for outbound).
  assertEquals(hop(net, 20_000, SERVER, pub).length, 1);
  assertEquals(hop(net, 30_001, SERVER, pub).length, 0, "expired 30 s after the last outbound");
  assertEquals(nat.stats.expired, 1);
  // Refreshed every 25 s, it lives on, with the same port.
  const again = seenAs(net, 40_000, INSIDE, SERVER);
  for (let t = 65_000; t <= 140_000; t += 25_000) {
    assertEquals(seenAs(net, t, INSIDE, SERVER), again);
  }
  assertEquals(hop(net, 140_000 + 29_000, SERVER, again).length, 1);
  assertEquals(nat.bindings(140_000 + 29_000), 1);
  assertEquals(nat.bindings(140_000 + 30_000), 0);
});

Deno.test("SimNat flush forgets every binding, as conntrack -F does", () => {
  const { net, nat } = setUp({ filtering: "endpoint-independent" });
  const pub = seenAs(net, 0, INSIDE, SERVER);
  nat.flush();
  assertEquals(hop(net, 10, SERVER, pub), []);
  assertNotEquals(seenAs(net, 20, INSIDE, SERVER), undefined);
});

Deno.test("SimNat hairpinning on reaches an inside host by the public address; off drops it", () => {
  for (const hairpin of [true, false]) {
    const { net, nat } = setUp({ hairpin, filtering: "endpoint-independent" });
    const pub2 = seenAs(net, 0, INSIDE2, SERVER);
    const arrived = hop(net, 10, INSIDE, pub2);
    if (hairpin) {
      assertEquals(arrived.map((p) => p.to), [INSIDE2]);
      assert(arrived[0].from.startsWith(`${PUBLIC}:`), "the sender appears by its public endpoint");
    } else {
      assertEquals(arrived, []);
      assertEquals(nat.stats.hairpinDropped, 1);
    }
  }
});

Deno.test("SimNat rejects a bad timeout or first port", () => {
  assertThrows(() => new SimNat(PUBLIC, { bindingTimeoutMs: 0 }), RangeError);
  assertThrows(() => new SimNat(PUBLIC, { firstPort: 70_000 }), RangeError);
});

Deno.test("Simulation places a client behind a NAT: the server sees the public address, replies get back", () => {
  const sim = new Simulation({ seed: 3, impairment: NO_IMPAIRMENT });
  const nat = new SimNat(PUBLIC, { mapping: "address-and-port-dependent" });
  const alice = sim.addClient({ name: "alice", nat });
  sim.command(alice, { kind: "register" });
  sim.runUntilIdle(60_000);
  assertEquals(alice.results.map((r) => r.ok), [true]);
  assert(nat.stats.mapped >= 1);
  const registered = sim.serverEvents.find((e) => e.kind === "registered");
  assertEquals(registered?.kind === "registered" && registered.ip, PUBLIC);
});

/** Registers a client behind `nat` (or none) and returns its `status` after discovery. */
function discovered(nat: SimNat | undefined, options: { secondPort?: boolean } = {}) {
  const sim = new Simulation({ seed: 5, impairment: NO_IMPAIRMENT, ...options });
  const alice = sim.addClient({ name: "alice", nat });
  sim.command(alice, { kind: "register" });
  sim.runUntilIdle(60_000);
  sim.runFor(10_000);
  sim.command(alice, { kind: "status" });
  sim.runUntilIdle(60_000);
  return { status: statusOf(alice.results.at(-1)), alice };
}

const MAPPINGS: [NatBehavior | "none", string][] = [
  ["none", "endpoint-independent"],
  ["endpoint-independent", "endpoint-independent"],
  // One server address cannot tell address-dependent mapping apart (documented).
  ["address-dependent", "endpoint-independent"],
  ["address-and-port-dependent", "destination-dependent"],
];

for (const [mapping, expected] of MAPPINGS) {
  Deno.test(`Address discovery behind ${mapping} mapping reports ${expected} and the public address`, () => {
    const nat = mapping === "none" ? undefined : new SimNat(PUBLIC, { mapping });
    const { status, alice } = discovered(nat);
    assertEquals(status.mapping, expected);
    const seen = nat === undefined ? alice.address : `${PUBLIC}:40000`;
    assertEquals(status.publicAddress, seen);
  });
}

Deno.test("Address discovery without a second server port knows the address but not the mapping", () => {
  const { status } = discovered(new SimNat(PUBLIC), { secondPort: false });
  assertEquals(status.publicAddress, `${PUBLIC}:40000`);
  assertEquals(status.mapping, "unknown");
});

Deno.test("Address discovery gives up as unknown when the second port does not answer", () => {
  const sim = new Simulation({ seed: 5, impairment: NO_IMPAIRMENT });
  sim.network.partition("*", "127.0.0.1:3002");
  const alice = sim.addClient({ name: "alice" });
  sim.command(alice, { kind: "register" });
  sim.runUntilIdle(60_000);
  sim.command(alice, { kind: "status" });
  sim.runUntilIdle(60_000);
  assertEquals(statusOf(alice.results.at(-1)).mapping, null, "still asking");
  sim.runFor(10_000);
  sim.command(alice, { kind: "status" });
  sim.runUntilIdle(60_000);
  assertEquals(statusOf(alice.results.at(-1)).mapping, "unknown");
  assertEquals(sim.network.stats.partitioned, 4, "sent once and retransmitted 3 times");
});

Deno.test("Heartbeats hold a 30 s NAT binding to the server even with a 120 s lease", () => {
  const sim = new Simulation({ seed: 9, impairment: NO_IMPAIRMENT, leaseMs: 120_000 });
  const nat = new SimNat(PUBLIC, { bindingTimeoutMs: 30_000 }); // port-restricted, like masquerade
  const alice = sim.addClient({ name: "alice", nat });
  sim.command(alice, { kind: "hello" }); // learns the 120 s lease
  sim.command(alice, { kind: "register" });
  sim.command(alice, { kind: "watch", on: true });
  sim.runUntilIdle(60_000);
  sim.runFor(5 * 60_000);
  assertEquals(nat.stats.expired, 0, "the binding never lapsed");
  assertEquals(nat.stats.mapped, 1, "one binding all along: the server always saw one address");
  // So the server's pushes still get in: alice hears bob join at once.
  const bob = sim.addClient({ name: "bob" });
  sim.command(bob, { kind: "register" });
  sim.runFor(2_000);
  assertEquals(
    alice.events.filter((e) => e.kind === "joined").map((e) =>
      e.kind === "joined" && e.client.name
    ),
    ["bob"],
  );
});
