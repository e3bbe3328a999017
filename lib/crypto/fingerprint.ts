/**
 * A static public key's fingerprint for people: the first 20 bytes (160
 * bits) of SHA-256 of the key, in lowercase RFC 4648 base32, in eight groups
 * of four joined by dashes, such as `mfrg-gzdf-mztw-q2lk-nnwg-23tp-obyx-e3tt`.
 * Base32 has no look-alike pairs of case or 0/O and 1/l; 160 bits are far
 * beyond a second-preimage search.
 *
 * @module
 */
import { sha256 } from "./symmetric_state.ts";

const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";
const FINGERPRINT_BYTES = 20;

/**
 * The fingerprint of a public key.
 *
 * @param publicKey the 32-byte static public key
 * @returns 32 base32 letters in dash-separated groups of four
 *
 * @example
 * ```ts
 * fingerprint(serverKeys.publicKey); // "xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx"
 * ```
 */
export function fingerprint(publicKey: Uint8Array): string {
  const digest = sha256(publicKey).subarray(0, FINGERPRINT_BYTES);
  let letters = "";
  let buffer = 0, bits = 0;
  for (const byte of digest) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      letters += ALPHABET[(buffer >>> bits) & 31];
    }
    buffer &= (1 << bits) - 1;
  }
  return letters.match(/..../g)!.join("-");
}

/**
 * Brings a fingerprint a person typed to the form {@link fingerprint} gives:
 * case, spaces and dashes do not matter.
 *
 * @param text what was typed
 * @returns the canonical fingerprint, or undefined if it is not one
 *
 * @example
 * ```ts
 * normalizeFingerprint("MFRG GZDF MZTW Q2LK NNWG 23TP OBYX E3TT"); // "mfrg-gzdf-..."
 * ```
 */
export function normalizeFingerprint(text: string): string | undefined {
  const letters = text.toLowerCase().replace(/[\s-]/g, "");
  if (!/^[a-z2-7]{32}$/.test(letters)) return undefined;
  return letters.match(/..../g)!.join("-");
}
