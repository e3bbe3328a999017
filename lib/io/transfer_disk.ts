/**
 * The file side of peer transfers on a real file system: reads chunks of
 * files being sent, keeps partial files of files being received (so a
 * transfer cut off can resume), checks their SHA-256 and moves them into
 * the download directory without overwriting anything. A file is not begun
 * unless the download directory's file system has room for the rest of it;
 * partial files left by ended sessions are removed after `keepPartialMs`,
 * and no more than `maxPartialFiles` are kept.
 *
 * @module
 */
import { statfs } from "node:fs/promises";
import { createSha256, type Sha256 } from "./file_hash.ts";
import { join } from "@std/path";
import { numberedName } from "../wire/file_name.ts";
import type { FileOperation } from "../client/outbox.ts";
import type { FileFailure } from "../client/file_transfers.ts";
import { toHex } from "../hex.ts";

/** Where the results of file work go: the client core's `file...` methods. */
export interface TransferReport {
  read(id: number, offset: number, data: Uint8Array): void;
  ready(id: number, offset: number): void;
  written(id: number, upTo: number): void;
  received(id: number, path: string): void;
  failed(id: number, problem: string, failure: FileFailure): void;
}

/** Default time a partial file of an ended session is kept, ms (1 day). */
export const DEFAULT_KEEP_PARTIAL_MS = 24 * 60 * 60 * 1000;
/** Default most partial files kept in the download directory. */
export const DEFAULT_MAX_PARTIAL_FILES = 16;

/** Options of {@linkcode TransferDisk}. */
export interface TransferDiskOptions {
  /** Partial files not written for this long are removed, ms (default 1 day). */
  keepPartialMs?: number;
  /** Most partial files kept; the oldest beyond are removed (default 16). */
  maxPartialFiles?: number;
  /** The free bytes of the file system of `dir` (default: `statfs`). */
  freeBytes?: (dir: string) => Promise<number>;
}

/**
 * The bytes an unprivileged user may still write on the file system of
 * `dir`; Infinity when that cannot be learned (no `--allow-sys=statfs`, or
 * a platform without it), where a full disk still shows as a failed write.
 */
async function statfsFreeBytes(dir: string): Promise<number> {
  try {
    const stats = await statfs(dir);
    return stats.bavail * stats.bsize;
  } catch {
    return Infinity;
  }
}

/** A write that failed for want of space (or of quota) rather than anything else. */
function writeFailure(error: unknown): FileFailure {
  const code = (error as { code?: unknown }).code;
  return code === "ENOSPC" || code === "EDQUOT" ? "disk_full" : "write";
}

/**
 * Files are read and written a block at a time, and chunks are cut from the
 * block read or gathered into the block to write. Each read or write of
 * Deno's files is an operation on its I/O threads that costs about 50 µs of
 * CPU whatever its size: reading 64 MiB took 184 ms in 32 KiB reads and
 * 29 ms in 1 MiB reads (on the 2-core machine of docs/BENCHMARKS.md), CPU a
 * loopback transfer needs for its datagrams.
 */
export const FILE_BLOCK_BYTES = 1024 * 1024;

interface Sending {
  path: string;
  file?: Deno.FsFile;
  /** Where the file's position is after the last read (undefined: unknown). */
  position?: number;
  /** The last block read, and where in the file it starts. */
  block?: Uint8Array;
  blockAt: number;
}

interface Receiving {
  name: string;
  size: number;
  sha256: string;
  partial: string;
  /**
   * True for a partial file of this transfer alone (another transfer of the
   * same content holds the usual one): never resumed, removed if it stops.
   */
  own: boolean;
  file?: Deno.FsFile;
  hasher: Sha256;
  broken: boolean;
  /** Data received and not yet written (hashed as it is written), in a block. */
  staged?: Uint8Array;
  stagedBytes: number;
  /** The offset after the staged data. */
  stagedEnd: number;
}

/**
 * The partial file of a transfer: hidden, named after the file and its
 * content, so only the same content resumes into it.
 *
 * @param dir the download directory
 * @param name the offered name
 * @param sha256 the offered SHA-256, hex
 * @returns the path
 */
export function partialPath(dir: string, name: string, sha256: string): string {
  return join(dir, `.${name}.${sha256.slice(0, 16)}.part`);
}

