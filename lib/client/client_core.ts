/**
 * The client's logic, sans-I/O: runs user commands against the server
 * through a {@linkcode ServerSession} and keeps what the client knows (the
 * server's TCP port, its name, its session token).
 *
 * @module
 */
import type { Random } from "../random.ts";
import { nameProblem } from "../wire/client_name.ts";
import { type ErrorCodeName, errorCodeName } from "../wire/error_code.ts";
import { MAX_TEXT_BYTES, type Message, type Reply, type Request } from "../wire/messages.ts";
import type { Command } from "./command.ts";
import type { RetryPolicy } from "./retry_policy.ts";
import { type RequestBody, ServerSession, type Via } from "./server_session.ts";

/** The outcome of one command. */
export type CommandResult =
  | {
    readonly ok: true;
    readonly command: string;
    readonly message: string;
    readonly data?: Readonly<Record<string, unknown>>;
  }
  | {
    readonly ok: false;
    readonly command: string;
    readonly error: string;
    readonly code: FailureCode;
  };

/**
 * Why a command failed: a server error code, or one found by the client
 * itself before or instead of an answer.
 */
export type FailureCode =
  | ErrorCodeName
  | "already_registered"
  | "bad_command"
  | "no_name"
  | "not_connected"
  | "too_long"
  | "unexpected_reply"
  | "timeout"
  | "connection_failed";

/** What the core asks its driver to do, or reports. */
export type ClientOutput =
  | {
    readonly type: "send";
    readonly via: Via;
    readonly message: Request;
    /** 1 for the first send, 2 for the first retransmission, and so on. */
    readonly attempt: number;
  }
  | { readonly type: "result"; readonly result: CommandResult };

/** A command the core runs: a user command, or `hello` to reach the server. */
export type CoreCommand = Exclude<Command, { kind: "help" | "exit" }> | { readonly kind: "hello" };

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
  /** The transport for register and deregister. */
  via: Via;
  /** The server's address as the user gave it, for messages. */
  server: string;
}

