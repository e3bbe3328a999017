import { assertEquals, assertThrows } from "@std/assert";
import { DEFAULT_MAX_LOCKOUT_MS, LoginLimiter } from "../lib/server/login_limiter.ts";

const T0 = 1_000_000;
/** The source address key most tests fail from. */
const A = "10.0.0.9";
/** Another source. */
const B = "10.0.0.10";

Deno.test("LoginLimiter blocks a name on the third consecutive failure by default", () => {
  const limiter = new LoginLimiter();
  assertEquals(limiter.check(T0, A, "alice"), { blocked: false });
  assertEquals(limiter.failed(T0, A, "alice"), { blocked: false, attemptsLeft: 2 });
  assertEquals(limiter.check(T0 + 100, A, "alice"), { blocked: false });
  assertEquals(limiter.failed(T0 + 100, A, "alice"), { blocked: false, attemptsLeft: 1 });
  assertEquals(limiter.failed(T0 + 200, A, "alice"), {
    blocked: true,
    retryAfterMs: 10_000,
    attemptsLeft: 0,
  });
  assertEquals(limiter.check(T0 + 200, A, "alice"), { blocked: true, retryAfterMs: 10_000 });
  assertEquals(limiter.check(T0 + 5_200, A, "alice"), { blocked: true, retryAfterMs: 5_000 });
});

Deno.test("LoginLimiter refuses a fourth attempt inside the window without counting it", () => {
  const limiter = new LoginLimiter({ maxAttempts: 3, lockoutMs: 10_000 });
  for (let i = 0; i < 3; i++) limiter.failed(T0, A, "alice");
  assertEquals(limiter.check(T0 + 4_000, A, "alice"), { blocked: true, retryAfterMs: 6_000 });
  // A failure reported while locked neither counts nor extends the lock.
  assertEquals(limiter.failed(T0 + 4_000, A, "alice"), {
    blocked: true,
    retryAfterMs: 6_000,
    attemptsLeft: 0,
  });
  assertEquals(limiter.check(T0 + 9_999, A, "alice"), { blocked: true, retryAfterMs: 1 });
  assertEquals(limiter.check(T0 + 10_000, A, "alice"), { blocked: false });
});

Deno.test("LoginLimiter lifts a block after exactly lockoutMs, starts the count over and doubles the next block", () => {
  const limiter = new LoginLimiter({ maxAttempts: 3, lockoutMs: 10_000 });
  for (let i = 0; i < 3; i++) limiter.failed(T0, A, "alice");
  assertEquals(limiter.check(T0 + 9_999, A, "alice").blocked, true);
  assertEquals(limiter.check(T0 + 10_000, A, "alice"), { blocked: false });
  assertEquals(limiter.failed(T0 + 10_000, A, "alice"), { blocked: false, attemptsLeft: 2 });
  assertEquals(limiter.failed(T0 + 10_001, A, "alice"), { blocked: false, attemptsLeft: 1 });
  assertEquals(limiter.failed(T0 + 10_002, A, "alice"), {
    blocked: true,
    retryAfterMs: 20_000,
    attemptsLeft: 0,
  });
  assertEquals(limiter.check(T0 + 30_001, A, "alice").blocked, true);
  assertEquals(limiter.check(T0 + 30_002, A, "alice"), { blocked: false });
});

Deno.test("LoginLimiter lifts a lock even if nobody checks in between", () => {
  const limiter = new LoginLimiter({ maxAttempts: 2, lockoutMs: 1_000 });
  limiter.failed(T0, A, "bob");
  limiter.failed(T0, A, "bob");
  assertEquals(limiter.failed(T0 + 1_000, A, "bob"), { blocked: false, attemptsLeft: 1 });
});

Deno.test("LoginLimiter.succeeded() resets the count", () => {
  const limiter = new LoginLimiter({ maxAttempts: 3 });
  limiter.failed(T0, A, "alice");
  limiter.failed(T0 + 1, A, "alice");
  limiter.succeeded(A, "alice");
  assertEquals(limiter.size, 0);
  assertEquals(limiter.failed(T0 + 2, A, "alice"), { blocked: false, attemptsLeft: 2 });
  assertEquals(limiter.failed(T0 + 3, A, "alice"), { blocked: false, attemptsLeft: 1 });
  assertEquals(limiter.failed(T0 + 4, A, "alice").blocked, true);
});

