/**
 * `deno task natlab`: builds real Linux NATs from network namespaces and
 * nftables, checks that each kind behaves as intended, then runs the real
 * server and two real clients through every ordered pair of kinds (connect,
 * chat, sendfile) and prints the matrix: path, time to a working session,
 * messages delivered. Needs root, `ip` (iproute2) and `nft` (nftables).
 *
 * Usage: `deno task natlab [--kinds a,b] [--runs N] [--timeout S] [--flush-at S] [--json] [--check] [--cleanup]`
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import {
  integerFlag,
  rejectUnknownFlags,
  secondsFlag,
  UsageError,
} from "../lib/cli/usage_error.ts";
import { type CellResult, Natlab, type SelfCheck } from "./_natlab_lab.ts";
import { formatMatrix, formatSelfCheck, summarizePairs } from "./_natlab_matrix.ts";
import { ALL_KINDS, isLanKind, type LabKind, type NatKind } from "./_natlab_ruleset.ts";
import {
  NAMESPACE_PREFIX,
  natlabUnavailable,
  removeLeftovers,
  runCommand,
} from "./_natlab_topology.ts";

const HELP = `Usage: deno task natlab [flags]

Builds NATs from Linux network namespaces and nftables (needs root, ip, nft),
checks each kind with a UDP probe, then runs the real server and clients
through every ordered pair of kinds: connect, chat, sendfile.

  --kinds LIST   comma-separated kinds (default: all): ${ALL_KINDS.join(", ")}
  --runs N       runs of each pair (default 1)
  --timeout S    seconds a pair gets before it counts as failed (default 15)
  --flush-at S   flush the NATs' connection tracking (conntrack -F) S seconds
                 after the session came up, mid-session (needs conntrack)
  --json         print one JSON object instead of tables
  --check        only the self-check of the kinds
  --cleanup      remove namespaces (sbnl-*) left by a killed run, and exit
  --help         this text`;

/** The parsed flags. */
interface Options {
  readonly kinds: readonly LabKind[];
  readonly runs: number;
  readonly timeoutMs: number;
  readonly flushAtMs?: number;
  readonly json: boolean;
  readonly check: boolean;
  readonly cleanup: boolean;
}

function parseOptions(args: string[]): Options | "help" {
  const parsed = parseArgs(args, {
    string: ["kinds", "runs", "timeout", "flush-at"],
    boolean: ["json", "check", "cleanup", "help"],
    default: { runs: "1", timeout: "15" },
  });
  rejectUnknownFlags(parsed, [
    "kinds",
    "runs",
    "timeout",
    "flush-at",
    "json",
    "check",
    "cleanup",
    "help",
  ]);
  if (parsed.help) return "help";
  const known: readonly string[] = ALL_KINDS;
  const kinds = parsed.kinds === undefined
    ? known
    : String(parsed.kinds).split(",").map((k: string) => k.trim());
  for (const kind of kinds) {
    if (!known.includes(kind)) {
      throw new UsageError(`--kinds: unknown kind "${kind}"; known: ${known.join(", ")}`);
    }
  }
  return {
    kinds: [...new Set(kinds)] as LabKind[],
    runs: integerFlag("--runs", parsed.runs, { min: 1, max: 1000 }),
    timeoutMs: secondsFlag("--timeout", parsed.timeout),
    ...(parsed["flush-at"] === undefined
      ? {}
      : { flushAtMs: secondsFlag("--flush-at", parsed["flush-at"]) }),
    json: parsed.json,
    check: parsed.check,
    cleanup: parsed.cleanup,
  };
}

