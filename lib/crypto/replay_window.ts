/**
 * A sliding replay window over 64-bit message counters: a ring bitmap of
 * 32-bit words as in RFC 6479 and WireGuard (`replay.go`), 2048 bits, so
 * the newest 2016 counters are remembered and anything older is refused.
 * Counters are JavaScript integers, exact up to 2^53 - 1.
 *
 * @module
 */

const BITS_PER_WORD = 32;
const WORDS = 64;
/** How far behind the newest counter a counter may be and still be accepted. */
export const REPLAY_WINDOW_SIZE = (WORDS - 1) * BITS_PER_WORD;

/** What {@link ReplayWindow.check} says of a counter. */
export type ReplayVerdict = "fresh" | "replayed" | "stale";

/**
 * Remembers which recent counters were received. `check` a counter before
 * the costly decryption, `accept` it only once the message authenticated, so
 * a forged packet cannot move the window.
 *
 * @example
 * ```ts
 * const window = new ReplayWindow();
 * window.check(5); // "fresh"
 * window.accept(5);
 * window.check(5); // "replayed"
 * ```
 */
export class ReplayWindow {
  #ring = new Uint32Array(WORDS);
  /** The greatest counter accepted, or -1. */
  #last = -1;

  /** The greatest counter accepted so far, or -1 before any. */
  get last(): number {
    return this.#last;
  }

  /**
   * Whether a counter would be accepted, without remembering it.
   *
   * @param counter a non-negative integer
   * @returns `fresh`, `replayed` (seen) or `stale` (too old to tell)
   */
  check(counter: number): ReplayVerdict {
    if (counter > this.#last) return "fresh";
    if (this.#last - counter > REPLAY_WINDOW_SIZE) return "stale";
    const word = this.#ring[Math.floor(counter / BITS_PER_WORD) % WORDS];
    return (word & (1 << (counter % BITS_PER_WORD))) === 0 ? "fresh" : "replayed";
  }

  /**
   * Remembers a counter, sliding the window forward if it is the newest.
   *
   * @param counter a non-negative integer
   * @returns the verdict {@link check} gave; only `fresh` changes anything
   */
  accept(counter: number): ReplayVerdict {
    const verdict = this.check(counter);
    if (verdict !== "fresh") return verdict;
    const block = Math.floor(counter / BITS_PER_WORD);
    if (counter > this.#last) {
      const current = this.#last < 0 ? -1 : Math.floor(this.#last / BITS_PER_WORD);
      const clear = Math.min(block - current, WORDS);
      for (let i = 1; i <= clear; i++) this.#ring[(current + i) % WORDS] = 0;
      this.#last = counter;
    }
    this.#ring[block % WORDS] |= 1 << (counter % BITS_PER_WORD);
    return verdict;
  }
}
