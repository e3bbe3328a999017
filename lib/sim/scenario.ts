/**
 * Scenarios for the simulator: a small language that drives a
 * {@linkcode Simulation} (the real server and client cores on a simulated
 * network with a virtual clock and one seeded random source), the runner
 * that plays it, and the invariants checked after every run.
 *
 * ## The scenario format
 *
 * One directive per line. Blank lines and lines starting with `#` are
 * ignored; on a directive line (not a client line) ` #` also starts a
 * comment. Lines run in order; only `advance` and `settle` let virtual time
 * pass, so the lines between two of them happen at the same instant.
 *
 * Client lines, `WHO: COMMAND`, queue a command of the client's own command
 * language (`lib/client/command.ts`) on a client; each client runs its
 * commands one after another, like a script, after a `hello` to the server
 * as the real client does. `WHO` is a client name (created on first use),
 * or a pattern with `*` (`node-*`, `*`) matching the clients created so far,
 * optionally followed by `every K` (the 1st, (K+1)th, ... of them). A killed
 * client ignores commands.
 *
 * ```
 * alice: register
 * bob: connect alice
 * alice: accept bob
 * alice: send hello
 * node-* every 2: watch
 * ```
 *
 * Network and time directives (`P` is a probability, `0.05` or `5%`;
 * `DURATION` is `250ms`, `5s`, `1.5s`, `2m` or `1h`; delays are ms):
 *
 * | directive | effect |
 * |---|---|
 * | `loss P [burst N]` | lose datagrams with probability P; with `burst N` (N > 1), in bursts of N on average (Gilbert-Elliott, per directed link) |
 * | `duplicate P` | deliver a datagram twice with probability P |
 * | `reorder P` | hold a datagram back, so later ones overtake it, with probability P |
 * | `delay MIN MAX` | one-way delay uniform from MIN to MAX ms (default 5 to 40) |
 * | `partition A B` | cut A from B both ways; A and B are client names, patterns, `server` or `*` |
 * | `partition A -> B` | cut A to B only (B still reaches A) |
 * | `heal [A [B]]` | remove the partitions between A and B, or with A, or all |
 * | `crash server` / `restart server` | crash the server (memory and unwritten data lost) / start it again from disk |
 * | `kill WHO` | stop clients as `kill -9` would |
 * | `advance DURATION` | run the simulation for that long |
 * | `settle [DURATION]` | run until no command waits and no packet flies (timers aside), at most DURATION (default 10m) |
 * | `clients N PREFIX` | create clients PREFIX-1 to PREFIX-N (`--clients` overrides N) |
 * | `lease DURATION` | the server's session lease (default 30s); only before any other directive but loss, duplicate, reorder and delay |
 * | `repeat N LINE` | the line N times, `{i}` replaced by 1 to N |
 *
 * Partitions are by host: each client has its own host (`127.0.x.y`) and the
 * server is `127.0.0.1`, so a partition cuts UDP and TCP alike. Datagrams
 * across a partition are lost; TCP frames across one wait and flow again
 * after `heal`.
 *
 * The loss, duplicate, reorder and delay lines before anything else set the
 * initial network, which the runner's overrides (`--loss` and so on) replace
 * field by field; later ones change the network from that moment on.
 *
 * After the last line the runner settles (at most 10 virtual minutes), waits
 * one more lease so the sessions of killed clients run out, and checks the
 * invariants ({@linkcode checkInvariants}).
 *
 * @module
 */
import { type Command, CommandError, parseCommand, splitArgs } from "../client/command.ts";
import type { CommandResult } from "../client/client_event.ts";
import { clientEventText, commandResultText } from "../client/client_event_text.ts";
import { type Impairment, impairmentProblem, type NetworkStats } from "./sim_network.ts";
import { nameKey, nameProblem } from "../wire/client_name.ts";
import { lowerFirstWord } from "../error_line.ts";
import { DEFAULT_LEASE_MS } from "../server/server_core.ts";
import { type SimClient, type SimPeerMessage, Simulation } from "./simulation.ts";

/** The server's host in the simulation, as partitions name it. */
const SERVER_HOST = "127.0.0.1";