/**
 * Runs the file operations of peer transfers, in order per transfer.
 *
 * @example
 * ```ts
 * const files = new TransferDisk("./downloads", {
 *   read: (id, offset, data) => core.fileReport(now(), { kind: "read", id, offset, data }),
 *   ready: (id, offset) => core.fileReport(now(), { kind: "receive_ready", id, offset }),
 *   written: (id, upTo) => core.fileReport(now(), { kind: "written", id, upTo }),
 *   received: (id, path) => core.fileReport(now(), { kind: "received", id, path }),
 *   failed: (id, problem, failure) => core.fileReport(now(), { kind: "failed", id, problem, failure }),
 * });
 * files.run({ type: "read", id: 1, path: "a.bin", offset: 0, length: 32768 });
 * ```
 */
export class TransferDisk {
  #dir: string;
  #report: TransferReport;
  #sending = new Map<number, Sending>();
  #receiving = new Map<number, Receiving>();
  #chains = new Map<number, Promise<void>>();
  /** Partial files held by a receiving transfer, from its begin until its file work is over. */
  #claimed = new Set<string>();
  #keepPartialMs: number;
  #maxPartialFiles: number;
  #freeBytes: (dir: string) => Promise<number>;

  /**
   * @param downloadDir where received files land
   * @param report where results go
   * @param options how long and how many partial files are kept, and the free space
   */
  constructor(downloadDir: string, report: TransferReport, options: TransferDiskOptions = {}) {
    this.#dir = downloadDir;
    this.#report = report;
    this.#keepPartialMs = options.keepPartialMs ?? DEFAULT_KEEP_PARTIAL_MS;
    this.#maxPartialFiles = options.maxPartialFiles ?? DEFAULT_MAX_PARTIAL_FILES;
    this.#freeBytes = options.freeBytes ?? statfsFreeBytes;
    // Partial files that earlier runs left and that are over their time go at once.
    this.sweepPartials().catch(() => {});
  }

