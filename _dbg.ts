import { SimNat } from "./lib/sim/sim_nat.ts";
import { Simulation } from "./lib/sim/simulation.ts";
const IMP = { loss: 0, duplicate: 0, reorder: 0, minDelayMs: 5, maxDelayMs: 30 };
const natA = new SimNat("203.0.113.1", {
  mapping: "endpoint-independent",
  filtering: "address-and-port-dependent",
});
const natB = new SimNat("198.51.100.1", {
  mapping: "endpoint-independent",
  filtering: "endpoint-independent",
});
const sim = new Simulation({ seed: 11, impairment: IMP });
const alice = sim.addClient({ name: "Alice", nat: natA });
const bob = sim.addClient({ name: "Bob", nat: natB });
sim.userCommand(alice, { kind: "register" } as never);
sim.userCommand(bob, { kind: "register" } as never);
sim.runUntilIdle(60000);
sim.userCommand(alice, { kind: "connect", name: "Bob" } as never);
sim.userCommand(bob, { kind: "accept", name: "Alice" } as never);
sim.runFor(2000);
for (let i = 0; i < 20; i++) {
  sim.userCommand(alice, { kind: "send", to: "Bob", text: `flush a${i}` } as never);
}
sim.runFor(20);
natA.flush();
natB.flush();
const t0 = sim.clock.now();
console.log(sim.runUntilIdle(60000), sim.clock.now() - t0);
for (const c of [alice, bob]) {
  console.log(
    c.name,
    JSON.stringify(c.events.filter((e) => e.kind === "peer_path" || e.kind === "peer_ended")),
  );
}
console.log(alice.results.slice(-5).map((r) => JSON.stringify(r)).join("\n"));
console.log(sim.peerDelivered.map((m) => m.text + "@" + m.deliveredAt).join(" "));
