/**
 * Limits on TCP connections, sans-I/O: how many at once per address and in
 * all, how soon the first frame must come, how long one may stay silent
 * between frames, and how long a frame may take to arrive once it has
 * started. A slot is earned: connections that have carried a live session
 * (authenticated) count against their user's own allowance, not their
 * address's, and are never closed to make room; when a cap is reached, the
 * oldest unauthenticated connection (of that address, or of all) makes room
 * for the new one. The driver tells it what each connection did; the time is
 * passed in.
 *
 * @module
 */
import { addressKey } from "./rate_limiter.ts";

/** Options of {@linkcode ConnectionLimits}. */
export interface ConnectionLimitsOptions {
  /** Most unauthenticated connections open at once from one address (default 32). */
  maxPerAddress?: number;
  /** Most authenticated connections open at once per user (default 8). */
  maxPerUser?: number;
  /** Most connections open at once in all (default 512). */
  maxTotal?: number;
  /** A connection silent this long between frames is closed, ms (default 60,000). */
  idleMs?: number;
  /** A frame must arrive whole within this long of its first byte, ms (default 30,000). */
  frameMs?: number;
  /** The first frame must arrive whole within this long of connecting, ms (default 5,000). */
  firstFrameMs?: number;
  /** At most one report of refusals per address per this many ms (default 10,000). */
  reportEveryMs?: number;
}

/** Default most connections per address. */
/**
 * How long a new connection has to log in before it can be made to give way
 * to a newer one, ms. A client's handshake and first request take a round
 * trip or two; squatters that reconnect at once cannot rotate it out sooner.
 */
export const EVICTION_GRACE_MS = 1_000;

export const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 32;
/** Default most authenticated connections per user. */
export const DEFAULT_MAX_CONNECTIONS_PER_USER = 8;
/** Default time the first frame has to arrive whole after connecting, ms. */
export const DEFAULT_TCP_FIRST_FRAME_MS = 5_000;
/** Default most connections in all. */
export const DEFAULT_MAX_CONNECTIONS = 512;
/** Default idle time before a connection is closed, ms. */
export const DEFAULT_TCP_IDLE_MS = 60_000;
/** Default time a started frame has to arrive whole, ms. */
export const DEFAULT_TCP_FRAME_MS = 30_000;

/** What a connection has done so far, as its driver counts it. */
export interface ConnectionSample {
  /** Bytes read from the peer so far. */
  readonly bytesRead: number;
  /** Bytes written to the peer so far. */
  readonly bytesWritten: number;
  /** Frames read whole so far. */
  readonly framesRead: number;
  /** Bytes of an unfinished frame held (0 between frames). */
  readonly pendingBytes: number;
  /** True while the driver waits for the peer's bytes (false while it holds reading back). */
  readonly reading: boolean;
  /** True while the server has work of its own for the connection (an upload being stored). */
  readonly busy: boolean;
  /** True while frames wait to be written to the peer (or are being written). */
  readonly writing?: boolean;
}

/** A refused connection: the limit, and whether to log it now. */
export interface ConnectionRefusal {
  /** The limit it would break. */
  readonly hit: ConnectionLimitHit;
  /**
   * Present at most once per `reportEveryMs` per address: time to log a line.
   * `refused` counts the connections refused since the previous report
   * (this one included).
   */
  readonly report?: { readonly refused: number };
}

/** Most addresses whose refusals are counted for reports. */
const MAX_REPORTED_ADDRESSES = 1000;

/** Why a connection is refused or closed. */
export type ConnectionLimitHit =
  | { readonly kind: "per_address"; readonly limit: number }
  | { readonly kind: "total"; readonly limit: number }
  | { readonly kind: "idle"; readonly limitMs: number }
  | { readonly kind: "slow_frame"; readonly limitMs: number; readonly pendingBytes: number }
  | { readonly kind: "no_request"; readonly limitMs: number }
  | { readonly kind: "made_room"; readonly scope: "per_address" | "total"; readonly limit: number };

/** An unauthenticated connection closed to make room for a new one. */
export interface ConnectionEviction {
  /** The driver's id of the connection to close (already forgotten here). */
  readonly connId: number;
  /** Which cap was reached (`made_room`). */
  readonly hit: ConnectionLimitHit;
  /**
   * Present at most once per `reportEveryMs` per address of the closed
   * connection: time to log a line. `closed` counts the connections closed
   * to make room since the previous report (this one included).
   */
  readonly report?: { readonly closed: number };
}

