/**
 * Round-trip time estimation and the retransmission timeout, as RFC 6298
 * specifies them, plus the peer's ack delay as RFC 9002's PTO adds it.
 *
 * @module
 */

/** Bounds and constants of an {@linkcode RttEstimator}, all in milliseconds. */
export interface RttEstimatorOptions {
  /** RTO before the first sample (RFC 6298: 1 s). Default 1000. */
  initialRtoMs?: number;
  /** Lower bound of the RTO. Default 200 (as Linux; RFC 6298 says 1 s, too slow for interactive use). */
  minRtoMs?: number;
  /** Upper bound of the RTO, backoff included. Default 60000 (RFC 6298's smallest allowed cap). */
  maxRtoMs?: number;
  /** Clock granularity G of RFC 6298. Default 10. */
  granularityMs?: number;
  /** Longest the peer delays an ack (RFC 9002's max_ack_delay), added to the RTO. Default 0. */
  ackDelayMs?: number;
}

const ALPHA = 1 / 8;
const BETA = 1 / 4;
const K = 4;

/**
 * An RFC 6298 estimator: smoothed RTT and RTT variation from samples, the
 * RTO derived from them, and exponential backoff of the RTO on timeouts.
 *
 * It takes samples as given; following Karn's rule (no samples from
 * retransmitted segments) is the caller's job.
 *
 * @example
 * ```ts
 * const rtt = new RttEstimator({ minRtoMs: 100 });
 * rtt.rto; // 1000, before any sample
 * rtt.sample(100);
 * rtt.srtt; // 100
 * rtt.rttvar; // 50
 * rtt.rto; // 300 = 100 + 4 * 50
 * rtt.backoff();
 * rtt.rto; // 600
 * ```
 */
export class RttEstimator {
  #initialRto: number;
  #minRto: number;
  #maxRto: number;
  #granularity: number;
  #ackDelay: number;
  #srtt: number | undefined;
  #rttvar: number | undefined;
  #backoffs = 0;

  /**
   * Creates an estimator with no sample yet.
   *
   * @param options bounds of the RTO and the clock granularity
   */
  constructor(options: RttEstimatorOptions = {}) {
    this.#initialRto = positive("initialRtoMs", options.initialRtoMs ?? 1000);
    this.#minRto = positive("minRtoMs", options.minRtoMs ?? 200);
    this.#maxRto = positive("maxRtoMs", options.maxRtoMs ?? 60_000);
    this.#granularity = positive("granularityMs", options.granularityMs ?? 10);
    this.#ackDelay = options.ackDelayMs ?? 0;
    if (!(this.#ackDelay >= 0) || !Number.isFinite(this.#ackDelay)) {
      throw new RangeError(`Cannot use ackDelayMs ${this.#ackDelay}: it must be at least 0`);
    }
    if (this.#minRto > this.#maxRto) {
      throw new RangeError(`Cannot use minRtoMs ${this.#minRto} above maxRtoMs ${this.#maxRto}`);
    }
  }

  /** Smoothed round-trip time, ms, or `undefined` before the first sample. */
  get srtt(): number | undefined {
    return this.#srtt;
  }

  /** Round-trip time variation, ms, or `undefined` before the first sample. */
  get rttvar(): number | undefined {
    return this.#rttvar;
  }

  /** How many times the RTO was doubled since the last reset. */
  get backoffs(): number {
    return this.#backoffs;
  }

  /**
   * The retransmission timeout without backoff, ms, within `[minRtoMs, maxRtoMs]`:
   * SRTT + max(G, 4 RTTVAR) + the peer's ack delay (RFC 9002 section 6.2.1).
   */
  get baseRto(): number {
    const base = this.#srtt === undefined
      ? this.#initialRto
      : this.#srtt + Math.max(this.#granularity, K * this.#rttvar!) + this.#ackDelay;
    return Math.min(this.#maxRto, Math.max(this.#minRto, base));
  }

  /** The retransmission timeout, ms, backoff included, within `[minRtoMs, maxRtoMs]`. */
  get rto(): number {
    return Math.min(this.#maxRto, this.baseRto * 2 ** this.#backoffs);
  }

  /**
   * Takes one round-trip measurement (RFC 6298 section 2).
   *
   * @param rttMs the measured round-trip time, ms, at least 0
   */
  sample(rttMs: number): void {
    if (!(rttMs >= 0) || !Number.isFinite(rttMs)) {
      throw new RangeError(`Cannot take an RTT sample of ${rttMs} ms`);
    }
    if (this.#srtt === undefined || this.#rttvar === undefined) {
      this.#srtt = rttMs;
      this.#rttvar = rttMs / 2;
    } else {
      this.#rttvar = (1 - BETA) * this.#rttvar + BETA * Math.abs(this.#srtt - rttMs);
      this.#srtt = (1 - ALPHA) * this.#srtt + ALPHA * rttMs;
    }
  }

  /** Doubles the RTO after a retransmission timeout (RFC 6298 section 5.5), up to `maxRtoMs`. */
  backoff(): void {
    if (this.rto < this.#maxRto) this.#backoffs++;
  }

  /** Undoes the backoff, when new data is acknowledged. */
  resetBackoff(): void {
    this.#backoffs = 0;
  }
}

function positive(name: string, value: number): number {
  if (!(value > 0) || !Number.isFinite(value)) {
    throw new RangeError(`Cannot use ${name} ${value}: it must be a positive number`);
  }
  return value;
}
