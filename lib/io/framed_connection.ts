/**
 * A TCP connection that carries length-prefixed frames.
 *
 * @module
 */
import { MAX_FRAME_BYTES } from "../wire/messages.ts";
import { ProtocolError } from "../wire/protocol_error.ts";
import { encodeFrame, FrameDecoder, type FrameOptions } from "../wire/frame_decoder.ts";

const READ_BUFFER_BYTES = 64 * 1024;

/** Where a connection's peer is. */
export interface RemoteAddress {
  /** The peer's IP address. */
  hostname: string;
  /** The peer's TCP port. */
  port: number;
}

/**
 * Wraps a `Deno.Conn` to read and write whole frames: a four-byte big-endian
 * length, then one encoded message.
 *
 * @example
 * ```ts
 * const connection = new FramedConnection(await Deno.connect({ hostname: "127.0.0.1", port }));
 * await connection.write(encodeMessage({ type: "text_ok", reqId: 1 }));
 * for await (const body of connection.frames()) console.log(decodeMessage(body));
 * connection.close();
 * ```
 */
export class FramedConnection {
  /** The peer's address, as it was when the connection was made. */
  readonly remoteAddr: RemoteAddress;
  #conn: Deno.Conn;
  #maxFrameBytes: number;
  #decoder: FrameDecoder;
  #writeTail: Promise<void> = Promise.resolve();
  #closed = false;
  #bytesRead = 0;
  #bytesWritten = 0;
  #framesRead = 0;
  #reading = false;
  #writesQueued = 0;

  /**
   * @param conn an open TCP connection; this object now owns it
   * @param options the largest frame body to send or accept
   * @throws {RangeError} if `maxFrameBytes` is invalid
   */
  constructor(conn: Deno.Conn, options: FrameOptions = {}) {
    this.#conn = conn;
    this.#maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES;
    this.#decoder = new FrameDecoder(options);
    const addr = conn.remoteAddr as Partial<Deno.NetAddr>;
    this.remoteAddr = { hostname: addr.hostname ?? "", port: addr.port ?? 0 };
  }

  /** Bytes read from the peer so far. */
  get bytesRead(): number {
    return this.#bytesRead;
  }

  /** Bytes written to the peer so far (length prefixes included). */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  /** Frames read whole so far. */
  get framesRead(): number {
    return this.#framesRead;
  }

  /** Bytes of an unfinished frame held, length prefix included; 0 between frames. */
  get pendingBytes(): number {
    return this.#decoder.pendingBytes;
  }

  /**
   * True while `frames()` waits for the peer's bytes; false while its caller
   * has not asked for the next frame yet, or before and after reading.
   */
  get reading(): boolean {
    return this.#reading;
  }

  /** Frames queued or being written. */
  get writesQueued(): number {
    return this.#writesQueued;
  }

  /**
   * Reads frame bodies until the peer closes the connection or `close()` is
   * called. Call it once per connection. It does not close the connection on
   * error; the caller does.
   *
   * @returns the bodies, in order, each a fresh array
   * @throws {ProtocolError} `too_large` on a length prefix of 0 or above the
   * limit, `truncated` if the peer closes in the middle of a frame
   */
  async *frames(): AsyncGenerator<Uint8Array> {
    const decoder = this.#decoder;
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    while (true) {
      let n: number | null;
      this.#reading = true;
      try {
        n = await this.#conn.read(buffer);
      } catch (error) {
        if (this.#closed || isGone(error)) return;
        throw error;
      } finally {
        this.#reading = false;
      }
      if (n === null) {
        if (decoder.pendingBytes > 0 && !this.#closed) {
          throw new ProtocolError(
            "truncated",
            `Connection closed inside a frame, ${decoder.pendingBytes} bytes into it`,
          );
        }
        return;
      }
      this.#bytesRead += n;
      for (const frame of decoder.push(buffer.subarray(0, n))) {
        this.#framesRead++;
        yield frame;
      }
    }
  }

  /**
   * Sends one body as a frame. Concurrent calls are queued, so frames never
   * interleave; a failed write does not block the ones queued after it.
   *
   * @param body one encoded message
   * @returns a promise that resolves once the whole frame is written
   * @throws {RangeError} if the body is empty or too large
   * @throws {Deno.errors.BadResource} if the connection is closed
   */
  write(body: Uint8Array): Promise<void> {
    let frame: Uint8Array;
    try {
      frame = encodeFrame(body, { maxFrameBytes: this.#maxFrameBytes });
    } catch (error) {
      return Promise.reject(error);
    }
    this.#writesQueued++;
    const run = this.#writeTail.then(() => this.#writeAll(frame)).finally(() =>
      this.#writesQueued--
    );
    this.#writeTail = run.catch(() => {});
    return run;
  }

  /** Closes the connection; safe to call more than once, and never throws. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by Deno or the peer: nothing left to release.
    }
  }

  async #writeAll(frame: Uint8Array): Promise<void> {
    if (this.#closed) throw new Deno.errors.BadResource("Cannot write: the connection is closed");
    let offset = 0;
    while (offset < frame.length) {
      const n = await this.#conn.write(frame.subarray(offset));
      offset += n;
      this.#bytesWritten += n;
    }
  }
}

function isGone(error: unknown): boolean {
  return error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.Interrupted ||
    error instanceof Deno.errors.ConnectionReset;
}
