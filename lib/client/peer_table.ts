/**
 * The client's sessions with other clients: the table of them, `connect`
 * (a lookup, then the handshake), incoming requests checked against the
 * server (nobody may pose as another client: the key that opened the
 * handshake must be the one the server vouches for under that name),
 * `accept`, `reject`, `send`, `terminate` and `peers`; and what the
 * sessions report, routed to the commands waiting on them, to file
 * transfers and to script waits. Datagrams from peers come here as bytes;
 * the table decodes them, hands new requests and key renewals to
 * {@linkcode PeerRequests} and the rest to their session.
 *
 * @module
 */
import { TimestampSource } from "../crypto/introduction.ts";
import { generateKeyPair, type KeyPair } from "../crypto/key_pair.ts";
import type { TransportLimits } from "../crypto/transport_session.ts";
import { toHex } from "../hex.ts";
import type { Random } from "../random.ts";
import {
  LOW_LATENCY_CHANNEL_OPTIONS,
  type ReliableChannelOptions,
} from "../reliable/reliable_channel.ts";
import { MAX_MESSAGE_BYTES } from "../reliable/segment.ts";
import { nameKey, nameProblem } from "../wire/client_name.ts";
import { decodeMessage } from "../wire/codec.ts";
import { isPeerMessage, type MessageOf, PEER_KEY_BYTES, PEER_PSK_BYTES } from "../wire/messages.ts";
import { ProtocolError } from "../wire/protocol_error.ts";
import { peerEndText } from "./client_event_text.ts";
import type { FileTransfers } from "./file_transfers.ts";
import type { Outbox } from "./outbox.ts";
import { PeerCipher } from "./peer_cipher.ts";
import { PeerRequests } from "./peer_requests.ts";
import { type PeerAddress, PeerSession, type PeerSessionOutput } from "./peer_session.ts";
import type { RetryPolicy } from "./retry_policy.ts";
import type { ServerLink } from "./server_link.ts";
import type { ClientTimer, TimerTable } from "./timer_table.ts";

/**
 * The channel options of peer chat sessions: the low-latency preset (a
 * redundant copy of chat-sized segments, fast retransmit on the first gap),
 * with the retransmission timeout capped at 8 s and a keepalive every 2 s of
 * silence, so a session rides out a partition of several seconds and a
 * peer that is really gone is declared so after 30 s.
 */
export const PEER_CHANNEL_OPTIONS: Readonly<ReliableChannelOptions> = Object.freeze({
  ...LOW_LATENCY_CHANNEL_OPTIONS,
  maxRtoMs: 8000,
  keepaliveMs: 2000,
  deadAfterMs: 30_000,
});

/** Closed peer sessions kept to answer late copies of their messages. */
const CLOSED_PEERS_KEPT = 256;

/** The commands on peer sessions that the table runs. */
export type PeerCommand =
  | { readonly kind: "connect"; readonly name: string }
  | { readonly kind: "reject"; readonly name?: string }
  | { readonly kind: "send"; readonly to?: string; readonly text: string }
  | { readonly kind: "terminate"; readonly name?: string }
  | { readonly kind: "peers" };

/** What script waits learn from the peer sessions. */
export interface PeerNews {
  /** A chat message from `peer` was delivered. */
  message(peer: string): void;
  /** A session `peer` ended, or that died, closed. */
  ended(peer: string): void;
  /** Something a wait may wait for happened. */
  changed(now: number): void;
}

/** Options of a {@linkcode PeerTable}. */
export interface PeerTableOptions {
  random: Random;
  retry: RetryPolicy;
  /** Options of the sessions' reliable channels. */
  channel?: ReliableChannelOptions;
  link: ServerLink;
  transfers: FileTransfers;
  outbox: Outbox;
  /** The core's timers; the table owns `peers`. */
  timers: TimerTable<ClientTimer>;
  /**
   * This client's static key pair: the server vouches for its public half.
   * Default: one drawn from `random` when a peer session first needs it.
   */
  staticKeyPair?: KeyPair;
  /** Rekey and expiry limits of peer keys (tests shorten them). */
  limits?: Partial<TransportLimits>;
  /** Benchmarks only: peer sessions seal with a null cipher (see `PeerCipherOptions`). */
  nullCipher?: boolean;
}

