/**
 * CongestionControl on its own (slow start, congestion avoidance, Veno's
 * loss discrimination, one reduction per window, timeouts, the floor,
 * pacing), then a ReliableChannel bulk sender over a simulated bottleneck
 * and a lossy link: the window grows, backs off, and never overruns the
 * peer's receive window.
 */
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import {
  CongestionControl,
  MAX_QUEUED_SEGMENTS,
  MIN_CONGESTION_WINDOW,
  MIN_RATE_SEGMENTS_PER_MS,
  RANDOM_LOSS_BACKLOG,
} from "../lib/reliable/congestion_control.ts";
import { ReliableChannel, type ReliableChannelOptions } from "../lib/reliable/reliable_channel.ts";
import type { Segment } from "../lib/reliable/segment.ts";
import { SeededRandom } from "../lib/random.ts";

function controller(initialWindow = 10, maxWindow = 1024, maxBurst = 32): CongestionControl {
  return new CongestionControl({ initialWindow, maxWindow, maxBurst });
}

function rtt(srttMs: number, minRttMs = srttMs) {
  return { srttMs, minRttMs };
}

// ---------------------------------------------------------------------------
// The window

Deno.test("CongestionControl rejects windows and bursts that are not positive integers", () => {
  for (
    const bad of [
      { initialWindow: 0, maxWindow: 10, maxBurst: 4 },
      { initialWindow: 1.5, maxWindow: 10, maxBurst: 4 },
      { initialWindow: 10, maxWindow: -1, maxBurst: 4 },
      { initialWindow: 10, maxWindow: 10, maxBurst: 0 },
      { initialWindow: 10, maxWindow: 10, maxBurst: NaN },
    ]
  ) {
    assertThrows(() => new CongestionControl(bad), RangeError);
  }
});

Deno.test("CongestionControl starts in slow start at the initial window, capped by the maximum", () => {
  const cc = controller(10);
  assertEquals(cc.window, 10);
  assertEquals(cc.slowStartThreshold, Infinity);
  assertEquals(cc.reductions, 0);
  assertEquals(cc.pacer.rate, Infinity);
  assertEquals(controller(10, 6).window, 6);
});

Deno.test("CongestionControl slow start adds the segments an ack covers", () => {
  const cc = controller(10);
  cc.onAck(0, 1, rtt(20));
  assertEquals(cc.window, 11);
  cc.onAck(1, 2, rtt(20));
  assertEquals(cc.window, 13);
  cc.onAck(2, 8, rtt(20)); // a delayed ack of 8: no cap, pacing spreads the burst
  assertEquals(cc.window, 21);
  cc.onAck(3, 0, rtt(20)); // covers nothing new
  assertEquals(cc.window, 21);
});

Deno.test("CongestionControl slow start doubles the window each round trip", () => {
  const cc = controller(10);
  for (let round = 0; round < 4; round++) {
    const window = cc.window;
    // A round trip: the window's segments come back, acknowledged eight at a time.
    for (let acked = 0; acked < window; acked += 8) {
      cc.onAck(round * 20, Math.min(8, window - acked), rtt(20));
    }
    assertEquals(cc.window, 2 * window);
  }
  assertEquals(cc.window, 160);
});

Deno.test("CongestionControl ends slow start and shrinks when the RTT shows a long queue", () => {
  const cc = controller(100);
  // 100 in flight, srtt 2 ms over a 0.1 ms path: about 95 of them queued.
  cc.onAck(0, 2, { srttMs: 2, minRttMs: 0.1, inFlight: 100 });
  assert(cc.slowStartThreshold < 100, `slow start ended (ssthresh ${cc.slowStartThreshold})`);
  assert(cc.window < 100, `shrank to ${cc.window}`);
  // One segment per round trip: a window of acks takes one off.
  for (let i = 0; i < 49; i++) cc.onAck(0, 2, { srttMs: 2, minRttMs: 0.1, inFlight: 100 });
  const shrunk = cc.window;
  assert(shrunk === 98 || shrunk === 99, `one segment less after a window of acks: ${shrunk}`);
  // With its queue under the bound, the window grows again (avoidance: +1 per window).
  for (let i = 0; i < 50; i++) {
    cc.onAck(0, 2, { srttMs: 2, minRttMs: 0.1, inFlight: MAX_QUEUED_SEGMENTS });
  }
  assert(cc.window > shrunk && cc.window <= shrunk + 2, `grew from ${shrunk} to ${cc.window}`);
});

