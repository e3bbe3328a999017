/**
 * Two channels over the project's simulated network (loss, duplication,
 * reordering, delay) on a virtual clock: every message arrives exactly once,
 * whole and in order, in both directions. A failure prints the generated
 * case; fast-check's seed is fixed so runs are deterministic.
 */
import { assert, assertEquals } from "@std/assert";
import fc from "fast-check";
import { SeededRandom } from "../lib/random.ts";
import {
  LOW_LATENCY_CHANNEL_OPTIONS,
  ReliableChannel,
  type ReliableChannelOptions,
} from "../lib/reliable/reliable_channel.ts";
import type { Segment } from "../lib/reliable/segment.ts";
import { type Impairment, SimNetwork } from "../lib/sim/sim_network.ts";

const A = "10.0.0.1:4000";
const B = "10.0.0.2:4000";

interface Case {
  seed: number;
  impairment: Impairment;
  /** Sizes of the messages each side sends and the gap before each, ms. */
  fromA: { size: number; gapMs: number }[];
  fromB: { size: number; gapMs: number }[];
}

interface Outcome {
  sentByA: Uint8Array[];
  sentByB: Uint8Array[];
  atA: Uint8Array[];
  atB: Uint8Array[];
  a: ReliableChannel;
  b: ReliableChannel;
  end: number;
}

/**
 * Runs a case to the end: all messages sent, both channels idle and nothing
 * in flight (late duplicates included), or a channel dead, or the limit.
 * The network carries a 4-byte handle to the segment, not an encoding: the
 * wire codec is tested on its own.
 */
function runCase(c: Case, options: ReliableChannelOptions, limitMs = 3_600_000): Outcome {
  const random = new SeededRandom(c.seed);
  const net = new SimNetwork(random, c.impairment);
  const segments: Segment[] = [];
  const a = new ReliableChannel(0, options), b = new ReliableChannel(0, options);
  const ends = [
    { channel: a, address: A, peer: B, plan: c.fromA, next: 0, at: 0, sent: [] as Uint8Array[] },
    { channel: b, address: B, peer: A, plan: c.fromB, next: 0, at: 0, sent: [] as Uint8Array[] },
  ];
  for (const end of ends) end.at = end.plan[0]?.gapMs ?? Infinity;
  const inbox = new Map<ReliableChannel, Uint8Array[]>([[a, []], [b, []]]);
  let now = 0;

  const flush = () => {
    for (const end of ends) {
      for (let out = end.channel.poll(); out !== undefined; out = end.channel.poll()) {
        if (out.type === "segment") {
          const handle = new Uint8Array(new Uint32Array([segments.push(out.segment) - 1]).buffer);
          net.send(now, end.address, end.peer, handle);
        } else if (out.type === "deliver") {
          inbox.get(end.channel)!.push(out.message);
        }
      }
    }
  };
  const finished = () =>
    ends.every((end) => end.next === end.plan.length && end.channel.idle) && net.inFlight === 0;

  while (!finished() && now < limitMs && !a.deadReason && !b.deadReason) {
    now = Math.min(
      ...ends.map((end) => end.at),
      net.nextDelivery() ?? Infinity,
      a.nextTimeout() ?? Infinity,
      b.nextTimeout() ?? Infinity,
    );
    for (const end of ends) {
      while (end.at <= now) {
        const { size } = end.plan[end.next];
        const message = random.bytes(size);
        end.sent.push(message);
        end.channel.send(now, message);
        end.next++;
        end.at = end.next < end.plan.length ? now + end.plan[end.next].gapMs : Infinity;
      }
    }
    for (const packet of net.deliverDue(now)) {
      const segment = segments[new Uint32Array(packet.data.slice().buffer)[0]];
      (packet.to === A ? a : b).receive(now, segment);
    }
    for (const channel of [a, b]) {
      if ((channel.nextTimeout() ?? Infinity) <= now) channel.onTimeout(now);
    }
    flush();
  }
  return {
    sentByA: ends[0].sent,
    sentByB: ends[1].sent,
    atA: inbox.get(a)!,
    atB: inbox.get(b)!,
    a,
    b,
    end: now,
  };
}

function assertExactlyOnceInOrder(c: Case, outcome: Outcome): void {
  const label = `case ${JSON.stringify(c)}`;
  assertEquals(outcome.a.deadReason, undefined, label);
  assertEquals(outcome.b.deadReason, undefined, label);
  assertEquals(outcome.atB.length, outcome.sentByA.length, `A to B count, ${label}`);
  assertEquals(outcome.atA.length, outcome.sentByB.length, `B to A count, ${label}`);
  assertEquals(outcome.atB, outcome.sentByA, `A to B content, ${label}`);
  assertEquals(outcome.atA, outcome.sentByB, `B to A content, ${label}`);
  assert(outcome.a.idle && outcome.b.idle, label);
}