/** The network a scenario starts from before its own lines: no loss, 5 to 40 ms. */
export const DEFAULT_IMPAIRMENT: Impairment = {
  loss: 0,
  duplicate: 0,
  reorder: 0,
  minDelayMs: 5,
  maxDelayMs: 40,
};

/** How long the final settle may take, virtual ms. */
const FINAL_SETTLE_MS = 10 * 60_000;

/** Largest `repeat` and `clients` count. */
const MAX_COUNT = 100_000;

/** Thrown for a scenario line that cannot be parsed or run. */
export class ScenarioError extends Error {
  /** The 1-based line number. */
  readonly line: number;

  /**
   * @param line the 1-based line number
   * @param message what is wrong, one sentence
   */
  constructor(line: number, message: string) {
    super(`line ${line}: ${lowerFirstWord(message)}`);
    this.name = "ScenarioError";
    this.line = line;
  }
}

/** Which clients a line applies to: one name, or a pattern with `*`. */
export type Selector =
  | { readonly name: string }
  | { readonly pattern: string; readonly every: number };

/** One side of a partition. */
export type Side = { readonly server: true } | { readonly everyone: true } | Selector;

/** One parsed line. */
export type Step =
  & { readonly line: number }
  & (
    | { readonly kind: "client"; readonly who: Selector; readonly command: Command }
    | { readonly kind: "loss"; readonly loss: number; readonly burst?: number }
    | { readonly kind: "duplicate"; readonly p: number }
    | { readonly kind: "reorder"; readonly p: number }
    | { readonly kind: "delay"; readonly minMs: number; readonly maxMs: number }
    | { readonly kind: "partition"; readonly a: Side; readonly b: Side; readonly oneWay: boolean }
    | { readonly kind: "heal"; readonly a?: Side; readonly b?: Side }
    | { readonly kind: "crash" }
    | { readonly kind: "restart" }
    | { readonly kind: "kill"; readonly who: Selector }
    | { readonly kind: "advance"; readonly ms: number }
    | { readonly kind: "settle"; readonly ms?: number }
    | { readonly kind: "clients"; readonly count: number; readonly prefix: string }
    | { readonly kind: "lease"; readonly ms: number }
  );

/** A parsed scenario. */
export interface Scenario {
  /** Its name, for messages: a built-in name or a file path. */
  readonly name: string;
  /** The lines, `repeat` expanded. */
  readonly steps: readonly Step[];
}

/**
 * Parses a scenario.
 *
 * @param text the scenario's text
 * @param name its name, for messages
 * @returns the scenario
 * @throws {ScenarioError} for the first line that is not valid, with its number
 *
 * @example
 * ```ts
 * const scenario = parseScenario("loss 10%\nalice: register\nadvance 5s\n", "mine");
 * scenario.steps[1]; // { line: 2, kind: "client", who: { name: "alice" }, command: { kind: "register" } }
 * ```
 */
export function parseScenario(text: string, name = "scenario"): Scenario {
  const steps: Step[] = [];
  let header = true;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1;
    const trimmed = lines[i].trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const repeat = /^repeat\s+(\S+)(?:\s+(.*))?$/i.exec(trimmed);
    const expanded: Step[] = [];
    if (repeat !== null) {
      const count = countArg(line, "repeat", repeat[1]);
      const body = repeat[2]?.trim() ?? "";
      if (body === "" || body.startsWith("#")) {
        throw new ScenarioError(line, "repeat needs a line to repeat: repeat N LINE");
      }
      if (/^repeat\s/i.test(body)) throw new ScenarioError(line, "repeat cannot be nested");
      for (let n = 1; n <= count; n++) {
        expanded.push(parseLine(line, body.replaceAll("{i}", String(n))));
      }
    } else {
      expanded.push(parseLine(line, trimmed));
    }
    for (const step of expanded) {
      const setting = step.kind === "loss" || step.kind === "duplicate" ||
        step.kind === "reorder" || step.kind === "delay" || step.kind === "lease";
      if (step.kind === "lease" && !header) {
        throw new ScenarioError(
          line,
          "lease must come before every directive but loss, duplicate, reorder and delay",
        );
      }
      if (!setting) header = false;
      steps.push(step);
    }
  }
  return { name, steps };
}

