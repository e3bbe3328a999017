/**
 * The embedded store: the data directory's registry files
 * (`registrations.json` and its append-only log, `registry_file.ts`),
 * written for every version.
 *
 * @module
 */
import type { Registry, RegistryJson, RegistryRecord } from "../server/registry.ts";
import type { LoginFailures, PresenceRecord, SharedFileRecord, Store } from "../server/store.ts";
import { RegistryFile, type RegistryFileOptions } from "./registry_file.ts";

/**
 * The registry files as a {@linkcode Store}.
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
  #options: RegistryFileOptions;
  #file: RegistryFile | undefined;

  /**
   * @param dataDir the data directory
   * @param options when to compact the log
   */
  constructor(dataDir: string, options: RegistryFileOptions = {}) {
    this.#dataDir = dataDir;
    this.#options = options;
  }

  /**
   * Opens the registry files; later saves diff against the registry
   * returned here (`RegistryFile.save`), so keep changing that one.
   *
   * @returns the registry from the files (empty if none)
   */
  async load(): Promise<Registry> {
    this.#file?.release();
    this.#file = await RegistryFile.open(this.#dataDir, this.#options);
    return this.#file.registry;
  }

  /** @param registry the snapshot: its changed names are appended to the log */
  persist(registry: RegistryJson): Promise<void> {
    if (this.#file === undefined) {
      return Promise.reject(new Error("Cannot save the registry: the store was not loaded"));
    }
    return this.#file.save(registry);
  }

  /** Nothing to listen to: the files have one writer. */
  listen(): Promise<void> {
    return Promise.resolve();
  }

  /** @returns the records as loaded and changed since */
  records(): Promise<RegistryRecord[]> {
    return Promise.resolve(this.#file?.registry.records() ?? []);
  }

  /** Nothing to share: sessions stay in this instance's memory. */
  presence(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing to send: with one instance every peer is here. */
  peer(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing to tell: the failed-login counters stay in this instance's memory. */
  login(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  /** @returns nothing: the failed-login counters stay in this instance's memory */
  loginFailures(): Promise<LoginFailures[]> {
    return Promise.resolve([]);
  }

  /** Nothing to sweep: this instance ends its own leases. */
  sweep(): Promise<void> {
    return Promise.resolve();
  }

  /** @returns no other instance's sessions */
  presenceRecords(): Promise<PresenceRecord[]> {
    return Promise.resolve([]);
  }

  /** Nothing to record: the files are listed from this instance's disk. */
  file(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing to record: the files are listed from this instance's disk. */
  ownFiles(): Promise<void> {
    return Promise.resolve();
  }

  /** No tombstones: with one instance, a removed identity's files go at once. */
  takeGoneFiles(): Promise<void> {
    return Promise.resolve();
  }

  /** @returns no other instance's files */
  fileRecords(): Promise<SharedFileRecord[]> {
    return Promise.resolve([]);
  }

  /** Compacts the log into the snapshot and closes it. */
  async close(): Promise<void> {
    await this.#file?.close();
    this.#file = undefined;
  }
}