interface Tracked {
  key: string;
  /** The user whose allowance it counts against once authenticated, else undefined. */
  user: string | undefined;
  openedAt: number;
  bytesRead: number;
  bytesWritten: number;
  framesRead: number;
  /** Since when nothing has moved either way. */
  quietSince: number;
  /** When the unfinished frame started (as first seen), or undefined between frames. */
  frameSince: number | undefined;
  /** Since when frames have waited to be written without a byte going out, or undefined. */
  writeSince: number | undefined;
}

/**
 * Counts TCP connections per address and in all, and says which connection
 * has overstayed: one whose first frame has not arrived whole `firstFrameMs`
 * after it connected, one with no frame in progress that has sent and received
 * nothing for `idleMs`, one that has taken none of what it was sent for
 * `idleMs`, or one whose unfinished frame has not arrived whole `frameMs`
 * after it started (a slowloris). Only time spent waiting for the
 * peer counts: while the driver holds reading back (its disk is behind) or
 * has work of its own for the connection, the clocks restart. A long upload
 * is many frames, each checked alone, so its total duration never counts.
 *
 * @example
 * ```ts
 * const limits = new ConnectionLimits({ maxPerAddress: 32, idleMs: 60_000 });
 * const room = limits.makeRoom(now, "192.0.2.7");
 * if (room !== undefined) closeWith(room.connId, room.hit);
 * const refused = limits.open(now, connId, "192.0.2.7");
 * if (refused !== undefined) return closeWith(refused.hit);
 * // every second or so, for each connection:
 * const hit = limits.check(now, connId, sampleOf(connection));
 * if (hit !== undefined) closeWith(hit);
 * // when a frame carries a live session of "ann":
 * limits.authenticate(connId, "ann");
 * // and when it closes:
 * limits.close(connId);
 * ```
 */
export class ConnectionLimits {
  readonly maxPerAddress: number;
  readonly maxTotal: number;
  readonly idleMs: number;
  readonly frameMs: number;
  readonly firstFrameMs: number;
  readonly maxPerUser: number;
  readonly #reportEveryMs: number;
  readonly #connections = new Map<number, Tracked>();
  /** Unauthenticated connections, oldest first. */
  readonly #unauthenticated = new Set<number>();
  /** Unauthenticated connections per address key. */
  readonly #perAddress = new Map<string, number>();
  /** Authenticated connections per user. */
  readonly #perUser = new Map<string, number>();
  readonly #refusals = new Map<string, { refused: number; reportedAt: number }>();
  readonly #evictions = new Map<string, { refused: number; reportedAt: number }>();

  /**
   * @param options the limits
   * @throws {RangeError} if a limit is not positive
   */
  constructor(options: ConnectionLimitsOptions = {}) {
    this.maxPerAddress = positive(
      "maxPerAddress",
      options.maxPerAddress ?? DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    );
    this.maxTotal = positive("maxTotal", options.maxTotal ?? DEFAULT_MAX_CONNECTIONS);
    this.idleMs = positive("idleMs", options.idleMs ?? DEFAULT_TCP_IDLE_MS);
    this.frameMs = positive("frameMs", options.frameMs ?? DEFAULT_TCP_FRAME_MS);
    this.firstFrameMs = positive(
      "firstFrameMs",
      options.firstFrameMs ?? DEFAULT_TCP_FIRST_FRAME_MS,
    );
    this.maxPerUser = positive(
      "maxPerUser",
      options.maxPerUser ?? DEFAULT_MAX_CONNECTIONS_PER_USER,
    );
    this.#reportEveryMs = options.reportEveryMs ?? 10_000;
  }

  /** @returns how many connections are open */
  get size(): number {
    return this.#connections.size;
  }

