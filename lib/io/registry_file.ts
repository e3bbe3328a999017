/**
 * Keeps the registry on disk in the data directory: a snapshot,
 * `registrations.json` (seed-compatible, written atomically), and an
 * append-only log of the changes since, `registrations.log`, so that a write
 * grows with the change, not with the registry.
 *
 * A save appends one line per changed name (`{"put":NAME,...entry}` or
 * `{"del":NAME}`) and fsyncs; a registry small enough (64 KiB) is simply
 * rewritten whole, as before. Once the log outgrows the snapshot, the
 * snapshot is rewritten (temp file, fsync, rename, fsync the directory) and
 * the log emptied: each byte of a change is written a bounded number of
 * times. The log is appended *before* the snapshot is rewritten, so a crash
 * at any instant leaves either snapshot + log or the new snapshot + a log
 * whose replay changes nothing (every line sets a name to its final state).
 * A torn last line (no newline, or not JSON) is a write that never
 * finished, so never acknowledged: it is ignored and cut off. A failed
 * append is cut off before the next one; only if that cut fails too and the
 * process then dies can a change the server refused come back at restart.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { join } from "@std/path";
import { Registry, RegistryFormatError, type RegistryJson } from "../server/registry.ts";
import { atomicWriteFile, removeStaleTempFiles } from "./atomic_write.ts";

/** The snapshot's file name inside the data directory. */
export const REGISTRY_FILE = "registrations.json";
/** The change log's file name inside the data directory. */
export const REGISTRY_LOG_FILE = "registrations.log";
/** Up to this size a registry is rewritten whole on every save (no log). */
export const DEFAULT_COMPACT_BYTES = 64 * 1024;

type Entry = RegistryJson[string];

/** Thrown when the registry files exist but cannot be used. */
export class RegistryFileError extends Error {
  /** @param message one line for the operator */
  constructor(message: string) {
    super(message);
    this.name = "RegistryFileError";
  }
}

/** Options of {@linkcode RegistryFile.open}. */
export interface RegistryFileOptions {
  /** Registries up to this many bytes are rewritten whole; the log is compacted past it (default 64 KiB). */
  compactBytes?: number;
}

const log = getLogger(["switchboard", "server"]);

/**
 * The registry's files, open for saving.
 *
 * @example
 * ```ts
 * const file = await RegistryFile.open("./data");
 * file.registry.add(record);
 * await file.save(file.registry.toJson()); // durable when it resolves
 * await file.close();
 * ```
 */
export class RegistryFile {
  /** The registry as loaded at open. */
  readonly registry: Registry;
  readonly #dataDir: string;
  readonly #compactBytes: number;
  /** What is on disk (snapshot + log): each name's entry object and its size. */
  #saved = new Map<string, { entry: Entry; bytes: number }>();
  #savedBytes = 0;
  #log: Deno.FsFile | undefined;
  #logBytes: number;
  /** The size of the snapshot on disk. */
  #snapshotBytes: number;
  /** A failed append may have left bytes past `#logBytes`: cut them off before the next. */
  #logDirty = false;

  private constructor(
    dataDir: string,
    registry: Registry,
    log: Deno.FsFile | undefined,
    logBytes: number,
    snapshotBytes: number,
    compactBytes: number,
  ) {
    this.#snapshotBytes = snapshotBytes;
    this.#dataDir = dataDir;
    this.registry = registry;
    this.#log = log;
    this.#logBytes = logBytes;
    this.#compactBytes = compactBytes;
    for (const [name, entry] of Object.entries(registry.toJson())) {
      const bytes = lineBytes(name, entry);
      this.#saved.set(name, { entry, bytes });
      this.#savedBytes += bytes;
    }
  }

