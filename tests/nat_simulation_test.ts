/**
 * Peers behind NATs in the simulator (issue 21): the real server and client
 * cores, each client behind a `SimNat` of one of the NAT lab's kinds. Every
 * pair gets a working session; the path is direct wherever the mappings and
 * filters allow one (the matrix of the research notes) and the relay
 * elsewhere; a NAT that forgets its state mid-session costs no message, and
 * the session is back on a working path within seconds.
 */
import { assert, assertEquals } from "@std/assert";
import type { ClientEvent } from "../lib/client/client_event.ts";
import type { Command } from "../lib/client/command.ts";
import { type NatBehavior, SimNat } from "../lib/sim/sim_nat.ts";
import type { SimClient } from "../lib/sim/sim_client.ts";
import { Simulation } from "../lib/sim/simulation.ts";
import { SERVER_UDP } from "../lib/sim/sim_server.ts";

type Kind = "full-cone" | "address-restricted" | "port-restricted" | "symmetric";

const BEHAVIORS: Record<Kind, [NatBehavior, NatBehavior]> = {
  "full-cone": ["endpoint-independent", "endpoint-independent"],
  "address-restricted": ["endpoint-independent", "address-dependent"],
  "port-restricted": ["endpoint-independent", "address-and-port-dependent"],
  "symmetric": ["address-and-port-dependent", "address-and-port-dependent"],
};
const KINDS = Object.keys(BEHAVIORS) as Kind[];

/** Where a direct path exists (the research notes' matrix): not PR x symmetric, not symmetric x symmetric. */
function directPossible(a: Kind, b: Kind): boolean {
  const hard = (k: Kind) => k === "symmetric" || k === "port-restricted";
  return !(hard(a) && hard(b) && (a === "symmetric" || b === "symmetric"));
}

const IMPAIRMENT = { loss: 0, duplicate: 0, reorder: 0, minDelayMs: 5, maxDelayMs: 30 };

function nat(kind: Kind, ip: string): SimNat {
  const [mapping, filtering] = BEHAVIORS[kind];
  return new SimNat(ip, { mapping, filtering });
}

function run(sim: Simulation, client: SimClient, command: Command): void {
  sim.userCommand(client, command);
}

/** Two registered clients behind the NATs given (one shared NAT for a LAN). */
function setUp(seed: number, natA: SimNat, natB: SimNat, loss = 0) {
  const sim = new Simulation({ seed, impairment: IMPAIRMENT });
  const alice = sim.addClient({ name: "Alice", nat: natA });
  const bob = sim.addClient({ name: "Bob", nat: natB });
  run(sim, alice, { kind: "register" });
  run(sim, bob, { kind: "register" });
  assert(sim.runUntilIdle(60_000), "registration never finished");
  sim.network.impairment = { ...IMPAIRMENT, loss };
  return { sim, alice, bob };
}

/** Connects Alice to Bob; returns the virtual ms until the session is open on both sides. */
function connect(sim: Simulation, alice: SimClient, bob: SimClient): number {
  const start = sim.clock.now();
  run(sim, alice, { kind: "connect", name: "Bob" });
  run(sim, bob, { kind: "accept", name: "Alice" } as Command);
  const open = () => [alice, bob].every((c) => c.core.peers.some((p) => p.state === "open"));
  for (let i = 0; i < 3_000 && !open(); i++) sim.runFor(5);
  assert(open(), "the session never opened");
  return sim.clock.now() - start;
}

function paths(client: SimClient): Extract<ClientEvent, { kind: "peer_path" }>[] {
  return client.events.filter((e): e is Extract<ClientEvent, { kind: "peer_path" }> =>
    e.kind === "peer_path"
  );
}

function pathKind(client: SimClient): string | undefined {
  return paths(client).at(-1)?.path.kind ?? "relay";
}

/** Sends `count` messages each way and checks every one arrived once, in order. */
function chat(sim: Simulation, alice: SimClient, bob: SimClient, count: number, tag: string) {
  for (let i = 0; i < count; i++) {
    run(sim, alice, { kind: "send", to: "Bob", text: `${tag} a${i}` });
    run(sim, bob, { kind: "send", to: "Alice", text: `${tag} b${i}` });
  }
  assert(sim.runUntilIdle(5 * 60_000), "the chat never finished");
  for (const [from, to] of [["Alice", "Bob"], ["Bob", "Alice"]]) {
    const got = sim.peerDelivered.filter((m) => m.from === from && m.to === to)
      .map((m) => m.text).filter((t) => t.startsWith(`${tag} `));
    const want = Array.from({ length: count }, (_, i) => `${tag} ${from[0].toLowerCase()}${i}`);
    assertEquals(got, want, `${from} -> ${to}`);
  }
}

for (const a of KINDS) {
  for (const b of KINDS) {
    Deno.test(`Simulation: ${a} -> ${b} has a working session, direct ${directPossible(a, b) ? "" : "im"}possible`, () => {
      for (const seed of [1, 2, 3]) {
        const { sim, alice, bob } = setUp(seed, nat(a, "203.0.113.1"), nat(b, "198.51.100.1"));
        connect(sim, alice, bob);
        chat(sim, alice, bob, 10, "first");
        sim.runFor(6_000); // the checks run for 5 s at most
        const want = directPossible(a, b) ? "direct" : "relay";
        assertEquals([pathKind(alice), pathKind(bob)], [want, want], `seed ${seed}`);
        const peers = sim.clients[0].core.peers;
        assertEquals(peers.length, 1);
        chat(sim, alice, bob, 10, "then");
      }
    });
  }
}

