/**
 * BBR-style congestion control for a reliable channel: a model of the path
 * (its bottleneck bandwidth and its smallest round trip) instead of a
 * window that loss cuts, so random loss on a radio link does not slow the
 * sender down. See docs/DECISIONS.md, "Congestion control: BBR's model".
 *
 * @module
 */
import type { AckSignals, CongestionController } from "./congestion_control.ts";
import { Pacer } from "./pacer.ts";

/** Options of a {@linkcode BbrControl}. */
export interface BbrControlOptions {
  /** Congestion window at the start, segments (RFC 6928: 10). */
  initialWindow: number;
  /** Largest congestion window, segments (the channel's send window). */
  maxWindow: number;
  /** Most segments sent back to back before pacing spaces them out. */
  maxBurst: number;
}

/** The phases of BBR. */
export type BbrMode = "startup" | "drain" | "probe_bw" | "probe_rtt";

/** Startup's gain, 2/ln 2: the smallest that doubles the delivery rate each round trip. */
export const BBR_HIGH_GAIN = 2 / Math.LN2;
/**
 * The window over the estimated bandwidth-delay product in probe_bw
 * (besides {@linkcode BBR_QUEUE_ALLOWANCE}), except while probing up, when
 * it is the probe's pacing gain. 1, not BBR v1's 2: a window proportional
 * to each flow's share keeps whatever split flows sharing a queue happen
 * to have (each queues the same fraction of its own rate); a fixed
 * allowance above one BDP makes each flow queue about the same number of
 * segments, so the larger flow's RTT share of the queue squeezes it back
 * toward the others (TCP Vegas's argument). In simulation, two and three
 * flows through a one-BDP queue went from 1.5-4x apart to mostly within
 * 1.5x.
 */
export const BBR_CWND_GAIN = 1;
/**
 * A loss with the smoothed RTT above this many smallest RTTs is congestion:
 * a queue of half a BDP or more is building, which random loss does not do
 * (TCP Veno's test, on BBR's model).
 */
export const BBR_CONGESTION_RTT_FACTOR = 1.5;
/** A round trip's losses count as random when SRTT is within this many smallest RTTs. */
export const BBR_RANDOM_LOSS_RTT_FACTOR = 1.25;
/** The most random loss pacing makes up for (a factor of 2 at most). */
export const BBR_MAX_RANDOM_LOSS = 0.5;
/** The bandwidth estimate kept after a congestion loss, at most once a round trip. */
export const BBR_CONGESTION_BACKOFF = 0.85;
/** Pacing gains of probe_bw's eight phases, one smallest RTT each: probe up, drain, cruise. */
export const BBR_PACING_CYCLE: readonly number[] = [1.25, 0.75, 1, 1, 1, 1, 1, 1];
/**
 * Round trips the bandwidth filter remembers its maximum for: 5, not BBR
 * v1's 10, so a flow whose share shrank stops pacing at its old share
 * sooner, which is how flows sharing a queue converge (a probe cycle of
 * eight round trips still refreshes it).
 */
export const BBR_BANDWIDTH_ROUNDS = 5;
/**
 * How long a smallest RTT stands before probe_rtt measures it again, ms.
 * BBR v1 waits 10 s, v2 5 s; 2.5 s lets a flow that started behind a queue
 * (and so took the queue for path) learn the real RTT, and give back its
 * extra share, within a few seconds, for about 5% of one flow's goodput.
 */
export const BBR_MIN_RTT_WINDOW_MS = 2500;
/**
 * An RTT sample within this many smallest RTTs confirms the smallest RTT
 * still stands, as if it were a new one: a flow whose probe_bw drain phase
 * empties the queue has no need of probe_rtt.
 */
export const BBR_MIN_RTT_CONFIRM_FACTOR = 1.05;
/** How long probe_rtt holds the window down, ms. */
export const BBR_PROBE_RTT_MS = 200;
/** The window in probe_rtt over the BDP (BBR v2: half, not 4 segments). */
export const BBR_PROBE_RTT_GAIN = 0.5;
/**
 * Most round trips (smallest RTTs) probe_bw's 0.75 phase lasts while what
 * is in flight is still above one BDP: it drains the queue its probe built,
 * not just one round trip's worth of it.
 */
