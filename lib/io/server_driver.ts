/**
 * Runs the {@linkcode ServerCore} on real sockets: UDP datagrams and TCP
 * frames in, replies out, registry changes made durable
 * (`registry_file.ts`) before the replies they hold are released.
 *
 * @module
 */
import { fromHex } from "../hex.ts";
import { getLogger } from "@logtape/logtape";
import { systemClock } from "../clock.ts";
import { cryptoRandom } from "../random.ts";
import { DUMMY_HASH, verifyPassword } from "../server/password_hash.ts";
import type { RegistryJson } from "../server/registry.ts";
import {
  type AuthMode,
  type Endpoint,
  type PasswordUser,
  ServerCore,
  type ServerEvent,
  type ServerOutput,
} from "../server/server_core.ts";
import type { StorageLimits, StoredFile } from "../server/stored_files.ts";
import { nameKey } from "../wire/client_name.ts";
import { serverEventText } from "../server/server_event_text.ts";
import {
  type ConnectionLimitHit,
  ConnectionLimits,
  connectionLimitText,
} from "../server/connection_limits.ts";
import {
  DEFAULT_RATE_LIMIT,
  DEFAULT_REGISTER_RATE,
  DEFAULT_SESSION_RATE_LIMIT,
  RateLimiter,
} from "../server/rate_limiter.ts";
import { type ServerStatus, serverStatusText } from "../server/server_status_text.ts";
import { FramedConnection } from "./framed_connection.ts";
import { UdpSocket } from "./udp_socket.ts";
import {
  decodeMessage,
  encodeMessage,
  HEADER_BYTES,
  MAGIC,
  PROTOCOL_VERSION,
} from "../wire/codec.ts";
import { ERROR_CODES } from "../wire/error_code.ts";
import { isRequest, MAX_DATAGRAM_BYTES, type Message, type Reply } from "../wire/messages.ts";
import { BlobStore, BlobStoreError, type Upload } from "./blob_store.ts";
import { loadUsers, type UsersFile } from "./users_file.ts";
import { ProtocolError } from "../wire/protocol_error.ts";
import { BindError } from "./bind_error.ts";
import { lockDataDir } from "./data_dir_lock.ts";
import { RegistryFile, RegistryFileError } from "./registry_file.ts";
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
  /** `open` (default) or `password`. */
  auth?: AuthMode;
  /** Password mode's users file (re-read when it changes). */
  usersFile?: string;
  /** Session lease, ms. */
  leaseMs?: number;
  /** Failed logins from one address that block it for a name. */
  maxAttempts?: number;
  /** How long a blocked name stays blocked, ms. */
  lockoutMs?: number;
  /** Open mode: remove an identity not seen for this long, with its files, ms (0 or absent: never). */
  expireAfterMs?: number;
  /** Limits on stored files. */
  storage?: StorageLimits;
  /** Limits that keep one address or a flood from taking the server over. */
  limits?: ServerLimits;
}

/**
 * Limits on traffic. Each has a default; a rate of 0 turns that rate limit
 * off.
 */
export interface ServerLimits {
  /**
   * UDP datagrams per second per address that carry no live session token,
   * garbage included (default 100, bursts of twice that); 0 for no limit.
   */
  rateLimit?: number;
  /**
   * UDP datagrams per second per address that carry a live session token
   * (default 2,000, bursts of twice that); 0 for no limit.
   */
  sessionRateLimit?: number;
  /**
   * New names one address may register per minute, over UDP and TCP together
   * (default 20, bursts of as many); 0 for no limit.
   */
  registerRate?: number;
  /** Most TCP connections open at once from one address (default 32). */
  maxConnectionsPerAddress?: number;
  /** Most TCP connections open at once in all (default 512). */
  maxConnections?: number;
  /** A TCP connection silent this long between frames is closed, ms (default 60,000). */
  tcpIdleMs?: number;
  /** A TCP frame must arrive whole within this long of its first byte, ms (default 30,000). */
  tcpFrameMs?: number;
}

/** How long a TCP connection is not read after a request over the per-address rate limit, ms. */
const REFUSED_FRAME_PAUSE_MS = 1000;

