/**
 * Login throttling per source address and name, sans-I/O: the caller passes
 * the time in, nothing here reads a clock.
 *
 * OWASP's advice for known user names: a lock on the name as a whole lets
 * anyone who knows it keep its owner out, so failures count per (source,
 * name) and the source that fails is slowed down with growing delays, while
 * the owner on another address still gets in.
 *
 * @module
 */

/** Options for {@link LoginLimiter}. */
export interface LoginLimiterOptions {
  /** Consecutive failures from one source that block it for the name, 1 to 5 (default 3). */
  maxAttempts?: number;
  /** How long the first block lasts, in milliseconds (default 10,000); each later one doubles. */
  lockoutMs?: number;
  /** The longest block, in milliseconds (default 15 minutes, at least `lockoutMs`). */
  maxLockoutMs?: number;
  /** Most (source, name) pairs tracked at once; past it the least recently failed goes (default 100,000). */
  maxTracked?: number;
}

/** The answer of {@link LoginLimiter.check}. */
export type LoginCheck = { blocked: false } | { blocked: true; retryAfterMs: number };

/** The answer of {@link LoginLimiter.failed}. */
export interface LoginFailure {
  /** True if the source is now blocked for the name (by this failure or an earlier one). */
  blocked: boolean;
  /** Milliseconds until the block ends; present when `blocked`. */
  retryAfterMs?: number;
  /** Failures left before the block; 0 when `blocked`. */
  attemptsLeft: number;
}

interface Entry {
  /** Failures in the current streak. */
  failures: number;
  /** When the latest counted failure happened. */
  lastFailureAt: number;
  /** Blocks served so far: the next one lasts `lockoutMs × 2^blocks`, capped. */
  blocks: number;
  /** When the current block ends (in the past if none). */
  blockedUntil: number;
  /** When the entry is forgotten: a quiet spell as long as the next block. */
  forgetAt: number;
}

/** Default consecutive failures before a block. */
export const DEFAULT_MAX_ATTEMPTS = 3;
/** Default first block in milliseconds. */
export const DEFAULT_LOCKOUT_MS = 10_000;
/** Default longest block in milliseconds. */
export const DEFAULT_MAX_LOCKOUT_MS = 15 * 60_000;
/** Default bound on tracked (source, name) pairs. */
export const DEFAULT_MAX_TRACKED = 100_000;

/**
 * Counts consecutive failed logins per (source, name) and blocks that source
 * for that name after the `maxAttempts`-th: for `lockoutMs` the first time,
 * twice as long each time after, up to `maxLockoutMs`. Attempts while
 * blocked are refused without being counted and do not extend the block;
 * once it ends the count starts over. A streak that never reaches the limit
 * is forgotten `lockoutMs` after its latest failure; the doubling is
 * forgotten after a quiet spell as long as the next block would be. A
 * success from the source clears its entry; other sources are not affected
 * by anyone's failures.
 *
 * So a guesser gets at most `maxAttempts` tries per block, and the blocks
 * grow to `maxLockoutMs`, while the owner on another address logs in at
 * once. Keys are `addressKey(ip)` (one per IPv4 address or IPv6 /64) and
 * case-folded names (`nameKey`); pass the name whether or not it exists, so
 * the limiter answers the same for both and reveals nothing.
 *
 * Memory is bounded: entries are kept least recently failed first, expired
 * ones at the front are dropped as calls come in, and past `maxTracked`
 * pairs the least recently failed is dropped early (which only forgives it).
 *
 * @example
 * ```ts
 * const limiter = new LoginLimiter({ maxAttempts: 3, lockoutMs: 10_000 });
 * const source = addressKey(from.address);
 * const check = limiter.check(now, source, nameKey(name));
 * if (check.blocked) return refuse(check.retryAfterMs);
 * if (await verify()) limiter.succeeded(source, nameKey(name));
 * else limiter.failed(now, source, nameKey(name));
 * ```
 */
export class LoginLimiter {
  readonly #maxAttempts: number;
  readonly #lockoutMs: number;
  readonly #maxLockoutMs: number;
  readonly #maxTracked: number;
  /** Least recently failed first. */
  readonly #entries = new Map<string, Entry>();

