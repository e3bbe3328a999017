/**
 * One direct session with another client, sans-I/O: the handshake
 * (connect, retransmitted with backoff until accepted, rejected or timed
 * out), one bidirectional {@linkcode ReliableChannel} once accepted, and the
 * acknowledged terminate. The client core keeps one per session id.
 *
 * Its datagrams go through its {@linkcode PeerCipher}: `peer_connect` and
 * `peer_accept` are the Noise IKpsk2 handshake, and everything after it is
 * sealed in `peer_sealed`. What opens under the session's keys is the peer,
 * wherever it comes from: the session then sends to that address.
 *
 * @module
 */
import { lowerFirstWord } from "../error_line.ts";
import { earlier } from "../clock.ts";
import { CryptoError } from "../crypto/crypto_error.ts";
import { encodeMessage } from "../wire/codec.ts";
import { decodePeerPayload, encodePeerPayload, type PeerPayload } from "../wire/peer_payload.ts";
import type { Random } from "../random.ts";
import { ReliableChannel, type ReliableChannelOptions } from "../reliable/reliable_channel.ts";
import type { Segment } from "../reliable/segment.ts";
import type { MessageOf, PeerInnerMessage, PeerMessage } from "../wire/messages.ts";
import { encodeIntroduction, type PeerCipher, type ReadInitiation } from "./peer_cipher.ts";
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
  /** Send this datagram (encoded, sealed where keys exist). */
  | {
    readonly type: "send";
    readonly to: PeerAddress;
    readonly bytes: Uint8Array;
    /** What `bytes` carries, in clear, for traces and tests (never sent as such). */
    readonly sent: PeerSent;
  }
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

/**
 * Least time between two repeats of a `peer_accept` that rides with our
 * traffic before the requester's first sealed datagram arrives, ms.
 */
export const ACCEPT_REPEAT_MS = 250;

/**
 * Most times a `peer_terminate` goes out (on the retry schedule: about 7.5 s
 * in all by default). With no `peer_terminate_ok` by the last one's delay,
 * the session closes unconfirmed: the peer most likely heard it, answered,
 * and is gone (a program that exits once its session ends), its answer
 * lost. As QUIC's closing state (RFC 9000 section 10.2), a bounded wait:
 * waiting out the give-up time instead held `terminate` for 30 s and then
 * blamed a peer that had done nothing wrong.
 */
export const TERMINATE_ATTEMPTS = 4;

