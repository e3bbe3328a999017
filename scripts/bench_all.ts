/**
 * `deno task bench`: every benchmark, each figure a ratio against a baseline
 * measured in the same run, then one summary table for docs/BENCHMARKS.md.
 *
 * 1. Peer file transfer (`scripts/bench_transfer.ts`): 64 MiB on loopback
 *    vs a bare UDP blast and plain TCP; 5% and 10% loss with 20 ms delay
 *    through the impairment proxy vs stop-and-wait.
 * 2. KCP's latency test in the simulator (`runKcpScenario`, 20 seeds) beside
 *    KCP's published fast-mode figures.
 * 3. The simulator's speed: virtual seconds per wall second, 100 clients
 *    (the `crowd` scenario).
 * 4. The server: register+deregister (`scripts/bench.ts`) and lookups and
 *    heartbeats (`scripts/bench_presence.ts`), each vs a bare UDP echo server.
 *
 * Usage: deno task bench [--quick]
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { fromFileUrl, join } from "@std/path";
import { BUILT_IN_SCENARIOS } from "../lib/sim/built_in_scenarios.ts";
import { parseScenario } from "../lib/sim/scenario.ts";
import { runScenario } from "../lib/sim/scenario_runner.ts";
import { runKcpScenario } from "./_kcp_scenario.ts";
import { LOW_LATENCY_CHANNEL_OPTIONS } from "../lib/reliable/reliable_channel.ts";
import { rejectUnknownFlags } from "../lib/cli/usage_error.ts";

const REPO = fromFileUrl(new URL("..", import.meta.url));
const HELP = `bench: every Switchboard benchmark, each against a baseline measured in the same run

Usage: deno task bench [--quick]

  --quick     smaller runs (16 MiB transfer, fewer seeds, short server rounds)
  -h, --help  show this help

Each part also runs alone: deno task bench:transfer, bench:register, bench:presence.`;

/** KCP's fast mode on the same test (skywind3000/kcp README): average and maximum RTT, ms. */
const KCP_FAST = { average: [136, 141], max: [347, 404] };

interface Row {
  figure: string;
  value: string;
  baseline: string;
  ratio: string;
  command: string;
}

async function runScript(script: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--config", join(REPO, "deno.json"), join(REPO, script), ...args],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  if (!output.success) throw new Error(`${script} failed:\n${text}`);
  return text;
}

/** The JSON object that ends a script's output (one line, or pretty-printed). */
function lastJson(text: string): Record<string, unknown> {
  const lines = text.trimEnd().split("\n");
  for (let i = lines.length - 1; i >= 0; i--) {
    if (!lines[i].startsWith("{")) continue;
    try {
      return JSON.parse(lines.slice(i).join("\n"));
    } catch {
      // Not where the object starts: look further up.
    }
  }
  throw new Error(`No JSON in:\n${text}`);
}

const mbps = (bytesPerSecond: number) => `${(bytesPerSecond / 1e6).toFixed(2)} MB/s`;

async function transferRows(quick: boolean): Promise<Row[]> {
  const args = quick ? ["--size", "16", "--link-size", "4", "--losses", "1,5,10"] : [];
  console.log("Peer file transfer...");
  const r = lastJson(await runScript("scripts/bench_transfer.ts", [...args, "--json"])) as {
    sizeBytes: number;
    udpBlastBytesPerSecond: number;
    tcpBytesPerSecond: number;
    sendfileBytesPerSecond: number;
    rounds: number;
    ratioToUdpBlast: number;
    ratioToTcp: number;
    bottleneck: {
      rows: {
        loss: number;
        shareOfLink: number;
        newrenoShareOfLink: number;
        mathisShareOfLink: number;
      }[];
    };
  };
  const mib = r.sizeBytes / 1024 / 1024;
  const command = `deno task bench:transfer${quick ? " " + args.join(" ") : ""}`;
  return [
    {
      figure: `sendfile ${mib} MiB, loopback`,
      value: mbps(r.sendfileBytesPerSecond),
      baseline: `bare UDP blast ${mbps(r.udpBlastBytesPerSecond)}`,
      // Medians over the rounds, and the median of each round's own ratio.
      ratio: r.ratioToUdpBlast.toFixed(2),
      command,
    },
    {
      figure: `sendfile ${mib} MiB, loopback`,
      value: mbps(r.sendfileBytesPerSecond),
      baseline: `plain TCP ${mbps(r.tcpBytesPerSecond)}`,
      ratio: r.ratioToTcp.toFixed(2),
      command,
    },
    ...r.bottleneck.rows.map((l) => ({
      figure: `sendfile, 8 MB/s link, ${l.loss * 100}% loss, 20 ms`,
      value: `${l.shareOfLink.toFixed(2)} of the link`,
      baseline: `NewReno-Veno ${l.newrenoShareOfLink.toFixed(3)}, Reno ${
        l.mathisShareOfLink.toFixed(3)
      }`,
      ratio: (l.shareOfLink / l.newrenoShareOfLink).toFixed(1),
      command,
    })),
  ];
}

