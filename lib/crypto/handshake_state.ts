/**
 * Noise's HandshakeState (specification revision 34, section 5.3) for the
 * two patterns Switchboard speaks, sans-I/O: `writeMessage` returns bytes to
 * send, `readMessage` takes bytes received. Ephemeral keys come from an
 * injected `Random`, so tests replay published vectors exactly.
 *
 * - `Noise_IK_25519_ChaChaPoly_SHA256`: client to server, the client knows
 *   the server's static key (pinned).
 * - `Noise_IKpsk2_25519_ChaChaPoly_SHA256`: peer to peer, static keys vouched
 *   for by the server plus a pre-shared key per introduction (WireGuard's
 *   pattern).
 *
 * ```
 * IK:              IKpsk2:
 *   <- s             <- s
 *   ...              ...
 *   -> e, es, s, ss  -> e, es, s, ss
 *   <- e, ee, se     <- e, ee, se, psk
 * ```
 *
 * @module
 */
import type { Random } from "../random.ts";
import type { CipherState } from "./cipher_state.ts";
import { CryptoError } from "./crypto_error.ts";
import { dh, generateKeyPair, KEY_LENGTH, type KeyPair } from "./key_pair.ts";
import { TAG_LENGTH } from "./chacha20_poly1305.ts";
import { SymmetricState } from "./symmetric_state.ts";

/** The handshake patterns implemented here. */
export type HandshakePattern = "IK" | "IKpsk2";

type Token = "e" | "s" | "ee" | "es" | "se" | "ss" | "psk";

const MESSAGES: Record<HandshakePattern, readonly (readonly Token[])[]> = {
  IK: [["e", "es", "s", "ss"], ["e", "ee", "se"]],
  IKpsk2: [["e", "es", "s", "ss"], ["e", "ee", "se", "psk"]],
};

/** Bytes of a pre-shared key. */
export const PSK_LENGTH = 32;

/** Options for a {@link HandshakeState}. */
export interface HandshakeOptions {
  /** `IK` or `IKpsk2`. */
  pattern: HandshakePattern;
  /** Whether this side sends the first message. */
  initiator: boolean;
  /** Our static key pair. */
  staticKeyPair: KeyPair;
  /** The responder's static public key; required of the initiator (the `<- s` pre-message). */
  remoteStaticKey?: Uint8Array;
  /**
   * The 32-byte pre-shared key; required for `IKpsk2`. A responder may give
   * it later with {@link HandshakeState.setPsk}, once message 1 has told it
   * who the initiator is (as WireGuard picks the peer's PSK).
   */
  psk?: Uint8Array;
  /** Bytes both sides bind into the handshake (a protocol label); empty if absent. */
  prologue?: Uint8Array;
  /** Where the ephemeral private key comes from. */
  random: Random;
}

/** The two transport CipherStates a finished handshake yields, from this side's view. */
export interface HandshakeKeys {
  /** Encrypts what this side sends. */
  send: CipherState;
  /** Decrypts what this side receives. */
  receive: CipherState;
}

/**
 * One Noise handshake, initiator or responder, for IK or IKpsk2. A failed
 * read leaves it unusable; start a new one.
 *
 * @example
 * ```ts
 * const client = new HandshakeState({ pattern: "IK", initiator: true,
 *   staticKeyPair: clientKeys, remoteStaticKey: serverPublic, random });
 * const server = new HandshakeState({ pattern: "IK", initiator: false,
 *   staticKeyPair: serverKeys, random });
 * server.readMessage(client.writeMessage(hello));
 * client.readMessage(server.writeMessage(welcome));
 * const keys = client.split();
 * ```
 */
export class HandshakeState {
  #pattern: HandshakePattern;
  #initiator: boolean;
  #symmetric: SymmetricState;
  #static: KeyPair;
  #ephemeral: KeyPair | undefined;
  #remoteStatic: Uint8Array | undefined;
  #remoteEphemeral: Uint8Array | undefined;
  #psk: Uint8Array | undefined;
  #random: Random;
  #step = 0;
  #failed = false;

