/**
 * The CI simulation suite: the built-in scenarios over many seeds, each run
 * checked against every invariant (exactly once and in order per direction,
 * nothing fabricated, acknowledged sends delivered, no ghost after a lease,
 * acknowledged registrations on disk). A failure names the seed, which
 * replays with `deno task simulate --scenario NAME --seed S` and the flags.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { BUILT_IN_SCENARIOS } from "../lib/sim/built_in_scenarios.ts";
import { parseScenario } from "../lib/sim/scenario.ts";
import { type ImpairmentOverrides, runScenario } from "../lib/sim/scenario_runner.ts";

interface Profile {
  scenario: string;
  seeds: number;
  flags: string;
  /** Peer messages a run delivers when its chat completes. */
  fullChat?: number;
  /** Share of runs whose chat must complete, so that the invariants are not met by silence. */
  minComplete?: number;
  overrides?: ImpairmentOverrides;
  clients?: number;
}

const PROFILES: Profile[] = [
  // 30% loss in bursts, 20% duplication, reordering, a partition that heals,
  // a client cut off from the server, a server crash and restart.
  // Over seeds 1 to 1000, 72% of runs complete their chat (seeds 1 to 100: 71).
  // It was 63% once peer sessions were encrypted, for two causes of ours: the
  // simulated server drew a new introduction secret when it restarted (a real
  // one derives it from its key file), so a PSK from before the crash never
  // matched one from after; and a responder refused a request at once when
  // its check with the server got no answer (the server was down, or had not
  // yet seen the requester log in again), where a copy of the request now
  // asks again. Almost every failure left is a request or lookup lost on a
  // link stuck in a loss burst, or a lookup sent with the token of a session
  // the restart ended; 0.65 shows the invariants are not met by silence.
  { scenario: "harsh", seeds: 100, flags: "", fullChat: 100, minComplete: 0.65 },
  // The two-way chat with 30% loss, 20% duplication and 20% reordering.
  {
    scenario: "chat",
    seeds: 60,
    flags: "--loss 0.3 --duplicate 0.2 --reorder 0.2",
    overrides: { loss: 0.3, duplicate: 0.2, reorder: 0.2 },
    fullChat: 600,
    minComplete: 0.9,
  },
  // Pairs behind every kind of NAT (and one LAN), direct or relayed, every NAT flushed mid-chat.
  { scenario: "nats", seeds: 20, flags: "", fullChat: 320, minComplete: 1 },
  // Many clients registering, watching, some killed: presence and leases.
  { scenario: "crowd", seeds: 40, flags: "--clients 12", clients: 12 },
];

for (const profile of PROFILES) {
  Deno.test(
    `simulation suite: ${profile.scenario} ${profile.flags} over ${profile.seeds} seeds`.replace(
      "  ",
      " ",
    ),
    () => {
      const scenario = parseScenario(BUILT_IN_SCENARIOS[profile.scenario], profile.scenario);
      const failures: string[] = [];
      let complete = 0;
      for (let seed = 1; seed <= profile.seeds; seed++) {
        const run = runScenario(scenario, {
          seed,
          overrides: profile.overrides,
          clients: profile.clients,
        });
        if (run.summary.peer.delivered === profile.fullChat) complete++;
        if (run.summary.violations.length > 0) {
          failures.push(
            `seed ${seed}: ${run.summary.violations.join("; ")} (replay with: deno task simulate ` +
              `--scenario ${profile.scenario} --seed ${seed} ${profile.flags})`,
          );
        }
      }
      assertEquals(failures, []);
      if (profile.minComplete !== undefined) {
        assert(
          complete / profile.seeds >= profile.minComplete,
          `only ${complete} of ${profile.seeds} chats completed (${profile.fullChat} messages each)`,
        );
      }
    },
  );
}
