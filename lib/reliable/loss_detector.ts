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
 * detector.onAcked(later); // three times, for later transmissions
 * detector.takeNextLoss(3); // segment, now judged lost
 * detector.nextLost(); // segment, until takeLost() or an ack
 * ```
 */
export class LossDetector {
  /** Transmissions in order, oldest first; an entry is stale once its segment is acked or sent again. */
  #transmissions: { segment: OutgoingSegment; order: number }[] = [];
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
    this.#transmissions.push({ segment, order: segment.order });
  }

  /**
   * Records that the peer acknowledged a segment for the first time.
   *
   * @param segment the segment newly acknowledged
   */
  onAcked(segment: OutgoingSegment): void {
    if (segment.lost) {
      segment.lost = false;
      this.#lostCount--;
    }
    const orders = this.#ackedOrders;
    const keep = this.#keep;
    if (orders.length >= keep && segment.order <= orders[keep - 1]) return;
    orders.push(segment.order);
    orders.sort((x, y) => y - x);
    if (orders.length > keep) orders.length = keep;
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
    const entries = this.#transmissions;
    while (this.#transmissionsHead < entries.length) {
      const { segment, order } = entries[this.#transmissionsHead];
      if (!segment.acked && !segment.lost && segment.order === order) {
        // Entries behind the head go, or a bulk transfer that never drains
        // its flight would keep every segment it sent, payloads included.
        if (this.#transmissionsHead >= 1024 && this.#transmissionsHead * 2 >= entries.length) {
          this.#transmissions = entries.slice(this.#transmissionsHead);
          this.#transmissionsHead = 0;
        }
        return segment;
      }
      this.#transmissionsHead++;
    }
    this.#transmissions = [];
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
