/**
 * One server per data directory: an exclusive lock on
 * `<data-dir>/server.lock`, held while the server runs and released by the
 * system if it dies, so two servers never overwrite each other's registry.
 *
 * @module
 */
import { join } from "@std/path";

/** The lock file's name inside the data directory. */
export const LOCK_FILE = "server.lock";

/** Thrown when another process holds the data directory. */
export class DataDirLockedError extends Error {
  /** @param dataDir the directory that is in use */
  constructor(dataDir: string) {
    super(
      `Another server is using data directory ${dataDir}; stop it or pass another --data-dir`,
    );
    this.name = "DataDirLockedError";
  }
}

/**
 * Takes the data directory's lock without waiting.
 *
 * @param dataDir the data directory (must exist)
 * @returns the open lock file; close it to release the lock
 * @throws {DataDirLockedError} if another process holds it
 *
 * @example
 * ```ts
 * const lock = await lockDataDir("./data");
 * // ... serve ...
 * lock.close();
 * ```
 */
export async function lockDataDir(dataDir: string): Promise<Deno.FsFile> {
  const file = await Deno.open(join(dataDir, LOCK_FILE), {
    read: true,
    write: true,
    create: true,
  });
  let locked = false;
  try {
    locked = await file.tryLock(true);
  } finally {
    if (!locked) file.close();
  }
  if (!locked) throw new DataDirLockedError(dataDir);
  return file;
}
