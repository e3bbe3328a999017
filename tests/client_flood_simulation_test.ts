/**
 * A client under a flood of `peer_connect` from a stranger, in the
 * simulator with the real cores: the client keeps a bounded number of
 * waiting requests, spends a bounded number of lookups on them, and still
 * accepts its real peer at once (issue 19, clients that hold their ground).
 * Replay a failing seed with SIM_SEED=<seed>.
 */
import { assert, assertEquals } from "@std/assert";
import { forSeeds } from "./_seeds.ts";
import { parseCommand } from "../lib/client/command.ts";
import type { SimClient } from "../lib/sim/sim_client.ts";
import { Simulation } from "../lib/sim/simulation.ts";
import { SERVER_UDP } from "../lib/sim/sim_server.ts";
import { decodeMessage } from "../lib/wire/codec.ts";
import { forgeInitiation, MALLORY_KEYS } from "./_peer_keys.ts";

const STRANGER = "10.66.0.1:4000";
/** Flood: this many `peer_connect`, one every FLOOD_GAP_MS of virtual time. */
const FLOOD = 2_000;
const FLOOD_GAP_MS = 2;

function script(sim: Simulation, client: SimClient, lines: string[]): void {
  for (const line of lines) sim.userCommand(client, parseCommand(line)!);
}

function hex16(n: number): string {
  return n.toString(16).padStart(16, "0");
}

Deno.test("Simulation: a connect flood from a stranger stays bounded and the real peer still gets in", () => {
  forSeeds("client flood", 4, 19_000, (seed) => {
    const sim = new Simulation({
      seed,
      impairment: { loss: 0, duplicate: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 5 },
    });
    const alice = sim.addClient({ name: "Alice" });
    const bob = sim.addClient({ name: "Bob" });
    script(sim, alice, ["register"]);
    script(sim, bob, ["register"]);
    assert(sim.runUntilIdle(60_000), "registration never finished");
    assertEquals([alice.core.loggedInAs, bob.core.loggedInAs], ["Alice", "Bob"]);

    // Count what Bob asks the server while the flood lasts.
    let lookups = 0;
    const send = sim.network.send.bind(sim.network);
    sim.network.send = (now, from, to, data) => {
      if (from === bob.address && to === SERVER_UDP) {
        try {
          if (decodeMessage(data).type === "lookup") lookups++;
        } catch { /* not ours to judge */ }
      }
      send(now, from, to, data);
    };

    const start = sim.clock.now();
    for (let i = 0; i < FLOOD; i++) {
      sim.at(start + i * FLOOD_GAP_MS, () => {
        const bytes = forgeInitiation({
          session: hex16(i + 1),
          keys: MALLORY_KEYS,
          to: bob.publicKey!,
          name: `M${i}`,
          atMs: i,
        });
        sim.network.send(sim.clock.now(), STRANGER, bob.address, bytes);
      });
    }
    // The real peer asks in the middle of the flood.
    const resultsFrom = alice.results.length;
    sim.at(start + 1_000, () => {
      script(sim, bob, ["wait request from Alice within 60", "accept Alice"]);
      script(sim, alice, ["connect Bob", "send hello through the flood"]);
    });
    sim.runFor(FLOOD * FLOOD_GAP_MS + 5_000);

    const floodSeconds = (FLOOD * FLOOD_GAP_MS) / 1000;
    const strangers = bob.core.peers.filter((p) => p.peerName !== "Alice");
    const waiting = strangers.filter((p) => p.state !== "closed").length;
    assert(waiting <= 8, `Bob keeps ${waiting} stranger requests open (at most 8)`);
    assert(strangers.length <= 64, `Bob remembers ${strangers.length} of ${FLOOD} strangers`);
    assert(
      lookups <= 5 * (floodSeconds + 1) + 5,
      `Bob sent ${lookups} lookups in ${floodSeconds} s`,
    );
    const results = alice.results.slice(resultsFrom);
    const connect = results.find((r) => r.command === "connect");
    const sent = results.find((r) => r.command === "send");
    assertEquals(connect?.ok, true, `connect: ${JSON.stringify(connect)}`);
    assertEquals(sent?.ok, true, `send: ${JSON.stringify(sent)}`);
  });
});
