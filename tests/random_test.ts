import { assert, assertEquals, assertNotEquals, assertThrows } from "@std/assert";
import { VirtualClock } from "../lib/clock.ts";
import { SeededRandom } from "../lib/random.ts";

function take(random: SeededRandom, count: number): number[] {
  return Array.from({ length: count }, () => random.next());
}

Deno.test("SeededRandom gives the same sequence for equal seeds", () => {
  assertEquals(take(new SeededRandom(42), 100), take(new SeededRandom(42), 100));
  const a = new SeededRandom(7);
  const b = new SeededRandom(7);
  assertEquals(a.bytes(64), b.bytes(64));
  assertEquals(take(a, 10), take(b, 10));
});

Deno.test("SeededRandom gives different sequences for different seeds", () => {
  assertNotEquals(take(new SeededRandom(1), 10), take(new SeededRandom(2), 10));
  assertNotEquals(take(new SeededRandom(0), 10), take(new SeededRandom(1), 10));
  assertNotEquals(new SeededRandom(1).bytes(16), new SeededRandom(2).bytes(16));
});

Deno.test("SeededRandom.next() returns floats in [0, 1) that vary", () => {
  const values = take(new SeededRandom(123), 10_000);
  for (const value of values) assert(value >= 0 && value < 1, String(value));
  assert(new Set(values).size > 9_900, "values are not stuck");
  const mean = values.reduce((sum, v) => sum + v, 0) / values.length;
  assert(Math.abs(mean - 0.5) < 0.02, `mean ${mean}`);
  assert(values.some((v) => v < 0.1) && values.some((v) => v > 0.9));
});

Deno.test("SeededRandom.bytes() returns the requested number of bytes", () => {
  const random = new SeededRandom(5);
  for (const length of [0, 1, 8, 16, 1000]) {
    const bytes = random.bytes(length);
    assert(bytes instanceof Uint8Array);
    assertEquals(bytes.length, length);
  }
  const big = random.bytes(4096);
  assert(new Set(big).size > 200, "bytes cover most values");
});

Deno.test("VirtualClock starts at the given time and advances only when told", () => {
  assertEquals(new VirtualClock().now(), 0);
  const clock = new VirtualClock(1000);
  assertEquals(clock.now(), 1000);
  assertEquals(clock.now(), 1000);
  clock.advance(500);
  assertEquals(clock.now(), 1500);
  clock.advance(0);
  assertEquals(clock.now(), 1500);
});

Deno.test("VirtualClock.set() moves forward or stays and refuses to go back", () => {
  const clock = new VirtualClock(100);
  clock.set(250);
  assertEquals(clock.now(), 250);
  clock.set(250);
  assertEquals(clock.now(), 250);
  assertThrows(() => clock.set(249), RangeError);
  assertThrows(() => clock.set(NaN), RangeError);
  assertEquals(clock.now(), 250);
});

Deno.test("VirtualClock.advance() refuses negative or NaN steps", () => {
  const clock = new VirtualClock(10);
  assertThrows(() => clock.advance(-1), RangeError);
  assertThrows(() => clock.advance(NaN), RangeError);
  assertEquals(clock.now(), 10);
});
