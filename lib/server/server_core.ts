/**
 * The server's protocol logic, sans-I/O: feed it decoded requests with their
 * source and the time, then `poll()` for replies to send, registry snapshots
 * to persist and events to log. A reply that follows a state change is held
 * back until the driver reports the snapshot durable (`persisted`).
 *
 * @module
 */
import { hmac } from "@noble/hashes/hmac";
import { sha256 } from "@noble/hashes/sha2";
import { lowerFirstWord } from "../error_line.ts";
import { toHex } from "../hex.ts";
import type { Random } from "../random.ts";
import { nameProblem } from "../wire/client_name.ts";
import { encodeMessage } from "../wire/codec.ts";
import { ERROR_CODES, type ErrorCodeName } from "../wire/error_code.ts";
import {
  isRequest,
  type Message,
  type MessageOf,
  type Reply,
  type Request,
  TOKEN_BYTES,
} from "../wire/messages.ts";
import { Registry, type RegistryJson, type RegistryRecord } from "./registry.ts";
import { DEFAULT_REPLAY_TTL_MS, ReplayCache, type ReplayCacheOptions } from "./replay_cache.ts";

/** Where a request came from, and so where its reply goes. */
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
  | { readonly kind: "save_failed"; readonly reason: string };

/** What the core asks its driver to do. */
export type ServerOutput =
  | { readonly type: "send"; readonly to: Endpoint; readonly message: Reply }
  | { readonly type: "persist"; readonly version: number; readonly registry: RegistryJson }
  | { readonly type: "event"; readonly event: ServerEvent };

/** Counters for the operator. */
export interface ServerStats {
  /** Requests handled, replays included. */
  requests: number;
  /** Requests answered from the replay cache. */
  replays: number;
  /** Requests refused with an error reply. */
  refused: number;
}

/** Options of a {@linkcode ServerCore}. */
export interface ServerCoreOptions {
  /** The registry loaded at start. */
  registry: Registry;
  /** Source of the token secret when none is given. */
  random: Random;
  /**
   * The server's secret key (32 bytes) from which session tokens are derived.
   * Pass the persisted one so that a register executed just before a crash
   * and retransmitted after the restart gets its original token back.
   */
  secret?: Uint8Array;
  /** The server's TCP port, told to clients in `hello_ok`. */
  tcpPort: number;
  /** The server's version string. */
  version: string;
  /** Replay cache limits. */
  replay?: ReplayCacheOptions;
}

interface HeldReply {
  version: number;
  to: Endpoint;
  client: string;
  reqId: number;
  fingerprint: string;
  reply: Reply;
  event: ServerEvent;
  undo: () => void;
  failure: Reply;
}

/**
 * The server core.
 *
 * @example
 * ```ts
 * const core = new ServerCore({ registry: new Registry(), random: cryptoRandom,
 *   tcpPort: 3001, version: "0.1.0" });
 * core.handle(now, { transport: "udp", address: "127.0.0.1", port: 5000 }, message);
 * for (let out = core.poll(); out; out = core.poll()) {
 *   // send, persist (then core.persisted(version)), or log
 * }
 * ```
 */
export class ServerCore {
  #registry: Registry;
  #secret: Uint8Array;
  #tcpPort: number;
  #serverVersion: string;
  #replay: ReplayCache;
  #replayTtlMs: number;
  #outputs: ServerOutput[] = [];
  #held: HeldReply[] = [];
  #changeVersion = 0;
  #persistedVersion = 0;
  #persistInFlight = false;
  #stats: ServerStats = { requests: 0, replays: 0, refused: 0 };

  /** @param options the registry, randomness and server facts */
  constructor(options: ServerCoreOptions) {
    this.#registry = options.registry;
    this.#secret = options.secret ?? options.random.bytes(32);
    this.#tcpPort = options.tcpPort;
    this.#serverVersion = options.version;
    this.#replay = new ReplayCache(options.replay);
    this.#replayTtlMs = options.replay?.ttlMs ?? DEFAULT_REPLAY_TTL_MS;
  }

  /** The live registry (read it; change it only through requests). */
  get registry(): Registry {
    return this.#registry;
  }

  /** Counters since start. */
  get stats(): Readonly<ServerStats> {
    return this.#stats;
  }

  /** True while a registry snapshot is being written or waits to be. */
  get hasUnsavedChanges(): boolean {
    return this.#persistedVersion < this.#changeVersion;
  }

