/**
 * Runs the {@linkcode ClientCore} on real sockets: a UDP socket for requests
 * to the server, a TCP connection opened when first needed, and one
 * wall-clock timer for retransmissions; the work lives in the core, the
 * transfer disk, the download and the failover (`server_failover.ts`).
 * Every message to the server goes through the sans-I/O `ServerGuard` (UDP)
 * or a `ServerChannel` per TCP connection (protocol version 3).
 *
 * Over 700 lines: the secure channel's wiring (pins) came on top of a file
 * already near the limit. A TCP connection (connect, handshake, sealed
 * frames) is `server_connection.ts`; what runs over it (uploads, downloads,
 * following `file_elsewhere` to another instance) is the part to move next.
 *
 * @module
 */
import type { ReliableChannelOptions } from "../reliable/reliable_channel.ts";
import { TransferDisk } from "./transfer_disk.ts";
import { FAILOVER_AFTER_MS, ServerFailover } from "./server_failover.ts";
import { resolveServer } from "./resolve_server.ts";

export { resolveServer, ServerNameError } from "./resolve_server.ts";
import { downloadPath, ServerDownload } from "./server_download.ts";
import { fileNameProblem } from "../wire/file_name.ts";
import { hostPort } from "../host_port.ts";
import { getLogger } from "@logtape/logtape";
import { hashFile } from "./file_hash.ts";
import { basename } from "@std/path";
import { ClientCore, type CoreCommand } from "../client/client_core.ts";
import type { ClientEvent, CommandResult } from "../client/client_event.ts";
import { clientEventText, commandResultText } from "../client/client_event_text.ts";
import type { RetryPolicy } from "../client/retry_policy.ts";
import type { Via } from "../client/server_session.ts";
import { systemClock } from "../clock.ts";
import { cryptoRandom } from "../random.ts";
import { ServerConnection } from "./server_connection.ts";
import { UdpSocket } from "./udp_socket.ts";
import { decodeMessage, encodeMessage } from "../wire/codec.ts";
import {
  MAX_CHUNK_BYTES,
  MAX_DATAGRAM_BYTES,
  type Message,
  MESSAGE_SCHEMAS,
  type MessageOf,
} from "../wire/messages.ts";
import { ERROR_CODES } from "../wire/error_code.ts";
import { gatherHostCandidates } from "./host_candidates.ts";
import { checkIdentityFile, forgetIdentity, saveIdentity } from "./identity_file.ts";
import { ServerGuard } from "../client/server_guard.ts";
import { generateKeyPair, type KeyPair } from "../crypto/key_pair.ts";
import { loadClientKey } from "./client_key_file.ts";
import { fromHex } from "../hex.ts";
import { checkServerKey, loadKnownServers } from "./known_servers_file.ts";
import { lowerFirstWord } from "../error_line.ts";
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
  /** Where identities from `register` are saved (none saved if absent). */
  identityFile?: string;
  /**
   * The client's key pair (`client_key.json`, created if absent): its side
   * of the encrypted channel, so its open-mode identity. Without one, a new
   * key pair for this run only.
   */
  keyFile?: string;
  /** Called for presence news and session ends. */
  onEvent?: (event: ClientEvent) => void;
  /** Called as a large upload or download moves on. */
  onProgress?: (progress: TransferProgress) => void;
  /** Where files sent by peers land. Default `./downloads`. */
  downloadDir?: string;
  /** Accept every file a peer offers (`--accept-files`). */
  acceptFiles?: boolean;
  /** Offers of larger files are declined, bytes (`--max-receive`, default 4 GiB). */
  maxReceive?: number;
  /** Partial files of ended transfers are removed after this long, ms (`--keep-partial`, default 1 day). */
  keepPartialMs?: number;
  /** Options of peer channels (default: `PEER_CHANNEL_OPTIONS`). */
  peerChannel?: ReliableChannelOptions;
  /**
   * NAT traversal for peer sessions: introductions, probes, the relay
   * (default true). Tests of what travels straight between two peers turn it off.
   */
  traverse?: boolean;
  /**
   * Benchmarks only (`scripts/bench_secure_link.ts`): peer sessions seal with
   * a null cipher, to measure what encryption costs. No flag, variable or
   * file sets it (client.ts never passes it).
   */
  benchNullPeerCipher?: boolean;
  /** The server key's fingerprint the user pinned (`--server-key`), canonical form. */
  serverKey?: string;
  /** Where server keys are trusted on first use (`known_servers.json`); none kept if absent. */
  knownServersFile?: string;
  /**
   * Other instances of the service, moved to when one stops answering
   * (`server_failover.ts`); they must hold the same server key.
   */
  failover?: readonly { host: string; port: number }[];
}

