/**
 * Delivery rate estimation for a reliable channel (draft-cheng-iccrg-
 * delivery-rate-estimation, as Linux TCP and BBR do it), in segments.
 *
 * @module
 */

/**
 * What the sampler stamps on each transmission of a segment: fields of the
 * segment's own record, so stamping allocates nothing per datagram.
 */
export interface DeliveryStamp {
  /** Segments delivered when it was sent. */
  delivered: number;
  /** When the latest of those was delivered (acknowledged), ms. */
  deliveredAt: number;
  /** When the first segment of its flight window was sent, ms. */
  firstSentAt: number;
  /** Time of this transmission, ms. */
  sentAt: number;
  /** True if the sender had nothing more to send around then (the sample may understate the path). */
  appLimited: boolean;
}

/** One delivery rate sample, taken from an acknowledgement. */
export interface RateSample {
  /** Segments delivered over the interval. */
  delivered: number;
  /** The interval, ms: the longer of the send and the ack intervals. */
  intervalMs: number;
  /** Segments per ms; undefined when the interval was shorter than the smallest RTT (ack compression). */
  rate: number | undefined;
  /** Segments delivered in all when the newest acknowledged segment was sent. */
  priorDelivered: number;
  /** Segments delivered in all, this ack included. */
  totalDelivered: number;
  /** True if the sender was short of data, so the path may carry more. */
  appLimited: boolean;
}

/**
 * Turns acknowledgements into delivery rate samples: for the newest
 * segment an ack covers, the segments delivered since it was sent over the
 * longer of the time it took to send them and the time it took to have them
 * acknowledged. Taking the longer keeps ack compression (a burst of delayed
 * acks) from inflating the rate.
 *
 * @example
 * ```ts
 * const sampler = new DeliveryRateSampler();
 * const blank = () => ({ delivered: 0, deliveredAt: 0, firstSentAt: 0, sentAt: 0, appLimited: false });
 * const a = sampler.stamp(0, 0, blank()), b = sampler.stamp(1, 1, blank());
 * sampler.onAcked(40, [a], undefined)?.rate; // 1 segment over 40 ms: 0.025
 * sampler.onAcked(41, [b], 40)?.rate; // 2 segments over 41 ms
 * ```
 */
export class DeliveryRateSampler {
  #delivered = 0;
  #deliveredAt = 0;
  #firstSentAt = 0;
  /** Delivered count up to which samples are app-limited; 0 when not. */
  #appLimitedUntil = 0;

  /** Segments delivered so far. */
  get delivered(): number {
    return this.#delivered;
  }

  /**
   * Stamps a transmission.
   *
   * @param now the time it leaves, ms
   * @param inFlight segments in flight before it
   * @param into the record to stamp (the segment's), kept until it is acknowledged
   * @returns `into`, stamped
   */
  stamp<T extends DeliveryStamp>(now: number, inFlight: number, into: T): T {
    if (inFlight === 0) {
      // A new flight: measure from now, not from an ack long ago.
      this.#firstSentAt = now;
      this.#deliveredAt = now;
    }
    into.delivered = this.#delivered;
    into.deliveredAt = this.#deliveredAt;
    into.firstSentAt = this.#firstSentAt;
    into.sentAt = now;
    into.appLimited = this.#appLimitedUntil !== 0;
    return into;
  }

  /**
   * Notes that the sender ran out of data with room in its window: samples
   * until what is in flight now is delivered are marked app-limited.
   *
   * @param inFlight segments in flight
   */
  onAppLimited(inFlight: number): void {
    this.#appLimitedUntil = Math.max(this.#delivered + inFlight, 1);
  }

  /**
   * Takes the stamps of the segments an acknowledgement newly covers.
   *
   * @param now the time of the ack, ms
   * @param stamps their stamps (from their latest transmissions)
   * @param minRttMs the path's smallest RTT, ms: a shorter interval gives no sample
   * @returns a sample (its rate undefined when the interval is too short), or
   * undefined when the ack covers nothing
   */
  onAcked(
    now: number,
    stamps: readonly DeliveryStamp[],
    minRttMs: number | undefined,
  ): RateSample | undefined {
    if (stamps.length === 0) return undefined;
    let newest: DeliveryStamp | undefined;
    for (const stamp of stamps) {
      this.#delivered++;
      this.#deliveredAt = now;
      if (
        newest === undefined || stamp.delivered > newest.delivered ||
        (stamp.delivered === newest.delivered && stamp.sentAt > newest.sentAt)
      ) {
        newest = stamp;
      }
    }
    const p = newest!;
    this.#firstSentAt = p.sentAt;
    if (this.#appLimitedUntil !== 0 && this.#delivered > this.#appLimitedUntil) {
      this.#appLimitedUntil = 0;
    }
    const delivered = this.#delivered - p.delivered;
    const intervalMs = Math.max(p.sentAt - p.firstSentAt, now - p.deliveredAt);
    const valid = intervalMs > 0 && (minRttMs === undefined || intervalMs >= minRttMs);
    return {
      delivered,
      intervalMs,
      rate: valid ? delivered / intervalMs : undefined,
      priorDelivered: p.delivered,
      totalDelivered: this.#delivered,
      appLimited: p.appLimited,
    };
  }
}
