/**
 * The commit log, sans-I/O: replies to changes are held until the registry
 * snapshot that contains them is durable, and undone if writing it fails. A
 * state change is acknowledged only once it is on disk (DESIGN.md).
 *
 * @module
 */

/**
 * Held changes in order, numbered by version, with one snapshot write in
 * flight at a time, or up to `maxInFlight` for a store that applies writes
 * in the order they were sent (Redis on one connection).
 *
 * @example
 * ```ts
 * const log = new CommitLog<{ reply: Reply; undo: () => void }>();
 * log.hold({ reply, undo });
 * const version = log.nextSnapshot(); // persist the registry as `version`
 * // once written:
 * for (const change of log.persisted(version!)) send(change.reply);
 * // or, if the write failed:
 * for (const change of log.failed(version!)) change.undo();
 * ```
 */
export class CommitLog<T> {
  #held: { version: number; change: T }[] = [];
  #changeVersion = 0;
  #persistedVersion = 0;
  #requestedVersion = 0;
  #inFlight = 0;
  #maxInFlight: number;

  /** @param maxInFlight writes that may be under way at once (default 1) */
  constructor(maxInFlight = 1) {
    if (!Number.isInteger(maxInFlight) || maxInFlight < 1) {
      throw new RangeError(`Cannot keep ${maxInFlight} writes in flight: need an integer >= 1`);
    }
    this.#maxInFlight = maxInFlight;
  }

  /** True while a change is not yet durable (being written or waiting to be). */
  get hasUnsavedChanges(): boolean {
    return this.#persistedVersion < this.#changeVersion;
  }

  /**
   * Holds a change made in memory until a snapshot with it is durable.
   *
   * @param change what to release (or undo) later
   */
  hold(change: T): void {
    this.#changeVersion++;
    this.#held.push({ version: this.#changeVersion, change });
  }

  /**
   * Notes a change made in memory that no reply waits on (a last-seen
   * date, an expired identity): the next snapshot carries it, and a failed
   * write leaves it in memory for the one after.
   */
  touch(): void {
    this.#changeVersion++;
  }

  /**
   * Tells whether a held change matches.
   *
   * @param match the test
   * @returns true if some held change passes it
   */
  holds(match: (change: T) => boolean): boolean {
    return this.#held.some((h) => match(h.change));
  }

  /**
   * Says which version to write now, if any: none while the most writes
   * are in flight, or when every change is written or being written.
   *
   * @returns the version the snapshot to write will carry, or undefined
   */
  nextSnapshot(): number | undefined {
    if (this.#inFlight >= this.#maxInFlight) return undefined;
    if (this.#requestedVersion >= this.#changeVersion) return undefined;
    this.#inFlight++;
    this.#requestedVersion = this.#changeVersion;
    return this.#changeVersion;
  }

  /**
   * Records that the snapshot of `version` is durable.
   *
   * @param version the version written
   * @returns the changes it made durable, oldest first: release their replies
   */
  persisted(version: number): T[] {
    this.#inFlight = Math.max(0, this.#inFlight - 1);
    this.#persistedVersion = Math.max(this.#persistedVersion, version);
    const ready = this.#held.filter((h) => h.version <= version);
    this.#held = this.#held.filter((h) => h.version > version);
    return ready.map((h) => h.change);
  }

  /**
   * Records that writing the snapshot of `version` failed: every change not
   * yet durable (this snapshot's and any made since, built on it) fails.
   *
   * @param version the version that failed
   * @returns the failed changes, newest first: undo them in this order
   */
  failed(version: number): T[] {
    this.#inFlight = Math.max(0, this.#inFlight - 1);
    const failed = this.#held.reverse().map((h) => h.change);
    this.#held = [];
    this.#persistedVersion = Math.max(version, this.#changeVersion);
    this.#requestedVersion = this.#persistedVersion;
    return failed;
  }
}
