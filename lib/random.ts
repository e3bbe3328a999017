/**
 * A source of randomness injected into cores: `next()` for jitter and
 * simulation choices, `bytes()` for tokens and ids.
 */
export interface Random {
  /** A float in [0, 1). */
  next(): number;
  /**
   * Fills a new array with random bytes.
   *
   * @param length how many bytes
   */
  bytes(length: number): Uint8Array;
}

/** Cryptographically strong randomness for the real drivers. */
export const cryptoRandom: Random = {
  next: () => {
    const word = new Uint32Array(1);
    crypto.getRandomValues(word);
    return word[0] / 0x1_0000_0000;
  },
  bytes: (length) => crypto.getRandomValues(new Uint8Array(length)),
};

/**
 * A seeded pseudo-random generator (sfc32), so that a simulation run is
 * exactly reproducible from its seed. Not for secrets outside simulation.
 *
 * @example
 * ```ts
 * const a = new SeededRandom(42), b = new SeededRandom(42);
 * a.next() === b.next(); // true
 * ```
 */
export class SeededRandom implements Random {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  /** @param seed any integer; equal seeds give equal sequences */
  constructor(seed: number) {
    this.#a = 0x9e3779b9;
    this.#b = 0x243f6a88;
    this.#c = 0xb7e15162;
    this.#d = seed >>> 0;
    for (let i = 0; i < 12; i++) this.#word();
  }

  #word(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t;
  }

  /** @returns a float in [0, 1) */
  next(): number {
    return this.#word() / 0x1_0000_0000;
  }

  /**
   * @param length how many bytes
   * @returns that many pseudo-random bytes
   */
  bytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = this.#word() & 0xff;
    return out;
  }
}