  /**
   * @param options attempts, block durations and memory bound
   * @throws {RangeError} if an option is out of range
   */
  constructor(options: LoginLimiterOptions = {}) {
    const maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    const lockoutMs = options.lockoutMs ?? DEFAULT_LOCKOUT_MS;
    const maxLockoutMs = options.maxLockoutMs ?? Math.max(DEFAULT_MAX_LOCKOUT_MS, lockoutMs);
    const maxTracked = options.maxTracked ?? DEFAULT_MAX_TRACKED;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 5) {
      throw new RangeError(`maxAttempts must be an integer from 1 to 5, not ${maxAttempts}`);
    }
    if (!Number.isFinite(lockoutMs) || lockoutMs <= 0) {
      throw new RangeError(`lockoutMs must be a positive number, not ${lockoutMs}`);
    }
    if (!Number.isFinite(maxLockoutMs) || maxLockoutMs < lockoutMs) {
      throw new RangeError(`maxLockoutMs must be at least lockoutMs, not ${maxLockoutMs}`);
    }
    if (!Number.isInteger(maxTracked) || maxTracked < 1) {
      throw new RangeError(`maxTracked must be a positive integer, not ${maxTracked}`);
    }
    this.#maxAttempts = maxAttempts;
    this.#lockoutMs = lockoutMs;
    this.#maxLockoutMs = maxLockoutMs;
    this.#maxTracked = maxTracked;
  }

  /** @returns how many (source, name) pairs are tracked now (expired ones may linger) */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Says whether a login for the name may be tried from the source now. Call
   * it before verifying the secret; a blocked attempt must not be verified
   * or counted.
   *
   * @param now the current time in milliseconds
   * @param source the source's address key (`addressKey`)
   * @param nameKey the case-folded name
   * @returns not blocked, or blocked with the milliseconds left
   */
  check(now: number, source: string, nameKey: string): LoginCheck {
    const entry = this.#live(now, pairKey(source, nameKey));
    if (entry !== undefined && entry.blockedUntil > now) {
      return { blocked: true, retryAfterMs: entry.blockedUntil - now };
    }
    return { blocked: false };
  }

  /**
   * Records a failed login (wrong secret or unknown name) from the source.
   * The `maxAttempts`-th consecutive failure blocks the source for the name;
   * a failure reported while it is blocked is not counted.
   *
   * @param now the current time in milliseconds
   * @param source the source's address key (`addressKey`)
   * @param nameKey the case-folded name
   * @returns whether the source is now blocked, for how long, and how many tries are left
   */
  failed(now: number, source: string, nameKey: string): LoginFailure {
    const key = pairKey(source, nameKey);
    const entry = this.#live(now, key) ??
      { failures: 0, lastFailureAt: -Infinity, blocks: 0, blockedUntil: -Infinity, forgetAt: 0 };
    if (entry.blockedUntil > now) {
      return { blocked: true, retryAfterMs: entry.blockedUntil - now, attemptsLeft: 0 };
    }
    if (now - entry.lastFailureAt >= this.#lockoutMs) entry.failures = 0;
    entry.failures++;
    entry.lastFailureAt = now;
    let blockMs = 0;
    if (entry.failures >= this.#maxAttempts) {
      blockMs = this.#blockMs(entry.blocks);
      entry.blocks++;
      entry.failures = 0;
      entry.blockedUntil = now + blockMs;
    }
    const quietMs = entry.blocks === 0 ? this.#lockoutMs : this.#blockMs(entry.blocks);
    entry.forgetAt = Math.max(now, entry.blockedUntil) + quietMs;
    // Re-insert at the end: it is now the most recently failed.
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    while (this.#entries.size > this.#maxTracked) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    return blockMs > 0
      ? { blocked: true, retryAfterMs: blockMs, attemptsLeft: 0 }
      : { blocked: false, attemptsLeft: this.#maxAttempts - entry.failures };
  }

  /**
   * Records a successful login from the source, which clears its entry for
   * the name (and nobody else's).
   *
   * @param source the source's address key (`addressKey`)
   * @param nameKey the case-folded name
   */
  succeeded(source: string, nameKey: string): void {
    this.#entries.delete(pairKey(source, nameKey));
  }

  /**
   * Replaces what is known of a (source, name) pair with its failures as a
   * shared store recorded them (failures from every instance, oldest first),
   * counted as if they had happened here.
   *
   * @param source the source's address key (`addressKey`)
   * @param nameKey the case-folded name
   * @param failures when each failure happened, ms, oldest first
   */
  replay(source: string, nameKey: string, failures: readonly number[]): void {
    this.#entries.delete(pairKey(source, nameKey));
    for (const at of failures) this.failed(at, source, nameKey);
  }

  /**
   * How long a pair's failures matter after its latest one, ms: the longest
   * block and the quiet spell after it. A shared store may forget them then.
   */
  get horizonMs(): number {
    return 2 * this.#maxLockoutMs;
  }

  /** The length of the block after `blocks` earlier ones. */
  #blockMs(blocks: number): number {
    return Math.min(this.#lockoutMs * 2 ** Math.min(blocks, 40), this.#maxLockoutMs);
  }

  /** Drops expired entries at the front, then returns the pair's entry if it is still live. */
  #live(now: number, key: string): Entry | undefined {
    for (const [front, entry] of this.#entries) {
      if (entry.forgetAt > now) break;
      this.#entries.delete(front);
    }
    const entry = this.#entries.get(key);
    if (entry === undefined || entry.forgetAt > now) return entry;
    this.#entries.delete(key);
    return undefined;
  }
}

function pairKey(source: string, nameKey: string): string {
  // Names never contain a newline (see client_name.ts), so the pair is unambiguous.
  return `${source}\n${nameKey}`;
}
