/**
 * The server's secret key in `<data-dir>/server.key`: 32 random bytes, hex,
 * created on first start with mode 0600. Identity keys are derived from it,
 * so it must survive restarts and never leave the machine.
 *
 * @module
 */
import { join } from "@std/path";
import { toHex } from "../hex.ts";
import { getLogger } from "@logtape/logtape";
import { atomicWriteFile, removeStaleTempFiles } from "./atomic_write.ts";
import { RegistryFileError } from "./registry_file.ts";

/** The key's file name inside the data directory. */
export const SERVER_KEY_FILE = "server.key";

/**
 * Loads the server key, creating it if it does not exist.
 *
 * @param dataDir the data directory (must exist)
 * @returns the 32-byte key
 * @throws {RegistryFileError} if the file exists but is not a valid key
 *
 * @example
 * ```ts
 * const secret = await loadServerKey("./data");
 * ```
 */
export async function loadServerKey(dataDir: string): Promise<Uint8Array> {
  const path = join(dataDir, SERVER_KEY_FILE);
  await removeStaleTempFiles(dataDir, SERVER_KEY_FILE);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw new RegistryFileError(`Cannot read ${path}: ${(error as Error).message}`);
    }
    const key = crypto.getRandomValues(new Uint8Array(32));
    await atomicWriteFile(path, toHex(key) + "\n", { mode: 0o600 });
    return key;
  }
  await keepPrivate(path);
  const hex = text.trim();
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new RegistryFileError(
      `${path} is not a valid server key (64 hex digits); move it away to make a new one`,
    );
  }
  return Uint8Array.from(hex.match(/../g)!, (pair) => parseInt(pair, 16));
}

/** Restores mode 0600 on the key if others can read it, and says so. */
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
