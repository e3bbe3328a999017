/**
 * BbrControl on its own, fed acknowledgements by hand: startup, the
 * bandwidth and RTT model, drain, probe_bw's cycle, probe_rtt, loss and
 * timeouts; then the DeliveryRateSampler and the Pacer it is built on.
 */
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import {
  BBR_HIGH_GAIN,
  BBR_MIN_RTT_CONFIRM_FACTOR,
  BBR_MIN_RTT_WINDOW_MS,
  BBR_PROBE_RTT_MS,
  BBR_TIMEOUT_WINDOW_GAIN,
  BbrControl,
} from "../lib/reliable/bbr_control.ts";
import {
  DeliveryRateSampler,
  type DeliveryStamp,
  type RateSample,
} from "../lib/reliable/delivery_rate_sampler.ts";
import { Pacer } from "../lib/reliable/pacer.ts";

/** An unstamped record for the sampler. */
function blank(): DeliveryStamp {
  return { delivered: 0, deliveredAt: 0, firstSentAt: 0, sentAt: 0, appLimited: false };
}

function bbr(initialWindow = 10): BbrControl {
  return new BbrControl({ initialWindow, maxWindow: 100_000, maxBurst: 32 });
}

/**
 * A path that delivers `rate` segments a ms with a fixed RTT, acked every
 * ms; each ack carries the sample a DeliveryRateSampler would give on it.
 */
class FakePath {
  #delivered = 0;
  /** Delivered count at each ms, to know what was delivered one RTT ago. */
  #history: number[] = [];

  /** Feeds `cc` the acks from `from` to `to` ms; returns `to`. */
  drive(
    cc: BbrControl,
    options: DriveOptions,
  ): number {
    const { rate, rttMs } = options;
    for (let now = options.from; now < options.to; now++) {
      const acked = rate >= 1 ? Math.round(rate) : (now % Math.round(1 / rate) === 0 ? 1 : 0);
      this.#history[now] = this.#delivered;
      if (acked === 0) continue;
      this.#delivered += acked;
      const sample: RateSample = {
        delivered: Math.round(rate * rttMs),
        intervalMs: rttMs,
        rate,
        priorDelivered: this.#history[Math.max(0, now - rttMs)] ?? 0,
        totalDelivered: this.#delivered,
        appLimited: options.appLimited ?? false,
      };
      // What pacing puts in flight, up to the window.
      const inFlight = Math.min(cc.window, Math.ceil(Math.min(cc.pacer.rate, 1e6) * rttMs));
      const jitterMs = options.jitterMs ?? 0;
      const rttSampleMs = options.noRttSamples ? undefined : rttMs + (now % 2) * 2 * jitterMs;
      cc.onAck(now, acked, {
        srttMs: options.srttMs ?? rttMs + jitterMs,
        minRttMs: rttMs,
        inFlight,
        rttSampleMs,
        meanRttSampleMs: rttSampleMs,
        sample,
        reordering: options.reordering,
      });
    }
    return options.to;
  }
}

/** What {@linkcode drive} feeds: acks from `from` to `to` ms at `rate` segments a ms. */
interface DriveOptions {
  from: number;
  to: number;
  rate: number;
  rttMs: number;
  appLimited?: boolean;
  /** The SRTT the acks report (default `rttMs`). */
  srttMs?: number;
  /** True for acks without an RTT sample (Karn's rule after retransmissions). */
  noRttSamples?: boolean;
  /** Every other RTT sample is this many ms above `rttMs` twice over (default 0), and SRTT once. */
  jitterMs?: number;
  /** What the acks say of reordering. */
  reordering?: boolean;
}

function drive(
  cc: BbrControl,
  options: DriveOptions,
  path = paths.get(cc) ?? new FakePath(),
): number {
  paths.set(cc, path);
  return path.drive(cc, options);
}
const paths = new WeakMap<BbrControl, FakePath>();

