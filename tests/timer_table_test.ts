import { assertEquals } from "@std/assert";
import { TimerTable } from "../lib/client/timer_table.ts";

Deno.test("TimerTable.next() is the earliest armed timer, and stopped ones do not count", () => {
  const timers = new TimerTable<"a" | "b" | "c">();
  assertEquals(timers.next(), undefined);
  timers.set("a", 300);
  timers.set("b", 100);
  timers.set("c", 200);
  assertEquals(timers.next(), 100);
  timers.set("b", undefined);
  assertEquals(timers.next(), 200);
  assertEquals(timers.get("b"), undefined);
  timers.set("c", 400);
  assertEquals(timers.next(), 300);
});

Deno.test("TimerTable.expired() names every timer due, and they stay armed until moved", () => {
  const timers = new TimerTable<"a" | "b" | "c">();
  timers.set("a", 100);
  timers.set("b", 100);
  timers.set("c", 101);
  assertEquals(timers.expired(99), []);
  assertEquals(timers.expired(100).sort(), ["a", "b"]);
  assertEquals(timers.expired(100).sort(), ["a", "b"]);
  timers.set("a", 150);
  assertEquals(timers.expired(120).sort(), ["b", "c"]);
});
