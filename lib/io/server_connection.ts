/**
 * One TCP connection from the client to a server instance, with its own
 * secure channel (a `ServerChannel`, the same pinned server key): connect,
 * handshake within {@linkcode TCP_HANDSHAKE_MS}, then sealed messages both
 * ways. The client driver keeps one to the instance it uses, and opens one
 * more to follow a `file_elsewhere` to the instance whose disk holds a file.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { ServerChannel } from "../client/server_channel.ts";
import { systemClock } from "../clock.ts";
import { hostPort } from "../host_port.ts";
import { decodeMessage } from "../wire/codec.ts";
import type { Message } from "../wire/messages.ts";
import { FramedConnection } from "./framed_connection.ts";

/** How long a TCP connection may take to finish its handshake, ms. */
export const TCP_HANDSHAKE_MS = 10_000;

const log = getLogger(["switchboard", "client"]);

/** What a connection tells its owner. */
export interface ServerConnectionHost {
  /** A message from the server (awaited: frames are taken in order). */
  message(message: Message): Promise<void> | void;
  /** The connection ended (closed by either side, or failed). */
  closed(): Promise<void> | void;
}

/**
 * A sealed TCP connection to one server instance.
 *
 * @example
 * ```ts
 * const conn = await ServerConnection.open("127.0.0.1", 3001, guard.tcpChannel(), host);
 * await conn.send(encodeMessage(request));
 * conn.close();
 * ```
 */
export class ServerConnection {
  /** Where it goes, `host:port`. */
  readonly target: string;
  readonly #framed: FramedConnection;
  readonly #channel: ServerChannel;
  readonly #ready = Promise.withResolvers<void>();
  #loop: Promise<void> = Promise.resolve();

  private constructor(target: string, framed: FramedConnection, channel: ServerChannel) {
    this.target = target;
    this.#framed = framed;
    this.#channel = channel;
    this.#ready.promise.catch(() => {});
  }

  /**
   * Connects and completes the handshake.
   *
   * @param hostname the instance's host
   * @param port its TCP port
   * @param channel a fresh channel to the server (`ServerGuard.tcpChannel`)
   * @param host told of messages and of the end
   * @returns the open connection
   * @throws {Error} if it cannot connect or the handshake does not finish in time
   */
  static async open(
    hostname: string,
    port: number,
    channel: ServerChannel,
    host: ServerConnectionHost,
  ): Promise<ServerConnection> {
    const conn = await Deno.connect({ hostname, port, transport: "tcp" });
    const connection = new ServerConnection(
      hostPort(hostname, port),
      new FramedConnection(conn),
      channel,
    );
    connection.#loop = connection.#receive(host);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error("the server did not finish the encrypted handshake")),
        TCP_HANDSHAKE_MS,
      );
    });
    try {
      await connection.#framed.write(channel.initiate(systemClock.now()));
      await Promise.race([connection.#ready.promise, late]);
    } catch (error) {
      connection.close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
    return connection;
  }

  /** Resolves once the connection has ended and its owner was told. */
  get ended(): Promise<void> {
    return this.#loop;
  }

  /**
   * Seals an encoded message and writes it.
   *
   * @param bytes the encoded message
   */
  async send(bytes: Uint8Array): Promise<void> {
    for (const sealed of this.#channel.send(bytes, systemClock.now())) {
      await this.#framed.write(sealed);
    }
  }

  /** Closes the connection (its owner hears `closed`). */
  close(): void {
    this.#framed.close();
  }

  async #receive(host: ServerConnectionHost): Promise<void> {
    try {
      for await (const frame of this.#framed.frames()) {
        const input = this.#channel.receive(frame, systemClock.now());
        if (input.kind === "established") {
          for (const sealed of input.send) await this.#framed.write(sealed);
          this.#ready.resolve();
          continue;
        }
        if (input.kind === "dropped") {
          log.debug("Dropped a frame from the server: {reason}", { reason: input.reason });
          continue;
        }
        if (input.plaintext.length === 0) continue;
        await host.message(decodeMessage(input.plaintext));
      }
    } catch (error) {
      log.warn("TCP connection to the server at {target} failed: {error}", {
        target: this.target,
        error,
      });
    }
    this.#framed.close();
    this.#ready.reject(new Error("the server closed the TCP connection"));
    await host.closed();
  }
}
