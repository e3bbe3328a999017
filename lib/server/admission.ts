/**
 * Admission, sans-I/O: which datagrams and TCP connections the server takes
 * at all. Per-address rate limits on UDP (a strict one for traffic without a
 * live session, garbage included, and a loose one for session traffic; TCP
 * requests without a session spend the strict one too), and
 * limits on TCP connections (unauthenticated ones per address, authenticated
 * ones per user, in all, first frame, idle time, slow frames); a connection
 * earns its slot by carrying a live session, and the oldest unauthenticated
 * one gives way when a cap is reached.
 * The server core asks it from one place for each; the drivers only report
 * what arrived and what each connection did.
 *
 * @module
 */
import { nameKey } from "../wire/client_name.ts";
import { ERROR_CODES } from "../wire/error_code.ts";
import type { Request } from "../wire/messages.ts";
import {
  ConnectionLimits,
  connectionLimitText,
  type ConnectionSample,
} from "./connection_limits.ts";
import { DEFAULT_RATE_LIMIT, DEFAULT_SESSION_RATE_LIMIT, RateLimiter } from "./rate_limiter.ts";
import type { Endpoint, ServerEvent, ServerOutput } from "./server_event.ts";

/** How often drops still owed a report are looked at, ms. */
const FLUSH_EVERY_MS = 1_000;
/** Most sources with drops owed a report that are remembered (more are reported on their next drop). */
const MAX_UNREPORTED = 10_000;
/** First contacts (clear `hello`s) a port of an address over its budget may send, a second. */
const FIRST_CONTACT_RATE = 1;
/** ... and at once: a client's `hello` and its first retransmissions. */
const FIRST_CONTACT_BURST = 3;

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
  /**
   * New names one address may register per minute, over UDP and TCP
   * together (bursts of as many); 0 or absent for no limit. Enforced by
   * `accounts.ts`; the server program defaults to 20.
   */
  registerRate?: number;
  /** Most unauthenticated TCP connections open at once from one address (default 32). */
  maxConnectionsPerAddress?: number;
  /** Most TCP connections that carried a live session, per user (default 8). */
  maxConnectionsPerUser?: number;
  /** A TCP connection's first frame must arrive whole within this long, ms (default 5,000). */
  tcpFirstFrameMs?: number;
  /** Most TCP connections open at once in all (default 512). */
  maxConnections?: number;
  /** A TCP connection silent this long between frames is closed, ms (default 60,000). */
  tcpIdleMs?: number;
  /** A TCP frame must arrive whole within this long of its first byte, ms (default 30,000). */
  tcpFrameMs?: number;
}

/** What admission needs of the core that holds it. */
export interface AdmissionHost {
  /** Logs an event (a report of drops, refusals, closes). */
  emit(event: ServerEvent): void;
  /** Tells a connection why it is closed (`send`), and closes it (`close`). */
  output(output: ServerOutput): void;
  /** True while the server has work of its own for a connection (an upload being stored). */
  busy(connId: number): boolean;
  /** The counters it keeps. */
  readonly stats: { rateLimited: number; tcpRefused: number; tcpTimedOut: number };
}

/**
 * The rate limits and connection limits of one server.
 *
 * @example
 * ```ts
 * const admission = new Admission(host, { rateLimit: 100, maxConnectionsPerAddress: 4 });
 * if (!admission.datagram(now, from, false)) return; // drop it
 * if (!admission.openConnection(now, tcpFrom)) return; // told why, and closed
 * ```
 */
