/**
 * The client's encrypted channel to the server (protocol version 3,
 * docs/SECURE_CHANNEL.md): a Noise IK handshake against the server's pinned
 * static key, then every message sealed in a transport datagram with a
 * counter the server checks against its replay window. Sans-I/O: the driver
 * hands it the bytes of each message to send and each datagram or frame that
 * came from the server, and sends what it returns. One channel per UDP
 * socket, and one per TCP connection.
 *
 * The handshake needs no timer of its own: the client core retransmits its
 * requests, and every send while no session is usable re-sends the
 * initiation (at most once per {@link HANDSHAKE_RETRY_MS}). Messages sent
 * before the handshake completes wait in a bounded queue and leave once it
 * does. The same rule re-handshakes when the keys are due for a rekey, when
 * they expired, and when the driver says a request is being retransmitted a
 * second time (the server may have restarted and lost its sessions; the
 * client core's re-login then runs over the new one). The old keys keep
 * working meanwhile, so a needless handshake costs a round trip of CPU only.
 *
 * Message 1's payload is a TAI64N timestamp, newer for each initiation of
 * the channel: the server drops a replayed initiation by it
 * (`InitiationRecord`, docs/DECISIONS.md).
 *
 * @module
 */
import { CookieChecker } from "../crypto/cookie_checker.ts";
import { CookieGenerator } from "../crypto/cookie_generator.ts";
import { CryptoError, type CryptoErrorCode } from "../crypto/crypto_error.ts";
import { HandshakeState } from "../crypto/handshake_state.ts";
import { TimestampSource } from "../crypto/introduction.ts";
import type { KeyPair } from "../crypto/key_pair.ts";
import {
  CLIENT_SERVER_PROLOGUE,
  decodeSecureDatagram,
  encodeSecureDatagram,
  randomIndex,
} from "../crypto/secure_datagram.ts";
import { type TransportLimits, TransportSession } from "../crypto/transport_session.ts";
import type { Random } from "../random.ts";

/** Least time between two initiations of the same channel, ms. */
export const HANDSHAKE_RETRY_MS = 1000;
/** Most messages that wait for a handshake; the oldest are dropped (the core retransmits). */
export const MAX_QUEUED_MESSAGES = 64;

/** Options for a {@link ServerChannel}. */
export interface ServerChannelOptions {
  /** The server's static public key, pinned or learned (32 bytes). */
  serverKey: Uint8Array;
  /** This client's static key pair. */
  staticKeyPair: KeyPair;
  /** Ephemeral keys and indexes. */
  random: Random;
  /** Rekey and expiry limits (tests shorten them). */
  limits?: Partial<TransportLimits>;
  /** Where initiation timestamps come from (default: one source per channel). */
  timestamps?: TimestampSource;
}

/** What one datagram or frame from the server came to. */
export type ChannelInput =
  /** A message opened (empty for a keepalive). */
  | { readonly kind: "message"; readonly plaintext: Uint8Array }
  /** The handshake completed; `send` holds the queued messages, sealed. */
  | { readonly kind: "established"; readonly send: Uint8Array[] }
  /** Dropped without effect (a cookie reply is absorbed here too). */
  | { readonly kind: "dropped"; readonly reason: CryptoErrorCode | "unknown_index" };

interface Live {
  session: TransportSession;
  /** The index we chose; the server's transport datagrams carry it. */
  index: number;
  /** The server's index; ours carry it. */
  peer: number;
}

/**
 * One client's encrypted channel to the server.
 *
 * @example
 * ```ts
 * const channel = new ServerChannel({ serverKey, staticKeyPair, random });
 * for (const bytes of channel.send(encodeMessage(request), now)) socket.send(bytes);
 * const input = channel.receive(datagram, now);
 * if (input.kind === "message") core.handle(now, decodeMessage(input.plaintext));
 * ```
 */
export class ServerChannel {
  #options: ServerChannelOptions;
  #macs: CookieGenerator;
  #ownChecker: CookieChecker;
  #handshake: HandshakeState | undefined;
  #handshakeIndex = 0;
  #lastInitiationAt = -Infinity;
  #current: Live | undefined;
  #previous: Live | undefined;
  #queue: Uint8Array[] = [];
  /** How many handshakes completed. */
  handshakes = 0;

