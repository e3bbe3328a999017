/**
 * A bare-bones protocol client for the fault-injection tools
 * (`scripts/fuzz.ts`, `tests/crash_safety_test.ts`): requests built with the
 * codec in `lib/wire/` and sent over UDP (with retransmission) or TCP (framed),
 * without the client core, so that a test controls every request and every
 * instant, and can record exactly which requests were acknowledged. Version
 * 3 seals them: the client's `ServerGuard` on UDP (a clear `hello` learns the
 * server's key), a `ServerChannel` with its own handshake per TCP connection.
 *
 * @module
 */
import { toHex } from "../lib/hex.ts";
import { FramedConnection } from "../lib/io/framed_connection.ts";
import { ServerGuard } from "../lib/client/server_guard.ts";
import { ServerChannel } from "../lib/client/server_channel.ts";
import { loadServerIdentity, SERVER_IDENTITY_FILE } from "../lib/io/server_identity_file.ts";
import { join } from "@std/path";
import { generateKeyPair, type KeyPair } from "../lib/crypto/key_pair.ts";
import { cryptoRandom } from "../lib/random.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import type { Message, MessageOf, Request } from "../lib/wire/messages.ts";

/** Requests without the `reqId` and `client` that the requester fills in. */
export type RequestBody = Request extends infer R
  ? R extends Request ? Omit<R, "reqId" | "client"> : never
  : never;

/** How a UDP request is retried. */
export interface RetryOptions {
  /** The wait before each retransmission, ms (default 250). */
  retransmitMs?: number;
  /** Give up after this long, ms (default 5000). */
  timeoutMs?: number;
}

/**
 * Sends requests to a server over one UDP socket, matches replies by
 * `reqId`, and retransmits the same bytes until a reply comes or time runs
 * out. One random client id per requester, request ids counting up.
 *
 * @example
 * ```ts
 * using udp = new UdpRequester({ hostname: "127.0.0.2", server: { hostname: "127.0.0.1", port } });
 * const reply = await udp.request({ type: "hello" });
 * ```
 */
export class UdpRequester implements Disposable {
  /** The random client id sent with every request. */
  readonly client: string;
  /** Its static key pair: its open-mode identity. */
  readonly keyPair: KeyPair;
  /** The local port. */
  readonly localPort: number;
  readonly #socket: Deno.DatagramConn;
  readonly #server: Deno.NetAddr;
  readonly #waiting = new Map<number, (reply: Message | undefined) => void>();
  readonly #loop: Promise<void>;
  readonly #record: Uint8Array[] | undefined;
  readonly #guard: ServerGuard;
  /** Messages go in clear: for an echo server as a baseline (a version 3 server refuses them). */
  readonly #clear: boolean;
  #nextReqId: number;
  #closed = false;

