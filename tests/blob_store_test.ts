import { assert, assertEquals, assertNotEquals, assertRejects } from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { join } from "@std/path";
import { VirtualClock } from "../lib/clock.ts";
import {
  BlobStore,
  BlobStoreError,
  FILES_DIR,
  INDEX_FILE,
  type Upload,
} from "../lib/io/blob_store.ts";
import { toHex } from "../lib/hex.ts";
import { SeededRandom } from "../lib/random.ts";

const T0 = Date.UTC(2024, 4, 1, 12, 0, 0);

async function withStore(
  fn: (store: BlobStore, dataDir: string, clock: VirtualClock) => Promise<void>,
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "switchboard_files_" });
  const clock = new VirtualClock(T0);
  const store = await BlobStore.open(dataDir, { clock });
  try {
    await fn(store, dataDir, clock);
  } finally {
    await store.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

function bytes(length: number, seed = 1): Uint8Array {
  return new SeededRandom(seed).bytes(length);
}

function hashOf(data: Uint8Array): string {
  return toHex(sha256(data));
}

async function upload(
  store: BlobStore,
  user: string,
  name: string,
  data: Uint8Array,
  chunk = 1000,
): Promise<void> {
  const up = await store.beginUpload(user, name);
  for (let i = 0; i < data.length; i += chunk) await up.write(data.subarray(i, i + chunk));
  await up.commit({ size: data.length, sha256: hashOf(data) });
}

async function listNames(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

/** Every file and directory under `dir`, as paths relative to it. */
async function tree(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = prefix + entry.name;
    out.push(path);
    if (entry.isDirectory) out.push(...await tree(join(dir, entry.name), path + "/"));
  }
  return out.sort();
}

async function userDir(dataDir: string): Promise<string> {
  const dirs = await listNames(join(dataDir, FILES_DIR));
  assertEquals(dirs.length, 1, dirs.join(", "));
  return join(dataDir, FILES_DIR, dirs[0]);
}

async function assertCode(promise: Promise<unknown>, code: string): Promise<BlobStoreError> {
  const error = await assertRejects(() => promise, BlobStoreError);
  assertEquals(error.code, code, error.message);
  return error;
}

Deno.test("BlobStore round-trips a file uploaded in chunks", async () => {
  await withStore(async (store, dataDir) => {
    const data = bytes(150_001);
    const up = await store.beginUpload("Alice", "readings.csv");
    for (let i = 0; i < data.length; i += 7_777) await up.write(data.subarray(i, i + 7_777));
    assertEquals(up.size, data.length);
    assertEquals(store.pendingUsage("alice"), data.length);
    const info = await up.commit({ size: data.length, sha256: hashOf(data).toUpperCase() });
    const expected = {
      name: "readings.csv",
      size: data.length,
      sha256: hashOf(data),
      uploadedAt: new Date(T0).toISOString(),
    };
    assertEquals(info, expected);
    assertEquals(store.list("Alice"), [expected]);
    assertEquals(store.list("ALICE"), [expected]);
    assertEquals(store.get("alice", "READINGS.CSV"), expected);
    assertEquals(store.usage("alice"), data.length);
    assertEquals(store.pendingUsage("alice"), 0);
    assertEquals(store.allUsage(), new Map([["Alice", { files: 1, bytes: data.length }]]));

    const download = await store.openRead("alice", "readings.csv", { chunkSize: 60_000 });
    assertEquals(download.info, expected);
    const chunks: Uint8Array[] = [];
    for await (const chunk of download) chunks.push(chunk);
    assertEquals(chunks.map((c) => c.length), [60_000, 60_000, 30_001]);
    const back = await store.readAll("alice", "readings.csv");
    assertEquals(back, data);
    assertEquals(hashOf(back), info.sha256);

    const dir = await userDir(dataDir);
    const files = await listNames(dir);
    assertEquals(files.length, 2);
    assert(files.includes(INDEX_FILE));
    assert(files.some((f) => /^[0-9a-f]{32}\.blob$/.test(f)), files.join(", "));
  });
});

Deno.test("BlobStore keeps files across a reopen", async () => {
  await withStore(async (store, dataDir) => {
    await upload(store, "alice", "b.txt", bytes(10, 2));
    await upload(store, "alice", "A.txt", bytes(0));
    await upload(store, "bob", "c.txt", bytes(5, 3));
    const again = await BlobStore.open(dataDir);
    assertEquals(again.cleanup, []);
    assertEquals(again.list("alice"), store.list("alice"));
    assertEquals(again.list("alice").map((f) => f.name), ["A.txt", "b.txt"]);
    assertEquals(again.list("bob"), store.list("bob"));
    assertEquals(await again.readAll("bob", "c.txt"), bytes(5, 3));
    assertEquals((await again.readAll("alice", "a.txt")).length, 0);
  });
});

Deno.test("BlobStore.beginUpload() replaces a file of the same name in any case", async () => {
  await withStore(async (store, dataDir, clock) => {
    await upload(store, "alice", "report.csv", bytes(5000, 1));
    clock.advance(60_000);
    await upload(store, "alice", "Report.CSV", bytes(300, 2));
    const list = store.list("alice");
    assertEquals(list.length, 1);
    assertEquals(list[0].name, "Report.CSV");
    assertEquals(list[0].size, 300);
    assertEquals(list[0].uploadedAt, new Date(T0 + 60_000).toISOString());
    assertEquals(await store.readAll("alice", "report.csv"), bytes(300, 2));
    assertEquals(store.usage("alice"), 300);
    // The old content is gone from the disk.
    assertEquals((await listNames(await userDir(dataDir))).length, 2);
  });
});

Deno.test("Upload.commit() rejects a checksum mismatch and leaves nothing behind", async () => {
  await withStore(async (store, dataDir) => {
    await upload(store, "alice", "keep.txt", bytes(10, 9));
    const before = await tree(join(dataDir, FILES_DIR));
    const data = bytes(1234);
    const up = await store.beginUpload("alice", "new.bin");
    await up.write(data);
    const wrong = hashOf(bytes(1234, 2));
    const error = await assertCode(
      up.commit({ size: data.length, sha256: wrong }),
      "checksum_mismatch",
    );
    assertEquals(error.message, 'File "new.bin" does not match its announced SHA-256 checksum');
    assertEquals(await tree(join(dataDir, FILES_DIR)), before);
    assertEquals(store.list("alice").map((f) => f.name), ["keep.txt"]);
    assertEquals(store.pendingUsage("alice"), 0);
    await up.abort();
    await assertCode(up.write(data), "aborted");
    await assertCode(up.commit({ size: data.length, sha256: hashOf(data) }), "aborted");
  });
});

Deno.test("Upload.commit() rejects a size mismatch and leaves nothing behind", async () => {
  await withStore(async (store, dataDir) => {
    const data = bytes(100);
    const up = await store.beginUpload("alice", "short.bin");
    await up.write(data);
    const error = await assertCode(up.commit({ size: 101, sha256: hashOf(data) }), "size_mismatch");
    assertEquals(error.message, 'File "short.bin" arrived with 100 bytes, not the 101 announced');
    assertEquals(await listNames(await userDir(dataDir)), []);
    assertEquals(store.list("alice"), []);
    assertEquals(await BlobStore.open(dataDir).then((s) => s.cleanup.length), 0);
  });
});

Deno.test("Upload.abort() removes the temp file and is safe to repeat", async () => {
  await withStore(async (store, dataDir) => {
    const up = await store.beginUpload("alice", "x.bin");
    await up.write(bytes(500));
    const dir = await userDir(dataDir);
    assertEquals((await listNames(dir)).length, 1);
    await Promise.all([up.abort(), up.abort()]);
    await up.abort();
    assertEquals(await listNames(dir), []);
    assertEquals(store.list("alice"), []);
    assertEquals(store.pendingUsage("alice"), 0);
    await assertCode(up.write(bytes(1)), "aborted");
  });
});

Deno.test("Upload.write() takes overlapping calls in order and copies the chunk", async () => {
  await withStore(async (store) => {
    const up = await store.beginUpload("alice", "order.bin");
    const buffer = new Uint8Array(4);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 50; i++) {
      buffer.fill(i);
      writes.push(up.write(buffer));
    }
    await Promise.all(writes);
    const expected = new Uint8Array(200);
    for (let i = 0; i < 50; i++) expected.fill(i, i * 4, i * 4 + 4);
    await up.commit({ size: 200, sha256: hashOf(expected) });
    assertEquals(await store.readAll("alice", "order.bin"), expected);
  });
});

