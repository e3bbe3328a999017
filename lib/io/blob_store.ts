/**
 * Stores the files that users share with the server, under
 * `<dataDir>/files/`:
 *
 * ```
 * files/
 *   <sha256 hex of the user's name key>/     one directory per user
 *     index.json                             { version, user, files: [FileInfo + blob] }
 *     <32 hex>.blob                          the content of one stored file
 *     .upload-<32 hex>.part                  an upload in progress
 *     .index.json.tmp-<16 hex>               an index write in progress
 *   <sha256 hex>.corrupt-<ms>/               a user directory set aside at open
 * ```
 *
 * No path on disk is ever built from a user's raw string: directory and file
 * names are hashes and random ids, so even a name that slipped past
 * validation cannot escape the directory. A replacement is written to a new
 * blob and the index switched over atomically before the old blob is
 * removed, so a crash at any instant leaves either the old or the new file,
 * with an index that matches it; {@link BlobStore.open} clears what a crash
 * left behind.
 *
 * The file is over 700 lines on purpose: the store, its upload and its
 * reader share one lock table and one crash-safety argument (what is on
 * disk at each instant), which is easier to check read in one place than
 * across files.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2";
import { join } from "@std/path";
import { type Clock, systemClock } from "../clock.ts";
import { toHex } from "../hex.ts";
import { printable } from "../printable.ts";
import { nameKey } from "../wire/client_name.ts";
import { fileNameKey, fileNameProblem } from "../wire/file_name.ts";
import { atomicWriteFile } from "./atomic_write.ts";

/** The folder inside the data directory that holds users' files. */
export const FILES_DIR = "files";
/** Each user's index file. */
export const INDEX_FILE = "index.json";
/** Default size of the chunks a download yields, in bytes. */
export const DEFAULT_READ_CHUNK = 60_000;

const INDEX_VERSION = 1;
const USER_DIR_PATTERN = /^[0-9a-f]{64}$/;
const BLOB_PATTERN = /^[0-9a-f]{32}\.blob$/;
const SHA256_PATTERN = /^[0-9a-f]{64}$/;
const UPLOAD_PREFIX = ".upload-";
const UPLOAD_SUFFIX = ".part";
const FILE_MODE = 0o600;

/** What a caller may expect to catch from a {@link BlobStore}. */
export type FileStoreErrorCode =
  | "invalid_name"
  | "not_found"
  | "size_mismatch"
  | "checksum_mismatch"
  | "aborted"
  | "io";

/**
 * A failed file store operation. Messages are one sentence that may be shown
 * to the user concerned: they name the file, never a path on the server.
 */
export class BlobStoreError extends Error {
  /** Why the operation failed. */
  readonly code: FileStoreErrorCode;

  /**
   * Creates the error.
   *
   * @param code why the operation failed
   * @param message one sentence for the user
   * @param options the underlying error, if any
   */
  constructor(code: FileStoreErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BlobStoreError";
    this.code = code;
  }
}

/** A stored file as users see it. */
export interface FileInfo {
  /** The file's name as it was uploaded. */
  readonly name: string;
  /** Its length in bytes. */
  readonly size: number;
  /** SHA-256 of its content, lowercase hex. */
  readonly sha256: string;
  /** When its upload was committed, ISO 8601 UTC. */
  readonly uploadedAt: string;
}

/** What an upload must be to be stored, and how it is dated. */
export interface UploadExpected {
  /** The size the sender announced. */
  size: number;
  /** The SHA-256 (hex) the sender announced. */
  sha256: string;
  /**
   * The earliest date the file may have, ms since the epoch: its owner's
   * registration, which another instance's clock may have dated.
   */
  notBefore?: number;
}

/** An upload in progress, from {@link BlobStore.beginUpload}. */
export interface Upload {
  /** The owner, as passed to `beginUpload`. */
  readonly user: string;
  /** The file name, as passed to `beginUpload`. */
  readonly name: string;
  /** Bytes written so far. */
  readonly size: number;
  /**
   * Appends bytes to the upload. Calls may overlap; chunks are written in
   * call order, and the chunk may be reused as soon as the call returns.
   *
   * @param chunk the next bytes of the file
   * @throws {BlobStoreError} `aborted` after `abort()` or a failed commit, `io` if the disk fails
   */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Checks the upload against what the sender announced and, if it matches,
   * makes it durable and replaces any file of the same name. On any failure
   * the upload's temp file is removed.
   *
   * @param expected the size and SHA-256 (hex) the sender announced, and the earliest date
   * @returns the stored file
   * @throws {BlobStoreError} `size_mismatch`, `checksum_mismatch`, `aborted` or `io`
   */
  commit(expected: UploadExpected): Promise<FileInfo>;
  /** Discards the upload; safe to call at any time, any number of times. */
  abort(): Promise<void>;
}

