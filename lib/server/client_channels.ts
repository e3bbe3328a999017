/**
 * The server's side of the clients' encrypted channels (protocol version 3,
 * docs/SECURE_CHANNEL.md): answers Noise IK initiations with its static key,
 * keeps each session's keys by the index it chose, opens transport
 * datagrams and frames, and seals the core's messages for the route (a UDP
 * address and port, or a TCP connection) a session last proved itself on.
 * Sans-I/O: the server driver calls it around the core, for UDP and TCP.
 *
 * A session answers only after the client's first transport message opens
 * under its keys (key confirmation, as WireGuard's responder does), so a
 * replayed initiation or a lost response never moves a client's route to
 * keys it does not hold. Before that, a replayed initiation is dropped
 * without a reply, a session or the second half of the handshake's work:
 * message 1 carries the client's TAI64N timestamp, and an
 * {@link InitiationRecord} refuses one that is stale or seen before (per
 * client key, with a window for channels whose initiations cross).
 * Sessions die with their keys (`rejectAfterMs`) and
 * the table is bounded: past {@link MAX_SESSIONS} the oldest entry goes.
 *
 * @module
 */
import { CookieChecker, type SourceAddress } from "../crypto/cookie_checker.ts";
import { CookieGenerator } from "../crypto/cookie_generator.ts";
import { CryptoError, type CryptoErrorCode } from "../crypto/crypto_error.ts";
import { HandshakeState } from "../crypto/handshake_state.ts";
import { InitiationRecord } from "../crypto/initiation_record.ts";
import { TIMESTAMP_BYTES } from "../crypto/introduction.ts";
import type { KeyPair } from "../crypto/key_pair.ts";
import {
  CLIENT_SERVER_PROLOGUE,
  decodeSecureDatagram,
  encodeSecureDatagram,
  randomIndex,
} from "../crypto/secure_datagram.ts";
import { type TransportLimits, TransportSession } from "../crypto/transport_session.ts";
import type { Random } from "../random.ts";

/** Most sessions kept, confirmed or not. */
export const MAX_SESSIONS = 65_536;
/** How often expired sessions are swept, ms. */
const SWEEP_EVERY_MS = 10_000;

/** Options for {@link ClientChannels}. */
export interface ClientChannelsOptions {
  /** The server's static key pair. */
  staticKeyPair: KeyPair;
  /** Ephemeral keys, indexes and cookie secrets. */
  random: Random;
  /** Rekey and expiry limits (tests shorten them). */
  limits?: Partial<TransportLimits>;
  /** Most sessions kept (default {@link MAX_SESSIONS}). */
  maxSessions?: number;
}

/** What one datagram or frame came to. */
export type ClientChannelInput =
  /** Send these bytes back on the route it came from (a handshake response or a cookie reply). */
  | { readonly kind: "reply"; readonly bytes: Uint8Array }
  /** A message opened (empty for a keepalive), from the client with this static key. */
  | { readonly kind: "message"; readonly plaintext: Uint8Array; readonly clientKey: Uint8Array }
  /** Dropped without a reply and without effect. */
  | { readonly kind: "dropped"; readonly reason: CryptoErrorCode | "unknown_index" };

interface Session {
  readonly keys: TransportSession;
  /** The client's index: our transport datagrams carry it. */
  readonly peer: number;
  readonly clientKey: Uint8Array;
  route: string;
  confirmed: boolean;
}

/**
 * The table of the clients' encrypted sessions.
 *
 * @example
 * ```ts
 * const channels = new ClientChannels({ staticKeyPair, random });
 * const input = channels.receive(datagram, "udp 127.0.0.1 40000", source, now);
 * if (input.kind === "reply") socket.send(input.bytes);
 * if (input.kind === "message") core.handle(now, from, decodeMessage(input.plaintext));
 * const sealed = channels.seal("udp 127.0.0.1 40000", encodeMessage(reply), now);
 * ```
 */
export class ClientChannels {
  #options: ClientChannelsOptions;
  #checker: CookieChecker;
  #sessions = new Map<number, Session>();
  /** Route to the index of the session that last proved itself there. */
  #routes = new Map<string, number>();
  #lastSweep = 0;
  /** Initiations admitted, per client key: replays are dropped. */
  #initiations = new InitiationRecord();
  /** Inputs dropped, by reason. */
  readonly dropped = new Map<string, number>();

  /** @param options the server's key pair, randomness, limits */
  constructor(options: ClientChannelsOptions) {
    this.#options = options;
    this.#checker = new CookieChecker(options.staticKeyPair.publicKey, { random: options.random });
  }

  /** How many sessions are kept. */
  get size(): number {
    return this.#sessions.size;
  }

