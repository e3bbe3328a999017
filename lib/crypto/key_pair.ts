/**
 * X25519 key pairs and Diffie-Hellman (RFC 7748) on Deno's built-in
 * `node:crypto`. Keys travel as raw 32-byte arrays; this file wraps them in
 * the DER envelopes `node:crypto` wants.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createPrivateKey, createPublicKey, diffieHellman, type KeyObject } from "node:crypto";
import type { Random } from "../random.ts";
import { CryptoError } from "./crypto_error.ts";

/** Bytes of an X25519 private or public key, and of a DH result. */
export const KEY_LENGTH = 32;

/** An X25519 key pair, raw bytes. */
export interface KeyPair {
  /** The 32-byte private key (any 32 bytes; X25519 clamps them). */
  readonly privateKey: Uint8Array;
  /** The 32-byte public key. */
  readonly publicKey: Uint8Array;
}

/** PKCS#8 prefix of an X25519 private key (RFC 8410). */
const PKCS8_PREFIX = Uint8Array.of(
  0x30,
  0x2e,
  0x02,
  0x01,
  0x00,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x6e,
  0x04,
  0x22,
  0x04,
  0x20,
);
/** SubjectPublicKeyInfo prefix of an X25519 public key (RFC 8410). */
const SPKI_PREFIX = Uint8Array.of(
  0x30,
  0x2a,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x6e,
  0x03,
  0x21,
  0x00,
);

function checkLength(key: Uint8Array, what: string): void {
  if (key.length !== KEY_LENGTH) {
    throw new RangeError(`Cannot use a ${key.length}-byte ${what}: X25519 keys are 32 bytes`);
  }
}

function privateKeyObject(privateKey: Uint8Array): KeyObject {
  checkLength(privateKey, "private key");
  const der = Buffer.alloc(PKCS8_PREFIX.length + KEY_LENGTH);
  der.set(PKCS8_PREFIX);
  der.set(privateKey, PKCS8_PREFIX.length);
  return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
}

function publicKeyObject(publicKey: Uint8Array): KeyObject {
  checkLength(publicKey, "public key");
  const der = Buffer.alloc(SPKI_PREFIX.length + KEY_LENGTH);
  der.set(SPKI_PREFIX);
  der.set(publicKey, SPKI_PREFIX.length);
  return createPublicKey({ key: der, format: "der", type: "spki" });
}

/**
 * Derives the key pair of a private key.
 *
 * @param privateKey 32 bytes
 * @returns the pair, with the public key computed from it
 * @throws {RangeError} if the key is not 32 bytes
 *
 * @example
 * ```ts
 * const pair = keyPairFromPrivateKey(new Uint8Array(32).fill(7));
 * pair.publicKey.length; // 32
 * ```
 */
export function keyPairFromPrivateKey(privateKey: Uint8Array): KeyPair {
  const der = createPublicKey(privateKeyObject(privateKey)).export({ format: "der", type: "spki" });
  return {
    privateKey: privateKey.slice(),
    publicKey: new Uint8Array(der.subarray(der.length - KEY_LENGTH)),
  };
}

/**
 * Makes a fresh key pair from 32 bytes of `random`, so tests and the
 * simulator can inject their own randomness.
 *
 * @param random where the private key comes from
 * @returns the new pair
 */
export function generateKeyPair(random: Random): KeyPair {
  return keyPairFromPrivateKey(random.bytes(KEY_LENGTH));
}

/**
 * X25519 Diffie-Hellman: the shared secret of a private key and a peer's
 * public key.
 *
 * @param privateKey our 32-byte private key
 * @param publicKey the peer's 32-byte public key
 * @returns the 32-byte shared secret
 * @throws {CryptoError} `bad_key` if the result is all zeros (a low-order point)
 * @throws {RangeError} if a key is not 32 bytes
 */
export function dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  let shared: Uint8Array;
  try {
    shared = diffieHellman({
      privateKey: privateKeyObject(privateKey),
      publicKey: publicKeyObject(publicKey),
    });
  } catch (error) {
    if (error instanceof RangeError) throw error;
    throw new CryptoError("bad_key", "Cannot agree on a key with that public key");
  }
  let acc = 0;
  for (const byte of shared) acc |= byte;
  if (acc === 0) throw new CryptoError("bad_key", "The peer's public key is a low-order point");
  return new Uint8Array(shared);
}
