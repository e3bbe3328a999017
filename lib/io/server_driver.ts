/**
 * Runs the {@linkcode ServerCore} on real sockets: UDP datagrams and TCP
 * frames in, replies out, registry changes made durable in the store
 * (`store_writer.ts`: the data directory's files, or Redis) before the
 * replies they hold are released. Every datagram and frame after a clear
 * `hello` goes through the sans-I/O `ClientChannels` (protocol version 3);
 * the second UDP port (address discovery) answers clear, padded `reflect`
 * only. Instances sharing one Redis must share one server key too
 * (`server_identity.json`): a client that fails over re-handshakes with the
 * same pinned key.
 *
 * Over 700 lines (it was 716 before version 3): the UDP intake (admission,
 * the secure layer, the version 2 refusal) is the part to move into its own
 * file next.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { systemClock } from "../clock.ts";
import { cryptoRandom } from "../random.ts";
import { DUMMY_HASH, verifyPassword } from "../server/password_hash.ts";
import { type Endpoint, ServerCore, type ServerEvent } from "../server/server_core.ts";
import { fileOfIdentity, type StoredFile } from "../server/stored_files.ts";
import { serverEventText } from "../server/server_event_text.ts";
import { DEFAULT_REGISTER_RATE } from "../server/rate_limiter.ts";
import { type ServerStatus, serverStatusText } from "../server/server_status_text.ts";
import { FramedConnection } from "./framed_connection.ts";
import { hostPort } from "../host_port.ts";
import { UdpSocket } from "./udp_socket.ts";
import {
  decodeMessage,
  encodeMessage,
  HEADER_BYTES,
  MAGIC,
  PROTOCOL_VERSION,
} from "../wire/codec.ts";
import { ERROR_CODES } from "../wire/error_code.ts";
import { MAX_DATAGRAM_BYTES, type Message, type MessageOf, type Reply } from "../wire/messages.ts";
import { BlobStore } from "./blob_store.ts";
import { StorageDriver } from "./storage_driver.ts";
import { UsersFileWatch } from "./users_file_watch.ts";
import { ProtocolError } from "../wire/protocol_error.ts";
import { BindError } from "./bind_error.ts";
import { lockDataDir } from "./data_dir_lock.ts";
import { RegistryFileError } from "./registry_file.ts";
import type { Registry } from "../server/registry.ts";
import type { Store } from "../server/store.ts";
import { openStore } from "./open_store.ts";
import { SHARED_STORE_WRITES_IN_FLIGHT, StoreWriter } from "./store_writer.ts";
import { loadServerIdentity, type ServerIdentity } from "./server_identity_file.ts";
import { ClientChannels } from "../server/client_channels.ts";
import { introductionSecret } from "../crypto/introduction.ts";
import { SECURE_KIND } from "../crypto/secure_datagram.ts";
import { type ServerConfig, usersPath } from "./server_config.ts";

export type { ServerConfig } from "./server_config.ts";
export type { ServerLimits } from "../server/admission.ts";

/** How long a TCP connection is not read after a request over the per-address rate limit, ms. */
const REFUSED_FRAME_PAUSE_MS = 1000;

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
  /** Datagrams dropped by the per-address rate limits (the core's count). */
  readonly rateLimited: number;
  /** TCP connections refused by the connection limits (the core's count). */
  readonly tcpRefused: number;
  /** TCP connections closed for being idle or too slow (the core's count). */
  readonly tcpTimedOut: number;
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
  /** The bound second UDP port (address discovery), 0 when there is none. */
  readonly udpPort2: number;
  /** Traffic counters. */
  readonly traffic: TrafficStats;
  /** The fingerprint of the server's static key, which clients pin. */
  readonly fingerprint: string;
  /** The server's static public key. */
  readonly publicKey: Uint8Array;
  #config: ServerConfig;
  #channels: ClientChannels;
  #core: ServerCore;
  #udp: UdpSocket;
  /** The second UDP socket, for address discovery's `reflect`. */
  #udp2: UdpSocket | undefined;
  #listener: Deno.TcpListener;
  #connections = new Map<number, FramedConnection>();
  #nextConnId = 1;
  #registryStore: Store;
  #writer: StoreWriter;
  #loops: Promise<void>[] = [];
  #closed = false;
  #lock: Deno.FsFile;
  #storage: StorageDriver;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #users: UsersFileWatch | undefined;
  /** Password checks under way. */
  #checks = new Set<Promise<unknown>>();
  #startedAt = systemClock.now();
  #connTimer: ReturnType<typeof setInterval> | undefined;
  /** The last frame queued on each TCP connection, to close it after. */
  #lastWrite = new Map<number, Promise<unknown>>();

  private constructor(
    config: ServerConfig,
    core: ServerCore,
    udp: UdpSocket,
    listener: Deno.TcpListener,
    lock: Deno.FsFile,
    store: BlobStore,
    registryStore: Store,
    udp2: UdpSocket | undefined,
    identity: ServerIdentity,
    storedFiles: [string, StoredFile[]][],
  ) {
    this.#lock = lock;
    this.#udp2 = udp2;
    this.udpPort2 = udp2?.localPort ?? 0;
    this.#registryStore = registryStore;
    this.#writer = new StoreWriter(registryStore, {
      core,
      drain: () => this.#drain(),
      stored: (seconds, ok) => this.#config.observer?.stored(seconds, ok),
      owner: hostPort(advertisedHost(config), (listener.addr as Deno.NetAddr).port),
      files: storedFiles,
    });
    this.fingerprint = identity.fingerprint;
    this.publicKey = identity.keyPair.publicKey;
    this.#channels = new ClientChannels({ staticKeyPair: identity.keyPair, random: cryptoRandom });
    this.#storage = new StorageDriver(store, {
      core,
      drain: () => this.#drain(),
      connection: (connId: number) => {
        const framed = this.#connections.get(connId);
        if (framed === undefined) return undefined;
        return {
          write: (bytes: Uint8Array) => {
            const sealed = this.#channels.seal(`tcp ${connId}`, bytes, systemClock.now());
            return sealed === undefined ? Promise.resolve() : framed.write(sealed);
          },
          close: () => framed.close(),
        };
      },
      frameSent: (to, message) => {
        this.traffic.framesOut++;
        this.#config.observer?.sent(to, message);
      },
    });
    this.#config = config;
    this.#core = core;
    this.#udp = udp;
    this.#listener = listener;
    this.udpPort = udp.localPort;
    this.tcpPort = (listener.addr as Deno.NetAddr).port;
    const stats = core.stats;
    this.traffic = {
      datagramsIn: 0,
      datagramsOut: 0,
      framesIn: 0,
      framesOut: 0,
      rejected: 0,
      get rateLimited() {
        return stats.rateLimited;
      },
      get tcpRefused() {
        return stats.tcpRefused;
      },
      get tcpTimedOut() {
        return stats.tcpTimedOut;
      },
    };
  }

  /**
   * Loads the registry, binds both sockets and starts serving.
   *
   * @param config addresses, ports, data directory
   * @returns the running server
   * @throws {RegistryFileError} if the data directory or a file in it is unusable
   * @throws {StoreError} if the Redis store cannot be used
   * @throws {DataDirLockedError} if another server uses the data directory
   * @throws {BindError} if a socket cannot be bound
   */
  static async start(config: ServerConfig): Promise<ServerDriver> {
    // A data directory made for a start that fails is not left behind.
    const isNew = await Deno.stat(config.dataDir).then(() => false, () => true);
    try {
      await Deno.mkdir(config.dataDir, { recursive: true });
    } catch (error) {
      throw new RegistryFileError(
        `Cannot use data directory ${config.dataDir}: ${(error as Error).message}`,
      );
    }
    const lock = await lockDataDir(config.dataDir);
    let udp: UdpSocket | undefined;
    let udp2: UdpSocket | undefined;
    let listener: Deno.TcpListener | undefined;
    let registryStore: Store | undefined;
    let registry: Registry;
    let identity: ServerIdentity;
    let store: BlobStore | undefined;
    let users: UsersFileWatch | undefined;
    try {
      registryStore = await openStore(config.store, config.dataDir);
      registry = await registryStore.load();
      if (config.auth === "password") users = await UsersFileWatch.open(usersPath(config));
      store = await BlobStore.open(config.dataDir);
      udp = bind(
        "udp",
        config.host,
        config.udpPort,
        () => UdpSocket.open({ hostname: config.host, port: config.udpPort }),
      );
      const port2 = config.udpPort2;
      const open2 = () => UdpSocket.open({ hostname: config.host, port: port2! });
      if (port2 !== undefined) udp2 = bind("udp", config.host, port2, open2);
      listener = bind(
        "tcp",
        config.host,
        config.tcpPort,
        () => Deno.listen({ hostname: config.host, port: config.tcpPort, transport: "tcp" }),
      );
      identity = await loadServerIdentity(config.dataDir);
      if (registryStore.shared && config.auth !== "password") {
        const owner = hostPort(advertisedHost(config), (listener.addr as Deno.NetAddr).port);
        await deleteEarlierFiles(store, registry, registryStore, owner);
      }
    } catch (error) {
      udp?.close();
      udp2?.close();
      listener?.close();
      await store?.close();
      await registryStore?.close();
      lock.close();
      if (isNew) await Deno.remove(config.dataDir, { recursive: true }).catch(() => {});
      throw error;
    }
    const storedFiles: [string, StoredFile[]][] = [];
    for (const user of store.allUsage().keys()) storedFiles.push([user, store.list(user)]);
    const core = new ServerCore({
      registry,
      random: cryptoRandom,
      serverKey: identity.keyPair.publicKey,
      introductionSecret: introductionSecret(identity.keyPair.privateKey),
      tcpPort: (listener.addr as Deno.NetAddr).port,
      udpPort2: udp2?.localPort ?? 0,
      version: config.version,
      auth: config.auth,
      users: users?.users,
      dummyPasswordHash: DUMMY_HASH,
      leaseMs: config.leaseMs,
      maxAttempts: config.maxAttempts,
      lockoutMs: config.lockoutMs,
      expireAfterMs: config.expireAfterMs,
      storage: config.storage,
      storedFiles,
      limits: {
        ...config.limits,
        registerRate: config.limits?.registerRate ?? DEFAULT_REGISTER_RATE,
      },
      writesInFlight: registryStore.shared ? SHARED_STORE_WRITES_IN_FLIGHT : 1,
      sharedPresence: registryStore.shared,
    });
    const server = new ServerDriver(
      config,
      core,
      udp,
      listener,
      lock,
      store,
      registryStore,
      udp2,
      identity,
      storedFiles,
    );
    try {
      await server.#writer.listen();
    } catch (error) {
      await server.close();
      throw error;
    }
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
    log.info("Server key {fingerprint}{created}", {
      fingerprint: identity.fingerprint,
      created: identity.created ? " (new)" : "",
    });
    if (users !== undefined) {
      log.info("Loaded {count} users from {path}", { count: users.users.size, path: users.path });
      server.#users = users;
      users.start((accounts) => core.setUsers(accounts));
    }
    const { idleMs, frameMs, firstFrameMs } = core.connectionTimes;
    // A tenth of the shorter limit, within 50 ms to 1 s: precise enough.
    const every = Math.min(1000, Math.max(50, Math.min(idleMs, frameMs, firstFrameMs) / 10));
    server.#connTimer = setInterval(() => server.#checkConnections(), every);
    server.#loops.push(server.#udpLoop(udp, false), server.#acceptLoop());
    if (udp2 !== undefined) server.#loops.push(server.#udpLoop(udp2, true));
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
    this.#users?.stop();
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
    await this.#writer.idle();
    await this.#writer.close();
    this.#udp.close();
    this.#udp2?.close();
    for (const conn of this.#connections.values()) conn.close();
    await Promise.all(this.#loops);
    while (this.#checks.size > 0) await Promise.allSettled([...this.#checks]);
    await this.#storage.close();
    await this.#registryStore.close();
    clearTimeout(this.#timer);
    this.#lock.close();
    log.info("Server stopped");
  }

  /** Serves one UDP socket; `second` for the second port, which the core answers `reflect` on only. */
  #udpLoop(socket: UdpSocket, second: boolean): Promise<void> {
    return socket.receiveEach((datagram) => {
      this.traffic.datagramsIn++;
      const from: Endpoint = second
        ? { transport: "udp", address: datagram.address, port: datagram.port, second }
        : { transport: "udp", address: datagram.address, port: datagram.port };
      const data = datagram.data;
      if (data.length > MAX_DATAGRAM_BYTES) {
        return this.#admitAndReject(from, `datagram of ${data.length} bytes exceeds the limit`);
      }
      if (
        data.length < HEADER_BYTES || data[0] !== MAGIC[0] || data[1] !== MAGIC[1] ||
        data[2] !== PROTOCOL_VERSION
      ) {
        // Garbage, the commonest flood: refused without the cost of a thrown error.
        if (data[2] === 2) return this.#refuseVersion2(from, data);
        return this.#admitAndReject(from, "not a Switchboard message of this version");
      }
      if ((data[3] & 0x80) !== 0 && !second) return this.#secureDatagram(from, data);
      // In clear, only `hello` (which tells the server's key) on the main port
      // and `reflect` on the second, which has no sessions: the rest is sealed.
      let message: Message;
      try {
        message = decodeMessage(data);
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        return this.#admitAndReject(from, error.message);
      }
      // `relay` too: the peers seal its payload end to end, and the relay's own
      // checks (a party's address, its rate limit and quota) admit it.
      if (message.type === "relay" && !second) return this.#relayDatagram(from, message);
      if (message.type !== (second ? "reflect" : "hello")) {
        return this.#admitAndReject(
          from,
          second
            ? `${message.type} on the address discovery port, which answers reflect only`
            : `${message.type} in clear text; version 3 seals it`,
        );
      }
      if (message.type === "hello" && !second) return this.#clearHello(from, message, data.length);
      if (this.#admitted(from, message)) this.#handle(from, message, data.length);
    });
  }

  /**
   * A clear `hello`, a first contact: from an address over its budget it
   * may still pass on its port's small first-contact budget, so that a flood
   * from other ports of a shared address does not stop a newcomer from
   * learning the server's key (`Admission.hello`, docs/DECISIONS.md).
   */
  #clearHello(from: Endpoint, message: Message, bytes: number): void {
    if (!this.#core.admitHello(systemClock.now(), from)) {
      this.#config.observer?.rateLimited(from, message);
      this.#drain(false);
      return;
    }
    this.#handle({ ...from, clear: true }, message, bytes);
  }

  /** A datagram of the secure layer: a handshake initiation or a sealed message. */
  #secureDatagram(from: Endpoint, data: Uint8Array): void {
    const now = systemClock.now();
    const route = routeOf(from);
    if (data[3] !== SECURE_KIND.transport) {
      // An address over its budget is "under load": its initiations get a
      // cookie bound to address and port (64 bytes, no state, no DH); one that
      // returns with the cookie proved its port and is charged to that port.
      const underLoad = !this.#core.admit(now, from, false);
      if (underLoad && !this.#core.admit(now, from, true)) return;
      const input = this.#channels.receive(data, route, from, now, underLoad);
      if (input.kind === "reply") return this.#sendBytes(from, input.bytes);
      if (underLoad) return; // counted by the rate limit already
      return this.#reject(from, `handshake dropped: ${input.kind === "dropped" && input.reason}`);
    }
    const input = this.#channels.receive(data, route, from, now);
    if (input.kind !== "message") {
      if (this.#admitted(from, undefined)) {
        this.#reject(from, `sealed datagram dropped: ${input.kind === "dropped" && input.reason}`);
      }
      return;
    }
    if (input.plaintext.length === 0) return void this.#admitted(from, undefined, true);
    let message: Message;
    try {
      message = decodeMessage(input.plaintext);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      return this.#admitAndReject(from, error.message);
    }
    if (this.#admitted(from, message, true)) {
      this.#handle({ ...from, clientKey: input.clientKey }, message, input.plaintext.length);
    }
  }

  /** Forwards a peer's `relay` datagram; one that is no party's is charged as a stranger's. */
  #relayDatagram(from: Endpoint, message: MessageOf<"relay">): void {
    if (this.#closed) return;
    const decision = this.#core.relay(systemClock.now(), from, message);
    if (decision === "refused") return void this.#admitted(from, message);
    this.#drain();
  }

  /** Asks the core to admit a datagram; a refused one is reported and dropped. */
  #admitted(from: Endpoint, message: Message | undefined, sealed = false): boolean {
    if (this.#core.admit(systemClock.now(), from, sealed)) return true;
    this.#config.observer?.rateLimited(from, message);
    log.debug("Rejected input from udp {address}:{port}: over the rate limit", {
      address: from.address,
      port: from.port,
    });
    // A report may come out, or drops owed one later: the timer may move.
    this.#drain();
    return false;
  }

  #admitAndReject(from: Endpoint, reason: string): void {
    if (this.#admitted(from, undefined)) this.#reject(from, reason);
  }

  /**
   * Tells a version 2 client, in version 2's own `error`, that version 3 is
   * required, if its request was padded (so the answer is no larger).
   */
  #refuseVersion2(from: Endpoint, data: Uint8Array): void {
    if (!this.#admitted(from, undefined)) return;
    this.#reject(from, "a version 2 message");
    // hello, register, login: the padded requests of version 2.
    if (data.length < HEADER_BYTES + 4 || ![1, 3, 10].includes(data[3])) return;
    const reqId = new DataView(data.buffer, data.byteOffset).getUint32(HEADER_BYTES);
    const reply = encodeMessage({
      type: "error",
      reqId,
      code: ERROR_CODES.bad_request,
      message: VERSION_2_REFUSAL,
    });
    reply[2] = 2; // version 2's error has the same layout
    if (reply.length <= data.length) this.#sendBytes(from, reply);
  }

  /** Handles a message that arrived in `receivedBytes` bytes (a datagram or a frame body). */
  #handle(from: Endpoint, message: Message, receivedBytes: number): void {
    if (this.#closed) return;
    this.#config.observer?.received(from, message);
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
      const framed = new FramedConnection(conn);
      const from: Endpoint = {
        transport: "tcp",
        address: framed.remoteAddr.hostname,
        port: framed.remoteAddr.port,
        connId,
      };
      // Known before the core decides, so that a refusal can be sent on it.
      this.#connections.set(connId, framed);
      if (!this.#core.connectionOpened(systemClock.now(), from)) {
        // Refused: the core said why (a frame) and asked to close it.
        this.#drain();
        const told = this.#lastWrite.get(connId) ?? Promise.resolve();
        this.#connections.delete(connId);
        this.#lastWrite.delete(connId);
        track(told.then(() => {}, () => {}).finally(() => framed.close()));
        continue;
      }
      // An older connection may have been closed to make room.
      this.#drain();
      track(this.#serveConnection(framed, from));
    }
    await Promise.all([...handlers]);
  }

  /** Asks the core about connections that may be idle or sending a frame too slowly. */
  #checkConnections(): void {
    if (this.#closed) return;
    const now = systemClock.now();
    for (const [connId, framed] of this.#connections) {
      const { hostname: address, port } = framed.remoteAddr;
      this.#core.checkConnection(now, { transport: "tcp", address, port, connId }, {
        bytesRead: framed.bytesRead,
        bytesWritten: framed.bytesWritten,
        framesRead: framed.framesRead,
        pendingBytes: framed.pendingBytes,
        reading: framed.reading,
        writing: framed.writesQueued > 0,
      });
    }
    this.#drain();
  }

  /** Closes a connection once the frames queued on it are written (or failed). */
  #close(connId: number): void {
    const framed = this.#connections.get(connId);
    if (framed === undefined) return;
    const last = this.#lastWrite.get(connId) ?? Promise.resolve();
    last.catch(() => {}).finally(() => framed.close());
  }

  async #serveConnection(framed: FramedConnection, from: Endpoint): Promise<void> {
    const connId = from.connId!;
    log.debug("TCP connection {connId} from {address}:{port}", {
      connId,
      address: from.address,
      port: from.port,
    });
    try {
      const route = routeOf(from);
      for await (const frame of framed.frames()) {
        this.traffic.framesIn++;
        const input = this.#channels.receive(frame, route, from, systemClock.now());
        if (input.kind === "reply") {
          await framed.write(input.bytes);
          continue;
        }
        if (input.kind === "dropped") {
          // A stream has no loss: an input that fails is an attack or a bug. Closed, saying why.
          throw new ProtocolError(
            "bad_value",
            `the secure layer refused a frame (${input.reason})`,
          );
        }
        if (input.plaintext.length === 0) continue;
        const message = decodeMessage(input.plaintext);
        if (!this.#closed && !this.#core.admitFrame(systemClock.now(), from, message)) {
          // The same per-address budget as UDP, so TCP is no way around it;
          // refused with `busy`, and this connection is not read for a
          // while, or a sender that gets its refusal at once would only ask
          // again at once.
          this.#config.observer?.rateLimited(from, message);
          this.#drain(false);
          await new Promise((resolve) => setTimeout(resolve, REFUSED_FRAME_PAUSE_MS));
          continue;
        }
        this.#handle({ ...from, clientKey: input.clientKey }, message, input.plaintext.length);
        // Read no faster than uploads on this connection reach the disk.
        await this.#storage.readGate(connId);
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
        const plain = encodeMessage(reply);
        const sealed = this.#channels.seal(routeOf(from), plain, systemClock.now()) ?? plain;
        await framed.write(sealed).catch(() => {});
      }
    } finally {
      this.#channels.forget(routeOf(from));
      framed.close();
      this.#connections.delete(connId);
      this.#lastWrite.delete(connId);
      this.#storage.connectionClosed(connId);
      this.#core.connectionClosed(connId);
      this.#drain();
      log.debug("TCP connection {connId} closed", { connId });
    }
  }

  #reject(from: Endpoint, reason: string): void {
    this.traffic.rejected++;
    this.#config.observer?.rejected(from, reason);
    log.debug("Rejected input from {transport} {address}:{port}: {reason}", {
      transport: from.transport,
      address: from.address,
      port: from.port,
      reason,
    });
  }

  #drain(armTimer = true): void {
    for (let out = this.#core.poll(); out !== undefined; out = this.#core.poll()) {
      switch (out.type) {
        case "send":
          this.#send(out.to, out.message);
          break;
        case "persist":
          this.#writer.persist(out.version, out, out.changes);
          break;
        case "login_store":
          this.#writer.login(out.outcome, out.id);
          break;
        case "presence_store":
          this.#writer.presence(out.op, out.record, out.deadline);
          break;
        case "peer_store":
          this.#writer.peer(out.news);
          break;
        case "file_store":
          this.#writer.file(out.op, out.user, out.file, out.owner);
          break;
        case "event":
          this.#event(out.event);
          break;
        case "close":
          this.#close(out.connId);
          break;
        case "verify_password":
          this.#verifyPassword(out.id, out.hash, out.password);
          break;
        default:
          this.#storage.execute(out);
      }
    }
    if (armTimer) this.#armTimer();
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

  #verifyPassword(id: number, hash: string, password: string): void {
    const check = verifyPassword(hash, password).catch(() => false).then((ok) => {
      this.#core.passwordChecked(systemClock.now(), id, ok);
      this.#drain();
    });
    this.#checks.add(check);
    check.finally(() => this.#checks.delete(check));
  }

  #send(to: Endpoint, message: Message): void {
    const plain = encodeMessage(message);
    // The second port has no sessions: its `reflect_ok` goes in clear (it
    // holds only the address it answers and the port numbers). The answer to
    // a clear `hello` goes in clear too, even where a session exists: it was
    // sized to the datagram (reply_sizing.ts), and a sender who forged the
    // address of a client with a session must not get 32 more bytes sent there.
    // A `relay` goes in clear too: its payload is sealed by the peers.
    let bytes = to.second === true || to.clear === true || message.type === "relay"
      ? plain
      : this.#channels.seal(routeOf(to), plain, systemClock.now());
    // Without a session only these go out, in clear: the answers to a clear
    // `hello` over UDP, and on TCP the error that says why a connection that
    // has no session yet is closed (a limit): neither holds a secret.
    if (
      bytes === undefined &&
      (message.type === "error" || (message.type === "hello_ok" && to.transport === "udp"))
    ) {
      bytes = plain;
    }
    if (bytes === undefined) {
      log.debug("No secure session to send {type} to {transport} {address}:{port}", {
        type: message.type,
        transport: to.transport,
        address: to.address,
        port: to.port,
      });
      return;
    }
    this.#config.observer?.sent(to, message);
    this.#sendBytes(to, bytes);
  }

  /** Sends bytes as they are: a datagram, or a frame on a connection. */
  #sendBytes(to: Endpoint, bytes: Uint8Array): void {
    if (to.transport === "udp") {
      this.traffic.datagramsOut++;
      const socket = to.second === true ? this.#udp2 ?? this.#udp : this.#udp;
      socket.send(bytes, to.address, to.port).catch((error) =>
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
    const written = conn.write(bytes);
    written.catch(() => conn.close());
    this.#lastWrite.set(to.connId!, written);
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
    this.#config.observer?.event(event);
    this.#config.onEvent?.(event);
  }
}