interface Running {
  command: CoreCommand;
  reqId: number;
  name?: string;
}

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
  #token: Uint8Array | undefined;
  #registeredAs: string | undefined;
  #serverTcpPort: number | undefined;
  #serverVersion: string | undefined;
  #running: Running | undefined;
  #outputs: ClientOutput[] = [];

  /** @param options ports, name, transport and randomness */
  constructor(options: ClientCoreOptions) {
    this.#options = options;
    this.#name = options.name;
    this.#session = new ServerSession({ random: options.random, retry: options.retry });
  }

  /** The server's TCP port, once `hello` has learned it. */
  get serverTcpPort(): number | undefined {
    return this.#serverTcpPort;
  }

  /** True while a command waits for the server. */
  get busy(): boolean {
    return this.#running !== undefined;
  }

  /** The name this client is registered under in this run, if any. */
  get registeredAs(): string | undefined {
    return this.#registeredAs;
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
    switch (command.kind) {
      case "hello":
        return this.#send(now, command, { type: "hello" }, "udp");
      case "status":
        return this.#result({
          ok: true,
          command: "status",
          message: this.#statusText(),
          data: this.#statusData(),
        });
      case "register": {
        if (this.#options.via === "tcp" && this.#serverTcpPort === undefined) {
          return this.#fail("register", "The server's TCP port is not known yet", "not_connected");
        }
        const name = command.name ?? this.#name;
        if (name === undefined) {
          return this.#fail("register", "No name given; use register NAME", "no_name");
        }
        const problem = nameProblem(name);
        if (problem !== undefined) return this.#fail("register", problem, "invalid_name");
        if (this.#registeredAs !== undefined) {
          return this.#fail(
            "register",
            `Already registered as "${this.#registeredAs}"`,
            "already_registered",
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
      case "deregister": {
        if (this.#registeredAs === undefined || this.#token === undefined) {
          return this.#fail(
            "deregister",
            "Not registered in this session; only the client that registered a name holds " +
              "its session token, until it exits",
            "not_registered",
          );
        }
        if (this.#options.via === "tcp" && this.#serverTcpPort === undefined) {
          return this.#fail(
            "deregister",
            "The server's TCP port is not known yet",
            "not_connected",
          );
        }
        return this.#send(now, command, {
          type: "deregister",
          name: this.#registeredAs,
          token: this.#token,
        }, this.#options.via);
      }
      case "tcp": {
        if (this.#serverTcpPort === undefined) {
          return this.#fail("tcp", "The server's TCP port is not known yet", "not_connected");
        }
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
          name: this.#registeredAs ?? this.#name ?? "",
          token: this.#token ?? new Uint8Array(0),
          text: command.text,
        }, "tcp");
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
    this.#session.handle(now, message);
    this.#drain();
  }

  /**
   * Fails the running request if it travels over TCP, for a connection error.
   *
   * @param reason one sentence
   */
  tcpFailed(reason: string): void {
    this.#session.failAll("tcp", reason);
    this.#drain();
  }

  /** @returns when `onTimeout` should next be called, or undefined */
  nextTimeout(): number | undefined {
    return this.#session.nextTimeout();
  }

  /**
   * Retransmits or gives up on requests whose time has come.
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    this.#session.onTimeout(now);
    this.#drain();
  }

  /** @returns the next output, or undefined */
  poll(): ClientOutput | undefined {
    return this.#outputs.shift();
  }

  #send(now: number, command: CoreCommand, body: RequestBody, via: Via, name?: string): void {
    const reqId = this.#session.start(now, body, via);
    this.#running = { command, reqId, name };
    this.#drain();
  }

  #drain(): void {
    for (let out = this.#session.poll(); out !== undefined; out = this.#session.poll()) {
      if (out.type === "send") {
        this.#outputs.push(out);
        continue;
      }
      const running = this.#running;
      if (running === undefined || running.reqId !== out.reqId) continue;
      this.#running = undefined;
      if (out.type === "failed") {
        this.#fail(running.command.kind, capitalize(out.reason), out.code);
      } else {
        this.#complete(running, out.reply);
      }
    }
  }

  #complete(running: Running, reply: Reply): void {
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
        return this.#result({
          ok: true,
          command: kind,
          message: `Connected to server ${this.#options.server} (version ${reply.serverVersion}, ` +
            `TCP port ${reply.tcpPort})`,
          data: { serverTcpPort: reply.tcpPort, serverVersion: reply.serverVersion },
        });
      case "register_ok":
        this.#registeredAs = running.name;
        this.#name = running.name;
        this.#token = reply.token;
        return this.#result({
          ok: true,
          command: kind,
          message: `Registered as "${running.name}"`,
          data: { name: running.name },
        });
      case "deregister_ok": {
        const name = this.#registeredAs;
        this.#registeredAs = undefined;
        this.#token = undefined;
        return this.#result({
          ok: true,
          command: kind,
          message: `Deregistered "${name}"`,
          data: { name },
        });
      }
      case "text_ok":
        return this.#result({
          ok: true,
          command: kind,
          message: "The server acknowledged the TCP message",
        });
    }
  }

  #statusData(): Record<string, unknown> {
    return {
      server: this.#options.server,
      serverVersion: this.#serverVersion ?? null,
      serverTcpPort: this.#serverTcpPort ?? null,
      name: this.#name ?? null,
      registered: this.#registeredAs !== undefined,
      udpPort: this.#options.udpPort,
      tcpPort: this.#options.tcpPort,
      via: this.#options.via,
    };
  }

  #statusText(): string {
    const registration = this.#registeredAs === undefined
      ? "not registered"
      : `registered as "${this.#registeredAs}"`;
    return `Server ${this.#options.server} (TCP port ${this.#serverTcpPort ?? "unknown"}); ` +
      `name ${this.#name === undefined ? "not set" : `"${this.#name}"`}, ${registration}; ` +
      `UDP port ${this.#options.udpPort}, TCP port ${this.#options.tcpPort}; ` +
      `requests over ${this.#options.via.toUpperCase()}`;
  }

  #fail(command: string, error: string, code: FailureCode): void {
    this.#result({ ok: false, command, error, code });
  }

  #result(result: CommandResult): void {
    this.#outputs.push({ type: "result", result });
  }
}

/** The reply that completes each command that asks the server. */
const EXPECTED_REPLY: Partial<Record<CoreCommand["kind"], Reply["type"]>> = {
  hello: "hello_ok",
  register: "register_ok",
  deregister: "deregister_ok",
  tcp: "text_ok",
};

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
