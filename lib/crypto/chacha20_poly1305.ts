/**
 * ChaCha20-Poly1305 (RFC 8439), with the nonce Noise and WireGuard use (32
 * zero bits, then a 64-bit little-endian counter), and XChaCha20-Poly1305 (a
 * 24-byte nonce, via HChaCha20) for WireGuard's cookie replies.
 *
 * Two implementations of the one cipher, picked by size: messages up to
 * {@link SMALL_MESSAGE_BYTES} (every datagram) go to libsodium's WebAssembly
 * build (`sodium_aead.ts`), which makes no object per message; larger ones
 * (TCP frames of file data) to Deno's built-in `node:crypto`, native and
 * faster per byte. Both give the same bytes; tests hold each to the other
 * and to RFC 8439's vectors.
 *
 * @module
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import { CryptoError } from "./crypto_error.ts";
import { allocateBytes } from "../byte_pool.ts";
import { hchacha20 } from "./hchacha20.ts";
import { sodiumOpenInto, sodiumSealInto } from "./sodium_aead.ts";

/** Bytes of a Poly1305 tag. */
export const TAG_LENGTH = 16;
/** Bytes of an XChaCha20-Poly1305 nonce. */
export const XNONCE_LENGTH = 24;

/**
 * Largest message sealed or opened by libsodium's WebAssembly; larger go to
 * `node:crypto`. Measured here (2026-12-06): 1,150 bytes 2.3 against 4.5 us,
 * 4,096 bytes 7.1 against 5.8 us, 65,536 bytes 109 against 51 us.
 */
export const SMALL_MESSAGE_BYTES = 3072;

/** Largest counter a nonce takes exactly (JavaScript numbers are exact to 2^53 - 1). */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

/**
 * The 12-byte nonce of a counter: four zero bytes, then the counter as 64
 * bits little-endian (Noise section 12.3, WireGuard section 5.4.6).
 *
 * @param counter an integer in [0, 2^53)
 * @param nonce where to write it (a transport keeps one and reuses it: the
 *   cipher copies the nonce it is given), a new array if absent
 * @returns the nonce
 */
export function counterNonce(counter: number, nonce: Uint8Array = new Uint8Array(12)): Uint8Array {
  if (!Number.isSafeInteger(counter) || counter < 0) {
    throw new RangeError(`Cannot make a nonce of counter ${counter}`);
  }
  const low = counter >>> 0;
  const high = Math.floor(counter / 0x1_0000_0000);
  nonce[0] =
    nonce[1] =
    nonce[2] =
    nonce[3] =
      0;
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
  const out = new Uint8Array(plaintext.length + TAG_LENGTH);
  chacha20Poly1305SealInto(key, nonce, ad, plaintext, out, 0);
  return out;
}

/**
 * Seals like {@link chacha20Poly1305Seal}, writing ciphertext and tag into
 * `out` at `offset`: a transport seals straight into the datagram it sends,
 * with no array of its own.
 *
 * @param key 32 bytes
 * @param nonce 12 bytes, never reused under one key
 * @param ad associated data
 * @param plaintext the message
 * @param out where the `plaintext.length + 16` bytes go
 * @param offset where in `out` they start
 * @throws {RangeError} if `out` has no room for them
 */
export function chacha20Poly1305SealInto(
  key: Uint8Array,
  nonce: Uint8Array,
  ad: Uint8Array,
  plaintext: Uint8Array,
  out: Uint8Array,
  offset: number,
): void {
  if (offset < 0 || offset + plaintext.length + TAG_LENGTH > out.length) {
    throw new RangeError(
      `Cannot seal ${plaintext.length} bytes at ${offset} of a ${out.length}-byte array`,
    );
  }
  if (plaintext.length <= SMALL_MESSAGE_BYTES) {
    sodiumSealInto(key, nonce, ad, plaintext, out, offset);
    return;
  }
  const cipher = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: TAG_LENGTH });
  cipher.setAAD(ad, { plaintextLength: plaintext.length });
  out.set(cipher.update(plaintext), offset);
  cipher.final();
  out.set(cipher.getAuthTag(), offset + plaintext.length);
}

/**
 * Checks and decrypts what {@link chacha20Poly1305Seal} made.
 *
 * @param key 32 bytes
 * @param nonce the 12-byte nonce it was sealed with
 * @param ad the same associated data
 * @param sealed ciphertext and tag
 * @returns the plaintext: a short-lived array from the byte pool (see
 *   `allocateBytes`) when small, else the cipher's own output array
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
  if (body.length <= SMALL_MESSAGE_BYTES) {
    const plaintext = allocateBytes(body.length);
    if (!sodiumOpenInto(key, nonce, ad, sealed, plaintext)) throw authFailed();
    return plaintext;
  }
  const decipher = createDecipheriv("chacha20-poly1305", key, nonce, {
    authTagLength: TAG_LENGTH,
  });
  decipher.setAuthTag(sealed.subarray(body.length));
  decipher.setAAD(ad, { plaintextLength: body.length });
  const out = decipher.update(body);
  try {
    decipher.final();
  } catch {
    throw authFailed();
  }
  // A plain Uint8Array over the Buffer's bytes: a Buffer's slice() is a view, not a copy.
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

function authFailed(): CryptoError {
  return new CryptoError("auth_failed", "The authentication tag does not match");
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