/** How far a file transfer has come. */
export interface TransferProgress {
  /** `hash`, `upload` or `download`. */
  readonly stage: "hash" | "upload" | "download";
  /** The file's name. */
  readonly name: string;
  /** Bytes done. */
  readonly done: number;
  /** Bytes in all. */
  readonly total: number;
}

const log = getLogger(["switchboard", "client"]);

/** What a request fails with once the line that refused the server's key has been said. */
const REFUSAL_SAID = "Not sent: the server's key was refused (said above)";

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
  #failover: ServerFailover;
  /** Fires when the instance in use has left a request unanswered too long. */
  #failoverTimer: ReturnType<typeof setTimeout> | undefined;
  /** The TCP connection to the instance in use. */
  #tcp: ServerConnection | undefined;
  /** Connections to instances a `file_elsewhere` named. */
  #elsewhere = new Set<ServerConnection>();
  /** Downloads and deletes sent over TCP and not yet answered, to send again elsewhere. */
  #redirectable = new Map<number, Uint8Array>();
  /** Request ids being answered by another instance. */
  #following = new Set<number>();
  #guard: ServerGuard;
  /** Whether the refusal of the server's key was said as an event (requests then refer to it). */
  #refusalSaid = false;
  /** The server's second UDP port, once `reflect` went there (it answers in clear). */
  #reflectPort: number | undefined;
  #udpLoop: Promise<void>;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt: number | undefined;
  /** Who waits for the result of each command the core runs, by its number. */
  #waiting = new Map<number, (result: CommandResult) => void>();
  /** Uploads and downloads, one after another (they stream over the one TCP connection). */
  #fileChain: Promise<unknown> = Promise.resolve();
  #closed = false;
  #saving: Promise<string | undefined> = Promise.resolve(undefined);
  #tcpChain: Promise<void> = Promise.resolve();
  #uploadPath = new Map<number, { path: string; name: string; size: number }>();
  #download: ServerDownload | undefined;
  /** UDP sends not yet completed, and what `close` waits on for them to reach 0. */
  #udpSending = 0;
  #udpSendsDone: PromiseWithResolvers<void> | undefined;
  #transferFiles: TransferDisk;

  private constructor(
    config: ClientConfig,
    udp: UdpSocket,
    failover: ServerFailover,
    pinnedKey: Uint8Array | undefined,
    keyPair: KeyPair,
  ) {
    this.#config = config;
    // One static key for the server channels and the peer sessions: the
    // server vouches for the key this client's channel presents, which is
    // its open-mode identity (`client_key.json`).
    const staticKeyPair = keyPair;
    this.#guard = new ServerGuard({
      staticKeyPair,
      random: cryptoRandom,
      server: hostPort(config.serverHost, config.serverPort),
      expectedFingerprint: config.serverKey,
      pinnedKey,
      pinFile: config.knownServersFile,
    });
    this.#udp = udp;
    this.#failover = failover;
    this.#serverAddress = failover.current.address;
    this.udpPort = udp.localPort;
    this.#core = new ClientCore({
      random: cryptoRandom,
      retry: config.retry,
      name: config.name,
      udpPort: udp.localPort,
      tcpPort: config.tcpPort,
      via: config.via,
      server: hostPort(config.serverHost, config.serverPort),
      failover: failover.several,
      acceptFiles: config.acceptFiles,
      maxReceive: config.maxReceive,
      peerChannel: config.peerChannel,
      traverse: config.traverse,
      peerNullCipher: config.benchNullPeerCipher,
      staticKeyPair,
      hostCandidates: () => gatherHostCandidates(udp.localHostname, udp.localPort),
    });
    const core = this.#core;
    const now = () => systemClock.now();
    const after = (work: () => void) => {
      if (this.#closed) return;
      work();
      this.#drain();
    };
    this.#transferFiles = new TransferDisk(config.downloadDir ?? "./downloads", {
      read: (id, offset, data) =>
        after(() => core.fileReport(now(), { kind: "read", id, offset, data })),
      ready: (id, offset) =>
        after(() => core.fileReport(now(), { kind: "receive_ready", id, offset })),
      written: (id, upTo) => after(() => core.fileReport(now(), { kind: "written", id, upTo })),
      received: (id, path) => after(() => core.fileReport(now(), { kind: "received", id, path })),
      failed: (id, problem, failure) =>
        after(() => core.fileReport(now(), { kind: "failed", id, problem, failure })),
    }, { keepPartialMs: config.keepPartialMs });
    this.#udpLoop = this.#receiveUdp();
  }

  /**
   * Binds the client's UDP socket.
   *
   * @param config server address, ports, name and transport
   * @returns the client, ready for commands
   * @throws {Deno.errors.AddrInUse} if the UDP port is taken
   * @throws {ServerNameError} if the server's host name does not resolve
   * @throws {ClientKeyFileError} if the key file is unreadable, invalid or cannot be made
   */
  static async open(config: ClientConfig): Promise<ClientDriver> {
    const serverAddress = await resolveServer(config.serverHost);
    const keyFile = config.keyFile;
    const keyPair = keyFile === undefined
      ? generateKeyPair(cryptoRandom)
      : await loadClientKey(keyFile).then((key) => key.keyPair, async (error) => {
        // A key file that exists and cannot be used is an error; a place where
        // none can exist (its directory is a file) means a key for this run
        // only, with which nothing can be registered (the identity file is
        // there too, and register checks it first).
        if (await Deno.stat(keyFile).then(() => true, () => false)) throw error;
        log.warn("No key pair kept: {error}", { error: (error as Error).message });
        return generateKeyPair(cryptoRandom);
      });
    const server = hostPort(config.serverHost, config.serverPort).toLowerCase();
    const pins = config.knownServersFile === undefined
      ? []
      : await loadKnownServers(config.knownServersFile).catch(async (error) => {
        // A pin file that exists and cannot be read is an error; a place where
        // none can exist (its directory is a file) only means no pin is kept.
        const exists = await Deno.stat(config.knownServersFile!).then(() => true, () => false);
        if (exists) throw error;
        log.warn("No server keys pinned: {error}", { error: (error as Error).message });
        return [];
      });
    const pin = pins.find((p) => p.server.toLowerCase() === server);
    const failover = new ServerFailover([
      { host: config.serverHost, address: serverAddress, port: config.serverPort },
      ...await Promise.all(
        (config.failover ?? []).map(async (o) => ({ ...o, address: await resolveServer(o.host) })),
      ),
    ]);
    const hostname = serverAddress.includes(":") ? "::" : "0.0.0.0";
    const udp = UdpSocket.open({ hostname, port: config.udpPort });
    log.info("Client {pid} started on UDP port {udpPort}; server {server}", {
      pid: Deno.pid,
      udpPort: udp.localPort,
      server: hostPort(config.serverHost, config.serverPort),
    });
    return new ClientDriver(config, udp, failover, pin && fromHex(pin.publicKey), keyPair);
  }

  /** True once `close` has begun. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The core, for its state. */
  get core(): ClientCore {
    return this.#core;
  }

  /**
   * Runs one command and waits for its result. Commands may run at once:
   * those on one session (the server, or one peer) run in order, others
   * side by side.
   *
   * @param command the command
   * @returns the result; failures are results too, never exceptions
   */
  run(command: CoreCommand): Promise<CommandResult> {
    if (this.#closed) throw new TypeError("Cannot run a command on a closed client");
    const identityFile = this.#config.identityFile;
    if (command.kind === "register" && identityFile !== undefined) {
      // Before the name is bound to the key: a name not noted would be hard to find again.
      return checkIdentityFile(identityFile).then(
        () => this.#run(command),
        (error: Error) => ({
          ok: false,
          command: "register",
          error: `Cannot register: ${lowerFirstWord(error.message)}`,
          code: "file_error",
        }),
      );
    }
    return this.#run(command);
  }

  #run(command: CoreCommand): Promise<CommandResult> {
    const { promise, resolve } = Promise.withResolvers<CommandResult>();
    log.debug("Command {kind}", { kind: command.kind });
    const id = this.#core.run(systemClock.now(), command);
    this.#waiting.set(id, resolve);
    this.#drain();
    return promise;
  }

  /**
   * Uploads a local file: hashes it, then sends it over TCP in chunks after
   * the `upload` request; the server checks the hash before it answers.
   *
   * @param path the local file
   * @param name the name to store it under
   * @returns the result
   */
  upload(path: string, name: string): Promise<CommandResult> {
    return this.#serially(async () => {
      const file = await this.#readFile("upload", path, name);
      if ("ok" in file) return file;
      this.#pendingUpload = { path, name, size: file.size };
      return await this.run({ kind: "upload", name, size: file.size, sha256: file.sha256 });
    });
  }

  /** Runs uploads and downloads one after another. */
  #serially(work: () => Promise<CommandResult>): Promise<CommandResult> {
    const done = this.#fileChain.then(work);
    this.#fileChain = done.catch(() => {});
    return done;
  }

  #pendingUpload: { path: string; name: string; size: number } | undefined;

  /**
   * Offers a local file to a peer (`sendfile`): hashes it, then the offer
   * goes out and the transfer runs in the background.
   *
   * @param path the local file
   * @param to the peer's name, when several sessions are open
   * @returns the result of the offer
   */
  async sendFile(path: string, to?: string): Promise<CommandResult> {
    const name = basename(path);
    const problem = fileNameProblem(name);
    if (problem !== undefined) {
      return { ok: false, command: "sendfile", error: problem, code: "invalid_file_name" };
    }
    // Before hashing what may be gigabytes: is there a session to send it over?
    const file = await this.#readFile("sendfile", path, name, () => this.#core.sendFileProblem(to));
    if ("ok" in file) return file;
    return await this.run({ kind: "sendfile", to, path, name, ...file });
  }

  /**
   * Checks that `path` is a regular file, then (unless `before` finds a
   * problem) hashes it with progress.
   */
  async #readFile(
    command: "upload" | "sendfile",
    path: string,
    name: string,
    before: () => string | undefined = () => undefined,
  ): Promise<{ size: number; sha256: Uint8Array } | CommandResult> {
    try {
      const info = await Deno.stat(path);
      if (!info.isFile) throw new Error("it is not a regular file");
      const problem = before();
      if (problem !== undefined) return { ok: false, command, error: problem, code: "no_session" };
      const sha256 = await hashFile(
        path,
        (done) => this.#config.onProgress?.({ stage: "hash", name, done, total: info.size }),
      );
      return { size: info.size, sha256 };
    } catch (error) {
      return {
        ok: false,
        command,
        error: `Cannot read ${path}: ${(error as Error).message}`,
        code: "file_error",
      };
    }
  }

  /**
   * Downloads one of the user's files into `dest` (written to a temp file,
   * checked against the server's SHA-256, then moved into place). Nothing is
   * overwritten: a taken name becomes `name (1).ext` and so on, as files
   * from peers do; a directory `dest` receives the file under its name.
   *
   * @param name the stored file's name
   * @param dest the local path
   * @returns the result, with the path the file landed at
   */
  download(name: string, dest: string): Promise<CommandResult> {
    return this.#serially(() => this.#downloadNow(name, dest));
  }

  async #downloadNow(name: string, dest: string): Promise<CommandResult> {
    try {
      dest = await downloadPath(name, dest);
    } catch (error) {
      return {
        ok: false,
        command: "download",
        error: `Cannot write ${dest}: ${(error as Error).message}`,
        code: "file_error",
      };
    }
    this.#pendingDownload = { name, dest };
    const starting = this.run({ kind: "download", name });
    // Set while the request was sent, so that data arriving with the reply is kept.
    const download = this.#download;
    const started = await starting;
    if (!started.ok || download === undefined) {
      if (this.#download === download) this.#download = undefined;
      await download?.finish("the server refused it");
      return started;
    }
    download.watchStall();
    const result = await download.result;
    if (this.#download === download) this.#download = undefined;
    return result;
  }

  #pendingDownload: { name: string; dest: string } | undefined;

  /**
   * Goes offline (one `logout`, not waited for), then closes the sockets
   * and the timer. Safe to call twice.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#core.leave(systemClock.now());
    this.#drain();
    await Promise.race([
      this.#allUdpSent(),
      new Promise((resolve) => setTimeout(resolve, 500)),
    ]);
    this.#closed = true;
    for (const peer of this.#core.peers) {
      const stats = peer.channel?.stats;
      if (stats === undefined) continue;
      log.info(
        "Channel with {peer}: {sent} data segments sent ({timeouts} retransmitted on timeout, " +
          "{fast} fast, {copies} redundant copies), {received} segments received " +
          "({duplicates} duplicates), " +
          "srtt {srtt} ms, congestion window {cwnd}, {reductions} reductions; " +
          "held back {limited} ms",
        {
          peer: peer.peerName,
          sent: stats.dataSegmentsSent,
          timeouts: stats.timeoutRetransmissions,
          fast: stats.fastRetransmissions,
          copies: stats.redundantCopies,
          received: stats.segmentsReceived,
          duplicates: stats.duplicatesDiscarded,
          srtt: `${stats.srttMs?.toFixed(2)} (min ${stats.minRttMs?.toFixed(2)}, mean ${
            stats.meanRttMs?.toFixed(2)
          })`,
          cwnd: stats.congestionWindow,
          reductions: stats.congestionReductions,
          limited: Object.entries(stats.limitedMs).map(([by, ms]) => `${by} ${ms.toFixed(0)}`)
            .join(", "),
        },
      );
    }
    await this.#transferFiles.close();
    await this.#download?.finish("the client closed");
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    clearTimeout(this.#failoverTimer);
    this.#udp.close();
    const tcps = [...this.#elsewhere, ...this.#tcp === undefined ? [] : [this.#tcp]];
    for (const tcp of tcps) tcp.close();
    await this.#udpLoop;
    await Promise.all(tcps.map((tcp) => tcp.ended));
    log.info("Client {pid} stopped", { pid: Deno.pid });
  }

  #receiveUdp(): Promise<void> {
    return this.#udp.receiveEach((datagram) => {
      if (datagram.data.length > MAX_DATAGRAM_BYTES) return;
      const address = unmapped(datagram.address);
      const current = this.#failover.current;
      const instance = this.#failover.instance(address, datagram.port);
      if (instance === "other") {
        // An instance the client moved away from: what it says is stale (its
        // requests went again to the one in use, which holds the session now).
        return log.debug("Ignored a datagram from {server}, no longer in use", {
          server: hostPort(address, datagram.port),
        });
      }
      if (instance === "current") {
        this.#failover.heard();
        // A peer's datagram through the relay comes in clear: the peers protect it.
        if (datagram.data[3] === RELAY_CODE) return this.#fromRelay(datagram.data);
        return this.#fromServer(datagram.data);
      }
      if (address === current.address && datagram.port === this.#reflectPort) {
        return this.#fromReflector(datagram.data);
      }
      // Everything else is a peer's: the core decodes and opens it (only the
      // server's own channel speaks for the server).
      this.#core.handlePeer(systemClock.now(), { ip: address, port: datagram.port }, datagram.data);
      this.#drain();
    });
  }

  /** A `relay` from the server: a peer's datagram, handed to the core. */
  #fromRelay(data: Uint8Array): void {
    try {
      const message = decodeMessage(data);
      if (message.type !== "relay") return;
      this.#core.handle(systemClock.now(), message);
      this.#drain();
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      log.debug("Ignored a bad relay datagram: {reason}", { reason: error.message });
    }
  }

  /** A datagram from the server's second port: only a clear `reflect_ok` is taken. */
  #fromReflector(data: Uint8Array): void {
    try {
      const message = decodeMessage(data);
      if (message.type !== "reflect_ok") return;
      this.#core.handle(systemClock.now(), message);
      this.#drain();
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      log.debug("Ignored a bad datagram from the second port: {reason}", { reason: error.message });
    }
  }

  /** A datagram from the server's address: through the guard, sealed or a clear `hello_ok`. */
  #fromServer(data: Uint8Array): void {
    const now = systemClock.now();
    const input = this.#guard.incoming(data, now);
    const { address, port } = this.#failover.current;
    for (const bytes of input.send) this.#sendUdp(bytes, address, port);
    if (input.dropped !== undefined) {
      log.debug("Dropped a datagram from the server: {reason}", { reason: input.dropped });
    }
    if (input.trustKey !== undefined && this.#config.knownServersFile !== undefined) {
      const server = hostPort(this.#config.serverHost, this.#config.serverPort);
      checkServerKey(this.#config.knownServersFile, server, input.trustKey, new Date()).then(
        (verdict) => log.info("Server key of {server}: {verdict}", { server, verdict }),
        (error) => log.error("Cannot pin the key of {server}: {error}", { server, error }),
      );
    }
    if (input.refused !== undefined) log.error("{reason}", { reason: input.refused });
    let messages = input.messages;
    if (input.refused !== undefined && this.#core.loggedInAs !== undefined) {
      // The server came back with another key while the session seemed live
      // (killed, no notice): a hard error, said at once, once: the requests
      // in flight fail with a reference to it. (Without a session, the
      // requests in flight, such as a new login by itself, say it.)
      this.#config.onEvent?.({
        kind: "session_ended",
        name: this.#core.loggedInAs,
        reason: "server_key_changed",
        detail: input.refused,
      });
      this.#refusalSaid = true;
      messages = messages.map((m) =>
        m.type === "error" && m.message === input.refused ? { ...m, message: REFUSAL_SAID } : m
      );
    }
    for (const message of messages) this.#core.handle(now, message);
    this.#drain();
  }

  /** Why the server's key was refused, if it was: one line. */
  get serverKeyRefusal(): string | undefined {
    return this.#guard.refusal;
  }

  #drain(): void {
    for (let out = this.#core.poll(); out !== undefined; out = this.#core.poll()) {
      switch (out.type) {
        case "send":
          this.#send(out.via, out.message, out.attempt, out.port);
          break;
        case "event":
          if (out.event.kind === "request_refused") {
            log.warn("{kind}: {message}", {
              kind: out.event.kind,
              message: clientEventText(out.event),
            });
          } else {
            log.info("{kind}: {message}", {
              kind: out.event.kind,
              message: clientEventText(out.event),
            });
          }
          this.#config.onEvent?.(out.event);
          break;
        case "identity":
          this.#saveIdentity(out.name);
          break;
        case "move":
          this.#move("shutdown");
          break;
        case "result":
          this.#deliver(out.id, out.result);
          break;
        case "peer_send": {
          this.#sendUdp(out.bytes, out.to.ip, out.to.port);
          break;
        }
        case "file":
          this.#transferFiles.run(out.op);
          break;
        case "trace":
          log.debug("Peer message {step}: {peer} #{index}", {
            step: out.trace.step,
            peer: out.trace.peer,
            index: out.trace.index,
          });
          break;
      }
    }
    this.#armTimer();
  }

  #saveIdentity(name: string): void {
    const path = this.#config.identityFile;
    if (path === undefined) return;
    const server = hostPort(this.#config.serverHost, this.#config.serverPort);
    this.#saving = saveIdentity(path, { server, name }).then(
      () => {
        log.info("Saved the identity of {name} to {path}", { name, path });
        return undefined;
      },
      (error) => {
        log.error("Could not save the identity of {name}: {error}", { name, error });
        return (error as Error).message;
      },
    );
  }

  #deliver(id: number, result: CommandResult): void {
    if (result.ok) {
      log.info("{command}: {message}", {
        command: result.command,
        message: commandResultText(result),
      });
    } else {
      log.warn("{command} failed: {error}", { command: result.command, error: result.error });
    }
    const waiting = this.#waiting.get(id);
    this.#waiting.delete(id);
    if (waiting === undefined) return;
    if (result.ok && result.command === "register") {
      // The name must be noted on disk before register reports success.
      const saving = this.#saving;
      this.#saving = Promise.resolve(undefined);
      saving.then((problem) =>
        waiting(
          problem === undefined ? result : { ...result, identityProblem: problem },
        )
      );
      return;
    }
    if (result.ok && result.command === "login") {
      // A version 2 key just moved the name to the key pair: forget the key
      // on disk before the login reports (a quick exit must not keep it).
      const saving = this.#saving;
      this.#saving = Promise.resolve(undefined);
      saving.then(() => waiting(result));
      return;
    }
    if (result.ok && result.command === "deregister" && this.#config.identityFile) {
      const name = result.name;
      const server = hostPort(this.#config.serverHost, this.#config.serverPort);
      forgetIdentity(this.#config.identityFile, server, name).catch((error) =>
        log.warn("Could not remove the identity of {name}: {error}", { name, error })
      ).finally(() => waiting(result));
      return;
    }
    waiting(result);
  }

  #armTimer(): void {
    const at = this.#core.nextTimeout();
    if (at === this.#timerAt) return;
    // A timer due earlier than needed stays: firing early is harmless (the
    // core then does nothing and the timer is armed again), and re-arming
    // after every datagram of a transfer would cost more than the work.
    if (at !== undefined && this.#timerAt !== undefined && this.#timerAt <= at) return;
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

  /**
   * Sends a datagram without waiting; counted, so that `close` can let the
   * last ones (a logout, a terminate) leave first. A file transfer sends tens
   * of thousands a second, so this costs one promise reaction each.
   */
  #sendUdp(bytes: Uint8Array, address: string, port: number): void {
    this.#udpSending++;
    this.#udp.send(bytes, address, port).then(this.#udpSent, this.#udpSendFailed);
  }

  #udpSent = (): void => {
    if (--this.#udpSending > 0 || this.#udpSendsDone === undefined) return;
    this.#udpSendsDone.resolve();
    this.#udpSendsDone = undefined;
  };

  #udpSendFailed = (error: unknown): void => {
    log.warn("A UDP send failed: {error}", { error });
    this.#udpSent();
  };

  /** Resolves once every UDP send so far has completed. */
  #allUdpSent(): Promise<void> {
    if (this.#udpSending === 0) return Promise.resolve();
    this.#udpSendsDone ??= Promise.withResolvers<void>();
    return this.#udpSendsDone.promise;
  }

  #send(via: Via, message: Message, attempt: number, port?: number): void {
    const bytes = encodeMessage(message);
    const reqId = "reqId" in message ? message.reqId : 0;
    if (via === "udp") {
      log.debug("Sending {type} request {reqId} over UDP (attempt {attempt})", {
        type: message.type,
        reqId,
        attempt,
      });
      const now = systemClock.now();
      if (port !== undefined && port !== this.#failover.current.port) {
        // The second port (address discovery) has no session: `reflect` goes
        // there in clear, padded, holding nothing secret. It may go
        // unanswered by design (a NAT that filters): no failover for it.
        this.#reflectPort = port;
        this.#sendUdp(bytes, this.#failover.current.address, port);
        return;
      }
      if (message.type === "relay") {
        // In clear: its payload is the peers' own datagram.
        this.#sendUdp(bytes, this.#failover.current.address, this.#failover.current.port);
        return;
      }
      const to = this.#failover.current;
      if ("reqId" in message) {
        this.#failover.asked(now);
        this.#armFailover();
      }
      for (const sealed of this.#guard.outgoing(message, now, attempt)) {
        this.#sendUdp(sealed, to.address, to.port);
      }
      const refusal = this.#guard.refusal;
      if (refusal !== undefined && "reqId" in message && message.type !== "hello") {
        // The server's key was refused: nothing goes to it; the request fails now.
        this.#core.handle(now, {
          type: "error",
          reqId,
          code: ERROR_CODES.bad_request,
          message: this.#refusalSaid ? REFUSAL_SAID : refusal,
        });
      }
      return;
    }
    if (message.type === "download" && this.#pendingDownload !== undefined) {
      const { name, dest } = this.#pendingDownload;
      const progress = (done: number, total: number) =>
        this.#config.onProgress?.({ stage: "download", name, done, total });
      this.#download = new ServerDownload(reqId, name, dest, progress);
      this.#pendingDownload = undefined;
    }
    const upload = message.type === "upload" ? this.#pendingUpload : undefined;
    this.#pendingUpload = undefined;
    // A download or delete may be answered `file_elsewhere`: kept to send again there.
    if (message.type === "download" || message.type === "delete") {
      this.#redirectable.set(reqId, bytes);
    }
    const work = this.#tcpChain.then(async () => {
      await this.#sendTcp(bytes);
      if (upload !== undefined) await this.#streamUpload(reqId, upload);
    });
    this.#tcpChain = work.catch(() => {});
    work.catch((error) => {
      this.#tcp?.close();
      this.#core.tcpFailed(
        `cannot reach the server over TCP at ${this.#tcpTarget()}: ${(error as Error).message}`,
      );
      this.#drain();
    });
  }

  /** Checks, once the instance in use may have been silent too long, whether it was. */
  #armFailover(): void {
    const due = this.#failover.dueAt;
    if (due === undefined || this.#failoverTimer !== undefined || this.#closed) return;
    this.#failoverTimer = setTimeout(() => {
      this.#failoverTimer = undefined;
      const dueAt = this.#failover.dueAt;
      if (dueAt === undefined || this.#closed) return;
      if (systemClock.now() >= dueAt) this.#move("silent");
      else this.#armFailover();
    }, Math.max(0, due - systemClock.now()));
  }

  /**
   * Moves to the next instance of the service: a new handshake with it (same
   * server key), then the requests in flight go there at once and carry the
   * session over (see `ClientCore.moved`).
   */
  #move(why: "silent" | "shutdown"): void {
    const now = systemClock.now();
    const { from, to } = this.#failover.move();
    // Each line's properties say what triggered it (a JSON log line carries them all).
    if (why === "silent") {
      log.warn("Server {from} left a request unanswered for {ms} ms; moving to {to}", {
        from,
        to,
        why,
        ms: FAILOVER_AFTER_MS,
      });
    } else log.warn("Server {from} is shutting down; moving to {to}", { from, to, why });
    const { address, port } = this.#failover.current;
    for (const bytes of this.#guard.moved(now, to)) this.#sendUdp(bytes, address, port);
    this.#core.moved(now, from, to, why);
    this.#drain();
  }

  /** The TCP address of the instance in use (it follows a UDP failover). */
  #tcpTarget(): string {
    return hostPort(this.#failover.current.address, this.#core.serverTcpPort ?? 0);
  }

  /**
   * Writes a message on the connection to the instance in use, opening it
   * first; one to an instance the client moved away from is closed.
   */
  async #sendTcp(bytes: Uint8Array): Promise<void> {
    if (this.#tcp !== undefined && this.#tcp.target !== this.#tcpTarget()) {
      // The client moved to another instance (UDP failover): TCP follows.
      const old = this.#tcp;
      this.#tcp = undefined;
      old.close();
      await old.ended;
    }
    if (this.#tcp === undefined) {
      const channel = this.#guard.tcpChannel();
      let tcp: ServerConnection | undefined = undefined;
      tcp = await ServerConnection.open(
        this.#failover.current.address,
        this.#core.serverTcpPort!,
        channel,
        {
          message: (message: Message) => this.#fromTcp(message),
          closed: () => this.#tcpClosed(tcp),
        },
      );
      if (this.#closed) {
        tcp.close();
        return;
      }
      this.#tcp = tcp;
    }
    await this.#tcp.send(bytes);
  }

  /** A message over TCP, from the instance in use or one a `file_elsewhere` named. */
  async #fromTcp(message: Message): Promise<void> {
    if (message.type === "file_chunk" || message.type === "download_ok") {
      if (message.reqId === this.#download?.reqId) await this.#download.frame(message);
      if (message.type === "file_chunk") return;
    }
    if ("reqId" in message) {
      const bytes = this.#redirectable.get(message.reqId);
      this.#redirectable.delete(message.reqId);
      // Followed once: a second `file_elsewhere` reaches the core, which fails the command.
      if (message.type === "file_elsewhere" && bytes !== undefined) {
        return this.#follow(message, bytes);
      }
    }
    this.#core.handle(systemClock.now(), message);
    this.#drain();
  }

  /**
   * Sends a download or delete again to the instance whose disk holds the
   * file, on a connection of its own (same server key, same session token),
   * closed once the answer (and a download's data) is in.
   */
  async #follow(elsewhere: MessageOf<"file_elsewhere">, bytes: Uint8Array): Promise<void> {
    const { reqId, host, tcpPort } = elsewhere;
    log.info("Server file request {reqId} goes to {target}, whose disk holds the file", {
      reqId,
      target: hostPort(host, tcpPort),
    });
    let done = false;
    let conn: ServerConnection | undefined = undefined;
    this.#following.add(reqId);
    try {
      conn = await ServerConnection.open(host, tcpPort, this.#guard.tcpChannel(), {
        message: async (message: Message) => {
          await this.#fromTcp(message);
          if (!("reqId" in message) || message.reqId !== reqId || message.type === "file_chunk") {
            return;
          }
          done = true;
          const close = () => {
            this.#following.delete(reqId);
            conn?.close();
          };
          // A download's data follows its `download_ok` on this connection.
          const download = message.type === "download_ok" ? this.#download : undefined;
          if (download?.reqId === reqId) download.result.finally(close);
          else close();
        },
        closed: async () => {
          this.#following.delete(reqId);
          const download = this.#download;
          if (download?.reqId === reqId) {
            // Closed before all the data came (a finished download ignores this).
            await download.finish(`the connection to ${hostPort(host, tcpPort)} closed`);
          }
          if (done) return;
          this.#core.handle(systemClock.now(), {
            type: "error",
            reqId,
            code: ERROR_CODES.file_not_found,
            message: `The server at ${
              hostPort(host, tcpPort)
            } that holds the file closed the connection`,
          });
          this.#drain();
        },
      });
      const open = conn;
      this.#elsewhere.add(open);
      open.ended.finally(() => this.#elsewhere.delete(open));
      await open.send(bytes);
    } catch (error) {
      this.#following.delete(reqId);
      const download = this.#download;
      if (download?.reqId === reqId) {
        await download.finish("the server that holds the file cannot be reached");
      }
      this.#core.handle(systemClock.now(), {
        type: "error",
        reqId,
        code: ERROR_CODES.file_not_found,
        message: `Cannot reach the server at ${hostPort(host, tcpPort)} that holds the file: ${
          (error as Error).message
        }`,
      });
      this.#drain();
    }
  }

  /** The connection to an instance ended: what was under way on it fails. */
  async #tcpClosed(tcp: ServerConnection | undefined): Promise<void> {
    // One the client moved away from (`#sendTcp`) had nothing under way.
    if (this.#tcp !== tcp) return;
    this.#tcp = undefined;
    this.#redirectable.clear();
    if (this.#download !== undefined && !this.#following.has(this.#download.reqId)) {
      await this.#download.finish("the TCP connection to the server closed");
    }
    if (!this.#closed) {
      log.info("The server closed the TCP connection; the next request over TCP opens another");
      this.#core.tcpFailed("the server closed the TCP connection");
      this.#drain();
    }
  }

  async #streamUpload(
    reqId: number,
    upload: { path: string; name: string; size: number },
  ): Promise<void> {
    const file = await Deno.open(upload.path);
    try {
      const buffer = new Uint8Array(MAX_CHUNK_BYTES);
      let sent = 0;
      while (sent < upload.size) {
        const n = await file.read(
          buffer.subarray(0, Math.min(MAX_CHUNK_BYTES, upload.size - sent)),
        );
        if (n === null) throw new Error(`${upload.path} became shorter while it was sent`);
        await this.#tcp!.send(
          encodeMessage({ type: "file_chunk", reqId, data: buffer.subarray(0, n) }),
        );
        sent += n;
        this.#config.onProgress?.({
          stage: "upload",
          name: upload.name,
          done: sent,
          total: upload.size,
        });
      }
    } finally {
      file.close();
    }
  }
}

/** The type code of `relay`, the one clear datagram the server sends after the handshake. */
const RELAY_CODE = MESSAGE_SCHEMAS.relay.code;

/** `::ffff:127.0.0.1` (an IPv4 peer on a dual-stack socket) as `127.0.0.1`. */
function unmapped(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}
