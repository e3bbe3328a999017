/**
 * TCP framing: every frame is a four-byte big-endian unsigned length followed
 * by that many bytes, the body, which is one encoded message.
 *
 * @module
 */
import { MAX_FRAME_BYTES } from "./messages.ts";
import { ProtocolError } from "./protocol_error.ts";

/** Size of the length prefix that starts every frame. */
export const FRAME_HEADER_BYTES = 4;

/** Options for {@linkcode FrameDecoder} and {@linkcode encodeFrame}. */
export interface FrameOptions {
  /** Largest body accepted, in bytes; defaults to `MAX_FRAME_BYTES`. */
  maxFrameBytes?: number;
}

/**
 * Splits a TCP byte stream into frame bodies, without doing any I/O. Feed it
 * whatever `read` returned; it keeps a partial frame until the rest arrives.
 * Each body is copied once, straight into its own buffer, so many small
 * chunks cost no more than one large one.
 *
 * @example
 * ```ts
 * const decoder = new FrameDecoder();
 * const frame = encodeFrame(new Uint8Array([1, 2, 3]));
 * decoder.push(frame.subarray(0, 2)); // []
 * decoder.push(frame.subarray(2)); // [Uint8Array [1, 2, 3]]
 * ```
 */
export class FrameDecoder {
  #max: number;
  #header = new Uint8Array(FRAME_HEADER_BYTES);
  #headerFilled = 0;
  #body: Uint8Array | null = null;
  #bodyFilled = 0;
  #error: ProtocolError | null = null;

  /**
   * @param options the largest body to accept
   * @throws {RangeError} if `maxFrameBytes` is not an integer in 1..2^32-1
   */
  constructor(options: FrameOptions = {}) {
    this.#max = checkMax(options.maxFrameBytes);
  }

  /**
   * How many bytes of an unfinished frame are held; 0 between frames.
   *
   * @returns the count, length prefix included
   */
  get pendingBytes(): number {
    return this.#body === null ? this.#headerFilled : FRAME_HEADER_BYTES + this.#bodyFilled;
  }

  /**
   * Adds bytes from the stream and returns every frame body they complete.
   *
   * @param chunk the next bytes of the stream, of any length; not retained
   * @returns the completed bodies in stream order, each a fresh array
   * @throws {ProtocolError} `too_large` as soon as a length prefix is 0 or above
   * the limit (frames completed earlier in the same chunk are dropped); every
   * later call throws the same error
   */
  push(chunk: Uint8Array): Uint8Array[] {
    if (this.#error !== null) throw this.#error;
    const frames: Uint8Array[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#body === null) {
        const take = Math.min(FRAME_HEADER_BYTES - this.#headerFilled, chunk.length - offset);
        this.#header.set(chunk.subarray(offset, offset + take), this.#headerFilled);
        this.#headerFilled += take;
        offset += take;
        if (this.#headerFilled < FRAME_HEADER_BYTES) break;
        this.#headerFilled = 0;
        const h = this.#header;
        const length = ((h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3]) >>> 0;
        if (length === 0 || length > this.#max) {
          this.#error = new ProtocolError(
            "too_large",
            length === 0
              ? "Frame declares a length of 0; a frame carries one message"
              : `Frame declares ${length} bytes; the limit is ${this.#max}`,
          );
          throw this.#error;
        }
        this.#body = new Uint8Array(length);
        this.#bodyFilled = 0;
      }
      const body = this.#body;
      const take = Math.min(body.length - this.#bodyFilled, chunk.length - offset);
      body.set(chunk.subarray(offset, offset + take), this.#bodyFilled);
      this.#bodyFilled += take;
      offset += take;
      if (this.#bodyFilled === body.length) {
        frames.push(body);
        this.#body = null;
        this.#bodyFilled = 0;
      }
    }
    return frames;
  }
}

/**
 * Prefixes a body with its four-byte big-endian length.
 *
 * @param body one encoded message
 * @param options the largest body allowed
 * @returns a new array holding the length prefix and the body
 * @throws {RangeError} if the body is empty or longer than `maxFrameBytes`
 *
 * @example
 * ```ts
 * encodeFrame(new Uint8Array([7])); // Uint8Array [0, 0, 0, 1, 7]
 * ```
 */
export function encodeFrame(body: Uint8Array, options: FrameOptions = {}): Uint8Array {
  const max = checkMax(options.maxFrameBytes);
  if (body.length === 0) throw new RangeError("Cannot frame an empty body");
  if (body.length > max) {
    throw new RangeError(`Cannot frame ${body.length} bytes: the limit is ${max}`);
  }
  const frame = new Uint8Array(FRAME_HEADER_BYTES + body.length);
  new DataView(frame.buffer).setUint32(0, body.length);
  frame.set(body, FRAME_HEADER_BYTES);
  return frame;
}

function checkMax(value: number | undefined): number {
  if (value === undefined) return MAX_FRAME_BYTES;
  if (!Number.isInteger(value) || value < 1 || value > 0xffffffff) {
    throw new RangeError(`Cannot use maxFrameBytes ${value}: not an integer in 1..4294967295`);
  }
  return value;
}