function parseLine(line: number, text: string): Step {
  const colon = text.indexOf(":");
  if (colon !== -1) {
    const who = parseSelector(line, text.slice(0, colon).trim());
    let command: Command | undefined;
    try {
      command = parseCommand(text.slice(colon + 1));
    } catch (error) {
      if (error instanceof CommandError) throw new ScenarioError(line, error.message);
      throw error;
    }
    if (command === undefined) {
      throw new ScenarioError(line, "Client lines need a command after the colon");
    }
    return { line, kind: "client", who, command };
  }
  const uncommented = text.replace(/\s#.*$/, "");
  let words: string[];
  try {
    words = splitArgs(uncommented.replace(/\s*->\s*/g, " -> "));
  } catch {
    throw new ScenarioError(line, "The line has a quote that is not closed");
  }
  const [keyword, ...args] = words;
  const word = keyword.toLowerCase();
  const arity = (min: number, max: number, usage: string) => {
    if (args.length < min || args.length > max) throw new ScenarioError(line, `Usage: ${usage}`);
  };
  switch (word) {
    case "loss": {
      if (args.length !== 1 && !(args.length === 3 && args[1].toLowerCase() === "burst")) {
        throw new ScenarioError(line, "Usage: loss P [burst N]");
      }
      const loss = probabilityArg(line, "loss", args[0]);
      if (args.length === 1) return { line, kind: "loss", loss };
      const burst = Number(args[2]);
      if (!/^\d+(\.\d+)?$/.test(args[2]) || !(burst >= 1)) {
        throw new ScenarioError(line, `burst must be a mean length of 1 or more, not "${args[2]}"`);
      }
      const problem = impairmentProblem({ ...DEFAULT_IMPAIRMENT, loss, burst });
      if (problem !== undefined) throw new ScenarioError(line, problem);
      return { line, kind: "loss", loss, burst };
    }
    case "duplicate":
    case "reorder":
      arity(1, 1, `${word} P`);
      return { line, kind: word, p: probabilityArg(line, word, args[0]) };
    case "delay": {
      arity(2, 2, "delay MIN MAX (ms)");
      const minMs = delayArg(line, args[0]), maxMs = delayArg(line, args[1]);
      if (minMs > maxMs) {
        throw new ScenarioError(line, `The delay range ${minMs} to ${maxMs} ms runs backwards`);
      }
      return { line, kind: "delay", minMs, maxMs };
    }
    case "partition": {
      const usage = "partition A B | partition A -> B";
      const oneWay = args.length === 3 && args[1] === "->";
      if (args.length !== 2 && !oneWay) throw new ScenarioError(line, `Usage: ${usage}`);
      const a = parseSide(line, args[0]), b = parseSide(line, args[oneWay ? 2 : 1]);
      return { line, kind: "partition", a, b, oneWay };
    }
    case "heal": {
      const sides = args.filter((arg) => arg !== "->");
      if (sides.length > 2) throw new ScenarioError(line, "Usage: heal [A [B]]");
      return {
        line,
        kind: "heal",
        ...(sides[0] === undefined ? {} : { a: parseSide(line, sides[0]) }),
        ...(sides[1] === undefined ? {} : { b: parseSide(line, sides[1]) }),
      };
    }
    case "crash":
    case "restart":
      if (args.length !== 1 || args[0].toLowerCase() !== "server") {
        throw new ScenarioError(
          line,
          `Usage: ${word} server` + (word === "crash" ? " (use kill NAME for a client)" : ""),
        );
      }
      return { line, kind: word };
    case "kill":
      if (args.length === 0) throw new ScenarioError(line, "Usage: kill WHO");
      return { line, kind: "kill", who: parseSelector(line, args.join(" ")) };
    case "advance":
      arity(1, 1, "advance DURATION");
      return { line, kind: "advance", ms: durationArg(line, args[0]) };
    case "settle":
      arity(0, 1, "settle [DURATION]");
      return args.length === 0
        ? { line, kind: "settle" }
        : { line, kind: "settle", ms: durationArg(line, args[0]) };
    case "lease":
      arity(1, 1, "lease DURATION");
      return { line, kind: "lease", ms: durationArg(line, args[0]) };
    case "clients": {
      arity(2, 2, "clients N PREFIX");
      const count = countArg(line, "clients", args[0]);
      const prefix = args[1];
      const problem = nameProblem(`${prefix}-${count}`);
      if (problem !== undefined) throw new ScenarioError(line, problem);
      return { line, kind: "clients", count, prefix };
    }
    default:
      throw new ScenarioError(
        line,
        `Unknown directive "${keyword}"; client lines are NAME: COMMAND`,
      );
  }
}

function parseSelector(line: number, text: string): Selector {
  let who = text;
  let every = 1;
  const match = /^(.*?)\s+every\s+(\S+)$/i.exec(text);
  if (match !== null) {
    who = match[1].trim();
    every = countArg(line, "every", match[2]);
  }
  if (who === "") throw new ScenarioError(line, "Client lines need a name before the colon");
  if (who.includes("*")) return { pattern: who, every };
  if (every !== 1) throw new ScenarioError(line, "every K needs a pattern with *, as in node-*");
  const problem = nameProblem(who);
  if (problem !== undefined) throw new ScenarioError(line, problem);
  if (nameKey(who) === "server") {
    throw new ScenarioError(line, `"${who}" is the server here; choose another client name`);
  }
  return { name: who };
}

function parseSide(line: number, text: string): Side {
  if (text.toLowerCase() === "server") return { server: true };
  if (text === "*") return { everyone: true };
  return parseSelector(line, text);
}

function probabilityArg(line: number, what: string, text: string): number {
  const percent = text.endsWith("%");
  const digits = percent ? text.slice(0, -1) : text;
  const value = /^(\d+(\.\d*)?|\.\d+)$/.test(digits) ? Number(digits) / (percent ? 100 : 1) : NaN;
  if (!(value >= 0 && value <= 1)) {
    throw new ScenarioError(
      line,
      `${what} must be a probability such as 0.05 or 5%, not "${text}"`,
    );
  }
  return value;
}

function delayArg(line: number, text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(text);
  if (match === null) {
    throw new ScenarioError(line, `Delays must be numbers of ms, not "${text}"`);
  }
  return Number(match[1]) * (match[2] === "s" ? 1000 : 1);
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000 };

/**
 * Parses a duration of the scenario language: `250ms`, `5s`, `1.5s`, `2m`,
 * `2min`, `1h`.
 *
 * @param text the duration
 * @returns milliseconds, or undefined if it is not a duration
 */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|min|h)$/.exec(text.trim());
  if (match === null) return undefined;
  const ms = Number(match[1]) * UNITS[match[2]];
  return ms > 0 && ms <= 7 * 24 * 3_600_000 ? ms : undefined;
}

