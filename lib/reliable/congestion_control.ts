/**
 * NewReno-style congestion control with Veno's loss discrimination and
 * pacing, for a reliable channel (the `"newreno"` choice, kept as the
 * baseline of {@linkcode BbrControl}), and the interface every controller
 * of a channel implements.
 *
 * @module
 */
import { Pacer } from "./pacer.ts";
import type { RateSample } from "./delivery_rate_sampler.ts";

/** What a channel tells its congestion controller on each acknowledgement. */
export interface AckSignals {
  /** Smoothed RTT, ms (undefined before a sample). */
  srttMs: number | undefined;
  /** The smallest recent RTT, ms (undefined before a sample). */
  minRttMs: number | undefined;
  /** Segments still in flight after this ack (the window when not given). */
  inFlight?: number;
  /** This ack's RTT sample, ms, if it gave one (Karn's rule): the smallest of the segments it covers. */
  rttSampleMs?: number;
  /** The mean RTT of the segments this ack covers that Karn's rule lets give one, ms. */
  meanRttSampleMs?: number;
  /** This ack's delivery rate sample, if it gave one. */
  sample?: RateSample;
  /**
   * True while the path reorders datagrams (RACK saw it lately): its RTT
   * varies with no queue behind it, as a drop-tail queue never reorders.
   */
  reordering?: boolean;
}

/**
 * A reliable channel's congestion controller: how many segments may be in
 * flight and when the next may leave. Sans-I/O: time comes from the calls.
 */
export interface CongestionController {
  /** Segments allowed in flight. */
  readonly window: number;
  /** The slow start threshold, segments (`Infinity` where the controller has none). */
  readonly slowStartThreshold: number;
  /** How many times the window was cut for a loss or a timeout. */
  readonly reductions: number;
  /**
   * Segments allowed in flight while the span of sequence numbers in flight
   * is beyond half the channel's send window: the window without the gain
   * of a startup or a probe (see `BbrControl.cruiseWindow`). Optional: a
   * controller without it (NewReno) sends nothing new beyond that half.
   */
  readonly cruiseWindow?: number;
  /** The share of segments the path loses at random as the controller estimates it, 0 to 1 (0: none, or no estimate). */
  readonly randomLoss: number;
  /**
   * The pacer that spaces segments out at the controller's rate (`Infinity`
   * before the first RTT sample); the channel asks it before each segment.
   */
  readonly pacer: Pacer;
  /** Takes an acknowledgement that newly covers `acked` segments (0 for none). */
  onAck(now: number, acked: number, signals: AckSignals): void;
  /** Takes a segment found lost by fast retransmit. */
  onLoss(seq: number, inFlight: number, sendNext: number): void;
  /** Takes a retransmission timeout. */
  onTimeout(inFlight: number, sendNext: number): void;
  /**
   * Hears that a fast retransmission proved spurious: the original was
   * acknowledged (RFC 8985 section 6.2 step 2). Optional: a controller
   * that can undo what it did for that loss (RFC 4015's Eifel response).
   */
  onSpuriousLoss?(): void;
}

/** Options of a {@linkcode CongestionControl}. */
export interface CongestionControlOptions {
  /** Congestion window at the start, segments (RFC 6928: 10). */
  initialWindow: number;
  /** Largest congestion window, segments (the channel's send window). */
  maxWindow: number;
  /** Most segments sent back to back before pacing spaces them out. */
  maxBurst: number;
}

/** The smallest congestion window, segments (RFC 3390's initial window). */
export const MIN_CONGESTION_WINDOW = 4;

/**
 * The congestion window never allows less than this rate, segments per ms
 * (100 segments, about 110 KB, a second): losses on a lossy link do not
 * make an interactive stream (a message every 20 ms over a 100 ms round
 * trip) or a small file queue behind the window, and a rate this low
 * cannot hurt a network. Above it, the window backs off as NewReno does.
 */
export const MIN_RATE_SEGMENTS_PER_MS = 0.1;

/**
 * Veno's threshold: with fewer segments than this queued in the network
 * (estimated from the RTT above the smallest seen), a loss is taken as
 * random, not congestion.
 */
export const RANDOM_LOSS_BACKLOG = 3;