Deno.test("Simulation: two clients on one LAN behind a NAT without hairpinning go direct by their host addresses", () => {
  const home = nat("port-restricted", "203.0.113.1");
  const { sim, alice, bob } = setUp(4, home, home);
  connect(sim, alice, bob);
  sim.runFor(1_000);
  const last = paths(alice).at(-1);
  assertEquals(last?.path.kind, "direct");
  assertEquals(
    last?.path.kind === "direct" && last.path.remote.ip,
    "127.0.1.2",
    "Bob's inside address",
  );
  chat(sim, alice, bob, 5, "lan");
});

Deno.test("Simulation: a session opens within a few round trips even where it must be relayed", () => {
  const times: number[] = [];
  for (const seed of [5, 6, 7, 8]) {
    const { sim, alice, bob } = setUp(
      seed,
      nat("symmetric", "203.0.113.1"),
      nat("symmetric", "198.51.100.1"),
    );
    times.push(connect(sim, alice, bob));
  }
  // One-way delays are 5 to 30 ms: lookup, introduce, connect, accept through the relay.
  assert(Math.max(...times) < 600, `times to an open session: ${times.join(", ")} ms`);
});

Deno.test("Simulation: NATs that forget their state mid-session cost no message, and the session is back within 7 s", () => {
  const pairs: [Kind, Kind][] = [
    ["port-restricted", "full-cone"],
    ["port-restricted", "port-restricted"],
    ["symmetric", "full-cone"],
    // Relayed: the flush moves both to new ports, and the relay must follow them.
    ["symmetric", "symmetric"],
  ];
  for (const [a, b] of pairs) {
    for (const seed of [11, 12]) {
      const natA = nat(a, "203.0.113.1"), natB = nat(b, "198.51.100.1");
      const { sim, alice, bob } = setUp(seed, natA, natB);
      connect(sim, alice, bob);
      sim.runFor(2_000);
      assertEquals(pathKind(alice), directPossible(a, b) ? "direct" : "relay");
      // Messages in flight while the NATs forget everything.
      for (let i = 0; i < 20; i++) {
        run(sim, alice, { kind: "send", to: "Bob", text: `flush a${i}` });
      }
      sim.runFor(20);
      natA.flush();
      natB.flush();
      const flushedAt = sim.clock.now();
      assert(sim.runUntilIdle(60_000), "the sends never finished");
      const delivered = sim.peerDelivered.filter((m) => m.text.startsWith("flush "));
      assertEquals(
        delivered.map((m) => m.text),
        Array.from({ length: 20 }, (_, i) => `flush a${i}`),
      );
      const last = delivered.at(-1)!;
      assert(
        last.deliveredAt! - flushedAt <= 7_000,
        `${a} x ${b}, seed ${seed}: the last message came ${
          last.deliveredAt! - flushedAt
        } ms after the flush`,
      );
      chat(sim, alice, bob, 5, "after");
    }
  }
});

Deno.test("Simulation: a lost introduction is asked for again, and the pair still goes direct", () => {
  const { sim, alice, bob } = setUp(
    21,
    nat("port-restricted", "203.0.113.1"),
    nat("port-restricted", "198.51.100.1"),
  );
  // Nothing from the server reaches Bob for a while: the introduction and the relayed connect are lost.
  sim.network.partition(SERVER_UDP, bob.address, true);
  run(sim, alice, { kind: "connect", name: "Bob" });
  run(sim, bob, { kind: "accept", name: "Alice" } as Command);
  sim.runFor(700);
  assertEquals(bob.core.peers.length, 0, "Bob heard of nothing yet");
  sim.network.heal();
  const open = () => [alice, bob].every((c) => c.core.peers.some((p) => p.state === "open"));
  for (let i = 0; i < 2_000 && !open(); i++) sim.runFor(5);
  assert(open(), "the session never opened");
  sim.runFor(2_000);
  assertEquals([pathKind(alice), pathKind(bob)], ["direct", "direct"]);
  chat(sim, alice, bob, 5, "late");
});

Deno.test("Simulation: a relayed session whose side logged out keeps its timers moving", () => {
  const { sim, alice, bob } = setUp(
    31,
    nat("symmetric", "203.0.113.1"),
    nat("symmetric", "198.51.100.1"),
  );
  connect(sim, alice, bob);
  run(sim, alice, { kind: "logout" });
  sim.runFor(1_000);
  assertEquals(alice.core.loggedInAs, undefined);
  // The peer goes silent: Alice would ask the server again, but has no session to ask with.
  sim.network.partition(bob.address, "*");
  const before = sim.clock.now();
  sim.runFor(10_000);
  assert(sim.clock.now() >= before + 10_000);
  const next = alice.core.nextTimeout();
  assert(next === undefined || next > sim.clock.now(), `a timer stuck at ${next}`);
});
