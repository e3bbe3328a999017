/**
 * The directory, sans-I/O: who is online. It opens, renews and ends
 * sessions (leases kept by heartbeats), remembers why a session ended so
 * that its client is told on its next request, publishes joins and leaves to
 * watchers (resending what they did not acknowledge), and answers
 * `logout`, `heartbeat`, `list`, `lookup` and `watch`.
 *
 * With shared presence (several instances), a session is held by one
 * instance at a time and can move: a client whose instance stopped answering
 * sends its requests, with its token, to another instance, which takes the
 * session over from the shared record (same token hash, same channel key)
 * with its start time; the instance it left, told of the join, lets its copy
 * go without a word. Watchers see neither a leave nor a second join.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2";
import { introductionNonce, introductionPsk, isFreshNonce } from "../crypto/introduction.ts";
import { fromHex, toHex } from "../hex.ts";
import { hostPort } from "../host_port.ts";
import type { Random } from "../random.ts";
import { nameKey } from "../wire/client_name.ts";
import type { ErrorCodeName } from "../wire/error_code.ts";
import {
  MAX_DATAGRAM_BYTES,
  MAX_FRAME_BYTES,
  type MessageOf,
  PRESENCE_CHANGES,
  type Reply,
  type Request,
  SESSION_END_REASONS,
  TOKEN_BYTES,
} from "../wire/messages.ts";
import { PresenceFeed, type PresenceSend } from "./presence_feed.ts";
import type { Endpoint, ServerEvent, ServerOutput } from "./server_event.ts";
import { type Session, SessionTable } from "./session_table.ts";
import type { PresenceRecord } from "./store.ts";
import { RemoteTokens } from "./remote_tokens.ts";

/** What the directory needs of the core that holds it. */
export interface DirectoryHost {
  /** Answers a request with an error (counted, logged, remembered for replays). */
  refuse(from: Endpoint, request: Request, code: ErrorCodeName, reason: string): void;
  /** Answers a request. */
  answer(from: Endpoint, request: Request, reply: Reply): void;
  /** Logs an event. */
  emit(event: ServerEvent): void;
  /** Sends a message that answers no request (`session_ended`, `presence`). */
  output(output: ServerOutput): void;
}

/** The requests the directory answers. */
export type DirectoryRequest = MessageOf<"logout" | "heartbeat" | "list" | "lookup" | "watch">;

/**
 * How often a session's lease is written again to the shared store, at most,
 * ms: its shared deadline trails the real one by less than this.
 */
const RENEW_EVERY_MS = 100;

/** How many ended sessions are remembered, to tell their clients why. */
const ENDED_SESSIONS_KEPT = 10_000;

/** Why a session ended, and where its client was, for its client's next request. */
interface EndedSession {
  code: ErrorCodeName;
  message: string;
  ip: string;
  udpPort: number;
}

/**
 * The sessions, their presence news and the memory of ended ones.
 *
 * @example
 * ```ts
 * const directory = new Directory(host, { random, leaseMs: 30_000, stats });
 * const token = directory.start(now, from, "Alice", 4000, 5000);
 * directory.session(from, request); // Alice's session, or refused
 * ```
 */
export class Directory {
  #host: DirectoryHost;
  #random: Random;
  #stats: { presenceResent: number };
  #sessions: SessionTable;
  #feed = new PresenceFeed();
  #ended = new Map<string, EndedSession>();
  /** True when sessions are shared with other instances (`presence_store` outputs). */
  #shared: boolean;
  /** The other instances' sessions, by name key. */
  #remote = new Map<string, PresenceRecord>();
  /** Their token hashes: a request with one of those tokens takes its session over. */
  #remoteTokens = new RemoteTokens();
  #introductionSecret: () => Uint8Array;
  /** When each session's lease was last written to the shared store. */
  #sharedAt = new WeakMap<Session, number>();

  /**
   * @param host the core's replies, events and outputs
   * @param options the token source, the lease, the counter of resent news,
   *   and whether sessions are shared with other instances
   */
  constructor(
    host: DirectoryHost,
    options: {
      random: Random;
      leaseMs: number;
      stats: { presenceResent: number };
      shared?: boolean;
      /** The secret of introductions' PSKs (`lib/crypto/introduction.ts`). */
      introductionSecret: () => Uint8Array;
    },
  ) {
    this.#introductionSecret = options.introductionSecret;
    this.#host = host;
    this.#shared = options.shared ?? false;
    this.#random = options.random;
    this.#stats = options.stats;
    this.#sessions = new SessionTable(options.leaseMs);
  }