/** A `send` waiting for its acknowledgement. */
interface Sending {
  readonly id: number;
  readonly index: number;
  readonly text: string;
}

/**
 * The peer table.
 *
 * @example
 * ```ts
 * const peers = new PeerTable({ random, retry, link, transfers, outbox, timers });
 * peers.run(now, 4, { kind: "connect", name: "Bob" });
 * ```
 */
export class PeerTable {
  #options: PeerTableOptions;
  #link: ServerLink;
  #outbox: Outbox;
  #transfers: FileTransfers;
  #peers = new Map<string, PeerSession>();
  #news: PeerNews | undefined;
  /** Commands waiting on a session, by session id: `connect` and `terminate`. */
  #waiting = new Map<string, { id: number; kind: "connect" | "terminate" }>();
  /** `send`s waiting for their acknowledgement, by session id, then message id. */
  #sending = new Map<string, Map<number, Sending>>();
  /** Our initiations' timestamps, strictly increasing. */
  #timestamps = new TimestampSource();
  #requests: PeerRequests;

  /** @param options policies, the link, the transfers, the outbox and the timers */
  constructor(options: PeerTableOptions) {
    this.#options = options;
    this.#link = options.link;
    this.#outbox = options.outbox;
    this.#transfers = options.transfers;
    this.#requests = new PeerRequests({
      link: options.link,
      outbox: options.outbox,
      random: options.random,
      staticKeyPair: () => this.#staticKeyPair,
      waiting: () =>
        [...this.#peers.values()].filter((p) => p.state === "verifying" || p.state === "pending")
          .length,
      open: (now, { key, ...session }) =>
        this.#add(now, { ...session, outgoing: false, cipher: this.#cipher(session.id, key) }),
      holds: (peer) => this.#peers.get(peer.id) === peer,
      drain: (now, peer) => this.drain(now, peer),
      changed: (now) => this.#news?.changed(now),
    });
  }

  /**
   * A session by id.
   *
   * @param id the session id
   * @returns the session, closed ones included, or undefined
   */
  byId(id: string): PeerSession | undefined {
    return this.#peers.get(id);
  }

  /** @param news told of messages, ends and changes */
  listen(news: PeerNews): void {
    this.#news = news;
  }

  /** Every session, closed ones included. */
  get all(): readonly PeerSession[] {
    return [...this.#peers.values()];
  }

  /**
   * Runs a command on peer sessions.
   *
   * @param now current time, ms
   * @param id the command's number
   * @param command the command
   */
  run(now: number, id: number, command: PeerCommand): void {
    switch (command.kind) {
      case "peers":
        return this.#list(id);
      case "connect":
        return this.#connect(now, id, command.name);
      case "reject": {
        const problem = this.requestProblem(command.name, "reject");
        if (problem !== undefined) return this.#outbox.fail(id, "reject", problem, "no_request");
        const peer = this.byName(command.name, ["pending"]);
        if (peer === undefined) {
          return this.#outbox.fail(id, "reject", requestMissing(command.name), "no_request");
        }
        peer.reject(`${this.#link.loggedInAs ?? "the client"} declined`);
        this.drain(now, peer);
        return this.#outbox.result(id, { ok: true, command: "reject", name: peer.peerName });
      }
    }
    const name = command.kind === "send" ? command.to : command.name;
    const problem = this.sessionProblem(name, command.kind);
    if (problem !== undefined) return this.#outbox.fail(id, command.kind, problem, "no_session");
    const peer = this.open(name)[0];
    if (command.kind === "terminate") {
      this.#waiting.set(peer.id, { id, kind: "terminate" });
      peer.terminate(now, "terminate");
      this.drain(now, peer);
      return;
    }
    const text = command.text;
    const size = new TextEncoder().encode(text).length;
    if (size >= MAX_MESSAGE_BYTES) {
      return this.#outbox.fail(
        id,
        "send",
        `The message is ${size} bytes; the limit is ${MAX_MESSAGE_BYTES - 1}`,
        "too_long",
      );
    }
    if (!text.isWellFormed()) {
      return this.#outbox.fail(id, "send", "The message is not valid Unicode text", "bad_request");
    }
    const index = peer.counts.sent;
    const messageId = peer.send(now, text);
    const sending = this.#sending.get(peer.id) ?? new Map<number, Sending>();
    sending.set(messageId, { id, index, text });
    this.#sending.set(peer.id, sending);
    this.#outbox.push({
      type: "trace",
      trace: { step: "sent", session: peer.id, peer: peer.peerName, index, text },
    });
    this.drain(now, peer);
  }

  /**
   * Tells whether one open session can be named for `command`.
   *
   * @param name the peer's name, if given
   * @param command the command, for the hint
   * @returns undefined, or why not, one sentence
   */
  sessionProblem(
    name: string | undefined,
    command: "send" | "terminate" | "sendfile",
  ): string | undefined {
    const open = this.open(name);
    if (open.length === 1) return undefined;
    if (open.length === 0) {
      if (name !== undefined) return `No open session with "${name}"`;
      return command === "sendfile"
        ? "No open session; use connect NAME first"
        : "No open session; use connect NAME";
    }
    const usage = {
      send: "send @NAME TEXT",
      terminate: "terminate NAME",
      sendfile: "sendfile @NAME PATH",
    };
    return `Sessions with ${open.map((p) => `"${p.peerName}"`).join(", ")} are open; ` +
      `name one: ${usage[command]}`;
  }

  /**
   * Tells whether a bare `accept` or `reject` would have to guess, as
   * {@linkcode PeerTable.sessionProblem} does for `send`: requests from more
   * than one peer are pending.
   *
   * @param name the peer's name, if given
   * @param command the command, for the hint
   * @returns undefined, or why not, one sentence
   */
  requestProblem(name: string | undefined, command: "accept" | "reject"): string | undefined {
    if (name !== undefined) return undefined;
    const names = new Map<string, string>();
    for (const peer of this.#peers.values()) {
      if (peer.state === "pending") names.set(nameKey(peer.peerName), peer.peerName);
    }
    if (names.size < 2) return undefined;
    return `Requests from ${[...names.values()].map((n) => `"${n}"`).join(", ")} are pending; ` +
      `name one: ${command} NAME`;
  }

  /**
   * Accepts a pending request.
   *
   * @param now current time, ms
   * @param id the `accept` command's number
   * @param peer the pending session
   */
  accept(now: number, id: number, peer: PeerSession): void {
    // A peer asks again only when it lost its session with us (it refuses
    // to connect twice): an older one is dead, though we may not know yet.
    for (const old of [...this.#peers.values()]) {
      if (
        old !== peer && old.state !== "closed" && old.state !== "pending" &&
        nameKey(old.peerName) === nameKey(peer.peerName)
      ) this.#replace(now, old);
    }
    peer.accept(now);
    this.drain(now, peer);
    this.#outbox.result(id, { ok: true, command: "accept", name: peer.peerName, session: peer.id });
  }

  /**
   * Handles a datagram from another client.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param bytes the datagram
   */
  handle(now: number, from: PeerAddress, bytes: Uint8Array): void {
    if (bytes.length >= 4 && bytes[2] === 2 && bytes[3] === 40) {
      return this.#requests.version2(now, from, bytes);
    }
    let message;
    try {
      message = decodeMessage(bytes);
    } catch (error) {
      if (error instanceof ProtocolError) return;
      throw error;
    }
    if (!isPeerMessage(message)) return;
    const known = this.#peers.get(message.session);
    if (known !== undefined) {
      if (message.type === "peer_connect" && known.state === "open" && !known.outgoing) {
        this.#requests.rekey(now, from, known, message, bytes);
      } else if (message.type === "peer_connect" && known.state === "verifying") {
        this.#requests.recheck(now, from, known, bytes);
      } else {
        known.handle(now, from, message);
      }
      // Most datagrams of a transfer produce only an ack: a `wait` can
      // change only when something else came out.
      if (this.drain(now, known)) this.#news?.changed(now);
      return;
    }
    if (message.type === "peer_connect") this.#requests.incoming(now, from, message, bytes);
  }

  /**
   * Ends every session at once, for `exit`: one terminate goes out (and
   * again for each copy the peer sends).
   *
   * @param now current time, ms
   */
  leave(now: number): void {
    for (const peer of this.#peers.values()) {
      if (peer.state === "closed") continue;
      peer.abort("exit");
      this.drain(now, peer);
    }
  }

  /**
   * Moves every session whose time has come.
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    for (const peer of this.#peers.values()) {
      const at = peer.nextTimeout();
      if (at !== undefined && at <= now) {
        peer.onTimeout(now);
        this.drain(now, peer);
      }
    }
    this.#armTimer();
  }

  /**
   * The first session in one of `states` with the peer `name` (any peer if undefined).
   *
   * @param name the peer's name
   * @param states the states to look for
   * @returns the session, or undefined
   */
  byName(name: string | undefined, states: readonly string[]): PeerSession | undefined {
    for (const peer of this.#peers.values()) {
      if (!states.includes(peer.state)) continue;
      if (name === undefined || nameKey(peer.peerName) === nameKey(name)) return peer;
    }
    return undefined;
  }

  /**
   * @param name the peer's name, or undefined for all
   * @returns the open sessions with that peer
   */
  open(name: string | undefined): PeerSession[] {
    return [...this.#peers.values()].filter((p) =>
      p.state === "open" && (name === undefined || nameKey(p.peerName) === nameKey(name))
    );
  }

  /**
   * Carries out what a session put out, then what the transfers did.
   *
   * @param now current time, ms
   * @param peer the session
   * @returns true if the session put out more than datagrams to send
   */
  drain(now: number, peer: PeerSession): boolean {
    let news = false;
    for (let out = peer.poll(); out !== undefined; out = peer.poll()) {
      if (out.type !== "send") news = true;
      this.#output(now, peer, out);
    }
    this.drainTransfers(now);
    this.#armTimer();
    return news;
  }

  /**
   * Drains every session (file transfers may have sent on any).
   *
   * @param now current time, ms
   */
  drainAll(now: number): void {
    for (const peer of this.#peers.values()) this.drain(now, peer);
    this.drainTransfers(now);
  }

  /**
   * Passes on what file transfers put out: events, and file work for the driver.
   *
   * @param now current time, ms
   */
  drainTransfers(now: number): void {
    let any = false;
    for (let out = this.#transfers.poll(); out !== undefined; out = this.#transfers.poll()) {
      any = true;
      if (out.type === "event") this.#outbox.event(out.event);
      else this.#outbox.push({ type: "file", op: out });
    }
    if (any) this.#news?.changed(now);
  }

  #armTimer(): void {
    let next: number | undefined;
    for (const peer of this.#peers.values()) {
      const at = peer.nextTimeout();
      if (at !== undefined && (next === undefined || at < next)) next = at;
    }
    this.#options.timers.set("peers", next);
  }

  #connect(now: number, id: number, name: string): void {
    const token = this.#link.token;
    if (token === undefined) {
      return this.#outbox.fail(
        id,
        "connect",
        "Not logged in; use register or login first",
        "not_logged_in",
      );
    }
    const problem = nameProblem(name);
    if (problem !== undefined) return this.#outbox.fail(id, "connect", problem, "invalid_name");
    if (nameKey(name) === nameKey(this.#link.loggedInAs ?? "")) {
      return this.#outbox.fail(id, "connect", "You cannot connect to yourself", "bad_command");
    }
    // An open session is checked against the lookup (see #connected).
    const existing = this.byName(name, ["connecting"]);
    if (existing !== undefined) {
      return this.#outbox.fail(
        id,
        "connect",
        `Already in a session with "${existing.peerName}"`,
        "bad_command",
      );
    }
    const body = { type: "lookup", token, name, nonce: new Uint8Array(0) } as const;
    this.#link.ask(
      now,
      id,
      { command: "connect", body, via: "udp", expect: "lookup_ok" },
      (at, reply) => {
        this.#connected(at, id, reply);
      },
    );
  }

  #connected(now: number, id: number, reply: MessageOf<"lookup_ok">): void {
    const existing = this.byName(reply.name, ["connecting", "open", "closing"]);
    if (existing !== undefined) {
      const moved = existing.state !== "connecting" &&
        (existing.address.ip !== reply.ip || existing.address.port !== reply.udpPort);
      if (!moved) {
        return this.#outbox.fail(
          id,
          "connect",
          `Already in a session with "${existing.peerName}"`,
          "bad_command",
        );
      }
      // The peer is online at a new address: it restarted, and the old
      // session is dead (its transfers keep their partial files to resume).
      this.#replace(now, existing);
    }
    if (reply.key.length !== PEER_KEY_BYTES || reply.psk.length !== PEER_PSK_BYTES) {
      return this.#outbox.fail(
        id,
        "connect",
        `The server vouched for no key of "${reply.name}"`,
        "bad_command",
      );
    }
    const session = toHex(this.#options.random.bytes(8));
    const peer = this.#add(now, {
      id: session,
      ownName: this.#link.loggedInAs ?? this.#link.name ?? "",
      peerName: reply.name,
      address: { ip: reply.ip, port: reply.udpPort },
      outgoing: true,
      cipher: this.#cipher(session, reply.key, reply.psk),
      nonce: reply.nonce,
      timestamp: (at) => this.#timestamps.next(at),
    });
    this.#waiting.set(peer.id, { id, kind: "connect" });
    this.drain(now, peer);
  }

  /** Ends a session its peer has replaced with a new one, at once. */
  #replace(now: number, old: PeerSession): void {
    const reason = `"${old.peerName}" started a new session`;
    old.abort(reason);
    this.drain(now, old);
    this.#outbox.event({ kind: "peer_ended", name: old.peerName, by: "replaced", reason });
  }

  #list(id: number): void {
    const live = [...this.#peers.values()].filter((p) => p.state !== "closed");
    this.#outbox.result(id, {
      ok: true,
      command: "peers",
      peers: live.map((p) => ({
        name: p.peerName,
        session: p.id,
        state: p.state,
        ip: p.address.ip,
        udpPort: p.address.port,
        ...p.counts,
      })),
    });
  }

  #add(
    now: number,
    session: {
      id: string;
      ownName: string;
      peerName: string;
      address: PeerAddress;
      outgoing: boolean;
      cipher: PeerCipher;
      nonce?: Uint8Array;
      timestamp?: (now: number) => Uint8Array;
    },
  ): PeerSession {
    const peer = new PeerSession(now, {
      ...session,
      random: this.#options.random,
      retry: this.#options.retry,
      channel: this.#options.channel ?? PEER_CHANNEL_OPTIONS,
    });
    this.#peers.set(peer.id, peer);
    return peer;
  }

  #cipher(session: string, remoteKey: Uint8Array, psk?: Uint8Array): PeerCipher {
    const { random, limits, nullCipher } = this.#options;
    const staticKeyPair = this.#staticKeyPair;
    return new PeerCipher({ session, staticKeyPair, remoteKey, psk, random, limits, nullCipher });
  }

  get #staticKeyPair(): KeyPair {
    this.#options.staticKeyPair ??= generateKeyPair(this.#options.random);
    return this.#options.staticKeyPair;
  }

  #output(now: number, peer: PeerSession, out: PeerSessionOutput): void {
    switch (out.type) {
      case "send":
        this.#outbox.push({ type: "peer_send", to: out.to, bytes: out.bytes, sent: out.sent });
        return;
      case "opened": {
        const waiting = this.#waiting.get(peer.id);
        if (waiting?.kind === "connect") {
          this.#waiting.delete(peer.id);
          this.#outbox.result(waiting.id, {
            ok: true,
            command: "connect",
            name: peer.peerName,
            session: peer.id,
          });
        }
        return;
      }
      case "message":
        this.#news?.message(peer.peerName);
        this.#outbox.push({
          type: "trace",
          trace: {
            step: "delivered",
            session: peer.id,
            peer: peer.peerName,
            index: out.index,
            text: out.text,
          },
        });
        this.#outbox.event({
          kind: "message",
          from: peer.peerName,
          text: out.text,
          index: out.index,
        });
        return this.#news?.changed(now);
      case "file":
        this.#transfers.handle(now, peer, out.payload);
        // Its events now, before any chat delivered after it in the same batch.
        this.drainTransfers(now);
        return;
      case "acked": {
        this.#transfers.acked(now, peer, out.id);
        const sending = this.#sending.get(peer.id)?.get(out.id);
        if (sending === undefined) return;
        this.#sending.get(peer.id)!.delete(out.id);
        this.#outbox.push({
          type: "trace",
          trace: {
            step: "acked",
            session: peer.id,
            peer: peer.peerName,
            index: sending.index,
            text: sending.text,
          },
        });
        this.#outbox.result(sending.id, {
          ok: true,
          command: "send",
          to: peer.peerName,
          index: sending.index,
        });
        return;
      }
      case "closed":
        return this.#closed(now, peer, out);
    }
  }

  #closed(
    now: number,
    peer: PeerSession,
    out: Extract<PeerSessionOutput, { type: "closed" }>,
  ): void {
    // What `wait terminate` waits for: an open session its peer ended, or that died.
    if (out.by === "peer" || out.by === "dead") this.#news?.ended(peer.peerName);
    const text = peerEndText(peer.peerName, out.by, out.reason);
    this.#transfers.sessionEnded(peer, text);
    const code = out.by === "rejected"
      ? "rejected"
      : out.by === "timeout"
      ? "timeout"
      : "peer_gone";
    const waiting = this.#waiting.get(peer.id);
    this.#waiting.delete(peer.id);
    if (waiting?.kind === "terminate") {
      // The session is over whichever way it ended.
      this.#outbox.result(waiting.id, {
        ok: true,
        command: "terminate",
        name: peer.peerName,
        confirmed: out.by === "us",
        ...(out.by === "us" ? {} : { reason: out.reason }),
      });
    } else if (waiting !== undefined) {
      this.#outbox.fail(waiting.id, waiting.kind, text, code);
    }
    for (const sending of this.#sending.get(peer.id)?.values() ?? []) {
      this.#outbox.fail(sending.id, "send", text, code);
    }
    this.#sending.delete(peer.id);
    if (out.by === "peer" || out.by === "dead" || (out.by === "timeout" && !peer.outgoing)) {
      this.#outbox.event({
        kind: "peer_ended",
        name: peer.peerName,
        by: out.by,
        reason: out.reason,
      });
    }
    this.#prune();
    this.#news?.changed(now);
  }

  #prune(): void {
    const closed = [...this.#peers.values()].filter((p) => p.state === "closed");
    for (const peer of closed.slice(0, Math.max(0, closed.length - CLOSED_PEERS_KEPT))) {
      this.#peers.delete(peer.id);
    }
  }
}

/**
 * @param name the peer's name, if given
 * @returns the sentence for a missing connection request
 */
export function requestMissing(name: string | undefined): string {
  return name === undefined ? "No connection request" : `No connection request from "${name}"`;
}
