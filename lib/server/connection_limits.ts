/**
 * Limits on TCP connections, sans-I/O: how many at once per address and in
 * all, how long one may stay silent between frames, and how long a frame may
 * take to arrive once it has started. The driver tells it what each
 * connection did; the time is passed in.
 *
 * @module
 */
import { addressKey } from "./rate_limiter.ts";

/** Options of {@linkcode ConnectionLimits}. */
export interface ConnectionLimitsOptions {
  /** Most connections open at once from one address (default 32). */
  maxPerAddress?: number;
  /** Most connections open at once in all (default 512). */
  maxTotal?: number;
  /** A connection silent this long between frames is closed, ms (default 60,000). */
  idleMs?: number;
  /** A frame must arrive whole within this long of its first byte, ms (default 30,000). */
  frameMs?: number;
  /** At most one report of refusals per address per this many ms (default 10,000). */
  reportEveryMs?: number;
}

/** Default most connections per address. */
export const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 32;
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
  | { readonly kind: "slow_frame"; readonly limitMs: number; readonly pendingBytes: number };

interface Tracked {
  key: string;
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
 * has overstayed: one with no frame in progress that has sent and received
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
 * const refused = limits.open(now, connId, "192.0.2.7");
 * if (refused !== undefined) return closeWith(refused.hit);
 * // every second or so, for each connection:
 * const hit = limits.check(now, connId, sampleOf(connection));
 * if (hit !== undefined) closeWith(hit);
 * // and when it closes:
 * limits.close(connId);
 * ```
 */
export class ConnectionLimits {
  readonly maxPerAddress: number;
  readonly maxTotal: number;
  readonly idleMs: number;
  readonly frameMs: number;
  readonly #reportEveryMs: number;
  readonly #connections = new Map<number, Tracked>();
  readonly #perAddress = new Map<string, number>();
  readonly #refusals = new Map<string, { refused: number; reportedAt: number }>();

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
    this.#reportEveryMs = options.reportEveryMs ?? 10_000;
  }

  /** @returns how many connections are open */
  get size(): number {
    return this.#connections.size;
  }

  /**
   * Admits a new connection, or says why not. An admitted connection counts
   * until `close`.
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
    this.#connections.set(connId, {
      key,
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
    let entry = this.#refusals.get(key);
    if (entry === undefined) {
      entry = { refused: 0, reportedAt: -Infinity };
      while (this.#refusals.size >= MAX_REPORTED_ADDRESSES) {
        this.#refusals.delete(this.#refusals.keys().next().value!);
      }
      this.#refusals.set(key, entry);
    }
    entry.refused++;
    if (now - entry.reportedAt < this.#reportEveryMs) return { hit };
    const refused = entry.refused;
    entry.refused = 0;
    entry.reportedAt = now;
    return { hit, report: { refused } };
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
    const count = (this.#perAddress.get(tracked.key) ?? 1) - 1;
    if (count <= 0) this.#perAddress.delete(tracked.key);
    else this.#perAddress.set(tracked.key, count);
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
    case "slow_frame":
      return `a frame did not arrive whole within ${seconds(hit.limitMs)} s of its first byte ` +
        `(${hit.pendingBytes} bytes came)`;
  }
}

function seconds(ms: number): string {
  const s = ms / 1000;
  return Number.isInteger(s) ? String(s) : s.toFixed(1);
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive number, not ${value}`);
  }
  return value;
}