Deno.test("BlobStore.delete() removes a file and its index entry", async () => {
  await withStore(async (store, dataDir) => {
    await upload(store, "alice", "a.txt", bytes(10));
    await upload(store, "alice", "b.txt", bytes(20));
    assertEquals(await store.delete("alice", "A.TXT"), true);
    assertEquals(await store.delete("alice", "a.txt"), false);
    assertEquals(await store.delete("alice", "../a.txt"), false);
    assertEquals(await store.delete("nobody", "a.txt"), false);
    assertEquals(store.list("alice").map((f) => f.name), ["b.txt"]);
    assertEquals(store.get("alice", "a.txt"), undefined);
    assertEquals(store.usage("alice"), 20);
    assertEquals((await listNames(await userDir(dataDir))).length, 2);
    const error = await assertCode(store.openRead("alice", "a.txt"), "not_found");
    assertEquals(error.message, 'File "a.txt" was not found');
    assertEquals((await BlobStore.open(dataDir)).list("alice").map((f) => f.name), ["b.txt"]);
  });
});

Deno.test("BlobStore.openRead() reads the content it opened even if it is replaced", async () => {
  await withStore(async (store) => {
    await upload(store, "alice", "f.bin", bytes(100_000, 1));
    const download = await store.openRead("alice", "f.bin", { chunkSize: 1000 });
    await upload(store, "alice", "f.bin", bytes(10, 2));
    await store.delete("alice", "f.bin");
    const chunks: Uint8Array[] = [];
    for await (const chunk of download) chunks.push(chunk);
    assertEquals(chunks.length, 100);
    const all = new Uint8Array(100_000);
    chunks.forEach((chunk, i) => all.set(chunk, i * 1000));
    assertEquals(all, bytes(100_000, 1));
  });
});

