/**
 * The latency test of KCP (skywind3000/kcp, `test.cpp`), replayed on two
 * {@linkcode ReliableChannel}s with a virtual clock, so our engine can be
 * compared with KCP's published figures.
 *
 * @module
 */
import { SeededRandom } from "../lib/random.ts";
import { ReliableChannel, type ReliableChannelOptions } from "../lib/reliable/reliable_channel.ts";
import type { Segment } from "../lib/reliable/segment.ts";

/** The conditions of the KCP test; the defaults are KCP's. */
export interface KcpScenarioOptions {
  /** Messages A sends. Default 1000. */
  messages?: number;
  /** Interval between two messages from A, ms. Default 20. */
  intervalMs?: number;
  /** Probability that a packet is lost, per direction. Default 0.05. */
  loss?: number;
  /** Fixed part of the one-way delay, ms. Default 30. */
  baseDelayMs?: number;
  /** The one-way delay gets a uniform extra integer from 0 to `jitterMs - 1`, ms. Default 32. */
  jitterMs?: number;
  /** Options of both channels. Default: the channel's defaults. */
  channel?: ReliableChannelOptions;
  /** Give up after this much virtual time, ms. Default 3,600,000 (one hour). */
  limitMs?: number;
}

/** What a run of the scenario measured. */
export interface KcpScenarioResult {
  /** The seed of the run. */
  seed: number;
  /** Round-trip time of each message, ms, in message order (only those that returned). */
  rtts: number[];
  /** Mean round-trip time, ms. */
  averageRttMs: number;
  /** Largest round-trip time, ms. */
  maxRttMs: number;
  /** Virtual time the run took, ms. */
  durationMs: number;
  /** Packets A and B handed to the link. */
  packets: number;
  /** Retransmissions by A and B together. */
  retransmissions: number;
  /** Why a channel died, when one did. */
  dead: string | undefined;
}

interface InFlight {
  at: number;
  segment: Segment;
}

/** One direction of KCP's LatencySimulator: loss, delay, and first in, first out. */
class FifoLink {
  #queue: InFlight[] = [];
  #head = 0;
  #lastDelivery = 0;
  #random: SeededRandom;
  #options: Required<KcpScenarioOptions>;
  packets = 0;

  constructor(random: SeededRandom, options: Required<KcpScenarioOptions>) {
    this.#random = random;
    this.#options = options;
  }

  send(now: number, segment: Segment): void {
    this.packets++;
    if (this.#random.next() < this.#options.loss) return;
    const delay = this.#options.baseDelayMs +
      Math.floor(this.#random.next() * this.#options.jitterMs);
    // No reordering: a packet never overtakes the one sent before it.
    this.#lastDelivery = Math.max(now + delay, this.#lastDelivery);
    this.#queue.push({ at: this.#lastDelivery, segment });
  }

  nextDelivery(): number | undefined {
    return this.#queue[this.#head]?.at;
  }

  takeDue(now: number): Segment[] {
    const due: Segment[] = [];
    while (this.#head < this.#queue.length && this.#queue[this.#head].at <= now) {
      due.push(this.#queue[this.#head++].segment);
    }
    if (this.#head > 4096) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    return due;
  }
}

/**
 * Runs KCP's test: A sends an 8-byte message (index and send time) every
 * 20 ms, B echoes each one back over the same channel, and the round-trip
 * time of a message is the time from A sending it to A receiving its echo.
 * Each direction loses 5% of packets and delays each by 30 ms plus a uniform
 * 0 to 31 ms, without reordering. Deterministic for a seed.
 *
 * @param seed seed of the loss and delay draws
 * @param options the conditions and the channels' options
 * @returns the round-trip times and a summary
 *
 * @example
 * ```ts
 * const result = runKcpScenario(1, { channel: LOW_LATENCY_CHANNEL_OPTIONS });
 * result.averageRttMs; // 100.6 (153.4 with the default options)
 * result.maxRttMs; // 203
 * ```
 */
export function runKcpScenario(seed: number, options: KcpScenarioOptions = {}): KcpScenarioResult {
  const o: Required<KcpScenarioOptions> = {
    messages: 1000,
    intervalMs: 20,
    loss: 0.05,
    baseDelayMs: 30,
    jitterMs: 32,
    channel: {},
    limitMs: 3_600_000,
    ...options,
  };
  const random = new SeededRandom(seed);
  const toB = new FifoLink(random, o);
  const toA = new FifoLink(random, o);
  const a = new ReliableChannel(0, o.channel);
  const b = new ReliableChannel(0, o.channel);
  const rtts = new Array<number>(o.messages);
  let sent = 0, returned = 0, now = 0;
  let dead: string | undefined;

  const drain = (channel: ReliableChannel, link: FifoLink, onMessage: (m: Uint8Array) => void) => {
    for (let out = channel.poll(); out !== undefined; out = channel.poll()) {
      if (out.type === "segment") link.send(now, out.segment);
      else if (out.type === "deliver") onMessage(out.message);
      else if (out.type === "dead") dead ??= out.reason;
    }
  };
  const echo = (message: Uint8Array) => void b.send(now, message);
  const record = (message: Uint8Array) => {
    const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
    rtts[view.getUint32(0)] = now - view.getUint32(4);
    returned++;
  };

  while (returned < o.messages && dead === undefined && now <= o.limitMs) {
    now = Math.min(
      sent < o.messages ? sent * o.intervalMs : Infinity,
      toB.nextDelivery() ?? Infinity,
      toA.nextDelivery() ?? Infinity,
      a.nextTimeout() ?? Infinity,
      b.nextTimeout() ?? Infinity,
    );
    if (sent < o.messages && sent * o.intervalMs <= now) {
      const message = new Uint8Array(8);
      new DataView(message.buffer).setUint32(0, sent);
      new DataView(message.buffer).setUint32(4, now);
      a.send(now, message);
      sent++;
    }
    for (const segment of toB.takeDue(now)) b.receive(now, segment);
    for (const segment of toA.takeDue(now)) a.receive(now, segment);
    if ((a.nextTimeout() ?? Infinity) <= now) a.onTimeout(now);
    if ((b.nextTimeout() ?? Infinity) <= now) b.onTimeout(now);
    drain(a, toB, record);
    drain(b, toA, echo);
    drain(a, toB, record);
  }

  const measured = rtts.filter((rtt) => rtt !== undefined);
  const sa = a.stats, sb = b.stats;
  return {
    seed,
    rtts: measured,
    averageRttMs: measured.reduce((sum, rtt) => sum + rtt, 0) / measured.length,
    maxRttMs: Math.max(...measured),
    durationMs: now,
    packets: toA.packets + toB.packets,
    retransmissions: sa.timeoutRetransmissions + sa.fastRetransmissions +
      sb.timeoutRetransmissions +
      sb.fastRetransmissions,
    dead,
  };
}
