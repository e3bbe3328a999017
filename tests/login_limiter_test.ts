import { assertEquals, assertThrows } from "@std/assert";
import { LoginLimiter } from "../lib/server/login_limiter.ts";

const T0 = 1_000_000;

Deno.test("LoginLimiter blocks a name on the third consecutive failure by default", () => {
  const limiter = new LoginLimiter();
  assertEquals(limiter.check(T0, "alice"), { blocked: false });
  assertEquals(limiter.failed(T0, "alice"), { blocked: false, attemptsLeft: 2 });
  assertEquals(limiter.check(T0 + 100, "alice"), { blocked: false });
  assertEquals(limiter.failed(T0 + 100, "alice"), { blocked: false, attemptsLeft: 1 });
  assertEquals(limiter.failed(T0 + 200, "alice"), {
    blocked: true,
    retryAfterMs: 10_000,
    attemptsLeft: 0,
  });
  assertEquals(limiter.check(T0 + 200, "alice"), { blocked: true, retryAfterMs: 10_000 });
  assertEquals(limiter.check(T0 + 5_200, "alice"), { blocked: true, retryAfterMs: 5_000 });
});

Deno.test("LoginLimiter refuses a fourth attempt inside the window without counting it", () => {
  const limiter = new LoginLimiter({ maxAttempts: 3, lockoutMs: 10_000 });
  for (let i = 0; i < 3; i++) limiter.failed(T0, "alice");
  assertEquals(limiter.check(T0 + 4_000, "alice"), { blocked: true, retryAfterMs: 6_000 });
  // A failure reported while locked neither counts nor extends the lock.
  assertEquals(limiter.failed(T0 + 4_000, "alice"), {
    blocked: true,
    retryAfterMs: 6_000,
    attemptsLeft: 0,
  });
  assertEquals(limiter.check(T0 + 9_999, "alice"), { blocked: true, retryAfterMs: 1 });
  assertEquals(limiter.check(T0 + 10_000, "alice"), { blocked: false });
});

Deno.test("LoginLimiter lifts a lock after exactly lockoutMs and starts the count over", () => {
  const limiter = new LoginLimiter({ maxAttempts: 3, lockoutMs: 10_000 });
  for (let i = 0; i < 3; i++) limiter.failed(T0, "alice");
  assertEquals(limiter.check(T0 + 9_999, "alice").blocked, true);
  assertEquals(limiter.check(T0 + 10_000, "alice"), { blocked: false });
  assertEquals(limiter.failed(T0 + 10_000, "alice"), { blocked: false, attemptsLeft: 2 });
  assertEquals(limiter.failed(T0 + 10_001, "alice"), { blocked: false, attemptsLeft: 1 });
  assertEquals(limiter.failed(T0 + 10_002, "alice").blocked, true);
  assertEquals(limiter.check(T0 + 20_001, "alice").blocked, true);
  assertEquals(limiter.check(T0 + 20_002, "alice"), { blocked: false });
});

Deno.test("LoginLimiter lifts a lock even if nobody checks in between", () => {
  const limiter = new LoginLimiter({ maxAttempts: 2, lockoutMs: 1_000 });
  limiter.failed(T0, "bob");
  limiter.failed(T0, "bob");
  assertEquals(limiter.failed(T0 + 1_000, "bob"), { blocked: false, attemptsLeft: 1 });
});

Deno.test("LoginLimiter.succeeded() resets the count", () => {
  const limiter = new LoginLimiter({ maxAttempts: 3 });
  limiter.failed(T0, "alice");
  limiter.failed(T0 + 1, "alice");
  limiter.succeeded("alice");
  assertEquals(limiter.size, 0);
  assertEquals(limiter.failed(T0 + 2, "alice"), { blocked: false, attemptsLeft: 2 });
  assertEquals(limiter.failed(T0 + 3, "alice"), { blocked: false, attemptsLeft: 1 });
  assertEquals(limiter.failed(T0 + 4, "alice").blocked, true);
});

