/**
 * The loss detection of a reliable channel: the order of transmissions, the
 * segments judged lost and waiting for their retransmission, and RACK's
 * time-based rule (RFC 8985) beside the fast-retransmit rule over the
 * latest acknowledged transmissions.
 *
 * @module
 */
import type { OutgoingSegment } from "./send_buffer.ts";

/** Round trips without a spurious retransmission after which the reordering window shrinks back (RFC 8985: 16). */
const REORDERING_PERSIST_ROUNDS = 16;
/**
 * Segments a first timeout resends (RFC 9002 section 6.2.4: one or two).
 * In simulation, one made a transfer through bursts of loss slower (chat
 * delays at 10% loss in bursts of 16: median 0.52 s against 0.28 s with
 * two); more than two only wastes more when the timeout was spurious.
 */
export const TIMEOUT_PROBES = 2;
/**
 * Largest multiple of min_rtt / 4 the reordering window grows to (and at
 * most SRTT): one min_rtt. Session 20 chose 2 while jitter set off
 * congestion cuts (two transfers at 3% loss, 5-30 ms delay and 3%
 * reordering finished 2-8x apart with 8). Once the controller told jitter
 * from a queue, ±10 ms on a 20 ms path (RTTs of 20 to 60 ms) needed more:
 * at 8 MB/s (seeds 1-4, 5-20 s) 0.15 of the link with 2, 0.82-0.86 with 4,
 * 0.36-0.74 with 6 and 0.36-0.62 with 8, with more retransmissions
 * proved spurious (13-20% of segments against 6.5%; why is not yet known).
 */
const MAX_REORDERING_STEPS = 4;

/**
 * Tracks transmissions in the order they left and decides which segments
 * are lost, as RACK does (RFC 8985 section 6): a segment is lost once a
 * segment transmitted after it was acknowledged and it has been out for
 * longer than that one's RTT plus a reordering window. Until reordering is
 * seen the window is zero once `dupThresh` later transmissions are acked
 * (the fast-retransmit rule, at most once per round trip); afterwards it is
 * min_rtt / 4, times a multiplier that grows each time a retransmission
 * proves spurious (its ack came sooner than min_rtt after it: the original
 * was acked, RFC 8985 section 6.2 step 2), capped at SRTT, and shrinks back
 * once neither shows for 16 round trips. On a timeout, the oldest two
 * segments ({@linkcode TIMEOUT_PROBES}) or everything outstanding.
 *
 * @example
 * ```ts
 * const detector = new LossDetector(3);
 * detector.onTransmit(segment);
 * detector.onAcked(later, now, minRtt); // three times, for later transmissions
 * detector.takeNextLoss(3); // segment, now judged lost
 * detector.nextLost(); // segment, until takeLost() or an ack
 * ```
 */
export class LossDetector {
  /**
   * Transmissions in order, oldest first, as two parallel arrays (no object
   * a transmission); an entry is stale once its segment is acked or sent again.
   */
  #transmitted: OutgoingSegment[] = [];
  #transmittedOrders: number[] = [];
  #transmissionsHead = 0;
  /** Segments judged lost, waiting for their retransmission, oldest first. */
  #lost: OutgoingSegment[] = [];
  #lostHead = 0;
  #lostCount = 0;
  #order = 0;
  /** Latest transmission orders of acknowledged segments, highest first, at most `#keep`. */
  #ackedOrders: number[] = [];
  #keep: number;
  /** RACK.rtt: the RTT of the most recently transmitted segment acknowledged, ms. */
  #rackRtt = 0;
  /** When a segment sent once was last acked after one sent later, ms. */
  #reorderedAt = -Infinity;
  #highestAckedSeq = -Infinity;
  /** True while an ack may report late what a full ack before it left out (see `onAckRanges`). */
  #sackTruncated = false;
  #lastAckFull = false;
  #reorderingSteps = 1;
  /** When a retransmission last proved spurious, ms. */
  #spuriousAt = -Infinity;
  /** When the oldest segment will be judged lost unless acked first, ms, as of the last `takeNextLoss`. */
  #lossAt: number | undefined;
  #spurious = 0;

  /**
   * Creates a detector with nothing sent.
   *
   * @param largestDupThresh the largest threshold `takeNextLoss` will be given
   */
  constructor(largestDupThresh: number) {
    this.#keep = largestDupThresh;
  }

