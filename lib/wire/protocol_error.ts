/** Machine-readable reasons a datagram or frame was rejected. */
export type ProtocolErrorCode =
  | "bad_magic"
  | "bad_version"
  | "unknown_type"
  | "truncated"
  | "trailing_bytes"
  | "too_long"
  | "bad_utf8"
  | "bad_value"
  | "too_large";

/**
 * Thrown by the codec, and only by the codec, when bytes are not a valid
 * Switchboard message. Socket loops catch it, count it and carry on.
 *
 * @example
 * ```ts
 * try {
 *   decodeMessage(bytes);
 * } catch (error) {
 *   if (error instanceof ProtocolError) console.log(error.code);
 * }
 * ```
 */
export class ProtocolError extends Error {
  /** Why the input was rejected. */
  readonly code: ProtocolErrorCode;

  /**
   * @param code why the input was rejected
   * @param message one sentence for logs
   */
  constructor(code: ProtocolErrorCode, message: string) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}
