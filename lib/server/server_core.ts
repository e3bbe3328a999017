/**
 * The server's protocol logic, sans-I/O: feed it decoded messages with their
 * source and the time, then `poll()` for messages to send, registry
 * snapshots to persist, file work and password checks for the driver to do,
 * and events to log. A reply that follows a registry change is held back
 * until the driver reports the snapshot durable (`persisted`).
 *
 * The core routes each request to the part that owns it and keeps what
 * cuts across them: the replay cache, the commit log (`commit_log.ts`) and
 * reply sizing (`reply_sizing.ts`, every reply passes `#send`). The parts:
 * `directory.ts` (sessions, presence, list/lookup/watch), `accounts.ts`
 * (register, deregister, login), `server_storage.ts` (server files) and
 * `admission.ts` (rate and connection limits, asked through `admit`,
 * `admitFrame`, `connectionOpened` and `checkConnection`), `reflector.ts`
 * (address discovery, on both UDP ports).
 *
 * Over 700 lines: it is the core's one surface, every input a driver feeds
 * (requests, timers, store results, other instances' news), the routing
 * table and the cross-cutting mechanisms (replay cache, commit log); the
 * work itself lives in the parts.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2";
import { toHex } from "../hex.ts";
import type { Random } from "../random.ts";
import { nameKey } from "../wire/client_name.ts";
import { encodeMessage } from "../wire/codec.ts";
import { ERROR_CODES, type ErrorCodeName } from "../wire/error_code.ts";
import {
  AUTH_MODES,
  isRequest,
  type Message,
  type MessageOf,
  type Reply,
  type Request,
} from "../wire/messages.ts";
import { type AccountChange, Accounts, type AuthMode, type PasswordUser } from "./accounts.ts";
import { Admission, type ServerLimits } from "./admission.ts";
import { CommitLog } from "./commit_log.ts";
import type { ConnectionSample } from "./connection_limits.ts";
import { Directory } from "./directory.ts";
import { addressKey } from "./rate_limiter.ts";
import type { Registry, RegistryChange, RegistryRecord } from "./registry.ts";
import { DEFAULT_REPLAY_TTL_MS, ReplayCache, type ReplayCacheOptions } from "./replay_cache.ts";
import { ReplySizing } from "./reply_sizing.ts";
import { Reflector } from "./reflector.ts";
import { type PeerNews, PeerRelay, type PeerRelayLimits } from "./peer_relay.ts";
import type { Endpoint, ServerEvent, ServerOutput } from "./server_event.ts";
import { ServerStorage, type UploadResult } from "./server_storage.ts";
import type { SessionTable } from "./session_table.ts";
import type { LoginFailures, LoginRecorded, PresenceRecord, SharedFileRecord } from "./store.ts";
import {
  DEFAULT_STORAGE_LIMITS,
  fileOfIdentity,
  type StorageLimits,
  type StoredFile,
} from "./stored_files.ts";

export type { Endpoint, ServerEvent, ServerOutput } from "./server_event.ts";
export type { AuthMode, PasswordUser } from "./accounts.ts";
export type { ServerLimits } from "./admission.ts";

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
  /** UDP datagrams (and TCP requests without a session) dropped by the per-address rate limits. */
  rateLimited: number;
  /** TCP connections refused by the connection limits, or closed to make room for newer ones. */
  tcpRefused: number;
  /** TCP connections closed for being idle or too slow. */
  tcpTimedOut: number;
}