Deno.test("CongestionControl never grows beyond the maximum window", () => {
  const cc = controller(10, 16);
  for (let i = 0; i < 50; i++) cc.onAck(i, 2, rtt(20));
  assertEquals(cc.window, 16);
});

Deno.test("CongestionControl congestion avoidance adds one segment per window of acks", () => {
  const cc = controller(40);
  cc.onAck(0, 1, rtt(100)); // 41
  cc.onLoss(0, 40, 100); // random loss (no queue): 4/5 of 40
  assertEquals([cc.window, cc.slowStartThreshold], [32, 32]);
  // At or above ssthresh: one segment per window's worth of acked segments.
  cc.onAck(10, 10, rtt(100));
  assertEquals(cc.window, 32, "10 of 32 segments acknowledged add less than one");
  for (let i = 0; i < 22; i++) cc.onAck(20, 1, rtt(100));
  assertEquals(cc.window, 32, "a window minus rounding is not quite one more");
  cc.onAck(30, 2, rtt(100));
  assertEquals(cc.window, 33);
  // A whole window acked at once adds exactly one.
  const before = cc.window;
  for (let round = 0; round < 5; round++) cc.onAck(40 + round, cc.window, rtt(100));
  assert(cc.window >= before + 4 && cc.window <= before + 5, `${before} -> ${cc.window}`);
});

Deno.test("CongestionControl halves on a congestion loss and keeps 4/5 on a random one (Veno)", async (t) => {
  await t.step("a queue behind the RTT: congestion, half of the flight", () => {
    const cc = controller(40);
    cc.onAck(0, 1, rtt(100, 50)); // cwnd 41; backlog 41 * 50 / 100 = 20.5 segments
    cc.onLoss(5, 40, 60);
    assertEquals(cc.slowStartThreshold, 20);
    assertEquals(cc.window, 20);
    assertEquals(cc.reductions, 1);
  });
  await t.step("no queue: a random loss, 4/5 of the flight", () => {
    const cc = controller(40);
    cc.onAck(0, 1, rtt(100, 100));
    cc.onLoss(5, 40, 60);
    assertEquals(cc.slowStartThreshold, 32);
    assertEquals(cc.window, 32);
  });
  await t.step(`the threshold is a backlog of ${RANDOM_LOSS_BACKLOG} segments`, () => {
    // cwnd 30, srtt 100: backlog = 30 * (100 - minRtt) / 100.
    const after = (minRtt: number) => {
      const cc = controller(29);
      cc.onAck(0, 1, rtt(100, minRtt));
      cc.onLoss(0, 30, 40);
      return cc.window;
    };
    assertEquals(after(91), 24, "backlog 2.7: random");
    assertEquals(after(90), 15, "backlog 3: congestion");
    assertEquals(after(60), 15, "backlog 12: congestion");
  });
  await t.step("without an RTT sample every loss counts as congestion", () => {
    const cc = controller(20);
    cc.onLoss(0, 20, 20);
    assertEquals(cc.window, 10);
  });
  await t.step("the reduction is taken from the flight, not the window", () => {
    const cc = controller(40);
    cc.onAck(0, 1, rtt(100, 50));
    cc.onLoss(0, 30, 60);
    assertEquals(cc.window, 15);
  });
});

Deno.test("CongestionControl reduces once per window of data (recoveryEnd)", () => {
  const cc = controller(40);
  cc.onAck(0, 1, rtt(100, 50));
  cc.onLoss(10, 40, 100); // segments from 100 on are sent after the reduction
  assertEquals([cc.window, cc.reductions], [20, 1]);
  // More losses among segments sent before it: the same congestion event.
  for (const seq of [11, 12, 50, 99]) cc.onLoss(seq, 20, 100 + seq);
  assertEquals([cc.window, cc.reductions], [20, 1]);
  // A loss of a segment sent after the reduction is a new event.
  cc.onLoss(100, 20, 130);
  assertEquals([cc.window, cc.reductions], [10, 2]);
  cc.onLoss(129, 10, 140);
  assertEquals(cc.reductions, 2);
});

