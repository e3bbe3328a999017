/**
 * The keys of one finished handshake, as WireGuard keeps them (whitepaper
 * sections 5.4.6 and 6): each message is sealed under an explicit 64-bit
 * counter that travels in clear beside it; the receiver checks the counter
 * against a sliding {@link ReplayWindow} before and after decrypting, so
 * datagrams may arrive reordered, but never twice. Keys age by message count
 * and by time, which the caller passes in (sans-I/O).
 *
 * @module
 */
import {
  chacha20Poly1305Open,
  chacha20Poly1305Seal,
  chacha20Poly1305SealInto,
  counterNonce,
} from "./chacha20_poly1305.ts";
import { CryptoError } from "./crypto_error.ts";
import type { HandshakeKeys } from "./handshake_state.ts";
import { ReplayWindow } from "./replay_window.ts";

/** When a session's keys should be replaced, and when they must no longer be used. */
export interface TransportLimits {
  /** Messages sent after which a new handshake is due. */
  rekeyAfterMessages: number;
  /** Messages after which the keys refuse to seal or open. */
  rejectAfterMessages: number;
  /** Age in milliseconds after which the initiator starts a new handshake. */
  rekeyAfterMs: number;
  /** Age in milliseconds after which the keys refuse to seal or open. */
  rejectAfterMs: number;
}

/**
 * WireGuard's limits (section 6.1), with the message counts scaled from 2^60
 * and 2^64 - 2^13 - 1 to what a JavaScript number counts exactly (2^53).
 */
export const DEFAULT_TRANSPORT_LIMITS: Readonly<TransportLimits> = {
  rekeyAfterMessages: 2 ** 49,
  rejectAfterMessages: 2 ** 53 - 2 ** 13 - 1,
  rekeyAfterMs: 120_000,
  rejectAfterMs: 180_000,
};

/** Options for a {@link TransportSession}. */
export interface TransportSessionOptions {
  /** When the handshake finished, in the caller's milliseconds. */
  now: number;
  /** Whether this side initiated the handshake (only the initiator rekeys on age). */
  initiator: boolean;
  /** Limits other than {@link DEFAULT_TRANSPORT_LIMITS}, for tests. */
  limits?: Partial<TransportLimits>;
}

/** A sealed transport message: the counter to send in clear, and the ciphertext with its tag. */
export interface SealedMessage {
  /** The message's counter, also its nonce. */
  readonly counter: number;
  /** Ciphertext and 16-byte tag. */
  readonly ciphertext: Uint8Array;
}

const EMPTY = new Uint8Array(0);

/**
 * Seals and opens the transport messages of one session.
 *
 * @example
 * ```ts
 * const mine = new TransportSession(handshake.split(), { now, initiator: true });
 * const { counter, ciphertext } = mine.seal(message, now);
 * // on the other side, with its own TransportSession of the same handshake:
 * const plain = theirs.open(counter, ciphertext, now);
 * ```
 */
export class TransportSession {
  #sendKey: Uint8Array;
  #receiveKey: Uint8Array;
  #createdAt: number;
  #initiator: boolean;
  #limits: TransportLimits;
  #nextCounter = 0;
  #window = new ReplayWindow();
  /** The nonce buffer, rewritten for each message (the cipher copies it). */
  #nonce = new Uint8Array(12);

  /**
   * @param keys the handshake's transport CipherStates, from this side's view
   * @param options when it finished, which side this is, and limits
   */
  constructor(keys: HandshakeKeys, options: TransportSessionOptions) {
    this.#sendKey = keys.send.exportKey();
    this.#receiveKey = keys.receive.exportKey();
    this.#createdAt = options.now;
    this.#initiator = options.initiator;
    this.#limits = { ...DEFAULT_TRANSPORT_LIMITS, ...options.limits };
  }

  /** How many messages this side has sealed. */
  get sent(): number {
    return this.#nextCounter;
  }

