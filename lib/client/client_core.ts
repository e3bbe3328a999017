/**
 * The client's logic, sans-I/O: runs user commands against the server
 * through a {@linkcode ServerSession}, keeps the session alive with
 * heartbeats, logs in again by itself when the server forgot the session
 * (open mode), and turns the server's presence news into events.
 *
 * @module
 */
import { earlier } from "../clock.ts";
import { toHex } from "../hex.ts";
import type { Random } from "../random.ts";
import { nameKey, nameProblem } from "../wire/client_name.ts";
import { errorCodeName } from "../wire/error_code.ts";
import { fileNameProblem } from "../wire/file_name.ts";
import {
  AUTH_MODES,
  isPeerMessage,
  MAX_TEXT_BYTES,
  type Message,
  type MessageOf,
  type PeerMessage,
  PRESENCE_CHANGES,
  type Reply,
  type Request,
  SESSION_END_REASONS,
} from "../wire/messages.ts";
import {
  LOW_LATENCY_CHANNEL_OPTIONS,
  type ReliableChannelOptions,
} from "../reliable/reliable_channel.ts";
import { MAX_MESSAGE_BYTES } from "../reliable/segment.ts";
import {
  type FileFailure,
  FileTransfers,
  type FileTransfersOutput,
  type TransferInfo,
} from "./file_transfers.ts";
import type {
  ClientEvent,
  ClientStatus,
  CommandResult,
  FailureCode,
  OnlineClient,
  SessionEndReason,
} from "./client_event.ts";
import { messagesWaitedText, peerEndText } from "./client_event_text.ts";
import { type PeerAddress, PeerSession, type PeerSessionOutput } from "./peer_session.ts";
import type { Command } from "./command.ts";
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from "./retry_policy.ts";
import { type RequestBody, ServerSession, type Via } from "./server_session.ts";

/** What the core asks its driver to do, or reports. */
export type ClientOutput =
  | {
    readonly type: "send";
    readonly via: Via;
    readonly message: Request | MessageOf<"presence_ack">;
    /** 1 for the first send, 2 for the first retransmission, and so on. */
    readonly attempt: number;
  }
  | { readonly type: "result"; readonly result: CommandResult }
  | { readonly type: "event"; readonly event: ClientEvent }
  /** Save this identity (name and secret key) so `login` can use it later. */
  | { readonly type: "identity"; readonly name: string; readonly key: Uint8Array }
  /** Send a datagram to another client. */
  | { readonly type: "peer_send"; readonly to: PeerAddress; readonly message: PeerMessage }
  /** A peer message was sent, acknowledged or delivered (for the log and the simulator). */
  | { readonly type: "trace"; readonly trace: PeerTrace }
  /** File work for a transfer between peers; report back with the `file...` methods. */
  | { readonly type: "file"; readonly op: FileOperation };

/** The file work of peer transfers: read, write, verify, close. */
export type FileOperation = Exclude<FileTransfersOutput, { type: "event" }>;

/** One step of a peer message's life, for the log and the simulator's invariants. */
export interface PeerTrace {
  /** `sent` (handed to the channel), `acked` (the peer has it) or `delivered` (to us). */
  readonly step: "sent" | "acked" | "delivered";
  /** The session id. */
  readonly session: string;
  /** The other client's name. */
  readonly peer: string;
  /** The message's number in its session and direction, from 0. */
  readonly index: number;
  /** The text. */
  readonly text: string;
}

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
  /** Options of peer sessions' reliable channels (default: the low-latency preset). */
  peerChannel?: ReliableChannelOptions;
  /** Accept every file offered by a peer at once (`--accept-files`). */
  acceptFiles?: boolean;
}

interface Running {
  command: CoreCommand;
  /** The server request it waits for, or -1 when it waits for something else. */
  reqId: number;
  name?: string;
  clients?: OnlineClient[];
  /** A peer command: the session it waits on. */
  session?: string;
  /** `send`: the channel's id of the message. */
  messageId?: number;
  /** `send`: the message's index in its session. */
  index?: number;
  /** `accept` and `wait`: when to give up. */
  deadline?: number;
}

type Background = "heartbeat" | "login" | "watch" | "logout" | { verify: string };

/**
 * The channel options of peer chat sessions: the low-latency preset (a
 * redundant copy of chat-sized segments, fast retransmit on the first gap),
 * with the retransmission timeout capped at 8 s and a keepalive every 2 s of
 * silence, so a session rides out a partition of several seconds and a
 * peer that is really gone is declared so after 30 s.
 */
export const PEER_CHANNEL_OPTIONS: Readonly<ReliableChannelOptions> = Object.freeze({
  ...LOW_LATENCY_CHANNEL_OPTIONS,
  maxRtoMs: 8000,
  keepaliveMs: 2000,
  deadAfterMs: 30_000,
});

/** Closed peer sessions kept to answer late copies of their messages. */
const CLOSED_PEERS_KEPT = 256;

/** Uploads may take this long per MiB beyond the usual give-up time. */
const UPLOAD_MS_PER_MIB = 1000;

/**
 * The client core.
 *
 * @example
 * ```ts
 * const core = new ClientCore({ random: cryptoRandom, udpPort: 5000, tcpPort: 5001,
 *   via: "udp", server: "localhost:3000", name: "Alice Smith" });
 * core.run(now, { kind: "hello" });
 * // send core.poll() outputs; feed replies to core.handle(now, message)
 * ```
 */
export class ClientCore {
  #session: ServerSession;
  #options: ClientCoreOptions;
  #name: string | undefined;
  #serverTcpPort: number | undefined;
  #serverVersion: string | undefined;
  #auth: "open" | "password" | undefined;
  #leaseMs = 30_000;
  /** The logged-in session, if any. */
  #loggedInAs: string | undefined;
  #token: Uint8Array | undefined;
  /** The identity key (open mode), to log in again by itself. */
  #key: Uint8Array | undefined;
  #watching = false;
  #presenceSeq = 0;
  #heartbeatAt: number | undefined;
  #heartbeatReq: number | undefined;
  #running: Running | undefined;
  #background = new Map<number, Background>();
  #outputs: ClientOutput[] = [];
  #random: Random;
  #peers = new Map<string, PeerSession>();
  #messagesReceived = new Map<string, number>();
  /** Peers whose sessions they ended (or that died), not yet reported by a `wait terminate`. */
  #endedPeers: string[] = [];
  #transfers: FileTransfers;
  /** Transfers whose end a `wait transfers` has reported. */
  #transfersReported = new Set<number>();
  /** Offers a `wait offer` has reported. */
  #offersReported = new Set<number>();

