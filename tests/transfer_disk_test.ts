/**
 * TransferDisk on a real file system: chunks cut from blocks read ahead,
 * chunks gathered into blocks before they are written, and what is staged
 * reaching the partial file when a transfer stops or the client closes.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { sha256 } from "@noble/hashes/sha2";
import {
  FILE_BLOCK_BYTES,
  partialPath,
  TransferDisk,
  type TransferDiskOptions,
} from "../lib/io/transfer_disk.ts";
import type { FileOperation } from "../lib/client/outbox.ts";
import type { FileFailure } from "../lib/client/file_transfers.ts";
import { toHex } from "../lib/hex.ts";
import { tempDir } from "./_processes.ts";

const CHUNK = 32 * 1024;

/** Deterministic bytes that differ from offset to offset. */
function content(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + (i >> 11)) & 0xff;
  return bytes;
}

/** The operation that starts receiving a file from Alice. */
function receiveBegin(id: number, name: string, size: number, sha256: string): FileOperation {
  return { type: "receive_begin", id, peer: "Alice", name, size, sha256 };
}

/** Everything a TransferDisk reported, in order. */
class Reports {
  reads: { id: number; offset: number; data: Uint8Array }[] = [];
  ready: { id: number; offset: number }[] = [];
  written: { id: number; upTo: number }[] = [];
  received: { id: number; path: string }[] = [];
  failed: { id: number; problem: string; failure: FileFailure }[] = [];
  files(dir: string, options: TransferDiskOptions = {}): TransferDisk {
    return new TransferDisk(dir, {
      // A copy: the driver's data is a view valid for the call.
      read: (id, offset, data) => this.reads.push({ id, offset, data: data.slice() }),
      ready: (id, offset) => this.ready.push({ id, offset }),
      written: (id, upTo) => this.written.push({ id, upTo }),
      received: (id, path) => this.received.push({ id, path }),
      failed: (id, problem, failure) => this.failed.push({ id, problem, failure }),
    }, options);
  }
}

Deno.test("TransferDisk reads a file in chunks, in order and after a jump back", async () => {
  await using temp = await tempDir("switchboard_files_");
  const dir = temp.path;
  const data = content(2 * FILE_BLOCK_BYTES + 12_345);
  const path = join(dir, "send.bin");
  await Deno.writeFile(path, data);
  const reports = new Reports();
  const files = reports.files(join(dir, "downloads"));
  const offsets: number[] = [];
  for (let offset = 0; offset < data.length; offset += CHUNK) offsets.push(offset);
  // A resume: back to the middle of the first block, then on across a block edge.
  offsets.push(CHUNK * 3 + 100, FILE_BLOCK_BYTES - 50);
  for (const offset of offsets) {
    const length = Math.min(CHUNK, data.length - offset);
    files.run({ type: "read", id: 1, path, offset, length });
  }
  files.run({ type: "send_end", id: 1 });
  await files.close();
  assertEquals(reports.failed, []);
  assertEquals(reports.reads.map((r) => r.offset), offsets);
  for (const { offset, data: chunk } of reports.reads) {
    assertEquals(chunk, data.subarray(offset, offset + chunk.length), `chunk at ${offset}`);
  }
});

Deno.test("TransferDisk reports a file that became shorter than a chunk asked for", async () => {
  await using temp = await tempDir("switchboard_files_");
  const dir = temp.path;
  const path = join(dir, "send.bin");
  await Deno.writeFile(path, content(CHUNK + 10));
  const reports = new Reports();
  const files = reports.files(dir);
  files.run({ type: "read", id: 7, path, offset: CHUNK, length: CHUNK });
  await files.close();
  assertEquals(reports.reads, []);
  assertEquals(reports.failed.length, 1);
  assertStringIncludes(reports.failed[0].problem, "became shorter");
});

Deno.test("TransferDisk writes chunks gathered in blocks and places the checked file", async () => {
  await using temp = await tempDir("switchboard_files_");
  const dir = temp.path;
  const data = content(FILE_BLOCK_BYTES * 2 + 777);
  const sha = toHex(sha256(data));
  const reports = new Reports();
  const files = reports.files(dir);
  files.run(receiveBegin(2, "got.bin", data.length, sha));
  for (let offset = 0; offset < data.length; offset += CHUNK) {
    const chunk = data.subarray(offset, Math.min(data.length, offset + CHUNK));
    // Each chunk in an array of its own that is dropped (or reused) after the call.
    files.run({ type: "write", id: 2, offset, data: chunk.slice() });
  }
  files.run({ type: "receive_end", id: 2 });
  await files.close();
  assertEquals(reports.failed, []);
  assertEquals(reports.received, [{ id: 2, path: join(dir, "got.bin") }]);
  assertEquals(await Deno.readFile(join(dir, "got.bin")), data);
  // Progress came block by block, ending at the size.
  const ups = reports.written.map((w) => w.upTo);
  assertEquals(ups.at(-1), data.length);
  assert(ups.length <= 4, `${ups.length} progress reports for 3 blocks`);
  assertEquals(ups, [...ups].sort((a, b) => a - b));
});

