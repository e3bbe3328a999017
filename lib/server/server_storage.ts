/**
 * Server storage, sans-I/O: the `upload`, `download`, `delete` and `files`
 * requests, decided here and carried out by a driver against its blob store
 * (`lib/io/blob_store.ts` on disk, `lib/sim/memory_blob_store.ts` in the
 * simulator) through {@linkcode ServerOutput}s, whose results come back as
 * `uploadDone` and `fileDeleted`.
 *
 * @module
 */
import { fromHex, toHex } from "../hex.ts";
import { nameKey } from "../wire/client_name.ts";
import { fileNameKey } from "../wire/file_name.ts";
import type { ErrorCodeName } from "../wire/error_code.ts";
import { fileNameProblem } from "../wire/file_name.ts";
import type { MessageOf, Reply, Request } from "../wire/messages.ts";
import type { Endpoint, ServerEvent, ServerOutput } from "./server_event.ts";
import type { SharedFileRecord } from "./store.ts";
import { type StorageLimits, type StoredFile, StoredFiles } from "./stored_files.ts";

/** What storage needs of the core that holds it. */
export interface StorageHost {
  /** Answers a request with an error (counted, logged, remembered for replays). */
  refuse(from: Endpoint, request: Request, code: ErrorCodeName, reason: string): void;
  /** Answers a request (remembered for replays). */
  answer(from: Endpoint, request: Request, reply: Reply): void;
  /** Remembers a request's failure for replays without sending it. */
  settle(request: Request, code: ErrorCodeName, reason: string): void;
  /** Logs an event. */
  emit(event: ServerEvent): void;
  /** Asks the driver for file work. */
  output(output: ServerOutput): void;
  /**
   * Tells whether a file stored under `user` is the current identity's
   * (`fileOfIdentity`; always, in password mode): files of an earlier
   * identity of the name are never listed, served or kept.
   */
  owns(user: string, file: StoredFile): boolean;
  /**
   * When the identity holding `user` was registered, ms (open mode): a file
   * it stores is dated no earlier, whatever this instance's clock says.
   */
  registeredAt(user: string): number | undefined;
}

/** The end of an upload after `upload_commit`: stored, or why not. */
export type UploadResult =
  | { readonly ok: true; readonly file: StoredFile }
  | { readonly ok: false; readonly code: "checksum_mismatch" | "io"; readonly reason: string };

interface Upload {
  from: Endpoint;
  request: MessageOf<"upload">;
  id: number;
  user: string;
  name: string;
  size: number;
  sha256: string;
  received: number;
}

interface Deletion {
  from: Endpoint;
  request: MessageOf<"delete">;
  user: string;
  file: StoredFile;
}

/**
 * Each user's stored files, the uploads in progress and the deletions in
 * flight. The requests reach it with their session's user name already
 * checked by the core.
 *
 * @example
 * ```ts
 * const storage = new ServerStorage(host, { limits: DEFAULT_STORAGE_LIMITS });
 * storage.upload(from, request, "Alice"); // outputs upload_begin, then chunks follow
 * ```
 */
export class ServerStorage {
  #host: StorageHost;
  #files: StoredFiles;
  /** Tell other instances of the files stored here (`file_store` outputs). */
  #shared: boolean;
  /** Files on the other instances' disks (shared store): by user key, then file name key. */
  #remote = new Map<string, Map<string, SharedFileRecord>>();
  #uploads = new Map<string, Upload>();
  #deletions = new Map<number, Deletion>();
  #nextId = 1;

  /**
   * @param host the core's replies, events and outputs
   * @param options the limits, the files stored at start (user name and
   *   files), and whether other instances share the file index
   */
  constructor(
    host: StorageHost,
    options: {
      limits: StorageLimits;
      stored?: Iterable<readonly [string, readonly StoredFile[]]>;
      shared?: boolean;
    },
  ) {
    this.#host = host;
    this.#shared = options.shared ?? false;
    this.#files = new StoredFiles(options.limits);
    for (const [user, files] of options.stored ?? []) {
      for (const file of files) this.#files.add(user, file);
    }
  }