  /**
   * @param options pattern, role, keys and randomness
   * @throws {TypeError} if a key the pattern needs is missing
   * @throws {RangeError} if a key has the wrong length
   */
  constructor(options: HandshakeOptions) {
    const { pattern, initiator, staticKeyPair, remoteStaticKey, psk } = options;
    if (initiator && remoteStaticKey === undefined) {
      throw new TypeError("Cannot start an IK handshake without the responder's static key");
    }
    if (remoteStaticKey !== undefined && remoteStaticKey.length !== KEY_LENGTH) {
      throw new RangeError(`Cannot use a ${remoteStaticKey.length}-byte remote static key`);
    }
    if (pattern === "IKpsk2" && initiator && psk === undefined) {
      throw new TypeError("Cannot start an IKpsk2 handshake without a PSK");
    }
    if (pattern === "IK" && psk !== undefined) {
      throw new TypeError("Cannot use a PSK with the IK pattern");
    }
    if (psk !== undefined) checkPsk(psk);
    this.#pattern = pattern;
    this.#initiator = initiator;
    this.#static = staticKeyPair;
    this.#remoteStatic = initiator ? remoteStaticKey!.slice() : undefined;
    this.#psk = psk?.slice();
    this.#random = options.random;
    this.#symmetric = new SymmetricState(`Noise_${pattern}_25519_ChaChaPoly_SHA256`);
    this.#symmetric.mixHash(options.prologue ?? new Uint8Array(0));
    this.#symmetric.mixHash(initiator ? this.#remoteStatic! : staticKeyPair.publicKey);
  }

  /** Whether both messages have gone through, so {@link split} may be called. */
  get isComplete(): boolean {
    return this.#step === 2;
  }

