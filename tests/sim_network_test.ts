/**
 * The simulated network: bursty loss statistics, partitions one-way and
 * two-way with heal, stalled streams, and determinism from the seed.
 */
import { assert, assertAlmostEquals, assertEquals, assertMatch, assertThrows } from "@std/assert";
import { SeededRandom } from "../lib/random.ts";
import {
  BURST_QUIET_MS,
  type Impairment,
  impairmentProblem,
  NO_IMPAIRMENT,
  SimNetwork,
  type SimPacket,
} from "../lib/sim/sim_network.ts";

const A = "127.0.0.1:3000";
const A_TCP = "127.0.0.1:3001";
const B = "127.0.1.1:4001";
const C = "127.0.1.2:4002";

function bytes(n: number): Uint8Array {
  return new Uint8Array([n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff]);
}

function id(packet: SimPacket): number {
  return packet.data[0] | (packet.data[1] << 8) | (packet.data[2] << 16);
}

/** Sends `count` datagrams on one link, one every `everyMs`, and returns, for each, whether it was lost. */
function lossPattern(net: SimNetwork, count: number, from = A, to = B, everyMs = 1): boolean[] {
  const lost: boolean[] = [];
  for (let i = 0; i < count; i++) {
    const before = net.stats.lost;
    net.send(i * everyMs, from, to, bytes(i));
    lost.push(net.stats.lost > before);
    net.deliverDue(i * everyMs);
  }
  return lost;
}

