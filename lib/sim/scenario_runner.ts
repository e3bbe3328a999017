/**
 * The runner of simulator scenarios (`scenario.ts` describes the language):
 * plays a parsed scenario on a new {@linkcode Simulation}, then settles,
 * waits one lease, checks the invariants (`scenario_invariants.ts`) and
 * summarizes what the run did.
 *
 * @module
 */
import { clientEventText, commandResultText } from "../client/client_event_text.ts";
import { nameKey } from "../wire/client_name.ts";
import { DEFAULT_LEASE_MS } from "../server/server_core.ts";
import {
  DEFAULT_IMPAIRMENT,
  type Scenario,
  ScenarioError,
  type ScenarioNatKind,
  type Selector,
  type Side,
  type Step,
} from "./scenario.ts";
import { checkInvariants } from "./scenario_invariants.ts";
import { type Impairment, impairmentProblem, type NetworkStats } from "./sim_network.ts";
import type { SimClient } from "./sim_client.ts";
import { type NatBehavior, SimNat } from "./sim_nat.ts";
import { Simulation } from "./simulation.ts";

/** The server's host in the simulation, as partitions name it. */
const SERVER_HOST = "127.0.0.1";

/** How long the final settle may take, virtual ms. */
const FINAL_SETTLE_MS = 10 * 60_000;

/** The impairment a scenario starts with: its leading network lines on the defaults. */
export function initialImpairment(scenario: Scenario): Impairment {
  let impairment = DEFAULT_IMPAIRMENT;
  for (const step of leadingSettings(scenario)) impairment = applySetting(impairment, step);
  return impairment;
}

function leadingSettings(scenario: Scenario): Step[] {
  const end = scenario.steps.findIndex((s) =>
    !["loss", "duplicate", "reorder", "delay", "lease"].includes(s.kind)
  );
  return scenario.steps.slice(0, end === -1 ? scenario.steps.length : end);
}

function applySetting(impairment: Impairment, step: Step): Impairment {
  switch (step.kind) {
    case "loss": {
      const { burst: _, ...rest } = impairment;
      return step.burst === undefined
        ? { ...rest, loss: step.loss }
        : { ...rest, loss: step.loss, burst: step.burst };
    }
    case "duplicate":
      return { ...impairment, duplicate: step.p };
    case "reorder":
      return { ...impairment, reorder: step.p };
    case "delay":
      return { ...impairment, minDelayMs: step.minMs, maxDelayMs: step.maxMs };
    default:
      return impairment;
  }
}

/** Replacements for a scenario's initial network, from the command line. */
export interface ImpairmentOverrides {
  /** Loss probability (a burst setting of the scenario stays). */
  loss?: number;
  /** Duplication probability. */
  duplicate?: number;
  /** Reordering probability. */
  reorder?: number;
}

/** Options of {@linkcode runScenario}. */
export interface RunScenarioOptions {
  /** The seed of the run. */
  seed: number;
  /** Replace fields of the scenario's initial network. */
  overrides?: ImpairmentOverrides;
  /** Replace the count of every `clients` line. */
  clients?: number;
}

/** Round-trip time figures, virtual ms. */
export interface RttSummary {
  /** Messages measured. */
  count: number;
  /** Mean. */
  mean: number;
  /** 99th percentile (nearest rank). */
  p99: number;
  /** Largest. */
  max: number;
}

/** What a run did and whether it held, as printed and as `--json` gives it. */
export interface RunSummary {
  /** The scenario's name. */
  scenario: string;
  /** The seed. */
  seed: number;
  /** True if no invariant was violated. */
  passed: boolean;
  /** The violations, one sentence each. */
  violations: string[];
  /** Virtual time the run took, ms. */
  virtualMs: number;
  /** Clients in the run. */
  clients: number;
  /** Clients killed. */
  killed: number;
  /** Server crashes. */
  crashes: number;
  /** Commands finished, by outcome. */
  commands: { ok: number; failed: number };
  /** Requests to the server the clients sent again. */
  requestRetransmissions: number;
  /** What the network did. */
  network: NetworkStats;
  /** Peer messages. */
  peer: {
    sent: number;
    delivered: number;
    acked: number;
    retransmitted: number;
    duplicatesDiscarded: number;
  };
  /** Round-trip times of acknowledged peer messages (send to ack), or null if none. */
  rttMs: RttSummary | null;
}