/** What one datagram of a session carries: a handshake message, or an inner message. */
export type PeerSent =
  | PeerInnerMessage
  | { readonly type: "peer_connect" | "peer_accept"; readonly session: string }
  /** Connectivity checks (`peer_paths.ts`): in clear, authenticated by the probe key. */
  | MessageOf<"peer_probe" | "peer_probe_ok">;

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
  /** The session's keys: given the PSK already when outgoing, once verified when incoming. */
  cipher: PeerCipher;
  /** Outgoing: the nonce of the `lookup_ok`, told in the introduction. */
  nonce?: Uint8Array;
  /** Outgoing: a fresh TAI64N timestamp for each new handshake. */
  timestamp?: (now: number) => Uint8Array;
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
  #cipher: PeerCipher;
  /** Whether something from the peer opened under the session's keys (so it has them). */
  #confirmed = false;
  /** When our `peer_accept` last went out. */
  #acceptSentAt = -Infinity;
  /** The latest time a caller gave: what sealing checks the keys' age against. */
  #now: number;

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
    this.#cipher = options.cipher;
    this.#now = now;
    this.#startedAt = now;
    this.#state = options.outgoing ? "connecting" : "verifying";
    if (options.outgoing) {
      this.#initiate(now);
      this.#sendHandshake(now);
    }
  }

  /** The session's keys. */
  get cipher(): PeerCipher {
    return this.#cipher;
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
   * For an incoming request: the server vouched for the peer's name and
   * key; the request now waits (bounded) for accept or reject.
   *
   * @param now current time, ms
   * @param read its first handshake message, read
   * @param initiation the encoded `peer_connect` it came in
   * @param psk the introduction's PSK, from the server
   */
  verified(now: number, read: ReadInitiation, initiation: Uint8Array, psk: Uint8Array): void {
    this.#now = Math.max(this.#now, now);
    if (this.#state !== "verifying") return;
    this.#state = "pending";
    this.#startedAt = now;
    this.#pending = { read, initiation };
    this.#received = initiation.slice();
    this.#cipher.setPsk(psk);
  }

  #pending: { read: ReadInitiation; initiation: Uint8Array } | undefined;
  /** The `peer_connect` that made an incoming session, to recognise its copies. */
  #received: Uint8Array | undefined;

  /**
   * Accepts an incoming request: handshake message 2 goes out, and the keys are in use.
   *
   * @param now current time, ms
   */
  accept(now: number): void {
    this.#now = Math.max(this.#now, now);
    if (this.#state !== "pending" || this.#pending === undefined) {
      throw new TypeError(`Cannot accept a ${this.#state} session`);
    }
    const { read, initiation } = this.#pending;
    this.#pending = undefined;
    this.#open(now);
    this.#acceptSentAt = now;
    this.#emitBytes(this.#cipher.respond(now, read, initiation), this.#accept);
  }

  /**
   * The requester of an open session started a new handshake (a rekey); its
   * message 1 was read and its key and timestamp checked by the table.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param read the message 1, read
   * @param initiation the encoded `peer_connect`
   */
  rekey(now: number, from: PeerAddress, read: ReadInitiation, initiation: Uint8Array): void {
    this.#now = Math.max(this.#now, now);
    if (this.#state !== "open" || this.outgoing) return;
    const bytes = this.#cipher.respond(now, read, initiation);
    this.#outputs.push({ type: "send", to: from, bytes, sent: this.#accept });
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
    this.#now = Math.max(this.#now, now);
    if (this.#state !== "open" || this.#channel === undefined) {
      throw new TypeError(`Cannot send on a ${this.#state} session`);
    }
    const id = this.#channel.send(now, encodePeerPayload(payload), {
      urgent: payload.kind === "text", // chat goes ahead of queued file data
      owned: true, // made for this send: the channel need not copy a file's chunk again
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
    this.#now = Math.max(this.#now, now);
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
    if (this.#cipher.hasKeys) this.#emitSend(this.#terminateMessage());
    else if (!this.outgoing) this.#emitSend({ type: "peer_reject", session: this.id, reason });
    this.#close("us", reason);
  }

  /**
   * Handles a datagram from the peer for this session: a copy of the
   * handshake, a `peer_accept`, a clear `peer_reject` (before any keys; only
   * from the peer's address), or a `peer_sealed`, which is opened (anything
   * that does not open is dropped without effect).
   *
   * @param now current time, ms
   * @param from where it came from
   * @param message the decoded datagram
   */
  handle(now: number, from: PeerAddress, message: PeerMessage): void {
    this.#now = Math.max(this.#now, now);
    switch (message.type) {
      case "peer_connect":
        // A copy of the request: the requester has not heard our accept yet.
        if (this.#initiationCopy(message.handshake) && !this.outgoing) {
          if (this.#state === "open" && this.#cipher.response !== undefined) {
            const bytes = this.#cipher.response;
            this.#outputs.push({ type: "send", to: from, bytes, sent: this.#accept });
          } else if (this.#state === "closed" && this.#terminateReason !== "") {
            this.#emitSend({
              type: "peer_reject",
              session: this.id,
              reason: this.#terminateReason,
            });
          }
        }
        return;
      case "peer_accept":
        if (!this.#cipher.complete(now, message.handshake)) return;
        this.#address = from;
        if (this.#state === "connecting") this.#open(now);
        else if (this.#state === "closed" && this.#terminateReason !== "") {
          // We gave up (or left) before the peer accepted: tell it.
          this.#emitSend(this.#terminateMessage());
        }
        return;
      case "peer_reject":
        // In clear: the peer had no keys yet. Believed only from its address.
        if (
          this.#state === "connecting" && from.ip === this.#address.ip &&
          from.port === this.#address.port
        ) {
          this.#close("rejected", `"${this.peerName}" refused: ${message.reason}`);
        }
        return;
      case "peer_sealed": {
        const inner = this.#cipher.open(now, message);
        if (inner === undefined) return;
        this.#confirmed = true;
        // It opened under our keys: the peer is reached there now (a NAT rebinding).
        this.#address = from;
        return this.#handleInner(now, inner);
      }
      default:
        // Channel and terminate messages in clear: version 3 seals them.
        return;
    }
  }

  #initiationCopy(handshake: Uint8Array): boolean {
    const known = this.#cipher.initiation ?? this.#received;
    if (known === undefined) return false;
    const copy = encodeMessage({ type: "peer_connect", session: this.id, handshake });
    return copy.length === known.length && copy.every((b, i) => b === known[i]);
  }

  #handleInner(now: number, message: PeerInnerMessage): void {
    if (this.#state === "closed") {
      // Answer copies so that the peer can finish too.
      if (message.type === "peer_terminate") {
        this.#emitSend({ type: "peer_terminate_ok", session: this.id });
      } else if (
        this.#terminateReason !== "" &&
        (message.type === "peer_data" || message.type === "peer_keepalive")
      ) {
        // We gave up (or left) before the peer accepted or finished: tell it.
        this.#emitSend(this.#terminateMessage());
      }
      return;
    }
    switch (message.type) {
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
        if (this.#channel === undefined) return;
        this.#channel.receive(now, segmentOf(message));
        this.#drainChannel(now);
    }
  }

  /** @returns when `onTimeout` should next be called, or undefined */
  nextTimeout(): number | undefined {
    if (this.#state === "closed") return undefined;
    let next = earlier(this.#nextSendAt, this.#channel?.nextTimeout());
    if (this.#state === "open") next = earlier(next, this.#cipher.nextRekey());
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
    this.#now = Math.max(this.#now, now);
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
      if (this.#cipher.rekeyDue(now)) {
        this.#initiate(now);
        this.#emitBytes(this.#cipher.initiation!, this.#connect);
      }
      this.#channel.onTimeout(now);
      this.#drainChannel(now);
      if (this.#state === "closed") return;
    }
    if (this.#state === "closing" && this.#nextSendAt === undefined && now >= giveUpAt) {
      // What we sent was never all acknowledged: terminate anyway.
      this.#sendHandshake(now);
    }
    if (this.#nextSendAt === undefined || now < this.#nextSendAt) return;
    if (
      this.#state === "closing" &&
      (this.#attempts >= TERMINATE_ATTEMPTS || now >= giveUpAt + this.#options.retry.giveUpMs)
    ) {
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

  #initiate(now: number): void {
    const { ownName, nonce, timestamp } = this.#options;
    if (nonce === undefined || timestamp === undefined) {
      throw new TypeError("Cannot connect without the introduction's nonce and timestamps");
    }
    this.#cipher.initiate(
      now,
      encodeIntroduction({ name: ownName, nonce, timestamp: timestamp(now) }),
    );
  }

  #sendHandshake(now: number): void {
    if (this.#state === "connecting") {
      this.#emitBytes(this.#cipher.initiation!, this.#connect);
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

  #terminateMessage(): PeerInnerMessage {
    return {
      type: "peer_terminate",
      session: this.id,
      cumulative: this.#channel?.receivedUpTo ?? 0,
      reason: this.#terminateReason,
    };
  }

  /**
   * Sends an inner message: sealed once keys exist; before that only a
   * `peer_reject` goes, in clear (anything else waits for nothing: the peer
   * times out).
   */
  #emitSend(message: PeerInnerMessage): void {
    if (this.#cipher.hasKeys) {
      let bytes: Uint8Array;
      try {
        bytes = this.#cipher.seal(this.#now, message);
      } catch (error) {
        if (!(error instanceof CryptoError)) throw error;
        // The keys expired (the requester never rekeyed): the session cannot go on.
        if (this.#state !== "closed") {
          this.#close("dead", `"${this.peerName}" never renewed the keys`);
        }
        return;
      }
      const accept = this.#cipher.response;
      if (
        !this.outgoing && !this.#confirmed && accept !== undefined &&
        this.#now - this.#acceptSentAt >= ACCEPT_REPEAT_MS
      ) {
        // Nothing from the requester has opened yet: its copy of our accept may
        // have been lost. It rides again with our traffic, which gets through
        // far more often than the requester's sparse retransmissions.
        this.#acceptSentAt = this.#now;
        this.#emitBytes(accept, this.#accept);
      }
      return this.#emitBytes(bytes, message);
    }
    if (message.type === "peer_reject") this.#emitBytes(encodeMessage(message), message);
  }

  get #connect(): PeerSent {
    return { type: "peer_connect", session: this.id };
  }

  get #accept(): PeerSent {
    return { type: "peer_accept", session: this.id };
  }

  #emitBytes(bytes: Uint8Array, sent: PeerSent): void {
    this.#outputs.push({ type: "send", to: this.#address, bytes, sent });
  }
}

/**
 * Maps a channel segment to its wire message.
 *
 * @param session the session id
 * @param segment the segment
 * @returns the message
 */
export function messageOf(session: string, segment: Segment): PeerInnerMessage {
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
export function segmentOf(message: PeerInnerMessage): Segment {
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
