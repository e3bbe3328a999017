/**
 * The client's link to the server: hello, register, login, logout,
 * deregister and TCP text; heartbeats that hold the session's lease, and a
 * new login by itself (open mode) when the server forgot the session. Other
 * parts send their requests through it; a move to another instance of the
 * service sends what is in flight there and carries the session over. Over
 * 700 lines because the login by itself, the move and the commands that wait
 * for them share one state (token, timers, waiting requests) that a split
 * would spread over two files.
 *
 * @module
 */
import type { Random } from "../random.ts";
import { nameProblem } from "../wire/client_name.ts";
import { errorCodeName } from "../wire/error_code.ts";
import {
  AUTH_MODES,
  MAX_TEXT_BYTES,
  type Message,
  type MessageOf,
  type Reply,
  SESSION_END_REASONS,
} from "../wire/messages.ts";
import type { FailureCode, SessionEndReason } from "./client_event.ts";
import type { Outbox } from "./outbox.ts";
import { retryDelay, type RetryPolicy } from "./retry_policy.ts";
import { type RequestBody, ServerSession, type Via } from "./server_session.ts";
import type { ClientTimer, TimerTable } from "./timer_table.ts";

/** How a request to the server ended: its reply, or why there is none. */
export type RequestOutcome =
  | { readonly type: "reply"; readonly reply: Reply }
  | { readonly type: "failed"; readonly code: FailureCode; readonly reason: string };

/** The commands the server link runs. */
export type LinkCommand =
  | { readonly kind: "hello" | "logout" | "deregister" }
  | { readonly kind: "register"; readonly name?: string }
  | { readonly kind: "login"; readonly name: string; readonly secret: Uint8Array }
  | { readonly kind: "tcp"; readonly text: string };

/** Told when the session with the server ends or comes back by itself. */
export interface LinkListener {
  /** The session ended; `resuming` if a new login by itself will follow. */
  ended(resuming: boolean): void;
  /** Logged in again by itself (a new token), or moved to another instance (the same one). */
  resumed(now: number, token: Uint8Array): void;
}

/** Options of a {@linkcode ServerLink}. */
export interface ServerLinkOptions {
  random: Random;
  retry?: RetryPolicy;
  /** The name to register under, if known. */
  name?: string;
  /** The client's own UDP port. */
  udpPort: number;
  /** The client's declared TCP port. */
  tcpPort: number;
  /** The transport for register, login, logout and deregister. */
  via: Via;
  /** The server's address as the user gave it, for messages. */
  server: string;
  /**
   * True if the client has other instances of the service to move to
   * (`--server a,b`): a shutdown notice then moves it (a `move` output)
   * instead of ending its session.
   */
  failover?: boolean;
  /** Where outputs go. */
  outbox: Outbox;
  /** The core's timers; the link owns `requests`, `heartbeat` and `relogin`. */
  timers: TimerTable<ClientTimer>;
}

/** The longest wait between heartbeats, ms: they also keep NAT bindings to the server alive. */
export const MAX_HEARTBEAT_INTERVAL_MS = 25_000;

/**
 * The server link.
 *
 * @example
 * ```ts
 * const link = new ServerLink({ random, udpPort: 5000, tcpPort: 5001, via: "udp",
 *   server: "localhost:3000", outbox, timers });
 * link.run(now, 1, { kind: "hello" });
 * ```
 */
export class ServerLink {
  #session: ServerSession;
  #options: ServerLinkOptions;
  /** The instance in use, `host:port`. */
  #server: string;
  #outbox: Outbox;
  #timers: TimerTable<ClientTimer>;
  #handlers = new Map<number, (now: number, outcome: RequestOutcome) => void>();
  #listener: LinkListener | undefined;
  #name: string | undefined;
  #serverTcpPort: number | undefined;
  #serverVersion: string | undefined;
  #auth: "open" | "password" | undefined;
  #leaseMs = 30_000;
  #loggedInAs: string | undefined;
  #token: Uint8Array | undefined;
  /**
   * Open mode: the secret a new login by itself sends, empty for a
   * key-pair identity (the channel's key is the proof); undefined when
   * there is no identity to log in again with.
   */
  #key: Uint8Array | undefined;
  #heartbeatReq: number | undefined;
  /** Who to log in again as when the `relogin` timer fires. */
  #relogin: { name: string; key: Uint8Array } | undefined;
  /** Re-logins refused in a row (`locked_out`, `busy`), for the backoff. */
  #reloginRefusals = 0;
  /** True while a login by itself is waiting for its answer. */
  #reloginInFlight = false;
  /** Commands' requests refused for a lost session, to go again after the new login. */
  #afterRelogin: { resume: (now: number, token: Uint8Array) => void; fail: () => void }[] = [];

