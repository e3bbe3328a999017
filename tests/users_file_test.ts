import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { join } from "@std/path";
import {
  defaultUsersPath,
  loadUsers,
  saveUsers,
  type UserRecord,
  UsersFile,
  UsersFileError,
} from "../lib/io/users_file.ts";
import { hashPassword, verifyPassword } from "../lib/server/password_hash.ts";

const HASH = await hashPassword("correct horse battery staple", {
  iterations: 1000,
  salt: new Uint8Array(16),
});
const CREATED = "2025-01-02T03:04:05.000Z";

function user(name: string, overrides: Partial<UserRecord> = {}): UserRecord {
  return { name, passwordHash: HASH, createdAt: CREATED, ...overrides };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_users_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("defaultUsersPath() is users.json in the data directory", () => {
  assertEquals(defaultUsersPath("./data"), "data/users.json");
  assertEquals(defaultUsersPath("/var/lib/sb"), "/var/lib/sb/users.json");
});

Deno.test("UsersFile looks users up ignoring case and keeps the name as added", () => {
  const users = new UsersFile([user("Alice Smith"), user("bob")]);
  assertEquals(users.size, 2);
  assertEquals(users.get("alice smith")?.name, "Alice Smith");
  assertEquals(users.get("ALICE SMITH")?.name, "Alice Smith");
  assert(users.has("BOB"));
  assertEquals(users.get("carol"), undefined);
  assertEquals(users.records().map((u) => u.name), ["Alice Smith", "bob"]);
});

Deno.test("UsersFile looks up NFC and NFD spellings alike", () => {
  const users = new UsersFile([user("Am\u00e9lie")]);
  assertEquals(users.get("AME\u0301LIE")?.name, "Am\u00e9lie");
});

Deno.test("UsersFile.add() throws a RangeError for a name taken in another case", () => {
  const users = new UsersFile([user("Alice")]);
  const error = assertThrows(() => users.add(user("ALICE")), RangeError);
  assertStringIncludes(error.message, "ALICE");
  assertEquals(users.size, 1);
});

Deno.test("UsersFile.setPasswordHash() keeps the name and creation time", () => {
  const users = new UsersFile([user("Alice")]);
  const updated = users.setPasswordHash("alice", "new-hash");
  assertEquals(updated, { name: "Alice", passwordHash: "new-hash", createdAt: CREATED });
  assertEquals(users.get("Alice"), updated);
  assertThrows(() => users.setPasswordHash("bob", "x"), RangeError);
});

Deno.test("UsersFile.remove() ignores case and returns the removed user", () => {
  const users = new UsersFile([user("Alice")]);
  assertEquals(users.remove("aLiCe")?.name, "Alice");
  assertEquals(users.remove("Alice"), undefined);
  assertEquals(users.size, 0);
});

Deno.test("saveUsers() and loadUsers() round-trip", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    const users = new UsersFile([user("Alice Smith"), user("bob", { createdAt: CREATED })]);
    await saveUsers(path, users);
    const loaded = await loadUsers(path);
    assertEquals(loaded.records(), users.records());
    assert(await verifyPassword(loaded.get("bob")!.passwordHash, "correct horse battery staple"));
  });
});

Deno.test("saveUsers() writes readable JSON in the documented shape", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    await saveUsers(path, new UsersFile([user("Alice")]));
    const text = await Deno.readTextFile(path);
    assert(text.endsWith("}\n"));
    assertStringIncludes(text, '\n  "version": 1,\n');
    assertEquals(JSON.parse(text), {
      version: 1,
      users: [{ name: "Alice", passwordHash: HASH, createdAt: CREATED }],
    });
  });
});

Deno.test("saveUsers() writes mode 0600 and creates the directory", {
  ignore: Deno.build.os === "windows",
}, async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "new", "data", "users.json");
    await saveUsers(path, new UsersFile([user("Alice")]));
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
    // replacing a file others could read leaves a private one
    await Deno.chmod(path, 0o644);
    await saveUsers(path, new UsersFile([user("Bob")]));
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
    assertEquals((await loadUsers(path)).records().map((u) => u.name), ["Bob"]);
  });
});

