/**
 * The responder's side of WireGuard's address validation (whitepaper
 * sections 5.3 and 5.4.7), sans-I/O. Every handshake message ends with mac1
 * and mac2 (16 bytes each):
 *
 * - mac1 = MAC(HASH("mac1----" || responder static public key), the bytes
 *   before mac1). A sender that does not know the responder's public key
 *   cannot make it, and gets no answer at all.
 * - Under load, mac2 must also be valid: mac2 = MAC(cookie, the bytes before
 *   mac2), where cookie = MAC(secret, source address and port) and the secret
 *   is replaced every two minutes. A message without it gets a cookie reply
 *   instead of a handshake: the cookie, encrypted with XChaCha20-Poly1305
 *   under HASH("cookie--" || responder static public key) and a random
 *   24-byte nonce, with the message's mac1 as associated data, so only the
 *   sender of that message can use it, and only from that address and port.
 *
 * - Not under load, mac2 must be zeros (no cookie) or valid. WireGuard
 *   ignores it then; we drop any other value, so that no altered message is
 *   ever answered. Cookies made under the previous secret stay valid, so a
 *   sender's cookie (which it uses for two minutes) never turns against it
 *   when the secret is replaced.
 *
 * The reply is smaller than any message it answers (64 bytes framed, against
 * at least 136), so it cannot amplify a flood.
 *
 * @module
 */
import type { Random } from "../random.ts";
import { xchacha20Poly1305Seal, XNONCE_LENGTH } from "./chacha20_poly1305.ts";
import {
  COOKIE_LIFETIME_MS,
  cookieKey,
  mac,
  mac1Key,
  MAC_LENGTH,
  MACS_LENGTH,
  sameBytes,
} from "./_macs.ts";

/** Where a datagram came from, as the driver saw it. */
export interface SourceAddress {
  /** The IP address in the driver's canonical text form. */
  readonly address: string;
  /** The UDP port. */
  readonly port: number;
}

/** The contents of a cookie reply (the codec adds the header and receiver index). */
export interface CookieReply {
  /** The random 24-byte XChaCha20 nonce. */
  readonly nonce: Uint8Array;
  /** The 16-byte cookie sealed with its 16-byte tag. */
  readonly encryptedCookie: Uint8Array;
}

/** What to do with a handshake message, by {@link CookieChecker.check}. */
export type MacVerdict =
  /** The MACs are good: go on with the handshake. */
  | { readonly kind: "accept" }
  /** Under load and without a valid mac2: send this cookie reply, do nothing else. */
  | { readonly kind: "cookie"; readonly reply: CookieReply }
  /**
   * Drop it without any reply: too short, mac1 is wrong, or mac2 is neither
   * zeros nor valid (a sender without a cookie sends zeros; only tampering
   * makes anything else).
   */
  | { readonly kind: "drop"; readonly reason: "truncated" | "bad_mac1" | "bad_mac2" };

/** Options for a {@link CookieChecker}. */
export interface CookieCheckerOptions {
  /** Where cookie secrets and reply nonces come from. */
  random: Random;
  /** How long a secret lives, in milliseconds; two minutes unless a test says otherwise. */
  secretLifetimeMs?: number;
}

const encoder = new TextEncoder();

/** The bytes a cookie is bound to: the address text and the port. */
function sourceBytes(source: SourceAddress): Uint8Array {
  const address = encoder.encode(source.address.toLowerCase());
  const out = new Uint8Array(address.length + 3);
  out[0] = address.length;
  out.set(address, 1);
  out[address.length + 1] = source.port >>> 8;
  out[address.length + 2] = source.port & 0xff;
  return out;
}

/**
 * Checks mac1 and, under load, mac2 of the handshake messages that reach
 * the holder of one static key, and makes cookie replies.
 *
 * @example
 * ```ts
 * const checker = new CookieChecker(serverKeys.publicKey, { random: cryptoRandom });
 * const verdict = checker.check(datagram, { address: "192.0.2.7", port: 4500 }, now, underLoad);
 * if (verdict.kind === "accept") handshake.readMessage(initiation.handshake);
 * else if (verdict.kind === "cookie") {
 *   send(encodeSecureDatagram({ kind: "cookie_reply", receiver: initiation.sender, ...verdict.reply }));
 * }
 * ```
 */
export class CookieChecker {
  #mac1Key: Uint8Array;
  #cookieKey: Uint8Array;
  #random: Random;
  #lifetime: number;
  #secret: Uint8Array | undefined;
  /** The secret before the current one: cookies made with it are still honoured. */
  #previousSecret: Uint8Array | undefined;
  #secretSince = 0;

  /**
   * @param publicKey our static public key, which senders must know
   * @param options randomness and the secret's lifetime
   */
  constructor(publicKey: Uint8Array, options: CookieCheckerOptions) {
    this.#mac1Key = mac1Key(publicKey);
    this.#cookieKey = cookieKey(publicKey);
    this.#random = options.random;
    this.#lifetime = options.secretLifetimeMs ?? COOKIE_LIFETIME_MS;
  }

  /**
   * Decides what to do with a handshake message.
   *
   * @param message the whole datagram, ending with mac1 and mac2
   * @param source where it came from
   * @param now the caller's milliseconds
   * @param underLoad whether the responder asks for proof of address now
   * @returns accept, answer with a cookie, or drop silently
   */
  check(message: Uint8Array, source: SourceAddress, now: number, underLoad: boolean): MacVerdict {
    if (message.length < MACS_LENGTH + 1) return { kind: "drop", reason: "truncated" };
    const mac1At = message.length - MACS_LENGTH;
    const mac1 = message.subarray(mac1At, mac1At + MAC_LENGTH);
    if (!sameBytes(mac(this.#mac1Key, message.subarray(0, mac1At)), mac1)) {
      return { kind: "drop", reason: "bad_mac1" };
    }
    const mac2 = message.subarray(mac1At + MAC_LENGTH);
    const signed = message.subarray(0, mac1At + MAC_LENGTH);
    const proven = this.#validMac2(signed, mac2, source, now);
    if (!underLoad) {
      return proven || mac2.every((byte) => byte === 0)
        ? { kind: "accept" }
        : { kind: "drop", reason: "bad_mac2" };
    }
    if (proven) return { kind: "accept" };
    const cookie = this.#cookieFor(source, now);
    const nonce = this.#random.bytes(XNONCE_LENGTH);
    return {
      kind: "cookie",
      reply: {
        nonce,
        encryptedCookie: xchacha20Poly1305Seal(this.#cookieKey, nonce, mac1, cookie),
      },
    };
  }

  /** True if mac2 was made with the cookie of this source under the current or the previous secret. */
  #validMac2(signed: Uint8Array, mac2: Uint8Array, source: SourceAddress, now: number): boolean {
    if (mac2.every((byte) => byte === 0)) return false;
    const current = this.#cookieFor(source, now);
    if (sameBytes(mac(current, signed), mac2)) return true;
    return this.#previousSecret !== undefined &&
      sameBytes(mac(mac(this.#previousSecret, sourceBytes(source)), signed), mac2);
  }

  /** The cookie of a source under the current secret, replacing the secret when it is old. */
  #cookieFor(source: SourceAddress, now: number): Uint8Array {
    if (this.#secret === undefined || now - this.#secretSince >= this.#lifetime) {
      this.#previousSecret = this.#secret;
      this.#secret = this.#random.bytes(32);
      this.#secretSince = now;
    }
    return mac(this.#secret, sourceBytes(source));
  }
}
