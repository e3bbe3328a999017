/**
 * A UDP socket over `Deno.listenDatagram` (needs the `net` unstable feature).
 *
 * @module
 */
import { MAX_DATAGRAM_BYTES } from "../wire/messages.ts";

/** Options for {@linkcode UdpSocket.open}. */
export interface UdpSocketOptions {
  /** The local address to bind, such as `"0.0.0.0"`, `"127.0.0.1"` or `"::1"`. */
  hostname: string;
  /** The local port to bind; 0 lets the system choose. */
  port: number;
}

/** One received datagram and where it came from. */
export interface Datagram {
  /**
   * The payload: a view on the socket's receive buffer, valid only during
   * the `receiveEach` callback (copy it to keep it). One allocation less per
   * datagram, where a file transfer receives tens of thousands a second.
   */
  data: Uint8Array;
  /** The sender's IP address. */
  address: string;
  /** The sender's UDP port. */
  port: number;
}

// Room for any UDP payload, so an oversized datagram is seen whole, not cut.
const RECEIVE_BUFFER_BYTES = 65536;

/**
 * A bound UDP socket: datagrams handed to a callback as they arrive, sent one
 * by one. Sending is best effort, like UDP itself.
 *
 * @example
 * ```ts
 * const socket = UdpSocket.open({ hostname: "127.0.0.1", port: 0 });
 * const received = socket.receiveEach(({ data, address, port }) => {
 *   console.log(data, address, port);
 *   socket.close();
 * });
 * await socket.send(new Uint8Array([1]), "127.0.0.1", socket.localPort);
 * await received;
 * ```
 */
export class UdpSocket {
  /** The port the socket is bound to, useful after binding port 0. */
  readonly localPort: number;
  /** The address the socket is bound to (`0.0.0.0` or `::` for every interface). */
  readonly localHostname: string;
  #conn: Deno.DatagramConn;
  #closed = false;
  /** The address of the last send, reused: a transfer sends every datagram to one peer. */
  #lastDestination: Deno.NetAddr = { transport: "udp", hostname: "", port: 0 };

  private constructor(conn: Deno.DatagramConn) {
    this.#conn = conn;
    this.localPort = (conn.addr as Deno.NetAddr).port;
    this.localHostname = (conn.addr as Deno.NetAddr).hostname;
  }

  /**
   * Binds a UDP socket.
   *
   * @param options the local address and port
   * @returns the open socket
   * @throws {Deno.errors.AddrInUse} if the port is taken, and the other errors
   * of `Deno.listenDatagram`
   */
  static open(options: UdpSocketOptions): UdpSocket {
    return new UdpSocket(
      Deno.listenDatagram({ transport: "udp", hostname: options.hostname, port: options.port }),
    );
  }

  /**
   * Hands each datagram to `onDatagram` as it arrives, until the socket is
   * closed. Datagrams larger than `MAX_DATAGRAM_BYTES` are handed over too;
   * callers decide. A plain loop and a call, not an async iterator: a file
   * transfer receives tens of thousands of datagrams a second, and each
   * step of an iterator costs promises.
   *
   * @param onDatagram called with each datagram; its `data` is valid only
   * during the call
   * @returns a promise that settles once the socket is closed
   */
  async receiveEach(onDatagram: (datagram: Datagram) => void): Promise<void> {
    const buffer = new Uint8Array(RECEIVE_BUFFER_BYTES);
    while (!this.#closed) {
      let received: [Uint8Array, Deno.Addr];
      try {
        received = await this.#conn.receive(buffer);
      } catch (error) {
        if (this.#closed || isClosedError(error)) return;
        // An ICMP error from an earlier send (reported on some systems): the
        // socket itself is fine.
        if (error instanceof Deno.errors.ConnectionReset) continue;
        if (error instanceof Deno.errors.ConnectionRefused) continue;
        throw error;
      }
      const from = received[1] as Deno.NetAddr;
      onDatagram({ data: received[0], address: from.hostname, port: from.port });
    }
  }

  /**
   * Sends one datagram. A failure to send is reported, not thrown: to the
   * protocol it is one more lost packet.
   *
   * @param data the payload, at most `MAX_DATAGRAM_BYTES`
   * @param address the destination IP address
   * @param port the destination port
   * @returns true if the system took the datagram, false if the socket is
   * closed or the system refused it
   * @throws {RangeError} if the payload is too large or the port is invalid
   * @throws {URIError} if the address is not a valid host
   */
  send(data: Uint8Array, address: string, port: number): Promise<boolean> {
    if (data.length > MAX_DATAGRAM_BYTES) {
      return Promise.reject(
        new RangeError(
          `Cannot send a datagram of ${data.length} bytes: the limit is ${MAX_DATAGRAM_BYTES}`,
        ),
      );
    }
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      return Promise.reject(
        new RangeError(`Cannot send to port ${port}: not an integer in 1..65535`),
      );
    }
    if (this.#closed) return Promise.resolve(false);
    // Not an async function: a file transfer sends tens of thousands of
    // datagrams a second, and each await would add a promise and a turn.
    let to = this.#lastDestination;
    if (to.hostname !== address || to.port !== port) {
      to = this.#lastDestination = { transport: "udp", hostname: address, port };
    }
    return this.#conn.send(data, to).then(sent, refused);
  }

  /** Closes the socket and ends `receiveEach()`; safe to call more than once. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed: nothing left to release.
    }
  }
}

function sent(): boolean {
  return true;
}

/** A system error is one more lost datagram; anything else is a bug and stays thrown. */
function refused(error: unknown): boolean {
  if (isSystemError(error)) return false;
  throw error;
}

function isClosedError(error: unknown): boolean {
  return error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted;
}

const DENO_ERRORS: readonly (new (...args: never[]) => Error)[] = Object.values(Deno.errors);

// A Deno.errors class, or an OS error Deno has no class for (it carries `code`).
function isSystemError(error: unknown): boolean {
  if (DENO_ERRORS.some((type) => error instanceof type)) return true;
  return error instanceof Error && typeof (error as { code?: unknown }).code === "string";
}
