/**
 * Noise's SymmetricState (specification revision 34, section 5.2) with
 * SHA-256 and HKDF over HMAC-SHA256 (section 4.3), from `node:crypto`.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { CipherState } from "./cipher_state.ts";

/** Bytes of a SHA-256 digest: Noise's HASHLEN. */
export const HASH_LENGTH = 32;

/**
 * SHA-256 of the concatenated inputs.
 *
 * @param parts the byte strings, in order
 * @returns the 32-byte digest
 */
export function sha256(...parts: Uint8Array[]): Uint8Array {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part);
  return new Uint8Array(hash.digest());
}

const BLOCK_LENGTH = 64;
const INNER_PAD = 0x36;
const OUTER_PAD = 0x5c;

/**
 * HMAC-SHA256 of the concatenated inputs (RFC 2104), built on two SHA-256
 * hashes: in Deno, `createHash` costs a fifth of `createHmac` per call, and
 * a handshake makes some twenty short MACs.
 *
 * @param key the MAC key
 * @param parts the message, in parts
 * @returns the 32-byte MAC
 */
export function hmacSha256(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const block = new Uint8Array(BLOCK_LENGTH);
  block.set(key.length > BLOCK_LENGTH ? sha256(key) : key);
  for (let i = 0; i < BLOCK_LENGTH; i++) block[i] ^= INNER_PAD;
  const inner = createHash("sha256").update(block);
  for (const part of parts) inner.update(part);
  const innerDigest = inner.digest();
  for (let i = 0; i < BLOCK_LENGTH; i++) block[i] ^= INNER_PAD ^ OUTER_PAD;
  return new Uint8Array(createHash("sha256").update(block).update(innerDigest).digest());
}

/**
 * Noise's HKDF: two or three 32-byte outputs from a chaining key and input
 * key material (section 4.3).
 *
 * @param chainingKey 32 bytes
 * @param inputKeyMaterial 0 or 32 bytes (or any length; Noise uses those)
 * @param outputs 2 or 3
 * @returns the outputs
 *
 * @example
 * ```ts
 * const [ck, k] = hkdf(chainingKey, dhResult, 2);
 * ```
 */
export function hkdf(
  chainingKey: Uint8Array,
  inputKeyMaterial: Uint8Array,
  outputs: 2 | 3,
): Uint8Array[] {
  const temp = hmacSha256(chainingKey, inputKeyMaterial);
  const first = hmacSha256(temp, Uint8Array.of(1));
  const second = hmacSha256(temp, first, Uint8Array.of(2));
  if (outputs === 2) return [first, second];
  return [first, second, hmacSha256(temp, second, Uint8Array.of(3))];
}

/**
 * A Noise SymmetricState: the chaining key, the handshake hash and a
 * CipherState.
 *
 * @example
 * ```ts
 * const ss = new SymmetricState("Noise_IK_25519_ChaChaPoly_SHA256");
 * ss.mixHash(prologue);
 * ```
 */
export class SymmetricState {
  #cipher = new CipherState();
  #chainingKey: Uint8Array;
  #hash: Uint8Array;

  /** @param protocolName such as `Noise_IK_25519_ChaChaPoly_SHA256` */
  constructor(protocolName: string) {
    const name = new TextEncoder().encode(protocolName);
    if (name.length <= HASH_LENGTH) {
      this.#hash = new Uint8Array(HASH_LENGTH);
      this.#hash.set(name);
    } else {
      this.#hash = sha256(name);
    }
    this.#chainingKey = this.#hash.slice();
  }

  /** The handshake hash `h` so far (a copy). */
  get handshakeHash(): Uint8Array {
    return this.#hash.slice();
  }

  /** Whether a key has been mixed in, so tokens are encrypted. */
  get hasKey(): boolean {
    return this.#cipher.hasKey;
  }

  /** @param inputKeyMaterial a DH result or other key material */
  mixKey(inputKeyMaterial: Uint8Array): void {
    const [chainingKey, key] = hkdf(this.#chainingKey, inputKeyMaterial, 2);
    this.#chainingKey = chainingKey;
    this.#cipher.initializeKey(key);
  }

  /** @param data bytes to bind into the handshake hash */
  mixHash(data: Uint8Array): void {
    this.#hash = sha256(this.#hash, data);
  }

  /** @param inputKeyMaterial a pre-shared key */
  mixKeyAndHash(inputKeyMaterial: Uint8Array): void {
    const [chainingKey, hash, key] = hkdf(this.#chainingKey, inputKeyMaterial, 3);
    this.#chainingKey = chainingKey;
    this.mixHash(hash);
    this.#cipher.initializeKey(key);
  }

  /**
   * @param plaintext bytes to encrypt (or pass through before any key)
   * @returns the ciphertext, also mixed into the hash
   */
  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ciphertext = this.#cipher.encryptWithAd(this.#hash, plaintext);
    this.mixHash(ciphertext);
    return ciphertext;
  }

  /**
   * @param ciphertext bytes to decrypt
   * @returns the plaintext
   * @throws {CryptoError} `auth_failed` or `truncated`
   */
  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const plaintext = this.#cipher.decryptWithAd(this.#hash, ciphertext);
    this.mixHash(ciphertext);
    return plaintext;
  }

  /**
   * The two transport CipherStates: initiator to responder, then responder
   * to initiator.
   *
   * @returns the pair
   */
  split(): [CipherState, CipherState] {
    const [first, second] = hkdf(this.#chainingKey, new Uint8Array(0), 2);
    return [new CipherState(first), new CipherState(second)];
  }
}
