/**
 * Chooses the store from the `--store` setting: none for the embedded file
 * store in the data directory, `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` for Redis.
 *
 * @module
 */
import { type Store, StoreError } from "../server/store.ts";
import { FileStore } from "./file_store.ts";
import { RedisStore } from "./redis_store.ts";
import { storeUrlProblem } from "./store_url.ts";

/**
 * Opens the store a server instance keeps its registry in.
 *
 * @param spec `undefined` or `file` for the data directory, or a `redis://` URL
 * @param dataDir the data directory (for the file store)
 * @returns the open store
 * @throws {StoreError} if the setting is not understood or Redis cannot be used
 *
 * @example
 * ```ts
 * const store = await openStore("redis://127.0.0.1:6379/0", "./data");
 * ```
 */
export async function openStore(spec: string | undefined, dataDir: string): Promise<Store> {
  if (spec === undefined || spec === "" || spec === "file") return new FileStore(dataDir);
  const problem = storeUrlProblem(spec);
  if (problem !== undefined) throw new StoreError(problem);
  return await RedisStore.open(spec);
}