Deno.test("saveUsers() throws UsersFileError naming the file when it cannot write", async () => {
  await withTempDir(async (dir) => {
    const blocker = join(dir, "file");
    await Deno.writeTextFile(blocker, "");
    const path = join(blocker, "users.json");
    const error = await assertRejects(() => saveUsers(path, new UsersFile()), UsersFileError);
    assertStringIncludes(error.message, path);
  });
});

Deno.test("loadUsers() treats a missing file as no users", async () => {
  await withTempDir(async (dir) => {
    assertEquals((await loadUsers(join(dir, "users.json"))).size, 0);
    assertEquals((await loadUsers(join(dir, "missing", "users.json"))).size, 0);
  });
});

Deno.test("loadUsers() rejects malformed JSON, naming the file, and leaves it alone", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    await Deno.writeTextFile(path, '{"version": 1, "users": [');
    const error = await assertRejects(() => loadUsers(path), UsersFileError);
    assertStringIncludes(error.message, path);
    assertStringIncludes(error.message, "not valid JSON");
    assert(!error.message.includes("\n"));
    assertEquals(await Deno.readTextFile(path), '{"version": 1, "users": [');
  });
});

Deno.test("loadUsers() throws UsersFileError when the path cannot be read", async () => {
  await withTempDir(async (dir) => {
    const error = await assertRejects(() => loadUsers(dir), UsersFileError);
    assertStringIncludes(error.message, dir);
  });
});

Deno.test("loadUsers() rejects invalid content with one line naming file and problem", async (t) => {
  const good = { name: "Alice", passwordHash: HASH, createdAt: CREATED };
  const cases: [string, unknown, string][] = [
    ["a top level array", [], "top level"],
    ["null", null, "top level"],
    ["a missing version", { users: [] }, "version"],
    ["version 2", { version: 2, users: [] }, "version"],
    ["version as a string", { version: "1", users: [] }, "version"],
    ["users not an array", { version: 1, users: {} }, '"users"'],
    ["an entry that is not an object", { version: 1, users: ["Alice"] }, "user 1"],
    ["a missing name", { version: 1, users: [{ ...good, name: undefined }] }, "name"],
    ["a numeric name", { version: 1, users: [{ ...good, name: 7 }] }, "name"],
    ["an empty name", { version: 1, users: [{ ...good, name: "" }] }, "bad name"],
    ["a name with a slash", { version: 1, users: [{ ...good, name: "a/b" }] }, "a/b"],
    ["a name too long", { version: 1, users: [{ ...good, name: "x".repeat(33) }] }, "33"],
    ["a name with a newline", { version: 1, users: [{ ...good, name: "a\nb" }] }, "bad name"],
    ["a missing hash", { version: 1, users: [{ ...good, passwordHash: undefined }] }, "Alice"],
    ["a bad hash", {
      version: 1,
      users: [{ ...good, passwordHash: "md5$abc" }],
    }, "passwordHash"],
    [
      "a missing createdAt",
      { version: 1, users: [{ ...good, createdAt: undefined }] },
      "createdAt",
    ],
    ["a bad createdAt", { version: 1, users: [{ ...good, createdAt: "yesterday" }] }, "createdAt"],
    ["a duplicate name", {
      version: 1,
      users: [good, { ...good, name: "bob" }, { ...good, name: "ALICE" }],
    }, 'user 3 ("ALICE") repeats the name "Alice"'],
  ];
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    for (const [label, json, mention] of cases) {
      await t.step(label, async () => {
        await Deno.writeTextFile(path, JSON.stringify(json));
        const error = await assertRejects(() => loadUsers(path), UsersFileError);
        assert(error.message.startsWith(`${path} is not a valid users file: `), error.message);
        assertStringIncludes(error.message, mention);
        assert(!error.message.includes("\n"), error.message);
        assertStringIncludes(error.message, "fix it or move it away");
      });
    }
  });
});

Deno.test("loadUsers() accepts an empty list and ignores unknown fields", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    await Deno.writeTextFile(path, JSON.stringify({ version: 1, users: [] }));
    assertEquals((await loadUsers(path)).size, 0);
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        version: 1,
        comment: "x",
        users: [{ name: "Alice", passwordHash: HASH, createdAt: CREATED, note: "admin" }],
      }),
    );
    assertEquals((await loadUsers(path)).records(), [user("Alice")]);
  });
});
