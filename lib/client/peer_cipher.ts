/**
 * The cryptography of one peer session (protocol version 3, docs/PROTOCOL.md
 * "Peer keys"): a Noise IKpsk2 handshake (`Noise_IKpsk2_25519_ChaChaPoly_SHA256`,
 * WireGuard's pattern) whose first message travels in `peer_connect` and
 * whose second in `peer_accept`, then every other message sealed in a
 * `peer_sealed` datagram under a {@link TransportSession} (a counter and a
 * sliding replay window). The relay of issue 21 may carry these datagrams
 * as opaque bytes: {@link PeerCipher.seal} and {@link PeerCipher.open} are
 * all a path needs.
 *
 * The requester's message 1 carries, encrypted, an {@link Introduction}:
 * its name, the server's nonce and a TAI64N timestamp. Rekeying follows
 * the transport limits: the requester starts a new handshake on the same
 * session when its keys are due; the other side keeps sending under the
 * old keys until a message opens under the new ones (key confirmation).
 *
 * @module
 */
import { CryptoError } from "../crypto/crypto_error.ts";
import { HandshakeState } from "../crypto/handshake_state.ts";
import { TIMESTAMP_BYTES } from "../crypto/introduction.ts";
import type { KeyPair } from "../crypto/key_pair.ts";
import { TAG_LENGTH } from "../crypto/chacha20_poly1305.ts";
import { ReplayWindow } from "../crypto/replay_window.ts";
import {
  DEFAULT_TRANSPORT_LIMITS,
  type SealedMessage,
  type TransportLimits,
  TransportSession,
} from "../crypto/transport_session.ts";
import { allocateBytes } from "../byte_pool.ts";
import { fromHex } from "../hex.ts";
import type { Random } from "../random.ts";
import { decodeMessage, encodeMessage } from "../wire/codec.ts";
import {
  INTRODUCTION_NONCE_BYTES,
  isPeerInnerMessage,
  MAX_NAME_BYTES,
  MAX_PEER_SEALED_BYTES,
  type MessageOf,
  type PeerInnerMessage,
} from "../wire/messages.ts";
import { ProtocolError } from "../wire/protocol_error.ts";

/** The label both peers bind into their handshake (Noise's prologue), before the session id. */
export const PEER_PROLOGUE: Uint8Array = new TextEncoder().encode("switchboard/3 peer");

/**
 * The prologue of one session's handshakes: the label and the 8 bytes of
 * the session id, so a message 1 moved under another id does not decrypt.
 *
 * @param session the session id, 16 hex digits
 * @returns the prologue bytes
 */
export function peerPrologue(session: string): Uint8Array {
  const out = new Uint8Array(PEER_PROLOGUE.length + 8);
  out.set(PEER_PROLOGUE);
  out.set(fromHex(session), PEER_PROLOGUE.length);
  return out;
}

/** Bytes of a `peer_sealed` before its ciphertext: header, session id, counter, length. */
const SEALED_HEADER_BYTES = 4 + 8 + 8 + 2;
/** Where the counter starts in a `peer_sealed`. */
const COUNTER_AT = 12;
const EMPTY = new Uint8Array(0);

/** Least time between two rekey initiations of one session, ms (WireGuard's REKEY_TIMEOUT). */
export const REKEY_RETRY_MS = 5000;

/** What the requester tells in its (encrypted) first handshake message. */
export interface Introduction {
  /** The requester's name as logged in. */
  readonly name: string;
  /** The nonce of the server's `lookup_ok`. */
  readonly nonce: Uint8Array;
  /** A TAI64N timestamp, newer than any earlier initiation of this key. */
  readonly timestamp: Uint8Array;
}

/**
 * Encodes an introduction: nonce (16), timestamp (12), then the name's UTF-8.
 *
 * @param introduction the introduction
 * @returns the bytes
 */
export function encodeIntroduction(introduction: Introduction): Uint8Array {
  const name = new TextEncoder().encode(introduction.name);
  const out = new Uint8Array(INTRODUCTION_NONCE_BYTES + TIMESTAMP_BYTES + name.length);
  out.set(introduction.nonce.subarray(0, INTRODUCTION_NONCE_BYTES));
  out.set(introduction.timestamp, INTRODUCTION_NONCE_BYTES);
  out.set(name, INTRODUCTION_NONCE_BYTES + TIMESTAMP_BYTES);
  return out;
}

/**
 * Decodes an introduction.
 *
 * @param bytes the decrypted payload of message 1
 * @returns the introduction
 * @throws {CryptoError} `malformed` if it is too short, too long or not UTF-8
 */