  /** @param options ports, name, transport and randomness */
  constructor(options: ClientCoreOptions) {
    this.#options = options;
    this.#transfers = new FileTransfers({ autoAccept: options.acceptFiles === true });
    this.#name = options.name;
    this.#random = options.random;
    this.#session = new ServerSession({ random: options.random, retry: options.retry });
  }

  /** The server's TCP port, once `hello` has learned it. */
  get serverTcpPort(): number | undefined {
    return this.#serverTcpPort;
  }

  /** How the server checks logins, once `hello` has learned it. */
  get auth(): "open" | "password" | undefined {
    return this.#auth;
  }

  /** True while a command waits for the server. */
  get busy(): boolean {
    return this.#running !== undefined;
  }

  /** The name this client is logged in as, if any. */
  get loggedInAs(): string | undefined {
    return this.#loggedInAs;
  }

  /** The name given by flag or by the last register/login. */
  get name(): string | undefined {
    return this.#name;
  }

  /** Retransmissions made since start. */
  get retransmissions(): number {
    return this.#session.retransmissions;
  }

  /**
   * Starts a command; its `result` output comes later (or at once for
   * commands that need no server).
   *
   * @param now current time, ms
   * @param command the command
   * @throws {TypeError} if another command is still running
   */
  run(now: number, command: CoreCommand): void {
    if (this.#running !== undefined) throw new TypeError("Cannot run two commands at once");
    const kind = command.kind;
    if (kind === "hello") return this.#send(now, command, { type: "hello" }, "udp");
    if (kind === "status") {
      return this.#result({ ok: true, command: "status", ...this.#statusData() });
    }
    const tcpOnly = kind === "tcp" || kind === "upload" || kind === "download" ||
      kind === "files" || kind === "delete";
    if ((tcpOnly || this.#options.via === "tcp") && this.#serverTcpPort === undefined) {
      return this.#fail(kind, "The server's TCP port is not known yet", "not_connected");
    }
    if (kind === "peers") return this.#peerList();
    if (
      kind === "sendfile" || kind === "acceptfile" || kind === "declinefile" ||
      kind === "cancel" || kind === "transfers"
    ) {
      return this.#fileCommand(now, command);
    }
    if (kind === "accept" || kind === "reject" || kind === "send" || kind === "terminate") {
      return this.#peerCommand(now, command);
    }
    if (kind === "wait") {
      this.#running = {
        command,
        reqId: -1,
        // Transfers end by themselves (a silent peer ends its session), so
        // waiting for them is bounded only when the script says so.
        deadline: now + (command.withinMs ??
          (command.for === "transfers" ? 86_400_000 : this.#retryPolicy().giveUpMs)),
      };
      return this.#checkWaiting(now);
    }
    if (kind === "register") return this.#register(now, command);
    if (kind === "login") return this.#login(now, command);
    if (kind === "tcp") return this.#text(now, command);
    const token = this.#token;
    if (token === undefined) {
      return this.#fail(kind, "Not logged in; use register or login first", "not_logged_in");
    }
    switch (kind) {
      case "logout":
        return this.#send(now, command, { type: "logout", token }, this.#options.via);
      case "deregister":
        return this.#send(now, command, { type: "deregister", token }, this.#options.via);
      case "list":
        return this.#send(now, command, { type: "list", token, after: "" }, "udp");
      case "connect": {
        const problem = nameProblem(command.name);
        if (problem !== undefined) return this.#fail(kind, problem, "invalid_name");
        if (nameKey(command.name) === nameKey(this.#loggedInAs ?? "")) {
          return this.#fail(kind, "You cannot connect to yourself", "bad_command");
        }
        // An open session is checked against the lookup (see #connect).
        const existing = this.#peerByName(command.name, ["connecting"]);
        if (existing !== undefined) {
          return this.#fail(
            kind,
            `Already in a session with "${existing.peerName}"`,
            "bad_command",
          );
        }
        return this.#send(now, command, { type: "lookup", token, name: command.name }, "udp");
      }
      case "lookup": {
        const problem = nameProblem(command.name);
        if (problem !== undefined) return this.#fail(kind, problem, "invalid_name");
        return this.#send(now, command, { type: "lookup", token, name: command.name }, "udp");
      }
      case "watch":
        // A new watcher numbers its news from 1; an existing one goes on.
        if (command.on && !this.#watching) this.#presenceSeq = 0;
        return this.#send(now, command, { type: "watch", token, on: command.on ? 1 : 0 }, "udp");
      case "files":
        return this.#send(now, command, { type: "files", token }, "tcp");
      case "delete":
        return this.#send(now, command, { type: "delete", token, name: command.name }, "tcp");
      case "download":
        return this.#send(now, command, { type: "download", token, name: command.name }, "tcp");
      case "upload": {
        const problem = fileNameProblem(command.name);
        if (problem !== undefined) return this.#fail(kind, problem, "invalid_file_name");
        const extraMs = Math.ceil(command.size / (1024 * 1024)) * UPLOAD_MS_PER_MIB;
        return this.#send(
          now,
          command,
          {
            type: "upload",
            token,
            name: command.name,
            size: command.size,
            sha256: command.sha256,
          },
          "tcp",
          undefined,
          extraMs,
        );
      }
    }
  }

  /**
   * Handles a decoded message from the server.
   *
   * @param now current time, ms
   * @param message the message
   */
  handle(now: number, message: Message): void {
    if (isPeerMessage(message)) return;
    if (message.type === "presence") return this.#presence(message);
    if (message.type === "session_ended") return this.#sessionEnded(now, message);
    this.#session.handle(now, message);
    this.#drain(now);
  }

  /**
   * Fails the running request if it travels over TCP, for a connection error.
   *
   * @param reason one sentence
   */
  tcpFailed(reason: string): void {
    this.#session.failAll("tcp", reason);
    this.#drain(0);
  }

  /**
   * The driver read a chunk of a file being sent.
   *
   * @param now current time, ms
   * @param id the transfer
   * @param offset where the chunk starts
   * @param data the bytes
   */
  fileRead(now: number, id: number, offset: number, data: Uint8Array): void {
    this.#transfers.readDone(now, id, offset, data);
    this.#drainPeers(now);
  }

  /**
   * The driver is ready to receive a file; `offset` bytes of a partial
   * file with the same content are already there.
   *
   * @param now current time, ms
   * @param id the transfer
   * @param offset where receiving starts
   */
  fileReceiveReady(now: number, id: number, offset: number): void {
    this.#transfers.receiveReady(now, id, offset);
    this.#drainPeers(now);
  }

  /**
   * The driver wrote a received file up to `upTo` (for progress).
   *
   * @param now current time, ms
   * @param id the transfer
   * @param upTo bytes written
   */
  fileWritten(now: number, id: number, upTo: number): void {
    this.#transfers.written(now, id, upTo);
    this.#drainTransfers(now);
  }

  /**
   * The driver verified a received file and put it at `path`.
   *
   * @param now current time, ms
   * @param id the transfer
   * @param path where it is
   */
  fileReceived(now: number, id: number, path: string): void {
    this.#transfers.received(now, id, path);
    this.#drainPeers(now);
  }

  /**
   * The driver could not read, write or verify a file: the transfer fails
   * and the peer is told.
   *
   * @param now current time, ms
   * @param id the transfer
   * @param problem one sentence, for this side's user only
   * @param failure what failed, all the peer is told
   */
  fileFailed(now: number, id: number, problem: string, failure: FileFailure): void {
    this.#transfers.failed(now, id, problem, failure);
    this.#drainPeers(now);
  }

  /** @returns when `onTimeout` should next be called, or undefined */
  nextTimeout(): number | undefined {
    let next = earlier(this.#session.nextTimeout(), this.#heartbeatAt);
    next = earlier(next, this.#relogin?.at);
    next = earlier(next, this.#running?.deadline);
    for (const peer of this.#peers.values()) next = earlier(next, peer.nextTimeout());
    return next;
  }

  /**
   * Retransmits or gives up on requests whose time has come, and sends a
   * heartbeat when one is due.
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    this.#session.onTimeout(now);
    for (const peer of this.#peers.values()) {
      const at = peer.nextTimeout();
      if (at !== undefined && at <= now) {
        peer.onTimeout(now);
        this.#drainPeer(now, peer);
      }
    }
    this.#checkWaiting(now);
    const relogin = this.#relogin;
    if (relogin !== undefined && now >= relogin.at && this.#token === undefined) {
      this.#relogin = undefined;
      const reqId = this.#session.start(
        now,
        this.#loginBody(relogin.name, relogin.key),
        this.#options.via,
      );
      this.#background.set(reqId, "login");
      this.#pendingName = relogin.name;
    }
    if (this.#heartbeatAt !== undefined && now >= this.#heartbeatAt && this.#token) {
      if (this.#heartbeatReq !== undefined) {
        this.#session.cancel(this.#heartbeatReq);
        this.#background.delete(this.#heartbeatReq);
      }
      const reqId = this.#session.start(now, { type: "heartbeat", token: this.#token }, "udp");
      this.#heartbeatReq = reqId;
      this.#background.set(reqId, "heartbeat");
      this.#heartbeatAt = now + this.#heartbeatInterval();
    }
    this.#drain(now);
  }

  /**
   * Ends the session for `exit` or Ctrl+C: sends one `logout` without
   * waiting; the server also forgets the session when its lease runs out.
   *
   * @param now current time, ms
   * @returns true if there was a session to end
   */
  leave(now: number): boolean {
    for (const peer of this.#peers.values()) {
      if (peer.state === "closed") continue;
      // Leaving does not wait: one terminate goes out (and again for each copy the peer sends).
      peer.abort("exit");
      this.#drainPeer(now, peer);
    }
    const token = this.#token;
    if (token === undefined) return false;
    const reqId = this.#session.start(now, { type: "logout", token }, "udp");
    this.#background.set(reqId, "logout");
    this.#clearSession();
    this.#drain(now);
    return true;
  }

  /** @returns the next output, or undefined */
  poll(): ClientOutput | undefined {
    return this.#outputs.shift();
  }

  #register(now: number, command: { kind: "register"; name?: string }): void {
    const name = command.name ?? this.#name;
    if (name === undefined) {
      return this.#fail("register", "No name given; use register NAME", "no_name");
    }
    const problem = nameProblem(name);
    if (problem !== undefined) return this.#fail("register", problem, "invalid_name");
    if (this.#loggedInAs !== undefined) {
      return this.#fail(
        "register",
        `Already logged in as "${this.#loggedInAs}"; logout first`,
        "already_logged_in",
      );
    }
    return this.#send(
      now,
      command,
      {
        type: "register",
        name,
        udpPort: this.#options.udpPort,
        tcpPort: this.#options.tcpPort,
      },
      this.#options.via,
      name,
    );
  }

  #login(now: number, command: { kind: "login"; name: string; secret: Uint8Array }): void {
    if (this.#loggedInAs !== undefined) {
      return this.#fail(
        "login",
        `Already logged in as "${this.#loggedInAs}"; logout first`,
        "already_logged_in",
      );
    }
    const problem = nameProblem(command.name);
    if (problem !== undefined) return this.#fail("login", problem, "invalid_name");
    return this.#send(
      now,
      command,
      this.#loginBody(command.name, command.secret),
      this.#options.via,
      command.name,
    );
  }

  #loginBody(name: string, secret: Uint8Array): RequestBody {
    return {
      type: "login",
      name,
      secret,
      udpPort: this.#options.udpPort,
      tcpPort: this.#options.tcpPort,
    };
  }