Deno.test("LoginLimiter forgets a streak of failures lockoutMs after the latest one", () => {
  const limiter = new LoginLimiter({ maxAttempts: 3, lockoutMs: 10_000 });
  limiter.failed(T0, A, "alice");
  limiter.failed(T0 + 5_000, A, "alice");
  // 9,999 ms after the latest failure the streak still counts
  assertEquals(limiter.failed(T0 + 14_999, A, "alice").blocked, true);
  const other = new LoginLimiter({ maxAttempts: 3, lockoutMs: 10_000 });
  other.failed(T0, A, "alice");
  other.failed(T0 + 5_000, A, "alice");
  assertEquals(other.failed(T0 + 15_000, A, "alice"), { blocked: false, attemptsLeft: 2 });
});

Deno.test("LoginLimiter keeps names apart", () => {
  const limiter = new LoginLimiter({ maxAttempts: 1 });
  limiter.failed(T0, A, "alice");
  assertEquals(limiter.check(T0, A, "alice").blocked, true);
  assertEquals(limiter.check(T0, A, "bob"), { blocked: false });
  assertEquals(limiter.failed(T0, A, "no such user"), {
    blocked: true,
    retryAfterMs: 10_000,
    attemptsLeft: 0,
  });
});

Deno.test("LoginLimiter with maxAttempts 1 blocks on the first failure", () => {
  const limiter = new LoginLimiter({ maxAttempts: 1, lockoutMs: 500 });
  assertEquals(limiter.check(T0, A, "alice"), { blocked: false });
  assertEquals(limiter.failed(T0, A, "alice"), {
    blocked: true,
    retryAfterMs: 500,
    attemptsLeft: 0,
  });
  assertEquals(limiter.check(T0 + 499, A, "alice"), { blocked: true, retryAfterMs: 1 });
  assertEquals(limiter.check(T0 + 500, A, "alice"), { blocked: false });
});

Deno.test("LoginLimiter with maxAttempts 5 allows four failures", () => {
  const limiter = new LoginLimiter({ maxAttempts: 5 });
  for (let left = 4; left >= 1; left--) {
    assertEquals(limiter.failed(T0, A, "alice"), { blocked: false, attemptsLeft: left });
    assertEquals(limiter.check(T0, A, "alice"), { blocked: false });
  }
  assertEquals(limiter.failed(T0, A, "alice"), {
    blocked: true,
    retryAfterMs: 10_000,
    attemptsLeft: 0,
  });
});

Deno.test("LoginLimiter drops expired entries as time passes", () => {
  const limiter = new LoginLimiter({ lockoutMs: 1_000 });
  for (let i = 0; i < 1_000; i++) limiter.failed(T0 + i, A, `name${i}`);
  assertEquals(limiter.size, 1_000);
  // names 0 to 500 expire at T0 + 1,000 to T0 + 1,500
  limiter.check(T0 + 1_500, A, "anyone");
  assertEquals(limiter.size, 499);
  limiter.failed(T0 + 5_000, A, "late");
  assertEquals(limiter.size, 1);
});

Deno.test("LoginLimiter tracks at most maxTracked names, evicting the oldest", () => {
  const limiter = new LoginLimiter({ maxAttempts: 2, maxTracked: 100 });
  for (let i = 0; i < 1_000; i++) limiter.failed(T0 + i, A, `name${i}`);
  assertEquals(limiter.size, 100);
  // the newest are still counted, the oldest were forgotten
  assertEquals(limiter.failed(T0 + 1_000, A, "name999").blocked, true);
  assertEquals(limiter.failed(T0 + 1_000, A, "name0"), { blocked: false, attemptsLeft: 1 });
  assertEquals(limiter.size, 100);
});

