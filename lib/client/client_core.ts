/**
 * The client's logic, sans-I/O: a value you feed user commands, messages
 * from the server and from peers, the time and the driver's file work, and
 * poll for what to send, save and show. It hands the work to parts that
 * own a feature and its timers, the way quinn-proto's `Connection` does:
 *
 * - {@linkcode ServerLink}: hello, register, login, re-login, heartbeats, logout, TCP text;
 * - {@linkcode PresenceWatch}: list, lookup, watch and presence news;
 * - {@linkcode ServerFiles}: the user's files on the server;
 * - {@linkcode PeerTable}: peer sessions, connect, verification, accept, send, terminate;
 * - {@linkcode TransferCommands} over {@linkcode FileTransfers}: files between peers;
 * - {@linkcode ScriptWaits}: `wait` and an `accept` that comes first;
 * - {@linkcode AddressDiscovery}: the public address and NAT mapping type, after each login.
 *
 * Their deadlines are one {@linkcode TimerTable}. Commands never wait on
 * each other, except those on one session: each runs in a lane (the server,
 * one peer, the script waits), a lane runs its commands one after another,
 * and lanes run side by side, so a silent peer holds up nothing but its own.
 *
 * @module
 */
import type { Random } from "../random.ts";
import { AddressDiscovery } from "./address_discovery.ts";
import { nameKey } from "../wire/client_name.ts";
import { isPeerMessage, type Message } from "../wire/messages.ts";
import type { ReliableChannelOptions } from "../reliable/reliable_channel.ts";
import type { Command } from "./command.ts";
import { FileTransfers } from "./file_transfers.ts";
import { type ClientOutput, Outbox } from "./outbox.ts";
import type { PeerAddress, PeerSession } from "./peer_session.ts";
import { PeerTable } from "./peer_table.ts";
import { PeerPaths } from "./peer_paths.ts";
import type { PeerPathState, PeerPathTimings } from "./peer_path.ts";
import type { PeerPathInfo } from "./client_event.ts";
import { hostPort } from "../host_port.ts";
import type { KeyPair } from "../crypto/key_pair.ts";
import type { TransportLimits } from "../crypto/transport_session.ts";
import { PresenceWatch } from "./presence_watch.ts";
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from "./retry_policy.ts";
import { ScriptWaits } from "./script_waits.ts";
import { ServerFiles } from "./server_files.ts";
import { ServerLink } from "./server_link.ts";
import type { Via } from "./server_session.ts";
import { type ClientTimer, TimerTable } from "./timer_table.ts";
import { type FileReport, TransferCommands } from "./transfer_commands.ts";

/** A command the core runs (the driver resolves files and secrets first). */
export type CoreCommand =
  | { readonly kind: "hello" }
  | { readonly kind: "login"; readonly name: string; readonly secret: Uint8Array }
  | {
    readonly kind: "upload";
    readonly name: string;
    readonly size: number;
    readonly sha256: Uint8Array;
  }
  | { readonly kind: "download"; readonly name: string }
  /** `sendfile` once the driver has read the file's size and SHA-256. */
  | {
    readonly kind: "sendfile";
    readonly to?: string;
    readonly path: string;
    readonly name: string;
    readonly size: number;
    readonly sha256: Uint8Array;
  }
  /** The user commands the core runs as typed. */
  | Exclude<
    Command,
    { kind: "login" | "upload" | "download" | "sendfile" | "generate" | "help" | "exit" }
  >;