export function decodeIntroduction(bytes: Uint8Array): Introduction {
  const head = INTRODUCTION_NONCE_BYTES + TIMESTAMP_BYTES;
  if (bytes.length <= head || bytes.length > head + MAX_NAME_BYTES) {
    throw new CryptoError("malformed", `A ${bytes.length}-byte introduction has no valid name`);
  }
  let name: string;
  try {
    name = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(head));
  } catch {
    throw new CryptoError("malformed", "The introduction's name is not UTF-8");
  }
  return {
    name,
    nonce: bytes.slice(0, INTRODUCTION_NONCE_BYTES),
    timestamp: bytes.slice(INTRODUCTION_NONCE_BYTES, head),
  };
}

/** A first handshake message, read by the responder. */
export interface ReadInitiation {
  /** The handshake, waiting for its PSK and message 2. */
  readonly handshake: HandshakeState;
  /** The requester's static key, as it claims it. */
  readonly remoteKey: Uint8Array;
  /** What it says. */
  readonly introduction: Introduction;
}

/**
 * Reads a `peer_connect`'s handshake message: two Diffie-Hellman operations.
 *
 * @param staticKeyPair our static key pair
 * @param connect the `peer_connect`: its session id and Noise message 1
 * @param random ephemeral keys for message 2
 * @returns the handshake, the claimed key and the introduction
 * @throws {CryptoError} if it does not decrypt or its payload is malformed
 */
export function readInitiation(
  staticKeyPair: KeyPair,
  connect: { readonly session: string; readonly handshake: Uint8Array },
  random: Random,
): ReadInitiation {
  const message = connect.handshake;
  const handshake = new HandshakeState({
    pattern: "IKpsk2",
    initiator: false,
    staticKeyPair,
    prologue: peerPrologue(connect.session),
    random,
  });
  const payload = handshake.readMessage(message);
  return {
    handshake,
    remoteKey: handshake.remoteStaticKey!,
    introduction: decodeIntroduction(payload),
  };
}

/** Options of a {@link PeerCipher}. */
export interface PeerCipherOptions {
  /** The session id. */
  session: string;
  /** Our static key pair. */
  staticKeyPair: KeyPair;
  /** The peer's static key, as the server vouched for it (or, responding, as message 1 claims). */
  remoteKey: Uint8Array;
  /** The introduction's PSK; a responder gets it once verified ({@link PeerCipher.setPsk}). */
  psk?: Uint8Array;
  /** Ephemeral keys. */
  random: Random;
  /** Rekey and expiry limits (tests shorten them). */
  limits?: Partial<TransportLimits>;
  /**
   * Benchmarks only: after the real handshake, seal with a null cipher (a
   * copy and 16 zero bytes for the tag, the same counters and replay window)
   * to measure what the AEAD costs. No flag or file sets it.
   */
  nullCipher?: boolean;
}

/**
 * One session's handshake and transport keys.
 *
 * @example
 * ```ts
 * const alice = new PeerCipher({ session, staticKeyPair, remoteKey: bobKey, psk, random });
 * socket.send(alice.initiate(now, encodeIntroduction({ name: "Alice", nonce, timestamp })));
 * // ... once peer_accept came: alice.complete(now, accept.handshake)
 * socket.send(alice.seal(now, { type: "peer_keepalive", session }));
 * ```
 */
export class PeerCipher {
  /** The session id. */
  readonly session: string;
  /** The peer's static key. */
  readonly remoteKey: Uint8Array;
  #options: PeerCipherOptions;
  #psk: Uint8Array | undefined;
  #handshake: HandshakeState | undefined;
  #initiation: Uint8Array | undefined;
  #initiatedAt = -Infinity;
  /** When the current keys were made (the requester's rekey timer counts from it). */
  #keysAt = 0;
  #response: Uint8Array | undefined;
  #current: TransportSession | undefined;
  #next: TransportSession | undefined;
  #previous: TransportSession | undefined;
  #initiator = false;
  /** The associated data of every sealed message: the session id's 8 bytes. */
  #ad: Uint8Array;
  /** The first bytes of this session's `peer_sealed` datagrams (counter and length zero). */
  #header: Uint8Array;
  /** Handshakes completed (the first one and rekeys). */
  handshakes = 0;

