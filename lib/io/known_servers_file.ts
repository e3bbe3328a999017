/**
 * The client's pins of server keys, trust on first use as SSH's
 * `known_hosts`: `known_servers.json` beside the identity file, mode 0600,
 * one static public key per server address. The first key a server presents
 * is saved; a different key later is a hard error, never a silent update.
 *
 * @module
 */
import { dirname, join } from "@std/path";
import { fromHex, toHex } from "../hex.ts";
import { fingerprint } from "../crypto/fingerprint.ts";
import { atomicWriteFile } from "./atomic_write.ts";

/** The file's name, in the identity file's directory. */
export const KNOWN_SERVERS_FILE = "known_servers.json";

/** One pinned server. */
export interface KnownServer {
  /** The server, `host:port` as given (compared without case). */
  readonly server: string;
  /** Its static public key, 64 hex digits. */
  readonly publicKey: string;
  /** When it was first seen, ISO 8601. */
  readonly firstSeen: string;
}

/** Thrown when the file cannot be read, parsed or written. */
export class KnownServersFileError extends Error {
  /** @param message what is wrong, one line */
  constructor(message: string) {
    super(message);
    this.name = "KnownServersFileError";
  }
}

/** Thrown when a server presents a key other than the one pinned for it. */
export class ServerKeyChangedError extends Error {
  /** The server, as pinned. */
  readonly server: string;
  /** The fingerprint pinned. */
  readonly pinned: string;
  /** The fingerprint presented now. */
  readonly presented: string;

  /**
   * @param server the server
   * @param pinned the pinned fingerprint
   * @param presented the presented fingerprint
   * @param path the pin file, named so the user knows where to look
   */
  constructor(server: string, pinned: string, presented: string, path: string) {
    super(
      `The key of ${server} has changed (pinned ${pinned}, now ${presented}): refusing to connect; if the server's key really changed, remove its entry from ${path}`,
    );
    this.name = "ServerKeyChangedError";
    this.server = server;
    this.pinned = pinned;
    this.presented = presented;
  }
}

/**
 * The pin file that goes with an identity file.
 *
 * @param identityPath the identity file
 * @returns the path of `known_servers.json` beside it
 */
export function knownServersPathBeside(identityPath: string): string {
  return join(dirname(identityPath), KNOWN_SERVERS_FILE);
}

/**
 * Reads every pin.
 *
 * @param path the pin file
 * @returns the pins; none if the file does not exist
 * @throws {KnownServersFileError} if it is unreadable or malformed
 */
export async function loadKnownServers(path: string): Promise<KnownServer[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw new KnownServersFileError(`Cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    const json = JSON.parse(text);
    if (json?.version !== 1 || !Array.isArray(json.servers)) throw new Error("bad shape");
    for (const s of json.servers) {
      if (
        typeof s?.server !== "string" || typeof s.publicKey !== "string" ||
        !/^[0-9a-f]{64}$/.test(s.publicKey) || typeof s.firstSeen !== "string"
      ) {
        throw new Error("bad entry");
      }
    }
    return json.servers as KnownServer[];
  } catch {
    throw new KnownServersFileError(
      `${path} is not a valid known-servers file; move it away to trust servers afresh`,
    );
  }
}

/**
 * Checks a server's key against its pin, pinning it if the server is new.
 *
 * @param path the pin file
 * @param server the server, `host:port`
 * @param publicKey the static key it presented in the handshake
 * @param now the time to record for a new pin
 * @returns `pinned` if it was new and is now saved, `known` if it matches the pin
 * @throws {ServerKeyChangedError} if a different key is pinned for the server
 * @throws {KnownServersFileError} if the file is malformed or cannot be written
 *
 * @example
 * ```ts
 * await checkServerKey(knownServersPathBeside(identityPath), "example.org:3000", key, new Date());
 * ```
 */
export async function checkServerKey(
  path: string,
  server: string,
  publicKey: Uint8Array,
  now: Date,
): Promise<"pinned" | "known"> {
  return await withLock(path, async () => {
    const servers = await loadKnownServers(path);
    const hex = toHex(publicKey);
    const pin = servers.find((s) => s.server.toLowerCase() === server.toLowerCase());
    if (pin?.publicKey === hex) return "known";
    if (pin !== undefined) {
      const pinned = fingerprint(fromHex(pin.publicKey));
      throw new ServerKeyChangedError(server, pinned, fingerprint(publicKey), path);
    }
    servers.push({ server, publicKey: hex, firstSeen: now.toISOString() });
    try {
      const text = JSON.stringify({ version: 1, servers }, null, 2) + "\n";
      await atomicWriteFile(path, text, { mode: 0o600 });
    } catch (error) {
      throw new KnownServersFileError(`Cannot write ${path}: ${(error as Error).message}`);
    }
    return "pinned";
  });
}

/** Runs `work` holding an exclusive lock beside the file, so two clients do not lose pins. */
async function withLock<T>(path: string, work: () => Promise<T>): Promise<T> {
  let lock: Deno.FsFile;
  try {
    await Deno.mkdir(dirname(path), { recursive: true });
    lock = await Deno.open(`${path}.lock`, { create: true, write: true, mode: 0o600 });
  } catch (error) {
    throw new KnownServersFileError(`Cannot write ${path}: ${(error as Error).message}`);
  }
  try {
    await lock.lock(true);
    return await work();
  } finally {
    lock.close();
  }
}