Deno.test("CongestionControl restarts slow start from the floor after a timeout", () => {
  const cc = controller(40);
  cc.onAck(0, 1, rtt(30)); // floor max(4, ceil(3)) = 4
  cc.onLoss(0, 40, 100);
  assertEquals(cc.reductions, 1);
  // A timeout reduces even inside the recovery window.
  cc.onTimeout(30, 120);
  assertEquals(cc.window, MIN_CONGESTION_WINDOW);
  assertEquals(cc.slowStartThreshold, 24); // 4/5 of 30 in flight: no queue
  assertEquals(cc.reductions, 2);
  // Slow start again, up to ssthresh, then avoidance.
  cc.onAck(1000, 2, rtt(30));
  assertEquals(cc.window, 6);
  for (let i = 0; i < 9; i++) cc.onAck(1001 + i, 2, rtt(30));
  assertEquals(cc.window, 24);
  cc.onAck(1100, 2, rtt(30));
  assertEquals(cc.window, 24, "at ssthresh growth is per window");
});

Deno.test("CongestionControl floor is max(4, ceil(0.1 segment/ms * srtt))", async (t) => {
  assertEquals(MIN_CONGESTION_WINDOW, 4);
  assertEquals(MIN_RATE_SEGMENTS_PER_MS, 0.1);
  const cases: [number, number][] = [[1, 4], [35, 4], [40, 4], [41, 5], [45, 5], [100, 10], [
    250,
    25,
  ], [1000, 100]];
  for (const [srtt, floor] of cases) {
    await t.step(`srtt ${srtt} ms: floor ${floor}`, () => {
      const cc = controller(200);
      cc.onAck(0, 1, rtt(srtt));
      cc.onTimeout(200, 300);
      assertEquals(cc.window, floor);
    });
  }
  await t.step("the window never reads below the floor", () => {
    const cc = controller(10);
    cc.onAck(0, 1, rtt(200)); // cwnd 11, floor 20
    assertEquals(cc.window, 20);
    cc.onLoss(0, 10, 20); // half of 10 is below the floor
    assertEquals(cc.slowStartThreshold, 20);
    assertEquals(cc.window, 20);
  });
});

// ---------------------------------------------------------------------------
// Pacing

Deno.test("CongestionControl does not pace before the first RTT sample", () => {
  const cc = controller(10, 1024, 4);
  for (let i = 0; i < 100; i++) {
    assert(cc.pacer.mayPace(0));
    cc.pacer.spend();
  }
  assertEquals(cc.pacer.nextSendTime(), 0);
});

Deno.test("CongestionControl paces at 2 cwnd/srtt in slow start, tokens capped at maxBurst", () => {
  const cc = controller(10, 1024, 4);
  cc.onAck(0, 1, rtt(100)); // cwnd 11
  assertAlmostEquals(cc.pacer.rate, 0.22, 1e-9);
  // A burst of maxBurst, then nothing.
  for (let i = 0; i < 4; i++) {
    assert(cc.pacer.mayPace(0), `token ${i}`);
    cc.pacer.spend();
  }
  assert(!cc.pacer.mayPace(0));
  // One token every 1 / 0.22 ms.
  const next = cc.pacer.nextSendTime();
  assertAlmostEquals(next, 1 / 0.22, 1e-9);
  assert(!cc.pacer.mayPace(next - 0.01));
  assert(cc.pacer.mayPace(next));
  cc.pacer.spend();
  // 10 ms refill 2.2 tokens.
  assert(!cc.pacer.mayPace(next));
  assert(cc.pacer.mayPace(next + 10));
  cc.pacer.spend();
  assert(cc.pacer.mayPace(next + 10));
  cc.pacer.spend();
  assert(!cc.pacer.mayPace(next + 10));
  assertAlmostEquals(cc.pacer.nextSendTime(), next + 10 + 0.8 / 0.22, 1e-6);
  // A long idle time fills the bucket only up to maxBurst.
  let sent = 0;
  while (cc.pacer.mayPace(100_000)) {
    cc.pacer.spend();
    sent++;
  }
  assertEquals(sent, 4);
});

