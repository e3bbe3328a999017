/**
 * One direct session with another client, sans-I/O: the handshake
 * (connect, retransmitted with backoff until accepted, rejected or timed
 * out), one bidirectional {@linkcode ReliableChannel} once accepted, and the
 * acknowledged terminate. The client core keeps one per session id.
 *
 * @module
 */
import { lowerFirstWord } from "../error_line.ts";
import { earlier } from "../clock.ts";
import { decodePeerPayload, encodePeerPayload, type PeerPayload } from "../wire/peer_payload.ts";
import type { Random } from "../random.ts";
import { ReliableChannel, type ReliableChannelOptions } from "../reliable/reliable_channel.ts";
import type { Segment } from "../reliable/segment.ts";
import type { PeerMessage } from "../wire/messages.ts";
import { retryDelay, type RetryPolicy } from "./retry_policy.ts";

/** Where a peer is reached. */
export interface PeerAddress {
  /** Its IP address. */
  readonly ip: string;
  /** Its UDP port. */
  readonly port: number;
}

/**
 * Where a session stands: `connecting` (we asked), `verifying` (they asked;
 * checking their name with the server), `pending` (waiting for accept or
 * reject), `open`, `closing` (terminate sent), `closed`.
 */
export type PeerState = "connecting" | "verifying" | "pending" | "open" | "closing" | "closed";

/** What a session asks its owner to do, or reports. */
export type PeerSessionOutput =
  | { readonly type: "send"; readonly to: PeerAddress; readonly message: PeerMessage }
  /** The handshake succeeded (either side). */
  | { readonly type: "opened" }
  /** A whole text message arrived, in order, exactly once. */
  | { readonly type: "message"; readonly text: string; readonly index: number }
  /** A file transfer message arrived, in order, exactly once. */
  | { readonly type: "file"; readonly payload: FilePayload }
  /** The peer acknowledged the message with this id (from `send`). */
  | { readonly type: "acked"; readonly id: number }
  /** The session ended; `by` says who ended it. */
  | {
    readonly type: "closed";
    readonly by: "us" | "peer" | "rejected" | "timeout" | "dead";
    readonly reason: string;
  };

/** Options of a {@linkcode PeerSession}. */
export interface PeerSessionOptions {
  /** The session id (16 hex digits), chosen by the side that connects. */
  id: string;
  /** Our own name, sent in `peer_connect`. */
  ownName: string;
  /** The peer's name. */
  peerName: string;
  /** Where the peer is. */
  address: PeerAddress;
  /** True if we connect; false for an incoming request. */
  outgoing: boolean;
  /** Jitter for handshake retransmissions. */
  random: Random;
  /** Handshake and terminate retransmission schedule; its give-up time bounds both. */
  retry: RetryPolicy;
  /** Options of the reliable channel. */
  channel?: ReliableChannelOptions;
}

/** The payloads of file transfers (everything but chat text). */
export type FilePayload = Exclude<PeerPayload, { kind: "text" }>;

/**
 * One peer session.
 *
 * @example
 * ```ts
 * const session = new PeerSession(now, { id, ownName: "Alice", peerName: "Bob",
 *   address: { ip: "127.0.0.1", port: 5000 }, outgoing: true, random, retry });
 * // send session.poll() outputs; feed peer messages to session.handle(now, message)
 * ```
 */
export class PeerSession {
  /** The session id. */
  readonly id: string;
  /** The peer's name. */
  readonly peerName: string;
  /** True if we asked for the session. */
  readonly outgoing: boolean;
  #options: PeerSessionOptions;
  #address: PeerAddress;
  #state: PeerState;
  #channel: ReliableChannel | undefined;
  #outputs: PeerSessionOutput[] = [];
  #startedAt: number;
  #attempts = 0;
  #nextSendAt: number | undefined;
  #terminateReason = "";
  #sentMessages = 0;
  #receivedMessages = 0;

  /**
   * @param now current time, ms
   * @param options ids, names, address and policies
   */
  constructor(now: number, options: PeerSessionOptions) {
    this.id = options.id;
    this.peerName = options.peerName;
    this.outgoing = options.outgoing;
    this.#options = options;
    this.#address = options.address;
    this.#startedAt = now;
    this.#state = options.outgoing ? "connecting" : "verifying";
    if (options.outgoing) this.#sendHandshake(now);
  }

