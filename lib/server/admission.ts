/**
 * Admission, sans-I/O: which datagrams and TCP connections the server takes
 * at all. Per-address rate limits on UDP (a strict one for traffic without a
 * live session, garbage included, and a loose one for session traffic), and
 * limits on TCP connections (per address, in all, idle time, slow frames).
 * The server core asks it from one place for each; the drivers only report
 * what arrived and what each connection did.
 *
 * @module
 */
import {
  type ConnectionLimitHit,
  ConnectionLimits,
  type ConnectionRefusal,
  type ConnectionSample,
} from "./connection_limits.ts";
import { DEFAULT_RATE_LIMIT, DEFAULT_SESSION_RATE_LIMIT, RateLimiter } from "./rate_limiter.ts";

/**
 * Limits on traffic. Each has a default; a rate of 0 turns that rate limit
 * off.
 */
export interface ServerLimits {
  /**
   * UDP datagrams per second per address that carry no live session token,
   * garbage included (default 100, bursts of twice that); 0 for no limit.
   */
  rateLimit?: number;
  /**
   * UDP datagrams per second per address that carry a live session token
   * (default 2,000, bursts of twice that); 0 for no limit.
   */
  sessionRateLimit?: number;
  /** Most TCP connections open at once from one address (default 32). */
  maxConnectionsPerAddress?: number;
  /** Most TCP connections open at once in all (default 512). */
  maxConnections?: number;
  /** A TCP connection silent this long between frames is closed, ms (default 60,000). */
  tcpIdleMs?: number;
  /** A TCP frame must arrive whole within this long of its first byte, ms (default 30,000). */
  tcpFrameMs?: number;
}

/** What admission says about one datagram. */
export type DatagramAdmission =
  | { readonly admitted: true }
  | {
    readonly admitted: false;
    /** Present at most once per report period per address: time to log the drops. */
    readonly report?: {
      readonly dropped: number;
      readonly session: boolean;
      readonly ratePerSecond: number;
      readonly burst: number;
    };
  };

/** What admission says about an open TCP connection. */
export type ConnectionVerdict =
  | { readonly action: "keep" }
  /**
   * Close it. `hit` is set the first time (count it, log it); `tell` says
   * whether to send a last error frame first (not when the peer takes
   * nothing of what it is sent, nor when it was told once already).
   */
  | { readonly action: "close"; readonly hit?: ConnectionLimitHit; readonly tell: boolean };

const ADMITTED: DatagramAdmission = { admitted: true };

/**
 * The rate limits and connection limits of one server.
 *
 * @example
 * ```ts
 * const admission = new Admission({ rateLimit: 100, maxConnectionsPerAddress: 4 });
 * if (!admission.datagram(now, "192.0.2.7", false).admitted) return; // drop it
 * const refused = admission.openConnection(now, connId, "192.0.2.7");
 * ```
 */
export class Admission {
  #limiter: RateLimiter | undefined;
  #sessionLimiter: RateLimiter | undefined;
  #connections: ConnectionLimits;
  /** Connections already told why they are being closed. */
  #closing = new Set<number>();

  /**
   * @param limits the limits (defaults for those not given)
   * @throws {RangeError} if a limit is out of range
   */
  constructor(limits: ServerLimits = {}) {
    const rate = limits.rateLimit ?? DEFAULT_RATE_LIMIT;
    const sessionRate = limits.sessionRateLimit ?? DEFAULT_SESSION_RATE_LIMIT;
    if (rate > 0) this.#limiter = new RateLimiter({ ratePerSecond: rate });
    if (sessionRate > 0) this.#sessionLimiter = new RateLimiter({ ratePerSecond: sessionRate });
    this.#connections = new ConnectionLimits({
      maxPerAddress: limits.maxConnectionsPerAddress,
      maxTotal: limits.maxConnections,
      idleMs: limits.tcpIdleMs,
      frameMs: limits.tcpFrameMs,
    });
  }

  /** The idle limit of TCP connections, ms. */
  get idleMs(): number {
    return this.#connections.idleMs;
  }

  /** The time a started TCP frame has to arrive whole, ms. */
  get frameMs(): number {
    return this.#connections.frameMs;
  }

  /**
   * Takes one UDP datagram against its address's rate limit.
   *
   * @param now the current time, ms
   * @param address its source IP address
   * @param session true if it carries a live session token (the loose limit)
   * @returns admitted, or dropped (with a report at most once per period)
   */
  datagram(now: number, address: string, session: boolean): DatagramAdmission {
    const limiter = session ? this.#sessionLimiter : this.#limiter;
    if (limiter === undefined) return ADMITTED;
    const decision = limiter.take(now, address);
    if (decision.allowed) return ADMITTED;
    if (decision.report === undefined) return { admitted: false };
    return {
      admitted: false,
      report: {
        dropped: decision.report.dropped,
        session,
        ratePerSecond: limiter.ratePerSecond,
        burst: 2 * limiter.ratePerSecond,
      },
    };
  }

  /**
   * Admits a new TCP connection, or says why not; an admitted one counts
   * until `closeConnection`.
   *
   * @param now the current time, ms
   * @param connId the driver's id of the connection
   * @param address the peer's IP address
   * @returns undefined if admitted, else the limit it would break
   */
  openConnection(now: number, connId: number, address: string): ConnectionRefusal | undefined {
    return this.#connections.open(now, connId, address);
  }

  /**
   * Says whether an open connection has overstayed (see
   * {@linkcode ConnectionLimits.check}).
   *
   * @param now the current time, ms
   * @param connId the driver's id of the connection
   * @param sample what it did so far
   * @returns keep it, or close it
   */
  checkConnection(now: number, connId: number, sample: ConnectionSample): ConnectionVerdict {
    const hit = this.#connections.check(now, connId, sample);
    if (hit === undefined) return { action: "keep" };
    // Told once already: its last frame did not go out in time.
    if (this.#closing.has(connId)) return { action: "close", tell: false };
    this.#closing.add(connId);
    return { action: "close", hit, tell: !sample.writing };
  }

  /**
   * Forgets a closed connection. Safe to call for one never admitted.
   *
   * @param connId the driver's id of the connection
   */
  closeConnection(connId: number): void {
    this.#connections.close(connId);
    this.#closing.delete(connId);
  }
}