  /**
   * Tells whether the server has work of its own for a TCP connection (an
   * upload on it not yet stored), so that its idle clock does not run.
   *
   * @param connId the driver's id of the connection
   * @returns true while an upload on it is in progress
   */
  busy(connId: number): boolean {
    for (const upload of this.#uploads.values()) {
      if (upload.from.connId === connId) return true;
    }
    return false;
  }

  /**
   * Starts an upload: checks the name, hash length and limits, reserves room.
   *
   * @param from where it came from
   * @param request the request
   * @param user its session's user
   */
  upload(from: Endpoint, request: MessageOf<"upload">, user: string): void {
    const host = this.#host;
    if (from.transport !== "tcp") {
      return host.refuse(from, request, "needs_tcp", "Uploads go over TCP");
    }
    const problem = fileNameProblem(request.name);
    if (problem !== undefined) return host.refuse(from, request, "invalid_file_name", problem);
    if (request.sha256.length !== 32) {
      return host.refuse(from, request, "bad_request", "The SHA-256 must be 32 bytes");
    }
    const tooMuch = this.#files.uploadProblem(user, request.name, request.size);
    if (tooMuch !== undefined) {
      const code = request.size > this.#files.limits.maxFileSize
        ? "file_too_large"
        : "quota_exceeded";
      return host.refuse(from, request, code, tooMuch);
    }
    const upload: Upload = {
      from,
      request,
      id: this.#nextId++,
      user,
      name: request.name,
      size: request.size,
      sha256: toHex(request.sha256),
      received: 0,
    };
    this.#uploads.set(uploadKey(from, request.reqId), upload);
    this.#files.reserve(user, request.size, 1);
    host.output({
      type: "upload_begin",
      id: upload.id,
      user: upload.user,
      name: upload.name,
      connId: from.connId ?? 0,
    });
    if (upload.size === 0) this.#commit(upload);
  }