  /**
   * Makes room for a new connection from `address` if a cap is reached and
   * an unauthenticated connection can give way: the oldest of that address
   * if its own cap is reached, else the oldest of all if the total is. The
   * one chosen is forgotten here at once; the caller closes it. Call it just
   * before `open`.
   *
   * @param now the current time, ms
   * @param address the new connection's IP address
   * @returns the connection to close, or undefined if none need or can go
   */
  makeRoom(now: number, address: string): ConnectionEviction | undefined {
    const key = addressKey(address);
    let victim: number | undefined;
    let hit: ConnectionLimitHit | undefined;
    if ((this.#perAddress.get(key) ?? 0) >= this.maxPerAddress) {
      victim = this.#oldestUnauthenticated(now, key);
      hit = { kind: "made_room", scope: "per_address", limit: this.maxPerAddress };
    } else if (this.#connections.size >= this.maxTotal) {
      victim = this.#oldestUnauthenticated(now, undefined);
      hit = { kind: "made_room", scope: "total", limit: this.maxTotal };
    }
    if (victim === undefined || hit === undefined) return undefined;
    const victimKey = this.#connections.get(victim)!.key;
    this.close(victim);
    const report = countForReport(this.#evictions, now, victimKey, this.#reportEveryMs);
    return report === undefined
      ? { connId: victim, hit }
      : { connId: victim, hit, report: { closed: report } };
  }

  /**
   * The oldest unauthenticated connection (of an address key, or of all)
   * that has had {@linkcode EVICTION_GRACE_MS} to log in. A younger one never
   * gives way: otherwise squatters that reconnect the moment they are closed
   * would push every new connection out in turn before it could log in.
   */
  #oldestUnauthenticated(now: number, key: string | undefined): number | undefined {
    for (const connId of this.#unauthenticated) {
      const t = this.#connections.get(connId)!;
      if (now - t.openedAt < EVICTION_GRACE_MS) return undefined; // the rest are younger still
      if (key === undefined || t.key === key) return connId;
    }
    return undefined;
  }

  /**
   * Marks a connection as authenticated (it carried a live session of
   * `user`): from now on it counts against that user's allowance instead of
   * its address's, and never gives way to a new connection. A user already
   * at `maxPerUser` gets no more: the connection stays unauthenticated.
   *
   * @param connId the driver's id of the connection
   * @param user the session's user name, as a key (case folded by the caller)
   * @returns true if it is now (or was already) authenticated
   */
  authenticate(connId: number, user: string): boolean {
    const t = this.#connections.get(connId);
    if (t === undefined) return false;
    if (t.user !== undefined) return true;
    const count = this.#perUser.get(user) ?? 0;
    if (count >= this.maxPerUser) return false;
    this.#perUser.set(user, count + 1);
    decrement(this.#perAddress, t.key);
    this.#unauthenticated.delete(connId);
    t.user = user;
    return true;
  }

  /**
   * Admits a new connection, or says why not. An admitted connection counts
   * until `close`. Only unauthenticated connections count against the
   * per-address cap; every connection counts against the total.
   *
   * @param now the current time, ms
   * @param connId the driver's id of the connection
   * @param address the peer's IP address
   * @returns undefined if admitted, else the limit it would break
   */
  open(now: number, connId: number, address: string): ConnectionRefusal | undefined {
    const key = addressKey(address);
    if (this.#connections.size >= this.maxTotal) {
      return this.#refuse(now, key, { kind: "total", limit: this.maxTotal });
    }
    const count = this.#perAddress.get(key) ?? 0;
    if (count >= this.maxPerAddress) {
      return this.#refuse(now, key, { kind: "per_address", limit: this.maxPerAddress });
    }
    this.#perAddress.set(key, count + 1);
    this.#unauthenticated.add(connId);
    this.#connections.set(connId, {
      key,
      user: undefined,
      openedAt: now,
      bytesRead: 0,
      bytesWritten: 0,
      framesRead: 0,
      quietSince: now,
      frameSince: undefined,
      writeSince: undefined,
    });
    return undefined;
  }

  #refuse(now: number, key: string, hit: ConnectionLimitHit): ConnectionRefusal {
    const refused = countForReport(this.#refusals, now, key, this.#reportEveryMs);
    return refused === undefined ? { hit } : { hit, report: { refused } };
  }