async function run(options: Options, lab: Natlab): Promise<number> {
  const say = (line: string) => console.error(line);
  const checks: SelfCheck[] = await lab.selfCheck(options.kinds);
  if (!options.json) console.log(formatSelfCheck(checks) + "\n");
  const cells: CellResult[] = [];
  if (!options.check) {
    // Every ordered pair of NAT kinds, then each same-LAN router with itself.
    const nats = options.kinds.filter((k): k is NatKind => !isLanKind(k));
    const pairs: [LabKind, LabKind][] = [
      ...nats.flatMap((a) => nats.map((b) => [a, b] as [LabKind, LabKind])),
      ...options.kinds.filter(isLanKind).map((k) => [k, k] as [LabKind, LabKind]),
    ];
    const total = pairs.length * options.runs;
    for (let run = 1; run <= options.runs; run++) {
      for (const [a, b] of pairs) {
        const cellOptions = { timeoutMs: options.timeoutMs, flushAtMs: options.flushAtMs };
        const cell = isLanKind(a)
          ? await lab.runSameLan(a, cellOptions)
          : await lab.runCell(a, b as NatKind, cellOptions);
        cells.push(cell);
        const time = cell.sessionMs === null ? "" : ` in ${cell.sessionMs} ms` +
          (cell.directMs === undefined ? "" : `, direct at ${cell.directMs} ms`) +
          (cell.finishedMs === undefined ? "" : `, done at ${cell.finishedMs} ms`);
        say(
          `natlab: ${cells.length}/${total} ${a} -> ${b}: ${cell.path}${time}, ` +
            `${cell.delivered}/${cell.sent} messages, file ${cell.file ? "ok" : "no"}`,
        );
      }
    }
    if (!options.json) console.log(formatMatrix(cells));
  }
  if (options.json) {
    console.log(JSON.stringify({ selfCheck: checks, cells, pairs: summarizePairs(cells) }));
  }
  const bad = checks.filter((c) => !c.ok).map((c) => c.kind);
  if (bad.length > 0) {
    console.error(`error: the self-check failed for ${bad.join(", ")}; the lab is not trustworthy`);
    return 1;
  }
  return 0;
}

async function main(args: string[]): Promise<number> {
  let options: Options;
  try {
    const parsed = parseOptions(args);
    if (parsed === "help") {
      console.log(HELP);
      return 0;
    }
    options = parsed;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`error: ${error.message}`);
    return 2;
  }
  const unavailable = await natlabUnavailable();
  if (unavailable !== undefined) {
    console.error(`error: ${unavailable}`);
    return 1;
  }
  if (options.flushAtMs !== undefined && !await hasConntrack()) {
    console.error("error: --flush-at needs conntrack; install it: apt-get install -y conntrack");
    return 1;
  }
  if (options.cleanup) {
    const removed = await removeLeftovers();
    console.log(
      `Removed ${removed.length} namespace(s)${removed.length ? ": " : ""}${removed.join(", ")}`,
    );
    return 0;
  }
  const workDir = await Deno.makeTempDir({ prefix: "switchboard_natlab_" });
  let lab: Natlab | undefined;
  let stopping = false;
  const onSignal = async () => {
    if (stopping) Deno.exit(130); // a second signal: at once (`--cleanup` removes the rest)
    stopping = true;
    console.error("natlab: stopping; removing the lab");
    if (lab === undefined) return; // still opening: main removes it once open
    lab.killAll();
    await lab.topology.destroy();
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    lab = await Natlab.open({ workDir });
    if (stopping) return 130;
    console.error(`natlab: namespaces ${NAMESPACE_PREFIX}${lab.topology.id}-*`);
    return await run(options, lab);
  } catch (error) {
    if (stopping) return 130; // the signal's cleanup broke the run; not an error
    console.error(`error: ${(error as Error).message}`);
    return 1;
  } finally {
    await lab?.close();
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
  }
}

/** True if the `conntrack` tool is installed. */
async function hasConntrack(): Promise<boolean> {
  const found = await runCommand(["sh", "-c", "command -v conntrack"]).catch(() => "");
  return found.trim() !== "";
}

if (import.meta.main) Deno.exit(await main(Deno.args));
