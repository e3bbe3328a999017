/**
 * Per-name lockout after repeated failed logins, sans-I/O: the caller passes
 * the time in, nothing here reads a clock.
 *
 * @module
 */

/** Options for {@link LoginLimiter}. */
export interface LoginLimiterOptions {
  /** Consecutive failures that lock a name, 1 to 5 (default 3). */
  maxAttempts?: number;
  /** How long a name stays locked, in milliseconds (default 10,000). */
  lockoutMs?: number;
  /** Most names tracked at once; past it the entry nearest its expiry goes (default 100,000). */
  maxTracked?: number;
}

/** The answer of {@link LoginLimiter.check}. */
export type LoginCheck = { blocked: false } | { blocked: true; retryAfterMs: number };

/** The answer of {@link LoginLimiter.failed}. */
export interface LoginFailure {
  /** True if the name is now locked (by this failure or an earlier one). */
  blocked: boolean;
  /** Milliseconds until the lock ends; present when `blocked`. */
  retryAfterMs?: number;
  /** Failures left before the lock; 0 when `blocked`. */
  attemptsLeft: number;
}

interface Entry {
  failures: number;
  /** When the streak is forgotten: lockoutMs after its latest counted failure. */
  expiresAt: number;
  blocked: boolean;
}

/** Default consecutive failures before a lock. */
export const DEFAULT_MAX_ATTEMPTS = 3;
/** Default lock duration in milliseconds. */
export const DEFAULT_LOCKOUT_MS = 10_000;
/** Default bound on tracked names. */
export const DEFAULT_MAX_TRACKED = 100_000;

/**
 * Counts consecutive failed logins per name and locks a name for `lockoutMs`
 * after the `maxAttempts`-th. Attempts while locked are refused without being
 * counted, and do not extend the lock; once it ends the count starts over. A
 * streak of failures that never reaches the limit is forgotten `lockoutMs`
 * after its latest failure, so a guesser gets at most `maxAttempts` tries per
 * `lockoutMs` either way. A success clears the name.
 *
 * Keys are case-folded names (`nameKey`). Pass the key whether or not the
 * name exists, so the limiter answers the same for both and reveals nothing.
 *
 * Memory is bounded: entries are kept in order of expiry, expired ones are
 * dropped as calls come in, and past `maxTracked` names the one nearest its
 * expiry is dropped early.
 *
 * @example
 * ```ts
 * const limiter = new LoginLimiter({ maxAttempts: 3, lockoutMs: 10_000 });
 * const key = nameKey(name);
 * const check = limiter.check(now, key);
 * if (check.blocked) return refuse(check.retryAfterMs);
 * if (await verify()) limiter.succeeded(key);
 * else limiter.failed(now, key);
 * ```
 */
export class LoginLimiter {
  readonly #maxAttempts: number;
  readonly #lockoutMs: number;
  readonly #maxTracked: number;
  /** In order of `expiresAt` (as long as time does not go backwards). */
  readonly #entries = new Map<string, Entry>();

  /**
   * @param options attempts, lock duration and memory bound
   * @throws {RangeError} if an option is out of range
   */
  constructor(options: LoginLimiterOptions = {}) {
    const maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    const lockoutMs = options.lockoutMs ?? DEFAULT_LOCKOUT_MS;
    const maxTracked = options.maxTracked ?? DEFAULT_MAX_TRACKED;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 5) {
      throw new RangeError(`maxAttempts must be an integer from 1 to 5, not ${maxAttempts}`);
    }
    if (!Number.isFinite(lockoutMs) || lockoutMs <= 0) {
      throw new RangeError(`lockoutMs must be a positive number, not ${lockoutMs}`);
    }
    if (!Number.isInteger(maxTracked) || maxTracked < 1) {
      throw new RangeError(`maxTracked must be a positive integer, not ${maxTracked}`);
    }
    this.#maxAttempts = maxAttempts;
    this.#lockoutMs = lockoutMs;
    this.#maxTracked = maxTracked;
  }

  /** @returns how many names are tracked now (expired ones may linger until the next call) */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Says whether a login for the name may be tried now. Call it before
   * verifying the password; a blocked attempt must not be verified or counted.
   *
   * @param now the current time in milliseconds
   * @param nameKey the case-folded name
   * @returns not blocked, or blocked with the milliseconds left
   */
  check(now: number, nameKey: string): LoginCheck {
    const entry = this.#live(now, nameKey);
    if (entry?.blocked) return { blocked: true, retryAfterMs: entry.expiresAt - now };
    return { blocked: false };
  }

  /**
   * Records a failed login (wrong password or unknown name). The
   * `maxAttempts`-th consecutive failure locks the name for `lockoutMs`; a
   * failure reported while the name is locked is not counted.
   *
   * @param now the current time in milliseconds
   * @param nameKey the case-folded name
   * @returns whether the name is now locked, for how long, and how many tries are left
   */
  failed(now: number, nameKey: string): LoginFailure {
    const entry = this.#live(now, nameKey);
    if (entry?.blocked) {
      return { blocked: true, retryAfterMs: entry.expiresAt - now, attemptsLeft: 0 };
    }
    const failures = (entry?.failures ?? 0) + 1;
    const blocked = failures >= this.#maxAttempts;
    // Re-insert at the end: its expiry is now the latest.
    this.#entries.delete(nameKey);
    this.#entries.set(nameKey, { failures, expiresAt: now + this.#lockoutMs, blocked });
    while (this.#entries.size > this.#maxTracked) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    return blocked
      ? { blocked: true, retryAfterMs: this.#lockoutMs, attemptsLeft: 0 }
      : { blocked: false, attemptsLeft: this.#maxAttempts - failures };
  }

  /**
   * Records a successful login, which clears the name's failures.
   *
   * @param nameKey the case-folded name
   */
  succeeded(nameKey: string): void {
    this.#entries.delete(nameKey);
  }

  /** Drops expired entries, then returns the name's entry if it is still live. */
  #live(now: number, nameKey: string): Entry | undefined {
    this.#expire(now);
    const entry = this.#entries.get(nameKey);
    if (entry === undefined || entry.expiresAt > now) return entry;
    // out of order only if the caller's time went backwards
    this.#entries.delete(nameKey);
    return undefined;
  }

  /** Drops entries that have expired, oldest first. */
  #expire(now: number): void {
    for (const [key, entry] of this.#entries) {
      if (entry.expiresAt > now) break;
      this.#entries.delete(key);
    }
  }
}
