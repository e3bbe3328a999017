/**
 * TCP connections that hold a server's slots the cheapest way that keeps
 * them open: each runs the version 3 handshake (it needs the server's key),
 * sends one sealed `hello` at once and another every `everyMs` (which resets
 * an idle timer), drops the replies, and is opened again as soon as the
 * server closes it. For the abuse tests and
 * `scripts/bench_abuse.ts`. Connects through `node:net`, because
 * `Deno.connect` cannot choose its source address and an attacker on
 * loopback may have many (127.0.0.2, 127.0.0.3, ...).
 *
 * @module
 */
import net from "node:net";
import { ServerChannel } from "../lib/client/server_channel.ts";
import { generateKeyPair, type KeyPair } from "../lib/crypto/key_pair.ts";
import { cryptoRandom } from "../lib/random.ts";
import { encodeMessage } from "../lib/wire/codec.ts";
import { encodeFrame, FrameDecoder } from "../lib/wire/frame_decoder.ts";

/** Options of {@linkcode TcpSquatters.start}. */
export interface TcpSquattersOptions {
  /** The server's TCP address. */
  readonly hostname: string;
  /** The server's TCP port. */
  readonly port: number;
  /** The server's static public key (from its data directory's `server_identity.json`). */
  readonly serverKey: Uint8Array;
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
  #sockets = new Map<net.Socket, ServerChannel>();
  /** One key pair for all: an attacker saves the key generation too. */
  #keyPair: KeyPair = generateKeyPair(cryptoRandom);
  #stopped = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #sent = 0;

  private constructor(options: TcpSquattersOptions) {
    this.#options = options;
  }

  /**
   * Opens every connection and waits until each has finished its handshake
   * and sent its first `hello`.
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
      for (const socket of squatters.#sockets.keys()) squatters.#hello(socket);
    }, options.everyMs ?? 20_000);
    return squatters;
  }

  /** @returns how many connections are open now */
  get open(): number {
    return this.#sockets.size;
  }

  /** Sends a sealed `hello` (the first one waits in the channel for the handshake). */
  #hello(socket: net.Socket): void {
    const channel = this.#sockets.get(socket);
    if (channel === undefined) return;
    const client = (++this.#sent).toString(16).padStart(16, "0");
    const hello = encodeMessage({ type: "hello", reqId: this.#sent, client });
    for (const bytes of channel.send(hello, performance.now())) socket.write(encodeFrame(bytes));
  }

  #open(source: string): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    const socket = net.connect({
      host: this.#options.hostname,
      port: this.#options.port,
      localAddress: source,
    });
    const channel = new ServerChannel({
      serverKey: this.#options.serverKey,
      staticKeyPair: this.#keyPair,
      random: cryptoRandom,
    });
    const frames = new FrameDecoder();
    socket.on("connect", () => {
      this.#sockets.set(socket, channel);
      this.#hello(socket); // the initiation; the hello follows the handshake
    });
    socket.on("data", (chunk: Uint8Array) => {
      // The handshake's answer lets the hello out; the replies are dropped.
      let bodies: Uint8Array[];
      try {
        bodies = frames.push(chunk);
      } catch {
        return void socket.destroy();
      }
      for (const frame of bodies) {
        const input = channel.receive(frame, performance.now());
        if (input.kind !== "established") continue;
        for (const bytes of input.send) socket.write(encodeFrame(bytes));
        resolve();
      }
    });
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
    const closed = [...this.#sockets.keys()].map((socket) =>
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