function durationArg(line: number, text: string): number {
  const ms = parseDuration(text);
  if (ms === undefined) {
    throw new ScenarioError(
      line,
      `Expected a duration such as 500ms, 5s or 2m (at most a week), not "${text}"`,
    );
  }
  return ms;
}

function countArg(line: number, what: string, text: string): number {
  const n = /^\d{1,9}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= MAX_COUNT)) {
    throw new ScenarioError(
      line,
      `${what} needs a whole number from 1 to ${MAX_COUNT}, not "${text}"`,
    );
  }
  return n;
}

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
    }
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

/**
 * Checks the invariants of a finished run (call it after the run settled
 * and one more lease passed):
 *
 * - peer messages: in each direction of each session, what was delivered is,
 *   in order, a prefix of what was sent: no duplicates, nothing fabricated,
 *   order kept;
 * - an acknowledged peer message was delivered, unless an earlier message of
 *   its direction never was acknowledged (a selective ack can cover a
 *   message that waits behind a gap when the session ends);
 * - no ghosts: no session in the server's active list belongs to a killed
 *   client;
 * - every acknowledged registration (a successful `register` whose client
 *   did not try `deregister` afterwards) is on the simulated disk, server
 *   crashes included.
 *
 * @param sim the simulation
 * @returns the violations, one sentence each; empty if all hold
 */