  #text(now: number, command: { kind: "tcp"; text: string }): void {
    const size = new TextEncoder().encode(command.text).length;
    if (size > MAX_TEXT_BYTES) {
      return this.#fail(
        "tcp",
        `The message is ${size} bytes of UTF-8; the limit is ${MAX_TEXT_BYTES}`,
        "too_long",
      );
    }
    if (!command.text.isWellFormed()) {
      return this.#fail("tcp", "The message is not valid Unicode text", "bad_request");
    }
    return this.#send(now, command, {
      type: "text",
      name: this.#loggedInAs ?? this.#name ?? "",
      token: this.#token ?? new Uint8Array(0),
      text: command.text,
    }, "tcp");
  }

  #send(
    now: number,
    command: CoreCommand,
    body: RequestBody,
    via: Via,
    name?: string,
    extraMs = 0,
  ): void {
    const reqId = this.#session.start(now, body, via, extraMs);
    this.#running = { command, reqId, name };
    this.#drain(now);
  }

  #drain(now: number): void {
    for (let out = this.#session.poll(); out !== undefined; out = this.#session.poll()) {
      if (out.type === "send") {
        this.#outputs.push(out);
        continue;
      }
      const background = this.#background.get(out.reqId);
      if (background !== undefined) {
        this.#background.delete(out.reqId);
        if (out.reqId === this.#heartbeatReq) this.#heartbeatReq = undefined;
        if (out.type === "reply") {
          this.#backgroundReply(now, background, out.reply);
        } else if (typeof background === "object") {
          this.#verified(now, background.verify, undefined);
        } else if (background === "watch") {
          this.#watching = false;
          this.#event({ kind: "session_ended", name: this.#loggedInAs, reason: "watch_failed" });
        } else if (background === "login" && this.#pendingName !== undefined && this.#key) {
          // The server is unreachable (down, or a partition): try again later.
          this.#relogin = {
            name: this.#pendingName,
            key: this.#key,
            at: now + this.#heartbeatInterval(),
          };
          this.#pendingName = undefined;
        }
        continue;
      }
      const running = this.#running;
      if (running === undefined || running.reqId !== out.reqId) continue;
      this.#running = undefined;
      if (out.type === "failed") {
        this.#fail(running.command.kind, capitalize(out.reason), out.code);
      } else {
        this.#complete(now, running, out.reply);
      }
    }
  }

  #backgroundReply(now: number, kind: Background, reply: Reply): void {
    if (kind === "logout") return;
    if (typeof kind === "object") return this.#verified(now, kind.verify, reply);
    if (kind === "heartbeat" && reply.type === "error") {
      const code = errorCodeName(reply.code);
      if (code === "session_replaced") {
        // The push that said so was lost: never take the name back.
        this.#clearSession();
        this.#key = undefined;
        return this.#event({
          kind: "session_ended",
          name: this.#name,
          reason: "replaced",
          detail: reply.message,
        });
      }
      if (code !== "not_logged_in") return;
      const name = this.#loggedInAs;
      const watching = this.#watching;
      this.#clearSession();
      // The server forgot the session (a restart, or a lease lost in a
      // partition): log in again with the identity key.
      if (this.#scheduleRelogin(now, name, 0)) {
        this.#watching = watching;
        return;
      }
      return this.#event({
        kind: "session_ended",
        name,
        reason: "not_logged_in",
        detail: reply.message,
      });
    }
    if (kind === "login") {
      const name = this.#pendingName;
      this.#pendingName = undefined;
      if (reply.type !== "login_ok" || name === undefined) {
        this.#watching = false;
        return this.#event({
          kind: "session_ended",
          name,
          reason: "relogin_failed",
          detail: reply.type === "error" ? reply.message : undefined,
        });
      }
      this.#startSession(now, name, reply.token);
      this.#event({ kind: "logged_in_again", name });
      if (this.#watching) {
        this.#presenceSeq = 0;
        const reqId = this.#session.start(now, { type: "watch", token: reply.token, on: 1 }, "udp");
        this.#background.set(reqId, "watch");
      }
    }
  }

  #pendingName: string | undefined;
  #relogin: { name: string; key: Uint8Array; at: number } | undefined;

  /** In open mode with a key: logs in again after `delayMs`; false if it cannot. */
  #scheduleRelogin(now: number, name: string | undefined, delayMs: number): boolean {
    if (this.#key === undefined || name === undefined || this.#auth !== "open") return false;
    this.#relogin = { name, key: this.#key, at: now + delayMs };
    return true;
  }

  #complete(now: number, running: Running, reply: Reply): void {
    const kind = running.command.kind;
    if (reply.type === "error") {
      return this.#fail(kind, reply.message, errorCodeName(reply.code));
    }
    if (reply.type !== EXPECTED_REPLY[kind]) {
      return this.#fail(
        kind,
        `The server answered ${kind} with an unexpected "${reply.type}"`,
        "unexpected_reply",
      );
    }
    switch (reply.type) {
      case "hello_ok":
        this.#serverTcpPort = reply.tcpPort;
        this.#serverVersion = reply.serverVersion;
        this.#auth = reply.auth === AUTH_MODES.password ? "password" : "open";
        this.#leaseMs = Math.max(1000, reply.leaseMs);
        return this.#result({
          ok: true,
          command: "hello",
          server: this.#options.server,
          serverTcpPort: reply.tcpPort,
          serverVersion: reply.serverVersion,
          auth: this.#auth,
          leaseMs: reply.leaseMs,
        });
      case "register_ok": {
        const name = running.name!;
        this.#key = reply.key;
        this.#outputs.push({ type: "identity", name, key: reply.key });
        this.#startSession(now, name, reply.token);
        return this.#result({ ok: true, command: "register", name });
      }
      case "login_ok": {
        const name = running.name!;
        if (this.#auth === "open" && running.command.kind === "login") {
          this.#key = running.command.secret;
        }
        this.#startSession(now, name, reply.token);
        return this.#result({ ok: true, command: "login", name, replaced: reply.replaced === 1 });
      }
      case "logout_ok": {
        const name = this.#loggedInAs;
        this.#clearSession();
        return this.#result({ ok: true, command: "logout", name: name ?? "" });
      }
      case "deregister_ok": {
        const name = this.#loggedInAs;
        this.#clearSession();
        this.#key = undefined;
        return this.#result({ ok: true, command: "deregister", name: name ?? "" });
      }
      case "text_ok":
        return this.#result({ ok: true, command: "tcp" });
      case "list_page": {
        const clients = [...(running.clients ?? []), ...reply.clients];
        if (reply.more === 1 && reply.clients.length > 0 && this.#token !== undefined) {
          const after = reply.clients[reply.clients.length - 1].name;
          const reqId = this.#session.start(
            now,
            { type: "list", token: this.#token, after },
            "udp",
          );
          this.#running = { ...running, reqId, clients };
          return;
        }
        return this.#result({ ok: true, command: "list", clients });
      }
      case "lookup_ok": {
        if (running.command.kind === "connect") return this.#connect(now, running, reply);
        const client = onlineClient(reply);
        return this.#result({ ok: true, command: "lookup", client });
      }
      case "watch_ok": {
        const on = running.command.kind === "watch" && running.command.on;
        this.#watching = on;
        return this.#result({ ok: true, command: "watch", watching: on });
      }
      case "file_list": {
        const files = reply.files.map((f) => ({
          name: f.name,
          size: f.size,
          sha256: toHex(f.sha256),
          uploadedAt: new Date(f.uploadedAt).toISOString(),
        }));
        return this.#result({
          ok: true,
          command: "files",
          files,
          usedBytes: reply.usedBytes,
          quotaBytes: reply.quotaBytes,
        });
      }
      case "delete_ok": {
        const name = running.command.kind === "delete" ? running.command.name : "";
        return this.#result({ ok: true, command: "delete", name });
      }
      case "upload_ok": {
        const name = running.command.kind === "upload" ? running.command.name : "";
        return this.#result({ ok: true, command: "upload", name, size: reply.size });
      }
      case "download_ok": {
        const name = running.command.kind === "download" ? running.command.name : "";
        return this.#result({
          ok: true,
          command: "download",
          name,
          size: reply.size,
          sha256: toHex(reply.sha256),
          reqId: running.reqId,
        });
      }
    }
  }

  /**
   * Handles a datagram from another client.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param message a peer message
   */
  handlePeer(now: number, from: PeerAddress, message: PeerMessage): void {
    const known = this.#peers.get(message.session);
    if (known !== undefined) {
      known.handle(now, from, message);
      // Most datagrams of a transfer produce only an ack: a `wait` can
      // change only when something else came out.
      if (this.#drainPeer(now, known)) this.#checkWaiting(now);
      return;
    }
    if (message.type !== "peer_connect") return;
    const reject = (reason: string): void => {
      this.#outputs.push({
        type: "peer_send",
        to: from,
        message: { type: "peer_reject", session: message.session, reason },
      });
    };
    if (this.#token === undefined || this.#loggedInAs === undefined) {
      return reject("the client you called is not logged in");
    }
    if (nameProblem(message.name) !== undefined) return reject("your name is not valid");
    const peer = new PeerSession(now, {
      id: message.session,
      ownName: this.#loggedInAs,
      peerName: message.name,
      address: from,
      outgoing: false,
      random: this.#random,
      retry: this.#retryPolicy(),
      channel: this.#options.peerChannel ?? PEER_CHANNEL_OPTIONS,
    });
    this.#addPeer(peer);
    // Nobody may pose as another client: ask the server where that name is.
    const reqId = this.#session.start(
      now,
      { type: "lookup", token: this.#token, name: message.name },
      "udp",
    );
    this.#background.set(reqId, { verify: peer.id });
    this.#drain(now);
  }

  #verified(now: number, id: string, reply: Reply | undefined): void {
    const peer = this.#peers.get(id);
    if (peer === undefined || peer.state !== "verifying") return;
    const address = peer.address;
    if (
      reply?.type === "lookup_ok" && reply.ip === address.ip && reply.udpPort === address.port
    ) {
      peer.verified(now);
      this.#event({ kind: "request", name: peer.peerName, ip: address.ip, udpPort: address.port });
      this.#checkWaiting(now);
      return;
    }
    peer.reject(`could not verify that you are "${peer.peerName}"`);
    this.#drainPeer(now, peer);
    this.#event({
      kind: "request_refused",
      name: peer.peerName,
      ip: address.ip,
      udpPort: address.port,
      ...(reply?.type === "lookup_ok"
        ? { registered: { name: reply.name, ip: reply.ip, udpPort: reply.udpPort } }
        : reply?.type === "error"
        ? { error: reply.message }
        : {}),
    });
  }

  #connect(now: number, running: Running, reply: MessageOf<"lookup_ok">): void {
    const existing = this.#peerByName(reply.name, ["connecting", "open", "closing"]);
    if (existing !== undefined) {
      const moved = existing.state !== "connecting" &&
        (existing.address.ip !== reply.ip || existing.address.port !== reply.udpPort);
      if (!moved) {
        return this.#fail(
          "connect",
          `Already in a session with "${existing.peerName}"`,
          "bad_command",
        );
      }
      // The peer is online at a new address: it restarted, and the old
      // session is dead (its transfers keep their partial files to resume).
      this.#replaceSession(now, existing);
    }
    const id = toHex(this.#random.bytes(8));
    const peer = new PeerSession(now, {
      id,
      ownName: this.#loggedInAs ?? this.#name ?? "",
      peerName: reply.name,
      address: { ip: reply.ip, port: reply.udpPort },
      outgoing: true,
      random: this.#random,
      retry: this.#retryPolicy(),
      channel: this.#options.peerChannel ?? PEER_CHANNEL_OPTIONS,
    });
    this.#addPeer(peer);
    this.#running = { ...running, reqId: -1, session: id };
    this.#drainPeer(now, peer);
  }

  #peerCommand(
    now: number,
    command: Extract<CoreCommand, { kind: "accept" | "reject" | "send" | "terminate" }>,
  ): void {
    const kind = command.kind;
    const name = kind === "send" ? command.to : command.name;
    if (kind === "accept" || kind === "reject") {
      const peer = this.#peerByName(name, ["pending"]);
      if (peer === undefined) {
        if (kind === "reject") {
          return this.#fail(kind, requestMissing(name), "no_request");
        }
        // Wait (bounded) for a request to come.
        this.#running = { command, reqId: -1, deadline: now + this.#retryPolicy().giveUpMs };
        return;
      }
      if (kind === "reject") {
        peer.reject(`${this.#loggedInAs ?? "the client"} declined`);
        this.#drainPeer(now, peer);
        return this.#result({ ok: true, command: "reject", name: peer.peerName });
      }
      return this.#acceptPeer(now, peer);
    }
    const open = this.#openPeers(name);
    if (open.length !== 1) {
      const names = open.map((p) => `"${p.peerName}"`).join(", ");
      return this.#fail(
        kind,
        open.length === 0
          ? name === undefined
            ? "No open session; use connect NAME"
            : `No open session with "${name}"`
          : `Sessions with ${names} are open; name one: ${kind} ${
            kind === "send" ? "@NAME TEXT" : "NAME"
          }`,
        "no_session",
      );
    }
    const peer = open[0];
    if (kind === "terminate") {
      this.#running = { command, reqId: -1, session: peer.id };
      peer.terminate(now, "terminate");
      this.#drainPeer(now, peer);
      return;
    }
    const size = new TextEncoder().encode(command.text).length;
    if (size >= MAX_MESSAGE_BYTES) {
      return this.#fail(
        kind,
        `The message is ${size} bytes; the limit is ${MAX_MESSAGE_BYTES - 1}`,
        "too_long",
      );
    }
    if (!command.text.isWellFormed()) {
      return this.#fail(kind, "The message is not valid Unicode text", "bad_request");
    }
    const index = peer.counts.sent;
    const messageId = peer.send(now, command.text);
    this.#running = { command, reqId: -1, session: peer.id, messageId, index };
    this.#outputs.push({
      type: "trace",
      trace: { step: "sent", session: peer.id, peer: peer.peerName, index, text: command.text },
    });
    this.#drainPeer(now, peer);
  }

  /**
   * Tells whether `sendfile` has one open session to use, before the
   * driver spends time hashing the file.
   *
   * @param to the peer's name, if given
   * @returns undefined, or why not, one sentence
   */
  sendFileProblem(to?: string): string | undefined {
    const open = this.#openPeers(to);
    if (open.length === 1) return undefined;
    if (open.length === 0) {
      return to === undefined
        ? "No open session; use connect NAME first"
        : `No open session with "${to}"`;
    }
    return `Sessions with ${
      open.map((p) => `"${p.peerName}"`).join(", ")
    } are open; name one: sendfile @NAME PATH`;
  }

  #fileCommand(
    now: number,
    command: Extract<
      CoreCommand,
      { kind: "sendfile" | "acceptfile" | "declinefile" | "cancel" | "transfers" }
    >,
  ): void {
    const kind = command.kind;
    if (kind === "transfers") {
      const list = this.#transfers.list();
      return this.#result({ ok: true, command: "transfers", transfers: list });
    }
    if (kind === "sendfile") {
      const problem = this.sendFileProblem(command.to);
      if (problem !== undefined) return this.#fail(kind, problem, "no_session");
      const peer = this.#openPeers(command.to)[0];
      const id = this.#transfers.offer(now, peer, command);
      this.#drainPeer(now, peer);
      return this.#result({
        ok: true,
        command: "sendfile",
        id,
        to: peer.peerName,
        name: command.name,
        size: command.size,
      });
    }
    const candidates = this.#transfers.list().filter((t) =>
      kind === "cancel"
        ? FILE_STATES_RUNNING.has(t.state)
        : t.direction === "receive" && t.state === "offered"
    );
    let id = command.id;
    if (id === undefined) {
      if (candidates.length !== 1) {
        return this.#fail(
          kind,
          candidates.length === 0
            ? kind === "cancel" ? "No transfer is running" : "No file is offered to you"
            : `Transfers ${
              candidates.map((t) => t.id).join(", ")
            } could be meant; say which: ${kind} ID`,
          "no_transfer",
        );
      }
      id = candidates[0].id;
    }
    const problem = kind === "acceptfile"
      ? this.#transfers.accept(now, id)
      : kind === "declinefile"
      ? this.#transfers.decline(now, id)
      : this.#transfers.cancel(now, id);
    this.#drainPeers(now);
    if (problem !== undefined) return this.#fail(kind, problem, "no_transfer");
    const t = this.#transfers.get(id)!;
    this.#result({ ok: true, command: kind, id, name: t.name, peer: t.peer } as const);
  }

  #acceptPeer(now: number, peer: PeerSession): void {
    this.#running = undefined;
    // A peer asks again only when it lost its session with us (it refuses
    // to connect twice): an older one is dead, though we may not know yet.
    for (const old of [...this.#peers.values()]) {
      if (
        old !== peer && old.state !== "closed" && old.state !== "pending" &&
        nameKey(old.peerName) === nameKey(peer.peerName)
      ) this.#replaceSession(now, old);
    }
    peer.accept(now);
    this.#drainPeer(now, peer);
    this.#result({ ok: true, command: "accept", name: peer.peerName, session: peer.id });
  }

  /** Ends a session its peer has replaced with a new one, at once. */
  #replaceSession(now: number, old: PeerSession): void {
    const reason = `"${old.peerName}" started a new session`;
    old.abort(reason);
    this.#drainPeer(now, old);
    this.#event({ kind: "peer_ended", name: old.peerName, by: "replaced", reason });
  }

  #peerList(): void {
    const live = [...this.#peers.values()].filter((p) => p.state !== "closed");
    this.#result({
      ok: true,
      command: "peers",
      peers: live.map((p) => ({
        name: p.peerName,
        state: p.state,
        ip: p.address.ip,
        udpPort: p.address.port,
        ...p.counts,
      })),
    });
  }

  /** @returns true if the session put out more than datagrams to send */
  #drainPeer(now: number, peer: PeerSession): boolean {
    let news = false;
    for (let out = peer.poll(); out !== undefined; out = peer.poll()) {
      if (out.type !== "send") news = true;
      this.#peerOutput(now, peer, out);
    }
    this.#drainTransfers(now);
    return news;
  }

  /** Drains every session (file transfers may have sent on any). */
  #drainPeers(now: number): void {
    for (const peer of this.#peers.values()) this.#drainPeer(now, peer);
    this.#drainTransfers(now);
  }

  #drainTransfers(now: number): void {
    let any = false;
    for (let out = this.#transfers.poll(); out !== undefined; out = this.#transfers.poll()) {
      any = true;
      if (out.type === "event") {
        this.#event(out.event);
      } else {
        this.#outputs.push({ type: "file", op: out });
      }
    }
    if (any) this.#checkWaiting(now);
  }

  #peerOutput(now: number, peer: PeerSession, out: PeerSessionOutput): void {
    const running = this.#running;
    const mine = running !== undefined && running.session === peer.id;
    switch (out.type) {
      case "send":
        this.#outputs.push({ type: "peer_send", to: out.to, message: out.message });
        return;
      case "opened":
        if (mine && running.command.kind === "connect") {
          this.#running = undefined;
          this.#result({ ok: true, command: "connect", name: peer.peerName, session: peer.id });
        }
        return;
      case "message": {
        const key = nameKey(peer.peerName);
        this.#messagesReceived.set(key, (this.#messagesReceived.get(key) ?? 0) + 1);
        this.#messagesReceived.set("", (this.#messagesReceived.get("") ?? 0) + 1);
        this.#outputs.push({
          type: "trace",
          trace: {
            step: "delivered",
            session: peer.id,
            peer: peer.peerName,
            index: out.index,
            text: out.text,
          },
        });
        this.#event({ kind: "message", from: peer.peerName, text: out.text, index: out.index });
        return this.#checkWaiting(now);
      }
      case "file":
        this.#transfers.handle(now, peer, out.payload);
        // Its events now, before any chat delivered after it in the same batch.
        this.#drainTransfers(now);
        return;
      case "acked":
        this.#transfers.acked(now, peer, out.id);
        if (mine && running.command.kind === "send" && running.messageId === out.id) {
          this.#running = undefined;
          this.#outputs.push({
            type: "trace",
            trace: {
              step: "acked",
              session: peer.id,
              peer: peer.peerName,
              index: running.index ?? 0,
              text: running.command.text,
            },
          });
          this.#result({ ok: true, command: "send", to: peer.peerName, index: running.index ?? 0 });
        }
        return;
      case "closed": {
        // What `wait terminate` waits for: an open session its peer ended, or that died.
        if (out.by === "peer" || out.by === "dead") this.#endedPeers.push(peer.peerName);
        this.#transfers.sessionEnded(peer, peerEndText(peer.peerName, out.by, out.reason));
        if (mine) {
          this.#running = undefined;
          const kind = running.command.kind;
          if (kind === "terminate") {
            // The session is over whichever way it ended.
            this.#result({
              ok: true,
              command: kind,
              name: peer.peerName,
              confirmed: out.by === "us",
              ...(out.by === "us" ? {} : { reason: out.reason }),
            });
          } else {
            this.#fail(
              kind,
              peerEndText(peer.peerName, out.by, out.reason),
              out.by === "rejected" ? "rejected" : out.by === "timeout" ? "timeout" : "peer_gone",
            );
          }
        }
        if (out.by === "peer" || out.by === "dead" || (out.by === "timeout" && !peer.outgoing)) {
          this.#event({ kind: "peer_ended", name: peer.peerName, by: out.by, reason: out.reason });
        }
        this.#pruneClosedPeers();
        return this.#checkWaiting(now);
      }
    }
  }

  /** Completes a waiting `accept` or `wait` when its condition holds or its time is up. */
  #checkWaiting(now: number): void {
    const running = this.#running;
    if (running === undefined || running.reqId !== -1 || running.deadline === undefined) return;
    const command = running.command;
    if (command.kind === "accept") {
      const peer = this.#peerByName(command.name, ["pending"]);
      if (peer !== undefined) return this.#acceptPeer(now, peer);
      if (now >= running.deadline) {
        this.#running = undefined;
        this.#fail(
          "accept",
          `${requestMissing(command.name)} within ${
            Math.round(this.#retryPolicy().giveUpMs / 1000)
          } s`,
          "timeout",
        );
      }
      return;
    }
    if (command.kind !== "wait") return;
    const done = this.#waitOutcome(command);
    if (done !== undefined) {
      this.#running = undefined;
      if (done.ok) {
        for (const t of done.transfers ?? []) this.#transfersReported.add(t.id);
        if (done.offer !== undefined) this.#offersReported.add(done.offer.id);
        if (done.ended !== undefined) this.#endedPeers.splice(done.ended, 1);
      }
      return this.#result(done.result);
    }
    if (now >= running.deadline) {
      this.#running = undefined;
      const seen = this.#waitProgress(command);
      this.#fail(
        "wait",
        `Waited ${
          Math.round((command.withinMs ?? this.#retryPolicy().giveUpMs) / 1000)
        } s in vain` + (seen ? ` (${seen})` : ""),
        "timeout",
      );
    }
  }

  /** The result of a `wait` whose condition holds, and what it reports, or undefined. */
  #waitOutcome(command: Extract<CoreCommand, { kind: "wait" }>):
    | {
      ok: boolean;
      result: CommandResult;
      transfers?: readonly TransferInfo[];
      offer?: TransferInfo;
      ended?: number;
    }
    | undefined {
    const key = command.name === undefined ? "" : nameKey(command.name);
    switch (command.for) {
      case "messages": {
        const count = this.#messagesReceived.get(key) ?? 0;
        if (count < (command.count ?? 1)) return undefined;
        const result = { ok: true, command: "wait", for: "messages", count } as const;
        return {
          ok: true,
          result: command.name === undefined ? result : { ...result, name: command.name },
        };
      }
      case "request": {
        const peer = this.#peerByName(command.name, ["pending"]);
        if (peer === undefined) return undefined;
        return {
          ok: true,
          result: { ok: true, command: "wait", for: "request", name: peer.peerName },
        };
      }
      case "terminate": {
        // Each end is reported once, so a script can accept and wait again.
        const at = this.#endedPeers.findIndex((n) => key === "" || nameKey(n) === key);
        if (at === -1) return undefined;
        const name = this.#endedPeers[at];
        return {
          ok: true,
          ended: at,
          result: { ok: true, command: "wait", for: "terminate", name },
        };
      }
      case "offer": {
        // Each offer is reported once, whatever happened to it since: with
        // --accept-files it is accepted (or even done) the moment it comes.
        const offer = this.#transfers.list().find((t) =>
          t.direction === "receive" && !this.#offersReported.has(t.id) &&
          (key === "" || nameKey(t.peer) === key)
        );
        if (offer === undefined) return undefined;
        return { ok: true, offer, result: { ok: true, command: "wait", for: "offer", offer } };
      }
      case "transfers": {
        const mine = this.#waitedTransfers(key);
        if (mine.some((t) => FILE_STATES_RUNNING.has(t.state))) return undefined;
        const failed = mine.filter((t) => t.state !== "done" && t.resumedBy === undefined);
        const result: CommandResult = failed.length > 0
          ? {
            ok: false,
            command: "wait",
            error: `${failed.length} of ${mine.length} transfers did not finish: ` +
              failed.map((t) => `${t.id} ${t.state}${t.reason ? ` (${t.reason})` : ""}`).join(
                "; ",
              ),
            code: "transfer_failed",
          }
          : { ok: true, command: "wait", for: "transfers", transfers: mine };
        // Reported either way: a later wait looks only at later transfers.
        return { ok: true, transfers: mine, result };
      }
    }
  }

  /** What a `wait` has seen so far, for its time-out error. */
  #waitProgress(command: Extract<CoreCommand, { kind: "wait" }>): string {
    const key = command.name === undefined ? "" : nameKey(command.name);
    if (command.for === "messages") {
      return messagesWaitedText(this.#messagesReceived.get(key) ?? 0, command.name);
    }
    if (command.for === "transfers") {
      const mine = this.#waitedTransfers(key);
      const running = mine.filter((t) => FILE_STATES_RUNNING.has(t.state));
      return `${running.length} of ${mine.length} transfers still running`;
    }
    return "";
  }

  #waitedTransfers(key: string): TransferInfo[] {
    return this.#transfers.list().filter((t) =>
      !this.#transfersReported.has(t.id) && (key === "" || nameKey(t.peer) === key)
    );
  }

  #peerByName(name: string | undefined, states: readonly string[]): PeerSession | undefined {
    for (const peer of this.#peers.values()) {
      if (!states.includes(peer.state)) continue;
      if (name === undefined || nameKey(peer.peerName) === nameKey(name)) return peer;
    }
    return undefined;
  }

  #openPeers(name: string | undefined): PeerSession[] {
    return [...this.#peers.values()].filter((p) =>
      p.state === "open" && (name === undefined || nameKey(p.peerName) === nameKey(name))
    );
  }

  #addPeer(peer: PeerSession): void {
    this.#peers.set(peer.id, peer);
  }

  #pruneClosedPeers(): void {
    const closed = [...this.#peers.values()].filter((p) => p.state === "closed");
    for (const peer of closed.slice(0, Math.max(0, closed.length - CLOSED_PEERS_KEPT))) {
      this.#peers.delete(peer.id);
    }
  }

  #retryPolicy(): RetryPolicy {
    return this.#options.retry ?? DEFAULT_RETRY_POLICY;
  }

  /** Every peer session, closed ones included (for status and the simulator). */
  get peers(): readonly PeerSession[] {
    return [...this.#peers.values()];
  }

  #startSession(now: number, name: string, token: Uint8Array): void {
    this.#relogin = undefined;
    this.#loggedInAs = name;
    this.#name = name;
    this.#token = token;
    this.#heartbeatAt = now + this.#heartbeatInterval();
  }

  #clearSession(): void {
    this.#relogin = undefined;
    if (this.#heartbeatReq !== undefined) {
      this.#session.cancel(this.#heartbeatReq);
      this.#background.delete(this.#heartbeatReq);
      this.#heartbeatReq = undefined;
    }
    this.#loggedInAs = undefined;
    this.#token = undefined;
    this.#heartbeatAt = undefined;
    this.#watching = false;
  }

  /** A third of the lease: two heartbeats can be lost before the lease runs out. */
  #heartbeatInterval(): number {
    return Math.max(200, Math.floor(this.#leaseMs / 3));
  }

  #presence(message: MessageOf<"presence">): void {
    if (this.#token === undefined || !sameBytes(message.token, this.#token)) return;
    const resync = message.change === PRESENCE_CHANGES.resync && message.seq > this.#presenceSeq;
    if (message.seq === this.#presenceSeq + 1 || resync) {
      this.#presenceSeq = message.seq;
      const client = onlineClient(message);
      if (message.change === PRESENCE_CHANGES.joined) {
        this.#event({ kind: "joined", client });
      } else if (message.change === PRESENCE_CHANGES.left) {
        this.#event({ kind: "left", client });
      } else {
        this.#event({ kind: "resync" });
      }
    }
    // Acknowledge what was shown (again for a copy, so the server stops resending).
    this.#outputs.push({
      type: "send",
      via: "udp",
      message: { type: "presence_ack", token: this.#token, seq: this.#presenceSeq },
      attempt: 1,
    });
  }

  #sessionEnded(now: number, message: MessageOf<"session_ended">): void {
    if (this.#token === undefined || !sameBytes(message.token, this.#token)) return;
    const name = this.#loggedInAs;
    const watching = this.#watching;
    this.#clearSession();
    if (message.reason === SESSION_END_REASONS.replaced) {
      this.#key = undefined;
    } else if (
      // Expired (a partition that healed) or the server stopped: log in
      // again, at once or after a heartbeat interval, while the key lasts.
      this.#scheduleRelogin(
        now,
        name,
        message.reason === SESSION_END_REASONS.expired ? 0 : this.#heartbeatInterval(),
      )
    ) {
      this.#watching = watching;
    }
    this.#event({
      kind: "session_ended",
      name,
      reason: (Object.entries(SESSION_END_REASONS).find(([, v]) => v === message.reason)?.[0] ??
        "unknown") as SessionEndReason,
      detail: message.message,
    });
  }

  #statusData(): ClientStatus {
    return {
      server: this.#options.server,
      serverVersion: this.#serverVersion ?? null,
      serverTcpPort: this.#serverTcpPort ?? null,
      auth: this.#auth ?? null,
      name: this.#name ?? null,
      loggedIn: this.#loggedInAs !== undefined,
      watching: this.#watching,
      udpPort: this.#options.udpPort,
      tcpPort: this.#options.tcpPort,
      via: this.#options.via,
    };
  }

  #fail(command: string, error: string, code: FailureCode): void {
    this.#result({ ok: false, command, error, code });
  }

  #result(result: CommandResult): void {
    this.#outputs.push({ type: "result", result });
  }

  #event(event: ClientEvent): void {
    this.#outputs.push({ type: "event", event });
  }
}

/** The reply that completes each command that asks the server. */
const EXPECTED_REPLY: Partial<Record<CoreCommand["kind"], Reply["type"]>> = {
  hello: "hello_ok",
  register: "register_ok",
  login: "login_ok",
  logout: "logout_ok",
  deregister: "deregister_ok",
  tcp: "text_ok",
  list: "list_page",
  lookup: "lookup_ok",
  connect: "lookup_ok",
  watch: "watch_ok",
  files: "file_list",
  delete: "delete_ok",
  upload: "upload_ok",
  download: "download_ok",
};

function onlineClient(m: OnlineClient): OnlineClient {
  return { name: m.name, ip: m.ip, udpPort: m.udpPort, tcpPort: m.tcpPort, onlineMs: m.onlineMs };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function requestMissing(name: string | undefined): string {
  return name === undefined ? "No connection request" : `No connection request from "${name}"`;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Transfer states that are not over. */
const FILE_STATES_RUNNING: ReadonlySet<string> = new Set([
  "offered",
  "preparing",
  "active",
  "verifying",
]);
