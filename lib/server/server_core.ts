/**
 * The server's protocol logic, sans-I/O: feed it decoded messages with their
 * source and the time, then `poll()` for messages to send, registry
 * snapshots to persist, file work and password checks for the driver to do,
 * and events to log. A reply that follows a registry change is held back
 * until the driver reports the snapshot durable (`persisted`).
 *
 * @module
 */
import { hostPort } from "../host_port.ts";
import { hmac } from "@noble/hashes/hmac";
import { sha256 } from "@noble/hashes/sha2";
import { lowerFirstWord } from "../error_line.ts";
import { toHex } from "../hex.ts";
import type { Random } from "../random.ts";
import { nameKey, nameProblem } from "../wire/client_name.ts";
import { encodeMessage } from "../wire/codec.ts";
import { ERROR_CODES, type ErrorCodeName } from "../wire/error_code.ts";
import {
  AUTH_MODES,
  isRequest,
  MAX_DATAGRAM_BYTES,
  MAX_FRAME_BYTES,
  type Message,
  type MessageOf,
  PRESENCE_CHANGES,
  type Reply,
  type Request,
  SESSION_END_REASONS,
  TOKEN_BYTES,
} from "../wire/messages.ts";
import { Admission, type ServerLimits } from "./admission.ts";
import { CommitLog } from "./commit_log.ts";
import { connectionLimitText, type ConnectionSample } from "./connection_limits.ts";
import { LoginLimiter } from "./login_limiter.ts";
import { PresenceFeed, type PresenceSend } from "./presence_feed.ts";
import { addressKey } from "./rate_limiter.ts";
import { Registry, type RegistryRecord } from "./registry.ts";
import { DEFAULT_REPLAY_TTL_MS, ReplayCache, type ReplayCacheOptions } from "./replay_cache.ts";
import { ReplySizing } from "./reply_sizing.ts";
import type { Endpoint, ServerEvent, ServerOutput } from "./server_event.ts";
import { ServerStorage, type UploadResult } from "./server_storage.ts";
import { type Session, SessionTable } from "./session_table.ts";
import { DEFAULT_STORAGE_LIMITS, type StorageLimits, type StoredFile } from "./stored_files.ts";

export type { Endpoint, ServerEvent, ServerOutput } from "./server_event.ts";
export type { ServerLimits } from "./admission.ts";

/** How logins are checked. */
export type AuthMode = keyof typeof AUTH_MODES;

/** One account of password mode. */
export interface PasswordUser {
  /** The name (display form). */
  readonly name: string;
  /** The encoded password hash (`lib/server/password_hash.ts`). */
  readonly passwordHash: string;
}

/** Counters for the operator. */
export interface ServerStats {
  /** Requests handled, replays included. */
  requests: number;
  /** Requests answered from the replay cache. */
  replays: number;
  /** Requests refused with an error reply. */
  refused: number;
  /**
   * Refusals for want of a live session or a right secret: `not_logged_in`,
   * `session_replaced`, `login_failed`, `locked_out`.
   */
  authFailures: number;
  /** `presence` messages sent again because the watcher had not acknowledged them. */
  presenceResent: number;
  /** UDP error replies whose message was shortened so as not to outgrow their request. */
  shortenedReplies: number;
  /**
   * UDP requests refused (`bad_request`) because their reply would not fit in
   * them: a `hello`, `register` or `login` that arrived smaller than
   * `MIN_PADDED_REQUEST_BYTES` (refused before it runs, so it
   * changes nothing), or, as a safety net, any request whose reply other
   * than an `error` would have outgrown it.
   */
  undersizedRequests: number;
  /** UDP datagrams dropped by the per-address rate limits. */
  rateLimited: number;
  /** TCP connections refused by the connection limits. */
  tcpRefused: number;
  /** TCP connections closed for being idle or too slow. */
  tcpTimedOut: number;
}

/** Options of a {@linkcode ServerCore}. */
export interface ServerCoreOptions {
  /** The registry loaded at start. */
  registry: Registry;
  /** Source of session tokens, and of the key secret when none is given. */
  random: Random;
  /**
   * The server's secret key (32 bytes) from which identity keys are derived.
   * Pass the persisted one so that a register executed just before a crash
   * and retransmitted after the restart gets its original key back.
   */
  secret?: Uint8Array;
  /** The server's TCP port, told to clients in `hello_ok`. */
  tcpPort: number;
  /** The server's version string. */
  version: string;
  /** Replay cache limits. */
  replay?: ReplayCacheOptions;
  /** `open` (register creates an identity) or `password` (accounts from a users file). */
  auth?: AuthMode;
  /** Password mode's accounts, by name key. */
  users?: ReadonlyMap<string, PasswordUser>;
  /** A valid hash of no real password, checked for unknown names so they take as long. */
  dummyPasswordHash?: string;
  /** How long a session lives without a heartbeat, ms (default 30 s). */
  leaseMs?: number;
  /** Failed logins that block a name (default 3). */
  maxAttempts?: number;
  /** How long a blocked name stays blocked, ms (default 10 s). */
  lockoutMs?: number;
  /** Limits on stored files. */
  storage?: StorageLimits;
  /** Files stored at start: user name and files. */
  storedFiles?: Iterable<readonly [string, readonly StoredFile[]]>;
  /** Rate and connection limits (`lib/server/admission.ts`). */
  limits?: ServerLimits;
}