  /**
   * Forgets a closed connection. Safe to call for one never admitted.
   *
   * @param connId the driver's id of the connection
   */
  close(connId: number): void {
    const tracked = this.#connections.get(connId);
    if (tracked === undefined) return;
    this.#connections.delete(connId);
    this.#unauthenticated.delete(connId);
    if (tracked.user === undefined) decrement(this.#perAddress, tracked.key);
    else decrement(this.#perUser, tracked.user);
  }

  /**
   * Records what a connection did since the last check, and says whether it
   * has overstayed. Call it for every open connection, often enough for the
   * limits' precision (a tenth of the shorter one is plenty).
   *
   * @param now the current time, ms
   * @param connId the driver's id of the connection
   * @param sample its counters now
   * @returns undefined if it may stay, else why it must close
   */
  check(now: number, connId: number, sample: ConnectionSample): ConnectionLimitHit | undefined {
    const t = this.#connections.get(connId);
    if (t === undefined) return undefined;
    const wrote = sample.bytesWritten !== t.bytesWritten;
    const moved = sample.bytesRead !== t.bytesRead || wrote;
    const newFrame = sample.framesRead !== t.framesRead;
    t.bytesRead = sample.bytesRead;
    t.bytesWritten = sample.bytesWritten;
    t.framesRead = sample.framesRead;
    // A peer that takes nothing of what it is sent is idle, whatever the
    // server is doing meanwhile (even holding reading back).
    if (!sample.writing) t.writeSince = undefined;
    else if (wrote || t.writeSince === undefined) t.writeSince = now;
    else if (now - t.writeSince >= this.idleMs) return { kind: "idle", limitMs: this.idleMs };
    if (!sample.reading || sample.busy) {
      // Not waiting for the peer: nothing of this counts against it.
      t.quietSince = now;
      t.frameSince = sample.pendingBytes > 0 ? now : undefined;
      return undefined;
    }
    if (sample.framesRead === 0 && now - t.openedAt >= this.firstFrameMs) {
      return { kind: "no_request", limitMs: this.firstFrameMs };
    }
    if (moved) t.quietSince = now;
    if (sample.pendingBytes === 0) {
      t.frameSince = undefined;
    } else if (t.frameSince === undefined || newFrame) {
      t.frameSince = now;
    }
    if (t.frameSince !== undefined) {
      return now - t.frameSince >= this.frameMs
        ? { kind: "slow_frame", limitMs: this.frameMs, pendingBytes: sample.pendingBytes }
        : undefined;
    }
    return now - t.quietSince >= this.idleMs ? { kind: "idle", limitMs: this.idleMs } : undefined;
  }
}

/**
 * Says in words why a connection was refused or closed, for the peer (after
 * `Closing the connection: `) and the log.
 *
 * @param hit the limit
 * @param address the peer's IP address
 * @returns one sentence, lower case first
 *
 * @example
 * ```ts
 * connectionLimitText({ kind: "idle", limitMs: 60_000 }, "192.0.2.7");
 * // "nothing came or went for 60 s"
 * ```
 */
export function connectionLimitText(hit: ConnectionLimitHit, address: string): string {
  switch (hit.kind) {
    case "per_address":
      return `too many connections from ${address} (the limit is ${hit.limit}); ` +
        "close one and try again";
    case "total":
      return `the server has too many connections (the limit is ${hit.limit}); try again later`;
    case "idle":
      return `nothing came or went for ${seconds(hit.limitMs)} s`;
    case "no_request":
      return `no whole request came within ${seconds(hit.limitMs)} s of connecting`;
    case "made_room":
      return hit.scope === "per_address"
        ? `making room for a newer connection from ${address} (at most ${hit.limit} ` +
          "connections without a login from one address); log in to keep a connection"
        : `making room for a newer connection (the server has ${hit.limit} connections; ` +
          "those without a login give way first)";
    case "slow_frame":
      return `a frame did not arrive whole within ${seconds(hit.limitMs)} s of its first byte ` +
        `(${hit.pendingBytes} bytes came)`;
  }
}

function seconds(ms: number): string {
  const s = ms / 1000;
  return Number.isInteger(s) ? String(s) : s.toFixed(1);
}

/**
 * Counts one more event for `key` and says how many to report now (at most
 * once per `everyMs` per key), or undefined to stay quiet.
 */
function countForReport(
  counts: Map<string, { refused: number; reportedAt: number }>,
  now: number,
  key: string,
  everyMs: number,
): number | undefined {
  let entry = counts.get(key);
  if (entry === undefined) {
    entry = { refused: 0, reportedAt: -Infinity };
    while (counts.size >= MAX_REPORTED_ADDRESSES) counts.delete(counts.keys().next().value!);
    counts.set(key, entry);
  }
  entry.refused++;
  if (now - entry.reportedAt < everyMs) return undefined;
  const count = entry.refused;
  entry.refused = 0;
  entry.reportedAt = now;
  return count;
}

function decrement(counts: Map<string, number>, key: string): void {
  const count = (counts.get(key) ?? 1) - 1;
  if (count <= 0) counts.delete(key);
  else counts.set(key, count);
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive number, not ${value}`);
  }
  return value;
}
