/**
 * Where cores get the time from: milliseconds on a monotonic scale. Cores
 * never read a clock themselves; drivers pass `now` in, taken from a `Clock`.
 */
export interface Clock {
  /** The current time in milliseconds. */
  now(): number;
}

/** The wall clock for the real drivers: monotonic, in milliseconds since the Unix epoch. */
export const systemClock: Clock = { now: () => performance.timeOrigin + performance.now() };

/**
 * A clock that moves only when told to, for the simulator and tests.
 *
 * @example
 * ```ts
 * const clock = new VirtualClock();
 * clock.advance(500);
 * clock.now(); // 500
 * ```
 */
export class VirtualClock implements Clock {
  #now: number;

  /** @param start the initial time in milliseconds */
  constructor(start = 0) {
    this.#now = start;
  }

  /** @returns the current virtual time */
  now(): number {
    return this.#now;
  }

  /**
   * Moves time forward.
   *
   * @param ms milliseconds to advance, at least 0
   */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`Cannot advance the clock by ${ms} ms`);
    this.#now += ms;
  }

  /**
   * Moves time to an instant not before the current one.
   *
   * @param ms the new time
   */
  set(ms: number): void {
    if (!(ms >= this.#now)) throw new RangeError(`Cannot move the clock back to ${ms} ms`);
    this.#now = ms;
  }
}

/**
 * The earlier of two optional times, without allocating (timers are asked
 * for after every datagram).
 *
 * @param a a time, or undefined for none
 * @param b a time, or undefined for none
 * @returns the earlier, or undefined when neither is set
 *
 * @example
 * ```ts
 * earlier(5, undefined); // 5
 * ```
 */
export function earlier(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  return b === undefined || a <= b ? a : b;
}
