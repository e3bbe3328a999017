/**
 * When open-mode identities lapse, sans-I/O: SIP registrars' rule, a
 * binding not refreshed for a while is removed. The server core asks this
 * module when to rewrite an identity's `lastSeenAt` and which identities to
 * remove; it does the removing.
 *
 * @module
 */
import type { RegistryRecord } from "./registry.ts";

/** The longest an identity's `lastSeenAt` lags behind: it is rewritten at most this often. */
export const MAX_SEEN_REFRESH_MS = 3_600_000;
/** The longest between two checks for identities to remove. */
export const MAX_CHECK_EVERY_MS = 60_000;

/**
 * Decides, for an `expireAfterMs` (0 for never), when an identity was last
 * seen, when that is worth writing down, and which identities have lapsed.
 *
 * - `lastSeenAt` is rewritten once it lags by a tenth of `expireAfterMs` or
 *   an hour, whichever is shorter (an hour when expiry is off, so that the
 *   dates are there if it is turned on).
 * - Identities are checked at the first time given, then every tenth of
 *   `expireAfterMs` (1 s to 1 minute). One lapses when it was last seen
 *   (or, without `lastSeenAt`, registered) `expireAfterMs` ago or more and
 *   is not online; an unreadable date never lapses.
 *
 * @example
 * ```ts
 * const expiry = new IdentityExpiry(90 * 86_400_000);
 * expiry.start(now);
 * if (now >= (expiry.nextCheck() ?? Infinity)) {
 *   for (const record of expiry.lapsed(now, registry.records(), isOnline)) remove(record);
 * }
 * ```
 */
export class IdentityExpiry {
  /** How long an identity lives unseen, ms; 0 for ever. */
  readonly expireAfterMs: number;
  /** How stale `lastSeenAt` may get before it is rewritten, ms. */
  readonly refreshMs: number;
  /** How often identities are checked, ms. */
  readonly checkEveryMs: number;
  #nextCheck: number | undefined;

  /**
   * @param expireAfterMs how long an identity lives unseen, ms; 0 for ever
   * @throws {RangeError} if it is negative or not finite
   */
  constructor(expireAfterMs = 0) {
    if (!Number.isFinite(expireAfterMs) || expireAfterMs < 0) {
      throw new RangeError(`expireAfterMs must be 0 or more, not ${expireAfterMs}`);
    }
    this.expireAfterMs = expireAfterMs;
    this.refreshMs = expireAfterMs > 0
      ? Math.min(MAX_SEEN_REFRESH_MS, expireAfterMs / 10)
      : MAX_SEEN_REFRESH_MS;
    this.checkEveryMs = Math.min(MAX_CHECK_EVERY_MS, Math.max(1000, expireAfterMs / 10));
  }

  /**
   * Starts the checks at `now` if they have not started (a no-op when off).
   *
   * @param now the current time, ms
   */
  start(now: number): void {
    if (this.expireAfterMs > 0) this.#nextCheck ??= now;
  }

  /** @returns when identities are next checked, or undefined (off, or not started) */
  nextCheck(): number | undefined {
    return this.#nextCheck;
  }

  /**
   * Tells whether a record's `lastSeenAt` should be set to `now`.
   *
   * @param now the current time, ms
   * @param record the identity just seen
   * @returns true if its date lags by `refreshMs` or more, or is missing
   */
  isStale(now: number, record: RegistryRecord): boolean {
    return !(now - Date.parse(record.lastSeenAt ?? record.registeredAt) < this.refreshMs);
  }

  /**
   * If a check is due, picks the identities that lapsed and schedules the
   * next check; otherwise picks none.
   *
   * @param now the current time, ms
   * @param records every identity
   * @param online tells whether a name has a live session
   * @returns the records to remove
   */
  lapsed(
    now: number,
    records: Iterable<RegistryRecord>,
    online: (name: string) => boolean,
  ): RegistryRecord[] {
    this.start(now);
    if (this.#nextCheck === undefined || now < this.#nextCheck) return [];
    this.#nextCheck = now + this.checkEveryMs;
    const cutoff = now - this.expireAfterMs;
    const out: RegistryRecord[] = [];
    for (const record of records) {
      if (!(Date.parse(record.lastSeenAt ?? record.registeredAt) <= cutoff)) continue;
      if (!online(record.name)) out.push(record);
    }
    return out;
  }
}
