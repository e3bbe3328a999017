/**
 * Bulk flows of the real reliable channel through a simulated bottleneck
 * (a 2 MB/s link, 20 ms each way, a drop-tail queue of one bandwidth-delay
 * product) on the virtual clock: goodput under random loss, the queue it
 * keeps, two flows' shares, a flow that starts second, heavy congestion,
 * and a loaded host's late timers and stalls. Deterministic, so the figures are asserted exactly as
 * measured, with the NewReno baseline beside them where it tells something.
 */
import { assert, assertEquals } from "@std/assert";
import { goodputBetween, runBottleneck } from "./_bottleneck_flows.ts";

const RATE = 2_000_000;
const DELAY_MS = 20;
/** One bandwidth-delay product of the path, bytes: 80,000. */
const BDP = RATE * 2 * DELAY_MS / 1000;
const FILE = 8 * 1024 * 1024;

function shareOfLink(loss: number, congestion: "bbr" | "newreno" = "bbr", bytes = FILE): number {
  const run = runBottleneck({
    rate: RATE,
    queue: BDP,
    delayMs: DELAY_MS,
    loss,
    flows: [{ bytes, congestion }],
    untilMs: 600_000,
  });
  const flow = run.flows[0];
  assertEquals(flow.delivered, bytes, "everything arrives");
  return flow.delivered / (flow.finishedMs! / 1000) / RATE;
}

Deno.test("bottleneck: 5% loss each way keeps 0.75 of the link busy; NewReno gets a tenth", () => {
  const bbr = shareOfLink(0.05);
  assert(bbr >= 0.75, `BBR: ${bbr.toFixed(3)} of the link`);
  const newreno = shareOfLink(0.05, "newreno", FILE / 8);
  assert(newreno < 0.2, `NewReno: ${newreno.toFixed(3)} of the link`);
  assert(bbr > 4 * newreno);
});

Deno.test("bottleneck: goodput as a share of the link at 1, 10 and 20% loss each way", async (t) => {
  for (const [loss, goal] of [[0.01, 0.85], [0.1, 0.7], [0.2, 0.55]]) {
    await t.step(`${loss * 100}% loss: at least ${goal}`, () => {
      const share = shareOfLink(loss);
      assert(share >= goal, `${share.toFixed(3)} of the link`);
    });
  }
});

Deno.test("bottleneck: one flow keeps the queue short, even behind a deep buffer", async (t) => {
  for (const depth of [1, 4]) {
    await t.step(`queue of ${depth} BDP`, () => {
      const run = runBottleneck({
        rate: RATE,
        queue: depth * BDP,
        delayMs: DELAY_MS,
        flows: [{ bytes: FILE }],
        untilMs: 60_000,
      });
      const mean = run.network.queueDelayMs / run.network.queued;
      // Goal: a mean queueing delay of at most one one-way delay.
      assert(mean <= DELAY_MS, `mean queueing delay ${mean.toFixed(1)} ms`);
      // After startup, the window (one BDP, 1.25 probing, plus 24 segments) bounds the queue.
      const late = run.queueSamples.slice(20);
      assert(Math.max(...late) <= 0.75 * BDP, `queue reached ${Math.max(...late)} bytes`);
      const flow = run.flows[0];
      assert(flow.delivered / (flow.finishedMs! / 1000) >= 0.85 * RATE);
    });
  }
});

Deno.test("bottleneck: two flows started together share the link within 1.5x", () => {
  const run = runBottleneck({
    rate: RATE,
    queue: BDP,
    delayMs: DELAY_MS,
    flows: [{}, {}],
    untilMs: 12_000,
  });
  const [a, b] = run.flows.map((flow) => goodputBetween(flow, 100, 30, 120));
  assert(Math.max(a, b) / Math.min(a, b) <= 1.5, `${a} and ${b} bytes a second`);
  assert(a + b >= 0.85 * RATE, `together ${(a + b) / RATE} of the link`);
});