  /**
   * Binds the socket and starts reading replies.
   *
   * @param options the local address to bind, the server's UDP address,
   *   where to record each request's bytes as first sent, whether to
   *   speak in clear (to an echo server, as a baseline), and the static key
   *   pair (the identity names are registered to; a new one if absent)
   */
  constructor(
    options: {
      hostname: string;
      server: { hostname: string; port: number };
      record?: Uint8Array[];
      clear?: boolean;
      keyPair?: KeyPair;
    },
  ) {
    this.#record = options.record;
    this.#clear = options.clear === true;
    this.#socket = Deno.listenDatagram({ transport: "udp", hostname: options.hostname, port: 0 });
    this.localPort = (this.#socket.addr as Deno.NetAddr).port;
    this.#server = { transport: "udp", ...options.server };
    this.keyPair = options.keyPair ?? generateKeyPair(cryptoRandom);
    this.#guard = new ServerGuard({
      staticKeyPair: this.keyPair,
      random: cryptoRandom,
      server: `${options.server.hostname}:${options.server.port}`,
    });
    this.client = toHex(crypto.getRandomValues(new Uint8Array(8)));
    this.#nextReqId = crypto.getRandomValues(new Uint32Array(1))[0] >>> 1;
    this.#loop = this.#read();
  }

  /** @returns a channel for a TCP connection to the same server (its key known from a hello) */
  tcpChannel(): ServerChannel {
    return this.#guard.tcpChannel();
  }

  /** @returns a fresh request id */
  nextReqId(): number {
    return this.#nextReqId = (this.#nextReqId + 1) >>> 0;
  }

  /**
   * Sends a request and waits for its reply, retransmitting it (sealed anew each time).
   *
   * @param body the request, without `reqId` and `client`
   * @param options retransmission interval and time limit
   * @returns the reply, or undefined if none came in time or the socket closed
   */
  async request(body: RequestBody, options: RetryOptions = {}): Promise<Message | undefined> {
    const reqId = this.nextReqId();
    const message = { ...body, reqId, client: this.client } as Request;
    const { promise, resolve } = Promise.withResolvers<Message | undefined>();
    this.#waiting.set(reqId, resolve);
    const deadline = performance.now() + (options.timeoutMs ?? 5000);
    let timer: ReturnType<typeof setTimeout> | undefined;
    let attempts = 0;
    const attempt = () => {
      if (this.#closed || performance.now() >= deadline) return resolve(undefined);
      attempts++;
      const datagrams = this.#clear
        ? [encodeMessage(message)]
        : this.#guard.outgoing(message, performance.now(), attempts);
      if (attempts === 1) this.#record?.push(...datagrams);
      for (const bytes of datagrams) this.send(bytes);
      timer = setTimeout(attempt, options.retransmitMs ?? 250);
    };
    attempt();
    try {
      return await promise;
    } finally {
      clearTimeout(timer);
      this.#waiting.delete(reqId);
    }
  }

  /**
   * Sends raw bytes to the server, best effort.
   *
   * @param bytes the datagram
   */
  send(bytes: Uint8Array): void {
    if (this.#closed) return;
    this.#socket.send(bytes, this.#server).catch(() => {});
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(2048);
    while (!this.#closed) {
      let data: Uint8Array;
      try {
        [data] = await this.#socket.receive(buffer);
      } catch (error) {
        if (this.#closed || error instanceof Deno.errors.BadResource) return;
        continue; // an ICMP error from an earlier send: the socket is fine
      }
      let messages: Message[];
      if (this.#clear) {
        try {
          messages = [decodeMessage(data.slice())];
        } catch {
          continue;
        }
      } else {
        const input = this.#guard.incoming(data.slice(), performance.now());
        for (const bytes of input.send) this.send(bytes);
        messages = input.messages;
      }
      for (const message of messages) {
        if ("reqId" in message) this.#waiting.get(message.reqId)?.(message);
      }
    }
  }

  /** Closes the socket; waiting requests resolve undefined. */
  async close(): Promise<void> {
    this[Symbol.dispose]();
    await this.#loop;
  }

  /** Closes the socket at once; waiting requests resolve undefined. */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#socket.close();
    } catch {
      // already closed
    }
    for (const resolve of this.#waiting.values()) resolve(undefined);
  }
}

/**
 * One TCP connection to the server carrying framed messages, read one at a
 * time in order.
 */
export class TcpExchange implements Disposable {
  readonly #conn: FramedConnection;
  readonly #frames: AsyncGenerator<Uint8Array>;
  readonly #channel: ServerChannel | undefined;

  private constructor(conn: FramedConnection, channel: ServerChannel | undefined) {
    this.#conn = conn;
    this.#frames = conn.frames();
    this.#channel = channel;
  }

  /**
   * Connects, and with a channel runs its handshake (the first frame each way).
   *
   * @param hostname the server's address
   * @param port its TCP port
   * @param channel a channel to the server (`UdpRequester.tcpChannel()`); without one the
   *   connection carries messages in clear, which a version 3 server refuses
   * @returns the connection
   * @throws {Error} if the handshake fails
   */
  static async connect(
    hostname: string,
    port: number,
    channel?: ServerChannel,
  ): Promise<TcpExchange> {
    const conn = new FramedConnection(await Deno.connect({ hostname, port }));
    const exchange = new TcpExchange(conn, channel);
    if (channel === undefined) return exchange;
    try {
      await conn.write(channel.initiate(performance.now()));
      const { value, done } = await exchange.#frames.next();
      const input = done ? undefined : channel.receive(value, performance.now());
      if (input?.kind !== "established") throw new Error("the TCP handshake failed");
      for (const bytes of input.send) await conn.write(bytes);
    } catch (error) {
      conn.close();
      throw error;
    }
    return exchange;
  }

  /**
   * Sends one message as a frame (sealed, with a channel).
   *
   * @param message the message
   */
  async send(message: Message): Promise<void> {
    const bytes = encodeMessage(message);
    if (this.#channel === undefined) return await this.#conn.write(bytes);
    for (const sealed of this.#channel.send(bytes, performance.now())) {
      await this.#conn.write(sealed);
    }
  }

  /**
   * Reads the next message.
   *
   * @returns it, or undefined if the connection ended (or broke)
   */
  async next(): Promise<Message | undefined> {
    try {
      while (true) {
        const { value, done } = await this.#frames.next();
        if (done) return undefined;
        if (this.#channel === undefined || (value[3] & 0x80) === 0) return decodeMessage(value);
        const input = this.#channel.receive(value, performance.now());
        if (input.kind === "message" && input.plaintext.length > 0) {
          return decodeMessage(input.plaintext);
        }
      }
    } catch {
      return undefined;
    }
  }

  /** Closes the connection. */
  [Symbol.dispose](): void {
    this.#conn.close();
  }
}

/**
 * A guard for the load generators (`bench.ts`, `bench_presence.ts`): seals
 * what one simulated client sends to the server and opens what comes back,
 * with a key pair of its own unless given one (the identity of the names it
 * registers and logs in to). Given the server's key (`serverKeyIn`) it
 * starts sealed; without, its first request learns the key by a clear `hello`.
 *
 * @param server the server as `host:port`, for messages
 * @param serverKey the server's static public key, if known
 * @param keyPair the client's static key pair; a new one if absent
 * @returns the guard
 */
export function benchGuard(
  server: string,
  serverKey?: Uint8Array,
  keyPair?: KeyPair,
): ServerGuard {
  return new ServerGuard({
    staticKeyPair: keyPair ?? generateKeyPair(cryptoRandom),
    random: cryptoRandom,
    server,
    pinnedKey: serverKey,
  });
}

/**
 * The static public key of the server whose data directory this is (it
 * writes `server_identity.json` when it starts).
 *
 * @param dataDir the server's data directory
 * @returns the key
 * @throws {Error} if the file is missing or invalid
 */
export async function serverKeyIn(dataDir: string): Promise<Uint8Array> {
  // Stat first: loading would make a key where there is none.
  await Deno.stat(join(dataDir, SERVER_IDENTITY_FILE));
  return (await loadServerIdentity(dataDir)).keyPair.publicKey;
}

/**
 * A channel for a TCP connection to a server whose key is known.
 *
 * @param serverKey the server's static public key
 * @param keyPair the client's static key pair (its identity); a new one if absent
 * @returns a fresh channel
 */
export function channelTo(serverKey: Uint8Array, keyPair?: KeyPair): ServerChannel {
  return new ServerChannel({
    serverKey,
    staticKeyPair: keyPair ?? generateKeyPair(cryptoRandom),
    random: cryptoRandom,
  });
}

/**
 * Narrows a reply to one type.
 *
 * @param reply a reply, or undefined
 * @param type the type wanted
 * @returns the reply if it has that type, else undefined
 */
export function replyOf<T extends Message["type"]>(
  reply: Message | undefined,
  type: T,
): MessageOf<T> | undefined {
  return reply?.type === type ? reply as MessageOf<T> : undefined;
}
