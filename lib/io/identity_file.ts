/**
 * The client's identity file: the names registered with the client's key
 * pair (`client_key_file.ts`), one entry per server and name, so that
 * `login` knows them in a later run. Version 2 files also held a 16-byte
 * secret key per entry; such an entry logs in once with it, the server then
 * binds the name to the key pair, and the entry is saved without it.
 * Written atomically with mode 0600, under an exclusive lock so that two
 * clients sharing the file do not lose each other's entries.
 *
 * @module
 */
import { dirname } from "@std/path";
import { nameKey } from "../wire/client_name.ts";
import { atomicWriteFile } from "./atomic_write.ts";

/** One saved identity. */
export interface Identity {
  /** The server it belongs to, `host:port` as given. */
  readonly server: string;
  /** The registered name. */
  readonly name: string;
  /** Version 2 only: the secret identity key, hex, until a login binds the name to the key pair. */
  readonly key?: string;
  /** When it was saved, ISO 8601. */
  readonly savedAt: string;
}

/** Thrown when the identity file cannot be read, parsed or written. */
export class IdentityFileError extends Error {
  /** @param message what is wrong, one sentence */
  constructor(message: string) {
    super(message);
    this.name = "IdentityFileError";
  }
}

/**
 * Reads every saved identity.
 *
 * @param path the identity file
 * @returns the identities; none if the file does not exist
 * @throws {IdentityFileError} if the file is unreadable or malformed
 */
export async function loadIdentities(path: string): Promise<Identity[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw new IdentityFileError(`Cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    const json = JSON.parse(text);
    // Version 1 (written by protocol version 2's clients) has a key in every entry.
    const version = json?.version;
    if ((version !== 1 && version !== 2) || !Array.isArray(json.identities)) {
      throw new Error("bad shape");
    }
    for (const i of json.identities) {
      if (
        typeof i?.server !== "string" || typeof i.name !== "string" ||
        (i.key === undefined ? version === 1 : !/^[0-9a-f]{32}$/.test(i.key)) ||
        typeof i.savedAt !== "string"
      ) {
        throw new Error("bad entry");
      }
    }
    return json.identities as Identity[];
  } catch {
    throw new IdentityFileError(
      `${path} is not a valid identity file; move it away to start afresh`,
    );
  }
}

/**
 * Picks the identity to log in with: the one for this server and name, else
 * the newest for the name, else (no name given) the only one for this server.
 *
 * @param identities the saved identities
 * @param server the server, `host:port`
 * @param name the name to log in as, if given
 * @returns the identity, or undefined
 */
export function findIdentity(
  identities: readonly Identity[],
  server: string,
  name: string | undefined,
): Identity | undefined {
  const forServer = identities.filter((i) => i.server.toLowerCase() === server.toLowerCase());
  if (name === undefined) return forServer.length === 1 ? forServer[0] : undefined;
  const key = nameKey(name);
  return forServer.find((i) => nameKey(i.name) === key) ??
    identities.filter((i) => nameKey(i.name) === key).at(-1);
}

/**
 * Saves (or replaces) the identity of a server and name: registered with
 * the key pair, so without a version 2 key.
 *
 * @param path the identity file
 * @param identity the server and name
 * @throws {IdentityFileError} if the file cannot be written
 */
export async function saveIdentity(
  path: string,
  identity: { server: string; name: string },
): Promise<void> {
  await withLock(path, async () => {
    const key = nameKey(identity.name);
    const kept = (await loadIdentities(path)).filter((i) =>
      !(i.server.toLowerCase() === identity.server.toLowerCase() && nameKey(i.name) === key)
    );
    kept.push({ server: identity.server, name: identity.name, savedAt: new Date().toISOString() });
    await write(path, kept);
  });
}

/**
 * Checks, before a `register`, that the identity file is valid and can be
 * written, by writing back what it holds (an empty file if there is none):
 * a name registered but not noted would be known to the key only.
 *
 * @param path the identity file
 * @throws {IdentityFileError} if the file is malformed or cannot be written
 */
export async function checkIdentityFile(path: string): Promise<void> {
  await withLock(path, async () => await write(path, await loadIdentities(path)));
}

/**
 * Forgets the identity of a server and name (after `deregister`).
 *
 * @param path the identity file
 * @param server the server, `host:port`
 * @param name the name
 * @throws {IdentityFileError} if the file cannot be written
 */
export async function forgetIdentity(path: string, server: string, name: string): Promise<void> {
  await withLock(path, async () => {
    const key = nameKey(name);
    const all = await loadIdentities(path);
    const kept = all.filter((i) =>
      !(i.server.toLowerCase() === server.toLowerCase() && nameKey(i.name) === key)
    );
    if (kept.length !== all.length) await write(path, kept);
  });
}

async function write(path: string, identities: Identity[]): Promise<void> {
  try {
    const text = JSON.stringify({ version: 2, identities }, null, 2) + "\n";
    await atomicWriteFile(path, text, { mode: 0o600 });
  } catch (error) {
    throw new IdentityFileError(`Cannot write ${path}: ${(error as Error).message}`);
  }
}

async function withLock(path: string, work: () => Promise<void>): Promise<void> {
  let lock: Deno.FsFile;
  try {
    await Deno.mkdir(dirname(path), { recursive: true });
    lock = await Deno.open(`${path}.lock`, { create: true, write: true, mode: 0o600 });
  } catch (error) {
    throw new IdentityFileError(`Cannot write ${path}: ${(error as Error).message}`);
  }
  try {
    await lock.lock(true);
    await work();
  } finally {
    lock.close();
  }
}