/** Options of a {@linkcode ClientCore}. */
export interface ClientCoreOptions {
  /** Source of ids and jitter. */
  random: Random;
  /** Retransmission schedule. */
  retry?: RetryPolicy;
  /** The name to register under, if known. */
  name?: string;
  /** The client's own UDP port (the one its requests come from). */
  udpPort: number;
  /** The client's declared TCP port. */
  tcpPort: number;
  /** The transport for register, login and deregister. */
  via: Via;
  /** The server's address as the user gave it, for messages. */
  server: string;
  /** True if it has other instances of the service to move to (`--server a,b`). */
  failover?: boolean;
  /** Options of peer sessions' reliable channels (default: `PEER_CHANNEL_OPTIONS`). */
  peerChannel?: ReliableChannelOptions;
  /** Accept every file offered by a peer at once (`--accept-files`). */
  acceptFiles?: boolean;
  /** Offers of larger files are declined, bytes (`--max-receive`, default 4 GiB). */
  maxReceive?: number;
  /** Ask the server for the public address and NAT mapping after each login (default true). */
  discover?: boolean;
  /**
   * This client's static key pair, the one its server channel presents (the
   * server vouches for it to peers). Default: one drawn from `random` when a
   * peer session first needs it.
   */
  staticKeyPair?: KeyPair;
  /** Rekey and expiry limits of peer keys (tests shorten them). */
  peerKeyLimits?: Partial<TransportLimits>;
  /** Benchmarks only: peer sessions seal with a null cipher. No flag sets it. */
  peerNullCipher?: boolean;
  /**
   * Have the server introduce the sides of each peer session, probe for a
   * direct path and use the server's relay until one is found (default
   * true; false sends straight to the peer's address, as before).
   */
  traverse?: boolean;
  /** This machine's host candidates for the UDP socket (the driver reads the interfaces). */
  hostCandidates?: () => readonly PeerAddress[];
  /** Timings of the peer paths (tests shorten them). */
  pathTimings?: Partial<PeerPathTimings>;
}

/** The order in which timers that are due together are served. */
const TIMER_ORDER: readonly ClientTimer[] = [
  "requests",
  "peers",
  "waits",
  "relogin",
  "heartbeat",
  "discovery",
  "paths",
];

/**
 * The client core.
 *
 * @example
 * ```ts
 * const core = new ClientCore({ random: cryptoRandom, udpPort: 5000, tcpPort: 5001,
 *   via: "udp", server: "localhost:3000", name: "Alice Smith" });
 * const id = core.run(now, { kind: "hello" });
 * // send core.poll() outputs (the result carries `id`); feed replies to core.handle(now, message)
 * ```
 */
export class ClientCore {
  #options: ClientCoreOptions;
  #outbox = new Outbox();
  #timers = new TimerTable<ClientTimer>();
  #link: ServerLink;
  #presence: PresenceWatch;
  #files: ServerFiles;
  #peers: PeerTable;
  #transfers: TransferCommands;
  #waits: ScriptWaits;
  #discovery: AddressDiscovery;
  #paths: PeerPaths | undefined;
  /** The login address discovery last started for (it starts again after each login). */
  #discoveredFor: string | undefined;
  /** The token `#discover` last looked at: the same array needs no second look. */
  #lookedAt: Uint8Array | undefined;
  #nextId = 1;
  /** Commands started or queued, and not finished. */
  #running = new Set<number>();
  /** Lanes with a command running, and the commands queued behind it. */
  #lanes = new Map<string, { running: number; queue: { id: number; command: CoreCommand }[] }>();
  /** The lane of each running command that has one. */
  #laneOf = new Map<number, string>();
  /** The latest time the core was given. */
  #now = 0;
  /** The server instance in use, `host:port`. */
  #server: string;

