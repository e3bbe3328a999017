/**
 * Runs the {@linkcode ClientCore} on real sockets: a UDP socket for requests
 * to the server, a TCP connection opened when first needed, and one
 * wall-clock timer for retransmissions.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { ClientCore, type CommandResult, type CoreCommand } from "../client/client_core.ts";
import type { RetryPolicy } from "../client/retry_policy.ts";
import type { Via } from "../client/server_session.ts";
import { systemClock } from "../clock.ts";
import { cryptoRandom } from "../random.ts";
import { FramedConnection } from "../transport/framed_connection.ts";
import { UdpSocket } from "../transport/udp_socket.ts";
import { decodeMessage, encodeMessage } from "../wire/codec.ts";
import { MAX_DATAGRAM_BYTES, type Request } from "../wire/messages.ts";
import { ProtocolError } from "../wire/protocol_error.ts";

/** Everything the client driver needs to start. */
export interface ClientConfig {
  /** The server's host name or IP address. */
  serverHost: string;
  /** The server's UDP port. */
  serverPort: number;
  /** Local UDP port; 0 lets the system choose. */
  udpPort: number;
  /** The client's declared TCP port. */
  tcpPort: number;
  /** The name to register under, if known. */
  name?: string;
  /** The transport for register and deregister. */
  via: Via;
  /** Retransmission schedule; the default gives up after 30 s. */
  retry?: RetryPolicy;
}

const log = getLogger(["switchboard", "client"]);

/**
 * A running client.
 *
 * @example
 * ```ts
 * const client = await ClientDriver.open({ serverHost: "127.0.0.1", serverPort: 3000,
 *   udpPort: 0, tcpPort: 5001, name: "Alice Smith", via: "udp" });
 * await client.run({ kind: "hello" });
 * const result = await client.run({ kind: "register" });
 * await client.close();
 * ```
 */
export class ClientDriver {
  /** The local UDP port. */
  readonly udpPort: number;
  #config: ClientConfig;
  #core: ClientCore;
  #udp: UdpSocket;
  #serverAddress: string;
  #tcp: FramedConnection | undefined;
  #tcpLoop: Promise<void> = Promise.resolve();
  #udpLoop: Promise<void>;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt: number | undefined;
  #waiting: ((result: CommandResult) => void) | undefined;
  #closed = false;

  private constructor(config: ClientConfig, udp: UdpSocket, serverAddress: string) {
    this.#config = config;
    this.#udp = udp;
    this.#serverAddress = serverAddress;
    this.udpPort = udp.localPort;
    this.#core = new ClientCore({
      random: cryptoRandom,
      retry: config.retry,
      name: config.name,
      udpPort: udp.localPort,
      tcpPort: config.tcpPort,
      via: config.via,
      server: hostPort(config.serverHost, config.serverPort),
    });
    this.#udpLoop = this.#receiveUdp();
  }

  /**
   * Binds the client's UDP socket.
   *
   * @param config server address, ports, name and transport
   * @returns the client, ready for commands
   * @throws {Deno.errors.AddrInUse} if the UDP port is taken
   */
  static open(config: ClientConfig): Promise<ClientDriver> {
    const serverAddress = config.serverHost === "localhost" ? "127.0.0.1" : config.serverHost;
    const hostname = serverAddress.includes(":") ? "::" : "0.0.0.0";
    const udp = UdpSocket.open({ hostname, port: config.udpPort });
    log.info("Client {pid} started on UDP port {udpPort}; server {server}", {
      pid: Deno.pid,
      udpPort: udp.localPort,
      server: hostPort(config.serverHost, config.serverPort),
    });
    return Promise.resolve(new ClientDriver(config, udp, serverAddress));
  }

  /** The core, for its state. */
  get core(): ClientCore {
    return this.#core;
  }

  /**
   * Runs one command and waits for its result.
   *
   * @param command the command
   * @returns the result; failures are results too, never exceptions
   */
  run(command: CoreCommand): Promise<CommandResult> {
    if (this.#closed) throw new TypeError("Cannot run a command on a closed client");
    const { promise, resolve } = Promise.withResolvers<CommandResult>();
    this.#waiting = resolve;
    log.debug("Command {kind}", { kind: command.kind });
    this.#core.run(systemClock.now(), command);
    this.#drain();
    return promise;
  }

  /** Closes the sockets and the timer. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#udp.close();
    this.#tcp?.close();
    await this.#udpLoop;
    await this.#tcpLoop;
    log.info("Client {pid} stopped", { pid: Deno.pid });
  }

  async #receiveUdp(): Promise<void> {
    for await (const datagram of this.#udp.receive()) {
      if (datagram.data.length > MAX_DATAGRAM_BYTES) continue;
      try {
        const message = decodeMessage(datagram.data);
        this.#core.handle(systemClock.now(), message);
        this.#drain();
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        log.debug("Ignored a bad datagram from {address}: {reason}", {
          address: datagram.address,
          reason: error.message,
        });
      }
    }
  }

  #drain(): void {
    for (let out = this.#core.poll(); out !== undefined; out = this.#core.poll()) {
      if (out.type === "send") {
        this.#send(out.via, out.message, out.attempt);
        continue;
      }
      const result = out.result;
      if (result.ok) {
        log.info("{command}: {message}", { command: result.command, message: result.message });
      } else {
        log.warn("{command} failed: {error}", { command: result.command, error: result.error });
      }
      const waiting = this.#waiting;
      this.#waiting = undefined;
      waiting?.(result);
    }
    this.#armTimer();
  }

  #armTimer(): void {
    const at = this.#core.nextTimeout();
    if (at === this.#timerAt) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = at;
    if (at === undefined || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = undefined;
      this.#core.onTimeout(systemClock.now());
      this.#drain();
    }, Math.max(0, at - systemClock.now()));
  }

  #send(via: Via, message: Request, attempt: number): void {
    const bytes = encodeMessage(message);
    if (via === "udp") {
      log.debug("Sending {type} request {reqId} over UDP (attempt {attempt})", {
        type: message.type,
        reqId: message.reqId,
        attempt,
      });
      this.#udp.send(bytes, this.#serverAddress, this.#config.serverPort).catch((error) =>
        log.warn("UDP send failed: {error}", { error })
      );
      return;
    }
    this.#sendTcp(bytes).catch((error) => {
      this.#tcp?.close();
      this.#tcp = undefined;
      this.#core.tcpFailed(
        `cannot reach the server over TCP at ${
          hostPort(this.#config.serverHost, this.#core.serverTcpPort ?? 0)
        }: ${(error as Error).message}`,
      );
      this.#drain();
    });
  }

  async #sendTcp(bytes: Uint8Array): Promise<void> {
    if (this.#tcp === undefined) {
      const conn = await Deno.connect({
        hostname: this.#serverAddress,
        port: this.#core.serverTcpPort!,
        transport: "tcp",
      });
      if (this.#closed) {
        conn.close();
        return;
      }
      const framed = new FramedConnection(conn);
      this.#tcp = framed;
      this.#tcpLoop = this.#receiveTcp(framed);
    }
    await this.#tcp.write(bytes);
  }

  async #receiveTcp(framed: FramedConnection): Promise<void> {
    try {
      for await (const frame of framed.frames()) {
        this.#core.handle(systemClock.now(), decodeMessage(frame));
        this.#drain();
      }
    } catch (error) {
      log.warn("TCP connection to the server failed: {error}", { error });
    }
    framed.close();
    if (this.#tcp === framed) this.#tcp = undefined;
    if (!this.#closed) {
      this.#core.tcpFailed("the server closed the TCP connection");
      this.#drain();
    }
  }
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
