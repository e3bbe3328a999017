/**
 * Bulk flows of real {@linkcode ReliableChannel}s through one simulated
 * bottleneck ({@linkcode SimNetwork} with a link rate and a drop-tail
 * queue), on a virtual clock: deterministic for a seed, so the tests can
 * assert goodput, fairness and queue figures.
 *
 * @module
 */
import { SeededRandom } from "../lib/random.ts";
import {
  type CongestionChoice,
  ReliableChannel,
  type ReliableChannelOptions,
} from "../lib/reliable/reliable_channel.ts";
import type { Segment } from "../lib/reliable/segment.ts";
import { type Impairment, NO_IMPAIRMENT, SimNetwork } from "../lib/sim/sim_network.ts";

/** One bulk flow. */
export interface FlowSpec {
  /** When it starts sending, ms. Default 0. */
  startMs?: number;
  /** Bytes it sends. Default: as many as it can until the run ends. */
  bytes?: number;
  /** Its controller. Default `"bbr"`. */
  congestion?: CongestionChoice;
  /**
   * Also send an urgent 64-byte chat message every this many ms, from its
   * start until its last bulk byte arrives; a flow with chat and a size is
   * finished once every chat message arrived too.
   */
  chatEveryMs?: number;
}

/** The bottleneck and the flows through it. */
export interface BottleneckRun {
  /** Link rate, bytes a second. */
  rate: number;
  /** Drop-tail queue, bytes. */
  queue: number;
  /** One-way delay after the link, ms. */
  delayMs: number;
  /** Random loss, each way. Default 0. */
  loss?: number;
  /** Mean loss burst, packets. Default 1 (independent). */
  burst?: number;
  /**
   * Each datagram's one-way delay is drawn from `delayMs` ± this many ms
   * (uniform, never below 0), after the link: later datagrams overtake
   * earlier ones, as with netem's jitter. Default 0.
   */
  jitterMs?: number;
  /** Probability that a datagram is held back so later ones overtake it (the simulator's `reorder`). Default 0. */
  reorder?: number;
  /** The flows. */
  flows: FlowSpec[];
  /** Stop at this virtual time, ms. */
  untilMs: number;
  /** Seed of the loss draws. Default 1. */
  seed?: number;
  /** Sample each flow's delivered bytes every this many ms. Default 100. */
  sampleMs?: number;
  /** Extra channel options of both ends of every flow. */
  channel?: ReliableChannelOptions;
  /** A loaded host's stalls and late timers at every end (default: none, a perfect host). */
  host?: HostNoise;
}

/**
 * What a loaded host does to a process the simulator otherwise runs on
 * time: its timers fire late, and now and then it is descheduled (or
 * collecting garbage) for a while, during which it neither sends nor reads
 * and the datagrams sent to it wait in its socket's receive buffer, the
 * ones beyond it dropped. Drawn from its own seeded source, so a run stays
 * reproducible and the loss draws are the same as without it.
 */
export interface HostNoise {
  /** Each timer fires up to this many ms late (uniform). */
  timerLateMs: number;
  /** Mean time between stalls of one process, ms (exponential). */
  stallEveryMs: number;
  /** Mean length of a stall, ms (exponential, at most 10 times the mean). */
  stallMs: number;
  /** Datagrams a socket holds while its process stalls; later ones are dropped (Linux: about 90). */
  socketDatagrams: number;
}

/** What one flow did. */
export interface FlowResult {
  /** Bytes delivered to the receiving application. */
  delivered: number;
  /** Delivered bytes at each sample time (index i: time (i + 1) x sampleMs). */
  timeline: number[];
  /** When its last byte arrived, ms (undefined if it had no size or did not finish). */
  finishedMs: number | undefined;
  /** The sender's channel, for its stats. */
  sender: ReliableChannel;
  /** Chat messages sent (`chatEveryMs`). */
  chatsSent: number;
  /** Each delivered chat message's time from `send` to delivery, ms, in order of delivery. */
  chatDelaysMs: number[];
}

/** What the run measured. */
export interface BottleneckResult {
  flows: FlowResult[];
  /** The network's counters (queue drops, queueing delay). */
  network: SimNetwork["stats"];
  /** Bytes in the queue at each sample time. */
  queueSamples: number[];
  /** Virtual time at the end, ms. */
  endMs: number;
  /** Datagrams dropped by full socket buffers of stalled processes ({@linkcode HostNoise}). */
  socketDropped: number;
}

/**
 * One end of a flow as a process: on a perfect host it runs each timeout
 * when due and each datagram when it arrives; with {@linkcode HostNoise}
 * its timer fires late (early timers stay armed, as the client driver's
 * do) and it stalls now and then.
 */
class Process {
  inbox: Segment[] = [];
  #stalledUntil = -Infinity;
  #nextStallAt = Infinity;
  #armedFor: number | undefined;
  #fireAt = Infinity;

