/**
 * Carries out the server core's storage outputs (`upload_*`, `download`,
 * `delete_file`, `delete_user_files`) against the {@linkcode BlobStore} on
 * disk, and reports each result back to the core. The decisions (limits,
 * quotas, who may do what) are the core's (`lib/server/server_storage.ts`);
 * this is only the disk and the stream.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { fromHex } from "../hex.ts";
import type { Endpoint, ServerCore, ServerOutput } from "../server/server_core.ts";
import type { Message } from "../wire/messages.ts";
import { encodeMessage } from "../wire/codec.ts";
import { ERROR_CODES } from "../wire/error_code.ts";
import { type BlobStore, BlobStoreError, type Upload } from "./blob_store.ts";
import type { FramedConnection } from "./framed_connection.ts";

/** The core's outputs that are storage work. */
export type StorageOutput = Extract<
  ServerOutput,
  {
    type:
      | "upload_begin"
      | "upload_chunk"
      | "upload_commit"
      | "upload_abort"
      | "download"
      | "delete_file"
      | "delete_user_files";
  }
>;

/** What the storage driver needs of the server driver. */
export interface StorageDriverHost {
  /** The core to report results to. */
  readonly core: ServerCore;
  /** Runs the core's outputs after a result was reported. */
  drain(): void;
  /** The open TCP connection of an id, if any: what is written to it is sealed for its client. */
  connection(connId: number): Pick<FramedConnection, "write" | "close"> | undefined;
  /** Counts a frame sent to a client. */
  frameSent(to: Endpoint, message: Message): void;
}

const log = getLogger(["switchboard", "server"]);

/**
 * The disk side of server files.
 *
 * @example
 * ```ts
 * const storage = new StorageDriver(await BlobStore.open(dataDir), host);
 * storage.execute(output); // for each storage output of the core
 * await storage.readGate(connId); // before reading the next frame of a connection
 * await storage.close();
 * ```
 */
export class StorageDriver {
  #store: BlobStore;
  #host: StorageDriverHost;
  #uploads = new Map<number, Promise<Upload | undefined>>();
  #uploadConn = new Map<number, number>();
  #connWrites = new Map<number, Promise<unknown>>();
  #work = new Set<Promise<unknown>>();

  /**
   * @param store the opened blob store
   * @param host the core, the server driver's drain and connections
   */
  constructor(store: BlobStore, host: StorageDriverHost) {
    this.#store = store;
    this.#host = host;
  }

