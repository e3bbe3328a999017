/**
 * Per-address rate limits, sans-I/O: one token bucket per source address,
 * with the time passed in by the caller. The server driver keeps one limiter
 * for traffic without a session (strict) and one for session traffic (loose).
 *
 * @module
 */

/** Options of a {@linkcode RateLimiter}. */
export interface RateLimiterOptions {
  /** Tokens added per second per address: the sustained rate allowed. */
  ratePerSecond: number;
  /** Most tokens an address can save up: the burst allowed after a quiet spell (default: 2 × rate). */
  burst?: number;
  /** Most addresses tracked at once; past it the least recently seen goes (default 10,000). */
  maxAddresses?: number;
  /** At most one report per address per this many ms (default 10,000). */
  reportEveryMs?: number;
}

/** What a limiter says about one packet. */
export type RateDecision =
  | { readonly allowed: true }
  | {
    readonly allowed: false;
    /**
     * Present at most once per `reportEveryMs` per address: time to log a
     * line. `dropped` counts the packets refused since the previous report
     * (this one included).
     */
    readonly report?: { readonly dropped: number };
  };

/** Default limit on UDP datagrams without a live session, per second per address. */
export const DEFAULT_RATE_LIMIT = 100;
/** Default limit on UDP datagrams with a live session token, per second per address. */
export const DEFAULT_SESSION_RATE_LIMIT = 2000;
/** Default limit on new registrations per minute per address (UDP and TCP together). */
export const DEFAULT_REGISTER_RATE = 20;
/** Default bound on tracked addresses. */
export const DEFAULT_MAX_ADDRESSES = 10_000;
/** Default report period, ms. */
export const DEFAULT_REPORT_EVERY_MS = 10_000;

interface Bucket {
  tokens: number;
  updatedAt: number;
  /** Packets refused since the last report. */
  dropped: number;
  reportedAt: number;
}

const ALLOWED: RateDecision = { allowed: true };
const REFUSED: RateDecision = { allowed: false };

/**
 * A token bucket per address. Each packet takes one token; an address earns
 * `ratePerSecond` tokens a second, up to `burst`; a packet that finds no token
 * is refused. Memory is bounded: past `maxAddresses` the least recently seen
 * address is forgotten, which only ever forgives it (a new address starts
 * with a full bucket).
 *
 * Keys are addresses as {@linkcode addressKey} gives them: an IPv4-mapped IPv6
 * address counts as its IPv4 address, and IPv6 addresses count per /64, the
 * block one host usually holds.
 *
 * @example
 * ```ts
 * const limiter = new RateLimiter({ ratePerSecond: 100 });
 * const decision = limiter.take(now, "192.0.2.7");
 * if (!decision.allowed) {
 *   if (decision.report) log(`dropped ${decision.report.dropped} from 192.0.2.7`);
 *   return; // drop the packet
 * }
 * ```
 */
export class RateLimiter {
  readonly #perMs: number;
  readonly #burst: number;
  readonly #maxAddresses: number;
  readonly #reportEveryMs: number;
  /** Least recently seen first. */
  readonly #buckets = new Map<string, Bucket>();

  /**
   * @param options the rate, burst, memory bound and report period
   * @throws {RangeError} if an option is out of range
   */
  constructor(options: RateLimiterOptions) {
    const rate = options.ratePerSecond;
    const burst = options.burst ?? 2 * rate;
    const maxAddresses = options.maxAddresses ?? DEFAULT_MAX_ADDRESSES;
    const reportEveryMs = options.reportEveryMs ?? DEFAULT_REPORT_EVERY_MS;
    if (!Number.isFinite(rate) || rate <= 0) {
      throw new RangeError(`ratePerSecond must be a positive number, not ${rate}`);
    }
    if (!Number.isFinite(burst) || burst < 1) {
      throw new RangeError(`burst must be a number of at least 1, not ${burst}`);
    }
    if (!Number.isInteger(maxAddresses) || maxAddresses < 1) {
      throw new RangeError(`maxAddresses must be a positive integer, not ${maxAddresses}`);
    }
    if (!Number.isFinite(reportEveryMs) || reportEveryMs < 0) {
      throw new RangeError(`reportEveryMs must be a number of at least 0, not ${reportEveryMs}`);
    }
    this.#perMs = rate / 1000;
    this.#burst = burst;
    this.#maxAddresses = maxAddresses;
    this.#reportEveryMs = reportEveryMs;
  }