  constructor(
    readonly channel: ReliableChannel,
    readonly noise: HostNoise | undefined,
    readonly random: SeededRandom,
  ) {
    if (noise) this.#nextStallAt = this.#exponential(noise.stallEveryMs);
  }

  /** True unless it is stalled at `now`. */
  awake(now: number): boolean {
    while (now >= this.#nextStallAt) {
      const { stallMs, stallEveryMs } = this.noise!;
      this.#stalledUntil = this.#nextStallAt +
        Math.min(this.#exponential(stallMs), 10 * stallMs);
      this.#nextStallAt = this.#stalledUntil + this.#exponential(stallEveryMs);
    }
    return now >= this.#stalledUntil;
  }

  /** When it next runs: `now` if awake, else the end of its stall. */
  awakeAt(now: number): number {
    return this.awake(now) ? now : this.#stalledUntil;
  }

  /** When it next runs by itself: its timer, or the end of a stall with datagrams waiting. */
  nextWake(): number {
    const at = this.channel.nextTimeout();
    if (!this.noise) return at ?? Infinity;
    if (at !== undefined && (this.#armedFor === undefined || at < this.#armedFor)) {
      this.#armedFor = at;
      this.#fireAt = at + this.random.next() * this.noise.timerLateMs;
    }
    const wake = this.inbox.length > 0 ? this.#stalledUntil : this.#fireAt;
    return Math.max(wake, this.#stalledUntil);
  }

  /** Takes a datagram: at once, or into the socket's buffer while stalled (dropped when full). */
  deliver(now: number, segment: Segment): boolean {
    if (this.awake(now)) {
      this.channel.receive(now, segment);
      return true;
    }
    if (this.inbox.length >= this.noise!.socketDatagrams) return false;
    this.inbox.push(segment);
    return true;
  }

  /** Runs what is due at `now`: the datagrams that waited out a stall, then the timer. */
  run(now: number): void {
    if (!this.awake(now)) return;
    for (const segment of this.inbox) this.channel.receive(now, segment);
    this.inbox = [];
    if (!this.noise) {
      if ((this.channel.nextTimeout() ?? Infinity) <= now) this.channel.onTimeout(now);
    } else if (now >= this.#fireAt) {
      this.#armedFor = undefined;
      this.#fireAt = Infinity;
      this.channel.onTimeout(now);
    }
  }

  #exponential(mean: number): number {
    return -mean * Math.log(1 - this.random.next());
  }
}

/** Wire size of a segment, bytes: about what the codec and the sealing add. */
function wireBytes(segment: Segment): number {
  switch (segment.kind) {
    case "data":
      return segment.payload.length + 40;
    case "ack":
      return 36 + 8 * segment.ranges.length;
    case "keepalive":
      return 30;
  }
}

/** Bytes of one bulk message: a file chunk's 32 KiB, as `sendfile` sends. */
const MESSAGE_BYTES = 32 * 1024;
/** Bytes of one chat message; bulk messages are larger, so a delivery's size tells them apart. */
const CHAT_BYTES = 64;

/**
 * Runs the flows and reports per-flow goodput over time.
 *
 * @param spec the bottleneck and the flows
 * @returns the figures
 */
export function runBottleneck(spec: BottleneckRun): BottleneckResult {
  const impairment: Impairment = {
    ...NO_IMPAIRMENT,
    loss: spec.loss ?? 0,
    ...(spec.burst !== undefined ? { burst: spec.burst } : {}),
    minDelayMs: Math.max(0, spec.delayMs - (spec.jitterMs ?? 0)),
    maxDelayMs: spec.delayMs + (spec.jitterMs ?? 0),
    reorder: spec.reorder ?? 0,
    rate: spec.rate,
    queue: spec.queue,
  };
  const net = new SimNetwork(new SeededRandom(spec.seed ?? 1), impairment);
  // Its own source: the loss draws stay those of a run on a perfect host.
  const hostRandom = new SeededRandom((spec.seed ?? 1) + 1_000_003);
  let socketDropped = 0;
  const sampleMs = spec.sampleMs ?? 100;
  const message = new Uint8Array(MESSAGE_BYTES);
  const flows = spec.flows.map((flow, i) => {
    const options = { ...spec.channel, congestion: flow.congestion ?? "bbr" };
    return {
      spec: flow,
      from: `10.0.0.${i + 1}:1000`,
      to: `10.0.1.${i + 1}:2000`,
      sender: new Process(new ReliableChannel(0, options), spec.host, hostRandom),
      receiver: new Process(new ReliableChannel(0, options), spec.host, hostRandom),
      queued: 0,
      started: false,
      nextChatMs: flow.chatEveryMs === undefined ? Infinity : flow.startMs ?? 0,
      chatSentAt: [] as number[],
      result: {
        delivered: 0,
        timeline: [] as number[],
        finishedMs: undefined as number | undefined,
        chatDelaysMs: [] as number[],
      },
    };
  });
  const byAddress = new Map<string, Process>();
  for (const flow of flows) {
    byAddress.set(flow.to, flow.receiver);
    byAddress.set(flow.from, flow.sender);
  }
  const queueSamples: number[] = [];
  let now = 0;
  let nextSample = sampleMs;

  const feed = (flow: (typeof flows)[number]) => {
    if (!flow.started || !flow.sender.awake(now)) return;
    const sender = flow.sender.channel;
    const chatting = flow.result.finishedMs === undefined && sender.deadReason === undefined;
    if (now >= flow.nextChatMs && chatting) {
      sender.send(now, new Uint8Array(CHAT_BYTES), { urgent: true });
      flow.chatSentAt.push(now);
      flow.nextChatMs += flow.spec.chatEveryMs!;
    }
    const size = flow.spec.bytes ?? Infinity;
    // As sendfile does: keep about twice the window queued, no more.
    const limit = 2 * sender.congestionWindow + 40;
    while (flow.queued < size && sender.backlog < limit) {
      const bytes = Math.min(MESSAGE_BYTES, size - flow.queued);
      sender.send(now, bytes === MESSAGE_BYTES ? message : message.subarray(0, bytes));
      flow.queued += bytes;
    }
  };
  const pump = (flow: (typeof flows)[number]) => {
    const sender = flow.sender.channel, receiver = flow.receiver.channel;
    for (let out = sender.poll(); out; out = sender.poll()) {
      if (out.type === "segment") net.send(now, flow.from, flow.to, encode(out.segment));
    }
    for (let out = receiver.poll(); out; out = receiver.poll()) {
      if (out.type === "segment") net.send(now, flow.to, flow.from, encode(out.segment));
      if (out.type === "deliver" && out.message.length === CHAT_BYTES) {
        const sentAt = flow.chatSentAt[flow.result.chatDelaysMs.length];
        flow.result.chatDelaysMs.push(now - sentAt);
      } else if (out.type === "deliver") {
        flow.result.delivered += out.message.length;
        if (flow.result.delivered === flow.spec.bytes) flow.result.finishedMs = now;
      }
    }
  };
  // The network carries sizes only; the segments ride beside them.
  const carried = new Map<Uint8Array, Segment>();
  const encode = (segment: Segment) => {
    const bytes = new Uint8Array(wireBytes(segment));
    carried.set(bytes, segment);
    return bytes;
  };

  while (now < spec.untilMs) {
    let next = Math.min(net.nextDelivery() ?? Infinity, nextSample);
    for (const flow of flows) {
      if (!flow.started) next = Math.min(next, flow.spec.startMs ?? 0);
      // A chat message due while the sender stalls is sent when the stall ends.
      if (flow.result.finishedMs === undefined) {
        next = Math.min(next, Math.max(flow.nextChatMs, flow.sender.awakeAt(now)));
      }
      next = Math.min(next, flow.sender.nextWake(), flow.receiver.nextWake());
    }
    now = Math.max(now, next);
    for (const packet of net.deliverDue(now)) {
      const segment = carried.get(packet.data)!;
      carried.delete(packet.data);
      const to = byAddress.get(packet.to);
      if (to !== undefined && !to.deliver(now, segment)) socketDropped++;
    }
    for (const flow of flows) {
      if (!flow.started && now >= (flow.spec.startMs ?? 0)) flow.started = true;
      flow.sender.run(now);
      flow.receiver.run(now);
      feed(flow);
      pump(flow);
    }
    if (now >= nextSample) {
      for (const flow of flows) flow.result.timeline.push(flow.result.delivered);
      queueSamples.push(net.queueBytes(now));
      nextSample += sampleMs;
    }
    const done = (f: (typeof flows)[number]) =>
      f.spec.bytes !== undefined && f.result.finishedMs !== undefined &&
      f.result.chatDelaysMs.length === f.chatSentAt.length;
    if (flows.every(done)) break;
    if (flows.every((f) => f.sender.channel.deadReason !== undefined)) break;
  }
  return {
    flows: flows.map((f) => ({
      ...f.result,
      sender: f.sender.channel,
      chatsSent: f.chatSentAt.length,
    })),
    network: { ...net.stats },
    queueSamples,
    endMs: now,
    socketDropped,
  };
}

/** Goodput of a flow between two sample indexes, bytes a second. */
export function goodputBetween(
  flow: FlowResult,
  sampleMs: number,
  from: number,
  to: number,
): number {
  const before = from === 0 ? 0 : flow.timeline[from - 1];
  return (flow.timeline[to - 1] - before) / ((to - from) * sampleMs / 1000);
}
