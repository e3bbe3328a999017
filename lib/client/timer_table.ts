/**
 * A table of named deadlines with one `next()`, the way quinn-proto keeps
 * a connection's timers: each part of the client core sets and clears its
 * own, and the core asks only for the earliest.
 *
 * @module
 */

/**
 * Named deadlines, in ms.
 *
 * @example
 * ```ts
 * const timers = new TimerTable<"heartbeat" | "retransmit">();
 * timers.set("heartbeat", 10_000);
 * timers.set("retransmit", 500);
 * timers.next(); // 500
 * timers.expired(600); // ["retransmit"]
 * ```
 */
export class TimerTable<Name extends string> {
  #at = new Map<Name, number>();

  /**
   * Arms a timer, or with `undefined` stops it.
   *
   * @param name the timer
   * @param at when it fires, ms
   */
  set(name: Name, at: number | undefined): void {
    if (at === undefined) this.#at.delete(name);
    else this.#at.set(name, at);
  }

  /**
   * @param name the timer
   * @returns when it fires, or undefined if it is stopped
   */
  get(name: Name): number | undefined {
    return this.#at.get(name);
  }

  /** @returns the earliest deadline, or undefined if every timer is stopped */
  next(): number | undefined {
    let next: number | undefined;
    for (const at of this.#at.values()) if (next === undefined || at < next) next = at;
    return next;
  }

  /**
   * @param now current time, ms
   * @returns the timers whose time has come (they stay armed until their owner moves them)
   */
  expired(now: number): Name[] {
    return [...this.#at].filter(([, at]) => at <= now).map(([name]) => name);
  }
}

/**
 * The client core's timers, each owned by one part: `requests` (the server
 * link's retransmissions), `heartbeat` and `relogin` (the server link),
 * `waits` (script waits' deadlines), `peers` (the peer sessions' earliest)
 * `discovery` (address discovery's retransmissions) and `paths` (the peer
 * paths' probes, heartbeats and upgrades).
 */
export type ClientTimer =
  | "requests"
  | "heartbeat"
  | "relogin"
  | "waits"
  | "peers"
  | "discovery"
  | "paths";
