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
import { fromHex, toHex } from "../hex.ts";
import type { Random } from "../random.ts";
import { nameKey, nameProblem } from "../wire/client_name.ts";
import { encodeMessage, MIN_PADDED_REQUEST_BYTES } from "../wire/codec.ts";
import { ERROR_CODES, type ErrorCodeName } from "../wire/error_code.ts";
import { fileNameProblem } from "../wire/file_name.ts";
import {
  AUTH_MODES,
  isRequest,
  MAX_DATAGRAM_BYTES,
  MAX_FRAME_BYTES,
  type Message,
  type MessageOf,
  PADDED_REQUEST_TYPES,
  PRESENCE_CHANGES,
  type Reply,
  type Request,
  SESSION_END_REASONS,
  TOKEN_BYTES,
} from "../wire/messages.ts";
import { IdentityExpiry } from "./identity_expiry.ts";
import { LoginLimiter } from "./login_limiter.ts";
import { PresenceFeed, type PresenceSend } from "./presence_feed.ts";
import { addressKey, RateLimiter } from "./rate_limiter.ts";
import { Registry, type RegistryJson, type RegistryRecord } from "./registry.ts";
import { DEFAULT_REPLAY_TTL_MS, ReplayCache, type ReplayCacheOptions } from "./replay_cache.ts";
import { type Session, SessionTable } from "./session_table.ts";
import {
  DEFAULT_STORAGE_LIMITS,
  type StorageLimits,
  type StoredFile,
  StoredFiles,
} from "./stored_files.ts";

/** Where a message came from, and so where its reply goes. */
export interface Endpoint {
  /** The transport it arrived on. */
  readonly transport: "udp" | "tcp";
  /** The peer's IP address. */
  readonly address: string;
  /** The peer's port. */
  readonly port: number;
  /** For TCP: the driver's id of the connection. */
  readonly connId?: number;
}

/** How logins are checked. */
export type AuthMode = keyof typeof AUTH_MODES;

/** One account of password mode. */
export interface PasswordUser {
  /** The name (display form). */
  readonly name: string;
  /** The encoded password hash (`lib/server/password_hash.ts`). */
  readonly passwordHash: string;
}

/** Something that happened, for the log and the console. */
export type ServerEvent =
  | {
    readonly kind: "registered";
    readonly name: string;
    readonly reqId: number;
    /** Identifies the request (a hash of it); unique per executed request. */
    readonly fingerprint: string;
    readonly ip: string;
    readonly udpPort: number;
    readonly tcpPort: number;
    readonly transport: "udp" | "tcp";
  }
  | {
    readonly kind: "deregistered";
    readonly name: string;
    readonly reqId: number;
    /** Identifies the request (a hash of it); unique per executed request. */
    readonly fingerprint: string;
    readonly transport: "udp" | "tcp";
  }
  | {
    readonly kind: "logged_in";
    readonly name: string;
    readonly ip: string;
    readonly udpPort: number;
    readonly tcpPort: number;
    readonly transport: "udp" | "tcp";
    /** True if it replaced an older session of the same name. */
    readonly replaced: boolean;
  }
  | {
    readonly kind: "logged_out";
    readonly name: string;
    /** `exit` (logout), `lease` (no heartbeat in time) or `deregister`. */
    readonly why: "exit" | "lease" | "deregister" | "shutdown";
  }
  | { readonly kind: "active"; readonly names: readonly string[] }
  | {
    readonly kind: "file_stored";
    readonly user: string;
    readonly name: string;
    readonly size: number;
    readonly sha256: string;
  }
  | { readonly kind: "file_deleted"; readonly user: string; readonly name: string }
  | { readonly kind: "file_sent"; readonly user: string; readonly name: string; size: number }
  | {
    readonly kind: "text";
    readonly from: Endpoint;
    readonly reqId: number;
    readonly name: string;
    readonly verified: boolean;
    readonly text: string;
  }
  | {
    readonly kind: "refused";
    readonly from: Endpoint;
    readonly request: string;
    readonly reqId: number;
    readonly code: ErrorCodeName;
    readonly reason: string;
  }
  | {
    readonly kind: "replayed";
    readonly from: Endpoint;
    readonly request: string;
    readonly reqId: number;
  }
  | { readonly kind: "unexpected"; readonly from: Endpoint; readonly type: string }
  | { readonly kind: "save_failed"; readonly reason: string }
  | {
    readonly kind: "expired";
    readonly name: string;
    /** When it was last seen (or registered), ISO 8601. */
    readonly lastSeen: string;
    /** How many stored files went with it. */
    readonly files: number;
  };