  /**
   * Loads the registry from `<dataDir>`, creating the directory if needed,
   * clearing temp files a crash left behind and cutting off a torn last
   * line of the log. A missing snapshot is an empty registry; a corrupt one
   * is an error and is left untouched.
   *
   * @param dataDir the data directory
   * @param options when to compact
   * @returns the open registry file
   * @throws {RegistryFileError} if a file cannot be read or does not hold a valid registry
   */
  static async open(dataDir: string, options: RegistryFileOptions = {}): Promise<RegistryFile> {
    try {
      await Deno.mkdir(dataDir, { recursive: true });
      const removed = await removeStaleTempFiles(dataDir, REGISTRY_FILE);
      if (removed > 0) {
        log.warn(
          "Removed {removed} unfinished registry write(s) left by a crash in {dataDir}",
          { removed, dataDir },
        );
      }
    } catch (error) {
      throw new RegistryFileError(`Cannot use data directory ${dataDir}: ${describe(error)}`);
    }
    const { registry, logBytes, tornBytes, snapshotBytes } = await read(dataDir);
    const path = join(dataDir, REGISTRY_LOG_FILE);
    let file: Deno.FsFile | undefined;
    if (logBytes + tornBytes > 0) {
      try {
        file = await Deno.open(path, { read: true, write: true });
        if (tornBytes > 0) {
          await file.truncate(logBytes);
          await file.sync();
          log.warn("Cut off {bytes} bytes of an unfinished write at the end of {path}", {
            bytes: tornBytes,
            path,
          });
        }
      } catch (error) {
        file?.close();
        throw new RegistryFileError(`Cannot open ${path}: ${describe(error)}`);
      }
    }
    return new RegistryFile(
      dataDir,
      registry,
      file,
      logBytes,
      snapshotBytes,
      options.compactBytes ?? DEFAULT_COMPACT_BYTES,
    );
  }

  /** @returns the bytes in the log now (0 when everything is in the snapshot) */
  get logBytes(): number {
    return this.#logBytes;
  }