Deno.test("CongestionControl paces at 1.25 cwnd/srtt in avoidance and cuts the rate with the window", () => {
  const cc = controller(40);
  cc.onAck(0, 1, rtt(100)); // cwnd 41, slow start: 2 * 41 / 100
  assertAlmostEquals(cc.pacer.rate, 0.82, 1e-9);
  cc.onLoss(0, 40, 100); // window 32: the rate follows at once
  assertAlmostEquals(cc.pacer.rate, 0.82 * 32 / 41, 1e-9);
  cc.onAck(10, 32, rtt(100)); // avoidance: cwnd 33
  assertAlmostEquals(cc.pacer.rate, 1.25 * 33 / 100, 1e-9);
});

Deno.test("CongestionControl nextSendTime is the last check while a token is available", () => {
  const cc = controller(10, 1024, 2);
  cc.onAck(50, 1, rtt(10));
  assert(cc.pacer.mayPace(60));
  assertEquals(cc.pacer.nextSendTime(), 60);
});

// ---------------------------------------------------------------------------
// A ReliableChannel bulk sender on simulated links

interface Link {
  /** One-way propagation delay, ms. */
  delayMs: number;
  /** Bottleneck rate of the forward path, segments per ms (Infinity: none). */
  rate: number;
  /** Drop-tail queue of the bottleneck, segments. */
  queue: number;
  /** Random loss of the forward path. */
  loss: number;
}

interface BulkRun {
  /** Congestion window after each ack the sender took, with its time. */
  windows: { at: number; window: number }[];
  delivered: Uint8Array[];
  end: number;
  sender: ReliableChannel;
  receiver: ReliableChannel;
  /** Most sequence numbers sent beyond the cumulative ack the sender had seen. */
  maxAhead: number;
  /** Data segments the sender sent at or beyond the window the receiver advertised. */
  beyondWindow: number;
  dropsAtQueue: number;
  /** Segments waiting at the bottleneck each time one arrived there, with the time. */
  queue: { at: number; length: number }[];
}

/** Sends `messages` from a sender to a receiver over a bottleneck with a queue, or a lossy path. */
function bulk(
  link: Link,
  messages: Uint8Array[],
  options: { sender?: ReliableChannelOptions; receiver?: ReliableChannelOptions; seed?: number } =
    {},
): BulkRun {
  const random = new SeededRandom(options.seed ?? 1);
  const sender = new ReliableChannel(0, options.sender);
  const receiver = new ReliableChannel(0, options.receiver);
  for (const message of messages) sender.send(0, message);
  let flight: { at: number; seq: number; toReceiver: boolean; segment: Segment }[] = [];
  let order = 0;
  let lastDeparture = 0;
  const departures: number[] = [];
  const run: BulkRun = {
    windows: [],
    delivered: [],
    end: 0,
    sender,
    receiver,
    maxAhead: 0,
    beyondWindow: 0,
    dropsAtQueue: 0,
    queue: [],
  };
  let cumulative = 0;
  let advertised = options.receiver?.receiveWindow ?? 1024;
  let now = 0;
  const forward = (segment: Segment) => {
    if (segment.kind === "data") {
      run.maxAhead = Math.max(run.maxAhead, segment.seq + 1 - cumulative);
      if (segment.seq >= cumulative + advertised) run.beyondWindow++;
    }
    if (random.next() < link.loss) return;
    let at = now + link.delayMs;
    if (Number.isFinite(link.rate)) {
      while (departures.length > 0 && departures[0] <= now) departures.shift();
      run.queue.push({ at: now, length: departures.length });
      if (departures.length >= link.queue) {
        run.dropsAtQueue++;
        return;
      }
      lastDeparture = Math.max(now, lastDeparture) + 1 / link.rate;
      departures.push(lastDeparture);
      at = lastDeparture + link.delayMs;
    }
    flight.push({ at, seq: order++, toReceiver: true, segment });
  };
  const pump = () => {
    for (let out = sender.poll(); out; out = sender.poll()) {
      if (out.type === "segment") forward(out.segment);
    }
    for (let out = receiver.poll(); out; out = receiver.poll()) {
      if (out.type === "segment") {
        flight.push({
          at: now + link.delayMs,
          seq: order++,
          toReceiver: false,
          segment: out.segment,
        });
      }
      if (out.type === "deliver") run.delivered.push(out.message);
    }
  };
  pump();
  while (!sender.idle && now < 120_000) {
    now = Math.min(
      ...flight.map((f) => f.at),
      sender.nextTimeout() ?? Infinity,
      receiver.nextTimeout() ?? Infinity,
    );
    flight.sort((x, y) => x.at - y.at || x.seq - y.seq);
    let due = 0;
    while (due < flight.length && flight[due].at <= now) due++;
    const arriving = flight.slice(0, due);
    flight = flight.slice(due);
    for (const f of arriving) {
      if (f.toReceiver) {
        receiver.receive(now, f.segment);
      } else {
        if (f.segment.kind === "ack" && f.segment.cumulative >= cumulative) {
          cumulative = f.segment.cumulative;
          advertised = f.segment.window;
        }
        sender.receive(now, f.segment);
        run.windows.push({ at: now, window: sender.stats.congestionWindow });
      }
      pump();
    }
    for (const channel of [sender, receiver]) {
      if ((channel.nextTimeout() ?? Infinity) <= now) channel.onTimeout(now);
    }
    pump();
  }
  run.end = now;
  return run;
}