export const BBR_DRAIN_MAX_ROUNDS = 4;
/**
 * The window after a retransmission timeout over the BDP (at least
 * {@linkcode BBR_MIN_WINDOW}). Not BBR v1's one segment: the model of the
 * path stands, and an outage (a burst of loss) ends for the sender only
 * when a retransmission gets through, so a quarter of a BDP of probes each
 * RTO finds its end sooner than four segments do, at most a quarter of the
 * link for a timeout of at least five round trips. In simulation (8 MB/s,
 * 20% loss in bursts of 16 packets, four seeds) the median chat delays
 * went from 0.9-2.4 s to 0.07-0.9 s, and the longest from 9 s to 3 s.
 */
export const BBR_TIMEOUT_WINDOW_GAIN = 0.25;
/** The smallest window, segments. */
export const BBR_MIN_WINDOW = 4;
/**
 * Segments of window above gain x BDP: what each flow may keep queued at
 * the bottleneck (the same for every flow, which makes flows converge; see
 * {@linkcode BBR_CWND_GAIN}), and room for acknowledgements that come in
 * batches (the receiver acks every 8 segments or after 10 ms) and pacing
 * bursts, without which a window of exactly one BDP stalls between batches.
 */
export const BBR_QUEUE_ALLOWANCE = 24;
/**
 * The allowance on a path whose BDP is below {@linkcode BBR_QUEUE_ALLOWANCE}
 * segments is one BDP, but at least this many segments (one batch of acks,
 * the receiver's `ackEvery`). A fixed 24 segments a flow there is more than
 * the path and its queue hold together, so flows sharing it overflowed the
 * queue without the RTT ever showing congestion, and split the link 5 to 20
 * to 1 (simulation: 2 and 3 flows at 0.5 to 2 MB/s with 5 to 10 ms delays).
 * The cost: a lone flow on a path of under 10 segments (1 MB/s and 5 ms)
 * keeps 0.7 of it instead of 0.9, its window a few acks wide.
 */
export const BBR_MIN_QUEUE_ALLOWANCE = 8;
/**
 * Nor less than this many ms of the bandwidth: a path with a tiny RTT (loopback, a LAN) has a
 * small BDP at a high rate, and its window must still carry the sender through a timer's or a
 * socket's wake-up (Deno's timers are clamped to 1 ms): on loopback (a BDP of 10 to 30 segments
 * at 50 MB/s) an allowance of one BDP would halve the window.
 */
export const BBR_ALLOWANCE_MS = 2;
/**
 * Window above the model's, and room in the congestion test, for a host
 * that runs the sender late: this many times the pacer's smoothed lateness
 * ({@linkcode Pacer.lateness}) of bandwidth, at most
 * {@linkcode BBR_LATENESS_MAX_BDP} of the BDP. A sender descheduled for a
 * few ms sends nothing meanwhile, and pacing at the estimate never sends
 * ahead again, so the link idles unless the queue held that much; and the
 * RTT such stalls add is no queue. On a perfect host (the simulator, unless
 * `runBottleneck` is given `host` noise) the lateness is 0 and nothing changes. With timers
 * up to 3 ms late and stalls of 8 ms every 50 ms at each end (simulated, 24
 * seeds, 8 MB/s, 20 ms, one BDP of queue): 0.73, 0.71 and 0.63 of the link
 * at 0, 1 and 5% loss became 0.77, 0.74 and 0.68.
 */
export const BBR_LATENESS_GAIN = 8;
/** The most window {@linkcode BBR_LATENESS_GAIN} adds, over the BDP (and RTT over the smallest RTT). */
export const BBR_LATENESS_MAX_BDP = 0.25;
/** Round trips over which {@linkcode BbrControl.jitter} takes its median: a probe cycle's. */
export const BBR_JITTER_ROUNDS = 8;
/**
 * On a path that reorders, startup also ends at a round trip whose standing
 * RTT (see {@linkcode BbrControl.jitter}) is above this many smallest RTTs
 * plus the jitter: a standing queue, which jitter does not build. There
 * the bandwidth grows slowly (the delivery rate of jittered acks, random
 * loss), so three flat round trips came only after startup's 2.89x had
 * filled the queue for seconds. In simulation (2 MB/s, 50 ms, ±10 ms, two
 * 4 MiB transfers at 5% loss, 8 seeds) the mean queueing delay went from
 * 45 to 30 ms and the queue's drops from 719 to 186.
 */
