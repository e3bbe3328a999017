/**
 * Test helpers that speak protocol version 3 by hand: a UDP socket and a
 * TCP stream that seal each message for a real server (the client's
 * `ServerGuard` and `ServerChannel`, without the client core), so that a
 * test still controls every message, token and request id it sends.
 */
import { ServerGuard } from "../lib/client/server_guard.ts";
import { ServerChannel } from "../lib/client/server_channel.ts";
import { systemClock } from "../lib/clock.ts";
import { generateKeyPair, type KeyPair } from "../lib/crypto/key_pair.ts";
import { FramedConnection } from "../lib/io/framed_connection.ts";
import { cryptoRandom } from "../lib/random.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import type { Message } from "../lib/wire/messages.ts";
import { encodeFrame } from "../lib/wire/frame_decoder.ts";

/** Resolves with `promise`, or rejects after `ms` naming `what`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A UDP socket whose messages to the server are sealed; what the server says is opened. */
export class SealedUdp {
  /** The socket, for raw sends. */
  readonly socket: Deno.DatagramConn;
  /** Every message the server sent, opened, in order. */
  readonly received: Message[] = [];
  /** Every datagram the server sent, as it came. */
  readonly raw: Uint8Array[] = [];
  readonly #target: Deno.NetAddr;
  readonly #guard: ServerGuard;
  readonly #loop: Promise<void>;
  #waiters = new Set<() => void>();

  /**
   * @param hostname the local address to bind
   * @param serverPort the server's UDP port
   * @param serverHost the server's address (default 127.0.0.1)
   * @param keyPair the client's static key pair, its identity (a new one if absent)
   */
  constructor(
    hostname: string,
    serverPort: number,
    serverHost = "127.0.0.1",
    keyPair: KeyPair = generateKeyPair(cryptoRandom),
  ) {
    const socket = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
    this.socket = socket;
    const target: Deno.NetAddr = { transport: "udp", hostname: serverHost, port: serverPort };
    const guard = new ServerGuard({
      staticKeyPair: keyPair,
      random: cryptoRandom,
      server: `${serverHost}:${serverPort}`,
    });
    this.#target = target;
    this.#guard = guard;
    this.#loop = (async () => {
      try {
        for await (const [data] of socket) {
          this.raw.push(data.slice());
          const input = guard.incoming(data.slice(), systemClock.now());
          for (const bytes of input.send) await socket.send(bytes, target);
          this.received.push(...input.messages);
          for (const wake of this.#waiters) wake();
        }
      } catch {
        // closed
      }
    })();
  }

  /** The server's static key, once a `hello_ok` told it. */
  get serverKey(): Uint8Array | undefined {
    return this.#guard.serverKey;
  }

  /** A new channel for a TCP connection to the same server. */
  tcpChannel(): ServerChannel {
    return this.#guard.tcpChannel();
  }

  /**
   * Sends a message, sealed (a `hello` in clear).
   *
   * @param message the message
   * @param attempt 3 or more makes the channel re-handshake, as a retransmission would
   */
  async send(message: Message, attempt = 1): Promise<void> {
    for (const bytes of this.#guard.outgoing(message, systemClock.now(), attempt)) {
      await this.socket.send(bytes, this.#target);
    }
  }

  /**
   * Sends raw bytes as they are.
   *
   * @param bytes the datagram
   */
  async sendRaw(bytes: Uint8Array): Promise<void> {
    await this.socket.send(bytes, this.#target);
  }

  /**
   * Sends a request and waits for the message with its reqId.
   *
   * @param request the request
   * @param ms how long to wait
   * @returns the reply
   */
  async ask(request: Message & { reqId: number }, ms = 10_000): Promise<Message> {
    const found = () =>
      this.received.find((m) =>
        "reqId" in m && m.reqId === request.reqId && m.type !== "file_chunk"
      );
    await this.send(request);
    return await within(this.waitFor(found), ms, `a reply to ${request.type} ${request.reqId}`);
  }

  /** Like {@link ask}, but undefined if nothing comes within `ms`. */
  async tryAsk(request: Message & { reqId: number }, ms: number): Promise<Message | undefined> {
    try {
      return await this.ask(request, ms);
    } catch {
      return undefined;
    }
  }

  /**
   * Waits until `find` returns something.
   *
   * @param find looks at `received`
   * @returns what it found
   */
  async waitFor<T>(find: () => T | undefined): Promise<T> {
    while (find() === undefined) {
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.#waiters.delete(wake);
          resolve();
        };
        this.#waiters.add(wake);
      });
    }
    return find()!;
  }

  /** Closes the socket. */
  async close(): Promise<void> {
    this.socket.close();
    for (const wake of this.#waiters) wake();
    await this.#loop;
  }
}