  /** Whether it is this side's turn to write. */
  get isMyTurn(): boolean {
    return !this.isComplete && (this.#step === 0) === this.#initiator;
  }

  /** The peer's static public key, once known (the responder learns it from message 1). */
  get remoteStaticKey(): Uint8Array | undefined {
    return this.#remoteStatic?.slice();
  }

  /** The handshake hash: a channel binding, equal on both sides once complete. */
  get handshakeHash(): Uint8Array {
    return this.#symmetric.handshakeHash;
  }

  /**
   * Gives an IKpsk2 responder its pre-shared key after it has read message 1
   * and knows, from {@link remoteStaticKey}, which introduction it belongs to.
   *
   * @param psk 32 bytes
   * @throws {TypeError} if this is not an IKpsk2 responder before message 2
   * @throws {RangeError} if the key is not 32 bytes
   */
  setPsk(psk: Uint8Array): void {
    if (this.#pattern !== "IKpsk2" || this.#initiator || this.#step > 1) {
      throw new TypeError("Cannot set a PSK: only an IKpsk2 responder before message 2 takes one");
    }
    checkPsk(psk);
    this.#psk = psk.slice();
  }

  /**
   * The length of the message this side writes next with a payload of `payloadLength`.
   *
   * @param payloadLength bytes of payload
   * @returns bytes on the wire
   */
  messageLength(payloadLength: number): number {
    const tokens = MESSAGES[this.#pattern][this.#step] ?? [];
    let length = payloadLength + TAG_LENGTH;
    for (const token of tokens) {
      if (token === "e") length += KEY_LENGTH;
      if (token === "s") length += KEY_LENGTH + TAG_LENGTH;
    }
    return length;
  }

  /**
   * Writes this side's next handshake message.
   *
   * @param payload bytes to carry, encrypted (both IK messages encrypt their payload)
   * @returns the message to send
   * @throws {TypeError} if it is not this side's turn or the handshake failed
   */
  writeMessage(payload: Uint8Array = new Uint8Array(0)): Uint8Array {
    this.#checkUsable();
    if (!this.isMyTurn) throw new TypeError("Cannot write a handshake message: not our turn");
    if (this.#psk === undefined && MESSAGES[this.#pattern][this.#step].includes("psk")) {
      throw new TypeError("Cannot write IKpsk2 message 2 without a PSK: call setPsk() first");
    }
    const parts: Uint8Array[] = [];
    for (const token of MESSAGES[this.#pattern][this.#step]) {
      if (token === "e") {
        this.#ephemeral = generateKeyPair(this.#random);
        parts.push(this.#ephemeral.publicKey);
        this.#mixEphemeral(this.#ephemeral.publicKey);
      } else if (token === "s") {
        parts.push(this.#symmetric.encryptAndHash(this.#static.publicKey));
      } else {
        this.#mixToken(token);
      }
    }
    parts.push(this.#symmetric.encryptAndHash(payload));
    this.#step++;
    return concat(parts);
  }

  /**
   * Reads the peer's next handshake message.
   *
   * @param message the bytes received
   * @returns the decrypted payload
   * @throws {CryptoError} `unexpected_message` if none is due, `truncated`,
   *   `auth_failed` or `bad_key`; the handshake is then unusable
   */
  readMessage(message: Uint8Array): Uint8Array {
    this.#checkUsable();
    if (this.isComplete || this.isMyTurn) {
      throw new CryptoError("unexpected_message", "No handshake message is expected now");
    }
    const minimum = this.messageLength(0);
    if (message.length < minimum) {
      this.#failed = true;
      throw new CryptoError(
        "truncated",
        `A handshake message of ${message.length} bytes is shorter than ${minimum}`,
      );
    }
    try {
      let at = 0;
      for (const token of MESSAGES[this.#pattern][this.#step]) {
        if (token === "e") {
          this.#remoteEphemeral = message.slice(at, at + KEY_LENGTH);
          at += KEY_LENGTH;
          this.#mixEphemeral(this.#remoteEphemeral);
        } else if (token === "s") {
          const length = KEY_LENGTH + (this.#symmetric.hasKey ? TAG_LENGTH : 0);
          this.#remoteStatic = this.#symmetric.decryptAndHash(message.subarray(at, at + length));
          at += length;
        } else {
          this.#mixToken(token);
        }
      }
      const payload = this.#symmetric.decryptAndHash(message.subarray(at));
      this.#step++;
      return payload;
    } catch (error) {
      this.#failed = true;
      throw error;
    }
  }

  /**
   * The transport keys, once the handshake is complete.
   *
   * @returns this side's send and receive CipherStates
   * @throws {TypeError} before completion
   */
  split(): HandshakeKeys {
    if (!this.isComplete) throw new TypeError("Cannot split an unfinished handshake");
    const [initiatorToResponder, responderToInitiator] = this.#symmetric.split();
    return this.#initiator
      ? { send: initiatorToResponder, receive: responderToInitiator }
      : { send: responderToInitiator, receive: initiatorToResponder };
  }

  #checkUsable(): void {
    if (this.#failed) throw new TypeError("Cannot use a handshake that has failed");
  }

  #mixEphemeral(publicKey: Uint8Array): void {
    this.#symmetric.mixHash(publicKey);
    if (this.#pattern === "IKpsk2") this.#symmetric.mixKey(publicKey);
  }

  #mixToken(token: Exclude<Token, "e" | "s">): void {
    const ours = (letter: string) => letter === "e" ? this.#ephemeral! : this.#static;
    const theirs = (letter: string) =>
      letter === "e" ? this.#remoteEphemeral! : this.#remoteStatic!;
    if (token === "psk") {
      this.#symmetric.mixKeyAndHash(this.#psk!);
      return;
    }
    // A token names the initiator's key first: "es" is the initiator's e with the responder's s.
    const [initiatorKey, responderKey] = [token[0], token[1]];
    const shared = this.#initiator
      ? dh(ours(initiatorKey).privateKey, theirs(responderKey))
      : dh(ours(responderKey).privateKey, theirs(initiatorKey));
    this.#symmetric.mixKey(shared);
  }
}

function checkPsk(psk: Uint8Array): void {
  if (psk.length !== PSK_LENGTH) throw new RangeError(`Cannot use a ${psk.length}-byte PSK`);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
