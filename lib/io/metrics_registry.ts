/**
 * Counters, gauges and histograms, rendered in the Prometheus text
 * exposition format (version 0.0.4): `# HELP` and `# TYPE` lines, then one
 * sample a line, labels quoted and escaped. Names follow Prometheus's
 * conventions: `switchboard_` prefix, base units in the name (`_seconds`,
 * `_bytes`), `_total` on counters. Label values come from small fixed sets
 * (message types, reasons, event kinds), never from what a client chose.
 *
 * @module
 */

/** Labels of one series, such as `{ type: "register" }`. */
export type Labels = Readonly<Record<string, string>>;

/** The buckets of a latency histogram, seconds: 0.5 ms to 10 s. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge" | "histogram";
  /** Series by their rendered labels. */
  readonly series: Map<string, Series>;
  /** For gauges read at scrape time. */
  read?: () => number;
  readonly buckets?: readonly number[];
}

interface Series {
  readonly labels: string;
  value: number;
  /** Histograms: counts per bucket (not cumulative), then the sum. */
  counts?: number[];
  sum?: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * A set of metrics that renders as one Prometheus text page.
 *
 * @example
 * ```ts
 * const metrics = new MetricsRegistry();
 * metrics.counter("switchboard_datagrams_received_total", "Datagrams received");
 * metrics.add("switchboard_datagrams_received_total", 1, { type: "hello" });
 * metrics.render(); // "# HELP switchboard_datagrams_received_total ..."
 * ```
 */
export class MetricsRegistry {
  #families = new Map<string, Family>();

  /**
   * Declares a counter, shown at 0 until it counts.
   *
   * @param name ends in `_total`
   * @param help one line
   * @param initial label sets to show at 0 from the start
   */
  counter(name: string, help: string, initial: readonly Labels[] = [{}]): void {
    if (!name.endsWith("_total")) throw new TypeError(`Counter ${name} must end in _total`);
    this.#declare({ name, help, type: "counter", series: new Map() });
    for (const labels of initial) this.add(name, 0, labels);
  }

  /**
   * Declares a gauge: set with {@linkcode set}, or read at every scrape.
   *
   * @param name the gauge's name
   * @param help one line
   * @param read gives the value at scrape time
   */
  gauge(name: string, help: string, read?: () => number): void {
    this.#declare({ name, help, type: "gauge", series: new Map(), read });
  }

  /**
   * Declares a histogram.
   *
   * @param name with its unit, such as `_seconds`
   * @param help one line
   * @param buckets upper bounds, ascending
   */
  histogram(name: string, help: string, buckets: readonly number[] = LATENCY_BUCKETS): void {
    this.#declare({ name, help, type: "histogram", series: new Map(), buckets });
  }

  /**
   * Adds to a counter.
   *
   * @param name a declared counter
   * @param amount not negative
   * @param labels the series
   */
  add(name: string, amount = 1, labels: Labels = {}): void {
    const family = this.#family(name, "counter");
    if (!(amount >= 0)) throw new RangeError(`Cannot add ${amount} to counter ${name}`);
    this.#series(family, labels).value += amount;
  }

  /**
   * Sets a gauge.
   *
   * @param name a declared gauge
   * @param value its value now
   * @param labels the series
   */
  set(name: string, value: number, labels: Labels = {}): void {
    this.#series(this.#family(name, "gauge"), labels).value = value;
  }

  /**
   * Records one observation in a histogram.
   *
   * @param name a declared histogram
   * @param value the observation, such as seconds
   * @param labels the series
   */
  observe(name: string, value: number, labels: Labels = {}): void {
    const family = this.#family(name, "histogram");
    const series = this.#series(family, labels);
    const buckets = family.buckets!;
    series.counts ??= new Array(buckets.length + 1).fill(0);
    const at = buckets.findIndex((bound) => value <= bound);
    series.counts[at === -1 ? buckets.length : at]++;
    series.sum = (series.sum ?? 0) + value;
  }

  /**
   * Renders every metric in the Prometheus text format.
   *
   * @returns the page, ending with a newline
   */
  render(): string {
    const lines: string[] = [];
    for (const family of this.#families.values()) {
      lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
      lines.push(`# TYPE ${family.name} ${family.type}`);
      if (family.read !== undefined) {
        lines.push(`${family.name} ${number(family.read())}`);
        continue;
      }
      for (const series of family.series.values()) {
        if (family.type !== "histogram") {
          lines.push(`${family.name}${braces(series.labels)} ${number(series.value)}`);
          continue;
        }
        const counts = series.counts ?? new Array(family.buckets!.length + 1).fill(0);
        let cumulative = 0;
        family.buckets!.forEach((bound, i) => {
          cumulative += counts[i];
          const le = `le="${number(bound)}"`;
          const labels = series.labels === "" ? le : `${series.labels},${le}`;
          lines.push(`${family.name}_bucket{${labels}} ${cumulative}`);
        });
        cumulative += counts[family.buckets!.length];
        const inf = series.labels === "" ? 'le="+Inf"' : `${series.labels},le="+Inf"`;
        lines.push(`${family.name}_bucket{${inf}} ${cumulative}`);
        lines.push(`${family.name}_sum${braces(series.labels)} ${number(series.sum ?? 0)}`);
        lines.push(`${family.name}_count${braces(series.labels)} ${cumulative}`);
      }
    }
    return lines.join("\n") + "\n";
  }

  #declare(family: Family): void {
    if (!NAME.test(family.name)) throw new TypeError(`Invalid metric name ${family.name}`);
    if (this.#families.has(family.name)) {
      throw new TypeError(`Metric ${family.name} is declared twice`);
    }
    this.#families.set(family.name, family);
  }

  #family(name: string, type: Family["type"]): Family {
    const family = this.#families.get(name);
    if (family === undefined || family.type !== type) {
      throw new TypeError(`No ${type} named ${name}`);
    }
    return family;
  }

  #series(family: Family, labels: Labels): Series {
    const key = renderLabels(labels);
    let series = family.series.get(key);
    if (series === undefined) {
      series = { labels: key, value: 0 };
      family.series.set(key, series);
    }
    return series;
  }
}

function renderLabels(labels: Labels): string {
  return Object.entries(labels).map(([key, value]) => {
    if (!LABEL.test(key) || key === "le") throw new TypeError(`Invalid label name ${key}`);
    return `${key}="${value.replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : `\\${c}`)}"`;
  }).join(",");
}

function braces(labels: string): string {
  return labels === "" ? "" : `{${labels}}`;
}

function escapeHelp(help: string): string {
  return help.replace(/[\\\n]/g, (c) => c === "\n" ? "\\n" : "\\\\");
}

function number(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}