  /** The active sessions (read only). */
  get sessions(): SessionTable {
    return this.#sessions;
  }

  /** How many sessions watch presence news. */
  get watchers(): number {
    return this.#feed.size;
  }

  /**
   * Tells whether a name is online here or, with shared presence, on
   * another instance.
   *
   * @param name any name
   * @returns true if it has a live session somewhere
   */
  isOnline(name: string): boolean {
    return this.#sessions.byName(name) !== undefined || this.#remote.has(nameKey(name));
  }

  /**
   * @param name any name
   * @returns its session on another instance (shared presence), unless it has one here
   */
  remoteSession(name: string): PresenceRecord | undefined {
    return this.#sessions.byName(name) === undefined ? this.#remote.get(nameKey(name)) : undefined;
  }

  /**
   * @param token a session token
   * @returns the name of another instance's session whose token this is, unless one here is
   */
  remoteUser(token: Uint8Array): string | undefined {
    if (this.#remoteTokens.empty || this.#sessions.byToken(token) !== undefined) return undefined;
    return this.#remoteTokens.name(toHex(sha256(token)));
  }

  /**
   * Finds the session of a request's token (taking it over from another
   * instance if it is held there: the client moved), or refuses the request
   * (saying why its session ended, when that is remembered).
   *
   * @param now current time, ms
   * @param from where it came from
   * @param request a request with a token
   * @returns the session, or undefined once refused
   */
  session(
    now: number,
    from: Endpoint,
    request: Request & { readonly token: Uint8Array },
  ): Session | undefined {
    const session = this.#sessions.byToken(request.token) ?? this.#takeOver(now, from, request);
    if (session !== undefined) {
      this.#follow(from, session);
      return session;
    }
    const ended = this.#ended.get(toHex(request.token));
    this.#host.refuse(
      from,
      request,
      ended?.code ?? "not_logged_in",
      ended?.message ?? "Not logged in (or the server restarted); log in again",
    );
    return undefined;
  }