  /**
   * Removes partial files of the download directory that no transfer holds
   * and that were not written for `keepPartialMs`, then the oldest beyond
   * `maxPartialFiles`. Runs at construction, before each file is begun and
   * after one stops.
   *
   * @returns how many were removed
   */
  async sweepPartials(): Promise<number> {
    const found: { path: string; mtime: number }[] = [];
    try {
      for await (const entry of Deno.readDir(this.#dir)) {
        if (!entry.isFile || !entry.name.startsWith(".") || !entry.name.endsWith(".part")) continue;
        const path = join(this.#dir, entry.name);
        if (this.#claimed.has(path)) continue;
        const stat = await Deno.lstat(path).catch(() => undefined);
        if (stat?.isFile) found.push({ path, mtime: stat.mtime?.getTime() ?? 0 });
      }
    } catch {
      return 0; // no download directory yet
    }
    found.sort((a, b) => b.mtime - a.mtime);
    const now = Date.now();
    let removed = 0;
    for (const [i, { path, mtime }] of found.entries()) {
      if (i < this.#maxPartialFiles && now - mtime < this.#keepPartialMs) continue;
      if (await Deno.remove(path).then(() => true, () => false)) removed++;
    }
    return removed;
  }

  /**
   * Queues one operation behind the earlier ones of its transfer.
   *
   * @param op the operation
   */
  run(op: FileOperation): void {
    const chain = (this.#chains.get(op.id) ?? Promise.resolve()).then(() => this.#do(op));
    const settled = chain.catch(() => {});
    this.#chains.set(op.id, settled);
    settled.then(() => {
      if (this.#chains.get(op.id) === settled) this.#chains.delete(op.id);
    });
  }

  /**
   * Waits for every queued operation, writes what is staged, then closes
   * every file (partial files stay, to be resumed).
   */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#chains.values()]);
    for (const [id, r] of this.#receiving) await this.#flush(id, r);
    for (const s of this.#sending.values()) s.file?.close();
    for (const r of this.#receiving.values()) r.file?.close();
    this.#sending.clear();
    this.#receiving.clear();
    this.#claimed.clear();
  }

  async #do(op: FileOperation): Promise<void> {
    switch (op.type) {
      case "read":
        return await this.#read(op.id, op.path, op.offset, op.length);
      case "send_end":
        this.#sending.get(op.id)?.file?.close();
        this.#sending.delete(op.id);
        return;
      case "receive_begin":
        return await this.#begin(op);
      case "write":
        return await this.#write(op.id, op.offset, op.data);
      case "receive_end":
        return await this.#finish(op.id);
      case "receive_abort":
        return await this.#abort(op.id, op.keepPartial);
    }
  }

  async #read(id: number, path: string, offset: number, length: number): Promise<void> {
    let sending = this.#sending.get(id);
    if (sending === undefined) {
      sending = { path, blockAt: 0 };
      this.#sending.set(id, sending);
    }
    try {
      const { block, blockAt } = sending;
      if (block === undefined || offset < blockAt || offset + length > blockAt + block.length) {
        await this.#readBlock(sending, offset, length);
      }
      const start = offset - sending.blockAt;
      // A view: the block is never written again (the next one is new).
      this.#report.read(id, offset, sending.block!.subarray(start, start + length));
    } catch (error) {
      this.#report.failed(id, `Cannot read ${path}: ${(error as Error).message}`, "read");
    }
  }

  /** Reads the block of the file that starts at `offset`: at least `length` bytes. */
  async #readBlock(sending: Sending, offset: number, length: number): Promise<void> {
    sending.block = undefined;
    sending.file ??= await Deno.open(sending.path, { read: true });
    // Blocks are read in order: a seek (an operation on the I/O threads,
    // like the read) only to start or resume elsewhere.
    if (sending.position !== offset) await sending.file.seek(offset, Deno.SeekMode.Start);
    sending.position = undefined;
    const block = new Uint8Array(Math.max(FILE_BLOCK_BYTES, length));
    let got = 0;
    while (got < block.length) {
      const n = await sending.file.read(block.subarray(got));
      if (n === null) break;
      got += n;
    }
    if (got < length) throw new Error("the file became shorter while it was sent");
    sending.position = offset + got;
    sending.block = block.subarray(0, got);
    sending.blockAt = offset;
  }

  async #begin(
    op: Extract<FileOperation, { type: "receive_begin" }>,
  ): Promise<void> {
    // Two transfers of the same content at once must not share a partial
    // file: the second gets one of its own.
    const shared = partialPath(this.#dir, op.name, op.sha256);
    const own = this.#claimed.has(shared);
    const partial = own ? `${shared.slice(0, -".part".length)}.${op.id}.part` : shared;
    this.#claimed.add(partial);
    const r: Receiving = {
      name: op.name,
      size: op.size,
      sha256: op.sha256,
      partial,
      own,
      hasher: createSha256(),
      broken: false,
      stagedBytes: 0,
      stagedEnd: 0,
    };
    this.#receiving.set(op.id, r);
    try {
      await Deno.mkdir(this.#dir, { recursive: true });
      await this.sweepPartials();
      // Only a regular file is resumed: a link planted there must not redirect the peer's bytes.
      const existing = await Deno.lstat(partial).catch(() => undefined);
      if (existing !== undefined && !existing.isFile) {
        throw new Error(`${partial} is in the way and is not a regular file`);
      }
      const needed = op.size - Math.min(own ? 0 : existing?.size ?? 0, op.size);
      const free = await this.#freeBytes(this.#dir);
      if (needed > free) {
        r.broken = true;
        this.#claimed.delete(partial);
        this.#receiving.delete(op.id);
        return this.#report.failed(
          op.id,
          `Not enough free space in ${this.#dir} for "${op.name}": it needs ${needed} more bytes, ` +
            `${free} are free`,
          "no_room",
        );
      }
      r.file = await Deno.open(partial, { read: true, write: true, create: true, truncate: own });
      const size = (await r.file.stat()).size;
      const have = Math.min(size, op.size);
      // Resume: the part already there goes into the hash; more than the file is cut.
      if (size > have) await r.file.truncate(have);
      await r.file.seek(0, Deno.SeekMode.Start);
      const buffer = new Uint8Array(1024 * 1024);
      let hashed = 0;
      while (hashed < have) {
        const n = await r.file.read(buffer.subarray(0, Math.min(buffer.length, have - hashed)));
        if (n === null) break;
        r.hasher.update(buffer.subarray(0, n));
        hashed += n;
      }
      await r.file.seek(hashed, Deno.SeekMode.Start);
      this.#report.ready(op.id, hashed);
    } catch (error) {
      r.broken = true;
      r.file?.close();
      r.file = undefined;
      this.#report.failed(
        op.id,
        `Cannot write into ${this.#dir}: ${(error as Error).message}`,
        writeFailure(error),
      );
    }
  }

  /** Stages `data`, and writes the block once full. */
  async #write(id: number, offset: number, data: Uint8Array): Promise<void> {
    const r = this.#receiving.get(id);
    if (r === undefined || r.broken || r.file === undefined) return;
    r.staged ??= new Uint8Array(FILE_BLOCK_BYTES);
    if (r.stagedBytes + data.length > r.staged.length) await this.#flush(id, r);
    if (data.length > r.staged.length) {
      return await this.#writeOut(id, r, data, offset + data.length);
    }
    r.staged.set(data, r.stagedBytes);
    r.stagedBytes += data.length;
    r.stagedEnd = offset + data.length;
    if (r.stagedBytes === r.staged.length) await this.#flush(id, r);
  }

  /** Writes what is staged. */
  async #flush(id: number, r: Receiving): Promise<void> {
    if (r.stagedBytes === 0 || r.staged === undefined) return;
    const data = r.staged.subarray(0, r.stagedBytes);
    r.stagedBytes = 0;
    await this.#writeOut(id, r, data, r.stagedEnd);
  }

  /** Writes and hashes `data`, which ends at offset `end`. */
  async #writeOut(id: number, r: Receiving, data: Uint8Array, end: number): Promise<void> {
    if (r.broken || r.file === undefined) return;
    try {
      let done = 0;
      while (done < data.length) done += await r.file.write(data.subarray(done));
      r.hasher.update(data);
      this.#report.written(id, end);
    } catch (error) {
      // A full disk, most often: nothing half-written stays behind.
      r.broken = true;
      r.file.close();
      r.file = undefined;
      await Deno.remove(r.partial).catch(() => {});
      this.#report.failed(
        id,
        `Cannot write ${r.name}: ${(error as Error).message}`,
        writeFailure(error),
      );
    }
  }