function runs(lost: boolean[]): number[] {
  const lengths: number[] = [];
  let run = 0;
  for (const l of lost) {
    if (l) run++;
    else if (run > 0) {
      lengths.push(run);
      run = 0;
    }
  }
  if (run > 0) lengths.push(run);
  return lengths;
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Delivers everything in flight, in order. */
function drain(net: SimNetwork, limit = Infinity): SimPacket[] {
  const out: SimPacket[] = [];
  for (let at = net.nextDelivery(); at !== undefined && at <= limit; at = net.nextDelivery()) {
    out.push(...net.deliverDue(at));
  }
  return out;
}

Deno.test("SimNetwork independent loss has the asked rate and short runs", () => {
  const net = new SimNetwork(new SeededRandom(1), { ...NO_IMPAIRMENT, loss: 0.2 });
  const lost = lossPattern(net, 100_000);
  assertAlmostEquals(lost.filter(Boolean).length / lost.length, 0.2, 0.01);
  // Geometric runs: mean 1 / (1 - 0.2) = 1.25.
  assertAlmostEquals(mean(runs(lost)), 1.25, 0.03);
});

for (const [loss, burst] of [[0.05, 3], [0.2, 4], [0.3, 3], [0.5, 10]]) {
  Deno.test(`SimNetwork bursty loss ${loss} with mean burst ${burst} keeps rate and run length`, () => {
    const net = new SimNetwork(new SeededRandom(7), { ...NO_IMPAIRMENT, loss, burst });
    const lost = lossPattern(net, 200_000);
    const rate = lost.filter(Boolean).length / lost.length;
    assertAlmostEquals(rate, loss, loss * 0.05, `rate ${rate}`);
    const runLength = mean(runs(lost));
    assertAlmostEquals(runLength, burst, burst * 0.05, `mean run ${runLength}`);
    assertEquals(net.stats.lost, lost.filter(Boolean).length);
  });
}

Deno.test("SimNetwork ends a run of losses once its link has been quiet for BURST_QUIET_MS", () => {
  const imp = { ...NO_IMPAIRMENT, loss: 0.5, burst: 50 };
  // A packet a ms: runs of 50 on average, half of them lost.
  const dense = new SimNetwork(new SeededRandom(5), imp);
  const denseLost = lossPattern(dense, 20_000);
  assertAlmostEquals(mean(runs(denseLost)), 50, 10);
  // A packet every BURST_QUIET_MS (a client's hello every second or so): each
  // starts outside a burst, so it is lost only if a burst starts with it.
  const sparse = new SimNetwork(new SeededRandom(5), imp);
  const sparseLost = lossPattern(sparse, 20_000, A, B, BURST_QUIET_MS);
  const share = sparseLost.filter(Boolean).length / sparseLost.length;
  assertAlmostEquals(share, 0.02, 0.005, `lost ${share}: 0.5 / (50 x 0.5) enter a burst`);
  assertAlmostEquals(mean(runs(sparseLost)), 1, 0.05);
});

Deno.test("SimNetwork keeps the burst state per directed link", () => {
  const net = new SimNetwork(new SeededRandom(3), { ...NO_IMPAIRMENT, loss: 0.2, burst: 5 });
  const ab: boolean[] = [], ba: boolean[] = [];
  for (let i = 0; i < 200_000; i++) {
    const [from, to, list] = i % 2 === 0 ? [A, B, ab] : [B, A, ba];
    const before = net.stats.lost;
    net.send(i, from, to, bytes(i));
    list.push(net.stats.lost > before);
    net.deliverDue(i);
  }
  // Interleaving two links does not split their bursts.
  assertAlmostEquals(mean(runs(ab)), 5, 0.3);
  assertAlmostEquals(mean(runs(ba)), 5, 0.3);
});

Deno.test("SimNetwork with burst 1 or no burst draws the same as independent loss", () => {
  const imp: Impairment = { ...NO_IMPAIRMENT, loss: 0.3, duplicate: 0.1, reorder: 0.1 };
  const plain = lossPattern(new SimNetwork(new SeededRandom(5), imp), 5000);
  const one = lossPattern(new SimNetwork(new SeededRandom(5), { ...imp, burst: 1 }), 5000);
  assertEquals(one, plain);
});

Deno.test("impairmentProblem() rejects impossible bursts and probabilities", () => {
  assertEquals(impairmentProblem({ ...NO_IMPAIRMENT, loss: 0.3, burst: 3 }), undefined);
  assertEquals(impairmentProblem({ ...NO_IMPAIRMENT, loss: 0.8, burst: 4 }), undefined);
  assertEquals(
    impairmentProblem({ ...NO_IMPAIRMENT, loss: 0.8, burst: 2 }),
    "Loss 0.8 needs a mean burst of at least 4 packets, not 2",
  );
  assert(impairmentProblem({ ...NO_IMPAIRMENT, burst: 0.5 })?.includes("at least 1 packet"));
  assert(impairmentProblem({ ...NO_IMPAIRMENT, loss: 1.5 })?.includes("loss probability"));
  assert(impairmentProblem({ ...NO_IMPAIRMENT, minDelayMs: 5, maxDelayMs: 2 })?.includes("delay"));
  const net = new SimNetwork(new SeededRandom(1), NO_IMPAIRMENT);
  assertThrows(() => net.impairment = { ...NO_IMPAIRMENT, loss: 0.9, burst: 2 }, RangeError);
  assertThrows(() => new SimNetwork(new SeededRandom(1), { ...NO_IMPAIRMENT, reorder: -1 }));
});

Deno.test("SimNetwork.partition() two-way drops both directions, by host", () => {
  const net = new SimNetwork(new SeededRandom(1), NO_IMPAIRMENT);
  net.partition("127.0.0.1", "127.0.1.1");
  net.send(0, A, B, bytes(1));
  net.send(0, B, A, bytes(2));
  net.send(0, B, A_TCP, bytes(3)); // every port of the host
  net.send(0, C, A, bytes(4)); // another host is not cut
  net.send(0, B, C, bytes(5));
  assertEquals(drain(net).map(id), [4, 5]);
  assertEquals(net.stats.lost, 3);
  assertEquals(net.stats.partitioned, 3);
  assert(net.blocked(A, B) && net.blocked(B, A) && !net.blocked(A, C));
});

Deno.test("SimNetwork.partition() one-way drops one direction only", () => {
  const net = new SimNetwork(new SeededRandom(1), NO_IMPAIRMENT);
  net.partition("127.0.1.1", "127.0.0.1", true);
  net.send(0, B, A, bytes(1));
  net.send(0, A, B, bytes(2));
  assertEquals(drain(net).map(id), [2]);
  assertEquals(net.stats.partitioned, 1);
});

Deno.test("SimNetwork.partition() matches an endpoint exactly and * matches everyone", () => {
  const net = new SimNetwork(new SeededRandom(1), NO_IMPAIRMENT);
  net.partition(A, B);
  assert(net.blocked(A, B) && !net.blocked(A_TCP, B));
  net.heal();
  net.partition("127.0.1.2", "*");
  assert(net.blocked(C, A) && net.blocked(B, C) && !net.blocked(A, B));
});

Deno.test("SimNetwork drops a datagram in flight when a partition cuts its path", () => {
  const net = new SimNetwork(new SeededRandom(1), {
    ...NO_IMPAIRMENT,
    minDelayMs: 50,
    maxDelayMs: 50,
  });
  net.send(0, A, B, bytes(1));
  net.send(0, A, C, bytes(2));
  net.partition("127.0.0.1", "127.0.1.1");
  assertEquals(drain(net).map(id), [2]);
  assertEquals(net.stats, {
    sent: 2,
    delivered: 1,
    lost: 1,
    duplicated: 0,
    reordered: 0,
    partitioned: 1,
    stalled: 0,
    queueDropped: 0,
    queued: 0,
    queueDelayMs: 0,
    maxQueueBytes: 0,
  });
});

Deno.test("SimNetwork.heal() removes one pair, one side's or every partition", () => {
  const net = new SimNetwork(new SeededRandom(1), NO_IMPAIRMENT);
  net.partition("127.0.0.1", "127.0.1.1");
  net.partition("127.0.0.1", "127.0.1.2", true);
  net.partition("127.0.1.1", "127.0.1.2");
  assertEquals(net.heal("127.0.1.1", "127.0.0.1"), 1); // either order
  assert(!net.blocked(A, B) && net.blocked(A, C) && net.blocked(B, C));
  assertEquals(net.heal("127.0.1.2"), 2);
  assertEquals(net.partitions.length, 0);
  net.partition("127.0.0.1", "127.0.1.1");
  net.partition("127.0.1.1", "127.0.1.2");
  assertEquals(net.heal(), 2);
  assert(!net.blocked(A, B) && !net.blocked(B, C));
});

Deno.test("SimNetwork streams wait across a partition and resume in order after heal", () => {
  const net = new SimNetwork(new SeededRandom(1), {
    ...NO_IMPAIRMENT,
    minDelayMs: 10,
    maxDelayMs: 10,
  });
  net.sendReliable(0, B, A_TCP, bytes(1));
  net.sendReliable(1, B, A_TCP, bytes(2));
  net.partition("127.0.1.1", "127.0.0.1");
  net.sendReliable(2, B, A_TCP, bytes(3));
  net.sendReliable(3, A_TCP, B, bytes(4));
  net.sendReliable(3, C, A_TCP, bytes(5));
  assertEquals(drain(net).map(id), [5]);
  assertEquals(net.stalled, 4);
  assertEquals(net.stats.lost, 0);
  net.heal(undefined, undefined, { now: 1000 });
  const after = drain(net);
  assertEquals(after.map(id), [1, 2, 3, 4]);
  assert(after.every((p) => p.deliverAt === 1010));
  assertEquals(net.stalled, 0);
  assertEquals(net.stats.stalled, 4);
  assertEquals(net.stats.delivered, 5);
});

Deno.test("SimNetwork.dropFor() drops stalled stream packets of a crashed host", () => {
  const net = new SimNetwork(new SeededRandom(1), NO_IMPAIRMENT);
  net.partition("127.0.1.1", "127.0.0.1");
  net.sendReliable(0, B, A_TCP, bytes(1));
  net.sendReliable(0, A_TCP, B, bytes(2));
  assertEquals(net.dropFor(A_TCP), 1);
  net.heal();
  assertEquals(drain(net).map(id), [2]);
  assertEquals(net.stats.lost, 1);
});

Deno.test("SimNetwork runs are identical for a seed, bursts and partitions included", () => {
  const run = (seed: number) => {
    const net = new SimNetwork(new SeededRandom(seed), {
      loss: 0.3,
      burst: 3,
      duplicate: 0.2,
      reorder: 0.2,
      minDelayMs: 1,
      maxDelayMs: 80,
    });
    const log: string[] = [];
    for (let t = 0; t < 3000; t++) {
      if (t === 1000) net.partition("127.0.1.1", "127.0.0.1", true);
      if (t === 2000) net.heal();
      net.send(t, B, A, bytes(t));
      net.send(t, A, B, bytes(t));
      if (t % 10 === 0) net.sendReliable(t, B, A_TCP, bytes(t));
      for (const p of net.deliverDue(t)) log.push(`${p.deliverAt.toFixed(3)} ${p.to} ${id(p)}`);
    }
    log.push(...drain(net).map((p) => `${p.deliverAt.toFixed(3)} ${p.to} ${id(p)}`));
    return { log, stats: { ...net.stats } };
  };
  const first = run(42);
  assertEquals(run(42), first);
  assert(JSON.stringify(run(43)) !== JSON.stringify(first));
  assert(first.stats.partitioned > 0 && first.stats.duplicated > 0);
});

// ---------------------------------------------------------------------------
// The bottleneck: a link rate behind a drop-tail queue

Deno.test("SimNetwork bottleneck adds queueing delay behind earlier datagrams", () => {
  // 1,000,000 bytes a second: 1,000 bytes take 1 ms on the link; 10 ms of delay after it.
  const net = new SimNetwork(new SeededRandom(1), {
    ...NO_IMPAIRMENT,
    minDelayMs: 10,
    maxDelayMs: 10,
    rate: 1_000_000,
  });
  for (let i = 0; i < 5; i++) net.send(0, A, B, new Uint8Array(1000).fill(i));
  assertEquals(net.queueBytes(0), 5000);
  assertEquals(net.queueBytes(2.5), 2500);
  const arrivals = drain(net).map((p) => p.deliverAt);
  assertEquals(arrivals, [11, 12, 13, 14, 15]);
  assertEquals(net.stats.queued, 5);
  assertEquals(net.stats.queueDelayMs, 0 + 1 + 2 + 3 + 4);
  assertEquals(net.stats.maxQueueBytes, 5000);
  // An idle link sends at once again.
  net.send(100, A, B, new Uint8Array(1000));
  assertEquals(net.nextDelivery(), 111);
});

Deno.test("SimNetwork bottleneck drops at the tail of a full queue, drawing nothing", () => {
  const impairment: Impairment = { ...NO_IMPAIRMENT, rate: 1_000_000, queue: 3000 };
  const net = new SimNetwork(new SeededRandom(1), impairment);
  for (let i = 0; i < 5; i++) net.send(0, A, B, new Uint8Array(1000).fill(i));
  assertEquals(net.stats.queueDropped, 2);
  assertEquals(net.stats.lost, 2);
  assertEquals(drain(net).map((p) => p.data[0]), [0, 1, 2], "the first three, in order");
  // The queue draws nothing: the loss draws of later datagrams are the same as without it.
  const lossy = { ...impairment, loss: 0.5 };
  const a = new SimNetwork(new SeededRandom(9), lossy);
  const b = new SimNetwork(new SeededRandom(9), { ...lossy, queue: undefined });
  for (let i = 0; i < 5; i++) a.send(0, A, B, new Uint8Array(1000));
  for (let i = 0; i < 3; i++) b.send(0, A, B, new Uint8Array(1000));
  for (let i = 0; i < 200; i++) {
    a.send(1000 + 10 * i, A, B, bytes(i));
    b.send(1000 + 10 * i, A, B, bytes(i));
  }
  assertEquals(drain(a).map(id).slice(-100), drain(b).map(id).slice(-100));
});

Deno.test("SimNetwork bottleneck holds its rate under overload, lost datagrams included", () => {
  // Offered 2 MB/s into a 1 MB/s link for 2 s, 10% random loss after the link.
  const net = new SimNetwork(new SeededRandom(3), {
    ...NO_IMPAIRMENT,
    loss: 0.1,
    rate: 1_000_000,
    queue: 20_000,
  });
  let delivered = 0;
  for (let t = 0; t < 2000; t += 0.5) {
    net.send(t, A, B, new Uint8Array(1000));
    for (const p of net.deliverDue(t)) delivered += p.data.length;
  }
  for (const p of drain(net)) {
    if (p.deliverAt <= 2001) delivered += p.data.length;
  }
  // The link moves 1,000 datagrams a second; 10% of them are lost on the way.
  assertAlmostEquals(delivered / 2, 900_000, 30_000);
  assert(net.stats.queueDropped > 1800, `${net.stats.queueDropped} dropped by the queue`);
  assert(net.stats.maxQueueBytes <= 20_000);
});

Deno.test("SimNetwork bottleneck links: shared by default, separate by linkOf", () => {
  const shared = new SimNetwork(new SeededRandom(1), { ...NO_IMPAIRMENT, rate: 1_000_000 });
  shared.send(0, A, B, new Uint8Array(1000));
  shared.send(0, B, A, new Uint8Array(1000));
  assertEquals(drain(shared).map((p) => p.deliverAt), [2, 3], "one half-duplex link");
  const split = new SimNetwork(new SeededRandom(1), { ...NO_IMPAIRMENT, rate: 1_000_000 }, {
    linkOf: (_from, to) => to,
  });
  split.send(0, A, B, new Uint8Array(1000));
  split.send(0, B, A, new Uint8Array(1000));
  assertEquals(drain(split).map((p) => p.deliverAt), [2, 2], "one link each way");
});

Deno.test("impairmentProblem() rejects a bad rate or queue", () => {
  assertEquals(impairmentProblem({ ...NO_IMPAIRMENT, rate: 1e6, queue: 1e4 }), undefined);
  assertMatch(impairmentProblem({ ...NO_IMPAIRMENT, rate: -1 })!, /link rate/);
  assertMatch(impairmentProblem({ ...NO_IMPAIRMENT, rate: Infinity })!, /link rate/);
  assertMatch(impairmentProblem({ ...NO_IMPAIRMENT, rate: 1e6, queue: 0 })!, /queue/);
});