function payloads(count: number, size: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const bytes = new Uint8Array(size);
    for (let j = 0; j < size; j++) bytes[j] = (i * 131 + j * 7) & 0xff;
    return bytes;
  });
}

// The next two are about the NewReno-Veno controller's window; BBR's model is
// tested in bbr_control_test.ts.
const NEWRENO: ReliableChannelOptions = { congestion: "newreno" };

Deno.test("ReliableChannel (newreno) grows its window, then backs off at a bottleneck's full queue", () => {
  // 1 segment/ms (about 1.1 MB/s), 20 ms each way: the pipe holds about 40
  // segments, the queue 20 more.
  const link: Link = { delayMs: 20, rate: 1, queue: 20, loss: 0 };
  const messages = payloads(64, 32 * 1024); // 2 MiB, about 1900 segments
  const run = bulk(link, messages, { sender: NEWRENO });
  assertEquals(run.delivered, messages, "everything arrives, in order");
  const peakAt = run.windows.reduce(
    (best, w, i) => w.window > run.windows[best].window ? i : best,
    0,
  );
  const peak = run.windows[peakAt].window;
  assert(peak >= 60, `the window grew in slow start (peak ${peak})`);
  assert(run.dropsAtQueue > 0, "the queue overflowed");
  assert(run.sender.stats.congestionReductions >= 1, "the window was reduced");
  // A full queue adds its length to the RTT: Veno sees congestion and halves.
  const after = run.windows.slice(peakAt).map((w) => w.window);
  assert(Math.min(...after) <= peak * 0.6, `backed off from ${peak} to ${Math.min(...after)}`);
  // Backing off is not collapsing: the bottleneck stays mostly busy.
  const ideal = run.sender.stats.dataSegmentsSent / link.rate + 2 * link.delayMs;
  assert(run.end < ideal * 2, `took ${run.end} ms; the bottleneck alone needs ${ideal}`);
});