Deno.test("TransferDisk keeps what is staged in the partial file when a transfer stops", async () => {
  await using temp = await tempDir("switchboard_files_");
  const dir = temp.path;
  const data = content(FILE_BLOCK_BYTES + 5 * CHUNK);
  const sha = toHex(sha256(data));
  const reports = new Reports();
  const files = reports.files(dir);
  files.run(receiveBegin(3, "big.bin", data.length, sha));
  const arrived = FILE_BLOCK_BYTES + 3 * CHUNK;
  for (let offset = 0; offset < arrived; offset += CHUNK) {
    files.run({ type: "write", id: 3, offset, data: data.slice(offset, offset + CHUNK) });
  }
  // The peer was lost: the partial file keeps every byte that arrived, staged ones too.
  files.run({ type: "receive_abort", id: 3, keepPartial: true });
  await files.close();
  const partial = partialPath(dir, "big.bin", sha);
  assertEquals(await Deno.readFile(partial), data.subarray(0, arrived));

  // A new transfer of the same content resumes from there and completes.
  const again = new Reports();
  const resumed = again.files(dir);
  resumed.run(receiveBegin(4, "big.bin", data.length, sha));
  await resumed.close();
  assertEquals(again.ready, [{ id: 4, offset: arrived }]);
  const more = again.files(dir);
  more.run(receiveBegin(5, "big.bin", data.length, sha));
  for (let offset = arrived; offset < data.length; offset += CHUNK) {
    more.run({ type: "write", id: 5, offset, data: data.slice(offset, offset + CHUNK) });
  }
  more.run({ type: "receive_end", id: 5 });
  await more.close();
  assertEquals(again.failed, []);
  assertEquals(await Deno.readFile(join(dir, "big.bin")), data);
});

Deno.test("TransferDisk.close() writes what is staged into the partial file", async () => {
  await using temp = await tempDir("switchboard_files_");
  const dir = temp.path;
  const data = content(3 * CHUNK);
  const sha = toHex(sha256(data));
  const reports = new Reports();
  const files = reports.files(dir);
  files.run(receiveBegin(6, "c.bin", 10 * CHUNK, sha));
  files.run({ type: "write", id: 6, offset: 0, data: data.slice() });
  await files.close();
  assertEquals(await Deno.readFile(partialPath(dir, "c.bin", sha)), data);
  assertEquals(reports.written.at(-1), { id: 6, upTo: data.length });
});

Deno.test("TransferDisk removes a file whose SHA-256 does not match, staged data included", async () => {
  await using temp = await tempDir("switchboard_files_");
  const dir = temp.path;
  const data = content(2 * CHUNK);
  const reports = new Reports();
  const files = reports.files(dir);
  const sha = "00".repeat(32);
  files.run(receiveBegin(8, "bad.bin", data.length, sha));
  files.run({ type: "write", id: 8, offset: 0, data: data.slice() });
  files.run({ type: "receive_end", id: 8 });
  await files.close();
  assertEquals(reports.received, []);
  assertEquals(reports.failed.length, 1);
  assertStringIncludes(reports.failed[0].problem, "does not match");
  assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), []);
});

Deno.test("TransferDisk refuses to begin a file larger than the free space, creating nothing", async () => {
  await using temp = await tempDir("switchboard_files_");
  const dir = join(temp.path, "downloads");
  const reports = new Reports();
  const files = reports.files(dir, { freeBytes: () => Promise.resolve(1000) });
  const sha = "ab".repeat(32);
  files.run(receiveBegin(1, "big.bin", 2 ** 40, sha));
  // A partial file of 600 bytes already there: only the rest (500) must fit.
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeFile(partialPath(dir, "half.bin", sha), new Uint8Array(600));
  files.run(receiveBegin(2, "half.bin", 1100, sha));
  await files.close();
  assertEquals(reports.failed.map((f) => [f.id, f.failure]), [[1, "no_room"]]);
  assertEquals(
    reports.failed[0].problem,
    `Not enough free space in ${dir} for "big.bin": it needs 1099511627776 more bytes, 1000 are free`,
  );
  assertEquals(reports.ready, [{ id: 2, offset: 600 }]);
  const names = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  assertEquals(names, [`.half.bin.${sha.slice(0, 16)}.part`], "no partial file for big.bin");
});

Deno.test("TransferDisk removes partial files over --keep-partial, and the oldest beyond the bound", async () => {
  await using temp = await tempDir("switchboard_files_");
  const dir = temp.path;
  const now = Date.now() / 1000;
  const plant = async (name: string, ageSeconds: number) => {
    const path = join(dir, `.${name}.0123456789abcdef.part`);
    await Deno.writeFile(path, new Uint8Array(10));
    await Deno.utime(path, now - ageSeconds, now - ageSeconds);
  };
  await plant("old", 7200);
  for (let i = 0; i < 5; i++) await plant(`recent${i}`, 10 * (i + 1));
  await Deno.writeFile(join(dir, "kept.txt"), new Uint8Array(1)); // not a partial file
  const files = new Reports().files(dir, { keepPartialMs: 3_600_000, maxPartialFiles: 3 });
  // The constructor began a sweep too: between them, the old one and the 2 oldest recent ones go.
  const removed = await files.sweepPartials();
  assert(removed <= 3, `removed ${removed}`);
  const names = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  assertEquals(names.sort(), [
    ".recent0.0123456789abcdef.part",
    ".recent1.0123456789abcdef.part",
    ".recent2.0123456789abcdef.part",
    "kept.txt",
  ]);
  await files.close();
});