  /** Where the session stands. */
  get state(): PeerState {
    return this.#state;
  }

  /** Where the peer is. */
  get address(): PeerAddress {
    return this.#address;
  }

  /** Messages sent and received so far. */
  get counts(): { sent: number; received: number } {
    return { sent: this.#sentMessages, received: this.#receivedMessages };
  }

  /** The channel's counters, once open. */
  get channel(): ReliableChannel | undefined {
    return this.#channel;
  }

  /**
   * For an incoming request: the server confirmed the peer's name and
   * address; the request now waits (bounded) for accept or reject.
   *
   * @param now current time, ms
   */
  verified(now: number): void {
    if (this.#state !== "verifying") return;
    this.#state = "pending";
    this.#startedAt = now;
  }

  /**
   * Accepts an incoming request.
   *
   * @param now current time, ms
   */
  accept(now: number): void {
    if (this.#state !== "pending") throw new TypeError(`Cannot accept a ${this.#state} session`);
    this.#open(now);
    this.#emitSend({ type: "peer_accept", session: this.id });
  }

  /**
   * Rejects an incoming request (or one that failed verification).
   *
   * @param reason one sentence for the requester
   */
  reject(reason: string): void {
    if (this.#state !== "pending" && this.#state !== "verifying") return;
    this.#terminateReason = reason;
    this.#emitSend({ type: "peer_reject", session: this.id, reason });
    this.#close("rejected", reason);
  }

  /**
   * Sends a text message over the open session.
   *
   * @param now current time, ms
   * @param text the message
   * @returns its id; an `acked` output with it follows once the peer has it
   * @throws {TypeError} unless the session is open
   */
  send(now: number, text: string): number {
    this.#sentMessages++;
    return this.sendPayload(now, { kind: "text", text });
  }

  /**
   * Sends any peer payload (file transfers use it) over the open session.
   *
   * @param now current time, ms
   * @param payload the payload
   * @returns its id; an `acked` output with it follows once the peer has it
   * @throws {TypeError} unless the session is open
   */
  sendPayload(now: number, payload: PeerPayload): number {
    if (this.#state !== "open" || this.#channel === undefined) {
      throw new TypeError(`Cannot send on a ${this.#state} session`);
    }
    const id = this.#channel.send(now, encodePeerPayload(payload), {
      urgent: payload.kind === "text", // chat goes ahead of queued file data
    });
    this.#drainChannel(now);
    return id;
  }

  /** Segments queued or in flight on the channel (0 before it opens), for backpressure. */
  get backlog(): number {
    return this.#channel?.backlog ?? 0;
  }

  /**
   * Ends the session: once what we sent is acknowledged (or the give-up time
   * passed), sends `peer_terminate` until the peer acknowledges it.
   *
   * @param now current time, ms
   * @param reason told to the peer
   */
  terminate(now: number, reason: string): void {
    if (this.#state === "closed" || this.#state === "closing") return;
    if (this.#state !== "open") {
      // Not open yet: tell the peer once and stop (copies are answered again).
      return this.abort(reason);
    }
    this.#state = "closing";
    this.#terminateReason = reason;
    this.#startedAt = now;
    this.#attempts = 0;
    if (this.#channel?.idle ?? true) this.#sendHandshake(now);
    else this.#nextSendAt = undefined;
  }

  /**
   * Ends the session at once, without waiting for what was sent: one
   * `peer_terminate` goes out (and again for each copy the peer sends).
   *
   * @param reason told to the peer
   */
  abort(reason: string): void {
    if (this.#state === "closed") return;
    this.#terminateReason = reason;
    this.#emitSend(this.#terminateMessage());
    this.#close("us", reason);
  }

  /**
   * Handles a message from the peer for this session.
   *
   * @param now current time, ms
   * @param from where it came from; anything not from the peer's address is ignored
   * @param message the message
   */
  handle(now: number, from: PeerAddress, message: PeerMessage): void {
    if (from.ip !== this.#address.ip || from.port !== this.#address.port) return;
    if (this.#state === "closed") {
      // Answer copies so that the peer can finish too.
      if (message.type === "peer_terminate") {
        this.#emitSend({ type: "peer_terminate_ok", session: this.id });
      } else if (message.type === "peer_connect" && this.#terminateReason !== "") {
        this.#emitSend({ type: "peer_reject", session: this.id, reason: this.#terminateReason });
      } else if (
        this.#terminateReason !== "" &&
        (message.type === "peer_accept" || message.type === "peer_data" ||
          message.type === "peer_keepalive")
      ) {
        // We gave up (or left) before the peer accepted or finished: tell it.
        this.#emitSend(this.#terminateMessage());
      }
      return;
    }
    switch (message.type) {
      case "peer_connect":
        // A copy: the requester has not heard our accept yet.
        if (this.#state === "open" && !this.outgoing) {
          this.#emitSend({ type: "peer_accept", session: this.id });
        }
        return;
      case "peer_accept":
        if (this.#state === "connecting") this.#open(now);
        return;
      case "peer_reject":
        if (this.#state === "connecting") {
          this.#close("rejected", `"${this.peerName}" refused: ${message.reason}`);
        }
        return;
      case "peer_terminate":
        this.#emitSend({ type: "peer_terminate_ok", session: this.id });
        if (this.#channel !== undefined) {
          // What the peer received, so that sends it had but never acknowledged complete.
          this.#channel.receive(now, {
            kind: "ack",
            cumulative: message.cumulative,
            ranges: [],
            window: 1,
          });
          this.#drainChannel(now);
        }
        // Both ended it at once: ours is as good as acknowledged.
        if (this.#state === "closing") this.#close("us", this.#terminateReason);
        else this.#close("peer", message.reason);
        return;
      case "peer_terminate_ok":
        if (this.#state === "closing") this.#close("us", this.#terminateReason);
        return;
      default:
        // Channel traffic: in `connecting` it means our accept was lost on the way.
        if (this.#state === "connecting") this.#open(now);
        if (this.#channel === undefined) return;
        this.#channel.receive(now, segmentOf(message));
        this.#drainChannel(now);
    }
  }

  /** @returns when `onTimeout` should next be called, or undefined */
  nextTimeout(): number | undefined {
    if (this.#state === "closed") return undefined;
    const next = earlier(this.#nextSendAt, this.#channel?.nextTimeout());
    if (this.#state === "pending" || this.#state === "connecting") {
      return earlier(next, this.#startedAt + this.#options.retry.giveUpMs);
    }
    return next;
  }

  /**
   * Retransmits the handshake or the terminate, runs the channel's timers,
   * and gives up when the time is up.
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    const giveUpAt = this.#startedAt + this.#options.retry.giveUpMs;
    const seconds = Math.round(this.#options.retry.giveUpMs / 1000);
    if (this.#state === "verifying") return;
    if (this.#state === "pending") {
      if (now >= giveUpAt) {
        this.#terminateReason = `the request was not accepted within ${seconds} s`;
        this.#emitSend({ type: "peer_reject", session: this.id, reason: this.#terminateReason });
        this.#close(
          "timeout",
          `The request from "${this.peerName}" was not accepted in ${seconds} s`,
        );
      }
      return;
    }
    if (this.#state === "connecting" && now >= giveUpAt) {
      this.#terminateReason = `${this.#options.ownName} gave up waiting`;
      return this.#close("timeout", `"${this.peerName}" did not answer within ${seconds} s`);
    }
    if (this.#channel !== undefined) {
      this.#channel.onTimeout(now);
      this.#drainChannel(now);
      if (this.#state === "closed") return;
    }
    if (this.#state === "closing" && this.#nextSendAt === undefined && now >= giveUpAt) {
      // What we sent was never all acknowledged: terminate anyway.
      this.#sendHandshake(now);
    }
    if (this.#nextSendAt === undefined || now < this.#nextSendAt) return;
    if (this.#state === "closing" && now >= giveUpAt + this.#options.retry.giveUpMs) {
      return this.#close("timeout", `"${this.peerName}" did not confirm the end of the session`);
    }
    this.#sendHandshake(now);
  }

  /** @returns the next output, or undefined */
  poll(): PeerSessionOutput | undefined {
    return this.#outputs.shift();
  }

  #open(now: number): void {
    this.#state = "open";
    this.#nextSendAt = undefined;
    this.#channel = new ReliableChannel(now, this.#options.channel);
    this.#outputs.push({ type: "opened" });
  }

  #sendHandshake(now: number): void {
    if (this.#state === "connecting") {
      this.#emitSend({ type: "peer_connect", session: this.id, name: this.#options.ownName });
    } else if (this.#state === "closing") {
      this.#emitSend(this.#terminateMessage());
    } else {
      return;
    }
    const delay = retryDelay(this.#attempts++, this.#options.random, this.#options.retry);
    this.#nextSendAt = this.#state === "connecting"
      ? Math.min(now + delay, this.#startedAt + this.#options.retry.giveUpMs)
      : now + delay;
  }

  #drainChannel(now: number): void {
    const channel = this.#channel;
    if (channel === undefined) return;
    for (let out = channel.poll(); out !== undefined; out = channel.poll()) {
      switch (out.type) {
        case "segment":
          this.#emitSend(messageOf(this.id, out.segment));
          break;
        case "deliver": {
          let payload: PeerPayload;
          try {
            payload = decodePeerPayload(out.message);
          } catch {
            // A payload this version does not know (or a broken one): skipped, as documented.
            break;
          }
          if (payload.kind === "text") {
            this.#outputs.push({
              type: "message",
              text: payload.text,
              index: this.#receivedMessages++,
            });
          } else {
            this.#outputs.push({ type: "file", payload });
          }
          break;
        }
        case "acked":
          this.#outputs.push({ type: "acked", id: out.id });
          break;
        case "dead":
          this.#close(
            "dead",
            `"${this.peerName}" stopped answering: ${lowerFirstWord(out.reason)}`,
          );
          return;
      }
    }
    // Everything we sent is acknowledged: the terminate can go.
    if (this.#state === "closing" && this.#nextSendAt === undefined && channel.idle) {
      this.#sendHandshake(now);
    }
  }

  #close(by: "us" | "peer" | "rejected" | "timeout" | "dead", reason: string): void {
    this.#state = "closed";
    this.#nextSendAt = undefined;
    this.#outputs.push({ type: "closed", by, reason });
  }

  #terminateMessage(): PeerMessage {
    return {
      type: "peer_terminate",
      session: this.id,
      cumulative: this.#channel?.receivedUpTo ?? 0,
      reason: this.#terminateReason,
    };
  }

  #emitSend(message: PeerMessage): void {
    this.#outputs.push({ type: "send", to: this.#address, message });
  }
}

/**
 * Maps a channel segment to its wire message.
 *
 * @param session the session id
 * @param segment the segment
 * @returns the message
 */
export function messageOf(session: string, segment: Segment): PeerMessage {
  switch (segment.kind) {
    case "data":
      return {
        type: "peer_data",
        session,
        seq: segment.seq,
        fragment: segment.fragment,
        fragments: segment.fragments,
        payload: segment.payload,
      };
    case "ack":
      return {
        type: "peer_ack",
        session,
        cumulative: segment.cumulative,
        window: segment.window,
        ranges: segment.ranges,
      };
    case "keepalive":
      return { type: "peer_keepalive", session };
  }
}

/**
 * Maps a channel message from the wire to its segment.
 *
 * @param message a `peer_data`, `peer_ack` or `peer_keepalive`
 * @returns the segment
 */
export function segmentOf(message: PeerMessage): Segment {
  switch (message.type) {
    case "peer_data":
      return {
        kind: "data",
        seq: message.seq,
        fragment: message.fragment,
        fragments: message.fragments,
        payload: message.payload,
      };
    case "peer_ack":
      return {
        kind: "ack",
        cumulative: message.cumulative,
        window: message.window,
        ranges: message.ranges,
      };
    default:
      return { kind: "keepalive" };
  }
}