/** A stored file opened for download, from {@link BlobStore.openRead}. */
export interface FileDownload extends AsyncIterable<Uint8Array> {
  /** The file being read. */
  readonly info: FileInfo;
  /** Closes the file; iterating to the end or breaking out closes it too. */
  close(): void;
}

/** Options for {@link BlobStore.open}. */
export interface FileStoreOptions {
  /** Where upload times come from; the system clock by default. */
  clock?: Clock;
}

/** Options for {@link BlobStore.openRead}. */
export interface ReadOptions {
  /** Largest chunk to yield, in bytes; {@link DEFAULT_READ_CHUNK} by default. */
  chunkSize?: number;
}

interface Entry extends FileInfo {
  /** The content's file name in the user's directory. */
  readonly blob: string;
}

interface UserFiles {
  /** The user's name as first stored. */
  readonly user: string;
  readonly dir: string;
  /** By file name key. */
  files: Map<string, Entry>;
}

interface IndexJson {
  version: number;
  user: string;
  files: Entry[];
}

/**
 * Per-user file storage on disk: upload, list, download, delete. Quotas are
 * the caller's business; {@link BlobStore.usage} tells it what is stored.
 *
 * @example
 * ```ts
 * const store = await BlobStore.open("./data");
 * const upload = await store.beginUpload("alice", "notes.txt");
 * await upload.write(new TextEncoder().encode("hello"));
 * await upload.commit({ size: 5, sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" });
 * store.list("alice"); // [{ name: "notes.txt", size: 5, ... }]
 * ```
 */
export class BlobStore {
  /** What {@link BlobStore.open} cleaned up or set aside, one line each, for the log. */
  readonly cleanup: readonly string[];
  readonly #root: string;
  readonly #clock: Clock;
  readonly #users = new Map<string, UserFiles>();
  readonly #locks = new Map<string, Promise<void>>();
  readonly #uploads = new Map<string, Set<UploadImpl>>();
  /**
   * The user directories that may exist: found at open or made for an
   * upload since. Deregistering a user who never stored a file (most) then
   * costs no file system call.
   */
  readonly #dirs = new Set<string>();
  #closed = false;

  private constructor(root: string, clock: Clock, cleanup: string[]) {
    this.#root = root;
    this.#clock = clock;
    this.cleanup = cleanup;
  }

  /**
   * Opens the store in `<dataDir>/files`, creating it if needed, loading
   * every user's index and clearing what a crash left behind: unfinished
   * uploads and index writes, index entries whose content is missing or has
   * the wrong size, and content no index refers to. A user directory whose
   * index cannot be read is renamed aside (`<dir>.corrupt-<ms>`), not deleted.
   *
   * @param dataDir the data directory
   * @param options the clock for upload times
   * @returns the store; its `cleanup` lists what was cleared
   * @throws {BlobStoreError} `io` if the directory cannot be created or read
   *
   * @example
   * ```ts
   * const store = await BlobStore.open("./data");
   * for (const line of store.cleanup) console.warn(line);
   * ```
   */
  static async open(dataDir: string, options: FileStoreOptions = {}): Promise<BlobStore> {
    const root = join(dataDir, FILES_DIR);
    const cleanup: string[] = [];
    const store = new BlobStore(root, options.clock ?? systemClock, cleanup);
    try {
      await Deno.mkdir(root, { recursive: true });
      const dirs: string[] = [];
      for await (const entry of Deno.readDir(root)) {
        if (entry.isDirectory && USER_DIR_PATTERN.test(entry.name)) dirs.push(entry.name);
      }
      for (const dir of dirs) store.#dirs.add(dir);
      for (const dir of dirs.sort()) await store.#load(dir, cleanup);
    } catch (error) {
      const cause = error instanceof BlobStoreError && error.cause ? error.cause : error;
      throw new BlobStoreError("io", `Cannot open the file store in ${root}: ${describe(cause)}`, {
        cause,
      });
    }
    return store;
  }

