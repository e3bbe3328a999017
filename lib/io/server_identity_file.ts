/**
 * The server's static X25519 key pair for the secure channel (Noise IK), in
 * `<data-dir>/server_identity.json`, mode 0600, created on first start.
 * Clients pin its public key, so it must survive restarts and never leave
 * the machine; its fingerprint is what an operator reads out to users.
 *
 * @module
 */
import { join } from "@std/path";
import { cryptoRandom, type Random } from "../random.ts";
import { generateKeyPair } from "../crypto/key_pair.ts";
import { atomicWriteFile, removeStaleTempFiles } from "./atomic_write.ts";
import {
  keepPrivate,
  keyPairFileText,
  parseKeyPairFile,
  type StoredKeyPair,
  storedKeyPair,
} from "./key_pair_file.ts";

/** The file's name inside the data directory. */
export const SERVER_IDENTITY_FILE = "server_identity.json";

/** The server's static key pair and what people call it. */
export type ServerIdentity = StoredKeyPair;

/** Thrown when the identity file exists but cannot be read or is not a valid key pair. */
export class ServerIdentityFileError extends Error {
  /** @param message what is wrong, one line */
  constructor(message: string) {
    super(message);
    this.name = "ServerIdentityFileError";
  }
}

/**
 * Loads the server's static key pair, creating it if it does not exist.
 *
 * @param dataDir the data directory (must exist)
 * @param random where a new private key comes from (the OS CSPRNG unless a test says otherwise)
 * @returns the key pair and its fingerprint
 * @throws {ServerIdentityFileError} if the file is unreadable or invalid
 *
 * @example
 * ```ts
 * const { fingerprint } = await loadServerIdentity("./data");
 * console.log(`Server key ${fingerprint}`);
 * ```
 */
export async function loadServerIdentity(
  dataDir: string,
  random: Random = cryptoRandom,
): Promise<ServerIdentity> {
  const path = join(dataDir, SERVER_IDENTITY_FILE);
  await removeStaleTempFiles(dataDir, SERVER_IDENTITY_FILE);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw new ServerIdentityFileError(`Cannot read ${path}: ${(error as Error).message}`);
    }
    const keyPair = generateKeyPair(random);
    await atomicWriteFile(path, keyPairFileText(keyPair), { mode: 0o600 });
    return storedKeyPair(keyPair, true);
  }
  await keepPrivate(path, "server");
  const keyPair = parseKeyPairFile(text);
  if (keyPair === undefined) {
    throw new ServerIdentityFileError(
      `${path} is not a valid server identity; move it away to make a new one (clients will see a changed key)`,
    );
  }
  return storedKeyPair(keyPair, false);
}
