/**
 * Runs the {@linkcode ServerCore} on real sockets: UDP datagrams and TCP
 * frames in, replies out, registry snapshots written atomically before the
 * replies they hold are released.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { systemClock } from "../clock.ts";
import { cryptoRandom } from "../random.ts";
import type { Registry, RegistryJson } from "../server/registry.ts";
import { type Endpoint, ServerCore, type ServerEvent } from "../server/server_core.ts";
import { serverEventText } from "../server/server_event_text.ts";
import { FramedConnection } from "../transport/framed_connection.ts";
import { UdpSocket } from "../transport/udp_socket.ts";
import { decodeMessage, encodeMessage } from "../wire/codec.ts";
import { ERROR_CODES } from "../wire/error_code.ts";
import { MAX_DATAGRAM_BYTES, type Message, type Reply } from "../wire/messages.ts";
import { ProtocolError } from "../wire/protocol_error.ts";
import { BindError } from "./bind_error.ts";
import { lockDataDir } from "./data_dir_lock.ts";
import { loadRegistry, RegistryFileError, saveRegistry } from "./registry_file.ts";
import { loadServerKey } from "./server_key_file.ts";

/** Everything the server driver needs to start. */
export interface ServerConfig {
  /** Address to bind both sockets to. */
  host: string;
  /** UDP port; 0 picks a free one. */
  udpPort: number;
  /** TCP port; 0 picks a free one. */
  tcpPort: number;
  /** Where `registrations.json` lives. */
  dataDir: string;
  /** The version reported to clients. */
  version: string;
  /** Called for every event after it is logged (the console uses it). */
  onEvent?: (event: ServerEvent) => void;
}

/** Traffic counters for the operator. */
export interface TrafficStats {
  /** Datagrams received. */
  datagramsIn: number;
  /** Datagrams sent. */
  datagramsOut: number;
  /** TCP frames received. */
  framesIn: number;
  /** TCP frames sent. */
  framesOut: number;
  /** Datagrams and frames that were not valid messages. */
  rejected: number;
}

const log = getLogger(["switchboard", "server"]);

/**
 * A running server.
 *
 * @example
 * ```ts
 * const server = await ServerDriver.start({ host: "127.0.0.1", udpPort: 0, tcpPort: 0,
 *   dataDir: "./data", version: "0.1.0" });
 * console.log(server.udpPort, server.tcpPort);
 * await server.close();
 * ```
 */
export class ServerDriver {
  /** The bound UDP port. */
  readonly udpPort: number;
  /** The bound TCP port. */
  readonly tcpPort: number;
  /** Traffic counters. */
  readonly traffic: TrafficStats = {
    datagramsIn: 0,
    datagramsOut: 0,
    framesIn: 0,
    framesOut: 0,
    rejected: 0,
  };
  #config: ServerConfig;
  #core: ServerCore;
  #udp: UdpSocket;
  #listener: Deno.TcpListener;
  #connections = new Map<number, FramedConnection>();
  #nextConnId = 1;
  #persisting: Promise<void> = Promise.resolve();
  #loops: Promise<void>[] = [];
  #closed = false;
  #lock: Deno.FsFile;

  private constructor(
    config: ServerConfig,
    core: ServerCore,
    udp: UdpSocket,
    listener: Deno.TcpListener,
    lock: Deno.FsFile,
  ) {
    this.#lock = lock;
    this.#config = config;
    this.#core = core;
    this.#udp = udp;
    this.#listener = listener;
    this.udpPort = udp.localPort;
    this.tcpPort = (listener.addr as Deno.NetAddr).port;
  }

  /**
   * Loads the registry, binds both sockets and starts serving.
   *
   * @param config addresses, ports, data directory
   * @returns the running server
   * @throws {RegistryFileError} if the data directory or a file in it is unusable
   * @throws {DataDirLockedError} if another server uses the data directory
   * @throws {BindError} if a socket cannot be bound
   */
  static async start(config: ServerConfig): Promise<ServerDriver> {
    try {
      await Deno.mkdir(config.dataDir, { recursive: true });
    } catch (error) {
      throw new RegistryFileError(
        `Cannot use data directory ${config.dataDir}: ${(error as Error).message}`,
      );
    }
    const lock = await lockDataDir(config.dataDir);
    let udp: UdpSocket | undefined;
    let listener: Deno.TcpListener | undefined;
    let registry: Registry;
    let secret: Uint8Array;
    try {
      registry = await loadRegistry(config.dataDir);
      udp = bind(
        "udp",
        config.host,
        config.udpPort,
        () => UdpSocket.open({ hostname: config.host, port: config.udpPort }),
      );
      listener = bind(
        "tcp",
        config.host,
        config.tcpPort,
        () => Deno.listen({ hostname: config.host, port: config.tcpPort, transport: "tcp" }),
      );
      secret = await loadServerKey(config.dataDir);
    } catch (error) {
      udp?.close();
      listener?.close();
      lock.close();
      throw error;
    }
    const core = new ServerCore({
      registry,
      random: cryptoRandom,
      secret,
      tcpPort: (listener.addr as Deno.NetAddr).port,
      version: config.version,
    });
    const server = new ServerDriver(config, core, udp, listener, lock);
    log.info("Server started: UDP port {udpPort}, TCP port {tcpPort}, {count} registered", {
      udpPort: server.udpPort,
      tcpPort: server.tcpPort,
      count: registry.size,
    });
    server.#loops.push(server.#udpLoop(), server.#acceptLoop());
    return server;
  }

  /** The protocol core, for counters and the registry. */
  get core(): ServerCore {
    return this.#core;
  }