const sizeArb = fc.oneof(
  fc.integer({ min: 0, max: 64 }),
  fc.constantFrom(1099, 1100, 1101, 2200, 2201),
  fc.integer({ min: 0, max: 8000 }),
);
const planArb = fc.array(
  fc.record({ size: sizeArb, gapMs: fc.integer({ min: 0, max: 300 }) }),
  { maxLength: 25 },
);
const caseArb = (maxLoss: number, maxDuplicate: number, maxReorder: number) =>
  fc.record({
    seed: fc.integer({ min: 0, max: 0xffff_ffff }),
    impairment: fc.record({
      loss: fc.double({ min: 0, max: maxLoss, noNaN: true }),
      duplicate: fc.double({ min: 0, max: maxDuplicate, noNaN: true }),
      reorder: fc.double({ min: 0, max: maxReorder, noNaN: true }),
      minDelayMs: fc.integer({ min: 1, max: 40 }),
      maxDelayMs: fc.integer({ min: 40, max: 150 }),
    }),
    fromA: planArb,
    fromB: planArb,
  });

Deno.test("ReliableChannel delivers exactly once and in order over an impaired network", async (t) => {
  await t.step("default options, up to 30% loss, 20% duplication, 30% reordering", () => {
    fc.assert(
      fc.property(caseArb(0.3, 0.2, 0.3), (c) => {
        assertExactlyOnceInOrder(c, runCase(c, {}));
      }),
      { seed: 20240611, numRuns: 150 },
    );
  });

  await t.step("low-latency preset, same impairments", () => {
    fc.assert(
      fc.property(caseArb(0.3, 0.2, 0.3), (c) => {
        assertExactlyOnceInOrder(c, runCase(c, LOW_LATENCY_CHANNEL_OPTIONS));
      }),
      { seed: 7, numRuns: 80 },
    );
  });

  await t.step("small windows: the windows bind and still nothing is lost", () => {
    fc.assert(
      fc.property(caseArb(0.2, 0.1, 0.2), (c) => {
        const outcome = runCase(c, { sendWindow: 3, receiveWindow: 2, maxSackRanges: 1 });
        assertExactlyOnceInOrder(c, outcome);
      }),
      { seed: 99, numRuns: 60 },
    );
  });

  await t.step("stop-and-wait mode, up to 20% loss", () => {
    fc.assert(
      fc.property(caseArb(0.2, 0.2, 0.3), (c) => {
        assertExactlyOnceInOrder(c, runCase(c, { mode: "stop_and_wait", deadAfterMs: 1e9 }));
      }),
      { seed: 3, numRuns: 30 },
    );
  });
});

Deno.test("ReliableChannel recovers losses far faster than stop-and-wait", () => {
  const c: Case = {
    seed: 5,
    impairment: { loss: 0.1, duplicate: 0.05, reorder: 0.05, minDelayMs: 20, maxDelayMs: 60 },
    fromA: Array.from({ length: 40 }, (_, i) => ({ size: 1500, gapMs: i === 0 ? 0 : 10 })),
    fromB: [],
  };
  const selective = runCase(c, {});
  const stopAndWait = runCase(c, { mode: "stop_and_wait", deadAfterMs: 1e9 });
  assertExactlyOnceInOrder(c, selective);
  assertExactlyOnceInOrder(c, stopAndWait);
  assert(selective.a.stats.timeoutRetransmissions + selective.a.stats.fastRetransmissions > 0);
  assert(
    stopAndWait.end > 20 * selective.end,
    `stop-and-wait ${stopAndWait.end} ms, selective ${selective.end} ms`,
  );
});

Deno.test("ReliableChannel runs are reproducible from the seed", () => {
  const c: Case = {
    seed: 11,
    impairment: { loss: 0.2, duplicate: 0.1, reorder: 0.2, minDelayMs: 5, maxDelayMs: 80 },
    fromA: Array.from({ length: 20 }, (_, i) => ({ size: 300 * i, gapMs: 15 })),
    fromB: Array.from({ length: 10 }, (_, i) => ({ size: 50 * i, gapMs: 40 })),
  };
  const first = runCase(c, {}), second = runCase(c, {});
  assertEquals(first.end, second.end);
  assertEquals(first.a.stats, second.a.stats);
  assertEquals(first.b.stats, second.b.stats);
});
