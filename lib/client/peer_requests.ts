/**
 * Connection requests that reach a client (`peer_connect`), sans-I/O: the
 * cheap bounds first (logged in, waiting requests, lookups per address),
 * then message 1 of the Noise IKpsk2 handshake read with our static key,
 * the timestamp rule (a requester key's initiations must get newer), and
 * the check with the server that the key belongs to the name claimed; the
 * renewals of open sessions' keys; and the one-line refusal of a version 2
 * peer. The peer table owns the sessions; this part decides which exist.
 *
 * @module
 */
import { CryptoError } from "../crypto/crypto_error.ts";
import { fingerprint } from "../crypto/fingerprint.ts";
import { TimestampRecord } from "../crypto/introduction.ts";
import type { KeyPair } from "../crypto/key_pair.ts";
import { toHex } from "../hex.ts";
import type { Random } from "../random.ts";
import { nameKey, nameProblem } from "../wire/client_name.ts";
import { encodeMessage } from "../wire/codec.ts";
import { type MessageOf, PEER_KEY_BYTES, PEER_PSK_BYTES, type Reply } from "../wire/messages.ts";
import { LookupBudget } from "./lookup_budget.ts";
import type { Outbox } from "./outbox.ts";
import { type ReadInitiation, readInitiation, sameBytes } from "./peer_cipher.ts";
import type { PeerAddress, PeerSession } from "./peer_session.ts";
import type { ServerLink } from "./server_link.ts";

/** Most incoming requests being verified or waiting for `accept` at once. */
export const MAX_INCOMING_REQUESTS = 8;

/** The reason a version 2 peer hears, in a version 2 `peer_reject`. */
export const VERSION_2_PEER_REASON =
  "this client speaks Switchboard protocol version 3 (encrypted peer sessions); upgrade";

/** What {@linkcode PeerRequests} needs of the peer table. */
export interface PeerRequestsHost {
  readonly link: ServerLink;
  readonly outbox: Outbox;
  readonly random: Random;
  /** Our static key pair. */
  staticKeyPair(): KeyPair;
  /** How many incoming requests are being verified or wait for `accept`. */
  waiting(): number;
  /** Makes an incoming session, in `verifying`. */
  open(
    now: number,
    session: {
      id: string;
      ownName: string;
      peerName: string;
      address: PeerAddress;
      key: Uint8Array;
    },
  ): PeerSession;
  /** Whether the table still holds this session. */
  holds(peer: PeerSession): boolean;
  /** Carries out what a session put out. */
  drain(now: number, peer: PeerSession): void;
  /** Something a script wait may wait for happened. */
  changed(now: number): void;
}

/**
 * The gate of incoming requests.
 *
 * @example
 * ```ts
 * const requests = new PeerRequests(host);
 * requests.incoming(now, from, connect, bytes); // a peer_connect with an unknown session id
 * ```
 */
export class PeerRequests {
  #host: PeerRequestsHost;
  /** The lookups incoming requests may cause, per IP address. */
  #lookups = new LookupBudget();
  /** The greatest initiation timestamp accepted per requester key. */
  #seen = new TimestampRecord();

  /** @param host the peer table's side */
  constructor(host: PeerRequestsHost) {
    this.#host = host;
  }