  /** @param options the server's key, our key pair, randomness */
  constructor(options: ServerChannelOptions) {
    this.#options = options;
    this.#macs = new CookieGenerator(options.serverKey);
    this.#ownChecker = new CookieChecker(options.staticKeyPair.publicKey, {
      random: options.random,
    });
  }

  /** Whether a session is established (its keys may still be due for a rekey). */
  get isEstablished(): boolean {
    return this.#current !== undefined;
  }

  /**
   * Starts a handshake now, whatever the state.
   *
   * @param now current time, ms since the Unix epoch (the initiation's timestamp
   *   comes from it: a clock of another origin would read as a replay)
   * @returns the initiation datagram
   */
  initiate(now: number): Uint8Array {
    const { random, staticKeyPair, serverKey } = this.#options;
    this.#handshake = new HandshakeState({
      pattern: "IK",
      initiator: true,
      staticKeyPair,
      remoteStaticKey: serverKey,
      prologue: CLIENT_SERVER_PROLOGUE,
      random,
    });
    this.#handshakeIndex = randomIndex(random);
    this.#lastInitiationAt = now;
    const timestamps = this.#options.timestamps ??= new TimestampSource();
    const handshake = this.#handshake.writeMessage(timestamps.next(now));
    return this.#macs.addMacs(
      encodeSecureDatagram({ kind: "initiation", sender: this.#handshakeIndex, handshake }),
      now,
    );
  }

  /**
   * Forgets the session's keys and starts a handshake: the client moved to
   * another instance of the service, which holds the same key but none of
   * the session's. Messages wait for the new handshake instead of going out
   * sealed under keys the new instance does not have.
   *
   * @param now current time, ms since the Unix epoch
   * @returns the initiation datagram
   */
  restart(now: number): Uint8Array {
    this.#current = undefined;
    this.#previous = undefined;
    return this.initiate(now);
  }

  /**
   * Seals a message for the server, or queues it until the handshake is done.
   *
   * @param plaintext an encoded message (or empty: a keepalive)
   * @param now current time, ms
   * @param unanswered true when the server did not answer earlier attempts
   *   of this message: the channel then re-handshakes too
   * @returns the datagrams to send, in order (an initiation, the sealed message, both or none)
   */
  send(plaintext: Uint8Array, now: number, unanswered = false): Uint8Array[] {
    const out: Uint8Array[] = [];
    const live = this.#usable(now);
    const needed = live === undefined || live.session.rekeyDue(now) || unanswered;
    if (needed && now - this.#lastInitiationAt >= HANDSHAKE_RETRY_MS) {
      out.push(this.initiate(now));
    }
    if (live === undefined) {
      this.#queue.push(plaintext.slice());
      if (this.#queue.length > MAX_QUEUED_MESSAGES) this.#queue.shift();
      return out;
    }
    out.push(this.#seal(live, plaintext, now));
    return out;
  }

  /**
   * Opens a datagram or frame from the server. Anything that fails a check
   * is dropped and changes nothing.
   *
   * @param bytes the datagram or frame body
   * @param now current time, ms
   * @returns the message, a completed handshake, or a drop and why
   */
  receive(bytes: Uint8Array, now: number): ChannelInput {
    try {
      const datagram = decodeSecureDatagram(bytes);
      switch (datagram.kind) {
        case "cookie_reply":
          if (this.#handshake === undefined || datagram.receiver !== this.#handshakeIndex) {
            return { kind: "dropped", reason: "unknown_index" };
          }
          this.#macs.consumeReply(datagram, now);
          // The next send retries at once, with mac2.
          this.#lastInitiationAt = -Infinity;
          return { kind: "dropped", reason: "unexpected_message" };
        case "response":
          return this.#response(bytes, datagram.sender, datagram.receiver, datagram.handshake, now);
        case "transport": {
          const live = [this.#current, this.#previous].find((l) => l?.index === datagram.receiver);
          if (live === undefined) return { kind: "dropped", reason: "unknown_index" };
          const plaintext = live.session.open(datagram.counter, datagram.ciphertext, now);
          return { kind: "message", plaintext };
        }
        default:
          return { kind: "dropped", reason: "unexpected_message" };
      }
    } catch (error) {
      if (error instanceof CryptoError) return { kind: "dropped", reason: error.code };
      throw error;
    }
  }

  #response(
    bytes: Uint8Array,
    sender: number,
    receiver: number,
    message: Uint8Array,
    now: number,
  ): ChannelInput {
    const handshake = this.#handshake;
    if (handshake === undefined || receiver !== this.#handshakeIndex) {
      return { kind: "dropped", reason: "unknown_index" };
    }
    const verdict = this.#ownChecker.check(bytes, { address: "", port: 0 }, now, false);
    if (verdict.kind === "drop") {
      return { kind: "dropped", reason: verdict.reason === "bad_mac2" ? "bad_mac2" : "bad_mac1" };
    }
    if (verdict.kind !== "accept") return { kind: "dropped", reason: "bad_mac1" };
    try {
      handshake.readMessage(message);
    } catch (error) {
      // Noise gives no way back from a failed read: the next send starts anew.
      if (error instanceof CryptoError) {
        this.#handshake = undefined;
        this.#lastInitiationAt = -Infinity;
        return { kind: "dropped", reason: error.code };
      }
      throw error;
    }
    this.#handshake = undefined;
    this.#previous = this.#current;
    this.#current = {
      session: new TransportSession(handshake.split(), {
        now,
        initiator: true,
        limits: this.#options.limits,
      }),
      index: receiver,
      peer: sender,
    };
    this.handshakes++;
    // The server uses new keys only once one of ours opened under them.
    const queued = this.#queue.length > 0 ? this.#queue : [new Uint8Array(0)];
    this.#queue = [];
    const send = queued.map((plaintext) => this.#seal(this.#current!, plaintext, now));
    return { kind: "established", send };
  }

  #usable(now: number): Live | undefined {
    if (this.#current?.session.isExpired(now)) {
      this.#previous = this.#current;
      this.#current = undefined;
    }
    return this.#current;
  }

  #seal(live: Live, plaintext: Uint8Array, now: number): Uint8Array {
    const sealed = live.session.seal(plaintext, now);
    return encodeSecureDatagram({ kind: "transport", receiver: live.peer, ...sealed });
  }
}
