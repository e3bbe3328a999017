import type { Random } from "../random.ts";

/** How a client retransmits a request to the server. */
export interface RetryPolicy {
  /** Delay before the first retransmission, ms. */
  readonly initialMs: number;
  /** Longest delay between two sends, ms. */
  readonly maxMs: number;
  /** Spread of each delay: 0.2 means ±20%. */
  readonly jitter: number;
  /** Give up this long after the first send, ms. */
  readonly giveUpMs: number;
}

/** 500 ms, doubling, capped at 8 s, ±20% jitter, giving up after 30 s. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  initialMs: 500,
  maxMs: 8000,
  jitter: 0.2,
  giveUpMs: 30_000,
};

/**
 * The wait before retransmission number `attempt + 1`: exponential backoff
 * with jitter.
 *
 * @param attempt how many retransmissions were already made (0 for the first wait)
 * @param random source of jitter
 * @param policy the retry policy
 * @returns milliseconds to wait
 *
 * @example
 * ```ts
 * retryDelay(0, new SeededRandom(1), { ...DEFAULT_RETRY_POLICY, jitter: 0 }); // 500
 * retryDelay(3, new SeededRandom(1), { ...DEFAULT_RETRY_POLICY, jitter: 0 }); // 4000
 * ```
 */
export function retryDelay(attempt: number, random: Random, policy: RetryPolicy): number {
  const base = Math.min(policy.initialMs * 2 ** attempt, policy.maxMs);
  return base * (1 + policy.jitter * (2 * random.next() - 1));
}