  /** Segments judged lost and not yet retransmitted or acknowledged. */
  get lostCount(): number {
    return this.#lostCount;
  }

  /** Retransmissions that proved spurious: acknowledged sooner than min_rtt after they left. */
  get spurious(): number {
    return this.#spurious;
  }

  /**
   * Tells whether reordering was seen lately: a segment sent once was
   * acked below one acked before within the last 16 round trips (RFC 8985
   * section 6.2 step 5's time for the window to persist).
   *
   * @param now the current time, ms
   * @param srttMs the smoothed RTT, ms
   * @returns true while the path reorders
   */
  reordering(now: number, srttMs: number): boolean {
    return now - this.#reorderedAt <= REORDERING_PERSIST_ROUNDS * srttMs;
  }

  /** When `takeNextLoss` will judge the oldest segment lost by time, if it is not acked first, ms. */
  get lossAt(): number | undefined {
    return this.#lossAt;
  }

  /**
   * Records a transmission (first or again): stamps its order.
   *
   * @param segment the segment leaving now
   */
  onTransmit(segment: OutgoingSegment): void {
    segment.order = ++this.#order;
    this.#transmitted.push(segment);
    this.#transmittedOrders.push(segment.order);
  }

  /**
   * Takes whether an ack carried as many SACK ranges as an ack holds: it may
   * have left out ranges between its lowest and highest, which a later ack
   * reports below segments acked before, not reordered. Call before the
   * ack's `onAcked` calls.
   *
   * @param full true when the ack's ranges filled it
   */
  onAckRanges(full: boolean): void {
    this.#sackTruncated = full || this.#lastAckFull;
    this.#lastAckFull = full;
  }