Deno.test("LoginLimiter survives time going backwards", () => {
  const limiter = new LoginLimiter({ maxAttempts: 1, lockoutMs: 1_000 });
  limiter.failed(T0 + 5_000, A, "alice");
  limiter.failed(T0, A, "bob");
  // alice's lock ends at T0 + 6,000 and bob's at T0 + 1,000, out of order
  assertEquals(limiter.check(T0 + 2_000, A, "bob"), { blocked: false });
  assertEquals(limiter.check(T0 + 2_000, A, "alice"), { blocked: true, retryAfterMs: 4_000 });
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

Deno.test("LoginLimiter blocks only the source that fails: the owner elsewhere gets in", () => {
  const limiter = new LoginLimiter({ maxAttempts: 3, lockoutMs: 10_000 });
  for (let i = 0; i < 3; i++) limiter.failed(T0, A, "alice");
  assertEquals(limiter.check(T0 + 1, A, "alice").blocked, true);
  assertEquals(limiter.check(T0 + 1, B, "alice"), { blocked: false });
  // The owner's success does not lift the attacker's block...
  limiter.succeeded(B, "alice");
  assertEquals(limiter.check(T0 + 2, A, "alice").blocked, true);
  // ...and the owner's own failures count apart from the attacker's.
  assertEquals(limiter.failed(T0 + 3, B, "alice"), { blocked: false, attemptsLeft: 2 });
});

Deno.test("LoginLimiter doubles the block for a source that keeps failing, up to maxLockoutMs", () => {
  const limiter = new LoginLimiter({ maxAttempts: 2, lockoutMs: 1_000, maxLockoutMs: 10_000 });
  let now = T0;
  const blocks: number[] = [];
  for (let round = 0; round < 7; round++) {
    limiter.failed(now, A, "alice");
    const after = limiter.failed(now, A, "alice");
    blocks.push(after.retryAfterMs!);
    now += after.retryAfterMs!;
    assertEquals(limiter.check(now - 1, A, "alice").blocked, true);
    assertEquals(limiter.check(now, A, "alice"), { blocked: false });
  }
  assertEquals(blocks, [1_000, 2_000, 4_000, 8_000, 10_000, 10_000, 10_000]);
  // A source that fails 2 times per block gets 14 tries in 45 s, then 2 per 10 s.
  assertEquals(limiter.check(now, B, "alice"), { blocked: false });
});

Deno.test("LoginLimiter forgets the doubling after a quiet spell as long as the next block", () => {
  const limiter = new LoginLimiter({ maxAttempts: 1, lockoutMs: 1_000 });
  assertEquals(limiter.failed(T0, A, "alice").retryAfterMs, 1_000);
  assertEquals(limiter.failed(T0 + 1_000, A, "alice").retryAfterMs, 2_000);
  // blocked until T0 + 3,000; the next block would last 4 s: quiet until T0 + 7,000 forgets it
  assertEquals(limiter.failed(T0 + 6_999, A, "alice").retryAfterMs, 4_000);
  assertEquals(limiter.failed(T0 + 10_999 + 8_000, A, "alice").retryAfterMs, 1_000);
});

Deno.test("LoginLimiter keeps memory bounded under guesses from many sources", () => {
  const limiter = new LoginLimiter({ maxTracked: 1_000 });
  for (let i = 0; i < 20_000; i++) {
    limiter.failed(T0, `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, "alice");
  }
  assertEquals(limiter.size, 1_000);
});

Deno.test("LoginLimiter.replay() replaces a pair's count with recorded failures, as if they happened here", () => {
  const limiter = new LoginLimiter({ maxAttempts: 3, lockoutMs: 10_000 });
  limiter.failed(0, "10.0.0.1", "bob");
  limiter.replay("10.0.0.1", "bob", [1000, 2000]);
  assertEquals(limiter.check(2500, "10.0.0.1", "bob"), { blocked: false });
  assertEquals(limiter.failed(3000, "10.0.0.1", "bob").blocked, true, "the third failure blocks");
  limiter.replay("10.0.0.1", "bob", []);
  assertEquals(
    limiter.check(3000, "10.0.0.1", "bob"),
    { blocked: false },
    "none recorded: cleared",
  );
  assertEquals(limiter.horizonMs, 2 * DEFAULT_MAX_LOCKOUT_MS);
});
