/**
 * The client's requests to the server, sans-I/O: each request gets an id, is
 * retransmitted over UDP with exponential backoff and jitter until its reply
 * comes or the give-up time passes, and is matched with its reply.
 *
 * @module
 */
import { toHex } from "../hex.ts";
import type { Random } from "../random.ts";
import type { Message, Reply, Request } from "../wire/messages.ts";
import { DEFAULT_RETRY_POLICY, retryDelay, type RetryPolicy } from "./retry_policy.ts";

/** Which transport a request travels on. */
export type Via = "udp" | "tcp";

/** A request without the ids the session adds. */
export type RequestBody = DistributiveOmit<Request, "reqId" | "client">;

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** What the session asks its driver to do, or reports. */
export type SessionOutput =
  | {
    readonly type: "send";
    readonly via: Via;
    readonly message: Request;
    /** 1 for the first send, 2 for the first retransmission, and so on. */
    readonly attempt: number;
  }
  | { readonly type: "reply"; readonly reqId: number; readonly reply: Reply }
  | {
    readonly type: "failed";
    readonly reqId: number;
    /** `timeout`: no reply in time; `connection_failed`: the transport broke. */
    readonly code: "timeout" | "connection_failed";
    readonly reason: string;
  };

interface Pending {
  message: Request;
  via: Via;
  firstSentAt: number;
  giveUpAt: number;
  retransmissions: number;
  nextAt: number;
}

/** Options of a {@linkcode ServerSession}. */
export interface ServerSessionOptions {
  /** Source of the client id, the first request id and jitter. */
  random: Random;
  /** Retransmission schedule. */
  retry?: RetryPolicy;
}

/**
 * Outstanding requests to the server.
 *
 * @example
 * ```ts
 * const session = new ServerSession({ random: cryptoRandom });
 * const reqId = session.start(now, { type: "hello" }, "udp");
 * // send session.poll() outputs; on a reply: session.handle(now, reply)
 * ```
 */
export class ServerSession {
  /** This process's random id, sent with every request. */
  readonly clientId: string;
  #random: Random;
  #retry: RetryPolicy;
  #nextReqId: number;
  #pending = new Map<number, Pending>();
  #outputs: SessionOutput[] = [];
  #retransmissions = 0;

  /** @param options randomness and retry policy */
  constructor(options: ServerSessionOptions) {
    this.#random = options.random;
    this.#retry = options.retry ?? DEFAULT_RETRY_POLICY;
    this.clientId = toHex(this.#random.bytes(8));
    this.#nextReqId = Math.floor(this.#random.next() * 0x1_0000_0000);
  }

  /** Retransmissions made since start. */
  get retransmissions(): number {
    return this.#retransmissions;
  }

  /**
   * Sends a new request.
   *
   * @param now current time, ms
   * @param body the request without ids
   * @param via transport; only UDP requests are retransmitted
   * @param extraMs extra time before giving up (for a large upload)
   * @returns the request id, which its `reply` or `failed` output carries
   */
  start(now: number, body: RequestBody, via: Via, extraMs = 0): number {
    const reqId = this.#nextReqId;
    this.#nextReqId = (this.#nextReqId + 1) >>> 0;
    const message = { ...body, reqId, client: this.clientId } as Request;
    const giveUpAt = now + this.#retry.giveUpMs + extraMs;
    const nextAt = via === "udp" ? now + retryDelay(0, this.#random, this.#retry) : giveUpAt;
    this.#pending.set(reqId, {
      message,
      via,
      firstSentAt: now,
      giveUpAt,
      retransmissions: 0,
      nextAt,
    });
    this.#outputs.push({ type: "send", via, message, attempt: 1 });
    return reqId;
  }

  /**
   * Matches a message from the server with its request.
   *
   * @param _now current time, ms
   * @param message a decoded message from the server
   * @returns true if it answered an outstanding request
   */
  handle(_now: number, message: Message): boolean {
    if (!("reqId" in message) || "client" in message || message.type === "file_chunk") {
      return false;
    }
    if (!this.#pending.delete(message.reqId)) return false;
    this.#outputs.push({ type: "reply", reqId: message.reqId, reply: message as Reply });
    return true;
  }

  /**
   * Forgets a request: no more retransmissions, no reply or failure output.
   *
   * @param reqId the request id from `start`
   */
  cancel(reqId: number): void {
    this.#pending.delete(reqId);
  }

  /**
   * Fails at once every outstanding request on one transport, for an error
   * such as a refused or broken TCP connection.
   *
   * @param via the transport that failed
   * @param reason one sentence
   */
  failAll(via: Via, reason: string): void {
    for (const [reqId, p] of this.#pending) {
      if (p.via !== via) continue;
      this.#pending.delete(reqId);
      this.#outputs.push({ type: "failed", reqId, code: "connection_failed", reason });
    }
  }

  /**
   * Sends every outstanding UDP request again now (the client moved to
   * another instance of the service: waiting for the backoff would only
   * delay the answers). Their give-up times stay.
   *
   * @param now current time, ms
   * @param except a request just sent, not to send again
   */
  resendAll(now: number, except?: number): void {
    for (const [reqId, p] of this.#pending) {
      if (p.via !== "udp" || reqId === except) continue;
      p.retransmissions++;
      this.#retransmissions++;
      p.nextAt = Math.min(
        now + retryDelay(p.retransmissions, this.#random, this.#retry),
        p.giveUpAt,
      );
      this.#outputs.push({
        type: "send",
        via: p.via,
        message: p.message,
        attempt: p.retransmissions + 1,
      });
    }
  }

  /** @returns when `onTimeout` should next be called, or undefined */
  nextTimeout(): number | undefined {
    let next: number | undefined;
    for (const p of this.#pending.values()) {
      if (next === undefined || p.nextAt < next) next = p.nextAt;
    }
    return next;
  }

  /**
   * Retransmits or gives up on requests whose time has come.
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    for (const [reqId, p] of this.#pending) {
      if (p.nextAt > now) continue;
      if (now >= p.giveUpAt) {
        this.#pending.delete(reqId);
        const seconds = Math.round((p.giveUpAt - p.firstSentAt) / 100) / 10;
        const attempts = p.retransmissions + 1;
        const tries = p.via === "udp"
          ? ` (${attempts} ${attempts === 1 ? "attempt" : "attempts"})`
          : "";
        this.#outputs.push({
          type: "failed",
          reqId,
          code: "timeout",
          reason: `the server did not answer within ${seconds} s${tries}`,
        });
        continue;
      }
      p.retransmissions++;
      this.#retransmissions++;
      const delay = retryDelay(p.retransmissions, this.#random, this.#retry);
      p.nextAt = Math.min(now + delay, p.giveUpAt);
      this.#outputs.push({
        type: "send",
        via: p.via,
        message: p.message,
        attempt: p.retransmissions + 1,
      });
    }
  }

  /** @returns the next output, or undefined */
  poll(): SessionOutput | undefined {
    return this.#outputs.shift();
  }
}
