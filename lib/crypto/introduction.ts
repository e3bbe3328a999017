/**
 * Introductions between peers (protocol version 3, docs/PROTOCOL.md "Peer
 * keys"): the server vouches for a pair of static keys and gives both peers
 * the same fresh pre-shared key for their Noise IKpsk2 handshake, without
 * keeping any state, so every instance that shares the server key gives the
 * same answer.
 *
 * - The **nonce** (16 bytes) is 8 bytes of the server's time in ms and 8
 *   random bytes, drawn for the requester's `lookup`.
 * - The **PSK** is `HMAC-SHA256(k, "switchboard peer psk" || initiator key ||
 *   responder key || nonce)`, where `k` is a secret the driver derives from
 *   the server's static private key ({@link introductionSecret}). The
 *   responder key is the key of the channel that asks, so only the two
 *   peers can learn it.
 * - The responder's verifying `lookup` carries the nonce back; the server
 *   refuses one older than {@link INTRODUCTION_LIFETIME_MS}.
 *
 * Also the initiation timestamp (WireGuard's TAI64N, whitepaper 5.1): the
 * responder keeps the greatest one seen per initiator key and drops an
 * initiation that is not newer, so a replayed initiation does nothing.
 *
 * @module
 */
import { hmacSha256 } from "./symmetric_state.ts";

/** How long an introduction's nonce is honoured, ms. */
export const INTRODUCTION_LIFETIME_MS = 120_000;
/** How far ahead of this instance's clock a nonce may be (another instance's clock), ms. */
export const INTRODUCTION_SKEW_MS = 10_000;
/** Bytes of a TAI64N timestamp. */
export const TIMESTAMP_BYTES = 12;

const encoder = new TextEncoder();
const LABEL_SECRET = encoder.encode("switchboard introduction secret");
const LABEL_PSK = encoder.encode("switchboard peer psk");

/**
 * Derives the secret of introductions from the server's static private key.
 *
 * @param staticPrivateKey the server's X25519 private key
 * @returns 32 bytes
 */
export function introductionSecret(staticPrivateKey: Uint8Array): Uint8Array {
  return hmacSha256(staticPrivateKey, LABEL_SECRET);
}

/**
 * Draws a fresh nonce: the time, then random bytes.
 *
 * @param now the server's time, ms since the epoch
 * @param random 8 random bytes
 * @returns 16 bytes
 */
export function introductionNonce(now: number, random: Uint8Array): Uint8Array {
  const nonce = new Uint8Array(16);
  new DataView(nonce.buffer).setBigUint64(0, BigInt(Math.max(0, Math.floor(now))));
  nonce.set(random.subarray(0, 8), 8);
  return nonce;
}

/**
 * Tells whether a nonce is fresh.
 *
 * @param nonce 16 bytes from a `lookup`
 * @param now the server's time, ms since the epoch
 * @returns true if it was drawn within {@link INTRODUCTION_LIFETIME_MS}
 */
export function isFreshNonce(nonce: Uint8Array, now: number): boolean {
  if (nonce.length !== 16) return false;
  const at = Number(new DataView(nonce.buffer, nonce.byteOffset, 16).getBigUint64(0));
  return at <= now + INTRODUCTION_SKEW_MS && now - at <= INTRODUCTION_LIFETIME_MS;
}

/**
 * The pre-shared key of one introduction.
 *
 * @param secret from {@link introductionSecret}
 * @param initiatorKey the static key of the peer that connects
 * @param responderKey the static key of the peer it connects to
 * @param nonce the introduction's nonce
 * @returns 32 bytes
 *
 * @example
 * ```ts
 * const psk = introductionPsk(secret, aliceKey, bobKey, nonce);
 * ```
 */
export function introductionPsk(
  secret: Uint8Array,
  initiatorKey: Uint8Array,
  responderKey: Uint8Array,
  nonce: Uint8Array,
): Uint8Array {
  return hmacSha256(secret, LABEL_PSK, initiatorKey, responderKey, nonce);
}

/**
 * A TAI64N timestamp (12 bytes: 2^62 + 10 + seconds, then nanoseconds), as
 * WireGuard puts in its initiations.
 *
 * @param ms milliseconds since the epoch
 * @returns 12 bytes; byte order sorts as time does
 */
export function tai64n(ms: number): Uint8Array {
  const out = new Uint8Array(TIMESTAMP_BYTES);
  const view = new DataView(out.buffer);
  const seconds = Math.floor(ms / 1000);
  view.setBigUint64(0, (1n << 62n) + 10n + BigInt(seconds));
  view.setUint32(8, Math.min(999_999_999, Math.floor((ms - seconds * 1000) * 1e6)));
  return out;
}

/**
 * Compares two timestamps (or any two byte strings of one length) as big-endian numbers.
 *
 * @param a one
 * @param b the other
 * @returns negative, 0 or positive
 */
export function compareTimestamps(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

/**
 * Issues strictly increasing TAI64N timestamps, even when the clock stands
 * still or steps back (the next one is then the last plus 1 ns).
 */
export class TimestampSource {
  #last: Uint8Array = new Uint8Array(TIMESTAMP_BYTES);

  /**
   * @param now milliseconds since the epoch
   * @returns a timestamp greater than every earlier one
   */
  next(now: number): Uint8Array {
    let stamp = tai64n(now);
    if (compareTimestamps(stamp, this.#last) <= 0) stamp = plusOne(this.#last);
    this.#last = stamp;
    return stamp.slice();
  }
}

/**
 * The greatest initiation timestamp seen per initiator key, bounded: past
 * `max` keys the oldest entry goes (the server's nonce lifetime still bounds
 * a replay of that key's initiations).
 */
export class TimestampRecord {
  #seen = new Map<string, Uint8Array>();
  #max: number;

  /** @param max most keys remembered */
  constructor(max = 4096) {
    this.#max = max;
  }

  /**
   * @param key the initiator's static key, as hex
   * @param stamp the initiation's timestamp
   * @returns true if it is newer than every one recorded for that key
   */
  isNewer(key: string, stamp: Uint8Array): boolean {
    const last = this.#seen.get(key);
    return last === undefined || compareTimestamps(stamp, last) > 0;
  }

  /**
   * Records a timestamp, if newer.
   *
   * @param key the initiator's static key, as hex
   * @param stamp the timestamp
   */
  record(key: string, stamp: Uint8Array): void {
    if (!this.isNewer(key, stamp)) return;
    this.#seen.delete(key);
    this.#seen.set(key, stamp.slice());
    if (this.#seen.size > this.#max) this.#seen.delete(this.#seen.keys().next().value!);
  }
}

function plusOne(stamp: Uint8Array): Uint8Array {
  const out = stamp.slice();
  const view = new DataView(out.buffer);
  let nanos = view.getUint32(8) + 1;
  let seconds = view.getBigUint64(0);
  if (nanos > 999_999_999) {
    nanos = 0;
    seconds++;
  }
  view.setBigUint64(0, seconds);
  view.setUint32(8, nanos);
  return out;
}