Deno.test("ReliableChannel keeps a deep bottleneck queue short instead of filling it", () => {
  // Like loopback: 40 segments/ms into a receiver whose socket buffer holds
  // 90 datagrams. A loss-driven window would fill it and halve, again and again.
  const link: Link = { delayMs: 0.05, rate: 40, queue: 90, loss: 0 };
  const messages = payloads(256, 32 * 1024); // 8 MiB, about 7700 segments
  const run = bulk(link, messages);
  assertEquals(run.delivered, messages);
  const stats = run.sender.stats;
  assert(stats.congestionReductions <= 1, `${stats.congestionReductions} reductions`);
  const late = run.queue.filter((q) => q.at > run.end / 2).map((q) => q.length);
  const longest = Math.max(...late);
  assert(longest <= MAX_QUEUED_SEGMENTS * 1.5, `the queue reached ${longest}`);
  // Short is not empty: the bottleneck stays busy.
  const ideal = stats.dataSegmentsSent / link.rate + 2 * link.delayMs;
  assert(run.end < ideal * 1.3, `took ${run.end.toFixed(1)} ms; the bottleneck needs ${ideal}`);
});

// A regression test: once, only transmissions older than the backed-off RTO
// were marked lost on a timeout; the rest still counted as in flight above
// the reduced window, so nothing was retransmitted and the timer backed off
// again, up to maxRtoMs: 2 MiB through a 30-segment queue took about 180 s
// instead of 2.4 s. Every outstanding transmission is now lost on an RTO
// (RFC 6675 5.1).
Deno.test({
  name: "ReliableChannel finishes promptly whatever the bottleneck's queue (no RTO backoff stall)",
  fn: async (t) => {
    for (const congestion of ["bbr", "newreno"] as const) {
      for (const queue of [30, 50, 100]) {
        await t.step(`${congestion}, queue ${queue}`, () => {
          const link: Link = { delayMs: 20, rate: 1, queue, loss: 0 };
          const messages = payloads(64, 32 * 1024);
          const run = bulk(link, messages, { sender: { congestion } });
          assertEquals(run.delivered, messages);
          const ideal = run.sender.stats.dataSegmentsSent / link.rate + 2 * link.delayMs;
          assert(
            run.end < ideal * 2,
            `took ${Math.round(run.end)} ms; the bottleneck needs ${ideal}`,
          );
          assert(run.sender.stats.rtoMs < 5000, `RTO backed off to ${run.sender.stats.rtoMs} ms`);
        });
      }
    }
  },
});

Deno.test("ReliableChannel (newreno) keeps a large window on a link with rare random loss and no queue", () => {
  const link: Link = { delayMs: 25, rate: Infinity, queue: Infinity, loss: 0.005 };
  const messages = payloads(64, 32 * 1024);
  const run = bulk(link, messages, { seed: 3, sender: NEWRENO });
  assertEquals(run.delivered, messages);
  const stats = run.sender.stats;
  assert(stats.congestionReductions >= 1, "some loss was seen");
  // No queue builds up, so Veno takes the losses as random: 4/5, not 1/2, each time.
  const windows = run.windows.map((w) => w.window);
  const late = windows.slice(Math.floor(windows.length / 2));
  const floor = Math.max(4, Math.ceil(0.1 * (stats.srttMs ?? 0)));
  assert(
    Math.max(...late) > 4 * floor,
    `the window stayed well above the floor ${floor} (late max ${Math.max(...late)})`,
  );
});

Deno.test("ReliableChannel never sends beyond the receive window the peer advertises", async (t) => {
  const messages = payloads(40, 16 * 1024);
  for (
    const [name, link] of [
      ["fast link", { delayMs: 10, rate: Infinity, queue: Infinity, loss: 0 }],
      ["lossy link", { delayMs: 10, rate: Infinity, queue: Infinity, loss: 0.05 }],
      ["bottleneck", { delayMs: 10, rate: 2, queue: 100, loss: 0 }],
    ] as const
  ) {
    await t.step(name, () => {
      const run = bulk(link, messages, { receiver: { receiveWindow: 32 }, seed: 5 });
      assertEquals(run.delivered, messages);
      assertEquals(run.beyondWindow, 0, "data sent beyond the advertised window");
      assert(run.maxAhead <= 32, `sent ${run.maxAhead} segments beyond the cumulative ack`);
      assertEquals(run.receiver.stats.outOfWindowDropped, 0);
      // The congestion window alone would have allowed more.
      assert(
        run.windows.some((w) => w.window > 32),
        `the window limited it, not congestion control (max ${
          Math.max(...run.windows.map((w) => w.window))
        })`,
      );
    });
  }
});
