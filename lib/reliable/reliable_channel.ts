/**
 * A sans-I/O reliable, ordered, de-duplicated message channel between two
 * peers over an unreliable datagram path.
 *
 * The state machine ties together parts that live beside it: its options
 * (channel_options.ts), buffers, loss detector, RTT estimator, congestion
 * controllers, pacer and delivery rate sampler.
 *
 * @module
 */
import { BBR_RANDOM_LOSS_RTT_FACTOR, BbrControl } from "./bbr_control.ts";
import {
  BULK_DUP_THRESH,
  type ReliableChannelOptions,
  resolveChannelOptions,
  type ResolvedChannelOptions,
  THIN_STREAM_BYTES,
} from "./channel_options.ts";
import { CongestionControl, type CongestionController } from "./congestion_control.ts";
import { DeliveryRateSampler } from "./delivery_rate_sampler.ts";
import { LossDetector } from "./loss_detector.ts";
import { ReceiveBuffer } from "./receive_buffer.ts";
import { RttEstimator } from "./rtt_estimator.ts";
import {
  type AckSegment,
  type DataSegment,
  MAX_MESSAGE_BYTES,
  MAX_SEGMENT_PAYLOAD,
  type SackRange,
  type Segment,
  validateSegment,
} from "./segment.ts";
import { type OutgoingSegment, SendBuffer } from "./send_buffer.ts";
import { type SendLimit, type SendLimitedMs, SendLimits } from "./send_limits.ts";

export {
  BULK_DUP_THRESH,
  type ChannelMode,
  type CongestionChoice,
  DEFAULT_CHANNEL_OPTIONS,
  LOW_LATENCY_CHANNEL_OPTIONS,
  type ReliableChannelOptions,
  type ResolvedChannelOptions,
  THIN_STREAM_BYTES,
} from "./channel_options.ts";

/** How long one window of the recent smallest RTT lasts, ms (BBR's min RTT filter: 10 s). */
const MIN_RTT_WINDOW_MS = 10_000;

/**
 * Probes a live channel sends, at least, in one `deadAfterMs` of silence
 * before it declares the peer dead: the backed-off RTO is capped at
 * `deadAfterMs / PROBES_BEFORE_DEATH`, never below the RTO without backoff
 * (a channel starts once a handshake proved the path, so its first flight
 * gets the same cap).
 * Exponential backoff alone sends 7 probes in 20 s, and a burst of loss
 * (which ends after so many packets, not after so much time) could outlast
 * all of them; see DECISIONS.md, "Bursts of loss".
 */
export const PROBES_BEFORE_DEATH = 80;

/**
 * At the end of what there is to send, the first timeout (which only
 * probes) comes this many SRTTs, plus the peer's ack delay, after the last
 * acknowledgement of new data or the last new segment, if the RTO has not
 * come first: RFC 8985 section 7.2's tail loss probe. Its RTO runs from the
 * oldest segment's transmission and is at least `minRtoMs` (200 ms), five
 * round trips of a 40 ms path, which a lost retransmission of the last
 * flight waited out.
 */
export const TAIL_PROBE_SRTTS = 2;

/** What a channel asks its driver to do, from {@linkcode ReliableChannel.poll}. */
export type ChannelOutput =
  /** Send this segment to the peer. */
  | { readonly type: "segment"; readonly segment: Segment }
  /** A whole message arrived, in order, exactly once. */
  | { readonly type: "deliver"; readonly message: Uint8Array }
  /** Every fragment of the message with this id (from `send`) reached the peer. */
  | { readonly type: "acked"; readonly id: number }
  /** The channel gave up: the peer is gone or unreachable. Reported once; the channel is stopped. */
  | { readonly type: "dead"; readonly reason: string };

