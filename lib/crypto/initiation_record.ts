/**
 * The responder's memory of handshake initiations, so a replayed one is
 * dropped before it costs a reply, a session or the second half of the
 * handshake's work. WireGuard (whitepaper section 5.1) keeps the greatest
 * TAI64N timestamp per initiator key and drops an initiation that is not
 * newer; a Switchboard client, though, starts several channels with one
 * static key (UDP and TCP, a download connection, another instance after a
 * failover), and their initiations may arrive in another order than they
 * were made. So this record is a replay window over timestamps, as
 * {@link ReplayWindow} is over counters (and as TLS 1.3's ClientHello
 * recording, RFC 8446 section 8.2, is over a freshness window):
 *
 * - per initiator key, a floor: an initiation whose timestamp is not above
 *   it is `stale`. The floor follows the greatest timestamp seen, less
 *   {@link REORDER_WINDOW_MS};
 * - above the floor, the initiations accepted (by their ephemeral key, which
 *   a replay repeats and a new initiation never does); one seen before is
 *   `replayed`. At most {@link MAX_RECENT} are kept: when one more comes,
 *   the oldest leaves and the floor rises to its timestamp, so nothing is
 *   forgotten that would then be accepted.
 *
 * The timestamps are the client's own (in the encrypted payload of message
 * 1, so nobody without the client's static key can write one): no clock is
 * shared with the server, only each client's order with itself. Memory is
 * bounded: past `maxKeys` keys the least recently used goes; a replay of
 * that key's initiations then costs the server one handshake's work again,
 * and still cannot complete without the client's ephemeral private key.
 *
 * @module
 */
import { toHex } from "../hex.ts";
import { compareTimestamps, TIMESTAMP_BYTES } from "./introduction.ts";

/** How far behind the greatest timestamp of a key an initiation may still come, ms. */
export const REORDER_WINDOW_MS = 10_000;
/** Initiations remembered per key above the floor. */
export const MAX_RECENT = 8;
/** Keys remembered by default. */
export const MAX_INITIATORS = 8192;

/** What {@link InitiationRecord.admit} found. */
export type InitiationVerdict = "fresh" | "stale" | "replayed";

interface Entry {
  /** Timestamps at or below this are refused. */
  floor: Uint8Array;
  /** The greatest timestamp accepted. */
  greatest: Uint8Array;
  /** Accepted initiations above the floor: ephemeral key (hex) to timestamp. */
  recent: Map<string, Uint8Array>;
}

const ZERO = new Uint8Array(TIMESTAMP_BYTES);

/**
 * Initiations seen, per initiator key.
 *
 * @example
 * ```ts
 * const record = new InitiationRecord();
 * if (record.admit(clientKey, timestamp, ephemeral) !== "fresh") return drop();
 * ```
 */
export class InitiationRecord {
  #entries = new Map<string, Entry>();
  #maxKeys: number;

  /** @param maxKeys most initiator keys remembered */
  constructor(maxKeys = MAX_INITIATORS) {
    this.#maxKeys = maxKeys;
  }

  /** How many keys are remembered. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Checks an initiation and, if fresh, records it.
   *
   * @param key the initiator's static key
   * @param timestamp its TAI64N timestamp, 12 bytes
   * @param ephemeral its ephemeral public key (the first 32 bytes of message 1)
   * @returns `fresh` (recorded), `stale` (at or below the floor) or `replayed`
   * @throws {RangeError} if the timestamp is not 12 bytes
   */
  admit(key: Uint8Array, timestamp: Uint8Array, ephemeral: Uint8Array): InitiationVerdict {
    if (timestamp.length !== TIMESTAMP_BYTES) {
      throw new RangeError(`Cannot admit a ${timestamp.length}-byte timestamp: it is 12 bytes`);
    }
    const id = toHex(key);
    let entry = this.#entries.get(id);
    const eph = toHex(ephemeral);
    if (entry !== undefined) {
      if (compareTimestamps(timestamp, entry.floor) <= 0) return "stale";
      if (entry.recent.has(eph)) return "replayed";
      this.#entries.delete(id); // re-inserted below: most recently used last
    } else {
      entry = { floor: ZERO, greatest: ZERO, recent: new Map() };
    }
    this.#entries.set(id, entry);
    entry.recent.set(eph, timestamp.slice());
    if (compareTimestamps(timestamp, entry.greatest) > 0) entry.greatest = timestamp.slice();
    raise(entry, minusWindow(entry.greatest));
    while (entry.recent.size > MAX_RECENT) {
      let oldest: Uint8Array = entry.greatest;
      for (const stamp of entry.recent.values()) {
        if (compareTimestamps(stamp, oldest) < 0) oldest = stamp;
      }
      raise(entry, oldest);
    }
    if (this.#entries.size > this.#maxKeys) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    return "fresh";
  }
}

/** Raises an entry's floor to `floor` (if higher) and forgets what falls at or below it. */
function raise(entry: Entry, floor: Uint8Array): void {
  if (compareTimestamps(floor, entry.floor) <= 0) return;
  entry.floor = floor;
  for (const [eph, stamp] of entry.recent) {
    if (compareTimestamps(stamp, floor) <= 0) entry.recent.delete(eph);
  }
}

/** A TAI64N timestamp less {@link REORDER_WINDOW_MS} (never below zero). */
function minusWindow(stamp: Uint8Array): Uint8Array {
  const out = stamp.slice();
  const view = new DataView(out.buffer);
  const seconds = view.getBigUint64(0);
  const back = BigInt(REORDER_WINDOW_MS / 1000);
  view.setBigUint64(0, seconds > back ? seconds - back : 0n);
  return out;
}
