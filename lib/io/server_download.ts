/**
 * One download of a user's file from the server, on disk: the data goes to
 * a temp file beside the destination, is checked against the server's
 * SHA-256, then moved into place without overwriting anything.
 *
 * @module
 */
import { basename, dirname, join, SEPARATOR } from "@std/path";
import type { CommandResult } from "../client/client_event.ts";
import { toHex } from "../hex.ts";
import type { Message } from "../wire/messages.ts";
import { createSha256 } from "./file_hash.ts";
import { placeWithoutOverwriting } from "./transfer_disk.ts";

/**
 * Where a download of `name` to `dest` lands, with its folder created: a
 * `dest` that is a directory, or ends with a separator (`newdir/`), receives
 * the file under its own name.
 *
 * @param name the stored file's name
 * @param dest the path the user gave
 * @returns the file's path
 * @throws {Deno.errors.PermissionDenied} or another file system error when the folder cannot be made
 * @example
 * ```ts
 * await downloadPath("a.csv", "newdir/"); // "newdir/a.csv", and newdir exists
 * ```
 */
export async function downloadPath(name: string, dest: string): Promise<string> {
  const isFolder = dest.endsWith("/") || dest.endsWith(SEPARATOR) ||
    (await Deno.stat(dest).catch(() => undefined))?.isDirectory === true;
  const path = isFolder ? join(dest, name) : dest;
  await Deno.mkdir(dirname(path), { recursive: true });
  return path;
}

/** A download that receives nothing for this long fails, ms. */
const STALL_MS = 30_000;

/**
 * A download in progress.
 *
 * @example
 * ```ts
 * const download = new ServerDownload(reqId, "a.csv", "downloads/a.csv");
 * // for each TCP frame with this request id: await download.frame(message)
 * const result = await download.result;
 * ```
 */
export class ServerDownload {
  /** The request id of the `download` request; its frames carry it. */
  readonly reqId: number;
  readonly #name: string;
  #dest: string;
  readonly #temp: string;
  readonly #onProgress: ((done: number, total: number) => void) | undefined;
  readonly #hasher = createSha256();
  readonly #done = Promise.withResolvers<CommandResult>();
  #file: Deno.FsFile | undefined;
  #size = 0;
  #sha256 = "";
  #received = 0;
  #finished = false;
  #stall: ReturnType<typeof setTimeout> | undefined;

  /**
   * @param reqId the request id of the `download` request
   * @param name the stored file's name
   * @param dest where the file should land
   * @param onProgress told of the bytes received so far
   */
  constructor(
    reqId: number,
    name: string,
    dest: string,
    onProgress?: (done: number, total: number) => void,
  ) {
    this.reqId = reqId;
    this.#name = name;
    this.#dest = dest;
    this.#temp = `${dest}.part`;
    this.#onProgress = onProgress;
  }

  /** The result, once the file is in place or the download failed. */
  get result(): Promise<CommandResult> {
    return this.#done.promise;
  }

  /** Fails the download if the server sends nothing for 30 s at a time. */
  watchStall(): void {
    let last = -1;
    const watch = () => {
      this.#stall = setTimeout(() => {
        if (this.#received === last) {
          this.finish(`no data from the server for ${STALL_MS / 1000} s`);
        } else {
          last = this.#received;
          watch();
        }
      }, STALL_MS);
    };
    watch();
  }

  /**
   * Takes a frame of this download: the `download_ok` reply or a chunk.
   *
   * @param message a frame whose request id is this download's
   */
  async frame(message: Message): Promise<void> {
    if (this.#finished) return;
    try {
      if (message.type === "download_ok") {
        this.#size = message.size;
        this.#sha256 = toHex(message.sha256);
        this.#file = await Deno.open(this.#temp, { write: true, create: true, truncate: true });
        if (this.#size === 0) await this.finish();
        return;
      }
      if (message.type !== "file_chunk" || this.#file === undefined) return;
      if (this.#received + message.data.length > this.#size) {
        return await this.finish("the server sent more data than it announced");
      }
      this.#hasher.update(message.data);
      let written = 0;
      while (written < message.data.length) {
        written += await this.#file.write(message.data.subarray(written));
      }
      this.#received += message.data.length;
      this.#onProgress?.(this.#received, this.#size);
      if (this.#received === this.#size) await this.finish();
    } catch (error) {
      await this.finish(`cannot write ${this.#dest}: ${(error as Error).message}`);
    }
  }

  /**
   * Ends the download: with everything received, checks and places the
   * file; with a failure, removes the temp file. Later calls do nothing.
   *
   * @param failure why it failed, if it did
   */
  async finish(failure?: string): Promise<void> {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#stall);
    let problem = failure;
    try {
      if (problem === undefined) {
        const actual = toHex(this.#hasher.digest());
        if (actual !== this.#sha256) {
          problem = `the SHA-256 of the data received (${actual.slice(0, 16)}…) does not match ` +
            `the server's (${this.#sha256.slice(0, 16)}…)`;
        } else {
          await this.#file?.sync();
          this.#file?.close();
          this.#file = undefined;
          this.#dest = await placeWithoutOverwriting(
            this.#temp,
            dirname(this.#dest),
            basename(this.#dest),
          );
        }
      }
    } catch (error) {
      problem = `cannot write ${this.#dest}: ${(error as Error).message}`;
    }
    if (problem !== undefined) {
      this.#file?.close();
      await Deno.remove(this.#temp).catch(() => {});
      return this.#done.resolve({
        ok: false,
        command: "download",
        error: `Download of "${this.#name}" failed: ${problem}`,
        code: problem.startsWith("the SHA") ? "checksum_mismatch" : "file_error",
      });
    }
    this.#done.resolve({
      ok: true,
      command: "download",
      name: this.#name,
      dest: this.#dest,
      size: this.#size,
      sha256: this.#sha256,
    });
  }
}
