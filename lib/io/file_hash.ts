/**
 * SHA-256 of files as they stream, for the drivers: Deno's native
 * implementation (`node:crypto`), about ten times faster than hashing in
 * JavaScript, so a transfer's hashing does not hold up its event loop.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** An incremental SHA-256. */
export interface Sha256 {
  /** Adds bytes. */
  update(data: Uint8Array): void;
  /** The digest of everything added; call once. */
  digest(): Uint8Array;
}

/**
 * Starts an incremental SHA-256.
 *
 * @returns the hasher
 *
 * @example
 * ```ts
 * const hash = createSha256();
 * hash.update(new TextEncoder().encode("abc"));
 * hash.digest(); // ba7816bf...
 * ```
 */
export function createSha256(): Sha256 {
  const hash = createHash("sha256");
  return {
    update: (data) => void hash.update(data),
    digest: () => new Uint8Array(hash.digest()),
  };
}

/**
 * Hashes a file as it is read.
 *
 * @param path the file
 * @param progress called with the bytes hashed so far
 * @returns the SHA-256
 */
export async function hashFile(
  path: string,
  progress: (done: number) => void,
): Promise<Uint8Array> {
  const hash = createSha256();
  const file = await Deno.open(path);
  let done = 0;
  for await (const chunk of file.readable) {
    hash.update(chunk);
    done += chunk.length;
    progress(done);
  }
  return hash.digest();
}
