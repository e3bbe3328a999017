import { assert, assertEquals, assertNotEquals, assertThrows } from "@std/assert";
import {
  MAX_SAMPLE_READINGS,
  SAMPLE_READINGS_HEADER,
  sampleReadingLines,
  sampleReadingsCsv,
} from "../lib/client/sample_readings.ts";
import { SeededRandom } from "../lib/random.ts";

const START = Date.UTC(2024, 0, 1, 0, 0, 0);
const LINE = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z),(-?\d+\.\d{2})$/;

Deno.test("sampleReadingsCsv() writes a header and one line per reading", () => {
  const csv = sampleReadingsCsv(500, { random: new SeededRandom(1), startMs: START });
  assert(csv.endsWith("\n"));
  const lines = csv.slice(0, -1).split("\n");
  assertEquals(lines[0], SAMPLE_READINGS_HEADER);
  assertEquals(lines[0], "timestamp,value");
  assertEquals(lines.length, 501);
  for (const line of lines.slice(1)) assert(LINE.test(line), line);
  assertEquals(lines[1].split(",")[0], "2024-01-01T00:00:00.000Z");
  assertEquals(lines[500].split(",")[0], "2024-01-01T00:08:19.000Z");
});

Deno.test("sampleReadingsCsv() spaces timestamps by the interval", () => {
  const csv = sampleReadingsCsv(100, {
    random: new SeededRandom(2),
    startMs: START,
    intervalMs: 250,
  });
  const times = csv.trim().split("\n").slice(1).map((line) => Date.parse(line.split(",")[0]));
  times.forEach((time, i) => assertEquals(time, START + i * 250));
});

Deno.test("sampleReadingsCsv() keeps values like a sensor's, within 14 to 26", () => {
  for (const seed of [1, 2, 3, 99]) {
    const values = sampleReadingsCsv(20_000, { random: new SeededRandom(seed), startMs: START })
      .trim().split("\n").slice(1).map((line) => Number(line.split(",")[1]));
    for (const value of values) assert(value >= 14 && value <= 26, `${value}`);
    // A random walk: neighbours are close, and the values do vary.
    for (let i = 1; i < values.length; i++) {
      assert(Math.abs(values[i] - values[i - 1]) <= 0.65, `${values[i - 1]} -> ${values[i]}`);
    }
    assert(new Set(values).size > 100);
  }
});

Deno.test("sampleReadingsCsv() is deterministic for a seed", () => {
  const options = (seed: number) => ({ random: new SeededRandom(seed), startMs: START });
  assertEquals(sampleReadingsCsv(1000, options(7)), sampleReadingsCsv(1000, options(7)));
  assertNotEquals(sampleReadingsCsv(1000, options(7)), sampleReadingsCsv(1000, options(8)));
  assertEquals(
    sampleReadingsCsv(2, { random: new SeededRandom(1), startMs: 0 }),
    "timestamp,value\n1970-01-01T00:00:00.000Z,17.03\n1970-01-01T00:00:01.000Z,17.00\n",
  );
});

Deno.test("sampleReadingLines() yields the same lines as sampleReadingsCsv(), lazily", () => {
  const options = () => ({ random: new SeededRandom(5), startMs: START, intervalMs: 60_000 });
  const lines = [...sampleReadingLines(300, options())];
  assertEquals(lines.map((line) => line + "\n").join(""), sampleReadingsCsv(300, options()));
  // Taking a few lines of the largest count costs nothing.
  const big = sampleReadingLines(MAX_SAMPLE_READINGS, options());
  assertEquals(big.next().value, SAMPLE_READINGS_HEADER);
  assert(LINE.test(big.next().value as string));
});

Deno.test("sampleReadingLines() checks its arguments at once", () => {
  const random = new SeededRandom(1);
  for (const count of [0, -1, 1.5, NaN, Infinity, MAX_SAMPLE_READINGS + 1]) {
    assertThrows(() => sampleReadingLines(count, { random, startMs: START }), RangeError);
    assertThrows(() => sampleReadingsCsv(count, { random, startMs: START }), RangeError);
  }
  for (const intervalMs of [0, -1000, 0.5, NaN]) {
    assertThrows(() => sampleReadingLines(10, { random, startMs: START, intervalMs }), RangeError);
  }
  for (const startMs of [NaN, 0.5, 8.64e15 + 1, -8.64e15 - 1]) {
    assertThrows(() => sampleReadingLines(10, { random, startMs }), RangeError);
  }
  assertThrows(() => sampleReadingLines(10, { random, startMs: 8.64e15 - 5_000 }), RangeError);
  assertEquals([...sampleReadingLines(1, { random, startMs: 8.64e15 })].length, 2);
  assertEquals(
    [...sampleReadingLines(MAX_SAMPLE_READINGS, { random, startMs: 0 }).take(3)].length,
    3,
  );
});
