/**
 * The initiator's side of WireGuard's address validation (whitepaper
 * section 5.4.7), sans-I/O: fills in mac1 and mac2 of the handshake
 * messages it sends to one responder, and takes the cookie out of the
 * responder's cookie reply. See {@link CookieChecker} for the other side.
 *
 * @module
 */
import { xchacha20Poly1305Open } from "./chacha20_poly1305.ts";
import { CryptoError } from "./crypto_error.ts";
import type { CookieReply } from "./cookie_checker.ts";
import { COOKIE_LIFETIME_MS, cookieKey, mac, mac1Key, MAC_LENGTH, MACS_LENGTH } from "./_macs.ts";

/**
 * Adds mac1 and mac2 to the handshake messages sent to one responder.
 *
 * @example
 * ```ts
 * const macs = new CookieGenerator(serverPublicKey);
 * send(macs.addMacs(datagramWithRoomForMacs, now));
 * // later, on a cookie reply for it:
 * macs.consumeReply(reply, now); // the next initiation carries mac2
 * ```
 */
export class CookieGenerator {
  #mac1Key: Uint8Array;
  #cookieKey: Uint8Array;
  #lastMac1: Uint8Array | undefined;
  #cookie: Uint8Array | undefined;
  #cookieSince = 0;

  /** @param publicKey the responder's static public key */
  constructor(publicKey: Uint8Array) {
    this.#mac1Key = mac1Key(publicKey);
    this.#cookieKey = cookieKey(publicKey);
  }

  /**
   * Writes mac1, and mac2 if a cookie younger than two minutes is held, into
   * the last 32 bytes of a handshake message (zeros for mac2 otherwise).
   *
   * @param message the datagram, its last 32 bytes reserved for the MACs
   * @param now the caller's milliseconds
   * @returns the same array, filled in
   * @throws {RangeError} if the message has no room for the MACs
   */
  addMacs(message: Uint8Array, now: number): Uint8Array {
    if (message.length < MACS_LENGTH + 1) {
      throw new RangeError(`Cannot add MACs to a ${message.length}-byte message`);
    }
    const mac1At = message.length - MACS_LENGTH;
    const mac1 = mac(this.#mac1Key, message.subarray(0, mac1At));
    message.set(mac1, mac1At);
    this.#lastMac1 = mac1.slice();
    const fresh = this.#cookie !== undefined && now - this.#cookieSince < COOKIE_LIFETIME_MS;
    message.set(
      fresh
        ? mac(this.#cookie!, message.subarray(0, mac1At + MAC_LENGTH))
        : new Uint8Array(MAC_LENGTH),
      mac1At + MAC_LENGTH,
    );
    return message;
  }

  /**
   * Takes the cookie from a reply to the last message sent; the next
   * message carries mac2.
   *
   * @param reply the nonce and encrypted cookie of a cookie reply
   * @param now the caller's milliseconds
   * @throws {CryptoError} `bad_cookie` if it is not for the last message sent, or was altered
   */
  consumeReply(reply: CookieReply, now: number): void {
    if (this.#lastMac1 === undefined) {
      throw new CryptoError("bad_cookie", "A cookie reply came before any handshake message");
    }
    try {
      this.#cookie = xchacha20Poly1305Open(
        this.#cookieKey,
        reply.nonce,
        this.#lastMac1,
        reply.encryptedCookie,
      );
    } catch {
      throw new CryptoError("bad_cookie", "The cookie reply does not match the last message sent");
    }
    this.#cookieSince = now;
  }
}
