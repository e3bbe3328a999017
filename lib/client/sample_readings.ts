/**
 * Generates sample sensor data to share: a CSV of timestamped readings.
 *
 * @module
 */
import type { Random } from "../random.ts";

/** Most readings one call may generate. */
export const MAX_SAMPLE_READINGS = 10_000_000;
/** The CSV header line. */
export const SAMPLE_READINGS_HEADER = "timestamp,value";

const BASELINE = 20;
const PULL = 0.05;
const NOISE = 0.6;
/** Values never leave `BASELINE ± SPREAD` (the noise can never outrun the pull back). */
const SPREAD = NOISE / 2 / PULL;
// Date's range: ±8.64e15 ms around the epoch.
const MAX_DATE_MS = 8.64e15;

/** Options for {@link sampleReadingLines} and {@link sampleReadingsCsv}. */
export interface SampleReadingsOptions {
  /** Where the readings' noise comes from; a `SeededRandom` makes the output reproducible. */
  random: Random;
  /** The first reading's time, in milliseconds since the Unix epoch (an integer). */
  startMs: number;
  /** Milliseconds between readings, a positive integer; 1000 by default. */
  intervalMs?: number;
}

/**
 * Generates sample readings one CSV line at a time, so that millions can be
 * written without building one string: first the header `timestamp,value`,
 * then `count` lines of an ISO 8601 UTC timestamp and a value with two
 * decimals. Values drift like a sensor's around 20 (a random walk pulled
 * back to 20) and always stay within 14 to 26. Arguments are checked at
 * once, not on the first `next()`.
 *
 * @param count how many readings, 1 to 10,000,000
 * @param options the randomness, the first timestamp and the interval
 * @returns the lines, without line endings
 * @throws {RangeError} for a count, start or interval out of range
 *
 * @example
 * ```ts
 * const lines = sampleReadingLines(2, { random: new SeededRandom(1), startMs: 0 });
 * [...lines]; // ["timestamp,value", "1970-01-01T00:00:00.000Z,17.03", "1970-01-01T00:00:01.000Z,17.00"]
 * ```
 */
export function sampleReadingLines(
  count: number,
  options: SampleReadingsOptions,
): Generator<string, void, undefined> {
  const { random, startMs } = options;
  const intervalMs = options.intervalMs ?? 1000;
  if (!Number.isInteger(count) || count < 1 || count > MAX_SAMPLE_READINGS) {
    throw new RangeError(
      `Cannot generate ${count} readings: the count must be a whole number from 1 to ${MAX_SAMPLE_READINGS}`,
    );
  }
  if (!Number.isInteger(intervalMs) || intervalMs < 1) {
    throw new RangeError(
      `Cannot generate readings ${intervalMs} ms apart: the interval must be a whole number of milliseconds, at least 1`,
    );
  }
  const endMs = startMs + (count - 1) * intervalMs;
  if (
    !Number.isInteger(startMs) || Math.abs(startMs) > MAX_DATE_MS || Math.abs(endMs) > MAX_DATE_MS
  ) {
    throw new RangeError(
      `Cannot generate readings from ${startMs} ms: the timestamps must be whole milliseconds within the range of a date`,
    );
  }
  return lines(count, random, startMs, intervalMs);
}

/**
 * Generates sample readings as one CSV document: the lines of
 * {@link sampleReadingLines}, each ending in `\n`. For millions of readings,
 * write the lines one by one instead.
 *
 * @param count how many readings, 1 to 10,000,000
 * @param options the randomness, the first timestamp and the interval
 * @returns the CSV text
 * @throws {RangeError} for a count, start or interval out of range
 *
 * @example
 * ```ts
 * const csv = sampleReadingsCsv(100, { random: new SeededRandom(7), startMs: Date.UTC(2024, 0, 1) });
 * ```
 */
export function sampleReadingsCsv(count: number, options: SampleReadingsOptions): string {
  const parts: string[] = [];
  for (const line of sampleReadingLines(count, options)) parts.push(line, "\n");
  return parts.join("");
}

function* lines(
  count: number,
  random: Random,
  startMs: number,
  intervalMs: number,
): Generator<string, void, undefined> {
  yield SAMPLE_READINGS_HEADER;
  let value = BASELINE + (random.next() - 0.5) * SPREAD;
  for (let i = 0; i < count; i++) {
    const time = new Date(startMs + i * intervalMs).toISOString();
    yield `${time},${value.toFixed(2)}`;
    value += PULL * (BASELINE - value) + (random.next() - 0.5) * NOISE;
  }
}