Deno.test("BlobStore.openRead() closes the file when the reader stops early or closes", async () => {
  await withStore(async (store) => {
    await upload(store, "alice", "f.bin", bytes(10_000));
    const download = await store.openRead("alice", "f.bin", { chunkSize: 100 });
    for await (const chunk of download) {
      assertEquals(chunk.length, 100);
      break;
    }
    (await store.openRead("alice", "f.bin")).close();
    // The resource sanitizer fails this test if a file stayed open.
  });
});

Deno.test("BlobStore.openRead() rejects a bad chunk size", async () => {
  await withStore(async (store) => {
    await upload(store, "alice", "f.bin", bytes(10));
    for (const chunkSize of [0, -1, 1.5, NaN]) {
      await assertRejects(() => store.openRead("alice", "f.bin", { chunkSize }), RangeError);
    }
  });
});

Deno.test("BlobStore keeps users apart", async () => {
  await withStore(async (store, dataDir) => {
    await upload(store, "alice", "same.txt", bytes(10, 1));
    await upload(store, "bob", "same.txt", bytes(20, 2));
    assertEquals(await store.readAll("alice", "same.txt"), bytes(10, 1));
    assertEquals(await store.readAll("bob", "same.txt"), bytes(20, 2));
    assertEquals(store.get("carol", "same.txt"), undefined);
    await assertCode(store.openRead("carol", "same.txt"), "not_found");
    assertEquals(await store.deleteUser("alice"), 1);
    assertEquals(await store.deleteUser("alice"), 0);
    assertEquals(store.list("alice"), []);
    assertEquals(await store.readAll("bob", "same.txt"), bytes(20, 2));
    assertEquals((await listNames(join(dataDir, FILES_DIR))).length, 1);
    const again = await BlobStore.open(dataDir);
    assertEquals(again.list("alice"), []);
    assertEquals(again.list("bob").length, 1);
  });
});

Deno.test("BlobStore.deleteUser() removes a directory an aborted upload or an earlier run left", async () => {
  await withStore(async (store, dataDir) => {
    const aborted = await store.beginUpload("alice", "gone.bin");
    await aborted.abort();
    const dirName = toHex(sha256(new TextEncoder().encode("alice")));
    await Deno.mkdir(join(dataDir, FILES_DIR, dirName), { recursive: true });
    const again = await BlobStore.open(dataDir);
    assertEquals(await again.deleteUser("alice"), 0);
    assertEquals(await listNames(join(dataDir, FILES_DIR)), []);
    await Deno.mkdir(join(dataDir, FILES_DIR, dirName));
    assertEquals(await store.deleteUser("alice"), 0);
    assertEquals(await listNames(join(dataDir, FILES_DIR)), [], "the upload's directory went too");
    assertEquals(await store.deleteUser("bob"), 0, "a user with no directory: nothing to remove");
  });
});