  /**
   * Lists a user's files.
   *
   * @param user the owner's name
   * @returns the files, sorted by name (case-insensitively)
   */
  list(user: string): FileInfo[] {
    const files = this.#users.get(nameKey(user))?.files;
    if (!files) return [];
    return [...files.entries()]
      .sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
      .map(([, entry]) => info(entry));
  }

  /**
   * Looks up one file.
   *
   * @param user the owner's name
   * @param name the file name, in any case
   * @returns the file, or undefined if the user has none of that name
   */
  get(user: string, name: string): FileInfo | undefined {
    const entry = this.#entry(user, name);
    return entry && info(entry);
  }

  /**
   * Counts the bytes a user stores (uploads in progress excluded).
   *
   * @param user the owner's name
   * @returns the total size of the user's files
   */
  usage(user: string): number {
    let total = 0;
    for (const entry of this.#users.get(nameKey(user))?.files.values() ?? []) total += entry.size;
    return total;
  }

  /**
   * Counts what every user stores.
   *
   * @returns for each user with files, by name as first stored: file count and bytes
   */
  allUsage(): Map<string, { files: number; bytes: number }> {
    const out = new Map<string, { files: number; bytes: number }>();
    for (const { user, files } of this.#users.values()) {
      if (files.size === 0) continue;
      let bytes = 0;
      for (const entry of files.values()) bytes += entry.size;
      out.set(user, { files: files.size, bytes });
    }
    return out;
  }

  /**
   * Counts the bytes written so far to a user's uploads in progress, so a
   * quota can count them before they are committed.
   *
   * @param user the owner's name
   * @returns the bytes held by the user's open uploads
   */
  pendingUsage(user: string): number {
    let total = 0;
    for (const upload of this.#uploads.get(nameKey(user)) ?? []) total += upload.size;
    return total;
  }

  /**
   * Starts an upload into a temp file of its own; several uploads of the same
   * name may run at once, and the last to commit wins.
   *
   * @param user the owner's name
   * @param name the file name (see `fileNameProblem`)
   * @returns the upload, to write to and then commit or abort
   * @throws {BlobStoreError} `invalid_name` for a bad name, `io` if the disk fails
   * @throws {TypeError} after {@link BlobStore.close}
   */
  async beginUpload(user: string, name: string): Promise<Upload> {
    if (this.#closed) throw new TypeError("The file store is closed");
    const problem = fileNameProblem(name);
    if (problem !== undefined) throw new BlobStoreError("invalid_name", problem);
    const key = nameKey(user);
    const dirName = userDirName(key);
    const dir = join(this.#root, dirName);
    return await this.#withLock(key, async () => {
      const id = randomHex(16);
      const temp = join(dir, `${UPLOAD_PREFIX}${id}${UPLOAD_SUFFIX}`);
      let file: Deno.FsFile;
      try {
        this.#dirs.add(dirName);
        await Deno.mkdir(dir, { recursive: true });
        file = await Deno.open(temp, { write: true, createNew: true, mode: FILE_MODE });
      } catch (error) {
        throw ioError(`Cannot store file ${quote(name)}`, error);
      }
      const upload = new UploadImpl({
        user,
        name,
        file,
        temp,
        blob: `${id}.blob`,
        commit: (u, digest, notBefore) => this.#commit(u, digest, notBefore),
        forget: (u) => this.#uploads.get(key)?.delete(u),
      });
      let uploads = this.#uploads.get(key);
      if (!uploads) this.#uploads.set(key, uploads = new Set());
      uploads.add(upload);
      return upload;
    });
  }

  /**
   * Opens a stored file for download. The content read is the one stored
   * when this call returns, even if the file is replaced or deleted meanwhile.
   *
   * @param user the owner's name
   * @param name the file name, in any case
   * @param options the largest chunk to yield
   * @returns the open file: iterate it for chunks, or close it
   * @throws {BlobStoreError} `not_found` if there is no such file, `io` if it cannot be opened
   *
   * @example
   * ```ts
   * const download = await store.openRead("alice", "notes.txt");
   * for await (const chunk of download) send(chunk);
   * ```
   */
  async openRead(user: string, name: string, options: ReadOptions = {}): Promise<FileDownload> {
    const chunkSize = options.chunkSize ?? DEFAULT_READ_CHUNK;
    if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) {
      throw new RangeError(`Cannot read in chunks of ${chunkSize} bytes`);
    }
    const key = nameKey(user);
    // Under the lock, so that a concurrent replace cannot remove the blob
    // between looking it up and opening it.
    return await this.#withLock(key, async () => {
      const entry = this.#entry(user, name);
      if (!entry) throw notFound(name);
      let file: Deno.FsFile;
      try {
        file = await Deno.open(join(this.#root, userDirName(key), entry.blob), { read: true });
      } catch (error) {
        throw ioError(`Cannot read file ${quote(entry.name)}`, error);
      }
      return new Download(info(entry), file, chunkSize);
    });
  }

  /**
   * Reads a whole stored file into memory; for small files and tests.
   *
   * @param user the owner's name
   * @param name the file name, in any case
   * @returns the content
   * @throws {BlobStoreError} `not_found` or `io`
   */
  async readAll(user: string, name: string): Promise<Uint8Array> {
    const download = await this.openRead(user, name);
    const out = new Uint8Array(download.info.size);
    let offset = 0;
    for await (const chunk of download) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }

  /**
   * Deletes one file.
   *
   * @param user the owner's name
   * @param name the file name, in any case
   * @returns true if it was deleted, false if there was no such file
   * @throws {BlobStoreError} `io` if the index cannot be written
   */
  async delete(user: string, name: string): Promise<boolean> {
    const key = nameKey(user);
    return await this.#withLock(key, async () => {
      const files = this.#users.get(key);
      const fileKey = fileNameKey(name);
      const entry = files?.files.get(fileKey);
      if (!files || !entry) return false;
      const next = new Map(files.files);
      next.delete(fileKey);
      await this.#writeIndex(files, next, `Cannot delete file ${quote(entry.name)}`);
      files.files = next;
      await removeQuietly(join(files.dir, entry.blob));
      return true;
    });
  }

  /**
   * Deletes all of a user's files and aborts the user's uploads in progress,
   * as when the user's identity is deregistered.
   *
   * @param user the owner's name
   * @returns how many stored files were deleted
   * @throws {BlobStoreError} `io` if the directory cannot be removed
   */
  async deleteUser(user: string): Promise<number> {
    const key = nameKey(user);
    return await this.#withLock(key, async () => {
      // Uploads already committing wait for this lock and then find themselves forgotten.
      for (const upload of this.#uploads.get(key) ?? []) if (upload.isOpen) await upload.abort();
      this.#uploads.delete(key);
      const count = this.#users.get(key)?.files.size ?? 0;
      const dirName = userDirName(key);
      if (this.#dirs.has(dirName)) {
        try {
          await Deno.remove(join(this.#root, dirName), { recursive: true });
        } catch (error) {
          if (!(error instanceof Deno.errors.NotFound)) {
            throw ioError(`Cannot delete the files of ${quote(user)}`, error);
          }
        }
        this.#dirs.delete(dirName);
      }
      this.#users.delete(key);
      return count;
    });
  }

  /**
   * Waits for the operations in progress to finish, then aborts every open
   * upload; later uploads are refused. Reads and lists still work.
   *
   * @returns once nothing is in flight
   */
  async close(): Promise<void> {
    this.#closed = true;
    while (this.#locks.size > 0) await Promise.all(this.#locks.values());
    for (const uploads of [...this.#uploads.values()]) {
      for (const upload of [...uploads]) await upload.abort();
    }
  }

  #entry(user: string, name: string): Entry | undefined {
    return this.#users.get(nameKey(user))?.files.get(fileNameKey(name));
  }

  /** Called by an upload whose content has been verified, synced and closed. */
  async #commit(upload: UploadImpl, digest: string, notBefore: number): Promise<FileInfo> {
    const key = nameKey(upload.user);
    const dir = join(this.#root, userDirName(key));
    return await this.#withLock(key, async () => {
      if (!this.#uploads.get(key)?.has(upload)) {
        throw new BlobStoreError(
          "aborted",
          `The upload of ${quote(upload.name)} was cancelled: the user's files were deleted`,
        );
      }
      const blobPath = join(dir, upload.blob);
      try {
        await Deno.rename(upload.temp, blobPath);
        await syncDirectory(dir);
      } catch (error) {
        await removeQuietly(upload.temp);
        await removeQuietly(blobPath);
        throw ioError(`Cannot store file ${quote(upload.name)}`, error);
      }
      const files = this.#users.get(key) ?? { user: upload.user, dir, files: new Map() };
      const fileKey = fileNameKey(upload.name);
      const old = files.files.get(fileKey);
      const entry: Entry = {
        name: upload.name,
        size: upload.size,
        sha256: digest,
        uploadedAt: new Date(Math.max(this.#clock.now(), notBefore)).toISOString(),
        blob: upload.blob,
      };
      const next = new Map(files.files);
      next.set(fileKey, entry);
      try {
        await this.#writeIndex(files, next, `Cannot store file ${quote(upload.name)}`);
      } catch (error) {
        await removeQuietly(blobPath);
        throw error;
      }
      files.files = next;
      this.#users.set(key, files);
      if (old) await removeQuietly(join(dir, old.blob));
      return info(entry);
    });
  }

  async #writeIndex(files: UserFiles, next: Map<string, Entry>, failure: string): Promise<void> {
    const json: IndexJson = {
      version: INDEX_VERSION,
      user: files.user,
      files: [...next.values()].map((e) => ({ ...e })),
    };
    try {
      await atomicWriteFile(join(files.dir, INDEX_FILE), JSON.stringify(json, null, 2) + "\n", {
        mode: FILE_MODE,
      });
    } catch (error) {
      throw ioError(failure, error);
    }
  }

  /** Loads one user directory at open, cleaning it; appends what it did to `cleanup`. */
  async #load(dirName: string, cleanup: string[]): Promise<void> {
    const dir = join(this.#root, dirName);
    const names: string[] = [];
    const subdirs: string[] = [];
    for await (const entry of Deno.readDir(dir)) {
      (entry.isDirectory ? subdirs : names).push(entry.name);
    }
    let index: IndexJson | undefined;
    if (names.includes(INDEX_FILE)) {
      const problem = await readIndex(join(dir, INDEX_FILE), dirName).then(
        (json) => {
          index = json;
          return undefined;
        },
        (error: unknown) => describe(error),
      );
      if (problem !== undefined) {
        const aside = `${dirName}.corrupt-${this.#clock.now().toFixed(0)}`;
        await Deno.rename(dir, join(this.#root, aside));
        cleanup.push(`Set aside user directory ${dirName} as ${aside}: ${problem}`);
        return;
      }
    }
    const owner = index ? ` of ${quote(index.user)}` : ` in ${dirName}`;
    const referenced = new Set(index?.files.map((e) => e.blob));
    for (const name of names.sort()) {
      if (name === INDEX_FILE || referenced.has(name)) continue;
      await Deno.remove(join(dir, name));
      cleanup.push(`Removed ${describeLeftover(name)} ${name}${owner}`);
    }
    for (const name of subdirs) cleanup.push(`Left unexpected directory ${name}${owner} as is`);
    if (!index) {
      if (subdirs.length === 0) await Deno.remove(dir);
      return;
    }
    const files = new Map<string, Entry>();
    for (const entry of index.files) {
      let size: number | undefined;
      try {
        size = (await Deno.stat(join(dir, entry.blob))).size;
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
      if (size === entry.size) {
        files.set(fileNameKey(entry.name), entry);
        continue;
      }
      if (size !== undefined) await Deno.remove(join(dir, entry.blob));
      cleanup.push(
        `Dropped file ${quote(entry.name)}${owner} from the index: its content ${
          size === undefined ? "is missing" : `has ${size} bytes, not ${entry.size}`
        }`,
      );
    }
    const user: UserFiles = { user: index.user, dir, files };
    if (files.size !== index.files.length) await this.#writeIndex(user, files, "Cannot fix index");
    this.#users.set(nameKey(index.user), user);
  }

  async #withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const done = new Promise<void>((resolve) => release = resolve);
    const tail = previous.then(() => done);
    this.#locks.set(key, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.#locks.get(key) === tail) this.#locks.delete(key);
    }
  }
}

interface UploadParts {
  user: string;
  name: string;
  file: Deno.FsFile;
  temp: string;
  blob: string;
  commit: (upload: UploadImpl, digest: string, notBefore: number) => Promise<FileInfo>;
  forget: (upload: UploadImpl) => void;
}

class UploadImpl implements Upload {
  readonly user: string;
  readonly name: string;
  readonly temp: string;
  readonly blob: string;
  #file: Deno.FsFile | undefined;
  #hash = sha256.create();
  #size = 0;
  #state: "open" | "committing" | "done" | "aborted" = "open";
  #writes: Promise<void> = Promise.resolve();
  #writeError: unknown;
  #committing: Promise<void> = Promise.resolve();
  #aborting: Promise<void> = Promise.resolve();
  #commit: UploadParts["commit"];
  #forget: UploadParts["forget"];

  constructor(parts: UploadParts) {
    this.user = parts.user;
    this.name = parts.name;
    this.temp = parts.temp;
    this.blob = parts.blob;
    this.#file = parts.file;
    this.#commit = parts.commit;
    this.#forget = parts.forget;
  }

  get size(): number {
    return this.#size;
  }

  write(chunk: Uint8Array): Promise<void> {
    if (this.#state !== "open") return Promise.reject(this.#notOpen());
    const data = chunk.slice();
    this.#hash.update(data);
    this.#size += data.length;
    const write = this.#writes.then(async () => {
      if (this.#writeError !== undefined) throw this.#writeError;
      if (!this.#file) throw this.#notOpen();
      try {
        let written = 0;
        while (written < data.length) written += await this.#file.write(data.subarray(written));
      } catch (error) {
        this.#writeError = ioError(`Cannot store file ${quote(this.name)}`, error);
        throw this.#writeError;
      }
    });
    this.#writes = write.catch(() => {});
    return write;
  }

  /** True until commit or abort starts. */
  get isOpen(): boolean {
    return this.#state === "open";
  }

  commit(expected: UploadExpected): Promise<FileInfo> {
    if (this.#state !== "open") return Promise.reject(this.#notOpen());
    this.#state = "committing";
    const committing = this.#finish(expected);
    this.#committing = committing.then(() => {}, () => {});
    return committing;
  }

  async #finish(expected: UploadExpected): Promise<FileInfo> {
    try {
      await this.#writes;
      if (this.#writeError !== undefined) throw this.#writeError;
      if (expected.size !== this.#size) {
        throw new BlobStoreError(
          "size_mismatch",
          `File ${
            quote(this.name)
          } arrived with ${this.#size} bytes, not the ${expected.size} announced`,
        );
      }
      const digest = toHex(this.#hash.digest());
      if (String(expected.sha256).toLowerCase() !== digest) {
        throw new BlobStoreError(
          "checksum_mismatch",
          `File ${quote(this.name)} does not match its announced SHA-256 checksum`,
        );
      }
      try {
        await this.#file!.sync();
      } catch (error) {
        throw ioError(`Cannot store file ${quote(this.name)}`, error);
      }
      this.#closeFile();
      const stored = await this.#commit(this, digest, expected.notBefore ?? 0);
      this.#state = "done";
      this.#forget(this);
      return stored;
    } catch (error) {
      await this.#discard();
      throw error;
    }
  }

  abort(): Promise<void> {
    if (this.#state === "committing") return this.#committing;
    if (this.#state === "open") {
      this.#state = "aborted";
      this.#aborting = this.#writes.then(() => this.#discard());
    }
    return this.#aborting;
  }

  async #discard(): Promise<void> {
    this.#state = "aborted";
    this.#closeFile();
    this.#forget(this);
    await removeQuietly(this.temp);
  }

  #closeFile(): void {
    try {
      this.#file?.close();
    } catch {
      // Already closed.
    }
    this.#file = undefined;
  }

  #notOpen(): BlobStoreError {
    return new BlobStoreError(
      "aborted",
      `The upload of ${quote(this.name)} is ${
        this.#state === "done" ? "already committed" : "no longer open"
      }`,
    );
  }
}

class Download implements FileDownload {
  readonly info: FileInfo;
  #file: Deno.FsFile | undefined;
  #chunkSize: number;
  #iterated = false;

  constructor(info: FileInfo, file: Deno.FsFile, chunkSize: number) {
    this.info = info;
    this.#file = file;
    this.#chunkSize = chunkSize;
  }

  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    if (this.#iterated) throw new TypeError("A download can be iterated only once");
    this.#iterated = true;
    try {
      let left = this.info.size;
      while (left > 0) {
        const file = this.#file;
        if (!file) return;
        const buffer = new Uint8Array(Math.min(this.#chunkSize, left));
        let filled = 0;
        while (filled < buffer.length) {
          let n: number | null;
          try {
            n = await file.read(buffer.subarray(filled));
          } catch (error) {
            throw ioError(`Cannot read file ${quote(this.info.name)}`, error);
          }
          if (n === null) {
            throw new BlobStoreError(
              "io",
              `Cannot read file ${
                quote(this.info.name)
              }: it is shorter than its ${this.info.size} bytes`,
            );
          }
          filled += n;
        }
        left -= buffer.length;
        yield buffer;
      }
    } finally {
      this.close();
    }
  }
}

/** Reads and validates an index; rejects with a reason if it cannot be used. */
async function readIndex(path: string, dirName: string): Promise<IndexJson> {
  const json: unknown = JSON.parse(await Deno.readTextFile(path));
  const fail = (why: string): never => {
    throw new Error(`${INDEX_FILE} ${why}`);
  };
  if (!isRecord(json)) return fail("is not an object");
  if (json.version !== INDEX_VERSION) return fail(`has unknown version ${json.version}`);
  if (typeof json.user !== "string") return fail("has no user");
  if (userDirName(nameKey(json.user)) !== dirName) return fail("belongs to another directory");
  if (!Array.isArray(json.files)) return fail("has no file list");
  const keys = new Set<string>();
  const blobs = new Set<string>();
  const files: Entry[] = [];
  for (const e of json.files) {
    if (
      !isRecord(e) || typeof e.name !== "string" || fileNameProblem(e.name) !== undefined ||
      typeof e.size !== "number" || !Number.isSafeInteger(e.size) || e.size < 0 ||
      typeof e.sha256 !== "string" || !SHA256_PATTERN.test(e.sha256) ||
      typeof e.uploadedAt !== "string" || Number.isNaN(Date.parse(e.uploadedAt)) ||
      typeof e.blob !== "string" || !BLOB_PATTERN.test(e.blob)
    ) {
      return fail(`has an invalid entry: ${printable(JSON.stringify(e)).slice(0, 200)}`);
    }
    const key = fileNameKey(e.name);
    if (keys.has(key) || blobs.has(e.blob)) return fail(`lists ${quote(e.name)} twice`);
    keys.add(key);
    blobs.add(e.blob);
    files.push({
      name: e.name,
      size: e.size,
      sha256: e.sha256,
      uploadedAt: e.uploadedAt,
      blob: e.blob,
    });
  }
  return { version: INDEX_VERSION, user: json.user, files };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The directory name of a user: hex SHA-256 of the name key, safe whatever the name. */
function userDirName(key: string): string {
  return toHex(sha256(new TextEncoder().encode(key)));
}

function info(entry: Entry): FileInfo {
  return { name: entry.name, size: entry.size, sha256: entry.sha256, uploadedAt: entry.uploadedAt };
}

function describeLeftover(name: string): string {
  if (name.startsWith(UPLOAD_PREFIX)) return "unfinished upload";
  if (name.startsWith(`.${INDEX_FILE}.tmp-`)) return "unfinished index write";
  if (BLOB_PATTERN.test(name)) return "unlisted content";
  return "unexpected file";
}

function quote(text: string): string {
  return `"${printable(text)}"`;
}

function notFound(name: string): BlobStoreError {
  return new BlobStoreError("not_found", `File ${quote(name)} was not found`);
}

/** Wraps an OS error without its message, which would show paths on the server. */
function ioError(what: string, cause: unknown): BlobStoreError {
  if (cause instanceof BlobStoreError) return cause;
  const kind = isNoSpace(cause)
    ? "the server's disk is full"
    : "a storage error occurred on the server";
  return new BlobStoreError("io", `${what}: ${kind}`, { cause });
}

function isNoSpace(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT";
}

async function removeQuietly(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch {
    // Gone already, or held open on Windows: the next open() removes it.
  }
}

function randomHex(bytes: number): string {
  return toHex(crypto.getRandomValues(new Uint8Array(bytes)));
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Makes renames in `dir` durable; platforms that cannot fsync a directory are skipped. */
async function syncDirectory(dir: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  let handle: Deno.FsFile | undefined;
  try {
    handle = await Deno.open(dir, { read: true });
    await handle.sync();
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code;
    const unsupported = error instanceof Deno.errors.NotSupported ||
      error instanceof Deno.errors.IsADirectory || code === "EINVAL" || code === "EISDIR" ||
      code === "ENOTSUP";
    if (!unsupported) throw error;
  } finally {
    handle?.close();
  }
}