  /**
   * A `peer_connect` with an unknown session id: refused at once, dropped,
   * or a new session that asks the server about the key.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param message the decoded `peer_connect`
   * @param bytes the datagram, to recognise its copies
   */
  incoming(now: number, from: PeerAddress, message: MessageOf<"peer_connect">, bytes: Uint8Array) {
    const { link, outbox } = this.#host;
    const reject = (reason: string): void => {
      const sent = { type: "peer_reject", session: message.session, reason } as const;
      outbox.push({ type: "peer_send", to: from, bytes: encodeMessage(sent), sent });
    };
    const token = link.token;
    const ownName = link.loggedInAs;
    if (token === undefined || ownName === undefined) {
      return reject("the client you called is not logged in");
    }
    // Refused without work: no session kept, no Diffie-Hellman, no lookup.
    if (this.#host.waiting() >= MAX_INCOMING_REQUESTS) {
      return reject("too many requests are waiting for an answer; try again later");
    }
    if (!this.#lookups.take(now, from.ip)) {
      return reject("too many requests from your address; try again in a moment");
    }
    const read = this.#read(message);
    // Not a handshake for our key, or garbage: dropped without a word.
    if (read === undefined) return;
    const { name, nonce, timestamp } = read.introduction;
    if (nameProblem(name) !== undefined) return reject("your name is not valid");
    // The timestamp rule: a replayed initiation is not newer than the last accepted.
    if (!this.#seen.isNewer(toHex(read.remoteKey), timestamp)) return;
    const peer = this.#host.open(now, {
      id: message.session,
      ownName,
      peerName: name,
      address: from,
      key: read.remoteKey,
    });
    // Nobody may pose as another client: ask the server whose key that name has.
    link.request(now, { type: "lookup", token, name, nonce }, "udp", (at, outcome) => {
      this.#verified(at, peer, read, bytes, outcome.type === "reply" ? outcome.reply : undefined);
    });
  }

  /**
   * A `peer_connect` on an open incoming session: a copy of the one that
   * made it (answered again), or a renewal of its keys (same key, newer
   * timestamp), or nothing.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param peer the session
   * @param message the decoded `peer_connect`
   * @param bytes the datagram
   */
  rekey(
    now: number,
    from: PeerAddress,
    peer: PeerSession,
    message: MessageOf<"peer_connect">,
    bytes: Uint8Array,
  ): void {
    const copy = peer.cipher.initiation;
    if (copy !== undefined && sameBytes(copy, bytes)) return peer.handle(now, from, message);
    const read = this.#read(message);
    if (read === undefined || !sameBytes(read.remoteKey, peer.cipher.remoteKey)) return;
    const key = toHex(read.remoteKey);
    if (!this.#seen.isNewer(key, read.introduction.timestamp)) return;
    this.#seen.record(key, read.introduction.timestamp);
    peer.rekey(now, from, read, bytes);
  }

  /**
   * A version 2 `peer_connect`: told, in version 2's own `peer_reject`, to
   * upgrade (within the per-address lookup budget, so it amplifies nothing).
   *
   * @param now current time, ms
   * @param from where it came from
   * @param bytes the datagram
   */
  version2(now: number, from: PeerAddress, bytes: Uint8Array): void {
    if (bytes.length < 12 || !this.#lookups.take(now, from.ip)) return;
    const session = toHex(bytes.subarray(4, 12));
    const sent = { type: "peer_reject", session, reason: VERSION_2_PEER_REASON } as const;
    const reply = encodeMessage(sent);
    reply[2] = 2;
    this.#host.outbox.push({ type: "peer_send", to: from, bytes: reply, sent });
  }

  /** Reads a message 1 addressed to our key, or undefined. */
  #read(connect: MessageOf<"peer_connect">): ReadInitiation | undefined {
    try {
      return readInitiation(this.#host.staticKeyPair(), connect, this.#host.random);
    } catch (error) {
      if (error instanceof CryptoError) return undefined;
      throw error;
    }
  }

  #verified(
    now: number,
    peer: PeerSession,
    read: ReadInitiation,
    initiation: Uint8Array,
    reply: Reply | undefined,
  ): void {
    const host = this.#host;
    if (!host.holds(peer) || peer.state !== "verifying") return;
    const address = peer.address;
    // The key that opened the handshake must be the one the server has under
    // that name; the address need not match (a NAT may show another).
    if (
      reply?.type === "lookup_ok" && reply.psk.length === PEER_PSK_BYTES &&
      nameKey(reply.name) === nameKey(peer.peerName) && sameBytes(reply.key, read.remoteKey)
    ) {
      this.#seen.record(toHex(read.remoteKey), read.introduction.timestamp);
      peer.verified(now, read, initiation, reply.psk);
      host.outbox.event({
        kind: "request",
        name: peer.peerName,
        ip: address.ip,
        udpPort: address.port,
      });
      host.changed(now);
      return;
    }
    peer.reject(`could not verify that you are "${peer.peerName}"`);
    host.drain(now, peer);
    host.outbox.event({
      kind: "request_refused",
      name: peer.peerName,
      ip: address.ip,
      udpPort: address.port,
      presentedKey: fingerprint(read.remoteKey),
      ...(reply?.type === "lookup_ok"
        ? {
          registered: {
            name: reply.name,
            ip: reply.ip,
            udpPort: reply.udpPort,
            key: reply.key.length === PEER_KEY_BYTES ? fingerprint(reply.key) : "none",
          },
        }
        : reply?.type === "error"
        ? { error: reply.message }
        : {}),
    });
  }
}
