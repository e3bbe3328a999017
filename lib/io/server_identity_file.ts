/**
 * The server's static X25519 key pair for the secure channel (Noise IK), in
 * `<data-dir>/server_identity.json`, mode 0600, created on first start.
 * Clients pin its public key, so it must survive restarts and never leave
 * the machine; its fingerprint is what an operator reads out to users.
 *
 * @module
 */
import { join } from "@std/path";
import { getLogger } from "@logtape/logtape";
import { fromHex, toHex } from "../hex.ts";
import { cryptoRandom, type Random } from "../random.ts";
import { fingerprint } from "../crypto/fingerprint.ts";
import { generateKeyPair, type KeyPair, keyPairFromPrivateKey } from "../crypto/key_pair.ts";
import { atomicWriteFile, removeStaleTempFiles } from "./atomic_write.ts";

/** The file's name inside the data directory. */
export const SERVER_IDENTITY_FILE = "server_identity.json";

/** The server's static key pair and what people call it. */
export interface ServerIdentity {
  /** The X25519 key pair. */
  readonly keyPair: KeyPair;
  /** The public key's fingerprint (see `lib/crypto/fingerprint.ts`). */
  readonly fingerprint: string;
  /** Whether this start created it. */
  readonly created: boolean;
}

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
    const json = {
      version: 1,
      type: "x25519",
      privateKey: toHex(keyPair.privateKey),
      publicKey: toHex(keyPair.publicKey),
    };
    await atomicWriteFile(path, JSON.stringify(json, null, 2) + "\n", { mode: 0o600 });
    return { keyPair, fingerprint: fingerprint(keyPair.publicKey), created: true };
  }
  await keepPrivate(path);
  const keyPair = parse(text);
  if (keyPair === undefined) {
    throw new ServerIdentityFileError(
      `${path} is not a valid server identity; move it away to make a new one (clients will see a changed key)`,
    );
  }
  return { keyPair, fingerprint: fingerprint(keyPair.publicKey), created: false };
}

function parse(text: string): KeyPair | undefined {
  try {
    const json = JSON.parse(text);
    if (
      json?.version !== 1 || json.type !== "x25519" ||
      !/^[0-9a-f]{64}$/.test(json.privateKey) || !/^[0-9a-f]{64}$/.test(json.publicKey)
    ) {
      return undefined;
    }
    const keyPair = keyPairFromPrivateKey(fromHex(json.privateKey));
    return toHex(keyPair.publicKey) === json.publicKey ? keyPair : undefined;
  } catch {
    return undefined;
  }
}

/** Restores mode 0600 if others can read the file, and says so. */
async function keepPrivate(path: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  const mode = (await Deno.stat(path)).mode;
  if (mode === null || (mode & 0o077) === 0) return;
  await Deno.chmod(path, 0o600);
  getLogger(["switchboard", "server"]).warn(
    "{path} was readable by others (mode {mode}); set it back to 0600",
    { path, mode: (mode & 0o777).toString(8) },
  );
}
