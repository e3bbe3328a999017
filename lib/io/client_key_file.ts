/**
 * The client's static X25519 key pair, `client_key.json` beside the identity
 * file (mode 0600), created on first start. It is the client's side of
 * every encrypted channel to a server (the Noise IK static key), so in open
 * mode it is the client's identity: `register` binds a name to its public
 * key and `login` is the handshake made with it. One key per identity file,
 * like an SSH user key: every name it registers, on every server, is this
 * key's (docs/DECISIONS.md). Losing it loses those names; copy it with the
 * identity file to back them up or move them.
 *
 * @module
 */
import { dirname, join } from "@std/path";
import { getLogger } from "@logtape/logtape";
import { fromHex, toHex } from "../hex.ts";
import { cryptoRandom, type Random } from "../random.ts";
import { fingerprint } from "../crypto/fingerprint.ts";
import { generateKeyPair, type KeyPair, keyPairFromPrivateKey } from "../crypto/key_pair.ts";
import { atomicWriteFile } from "./atomic_write.ts";

/** The file's name, in the identity file's directory. */
export const CLIENT_KEY_FILE = "client_key.json";

/** The client's key pair and what people call it. */
export interface ClientKey {
  /** The X25519 key pair. */
  readonly keyPair: KeyPair;
  /** The public key's fingerprint (see `lib/crypto/fingerprint.ts`). */
  readonly fingerprint: string;
  /** Whether this start created it. */
  readonly created: boolean;
}

/** Thrown when the key file cannot be read or written, or is not a valid key pair. */
export class ClientKeyFileError extends Error {
  /** @param message what is wrong, one line */
  constructor(message: string) {
    super(message);
    this.name = "ClientKeyFileError";
  }
}

/**
 * The key file that goes with an identity file: in the same directory.
 *
 * @param identityPath the identity file
 * @returns the path of `client_key.json` beside it
 */
export function clientKeyPathBeside(identityPath: string): string {
  return join(dirname(identityPath), CLIENT_KEY_FILE);
}

/**
 * Loads the client's key pair, creating it if it does not exist. Two clients
 * that start together on one file end up with the same key: the file is
 * made complete under a temporary name and linked into place, so the one
 * that loses the race reads the winner's.
 *
 * @param path the key file
 * @param random where a new private key comes from (the OS CSPRNG unless a test says otherwise)
 * @returns the key pair and its fingerprint
 * @throws {ClientKeyFileError} if the file is unreadable, invalid, or cannot be made
 *
 * @example
 * ```ts
 * const { keyPair } = await loadClientKey(clientKeyPathBeside("./data/client/identities.json"));
 * ```
 */
export async function loadClientKey(
  path: string,
  random: Random = cryptoRandom,
): Promise<ClientKey> {
  const existing = await read(path);
  if (existing !== undefined) return existing;
  const keyPair = generateKeyPair(random);
  const json = {
    version: 1,
    type: "x25519",
    privateKey: toHex(keyPair.privateKey),
    publicKey: toHex(keyPair.publicKey),
  };
  const temp = `${path}.${toHex(random.bytes(6))}.new`;
  try {
    await Deno.mkdir(dirname(path), { recursive: true });
    await atomicWriteFile(temp, JSON.stringify(json, null, 2) + "\n", { mode: 0o600 });
    await Deno.link(temp, path);
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) {
      throw new ClientKeyFileError(`Cannot write ${path}: ${(error as Error).message}`);
    }
    return (await read(path))!;
  } finally {
    await Deno.remove(temp).catch(() => {});
  }
  return { keyPair, fingerprint: fingerprint(keyPair.publicKey), created: true };
}

async function read(path: string): Promise<ClientKey | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new ClientKeyFileError(`Cannot read ${path}: ${(error as Error).message}`);
  }
  await keepPrivate(path);
  const keyPair = parse(text);
  if (keyPair === undefined) {
    throw new ClientKeyFileError(
      `${path} is not a valid client key; restore it from a backup (the names registered ` +
        "with it log in with no other key), or move it away to start a new identity",
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
  getLogger(["switchboard", "client"]).warn(
    "{path} was readable by others (mode {mode}); set it back to 0600",
    { path, mode: (mode & 0o777).toString(8) },
  );
}