Deno.test("bottleneck: a flow that starts second has its share within two seconds", () => {
  const run = runBottleneck({
    rate: RATE,
    queue: BDP,
    delayMs: DELAY_MS,
    flows: [{}, { startMs: 4000 }],
    untilMs: 18_000,
  });
  const [first, second] = run.flows;
  assert(goodputBetween(first, 100, 10, 40) >= 0.9 * RATE, "alone, the first had the link");
  // From one second after it starts, the second has at least (about) half the link.
  const early = goodputBetween(second, 100, 50, 80);
  assert(early >= 0.4 * RATE, `from 5 s: ${early / RATE} of the link`);
  // The first gives back more than it must for a while (the second took the
  // queue it found for path, until probe_rtt); within ten seconds they are even.
  const a = goodputBetween(first, 100, 140, 180), b = goodputBetween(second, 100, 140, 180);
  assert(Math.max(a, b) / Math.min(a, b) <= 1.5, `from 14 s: ${a} and ${b} bytes a second`);
  assert(a + b >= 0.85 * RATE);
});

Deno.test("bottleneck: four flows share one queue without collapse", () => {
  const run = runBottleneck({
    rate: RATE,
    queue: BDP,
    delayMs: DELAY_MS,
    flows: [{}, {}, {}, {}],
    untilMs: 12_000,
  });
  const shares = run.flows.map((flow) => goodputBetween(flow, 100, 30, 120) / RATE);
  const total = shares.reduce((a, b) => a + b, 0);
  assert(total >= 0.85, `together ${total.toFixed(2)} of the link`);
  assert(shares.every((share) => share >= 0.15), `shares ${shares.map((s) => s.toFixed(2))}`);
  for (const flow of run.flows) {
    const sent = flow.sender.stats.dataSegmentsSent * 1100;
    assert(sent / flow.delivered < 1.5, `sent ${sent} bytes for ${flow.delivered}`);
    assertEquals(flow.sender.deadReason, undefined);
  }
});

Deno.test("bottleneck: three flows in a queue of half a BDP all keep moving", () => {
  // Every probe overflows so short a queue, and the RTT never shows it as congestion.
  const run = runBottleneck({
    rate: RATE,
    queue: BDP / 2,
    delayMs: DELAY_MS,
    flows: [{}, {}, {}],
    untilMs: 12_000,
  });
  const shares = run.flows.map((flow) => goodputBetween(flow, 100, 30, 120) / RATE);
  const total = shares.reduce((a, b) => a + b, 0);
  assert(total >= 0.85, `together ${total.toFixed(2)} of the link`);
  assert(shares.every((share) => share >= 0.1), `shares ${shares.map((s) => s.toFixed(2))}`);
  assert(run.network.queueDropped > 0, "the queue did overflow");
});

Deno.test("bottleneck: on a loaded host, 1% loss still keeps 0.85 of the link busy", () => {
  // Every timer up to 3 ms late, and each end descheduled for 8 ms every 50 ms
  // (means), its socket holding 90 datagrams meanwhile: about what the
  // shared 2-core machine of docs/BENCHMARKS.md does to the real programs.
  const run = runBottleneck({
    rate: RATE,
    queue: BDP,
    delayMs: DELAY_MS,
    loss: 0.01,
    flows: [{ bytes: FILE }],
    untilMs: 600_000,
    host: { timerLateMs: 3, stallEveryMs: 50, stallMs: 8, socketDatagrams: 90 },
  });
  const flow = run.flows[0];
  assertEquals(flow.delivered, FILE, "everything arrives");
  // 0.77 of the link before the window covered the sender's lateness.
  const share = flow.delivered / (flow.finishedMs! / 1000) / RATE;
  assert(share >= 0.85, `${share.toFixed(3)} of the link`);
  const mean = run.network.queueDelayMs / run.network.queued;
  assert(mean <= DELAY_MS, `mean queueing delay ${mean.toFixed(1)} ms`);
});