Deno.test("LoginLimiter forgets a streak of failures lockoutMs after the latest one", () => {
  const limiter = new LoginLimiter({ maxAttempts: 3, lockoutMs: 10_000 });
  limiter.failed(T0, "alice");
  limiter.failed(T0 + 5_000, "alice");
  // 9,999 ms after the latest failure the streak still counts
  assertEquals(limiter.failed(T0 + 14_999, "alice").blocked, true);
  const other = new LoginLimiter({ maxAttempts: 3, lockoutMs: 10_000 });
  other.failed(T0, "alice");
  other.failed(T0 + 5_000, "alice");
  assertEquals(other.failed(T0 + 15_000, "alice"), { blocked: false, attemptsLeft: 2 });
});

Deno.test("LoginLimiter keeps names apart", () => {
  const limiter = new LoginLimiter({ maxAttempts: 1 });
  limiter.failed(T0, "alice");
  assertEquals(limiter.check(T0, "alice").blocked, true);
  assertEquals(limiter.check(T0, "bob"), { blocked: false });
  assertEquals(limiter.failed(T0, "no such user"), {
    blocked: true,
    retryAfterMs: 10_000,
    attemptsLeft: 0,
  });
});

Deno.test("LoginLimiter with maxAttempts 1 blocks on the first failure", () => {
  const limiter = new LoginLimiter({ maxAttempts: 1, lockoutMs: 500 });
  assertEquals(limiter.check(T0, "alice"), { blocked: false });
  assertEquals(limiter.failed(T0, "alice"), { blocked: true, retryAfterMs: 500, attemptsLeft: 0 });
  assertEquals(limiter.check(T0 + 499, "alice"), { blocked: true, retryAfterMs: 1 });
  assertEquals(limiter.check(T0 + 500, "alice"), { blocked: false });
});

Deno.test("LoginLimiter with maxAttempts 5 allows four failures", () => {
  const limiter = new LoginLimiter({ maxAttempts: 5 });
  for (let left = 4; left >= 1; left--) {
    assertEquals(limiter.failed(T0, "alice"), { blocked: false, attemptsLeft: left });
    assertEquals(limiter.check(T0, "alice"), { blocked: false });
  }
  assertEquals(limiter.failed(T0, "alice"), {
    blocked: true,
    retryAfterMs: 10_000,
    attemptsLeft: 0,
  });
});

Deno.test("LoginLimiter drops expired entries as time passes", () => {
  const limiter = new LoginLimiter({ lockoutMs: 1_000 });
  for (let i = 0; i < 1_000; i++) limiter.failed(T0 + i, `name${i}`);
  assertEquals(limiter.size, 1_000);
  // names 0 to 500 expire at T0 + 1,000 to T0 + 1,500
  limiter.check(T0 + 1_500, "anyone");
  assertEquals(limiter.size, 499);
  limiter.failed(T0 + 5_000, "late");
  assertEquals(limiter.size, 1);
});

Deno.test("LoginLimiter tracks at most maxTracked names, evicting the oldest", () => {
  const limiter = new LoginLimiter({ maxAttempts: 2, maxTracked: 100 });
  for (let i = 0; i < 1_000; i++) limiter.failed(T0 + i, `name${i}`);
  assertEquals(limiter.size, 100);
  // the newest are still counted, the oldest were forgotten
  assertEquals(limiter.failed(T0 + 1_000, "name999").blocked, true);
  assertEquals(limiter.failed(T0 + 1_000, "name0"), { blocked: false, attemptsLeft: 1 });
  assertEquals(limiter.size, 100);
});

Deno.test("LoginLimiter survives time going backwards", () => {
  const limiter = new LoginLimiter({ maxAttempts: 1, lockoutMs: 1_000 });
  limiter.failed(T0 + 5_000, "alice");
  limiter.failed(T0, "bob");
  // alice's lock ends at T0 + 6,000 and bob's at T0 + 1,000, out of order
  assertEquals(limiter.check(T0 + 2_000, "bob"), { blocked: false });
  assertEquals(limiter.check(T0 + 2_000, "alice"), { blocked: true, retryAfterMs: 4_000 });
});

Deno.test("LoginLimiter throws a RangeError for bad options", () => {
  for (const maxAttempts of [0, 6, 2.5, NaN]) {
    assertThrows(() => new LoginLimiter({ maxAttempts }), RangeError);
  }
  for (const lockoutMs of [0, -1, Infinity, NaN]) {
    assertThrows(() => new LoginLimiter({ lockoutMs }), RangeError);
  }
  for (const maxTracked of [0, 1.5]) {
    assertThrows(() => new LoginLimiter({ maxTracked }), RangeError);
  }
});