function kcpRows(quick: boolean): Row[] {
  const seeds = quick ? 5 : 20;
  console.log(`KCP's latency test, ${seeds} seeds...`);
  let sum = 0, count = 0, max = 0;
  for (let seed = 1; seed <= seeds; seed++) {
    const run = runKcpScenario(seed, { channel: LOW_LATENCY_CHANNEL_OPTIONS });
    sum += run.averageRttMs * run.rtts.length;
    count += run.rtts.length;
    max = Math.max(max, run.maxRttMs);
  }
  const average = sum / count;
  const command = `deno task simulate --scenario kcp --seeds ${seeds}`;
  return [
    {
      figure: "KCP test, chat preset: average RTT",
      value: `${average.toFixed(1)} ms`,
      baseline: `KCP fast mode ${KCP_FAST.average.join("-")} ms`,
      ratio: `${(average / KCP_FAST.average[1]).toFixed(2)}-${
        (average / KCP_FAST.average[0]).toFixed(2)
      }`,
      command,
    },
    {
      figure: "KCP test, chat preset: max RTT",
      value: `${max} ms`,
      baseline: `KCP fast mode ${KCP_FAST.max.join("-")} ms`,
      ratio: `${(max / KCP_FAST.max[1]).toFixed(2)}-${(max / KCP_FAST.max[0]).toFixed(2)}`,
      command,
    },
  ];
}

function simulatorRows(quick: boolean): Row[] {
  const seeds = quick ? 1 : 3;
  console.log(`Simulator, 100 clients, ${seeds} seeds...`);
  const scenario = parseScenario(BUILT_IN_SCENARIOS.crowd, "crowd");
  let virtualMs = 0;
  const started = performance.now();
  for (let seed = 1; seed <= seeds; seed++) {
    virtualMs += runScenario(scenario, { seed, clients: 100 }).summary.virtualMs;
  }
  const wallMs = performance.now() - started;
  return [{
    figure: "simulator, 100 clients (crowd)",
    value: `${(virtualMs / 1000).toFixed(1)} virtual s in ${(wallMs / 1000).toFixed(2)} s`,
    baseline: "wall clock",
    ratio: `${(virtualMs / wallMs).toFixed(1)}x`,
    command: `deno task simulate --scenario crowd --clients 100 --seeds ${seeds} --timing`,
  }];
}

async function serverRows(quick: boolean): Promise<Row[]> {
  console.log("Server: register+deregister...");
  const registerArgs = quick ? ["--rounds", "1", "--seconds", "2"] : [];
  const register = lastJson(await runScript("scripts/bench.ts", [...registerArgs, "--json"]));
  console.log("Server: lookups and heartbeats...");
  const presenceArgs = quick
    ? ["--rounds", "1", "--registered", "2000", "--active", "500", "--seconds", "2"]
    : ["--rounds", "1"];
  const presence = await runScript("scripts/bench_presence.ts", presenceArgs);
  const rows: Row[] = [];
  const perSecond = (side: unknown) =>
    Math.round((side as { roundTripsPerSecond: number }).roundTripsPerSecond);
  rows.push({
    figure: "register+deregister round trips/s",
    value: `${perSecond(register.switchboard)}/s`,
    baseline: `UDP echo ${perSecond(register.echo)}/s`,
    ratio: (register.ratio as number).toFixed(3),
    command: `deno task bench:register${quick ? " " + registerArgs.join(" ") : ""}`,
  });
  const ratios =
    /ratio lookup: switchboard\/echo = ([\d.]+); ratio heartbeat: switchboard\/echo = ([\d.]+)/
      .exec(presence);
  if (ratios === null) throw new Error(`bench_presence printed no ratios:\n${presence}`);
  for (const [i, operation] of ["lookup", "heartbeat"].entries()) {
    rows.push({
      figure: `${operation} round trips/s (${
        quick ? "2,000 registered, 500" : "10,000 registered, 1,000"
      } online)`,
      value: "Switchboard",
      baseline: "UDP echo",
      ratio: Number(ratios[i + 1]).toFixed(2),
      command: `deno task bench:presence ${presenceArgs.join(" ")}`,
    });
  }
  return rows;
}

function machine(): string {
  const cores = navigator.hardwareConcurrency;
  const memory = Math.round(Deno.systemMemoryInfo().total / 1024 / 1024 / 1024);
  return `${Deno.build.arch}, ${cores} cores, ${memory} GiB, ${Deno.build.os} ${Deno.osRelease()}, Deno ${Deno.version.deno}, load ${
    Deno.loadavg().map((l) => l.toFixed(1)).join(" ")
  }`;
}

async function main(args: string[]): Promise<number> {
  const parsed = parseArgs(args, { boolean: ["quick", "help"], alias: { h: "help" } });
  try {
    rejectUnknownFlags(parsed, ["quick", "help", "h"]);
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    return 2;
  }
  if (parsed.help) {
    console.log(HELP);
    return 0;
  }
  const quick = parsed.quick;
  const rows: Row[] = [];
  // Each part's rows are printed as they come, so a failure later loses nothing.
  const part = (found: Row[]) => {
    for (const r of found) console.log(`  ${r.figure}: ${r.value} vs ${r.baseline}: ${r.ratio}`);
    rows.push(...found);
  };
  part(await transferRows(quick));
  part(kcpRows(quick));
  part(simulatorRows(quick));
  part(await serverRows(quick));
  console.log(`\n${new Date().toISOString().slice(0, 10)}, ${machine()}\n`);
  console.log("| figure | value | baseline (same run) | ratio | command |");
  console.log("|---|---:|---|---:|---|");
  for (const r of rows) {
    console.log(`| ${r.figure} | ${r.value} | ${r.baseline} | ${r.ratio} | \`${r.command}\` |`);
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
