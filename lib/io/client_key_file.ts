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
import { toHex } from "../hex.ts";
import { cryptoRandom, type Random } from "../random.ts";
import { generateKeyPair } from "../crypto/key_pair.ts";
import { atomicWriteFile } from "./atomic_write.ts";
import {
  keepPrivate,
  keyPairFileText,
  parseKeyPairFile,
  type StoredKeyPair,
  storedKeyPair,
} from "./key_pair_file.ts";

/** The file's name, in the identity file's directory. */
export const CLIENT_KEY_FILE = "client_key.json";

/** The client's key pair and what people call it. */
export type ClientKey = StoredKeyPair;

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
  const temp = `${path}.${toHex(random.bytes(6))}.new`;
  try {
    await Deno.mkdir(dirname(path), { recursive: true });
    await atomicWriteFile(temp, keyPairFileText(keyPair), { mode: 0o600 });
    await Deno.link(temp, path);
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) {
      throw new ClientKeyFileError(`Cannot write ${path}: ${(error as Error).message}`);
    }
    return (await read(path))!;
  } finally {
    await Deno.remove(temp).catch(() => {});
  }
  return storedKeyPair(keyPair, true);
}

async function read(path: string): Promise<ClientKey | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new ClientKeyFileError(`Cannot read ${path}: ${(error as Error).message}`);
  }
  await keepPrivate(path, "client");
  const keyPair = parseKeyPairFile(text);
  if (keyPair === undefined) {
    throw new ClientKeyFileError(
      `${path} is not a valid client key; restore it from a backup (the names registered ` +
        "with it log in with no other key), or move it away to start a new identity",
    );
  }
  return storedKeyPair(keyPair, false);
}