Deno.test("BbrControl rejects windows and bursts that are not positive integers", () => {
  for (const bad of [0, 1.5, -1, NaN]) {
    assertThrows(
      () => new BbrControl({ initialWindow: bad, maxWindow: 10, maxBurst: 4 }),
      RangeError,
    );
    assertThrows(
      () => new BbrControl({ initialWindow: 4, maxWindow: bad, maxBurst: 4 }),
      RangeError,
    );
    assertThrows(
      () => new BbrControl({ initialWindow: 4, maxWindow: 10, maxBurst: bad }),
      RangeError,
    );
  }
});

Deno.test("BbrControl starts in startup with the initial window and no pacing", () => {
  const cc = bbr(10);
  assertEquals(cc.mode, "startup");
  assertEquals(cc.window, 10);
  assertEquals(cc.pacer.rate, Infinity);
  assertEquals(cc.bdp, undefined);
  assertEquals(cc.slowStartThreshold, Infinity);
});

Deno.test("BbrControl models the path: bandwidth, smallest RTT, BDP; paces above it in startup", () => {
  const cc = bbr();
  drive(cc, { from: 0, to: 300, rate: 2, rttMs: 40 });
  assertEquals(cc.bandwidth, 2);
  assertEquals(cc.minRtt, 40);
  assertEquals(cc.bdp, 80);
  if (cc.mode === "startup") assertAlmostEquals(cc.pacer.rate, BBR_HIGH_GAIN * 2, 1e-9);
});

Deno.test("BbrControl leaves startup once the bandwidth stops growing, drains, then probes", () => {
  const cc = bbr();
  const modes = new Set<string>();
  for (let t = 0; t < 2000; t += 10) {
    drive(cc, { from: t, to: t + 10, rate: 2, rttMs: 40 });
    modes.add(cc.mode);
  }
  assert(modes.has("drain") || modes.has("probe_bw"), [...modes].join());
  assertEquals(cc.mode, "probe_bw");
  // In probe_bw the window is one BDP (1.25 while probing up) plus the queue allowance.
  assert(cc.window >= 80 + 24 && cc.window <= 100 + 24, `window ${cc.window}`);
  // And the pacing rate cycles around the bandwidth: 1.25, 0.75 and 1.
  const rates = new Set<number>();
  for (let t = 2000; t < 2400; t += 5) {
    drive(cc, { from: t, to: t + 5, rate: 2, rttMs: 40 });
    rates.add(Math.round(cc.pacer.rate / cc.bandwidth * 100) / 100);
  }
  assertEquals([...rates].sort(), [0.75, 1, 1.25]);
});

Deno.test("BbrControl keeps its rate and window through losses; a timeout cuts the window only", () => {
  const cc = bbr();
  drive(cc, { from: 0, to: 2000, rate: 2, rttMs: 40 });
  const { window, bandwidth } = cc;
  for (let seq = 0; seq < 500; seq += 5) cc.onLoss(seq, window, 1000);
  assertEquals(cc.window, window);
  assertEquals(cc.bandwidth, bandwidth);
  assertEquals(cc.reductions, 0);
  cc.onTimeout(window, 1000);
  assertEquals(cc.window, BBR_TIMEOUT_WINDOW_GAIN * 80, "a quarter of the BDP of 80");
  assertEquals(cc.reductions, 1);
  assertEquals(cc.bandwidth, bandwidth, "the model stands");
  // Acks grow it back to the model's window within a few round trips.
  drive(cc, { from: 2000, to: 2200, rate: 2, rttMs: 40 });
  assert(cc.window >= 80 + 24, `window ${cc.window}`);
});

Deno.test("BbrControl takes a loss for congestion only when a fresh RTT shows a queue", () => {
  const cc = bbr();
  let end = drive(cc, { from: 0, to: 2000, rate: 2, rttMs: 40 });
  // SRTT 100 but no RTT sample for a few round trips: what a timeout leaves behind.
  end = drive(cc, {
    from: end,
    to: end + 200,
    rate: 2,
    rttMs: 40,
    srttMs: 100,
    noRttSamples: true,
  });
  cc.onLoss(0, 80, 1000);
  assertEquals(cc.reductions, 0, "a stale SRTT is no evidence of a queue");
  drive(cc, { from: end, to: end + 50, rate: 2, rttMs: 40, srttMs: 100 });
  cc.onLoss(1, 80, 1000);
  assertEquals(cc.reductions, 1, "a fresh one is");
});