/** The outcome of {@linkcode runScenario}. */
export interface ScenarioRun {
  /** The simulation, for inspection. */
  sim: Simulation;
  /** The summary. */
  summary: RunSummary;
  /** Every round-trip time measured, virtual ms, in send order. */
  rtts: number[];
}

/**
 * Plays a scenario on a new simulation, then settles, waits one lease and
 * checks the invariants.
 *
 * @param scenario the parsed scenario
 * @param options the seed and overrides
 * @returns the simulation and the summary
 * @throws {ScenarioError} for a line that cannot run (a pattern that matches nobody)
 *
 * @example
 * ```ts
 * const run = runScenario(parseScenario(BUILT_IN_SCENARIOS.crowd, "crowd"), { seed: 1 });
 * run.summary.passed; // true
 * ```
 */
export function runScenario(scenario: Scenario, options: RunScenarioOptions): ScenarioRun {
  const leading = leadingSettings(scenario);
  const leaseStep = leading.findLast((s) => s.kind === "lease");
  const leaseMs = leaseStep?.kind === "lease" ? leaseStep.ms : DEFAULT_LEASE_MS;
  const impairment = withOverrides(initialImpairment(scenario), options.overrides ?? {});
  const sim = new Simulation({ seed: options.seed, impairment, leaseMs });
  const start = sim.clock.now();
  const runner = new Runner(sim, options);
  const violations: string[] = [];
  let maxDelayMs = impairment.maxDelayMs;
  try {
    for (const step of scenario.steps.slice(leading.length)) {
      runner.run(step);
      maxDelayMs = Math.max(maxDelayMs, sim.network.impairment.maxDelayMs);
    }
    if (!sim.runUntilIdle(FINAL_SETTLE_MS)) {
      const busy = sim.clients.filter((c) => c.alive && !c.idle).map((c) => c.name);
      violations.push(
        `The run did not settle within ${FINAL_SETTLE_MS / 60_000} virtual minutes` +
          (busy.length > 0 ? `: ${busy.join(", ")} still busy` : ""),
      );
    }
    // One more lease (and the longest a heartbeat can be on its way) for ghosts to go.
    sim.runFor(leaseMs + 3 * maxDelayMs + 1000);
    violations.push(...checkInvariants(sim));
  } catch (error) {
    if (error instanceof ScenarioError) throw error;
    // One line: the error and where it was thrown.
    const where = error instanceof Error
      ? error.stack?.split("\n").find((l) => l.trim().startsWith("at "))?.trim()
      : undefined;
    violations.push(
      `The run threw ${
        error instanceof Error ? `${error.name}: ${error.message}` : String(error)
      }` +
        (where === undefined ? "" : ` (${where})`),
    );
  }
  const rtts = peerRtts(sim);
  return {
    sim,
    rtts,
    summary: summarize(sim, {
      scenario: scenario.name,
      seed: options.seed,
      violations,
      virtualMs: sim.clock.now() - start,
      killed: runner.killed,
      rtts,
    }),
  };
}

/**
 * Applies command-line overrides to an impairment.
 *
 * @param impairment the scenario's initial network
 * @param overrides the replacements
 * @returns the new impairment
 * @throws {RangeError} if the result is not a valid impairment (a loss too high for its burst)
 */
export function withOverrides(impairment: Impairment, overrides: ImpairmentOverrides): Impairment {
  const result = { ...impairment };
  if (overrides.loss !== undefined) result.loss = overrides.loss;
  if (overrides.duplicate !== undefined) result.duplicate = overrides.duplicate;
  if (overrides.reorder !== undefined) result.reorder = overrides.reorder;
  const problem = impairmentProblem(result);
  if (problem !== undefined) throw new RangeError(problem);
  return result;
}