/** Counters and estimates of a channel. */
export interface ChannelStats {
  /** Messages accepted by `send`. */
  messagesSent: number;
  /** Messages handed to the application. */
  messagesDelivered: number;
  /** Messages fully acknowledged by the peer. */
  messagesAcked: number;
  /** Segments of every kind handed out by `poll`. */
  segmentsSent: number;
  /** Valid segments of every kind received. */
  segmentsReceived: number;
  /** Data segments sent: first transmissions, retransmissions and redundant copies. */
  dataSegmentsSent: number;
  /** Redundant copies among them (option `copies`). */
  redundantCopies: number;
  /** Retransmissions when the RTO expired. */
  timeoutRetransmissions: number;
  /** Retransmissions on gap evidence from SACKs. */
  fastRetransmissions: number;
  /** Retransmissions acked sooner than the smallest RTT after they left (the original was). */
  spuriousRetransmissions: number;
  /** Data segments received again (below the cumulative point or already held) and discarded. */
  duplicatesDiscarded: number;
  /** Data segments beyond the receive window, dropped unacknowledged. */
  outOfWindowDropped: number;
  /** Segments ignored because `validateSegment` rejected them or they acknowledged unsent data. */
  invalidSegments: number;
  /** Acks sent. */
  acksSent: number;
  /** Acks received. */
  acksReceived: number;
  /** Keepalives sent. */
  keepalivesSent: number;
  /** Keepalives received. */
  keepalivesReceived: number;
  /** Congestion window, segments (the send window without congestion control). */
  congestionWindow: number;
  /** Slow start threshold, segments (`Infinity` until the first loss). */
  slowStartThreshold: number;
  /** Times the congestion window was reduced for a loss or a timeout. */
  congestionReductions: number;
  /** Smoothed RTT, ms, or `undefined` before the first sample. */
  srttMs: number | undefined;
  /** RTT variation, ms, or `undefined` before the first sample. */
  rttvarMs: number | undefined;
  /** Current retransmission timeout, ms, backoff included. */
  rtoMs: number;
  /** RTT samples taken (Karn's rule: only from segments transmitted once). */
  rttSamples: number;
  /** Smallest RTT sample, ms. */
  minRttMs: number | undefined;
  /** Largest RTT sample, ms. */
  maxRttMs: number | undefined;
  /** Mean of the RTT samples, ms. */
  meanRttMs: number | undefined;
  /** Time the sender had data but was held back, ms, by each limit. */
  limitedMs: SendLimitedMs;
}

/**
 * One end of a reliable, ordered, de-duplicated message channel, as a value
 * you feed: no sockets, timers or clocks inside.
 *
 * - `send(now, message)` queues a message (up to {@linkcode MAX_MESSAGE_BYTES});
 *   it is cut into numbered segments of at most 1100 bytes.
 * - `receive(now, segment)` takes a segment from the peer.
 * - `poll()` returns what to do next: segments to send, messages to deliver,
 *   acknowledgements of sent messages, and at most once that the channel is
 *   dead. Call it until it returns `undefined` after every other call.
 * - `nextTimeout()` tells when to call `onTimeout(now)`.
 *
 * Selective mode: up to `sendWindow` segments in flight (beyond half of it
 * only at the controller's cruise window), never beyond the
 * peer's advertised window; every data segment (duplicates included) and
 * keepalive is acknowledged with the cumulative point, up to 16 SACK ranges
 * and the window, once per batch of input between two `poll` calls. RTT
 * samples follow Karn's rule (only segments transmitted once and not judged
 * lost; of those an ack newly covers, the most recently sent) and RFC 6298
 * smoothing. Losses are judged as {@linkcode LossDetector} does (RACK, and
 * `dupThresh` until reordering shows). When the RTO expires, two segments
 * are resent; when it expires again with no ack between, every one, as the
 * window allows. The RTO doubles each time, up to `deadAfterMs /
 * PROBES_BEFORE_DEATH` (never below the RTO without backoff); it resets
 * when new data is acknowledged.
 *
 * Liveness: after `keepaliveMs` without sending anything, the channel sends
 * a keepalive (the peer acks it). After `deadAfterMs` without hearing
 * anything, or when a segment has been retransmitted `maxRetransmits` times
 * and needs it again, the channel reports `dead` and stops.
 *
 * @example
 * ```ts
 * const a = new ReliableChannel(0), b = new ReliableChannel(0);
 * a.send(0, new TextEncoder().encode("hello"));
 * for (let out = a.poll(); out; out = a.poll()) {
 *   if (out.type === "segment") b.receive(30, out.segment);
 * }
 * b.poll(); // { type: "segment", segment: { kind: "ack", cumulative: 1, ranges: [], window: 128 } }
 * b.poll(); // { type: "deliver", message: Uint8Array(5) }
 * ```
 */