Deno.test("BlobStore never uses a user's or file's raw name on disk", async () => {
  await withStore(async (store, dataDir) => {
    const users = ["../../etc", "a/b", "..", "", "\0", "CON", "C:\\x", "é".repeat(300), "x\u202ey"];
    for (const user of users) await upload(store, user, "Ünïcödé name.txt", bytes(3));
    const paths = await tree(join(dataDir, FILES_DIR));
    for (const path of paths) {
      assert(
        /^[0-9a-f]{64}(\/(index\.json|[0-9a-f]{32}\.blob))?$/.test(path),
        `unexpected path ${JSON.stringify(path)}`,
      );
    }
    assertEquals(paths.filter((p) => !p.includes("/")).length, users.length);
    for (const user of users) assertEquals(store.list(user).length, 1, JSON.stringify(user));
    const again = await BlobStore.open(dataDir);
    assertEquals(again.cleanup, []);
    for (const user of users) assertEquals(again.list(user).length, 1, JSON.stringify(user));
  });
});

Deno.test("BlobStore.beginUpload() rejects invalid file names", async () => {
  await withStore(async (store, dataDir) => {
    for (const name of ["../x", "..", "/etc/passwd", "a\\b", "C:x", ".hidden", "", "nul.txt"]) {
      const error = await assertCode(store.beginUpload("alice", name), "invalid_name");
      assert(!error.message.includes(dataDir), error.message);
    }
    assertEquals(await listNames(join(dataDir, FILES_DIR)), []);
  });
});

Deno.test("BlobStore keeps concurrent uploads of the same name apart: one wins whole", async () => {
  await withStore(async (store, dataDir) => {
    const random = new SeededRandom(4);
    for (let round = 0; round < 10; round++) {
      const contents = [bytes(20_000, round * 2 + 1), bytes(30_000, round * 2 + 2)];
      const uploads: Upload[] = await Promise.all(
        contents.map(() => store.beginUpload("alice", "race.bin")),
      );
      // Interleave the two uploads' chunks.
      for (let offset = 0; offset < 30_000; offset += 4096) {
        const order = random.next() < 0.5 ? [0, 1] : [1, 0];
        await Promise.all(
          order.map((i) => uploads[i].write(contents[i].subarray(offset, offset + 4096))),
        );
      }
      const first = random.next() < 0.5 ? 0 : 1;
      const commits = [first, 1 - first].map((i) =>
        uploads[i].commit({ size: contents[i].length, sha256: hashOf(contents[i]) })
      );
      const infos = await Promise.all(commits);
      // Whichever commit reached the index last won, and the index matches its content.
      const stored = await store.readAll("alice", "race.bin");
      const info = store.get("alice", "race.bin")!;
      const winner = [first, 1 - first].findIndex((i) => hashOf(contents[i]) === info.sha256);
      assert(winner >= 0, "the stored file is neither upload");
      assertEquals(info, infos[winner]);
      assertEquals(stored, contents[[first, 1 - first][winner]]);
      assertEquals(hashOf(stored), info.sha256);
      assertEquals(stored.length, info.size);
      assertEquals(store.list("alice").length, 1);
      assertEquals((await listNames(await userDir(dataDir))).length, 2);
    }
  });
});

Deno.test("BlobStore keeps the upload committed last, not the one begun last", async () => {
  await withStore(async (store) => {
    const early = await store.beginUpload("alice", "f.txt");
    const late = await store.beginUpload("alice", "F.TXT");
    await late.write(bytes(10, 2));
    await late.commit({ size: 10, sha256: hashOf(bytes(10, 2)) });
    await early.write(bytes(20, 1));
    await early.commit({ size: 20, sha256: hashOf(bytes(20, 1)) });
    assertEquals(store.get("alice", "f.txt")?.name, "f.txt");
    assertEquals(await store.readAll("alice", "f.txt"), bytes(20, 1));
  });
});