class Runner {
  readonly #sim: Simulation;
  readonly #options: RunScenarioOptions;
  readonly #byKey = new Map<string, SimClient>();
  readonly #natOf = new Map<SimClient, SimNat>();
  readonly #lans = new Map<string, SimNat>();
  #natCount = 0;
  killed = 0;

  constructor(sim: Simulation, options: RunScenarioOptions) {
    this.#sim = sim;
    this.#options = options;
  }

  run(step: Step): void {
    const sim = this.#sim;
    switch (step.kind) {
      case "client":
        for (const client of this.#select(step.line, step.who)) {
          if (client.alive) sim.userCommand(client, step.command);
        }
        return;
      case "loss":
      case "duplicate":
      case "reorder":
      case "delay":
        sim.network.impairment = applySetting(sim.network.impairment, step);
        return;
      case "lease":
        return;
      case "partition":
        for (const a of this.#hosts(step.line, step.a)) {
          for (const b of this.#hosts(step.line, step.b)) sim.network.partition(a, b, step.oneWay);
        }
        return;
      case "heal": {
        const now = { now: sim.clock.now() };
        if (step.a === undefined) {
          sim.network.heal(undefined, undefined, now);
        } else if (step.b === undefined) {
          for (const a of this.#hosts(step.line, step.a)) sim.network.heal(a, undefined, now);
        } else {
          for (const a of this.#hosts(step.line, step.a)) {
            for (const b of this.#hosts(step.line, step.b)) sim.network.heal(a, b, now);
          }
        }
        return;
      }
      case "crash":
        return sim.crashServer();
      case "restart":
        return sim.restartServer();
      case "kill":
        for (const client of this.#select(step.line, step.who)) {
          if (!client.alive) continue;
          sim.kill(client);
          this.killed++;
        }
        return;
      case "advance":
        return sim.runFor(step.ms);
      case "settle":
        sim.runUntilIdle(step.ms ?? FINAL_SETTLE_MS);
        return;
      case "clients": {
        const count = this.#options.clients ?? step.count;
        for (let i = 1; i <= count; i++) this.#client(`${step.prefix}-${i}`);
        return;
      }
      case "nat":
        for (const client of this.#select(step.line, step.who)) {
          if (this.#natOf.has(client)) {
            throw new ScenarioError(step.line, `"${client.name}" is behind a NAT already`);
          }
          const nat = this.#nat(step.nat, step.lan);
          sim.putBehindNat(client, nat);
          this.#natOf.set(client, nat);
        }
        return;
      case "flush": {
        const nats = step.who === undefined
          ? new Set(this.#natOf.values())
          : new Set(this.#select(step.line, step.who).flatMap((c) => this.#natOf.get(c) ?? []));
        for (const nat of nats) nat.flush();
        return;
      }
    }
  }

  /** A new NAT of a kind, or the LAN's (made on its first use). */
  #nat(kind: ScenarioNatKind, lan: string | undefined): SimNat {
    const existing = lan === undefined ? undefined : this.#lans.get(lan);
    if (existing !== undefined) return existing;
    const [mapping, filtering] = NAT_BEHAVIORS[kind];
    this.#natCount++;
    const nat = new SimNat(`203.0.113.${this.#natCount}`, { mapping, filtering });
    if (lan !== undefined) this.#lans.set(lan, nat);
    return nat;
  }

  #client(name: string): SimClient {
    const key = nameKey(name);
    let client = this.#byKey.get(key);
    if (client === undefined) {
      client = this.#sim.addClient({ name });
      this.#byKey.set(key, client);
    }
    return client;
  }

  #select(line: number, who: Selector): SimClient[] {
    if ("name" in who) return [this.#client(who.name)];
    const pattern = new RegExp(
      `^${who.pattern.split("*").map((part) => RegExp.escape(nameKey(part))).join(".*")}$`,
      "u",
    );
    const matches = [...this.#byKey].filter(([key]) => pattern.test(key)).map(([, c]) => c);
    if (matches.length === 0) {
      throw new ScenarioError(line, `No client matches "${who.pattern}"`);
    }
    return matches.filter((_, i) => i % who.every === 0);
  }

  #hosts(line: number, side: Side): string[] {
    if ("server" in side) return [SERVER_HOST];
    if ("everyone" in side) return ["*"];
    return this.#select(line, side).map((c) => c.address.slice(0, c.address.lastIndexOf(":")));
  }
}

/** Mapping and filtering of each scenario NAT kind (RFC 4787), as the NAT lab builds them. */
const NAT_BEHAVIORS: Record<ScenarioNatKind, readonly [NatBehavior, NatBehavior]> = {
  "full-cone": ["endpoint-independent", "endpoint-independent"],
  "address-restricted": ["endpoint-independent", "address-dependent"],
  "port-restricted": ["endpoint-independent", "address-and-port-dependent"],
  "symmetric": ["address-and-port-dependent", "address-and-port-dependent"],
};

function peerRtts(sim: Simulation): number[] {
  return sim.peerSent.flatMap((m) => m.ackedAt === undefined ? [] : [m.ackedAt - m.sentAt]);
}

/**
 * Summarizes round-trip times.
 *
 * @param rtts the times, ms, in any order
 * @returns count, mean, 99th percentile (nearest rank) and maximum, or null if none
 */
export function rttSummary(rtts: readonly number[]): RttSummary | null {
  if (rtts.length === 0) return null;
  const sorted = [...rtts].sort((a, b) => a - b);
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return {
    count: sorted.length,
    mean: round(sorted.reduce((sum, x) => sum + x, 0) / sorted.length),
    p99: round(sorted[Math.ceil(sorted.length * 0.99) - 1]),
    max: round(sorted[sorted.length - 1]),
  };
}

function summarize(
  sim: Simulation,
  run: {
    scenario: string;
    seed: number;
    violations: string[];
    virtualMs: number;
    killed: number;
    rtts: number[];
  },
): RunSummary {
  const results = sim.clients.flatMap((c) => c.results);
  const stats = sim.peerStats();
  const sent = sim.peerSent;
  return {
    scenario: run.scenario,
    seed: run.seed,
    passed: run.violations.length === 0,
    violations: run.violations,
    virtualMs: Math.round(run.virtualMs),
    clients: sim.clients.length,
    killed: run.killed,
    crashes: sim.crashes,
    // "hello" is the runner's, not the scenario's.
    commands: {
      ok: results.filter((r) => r.ok && r.command !== "hello").length,
      failed: results.filter((r) => !r.ok && r.command !== "hello").length,
    },
    requestRetransmissions: sim.clients.reduce((sum, c) => sum + c.core.retransmissions, 0),
    network: { ...sim.network.stats },
    peer: {
      sent: sent.length,
      delivered: sim.peerDelivered.length,
      acked: sent.filter((m) => m.ackedAt !== undefined).length,
      retransmitted: stats.retransmitted,
      duplicatesDiscarded: stats.duplicatesDiscarded,
    },
    rttMs: rttSummary(run.rtts),
  };
}

/**
 * Describes every client's commands and events, for `--verbose`.
 *
 * @param sim a finished simulation
 * @returns lines of text, indented
 */
export function describeClients(sim: Simulation): string[] {
  const lines: string[] = [];
  const indent = (text: string) => text.replaceAll("\n", "\n      ");
  for (const client of sim.clients) {
    lines.push(
      `  ${client.core.name ?? "(no name)"} at ${client.address}${client.alive ? "" : " (killed)"}`,
    );
    for (const r of client.results) {
      lines.push(
        r.ok
          ? `    ok ${r.command}: ${indent(commandResultText(r))}`
          : `    FAILED ${r.command} (${r.code}): ${indent(r.error)}`,
      );
    }
    for (const e of client.events) lines.push(`    event ${e.kind}: ${indent(clientEventText(e))}`);
  }
  return lines;
}