export function checkInvariants(sim: Simulation): string[] {
  const violations = checkPeerMessages(sim.peerSent, sim.peerDelivered);

  const server = sim.server;
  if (server !== undefined) {
    const killed = new Map(sim.clients.filter((c) => !c.alive).map((c) => [c.address, c]));
    for (const session of server.sessions.list()) {
      const ghost = killed.get(`${session.ip}:${session.udpPort}`);
      if (ghost !== undefined) {
        violations.push(
          `Ghost: "${session.name}" of killed client ${ghost.address} is still in the active ` +
            `list a lease after it was killed`,
        );
      }
    }
  }

  const onDisk = new Set(Object.keys(sim.disk).map(nameKey));
  for (const client of sim.clients) {
    for (const name of acknowledgedRegistrations(client.results)) {
      if (!onDisk.has(nameKey(name))) {
        violations.push(
          `Lost registration: "${name}" (client ${client.address}) was acknowledged but is ` +
            `not on disk` + (sim.crashes > 0 ? ` after ${sim.crashes} server crash(es)` : ""),
        );
      }
    }
  }
  return violations;
}

/** Names whose registration a client saw acknowledged and never tried to undo. */
function acknowledgedRegistrations(results: readonly CommandResult[]): string[] {
  const names = new Map<string, string>();
  for (const result of results) {
    if (result.ok && result.command === "register") {
      names.set(nameKey(result.name), result.name);
    } else if (result.command === "deregister") {
      // Failed or not, the server may have executed it (a lost reply).
      names.clear();
    }
  }
  return [...names.values()];
}

/** At most this many peer-message violations are listed per run. */
const MAX_PEER_VIOLATIONS = 10;

/**
 * Checks peer messages: per session and direction, delivered is an in-order
 * prefix of sent, and acknowledged messages behind no unacknowledged one
 * were delivered.
 *
 * @param sent every message sent, in send order
 * @param delivered every message delivered, in delivery order
 * @returns the violations, one sentence each
 *
 * @example
 * ```ts
 * checkPeerMessages([], [{ from: "a", to: "b", session: "s", index: 0, text: "x", sentAt: 0 }]);
 * // ['Fabricated: b got message 0 "x" from a in session s, which was never sent']
 * ```
 */
export function checkPeerMessages(
  sent: readonly SimPeerMessage[],
  delivered: readonly SimPeerMessage[],
): string[] {
  const violations: string[] = [];
  const key = (m: SimPeerMessage) => `${m.session}\u0000${m.from}\u0000${m.to}`;
  const sentBy = new Map<string, Map<number, SimPeerMessage>>();
  for (const m of sent) {
    let byIndex = sentBy.get(key(m));
    if (byIndex === undefined) sentBy.set(key(m), byIndex = new Map());
    byIndex.set(m.index, m);
  }
  const deliveredCount = new Map<string, number>();
  for (const m of delivered) {
    const k = key(m);
    const expected = deliveredCount.get(k) ?? 0;
    const original = sentBy.get(k)?.get(m.index);
    const what = `${m.to} got message ${m.index} ${JSON.stringify(m.text)} from ${m.from} ` +
      `in session ${m.session}`;
    if (original === undefined) {
      violations.push(`Fabricated: ${what}, which was never sent`);
    } else if (original.text !== m.text) {
      violations.push(`Corrupted: ${what}, but ${JSON.stringify(original.text)} was sent`);
    } else if (m.index < expected) {
      violations.push(`Duplicate: ${what} again`);
    } else if (m.index > expected) {
      violations.push(`Out of order: ${what} before message ${expected}`);
    }
    deliveredCount.set(k, Math.max(expected, m.index + 1));
  }
  for (const [k, byIndex] of sentBy) {
    const count = deliveredCount.get(k) ?? 0;
    for (let i = 0; byIndex.get(i)?.ackedAt !== undefined; i++) {
      if (i < count) continue;
      const m = byIndex.get(i)!;
      violations.push(
        `Acknowledged but not delivered: message ${i} ${JSON.stringify(m.text)} from ${m.from} ` +
          `to ${m.to} in session ${m.session}`,
      );
    }
  }
  if (violations.length > MAX_PEER_VIOLATIONS) {
    const more = violations.length - MAX_PEER_VIOLATIONS;
    return [...violations.slice(0, MAX_PEER_VIOLATIONS), `... and ${more} more peer violations`];
  }
  return violations;
}

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
