/**
 * The simulator's stand-in for `lib/io/blob_store.ts`: each user's stored
 * files in memory, with uploads assembled chunk by chunk and checked against
 * their declared size and SHA-256 on commit. It plays the server's disk, so
 * it outlives a simulated crash; uploads in progress do not.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2";
import { toHex } from "../hex.ts";
import type { StoredFile } from "../server/stored_files.ts";
import type { UploadResult } from "../server/server_storage.ts";
import { nameKey } from "../wire/client_name.ts";
import { fileNameKey } from "../wire/file_name.ts";

interface Stored {
  user: string;
  file: StoredFile;
  data: Uint8Array;
}

interface Pending {
  user: string;
  name: string;
  chunks: Uint8Array[];
}

/**
 * Stored files by user, in memory.
 *
 * @example
 * ```ts
 * const store = new MemoryBlobStore();
 * store.beginUpload(1, "Alice", "a.txt");
 * store.write(1, new TextEncoder().encode("hi"));
 * store.commit(1, { size: 2, sha256: "8f43…" }, now); // { ok: true, file }
 * store.read("Alice", "a.txt"); // the bytes
 * ```
 */
export class MemoryBlobStore {
  #files = new Map<string, Stored>();
  #uploads = new Map<number, Pending>();
  /** While true, every commit and delete fails as a broken disk would. */
  failing = false;

  /**
   * Lists every user's files, for a server starting on this disk.
   *
   * @returns user name and files
   */
  stored(): [string, StoredFile[]][] {
    const byUser = new Map<string, [string, StoredFile[]]>();
    for (const { user, file } of this.#files.values()) {
      const key = nameKey(user);
      if (!byUser.has(key)) byUser.set(key, [user, []]);
      byUser.get(key)![1].push(file);
    }
    return [...byUser.values()];
  }

  /**
   * Starts an upload.
   *
   * @param id the core's id of the upload
   * @param user the user's name
   * @param name the file's name
   */
  beginUpload(id: number, user: string, name: string): void {
    this.#uploads.set(id, { user, name, chunks: [] });
  }

  /**
   * Appends a chunk to an upload in progress (ignored for an unknown id).
   *
   * @param id the upload's id
   * @param data the chunk
   */
  write(id: number, data: Uint8Array): void {
    this.#uploads.get(id)?.chunks.push(data.slice());
  }

  /**
   * Ends an upload: checks size and hash, then stores the file, replacing
   * one of the same name.
   *
   * @param id the upload's id
   * @param expected the declared size and SHA-256 (hex)
   * @param now current time, ms, for the file's date
   * @returns the stored file, or why not
   */
  commit(id: number, expected: { size: number; sha256: string }, now: number): UploadResult {
    const upload = this.#uploads.get(id);
    this.#uploads.delete(id);
    if (upload === undefined || this.failing) {
      return { ok: false, code: "io", reason: "The server could not store the file" };
    }
    const data = concat(upload.chunks);
    const digest = toHex(sha256(data));
    if (data.length !== expected.size || digest !== expected.sha256) {
      return {
        ok: false,
        code: "checksum_mismatch",
        reason: "The upload's SHA-256 does not match the data received; nothing was stored",
      };
    }
    const file: StoredFile = {
      name: upload.name,
      size: data.length,
      sha256: digest,
      uploadedAt: new Date(now).toISOString(),
    };
    this.#files.set(key(upload.user, upload.name), { user: upload.user, file, data });
    return { ok: true, file };
  }

  /**
   * Drops an upload in progress.
   *
   * @param id the upload's id
   */
  abort(id: number): void {
    this.#uploads.delete(id);
  }

  /**
   * Reads a stored file.
   *
   * @param user the user's name
   * @param name the file's name, any case
   * @returns its bytes, or undefined
   */
  read(user: string, name: string): Uint8Array | undefined {
    return this.#files.get(key(user, name))?.data;
  }

  /**
   * Deletes a stored file.
   *
   * @param user the user's name
   * @param name the file's name
   * @returns false if the disk is failing
   */
  delete(user: string, name: string): boolean {
    if (this.failing) return false;
    this.#files.delete(key(user, name));
    return true;
  }

  /**
   * Deletes every file of a user.
   *
   * @param user the user's name
   */
  deleteUser(user: string): void {
    for (const [k, stored] of this.#files) {
      if (nameKey(stored.user) === nameKey(user)) this.#files.delete(k);
    }
  }

  /** Loses the uploads in progress, as a crash of the server would. */
  crash(): void {
    this.#uploads.clear();
  }
}

function key(user: string, name: string): string {
  return `${nameKey(user)}/${fileNameKey(name)}`;
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}