  /**
   * Takes over another instance's session whose token a request carries,
   * over a channel with the key that session logged in with: the client
   * moved here (its instance stopped answering or shut down). The session
   * keeps its token and start time; watchers are told nothing, since the
   * client never left.
   */
  #takeOver(
    now: number,
    from: Endpoint,
    request: Request & { readonly token: Uint8Array },
  ): Session | undefined {
    const name = this.remoteUser(request.token);
    const record = name === undefined ? undefined : this.#remote.get(nameKey(name));
    const key = from.clientKey;
    if (record?.key === undefined || key === undefined || record.key !== toHex(key)) return;
    this.#dropRemote(record.name);
    const udpPort = from.transport === "udp" ? from.port : record.udpPort;
    const { session } = this.#sessions.open(now, {
      name: record.name,
      token: request.token,
      ip: from.address,
      udpPort,
      tcpPort: record.tcpPort,
      key,
      since: record.since,
    });
    this.#host.emit({
      kind: "logged_in",
      name: session.name,
      ip: session.ip,
      udpPort,
      tcpPort: session.tcpPort,
      transport: from.transport,
      replaced: false,
      moved: true,
    });
    this.#share(now, "join", session);
    return session;
  }

  /** Forgets another instance's session of a name (it is held here now). */
  #dropRemote(name: string): PresenceRecord | undefined {
    const record = this.#remote.get(nameKey(name));
    this.#remote.delete(nameKey(name));
    this.#remoteTokens.forget(name);
    return record;
  }

  /**
   * Follows a client whose NAT gave its UDP socket a new public port (or
   * address): a request that carries the session's token over UDP from
   * elsewhere moves the session there, so that pushes, peers' lookups and
   * the relay reach it again, on every instance. The token is the proof (it
   * travels sealed).
   */
  #follow(from: Endpoint, session: Session): void {
    if (from.transport !== "udp" || from.second === true) return;
    if (session.ip === from.address && session.udpPort === from.port) return;
    session.ip = from.address;
    session.udpPort = from.port;
    if (session.watching) this.#feed.watch(session.token, session.ip, session.udpPort);
    // Other instances answer lookups and introductions from shared presence:
    // it takes the new address at once (a join replaces the record), with the
    // lease as last renewed.
    this.#share(session.leaseUntil - this.#sessions.leaseMs, "join", session);
  }

  /**
   * Tells whether a token proves its sender receives what is sent to `to`:
   * a live session's token, or one sent again from the address its ended
   * session was at.
   *
   * @param token a session token
   * @param to where a reply would go
   * @returns true if proven
   */
  proves(token: Uint8Array, to: Endpoint): boolean {
    if (this.#sessions.byToken(token) !== undefined) return true;
    const ended = this.#ended.get(toHex(token));
    return ended !== undefined && ended.ip === to.address && ended.udpPort === to.port;
  }

  /**
   * Records a watcher's acknowledgement of presence news.
   *
   * @param token the watcher's session token
   * @param seq the news acknowledged
   */
  ack(token: Uint8Array, seq: number): void {
    const session = this.#sessions.byToken(token);
    if (session !== undefined) this.#feed.ack(session.token, seq);
  }

  /**
   * Opens a session (replacing one of the same name, whose client is told),
   * and publishes the join.
   *
   * @param now current time, ms
   * @param from where its client is
   * @param name the account's name
   * @param udpPort the client's UDP port
   * @param tcpPort the client's TCP port
   * @param token the token to use (a new random one by default)
   * @returns the token
   */
  start(
    now: number,
    from: Endpoint,
    name: string,
    udpPort: number,
    tcpPort: number,
    token: Uint8Array = this.#random.bytes(TOKEN_BYTES),
  ): Uint8Array {
    // The shared store holds one session a name: this one, from now on. If
    // the same client (same key) had it on another instance, it moved here by
    // logging in again: it keeps its start time and watchers hear nothing.
    const elsewhere = this.#dropRemote(name);
    const key = from.clientKey;
    const moved = elsewhere?.key !== undefined && key !== undefined && elsewhere.key === toHex(key);
    const { session, replaced } = this.#sessions.open(now, {
      name,
      token,
      ip: from.address,
      udpPort,
      tcpPort,
      key,
      ...(moved ? { since: elsewhere.since } : {}),
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
    this.#host.emit({
      kind: "logged_in",
      name,
      ip: session.ip,
      udpPort,
      tcpPort,
      transport: from.transport,
      replaced: replaced !== undefined,
      ...(moved ? { moved } : {}),
    });
    if (!moved) {
      this.#sendPresence(
        this.#feed.publish(now, PRESENCE_CHANGES.joined, onlineClient(now, session), token),
      );
    }
    this.#share(now, "join", session);
    this.#emitActive();
    return token;
  }

  /**
   * The client had not heard its `register_ok` or `login_ok` until now: its
   * session's lease starts now, and a session that expired meanwhile (and
   * was not replaced) opens again with the same token.
   *
   * @param now current time, ms
   * @param from where the retransmitted request came from
   * @param request the request
   * @param token the token its reply carried
   * @param name the account's name, if it still exists
   */
  resume(
    now: number,
    from: Endpoint,
    request: MessageOf<"register" | "login">,
    token: Uint8Array,
    name: string | undefined,
  ): void {
    const session = this.#sessions.byToken(token);
    if (session !== undefined) {
      this.#sessions.renew(now, session);
      return this.#share(now, "renew", session);
    }
    const ended = this.#ended.get(toHex(token));
    if (ended?.code !== "not_logged_in" || name === undefined) return;
    if (this.#sessions.byName(name) !== undefined) return;
    this.#ended.delete(toHex(token));
    const udpPort = from.transport === "udp" ? from.port : request.udpPort;
    this.start(now, from, name, udpPort, request.tcpPort, token);
  }

  /**
   * Closes a session if it is still open, and publishes the leave.
   *
   * @param now current time, ms
   * @param session the session
   * @param why `exit` (logout) or `deregister`
   */
  close(now: number, session: Session, why: "exit" | "deregister"): void {
    if (this.#sessions.byToken(session.token) !== session) return;
    this.#sessions.close(session);
    this.#end(now, session, why);
    this.#emitActive();
  }

  /**
   * Answers a directory request of a live session.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param request the request
   * @param session its session
   */
  handle(now: number, from: Endpoint, request: DirectoryRequest, session: Session): void {
    const host = this.#host;
    switch (request.type) {
      case "logout":
        this.close(now, session, "exit");
        return host.answer(from, request, { type: "logout_ok", reqId: request.reqId });
      case "heartbeat":
        this.#sessions.renew(now, session);
        this.#share(now, "renew", session);
        return host.answer(from, request, { type: "heartbeat_ok", reqId: request.reqId });
      case "list":
        return host.answer(from, request, this.#list(now, from, request));
      case "lookup":
        return this.#lookup(now, from, request);
      case "watch":
        session.watching = request.on !== 0;
        if (session.watching) this.#feed.watch(session.token, session.ip, session.udpPort);
        else this.#feed.unwatch(session.token);
        return host.answer(from, request, { type: "watch_ok", reqId: request.reqId });
    }
  }

  /**
   * Answers a `lookup`: where the client is, the static key it logged in
   * with, and an introduction (nonce and PSK) for a peer session. A lookup
   * without a nonce is the requester's: a fresh nonce, and the PSK of
   * (requester's key, target's key). One with a nonce is the responder's
   * check of a request: the nonce must be fresh, and the PSK is of
   * (target's key, requester's key), so only the two can have it.
   */
  #lookup(now: number, from: Endpoint, request: MessageOf<"lookup">): void {
    const host = this.#host;
    const target = this.#sessions.byName(request.name) ?? this.#remote.get(nameKey(request.name));
    if (target === undefined) {
      return host.refuse(from, request, "not_online", `"${request.name}" is not online`);
    }
    const theirs = "token" in target ? target.key : remoteKey(target);
    const ours = from.clientKey;
    let nonce: Uint8Array = new Uint8Array(0);
    let psk: Uint8Array = new Uint8Array(0);
    if (theirs !== undefined && ours !== undefined) {
      if (request.nonce.length === 0) {
        nonce = introductionNonce(now, this.#random.bytes(8));
        psk = introductionPsk(this.#introductionSecret(), ours, theirs, nonce);
      } else if (isFreshNonce(request.nonce, now)) {
        nonce = request.nonce.slice();
        psk = introductionPsk(this.#introductionSecret(), theirs, ours, nonce);
      } else {
        return host.refuse(
          from,
          request,
          "bad_request",
          `The introduction to "${target.name}" is stale or malformed; ask again`,
        );
      }
    }
    return host.answer(from, request, {
      type: "lookup_ok",
      reqId: request.reqId,
      ...onlineClient(now, target),
      key: theirs ?? new Uint8Array(0),
      nonce,
      psk,
    });
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
      this.#end(now, session, "lease", {
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
   * Takes news of another instance's session: a join (or a move) is
   * published to watchers unless the name has a session here, a leave too.
   * A join of a session older than this instance's own of the name is
   * stale (it arrived after the client moved here) and is ignored.
   *
   * @param now current time, ms
   * @param op `join` or `leave`
   * @param record the session
   */
  remoteChanged(now: number, op: "join" | "leave", record: PresenceRecord): void {
    const key = nameKey(record.name);
    const known = this.#remote.get(key);
    const local = this.#sessions.byName(record.name);
    if (op === "leave") {
      if (known === undefined) return;
      this.#dropRemote(record.name);
      if (local === undefined) this.#publishRemote(now, PRESENCE_CHANGES.left, known);
      return;
    }
    // News of a session that opened before this instance's own session of the name is stale: it
    // came late over Redis, after the client moved here (its start times are both instances'
    // clocks, which agree far closer than a client moves).
    if (local !== undefined && record.since < local.since) return;
    this.#remote.set(key, record);
    this.#remoteTokens.forget(record.name);
    this.#remoteTokens.learn(record);
    if (local !== undefined) return this.#endedElsewhere(local, record);
    const sameSession = known !== undefined && known.tokenHash === record.tokenHash;
    if (sameSession || (known?.ip === record.ip && known.udpPort === record.udpPort)) return;
    this.#publishRemote(now, PRESENCE_CHANGES.joined, record);
  }

  /**
   * Another instance now holds the session of a name that has one here: the
   * shared store keeps one a name. If it is this very session (same token),
   * its client moved there and this copy goes without a word; otherwise a
   * login there replaced it, and its client is told, as on one instance.
   */
  #endedElsewhere(local: Session, record: PresenceRecord): void {
    this.#sessions.close(local);
    this.#feed.unwatch(local.token);
    if (record.tokenHash === toHex(sha256(local.token))) {
      this.#host.emit({ kind: "logged_out", name: local.name, why: "moved" });
    } else {
      this.#host.emit({ kind: "logged_out", name: local.name, why: "replaced" });
      this.#push(
        local,
        SESSION_END_REASONS.replaced,
        `"${local.name}" logged in elsewhere (${hostPort(record.ip, record.udpPort)}); ` +
          "this session has ended",
      );
    }
    this.#emitActive();
  }

  /**
   * Replaces the other instances' sessions after news may have been lost,
   * publishing the differences as joins and leaves.
   *
   * @param now current time, ms
   * @param records every session of the other instances
   */
  remoteSynced(now: number, records: readonly PresenceRecord[]): void {
    const fresh = new Set(records.map((r) => nameKey(r.name)));
    for (const known of [...this.#remote.values()]) {
      if (!fresh.has(nameKey(known.name))) this.remoteChanged(now, "leave", known);
    }
    for (const record of records) this.remoteChanged(now, "join", record);
  }

  /**
   * Writes every session here to the shared store again, with a fresh
   * deadline: the store was away, and the deadlines it holds went stale.
   *
   * @param now current time, ms
   */
  renewShared(now: number): void {
    for (const session of this.#sessions.all()) {
      this.#sharedAt.delete(session);
      this.#share(now, "renew", session);
    }
  }

  #publishRemote(now: number, change: number, record: PresenceRecord): void {
    this.#sendPresence(this.#feed.publish(now, change, onlineClient(now, record)));
    this.#emitActive();
  }

  #share(now: number, op: "join" | "renew" | "leave", session: Session): void {
    if (!this.#shared) return;
    // A lease written less than RENEW_EVERY_MS ago is fresh enough: a flood
    // of heartbeats costs the shared store one write per session per interval.
    if (op === "renew" && now - (this.#sharedAt.get(session) ?? -Infinity) < RENEW_EVERY_MS) return;
    this.#sharedAt.set(session, now);
    const { name, ip, udpPort, tcpPort, since, key } = session;
    // The token's hash lets the instance holding a file serve a redirected download.
    const tokenHash = toHex(sha256(session.token));
    this.#host.output({
      type: "presence_store",
      op,
      record: {
        name,
        ip,
        udpPort,
        tcpPort,
        since,
        tokenHash,
        ...(key ? { key: toHex(key) } : {}),
      },
      deadline: now + this.#sessions.leaseMs,
    });
  }

  /** Every online client, here and (shared presence) on other instances, by name. */
  #online(after: string): (Session | PresenceRecord)[] {
    if (this.#remote.size === 0) return this.#sessions.list(after);
    const all = new Map<string, Session | PresenceRecord>();
    for (const [key, record] of this.#remote) if (key > after) all.set(key, record);
    // A session here stands for its name, whatever another instance says.
    for (const [key, session] of this.#sessions.entries()) if (key > after) all.set(key, session);
    return [...all.keys()].sort().map((key) => all.get(key)!);
  }

  #list(now: number, from: Endpoint, request: MessageOf<"list">): Reply {
    const limit = from.transport === "udp" ? MAX_DATAGRAM_BYTES : MAX_FRAME_BYTES;
    const after = request.after === "" ? "" : nameKey(request.after);
    const remaining = this.#online(after);
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
    return {
      type: "list_page",
      reqId: request.reqId,
      total: after === "" ? remaining.length : this.#online("").length,
      more: clients.length < remaining.length ? 1 : 0,
      clients,
    };
  }

  /** After a session was closed: tell watchers, remember why, tell its client. */
  #end(
    now: number,
    session: Session,
    why: "exit" | "lease" | "deregister",
    notice?: { reason: number; message: string },
  ): void {
    this.#feed.unwatch(session.token);
    this.#host.emit({ kind: "logged_out", name: session.name, why });
    if (notice !== undefined) {
      this.#push(session, notice.reason, notice.message);
    }
    this.#share(now, "leave", session);
    // Still online on another instance (it moved there): no leave to tell.
    if (this.#remote.has(nameKey(session.name))) return;
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
    this.#host.output({
      type: "send",
      to: { transport: "udp", address: session.ip, port: session.udpPort },
      message: { type: "session_ended", token: session.token, reason, message },
    });
  }

  #sendPresence(sends: readonly PresenceSend[]): void {
    for (const send of sends) {
      for (const news of send.news) {
        this.#host.output({
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
    const names = this.#online("").map((s) => s.name);
    // With other instances' sessions in the list, say how many are this one's (none after a
    // shutdown, which would otherwise seem to leave everyone listed).
    const here = this.#shared ? { here: this.#sessions.size } : {};
    this.#host.emit({ kind: "active", names, ...here });
  }
}

/** The key of a client on another instance, if it shared one. */
function remoteKey(record: PresenceRecord): Uint8Array | undefined {
  return record.key === undefined ? undefined : fromHex(record.key);
}

function onlineClient(now: number, session: Session | PresenceRecord) {
  return {
    name: session.name,
    ip: session.ip,
    udpPort: session.udpPort,
    tcpPort: session.tcpPort,
    onlineMs: Math.max(0, Math.floor(now - session.since)),
  };
}

function byteLength(text: string): number {
  return new TextEncoder().encode(text).length;
}
