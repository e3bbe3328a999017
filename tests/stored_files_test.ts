import { assertEquals, assertStringIncludes } from "@std/assert";
import {
  DEFAULT_STORAGE_LIMITS,
  fileOfIdentity,
  type StoredFile,
  StoredFiles,
} from "../lib/server/stored_files.ts";

const LIMITS = { maxFileSize: 1000, quota: 1500, maxFiles: 3 };

function file(name: string, size: number): StoredFile {
  return { name, size, sha256: "ab".repeat(32), uploadedAt: "2025-01-02T03:04:05.000Z" };
}

Deno.test("StoredFiles lists, finds and sums a user's files, ignoring case", () => {
  const files = new StoredFiles(LIMITS);
  files.add("Alice", file("b.txt", 20));
  files.add("alice", file("A.txt", 10));
  files.add("Bob", file("c.txt", 5));
  assertEquals(files.list("ALICE").map((f) => f.name), ["A.txt", "b.txt"]);
  assertEquals(files.get("Alice", "a.TXT"), file("A.txt", 10));
  assertEquals(files.get("Alice", "c.txt"), undefined);
  assertEquals(files.get("Nobody", "a.txt"), undefined);
  assertEquals(files.usage("Alice"), 30);
  assertEquals(files.usage("Nobody"), 0);
  assertEquals(files.list("Nobody"), []);
});

Deno.test("StoredFiles.add() replaces a file of the same name", () => {
  const files = new StoredFiles(LIMITS);
  files.add("Alice", file("a.txt", 10));
  files.add("Alice", file("A.TXT", 99));
  assertEquals(files.list("Alice"), [file("A.TXT", 99)]);
  assertEquals(files.usage("Alice"), 99);
});

Deno.test("StoredFiles.remove() and removeUser() forget files", () => {
  const files = new StoredFiles(LIMITS);
  files.add("Alice", file("a.txt", 10));
  files.add("Alice", file("b.txt", 20));
  assertEquals(files.remove("alice", "A.txt"), file("a.txt", 10));
  assertEquals(files.remove("Alice", "a.txt"), undefined);
  assertEquals(files.remove("Nobody", "a.txt"), undefined);
  assertEquals(files.usage("Alice"), 20);
  files.removeUser("ALICE");
  assertEquals(files.list("Alice"), []);
});

Deno.test("StoredFiles.uploadProblem() enforces the largest file size", () => {
  const files = new StoredFiles(LIMITS);
  assertEquals(files.uploadProblem("Alice", "a.bin", 1000), undefined);
  const problem = files.uploadProblem("Alice", "a.bin", 1001);
  assertStringIncludes(problem ?? "", "1001");
  assertStringIncludes(problem ?? "", "1000");
});

Deno.test("StoredFiles.uploadProblem() enforces the quota, counting a replaced file out", () => {
  const files = new StoredFiles(LIMITS);
  files.add("Alice", file("a.bin", 800));
  assertEquals(files.uploadProblem("Alice", "b.bin", 700), undefined, "800 + 700 = 1500 fits");
  const problem = files.uploadProblem("Alice", "b.bin", 701);
  assertStringIncludes(problem ?? "", "1501");
  assertStringIncludes(problem ?? "", "1500");
  // Replacing a.bin frees its 800 bytes.
  assertEquals(files.uploadProblem("Alice", "A.BIN", 1000), undefined);
  // Another user's files do not count.
  assertEquals(files.uploadProblem("Bob", "b.bin", 1000), undefined);
});

Deno.test("StoredFiles.reserve() holds room for uploads in progress", () => {
  const files = new StoredFiles(LIMITS);
  files.reserve("Alice", 1000);
  assertStringIncludes(files.uploadProblem("alice", "b.bin", 501) ?? "", "quota");
  assertEquals(files.uploadProblem("Alice", "b.bin", 500), undefined);
  assertEquals(files.usage("Alice"), 0, "a reservation is not usage");
  files.reserve("Alice", -1000);
  assertEquals(files.uploadProblem("Alice", "b.bin", 1000), undefined);
  // Releasing more than was held leaves nothing reserved, not a credit.
  files.reserve("Alice", -500);
  files.reserve("Alice", 1000);
  assertEquals(files.uploadProblem("Alice", "b.bin", 501) !== undefined, true);
});

Deno.test("StoredFiles.uploadProblem() enforces maxFiles, but allows replacing a file", () => {
  const files = new StoredFiles(LIMITS);
  for (const name of ["a", "b", "c"]) files.add("Alice", file(`${name}.txt`, 1));
  const problem = files.uploadProblem("Alice", "d.txt", 1);
  assertStringIncludes(problem ?? "", "3 files");
  assertEquals(files.uploadProblem("Alice", "B.TXT", 1), undefined);
  files.remove("Alice", "a.txt");
  assertEquals(files.uploadProblem("Alice", "d.txt", 1), undefined);
});

Deno.test("DEFAULT_STORAGE_LIMITS are 100 MiB a file, 1 GiB and 100 files a user", () => {
  assertEquals(DEFAULT_STORAGE_LIMITS, {
    maxFileSize: 100 * 1024 * 1024,
    quota: 1024 * 1024 * 1024,
    maxFiles: 100,
  });
});

Deno.test("StoredFiles refuses an upload past maxStorage, everyone's files and uploads in progress together", () => {
  const files = new StoredFiles({ maxFileSize: 1000, quota: 1000, maxFiles: 10, maxStorage: 2000 });
  files.add("Alice", file("a.txt", 900));
  files.add("Bob", file("b.txt", 600));
  assertEquals(files.totalUsage, 1500);
  assertEquals(files.uploadProblem("Carol", "c.txt", 500), undefined);
  files.reserve("Carol", 500, 1);
  const full = files.uploadProblem("Dave", "d.txt", 1);
  assertEquals(
    full,
    "The server's storage is full: it holds 1500 of its 2000 bytes for everyone, too little " +
      'room for "d.txt" (1 bytes); try again once files are deleted',
  );
  // Replacing a file counts only the difference; deleting makes room.
  files.reserve("Carol", -500, -1);
  assertEquals(files.uploadProblem("Alice", "A.TXT", 1000), undefined);
  assertStringIncludes(files.uploadProblem("Carol", "new.txt", 501) ?? "", "storage is full");
  files.remove("Bob", "b.txt");
  files.removeUser("Alice");
  assertEquals(files.totalUsage, 0);
  assertEquals(files.uploadProblem("Dave", "d.txt", 1000), undefined);
});

Deno.test("fileOfIdentity() says a file is the identity's only if it was registered before it was stored", () => {
  const stored = { ...file("a.csv", 1), uploadedAt: "2026-01-02T00:00:00.000Z" };
  assertEquals(fileOfIdentity("2026-01-01T00:00:00.000Z", stored), true);
  assertEquals(fileOfIdentity("2026-01-02T00:00:00.000Z", stored), true, "the same instant");
  assertEquals(fileOfIdentity("2026-01-03T00:00:00.000Z", stored), false, "a later owner");
  assertEquals(fileOfIdentity(undefined, stored), false, "nobody holds the name");
});