Deno.test("BbrControl ignores app-limited samples below its estimate", () => {
  const cc = bbr();
  drive(cc, { from: 0, to: 2000, rate: 2, rttMs: 40 });
  drive(cc, { from: 2000, to: 2400, rate: 0.5, rttMs: 40, appLimited: true });
  assertEquals(cc.bandwidth, 2);
});

Deno.test("BbrControl forgets a bandwidth after ten round trips without it", () => {
  const cc = bbr();
  drive(cc, { from: 0, to: 2000, rate: 2, rttMs: 40 });
  drive(cc, { from: 2000, to: 2600, rate: 1, rttMs: 40 });
  assertEquals(cc.bandwidth, 1);
});

Deno.test("BbrControl probes the RTT when its smallest RTT is old: half a BDP, then back", () => {
  const cc = bbr();
  // A queue keeps every RTT sample after the first second 10% above the smallest.
  drive(cc, { from: 0, to: 1000, rate: 2, rttMs: 40 });
  assertEquals(cc.minRtt, 40);
  let end = drive(cc, { from: 1000, to: 1000 + BBR_MIN_RTT_WINDOW_MS - 100, rate: 2, rttMs: 44 });
  assert(cc.mode !== "probe_rtt");
  end = drive(cc, { from: end, to: end + 300, rate: 2, rttMs: 44 });
  assertEquals(cc.mode, "probe_rtt");
  assertEquals(cc.window, 44, "half the BDP of 88");
  drive(cc, { from: end, to: end + BBR_PROBE_RTT_MS + 100, rate: 2, rttMs: 40 });
  assertEquals(cc.mode, "probe_bw");
  assert(cc.window >= 80 + 24, `window restored: ${cc.window}`);
});

Deno.test("BbrControl skips probe_rtt while samples within 5% confirm the smallest RTT", () => {
  const cc = bbr();
  drive(cc, { from: 0, to: 1000, rate: 2, rttMs: 40 });
  const rttMs = Math.floor(BBR_MIN_RTT_CONFIRM_FACTOR * 40);
  for (let from = 1000; from < 3 * BBR_MIN_RTT_WINDOW_MS; from += 50) {
    drive(cc, { from, to: from + 50, rate: 2, rttMs });
    assert(cc.mode !== "probe_rtt", `probe_rtt at ${from} ms`);
  }
  assertEquals(cc.minRtt, 40);
});

Deno.test("BbrControl does not probe the RTT of a flow short of data", () => {
  const cc = bbr();
  drive(cc, { from: 0, to: BBR_MIN_RTT_WINDOW_MS + 500, rate: 0.05, rttMs: 40, appLimited: true });
  assert(cc.mode !== "probe_rtt");
});

Deno.test("DeliveryRateSampler measures segments over the longer of the send and ack intervals", () => {
  const sampler = new DeliveryRateSampler();
  // 10 segments sent 1 ms apart from an idle start, acked 40 ms later, 1 ms apart.
  const stamps = Array.from({ length: 10 }, (_, i) => sampler.stamp(i, i, blank()));
  const samples = stamps.map((stamp, i) => sampler.onAcked(40 + i, [stamp], 40)!);
  assertEquals(samples[0].rate, 1 / 40);
  const last = samples[9];
  assertEquals(last.delivered, 10);
  assertEquals(last.intervalMs, 49);
  assertAlmostEquals(last.rate!, 10 / 49, 1e-9);
  assertEquals(last.totalDelivered, 10);
  assertEquals(last.priorDelivered, 0);
  assertEquals(sampler.delivered, 10);
});

Deno.test("DeliveryRateSampler marks samples app-limited until the flight it saw is delivered", () => {
  const sampler = new DeliveryRateSampler();
  const a = sampler.stamp(0, 0, blank());
  sampler.onAppLimited(1);
  const b = sampler.stamp(1, 1, blank());
  assertEquals(sampler.onAcked(50, [a], undefined)!.appLimited, false);
  assertEquals(sampler.onAcked(51, [b], undefined)!.appLimited, true);
  const c = sampler.stamp(52, 0, blank());
  assertEquals(sampler.onAcked(100, [c], undefined)!.appLimited, false);
});