  /** @param options ports, name, transport and randomness */
  constructor(options: ClientCoreOptions) {
    this.#options = options;
    this.#server = options.server;
    const { random, retry } = options;
    const outbox = this.#outbox;
    const timers = this.#timers;
    this.#link = new ServerLink({ ...options, outbox, timers });
    this.#presence = new PresenceWatch(this.#link, outbox);
    this.#files = new ServerFiles(this.#link, outbox);
    const transfers = new FileTransfers({
      autoAccept: options.acceptFiles === true,
      maxReceive: options.maxReceive,
    });
    this.#peers = new PeerTable({
      random,
      retry: retry ?? DEFAULT_RETRY_POLICY,
      channel: options.peerChannel,
      link: this.#link,
      transfers,
      outbox,
      timers,
      staticKeyPair: options.staticKeyPair,
      limits: options.peerKeyLimits,
      nullCipher: options.peerNullCipher,
    });
    this.#transfers = new TransferCommands(transfers, this.#peers, outbox);
    this.#waits = new ScriptWaits({
      peers: this.#peers,
      transfers,
      outbox,
      timers,
      giveUpMs: (retry ?? DEFAULT_RETRY_POLICY).giveUpMs,
    });
    this.#discovery = new AddressDiscovery({ outbox, timers });
    if (options.traverse !== false) {
      const peers = this.#peers;
      this.#paths = new PeerPaths({
        link: this.#link,
        outbox,
        timers,
        random,
        session: (id) => {
          const peer = peers.byId(id);
          return peer === undefined
            ? undefined
            : { peerName: peer.peerName, outgoing: peer.outgoing, live: peer.state !== "closed" };
        },
        hostCandidates: options.hostCandidates,
        timings: options.pathTimings,
      });
    }
  }

  /** The server's TCP port, once `hello` has learned it. */
  get serverTcpPort(): number | undefined {
    return this.#link.serverTcpPort;
  }

  /** How the server checks logins, once `hello` has learned it. */
  get auth(): "open" | "password" | undefined {
    return this.#link.auth;
  }

  /** True while a command runs or waits for its lane. */
  get busy(): boolean {
    this.#settle(this.#now);
    return this.#running.size > 0;
  }

  /** The name this client is logged in as, if any. */
  get loggedInAs(): string | undefined {
    return this.#link.loggedInAs;
  }

  /** The name given by flag or by the last register/login. */
  get name(): string | undefined {
    return this.#link.name;
  }

  /** The random client id every request to the server carries (hex). */
  get clientId(): string {
    return this.#link.clientId;
  }

  /** Retransmissions made since start. */
  get retransmissions(): number {
    return this.#link.retransmissions;
  }

  /** Every peer session, closed ones included (for status and the simulator). */
  get peers(): readonly PeerSession[] {
    return this.#peers.all;
  }

  /**
   * Starts a command, or queues it behind the command running in its lane
   * (commands on one session keep their order); its `result` output, which
   * carries the returned number, comes later (or at once for commands that
   * need no server and no peer).
   *
   * @param now current time, ms
   * @param command the command
   * @returns the command's number
   */
  run(now: number, command: CoreCommand): number {
    this.#settle(now);
    const id = this.#nextId++;
    this.#running.add(id);
    const lane = this.#lane(command);
    const busy = lane === undefined ? undefined : this.#lanes.get(lane);
    if (busy !== undefined) {
      busy.queue.push({ id, command });
      return id;
    }
    if (lane !== undefined) {
      this.#lanes.set(lane, { running: id, queue: [] });
      this.#laneOf.set(id, lane);
    }
    this.#start(now, id, command);
    this.#settle(now);
    return id;
  }

  /**
   * Handles a decoded message from the server.
   *
   * @param now current time, ms
   * @param message the message
   */
  handle(now: number, message: Message): void {
    if (isPeerMessage(message)) return;
    if (message.type === "presence") this.#presence.handle(message);
    else if (message.type === "session_ended") this.#link.sessionEnded(now, message);
    else if (message.type === "reflect_ok") this.#discovery.handle(now, message);
    else if (message.type === "introduction" || message.type === "relay") {
      const relayed = this.#paths?.handle(now, message);
      if (relayed !== undefined) this.#peers.handle(now, relayed.from, relayed.bytes);
    } else this.#link.handle(now, message);
    this.#settle(now);
  }

  /**
   * Handles a datagram from another client (any source but the server's).
   *
   * @param now current time, ms
   * @param from where it came from
   * @param bytes the datagram, undecoded: the peer table decodes and opens it
   */
  handlePeer(now: number, from: PeerAddress, bytes: Uint8Array): void {
    const as = this.#paths === undefined ? from : this.#paths.inbound(now, from, bytes);
    if (as !== undefined) this.#peers.handle(now, as, bytes);
    this.#settle(now);
  }

  /**
   * Fails the requests that travel over TCP, for a connection error.
   *
   * @param reason one sentence
   */
  tcpFailed(reason: string): void {
    this.#link.tcpFailed(this.#now, reason);
    this.#settle(this.#now);
  }

  /**
   * Takes what the driver did with a file of a peer transfer (read, ready
   * to receive, written, verified, failed).
   *
   * @param now current time, ms
   * @param report what happened
   */
  fileReport(now: number, report: FileReport): void {
    this.#transfers.report(now, report);
    this.#settle(now);
  }

  /**
   * Tells whether `sendfile` has one open session to use, before the
   * driver spends time hashing the file.
   *
   * @param to the peer's name, if given
   * @returns undefined, or why not, one sentence
   */
  sendFileProblem(to?: string): string | undefined {
    return this.#peers.sessionProblem(to, "sendfile");
  }

  /** @returns when `onTimeout` should next be called, or undefined */
  nextTimeout(): number | undefined {
    return this.#timers.next();
  }

  /**
   * Serves the timers whose time has come: retransmissions, peer
   * sessions, waits, a new login, a heartbeat.
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    const due = this.#timers.expired(now);
    for (const timer of TIMER_ORDER) {
      if (!due.includes(timer)) continue;
      if (timer === "peers") this.#peers.onTimeout(now);
      else if (timer === "waits") this.#waits.check(now);
      else if (timer === "discovery") this.#discovery.onTimeout(now);
      else if (timer === "paths") this.#paths?.onTimeout(now);
      else this.#link.onTimeout(now, timer);
    }
    this.#settle(now);
  }

  /**
   * The driver moved the client to another instance of the service (the
   * one in use left a request unanswered, or said it is shutting down):
   * requests in flight go there now and the session follows.
   *
   * @param now current time, ms
   * @param from the instance left, `host:port`
   * @param to the instance now in use, `host:port`
   * @param why `silent` or `shutdown`
   */
  moved(now: number, from: string, to: string, why: "silent" | "shutdown"): void {
    this.#server = to;
    this.#link.moved(now, to);
    this.#outbox.event({ kind: "server_moved", from, to, why, name: this.#link.loggedInAs });
    this.#settle(now);
  }

  /**
   * Ends the session for `exit` or Ctrl+C: ends peer sessions and sends one
   * `logout` without waiting; the server also forgets the session when its
   * lease runs out.
   *
   * @param now current time, ms
   * @returns true if there was a session to end
   */
  leave(now: number): boolean {
    this.#peers.leave(now);
    const left = this.#link.leave(now);
    this.#settle(now);
    return left;
  }

  /**
   * Takes the next output; the peer paths route each datagram to a peer
   * (direct, through the relay, or both) and add each session's path to
   * what `peers` reports.
   *
   * @returns the next output, or undefined
   */
  poll(): ClientOutput | undefined {
    const paths = this.#paths;
    for (let out = this.#outbox.poll(); out !== undefined; out = this.#outbox.poll()) {
      if (paths === undefined) return out;
      if (out.type === "peer_send") {
        const routed = paths.route(this.#now, out);
        if (routed !== undefined) return routed;
        continue;
      }
      if (out.type === "result" && out.result.ok && out.result.command === "peers") {
        const peers = out.result.peers.map((p) => {
          const path = paths.pathOf(p.session);
          return path === undefined ? p : { ...p, path: pathInfo(path) };
        });
        return { ...out, result: { ...out.result, peers } };
      }
      return out;
    }
    return undefined;
  }

  #start(now: number, id: number, command: CoreCommand): void {
    const kind = command.kind;
    if (kind === "status") return this.#status(id);
    if (kind === "hello") return this.#link.run(now, id, command);
    const tcpOnly = kind === "tcp" || kind === "upload" || kind === "download" ||
      kind === "files" || kind === "delete";
    if ((tcpOnly || this.#options.via === "tcp") && this.#link.serverTcpPort === undefined) {
      return this.#outbox.fail(id, kind, "The server's TCP port is not known yet", "not_connected");
    }
    switch (kind) {
      case "register":
      case "login":
      case "tcp":
      case "logout":
      case "deregister":
        return this.#link.run(now, id, command);
      case "list":
      case "lookup":
      case "watch":
        return this.#presence.run(now, id, command);
      case "files":
      case "delete":
      case "upload":
      case "download":
        return this.#files.run(now, id, command);
      case "peers":
      case "connect":
      case "reject":
      case "send":
      case "terminate":
        return this.#peers.run(now, id, command);
      case "sendfile":
      case "acceptfile":
      case "declinefile":
      case "cancel":
      case "transfers":
        return this.#transfers.run(now, id, command);
      case "accept":
      case "wait":
        return this.#waits.run(now, id, command);
    }
  }

  #status(id: number): void {
    const link = this.#link;
    const { udpPort, tcpPort, via } = this.#options;
    const server = this.#server;
    this.#outbox.result(id, {
      ok: true,
      command: "status",
      server,
      serverVersion: link.serverVersion ?? null,
      serverTcpPort: link.serverTcpPort ?? null,
      auth: link.auth ?? null,
      name: link.name ?? null,
      loggedIn: link.loggedInAs !== undefined,
      watching: this.#presence.watching,
      udpPort,
      tcpPort,
      via,
      publicAddress: this.#discovery.publicAddress ?? null,
      mapping: this.#discovery.mapping ?? null,
    });
  }

  /**
   * The lane a command runs in: the server, one peer, unnamed `accept`s or
   * script waits; none for commands that finish at once.
   */
  #lane(command: CoreCommand): string | undefined {
    const peer = (name: string | undefined): string | undefined => {
      if (name !== undefined) return `peer ${nameKey(name)}`;
      // Unnamed, it means the one open session (or fails at once).
      const open = this.#peers.open(undefined);
      return open.length === 1 ? `peer ${nameKey(open[0].peerName)}` : undefined;
    };
    switch (command.kind) {
      case "status":
      case "peers":
      case "transfers":
      case "sendfile":
      case "acceptfile":
      case "declinefile":
      case "cancel":
        return undefined;
      case "wait":
        return "wait";
      case "accept":
        return command.name === undefined ? "accept" : peer(command.name);
      case "reject":
        return command.name === undefined ? undefined : peer(command.name);
      case "connect":
        return peer(command.name);
      case "send":
        return peer(command.to);
      case "terminate":
        return peer(command.name);
      default:
        return "server";
    }
  }

  /** Starts address discovery once per login (a token stands for one login). */
  #discover(now: number): void {
    const token = this.#link.token;
    // Called for every datagram: the same array is the same login, with no
    // string to build (a new login brings a new array).
    if (token !== undefined && token === this.#lookedAt) return;
    this.#lookedAt = token;
    const login = token === undefined ? undefined : token.join(",");
    if (login === this.#discoveredFor) return;
    this.#discoveredFor = login;
    if (login !== undefined && this.#options.discover !== false) this.#discovery.start(now);
  }

  /** Forgets the commands that have finished and starts those queued behind them. */
  #settle(now: number): void {
    this.#now = Math.max(this.#now, now);
    this.#discover(this.#now);
    for (
      let done = this.#outbox.takeFinished();
      done.length > 0;
      done = this.#outbox.takeFinished()
    ) {
      for (const id of done) {
        this.#running.delete(id);
        const lane = this.#laneOf.get(id);
        if (lane === undefined) continue;
        this.#laneOf.delete(id);
        const next = this.#lanes.get(lane)?.queue.shift();
        if (next === undefined) {
          this.#lanes.delete(lane);
          continue;
        }
        this.#lanes.get(lane)!.running = next.id;
        this.#laneOf.set(next.id, lane);
        this.#start(this.#now, next.id, next.command);
      }
    }
  }
}

/** A session's path as `peers` shows it. */
function pathInfo(path: PeerPathState): PeerPathInfo {
  return path.kind === "relay" ? { kind: "relay" } : {
    kind: "direct",
    local: hostPort(path.local.ip, path.local.port),
    remote: hostPort(path.remote.ip, path.remote.port),
  };
}
