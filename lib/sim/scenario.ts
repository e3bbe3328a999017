/**
 * Scenarios for the simulator: a small language that drives a
 * `Simulation` (the real server and client cores on a simulated network
 * with a virtual clock and one seeded random source), and its parser. The
 * runner that plays it is `scenario_runner.ts`; the invariants checked after
 * every run are `scenario_invariants.ts`.
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
 * | `nat WHO KIND [lan LABEL]` | put clients behind a NAT of KIND: `full-cone`, `address-restricted`, `port-restricted` or `symmetric` (RFC 4787 classes, as the NAT lab's); clients with the same `lan` label share one NAT |
 * | `flush nats [WHO]` | every NAT (or those of WHO) forgets its bindings, as `conntrack -F` |
 *
 * Partitions are by host: each client has its own host (`127.0.x.y`) and the
 * server is `127.0.0.1`, so a partition cuts UDP and TCP alike. Datagrams
 * across a partition are lost; TCP frames across one wait and flow again
 * after `heal`.
 *
 * A `nat` line creates the clients it names, like a client line; it must
 * come before their first commands run (the next `advance` or `settle`),
 * or the server has seen them from their inside address. Each NAT has its
 * own public address (`203.0.113.N`); its bindings last 30 s without
 * outbound traffic, and it does no hairpinning.
 *
 * The loss, duplicate, reorder and delay lines before anything else set the
 * initial network, which the runner's overrides (`--loss` and so on) replace
 * field by field; later ones change the network from that moment on.
 *
 * After the last line the runner (`scenario_runner.ts`) settles (at most 10
 * virtual minutes), waits one more lease so the sessions of killed clients
 * run out, and checks the invariants (`scenario_invariants.ts`).
 *
 * @module
 */
import { type Command, CommandError, parseCommand, splitArgs } from "../client/command.ts";
import { type Impairment, impairmentProblem } from "./sim_network.ts";
import { nameKey, nameProblem } from "../wire/client_name.ts";
import { lowerFirstWord } from "../error_line.ts";

/** The network a scenario starts from before its own lines: no loss, 5 to 40 ms. */
export const DEFAULT_IMPAIRMENT: Impairment = {
  loss: 0,
  duplicate: 0,
  reorder: 0,
  minDelayMs: 5,
  maxDelayMs: 40,
};

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
    | {
      readonly kind: "nat";
      readonly who: Selector;
      readonly nat: ScenarioNatKind;
      readonly lan?: string;
    }
    | { readonly kind: "flush"; readonly who?: Selector }
  );

/** The kinds of NAT a scenario can put clients behind (the NAT lab's, `scripts/natlab.ts`). */
export const SCENARIO_NAT_KINDS = [
  "full-cone",
  "address-restricted",
  "port-restricted",
  "symmetric",
] as const;

/** One of {@linkcode SCENARIO_NAT_KINDS}. */
export type ScenarioNatKind = (typeof SCENARIO_NAT_KINDS)[number];

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
    case "nat": {
      const usage = `Usage: nat WHO KIND [lan LABEL]; KIND: ${SCENARIO_NAT_KINDS.join(", ")}`;
      const lanAt = args.length >= 4 && args[args.length - 2].toLowerCase() === "lan"
        ? args.length - 2
        : args.length;
      if (lanAt < 2) throw new ScenarioError(line, usage);
      const kind = args[lanAt - 1].toLowerCase();
      if (!(SCENARIO_NAT_KINDS as readonly string[]).includes(kind)) {
        throw new ScenarioError(
          line,
          `Unknown NAT kind "${args[lanAt - 1]}"; known: ${SCENARIO_NAT_KINDS.join(", ")}`,
        );
      }
      return {
        line,
        kind: "nat",
        who: parseSelector(line, args.slice(0, lanAt - 1).join(" ")),
        nat: kind as ScenarioNatKind,
        ...(lanAt === args.length ? {} : { lan: args[lanAt + 1] }),
      };
    }
    case "flush":
      if (args[0]?.toLowerCase() !== "nats") {
        throw new ScenarioError(line, "Usage: flush nats [WHO]");
      }
      return args.length === 1
        ? { line, kind: "flush" }
        : { line, kind: "flush", who: parseSelector(line, args.slice(1).join(" ")) };
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