export const BBR_STARTUP_QUEUE_FACTOR = 1.25;
/** Startup ends when three round trips in a row grow the bandwidth by less than this factor. */
const FULL_BANDWIDTH_GROWTH = 1.25;
const FULL_BANDWIDTH_ROUNDS = 3;

/**
 * Decides how many segments may be in flight and when the next may leave,
 * from a model of the path, as BBR (Cardwell et al., 2016) does:
 *
 * - **Bottleneck bandwidth**: the largest delivery rate sample of the last
 *   {@linkcode BBR_BANDWIDTH_ROUNDS} round trips (samples taken while the
 *   sender was short of data count only when they raise it).
 * - **Smallest RTT**: the smallest sample of the last 2.5 s, where a sample
 *   within 5% of it confirms it (see {@linkcode BBR_MIN_RTT_CONFIRM_FACTOR}).
 * - **Pacing** at `gain x bandwidth`, and at most one BDP (1.25 while
 *   probing up) plus {@linkcode BBR_QUEUE_ALLOWANCE} segments in flight,
 *   BDP being bandwidth x smallest RTT.
 * - **Phases**: startup (gain 2.89, until the bandwidth stops growing by 25%
 *   for three round trips), drain (gain 1/2.89 until the flight is down to
 *   one BDP), probe_bw (gains 1.25, 0.75, then 1 for six round trips, over
 *   and over: probe for more, drain what the probe queued (until the
 *   flight is down to one BDP, for at most {@linkcode BBR_DRAIN_MAX_ROUNDS}
 *   round trips), cruise), and probe_rtt (every 2.5 s without a sample
 *   within 5% of the smallest RTT: half a BDP in flight for 200 ms and a round trip, so
 *   flows sharing a queue see it empty and agree on the path's RTT).
 * - **Random loss made up for**: the delivery rate counts what arrives, but
 *   the bottleneck also carried what random loss took after it. The loss
 *   rate of round trips without a queue (SRTT within 1.25 smallest RTTs),
 *   averaged over round trips, scales pacing and the window by
 *   `1 / (1 - loss)` (at most 2), so at 20% loss the link stays busy
 *   instead of settling at 80% of what reaches the receiver.
 * - **Loss**: a random loss costs a retransmission, not the rate. A loss
 *   while the RTT shows a queue of half a BDP or more is congestion, and
 *   cuts the bandwidth estimate by 15% (see {@linkcode BbrControl.onLoss});
 *   flows sharing a queue converge because each probe at 1.25 takes share
 *   from flows above their fair rate. A retransmission timeout drops the
 *   window to a quarter of the BDP, and acks grow it back to the
 *   model's window at once (the path did not change; something was lost).
 * - **Jitter is no queue**: on a path that reorders (jitter does, a queue
 *   never), what jitter adds to the RTT on average
 *   ({@linkcode BbrControl.jitter}) is left out of SRTT in the queue tests
 *   and added to the RTT of the BDP and of a round trip, a congestion
 *   cut for a loss that proves spurious is given back, and startup also
 *   ends once the standing RTT shows a queue beyond the jitter
 *   ({@linkcode BBR_STARTUP_QUEUE_FACTOR}).
 *
 * Time comes from the calls; no randomness: probe_bw starts in its cruise
 * phase and flows desynchronise by when they start.
 *
 * @example
 * ```ts
 * const cc = new BbrControl({ initialWindow: 10, maxWindow: 1024, maxBurst: 32 });
 * cc.mode; // "startup"
 * cc.window; // 10
 * ```
 */