Deno.test("DeliveryRateSampler gives no rate over an interval shorter than the smallest RTT", () => {
  const sampler = new DeliveryRateSampler();
  const a = sampler.stamp(0, 0, blank());
  const sample = sampler.onAcked(5, [a], 40)!;
  assertEquals(sample.rate, undefined);
  assertEquals(sample.totalDelivered, 1);
});

Deno.test("Pacer spaces segments at its rate with bursts of at most maxBurst", () => {
  const pacer = new Pacer(2);
  assert(pacer.mayPace(0));
  pacer.rate = 0.5;
  pacer.spend();
  assert(pacer.mayPace(0));
  pacer.spend();
  assert(!pacer.mayPace(0));
  assertEquals(pacer.nextSendTime(), 2);
  assert(pacer.mayPace(2));
  // A long idle time banks at most maxBurst tokens.
  pacer.spend();
  assert(pacer.mayPace(1000));
  pacer.spend();
  pacer.spend();
  assert(!pacer.mayPace(1000));
  assertThrows(() => new Pacer(0), RangeError);
});

Deno.test("Pacer smooths how late a sender it held back runs, and nothing else", () => {
  const pacer = new Pacer(1);
  pacer.rate = 0.5;
  assert(pacer.mayPace(0));
  pacer.spend();
  assert(!pacer.mayPace(0)); // the next token is due at 2
  pacer.noteWake(1); // an ack came first: not late
  assertEquals(pacer.lateness, 0);
  pacer.noteWake(10); // 8 ms late: an eighth of it
  assertEquals(pacer.lateness, 1);
  assert(pacer.mayPace(10));
  pacer.noteWake(20); // a token waits: the sender was not held back
  assertEquals(pacer.lateness, 1);
});

Deno.test("BbrControl widens the window, and the congestion test, for a sender that runs late", () => {
  const onTime = bbr(), late = bbr();
  drive(onTime, { from: 0, to: 2000, rate: 2, rttMs: 40 });
  drive(late, { from: 0, to: 2000, rate: 2, rttMs: 40 });
  // Timers 2.5 ms late on average: 8 x 2.5 ms of bandwidth, 40 segments, at most a quarter BDP (20).
  for (let i = 0; i < 100; i++) {
    late.pacer.rate = 1;
    late.pacer.refill(0);
    while (late.pacer.mayPace(0)) late.pacer.spend();
    late.pacer.noteWake(1 + 2.5);
  }
  assertAlmostEquals(late.pacer.lateness, 2.5, 0.01);
  drive(late, { from: 2000, to: 2100, rate: 2, rttMs: 40 });
  drive(onTime, { from: 2000, to: 2100, rate: 2, rttMs: 40 });
  assertEquals(late.window - onTime.window, Math.floor(0.25 * late.bdp!));
  // A loss with SRTT 1.6 x the smallest RTT: congestion on time, the late host's stall otherwise.
  for (const cc of [onTime, late]) {
    cc.onAck(2100, 1, { srttMs: 64, minRttMs: 40, rttSampleMs: 64 });
    cc.onLoss(0, 80, 1000);
  }
  assertEquals(onTime.reductions, 1);
  assertEquals(late.reductions, 0);
});

Deno.test("BbrControl takes a loss behind a queue for congestion: 15% off the model, once a round", () => {
  const cc = bbr();
  drive(cc, { from: 0, to: 2000, rate: 2, rttMs: 40 });
  assertEquals(cc.mode, "probe_bw");
  const bandwidth = cc.bandwidth;
  // SRTT 70 ms over a smallest RTT of 40: a queue of 0.75 BDP.
  cc.onAck(2000, 0, { srttMs: 70, minRttMs: 40, inFlight: 100 });
  cc.onLoss(5000, 100, 6000);
  assertAlmostEquals(cc.bandwidth, bandwidth * 0.85, 1e-9);
  assertEquals(cc.reductions, 1);
  cc.onLoss(5001, 100, 6000);
  assertAlmostEquals(cc.bandwidth, bandwidth * 0.85, 1e-9, "once per round trip");
});