/** How often the users file is checked for changes, ms. */
const USERS_FILE_CHECK_MS = 2000;

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
  /** Datagrams dropped by the per-address rate limits. */
  rateLimited: number;
  /** TCP connections refused by the connection limits. */
  tcpRefused: number;
  /** TCP connections closed for being idle or too slow. */
  tcpTimedOut: number;
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
    rateLimited: 0,
    tcpRefused: 0,
    tcpTimedOut: 0,
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
  #registryFile!: RegistryFile;
  #store: BlobStore;
  #uploads = new Map<number, Promise<Upload | undefined>>();
  #uploadConn = new Map<number, number>();
  #connWrites = new Map<number, Promise<unknown>>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #usersTimer: ReturnType<typeof setInterval> | undefined;
  #usersStamp = "";
  #fileWork = new Set<Promise<unknown>>();
  #startedAt = systemClock.now();
  #limiter: RateLimiter | undefined;
  #sessionLimiter: RateLimiter | undefined;
  #connLimits: ConnectionLimits;
  #connTimer: ReturnType<typeof setInterval> | undefined;
  #closing = new Set<number>();

  private constructor(
    config: ServerConfig,
    core: ServerCore,
    udp: UdpSocket,
    listener: Deno.TcpListener,
    lock: Deno.FsFile,
    store: BlobStore,
  ) {
    this.#lock = lock;
    this.#store = store;
    this.#config = config;
    this.#core = core;
    this.#udp = udp;
    this.#listener = listener;
    this.udpPort = udp.localPort;
    this.tcpPort = (listener.addr as Deno.NetAddr).port;
    const limits = config.limits ?? {};
    const rate = limits.rateLimit ?? DEFAULT_RATE_LIMIT;
    const sessionRate = limits.sessionRateLimit ?? DEFAULT_SESSION_RATE_LIMIT;
    if (rate > 0) this.#limiter = new RateLimiter({ ratePerSecond: rate });
    if (sessionRate > 0) this.#sessionLimiter = new RateLimiter({ ratePerSecond: sessionRate });
    this.#connLimits = new ConnectionLimits({
      maxPerAddress: limits.maxConnectionsPerAddress,
      maxTotal: limits.maxConnections,
      idleMs: limits.tcpIdleMs,
      frameMs: limits.tcpFrameMs,
    });
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
    let registryFile: RegistryFile | undefined;
    let secret: Uint8Array;
    let store: BlobStore;
    let users: UsersFile | undefined;
    try {
      registryFile = await RegistryFile.open(config.dataDir);
      if (config.auth === "password") users = await loadUsers(usersPath(config));
      store = await BlobStore.open(config.dataDir);
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
      registryFile?.release();
      lock.close();
      throw error;
    }
    const storedFiles: [string, StoredFile[]][] = [];
    for (const user of store.allUsage().keys()) storedFiles.push([user, store.list(user)]);
    const registry = registryFile.registry;
    const core = new ServerCore({
      registry,
      random: cryptoRandom,
      secret,
      tcpPort: (listener.addr as Deno.NetAddr).port,
      version: config.version,
      auth: config.auth,
      users: users === undefined ? undefined : passwordUsers(users),
      dummyPasswordHash: DUMMY_HASH,
      leaseMs: config.leaseMs,
      maxAttempts: config.maxAttempts,
      lockoutMs: config.lockoutMs,
      registerRatePerMinute: config.limits?.registerRate ?? DEFAULT_REGISTER_RATE,
      expireAfterMs: config.expireAfterMs,
      storage: config.storage,
      storedFiles,
    });
    const server = new ServerDriver(config, core, udp, listener, lock, store);
    server.#registryFile = registryFile;
    if ((config.expireAfterMs ?? 0) > 0) {
      // The first sweep for identities not seen, now rather than at the first request.
      core.onTimeout(systemClock.now());
      server.#drain();
    }
    for (const line of store.cleanup) log.warn("File store: {line}", { line });
    log.info(
      "Server started: UDP port {udpPort}, TCP port {tcpPort}, {count} registered, " +
        "{auth} auth, lease {lease} s",
      {
        udpPort: server.udpPort,
        tcpPort: server.tcpPort,
        count: registry.size,
        auth: config.auth ?? "open",
        lease: core.sessions.leaseMs / 1000,
      },
    );
    if (users !== undefined) {
      log.info("Loaded {count} users from {path}", { count: users.size, path: usersPath(config) });
      server.#usersStamp = await fileStamp(usersPath(config));
      server.#usersTimer = setInterval(() => server.#reloadUsers(), USERS_FILE_CHECK_MS);
    }
    const { idleMs, frameMs } = server.#connLimits;
    // A tenth of the shorter limit, within 50 ms to 1 s: precise enough.
    const every = Math.min(1000, Math.max(50, Math.min(idleMs, frameMs) / 10));
    server.#connTimer = setInterval(() => server.#checkConnections(), every);
    server.#loops.push(server.#udpLoop(), server.#acceptLoop());
    return server;
  }

  async #reloadUsers(): Promise<void> {
    const path = usersPath(this.#config);
    const stamp = await fileStamp(path);
    if (stamp === this.#usersStamp || this.#closed) return;
    this.#usersStamp = stamp;
    try {
      const users = await loadUsers(path);
      this.#core.setUsers(passwordUsers(users));
      log.info("Reloaded {count} users from {path}", { count: users.size, path });
    } catch (error) {
      log.error("Kept the previous users: {error}", { error: (error as Error).message });
    }
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
   * The counters for the operator's status line.
   *
   * @returns the registry, sessions, traffic and refusals so far
   */
  status(): ServerStatus {
    const core = this.#core.stats;
    return {
      uptimeMs: systemClock.now() - this.#startedAt,
      registered: this.#core.registry.size,
      active: this.#core.sessions.size,
      watchers: this.#core.watchers,
      tcpConnections: this.#connections.size,
      datagramsIn: this.traffic.datagramsIn,
      datagramsOut: this.traffic.datagramsOut,
      framesIn: this.traffic.framesIn,
      framesOut: this.traffic.framesOut,
      requests: core.requests,
      presenceResent: core.presenceResent,
      malformed: this.traffic.rejected,
      rateLimited: this.traffic.rateLimited,
      authFailures: core.authFailures,
      undersized: core.undersizedRequests,
      tcpRefused: this.traffic.tcpRefused,
      tcpTimedOut: this.traffic.tcpTimedOut,
    };
  }

  /**
   * Logs the status line and returns it, for the console.
   *
   * @returns the line, starting `Status: `
   */
  reportStatus(): string {
    const text = serverStatusText(this.status());
    log.info(text.replaceAll("{", "{{").replaceAll("}", "}}"));
    return text;
  }

  /**
   * Stops accepting requests, waits until every change is written and
   * answered, then closes every socket. Safe to call twice.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#usersTimer);
    clearInterval(this.#connTimer);
    clearTimeout(this.#timer);
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    this.#core.shutdown();
    this.#drain();
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
    while (this.#fileWork.size > 0) await Promise.allSettled([...this.#fileWork]);
    for (const upload of this.#uploads.values()) await upload.then((u) => u?.abort());
    await this.#store.close();
    await this.#registryFile.close();
    clearTimeout(this.#timer);
    this.#lock.close();
    log.info("Server stopped");
  }

  #udpLoop(): Promise<void> {
    return this.#udp.receiveEach((datagram) => {
      this.traffic.datagramsIn++;
      const from: Endpoint = { transport: "udp", address: datagram.address, port: datagram.port };
      let message: Message | undefined;
      let problem: string | undefined;
      const data = datagram.data;
      if (data.length > MAX_DATAGRAM_BYTES) {
        problem = `datagram of ${data.length} bytes exceeds the limit`;
      } else if (
        data.length < HEADER_BYTES || data[0] !== MAGIC[0] || data[1] !== MAGIC[1] ||
        data[2] !== PROTOCOL_VERSION
      ) {
        // Garbage, the commonest flood: refused without the cost of a thrown error.
        problem = "not a Switchboard message of this version";
      } else {
        try {
          message = decodeMessage(datagram.data);
        } catch (error) {
          if (!(error instanceof ProtocolError)) throw error;
          problem = error.message;
        }
      }
      if (!this.#admit(from, message)) return;
      if (message === undefined) this.#reject(from, problem ?? "not a message");
      else this.#handle(from, message, data.length);
    });
  }

  /**
   * Applies the per-address rate limit of a datagram: the loose one if it
   * carries a live session token, else the strict one (garbage included).
   * TCP requests without a live session take from the strict one too.
   *
   * @returns true if it may be handled
   */
  #admit(from: Endpoint, message: Message | undefined): boolean {
    const session = message !== undefined && this.#core.hasLiveSession(message);
    const limiter = session ? this.#sessionLimiter : this.#limiter;
    if (limiter === undefined) return true;
    const decision = limiter.take(systemClock.now(), from.address);
    if (decision.allowed) return true;
    this.traffic.rateLimited++;
    if (decision.report !== undefined) {
      log.warn(
        "Rate limit: dropped {dropped} {unit} from {address} {what} since the last " +
          "report (limit {rate}/s per address, bursts of {burst}); the next report comes " +
          "10 s from now at the earliest",
        {
          dropped: decision.report.dropped,
          unit: from.transport === "udp" ? "UDP datagrams" : "TCP requests",
          address: from.address,
          what: session ? "with a session" : "without a session",
          rate: limiter.ratePerSecond,
          burst: 2 * limiter.ratePerSecond,
        },
      );
    }
    log.debug("Rejected input from {transport} {address}:{port}: over the rate limit", {
      transport: from.transport,
      address: from.address,
      port: from.port,
    });
    return false;
  }

  /** Handles a message that arrived in `receivedBytes` bytes (a datagram or a frame body). */
  #handle(from: Endpoint, message: Message, receivedBytes: number): void {
    if (this.#closed) return;
    log.debug("Received {type} request {reqId} from {transport} {address}:{port}", {
      type: message.type,
      reqId: "reqId" in message ? message.reqId : 0,
      transport: from.transport,
      address: from.address,
      port: from.port,
    });
    try {
      this.#core.handle(systemClock.now(), from, message, receivedBytes);
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
    // Connections being served or refused; each leaves the set when done, so
    // a flood of connections leaves nothing behind.
    const handlers = new Set<Promise<void>>();
    const track = (handler: Promise<void>) => {
      handlers.add(handler);
      const done = () => handlers.delete(handler);
      handler.then(done, done);
    };
    let failures = 0;
    while (!this.#closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
        failures = 0;
      } catch (error) {
        if (this.#closed || error instanceof Deno.errors.BadResource) break;
        // A connection reset or aborted before it was accepted is that
        // connection's problem, not the listener's: accept the next one.
        if (
          error instanceof Deno.errors.NotConnected ||
          error instanceof Deno.errors.ConnectionReset ||
          error instanceof Deno.errors.ConnectionAborted ||
          error instanceof Deno.errors.Interrupted
        ) {
          continue;
        }
        // Anything else (out of file descriptors, say): say so, pause, go on.
        if (failures++ === 0) log.error("TCP accept failed: {error}", { error });
        await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 10 * failures)));
        continue;
      }
      if (this.#closed) {
        conn.close();
        break;
      }
      const connId = this.#nextConnId++;
      const address = (conn.remoteAddr as Deno.NetAddr).hostname ?? "";
      const refused = this.#connLimits.open(systemClock.now(), connId, address);
      if (refused !== undefined) {
        track(this.#refuseConnection(conn, address, refused.hit, refused.report));
        continue;
      }
      track(this.#serveConnection(conn, connId));
    }
    await Promise.all([...handlers]);
  }

  /** Tells a connection over the limits why, and closes it. */
  async #refuseConnection(
    conn: Deno.TcpConn,
    address: string,
    hit: ConnectionLimitHit,
    report: { refused: number } | undefined,
  ): Promise<void> {
    this.traffic.tcpRefused++;
    const reason = connectionLimitText(hit, address);
    if (report !== undefined) {
      log.warn(
        "TCP limit: refused {refused} connections from {address} since the last report: {reason}",
        { refused: report.refused, address, reason },
      );
    }
    const framed = new FramedConnection(conn);
    const reply: Reply = {
      type: "error",
      reqId: 0,
      code: ERROR_CODES.bad_request,
      message: `Closing the connection: ${reason}`,
    };
    // A new connection's send buffer is empty: the frame goes at once.
    await framed.write(encodeMessage(reply)).catch(() => {});
    this.traffic.framesOut++;
    framed.close();
  }

  /** Closes connections that were idle or sent a frame too slowly. */
  #checkConnections(): void {
    if (this.#closed) return;
    const now = systemClock.now();
    const busy = new Set(this.#uploadConn.values());
    for (const [connId, framed] of this.#connections) {
      const hit = this.#connLimits.check(now, connId, {
        bytesRead: framed.bytesRead,
        bytesWritten: framed.bytesWritten,
        framesRead: framed.framesRead,
        pendingBytes: framed.pendingBytes,
        reading: framed.reading,
        busy: busy.has(connId),
        writing: framed.writesQueued > 0,
      });
      if (hit === undefined) continue;
      if (this.#closing.has(connId)) {
        // Told once already; its last frame did not go out in time.
        framed.close();
        continue;
      }
      this.#closing.add(connId);
      this.traffic.tcpTimedOut++;
      const reason = connectionLimitText(hit, framed.remoteAddr.hostname);
      const logged = {
        connId,
        address: framed.remoteAddr.hostname,
        port: framed.remoteAddr.port,
        reason,
      };
      if (hit.kind === "idle") {
        log.info("Closed TCP connection {connId} from {address}:{port}: {reason}", logged);
      } else {
        log.warn("TCP limit: closed connection {connId} from {address}:{port}: {reason}", logged);
      }
      if (framed.writesQueued > 0) {
        // Its peer is not taking what was sent already: no last word.
        framed.close();
        continue;
      }
      const reply: Reply = {
        type: "error",
        reqId: 0,
        code: ERROR_CODES.bad_request,
        message: `Closing the connection: ${reason}`,
      };
      this.traffic.framesOut++;
      framed.write(encodeMessage(reply)).catch(() => {}).finally(() => framed.close());
    }
  }

  async #serveConnection(conn: Deno.TcpConn, connId: number): Promise<void> {
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
        const message = decodeMessage(frame);
        if (
          isRequest(message) && !this.#core.hasLiveSession(message) && !this.#admit(from, message)
        ) {
          // The same per-address budget as UDP, so TCP is no way around it;
          // and this connection is not read for a while, or a sender that
          // gets its refusal at once would only ask again at once.
          this.#refuseFrame(framed, message);
          await new Promise((resolve) => setTimeout(resolve, REFUSED_FRAME_PAUSE_MS));
          continue;
        }
        this.#handle(from, message, frame.length);
        // Read no faster than uploads on this connection reach the disk.
        await this.#connWrites.get(connId);
      }
    } catch (error) {
      if (!(error instanceof ProtocolError)) {
        if (!this.#closed) log.warn("TCP connection {connId} failed: {error}", { connId, error });
      } else {
        this.#reject(from, error.message);
        if (error.code === "too_large") {
          log.warn("TCP limit: closed connection {connId} from {address}:{port}: {reason}", {
            connId,
            address: from.address,
            port: from.port,
            reason: error.message,
          });
        }
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
      this.#connLimits.close(connId);
      this.#closing.delete(connId);
      this.#connWrites.delete(connId);
      this.#core.connectionClosed(connId);
      this.#drain();
      log.debug("TCP connection {connId} closed", { connId });
    }
  }

  /** Answers a TCP request over the per-address rate limit with `busy`. */
  #refuseFrame(framed: FramedConnection, message: Message): void {
    if (!("reqId" in message) || this.#closed) return;
    const reply: Reply = {
      type: "error",
      reqId: message.reqId,
      code: ERROR_CODES.busy,
      message: "Too many requests without a session from your address; try again in a moment",
    };
    this.traffic.framesOut++;
    framed.write(encodeMessage(reply)).catch(() => {});
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
        default:
          this.#fileOrPassword(out);
      }
    }
    this.#armTimer();
  }

  /** Keeps one timer armed for the core's next timeout. */
  #armTimer(): void {
    const at = this.#core.nextTimeout();
    if (this.#closed || at === undefined || at >= this.#timerAt) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timerAt = Infinity;
      this.#timer = undefined;
      if (this.#closed) return;
      this.#core.onTimeout(systemClock.now());
      this.#drain();
    }, Math.max(0, at - systemClock.now()));
  }

  #fileOrPassword(
    out: Exclude<ServerOutput, { type: "send" | "persist" | "event" }>,
  ): void {
    switch (out.type) {
      case "verify_password":
        return this.#track(
          verifyPassword(out.hash, out.password).catch(() => false).then((ok) => {
            this.#core.passwordChecked(systemClock.now(), out.id, ok);
            this.#drain();
          }),
        );
      case "upload_begin": {
        const begun = this.#store.beginUpload(out.user, out.name).catch((error) => {
          log.error("Cannot start storing {name}: {error}", { name: out.name, error });
          return undefined;
        });
        this.#uploads.set(out.id, begun);
        this.#uploadConn.set(out.id, out.connId);
        return;
      }
      case "upload_chunk":
        return this.#onUpload(out.id, (u) => u.write(out.data));
      case "upload_abort": {
        this.#onUpload(out.id, (u) => u.abort());
        this.#uploads.delete(out.id);
        this.#uploadConn.delete(out.id);
        return;
      }
      case "upload_commit": {
        const upload = this.#uploads.get(out.id);
        this.#uploads.delete(out.id);
        if (upload === undefined) {
          this.#uploadConn.delete(out.id);
          return;
        }
        // The connection counts as busy (not idle) until the file is stored.
        return this.#track(
          upload.then(async (u) => {
            if (u === undefined) throw new BlobStoreError("io", "the file could not be created");
            return await u.commit({ size: out.size, sha256: out.sha256 });
          }).then(
            (file) => this.#core.uploadDone(out.id, { ok: true, file }),
            (error) => {
              const mismatch = error instanceof BlobStoreError &&
                (error.code === "checksum_mismatch" || error.code === "size_mismatch");
              if (!mismatch) log.error("Storing a file failed: {error}", { error });
              this.#core.uploadDone(out.id, {
                ok: false,
                code: mismatch ? "checksum_mismatch" : "io",
                reason: mismatch
                  ? "The upload's SHA-256 does not match the data received; nothing was stored"
                  : "The server could not store the file",
              });
            },
          ).then(() => this.#drain()).finally(() => this.#uploadConn.delete(out.id)),
        );
      }
      case "download":
        return this.#track(this.#sendFile(out.to, out.reqId, out.user, out.file));
      case "delete_file":
        return this.#track(
          this.#store.delete(out.user, out.name).then(
            () => this.#core.fileDeleted(out.id),
            (error) => {
              log.error("Deleting a file failed: {error}", { error });
              this.#core.fileDeleted(out.id, "The server could not delete the file");
            },
          ).then(() => this.#drain()),
        );
      case "delete_user_files":
        return this.#track(
          this.#store.deleteUser(out.user).then(
            (count) => {
              if (count > 0) log.info("Deleted {count} files of {user}", { count, user: out.user });
            },
            (error) =>
              log.error("Deleting files of {user} failed: {error}", {
                user: out.user,
                error,
              }),
          ),
        );
    }
  }

  #onUpload(id: number, work: (upload: Upload) => Promise<void>): void {
    const upload = this.#uploads.get(id);
    if (upload === undefined) return;
    const next = upload.then(async (u) => {
      if (u === undefined) return undefined;
      try {
        await work(u);
        return u;
      } catch (error) {
        log.error("Writing an upload failed: {error}", { error });
        await u.abort();
        return undefined;
      }
    });
    this.#uploads.set(id, next);
    // The connection that carries the upload reads on once the write is done.
    const connId = this.#uploadConn.get(id);
    if (connId !== undefined) this.#connWrites.set(connId, next);
  }

  async #sendFile(to: Endpoint, reqId: number, user: string, file: StoredFile): Promise<void> {
    const conn = to.connId === undefined ? undefined : this.#connections.get(to.connId);
    if (conn === undefined) return;
    let reader;
    try {
      reader = await this.#store.openRead(user, file.name);
    } catch (error) {
      log.error("Cannot read {name} of {user}: {error}", { name: file.name, user, error });
      const reply: Reply = {
        type: "error",
        reqId,
        code: ERROR_CODES.file_not_found,
        message: `The server could not read "${file.name}"`,
      };
      await conn.write(encodeMessage(reply)).catch(() => conn.close());
      return;
    }
    try {
      const info = reader.info;
      await conn.write(encodeMessage({
        type: "download_ok",
        reqId,
        size: info.size,
        sha256: fromHex(info.sha256),
      }));
      this.traffic.framesOut++;
      for await (const data of reader) {
        await conn.write(encodeMessage({ type: "file_chunk", reqId, data }));
        this.traffic.framesOut++;
      }
    } catch (error) {
      log.warn("Sending {name} to {user} stopped: {error}", { name: file.name, user, error });
      conn.close();
    } finally {
      reader.close();
    }
  }

  #track(work: Promise<unknown>): void {
    this.#fileWork.add(work);
    work.finally(() => this.#fileWork.delete(work));
  }

  #send(to: Endpoint, message: Message): void {
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
        await this.#registryFile.save(registry);
        this.#core.persisted(version, systemClock.now());
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

function usersPath(config: ServerConfig): string {
  return config.usersFile ?? `${config.dataDir}/users.json`;
}

function passwordUsers(users: UsersFile): Map<string, PasswordUser> {
  return new Map(users.records().map((u) => [nameKey(u.name), u]));
}

async function fileStamp(path: string): Promise<string> {
  try {
    const info = await Deno.stat(path);
    return `${info.mtime?.getTime()}/${info.size}/${info.ino}`;
  } catch {
    return "missing";
  }
}

function bind<T>(transport: "udp" | "tcp", host: string, port: number, open: () => T): T {
  try {
    return open();
  } catch (error) {
    throw new BindError(transport, host, port, error);
  }
}