export class BbrControl implements CongestionController {
  #options: BbrControlOptions;
  #pacer: Pacer;
  #cwnd: number;
  #mode: BbrMode = "startup";
  #pacingGain = BBR_HIGH_GAIN;
  #cwndGain = BBR_HIGH_GAIN;
  /** Largest rate sample per round trip, newest last, at most BBR_BANDWIDTH_ROUNDS. */
  #bandwidths: { round: number; rate: number }[] = [];
  #round = 0;
  #nextRoundDelivered = 0;
  #roundStartAt = -Infinity;
  #minRtt = Infinity;
  #minRttAt = 0;
  #fullBandwidth = 0;
  #fullBandwidthRounds = 0;
  #filledPipe = false;
  #cycleIndex = 0;
  #cycleStart = 0;
  #probeRttDoneAt: number | undefined;
  #probeRttRoundDone = false;
  #priorCwnd = 0;
  #reductions = 0;
  #delivered = 0;
  #srtt: number | undefined;
  /** The round trip of the last RTT sample: an SRTT older than that is no evidence of a queue. */
  #srttRound = -1;
  #ackedThisRound = 0;
  #lostThisRound = 0;
  /** Moving average of the loss rate of round trips without a queue. */
  #randomLoss = 0;
  /** The round trip of the last congestion loss. */
  #lossRound = -1;
  /** Whether the last congestion loss's cut may still be undone (see {@linkcode BbrControl.onSpuriousLoss}). */
  #undoable = false;
  /** The smallest RTT sample of this round trip and of the one before, ms. */
  #roundMinRtt = Infinity;
  #lastRoundMinRtt = Infinity;
  /** This round trip's mean RTT samples: their sum and count. */
  #roundRttSum = 0;
  #roundRtts = 0;
  /** The mean RTT over the standing RTT at the end of each of the last {@linkcode BBR_JITTER_ROUNDS} round trips, ms. */
  #spreads: number[] = [];
  /** Their median (0 before any), kept as they change: every ack asks for it several times. */
  #spreadMedian = 0;
  /** Whether the path reorders (see {@linkcode AckSignals.reordering}): only then is RTT spread taken for jitter. */
  #reordering = false;