  /**
   * Makes the registry durable: appends the names that changed since the
   * last save (found by entry identity, see `Registry.toJson()`), or
   * rewrites the snapshot when the registry is small or the log has grown
   * past it.
   *
   * @param json the whole registry, from `Registry.toJson()` of the registry loaded here
   * @returns once the change is durable
   * @throws {Error} if it could not be written; the files then still hold the previous state
   */
  async save(json: RegistryJson): Promise<void> {
    const puts: [string, Entry][] = [];
    let kept = 0;
    for (const name in json) {
      const entry = json[name];
      const saved = this.#saved.get(name);
      if (saved === undefined || saved.entry !== entry) puts.push([name, entry]);
      if (saved !== undefined) kept++;
    }
    const dels: string[] = [];
    if (kept < this.#saved.size) {
      for (const name of this.#saved.keys()) if (!Object.hasOwn(json, name)) dels.push(name);
    }
    if (puts.length === 0 && dels.length === 0) return;
    // Deletions first: a name may come back in another case.
    const lines = [
      ...dels.map((name) => JSON.stringify({ del: name })),
      ...puts.map(([name, entry]) => JSON.stringify({ put: name, ...entry })),
    ].join("\n") + "\n";
    let bytes = this.#savedBytes;
    for (const name of dels) bytes -= this.#saved.get(name)!.bytes;
    for (const [name, entry] of puts) {
      bytes += lineBytes(name, entry) - (this.#saved.get(name)?.bytes ?? 0);
    }
    if (this.#log === undefined && bytes <= this.#compactBytes) {
      await this.#writeSnapshot(json);
    } else {
      await this.#append(lines);
    }
    for (const name of dels) this.#saved.delete(name);
    for (const [name, entry] of puts) {
      this.#saved.set(name, { entry, bytes: lineBytes(name, entry) });
    }
    this.#savedBytes = bytes;
    if (
      this.#log !== undefined && this.#logBytes > Math.max(this.#snapshotBytes, this.#compactBytes)
    ) {
      // The change is durable already: a failed compaction is retried at the next save.
      await this.#compact(json).catch((error) =>
        log.error("Could not compact {path}: {error}", {
          path: join(this.#dataDir, REGISTRY_LOG_FILE),
          error: describe(error),
        })
      );
    }
  }

  /**
   * Writes everything into the snapshot, removes the log and closes it (a
   * clean shutdown leaves `registrations.json` whole, as before the log).
   */
  async close(): Promise<void> {
    if (this.#log !== undefined) {
      const json: RegistryJson = {};
      for (const [name, { entry }] of this.#saved) json[name] = entry;
      await this.#compact(json).catch((error) =>
        log.error("Could not compact {path} at shutdown: {error}", {
          path: join(this.#dataDir, REGISTRY_LOG_FILE),
          error: describe(error),
        })
      );
    }
    this.release();
  }

  /** Closes the log without writing anything. */
  release(): void {
    this.#log?.close();
    this.#log = undefined;
  }

  async #append(lines: string): Promise<void> {
    const path = join(this.#dataDir, REGISTRY_LOG_FILE);
    if (this.#log === undefined) {
      this.#log = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
      this.#logBytes = 0;
      this.#logDirty = true;
    }
    const file = this.#log;
    if (this.#logDirty) {
      await file.truncate(this.#logBytes);
      this.#logDirty = false;
    }
    const data = new TextEncoder().encode(lines);
    this.#logDirty = true;
    await file.seek(this.#logBytes, Deno.SeekMode.Start);
    let written = 0;
    while (written < data.length) written += await file.write(data.subarray(written));
    await file.sync();
    this.#logDirty = false;
    this.#logBytes += data.length;
  }

  async #compact(json: RegistryJson): Promise<void> {
    await this.#writeSnapshot(json);
    if (this.#log === undefined) return;
    // The snapshot holds everything the log does: the log can go.
    this.#log.close();
    this.#log = undefined;
    this.#logBytes = 0;
    await Deno.remove(join(this.#dataDir, REGISTRY_LOG_FILE));
  }

  async #writeSnapshot(json: RegistryJson): Promise<void> {
    const data = new TextEncoder().encode(JSON.stringify(json, null, 2) + "\n");
    await atomicWriteFile(join(this.#dataDir, REGISTRY_FILE), data, { mode: 0o600 });
    this.#snapshotBytes = data.length;
  }
}

/**
 * Reads the registry from `<dataDir>` (snapshot and log) without changing
 * any file, for tools and tests; safe while a server uses the directory (a
 * line it is still writing is left out). A missing directory is an empty
 * registry.
 *
 * @param dataDir the data directory
 * @returns the registry
 * @throws {RegistryFileError} if a file cannot be read or does not hold a valid registry
 *
 * @example
 * ```ts
 * const registry = await loadRegistry("./data");
 * ```
 */
export async function loadRegistry(dataDir: string): Promise<Registry> {
  return (await read(dataDir)).registry;
}

async function read(
  dataDir: string,
): Promise<{ registry: Registry; logBytes: number; tornBytes: number; snapshotBytes: number }> {
  const path = join(dataDir, REGISTRY_FILE);
  const text = await readText(path);
  let json: unknown = {};
  if (text !== undefined) {
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new RegistryFileError(
        `${path} is not valid JSON (${describe(error)}); fix it or move it away, it was left as is`,
      );
    }
  }
  const logPath = join(dataDir, REGISTRY_LOG_FILE);
  const logText = await readText(logPath) ?? "";
  let logBytes = 0;
  if (logText !== "" && typeof json === "object" && json !== null && !Array.isArray(json)) {
    const entries = new Map<string, unknown>(Object.entries(json));
    logBytes = replay(entries, logText, logPath);
    json = Object.fromEntries(entries);
  }
  try {
    return {
      registry: Registry.fromJson(json),
      logBytes,
      tornBytes: new TextEncoder().encode(logText).length - logBytes,
      snapshotBytes: new TextEncoder().encode(text ?? "").length,
    };
  } catch (error) {
    if (!(error instanceof RegistryFormatError)) throw error;
    const where = logBytes > 0 ? `${path} with ${REGISTRY_LOG_FILE}` : path;
    throw new RegistryFileError(
      `${where} is not a valid registry: ${error.message}; fix it or move it away, it was left as is`,
    );
  }
}

/**
 * Applies the log's lines to the entries, up to the first line that is not
 * a whole record (a write that never finished).
 *
 * @returns the bytes of the whole records
 */
function replay(entries: Map<string, unknown>, text: string, path: string): number {
  const encoder = new TextEncoder();
  let bytes = 0;
  let start = 0;
  for (let lineNo = 1;; lineNo++) {
    const end = text.indexOf("\n", start);
    if (end === -1) break;
    const line = text.slice(start, end);
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(line);
    } catch {
      break;
    }
    if (typeof record !== "object" || record === null || Array.isArray(record)) {
      throw new RegistryFileError(`${path} line ${lineNo} is not a change record`);
    }
    const { put, del, ...entry } = record;
    if (typeof put === "string" && del === undefined) entries.set(put, entry);
    else if (typeof del === "string" && put === undefined) entries.delete(del);
    else throw new RegistryFileError(`${path} line ${lineNo} is not a change record`);
    bytes += encoder.encode(line).length + 1;
    start = end + 1;
  }
  return bytes;
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    const dangling = error instanceof Deno.errors.NotFound &&
      (await Deno.lstat(path).then((s) => s.isSymlink, () => false));
    if (dangling) {
      // Starting empty would hide every registration, and the first save would replace the link.
      throw new RegistryFileError(
        `${path} is a symbolic link to a missing file; restore its target or remove the link`,
      );
    }
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new RegistryFileError(`Cannot read ${path}: ${describe(error)}`);
  }
}

/** About the bytes a name's entry takes in either file. */
function lineBytes(name: string, entry: Entry): number {
  return name.length + entry.ip.length + entry.registered_at.length +
    entry.public_key.length + entry.key_sha256.length + entry.registered_by.length + 120;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
