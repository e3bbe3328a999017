/**
 * HChaCha20 (draft-irtf-cfrg-xchacha-03 section 2.2): derives a subkey from
 * a key and a 16-byte nonce, the first half of XChaCha20. `node:crypto`
 * offers ChaCha20-Poly1305 but not its extended-nonce form, so this
 * 20-round core is written out here; the second half is native.
 *
 * @module
 */

function rotl(x: number, n: number): number {
  return (x << n) | (x >>> (32 - n));
}

function readWord(bytes: Uint8Array, at: number): number {
  return (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24)) >>> 0;
}

/**
 * The HChaCha20 subkey of a key and a 16-byte nonce.
 *
 * @param key 32 bytes
 * @param nonce 16 bytes
 * @returns the 32-byte subkey
 * @throws {RangeError} if a length is wrong
 *
 * @example
 * ```ts
 * const subkey = hchacha20(new Uint8Array(32), new Uint8Array(16));
 * ```
 */
export function hchacha20(key: Uint8Array, nonce: Uint8Array): Uint8Array {
  if (key.length !== 32 || nonce.length !== 16) {
    throw new RangeError(
      `Cannot run HChaCha20 on a ${key.length}-byte key and ${nonce.length}-byte nonce`,
    );
  }
  const s = new Uint32Array(16);
  s[0] = 0x61707865;
  s[1] = 0x3320646e;
  s[2] = 0x79622d32;
  s[3] = 0x6b206574;
  for (let i = 0; i < 8; i++) s[4 + i] = readWord(key, i * 4);
  for (let i = 0; i < 4; i++) s[12 + i] = readWord(nonce, i * 4);
  const quarter = (a: number, b: number, c: number, d: number) => {
    s[a] += s[b];
    s[d] = rotl(s[d] ^ s[a], 16);
    s[c] += s[d];
    s[b] = rotl(s[b] ^ s[c], 12);
    s[a] += s[b];
    s[d] = rotl(s[d] ^ s[a], 8);
    s[c] += s[d];
    s[b] = rotl(s[b] ^ s[c], 7);
  };
  for (let round = 0; round < 10; round++) {
    quarter(0, 4, 8, 12);
    quarter(1, 5, 9, 13);
    quarter(2, 6, 10, 14);
    quarter(3, 7, 11, 15);
    quarter(0, 5, 10, 15);
    quarter(1, 6, 11, 12);
    quarter(2, 7, 8, 13);
    quarter(3, 4, 9, 14);
  }
  const out = new Uint8Array(32);
  const view = new DataView(out.buffer);
  for (let i = 0; i < 4; i++) view.setUint32(i * 4, s[i], true);
  for (let i = 0; i < 4; i++) view.setUint32(16 + i * 4, s[12 + i], true);
  return out;
}