  /**
   * Handles one decoded message.
   *
   * @param now current time, ms since the epoch
   * @param from where it came from
   * @param message the decoded message
   */
  handle(now: number, from: Endpoint, message: Message): void {
    if (!isRequest(message)) {
      this.#emit({ kind: "unexpected", from, type: message.type });
      return;
    }
    this.#stats.requests++;
    const fingerprint = toHex(sha256(encodeMessage(message)).subarray(0, 16));
    const seen = this.#replay.check(now, message.client, message.reqId, fingerprint);
    if (seen.state === "pending") return;
    if (seen.state === "done") {
      this.#stats.replays++;
      this.#outputs.push({ type: "send", to: from, message: seen.reply });
      this.#emit({ kind: "replayed", from, request: message.type, reqId: message.reqId });
      return;
    }
    this.#replay.begin(now, message.client, message.reqId, fingerprint);
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

  /**
   * Reports that the snapshot of `version` is durable: the replies it held
   * go out.
   *
   * @param version the version from the `persist` output
   */
  persisted(version: number): void {
    this.#persistInFlight = false;
    this.#persistedVersion = Math.max(this.#persistedVersion, version);
    const ready = this.#held.filter((h) => h.version <= version);
    this.#held = this.#held.filter((h) => h.version > version);
    for (const h of ready) {
      this.#replay.complete(h.client, h.reqId, h.reply);
      this.#outputs.push({ type: "send", to: h.to, message: h.reply });
      this.#emit(h.event);
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
      this.#outputs.push({ type: "send", to: h.to, message: h.failure });
    }
    this.#persistedVersion = Math.max(version, this.#changeVersion);
  }

  #execute(now: number, from: Endpoint, request: Request, fingerprint: string): void {
    switch (request.type) {
      case "hello":
        this.#answer(from, request, {
          type: "hello_ok",
          reqId: request.reqId,
          tcpPort: this.#tcpPort,
          serverVersion: this.#serverVersion,
        });
        return;
      case "register":
        this.#register(now, from, request, fingerprint);
        return;
      case "deregister":
        this.#deregister(from, request, fingerprint);
        return;
      case "text":
        this.#text(from, request);
        return;
    }
  }

  #register(
    now: number,
    from: Endpoint,
    request: MessageOf<"register">,
    fingerprint: string,
  ): void {
    const name = request.name;
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
    const token = this.#token(fingerprint);
    const existing = this.#registry.get(name);
    if (
      existing !== undefined && existing.registeredBy === fingerprint &&
      now - Date.parse(existing.registeredAt) <= this.#replayTtlMs
    ) {
      // This very request was executed just before a crash that lost the
      // replay cache: answer it again, within the replay window only, and
      // only once it is durable.
      if (this.#held.some((h) => h.fingerprint === fingerprint)) return;
      return this.#answer(from, request, { type: "register_ok", reqId: request.reqId, token });
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
      tokenSha256: toHex(sha256(token)),
      registeredBy: fingerprint,
    };
    this.#registry.add(record);
    this.#hold(from, request, fingerprint, {
      reply: { type: "register_ok", reqId: request.reqId, token },
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
      failureText: `Cannot register "${name}": the server could not save its registry`,
    });
  }

  #deregister(from: Endpoint, request: MessageOf<"deregister">, fingerprint: string): void {
    const record = this.#registry.get(request.name);
    if (record === undefined) {
      return this.#refuse(
        from,
        request,
        "not_registered",
        `Cannot deregister "${request.name}": not registered`,
      );
    }
    if (!this.#tokenMatches(record, request.token)) {
      return this.#refuse(
        from,
        request,
        "bad_token",
        `Cannot deregister "${record.name}": the session token does not match`,
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
      failureText: `Cannot deregister "${record.name}": the server could not save its registry`,
    });
  }

  #text(from: Endpoint, request: MessageOf<"text">): void {
    const record = request.name === "" ? undefined : this.#registry.get(request.name);
    const verified = record !== undefined && this.#tokenMatches(record, request.token);
    this.#emit({
      kind: "text",
      from,
      reqId: request.reqId,
      name: verified ? record.name : request.name,
      verified,
      text: request.text,
    });
    this.#answer(from, request, { type: "text_ok", reqId: request.reqId });
  }

  #token(fingerprint: string): Uint8Array {
    const input = new TextEncoder().encode(`register/${fingerprint}`);
    return hmac(sha256, this.#secret, input).subarray(0, TOKEN_BYTES);
  }

  #tokenMatches(record: RegistryRecord, token: Uint8Array): boolean {
    if (record.tokenSha256 === "" || token.length !== TOKEN_BYTES) return false;
    const actual = toHex(sha256(token));
    let diff = 0;
    for (let i = 0; i < actual.length; i++) {
      diff |= actual.charCodeAt(i) ^ record.tokenSha256.charCodeAt(i);
    }
    return diff === 0;
  }

  #answer(to: Endpoint, request: Request, reply: Reply): void {
    this.#replay.complete(request.client, request.reqId, reply);
    this.#outputs.push({ type: "send", to, message: reply });
  }

  #refuse(from: Endpoint, request: Request, code: ErrorCodeName, reason: string): void {
    this.#stats.refused++;
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
    change: { reply: Reply; event: ServerEvent; undo: () => void; failureText: string },
  ): void {
    this.#changeVersion++;
    this.#held.push({
      version: this.#changeVersion,
      to,
      client: request.client,
      reqId: request.reqId,
      fingerprint,
      reply: change.reply,
      event: change.event,
      undo: change.undo,
      failure: errorReply(request.reqId, "not_saved", change.failureText),
    });
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

function errorReply(reqId: number, code: ErrorCodeName, message: string): Reply {
  return { type: "error", reqId, code: ERROR_CODES[code], message };
}
