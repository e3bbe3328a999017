/**
 * How many lookups incoming peer requests may cause, per IP address: a token
 * bucket for each (bursts of `perSecond`), so that a stranger's flood of
 * `peer_connect` makes no flood of lookups to the server, and other
 * addresses keep their own budget. Sans-I/O: the time is passed in.
 *
 * @module
 */

/** Default lookups per second per address (and burst). */
export const DEFAULT_LOOKUPS_PER_SECOND = 5;
/** Most addresses remembered; the least recently seen is forgotten first. */
const ADDRESSES_KEPT = 1024;

/**
 * Per-address lookup budgets.
 *
 * @example
 * ```ts
 * const budget = new LookupBudget();
 * if (!budget.take(now, "192.0.2.7")) return reject("try again in a moment");
 * ```
 */
export class LookupBudget {
  readonly perSecond: number;
  #buckets = new Map<string, { tokens: number; at: number }>();

  /** @param perSecond lookups per second per address, and the burst */
  constructor(perSecond = DEFAULT_LOOKUPS_PER_SECOND) {
    this.perSecond = perSecond;
  }

  /**
   * Spends one lookup of `ip`'s budget, if it has one.
   *
   * @param now the current time, ms
   * @param ip the requester's IP address
   * @returns true if the lookup may be made
   */
  take(now: number, ip: string): boolean {
    let bucket = this.#buckets.get(ip);
    if (bucket === undefined) {
      if (this.#buckets.size >= ADDRESSES_KEPT) {
        this.#buckets.delete(this.#buckets.keys().next().value!);
      }
      bucket = { tokens: this.perSecond, at: now };
    } else this.#buckets.delete(ip); // set again below: the most recently seen
    this.#buckets.set(ip, bucket);
    bucket.tokens = Math.min(
      this.perSecond,
      bucket.tokens + (now - bucket.at) * this.perSecond / 1000,
    );
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens--;
    return true;
  }
}
