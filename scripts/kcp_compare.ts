/**
 * Compares the reliability engine with KCP on KCP's own latency test
 * (skywind3000/kcp, test.cpp): 5% loss each way, one-way delay 30 ms plus a
 * uniform 0..31 ms without reordering, an 8-byte message every 20 ms from A
 * echoed by B, 1000 messages; the round trip of a message runs from A
 * sending it to A receiving its echo. Virtual time, deterministic per seed.
 *
 * Usage: deno run scripts/kcp_compare.ts [--seeds 20] [--messages 1000] [--json]
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { type KcpScenarioResult, runKcpScenario } from "./_kcp_scenario.ts";
import {
  LOW_LATENCY_CHANNEL_OPTIONS,
  type ReliableChannelOptions,
} from "../lib/reliable/reliable_channel.ts";

/** KCP's published figures for its fast mode on this test (README and wiki). */
const KCP_FAST = { averageMs: [136, 141], maxMs: [347, 404] };

const MODES: { name: string; channel: ReliableChannelOptions }[] = [
  { name: "selective (defaults)", channel: {} },
  { name: "selective (low latency)", channel: LOW_LATENCY_CHANNEL_OPTIONS },
  { name: "stop-and-wait", channel: { mode: "stop_and_wait", deadAfterMs: 3_600_000 } },
];

interface Summary {
  mode: string;
  averageMs: number;
  worstSeedAverageMs: number;
  maxMs: number;
  packetsPerRun: number;
  retransmissionsPerRun: number;
  dead: number;
}

function summarize(mode: string, results: KcpScenarioResult[]): Summary {
  const n = results.length;
  const allRtts = results.flatMap((r) => r.rtts);
  return {
    mode,
    averageMs: allRtts.reduce((sum, rtt) => sum + rtt, 0) / allRtts.length,
    worstSeedAverageMs: Math.max(...results.map((r) => r.averageRttMs)),
    maxMs: Math.max(...results.map((r) => r.maxRttMs)),
    packetsPerRun: results.reduce((sum, r) => sum + r.packets, 0) / n,
    retransmissionsPerRun: results.reduce((sum, r) => sum + r.retransmissions, 0) / n,
    dead: results.filter((r) => r.dead !== undefined).length,
  };
}

function ms(value: number): string {
  return value >= 10_000 ? `${(value / 1000).toFixed(1)} s` : `${value.toFixed(1)}`;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    "| " +
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(" | ") +
    " |";
  const rule = "|" + widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":"))
    .join("|") +
    "|";
  return [line(header), rule, ...rows.map(line)].join("\n");
}

function main(): void {
  const args = parseArgs(Deno.args, {
    string: ["seeds", "messages"],
    boolean: ["json", "help"],
    default: { seeds: "20", messages: "1000" },
  });
  if (args.help) {
    console.log("Usage: deno run scripts/kcp_compare.ts [--seeds 20] [--messages 1000] [--json]");
    return;
  }
  const seeds = Number(args.seeds), messages = Number(args.messages);
  if (!Number.isInteger(seeds) || seeds < 1 || !Number.isInteger(messages) || messages < 1) {
    console.error("error: --seeds and --messages take positive integers");
    Deno.exit(2);
  }

  const byMode = MODES.map(({ name, channel }) => ({
    name,
    results: Array.from({ length: seeds }, (_, i) => runKcpScenario(i + 1, { messages, channel })),
  }));
  const summaries = byMode.map(({ name, results }) => summarize(name, results));

  if (args.json) {
    console.log(JSON.stringify({ seeds, messages, kcpFast: KCP_FAST, summaries }, null, 2));
    return;
  }

  console.log(
    `KCP latency test: ${messages} messages every 20 ms, echoed; 5% loss each way; ` +
      `one-way delay 30 ms + 0..31 ms, no reordering; seeds 1..${seeds}. RTT in ms.\n`,
  );
  console.log("Per seed (average / maximum RTT):\n");
  console.log(table(
    ["seed", ...MODES.flatMap((m) => [`${m.name} avg`, "max"])],
    Array.from({ length: seeds }, (_, i) => [
      String(i + 1),
      ...byMode.flatMap(({ results }) => [ms(results[i].averageRttMs), ms(results[i].maxRttMs)]),
    ]),
  ));
  console.log(`\nOver ${seeds} seeds:\n`);
  console.log(table(
    ["mode", "avg RTT", "worst seed avg", "max RTT", "packets/run", "retransmits/run", "dead"],
    [
      ...summaries.map((s) => [
        s.mode,
        ms(s.averageMs),
        ms(s.worstSeedAverageMs),
        ms(s.maxMs),
        s.packetsPerRun.toFixed(0),
        s.retransmissionsPerRun.toFixed(0),
        String(s.dead),
      ]),
      [
        "KCP fast mode (published)",
        `${KCP_FAST.averageMs[0]}-${KCP_FAST.averageMs[1]}`,
        "",
        `${KCP_FAST.maxMs[0]}-${KCP_FAST.maxMs[1]}`,
        "",
        "",
        "",
      ],
    ],
  ));
  console.log(
    "\nStop-and-wait carries one message per round trip (about 10 a second) while A offers 50 a " +
      "second, so its messages queue and their RTT is mostly waiting time, plus 10 s per loss.",
  );
  const best = summaries[1];
  console.log(
    `\nLow-latency preset vs KCP fast mode (best published figures): average ` +
      `${(best.averageMs / KCP_FAST.averageMs[0]).toFixed(2)}x, maximum ` +
      `${(best.maxMs / KCP_FAST.maxMs[0]).toFixed(2)}x; packets vs our defaults ` +
      `${(best.packetsPerRun / summaries[0].packetsPerRun).toFixed(2)}x.`,
  );
}

if (import.meta.main) main();
