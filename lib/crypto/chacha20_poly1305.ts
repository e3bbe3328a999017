/**
 * ChaCha20-Poly1305 (RFC 8439) from Deno's built-in `node:crypto`, with the
 * nonce Noise and WireGuard use (32 zero bits, then a 64-bit little-endian
 * counter), and XChaCha20-Poly1305 (a 24-byte nonce, via HChaCha20) for
 * WireGuard's cookie replies.
 *
 * @module
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import { CryptoError } from "./crypto_error.ts";
import { hchacha20 } from "./hchacha20.ts";

/** Bytes of a Poly1305 tag. */
export const TAG_LENGTH = 16;
/** Bytes of an XChaCha20-Poly1305 nonce. */
export const XNONCE_LENGTH = 24;

/** Largest counter a nonce takes exactly (JavaScript numbers are exact to 2^53 - 1). */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

/**
 * The 12-byte nonce of a counter: four zero bytes, then the counter as 64
 * bits little-endian (Noise section 12.3, WireGuard section 5.4.6).
 *
 * @param counter an integer in [0, 2^53)
 * @returns the nonce
 */
export function counterNonce(counter: number): Uint8Array {
  if (!Number.isSafeInteger(counter) || counter < 0) {
    throw new RangeError(`Cannot make a nonce of counter ${counter}`);
  }
  const nonce = new Uint8Array(12);
  const low = counter >>> 0;
  const high = Math.floor(counter / 0x1_0000_0000);
  nonce[4] = low;
  nonce[5] = low >>> 8;
  nonce[6] = low >>> 16;
  nonce[7] = low >>> 24;
  nonce[8] = high;
  nonce[9] = high >>> 8;
  nonce[10] = high >>> 16;
  nonce[11] = high >>> 24;
  return nonce;
}

/**
 * Encrypts and authenticates with ChaCha20-Poly1305.
 *
 * @param key 32 bytes
 * @param nonce 12 bytes, never reused under one key
 * @param ad associated data, authenticated but not encrypted
 * @param plaintext the message
 * @returns the ciphertext followed by the 16-byte tag
 *
 * @example
 * ```ts
 * const sealed = chacha20Poly1305Seal(key, counterNonce(0), new Uint8Array(), message);
 * ```
 */
export function chacha20Poly1305Seal(
  key: Uint8Array,
  nonce: Uint8Array,
  ad: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array {
  const cipher = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: TAG_LENGTH });
  cipher.setAAD(ad, { plaintextLength: plaintext.length });
  const out = new Uint8Array(plaintext.length + TAG_LENGTH);
  out.set(cipher.update(plaintext));
  cipher.final();
  out.set(cipher.getAuthTag(), plaintext.length);
  return out;
}

/**
 * Checks and decrypts what {@link chacha20Poly1305Seal} made.
 *
 * @param key 32 bytes
 * @param nonce the 12-byte nonce it was sealed with
 * @param ad the same associated data
 * @param sealed ciphertext and tag
 * @returns the plaintext
 * @throws {CryptoError} `truncated` if shorter than a tag, `auth_failed` if the tag is wrong
 */
export function chacha20Poly1305Open(
  key: Uint8Array,
  nonce: Uint8Array,
  ad: Uint8Array,
  sealed: Uint8Array,
): Uint8Array {
  if (sealed.length < TAG_LENGTH) {
    throw new CryptoError(
      "truncated",
      `Sealed data of ${sealed.length} bytes has no room for a tag`,
    );
  }
  const body = sealed.subarray(0, sealed.length - TAG_LENGTH);
  const decipher = createDecipheriv("chacha20-poly1305", key, nonce, {
    authTagLength: TAG_LENGTH,
  });
  decipher.setAuthTag(sealed.subarray(body.length));
  decipher.setAAD(ad, { plaintextLength: body.length });
  const out = new Uint8Array(body.length);
  out.set(decipher.update(body));
  try {
    decipher.final();
  } catch {
    throw new CryptoError("auth_failed", "The authentication tag does not match");
  }
  return out;
}

/** The ChaCha20-Poly1305 key and nonce an XChaCha20 24-byte nonce stands for. */
function extended(key: Uint8Array, nonce: Uint8Array): { key: Uint8Array; nonce: Uint8Array } {
  if (nonce.length !== XNONCE_LENGTH) {
    throw new RangeError(`Cannot use a ${nonce.length}-byte XChaCha20 nonce: it is 24 bytes`);
  }
  const inner = new Uint8Array(12);
  inner.set(nonce.subarray(16), 4);
  return { key: hchacha20(key, nonce.subarray(0, 16)), nonce: inner };
}

/**
 * Encrypts with XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03): a random
 * 24-byte nonce is safe under one long-lived key.
 *
 * @param key 32 bytes
 * @param nonce 24 bytes
 * @param ad associated data
 * @param plaintext the message
 * @returns ciphertext and tag
 */
export function xchacha20Poly1305Seal(
  key: Uint8Array,
  nonce: Uint8Array,
  ad: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array {
  const inner = extended(key, nonce);
  return chacha20Poly1305Seal(inner.key, inner.nonce, ad, plaintext);
}

/**
 * Checks and decrypts what {@link xchacha20Poly1305Seal} made.
 *
 * @param key 32 bytes
 * @param nonce 24 bytes
 * @param ad associated data
 * @param sealed ciphertext and tag
 * @returns the plaintext
 * @throws {CryptoError} `truncated` or `auth_failed`
 */
export function xchacha20Poly1305Open(
  key: Uint8Array,
  nonce: Uint8Array,
  ad: Uint8Array,
  sealed: Uint8Array,
): Uint8Array {
  const inner = extended(key, nonce);
  return chacha20Poly1305Open(inner.key, inner.nonce, ad, sealed);
}