Deno.test("bottleneck: at 20% loss on 8 MB/s nothing is sent again for an ack of an earlier copy", async (t) => {
  // An ack of a retransmitted segment's first copy, taken for the retransmission's, judged lost
  // what was sent between the two copies and still in flight, and so on: 8 MiB took 13,500 to
  // 14,300 data segments at 20% loss, the link 0.34-0.48 busy (0.31-0.46 on the loaded host).
  const host = { timerLateMs: 3, stallEveryMs: 50, stallMs: 8, socketDatagrams: 90 };
  for (
    const [name, noise, least] of [["perfect", undefined, 0.46], ["loaded", host, 0.44]] as const
  ) {
    await t.step(`${name} host, seeds 1-4: at least ${least} of the link`, () => {
      let share = 0;
      for (const seed of [1, 2, 3, 4]) {
        const run = runBottleneck({
          rate: 8_000_000,
          queue: 320_000,
          delayMs: DELAY_MS,
          loss: 0.2,
          seed,
          flows: [{ bytes: FILE }],
          untilMs: 600_000,
          host: noise,
        });
        const flow = run.flows[0];
        assertEquals(flow.delivered, FILE, "everything arrives");
        // 7,680 segments, of which a fifth are lost each time they are sent: 9,600 expected.
        // Spare copies of retransmissions (counted apart, below) are not sent on a loss verdict.
        const { dataSegmentsSent, redundantCopies } = flow.sender.stats;
        const sent = dataSegmentsSent - redundantCopies;
        assert(sent <= 10_080, `seed ${seed}: ${sent} data segments sent`);
        share += FILE / (flow.finishedMs! / 1000) / 8_000_000 / 4;
      }
      assert(share >= least, `${share.toFixed(3)} of the link`);
    });
  }
});

Deno.test("bottleneck: spare copies and the send window's second half keep 16 MiB on 8 MB/s moving at 5 to 20% loss", async (t) => {
  // A lost retransmission holds the send window's left edge, or the end of the transfer, for
  // another round trip; a spare copy in the room the window would leave empty (DECISIONS, "Eighth
  // pass") avoids most of it, and the second half of a send window of 2,048 keeps new data going
  // at one BDP meanwhile (DECISIONS, "Session 22"). Seeds 1-4, a perfect host; without either
  // 0.750, 0.673 and 0.489 of the link, with the copies 0.761, 0.688 and 0.564, with both 0.779,
  // 0.714 and 0.601. With both, the window seldom fills at 5%: seed 1 sends no copy.
  for (
    const [loss, least, mostCopies] of [[0.05, 0.775, 0.01], [0.1, 0.71, 0.025], [0.2, 0.595, 0.06]]
  ) {
    await t.step(`${loss * 100}% loss: at least ${least} of the link`, () => {
      let share = 0, copies = 0;
      for (const seed of [1, 2, 3, 4]) {
        const file = 16 * 1024 * 1024;
        const run = runBottleneck({
          rate: 8_000_000,
          queue: 320_000,
          delayMs: DELAY_MS,
          loss,
          seed,
          flows: [{ bytes: file }],
          untilMs: 600_000,
        });
        const flow = run.flows[0];
        assertEquals(flow.delivered, file, "everything arrives");
        const { dataSegmentsSent, redundantCopies } = flow.sender.stats;
        copies += redundantCopies;
        assert(
          redundantCopies <= mostCopies * dataSegmentsSent,
          `seed ${seed}: ${redundantCopies} copies of ${dataSegmentsSent} data segments`,
        );
        share += file / (flow.finishedMs! / 1000) / 8_000_000 / 4;
      }
      assert(copies > 0, "no spare copy");
      assert(share >= least, `${share.toFixed(3)} of the link`);
    });
  }
});

Deno.test("bottleneck: on a loaded host the send window's second half keeps 16 MiB on 8 MB/s moving at 1% loss", () => {
  // Issue 20 asks 0.8 of the link at 1% through the proxy, which tracks this host. Seeds 1-8:
  // 0.742 of the link with a send window of 1,024, 0.773 with 2,048 whose second half holds new
  // data at one BDP in flight (DECISIONS, "Session 22").
  const host = { timerLateMs: 3, stallEveryMs: 50, stallMs: 8, socketDatagrams: 90 };
  const file = 16 * 1024 * 1024;
  let share = 0;
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const run = runBottleneck({
      rate: 8_000_000,
      queue: 320_000,
      delayMs: DELAY_MS,
      loss: 0.01,
      seed,
      flows: [{ bytes: file }],
      untilMs: 600_000,
      host,
    });
    const flow = run.flows[0];
    assertEquals(flow.delivered, file, "everything arrives");
    share += file / (flow.finishedMs! / 1000) / 8_000_000 / 8;
  }
  assert(share >= 0.765, `${share.toFixed(3)} of the link`);
});
