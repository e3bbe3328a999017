/** Machine-readable reasons the cryptographic layer refused an input. */
export type CryptoErrorCode =
  /** Not a secure-layer datagram: wrong magic, unknown kind, bad length or field. */
  | "malformed"
  /** A Switchboard datagram of another protocol version (such as a version 2 peer). */
  | "bad_version"
  /** A message is shorter than its fixed fields, or has the wrong length. */
  | "truncated"
  /** An AEAD tag did not verify: the bytes were altered, or the key is wrong. */
  | "auth_failed"
  /** A Diffie-Hellman result was all zeros: the peer sent a low-order point. */
  | "bad_key"
  /** A handshake message arrived when the handshake expected none, or the other kind. */
  | "unexpected_message"
  /** A transport counter, or a handshake initiation, was seen before. */
  | "replayed"
  /** A transport counter is older than the replay window remembers. */
  | "stale_counter"
  /** A handshake initiation's timestamp is not newer than the responder's record allows. */
  | "stale_timestamp"
  /** The session's keys are past their age or message limit; a new handshake is needed. */
  | "expired"
  /** A mac1 did not verify: the sender does not know the responder's static key. */
  | "bad_mac1"
  /** A mac2 was neither zeros nor made with a cookie we gave: the message was altered. */
  | "bad_mac2"
  /** A cookie reply did not decrypt for the last initiation sent. */
  | "bad_cookie";

/**
 * Thrown by `lib/crypto/` when bytes from the network fail a check. Socket
 * loops catch it, count it by code and drop the input without a reply.
 * Misuse by the caller (a wrong key length, a call out of order) throws
 * `TypeError` or `RangeError` instead.
 *
 * @example
 * ```ts
 * try {
 *   session.open(counter, ciphertext, now);
 * } catch (error) {
 *   if (error instanceof CryptoError) console.log(error.code); // "replayed"
 * }
 * ```
 */
export class CryptoError extends Error {
  /** Why the input was refused. */
  readonly code: CryptoErrorCode;

  /**
   * @param code why the input was refused
   * @param message one sentence for logs
   */
  constructor(code: CryptoErrorCode, message: string) {
    super(message);
    this.name = "CryptoError";
    this.code = code;
  }
}
