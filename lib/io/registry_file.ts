/**
 * Loads and saves `registrations.json` in the data directory.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { join } from "@std/path";
import { Registry, RegistryFormatError, type RegistryJson } from "../server/registry.ts";
import { atomicWriteFile, removeStaleTempFiles } from "./atomic_write.ts";

/** The registry's file name inside the data directory. */
export const REGISTRY_FILE = "registrations.json";

/** Thrown when the registry file exists but cannot be used. */
export class RegistryFileError extends Error {
  /** @param message one line for the operator */
  constructor(message: string) {
    super(message);
    this.name = "RegistryFileError";
  }
}

/**
 * Loads the registry from `<dataDir>/registrations.json`, creating the data
 * directory if needed and clearing temp files a crash left behind. A missing
 * file is an empty registry; a corrupt one is an error and is left untouched.
 *
 * @param dataDir the data directory
 * @returns the registry
 * @throws {RegistryFileError} if the file cannot be read or is not a valid registry
 *
 * @example
 * ```ts
 * const registry = await loadRegistry("./data");
 * ```
 */
export async function loadRegistry(dataDir: string): Promise<Registry> {
  const path = join(dataDir, REGISTRY_FILE);
  try {
    await Deno.mkdir(dataDir, { recursive: true });
    const removed = await removeStaleTempFiles(dataDir, REGISTRY_FILE);
    if (removed > 0) {
      getLogger(["switchboard", "server"]).warn(
        "Removed {removed} unfinished registry write(s) left by a crash in {dataDir}",
        { removed, dataDir },
      );
    }
  } catch (error) {
    throw new RegistryFileError(`Cannot use data directory ${dataDir}: ${describe(error)}`);
  }
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    const dangling = error instanceof Deno.errors.NotFound &&
      (await Deno.lstat(path).then((s) => s.isSymlink, () => false));
    if (dangling) {
      // Starting empty would hide every registration, and the first save would replace the link.
      throw new RegistryFileError(
        `${path} is a symbolic link to a missing file; restore its target or remove the link`,
      );
    }
    if (error instanceof Deno.errors.NotFound) return new Registry();
    throw new RegistryFileError(`Cannot read ${path}: ${describe(error)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new RegistryFileError(
      `${path} is not valid JSON (${describe(error)}); fix it or move it away, it was left as is`,
    );
  }
  try {
    return Registry.fromJson(json);
  } catch (error) {
    if (!(error instanceof RegistryFormatError)) throw error;
    throw new RegistryFileError(
      `${path} is not a valid registry: ${error.message}; fix it or move it away, it was left as is`,
    );
  }
}

/**
 * Writes the registry atomically to `<dataDir>/registrations.json`.
 *
 * @param dataDir the data directory
 * @param json the registry as from `Registry.toJson()`
 * @returns once the file is durable
 */
export async function saveRegistry(dataDir: string, json: RegistryJson): Promise<void> {
  await atomicWriteFile(join(dataDir, REGISTRY_FILE), JSON.stringify(json, null, 2) + "\n", {
    mode: 0o600,
  });
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