/** What the core asks its driver to do. */
export type ServerOutput =
  | { readonly type: "send"; readonly to: Endpoint; readonly message: Message }
  | { readonly type: "persist"; readonly version: number; readonly registry: RegistryJson }
  | { readonly type: "event"; readonly event: ServerEvent }
  /** Check a password against a hash, then call `passwordChecked(now, id, ok)`. */
  | {
    readonly type: "verify_password";
    readonly id: number;
    readonly hash: string;
    readonly password: string;
  }
  /** Start storing a file; chunks follow, then `upload_commit` or `upload_abort`. */
  | {
    readonly type: "upload_begin";
    readonly id: number;
    readonly user: string;
    readonly name: string;
    /** The TCP connection that carries the chunks. */
    readonly connId: number;
  }
  | { readonly type: "upload_chunk"; readonly id: number; readonly data: Uint8Array }
  /** Check size and hash, make the file durable, then call `uploadDone`. */
  | {
    readonly type: "upload_commit";
    readonly id: number;
    readonly size: number;
    readonly sha256: string;
  }
  | { readonly type: "upload_abort"; readonly id: number }
  /** Send `download_ok` then the file's content in `file_chunk` frames to `to`. */
  | {
    readonly type: "download";
    readonly to: Endpoint;
    readonly reqId: number;
    readonly user: string;
    readonly file: StoredFile;
  }
  /** Delete a stored file, then call `fileDeleted(id)`. */
  | { readonly type: "delete_file"; readonly id: number; readonly user: string; name: string }
  /** Delete every file of a deregistered user. */
  | { readonly type: "delete_user_files"; readonly user: string };

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
   * {@linkcode MIN_PADDED_REQUEST_BYTES} (refused before it runs, so it
   * changes nothing), or, as a safety net, any request whose reply other
   * than an `error` would have outgrown it.
   */
  undersizedRequests: number;
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
  /** Failed logins from one address that block it for the name (default 3). */
  maxAttempts?: number;
  /** How long the first block lasts, ms (default 10 s); each later one from the same address doubles. */
  lockoutMs?: number;
  /**
   * New names one address may register per minute, over UDP and TCP
   * together (bursts of as many); 0 or absent for no limit.
   */
  registerRatePerMinute?: number;
  /**
   * Open mode: an identity not seen (registered, logged in, or kept alive by
   * a session) for this long, ms, is removed with its files; 0 or absent
   * never removes one.
   */
  expireAfterMs?: number;
  /** Limits on stored files. */
  storage?: StorageLimits;
  /** Files stored at start: user name and files. */
  storedFiles?: Iterable<readonly [string, readonly StoredFile[]]>;
}

/** Default session lease, ms. */
export const DEFAULT_LEASE_MS = 30_000;