/** What a version 2 client is told, in version 2's `error`. */
export const VERSION_2_REFUSAL =
  "This server speaks Switchboard protocol version 3 (encrypted); upgrade the client";

/** The name of a route for the secure channels: a UDP address and port, or a TCP connection. */
/**
 * Deletes from this instance's disk the files of identities removed while
 * it was down (shared store, open mode), which the news of the removal never
 * reached: those the removing instance left a tombstone for, and those of a
 * name registered since by a new identity (`fileOfIdentity`). Files of a
 * name nobody holds and no tombstone names stay (unreachable: nobody can
 * log in as it): an instance pointed at the wrong Redis database must not
 * delete every file it has.
 */
async function deleteEarlierFiles(
  store: BlobStore,
  registry: Registry,
  shared: Store,
  owner: string,
): Promise<void> {
  const deleted = (user: string, count: number) => {
    if (count > 0) {
      log.warn(
        "Deleted the files of {user} on this disk ({count}): the identity they belonged to was " +
          "removed while this instance was down",
        { count, user },
      );
    }
  };
  await shared.takeGoneFiles(owner, async (records) => {
    for (const { user, file } of records) {
      if (store.get(user, file.name)?.uploadedAt !== file.uploadedAt) continue; // not that one
      deleted(user, await store.delete(user, file.name) ? 1 : 0);
      if (store.list(user).length === 0) await store.deleteUser(user); // its directory too
    }
  });
  for (const user of [...store.allUsage().keys()]) {
    const since = registry.get(user)?.registeredAt;
    if (since === undefined || store.list(user).every((file) => fileOfIdentity(since, file))) {
      continue;
    }
    deleted(user, await store.deleteUser(user));
  }
}

function routeOf(endpoint: Endpoint): string {
  return endpoint.transport === "udp"
    ? `udp ${endpoint.address} ${endpoint.port}`
    : `tcp ${endpoint.connId}`;
}

/**
 * The host other instances' clients reach this one at, for the files on
 * its disk: `advertise`, else the bound host, else (a wildcard) the
 * machine's host name.
 */
function advertisedHost(config: ServerConfig): string {
  if (config.advertise !== undefined && config.advertise !== "") return config.advertise;
  const wildcard = ["", "0.0.0.0", "::", "[::]"].includes(config.host);
  return wildcard ? Deno.hostname() : config.host;
}

function bind<T>(transport: "udp" | "tcp", host: string, port: number, open: () => T): T {
  try {
    return open();
  } catch (error) {
    throw new BindError(transport, host, port, error);
  }
}