  /**
   * Takes a chunk of an upload in progress (ignored if none matches).
   *
   * @param from where it came from
   * @param chunk the chunk
   */
  chunk(from: Endpoint, chunk: MessageOf<"file_chunk">): void {
    const key = uploadKey(from, chunk.reqId);
    const upload = this.#uploads.get(key);
    if (upload === undefined || upload.received === upload.size) return;
    if (upload.received + chunk.data.length > upload.size) {
      this.#abort(key, upload);
      return this.#host.refuse(
        upload.from,
        upload.request,
        "bad_request",
        `The upload of "${upload.name}" sent more than the ${upload.size} bytes it declared`,
      );
    }
    upload.received += chunk.data.length;
    this.#host.output({ type: "upload_chunk", id: upload.id, data: chunk.data });
    if (upload.received === upload.size) this.#commit(upload);
  }

  /**
   * Reports the end of an upload after `upload_commit`.
   *
   * @param id the upload's id
   * @param result the stored file, or the failure
   */
  uploadDone(id: number, result: UploadResult): void {
    const upload = [...this.#uploads.values()].find((u) => u.id === id);
    if (upload === undefined) return;
    this.#uploads.delete(uploadKey(upload.from, upload.request.reqId));
    this.#files.reserve(upload.user, -upload.size, -1);
    if (!result.ok) {
      const code = result.code === "io" ? "not_saved" : "checksum_mismatch";
      return this.#host.refuse(upload.from, upload.request, code, result.reason);
    }
    this.#files.add(upload.user, result.file);
    this.#share("put", upload.user, result.file);
    this.#host.emit({
      kind: "file_stored",
      user: upload.user,
      name: result.file.name,
      size: result.file.size,
      sha256: result.file.sha256,
    });
    this.#host.answer(upload.from, upload.request, {
      type: "upload_ok",
      reqId: upload.request.reqId,
      size: result.file.size,
    });
  }

  /**
   * Starts a download: the driver sends `download_ok` and the content.
   *
   * @param from where it came from
   * @param request the request
   * @param user its session's user
   */
  download(from: Endpoint, request: MessageOf<"download">, user: string): void {
    if (from.transport !== "tcp") {
      return this.#host.refuse(from, request, "needs_tcp", "Downloads go over TCP");
    }
    const file = this.#files.get(user, request.name);
    if (file === undefined) return this.#elsewhere(from, request, user);
    this.#host.output({ type: "download", to: from, reqId: request.reqId, user, file });
    this.#host.emit({ kind: "file_sent", user, name: file.name, size: file.size });
  }

  /**
   * Deletes a file: forgotten now, restored if the driver cannot delete it.
   *
   * @param from where it came from
   * @param request the request
   * @param user its session's user
   */
  delete(from: Endpoint, request: MessageOf<"delete">, user: string): void {
    const file = this.#files.remove(user, request.name);
    if (file === undefined) return this.#elsewhere(from, request, user);
    const id = this.#nextId++;
    this.#deletions.set(id, { from, request, user, file });
    this.#host.output({ type: "delete_file", id, user, name: file.name });
  }

  /**
   * Reports that a `delete_file` output was carried out (or failed).
   *
   * @param id the output's id
   * @param error why it failed, or undefined
   */
  fileDeleted(id: number, error?: string): void {
    const deletion = this.#deletions.get(id);
    if (deletion === undefined) return;
    this.#deletions.delete(id);
    if (error !== undefined) {
      this.#files.add(deletion.user, deletion.file);
      return this.#host.refuse(deletion.from, deletion.request, "not_saved", error);
    }
    this.#share("delete", deletion.user, deletion.file);
    this.#host.emit({ kind: "file_deleted", user: deletion.user, name: deletion.file.name });
    this.#host.answer(deletion.from, deletion.request, {
      type: "delete_ok",
      reqId: deletion.request.reqId,
    });
  }

  /**
   * Answers `files` with the user's listing: the files on this instance's
   * disk, and (shared store) those on the others'.
   *
   * @param from where it came from
   * @param request the request
   * @param user its session's user
   */
  list(from: Endpoint, request: MessageOf<"files">, user: string): void {
    if (from.transport !== "tcp") {
      return this.#host.refuse(from, request, "needs_tcp", "File listings go over TCP");
    }
    const files = this.#files.list(user);
    const here = new Set(files.map((f) => fileNameKey(f.name)));
    let used = this.#files.usage(user);
    for (const [key, record] of this.#remote.get(nameKey(user)) ?? []) {
      if (here.has(key) || !this.#host.owns(user, record.file)) continue;
      files.push(record.file);
      used += record.file.size;
    }
    files.sort((a, b) => fileNameKey(a.name) < fileNameKey(b.name) ? -1 : 1);
    this.#host.answer(from, request, {
      type: "file_list",
      reqId: request.reqId,
      usedBytes: used,
      quotaBytes: this.#files.limits.quota,
      files: files.map((f) => ({
        name: f.name,
        size: f.size,
        sha256: fromHex(f.sha256),
        uploadedAt: Date.parse(f.uploadedAt),
      })),
    });
  }

  /**
   * Tells whether a user has files on this instance's disk or uploads under way.
   *
   * @param user the user's name
   * @returns true if so
   */
  holds(user: string): boolean {
    const key = nameKey(user);
    return this.#files.list(user).length > 0 ||
      [...this.#uploads.values()].some((u) => nameKey(u.user) === key);
  }

  /**
   * Removes everything of a deregistered (or expired) user: uploads in
   * progress fail, and every file is deleted.
   *
   * @param user the user's name
   * @param why what became of the identity, for the uploads' refusals
   * @returns how many stored files went
   */
  removeUser(user: string, why: "deregistered" | "expired" = "deregistered"): number {
    for (const [key, upload] of this.#uploads) {
      if (nameKey(upload.user) !== nameKey(user)) continue;
      this.#abort(key, upload);
      this.#host.refuse(
        upload.from,
        upload.request,
        "not_registered",
        `Your identity was ${why} during the upload`,
      );
    }
    const files = this.#files.list(user);
    for (const file of files) {
      this.#share("delete", user, file);
      this.#host.emit({ kind: "file_deleted", user, name: file.name });
    }
    this.#files.removeUser(user);
    this.#host.output({ type: "delete_user_files", user });
    return files.length;
  }

  /**
   * Removes a user's files on this disk if any of them is not the current
   * identity's (the name was deregistered, or went to someone else, while
   * this instance did not hear of it).
   *
   * @param user the user's name
   * @returns how many stored files went
   */
  removeEarlier(user: string): number {
    const files = this.#files.list(user);
    return files.some((file) => !this.#host.owns(user, file)) ? this.removeUser(user) : 0;
  }

  /**
   * Removes the shared records of a removed identity's files on the other
   * instances' disks (each deletes the files themselves when it hears of
   * the removal, or at its next start if it is down).
   *
   * @param user the user's name
   */
  unlistElsewhere(user: string): void {
    for (const record of this.#remote.get(nameKey(user))?.values() ?? []) {
      const { file, owner } = record;
      if (this.#shared) this.#host.output({ type: "file_store", op: "gone", user, file, owner });
    }
    this.#remote.delete(nameKey(user));
  }

  /** @returns the name keys of the users with files on this disk */
  users(): string[] {
    return this.#files.users();
  }

  /**
   * Abandons the uploads on a closed TCP connection.
   *
   * @param connId the driver's id of the connection
   */
  connectionClosed(connId: number): void {
    for (const [key, upload] of this.#uploads) {
      if (upload.from.connId !== connId) continue;
      this.#abort(key, upload);
      this.#host.settle(upload.request, "bad_request", "The connection closed mid-upload");
    }
  }

  /**
   * Takes news of a file stored or deleted on another instance.
   *
   * @param op `put` or `delete`
   * @param record the file and the instance that holds it
   */
  remoteChanged(op: "put" | "delete", record: SharedFileRecord): void {
    const user = nameKey(record.user);
    const key = fileNameKey(record.file.name);
    const files = this.#remote.get(user);
    if (op === "delete") {
      if (files?.get(key)?.owner !== record.owner) return;
      files.delete(key);
      if (files.size === 0) this.#remote.delete(user);
      return;
    }
    if (files === undefined) this.#remote.set(user, new Map([[key, record]]));
    else files.set(key, record);
  }

  /**
   * Replaces what is known of the other instances' files (after a resubscribe).
   *
   * @param records every file on the other instances' disks
   */
  remoteSynced(records: readonly SharedFileRecord[]): void {
    this.#remote.clear();
    for (const record of records) this.remoteChanged("put", record);
  }

  /**
   * A `download` or `delete` of a file not on this instance's disk: on
   * another instance's (shared store), the answer is `file_elsewhere` with
   * that instance's TCP address, which the client asks instead; else
   * `file_not_found`.
   */
  #elsewhere(from: Endpoint, request: MessageOf<"download" | "delete">, user: string): void {
    const record = this.#remote.get(nameKey(user))?.get(fileNameKey(request.name));
    const owner = record === undefined || !this.#host.owns(user, record.file)
      ? undefined
      : parseOwner(record.owner);
    if (owner === undefined) {
      return this.#host.refuse(
        from,
        request,
        "file_not_found",
        `You have no file "${request.name}"`,
      );
    }
    this.#host.answer(from, request, {
      type: "file_elsewhere",
      reqId: request.reqId,
      host: owner.host,
      tcpPort: owner.port,
    });
  }

  #share(op: "put" | "delete", user: string, file: StoredFile): void {
    if (this.#shared) this.#host.output({ type: "file_store", op, user, file });
  }

  #abort(key: string, upload: Upload): void {
    this.#uploads.delete(key);
    this.#files.reserve(upload.user, -upload.size, -1);
    this.#host.output({ type: "upload_abort", id: upload.id });
  }

  #commit(upload: Upload): void {
    this.#host.output({
      type: "upload_commit",
      id: upload.id,
      size: upload.size,
      sha256: upload.sha256,
      notBefore: this.#host.registeredAt(upload.user),
    });
  }
}

/** `host:port` or `[v6]:port` as host and port, or undefined if it is not one. */
function parseOwner(owner: string): { host: string; port: number } | undefined {
  const colon = owner.lastIndexOf(":");
  const port = Number(owner.slice(colon + 1));
  const host = owner.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  return colon > 0 && Number.isInteger(port) && port > 0 && port < 65536 && host !== ""
    ? { host, port }
    : undefined;
}

function uploadKey(from: Endpoint, reqId: number): string {
  return `${from.connId ?? `${from.address}:${from.port}`}/${reqId}`;
}