interface HeldReply {
  version: number;
  to: Endpoint;
  /** The type of the request it answers. */
  request: string;
  /** The most bytes the reply may take (see `#replyLimit`). */
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

interface Upload extends PendingRequest {
  id: number;
  user: string;
  name: string;
  size: number;
  sha256: string;
  received: number;
}

interface Deletion extends PendingRequest {
  user: string;
  file: StoredFile;
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

/** Size of an `error` reply without its message: header, reqId, code, message length. */
const ERROR_REPLY_BASE_BYTES = 4 + 4 + 2 + 2;

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
  #registerLimiter: RateLimiter | undefined;
  #expiry: IdentityExpiry;
  #files: StoredFiles;
  #ended = new Map<string, EndedSession>();
  #outputs: ServerOutput[] = [];
  /** How many bytes each request arrived in, by the decoded request (see `#replyLimit`). */
  #received = new WeakMap<Request, number>();
  #held: HeldReply[] = [];
  #logins = new Map<number, PendingLogin>();
  #uploads = new Map<string, Upload>();
  #deletions = new Map<number, Deletion>();
  #nextId = 1;
  #changeVersion = 0;
  #persistedVersion = 0;
  #persistInFlight = false;
  #stats: ServerStats = {
    requests: 0,
    replays: 0,
    refused: 0,
    authFailures: 0,
    presenceResent: 0,
    shortenedReplies: 0,
    undersizedRequests: 0,
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
    this.#expiry = new IdentityExpiry(options.expireAfterMs ?? 0);
    const registerRate = options.registerRatePerMinute ?? 0;
    if (registerRate > 0) {
      this.#registerLimiter = new RateLimiter({
        ratePerSecond: registerRate / 60,
        burst: registerRate,
      });
    }
    this.#files = new StoredFiles(options.storage ?? DEFAULT_STORAGE_LIMITS);
    for (const [user, files] of options.storedFiles ?? []) {
      for (const file of files) this.#files.add(user, file);
    }
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
    return this.#persistedVersion < this.#changeVersion;
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
    this.#expiry.start(now);
    if (message.type === "presence_ack") {
      const session = this.#sessions.byToken(message.token);
      if (session !== undefined) this.#feed.ack(session.token, message.seq);
      return;
    }
    if (message.type === "file_chunk") return this.#chunk(from, message);
    if (!isRequest(message)) {
      this.#emit({ kind: "unexpected", from, type: message.type });
      return;
    }
    this.#stats.requests++;
    this.#received.set(message, receivedBytes);
    if (
      from.transport === "udp" && PADDED_REQUEST_TYPES.has(message.type) &&
      receivedBytes < MIN_PADDED_REQUEST_BYTES
    ) {
      // Its reply might not fit in it: refuse it before it runs, so that
      // nothing changes (not even the replay cache) for a reply never sent.
      this.#stats.undersizedRequests++;
      return this.#refuseUncached(
        from,
        message.type,
        message.reqId,
        `Pad ${message.type} to ${MIN_PADDED_REQUEST_BYTES} bytes (it came in ${receivedBytes}): ` +
          "over UDP the server answers a request from an unproven address with no more bytes " +
          "than it received",
        receivedBytes,
      );
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
        this.#replyLimit(from, message),
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
      this.#send(from, message.type, seen.reply, this.#replyLimit(from, message));
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
    const times = [
      this.#sessions.nextExpiry(),
      this.#feed.nextResend(),
      this.#expiry.nextCheck(),
    ].filter((t): t is number => t !== undefined);
    return times.length === 0 ? undefined : Math.min(...times);
  }

  /**
   * Ends sessions whose lease ran out, resends unacknowledged presence
   * news, and removes identities not seen for `expireAfterMs`.
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
    this.#expireIdentities(now);
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
    this.#persistInFlight = false;
    this.#persistedVersion = Math.max(this.#persistedVersion, version);
    const ready = this.#held.filter((h) => h.version <= version);
    this.#held = this.#held.filter((h) => h.version > version);
    for (const h of ready) {
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
    this.#persistInFlight = false;
    this.#emit({ kind: "save_failed", reason });
    const failed = this.#held.reverse();
    this.#held = [];
    for (const h of failed) {
      h.undo();
      this.#replay.complete(h.client, h.reqId, h.failure);
      this.#send(h.to, h.request, h.failure, h.limit);
    }
    this.#persistedVersion = Math.max(version, this.#changeVersion);
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
  uploadDone(
    id: number,
    result:
      | { readonly ok: true; readonly file: StoredFile }
      | { readonly ok: false; readonly code: "checksum_mismatch" | "io"; readonly reason: string },
  ): void {
    const upload = [...this.#uploads.values()].find((u) => u.id === id);
    if (upload === undefined) return;
    this.#uploads.delete(uploadKey(upload.from, upload.request.reqId));
    this.#files.reserve(upload.user, -upload.size, -1);
    if (!result.ok) {
      const code = result.code === "io" ? "not_saved" : "checksum_mismatch";
      return this.#refuse(upload.from, upload.request, code, result.reason);
    }
    this.#files.add(upload.user, result.file);
    this.#emit({
      kind: "file_stored",
      user: upload.user,
      name: result.file.name,
      size: result.file.size,
      sha256: result.file.sha256,
    });
    this.#answer(upload.from, upload.request, {
      type: "upload_ok",
      reqId: upload.request.reqId,
      size: result.file.size,
    });
  }

  /**
   * Reports that a `delete_file` output was carried out (or failed).
   *
   * @param id the output's id
   * @param error why it failed, or undefined
   */
  fileDeleted(id: number, error?: string): void {
    const deletion = this.#deletions.get(id);
    if (deletion === undefined) return;
    this.#deletions.delete(id);
    if (error !== undefined) {
      this.#files.add(deletion.user, deletion.file);
      return this.#refuse(deletion.from, deletion.request, "not_saved", error);
    }
    this.#emit({ kind: "file_deleted", user: deletion.user, name: deletion.file.name });
    this.#answer(deletion.from, deletion.request, {
      type: "delete_ok",
      reqId: deletion.request.reqId,
    });
  }

  /**
   * Reports that a TCP connection closed: uploads on it are abandoned.
   *
   * @param connId the driver's id of the connection
   */
  connectionClosed(connId: number): void {
    for (const [key, upload] of this.#uploads) {
      if (upload.from.connId !== connId) continue;
      this.#uploads.delete(key);
      this.#files.reserve(upload.user, -upload.size, -1);
      this.#outputs.push({ type: "upload_abort", id: upload.id });
      this.#replay.complete(
        upload.request.client,
        upload.request.reqId,
        errorReply(upload.request.reqId, "bad_request", "The connection closed mid-upload"),
      );
    }
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
        return this.#upload(from, request);
      case "download":
        return this.#download(from, request);
      case "delete":
        return this.#delete(from, request);
      case "files":
        return this.#fileList(from, request);
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
      if (this.#held.some((h) => h.fingerprint === fingerprint)) return;
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
    if (this.#registerLimiter?.take(now, from.address).allowed === false) {
      return this.#refuse(
        from,
        request,
        "busy",
        `Cannot register "${name}": too many new names from your address ` +
          `(at most ${
            Math.round(this.#registerLimiter.ratePerSecond * 60)
          } a minute); try again later`,
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
      lastSeenAt: new Date(now).toISOString(),
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
        this.#abortUploadsOf(record.name, "Your identity was deregistered during the upload");
        for (const file of this.#files.list(record.name)) {
          this.#emit({ kind: "file_deleted", user: record.name, name: file.name });
        }
        this.#files.removeUser(record.name);
        this.#outputs.push({ type: "delete_user_files", user: record.name });
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
    const source = addressKey(from.address);
    const block = this.#limiter.check(now, source, key);
    if (block.blocked) {
      return this.#refuse(
        from,
        request,
        "locked_out",
        `Too many failed logins for "${request.name}" from your address; try again in ${
          seconds(block.retryAfterMs)
        } s`,
      );
    }
    if (this.#auth === "open") {
      const record = this.#registry.get(request.name);
      const ok = record !== undefined && record.keySha256 !== "" &&
        request.secret.length === TOKEN_BYTES &&
        sameText(toHex(sha256(request.secret)), record.keySha256) &&
        !this.#held.some((h) => h.event.kind === "registered" && h.event.name === record.name);
      return this.#loginChecked(now, { from, request, known: record?.name, at: now }, ok);
    }
    if (
      [...this.#logins.values()].some((p) =>
        nameKey(p.request.name) === key && addressKey(p.from.address) === source
      )
    ) {
      // One password check per name and source at a time, so that guesses
      // sent together cannot outrun the lockout (and a guesser elsewhere
      // cannot keep the owner busy).
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
    const source = addressKey(from.address);
    if (!ok || pending.known === undefined) {
      const after = this.#limiter.failed(pending.at, source, key);
      const what = this.#auth === "open" ? "identity key" : "password";
      const tail = after.blocked
        ? `; "${request.name}" is now blocked for ${
          seconds(after.retryAfterMs ?? 0)
        } s from your address`
        : `; ${after.attemptsLeft} ${after.attemptsLeft === 1 ? "attempt" : "attempts"} left`;
      return this.#refuse(
        from,
        request,
        after.blocked ? "locked_out" : "login_failed",
        `Login failed: wrong name or ${what}${tail}`,
      );
    }
    this.#limiter.succeeded(source, key);
    const udpPort = from.transport === "udp" ? from.port : request.udpPort;
    const portProblem = udpPort === 0
      ? "UDP port 0"
      : request.tcpPort < 1024
      ? `TCP port ${request.tcpPort} is not in 1024..65535`
      : undefined;
    if (portProblem !== undefined) {
      return this.#refuse(from, request, "bad_request", `Cannot log in: ${portProblem}`);
    }
    if (this.#auth === "open") this.#seen(now, pending.known);
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
    if (this.#auth === "open") this.#seen(now, session.name);
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

  #upload(from: Endpoint, request: MessageOf<"upload">): void {
    const session = this.#session(from, request);
    if (session === undefined) return;
    if (from.transport !== "tcp") {
      return this.#refuse(from, request, "needs_tcp", "Uploads go over TCP");
    }
    const problem = fileNameProblem(request.name);
    if (problem !== undefined) {
      return this.#refuse(from, request, "invalid_file_name", problem);
    }
    if (request.sha256.length !== 32) {
      return this.#refuse(from, request, "bad_request", "The SHA-256 must be 32 bytes");
    }
    const tooMuch = this.#files.uploadProblem(session.name, request.name, request.size);
    if (tooMuch !== undefined) {
      const code = request.size > this.#files.limits.maxFileSize
        ? "file_too_large"
        : "quota_exceeded";
      return this.#refuse(from, request, code, tooMuch);
    }
    const upload: Upload = {
      from,
      request,
      id: this.#nextId++,
      user: session.name,
      name: request.name,
      size: request.size,
      sha256: toHex(request.sha256),
      received: 0,
    };
    this.#uploads.set(uploadKey(from, request.reqId), upload);
    this.#files.reserve(session.name, request.size, 1);
    this.#outputs.push({
      type: "upload_begin",
      id: upload.id,
      user: upload.user,
      name: upload.name,
      connId: from.connId ?? 0,
    });
    if (upload.size === 0) this.#commit(upload);
  }

  #chunk(from: Endpoint, chunk: MessageOf<"file_chunk">): void {
    const key = uploadKey(from, chunk.reqId);
    const upload = this.#uploads.get(key);
    if (upload === undefined || upload.received === upload.size) return;
    if (upload.received + chunk.data.length > upload.size) {
      this.#uploads.delete(key);
      this.#files.reserve(upload.user, -upload.size, -1);
      this.#outputs.push({ type: "upload_abort", id: upload.id });
      return this.#refuse(
        upload.from,
        upload.request,
        "bad_request",
        `The upload of "${upload.name}" sent more than the ${upload.size} bytes it declared`,
      );
    }
    upload.received += chunk.data.length;
    this.#outputs.push({ type: "upload_chunk", id: upload.id, data: chunk.data });
    if (upload.received === upload.size) this.#commit(upload);
  }

  #abortUploadsOf(user: string, reason: string): void {
    for (const [key, upload] of this.#uploads) {
      if (nameKey(upload.user) !== nameKey(user)) continue;
      this.#uploads.delete(key);
      this.#files.reserve(upload.user, -upload.size, -1);
      this.#outputs.push({ type: "upload_abort", id: upload.id });
      this.#refuse(upload.from, upload.request, "not_registered", reason);
    }
  }

  #commit(upload: Upload): void {
    this.#outputs.push({
      type: "upload_commit",
      id: upload.id,
      size: upload.size,
      sha256: upload.sha256,
    });
  }

  #download(from: Endpoint, request: MessageOf<"download">): void {
    const session = this.#session(from, request);
    if (session === undefined) return;
    if (from.transport !== "tcp") {
      return this.#refuse(from, request, "needs_tcp", "Downloads go over TCP");
    }
    const file = this.#files.get(session.name, request.name);
    if (file === undefined) {
      return this.#refuse(from, request, "file_not_found", `You have no file "${request.name}"`);
    }
    this.#outputs.push({
      type: "download",
      to: from,
      reqId: request.reqId,
      user: session.name,
      file,
    });
    this.#emit({ kind: "file_sent", user: session.name, name: file.name, size: file.size });
  }

  #delete(from: Endpoint, request: MessageOf<"delete">): void {
    const session = this.#session(from, request);
    if (session === undefined) return;
    const file = this.#files.remove(session.name, request.name);
    if (file === undefined) {
      return this.#refuse(from, request, "file_not_found", `You have no file "${request.name}"`);
    }
    const id = this.#nextId++;
    this.#deletions.set(id, { from, request, user: session.name, file });
    this.#outputs.push({ type: "delete_file", id, user: session.name, name: file.name });
  }

  #fileList(from: Endpoint, request: MessageOf<"files">): void {
    const session = this.#session(from, request);
    if (session === undefined) return;
    if (from.transport !== "tcp") {
      return this.#refuse(from, request, "needs_tcp", "File listings go over TCP");
    }
    this.#answer(from, request, {
      type: "file_list",
      reqId: request.reqId,
      usedBytes: this.#files.usage(session.name),
      quotaBytes: this.#files.limits.quota,
      files: this.#files.list(session.name).map((f) => ({
        name: f.name,
        size: f.size,
        sha256: fromHex(f.sha256),
        uploadedAt: Date.parse(f.uploadedAt),
      })),
    });
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
    this.#send(to, request.type, reply, this.#replyLimit(to, request));
  }

  /**
   * Sends a reply within `limit` bytes: an `error` has its message shortened
   * to fit; any other reply that does not fit is not sent, and an error
   * saying so goes instead (the replies to requests without a live session
   * fit by their layout and the padding of `hello`, `register` and `login`,
   * which `handle` checks before it runs them: see
   * `tests/amplification_test.ts`); if not even an error with no message
   * fits, nothing is sent.
   */
  #send(to: Endpoint, request: string, reply: Reply, limit: number): void {
    if (limit === Infinity) {
      this.#outputs.push({ type: "send", to, message: reply });
      return;
    }
    if (reply.type !== "error") {
      const size = encodeMessage(reply).length;
      if (size <= limit) {
        this.#outputs.push({ type: "send", to, message: reply });
        return;
      }
      const what = PADDED_REQUEST_TYPES.has(request as Request["type"])
        ? `Pad ${request} to ${MIN_PADDED_REQUEST_BYTES} bytes`
        : "Send it over TCP";
      this.#stats.undersizedRequests++;
      return this.#refuseUncached(
        to,
        request,
        reply.reqId,
        `${what} (it came in ${limit}): its ${reply.type} reply of ${size} bytes would be ` +
          "larger than the request, and the address is unproven",
        limit,
      );
    }
    if (ERROR_REPLY_BASE_BYTES > limit) return;
    if (ERROR_REPLY_BASE_BYTES + byteLength(reply.message) > limit) {
      this.#stats.shortenedReplies++;
      const message = shorten(reply.message, limit - ERROR_REPLY_BASE_BYTES);
      reply = { ...reply, message };
    }
    this.#outputs.push({ type: "send", to, message: reply });
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
   * The most bytes a reply to this request may take: no limit over TCP (its
   * handshake proved the address) or for a request that carries a live
   * session token, or a token sent again from the address the session was
   * at (its client proved it receives what is sent there); otherwise the
   * size of the datagram the request came in. A source address over UDP can
   * be forged: this keeps the server from being an amplifier aimed at
   * someone else.
   */
  #replyLimit(to: Endpoint, request: Request): number {
    if (to.transport !== "udp") return Infinity;
    const token = "token" in request ? request.token : undefined;
    if (token !== undefined && token.length > 0) {
      if (this.#sessions.byToken(token) !== undefined) return Infinity;
      const ended = this.#ended.get(toHex(token));
      if (ended !== undefined && ended.ip === to.address && ended.udpPort === to.port) {
        return Infinity;
      }
    }
    // Every request comes through handle(), which records its size; were
    // one not to, nothing would be sent rather than too much.
    return this.#received.get(request) ?? 0;
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
    this.#changeVersion++;
    this.#held.push({
      version: this.#changeVersion,
      to,
      request: request.type,
      limit: this.#replyLimit(to, request),
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

  /**
   * Notes that an identity was seen: its `lastSeenAt` is rewritten once it
   * is stale (see `IdentityExpiry`), and saved with no reply waiting on it.
   */
  #seen(now: number, name: string): void {
    const record = this.#registry.get(name);
    if (record === undefined) return;
    if (!this.#expiry.isStale(now, record)) return;
    this.#registry.replace({ ...record, lastSeenAt: new Date(now).toISOString() });
    this.#changeVersion++;
    this.#requestPersist();
  }

  /** Removes, with their files, the identities that lapsed (when a check is due). */
  #expireIdentities(now: number): void {
    this.#expiry.start(now);
    if (now < (this.#expiry.nextCheck() ?? Infinity)) return;
    const online = (name: string) => this.#sessions.byName(name) !== undefined;
    const lapsed = this.#expiry.lapsed(now, this.#registry.records(), online);
    for (const record of lapsed) {
      const lastSeen = record.lastSeenAt ?? record.registeredAt;
      this.#registry.remove(record.name);
      this.#abortUploadsOf(record.name, "Your identity expired during the upload");
      const files = this.#files.list(record.name);
      for (const file of files) {
        this.#emit({ kind: "file_deleted", user: record.name, name: file.name });
      }
      this.#files.removeUser(record.name);
      this.#outputs.push({ type: "delete_user_files", user: record.name });
      this.#emit({ kind: "expired", name: record.name, lastSeen, files: files.length });
    }
    if (lapsed.length === 0) return;
    this.#changeVersion++;
    this.#requestPersist();
  }

  #requestPersist(): void {
    if (this.#persistInFlight || this.#persistedVersion >= this.#changeVersion) return;
    this.#persistInFlight = true;
    this.#outputs.push({
      type: "persist",
      version: this.#changeVersion,
      registry: this.#registry.toJson(),
    });
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

function uploadKey(from: Endpoint, reqId: number): string {
  return `${from.connId ?? `${from.address}:${from.port}`}/${reqId}`;
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

/**
 * Cuts a message for people to at most `maxBytes` of UTF-8: at the end of
 * the longest leading clause that fits (before ` (`, `; `, `: ` or `, `),
 * else of the longest run of whole words, else of whole characters.
 */
function shorten(text: string, maxBytes: number): string {
  if (byteLength(text) <= maxBytes) return text;
  let clause = "";
  for (const match of text.matchAll(/ \(|; |: |, /g)) {
    const head = text.slice(0, match.index);
    if (byteLength(head) > maxBytes) break;
    clause = head;
  }
  if (clause !== "") return clause;
  let words = "";
  for (const match of text.matchAll(/ /g)) {
    const head = text.slice(0, match.index);
    if (byteLength(head) > maxBytes) break;
    words = head;
  }
  if (words !== "") return words;
  let out = "";
  for (const char of text) {
    if (byteLength(out + char) > maxBytes) break;
    out += char;
  }
  return out;
}
