/**
 * TCP connections that hold a server's slots the cheapest way that keeps
 * them open: each sends one valid `hello` frame at once and another every
 * `everyMs` (which resets an idle timer), reads nothing, and is opened again
 * as soon as the server closes it. For the abuse tests and
 * `scripts/bench_abuse.ts`. Connects through `node:net`, because
 * `Deno.connect` cannot choose its source address and an attacker on
 * loopback may have many (127.0.0.2, 127.0.0.3, ...).
 *
 * @module
 */
import net from "node:net";
import { encodeMessage } from "../lib/wire/codec.ts";
import { encodeFrame } from "../lib/wire/frame_decoder.ts";

/** Options of {@linkcode TcpSquatters.start}. */
export interface TcpSquattersOptions {
  /** The server's TCP address. */
  readonly hostname: string;
  /** The server's TCP port. */
  readonly port: number;
  /** The source addresses, each holding `perAddress` connections. */
  readonly sources: readonly string[];
  /** Connections per source address. */
  readonly perAddress: number;
  /** How often each sends another `hello`, ms (default 20,000). */
  readonly everyMs?: number;
}

/**
 * A set of connections that squat on a server's TCP slots until `stop`.
 *
 * @example
 * ```ts
 * await using squatters = await TcpSquatters.start({
 *   hostname: "127.0.0.1", port, sources: ["127.0.0.1"], perAddress: 32,
 * });
 * // ... try to upload; squatters.reopened says how often the server closed one
 * ```
 */
export class TcpSquatters implements AsyncDisposable {
  /** How many times the server closed a connection and it was opened again. */
  reopened = 0;
  #options: TcpSquattersOptions;
  #sockets = new Set<net.Socket>();
  #stopped = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #sent = 0;

  private constructor(options: TcpSquattersOptions) {
    this.#options = options;
  }

  /**
   * Opens every connection and waits until each has sent its first `hello`.
   *
   * @param options the server and the sources
   * @returns the running squatters
   */
  static async start(options: TcpSquattersOptions): Promise<TcpSquatters> {
    const squatters = new TcpSquatters(options);
    const opened: Promise<void>[] = [];
    for (const source of options.sources) {
      for (let i = 0; i < options.perAddress; i++) opened.push(squatters.#open(source));
    }
    await Promise.all(opened);
    squatters.#timer = setInterval(() => {
      for (const socket of squatters.#sockets) squatters.#hello(socket);
    }, options.everyMs ?? 20_000);
    return squatters;
  }

  /** @returns how many connections are open now */
  get open(): number {
    return this.#sockets.size;
  }

  #hello(socket: net.Socket): void {
    const client = (++this.#sent).toString(16).padStart(16, "0");
    socket.write(encodeFrame(encodeMessage({ type: "hello", reqId: this.#sent, client })));
  }

  #open(source: string): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    const socket = net.connect({
      host: this.#options.hostname,
      port: this.#options.port,
      localAddress: source,
    });
    socket.on("connect", () => {
      this.#sockets.add(socket);
      this.#hello(socket);
      resolve();
    });
    socket.on("data", () => {}); // read and drop the replies
    socket.on("error", () => {});
    socket.on("close", () => {
      this.#sockets.delete(socket);
      resolve();
      if (this.#stopped) return;
      this.reopened++;
      this.#open(source);
    });
    return promise;
  }

  /** Closes every connection for good. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    const closed = [...this.#sockets].map((socket) =>
      new Promise<void>((resolve) => {
        socket.once("close", () => resolve());
        socket.destroy();
      })
    );
    await Promise.all(closed);
  }

  /** Same as `stop`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}