  /** @returns how many addresses are tracked now */
  get size(): number {
    return this.#buckets.size;
  }

  /** @returns the sustained rate, per second */
  get ratePerSecond(): number {
    return this.#perMs * 1000;
  }

  /**
   * Tells whether a packet would be allowed now, without taking a token.
   *
   * @param now the current time, ms
   * @param address the source address
   * @param port the source port, for a per-port budget
   * @returns true if a token is there
   */
  available(now: number, address: string, port?: number): boolean {
    const bucket = this.#buckets.get(limitKey(address, port));
    if (bucket === undefined) return true;
    const elapsed = Math.max(0, now - bucket.updatedAt);
    return Math.min(this.#burst, bucket.tokens + elapsed * this.#perMs) >= 1;
  }

  /**
   * Takes a token for one packet from an address.
   *
   * @param now the current time, ms
   * @param address the packet's source IP address
   * @param port its source port, to limit per address and port rather than per address
   * @returns allowed, or refused (with a report at most once per period)
   */
  take(now: number, address: string, port?: number): RateDecision {
    const key = limitKey(address, port);
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: this.#burst, updatedAt: now, dropped: 0, reportedAt: -Infinity };
      while (this.#buckets.size >= this.#maxAddresses) {
        this.#buckets.delete(this.#buckets.keys().next().value!);
      }
    } else {
      // Move it to the end: it is now the most recently seen.
      this.#buckets.delete(key);
      const elapsed = Math.max(0, now - bucket.updatedAt);
      bucket.tokens = Math.min(this.#burst, bucket.tokens + elapsed * this.#perMs);
      bucket.updatedAt = Math.max(bucket.updatedAt, now);
    }
    this.#buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return ALLOWED;
    }
    bucket.dropped++;
    if (now - bucket.reportedAt < this.#reportEveryMs) return REFUSED;
    const dropped = bucket.dropped;
    bucket.dropped = 0;
    bucket.reportedAt = now;
    return { allowed: false, report: { dropped } };
  }

  /**
   * The report owed for drops that came after the last report, so that a
   * flood that stops still has its whole count logged once its period is
   * over, and not only when the next drop comes.
   *
   * @param now the current time, ms
   * @param address the source IP address, as given to `take`
   * @param port the source port, as given to `take`
   * @returns the report if one is due now, `"later"` if drops wait for their
   *   period to end, undefined if nothing is owed
   */
  flush(now: number, address: string, port?: number): { dropped: number } | "later" | undefined {
    const bucket = this.#buckets.get(limitKey(address, port));
    if (bucket === undefined || bucket.dropped === 0) return undefined;
    if (now - bucket.reportedAt < this.#reportEveryMs) return "later";
    const dropped = bucket.dropped;
    bucket.dropped = 0;
    bucket.reportedAt = now;
    return { dropped };
  }
}

function limitKey(address: string, port: number | undefined): string {
  return port === undefined ? addressKey(address) : `${addressKey(address)} ${port}`;
}

/**
 * The key an address is limited under: an IPv4 address as it is, an
 * IPv4-mapped IPv6 address (`::ffff:192.0.2.7`) as its IPv4 address, and any
 * other IPv6 address as its /64 prefix (`2001:db8:0:1::/64`).
 *
 * @param address an IP address as the socket reported it
 * @returns the key
 *
 * @example
 * ```ts
 * addressKey("::ffff:192.0.2.7"); // "192.0.2.7"
 * addressKey("2001:db8::1"); // "2001:db8:0:0::/64"
 * ```
 */
export function addressKey(address: string): string {
  if (!address.includes(":")) return address;
  const lower = address.toLowerCase();
  if (lower.startsWith("::ffff:") && lower.includes(".")) return lower.slice(7);
  const zone = lower.indexOf("%");
  const bare = zone === -1 ? lower : lower.slice(0, zone);
  const [head, tail] = bare.split("::");
  const front = head === "" ? [] : head.split(":");
  let groups: string[];
  if (tail === undefined) {
    groups = front;
  } else {
    const back = tail === "" ? [] : tail.split(":");
    groups = [...front, ...Array(Math.max(0, 8 - front.length - back.length)).fill("0"), ...back];
  }
  const prefix = groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, ""));
  while (prefix.length < 4) prefix.push("0");
  return `${prefix.join(":")}::/64`;
}