  /**
   * Creates a controller in startup.
   *
   * @param options windows and burst size, in segments
   */
  constructor(options: BbrControlOptions) {
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
    return Math.floor(this.#cwnd);
  }

  /** BBR has no slow start threshold: `Infinity`. */
  get slowStartThreshold(): number {
    return Infinity;
  }

  /** How many times a congestion loss or a retransmission timeout cut the model or the window. */
  get reductions(): number {
    return this.#reductions;
  }

  /** The estimated rate of random loss: of round trips without a queue, averaged (0 to 1). */
  get randomLoss(): number {
    return this.#randomLoss;
  }

  /** The pacer that spaces segments out at this controller's rate. */
  get pacer(): Pacer {
    return this.#pacer;
  }

  /** The phase the controller is in. */
  get mode(): BbrMode {
    return this.#mode;
  }

  /** The estimated bottleneck bandwidth, segments per ms (0 before a sample). */
  get bandwidth(): number {
    let max = 0;
    for (const { rate } of this.#bandwidths) max = Math.max(max, rate);
    return max;
  }

  /** The smallest RTT of the last 10 s, ms (`Infinity` before a sample). */
  get minRtt(): number {
    return this.#minRtt;
  }

  /**
   * What jitter adds to the RTT on average, ms, on a path that reorders
   * (0 on one that does not: a drop-tail queue never reorders): the median,
   * over the last {@linkcode BBR_JITTER_ROUNDS} round trips, of a round
   * trip's mean RTT over its standing RTT. A queue raises every sample, so
   * the mean and the standing RTT alike; jitter raises the mean only. The
   * mean of every segment's RTT, not SRTT: an ack's sample is the smallest
   * of the segments it covers, which hides the data's jitter. The median,
   * not the smallest: a round trip of few samples has a standing RTT near
   * its mean, which on a slow flow would hide the jitter.
   */
  get jitter(): number {
    return this.#reordering ? this.#spreadMedian : 0;
  }

  /**
   * The estimated bandwidth-delay product, segments (undefined before the
   * model has both): the bandwidth over the smallest RTT plus the
   * {@linkcode jitter}, the flight that keeps the link busy while acks come
   * that much late on average.
   */
  get bdp(): number | undefined {
    const bandwidth = this.bandwidth;
    if (bandwidth === 0 || !Number.isFinite(this.#minRtt)) return undefined;
    return bandwidth * (this.#minRtt + this.jitter);
  }

  /**
   * The window without startup's or a probe's gain: one BDP and the queue
   * allowance ({@linkcode BBR_QUEUE_ALLOWANCE}), nothing made up for random
   * loss or a late host. The channel holds what it has in flight to this
   * while the span of sequence numbers in flight is beyond half its send
   * window (holes the receiver has not filled yet): it keeps the link busy
   * while they are repaired, without the startup or probing gain that would
   * overfill a queue (see `ReliableChannel`). The window itself (`window`)
   * before the model has a BDP.
   */
  get cruiseWindow(): number {
    const bdp = this.bdp;
    return bdp === undefined ? this.window : bdp + this.#allowance(bdp);
  }

  /**
   * Updates the model from an acknowledgement, then the pacing rate and the window.
   *
   * @param now the current time, ms
   * @param acked segments this ack newly covers
   * @param signals the RTT and delivery rate samples it gave, and what is in flight
   */
  onAck(now: number, acked: number, signals: AckSignals): void {
    const inFlight = signals.inFlight ?? this.#cwnd;
    this.#srtt = signals.srttMs;
    this.#reordering = signals.reordering ?? false;
    if (signals.rttSampleMs !== undefined) this.#srttRound = this.#round;
    const sample = signals.sample;
    let roundStart = false;
    if (sample !== undefined) {
      this.#delivered = sample.totalDelivered;
      // With jitter a round trip lasts the mean RTT at least, not until the first
      // segment sent in it is acked, which can come a smallest RTT later: five
      // rounds of bandwidth samples then spanned two or three real ones.
      const jitter = this.jitter;
      if (
        sample.priorDelivered >= this.#nextRoundDelivered &&
        (jitter === 0 || now - this.#roundStartAt >= this.#minRtt + jitter)
      ) {
        this.#roundStartAt = now;
        this.#nextRoundDelivered = sample.totalDelivered;
        this.#round++;
        roundStart = true;
        this.#endLossRound();
        this.#checkStartupQueue();
        this.#endJitterRound();
      }
      if (sample.rate !== undefined && (!sample.appLimited || sample.rate >= this.bandwidth)) {
        this.#recordBandwidth(sample.rate);
      }
    }
    if (this.#mode === "probe_bw") this.#advanceCycle(now, inFlight);
    if (roundStart && !this.#filledPipe && sample !== undefined && !sample.appLimited) {
      this.#checkFullPipe();
    }
    this.#checkDrain(now, inFlight);
    this.#updateMinRtt(now, signals.rttSampleMs, inFlight, roundStart, sample?.appLimited ?? false);
    this.#ackedThisRound += acked;
    this.#roundMinRtt = Math.min(this.#roundMinRtt, signals.rttSampleMs ?? Infinity);
    if (signals.meanRttSampleMs !== undefined) {
      this.#roundRttSum += signals.meanRttSampleMs;
      this.#roundRtts++;
    }
    this.#setPacingRate(now, signals.srttMs);
    this.#setWindow(acked);
  }

  /**
   * Reacts to a segment found lost by fast retransmit. A random loss (no
   * queue behind the RTT) leaves the model as it is. A loss in probe_bw
   * while the smoothed RTT, refreshed by an RTT sample within the last
   * round trip, is above {@linkcode BBR_CONGESTION_RTT_FACTOR} smallest
   * RTTs is congestion: the bandwidth estimate drops to
   * {@linkcode BBR_CONGESTION_BACKOFF} of itself, once per round trip, so
   * flows that share a full queue give some of it back instead of holding
   * it until their estimates age out.
   */
  onLoss(_seq: number, _inFlight: number, _sendNext: number): void {
    this.#lostThisRound++;
    if (this.#mode !== "probe_bw" || this.#lossRound === this.#round) return;
    // What a late host adds to the RTT is no queue (see BBR_LATENESS_GAIN).
    const slack = Math.min(this.#lateness(), BBR_LATENESS_MAX_BDP) * this.#minRtt;
    const queued = BBR_CONGESTION_RTT_FACTOR * this.#minRtt + slack;
    if (this.#srtt === undefined || this.#queueRtt() <= queued) return;
    // Only a fresh RTT shows a queue: after a timeout, Karn's rule leaves
    // SRTT where the outage put it until a segment sent once is acked.
    if (this.#round - this.#srttRound > 1) return;
    this.#lossRound = this.#round;
    for (const sample of this.#bandwidths) sample.rate *= BBR_CONGESTION_BACKOFF;
    this.#reductions++;
    this.#undoable = true;
  }

  /**
   * Undoes a loss that proved spurious on a path that reorders (its
   * original was acked): it no longer counts toward the random loss rate, and the
   * last congestion cut, if made within the last two round trips and not
   * undone yet, is given back (RFC 4015's Eifel response; Linux's undo).
   */
  onSpuriousLoss(): void {
    if (!this.#reordering) return;
    this.#lostThisRound = Math.max(0, this.#lostThisRound - 1);
    if (!this.#undoable || this.#round - this.#lossRound > 2) return;
    this.#undoable = false;
    for (const sample of this.#bandwidths) sample.rate /= BBR_CONGESTION_BACKOFF;
  }

  /**
   * Reacts to a retransmission timeout: the window drops to
   * {@linkcode BBR_TIMEOUT_WINDOW_GAIN} of the BDP (at least
   * {@linkcode BBR_MIN_WINDOW}); acks grow it back to the model's window.
   */
  onTimeout(_inFlight: number, _sendNext: number): void {
    this.#cwnd = Math.max(BBR_MIN_WINDOW, BBR_TIMEOUT_WINDOW_GAIN * (this.bdp ?? 0));
    this.#reductions++;
  }

  #recordBandwidth(rate: number): void {
    const last = this.#bandwidths.at(-1);
    if (last !== undefined && last.round === this.#round) {
      last.rate = Math.max(last.rate, rate);
    } else {
      this.#bandwidths.push({ round: this.#round, rate });
    }
    while (this.#bandwidths[0].round <= this.#round - BBR_BANDWIDTH_ROUNDS) {
      this.#bandwidths.shift();
    }
  }

  #checkFullPipe(): void {
    const bandwidth = this.bandwidth;
    if (bandwidth >= this.#fullBandwidth * FULL_BANDWIDTH_GROWTH) {
      this.#fullBandwidth = bandwidth;
      this.#fullBandwidthRounds = 0;
      return;
    }
    if (++this.#fullBandwidthRounds >= FULL_BANDWIDTH_ROUNDS) this.#filledPipe = true;
  }

  /**
   * Ends startup, on a path that reorders, once the standing RTT shows a
   * queue beyond the jitter (see {@linkcode BBR_STARTUP_QUEUE_FACTOR}).
   */
  #checkStartupQueue(): void {
    if (this.#filledPipe || this.#mode !== "startup" || !this.#reordering) return;
    const standing = this.#standingRtt();
    // A round trip or two without an RTT sample (a timeout) shows nothing.
    if (!Number.isFinite(standing)) return;
    if (standing > BBR_STARTUP_QUEUE_FACTOR * this.#minRtt + this.jitter) this.#filledPipe = true;
  }

  #checkDrain(now: number, inFlight: number): void {
    if (this.#mode === "startup" && this.#filledPipe) {
      this.#mode = "drain";
      this.#pacingGain = 1 / BBR_HIGH_GAIN;
      this.#cwndGain = BBR_HIGH_GAIN;
    }
    if (this.#mode === "drain" && inFlight <= (this.bdp ?? 0)) this.#enterProbeBw(now);
  }

  #enterProbeBw(now: number): void {
    this.#mode = "probe_bw";
    this.#cwndGain = BBR_CWND_GAIN;
    // Start cruising: the phase after the drain one.
    this.#cycleIndex = 2;
    this.#cycleStart = now;
    this.#pacingGain = BBR_PACING_CYCLE[this.#cycleIndex];
  }

  #advanceCycle(now: number, inFlight: number): void {
    const bdp = this.bdp ?? 0;
    const elapsed = now - this.#cycleStart > this.#minRtt;
    const gain = this.#pacingGain;
    let next = elapsed;
    // Probing up lasts until the flight shows the higher rate; draining ends early once drained.
    if (gain > 1) next = elapsed && inFlight >= gain * bdp;
    if (gain < 1) {
      next = inFlight <= bdp || now - this.#cycleStart > BBR_DRAIN_MAX_ROUNDS * this.#minRtt;
    }
    if (!next) return;
    this.#cycleIndex = (this.#cycleIndex + 1) % BBR_PACING_CYCLE.length;
    this.#cycleStart = now;
    this.#pacingGain = BBR_PACING_CYCLE[this.#cycleIndex];
    // Probing up needs the window to carry the higher rate.
    this.#cwndGain = Math.max(BBR_CWND_GAIN, this.#pacingGain);
  }

  #updateMinRtt(
    now: number,
    rtt: number | undefined,
    inFlight: number,
    roundStart: boolean,
    appLimited: boolean,
  ): void {
    const expired = Number.isFinite(this.#minRtt) && now > this.#minRttAt + BBR_MIN_RTT_WINDOW_MS;
    if (rtt !== undefined && (rtt < this.#minRtt || expired)) {
      this.#minRtt = rtt;
      this.#minRttAt = now;
    } else if (rtt !== undefined && rtt <= BBR_MIN_RTT_CONFIRM_FACTOR * this.#minRtt) {
      // The path still shows its smallest RTT: no need to probe for it.
      this.#minRttAt = now;
    }
    // A flow short of data (chat) builds no queue: its samples are the path's RTT already.
    if (expired && !appLimited && this.#mode !== "probe_rtt") {
      this.#mode = "probe_rtt";
      this.#pacingGain = 1;
      this.#cwndGain = 1;
      this.#priorCwnd = this.#cwnd;
      this.#probeRttDoneAt = undefined;
    }
    if (this.#mode !== "probe_rtt") return;
    if (this.#probeRttDoneAt === undefined) {
      if (inFlight <= this.#probeRttWindow()) {
        this.#probeRttDoneAt = now + BBR_PROBE_RTT_MS;
        this.#probeRttRoundDone = false;
        this.#nextRoundDelivered = this.#delivered;
      }
      return;
    }
    if (roundStart) this.#probeRttRoundDone = true;
    if (this.#probeRttRoundDone && now >= this.#probeRttDoneAt) {
      this.#minRttAt = now;
      this.#cwnd = Math.max(this.#cwnd, this.#priorCwnd);
      if (this.#filledPipe) {
        this.#enterProbeBw(now);
      } else {
        this.#mode = "startup";
        this.#pacingGain = BBR_HIGH_GAIN;
        this.#cwndGain = BBR_HIGH_GAIN;
      }
    }
  }

  /** Folds the last round trip's loss rate into the random loss estimate, if the path showed no queue. */
  #endLossRound(): void {
    const total = this.#ackedThisRound + this.#lostThisRound;
    const noQueue = this.#srtt !== undefined &&
      this.#queueRtt() <= BBR_RANDOM_LOSS_RTT_FACTOR * this.#minRtt;
    if (total > 0) {
      const rate = noQueue ? this.#lostThisRound / total : 0;
      this.#randomLoss += (rate - this.#randomLoss) / 4;
    }
    this.#ackedThisRound = 0;
    this.#lostThisRound = 0;
  }

  /**
   * The smallest RTT sample of this round trip and the one before (Copa's
   * standing RTT, over a round trip or two rather than half an SRTT): a
   * queue raises every sample, jitter only some, so where jitter spreads
   * the samples SRTT rises with no queue and this does not.
   */
  #standingRtt(): number {
    return Math.min(this.#roundMinRtt, this.#lastRoundMinRtt);
  }

  /** The RTT that shows a queue: SRTT less the {@linkcode jitter}. */
  #queueRtt(): number {
    return (this.#srtt ?? Infinity) - this.jitter;
  }

  /** Ends a round trip's standing and mean RTT, and keeps the spread between them (see {@linkcode jitter}). */
  #endJitterRound(): void {
    const standing = this.#standingRtt();
    if (this.#roundRtts > 0 && Number.isFinite(standing)) {
      this.#spreads.push(Math.max(0, this.#roundRttSum / this.#roundRtts - standing));
      if (this.#spreads.length > BBR_JITTER_ROUNDS) this.#spreads.shift();
      const sorted = [...this.#spreads].sort((a, b) => a - b);
      this.#spreadMedian = sorted[sorted.length >> 1];
    }
    this.#lastRoundMinRtt = this.#roundMinRtt;
    this.#roundMinRtt = Infinity;
    this.#roundRttSum = 0;
    this.#roundRtts = 0;
  }

  /**
   * 1 / (1 - random loss): the delivery rate counts what arrives, but the
   * bottleneck also carried what random loss took after it, so pacing and
   * the window scale up by that much to keep the link busy.
   */
  #lossCompensation(): number {
    return 1 / (1 - Math.min(this.#randomLoss, BBR_MAX_RANDOM_LOSS));
  }

  /** {@linkcode BBR_LATENESS_GAIN} x the pacer's lateness over the smallest RTT. */
  #lateness(): number {
    return BBR_LATENESS_GAIN * this.#pacer.lateness / this.#minRtt;
  }

  /** Segments of window above gain x BDP (see {@linkcode BBR_QUEUE_ALLOWANCE}). */
  #allowance(bdp: number): number {
    return Math.min(
      BBR_QUEUE_ALLOWANCE,
      Math.max(BBR_MIN_QUEUE_ALLOWANCE, bdp, this.bandwidth * BBR_ALLOWANCE_MS),
    );
  }

  #probeRttWindow(): number {
    return Math.max(BBR_MIN_WINDOW, BBR_PROBE_RTT_GAIN * (this.bdp ?? 0));
  }

  #setPacingRate(now: number, srttMs: number | undefined): void {
    const bandwidth = this.bandwidth;
    let rate: number;
    if (bandwidth > 0) {
      rate = this.#pacingGain * bandwidth * this.#lossCompensation();
    } else if (srttMs !== undefined) {
      // No rate sample yet: the initial window over the first RTT, at startup's gain.
      rate = BBR_HIGH_GAIN * this.#cwnd / Math.max(srttMs, 0.01);
    } else {
      return;
    }
    // In startup, the rate only rises: a low early sample must not slow the ramp.
    if (!this.#filledPipe && Number.isFinite(this.#pacer.rate) && rate < this.#pacer.rate) return;
    // Never slower than the smallest window a round trip: samples taken while
    // recovering from timeouts can be tiny, and pacing at them would space
    // retransmissions beyond the next timeout, which backs off again.
    if (srttMs !== undefined) rate = Math.max(rate, BBR_MIN_WINDOW / Math.max(srttMs, 0.01));
    this.#pacer.refill(now);
    this.#pacer.rate = rate;
  }

  #setWindow(acked: number): void {
    if (this.#mode === "probe_rtt") {
      this.#cwnd = Math.min(this.#cwnd, this.#probeRttWindow());
      return;
    }
    const bdp = this.bdp;
    if (bdp === undefined) {
      this.#cwnd += acked;
    } else {
      const late = Math.min(this.#lateness(), BBR_LATENESS_MAX_BDP) * bdp;
      const target = this.#cwndGain * bdp * this.#lossCompensation() + this.#allowance(bdp) + late;
      if (this.#filledPipe) this.#cwnd = Math.min(this.#cwnd + acked, target);
      else if (this.#cwnd < target) this.#cwnd += acked;
    }
    this.#cwnd = Math.min(Math.max(this.#cwnd, BBR_MIN_WINDOW), this.#options.maxWindow);
  }
}
