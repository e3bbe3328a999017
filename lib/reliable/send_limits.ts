/**
 * How long a reliable channel's sender was held back, and by what: the
 * congestion window, pacing, the send window or the peer's receive window
 * (Linux's `tcp_info` send-limit times, `tcpi_busy_time`,
 * `tcpi_rwnd_limited` and `tcpi_sndbuf_limited`, kept the same way).
 *
 * @module
 */

/** What stopped a sender that had data to send. */
export type SendLimit = "window" | "pacing" | "sendWindow" | "peerWindow";

/** Milliseconds a sender spent held back by each {@linkcode SendLimit}. */
export type SendLimitedMs = Record<SendLimit, number>;

/**
 * Charges the time from one stop of the send loop to its next run to what
 * stopped it. A stop with nothing left to send charges nothing. Time comes
 * from the caller.
 *
 * @example
 * ```ts
 * const limits = new SendLimits();
 * limits.stopped(0, "pacing");
 * limits.resumed(2); // 2 ms limited by pacing
 * limits.stopped(2, undefined); // nothing to send: not limited
 * limits.resumed(9);
 * limits.limitedMs.pacing; // 2
 * ```
 */
export class SendLimits {
  #limitedMs: SendLimitedMs = { window: 0, pacing: 0, sendWindow: 0, peerWindow: 0 };
  #limit: SendLimit | undefined;
  #since = 0;

  /** A copy of the time held back by each limit, ms. */
  get limitedMs(): SendLimitedMs {
    return { ...this.#limitedMs };
  }

  /**
   * The send loop runs again: the time since it stopped goes to what stopped it.
   *
   * @param now the current time, ms
   */
  resumed(now: number): void {
    if (this.#limit !== undefined && now > this.#since) {
      this.#limitedMs[this.#limit] += now - this.#since;
    }
    this.#limit = undefined;
  }

  /**
   * The send loop stopped.
   *
   * @param now the current time, ms
   * @param limit what stopped it, or `undefined` when nothing was left to send
   */
  stopped(now: number, limit: SendLimit | undefined): void {
    this.#limit = limit;
    this.#since = now;
  }
}
