/**
 * Noise's CipherState (specification revision 34, section 5.1): a key and
 * a 64-bit nonce counter, with `ChaChaPoly` as the cipher.
 *
 * @module
 */
import {
  chacha20Poly1305Open,
  chacha20Poly1305Seal,
  counterNonce,
  MAX_COUNTER,
} from "./chacha20_poly1305.ts";

/**
 * A Noise CipherState. Without a key it passes plaintext through, as the
 * specification says for the first tokens of a handshake.
 *
 * @example
 * ```ts
 * const cs = new CipherState(key);
 * const sealed = cs.encryptWithAd(new Uint8Array(), message);
 * ```
 */
export class CipherState {
  #key: Uint8Array | undefined;
  #nonce = 0;

  /** @param key a 32-byte key, or none yet */
  constructor(key?: Uint8Array) {
    if (key !== undefined) this.initializeKey(key);
  }

  /**
   * Sets a new key and resets the nonce to zero.
   *
   * @param key 32 bytes
   */
  initializeKey(key: Uint8Array): void {
    if (key.length !== 32) throw new RangeError(`Cannot use a ${key.length}-byte key`);
    this.#key = key.slice();
    this.#nonce = 0;
  }

  /** Whether a key is set. */
  get hasKey(): boolean {
    return this.#key !== undefined;
  }

  /** The next nonce this state will use. */
  get nonce(): number {
    return this.#nonce;
  }

  /**
   * Encrypts under the current nonce, then increments it.
   *
   * @param ad associated data
   * @param plaintext the message
   * @returns ciphertext and tag, or the plaintext if no key is set
   * @throws {RangeError} if the nonce is exhausted
   */
  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.#key === undefined) return plaintext.slice();
    const out = chacha20Poly1305Seal(this.#key, this.#nextNonce(), ad, plaintext);
    this.#nonce++;
    return out;
  }

  /**
   * Decrypts under the current nonce; the nonce advances only on success.
   *
   * @param ad associated data
   * @param ciphertext ciphertext and tag
   * @returns the plaintext, or the input if no key is set
   * @throws {CryptoError} `truncated` or `auth_failed`
   */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (this.#key === undefined) return ciphertext.slice();
    const out = chacha20Poly1305Open(this.#key, this.#nextNonce(), ad, ciphertext);
    this.#nonce++;
    return out;
  }

  #nextNonce(): Uint8Array {
    if (this.#nonce >= MAX_COUNTER) throw new RangeError("Cannot encrypt: the nonce is exhausted");
    return counterNonce(this.#nonce);
  }

  /**
   * The key itself, for {@link TransportSession}, which keeps its own counters.
   *
   * @returns a copy of the key
   * @throws {TypeError} if no key is set
   */
  exportKey(): Uint8Array {
    if (this.#key === undefined) {
      throw new TypeError("Cannot export the key of an empty CipherState");
    }
    return this.#key.slice();
  }
}
