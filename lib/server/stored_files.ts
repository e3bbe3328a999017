/**
 * What each user has stored on the server, and the limits on it: the index
 * the server core checks uploads against. Pure data; the bytes live in the
 * driver's file store.
 *
 * @module
 */
import { nameKey } from "../wire/client_name.ts";
import { fileNameKey } from "../wire/file_name.ts";

/** One stored file. */
export interface StoredFile {
  /** The name the user gave it. */
  readonly name: string;
  /** Size in bytes. */
  readonly size: number;
  /** SHA-256 of the content, lowercase hex. */
  readonly sha256: string;
  /** When it was stored, ISO 8601. */
  readonly uploadedAt: string;
}

/**
 * Tells whether a file stored under a name belongs to the identity that
 * holds the name now: one registered before the file was stored. A name
 * deregistered and registered again by someone else is a new identity, and
 * the files of the earlier one are not theirs (on several instances, an
 * instance that was down while the name changed hands still holds them).
 *
 * @param registeredAt when the name's identity was registered (ISO 8601), or
 *   undefined if the name is not registered
 * @param file the file
 * @returns true if the file is the identity's
 *
 * @example
 * ```ts
 * const file = { name: "a.csv", size: 1, sha256: "…", uploadedAt: "2026-01-02T00:00:00.000Z" };
 * fileOfIdentity("2026-01-01T00:00:00.000Z", file); // true
 * fileOfIdentity("2026-01-03T00:00:00.000Z", file); // false: stored before this identity
 * ```
 */
export function fileOfIdentity(registeredAt: string | undefined, file: StoredFile): boolean {
  if (registeredAt === undefined) return false;
  return !(Date.parse(file.uploadedAt) < Date.parse(registeredAt));
}

/** Limits on what one user, and everyone together, stores. */
export interface StorageLimits {
  /** Largest file, bytes. */
  readonly maxFileSize: number;
  /** Most bytes per user. */
  readonly quota: number;
  /** Most files per user. */
  readonly maxFiles: number;
  /** Most bytes stored by everyone together; absent for no cap. */
  readonly maxStorage?: number;
}

/** Default limits: 100 MiB a file, 1 GiB and 100 files a user. */
export const DEFAULT_STORAGE_LIMITS: StorageLimits = {
  maxFileSize: 100 * 1024 * 1024,
  quota: 1024 * 1024 * 1024,
  maxFiles: 100,
};

/**
 * The per-user file index with quota accounting; uploads in progress
 * reserve their size so that two at once cannot overrun the quota.
 *
 * @example
 * ```ts
 * const files = new StoredFiles(DEFAULT_STORAGE_LIMITS);
 * files.uploadProblem("Alice", "data.csv", 1000); // undefined: it fits
 * files.add("Alice", { name: "data.csv", size: 1000, sha256: "…", uploadedAt: "…" });
 * ```
 */
export class StoredFiles {
  readonly limits: StorageLimits;
  #byUser = new Map<string, Map<string, StoredFile>>();
  #reserved = new Map<string, number>();
  #reservedFiles = new Map<string, number>();
  /** Bytes stored by everyone, and reserved by uploads in progress. */
  #total = 0;
  #totalReserved = 0;

  /** @param limits the limits to enforce */
  constructor(limits: StorageLimits) {
    this.limits = limits;
  }

  /**
   * Lists a user's files in name order.
   *
   * @param user the user's name
   * @returns the files
   */
  list(user: string): StoredFile[] {
    const files = [...(this.#byUser.get(nameKey(user))?.values() ?? [])];
    return files.sort((a, b) => fileNameKey(a.name) < fileNameKey(b.name) ? -1 : 1);
  }

  /**
   * Finds one file.
   *
   * @param user the user's name
   * @param name the file's name, any case
   * @returns the file, or undefined
   */
  get(user: string, name: string): StoredFile | undefined {
    return this.#byUser.get(nameKey(user))?.get(fileNameKey(name));
  }

  /** @returns the bytes everyone stores together (uploads in progress not included) */
  get totalUsage(): number {
    return this.#total;
  }

  /**
   * Bytes a user stores.
   *
   * @param user the user's name
   * @returns the sum of the sizes
   */
  usage(user: string): number {
    let sum = 0;
    for (const f of this.#byUser.get(nameKey(user))?.values() ?? []) sum += f.size;
    return sum;
  }

  /**
   * Tells why an upload may not start, or nothing when it may.
   *
   * @param user the user's name
   * @param name the file's name (already checked)
   * @param size its size, bytes
   * @returns one sentence, or undefined
   */
  uploadProblem(user: string, name: string, size: number): string | undefined {
    if (size > this.limits.maxFileSize) {
      return `"${name}" is ${size} bytes; the largest file allowed is ${this.limits.maxFileSize}`;
    }
    const existing = this.get(user, name);
    const files = this.list(user).length + (this.#reservedFiles.get(nameKey(user)) ?? 0);
    if (existing === undefined && files >= this.limits.maxFiles) {
      return `You already store ${this.limits.maxFiles} files, the most allowed; delete one first`;
    }
    const after = this.usage(user) - (existing?.size ?? 0) +
      (this.#reserved.get(nameKey(user)) ?? 0) + size;
    if (after > this.limits.quota) {
      return `Storing "${name}" (${size} bytes) would bring you to ${after} bytes; ` +
        `your quota is ${this.limits.quota}`;
    }
    const max = this.limits.maxStorage;
    if (
      max !== undefined && this.#total - (existing?.size ?? 0) + this.#totalReserved + size > max
    ) {
      return `The server's storage is full: it holds ${this.#total} of its ${max} bytes ` +
        `for everyone, too little room for "${name}" (${size} bytes); try again once files ` +
        "are deleted";
    }
    return undefined;
  }

  /**
   * Reserves room for an upload in progress (or frees it, with negative numbers).
   *
   * @param user the user's name
   * @param size bytes to reserve
   * @param files file slots to reserve (1 for an upload, -1 to free it)
   */
  reserve(user: string, size: number, files = 0): void {
    const key = nameKey(user);
    adjust(this.#reserved, key, size);
    adjust(this.#reservedFiles, key, files);
    this.#totalReserved += size;
  }

  /**
   * Records a stored file, replacing one of the same name.
   *
   * @param user the user's name
   * @param file the file
   */
  add(user: string, file: StoredFile): void {
    const key = nameKey(user);
    let files = this.#byUser.get(key);
    if (files === undefined) this.#byUser.set(key, files = new Map());
    this.#total += file.size - (files.get(fileNameKey(file.name))?.size ?? 0);
    files.set(fileNameKey(file.name), file);
  }

  /**
   * Forgets a file.
   *
   * @param user the user's name
   * @param name the file's name
   * @returns the file forgotten, or undefined
   */
  remove(user: string, name: string): StoredFile | undefined {
    const files = this.#byUser.get(nameKey(user));
    const file = files?.get(fileNameKey(name));
    files?.delete(fileNameKey(name));
    this.#total -= file?.size ?? 0;
    return file;
  }

  /** @returns the name keys of the users with files */
  users(): string[] {
    return [...this.#byUser.keys()];
  }

  /**
   * Forgets all of a user's files.
   *
   * @param user the user's name
   */
  removeUser(user: string): void {
    for (const file of this.#byUser.get(nameKey(user))?.values() ?? []) this.#total -= file.size;
    this.#byUser.delete(nameKey(user));
  }
}

function adjust(map: Map<string, number>, key: string, delta: number): void {
  const total = (map.get(key) ?? 0) + delta;
  if (total <= 0) map.delete(key);
  else map.set(key, total);
}