Deno.test("BbrControl makes up for random loss: window and pacing scale by 1 / (1 - loss)", () => {
  const cc = bbr();
  drive(cc, { from: 0, to: 2000, rate: 2, rttMs: 40 });
  assert(cc.window <= 124, `no loss: 1.25 BDP + 24 at most, window ${cc.window}`);
  assertEquals(cc.randomLoss, 0);
  // 2 segments acked and one lost every 2 ms: 20% of what is sent is lost, with no queue.
  for (let t = 2000; t < 3000; t++) {
    drive(cc, { from: t, to: t + 1, rate: 2, rttMs: 40 });
    if (t % 2 === 0) cc.onLoss(t, 80, 10_000);
  }
  assert(cc.window >= 115, `window ${cc.window}: about 80 / 0.8 + 24 = 124`);
  assert(cc.randomLoss > 0.15 && cc.randomLoss < 0.25, `random loss ${cc.randomLoss}`);
  assertEquals(cc.reductions, 0, "random loss is not congestion");
});

Deno.test("BbrControl takes a spread RTT on a path that reorders for jitter, not a queue", () => {
  // RTT samples of 40 and 90 ms in turn, SRTT 65: a queue of 0.6 BDP by SRTT alone.
  for (const reordering of [false, true]) {
    const cc = bbr();
    drive(cc, { from: 0, to: 3000, rate: 2, rttMs: 40, jitterMs: 25, reordering });
    assertEquals(cc.mode, "probe_bw");
    if (reordering) {
      // 25.6: a round trip of 41 acks has 21 samples of 90 ms.
      assertAlmostEquals(cc.jitter, 25, 1, "the mean RTT over the standing RTT");
      assertEquals(cc.bdp, 2 * (40 + cc.jitter), "the flight the acks' average RTT needs");
    } else {
      assertEquals(cc.jitter, 0, "a path that does not reorder has a queue, not jitter");
      assertEquals(cc.bdp, 2 * 40);
    }
    cc.onLoss(0, 80, 1000);
    assertEquals(cc.reductions, reordering ? 0 : 1, "jitter is no queue");
  }
});

Deno.test("BbrControl gives back a congestion cut when the loss proves spurious on a path that reorders", () => {
  const cc = bbr();
  let end = drive(cc, { from: 0, to: 2000, rate: 2, rttMs: 40, reordering: true });
  const bandwidth = cc.bandwidth;
  // Every sample 70 ms over a smallest of 40: a queue, not jitter.
  end = drive(cc, { from: end, to: end + 100, rate: 2, rttMs: 70, reordering: true });
  assertEquals(cc.bandwidth, bandwidth);
  cc.onLoss(0, 80, 1000);
  assertEquals(cc.reductions, 1);
  assertAlmostEquals(cc.bandwidth, bandwidth * 0.85, 1e-9);
  cc.onSpuriousLoss();
  assertAlmostEquals(cc.bandwidth, bandwidth, 1e-9, "undone");
  cc.onSpuriousLoss();
  assertAlmostEquals(cc.bandwidth, bandwidth, 1e-9, "once");
});

Deno.test("BbrControl's cruise window is one BDP and the allowance, whatever the gain or the loss", () => {
  const cc = bbr();
  assertEquals(cc.cruiseWindow, 10, "the window itself before the model has a BDP");
  drive(cc, { from: 0, to: 110, rate: 2, rttMs: 40 });
  assertEquals(cc.mode, "startup");
  assertEquals(cc.cruiseWindow, 80 + 24);
  assert(cc.window > 2 * cc.cruiseWindow, `startup's window ${cc.window}`);
  // 20% random loss raises the window by 1 / (1 - loss), not the cruise window.
  for (let t = 110; t < 3000; t++) {
    drive(cc, { from: t, to: t + 1, rate: 2, rttMs: 40 });
    if (t % 2 === 0) cc.onLoss(t, 80, 10_000);
  }
  assertEquals(cc.mode, "probe_bw");
  assert(cc.randomLoss > 0.15, `random loss ${cc.randomLoss}`);
  assertEquals(cc.cruiseWindow, 80 + 24);
  assert(cc.window >= 115, `window ${cc.window}`);
});