  /**
   * Whether this side should start a new handshake now: the initiator after
   * `rekeyAfterMs`, either side after `rekeyAfterMessages` sent. The old keys
   * keep working until the new ones are confirmed or they expire.
   *
   * @param now the caller's milliseconds
   * @returns whether a rekey is due
   */
  rekeyDue(now: number): boolean {
    if (this.#nextCounter >= this.#limits.rekeyAfterMessages) return true;
    return this.#initiator && now - this.#createdAt >= this.#limits.rekeyAfterMs;
  }

  /**
   * Whether the keys may no longer be used (`rejectAfterMs` passed).
   *
   * @param now the caller's milliseconds
   * @returns whether the session is expired
   */
  isExpired(now: number): boolean {
    return now - this.#createdAt >= this.#limits.rejectAfterMs;
  }

  /**
   * Seals a message under the next counter.
   *
   * @param plaintext the message
   * @param now the caller's milliseconds
   * @param ad associated data both sides know (a header), empty if absent
   * @returns the counter and the ciphertext
   * @throws {CryptoError} `expired` past the age or message limit
   */
  seal(plaintext: Uint8Array, now: number, ad: Uint8Array = EMPTY): SealedMessage {
    const counter = this.nextSealCounter(now);
    return {
      counter,
      ciphertext: chacha20Poly1305Seal(
        this.#sendKey,
        counterNonce(counter, this.#nonce),
        ad,
        plaintext,
      ),
    };
  }

  /**
   * Seals a message under the next counter straight into `out` at `offset`
   * (the datagram being built): ciphertext, then the 16-byte tag.
   *
   * @param plaintext the message
   * @param now the caller's milliseconds
   * @param ad associated data both sides know
   * @param out where the `plaintext.length + 16` bytes go
   * @param offset where in `out` they start
   * @returns the counter, to send in clear
   * @throws {CryptoError} `expired` past the age or message limit
   * @throws {RangeError} if `out` has no room
   */
  sealInto(
    plaintext: Uint8Array,
    now: number,
    ad: Uint8Array,
    out: Uint8Array,
    offset: number,
  ): number {
    const counter = this.nextSealCounter(now);
    const nonce = counterNonce(counter, this.#nonce);
    chacha20Poly1305SealInto(this.#sendKey, nonce, ad, plaintext, out, offset);
    return counter;
  }

  /**
   * Takes the next sending counter, if the keys may still seal.
   *
   * @param now the caller's milliseconds
   * @returns the counter
   * @throws {CryptoError} `expired` past the age or message limit
   */
  protected nextSealCounter(now: number): number {
    if (this.isExpired(now)) {
      throw new CryptoError("expired", "Cannot seal: the session keys are too old");
    }
    if (this.#nextCounter >= this.#limits.rejectAfterMessages) {
      throw new CryptoError("expired", "Cannot seal: the session keys sealed their last message");
    }
    return this.#nextCounter++;
  }

  /**
   * Opens a message, refusing replays and counters the window has left
   * behind. A message that fails changes nothing.
   *
   * @param counter the counter that came with it
   * @param ciphertext ciphertext and tag
   * @param now the caller's milliseconds
   * @param ad the associated data it was sealed with
   * @returns the plaintext
   * @throws {CryptoError} `expired`, `replayed`, `stale_counter`, `truncated` or `auth_failed`
   */
  open(counter: number, ciphertext: Uint8Array, now: number, ad: Uint8Array = EMPTY): Uint8Array {
    if (this.isExpired(now)) {
      throw new CryptoError("expired", "Cannot open: the session keys are too old");
    }
    if (
      !Number.isSafeInteger(counter) || counter < 0 || counter >= this.#limits.rejectAfterMessages
    ) {
      throw new CryptoError("stale_counter", `Counter ${counter} is beyond the session's limit`);
    }
    this.#checkCounter(counter);
    const nonce = counterNonce(counter, this.#nonce);
    const plaintext = chacha20Poly1305Open(this.#receiveKey, nonce, ad, ciphertext);
    this.#window.accept(counter);
    return plaintext;
  }

  #checkCounter(counter: number): void {
    const verdict = this.#window.check(counter);
    if (verdict === "replayed") {
      throw new CryptoError("replayed", `Counter ${counter} was received before`);
    }
    if (verdict === "stale") {
      throw new CryptoError(
        "stale_counter",
        `Counter ${counter} is older than the replay window (newest ${this.#window.last})`,
      );
    }
  }
}
