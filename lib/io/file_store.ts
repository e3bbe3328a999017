/**
 * The embedded store: `registrations.json` in the data directory, written
 * atomically for every version (today's behaviour, unchanged).
 *
 * @module
 */
import type { Registry, RegistryJson, RegistryRecord } from "../server/registry.ts";
import type { PresenceRecord, Store } from "../server/store.ts";
import { loadRegistry, saveRegistry } from "./registry_file.ts";

/**
 * The registry file as a {@linkcode Store}.
 *
 * @example
 * ```ts
 * const store = new FileStore("./data");
 * const registry = await store.load();
 * ```
 */
export class FileStore implements Store {
  readonly kind = "file";
  readonly shared = false;
  #dataDir: string;

  /** @param dataDir the data directory */
  constructor(dataDir: string) {
    this.#dataDir = dataDir;
  }

  /** @returns the registry from the file (empty if none) */
  load(): Promise<Registry> {
    return loadRegistry(this.#dataDir);
  }

  /** @param registry the snapshot to write atomically */
  persist(registry: RegistryJson): Promise<void> {
    return saveRegistry(this.#dataDir, registry);
  }

  /** Nothing to listen to: the file has one writer. */
  listen(): Promise<void> {
    return Promise.resolve();
  }

  /** @returns the records in the file */
  async records(): Promise<RegistryRecord[]> {
    return (await this.load()).records();
  }

  /** Nothing to share: sessions stay in this instance's memory. */
  presence(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing to tell: the failed-login counters stay in this instance's memory. */
  login(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing to sweep: this instance ends its own leases. */
  sweep(): Promise<void> {
    return Promise.resolve();
  }

  /** @returns no other instance's sessions */
  presenceRecords(): Promise<PresenceRecord[]> {
    return Promise.resolve([]);
  }

  /** Nothing to release. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