  async #finish(id: number): Promise<void> {
    const r = this.#receiving.get(id);
    if (r === undefined || r.broken || r.file === undefined) return;
    await this.#flush(id, r);
    if (r.broken || r.file === undefined) return;
    this.#receiving.delete(id);
    try {
      await r.file.sync();
      r.file.close();
      r.file = undefined;
      const actual = toHex(r.hasher.digest());
      if (actual !== r.sha256) {
        await Deno.remove(r.partial).catch(() => {});
        this.#claimed.delete(r.partial);
        this.#report.failed(
          id,
          `The SHA-256 of "${r.name}" as received (${actual.slice(0, 16)}…) does not match ` +
            `the sender's (${r.sha256.slice(0, 16)}…); the file was removed`,
          "checksum",
        );
        return;
      }
      const path = await placeWithoutOverwriting(r.partial, this.#dir, r.name);
      this.#claimed.delete(r.partial);
      this.#report.received(id, path);
    } catch (error) {
      r.file?.close();
      await Deno.remove(r.partial).catch(() => {});
      this.#claimed.delete(r.partial);
      this.#report.failed(
        id,
        `Cannot store ${r.name}: ${(error as Error).message}`,
        writeFailure(error),
      );
    }
  }

  async #abort(id: number, keepPartial: boolean): Promise<void> {
    const r = this.#receiving.get(id);
    if (r === undefined) return;
    // What arrived stays in a partial file that will be resumed.
    if (keepPartial && !r.own) await this.#flush(id, r);
    this.#receiving.delete(id);
    r.file?.close();
    r.file = undefined;
    if (!keepPartial || r.own) await Deno.remove(r.partial).catch(() => {});
    this.#claimed.delete(r.partial);
    if (keepPartial) await this.sweepPartials();
  }
}

/**
 * Moves a finished file to `dir/name`, or `name (1).ext`, `name (2).ext`...
 * when taken. A hard link claims the name atomically, so two files arriving
 * at once never overwrite each other; where links are not supported it
 * falls back to checking and renaming.
 *
 * @param from the finished partial file
 * @param dir the download directory
 * @param name the offered name
 * @returns the path it landed at
 */
export async function placeWithoutOverwriting(
  from: string,
  dir: string,
  name: string,
): Promise<string> {
  for (let n = 0; n < 10_000; n++) {
    const candidate = join(dir, numberedName(name, n));
    try {
      await Deno.link(from, candidate);
      await Deno.remove(from);
      return candidate;
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) continue;
      if (await Deno.stat(candidate).then(() => true, () => false)) continue;
      await Deno.rename(from, candidate);
      return candidate;
    }
  }
  throw new Error(`Cannot find a free name for ${name} in ${dir}`);
}
