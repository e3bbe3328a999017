/**
 * Connection requests that reach a client (`peer_connect`), sans-I/O: the
 * cheap bounds first (logged in, waiting requests, lookups per address and
 * for all addresses together),
 * then message 1 of the Noise IKpsk2 handshake read with our static key,
 * the timestamp rule (a requester key's initiations must get newer), and
 * the check with the server that the key belongs to the name claimed; the
 * renewals of open sessions' keys; and the one-line refusal of a version 2
 * peer. The peer table owns the sessions; this part decides which exist.
 *
 * A check with no answer about the request (none at all, our own session
 * lost to a server restart, a busy server) leaves it waiting, silent, and the
 * requester's next copy of the same `peer_connect` asks again (within the
 * per-address lookup budget) until {@link VERIFY_RETRY_MS} after it came.
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
import { errorCodeName } from "../wire/error_code.ts";
import { type MessageOf, PEER_KEY_BYTES, PEER_PSK_BYTES, type Reply } from "../wire/messages.ts";
import { LookupBudget } from "./lookup_budget.ts";
import type { Outbox } from "./outbox.ts";
import { type ReadInitiation, readInitiation, sameBytes } from "./peer_cipher.ts";
import type { PeerAddress, PeerSession } from "./peer_session.ts";
import type { ServerLink } from "./server_link.ts";

/** Most incoming requests being verified or waiting for `accept` at once. */
export const MAX_INCOMING_REQUESTS = 8;

/**
 * Most requests from all addresses together that may cost the handshake's
 * Diffie-Hellman work and a lookup each second (and the burst): a flood
 * spread over many source addresses, each within its own budget, still
 * costs a bounded amount of work. Past it, requests are dropped unanswered.
 */
export const MAX_REQUEST_WORK_PER_SECOND = 20;

/**
 * How long a request whose check found no definite answer may be checked
 * again on the requester's copies, ms (the requester gives up after as long).
 */
export const VERIFY_RETRY_MS = 30_000;

/** Errors of a check that say nothing of the request: it is asked again. */
const TRANSIENT_ERRORS: ReadonlySet<string> = new Set(["not_logged_in", "busy"]);

/** A request being checked with the server. */
interface Checking {
  readonly read: ReadInitiation;
  /** The `peer_connect` datagram: only its copies ask again. */
  readonly bytes: Uint8Array;
  readonly since: number;
  /** Whether a lookup is on its way. */
  asking: boolean;
}

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
  /** The same, all addresses together (one bucket). */
  #allLookups = new LookupBudget(MAX_REQUEST_WORK_PER_SECOND);
  /** The greatest initiation timestamp accepted per requester key. */
  #seen = new TimestampRecord();
  /** Requests being checked with the server. */
  #checking = new Map<PeerSession, Checking>();

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
    this.#expire(now);
    // Past its address's budget a request is dropped unanswered: so a flood,
    // even from a forged source, gets at most that many (smaller) replies.
    if (!this.#lookups.take(now, from.ip)) return;
    // Refused without work: no session kept, no Diffie-Hellman, no lookup.
    if (this.#host.waiting() >= MAX_INCOMING_REQUESTS) {
      return reject("too many requests are waiting for an answer; try again later");
    }
    // A flood from many addresses: dropped unanswered, no work.
    if (!this.#allLookups.take(now, "")) return;
    const read = this.#read(message);
    // Not a handshake for our key, or garbage: dropped without a word.
    if (read === undefined) return;
    const { name, timestamp } = read.introduction;
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
    const checking = { read, bytes: bytes.slice(), since: now, asking: false };
    this.#checking.set(peer, checking);
    this.#ask(now, peer, checking);
  }

  /**
   * A copy of the `peer_connect` of a request still being checked: if the
   * last check found no definite answer, ask the server again.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param peer the session, `verifying`
   * @param bytes the datagram
   */
  recheck(now: number, from: PeerAddress, peer: PeerSession, bytes: Uint8Array): void {
    const checking = this.#checking.get(peer);
    if (checking === undefined || checking.asking || !sameBytes(checking.bytes, bytes)) return;
    if (this.#host.link.token === undefined || !this.#lookups.take(now, from.ip)) return;
    if (!this.#allLookups.take(now, "")) return;
    this.#ask(now, peer, checking);
  }

  /** Nobody may pose as another client: asks the server whose key that name has. */
  #ask(now: number, peer: PeerSession, checking: Checking): void {
    const { link } = this.#host;
    const token = link.token!;
    const { name, nonce } = checking.read.introduction;
    checking.asking = true;
    link.request(now, { type: "lookup", token, name, nonce }, "udp", (at, outcome) => {
      checking.asking = false;
      const reply = outcome.type === "reply" ? outcome.reply : undefined;
      this.#verified(at, peer, checking.read, checking.bytes, reply);
    });
  }

  /** Refuses the requests that found no definite answer within {@link VERIFY_RETRY_MS}. */
  #expire(now: number): void {
    for (const [peer, checking] of this.#checking) {
      if (!this.#host.holds(peer) || peer.state !== "verifying") {
        this.#checking.delete(peer);
      } else if (!checking.asking && now - checking.since >= VERIFY_RETRY_MS) {
        this.#refuse(now, peer, checking.read, undefined);
      }
    }
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
    // A copy is answered again (its accept may have been lost), and reading a new
    // one costs two Diffie-Hellman operations: both within the budget of the
    // sender's address (a renewal comes every two minutes), or a stranger who saw
    // the session id could make us answer or work at its sending rate.
    if (!this.#lookups.take(now, from.ip)) return;
    const copy = peer.cipher.initiation;
    if (copy !== undefined && sameBytes(copy, bytes)) return peer.handle(now, from, message);
    if (!this.#allLookups.take(now, "")) return;
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
    if (!host.holds(peer) || peer.state !== "verifying") {
      this.#checking.delete(peer);
      return;
    }
    const address = peer.address;
    // The key that opened the handshake must be the one the server has under
    // that name; the address need not match (a NAT may show another).
    const answered = reply?.type === "lookup_ok" && reply.psk.length === PEER_PSK_BYTES &&
      nameKey(reply.name) === nameKey(peer.peerName);
    if (answered && sameBytes(reply.key, read.remoteKey)) {
      this.#checking.delete(peer);
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
    // No definite answer (none at all, our own session lost to a server restart, a
    // busy server): the requester's next copy asks again, until VERIFY_RETRY_MS.
    // Any other answer refuses at once, so a stranger cannot hold a waiting place
    // (a stale nonce, a name that is not online).
    const passing = reply === undefined ||
      (reply.type === "error" && TRANSIENT_ERRORS.has(errorCodeName(reply.code)));
    const since = this.#checking.get(peer)?.since ?? -Infinity;
    if (passing && now - since < VERIFY_RETRY_MS) return;
    this.#refuse(now, peer, read, reply);
  }

  /** Refuses a request whose key the server did not vouch for under the name it gave. */
  #refuse(now: number, peer: PeerSession, read: ReadInitiation, reply: Reply | undefined): void {
    const host = this.#host;
    const address = peer.address;
    this.#checking.delete(peer);
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
