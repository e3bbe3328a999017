/**
 * The MACs of WireGuard's address validation (whitepaper section 5.4.4),
 * with `node:crypto` primitives: WireGuard's keyed BLAKE2s-128 becomes
 * HMAC-SHA256 truncated to 16 bytes, and its BLAKE2s hash SHA-256.
 *
 * @module
 */
import { timingSafeEqual } from "node:crypto";
import { hmacSha256, sha256 } from "./symmetric_state.ts";

/** Bytes of mac1, mac2 and a cookie. */
export const MAC_LENGTH = 16;
/** Bytes a handshake message ends with: mac1 then mac2. */
export const MACS_LENGTH = 2 * MAC_LENGTH;
/** How long a cookie secret (responder) and a cookie (initiator) live: two minutes. */
export const COOKIE_LIFETIME_MS = 120_000;

const encoder = new TextEncoder();
const LABEL_MAC1 = encoder.encode("mac1----");
const LABEL_COOKIE = encoder.encode("cookie--");

/** HMAC-SHA256 truncated to {@link MAC_LENGTH} bytes. */
export function mac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  return hmacSha256(key, ...parts).subarray(0, MAC_LENGTH);
}

/** The key of mac1 for messages to the holder of `publicKey`: HASH("mac1----" || key). */
export function mac1Key(publicKey: Uint8Array): Uint8Array {
  return sha256(LABEL_MAC1, publicKey);
}

/** The key that encrypts cookies from the holder of `publicKey`: HASH("cookie--" || key). */
export function cookieKey(publicKey: Uint8Array): Uint8Array {
  return sha256(LABEL_COOKIE, publicKey);
}

/** Equal in constant time (for equal lengths). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