/** A TCP connection to the server that runs its own handshake, then seals each frame. */
export class SealedStream {
  readonly #framed: FramedConnection;
  readonly #frames: AsyncGenerator<Uint8Array>;
  readonly #channel: ServerChannel;

  private constructor(framed: FramedConnection, channel: ServerChannel) {
    this.#framed = framed;
    this.#frames = framed.frames();
    this.#channel = channel;
  }

  /**
   * Connects and completes the handshake.
   *
   * @param port the server's TCP port
   * @param channel a channel for it (`SealedUdp.tcpChannel()`)
   * @param hostname the server's address
   * @returns the stream
   */
  static async open(port: number, channel: ServerChannel, hostname = "127.0.0.1") {
    const framed = new FramedConnection(await Deno.connect({ hostname, port, transport: "tcp" }));
    const stream = new SealedStream(framed, channel);
    await framed.write(channel.initiate(systemClock.now()));
    const { value, done } = await within(stream.#frames.next(), 10_000, "the handshake response");
    if (done) throw new Error("the server closed the connection during the handshake");
    const input = channel.receive(value, systemClock.now());
    if (input.kind !== "established") throw new Error(`handshake failed: ${input.kind}`);
    for (const bytes of input.send) await framed.write(bytes);
    return stream;
  }

  /**
   * Sends a message, sealed.
   *
   * @param message the message
   */
  async write(message: Message): Promise<void> {
    for (const bytes of this.#channel.send(encodeMessage(message), systemClock.now())) {
      await this.#framed.write(bytes);
    }
  }

  /**
   * Reads the next message.
   *
   * @returns it, or undefined if the connection ended
   */
  async read(): Promise<Message | undefined> {
    while (true) {
      const { value, done } = await this.#frames.next();
      if (done) return undefined;
      const input = this.#channel.receive(value, systemClock.now());
      if (input.kind === "message" && input.plaintext.length > 0) {
        return decodeMessage(input.plaintext);
      }
    }
  }

  /**
   * Sends a request and reads the next message.
   *
   * @param request the request
   * @returns the reply
   * @throws {Error} if the connection ends first
   */
  async ask(request: Message): Promise<Message> {
    await this.write(request);
    const reply = await within(this.read(), 10_000, `a reply to ${request.type}`);
    if (reply === undefined) {
      throw new Error(`the connection closed before a reply to ${request.type}`);
    }
    return reply;
  }

  /** Closes the connection. */
  close(): void {
    this.#framed.close();
  }
}

/**
 * A channel to a server whose key the test knows (`ServerDriver.publicKey`).
 *
 * @param serverKey the server's static public key
 * @returns a fresh channel with a key pair of its own
 */
export function channelTo(serverKey: Uint8Array): ServerChannel {
  return new ServerChannel({
    serverKey,
    staticKeyPair: generateKeyPair(cryptoRandom),
    random: cryptoRandom,
  });
}

/**
 * Runs a channel's handshake on a raw TCP connection: the initiation frame
 * out, the response frame in, then the first sealed frame out.
 *
 * @param conn the connection
 * @param channel the channel
 */
export async function handshakeOn(conn: Deno.Conn, channel: ServerChannel): Promise<void> {
  await writeAllTo(conn, encodeFrame(channel.initiate(systemClock.now())));
  const header = new Uint8Array(4);
  await readAllFrom(conn, header);
  const body = new Uint8Array(new DataView(header.buffer).getUint32(0));
  await readAllFrom(conn, body);
  const input = channel.receive(body, systemClock.now());
  if (input.kind !== "established") throw new Error(`handshake failed: ${input.kind}`);
  for (const bytes of input.send) await writeAllTo(conn, encodeFrame(bytes));
}

/**
 * A message sealed as one whole TCP frame, length prefix and all.
 *
 * @param channel an established channel
 * @param message the message
 * @returns the frame's bytes
 */
export function sealedFrame(channel: ServerChannel, message: Message): Uint8Array {
  return encodeFrame(channel.send(encodeMessage(message), systemClock.now())[0]);
}

/**
 * Opens a frame body from the server: sealed, or (a connection's closing
 * error before any handshake) in clear.
 *
 * @param channel the connection's channel, if it has one
 * @param body the frame body
 * @returns the message, or undefined for a keepalive or a body that does not open
 */
export function openedFrame(
  channel: ServerChannel | undefined,
  body: Uint8Array,
): Message | undefined {
  if ((body[3] & 0x80) === 0) return decodeMessage(body);
  const input = channel?.receive(body, systemClock.now());
  return input?.kind === "message" && input.plaintext.length > 0
    ? decodeMessage(input.plaintext)
    : undefined;
}

async function writeAllTo(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

async function readAllFrom(conn: Deno.Conn, into: Uint8Array): Promise<void> {
  let filled = 0;
  while (filled < into.length) {
    const n = await conn.read(into.subarray(filled));
    if (n === null) throw new Error("the connection closed early");
    filled += n;
  }
}
