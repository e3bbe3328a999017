import { assert, assertEquals, assertThrows } from "@std/assert";
import { addressKey, type RateDecision, RateLimiter } from "../lib/server/rate_limiter.ts";

/** Takes `count` tokens at `now` and returns how many were allowed. */
function takeMany(limiter: RateLimiter, now: number, address: string, count: number): number {
  let allowed = 0;
  for (let i = 0; i < count; i++) if (limiter.take(now, address).allowed) allowed++;
  return allowed;
}

function reportOf(decision: RateDecision): number | undefined {
  return decision.allowed ? undefined : decision.report?.dropped;
}

Deno.test("RateLimiter.take() allows a burst of twice the rate, then the rate", () => {
  const limiter = new RateLimiter({ ratePerSecond: 10 });
  assertEquals(takeMany(limiter, 0, "192.0.2.1", 50), 20, "the burst");
  assertEquals(takeMany(limiter, 500, "192.0.2.1", 50), 5, "half a second earns 5");
  assertEquals(takeMany(limiter, 1500, "192.0.2.1", 50), 10, "a second earns 10");
  // A long quiet spell fills the bucket, no further than the burst.
  assertEquals(takeMany(limiter, 60_000, "192.0.2.1", 50), 20);
});

Deno.test("RateLimiter.take() keeps one bucket per address", () => {
  const limiter = new RateLimiter({ ratePerSecond: 1, burst: 3 });
  assertEquals(takeMany(limiter, 0, "192.0.2.1", 10), 3);
  assertEquals(takeMany(limiter, 0, "192.0.2.2", 10), 3, "another address is not affected");
  assertEquals(limiter.size, 2);
});

Deno.test("RateLimiter.take() reports a refused address once per period, with the count", () => {
  const limiter = new RateLimiter({ ratePerSecond: 1, burst: 1, reportEveryMs: 10_000 });
  assert(limiter.take(0, "192.0.2.9").allowed);
  assertEquals(reportOf(limiter.take(0, "192.0.2.9")), 1, "the first refusal is reported at once");
  const quiet: (number | undefined)[] = [];
  for (let i = 0; i < 100; i++) quiet.push(reportOf(limiter.take(10 * i, "192.0.2.9")));
  assert(quiet.every((r) => r === undefined), "no report within the period");
  // Ten seconds on: one report counting everything refused since the last one.
  assertEquals(reportOf(limiter.take(10_000, "192.0.2.9")), undefined, "a token was earned");
  assertEquals(reportOf(limiter.take(10_000, "192.0.2.9")), 101, "the 100 above and this one");
  assertEquals(reportOf(limiter.take(10_001, "192.0.2.9")), undefined);
});

Deno.test("RateLimiter keeps at most maxAddresses, forgetting the least recently seen", () => {
  const limiter = new RateLimiter({ ratePerSecond: 1, burst: 1, maxAddresses: 3 });
  for (const a of ["10.0.0.1", "10.0.0.2", "10.0.0.3"]) assert(limiter.take(0, a).allowed);
  assert(!limiter.take(0, "10.0.0.1").allowed, "10.0.0.1 is empty and now the most recent");
  assert(limiter.take(0, "10.0.0.4").allowed);
  assertEquals(limiter.size, 3);
  // 10.0.0.2 was the least recently seen: forgotten, so it starts over with a full bucket.
  assert(limiter.take(0, "10.0.0.2").allowed);
  // 10.0.0.1 was kept (seen more recently) and is still empty.
  assert(!limiter.take(0, "10.0.0.1").allowed);
  // A flood of new addresses never grows the table.
  for (let i = 0; i < 10_000; i++) limiter.take(0, `10.1.${i >> 8}.${i & 255}`);
  assertEquals(limiter.size, 3);
});

Deno.test("RateLimiter.take() survives a clock that goes backwards", () => {
  const limiter = new RateLimiter({ ratePerSecond: 10, burst: 10 });
  assertEquals(takeMany(limiter, 10_000, "192.0.2.1", 10), 10);
  assertEquals(takeMany(limiter, 5_000, "192.0.2.1", 10), 0, "no tokens from going back");
  assertEquals(takeMany(limiter, 10_100, "192.0.2.1", 10), 1, "time counts again from 10 s");
});

Deno.test("RateLimiter rejects nonsense options with a RangeError", () => {
  assertThrows(() => new RateLimiter({ ratePerSecond: 0 }), RangeError);
  assertThrows(() => new RateLimiter({ ratePerSecond: -1 }), RangeError);
  assertThrows(() => new RateLimiter({ ratePerSecond: NaN }), RangeError);
  assertThrows(() => new RateLimiter({ ratePerSecond: 1, burst: 0.5 }), RangeError);
  assertThrows(() => new RateLimiter({ ratePerSecond: 1, maxAddresses: 0 }), RangeError);
  assertThrows(() => new RateLimiter({ ratePerSecond: 1, reportEveryMs: -1 }), RangeError);
});

Deno.test("addressKey() maps IPv4-mapped addresses to IPv4 and IPv6 addresses to their /64", () => {
  assertEquals(addressKey("192.0.2.7"), "192.0.2.7");
  assertEquals(addressKey("::ffff:192.0.2.7"), "192.0.2.7");
  assertEquals(addressKey("::FFFF:192.0.2.7"), "192.0.2.7");
  assertEquals(addressKey("2001:db8::1"), "2001:db8:0:0::/64");
  assertEquals(addressKey("2001:db8:0:0:ffff::2"), "2001:db8:0:0::/64");
  assertEquals(addressKey("2001:0db8:0001:0002:0003:0004:0005:0006"), "2001:db8:1:2::/64");
  assertEquals(addressKey("fe80::1%eth0"), "fe80:0:0:0::/64");
  assertEquals(addressKey("::1"), "0:0:0:0::/64");
  // One host's many addresses in its /64 share a bucket.
  const limiter = new RateLimiter({ ratePerSecond: 1, burst: 2 });
  assert(limiter.take(0, "2001:db8::1").allowed);
  assert(limiter.take(0, "2001:db8::2").allowed);
  assert(!limiter.take(0, "2001:db8::3").allowed);
  assert(limiter.take(0, "2001:db8:0:1::1").allowed, "another /64 is another bucket");
});
