/**
 * A token bucket that spaces a sender's segments out at a rate, for the
 * congestion controllers of a reliable channel.
 *
 * @module
 */

/** Rounding slack of the token count, so a refill at the announced time always yields a token. */
const TOKEN_EPSILON = 1e-6;
/** Weight of each new lateness in {@linkcode Pacer.lateness} (RFC 6298's weight of an RTT sample). */
const LATENESS_GAIN = 1 / 8;

/**
 * Lets segments leave at `rate` segments per ms, with bursts of at most
 * `maxBurst` back to back. Time comes from the caller; nothing here reads a
 * clock. An infinite rate (before a controller knows the path) lets every
 * segment go.
 *
 * @example
 * ```ts
 * const pacer = new Pacer(2);
 * pacer.rate = 0.5; // one segment every 2 ms
 * pacer.mayPace(0); // true: the bucket starts full
 * pacer.spend();
 * pacer.mayPace(0); // true
 * pacer.spend();
 * pacer.mayPace(0); // false
 * pacer.nextSendTime(); // 2
 * ```
 */
export class Pacer {
  #maxBurst: number;
  #tokens: number;
  #refilledAt: number | undefined;
  #rate = Infinity;
  #lateness = 0;

  /**
   * Creates a full bucket with an infinite rate.
   *
   * @param maxBurst most segments sent back to back, at least 1
   */
  constructor(maxBurst: number) {
    if (!Number.isInteger(maxBurst) || maxBurst < 1) {
      throw new RangeError(`Cannot use maxBurst ${maxBurst}: it must be a positive integer`);
    }
    this.#maxBurst = maxBurst;
    this.#tokens = maxBurst;
  }

  /** The rate, segments per ms (`Infinity`: no pacing). */
  get rate(): number {
    return this.#rate;
  }

  /** Sets the rate from now on; call {@linkcode Pacer.refill} first to bank the tokens earned so far. */
  set rate(rate: number) {
    this.#rate = rate;
  }

  /**
   * How late the sender ran, smoothed, after pacing held it back: its
   * host's timer and scheduling delays, ms. 0 where the sender runs when it
   * asks to (the simulator on a perfect host).
   */
  get lateness(): number {
    return this.#lateness;
  }

  /**
   * Tells whether a segment may leave now.
   *
   * @param now the current time, ms
   * @returns true when a token is available
   */
  mayPace(now: number): boolean {
    this.refill(now);
    return this.#tokens >= 1 - TOKEN_EPSILON;
  }

  /**
   * Notes that a sender that found the bucket empty runs again: how long
   * after its next token was due goes into {@linkcode Pacer.lateness}. A run
   * before that (an acknowledgement came first) counts nothing.
   *
   * @param now the current time, ms
   */
  noteWake(now: number): void {
    if (this.#tokens >= 1 - TOKEN_EPSILON || !Number.isFinite(this.#rate)) return;
    const late = now - this.nextSendTime();
    if (late >= 0) this.#lateness += (late - this.#lateness) * LATENESS_GAIN;
  }

  /** Spends a token for a segment that left. */
  spend(): void {
    this.#tokens = Math.max(0, this.#tokens - 1);
  }

  /**
   * Tells when the next segment may leave.
   *
   * @returns the time, ms (at most the time of the last check when a token is available)
   */
  nextSendTime(): number {
    const at = this.#refilledAt ?? 0;
    if (this.#tokens >= 1 - TOKEN_EPSILON || !Number.isFinite(this.#rate)) return at;
    return at + (1 - this.#tokens) / this.#rate;
  }

  /**
   * Adds the tokens earned at the current rate up to `now`.
   *
   * @param now the current time, ms
   */
  refill(now: number): void {
    if (this.#refilledAt === undefined || !Number.isFinite(this.#rate)) {
      this.#tokens = this.#maxBurst;
    } else if (now > this.#refilledAt) {
      this.#tokens = Math.min(this.#maxBurst, this.#tokens + (now - this.#refilledAt) * this.#rate);
    }
    this.#refilledAt = now;
  }
}