/** Default session lease, ms. */
export const DEFAULT_LEASE_MS = 30_000;

/** A reply to a change, held in the commit log until the change is durable. */
interface HeldReply {
  to: Endpoint;
  /** The type of the request it answers. */
  request: string;
  /** The most bytes the reply may take (see `ReplySizing.limit`). */
  limit: number;
  client: string;
  reqId: number;
  fingerprint: string;
  reply: Reply;
  event: ServerEvent;
  undo: () => void;
  done?: (now: number) => void;
  failure: Reply;
}

interface PendingRequest {
  from: Endpoint;
  request: Request;
}

interface PendingLogin extends PendingRequest {
  request: MessageOf<"login">;
  /** When the attempt arrived: a failure counts from then. */
  at: number;
  /** The account's name if it exists. */
  known: string | undefined;
}

/** How many ended sessions are remembered, to tell their clients why. */
const ENDED_SESSIONS_KEPT = 10_000;

/** Why a session ended, and where its client was, for its client's next request. */
interface EndedSession {
  code: ErrorCodeName;
  message: string;
  ip: string;
  udpPort: number;
}

/** Refusals that count as authentication failures. */
const AUTH_FAILURES: ReadonlySet<ErrorCodeName> = new Set([
  "not_logged_in",
  "session_replaced",
  "login_failed",
  "locked_out",
]);

/** Request types that change nothing and so skip the replay cache. */
const READ_ONLY = new Set(["hello", "heartbeat", "list", "lookup", "files", "download"]);

/**
 * The server core.
 *
 * @example
 * ```ts
 * const core = new ServerCore({ registry: new Registry(), random: cryptoRandom,
 *   tcpPort: 3001, version: "0.2.0" });
 * const message = decodeMessage(datagram);
 * core.handle(now, { transport: "udp", address: "127.0.0.1", port: 5000 }, message,
 *   datagram.length);
 * for (let out = core.poll(); out; out = core.poll()) {
 *   // send, persist (then core.persisted(version)), log, or do file work
 * }
 * // and call core.onTimeout(now) at core.nextTimeout()
 * ```
 */
