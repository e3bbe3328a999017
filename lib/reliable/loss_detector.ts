/**
 * The loss detection of a reliable channel: the order of transmissions, the
 * segments judged lost and waiting for their retransmission, and the
 * fast-retransmit rule over the latest acknowledged transmissions.
 *
 * @module
 */
import type { OutgoingSegment } from "./send_buffer.ts";

/**
 * Tracks transmissions in the order they left and decides which segments
 * are lost: a segment is lost once `dupThresh` segments transmitted after
 * its latest transmission are acknowledged (so at most once per round
 * trip), or, on a timeout, everything outstanding.
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
   * Records that the peer acknowledged a segment for the first time. The
   * ack counts toward judging earlier transmissions lost only if it can be
   * for the segment's latest transmission: a retransmitted segment acked
   * sooner than the smallest RTT after it left was acked for an earlier
   * copy (RFC 8985 section 6.2, step 2), and taking that ack for the
   * retransmission's would judge lost everything sent between the two,
   * still in flight, whose retransmissions then repeat the mistake.
   *
   * @param segment the segment newly acknowledged
   * @param now the time of the ack, ms
   * @param minRttMs the path's smallest RTT, ms
   */
  onAcked(segment: OutgoingSegment, now: number, minRttMs: number): void {
    if (segment.lost) {
      segment.lost = false;
      this.#lostCount--;
    }
    if (segment.transmissions > 1 && now - segment.sentAt < minRttMs) return;
    const orders = this.#ackedOrders;
    const keep = this.#keep;
    const order = segment.order;
    if (orders.length >= keep && order <= orders[keep - 1]) return;
    // Insert in place, highest first: at most `keep` (a few) entries.
    let i = Math.min(orders.length, keep - 1);
    for (; i > 0 && orders[i - 1] < order; i--) orders[i] = orders[i - 1];
    orders[i] = order;
  }

  /**
   * Judges lost the oldest outstanding segment if `dupThresh` transmissions
   * after its own were acknowledged. Call until it returns `undefined`.
   *
   * @param dupThresh the fast retransmit threshold in force
   * @returns the segment now judged lost, or `undefined`
   */
  takeNextLoss(dupThresh: number): OutgoingSegment | undefined {
    const threshold = this.#ackedOrders[dupThresh - 1];
    if (threshold === undefined) return undefined;
    const oldest = this.oldest();
    if (oldest === undefined || oldest.order >= threshold) return undefined;
    this.#transmissionsHead++;
    this.#markLost(oldest);
    return oldest;
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