/** Options of a {@linkcode ServerCore}. */
export interface ServerCoreOptions {
  /** The registry loaded at start. */
  registry: Registry;
  /** Source of session tokens. */
  random: Random;
  /**
   * The server's static public key (X25519), told in `hello_ok` so that a
   * client can pin it on first use. Without one (the simulator, which runs
   * the cores without the secure layer) `hello_ok` carries 32 zero bytes.
   */
  serverKey?: Uint8Array;
  /**
   * The secret of peer introductions (`introductionSecret()` of the server's
   * static private key), so that every instance sharing the key gives the
   * same PSK. Default: random (one instance).
   */
  introductionSecret?: Uint8Array;
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
   * Open mode: an identity not seen (registered, logged in, or kept alive by
   * a session) for this long, ms, is removed with its files; 0 or absent
   * never removes one.
   */
  expireAfterMs?: number;
  /** Limits on stored files. */
  storage?: StorageLimits;
  /** Files stored at start: user name and files. */
  storedFiles?: Iterable<readonly [string, readonly StoredFile[]]>;
  /** Rate and connection limits (`lib/server/admission.ts`). */
  limits?: ServerLimits;
  /** Registry writes under way at once: 1 for snapshots, more for an ordered store. */
  writesInFlight?: number;
  /** Share sessions and failed logins with other instances (`presence_store`, `login_store`). */
  sharedPresence?: boolean;
  /** The server's second UDP port, told in `reflect_ok` (default 0: none). */
  udpPort2?: number;
  /** Limits of the relay for peers (`peer_relay.ts`). */
  relay?: Partial<PeerRelayLimits>;
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
  /** The answer if the store says another instance registered the name first. */
  taken?: Reply;
}

/** Refusals that count as authentication failures. */
const AUTH_FAILURES: ReadonlySet<ErrorCodeName> = new Set([
  "not_logged_in",
  "session_replaced",
  "login_failed",
  "locked_out",
]);

