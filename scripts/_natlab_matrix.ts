/**
 * The NAT lab's text output: the self-check table, the matrix of paths
 * (initiator's NAT by acceptor's NAT) and one line per pair with the figures
 * and the NAT mapping each side's address discovery found.
 *
 * @module
 */
import type { CellResult, SelfCheck } from "./_natlab_lab.ts";
import { LAN_KINDS } from "./_natlab_ruleset.ts";

/** The figures of one ordered pair over its runs. */
export interface PairSummary {
  /** The initiator's NAT kind. */
  readonly initiator: string;
  /** The acceptor's NAT kind. */
  readonly acceptor: string;
  /** Runs of the pair. */
  readonly runs: number;
  /** Runs whose session found a direct path. */
  readonly direct: number;
  /** Runs whose session worked through the relay only. */
  readonly relayed: number;
  /** The median time to a working session over those runs, in ms. */
  readonly p50Ms: number | null;
  /** The longest such time, in ms. */
  readonly maxMs: number | null;
  /** Chat messages delivered over all runs. */
  readonly delivered: number;
  /** Chat messages sent over all runs. */
  readonly sent: number;
  /** Runs whose file arrived. */
  readonly files: number;
  /**
   * The NAT mappings address discovery found, initiator's and acceptor's, in
   * short (`EI` endpoint-independent, `DD` destination-dependent, `?`
   * unknown, `-` not reported), as `EI/DD`; runs that differ are joined by `,`.
   */
  readonly mappings: string;
}

/**
 * Sums up the results of each ordered pair, in the order pairs first appear.
 *
 * @param cells every cell's result
 * @returns one summary per pair
 */
export function summarizePairs(cells: readonly CellResult[]): PairSummary[] {
  const pairs = new Map<string, CellResult[]>();
  for (const cell of cells) {
    const key = `${cell.initiator}\n${cell.acceptor}`;
    pairs.set(key, [...(pairs.get(key) ?? []), cell]);
  }
  return [...pairs.values()].map((runs) => {
    const times = runs.flatMap((r) => r.sessionMs === null ? [] : [r.sessionMs])
      .sort((a, b) => a - b);
    return {
      initiator: runs[0].initiator,
      acceptor: runs[0].acceptor,
      runs: runs.length,
      direct: runs.filter((r) => r.path === "direct").length,
      relayed: runs.filter((r) => r.path === "relay").length,
      p50Ms: times.length === 0 ? null : times[Math.floor((times.length - 1) / 2)],
      maxMs: times.length === 0 ? null : times[times.length - 1],
      delivered: runs.reduce((sum, r) => sum + r.delivered, 0),
      sent: runs.reduce((sum, r) => sum + r.sent, 0),
      files: runs.filter((r) => r.file).length,
      mappings: [
        ...new Set(runs.map((r) => `${short(r.initiatorMapping)}/${short(r.acceptorMapping)}`)),
      ].join(","),
    };
  });
}

/** A mapping type in short, for the table. */
function short(mapping: string | undefined): string {
  switch (mapping) {
    case "endpoint-independent":
      return "EI";
    case "destination-dependent":
      return "DD";
    case "unknown":
      return "?";
    default:
      return "-";
  }
}

function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd())
    .join("\n");
}

function path(summary: PairSummary): string {
  const { runs, direct, relayed } = summary;
  const failed = runs - direct - relayed;
  if (direct === runs) return "direct";
  if (relayed === runs) return "relay";
  if (failed === runs) return "failed";
  return [[direct, "direct"], [relayed, "relay"], [failed, "failed"]]
    .filter(([n]) => n !== 0).map(([n, what]) => `${what} ${n}/${runs}`).join(", ");
}

/**
 * Formats the self-check: what each kind measured against what it must show.
 *
 * @param checks the self-check's results
 * @returns a table, one kind a line
 */
export function formatSelfCheck(checks: readonly SelfCheck[]): string {
  const yes = (value: boolean) => value ? "yes" : "no";
  return table([
    ["kind", "mapping", "filtering", "UDP to others", "check"],
    ...checks.map((c) => [
      c.kind,
      c.measured?.mapping ?? "-",
      c.measured?.filtering ?? "-",
      c.measured === undefined ? "-" : yes(c.measured.outside),
      c.ok
        ? "ok"
        : c.measured === undefined
        ? `error: ${c.error ?? "no report"}`
        : `expected ${c.expected.mapping}/${c.expected.filtering}, UDP to others ${
          yes(c.expected.outside)
        }`,
    ]),
  ]);
}

/**
 * Formats the matrix of paths (rows: the initiator's NAT; columns: the
 * acceptor's), then one line per pair with its figures.
 *
 * @param cells every cell's result
 * @returns the text
 */
export function formatMatrix(cells: readonly CellResult[]): string {
  const summaries = summarizePairs(cells);
  const unique = (values: string[]) => [...new Set(values)];
  const lan: readonly string[] = LAN_KINDS;
  const grid = summaries.filter((s) => !lan.includes(s.initiator));
  const parts: string[] = [];
  if (grid.length > 0) {
    const rows = unique(grid.map((s) => s.initiator));
    const columns = unique(grid.map((s) => s.acceptor));
    const at = (row: string, column: string) =>
      grid.find((s) => s.initiator === row && s.acceptor === column);
    parts.push(table([
      ["initiator \\ acceptor", ...columns],
      ...rows.map((row) => [row, ...columns.map((c) => at(row, c) ? path(at(row, c)!) : "")]),
    ]));
  }
  const ms = (value: number | null) => value === null ? "-" : `${value}`;
  parts.push(table([
    ["initiator", "acceptor", "path", "session p50 ms", "max ms", "messages", "files", "mapping"],
    ...summaries.map((s) => [
      s.initiator,
      s.acceptor,
      path(s),
      ms(s.p50Ms),
      ms(s.maxMs),
      `${s.delivered}/${s.sent}`,
      `${s.files}/${s.runs}`,
      s.mappings,
    ]),
  ]));
  parts.push(
    "mapping: initiator/acceptor, as address discovery found it: EI endpoint-independent, " +
      "DD destination-dependent (symmetric), ? unknown",
  );
  return parts.join("\n\n");
}