export class ServerCore {
  #registry: Registry;
  #random: Random;
  #secret: Uint8Array;
  #tcpPort: number;
  #serverVersion: string;
  #auth: AuthMode;
  #users: ReadonlyMap<string, PasswordUser>;
  #dummyHash: string;
  #replay: ReplayCache;
  #replayTtlMs: number;
  #sessions: SessionTable;
  #feed = new PresenceFeed();
  #limiter: LoginLimiter;
  #admission: Admission;
  #sizing: ReplySizing;
  #commits = new CommitLog<HeldReply>();
  #storage: ServerStorage;
  #ended = new Map<string, EndedSession>();
  #outputs: ServerOutput[] = [];
  #logins = new Map<number, PendingLogin>();
  #nextId = 1;
  #stats: ServerStats = {
    requests: 0,
    replays: 0,
    refused: 0,
    authFailures: 0,
    presenceResent: 0,
    shortenedReplies: 0,
    undersizedRequests: 0,
    rateLimited: 0,
    tcpRefused: 0,
    tcpTimedOut: 0,
  };

  /** @param options the registry, randomness and server facts */
  constructor(options: ServerCoreOptions) {
    this.#registry = options.registry;
    this.#random = options.random;
    this.#secret = options.secret ?? options.random.bytes(32);
    this.#tcpPort = options.tcpPort;
    this.#serverVersion = options.version;
    this.#auth = options.auth ?? "open";
    this.#users = options.users ?? new Map();
    this.#dummyHash = options.dummyPasswordHash ?? "";
    this.#replay = new ReplayCache(options.replay);
    this.#replayTtlMs = options.replay?.ttlMs ?? DEFAULT_REPLAY_TTL_MS;
    this.#sessions = new SessionTable(options.leaseMs ?? DEFAULT_LEASE_MS);
    this.#limiter = new LoginLimiter({
      maxAttempts: options.maxAttempts ?? 3,
      lockoutMs: options.lockoutMs ?? 10_000,
    });
    this.#admission = new Admission(options.limits);
    this.#sizing = new ReplySizing((token, to) => this.#proves(token, to));
    this.#storage = new ServerStorage({
      refuse: (from, request, code, reason) => this.#refuse(from, request, code, reason),
      answer: (from, request, reply) => this.#answer(from, request, reply),
      settle: (request, code, reason) =>
        this.#replay.complete(
          request.client,
          request.reqId,
          errorReply(request.reqId, code, reason),
        ),
      emit: (event) => this.#emit(event),
      output: (output) => this.#outputs.push(output),
    }, { limits: options.storage ?? DEFAULT_STORAGE_LIMITS, stored: options.storedFiles });
  }

  /** The live registry (read it; change it only through requests). */
  get registry(): Registry {
    return this.#registry;
  }

  /** The active sessions (read only). */
  get sessions(): SessionTable {
    return this.#sessions;
  }

  /** Counters since start. */
  get stats(): Readonly<ServerStats> {
    return this.#stats;
  }

  /** How many sessions watch presence news. */
  get watchers(): number {
    return this.#feed.size;
  }

  /**
   * Tells whether a message carries the token of a live session: the line
   * between the loose and the strict rate limits, and between replies of any
   * size and replies no larger than their request.
   *
   * @param message a decoded message
   * @returns true if its `token` field belongs to a live session
   */
  hasLiveSession(message: Message): boolean {
    if (!("token" in message)) return false;
    const token = (message as { token: unknown }).token;
    return token instanceof Uint8Array && this.#sessions.byToken(token) !== undefined;
  }

  /** True while a registry snapshot is being written or waits to be. */
  get hasUnsavedChanges(): boolean {
    return this.#commits.hasUnsavedChanges;
  }

  /**
   * Replaces password mode's accounts (the driver re-reads the users file
   * when it changes). Sessions already open stay open.
   *
   * @param users the accounts by name key
   */
  setUsers(users: ReadonlyMap<string, PasswordUser>): void {
    this.#users = users;
  }

  /**
   * Handles one decoded message.
   *
   * @param now current time, ms since the epoch
   * @param from where it came from
   * @param message the decoded message
   * @param receivedBytes the size of the datagram (or frame body) it was
   *   decoded from: over UDP, no reply to a request without a live session
   *   token is larger than this
   */
  handle(now: number, from: Endpoint, message: Message, receivedBytes: number): void {
    if (message.type === "presence_ack") {
      const session = this.#sessions.byToken(message.token);
      if (session !== undefined) this.#feed.ack(session.token, message.seq);
      return;
    }
    if (message.type === "file_chunk") return this.#storage.chunk(from, message);
    if (!isRequest(message)) {
      this.#emit({ kind: "unexpected", from, type: message.type });
      return;
    }
    this.#stats.requests++;
    this.#sizing.received(message, receivedBytes);
    const undersized = this.#sizing.undersized(from, message, receivedBytes);
    if (undersized !== undefined) {
      // Its reply might not fit in it: refuse it before it runs, so that
      // nothing changes (not even the replay cache) for a reply never sent.
      this.#stats.undersizedRequests++;
      return this.#refuseUncached(from, message.type, message.reqId, undersized, receivedBytes);
    }
    if (READ_ONLY.has(message.type)) return this.#execute(now, from, message, "");
    const fingerprint = toHex(sha256(encodeMessage(message)).subarray(0, 16));
    const origin = addressKey(from.address);
    const seen = this.#replay.check(now, message.client, message.reqId, fingerprint, origin);
    if (seen.state === "pending") return;
    if (seen.state === "elsewhere") {
      return this.#refuseUncached(
        from,
        message.type,
        message.reqId,
        `Request ${message.reqId} of this client came from another address; ` +
          "it is answered there only",
        this.#sizing.limit(from, message),
      );
    }
    if (seen.state === "done") {
      this.#stats.replays++;
      if (
        (seen.reply.type === "register_ok" || seen.reply.type === "login_ok") &&
        (message.type === "register" || message.type === "login")
      ) {
        this.#resumeSession(now, from, message, seen.reply.token);
      }
      this.#send(from, message.type, seen.reply, this.#sizing.limit(from, message));
      this.#emit({ kind: "replayed", from, request: message.type, reqId: message.reqId });
      return;
    }
    this.#replay.begin(now, message.client, message.reqId, fingerprint, origin);
    this.#execute(now, from, message, fingerprint);
  }

  /**
   * Takes the next output.
   *
   * @returns the next thing to do, or undefined when there is none
   */
  poll(): ServerOutput | undefined {
    return this.#outputs.shift();
  }

  /** @returns when `onTimeout` should next be called, or undefined */
  nextTimeout(): number | undefined {
    const times = [this.#sessions.nextExpiry(), this.#feed.nextResend()]
      .filter((t): t is number => t !== undefined);
    return times.length === 0 ? undefined : Math.min(...times);
  }

  /**
   * Ends sessions whose lease ran out and resends unacknowledged presence
   * news.
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    const expired = this.#sessions.expire(now);
    for (const session of expired) {
      this.#endSession(now, session, "lease", {
        reason: SESSION_END_REASONS.expired,
        message: `Your session as "${session.name}" expired: no heartbeat for ` +
          `${Math.round(this.#sessions.leaseMs / 1000)} s`,
      });
    }
    if (expired.length > 0) this.#emitActive();
    const resent = this.#feed.resend(now);
    for (const send of resent) this.#stats.presenceResent += send.news.length;
    this.#sendPresence(resent);
  }

  /** Ends every session for a shutdown, telling each client. */
  shutdown(): void {
    const sessions = [...this.#sessions.all()];
    for (const session of sessions) {
      this.#sessions.close(session);
      this.#feed.unwatch(session.token);
      this.#push(session, SESSION_END_REASONS.server_shutdown, "The server is shutting down");
    }
    if (sessions.length > 0) this.#emitActive();
  }

  /**
   * Reports that the snapshot of `version` is durable: the replies it held
   * go out.
   *
   * @param version the version from the `persist` output
   * @param now current time, ms
   */
  persisted(version: number, now: number): void {
    for (const h of this.#commits.persisted(version)) {
      this.#replay.complete(h.client, h.reqId, h.reply);
      this.#send(h.to, h.request, h.reply, h.limit);
      this.#emit(h.event);
      h.done?.(now);
    }
    this.#requestPersist();
  }

  /**
   * Reports that writing the snapshot of `version` failed: every change not
   * yet durable (this snapshot's and any made since, which were built on it)
   * is undone, newest first, and its request answered with an error, so that
   * memory matches the disk again.
   *
   * @param version the version from the `persist` output
   * @param reason why, for the log
   */
  persistFailed(version: number, reason: string): void {
    this.#emit({ kind: "save_failed", reason });
    for (const h of this.#commits.failed(version)) {
      h.undo();
      this.#replay.complete(h.client, h.reqId, h.failure);
      this.#send(h.to, h.request, h.failure, h.limit);
    }
  }

  /**
   * Reports the result of a `verify_password` output.
   *
   * @param now current time, ms
   * @param id the output's id
   * @param ok true if the password matched the hash
   */
  passwordChecked(now: number, id: number, ok: boolean): void {
    const pending = this.#logins.get(id);
    if (pending === undefined) return;
    this.#logins.delete(id);
    this.#loginChecked(now, pending, ok && pending.known !== undefined);
  }

  /**
   * Reports the end of an upload after `upload_commit`: stored, or why not.
   *
   * @param id the upload's id
   * @param result the stored file, or the failure
   */
  uploadDone(id: number, result: UploadResult): void {
    this.#storage.uploadDone(id, result);
  }

  /**
   * Reports that a `delete_file` output was carried out (or failed).
   *
   * @param id the output's id
   * @param error why it failed, or undefined
   */
  fileDeleted(id: number, error?: string): void {
    this.#storage.fileDeleted(id, error);
  }

  /**
   * Takes one UDP datagram (decoded or not) against the rate limits: the
   * loose one if it carries a live session token, else the strict one
   * (garbage included). Call it before `handle`; drop the datagram if it
   * says no.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param message the decoded message, or undefined for garbage
   * @returns true if it may be handled
   */
  admit(now: number, from: Endpoint, message: Message | undefined): boolean {
    const session = message !== undefined && this.hasLiveSession(message);
    const verdict = this.#admission.datagram(now, from.address, session);
    if (verdict.admitted) return true;
    this.#stats.rateLimited++;
    if (verdict.report !== undefined) {
      this.#emit({ kind: "rate_limited", address: from.address, ...verdict.report });
    }
    return false;
  }

  /**
   * Reports a new TCP connection, and admits it or not: a refused one is
   * told why (a `send` to it), then closed (a `close` output).
   *
   * @param now current time, ms
   * @param from the connection's endpoint, with its `connId`
   * @returns true if it may be served
   */
  connectionOpened(now: number, from: Endpoint): boolean {
    const connId = from.connId ?? 0;
    const refused = this.#admission.openConnection(now, connId, from.address);
    if (refused === undefined) return true;
    this.#stats.tcpRefused++;
    if (refused.report !== undefined) {
      this.#emit({
        kind: "connection_refused",
        address: from.address,
        refused: refused.report.refused,
        hit: refused.hit,
      });
    }
    this.#closeConnection(from, connectionLimitText(refused.hit, from.address));
    return false;
  }

  /**
   * Reports what an open TCP connection did so far; one that overstayed is
   * told why (unless it takes nothing of what it is sent) and closed.
   *
   * @param now current time, ms
   * @param from the connection's endpoint, with its `connId`
   * @param sample its counters now (whether the core is busy with it is the core's to say)
   */
  checkConnection(now: number, from: Endpoint, sample: Omit<ConnectionSample, "busy">): void {
    const connId = from.connId ?? 0;
    const busy = this.#storage.busy(connId);
    const verdict = this.#admission.checkConnection(now, connId, { ...sample, busy });
    if (verdict.action === "keep") return;
    if (verdict.hit !== undefined) {
      this.#stats.tcpTimedOut++;
      this.#emit({
        kind: "connection_closed",
        connId,
        address: from.address,
        port: from.port,
        hit: verdict.hit,
      });
    }
    const reason = verdict.tell && verdict.hit !== undefined
      ? connectionLimitText(verdict.hit, from.address)
      : undefined;
    this.#closeConnection(from, reason);
  }

  /** The connection limits' idle and frame times, ms, for how often to check connections. */
  get connectionTimes(): { idleMs: number; frameMs: number } {
    return { idleMs: this.#admission.idleMs, frameMs: this.#admission.frameMs };
  }

  /**
   * Reports that a TCP connection closed: uploads on it are abandoned.
   *
   * @param connId the driver's id of the connection
   */
  connectionClosed(connId: number): void {
    this.#admission.closeConnection(connId);
    this.#storage.connectionClosed(connId);
  }

  /** Tells a TCP connection why it is being closed (if `reason`), then closes it. */
  #closeConnection(to: Endpoint, reason: string | undefined): void {
    if (reason !== undefined) {
      this.#outputs.push({
        type: "send",
        to,
        message: errorReply(0, "bad_request", `Closing the connection: ${reason}`),
      });
    }
    this.#outputs.push({ type: "close", connId: to.connId ?? 0 });
  }

  #execute(now: number, from: Endpoint, request: Request, fingerprint: string): void {
    switch (request.type) {
      case "hello":
        return this.#answer(from, request, {
          type: "hello_ok",
          reqId: request.reqId,
          tcpPort: this.#tcpPort,
          serverVersion: this.#serverVersion,
          auth: AUTH_MODES[this.#auth],
          leaseMs: this.#sessions.leaseMs,
        });
      case "register":
        return this.#register(now, from, request, fingerprint);
      case "deregister":
        return this.#deregister(from, request, fingerprint);
      case "text":
        return this.#text(from, request);
      case "login":
        return this.#login(now, from, request);
      case "logout":
        return this.#logout(now, from, request);
      case "heartbeat":
        return this.#heartbeat(now, from, request);
      case "list":
        return this.#list(now, from, request);
      case "lookup":
        return this.#lookup(now, from, request);
      case "watch":
        return this.#watch(from, request);
      case "upload":
      case "download":
      case "delete":
      case "files":
        return this.#storageRequest(from, request);
    }
  }

  #register(
    now: number,
    from: Endpoint,
    request: MessageOf<"register">,
    fingerprint: string,
  ): void {
    const name = request.name;
    if (this.#auth === "password") {
      return this.#refuse(
        from,
        request,
        "not_allowed",
        "This server uses password accounts; ask its operator to add you " +
          "(server.ts user add NAME), then log in",
      );
    }
    const problem = nameProblem(name);
    if (problem !== undefined) {
      return this.#refuse(
        from,
        request,
        "invalid_name",
        `Cannot register: ${lowerFirstWord(problem)}`,
      );
    }
    const udpPort = from.transport === "udp" ? from.port : request.udpPort;
    if (udpPort === 0) {
      return this.#refuse(from, request, "bad_request", `Cannot register "${name}": UDP port 0`);
    }
    if (request.tcpPort < 1024) {
      return this.#refuse(
        from,
        request,
        "bad_request",
        `Cannot register "${name}": TCP port ${request.tcpPort} is not in 1024..65535`,
      );
    }
    const key = this.#identityKey(fingerprint);
    const existing = this.#registry.get(name);
    if (
      existing !== undefined && existing.registeredBy === fingerprint &&
      now - Date.parse(existing.registeredAt) <= this.#replayTtlMs &&
      addressKey(existing.ip) === addressKey(from.address)
    ) {
      // This very request was executed just before a crash that lost the
      // replay cache: answer it again, within the replay window only, and
      // only once it is durable.
      if (this.#commits.holds((h) => h.fingerprint === fingerprint)) return;
      const token = this.#startSession(now, from, existing.name, udpPort, request.tcpPort);
      return this.#answer(from, request, { type: "register_ok", reqId: request.reqId, key, token });
    }
    if (existing !== undefined) {
      return this.#refuse(
        from,
        request,
        "name_taken",
        `Cannot register "${name}": name is taken`,
      );
    }
    const record: RegistryRecord = {
      name,
      ip: from.address,
      udpPort,
      tcpPort: request.tcpPort,
      registeredAt: new Date(now).toISOString(),
      keySha256: toHex(sha256(key)),
      registeredBy: fingerprint,
    };
    this.#registry.add(record);
    const token = this.#random.bytes(TOKEN_BYTES);
    this.#hold(from, request, fingerprint, {
      reply: { type: "register_ok", reqId: request.reqId, key, token },
      event: {
        kind: "registered",
        name,
        reqId: request.reqId,
        fingerprint,
        ip: record.ip,
        udpPort,
        tcpPort: record.tcpPort,
        transport: from.transport,
      },
      undo: () => this.#registry.remove(name),
      done: (at) => this.#startSession(at, from, name, udpPort, request.tcpPort, token),
      failureText: `Cannot register "${name}": the server could not save its registry`,
    });
  }

  #deregister(from: Endpoint, request: MessageOf<"deregister">, fingerprint: string): void {
    const session = this.#session(from, request);
    if (session === undefined) return;
    if (this.#auth === "password") {
      return this.#refuse(
        from,
        request,
        "not_allowed",
        "This server uses password accounts; only its operator can remove them " +
          "(server.ts user remove NAME)",
      );
    }
    const record = this.#registry.get(session.name);
    if (record === undefined) {
      return this.#refuse(
        from,
        request,
        "not_registered",
        `Cannot deregister "${session.name}": not registered`,
      );
    }
    this.#registry.remove(record.name);
    this.#hold(from, request, fingerprint, {
      reply: { type: "deregister_ok", reqId: request.reqId },
      event: {
        kind: "deregistered",
        name: record.name,
        reqId: request.reqId,
        fingerprint,
        transport: from.transport,
      },
      undo: () => this.#registry.add(record),
      done: (at) => {
        if (this.#sessions.byToken(session.token) === session) {
          this.#sessions.close(session);
          this.#endSession(at, session, "deregister");
          this.#emitActive();
        }
        this.#storage.removeUser(record.name);
      },
      failureText: `Cannot deregister "${record.name}": the server could not save its registry`,
    });
  }

  #text(from: Endpoint, request: MessageOf<"text">): void {
    const session = this.#sessions.byToken(request.token);
    const verified = session !== undefined &&
      (request.name === "" || nameKey(request.name) === nameKey(session.name));
    this.#emit({
      kind: "text",
      from,
      reqId: request.reqId,
      name: verified ? session.name : request.name,
      verified,
      text: request.text,
    });
    this.#answer(from, request, { type: "text_ok", reqId: request.reqId });
  }

  #login(now: number, from: Endpoint, request: MessageOf<"login">): void {
    const key = nameKey(request.name);
    const block = this.#limiter.check(now, key);
    if (block.blocked) {
      return this.#refuse(
        from,
        request,
        "locked_out",
        `Too many failed logins for "${request.name}"; try again in ${
          seconds(block.retryAfterMs)
        } s`,
      );
    }
    if (this.#auth === "open") {
      const record = this.#registry.get(request.name);
      const ok = record !== undefined && record.keySha256 !== "" &&
        request.secret.length === TOKEN_BYTES &&
        sameText(toHex(sha256(request.secret)), record.keySha256) &&
        !this.#commits.holds((h) => h.event.kind === "registered" && h.event.name === record.name);
      return this.#loginChecked(now, { from, request, known: record?.name, at: now }, ok);
    }
    if ([...this.#logins.values()].some((p) => nameKey(p.request.name) === key)) {
      // One password check per name at a time, so that guesses sent
      // together cannot outrun the lockout.
      return this.#refuse(
        from,
        request,
        "busy",
        `A login for "${request.name}" is already being checked; try again in a moment`,
      );
    }
    const user = this.#users.get(key);
    let password: string;
    try {
      password = new TextDecoder("utf-8", { fatal: true }).decode(request.secret);
    } catch {
      password = "";
    }
    const id = this.#nextId++;
    this.#logins.set(id, { from, request, known: user?.name, at: now });
    this.#outputs.push({
      type: "verify_password",
      id,
      hash: user?.passwordHash ?? this.#dummyHash,
      password,
    });
  }

  #loginChecked(now: number, pending: PendingLogin, ok: boolean): void {
    const { from, request } = pending;
    const key = nameKey(request.name);
    if (!ok || pending.known === undefined) {
      const after = this.#limiter.failed(pending.at, key);
      const what = this.#auth === "open" ? "identity key" : "password";
      const tail = after.blocked
        ? `; "${request.name}" is now blocked for ${seconds(after.retryAfterMs ?? 0)} s`
        : `; ${after.attemptsLeft} ${after.attemptsLeft === 1 ? "attempt" : "attempts"} left`;
      return this.#refuse(
        from,
        request,
        after.blocked ? "locked_out" : "login_failed",
        `Login failed: wrong name or ${what}${tail}`,
      );
    }
    this.#limiter.succeeded(key);
    const udpPort = from.transport === "udp" ? from.port : request.udpPort;
    const portProblem = udpPort === 0
      ? "UDP port 0"
      : request.tcpPort < 1024
      ? `TCP port ${request.tcpPort} is not in 1024..65535`
      : undefined;
    if (portProblem !== undefined) {
      return this.#refuse(from, request, "bad_request", `Cannot log in: ${portProblem}`);
    }
    const replaced = this.#sessions.byName(pending.known) !== undefined;
    const token = this.#startSession(now, from, pending.known, udpPort, request.tcpPort);
    this.#answer(from, request, {
      type: "login_ok",
      reqId: request.reqId,
      token,
      replaced: replaced ? 1 : 0,
    });
  }

  #logout(now: number, from: Endpoint, request: MessageOf<"logout">): void {
    const session = this.#session(from, request);
    if (session === undefined) return;
    this.#sessions.close(session);
    this.#endSession(now, session, "exit");
    this.#emitActive();
    this.#answer(from, request, { type: "logout_ok", reqId: request.reqId });
  }

  #heartbeat(now: number, from: Endpoint, request: MessageOf<"heartbeat">): void {
    const session = this.#session(from, request);
    if (session === undefined) return;
    this.#sessions.renew(now, session);
    this.#answer(from, request, { type: "heartbeat_ok", reqId: request.reqId });
  }

  #list(now: number, from: Endpoint, request: MessageOf<"list">): void {
    if (this.#session(from, request) === undefined) return;
    const limit = from.transport === "udp" ? MAX_DATAGRAM_BYTES : MAX_FRAME_BYTES;
    const after = request.after === "" ? "" : nameKey(request.after);
    const remaining = this.#sessions.list(after);
    const clients: ReturnType<typeof onlineClient>[] = [];
    // Room for the header, reqId, total, more and count, then the items.
    let size = 4 + 4 + 4 + 1 + 2;
    for (const session of remaining) {
      const item = onlineClient(now, session);
      const itemSize = 2 * 3 + byteLength(item.name) + byteLength(item.ip) + 4 + 8;
      if (size + itemSize > limit || clients.length === 255) break;
      clients.push(item);
      size += itemSize;
    }
    this.#answer(from, request, {
      type: "list_page",
      reqId: request.reqId,
      total: this.#sessions.size,
      more: clients.length < remaining.length ? 1 : 0,
      clients,
    });
  }

  #lookup(now: number, from: Endpoint, request: MessageOf<"lookup">): void {
    if (this.#session(from, request) === undefined) return;
    const target = this.#sessions.byName(request.name);
    if (target === undefined) {
      return this.#refuse(from, request, "not_online", `"${request.name}" is not online`);
    }
    this.#answer(from, request, {
      type: "lookup_ok",
      reqId: request.reqId,
      ...onlineClient(now, target),
    });
  }

  #watch(from: Endpoint, request: MessageOf<"watch">): void {
    const session = this.#session(from, request);
    if (session === undefined) return;
    session.watching = request.on !== 0;
    if (session.watching) this.#feed.watch(session.token, session.ip, session.udpPort);
    else this.#feed.unwatch(session.token);
    this.#answer(from, request, { type: "watch_ok", reqId: request.reqId });
  }

  #storageRequest(from: Endpoint, request: MessageOf<"upload" | "download" | "delete" | "files">) {
    const session = this.#session(from, request);
    if (session === undefined) return;
    switch (request.type) {
      case "upload":
        return this.#storage.upload(from, request, session.name);
      case "download":
        return this.#storage.download(from, request, session.name);
      case "delete":
        return this.#storage.delete(from, request, session.name);
      case "files":
        return this.#storage.list(from, request, session.name);
    }
  }

  /** Finds the session of a request's token, or refuses the request. */
  #session(
    from: Endpoint,
    request: Request & { readonly token: Uint8Array },
  ): Session | undefined {
    const session = this.#sessions.byToken(request.token);
    if (session !== undefined) return session;
    const ended = this.#ended.get(toHex(request.token));
    this.#refuse(
      from,
      request,
      ended?.code ?? "not_logged_in",
      ended?.message ?? "Not logged in (or the server restarted); log in again",
    );
    return undefined;
  }

  /**
   * The client had not heard its `register_ok` or `login_ok` until now: its
   * session's lease starts now, and a session that expired meanwhile (and
   * was not replaced) opens again with the same token.
   */
  #resumeSession(
    now: number,
    from: Endpoint,
    request: MessageOf<"register" | "login">,
    token: Uint8Array,
  ): void {
    const session = this.#sessions.byToken(token);
    if (session !== undefined) return this.#sessions.renew(now, session);
    const ended = this.#ended.get(toHex(token));
    const name = this.#registry.get(request.name)?.name ??
      this.#users.get(nameKey(request.name))?.name;
    if (ended?.code !== "not_logged_in" || name === undefined) return;
    if (this.#sessions.byName(name) !== undefined) return;
    this.#ended.delete(toHex(token));
    const udpPort = from.transport === "udp" ? from.port : request.udpPort;
    this.#startSession(now, from, name, udpPort, request.tcpPort, token);
  }

  #startSession(
    now: number,
    from: Endpoint,
    name: string,
    udpPort: number,
    tcpPort: number,
    token = this.#random.bytes(TOKEN_BYTES),
  ): Uint8Array {
    const { session, replaced } = this.#sessions.open(now, {
      name,
      token,
      ip: from.address,
      udpPort,
      tcpPort,
    });
    if (replaced !== undefined) {
      this.#feed.unwatch(replaced.token);
      this.#push(
        replaced,
        SESSION_END_REASONS.replaced,
        `"${name}" logged in elsewhere (${hostPort(session.ip, session.udpPort)}); ` +
          "this session has ended",
      );
    }
    this.#emit({
      kind: "logged_in",
      name,
      ip: session.ip,
      udpPort,
      tcpPort,
      transport: from.transport,
      replaced: replaced !== undefined,
    });
    this.#sendPresence(
      this.#feed.publish(now, PRESENCE_CHANGES.joined, onlineClient(now, session), token),
    );
    this.#emitActive();
    return token;
  }

  /** After a session was closed: tell watchers, remember why, tell its client. */
  #endSession(
    now: number,
    session: Session,
    why: "exit" | "lease" | "deregister",
    notice?: { reason: number; message: string },
  ): void {
    this.#feed.unwatch(session.token);
    this.#emit({ kind: "logged_out", name: session.name, why });
    if (notice !== undefined) {
      this.#push(session, notice.reason, notice.message);
    }
    this.#sendPresence(
      this.#feed.publish(now, PRESENCE_CHANGES.left, onlineClient(now, session), session.token),
    );
  }

  /** Sends `session_ended` to a session's client and remembers why for its next request. */
  #push(session: Session, reason: number, message: string): void {
    this.#ended.set(toHex(session.token), {
      code: reason === SESSION_END_REASONS.replaced ? "session_replaced" : "not_logged_in",
      message,
      ip: session.ip,
      udpPort: session.udpPort,
    });
    while (this.#ended.size > ENDED_SESSIONS_KEPT) {
      this.#ended.delete(this.#ended.keys().next().value!);
    }
    this.#outputs.push({
      type: "send",
      to: { transport: "udp", address: session.ip, port: session.udpPort },
      message: { type: "session_ended", token: session.token, reason, message },
    });
  }

  #sendPresence(sends: readonly PresenceSend[]): void {
    for (const send of sends) {
      for (const news of send.news) {
        this.#outputs.push({
          type: "send",
          to: { transport: "udp", address: send.ip, port: send.udpPort },
          message: {
            type: "presence",
            token: send.token,
            seq: news.seq,
            change: news.change,
            ...news.entry,
          },
        });
      }
    }
  }

  #emitActive(): void {
    this.#emit({ kind: "active", names: this.#sessions.list().map((s) => s.name) });
  }

  #identityKey(fingerprint: string): Uint8Array {
    const input = new TextEncoder().encode(`register/${fingerprint}`);
    return hmac(sha256, this.#secret, input).subarray(0, TOKEN_BYTES);
  }

  #answer(to: Endpoint, request: Request, reply: Reply): void {
    if (!READ_ONLY.has(request.type)) this.#replay.complete(request.client, request.reqId, reply);
    this.#send(to, request.type, reply, this.#sizing.limit(to, request));
  }

  /**
   * Sends a reply within `limit` bytes, as reply sizing fits it (the one
   * place every reply passes): an `error` shortened, any other reply that
   * does not fit replaced by a refusal, nothing if not even that fits.
   */
  #send(to: Endpoint, request: string, reply: Reply, limit: number): void {
    const sized = this.#sizing.fit(request, reply, limit);
    switch (sized.kind) {
      case "send":
        if (sized.shortened) this.#stats.shortenedReplies++;
        this.#outputs.push({ type: "send", to, message: sized.reply });
        return;
      case "refuse":
        this.#stats.undersizedRequests++;
        return this.#refuseUncached(to, request, reply.reqId, sized.reason, limit);
      case "drop":
        return;
    }
  }

  /**
   * Refuses a request with a `bad_request` cut to fit `limit` (see `#send`),
   * without touching the replay cache: an undersized UDP request, or a copy
   * of an earlier request sent from another address. Counted and logged,
   * nothing else.
   */
  #refuseUncached(
    to: Endpoint,
    request: string,
    reqId: number,
    reason: string,
    limit: number,
  ): void {
    this.#stats.refused++;
    this.#emit({ kind: "refused", from: to, request, reqId, code: "bad_request", reason });
    this.#send(to, request, errorReply(reqId, "bad_request", reason), limit);
  }

  /**
   * Tells whether a token proves its sender receives what is sent to `to`:
   * a live session's token, or one sent again from the address its ended
   * session was at.
   */
  #proves(token: Uint8Array, to: Endpoint): boolean {
    if (this.#sessions.byToken(token) !== undefined) return true;
    const ended = this.#ended.get(toHex(token));
    return ended !== undefined && ended.ip === to.address && ended.udpPort === to.port;
  }

  #refuse(from: Endpoint, request: Request, code: ErrorCodeName, reason: string): void {
    this.#stats.refused++;
    if (AUTH_FAILURES.has(code)) this.#stats.authFailures++;
    this.#emit({
      kind: "refused",
      from,
      request: request.type,
      reqId: request.reqId,
      code,
      reason,
    });
    this.#answer(from, request, errorReply(request.reqId, code, reason));
  }

  #hold(
    to: Endpoint,
    request: Request,
    fingerprint: string,
    change: {
      reply: Reply;
      event: ServerEvent;
      undo: () => void;
      done?: (now: number) => void;
      failureText: string;
    },
  ): void {
    this.#commits.hold({
      to,
      request: request.type,
      limit: this.#sizing.limit(to, request),
      client: request.client,
      reqId: request.reqId,
      fingerprint,
      reply: change.reply,
      event: change.event,
      undo: change.undo,
      done: change.done,
      failure: errorReply(request.reqId, "not_saved", change.failureText),
    });
    this.#requestPersist();
  }

  #requestPersist(): void {
    const version = this.#commits.nextSnapshot();
    if (version === undefined) return;
    this.#outputs.push({ type: "persist", version, registry: this.#registry.toJson() });
  }

  #emit(event: ServerEvent): void {
    this.#outputs.push({ type: "event", event });
  }
}

function onlineClient(now: number, session: Session) {
  return {
    name: session.name,
    ip: session.ip,
    udpPort: session.udpPort,
    tcpPort: session.tcpPort,
    onlineMs: Math.max(0, Math.floor(now - session.since)),
  };
}

function errorReply(reqId: number, code: ErrorCodeName, message: string): Reply {
  return { type: "error", reqId, code: ERROR_CODES[code], message };
}

function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function seconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

function byteLength(text: string): number {
  return new TextEncoder().encode(text).length;
}