/** Request types that change nothing and so skip the replay cache. */
const READ_ONLY = new Set([
  "hello",
  "heartbeat",
  "list",
  "lookup",
  "files",
  "download",
  // Running it again only refreshes the introduction and tells the peer again.
  "introduce",
]);

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
  #tcpPort: number;
  #serverKey: Uint8Array;
  #serverVersion: string;
  #replay: ReplayCache;
  #directory: Directory;
  #accounts: Accounts;
  #admission: Admission;
  #sizing: ReplySizing;
  #reflector: Reflector;
  #relay: PeerRelay;
  #commits: CommitLog<HeldReply>;
  /** True when state is shared with other instances (`sharedPresence`). */
  #shared: boolean;
  #storage: ServerStorage;
  #outputs: ServerOutput[] = [];
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
    this.#commits = new CommitLog(options.writesInFlight);
    this.#shared = options.sharedPresence ?? false;
    this.#tcpPort = options.tcpPort;
    this.#serverKey = options.serverKey ?? new Uint8Array(32);
    this.#serverVersion = options.version;
    this.#replay = new ReplayCache(options.replay);
    const host = {
      refuse: (from: Endpoint, request: Request, code: ErrorCodeName, reason: string) =>
        this.#refuse(from, request, code, reason),
      answer: (from: Endpoint, request: Request, reply: Reply) =>
        this.#answer(from, request, reply),
      emit: (event: ServerEvent) => this.#emit(event),
      output: (output: ServerOutput) => this.#outputs.push(output),
      changed: () => {
        this.#commits.touch();
        this.#requestPersist();
      },
    };
    let introductionSecret = options.introductionSecret;
    this.#directory = new Directory(host, {
      random: options.random,
      leaseMs: options.leaseMs ?? DEFAULT_LEASE_MS,
      stats: this.#stats,
      shared: options.sharedPresence,
      // Drawn at the first introduction, so a server that makes none draws nothing more.
      introductionSecret: () => (introductionSecret ??= options.random.bytes(32)),
    });
    this.#admission = new Admission({
      ...host,
      busy: (connId) => this.#storage.busy(connId),
      stats: this.#stats,
    }, options.limits);
    this.#sizing = new ReplySizing((token, to) => this.#directory.proves(token, to));
    this.#reflector = new Reflector({ port2: options.udpPort2 ?? 0, output: host.output });
    this.#relay = new PeerRelay({
      sessions: this.#directory.sessions,
      random: options.random,
      output: host.output,
      emit: host.emit,
      limits: options.relay,
      remote: (name) => this.#directory.remoteSession(name),
      secret: () => (introductionSecret ??= options.random.bytes(32)),
    });
    const auth = options.auth ?? "open";
    this.#storage = new ServerStorage({
      ...host,
      // Password accounts are the operator's: their files never outlive an identity.
      owns: (user, file) =>
        auth === "password" || fileOfIdentity(this.#registry.get(user)?.registeredAt, file),
      registeredAt: (user) => {
        const at = Date.parse(this.#registry.get(user)?.registeredAt ?? "");
        return auth === "password" || Number.isNaN(at) ? undefined : at;
      },
      settle: (request, code, reason) =>
        this.#replay.complete(
          request.client,
          request.reqId,
          errorReply(request.reqId, code, reason),
        ),
    }, {
      limits: options.storage ?? DEFAULT_STORAGE_LIMITS,
      stored: options.storedFiles,
      shared: options.sharedPresence,
    });
    this.#accounts = new Accounts({
      ...host,
      hold: (to, request, fingerprint, change) => this.#hold(to, request, fingerprint, change),
      holds: (match) => this.#commits.holds(match),
    }, {
      registry: options.registry,
      random: options.random,
      auth: options.auth ?? "open",
      users: options.users ?? new Map(),
      dummyPasswordHash: options.dummyPasswordHash ?? "",
      replayTtlMs: options.replay?.ttlMs ?? DEFAULT_REPLAY_TTL_MS,
      maxAttempts: options.maxAttempts ?? 3,
      lockoutMs: options.lockoutMs ?? 10_000,
      registerRatePerMinute: options.limits?.registerRate ?? 0,
      expireAfterMs: options.expireAfterMs ?? 0,
      directory: this.#directory,
      storage: this.#storage,
      shared: options.sharedPresence ?? false,
    });
  }

  /** The live registry (read it; change it only through requests). */
  get registry(): Registry {
    return this.#registry;
  }

  /** The active sessions (read only). */
  get sessions(): SessionTable {
    return this.#directory.sessions;
  }

  /** Counters since start. */
  get stats(): Readonly<ServerStats> {
    return this.#stats;
  }

  /** How many sessions watch presence news. */
  get watchers(): number {
    return this.#directory.watchers;
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
    return token instanceof Uint8Array && this.#directory.sessions.byToken(token) !== undefined;
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
    this.#accounts.setUsers(users);
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
    this.#accounts.startExpiry(now);
    if (this.#reflector.handle(from, message, receivedBytes)) return;
    if (message.type === "presence_ack") return this.#directory.ack(message.token, message.seq);
    if (message.type === "file_chunk") return this.#storage.chunk(from, message);
    if (message.type === "relay") return void this.relay(now, from, message);
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
    // Who sent it is part of what it is: the same bytes through another
    // channel key are another request, never answered from this one's reply.
    const hash = sha256.create().update(encodeMessage(message));
    if (from.clientKey !== undefined) hash.update(from.clientKey);
    const fingerprint = toHex(hash.digest().subarray(0, 16));
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
        const name = this.#accounts.nameOf(message.name);
        this.#directory.resume(now, from, message, seen.reply.token, name);
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
    const times = [
      this.#directory.nextTimeout(),
      this.#accounts.nextTimeout(),
      this.#relay.nextTimeout(),
      this.#admission.nextTimeout(),
    ]
      .filter((t): t is number => t !== undefined);
    return times.length === 0 ? undefined : Math.min(...times);
  }

  /**
   * Ends sessions whose lease ran out, resends unacknowledged presence
   * news, removes identities not seen for `expireAfterMs` (the first
   * call starts those checks), and reports rate-limit drops still owed a
   * report.
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    this.#directory.onTimeout(now);
    this.#accounts.onTimeout(now);
    this.#relay.onTimeout(now);
    this.#admission.onTimeout(now);
  }

  /** The relay's counters. */
  get relayStats(): Readonly<PeerRelay["stats"]> {
    return this.#relay.stats;
  }

  /**
   * Forwards a `relay` datagram (it comes in clear: its payload is sealed end
   * to end by the peers) to the other party of its introduced session.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param message the datagram
   * @returns `relayed`; `limited` when the session's rate limit or quota
   *   dropped it; `refused` when it is no party's (unknown session, or not
   *   from a party's UDP address): the driver charges it to the sender's
   *   address like any datagram without a session
   */
  relay(
    now: number,
    from: Endpoint,
    message: MessageOf<"relay">,
  ): "relayed" | "limited" | "refused" {
    return this.#relay.relay(now, from, message);
  }

  /**
   * Takes an introduction or a relayed datagram another instance sent for a
   * client of this one (shared presence).
   *
   * @param now current time, ms
   * @param news the news
   */
  peerNews(now: number, news: PeerNews): void {
    this.#relay.news(now, news);
  }

  /** Ends every session for a shutdown, telling each client. */
  shutdown(): void {
    this.#directory.shutdown();
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
   * @param taken the name another instance registered first, if that is why
   */
  persistFailed(version: number, reason: string, taken?: string): void {
    this.#emit({ kind: "save_failed", reason });
    for (const h of this.#commits.failed(version)) {
      h.undo();
      // The loser of a race for a name on several instances: the name is taken.
      const lost = taken !== undefined && h.taken !== undefined && h.event.kind === "registered" &&
        nameKey(h.event.name) === nameKey(taken);
      const failure = lost ? h.taken! : h.failure;
      this.#replay.complete(h.client, h.reqId, failure);
      this.#send(h.to, h.request, failure, h.limit);
    }
    // The undos restored memory to what is durable: nothing left to write.
    this.#registry.takeChanges();
  }

  /**
   * Applies registry changes another instance made durable in the shared
   * store; an identity removed there loses its files here too.
   *
   * @param changes the changes, oldest first
   */
  registryChanged(changes: readonly RegistryChange[]): void {
    this.#registry.apply(changes);
    // An identity removed elsewhere (or replaced by another under its name,
    // news of the removal lost) takes its files on this instance's disk with it.
    for (const change of changes) {
      const name = change.op === "delete" ? change.name : change.record.name;
      const gone = change.op === "delete" && this.#registry.get(name) === undefined;
      if (gone && this.#storage.holds(name)) this.#storage.removeUser(name);
      else this.#storage.removeEarlier(name);
    }
  }

  /**
   * Counts a login another instance saw (shared state): failures spread
   * over instances block a name together.
   *
   * @param now current time, ms
   * @param source the source's address key
   * @param name the name key
   * @param ok true if it succeeded
   */
  loginElsewhere(now: number, source: string, name: string, ok: boolean): void {
    this.#accounts.loginElsewhere(now, source, name, ok);
  }

  /**
   * Replaces the failed-login counts of the pairs a shared store holds with
   * its record of them (at start, and after a resubscribe: news may have
   * been lost).
   *
   * @param pairs each (source, name) pair's failures
   */
  loginsSynced(pairs: readonly LoginFailures[]): void {
    this.#accounts.loginsSynced(pairs);
  }

  /**
   * Reports that a `login_store` output with an id was carried out (or
   * failed): the login is answered, as the store's record says (the owner's
   * login after all, or a refusal counting every instance's failures).
   *
   * @param id the output's id
   * @param now current time, ms
   * @param recorded what the store made of it; undefined if it could not record it
   */
  loginRecorded(id: number, now: number, recorded?: LoginRecorded): void {
    this.#accounts.loginRecorded(id, now, recorded);
  }

  /**
   * Takes news of another instance's session (shared presence).
   *
   * @param now current time, ms
   * @param op `join` (or moved) or `leave`
   * @param record the session
   */
  presenceChanged(now: number, op: "join" | "leave", record: PresenceRecord): void {
    this.#directory.remoteChanged(now, op, record);
  }

  /**
   * Writes every session of this instance to the shared store again with a
   * fresh deadline (the store was away: the deadlines it holds are stale).
   *
   * @param now current time, ms
   */
  renewShared(now: number): void {
    this.#directory.renewShared(now);
  }

  /**
   * Replaces what is known of the other instances' sessions (after a resubscribe).
   *
   * @param now current time, ms
   * @param records every session of the other instances
   */
  presenceSynced(now: number, records: readonly PresenceRecord[]): void {
    this.#directory.remoteSynced(now, records);
  }

  /**
   * Takes news of a file stored or deleted on another instance (shared store).
   *
   * @param op `put` or `delete`
   * @param record the file and the instance whose disk holds it
   */
  fileChanged(op: "put" | "delete", record: SharedFileRecord): void {
    this.#storage.remoteChanged(op, record);
  }

  /**
   * Replaces what is known of the other instances' files (after a resubscribe).
   *
   * @param records every file on the other instances' disks
   */
  filesSynced(records: readonly SharedFileRecord[]): void {
    this.#storage.remoteSynced(records);
  }

  /**
   * Replaces the registry with the shared store's (news may have been lost,
   * or a write failed); only while `hasUnsavedChanges` is false.
   *
   * @param records every record the store holds
   * @throws {RangeError} if changes are waiting to be written
   */
  registrySynced(records: Iterable<RegistryRecord>): void {
    if (this.hasUnsavedChanges) {
      throw new RangeError("Cannot resync the registry while changes are unsaved");
    }
    this.#registry.replaceAll(records);
    for (const user of this.#storage.users()) this.#storage.removeEarlier(user);
  }

  /**
   * Reports the result of a `verify_password` output.
   *
   * @param now current time, ms
   * @param id the output's id
   * @param ok true if the password matched the hash
   */
  passwordChecked(now: number, id: number, ok: boolean): void {
    this.#accounts.passwordChecked(now, id, ok);
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
   * loose one, per address and port, if it opened under a secure session's
   * keys (that proves the address and port), else the strict one per address
   * (garbage and handshakes included). Call it before `handle`; drop the
   * datagram if it says no.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param sealed true if it opened under a secure session's keys
   * @returns true if it may be handled
   */
  admit(now: number, from: Endpoint, sealed: boolean): boolean {
    return this.#admission.datagram(now, from, sealed);
  }

  /**
   * Takes a clear `hello` (a first contact) against the rate limits: its
   * address's strict budget, or, when the address is over it, a small budget
   * of its port (`Admission.hello`). Call it instead of `admit` for a clear
   * `hello`; drop the datagram if it says no.
   *
   * @param now current time, ms
   * @param from where it came from
   * @returns true if it may be handled
   */
  admitHello(now: number, from: Endpoint): boolean {
    return this.#admission.hello(now, from);
  }

  /**
   * Takes a TCP request without a live session token against the strict
   * per-address rate limit (anything else passes); one with a live session
   * marks its connection authenticated (see `admission.ts`). A refused one is
   * answered `busy`; the driver then pauses that connection's reading for a
   * while.
   *
   * @param now current time, ms
   * @param from the connection's endpoint, with its `connId`
   * @param message the decoded frame
   * @returns true if it may be handled
   */
  admitFrame(now: number, from: Endpoint, message: Message): boolean {
    if (!isRequest(message)) return true;
    const token = "token" in message && message.token instanceof Uint8Array
      ? message.token
      : undefined;
    const session = token === undefined ? undefined : this.#directory.sessions.byToken(token);
    // A download or delete sent on from the instance of the client's session (`file_elsewhere`).
    const name = session?.name ??
      (token !== undefined && (message.type === "download" || message.type === "delete")
        ? this.#remoteUser(token)
        : undefined);
    if (name === undefined) return this.#admission.sessionlessRequest(now, from, message);
    // The connection has earned its slot: it counts against its user now.
    this.#admission.authenticated(from.connId ?? 0, name);
    return true;
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
    return this.#admission.openConnection(now, from);
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
    this.#admission.checkConnection(now, from, sample);
  }

  /** The connection limits' times, ms, for how often to check connections. */
  get connectionTimes(): { idleMs: number; frameMs: number; firstFrameMs: number } {
    return {
      idleMs: this.#admission.idleMs,
      frameMs: this.#admission.frameMs,
      firstFrameMs: this.#admission.firstFrameMs,
    };
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

  #execute(now: number, from: Endpoint, request: Request, fingerprint: string): void {
    switch (request.type) {
      case "hello":
        return this.#answer(from, request, {
          type: "hello_ok",
          reqId: request.reqId,
          tcpPort: this.#tcpPort,
          serverVersion: this.#serverVersion,
          auth: AUTH_MODES[this.#accounts.auth],
          leaseMs: this.#directory.sessions.leaseMs,
          serverKey: this.#serverKey,
        });
      case "register":
        return this.#accounts.register(now, from, request, fingerprint);
      case "deregister":
        return this.#accounts.deregister(now, from, request, fingerprint);
      case "text":
        return this.#text(from, request);
      case "login":
        return this.#accounts.login(now, from, request, fingerprint);
      case "logout":
      case "heartbeat":
      case "list":
      case "lookup":
      case "watch": {
        const session = this.#directory.session(now, from, request);
        if (session === undefined) return;
        this.#directory.handle(now, from, request, session);
        if (request.type === "heartbeat") this.#accounts.seen(now, session.name);
        return;
      }
      case "upload":
      case "download":
      case "delete":
      case "files":
        return this.#storageRequest(now, from, request);
      case "introduce": {
        const session = this.#directory.session(now, from, request);
        if (session === undefined) return;
        const reply = this.#relay.introduce(now, session, request);
        if ("code" in reply) return this.#refuse(from, request, reply.code, reply.reason);
        return this.#answer(from, request, reply);
      }
    }
  }

  #text(from: Endpoint, request: MessageOf<"text">): void {
    const session = this.#directory.sessions.byToken(request.token);
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

  #storageRequest(
    now: number,
    from: Endpoint,
    request: MessageOf<"upload" | "download" | "delete" | "files">,
  ) {
    // A download or delete redirected here from the instance that holds the
    // client's session (`file_elsewhere`) carries that session's token.
    const remote = request.type === "download" || request.type === "delete"
      ? this.#remoteUser(request.token)
      : undefined;
    const name = remote ?? this.#directory.session(now, from, request)?.name;
    if (name === undefined) return;
    switch (request.type) {
      case "upload":
        return this.#storage.upload(from, request, name);
      case "download":
        return this.#storage.download(from, request, name);
      case "delete":
        return this.#storage.delete(from, request, name);
      case "files":
        return this.#storage.list(from, request, name);
    }
  }

  /** The name of another instance's session whose token this is, if it is one and none here is. */
  #remoteUser(token: Uint8Array): string | undefined {
    return this.#directory.remoteUser(token);
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
    change: AccountChange,
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
      ...(change.takenText === undefined
        ? {}
        : { taken: errorReply(request.reqId, "name_taken", change.takenText) }),
    });
    this.#requestPersist();
  }

  #requestPersist(): void {
    const version = this.#commits.nextSnapshot();
    if (version === undefined) return;
    const registry = this.#registry;
    this.#outputs.push({
      type: "persist",
      version,
      // A snapshot costs a pass over every record: made only if read, when polled.
      get registry() {
        return registry.toJson();
      },
      changes: this.#registry.takeChanges(),
    });
  }

  #emit(event: ServerEvent): void {
    this.#outputs.push({ type: "event", event });
  }
}

function errorReply(reqId: number, code: ErrorCodeName, message: string): Reply {
  return { type: "error", reqId, code: ERROR_CODES[code], message };
}