export class Admission {
  #host: AdmissionHost;
  #limiter: RateLimiter | undefined;
  /**
   * First contacts from an address over its budget, per address and port:
   * a clear `hello` may spend one of these; any other unproven datagram
   * that the address's budget refuses spends one too, so a port that floods
   * has none left, while a newcomer's fresh port has its own.
   */
  #firstContact = new RateLimiter({
    ratePerSecond: FIRST_CONTACT_RATE,
    burst: FIRST_CONTACT_BURST,
  });
  #sessionLimiter: RateLimiter | undefined;
  #connections: ConnectionLimits;
  /** Connections already told why they are being closed. */
  #closing = new Set<number>();
  /** The endpoints of admitted connections, to tell one that gives way why. */
  #endpoints = new Map<number, Endpoint>();
  /** Sources with drops not yet reported (their report period was running). */
  #unreported = new Map<string, { readonly from: Endpoint; readonly session: boolean }>();
  /** When the unreported drops are next looked at. */
  #flushAt = Infinity;

  /**
   * @param host the core's events, outputs and counters
   * @param limits the limits (defaults for those not given)
   * @throws {RangeError} if a limit is out of range
   */
  constructor(host: AdmissionHost, limits: ServerLimits = {}) {
    this.#host = host;
    const rate = limits.rateLimit ?? DEFAULT_RATE_LIMIT;
    const sessionRate = limits.sessionRateLimit ?? DEFAULT_SESSION_RATE_LIMIT;
    if (rate > 0) this.#limiter = new RateLimiter({ ratePerSecond: rate });
    if (sessionRate > 0) this.#sessionLimiter = new RateLimiter({ ratePerSecond: sessionRate });
    this.#connections = new ConnectionLimits({
      maxPerAddress: limits.maxConnectionsPerAddress,
      maxPerUser: limits.maxConnectionsPerUser,
      firstFrameMs: limits.tcpFirstFrameMs,
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

  /** The time a TCP connection's first frame has to arrive whole, ms. */
  get firstFrameMs(): number {
    return this.#connections.firstFrameMs;
  }

  /**
   * Takes one UDP datagram against its rate limit (with a report of the
   * drops at most once per period per key). Unproven traffic is budgeted per
   * address; traffic that proved its address **and port** (it opened under
   * the keys of a secure session, whose handshake answer went to that port)
   * is budgeted per address and port, so that a flood from other ports of a
   * shared address (a NAT) does not share a validated client's fate.
   *
   * @param now the current time, ms
   * @param from where it came from
   * @param session true if it came in a secure session (the loose limit, per address and port)
   * @returns true if it may be handled, false to drop it
   */
  datagram(now: number, from: Endpoint, session: boolean): boolean {
    const limiter = session ? this.#sessionLimiter : this.#limiter;
    if (limiter === undefined) return true;
    const decision = limiter.take(now, from.address, session ? from.port : undefined);
    if (decision.allowed) return true;
    if (!session) this.#firstContact.take(now, from.address, from.port);
    return this.#dropped(now, from, session, decision.report?.dropped);
  }

  /**
   * Takes a clear `hello`, a first contact (the client has no key to seal
   * with yet): against its address's strict budget, or, when the address is
   * over it, against a small budget of its port (about one a second), so
   * that a flood from other ports of a shared address does not keep a
   * newcomer from learning the server's key. It needs no cookie first: a
   * `hello` leaves no state and its padded datagram is larger than its reply.
   *
   * @param now the current time, ms
   * @param from where it came from
   * @returns true if it may be handled, false to drop it
   */
  hello(now: number, from: Endpoint): boolean {
    const limiter = this.#limiter;
    if (limiter === undefined) return true;
    if (
      !limiter.available(now, from.address) &&
      this.#firstContact.take(now, from.address, from.port).allowed
    ) {
      return true;
    }
    return this.datagram(now, from, false);
  }

  /** Counts a refused datagram and reports the drops (at most once a period per key). */
  #dropped(now: number, from: Endpoint, session: boolean, reported: number | undefined): false {
    this.#host.stats.rateLimited++;
    const key = `${session} ${from.address} ${session ? from.port : ""}`;
    if (reported !== undefined) {
      this.#unreported.delete(key);
      this.#report(from, session, reported);
    } else if (!this.#unreported.has(key) && this.#unreported.size < MAX_UNREPORTED) {
      this.#unreported.set(key, { from, session });
      if (this.#flushAt === Infinity) this.#flushAt = now + FLUSH_EVERY_MS;
    }
    return false;
  }

  /** @returns when `onTimeout` should next be called to report drops, or undefined */
  nextTimeout(): number | undefined {
    return this.#flushAt === Infinity ? undefined : this.#flushAt;
  }

  /**
   * Reports the drops whose report period has ended since they came, so the
   * last burst of a flood that stopped is logged too.
   *
   * @param now the current time, ms
   */
  onTimeout(now: number): void {
    if (now < this.#flushAt) return;
    for (const [key, { from, session }] of this.#unreported) {
      const limiter = session ? this.#sessionLimiter : this.#limiter;
      const owed = limiter?.flush(now, from.address, session ? from.port : undefined);
      if (owed === "later") continue;
      this.#unreported.delete(key);
      if (owed !== undefined) this.#report(from, session, owed.dropped);
    }
    this.#flushAt = this.#unreported.size === 0 ? Infinity : now + FLUSH_EVERY_MS;
  }

  #report(from: Endpoint, session: boolean, dropped: number): void {
    const limiter = (session ? this.#sessionLimiter : this.#limiter)!;
    this.#host.emit({
      kind: "rate_limited",
      transport: from.transport,
      address: from.address,
      dropped,
      session,
      ratePerSecond: limiter.ratePerSecond,
      burst: 2 * limiter.ratePerSecond,
    });
  }

  /**
   * Takes a TCP request without a live session against the same strict
   * per-address budget as UDP datagrams without one, so that TCP is no way
   * around it. A refused one is answered with `busy` (and the driver reads
   * nothing more from its connection for a while).
   *
   * @param now the current time, ms
   * @param from the connection's endpoint
   * @param request the request
   * @returns true if it may be handled
   */
  sessionlessRequest(now: number, from: Endpoint, request: Request): boolean {
    if (this.datagram(now, from, false)) return true;
    this.#host.output({
      type: "send",
      to: from,
      message: {
        type: "error",
        reqId: request.reqId,
        code: ERROR_CODES.busy,
        message: "Too many requests without a session from your address; try again in a moment",
      },
    });
    return false;
  }

  /**
   * Admits a new TCP connection, or tells it why not and closes it; an
   * admitted one counts until `closeConnection`. If a cap is reached, the
   * oldest unauthenticated connection (of the same address, else of all)
   * is told why and closed to make room; only when none can give way is the
   * new one refused.
   *
   * @param now the current time, ms
   * @param from the connection's endpoint, with its `connId`
   * @returns true if admitted
   */
  openConnection(now: number, from: Endpoint): boolean {
    const room = this.#connections.makeRoom(now, from.address);
    if (room !== undefined) {
      const evicted = this.#endpoints.get(room.connId)!;
      this.#endpoints.delete(room.connId);
      this.#closing.add(room.connId);
      this.#host.stats.tcpRefused++;
      if (room.report !== undefined) {
        this.#host.emit({
          kind: "connection_made_room",
          address: evicted.address,
          closed: room.report.closed,
          hit: room.hit,
        });
      }
      this.#close(evicted, connectionLimitText(room.hit, evicted.address));
    }
    const refused = this.#connections.open(now, from.connId ?? 0, from.address);
    if (refused === undefined) {
      this.#endpoints.set(from.connId ?? 0, from);
      return true;
    }
    this.#host.stats.tcpRefused++;
    if (refused.report !== undefined) {
      this.#host.emit({
        kind: "connection_refused",
        address: from.address,
        refused: refused.report.refused,
        hit: refused.hit,
      });
    }
    this.#close(from, connectionLimitText(refused.hit, from.address));
    return false;
  }

  /**
   * Marks a TCP connection as one that carried a live session of `user`: it
   * then counts against that user's allowance, not its address's, and never
   * gives way to a new connection (unless the user is at the allowance).
   *
   * @param connId the driver's id of the connection
   * @param user the session's user name
   */
  authenticated(connId: number, user: string): void {
    this.#connections.authenticate(connId, nameKey(user));
  }

  /**
   * Closes a connection that has overstayed (see
   * {@linkcode ConnectionLimits.check}), telling it why first unless it
   * takes nothing of what it is sent or was told once already.
   *
   * @param now the current time, ms
   * @param from the connection's endpoint, with its `connId`
   * @param sample what it did so far (whether the server is busy with it is asked of the host)
   */
  checkConnection(now: number, from: Endpoint, sample: Omit<ConnectionSample, "busy">): void {
    const connId = from.connId ?? 0;
    const busy = this.#host.busy(connId);
    const hit = this.#connections.check(now, connId, { ...sample, busy });
    if (hit === undefined) return;
    // Told once already: its last frame did not go out in time.
    if (this.#closing.has(connId)) return this.#close(from, undefined);
    this.#closing.add(connId);
    this.#host.stats.tcpTimedOut++;
    this.#host.emit({
      kind: "connection_closed",
      connId,
      address: from.address,
      port: from.port,
      hit,
    });
    this.#close(from, sample.writing ? undefined : connectionLimitText(hit, from.address));
  }

  /**
   * Forgets a closed connection. Safe to call for one never admitted.
   *
   * @param connId the driver's id of the connection
   */
  closeConnection(connId: number): void {
    this.#connections.close(connId);
    this.#closing.delete(connId);
    this.#endpoints.delete(connId);
  }

  /** Tells a TCP connection why it is being closed (if `reason`), then closes it. */
  #close(to: Endpoint, reason: string | undefined): void {
    if (reason !== undefined) {
      this.#host.output({
        type: "send",
        to,
        message: {
          type: "error",
          reqId: 0,
          code: ERROR_CODES.bad_request,
          message: `Closing the connection: ${reason}`,
        },
      });
    }
    this.#host.output({ type: "close", connId: to.connId ?? 0 });
  }
}