Deno.test("BlobStore.deleteUser() cancels the user's uploads in progress", async () => {
  await withStore(async (store, dataDir) => {
    await upload(store, "alice", "old.txt", bytes(10));
    const open = await store.beginUpload("alice", "open.txt");
    await open.write(bytes(10));
    const committing = await store.beginUpload("alice", "late.txt");
    await committing.write(bytes(5));
    const other = await store.beginUpload("bob", "b.txt");
    const [deleted, late] = await Promise.all([
      store.deleteUser("alice"),
      committing.commit({ size: 5, sha256: hashOf(bytes(5)) }).catch((error) => error),
    ]);
    assertEquals(deleted, 1);
    assert(late instanceof BlobStoreError && late.code === "aborted", String(late));
    await assertCode(open.write(bytes(1)), "aborted");
    assertEquals(store.list("alice"), []);
    assertEquals(store.pendingUsage("alice"), 0);
    await other.write(bytes(3));
    await other.commit({ size: 3, sha256: hashOf(bytes(3)) });
    assertEquals((await listNames(join(dataDir, FILES_DIR))).length, 1);
  });
});

Deno.test("BlobStore.close() aborts open uploads and refuses new ones", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "switchboard_files_" });
  try {
    const store = await BlobStore.open(dataDir);
    const up = await store.beginUpload("alice", "x.bin");
    await up.write(bytes(10));
    await store.close();
    await assertCode(up.write(bytes(1)), "aborted");
    await assertRejects(() => store.beginUpload("alice", "y.bin"), TypeError);
    assertEquals(await tree(join(dataDir, FILES_DIR)), [
      (await listNames(join(dataDir, FILES_DIR)))[0],
    ]);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("BlobStore.open() cleans up what a crash left behind", async () => {
  await withStore(async (store, dataDir) => {
    await upload(store, "alice", "keep.txt", bytes(10, 1));
    await upload(store, "alice", "lost.txt", bytes(20, 2));
    await upload(store, "alice", "torn.txt", bytes(30, 3));
    await upload(store, "bob", "fine.txt", bytes(40, 4));
    const aliceDir = join(dataDir, FILES_DIR, toHex(sha256(new TextEncoder().encode("alice"))));
    const index = JSON.parse(await Deno.readTextFile(join(aliceDir, INDEX_FILE)));
    const blobOf = (name: string) =>
      index.files.find((f: { name: string }) => f.name === name).blob;
    // A stale index entry whose content is gone, one whose content is cut short,
    // an unfinished upload, an unfinished index write and unlisted content.
    await Deno.remove(join(aliceDir, blobOf("lost.txt")));
    await Deno.truncate(join(aliceDir, blobOf("torn.txt")), 7);
    await Deno.writeFile(join(aliceDir, ".upload-00112233445566778899aabbccddeeff.part"), bytes(9));
    await Deno.writeTextFile(join(aliceDir, ".index.json.tmp-0011223344556677"), "{");
    await Deno.writeFile(join(aliceDir, "ffeeddccbbaa99887766554433221100.blob"), bytes(9));
    // A user directory whose first upload never committed.
    const carolDir = join(dataDir, FILES_DIR, toHex(sha256(new TextEncoder().encode("carol"))));
    await Deno.mkdir(carolDir);
    await Deno.writeFile(join(carolDir, ".upload-0123456789abcdef0123456789abcdef.part"), bytes(9));
    // A user directory with a corrupt index, and something that is not ours.
    const daveDir = join(dataDir, FILES_DIR, "d".repeat(64));
    await Deno.mkdir(daveDir);
    await Deno.writeTextFile(join(daveDir, INDEX_FILE), "{ not json");
    await Deno.writeTextFile(join(dataDir, FILES_DIR, "README"), "hello");

    const again = await BlobStore.open(dataDir);
    const cleanup = again.cleanup.join("\n");
    assertEquals(again.cleanup.length, 7, cleanup);
    assert(
      cleanup.includes('Dropped file "lost.txt" of "alice" from the index: its content is missing'),
      cleanup,
    );
    assert(
      cleanup.includes(
        'Dropped file "torn.txt" of "alice" from the index: its content has 7 bytes, not 30',
      ),
      cleanup,
    );
    assert(
      cleanup.includes("Removed unfinished upload .upload-00112233445566778899aabbccddeeff.part"),
      cleanup,
    );
    assert(cleanup.includes("Removed unfinished index write"), cleanup);
    assert(
      cleanup.includes("Removed unlisted content ffeeddccbbaa99887766554433221100.blob"),
      cleanup,
    );
    assert(cleanup.includes("Removed unfinished upload .upload-0123456789abcdef"), cleanup);
    assert(
      cleanup.includes(`Set aside user directory ${"d".repeat(64)} as ${"d".repeat(64)}.corrupt-`),
      cleanup,
    );

    assertEquals(again.list("alice").map((f) => f.name), ["keep.txt"]);
    assertEquals(await again.readAll("alice", "keep.txt"), bytes(10, 1));
    assertEquals(again.list("bob").map((f) => f.name), ["fine.txt"]);
    assertEquals((await listNames(aliceDir)).length, 2);
    const top = await listNames(join(dataDir, FILES_DIR));
    assertEquals(top.length, 4, top.join(", "));
    assert(top.includes("README"));
    assert(!top.includes(carolDir.slice(-64)));
    // Cleaning converges: a second open finds nothing to do.
    assertEquals((await BlobStore.open(dataDir)).cleanup, []);
    // The fixed index is durable.
    const fixed = JSON.parse(await Deno.readTextFile(join(aliceDir, INDEX_FILE)));
    assertEquals(fixed.files.map((f: { name: string }) => f.name), ["keep.txt"]);
  });
});

Deno.test("BlobStore.open() sets aside an index that belongs to another user", async () => {
  await withStore(async (store, dataDir) => {
    await upload(store, "alice", "a.txt", bytes(10));
    const dir = await userDir(dataDir);
    const index = JSON.parse(await Deno.readTextFile(join(dir, INDEX_FILE)));
    index.user = "mallory";
    await Deno.writeTextFile(join(dir, INDEX_FILE), JSON.stringify(index));
    const again = await BlobStore.open(dataDir);
    assertEquals(again.cleanup.length, 1);
    assert(again.cleanup[0].includes("belongs to another directory"), again.cleanup[0]);
    assertEquals(again.list("alice"), []);
    assertEquals(again.list("mallory"), []);
  });
});

Deno.test("BlobStore handles file names that are special in JavaScript objects", async () => {
  await withStore(async (store, dataDir) => {
    for (const name of ["__proto__", "constructor", "toString", "hasOwnProperty"]) {
      await upload(store, "alice", name, new TextEncoder().encode(name));
    }
    const again = await BlobStore.open(dataDir);
    assertEquals(again.list("alice").map((f) => f.name), [
      "__proto__",
      "constructor",
      "hasOwnProperty",
      "toString",
    ]);
    assertEquals(new TextDecoder().decode(await again.readAll("alice", "__proto__")), "__proto__");
  });
});

Deno.test("BlobStoreError messages name the file, never a path on the server", async () => {
  await withStore(async (store, dataDir) => {
    const up = await store.beginUpload("alice", "a.txt");
    await up.write(bytes(3));
    const errors = [
      await assertCode(up.commit({ size: 4, sha256: "00" }), "size_mismatch"),
      await assertCode(store.openRead("alice", "nothing.txt"), "not_found"),
      await assertCode(store.beginUpload("alice", "a/b"), "invalid_name"),
    ];
    for (const error of errors) {
      assert(!error.message.includes(dataDir), error.message);
      assert(!/[0-9a-f]{32}/.test(error.message), error.message);
      assertNotEquals(error.message.at(-1), ".");
    }
  });
});

Deno.test("BlobStore upload commit dates the file no earlier than notBefore (another clock's registration)", async () => {
  await withStore(async (store) => {
    const data = bytes(10);
    const early = await store.beginUpload("alice", "a.bin");
    await early.write(data);
    const later = T0 + 1500;
    const file = await early.commit({ size: 10, sha256: hashOf(data), notBefore: later });
    assertEquals(file.uploadedAt, new Date(later).toISOString());
    const now = await store.beginUpload("alice", "b.bin");
    await now.write(data);
    const plain = await now.commit({ size: 10, sha256: hashOf(data), notBefore: T0 - 1 });
    assertEquals(plain.uploadedAt, new Date(T0).toISOString());
  });
});