  /** @param options keys, the session id and randomness */
  constructor(options: PeerCipherOptions) {
    this.session = options.session;
    this.remoteKey = options.remoteKey.slice();
    this.#options = options;
    this.#psk = options.psk?.slice();
    this.#ad = fromHex(options.session);
    this.#header = encodeMessage({
      type: "peer_sealed",
      session: options.session,
      counter: 0,
      sealed: EMPTY,
    }).slice(0, SEALED_HEADER_BYTES);
  }

  /** Whether transport keys exist (a message can be sealed). */
  get hasKeys(): boolean {
    return this.#current !== undefined;
  }

  /** The last `peer_connect` sent (requester) or answered (responder), encoded. */
  get initiation(): Uint8Array | undefined {
    return this.#initiation;
  }

  /** The last `peer_accept` sent, encoded (responder). */
  get response(): Uint8Array | undefined {
    return this.#response;
  }

  /** Whether a handshake we started waits for its `peer_accept`. */
  get initiating(): boolean {
    return this.#initiator && this.#handshake !== undefined;
  }

  /**
   * Gives a responder the introduction's PSK, once the server vouched for the key.
   *
   * @param psk 32 bytes
   */
  setPsk(psk: Uint8Array): void {
    this.#psk = psk.slice();
  }

  /**
   * Starts a handshake (the first, or a rekey): message 1 in a `peer_connect`.
   *
   * @param now current time, ms
   * @param introduction the encoded {@link Introduction}
   * @returns the encoded `peer_connect`, to send (and to resend as it is)
   */
  initiate(now: number, introduction: Uint8Array): Uint8Array {
    const { staticKeyPair, random } = this.#options;
    if (this.#psk === undefined) {
      throw new TypeError("Cannot initiate a peer handshake without a PSK");
    }
    this.#initiator = true;
    this.#handshake = new HandshakeState({
      pattern: "IKpsk2",
      initiator: true,
      staticKeyPair,
      remoteStaticKey: this.remoteKey,
      psk: this.#psk,
      prologue: peerPrologue(this.session),
      random,
    });
    this.#initiatedAt = now;
    this.#initiation = encodeMessage({
      type: "peer_connect",
      session: this.session,
      handshake: this.#handshake.writeMessage(introduction),
    });
    return this.#initiation;
  }

  /**
   * Whether a rekey is due and none was tried in the last {@link REKEY_RETRY_MS}.
   *
   * @param now current time, ms
   * @returns true if the requester should initiate again
   */
  rekeyDue(now: number): boolean {
    if (!this.#initiator || this.#current === undefined) return false;
    return this.#current.rekeyDue(now) && now - this.#initiatedAt >= REKEY_RETRY_MS;
  }

  /**
   * When the requester should next start a rekey (its timer), or undefined
   * for the responder and before the first keys.
   *
   * @returns a time, ms
   */
  nextRekey(): number | undefined {
    if (!this.#initiator || this.#current === undefined) return undefined;
    const rekeyAfterMs = this.#options.limits?.rekeyAfterMs ??
      DEFAULT_TRANSPORT_LIMITS.rekeyAfterMs;
    return Math.max(this.#keysAt + rekeyAfterMs, this.#initiatedAt + REKEY_RETRY_MS);
  }

  /**
   * Reads the `peer_accept` of the handshake we started.
   *
   * @param now current time, ms
   * @param message the Noise message 2
   * @returns true if the new keys are in use; false if it was not for us or did not authenticate
   */
  complete(now: number, message: Uint8Array): boolean {
    const handshake = this.#handshake;
    if (!this.#initiator || handshake === undefined) return false;
    try {
      handshake.readMessage(message);
    } catch (error) {
      if (!(error instanceof CryptoError)) throw error;
      // Noise gives no way back from a failed read: retry with a new handshake.
      this.#handshake = undefined;
      this.#initiatedAt = -Infinity;
      return false;
    }
    this.#handshake = undefined;
    this.#previous = this.#current;
    this.#current = this.#transport(handshake, now, true);
    this.#keysAt = now;
    this.handshakes++;
    return true;
  }

  /**
   * Answers a read message 1 (the session's first, or a rekey) with message
   * 2: the first handshake's keys are used at once; a rekey's once a message
   * opens under them.
   *
   * @param now current time, ms
   * @param read the initiation, read by {@link readInitiation}
   * @param initiation the encoded `peer_connect` it came in, to recognise copies
   * @returns the encoded `peer_accept`
   * @throws {TypeError} without a PSK, or for another key
   */
  respond(now: number, read: ReadInitiation, initiation: Uint8Array): Uint8Array {
    if (this.#psk === undefined) {
      throw new TypeError("Cannot answer a peer handshake without a PSK");
    }
    if (!sameBytes(read.remoteKey, this.remoteKey)) {
      throw new TypeError("Cannot answer a handshake of another key");
    }
    read.handshake.setPsk(this.#psk);
    const message = read.handshake.writeMessage(new Uint8Array(0));
    const keys = this.#transport(read.handshake, now, false);
    if (this.#current === undefined) this.#current = keys;
    else this.#next = keys;
    this.handshakes++;
    this.#initiation = initiation.slice();
    this.#response = encodeMessage({
      type: "peer_accept",
      session: this.session,
      handshake: message,
    });
    return this.#response;
  }

  /**
   * Seals an inner message in a `peer_sealed` datagram.
   *
   * @param now current time, ms
   * @param message what to seal
   * @returns the encoded datagram
   * @throws {CryptoError} `expired` if the keys are too old (or there are none)
   */
  seal(now: number, message: PeerInnerMessage): Uint8Array {
    const keys = this.#current;
    if (keys === undefined) throw new CryptoError("expired", "Cannot seal: no session keys yet");
    const plain = encodeMessage(message);
    const length = plain.length + TAG_LENGTH;
    if (length > MAX_PEER_SEALED_BYTES) {
      throw new RangeError(`Cannot seal a ${plain.length}-byte message in one peer_sealed`);
    }
    // The datagram is built here rather than by encodeMessage, so the AEAD
    // writes into it directly: the header (as the codec lays it out: tested
    // against encodeMessage), the counter, the length, then ciphertext and tag.
    const out = allocateBytes(SEALED_HEADER_BYTES + length);
    out.set(this.#header);
    const counter = keys.sealInto(plain, now, this.#ad, out, SEALED_HEADER_BYTES);
    const view = new DataView(out.buffer, out.byteOffset, SEALED_HEADER_BYTES);
    view.setUint32(COUNTER_AT, Math.floor(counter / 0x1_0000_0000));
    view.setUint32(COUNTER_AT + 4, counter >>> 0);
    view.setUint16(COUNTER_AT + 8, length);
    return out;
  }

  /**
   * Opens a `peer_sealed` datagram: under the current keys, a rekey's new
   * ones (which then become current) or the previous ones.
   *
   * @param now current time, ms
   * @param message the datagram
   * @returns the inner message, or undefined if it was tampered with, replayed,
   *   stale, sealed under no key of ours, or not an inner message of this session
   */
  open(now: number, message: MessageOf<"peer_sealed">): PeerInnerMessage | undefined {
    if (message.session !== this.session) return undefined;
    for (const keys of [this.#current, this.#next, this.#previous]) {
      if (keys === undefined) continue;
      let plain: Uint8Array;
      try {
        plain = keys.open(message.counter, message.sealed, now, this.#ad);
      } catch (error) {
        if (error instanceof CryptoError) continue;
        throw error;
      }
      if (keys === this.#next) {
        this.#previous = this.#current;
        this.#current = keys;
        this.#next = undefined;
      }
      try {
        const inner = decodeMessage(plain);
        return isPeerInnerMessage(inner) && inner.session === this.session ? inner : undefined;
      } catch (error) {
        if (error instanceof ProtocolError) return undefined;
        throw error;
      }
    }
    return undefined;
  }

  #transport(handshake: HandshakeState, now: number, initiator: boolean): TransportSession {
    const keys = handshake.split();
    const options = { now, initiator, limits: this.#options.limits };
    return this.#options.nullCipher
      ? new NullTransport(keys, options)
      : new TransportSession(keys, options);
  }
}

/**
 * Equal bytes.
 *
 * @param a one
 * @param b the other
 * @returns true if both hold the same bytes
 */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/**
 * The benchmark's null cipher: a {@linkcode TransportSession} whose messages
 * are copied, not encrypted (16 zero bytes stand for the tag), with the same
 * counters, limits and replay window.
 */
class NullTransport extends TransportSession {
  #window = new ReplayWindow();

  override seal(plaintext: Uint8Array, now: number): SealedMessage {
    const ciphertext = new Uint8Array(plaintext.length + TAG_LENGTH);
    return { counter: this.sealInto(plaintext, now, EMPTY, ciphertext, 0), ciphertext };
  }

  override sealInto(
    plaintext: Uint8Array,
    now: number,
    _ad: Uint8Array,
    out: Uint8Array,
    offset: number,
  ): number {
    const counter = this.nextSealCounter(now);
    out.set(plaintext, offset);
    out.fill(0, offset + plaintext.length, offset + plaintext.length + TAG_LENGTH);
    return counter;
  }

  override open(counter: number, ciphertext: Uint8Array, now: number): Uint8Array {
    if (this.isExpired(now)) throw new CryptoError("expired", "Cannot open: the keys are too old");
    if (ciphertext.length < TAG_LENGTH) throw new CryptoError("truncated", "No room for a tag");
    if (this.#window.check(counter) !== "fresh") {
      throw new CryptoError("replayed", `Counter ${counter} was received before`);
    }
    this.#window.accept(counter);
    // A copy into a pooled array, as the AEAD's output is.
    const out = allocateBytes(ciphertext.length - TAG_LENGTH);
    out.set(ciphertext.subarray(0, out.length));
    return out;
  }
}