  /**
   * Records that the peer acknowledged a segment for the first time. Call
   * for the segments of one ack in sequence order. The ack counts toward
   * judging earlier transmissions lost only if it can be for the segment's
   * latest transmission: a retransmitted segment acked sooner than the
   * smallest RTT after it left was acked for an earlier copy (RFC 8985
   * section 6.2, step 2), and taking that ack for the retransmission's
   * would judge lost everything sent between the two, still in flight,
   * whose retransmissions then repeat the mistake.
   *
   * @param segment the segment newly acknowledged
   * @param now the time of the ack, ms
   * @param minRttMs the path's smallest RTT, ms (0 before any sample)
   */
  onAcked(segment: OutgoingSegment, now: number, minRttMs: number): void {
    if (segment.lost) {
      segment.lost = false;
      this.#lostCount--;
    }
    const orders = this.#ackedOrders;
    const keep = this.#keep;
    const order = segment.order;
    const rtt = now - segment.sentAt;
    if (segment.transmissions > 1 && rtt < minRttMs) {
      // The original's ack (RFC 8985 6.2 step 2): the retransmission was
      // spurious, and the window grows, at most once a round trip (step 4).
      this.#spurious++;
      if (now - this.#spuriousAt > minRttMs) {
        this.#reorderingSteps = Math.min(this.#reorderingSteps + 1, MAX_REORDERING_STEPS);
      }
      this.#spuriousAt = now;
      return;
    }
    // Sent once, below a segment acked before (Linux's test, by sequence:
    // the segments of one ack come in sequence order).
    const below = segment.seq < this.#highestAckedSeq;
    if (below && segment.transmissions === 1 && !this.#sackTruncated) this.#reorderedAt = now;
    this.#highestAckedSeq = Math.max(this.#highestAckedSeq, segment.seq);
    if (orders.length === 0 || order > orders[0]) this.#rackRtt = rtt;
    if (orders.length >= keep && order <= orders[keep - 1]) return;
    // Insert in place, highest first: at most `keep` (a few) entries.
    let i = Math.min(orders.length, keep - 1);
    for (; i > 0 && orders[i - 1] < order; i--) orders[i] = orders[i - 1];
    orders[i] = order;
  }

  /**
   * Judges lost the oldest outstanding segment if a transmission after its
   * own was acknowledged and it has been out longer than that one's RTT
   * plus the reordering window. Call until it returns `undefined`.
   *
   * @param dupThresh the fast retransmit threshold in force
   * @param now the current time, ms
   * @param minRttMs the path's smallest recent RTT, ms (0: no reordering window)
   * @param srttMs the smoothed RTT, ms, which caps the reordering window
   * @returns the segment now judged lost, or `undefined`
   */
  takeNextLoss(
    dupThresh: number,
    now = 0,
    minRttMs = 0,
    srttMs = minRttMs,
  ): OutgoingSegment | undefined {
    this.#lossAt = undefined;
    const oldest = this.oldest();
    if (oldest === undefined || !(oldest.order < this.#ackedOrders[0])) return undefined;
    const threshold = this.#ackedOrders[dupThresh - 1];
    // RFC 8985 6.2 step 5 keeps the window only while reordering is seen.
    const persist = REORDERING_PERSIST_ROUNDS * srttMs;
    if (now - this.#spuriousAt > persist) this.#reorderingSteps = 1;
    const window = Math.min(this.#reorderingSteps * minRttMs / 4, srttMs);
    const lossAt = oldest.sentAt + this.#rackRtt + window;
    if (now - this.#reorderedAt > persist) {
      // No reordering seen lately: the fast-retransmit rule alone, at once.
      if (!(oldest.order < threshold)) return undefined;
    } else if (now < lossAt) {
      this.#lossAt = lossAt;
      return undefined;
    }
    this.#transmissionsHead++;
    this.#markLost(oldest);
    return oldest;
  }

  /**
   * Judges lost the oldest outstanding segments alone: the probes of a
   * first timeout (RFC 5682's F-RTO, RFC 8985's tail loss probe, RFC 9002's
   * PTO).
   *
   * @param probes how many, {@linkcode TIMEOUT_PROBES} unless the channel asks for more
   * @returns how many segments were newly judged lost
   */
  markProbesLost(probes = TIMEOUT_PROBES): number {
    let marked = 0;
    for (let oldest = this.oldest(); oldest && marked < probes; oldest = this.oldest()) {
      this.#transmissionsHead++;
      this.#markLost(oldest);
      marked++;
    }
    return marked;
  }

  /**
   * Judges lost everything outstanding (after a retransmission timeout, as
   * RFC 6675 section 5.1).
   *
   * @returns how many segments were newly judged lost
   */
  markAllLost(): number {
    let count = 0;
    for (let next = this.oldest(); next; next = this.oldest()) {
      this.#transmissionsHead++;
      this.#markLost(next);
      count++;
    }
    return count;
  }

  /**
   * The unacked segment transmitted longest ago (not judged lost), dropping stale entries.
   *
   * @returns the segment, or `undefined` when nothing is outstanding
   */
  oldest(): OutgoingSegment | undefined {
    const segments = this.#transmitted;
    const orders = this.#transmittedOrders;
    while (this.#transmissionsHead < segments.length) {
      const head = this.#transmissionsHead;
      const segment = segments[head];
      if (!segment.acked && !segment.lost && segment.order === orders[head]) {
        // Entries behind the head go, or a bulk transfer that never drains
        // its flight would keep every segment it sent, payloads included.
        if (head >= 1024 && head * 2 >= segments.length) {
          this.#transmitted = segments.slice(head);
          this.#transmittedOrders = orders.slice(head);
          this.#transmissionsHead = 0;
        }
        return segment;
      }
      this.#transmissionsHead++;
    }
    this.#transmitted = [];
    this.#transmittedOrders = [];
    this.#transmissionsHead = 0;
    return undefined;
  }

  /**
   * The next segment judged lost and still unacked, dropping acked ones.
   *
   * @returns the segment to retransmit first, or `undefined`
   */
  nextLost(): OutgoingSegment | undefined {
    while (this.#lostHead < this.#lost.length) {
      const segment = this.#lost[this.#lostHead];
      if (segment.lost) return segment;
      this.#lostHead++;
    }
    this.#lost = [];
    this.#lostHead = 0;
    return undefined;
  }

  /**
   * Takes the segment `nextLost` returned: it is about to be retransmitted.
   *
   * @param segment the segment `nextLost` just returned
   */
  takeLost(segment: OutgoingSegment): void {
    this.#lostHead++;
    segment.lost = false;
    this.#lostCount--;
  }

  #markLost(segment: OutgoingSegment): void {
    segment.lost = true;
    this.#lostCount++;
    this.#lost.push(segment);
  }
}