/**
 * Most segments the window keeps queued in the network, estimated as Veno
 * does from the RTT above the smallest (TCP Vegas' "diff"). Above it the
 * window stops growing and gives back one segment per round trip, so the
 * queue in front of the bottleneck stays short: on loopback that queue is
 * the receiver's socket buffer (about 90 datagrams of 1122 bytes at Linux's
 * default 208 KiB), which a loss-driven window would fill until it
 * overflows, halving the window each time.
 */
export const MAX_QUEUED_SEGMENTS = 40;

/** Window kept after a random loss (Veno: 4/5). */
const RANDOM_LOSS_FACTOR = 0.8;
/** Window kept after a congestion loss (Reno: 1/2). */
const CONGESTION_LOSS_FACTOR = 0.5;

/** Pacing rate over cwnd/srtt in slow start (as Linux), so the window can double each round trip. */
const SLOW_START_PACING_GAIN = 2;
/** Pacing rate over cwnd/srtt in congestion avoidance (as Linux). */
const AVOIDANCE_PACING_GAIN = 1.25;

/**
 * Decides how many segments may be in flight and when the next may leave.
 *
 * - Slow start: the window grows by the segments each ack newly covers, so
 *   it doubles every round trip whatever the ack frequency (as Linux; RFC
 *   3465's cap of two per ack guards against bursts, which pacing spreads).
 * - Congestion avoidance (window at or above `ssthresh`): one segment per
 *   window of acknowledged segments, so one more per round trip.
 * - Delay bound (TCP Vegas): with more than {@linkcode MAX_QUEUED_SEGMENTS}
 *   segments estimated queued in the network, slow start ends and the
 *   window shrinks by one segment per round trip instead of growing.
 * - A loss found by fast retransmit reduces the window once per round trip
 *   of data (NewReno: losses of segments sent before the first reduction
 *   take effect with it). As TCP Veno (Fu and Liew, 2003), it estimates the
 *   segments queued in the network, `cwnd * (srtt - minRtt) / srtt`: below
 *   {@linkcode RANDOM_LOSS_BACKLOG} the loss is random (a lossy radio
 *   link, not a full queue) and the window keeps 4/5; otherwise it halves.
 *   A retransmission timeout sets `ssthresh` the same way and restarts
 *   slow start from {@linkcode MIN_CONGESTION_WINDOW}.
 * - Pacing: a token bucket refilled at `gain * cwnd / srtt` and holding at
 *   most `maxBurst` segments, so a large window is not sent as one burst
 *   that overflows the receiver's socket buffer.
 *
 * @example
 * ```ts
 * const cc = new CongestionControl({ initialWindow: 10, maxWindow: 1024, maxBurst: 32 });
 * cc.window; // 10
 * cc.onAck(0, 4, { srttMs: 50, minRttMs: 50 }); // slow start: +4
 * cc.window; // 14
 * cc.onLoss(60, 14, 100); // no queue behind the RTT: a random loss keeps 4/5
 * cc.window; // 11
 * ```
 */
export class CongestionControl implements CongestionController {
  #options: CongestionControlOptions;
  #cwnd: number;
  #ssthresh = Infinity;
  /** Segments at or above this sequence number were sent after the last reduction. */
  #recoveryEnd = -1;
  #pacer: Pacer;
  #reductions = 0;
  #srtt: number | undefined;
  #minRtt: number | undefined;

  /**
   * Creates a controller in slow start.
   *
   * @param options windows and burst size, in segments
   */
  constructor(options: CongestionControlOptions) {
    for (const name of ["initialWindow", "maxWindow", "maxBurst"] as const) {
      if (!Number.isInteger(options[name]) || options[name] < 1) {
        throw new RangeError(`Cannot use ${name} ${options[name]}: it must be a positive integer`);
      }
    }
    this.#options = { ...options };
    this.#cwnd = Math.min(options.initialWindow, options.maxWindow);
    this.#pacer = new Pacer(options.maxBurst);
  }