export class ReliableChannel {
  #options: ResolvedChannelOptions;
  #rtt: RttEstimator;
  #send: SendBuffer;
  #receive: ReceiveBuffer;
  #cc: CongestionController | undefined;
  #sampler = new DeliveryRateSampler();
  #outbox: ChannelOutput[] = [];
  #outboxHead = 0;
  #ackPending = false;
  /** In-order data segments received since the last ack, while acks are delayed. */
  #delayedSegments = 0;
  #ackDueAt: number | undefined;
  #losses: LossDetector;
  /** True when data waits only for pacing: `nextTimeout` then includes the pacing time. */
  #pacingBlocked = false;
  #lastHeard: number;
  #lastSent: number;
  #peerCumulative: number;
  #peerWindow: number;
  #nextMessageId = 1;
  #unackedFragments = new Map<number, number>();
  #dead: string | undefined;
  #stats = {
    messagesSent: 0,
    messagesDelivered: 0,
    messagesAcked: 0,
    segmentsSent: 0,
    segmentsReceived: 0,
    dataSegmentsSent: 0,
    redundantCopies: 0,
    timeoutRetransmissions: 0,
    fastRetransmissions: 0,
    duplicatesDiscarded: 0,
    outOfWindowDropped: 0,
    invalidSegments: 0,
    acksSent: 0,
    acksReceived: 0,
    keepalivesSent: 0,
    keepalivesReceived: 0,
  };
  #limits = new SendLimits();
  #rttSamples = 0;
  #rttSum = 0;
  #rttMin: number | undefined;
  #rttMax: number | undefined;
  /** The smallest RTT of the current and the previous MIN_RTT_WINDOW_MS (see `#recentMinRtt`). */
  #windowMinRtt: number | undefined;
  #previousWindowMinRtt: number | undefined;
  #minRttWindowStart = 0;
  #timedOutAt = -Infinity;
  /** Retransmissions, oldest first, with their transmission count then: candidates for a spare copy. */
  #retransmitted: { segment: OutgoingSegment; transmissions: number }[] = [];
  #retransmittedHead = 0;
  /** When new data was last sent or acknowledged, ms: the tail loss probe counts from it. */
  #progressAt = -Infinity;

  /**
   * Creates a channel; the peer is taken as heard from at `now`.
   *
   * @param now the current time, ms: liveness is measured from it
   * @param options windows, timers and mode; see {@linkcode DEFAULT_CHANNEL_OPTIONS}
   */
  constructor(now: number, options: ReliableChannelOptions = {}) {
    if (!Number.isFinite(now)) throw new RangeError(`Cannot start a channel at time ${now}`);
    this.#options = resolveChannelOptions(options);
    const o = this.#options;
    this.#losses = new LossDetector(Math.max(o.dupThresh, BULK_DUP_THRESH));
    this.#rtt = new RttEstimator(o);
    this.#send = new SendBuffer(o.initialSeq);
    this.#receive = new ReceiveBuffer(o.peerInitialSeq, o.receiveWindow);
    if (o.congestionControl) {
      const windows = {
        initialWindow: o.initialWindow,
        maxWindow: o.sendWindow,
        maxBurst: o.maxBurst,
      };
      this.#cc = o.congestion === "bbr" ? new BbrControl(windows) : new CongestionControl(windows);
    }
    this.#lastHeard = now;
    this.#lastSent = now;
    this.#peerCumulative = o.initialSeq;
    // Until the peer's first ack, assume it uses the same receive window as we do.
    this.#peerWindow = o.receiveWindow;
  }

  /** The options in force, defaults filled in. */
  get options(): Readonly<ResolvedChannelOptions> {
    return this.#options;
  }

  /** The next sequence number expected from the peer: everything below it was received. */
  get receivedUpTo(): number {
    return this.#receive.cumulative;
  }

  /** True when nothing sent is unacknowledged and nothing waits to be sent. */
  get idle(): boolean {
    return this.#send.size === 0;
  }

  /**
   * Segments queued or sent and not yet acknowledged (for backpressure).
   * Segments the peer SACKed do not count: they hold no place in the
   * window, so a sender that counted them would let its queue run dry
   * behind a lost segment on a lossy link.
   */
  get backlog(): number {
    return this.#send.unackedCount + this.#send.queued;
  }

  /** The congestion window, segments (the send window without congestion control). */
  get congestionWindow(): number {
    return this.#cc?.window ?? this.#sendLimit();
  }

  /** Why the channel died, or `undefined` while it is alive. */
  get deadReason(): string | undefined {
    return this.#dead;
  }

  /** A snapshot of the counters and RTT estimates. */
  get stats(): Readonly<ChannelStats> {
    return {
      ...this.#stats,
      srttMs: this.#rtt.srtt,
      rttvarMs: this.#rtt.rttvar,
      rtoMs: this.#currentRto(),
      spuriousRetransmissions: this.#losses.spurious,
      rttSamples: this.#rttSamples,
      minRttMs: this.#rttMin,
      maxRttMs: this.#rttMax,
      meanRttMs: this.#rttSamples === 0 ? undefined : this.#rttSum / this.#rttSamples,
      congestionWindow: this.#cc?.window ?? this.#sendLimit(),
      slowStartThreshold: this.#cc?.slowStartThreshold ?? Infinity,
      congestionReductions: this.#cc?.reductions ?? 0,
      limitedMs: this.#limits.limitedMs,
    };
  }

  /**
   * Queues a message for reliable, ordered delivery and sends what the
   * windows allow. An urgent message (chat, control) goes ahead of every
   * message queued without it: only the fragments of the message already
   * being sent stay in front, as a message's fragments are consecutive.
   *
   * @param now the current time, ms
   * @param message up to {@linkcode MAX_MESSAGE_BYTES} bytes, copied unless `owned`
   * @param options `urgent`: send ahead of queued bulk data; `owned`: the caller gives the bytes up
   * @returns the message's id, repeated in its `acked` output
   * @throws {RangeError} when the message is too large
   * @throws {TypeError} when the channel is dead
   */
  send(now: number, message: Uint8Array, { urgent = false, owned = false } = {}): number {
    if (this.#dead !== undefined) {
      throw new TypeError(`Cannot send on a dead channel: ${this.#dead}`);
    }
    if (!(message instanceof Uint8Array)) {
      throw new TypeError("Cannot send a message that is not a Uint8Array");
    }
    if (message.length > MAX_MESSAGE_BYTES) {
      throw new RangeError(
        `Cannot send a message of ${message.length} bytes: the limit is ${MAX_MESSAGE_BYTES}`,
      );
    }
    const id = this.#nextMessageId++;
    this.#unackedFragments.set(id, this.#send.push(id, message, urgent, owned));
    this.#stats.messagesSent++;
    this.#sendWhatWindowsAllow(now);
    return id;
  }

  /**
   * Takes a segment from the peer. Invalid segments are counted and ignored;
   * nothing the peer sends makes this throw.
   *
   * @param now the current time, ms
   * @param segment the decoded segment; what is kept of its payload is
   * copied, so the payload may be a view on a buffer reused afterwards
   */
  receive(now: number, segment: Segment): void {
    if (this.#dead !== undefined) return;
    if (validateSegment(segment) !== undefined) {
      this.#stats.invalidSegments++;
      return;
    }
    if (segment.kind === "ack" && segment.cumulative > this.#send.sendNext) {
      this.#stats.invalidSegments++;
      return;
    }
    this.#stats.segmentsReceived++;
    this.#lastHeard = now;
    switch (segment.kind) {
      case "data":
        this.#onData(now, segment);
        break;
      case "ack":
        this.#onAck(now, segment);
        break;
      case "keepalive":
        this.#stats.keepalivesReceived++;
        this.#requestAck(now);
        break;
    }
  }

  /**
   * Tells the driver when to call `onTimeout` next. Ask again after every
   * other call: sending, receiving and timeouts all move it.
   *
   * @returns the time, ms, or `undefined` once the channel is dead
   */
  nextTimeout(): number | undefined {
    if (this.#dead !== undefined) return undefined;
    let next = Math.min(
      this.#lastHeard + this.#options.deadAfterMs,
      this.#lastSent + this.#options.keepaliveMs,
    );
    const oldest = this.#losses.oldest();
    if (oldest !== undefined) next = Math.min(next, this.#rtoDueAt(oldest));
    next = Math.min(next, this.#losses.lossAt ?? Infinity);
    if (this.#ackDueAt !== undefined) next = Math.min(next, this.#ackDueAt);
    if (this.#pacingBlocked && this.#cc) next = Math.min(next, this.#cc.pacer.nextSendTime());
    return next;
  }

  /**
   * Runs the timers due by `now`: death after silence, retransmission
   * timeouts, keepalives. Calling it early does nothing.
   *
   * @param now the current time, ms
   */
  onTimeout(now: number): void {
    if (this.#dead !== undefined) return;
    const o = this.#options;
    if (now >= this.#lastHeard + o.deadAfterMs) {
      this.#die(`Nothing was heard from the peer for ${o.deadAfterMs} ms`);
      return;
    }
    if (this.#ackDueAt !== undefined && now >= this.#ackDueAt) this.#requestAck(now);
    if (now >= (this.#losses.lossAt ?? Infinity)) this.#findLosses(now);
    const inFlight = this.#inFlight();
    let due = 0;
    const oldest = this.#losses.oldest();
    // A first timeout resends two segments and leaves the window (F-RTO, TLP, PTO); another with no
    // ack between takes all outstanding as lost (RFC 6675 5.1; only what is older than the doubled
    // RTO would leave the rest in flight above the window and stall the sender).
    const probe = this.#rtt.backoffs === 0 && o.mode === "selective";
    if (oldest !== undefined && this.#rtoDueAt(oldest) <= now) {
      this.#timedOutAt = now;
      due = probe ? this.#losses.markProbesLost() : this.#losses.markAllLost();
    }
    if (due > 0) {
      this.#stats.timeoutRetransmissions += due;
      if (!probe) this.#cc?.onTimeout(inFlight, this.#send.sendNext);
      if (o.mode === "selective") this.#rtt.backoff();
    }
    this.#sendWhatWindowsAllow(now);
    if (this.#dead !== undefined) return;
    if (now >= this.#lastSent + o.keepaliveMs) {
      this.#stats.keepalivesSent++;
      this.#emit(now, { kind: "keepalive" });
    }
  }

  /**
   * Takes the next output: a pending ack first, then segments, deliveries,
   * acknowledgements and the death notice in the order they arose.
   *
   * @returns the next thing for the driver to do, or `undefined` when there is nothing
   */
  poll(): ChannelOutput | undefined {
    if (this.#ackPending) {
      this.#ackPending = false;
      this.#delayedSegments = 0;
      this.#ackDueAt = undefined;
      this.#stats.acksSent++;
      this.#stats.segmentsSent++;
      const segment: AckSegment = {
        kind: "ack",
        cumulative: this.#receive.cumulative,
        ranges: this.#receive.ranges(this.#options.maxSackRanges),
        window: this.#receive.window,
      };
      return { type: "segment", segment };
    }
    if (this.#outboxHead >= this.#outbox.length) {
      this.#outbox = [];
      this.#outboxHead = 0;
      return undefined;
    }
    const output = this.#outbox[this.#outboxHead];
    this.#outbox[this.#outboxHead++] = undefined!;
    return output;
  }

  #onData(now: number, segment: DataSegment): void {
    const before = this.#receive.cumulative;
    const result = this.#receive.offer(segment);
    if (result === "duplicate") this.#stats.duplicatesDiscarded++;
    if (result === "out_of_window") this.#stats.outOfWindowDropped++;
    const messages = this.#receive.takeMessages();
    for (const message of messages) {
      this.#stats.messagesDelivered++;
      this.#outbox.push({ type: "deliver", message });
    }
    if (result === "malformed") {
      this.#die(`The peer broke the message stream: ${this.#receive.problem}`);
      return;
    }
    const cumulative = this.#receive.cumulative;
    const held = this.#receive.held;
    // In order with nothing held, or held above a gap the sender knows of
    // already (not the first held segment): the next ack can wait.
    const delayable = result === "accepted" && messages.length === 0 &&
      ((cumulative === before + 1 && held === 0) || (cumulative === before && held > 1));
    if (delayable && ++this.#delayedSegments < this.#options.ackEvery) {
      this.#ackDueAt ??= now + this.#options.ackDelayMs;
      return;
    }
    this.#requestAck(now);
  }

  #onAck(now: number, ack: AckSegment): void {
    this.#stats.acksReceived++;
    const selective = this.#options.mode === "selective";
    const ranges: readonly SackRange[] = selective ? ack.ranges : [];
    if (ack.cumulative >= this.#peerCumulative) {
      this.#peerCumulative = ack.cumulative;
      this.#peerWindow = ack.window;
    }
    const newly = this.#send.acknowledge(ack.cumulative, ranges);
    if (newly.length > 0) {
      this.#progressAt = now;
      const rttSamples = this.#takeRttSample(now, newly);
      this.#rtt.resetBackoff();
      // Before the controller hears: in flight leaves out what was judged lost, and these are not.
      this.#losses.onAckRanges(ranges.length >= this.#options.maxSackRanges);
      const spurious = this.#losses.spurious;
      for (const segment of newly) this.#losses.onAcked(segment, now, this.#rttMin ?? 0);
      for (let i = spurious; i < this.#losses.spurious; i++) this.#cc?.onSpuriousLoss?.();
      const minRttMs = this.#recentMinRtt();
      if (this.#cc) {
        this.#cc.onAck(now, newly.length, {
          srttMs: this.#rtt.srtt,
          minRttMs,
          inFlight: this.#inFlight(),
          rttSampleMs: rttSamples?.smallest,
          meanRttSampleMs: rttSamples?.mean,
          sample: this.#sampler.onAcked(now, newly, minRttMs),
          reordering: this.#losses.reordering(now, this.#rtt.srtt ?? 0),
        });
      }
      // Fragments of one message come in runs: one map update a run.
      for (let i = 0; i < newly.length;) {
        const id = newly[i].messageId;
        let run = 1;
        while (i + run < newly.length && newly[i + run].messageId === id) run++;
        i += run;
        const left = this.#unackedFragments.get(id)! - run;
        if (left > 0) {
          this.#unackedFragments.set(id, left);
        } else {
          this.#unackedFragments.delete(id);
          this.#stats.messagesAcked++;
          this.#outbox.push({ type: "acked", id });
        }
      }
      if (selective) this.#findLosses(now);
    }
    this.#sendWhatWindowsAllow(now);
  }

  /**
   * Karn's rule: only segments transmitted once, and not judged lost (one
   * that waited, judged lost, for a retransmission the window did not yet
   * allow, is acknowledged late because its acks were lost: a burst of ack
   * loss once gave a sample of 4 s on a path of 40 ms, and a base RTO to
   * match). Of the rest, the most recently sent gives the tightest bound.
   *
   * @returns the sample (the smallest) and the mean of the segments', ms, if there was one
   */
  #takeRttSample(
    now: number,
    newly: OutgoingSegment[],
  ): { smallest: number; mean: number } | undefined {
    let sample: number | undefined;
    let sum = 0, count = 0;
    for (const segment of newly) {
      if (segment.transmissions !== 1 || segment.lost || this.#mayAnswerProbes(now, segment)) {
        continue;
      }
      const rtt = now - segment.sentAt;
      if (sample === undefined || rtt < sample) sample = rtt;
      sum += rtt;
      count++;
    }
    if (sample === undefined) return undefined;
    this.#rtt.sample(sample);
    this.#rttSamples++;
    this.#rttSum += sample;
    this.#rttMin = Math.min(this.#rttMin ?? sample, sample);
    this.#rttMax = Math.max(this.#rttMax ?? sample, sample);
    if (now - this.#minRttWindowStart >= MIN_RTT_WINDOW_MS) {
      this.#previousWindowMinRtt = this.#windowMinRtt;
      this.#windowMinRtt = sample;
      this.#minRttWindowStart = now;
    } else {
      this.#windowMinRtt = Math.min(this.#windowMinRtt ?? sample, sample);
    }
    return { smallest: sample, mean: sum / count };
  }

  /**
   * Tells whether an ack of `segment` may have been sent for the timeout's probes, not for it: it
   * left before the last timeout and the ack came a smallest RTT or more after it (Karn). Sooner,
   * the ack was already on its way, and the sample is the path's (a delayed flight).
   */
  #mayAnswerProbes(now: number, segment: OutgoingSegment): boolean {
    return segment.sentAt < this.#timedOutAt && now - this.#timedOutAt >= (this.#rttMin ?? 0);
  }

  /**
   * The smallest RTT of the last 10 to 20 s: congestion control's idea of
   * the path without a queue, which forgets a path that got longer.
   */
  #recentMinRtt(): number | undefined {
    if (this.#previousWindowMinRtt === undefined) return this.#windowMinRtt;
    return Math.min(this.#previousWindowMinRtt, this.#windowMinRtt ?? Infinity);
  }

  /**
   * Marks lost what {@linkcode LossDetector} judges lost, with `dupThresh`
   * at least {@linkcode BULK_DUP_THRESH} once the stream is not thin.
   */
  #findLosses(now: number): void {
    const dupThresh = this.#thin()
      ? this.#options.dupThresh
      : Math.max(this.#options.dupThresh, BULK_DUP_THRESH);
    const inFlight = this.#inFlight();
    const minRtt = this.#recentMinRtt() ?? 0, srtt = this.#rtt.srtt ?? minRtt;
    const next = () => this.#losses.takeNextLoss(dupThresh, now, minRtt, srtt);
    for (let lost = next(); lost; lost = next()) {
      this.#stats.fastRetransmissions++;
      this.#cc?.onLoss(lost.seq, inFlight, this.#send.sendNext);
    }
  }

  /** Segments in the network as far as we know: sent, not acknowledged, not judged lost. */
  #inFlight(): number {
    return this.#send.unackedCount - this.#losses.lostCount;
  }

  #sendLimit(): number {
    return this.#options.mode === "selective" ? this.#options.sendWindow : 1;
  }

  /**
   * True when the send window holds new segments back: the span in flight
   * is the whole send window, or beyond half of it while what is in flight
   * is at the controller's cruise window (none without one). The second
   * half of the span is for repair: holes the receiver still lacks (a lost
   * retransmission holds the left edge for another round trip) leave room
   * for new data at one BDP in flight, so the link stays busy, but not for
   * startup's or a probe's gain, which would overfill a queue (DECISIONS,
   * "Session 22").
   */
  #sendWindowFull(): boolean {
    const span = this.#send.flightSize, limit = this.#sendLimit();
    if (span >= limit) return true;
    if (2 * span < limit || this.#cc === undefined) return false;
    return this.#inFlight() >= (this.#cc.cruiseWindow ?? 0);
  }

  /**
   * Retransmits segments judged lost, then sends new ones, while the
   * congestion window, pacing, the send window and the peer's window allow.
   */
  #sendWhatWindowsAllow(now: number): void {
    this.#limits.resumed(now);
    this.#sendLoop(now);
  }

  #sendLoop(now: number): void {
    const stop = (limit?: SendLimit) => this.#limits.stopped(now, limit);
    const cc = this.#cc;
    if (this.#pacingBlocked) cc?.pacer.noteWake(now);
    this.#pacingBlocked = false;
    while (this.#dead === undefined) {
      const lost = this.#losses.nextLost();
      const next = lost ?? this.#send.peekUnsent();
      if (next === undefined) {
        // Room in the window and nothing to send: rate samples until this flight is delivered understate the path.
        if (cc && this.#inFlight() < cc.window) this.#sampler.onAppLimited(this.#inFlight());
        if (this.#sendSpare(now)) continue;
        return stop();
      }
      if (lost === undefined) {
        let limit: SendLimit | undefined;
        if (this.#sendWindowFull()) limit = "sendWindow";
        else if (next.seq >= this.#peerCumulative + this.#peerWindow) limit = "peerWindow";
        if (limit !== undefined) {
          if (this.#sendSpare(now)) continue;
          return stop(limit);
        }
      }
      if (cc) {
        if (this.#inFlight() >= cc.window) return stop("window");
        if (!cc.pacer.mayPace(now)) {
          this.#pacingBlocked = true;
          return stop("pacing");
        }
        cc.pacer.spend();
      }
      if (lost !== undefined) {
        this.#losses.takeLost(lost);
        this.#retransmit(now, lost);
      } else {
        this.#transmit(now, this.#send.takeUnsent()!);
      }
    }
  }

  /** @returns false when the channel died instead */
  #retransmit(now: number, segment: OutgoingSegment): boolean {
    const max = this.#options.maxRetransmits;
    if (segment.transmissions > max) {
      this.#die(`Segment ${segment.seq} was retransmitted ${max} times without being acknowledged`);
      return false;
    }
    this.#transmit(now, segment);
    this.#nextSpareCandidate();
    // What was skipped is gone for good: let it go (its payload too), however long no copy leaves.
    if (
      this.#retransmittedHead >= 64 && 2 * this.#retransmittedHead >= this.#retransmitted.length
    ) {
      this.#retransmitted = this.#retransmitted.slice(this.#retransmittedHead);
      this.#retransmittedHead = 0;
    }
    this.#retransmitted.push({ segment, transmissions: segment.transmissions });
    return true;
  }

  /**
   * Sends a spare copy of the oldest retransmission still unacknowledged,
   * once per retransmission, in a slot the sender would otherwise leave
   * empty: nothing is left to repair, and no new data is left or allowed
   * (the send or the peer's window is full), while the congestion window
   * and pacing have room. Only where loss is random (the controller's
   * estimate above 0) and no queue shows (SRTT within
   * {@linkcode BBR_RANDOM_LOSS_RTT_FACTOR} smallest RTTs, where BBR counts
   * losses as random): behind a queue the link is not idle. A lost
   * retransmission holds the window's left edge, or the end of a transfer,
   * for another round trip; the copy usually gets through (copies of
   * retransmissions as in Flach et al., "Reducing Web Latency: the Virtue
   * of Gentle Aggression", SIGCOMM 2013, sent here only into spare room).
   * It is not a transmission: the loss detector and the rate sampler keep
   * the retransmission's record, so it changes no loss verdict, RTT or rate
   * sample, and it counts as a redundant copy.
   *
   * @returns true when a copy left
   */
  #sendSpare(now: number): boolean {
    const cc = this.#cc;
    if (cc === undefined || this.#options.mode !== "selective") return false;
    const segment = this.#nextSpareCandidate();
    if (segment !== undefined) {
      const minRtt = this.#recentMinRtt(), srtt = this.#rtt.srtt;
      const queue = minRtt === undefined || srtt === undefined ||
        srtt > BBR_RANDOM_LOSS_RTT_FACTOR * minRtt;
      if (queue || !(cc.randomLoss > 0) || this.#inFlight() >= cc.window) return false;
      if (!cc.pacer.mayPace(now)) return false;
      cc.pacer.spend();
      this.#retransmittedHead++;
      this.#stats.dataSegmentsSent++;
      this.#stats.redundantCopies++;
      const { seq, fragment, fragments, payload } = segment;
      this.#emit(now, { kind: "data", seq, fragment, fragments, payload });
      return true;
    }
    this.#retransmitted = [];
    this.#retransmittedHead = 0;
    return false;
  }

  /** The oldest retransmission still waiting for a spare copy (acked, lost or resent ones skipped). */
  #nextSpareCandidate(): OutgoingSegment | undefined {
    const candidates = this.#retransmitted;
    while (this.#retransmittedHead < candidates.length) {
      const { segment, transmissions } = candidates[this.#retransmittedHead];
      if (!segment.acked && !segment.lost && segment.transmissions === transmissions) {
        return segment;
      }
      this.#retransmittedHead++;
    }
    return undefined;
  }

  #transmit(now: number, segment: OutgoingSegment): void {
    // In flight before this transmission: the segment is counted already.
    if (this.#cc) this.#sampler.stamp(now, this.#inFlight() - 1, segment);
    if (segment.transmissions === 0) this.#progressAt = now;
    segment.transmissions++;
    segment.sentAt = now;
    this.#losses.onTransmit(segment);
    const { seq, fragment, fragments, payload } = segment;
    const copies = this.#thin() ? this.#options.copies : 1;
    this.#stats.dataSegmentsSent += copies;
    this.#stats.redundantCopies += copies - 1;
    for (let i = 0; i < copies; i++) {
      this.#emit(now, { kind: "data", seq, fragment, fragments, payload });
    }
  }

  /** True for a thin stream (see {@linkcode THIN_STREAM_BYTES}). */
  #thin(): boolean {
    return this.#send.unackedBytes + this.#send.queued * MAX_SEGMENT_PAYLOAD <= THIN_STREAM_BYTES;
  }

  #emit(now: number, segment: Segment): void {
    this.#stats.segmentsSent++;
    this.#lastSent = Math.max(this.#lastSent, now);
    this.#outbox.push({ type: "segment", segment });
  }

  #requestAck(now: number): void {
    this.#ackPending = true;
    this.#lastSent = Math.max(this.#lastSent, now);
  }

  /**
   * The RTO runs from the oldest segment's transmission or the last timeout (RFC 6298 5.6). With
   * nothing new left to send, the first timeout, which only probes, comes sooner if nothing new
   * was sent or acknowledged for {@linkcode TAIL_PROBE_SRTTS} SRTTs and the peer's ack delay.
   */
  #rtoDueAt(oldest: OutgoingSegment): number {
    const rtoAt = Math.max(oldest.sentAt, this.#timedOutAt) + this.#currentRto();
    const srtt = this.#rtt.srtt;
    const tail = this.#send.peekUnsent() === undefined;
    if (
      !tail || this.#rtt.backoffs > 0 || this.#options.mode !== "selective" || srtt === undefined
    ) {
      return rtoAt;
    }
    return Math.min(rtoAt, this.#progressAt + TAIL_PROBE_SRTTS * srtt + this.#options.ackDelayMs);
  }

  #currentRto(): number {
    if (this.#options.mode !== "selective") return this.#options.stopAndWaitRtoMs;
    const ceiling = Math.max(this.#rtt.baseRto, this.#options.deadAfterMs / PROBES_BEFORE_DEATH);
    return Math.min(this.#rtt.rto, ceiling);
  }

  #die(reason: string): void {
    this.#dead = reason;
    this.#ackPending = false;
    const kept = this.#outbox.slice(this.#outboxHead).filter((output) => output.type !== "segment");
    this.#outbox = [...kept, { type: "dead", reason }];
    this.#outboxHead = 0;
  }
}