  /**
   * Handles one datagram or frame of the secure layer.
   *
   * @param bytes the datagram or frame body
   * @param route where it came from, as the driver names it (`udp ADDRESS PORT`, `tcp CONN`)
   * @param source its address and port, for cookies
   * @param now current time, ms
   * @param underLoad whether initiations must prove their address with a cookie
   * @returns a reply to send, a message for the core, or a drop
   */
  receive(
    bytes: Uint8Array,
    route: string,
    source: SourceAddress,
    now: number,
    underLoad = false,
  ): ClientChannelInput {
    this.#sweep(now);
    try {
      const datagram = decodeSecureDatagram(bytes);
      if (datagram.kind === "initiation") {
        return this.#initiation(bytes, datagram, route, source, now, underLoad);
      }
      if (datagram.kind !== "transport") return this.#drop("unexpected_message");
      const session = this.#sessions.get(datagram.receiver);
      if (session === undefined) return this.#drop("unknown_index");
      const plaintext = session.keys.open(datagram.counter, datagram.ciphertext, now);
      if (!session.confirmed || session.route !== route) {
        // Confirmed keys, or a client that moved (NAT rebinding): it is reached here now.
        if (this.#routes.get(session.route) === datagram.receiver) {
          this.#routes.delete(session.route);
        }
        session.confirmed = true;
        session.route = route;
        this.#routes.set(route, datagram.receiver);
      }
      return { kind: "message", plaintext, clientKey: session.clientKey };
    } catch (error) {
      if (error instanceof CryptoError) return this.#drop(error.code);
      throw error;
    }
  }

  /**
   * Seals a message for the client reached on a route.
   *
   * @param route the route, as in {@link receive}
   * @param plaintext the encoded message
   * @param now current time, ms
   * @returns the transport datagram, or undefined if no live session is there
   */
  seal(route: string, plaintext: Uint8Array, now: number): Uint8Array | undefined {
    const index = this.#routes.get(route);
    const session = index === undefined ? undefined : this.#sessions.get(index);
    if (session === undefined || session.keys.isExpired(now)) return undefined;
    const sealed = session.keys.seal(plaintext, now);
    return encodeSecureDatagram({ kind: "transport", receiver: session.peer, ...sealed });
  }

  /**
   * The static key of the client with a confirmed session on a route.
   *
   * @param route the route
   * @returns the client's static public key, or undefined
   */
  clientKey(route: string): Uint8Array | undefined {
    const index = this.#routes.get(route);
    return index === undefined ? undefined : this.#sessions.get(index)?.clientKey;
  }

  /**
   * Forgets the sessions of a route that closed (a TCP connection).
   *
   * @param route the route
   */
  forget(route: string): void {
    for (const [index, session] of this.#sessions) {
      if (session.route === route) this.#sessions.delete(index);
    }
    this.#routes.delete(route);
  }

  #initiation(
    bytes: Uint8Array,
    { sender, handshake: message }: { sender: number; handshake: Uint8Array },
    route: string,
    source: SourceAddress,
    now: number,
    underLoad: boolean,
  ): ClientChannelInput {
    const verdict = this.#checker.check(bytes, source, now, underLoad);
    if (verdict.kind === "drop") return this.#drop(verdict.reason);
    if (verdict.kind === "cookie") {
      return {
        kind: "reply",
        bytes: encodeSecureDatagram({ kind: "cookie_reply", receiver: sender, ...verdict.reply }),
      };
    }
    const { staticKeyPair, random, limits } = this.#options;
    const handshake = new HandshakeState({
      pattern: "IK",
      initiator: false,
      staticKeyPair,
      prologue: CLIENT_SERVER_PROLOGUE,
      random,
    });
    const timestamp = handshake.readMessage(message);
    const clientKey = handshake.remoteStaticKey!;
    if (timestamp.length !== TIMESTAMP_BYTES) return this.#drop("malformed");
    // The ephemeral key, in clear at the start of message 1, tells a replay from a new initiation.
    const admitted = this.#initiations.admit(clientKey, timestamp, message.subarray(0, 32));
    if (admitted === "stale") return this.#drop("stale_timestamp");
    if (admitted === "replayed") return this.#drop("replayed");
    let index = randomIndex(random);
    while (this.#sessions.has(index)) index = randomIndex(random);
    const response = encodeSecureDatagram({
      kind: "response",
      sender: index,
      receiver: sender,
      handshake: handshake.writeMessage(new Uint8Array(0)),
    });
    const max = this.#options.maxSessions ?? MAX_SESSIONS;
    while (this.#sessions.size >= max) {
      const [oldest, old] = this.#sessions.entries().next().value!;
      this.#sessions.delete(oldest);
      if (this.#routes.get(old.route) === oldest) this.#routes.delete(old.route);
    }
    this.#sessions.set(index, {
      keys: new TransportSession(handshake.split(), { now, initiator: false, limits }),
      peer: sender,
      clientKey,
      route,
      confirmed: false,
    });
    return { kind: "reply", bytes: new CookieGenerator(clientKey).addMacs(response, now) };
  }

  #drop(reason: CryptoErrorCode | "unknown_index"): ClientChannelInput {
    this.dropped.set(reason, (this.dropped.get(reason) ?? 0) + 1);
    return { kind: "dropped", reason };
  }

  #sweep(now: number): void {
    if (now - this.#lastSweep < SWEEP_EVERY_MS) return;
    this.#lastSweep = now;
    for (const [index, session] of this.#sessions) {
      if (!session.keys.isExpired(now)) continue;
      this.#sessions.delete(index);
      if (this.#routes.get(session.route) === index) this.#routes.delete(session.route);
    }
  }
}