  /** @param options ports, name, transport, randomness, outbox and timers */
  constructor(options: ServerLinkOptions) {
    this.#options = options;
    this.#server = options.server;
    this.#outbox = options.outbox;
    this.#timers = options.timers;
    this.#name = options.name;
    this.#session = new ServerSession({ random: options.random, retry: options.retry });
  }

  /** @param listener told when the session ends or comes back */
  listen(listener: LinkListener): void {
    this.#listener = listener;
  }

  /** The server's TCP port, once `hello` has learned it. */
  get serverTcpPort(): number | undefined {
    return this.#serverTcpPort;
  }

  /** The server's version, once `hello` has learned it. */
  get serverVersion(): string | undefined {
    return this.#serverVersion;
  }

  /** How the server checks logins, once `hello` has learned it. */
  get auth(): "open" | "password" | undefined {
    return this.#auth;
  }

  /** The name given by flag or by the last register/login. */
  get name(): string | undefined {
    return this.#name;
  }

  /** The random client id every request carries (hex). */
  get clientId(): string {
    return this.#session.clientId;
  }

  /** The name this client is logged in as, if any. */
  get loggedInAs(): string | undefined {
    return this.#loggedInAs;
  }

  /** True if the client has other instances to move to (`--server a,b`). */
  get canMove(): boolean {
    return this.#options.failover === true;
  }

  /** The session token, while logged in. */
  get token(): Uint8Array | undefined {
    return this.#token;
  }

  /** Retransmissions made since start. */
  get retransmissions(): number {
    return this.#session.retransmissions;
  }