  /** Open TCP connections. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /**
   * Stops accepting requests, waits until every change is written and
   * answered, then closes every socket. Safe to call twice.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    // New requests are ignored from here on; changes already made are written
    // and their replies sent before the sockets close.
    while (true) {
      const writing = this.#persisting;
      await writing;
      if (writing === this.#persisting && !this.#core.hasUnsavedChanges) break;
    }
    this.#udp.close();
    for (const conn of this.#connections.values()) conn.close();
    await Promise.all(this.#loops);
    this.#lock.close();
    log.info("Server stopped");
  }

  async #udpLoop(): Promise<void> {
    for await (const datagram of this.#udp.receive()) {
      this.traffic.datagramsIn++;
      const from: Endpoint = { transport: "udp", address: datagram.address, port: datagram.port };
      if (datagram.data.length > MAX_DATAGRAM_BYTES) {
        this.#reject(from, `datagram of ${datagram.data.length} bytes exceeds the limit`);
        continue;
      }
      let message;
      try {
        message = decodeMessage(datagram.data);
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        this.#reject(from, error.message);
        continue;
      }
      this.#handle(from, message);
    }
  }

  #handle(from: Endpoint, message: Message): void {
    if (this.#closed) return;
    log.debug("Received {type} request {reqId} from {transport} {address}:{port}", {
      type: message.type,
      reqId: "reqId" in message ? message.reqId : 0,
      transport: from.transport,
      address: from.address,
      port: from.port,
    });
    try {
      this.#core.handle(systemClock.now(), from, message);
      this.#drain();
    } catch (error) {
      log.error("Internal error handling {type} from {address}: {error}", {
        type: message.type,
        address: from.address,
        error,
      });
    }
  }

  async #acceptLoop(): Promise<void> {
    const handlers: Promise<void>[] = [];
    try {
      for await (const conn of this.#listener) {
        if (this.#closed) {
          conn.close();
          break;
        }
        handlers.push(this.#serveConnection(conn));
      }
    } catch (error) {
      if (!this.#closed) log.error("TCP accept failed: {error}", { error });
    }
    await Promise.all(handlers);
  }

  async #serveConnection(conn: Deno.TcpConn): Promise<void> {
    const connId = this.#nextConnId++;
    const framed = new FramedConnection(conn);
    this.#connections.set(connId, framed);
    const from: Endpoint = {
      transport: "tcp",
      address: framed.remoteAddr.hostname,
      port: framed.remoteAddr.port,
      connId,
    };
    log.debug("TCP connection {connId} from {address}:{port}", {
      connId,
      address: from.address,
      port: from.port,
    });
    try {
      for await (const frame of framed.frames()) {
        this.traffic.framesIn++;
        this.#handle(from, decodeMessage(frame));
      }
    } catch (error) {
      if (!(error instanceof ProtocolError)) {
        if (!this.#closed) log.warn("TCP connection {connId} failed: {error}", { connId, error });
      } else {
        this.#reject(from, error.message);
        const reply: Reply = {
          type: "error",
          reqId: 0,
          code: ERROR_CODES.bad_request,
          message: `Closing the connection: ${error.message}`,
        };
        await framed.write(encodeMessage(reply)).catch(() => {});
      }
    } finally {
      framed.close();
      this.#connections.delete(connId);
      log.debug("TCP connection {connId} closed", { connId });
    }
  }

  #reject(from: Endpoint, reason: string): void {
    this.traffic.rejected++;
    log.debug("Rejected input from {transport} {address}:{port}: {reason}", {
      transport: from.transport,
      address: from.address,
      port: from.port,
      reason,
    });
  }

  #drain(): void {
    for (let out = this.#core.poll(); out !== undefined; out = this.#core.poll()) {
      switch (out.type) {
        case "send":
          this.#send(out.to, out.message);
          break;
        case "persist":
          this.#persist(out.version, out.registry);
          break;
        case "event":
          this.#event(out.event);
          break;
      }
    }
  }

  #send(to: Endpoint, message: Reply): void {
    const bytes = encodeMessage(message);
    if (to.transport === "udp") {
      this.traffic.datagramsOut++;
      this.#udp.send(bytes, to.address, to.port).catch((error) =>
        log.warn("Could not send to {address}:{port}: {error}", {
          address: to.address,
          port: to.port,
          error,
        })
      );
      return;
    }
    const conn = to.connId === undefined ? undefined : this.#connections.get(to.connId);
    if (conn === undefined) return;
    this.traffic.framesOut++;
    conn.write(bytes).catch(() => conn.close());
  }

  #persist(version: number, registry: RegistryJson): void {
    this.#persisting = this.#persisting.then(async () => {
      try {
        await saveRegistry(this.#config.dataDir, registry);
        this.#core.persisted(version);
      } catch (error) {
        this.#core.persistFailed(version, error instanceof Error ? error.message : String(error));
      }
      this.#drain();
    });
  }

  #event(event: ServerEvent): void {
    const { level, text: raw } = serverEventText(event);
    const text = raw.replaceAll("{", "{{").replaceAll("}", "}}");
    switch (level) {
      case "debug":
        log.debug(text);
        break;
      case "info":
        log.info(text);
        break;
      case "warning":
        log.warn(text);
        break;
      case "error":
        log.error(text);
        break;
    }
    this.#config.onEvent?.(event);
  }
}

function bind<T>(transport: "udp" | "tcp", host: string, port: number, open: () => T): T {
  try {
    return open();
  } catch (error) {
    throw new BindError(transport, host, port, error);
  }
}