  /**
   * Starts one storage output.
   *
   * @param out the output
   */
  execute(out: StorageOutput): void {
    const core = this.#host.core;
    switch (out.type) {
      case "upload_begin": {
        const begun = this.#store.beginUpload(out.user, out.name).catch((error) => {
          log.error("Cannot start storing {name}: {error}", { name: out.name, error });
          return undefined;
        });
        this.#uploads.set(out.id, begun);
        this.#uploadConn.set(out.id, out.connId);
        return;
      }
      case "upload_chunk":
        return this.#onUpload(out.id, (u) => u.write(out.data));
      case "upload_abort": {
        this.#onUpload(out.id, (u) => u.abort());
        this.#uploads.delete(out.id);
        this.#uploadConn.delete(out.id);
        return;
      }
      case "upload_commit": {
        const upload = this.#uploads.get(out.id);
        this.#uploads.delete(out.id);
        if (upload === undefined) {
          this.#uploadConn.delete(out.id);
          return;
        }
        return this.#track(
          upload.then(async (u) => {
            if (u === undefined) throw new BlobStoreError("io", "the file could not be created");
            return await u.commit({ size: out.size, sha256: out.sha256, notBefore: out.notBefore });
          }).then(
            (file) => core.uploadDone(out.id, { ok: true, file }),
            (error) => {
              const mismatch = error instanceof BlobStoreError &&
                (error.code === "checksum_mismatch" || error.code === "size_mismatch");
              if (!mismatch) log.error("Storing a file failed: {error}", { error });
              core.uploadDone(out.id, {
                ok: false,
                code: mismatch ? "checksum_mismatch" : "io",
                reason: mismatch
                  ? "The upload's SHA-256 does not match the data received; nothing was stored"
                  : "The server could not store the file",
              });
            },
          ).then(() => this.#host.drain()).finally(() => this.#uploadConn.delete(out.id)),
        );
      }
      case "download":
        return this.#track(this.#sendFile(out));
      case "delete_file":
        return this.#track(
          this.#store.delete(out.user, out.name).then(
            () => core.fileDeleted(out.id),
            (error) => {
              log.error("Deleting a file failed: {error}", { error });
              core.fileDeleted(out.id, "The server could not delete the file");
            },
          ).then(() => this.#host.drain()),
        );
      case "delete_user_files":
        return this.#track(
          this.#store.deleteUser(out.user).then(
            (count) => {
              if (count > 0) log.info("Deleted {count} files of {user}", { count, user: out.user });
            },
            (error) =>
              log.error("Deleting files of {user} failed: {error}", { user: out.user, error }),
          ),
        );
    }
  }

  /**
   * What a connection's reader waits for before the next frame: the disk
   * writes of the upload it carries, so that it reads no faster than they go.
   *
   * @param connId the driver's id of the connection
   * @returns a promise to wait for, or undefined
   */
  readGate(connId: number): Promise<unknown> | undefined {
    return this.#connWrites.get(connId);
  }

  /**
   * Forgets a closed connection's read gate.
   *
   * @param connId the driver's id of the connection
   */
  connectionClosed(connId: number): void {
    this.#connWrites.delete(connId);
  }

  /** Waits for the work under way, drops unfinished uploads and closes the store. */
  async close(): Promise<void> {
    while (this.#work.size > 0) await Promise.allSettled([...this.#work]);
    for (const upload of this.#uploads.values()) await upload.then((u) => u?.abort());
    await this.#store.close();
  }

  #onUpload(id: number, work: (upload: Upload) => Promise<void>): void {
    const upload = this.#uploads.get(id);
    if (upload === undefined) return;
    const next = upload.then(async (u) => {
      if (u === undefined) return undefined;
      try {
        await work(u);
        return u;
      } catch (error) {
        log.error("Writing an upload failed: {error}", { error });
        await u.abort();
        return undefined;
      }
    });
    this.#uploads.set(id, next);
    // The connection that carries the upload reads on once the write is done.
    const connId = this.#uploadConn.get(id);
    if (connId !== undefined) this.#connWrites.set(connId, next);
  }

  async #sendFile(out: Extract<StorageOutput, { type: "download" }>): Promise<void> {
    const { to, reqId, user, file } = out;
    const conn = to.connId === undefined ? undefined : this.#host.connection(to.connId);
    if (conn === undefined) return;
    let reader;
    try {
      reader = await this.#store.openRead(user, file.name);
    } catch (error) {
      log.error("Cannot read {name} of {user}: {error}", { name: file.name, user, error });
      const reply = encodeMessage({
        type: "error",
        reqId,
        code: ERROR_CODES.file_not_found,
        message: `The server could not read "${file.name}"`,
      });
      await conn.write(reply).catch(() => conn.close());
      return;
    }
    try {
      const info = reader.info;
      const ok: Message = {
        type: "download_ok",
        reqId,
        size: info.size,
        sha256: fromHex(info.sha256),
      };
      await conn.write(encodeMessage(ok));
      this.#host.frameSent(to, ok);
      for await (const data of reader) {
        const chunk: Message = { type: "file_chunk", reqId, data };
        await conn.write(encodeMessage(chunk));
        this.#host.frameSent(to, chunk);
      }
    } catch (error) {
      log.warn("Sending {name} to {user} stopped: {error}", { name: file.name, user, error });
      conn.close();
    } finally {
      reader.close();
    }
  }

  #track(work: Promise<unknown>): void {
    this.#work.add(work);
    work.finally(() => this.#work.delete(work));
  }
}