  /** The congestion window, whole segments. */
  get window(): number {
    return Math.max(this.#floor(), Math.floor(this.#cwnd));
  }

  /** The slow start threshold, segments (`Infinity` until the first loss). */
  get slowStartThreshold(): number {
    return this.#ssthresh;
  }

  /** How many times the window was reduced for a loss or a timeout. */
  get reductions(): number {
    return this.#reductions;
  }

  /** NewReno keeps no estimate of random loss: 0. */
  get randomLoss(): number {
    return 0;
  }

  /** The pacer that spaces segments out at this controller's rate. */
  get pacer(): Pacer {
    return this.#pacer;
  }

  /**
   * Grows the window for newly acknowledged segments.
   *
   * @param now the current time, ms
   * @param acked segments this ack newly covers
   * @param rtt the smoothed and the smallest recent RTT after this ack, ms
   * (undefined before a sample), and the segments still in flight (the window
   * when not given)
   */
  onAck(now: number, acked: number, rtt: AckSignals): void {
    this.#srtt = rtt.srttMs;
    this.#minRtt = rtt.minRttMs;
    if (acked <= 0) return;
    if (this.#queued(rtt.inFlight ?? this.#cwnd) > MAX_QUEUED_SEGMENTS) {
      this.#cwnd = Math.max(this.#floor(), this.#cwnd - acked / this.#cwnd);
      // Out of slow start, and not back into it when the queue drains.
      this.#ssthresh = Math.min(this.#ssthresh, this.#cwnd);
    } else if (this.#cwnd < this.#ssthresh) {
      this.#cwnd += acked;
    } else {
      this.#cwnd += acked / this.#cwnd;
    }
    this.#cwnd = Math.min(this.#cwnd, this.#options.maxWindow);
    this.#updateRate(now, rtt.srttMs);
  }

  /**
   * Reacts to a segment found lost by fast retransmit.
   *
   * @param seq the lost segment's sequence number
   * @param inFlight segments in flight when it was found lost
   * @param sendNext the sequence number of the next new segment
   */
  onLoss(seq: number, inFlight: number, sendNext: number): void {
    if (seq < this.#recoveryEnd) return;
    this.#ssthresh = this.#thresholdAfterLoss(inFlight);
    this.#reduceTo(this.#ssthresh, sendNext);
  }

  /**
   * Reacts to a retransmission timeout.
   *
   * @param inFlight segments in flight when the timer expired
   * @param sendNext the sequence number of the next new segment
   */
  onTimeout(inFlight: number, sendNext: number): void {
    this.#ssthresh = this.#thresholdAfterLoss(inFlight);
    this.#reduceTo(this.#floor(), sendNext);
  }

  /** The smallest window: MIN_CONGESTION_WINDOW, or MIN_RATE_SEGMENTS_PER_MS over a round trip. */
  #floor(): number {
    const rtt = this.#srtt ?? 0;
    return Math.max(MIN_CONGESTION_WINDOW, Math.ceil(MIN_RATE_SEGMENTS_PER_MS * rtt));
  }

  /**
   * Segments of `inFlight` estimated queued in the network: those beyond
   * what the smallest RTT would hold, `inFlight * (srtt - minRtt) / srtt`
   * (0 before an RTT sample).
   */
  #queued(inFlight: number): number {
    if (this.#srtt === undefined || this.#minRtt === undefined || this.#srtt <= 0) return 0;
    return inFlight * (this.#srtt - this.#minRtt) / this.#srtt;
  }

  /** True when the RTT shows fewer than RANDOM_LOSS_BACKLOG segments queued (Veno). */
  get #lossLooksRandom(): boolean {
    if (this.#srtt === undefined || this.#minRtt === undefined) return false;
    return this.#queued(this.#cwnd) < RANDOM_LOSS_BACKLOG;
  }

  #thresholdAfterLoss(inFlight: number): number {
    const factor = this.#lossLooksRandom ? RANDOM_LOSS_FACTOR : CONGESTION_LOSS_FACTOR;
    return Math.max(this.#floor(), Math.floor(Math.max(inFlight, 1) * factor));
  }

  #reduceTo(window: number, sendNext: number): void {
    // The pacing rate follows the window at once, not at the next ack.
    this.#pacer.rate *= window / this.#cwnd;
    this.#cwnd = window;
    this.#recoveryEnd = sendNext;
    this.#reductions++;
  }

  #updateRate(now: number, srttMs: number | undefined): void {
    if (srttMs === undefined) return;
    this.#pacer.refill(now);
    const gain = this.#cwnd < this.#ssthresh ? SLOW_START_PACING_GAIN : AVOIDANCE_PACING_GAIN;
    this.#pacer.rate = gain * this.#cwnd / Math.max(srttMs, 0.01);
  }
}
