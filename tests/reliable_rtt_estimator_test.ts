import { assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { RttEstimator } from "../lib/reliable/rtt_estimator.ts";

Deno.test("RttEstimator follows RFC 6298", async (t) => {
  await t.step("uses the initial RTO before any sample", () => {
    assertEquals(new RttEstimator().rto, 1000);
    assertEquals(new RttEstimator({ initialRtoMs: 3000 }).rto, 3000);
    assertEquals(new RttEstimator().srtt, undefined);
    assertEquals(new RttEstimator().rttvar, undefined);
  });

  await t.step("takes the first sample as SRTT = R, RTTVAR = R/2", () => {
    const rtt = new RttEstimator({ minRtoMs: 1 });
    rtt.sample(100);
    assertEquals(rtt.srtt, 100);
    assertEquals(rtt.rttvar, 50);
    assertEquals(rtt.rto, 300); // 100 + 4 * 50
  });

  await t.step("smooths later samples with alpha 1/8 and beta 1/4, RTTVAR first", () => {
    const rtt = new RttEstimator({ minRtoMs: 1 });
    rtt.sample(100);
    rtt.sample(120);
    // RTTVAR = 3/4 * 50 + 1/4 * |100 - 120| = 42.5; SRTT = 7/8 * 100 + 1/8 * 120 = 102.5
    assertEquals(rtt.rttvar, 42.5);
    assertEquals(rtt.srtt, 102.5);
    assertEquals(rtt.rto, 272.5); // 102.5 + 4 * 42.5
    rtt.sample(80);
    // RTTVAR = 3/4 * 42.5 + 1/4 * |102.5 - 80| = 37.5; SRTT = 7/8 * 102.5 + 1/8 * 80 = 99.6875
    assertEquals(rtt.rttvar, 37.5);
    assertEquals(rtt.srtt, 99.6875);
    assertEquals(rtt.rto, 249.6875);
  });

  await t.step("uses the clock granularity G when 4 * RTTVAR is smaller", () => {
    const rtt = new RttEstimator({ minRtoMs: 1, granularityMs: 10 });
    for (let i = 0; i < 100; i++) rtt.sample(50);
    assertAlmostEquals(rtt.rttvar!, 0, 1e-6);
    assertEquals(rtt.rto, 60); // 50 + max(10, ~0)
  });

  await t.step("adds the peer's ack delay (RFC 9002's max_ack_delay)", () => {
    const rtt = new RttEstimator({ minRtoMs: 1, granularityMs: 10, ackDelayMs: 25 });
    for (let i = 0; i < 100; i++) rtt.sample(50);
    assertEquals(rtt.rto, 85); // 50 + max(10, ~0) + 25
  });

  await t.step("keeps the RTO within minRtoMs and maxRtoMs", () => {
    const low = new RttEstimator({ minRtoMs: 200 });
    low.sample(10);
    assertEquals(low.rto, 200);
    const high = new RttEstimator({ maxRtoMs: 5000 });
    high.sample(4000);
    assertEquals(high.rto, 5000);
  });

  await t.step("refuses bad samples and bad options", () => {
    const rtt = new RttEstimator();
    assertThrows(() => rtt.sample(-1), RangeError);
    assertThrows(() => rtt.sample(NaN), RangeError);
    assertThrows(() => rtt.sample(Infinity), RangeError);
    assertThrows(() => new RttEstimator({ minRtoMs: 0 }), RangeError);
    assertThrows(() => new RttEstimator({ minRtoMs: 500, maxRtoMs: 100 }), RangeError);
    assertThrows(() => new RttEstimator({ ackDelayMs: -1 }), RangeError);
  });
});

Deno.test("RttEstimator.backoff() doubles the RTO up to the cap and resets", async (t) => {
  await t.step("doubles on each timeout", () => {
    const rtt = new RttEstimator({ initialRtoMs: 1000, maxRtoMs: 60_000 });
    const seen = [rtt.rto];
    for (let i = 0; i < 8; i++) {
      rtt.backoff();
      seen.push(rtt.rto);
    }
    assertEquals(seen, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
    assertEquals(rtt.backoffs, 6);
  });

  await t.step("returns to the computed RTO on reset", () => {
    const rtt = new RttEstimator({ minRtoMs: 1 });
    rtt.sample(100);
    rtt.backoff();
    rtt.backoff();
    assertEquals(rtt.rto, 1200);
    rtt.resetBackoff();
    assertEquals(rtt.rto, 300);
  });

  await t.step("applies the backoff to the bounded RTO", () => {
    const rtt = new RttEstimator({ minRtoMs: 200 });
    rtt.sample(10);
    rtt.backoff();
    assertEquals(rtt.rto, 400);
  });
});