  /**
   * A third of the lease (two heartbeats can be lost before it runs out),
   * at most 25 s, so that a NAT's binding for the UDP socket (often 30 s)
   * is refreshed even with a long lease.
   */
  get #heartbeatInterval(): number {
    return Math.min(MAX_HEARTBEAT_INTERVAL_MS, Math.max(200, Math.floor(this.#leaseMs / 3)));
  }

  /**
   * Sends a request; `handler` gets its reply or failure.
   *
   * @param now current time, ms
   * @param body the request
   * @param via its transport
   * @param handler called once with the outcome
   * @param extraMs more time before giving up (large uploads)
   * @returns the request id
   */
  request(
    now: number,
    body: RequestBody,
    via: Via,
    handler: (now: number, outcome: RequestOutcome) => void,
    extraMs = 0,
  ): number {
    const reqId = this.#session.start(now, body, via, extraMs);
    this.#handlers.set(reqId, handler);
    this.#drain(now);
    return reqId;
  }

  /**
   * Sends a command's request: a failure, an error reply or an unexpected
   * reply fails the command; the expected reply goes to `onReply`.
   *
   * @param now current time, ms
   * @param id the command's number
   * @param request the command's name, the request, its transport and the reply it expects
   * @param onReply called with the expected reply
   * @returns the request id
   */
  ask<T extends Reply["type"]>(
    now: number,
    id: number,
    request: {
      command: string;
      body: RequestBody;
      via: Via;
      expect: T;
      extraMs?: number;
      /** Set when it goes again after a lost session (once at most). */
      again?: true;
    },
    onReply: (now: number, reply: Extract<Reply, { type: T }>, reqId: number) => void,
  ): number {
    const { command, expect } = request;
    const reqId: number = this.request(now, request.body, request.via, (at, outcome) => {
      if (outcome.type === "failed") {
        return this.#outbox.fail(id, command, capitalize(outcome.reason), outcome.code);
      }
      const reply = outcome.reply;
      if (reply.type === "error" && this.#askAgain(at, reply, request, onReply, id)) return;
      if (reply.type === "error") {
        return this.#outbox.fail(id, command, reply.message, errorCodeName(reply.code));
      }
      if (reply.type !== expect) {
        return this.#outbox.fail(
          id,
          command,
          `The server answered ${command} with an unexpected "${reply.type}"`,
          "unexpected_reply",
        );
      }
      onReply(at, reply as Extract<Reply, { type: T }>, reqId);
    }, request.extraMs);
    return reqId;
  }

  /**
   * Sends a command's request again, once, if `not_logged_in` refused a token
   * that a new login by itself replaced or will replace (another instance
   * took over, or the server restarted); true if it will go again.
   */
  #askAgain<T extends Reply["type"]>(
    now: number,
    reply: MessageOf<"error">,
    request: Parameters<ServerLink["ask"]>[2] & { expect: T },
    onReply: (now: number, reply: Extract<Reply, { type: T }>, reqId: number) => void,
    id: number,
  ): boolean {
    const sent = "token" in request.body ? request.body.token : undefined;
    const lost = errorCodeName(reply.code) === "not_logged_in" && !request.again;
    if (!lost || sent === undefined || sent.length === 0) return false;
    const again = (at: number, token: Uint8Array) => {
      const body = { ...request.body, token } as RequestBody;
      this.ask(at, id, { ...request, body, again: true }, onReply);
    };
    const current = this.#token;
    if (current !== undefined && !this.ownsToken(sent)) {
      again(now, current);
      return true;
    }
    if (current !== undefined) {
      // This request is the first to hear the session is gone.
      const name = this.#loggedInAs;
      if (!this.#canRelogin(name)) return false;
      this.#clearSession(true);
      this.#scheduleRelogin(now, name!, 0);
    } else if (this.#relogin === undefined && !this.#reloginInFlight) {
      return false;
    }
    const fail = () => this.#outbox.fail(id, request.command, reply.message, "not_logged_in");
    this.#afterRelogin.push({ resume: again, fail });
    return true;
  }

  /**
   * Runs a command of the link.
   *
   * @param now current time, ms
   * @param id the command's number, which its result carries
   * @param command the command
   */
  run(now: number, id: number, command: LinkCommand): void {
    const via = this.#options.via;
    switch (command.kind) {
      case "hello":
        this.ask(now, id, {
          command: "hello",
          body: { type: "hello" },
          via: "udp",
          expect: "hello_ok",
        }, (_, reply) => {
          this.#learn(reply);
          this.#outbox.result(id, {
            ok: true,
            command: "hello",
            server: this.#server,
            serverTcpPort: reply.tcpPort,
            serverVersion: reply.serverVersion,
            auth: this.#auth!,
            leaseMs: reply.leaseMs,
          });
        });
        return;
      case "register":
        return this.#register(now, id, command.name ?? this.#name);
      case "login":
        return this.#login(now, id, command.name, command.secret);
      case "tcp":
        return this.#text(now, id, command.text);
    }
    const token = this.#token;
    if (token === undefined) {
      return this.#outbox.fail(
        id,
        command.kind,
        "Not logged in; use register or login first",
        "not_logged_in",
      );
    }
    if (command.kind === "logout") {
      this.ask(now, id, {
        command: "logout",
        body: { type: "logout", token },
        via,
        expect: "logout_ok",
      }, () => {
        const name = this.#loggedInAs ?? "";
        this.#clearSession(false);
        this.#outbox.result(id, { ok: true, command: "logout", name });
      });
    } else {
      this.ask(now, id, {
        command: "deregister",
        body: { type: "deregister", token },
        via,
        expect: "deregister_ok",
      }, () => {
        const name = this.#loggedInAs ?? "";
        this.#clearSession(false);
        this.#key = undefined;
        this.#outbox.result(id, { ok: true, command: "deregister", name });
      });
    }
  }

  /**
   * Handles a message from the server that answers a request.
   *
   * @param now current time, ms
   * @param message the message
   */
  handle(now: number, message: Message): void {
    this.#session.handle(now, message);
    this.#drain(now);
  }

  /**
   * Handles the server's notice that it ended the session.
   *
   * @param now current time, ms
   * @param message the notice
   */
  sessionEnded(now: number, message: MessageOf<"session_ended">): void {
    if (!this.ownsToken(message.token)) return;
    if (message.reason === SESSION_END_REASONS.server_shutdown && this.#options.failover) {
      // Another instance takes the session over (`moved`): nothing ends.
      return this.#outbox.push({ type: "move" });
    }
    const name = this.#loggedInAs;
    const replaced = message.reason === SESSION_END_REASONS.replaced;
    if (replaced) this.#key = undefined;
    // Expired (a partition that healed) or the server stopped: log in
    // again, at once or after a heartbeat interval, while the key lasts.
    const resuming = !replaced && this.#canRelogin(name);
    this.#clearSession(resuming);
    if (resuming) {
      const delay = message.reason === SESSION_END_REASONS.expired ? 0 : this.#heartbeatInterval;
      this.#scheduleRelogin(now, name!, delay);
    }
    const reason = Object.entries(SESSION_END_REASONS).find(([, v]) => v === message.reason)?.[0];
    this.#outbox.event({
      kind: "session_ended",
      name,
      reason: (reason ?? "unknown") as SessionEndReason,
      detail: message.message,
    });
  }

  /**
   * The client moved to another instance of the service: requests in flight
   * go there at once, and a heartbeat carries the session there (the instance
   * takes it over from the shared presence: same token, same key); watching
   * resumes there.
   *
   * @param now current time, ms
   * @param server the instance now in use, `host:port`
   */
  moved(now: number, server: string): void {
    this.#server = server;
    // Its TCP port may differ: learned first, ahead of what is in flight and
    // of queued commands, so that TCP work (and `status`) follows.
    const hello = this.request(now, { type: "hello" }, "udp", (_, outcome) => {
      if (outcome.type === "reply" && outcome.reply.type === "hello_ok") this.#learn(outcome.reply);
    });
    this.#session.resendAll(now, hello);
    const token = this.#token;
    if (token !== undefined) {
      this.#heartbeat(now);
      this.#listener?.resumed(now, token);
    }
    this.#drain(now);
  }

  /**
   * @param token a token from the server
   * @returns true if it is this session's
   */
  ownsToken(token: Uint8Array): boolean {
    const mine = this.#token;
    return mine !== undefined && mine.length === token.length &&
      mine.every((byte, i) => byte === token[i]);
  }

  /**
   * Fails every request over TCP, for a connection error.
   *
   * @param now current time, ms
   * @param reason one sentence
   */
  tcpFailed(now: number, reason: string): void {
    this.#session.failAll("tcp", reason);
    this.#drain(now);
  }

  /**
   * Retransmits or gives up on requests whose time has come, sends a due
   * heartbeat, or logs in again.
   *
   * @param now current time, ms
   * @param timer which of the link's timers fired
   */
  onTimeout(now: number, timer: "requests" | "heartbeat" | "relogin"): void {
    if (timer === "requests") {
      this.#session.onTimeout(now);
    } else if (timer === "relogin") {
      this.#timers.set("relogin", undefined);
      const relogin = this.#relogin;
      this.#relogin = undefined;
      if (relogin !== undefined && this.#token === undefined) this.#reloginNow(now, relogin);
    } else {
      this.#heartbeat(now);
    }
    this.#drain(now);
  }

  /**
   * Sends one `logout` without waiting, for `exit` or Ctrl+C.
   *
   * @param now current time, ms
   * @returns true if there was a session to end
   */
  leave(now: number): boolean {
    const token = this.#token;
    if (token === undefined) return false;
    this.request(now, { type: "logout", token }, "udp", () => {});
    this.#clearSession(false);
    return true;
  }

  /** Learns the server's ports, version, login mode and lease from its `hello_ok`. */
  #learn(reply: MessageOf<"hello_ok">): void {
    this.#serverTcpPort = reply.tcpPort;
    this.#serverVersion = reply.serverVersion;
    this.#auth = reply.auth === AUTH_MODES.password ? "password" : "open";
    this.#leaseMs = Math.max(1000, reply.leaseMs);
  }

  #register(now: number, id: number, name: string | undefined): void {
    if (name === undefined) {
      return this.#outbox.fail(id, "register", "No name given; use register NAME", "no_name");
    }
    const problem = nameProblem(name);
    if (problem !== undefined) return this.#outbox.fail(id, "register", problem, "invalid_name");
    if (this.#loggedInAs !== undefined) {
      return this.#outbox.fail(
        id,
        "register",
        `Already logged in as "${this.#loggedInAs}"; logout first`,
        "already_logged_in",
      );
    }
    const { udpPort, tcpPort, via } = this.#options;
    const body = { type: "register", name, udpPort, tcpPort } as const;
    this.ask(now, id, { command: "register", body, via, expect: "register_ok" }, (at, reply) => {
      this.#key = new Uint8Array(0);
      this.#outbox.push({ type: "identity", name });
      this.#startSession(at, name, reply.token);
      this.#outbox.result(id, { ok: true, command: "register", name });
    });
  }

  #login(now: number, id: number, name: string, secret: Uint8Array): void {
    if (this.#loggedInAs !== undefined) {
      return this.#outbox.fail(
        id,
        "login",
        `Already logged in as "${this.#loggedInAs}"; logout first`,
        "already_logged_in",
      );
    }
    const problem = nameProblem(name);
    if (problem !== undefined) return this.#outbox.fail(id, "login", problem, "invalid_name");
    const body = this.#loginBody(name, secret);
    this.ask(
      now,
      id,
      { command: "login", body, via: this.#options.via, expect: "login_ok" },
      (at, reply) => {
        if (this.#auth === "open") {
          this.#key = new Uint8Array(0);
          // A version 2 identity key logged in: the server bound the name
          // to this client's key pair, so the old key is forgotten.
          if (secret.length > 0) this.#outbox.push({ type: "identity", name });
        }
        this.#startSession(at, name, reply.token);
        this.#outbox.result(id, {
          ok: true,
          command: "login",
          name,
          replaced: reply.replaced === 1,
        });
      },
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

  #text(now: number, id: number, text: string): void {
    const size = new TextEncoder().encode(text).length;
    if (size > MAX_TEXT_BYTES) {
      return this.#outbox.fail(
        id,
        "tcp",
        `The message is ${size} bytes of UTF-8; the limit is ${MAX_TEXT_BYTES}`,
        "too_long",
      );
    }
    if (!text.isWellFormed()) {
      return this.#outbox.fail(id, "tcp", "The message is not valid Unicode text", "bad_request");
    }
    const body = {
      type: "text",
      name: this.#loggedInAs ?? this.#name ?? "",
      token: this.#token ?? new Uint8Array(0),
      text,
    } as const;
    this.ask(now, id, { command: "tcp", body, via: "tcp", expect: "text_ok" }, () => {
      this.#outbox.result(id, { ok: true, command: "tcp" });
    });
  }

  #heartbeat(now: number): void {
    const token = this.#token;
    if (token === undefined) return this.#timers.set("heartbeat", undefined);
    if (this.#heartbeatReq !== undefined) this.#cancel(this.#heartbeatReq);
    this.#heartbeatReq = this.request(now, { type: "heartbeat", token }, "udp", (at, outcome) => {
      this.#heartbeatReq = undefined;
      if (outcome.type === "reply" && outcome.reply.type === "error") {
        this.#heartbeatRefused(at, outcome.reply);
      }
    });
    this.#timers.set("heartbeat", now + this.#heartbeatInterval);
  }

  #heartbeatRefused(now: number, reply: MessageOf<"error">): void {
    const code = errorCodeName(reply.code);
    if (code === "session_replaced") {
      // The push that said so was lost: never take the name back.
      this.#clearSession(false);
      this.#key = undefined;
      return this.#outbox.event({
        kind: "session_ended",
        name: this.#name,
        reason: "replaced",
        detail: reply.message,
      });
    }
    if (code !== "not_logged_in") return;
    const name = this.#loggedInAs;
    // The server forgot the session (a restart, or a lease lost in a
    // partition): log in again through the channel, with its key.
    const resuming = this.#canRelogin(name);
    this.#clearSession(resuming);
    if (resuming) return this.#scheduleRelogin(now, name!, 0);
    this.#outbox.event({
      kind: "session_ended",
      name,
      reason: "not_logged_in",
      detail: reply.message,
    });
  }

  #reloginNow(now: number, relogin: { name: string; key: Uint8Array }): void {
    const { name, key } = relogin;
    this.#reloginInFlight = true;
    this.request(now, this.#loginBody(name, key), this.#options.via, (at, outcome) => {
      this.#reloginInFlight = false;
      if (outcome.type === "failed") {
        this.#failAfterRelogin();
        // The server is unreachable (down, or a partition): try again later.
        if (this.#key !== undefined) this.#scheduleRelogin(at, name, this.#heartbeatInterval);
        return;
      }
      const reply = outcome.reply;
      const code = reply.type === "error" ? errorCodeName(reply.code) : undefined;
      if (reply.type === "error" && RELOGIN_REFUSALS_TO_OUTLAST.has(code!)) {
        // Someone else's guesses locked the name out from this address, or
        // the server is busy: wait, longer each time, and try again.
        this.#failAfterRelogin();
        if (this.#key === undefined) return;
        const delayMs = retryDelay(this.#reloginRefusals++, this.#options.random, RELOGIN_BACKOFF);
        this.#scheduleRelogin(at, name, delayMs);
        return this.#outbox.event({
          kind: "relogin_refused",
          name,
          detail: reply.message,
          retryMs: delayMs,
        });
      }
      if (reply.type !== "login_ok") {
        this.#failAfterRelogin();
        this.#listener?.ended(false);
        return this.#outbox.event({
          kind: "session_ended",
          name,
          reason: "relogin_failed",
          detail: reply.type === "error" ? reply.message : undefined,
        });
      }
      this.#startSession(at, name, reply.token);
      this.#outbox.event({ kind: "logged_in_again", name });
      this.#listener?.resumed(at, reply.token);
      const waiting = this.#afterRelogin;
      this.#afterRelogin = [];
      for (const { resume } of waiting) resume(at, reply.token);
    });
  }

  /** Fails the commands waiting for a login by itself that will not come. */
  #failAfterRelogin(): void {
    const waiting = this.#afterRelogin;
    this.#afterRelogin = [];
    for (const { fail } of waiting) fail();
  }

  /** In open mode with a key, a lost session is logged in again by itself. */
  #canRelogin(name: string | undefined): boolean {
    return this.#key !== undefined && name !== undefined && this.#auth === "open";
  }

  #scheduleRelogin(now: number, name: string, delayMs: number): void {
    this.#relogin = { name, key: this.#key! };
    this.#timers.set("relogin", now + delayMs);
  }

  #startSession(now: number, name: string, token: Uint8Array): void {
    this.#reloginRefusals = 0;
    this.#relogin = undefined;
    this.#timers.set("relogin", undefined);
    this.#loggedInAs = name;
    this.#name = name;
    this.#token = token;
    this.#timers.set("heartbeat", now + this.#heartbeatInterval);
  }

  #clearSession(resuming: boolean): void {
    this.#relogin = undefined;
    this.#timers.set("relogin", undefined);
    if (this.#heartbeatReq !== undefined) {
      this.#cancel(this.#heartbeatReq);
      this.#heartbeatReq = undefined;
    }
    this.#loggedInAs = undefined;
    this.#token = undefined;
    this.#timers.set("heartbeat", undefined);
    if (!resuming) this.#failAfterRelogin();
    this.#listener?.ended(resuming);
  }

  #cancel(reqId: number): void {
    this.#session.cancel(reqId);
    this.#handlers.delete(reqId);
  }

  #drain(now: number): void {
    for (let out = this.#session.poll(); out !== undefined; out = this.#session.poll()) {
      if (out.type === "send") {
        this.#outbox.push(out);
        continue;
      }
      const handler = this.#handlers.get(out.reqId);
      if (handler === undefined) continue;
      this.#handlers.delete(out.reqId);
      handler(
        now,
        out.type === "reply"
          ? { type: "reply", reply: out.reply }
          : { type: "failed", code: out.code, reason: out.reason },
      );
    }
    this.#timers.set("requests", this.#session.nextTimeout());
  }
}

/** Re-login refusals that pass with time: they are waited out, not taken as the end. */
const RELOGIN_REFUSALS_TO_OUTLAST: ReadonlySet<string> = new Set(["locked_out", "busy"]);

/** The wait after each refused re-login: 1 s, doubling, at most 5 min, ±20%. */
const RELOGIN_BACKOFF: RetryPolicy = {
  initialMs: 1000,
  maxMs: 300_000,
  jitter: 0.2,
  giveUpMs: Infinity,
};

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
