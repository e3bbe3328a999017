/**
 * The registry's files: writes that grow with the change (append-only log,
 * compaction), and crash safety at every byte of the log.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import {
  loadRegistry,
  REGISTRY_FILE,
  REGISTRY_LOG_FILE,
  RegistryFile,
  RegistryFileError,
} from "../lib/io/registry_file.ts";
import type { Registry, RegistryRecord } from "../lib/server/registry.ts";

function record(name: string, overrides: Partial<RegistryRecord> = {}): RegistryRecord {
  return {
    name,
    ip: "127.0.0.1",
    udpPort: 50123,
    tcpPort: 5001,
    registeredAt: "2025-01-02T03:04:05.000Z",
    publicKey: "ab".repeat(32),
    keySha256: "",
    registeredBy: "00112233aabbccdd00112233aabbccdd",
    ...overrides,
  };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_registry_file_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function size(path: string): Promise<number> {
  return await Deno.stat(path).then((s) => s.size, () => 0);
}

function names(registry: Registry): string[] {
  return registry.records().map((r) => r.name);
}

Deno.test("RegistryFile rewrites a small registry whole and keeps no log", async () => {
  await withTempDir(async (dir) => {
    const file = await RegistryFile.open(dir);
    file.registry.add(record("Alice"));
    await file.save(file.registry.toJson());
    assertEquals(file.logBytes, 0);
    assertEquals(Object.keys(JSON.parse(await Deno.readTextFile(join(dir, REGISTRY_FILE)))), [
      "Alice",
    ]);
    assertEquals(await size(join(dir, REGISTRY_LOG_FILE)), 0);
    await file.close();
  });
});

Deno.test("RegistryFile appends one line per change to a large registry, not the whole registry", async () => {
  await withTempDir(async (dir) => {
    const file = await RegistryFile.open(dir, { compactBytes: 4096 });
    for (let i = 0; i < 1000; i++) file.registry.add(record(`user${i}`));
    await file.save(file.registry.toJson());
    const snapshot = await size(join(dir, REGISTRY_FILE));
    assert(snapshot > 200_000, `${snapshot} bytes`);
    // One more name: one line in the log, the snapshot untouched.
    file.registry.add(record("newcomer"));
    await file.save(file.registry.toJson());
    const line = await size(join(dir, REGISTRY_LOG_FILE));
    assert(line > 100 && line < 400, `${line} bytes for one change`);
    assertEquals(await size(join(dir, REGISTRY_FILE)), snapshot);
    file.registry.remove("user7");
    await file.save(file.registry.toJson());
    const log = (await Deno.readTextFile(join(dir, REGISTRY_LOG_FILE))).split("\n");
    assertEquals(log.length, 3);
    assertEquals(JSON.parse(log[0]).put, "newcomer");
    assertEquals(JSON.parse(log[1]), { del: "user7" });
    // Saving with nothing changed writes nothing.
    await file.save(file.registry.toJson());
    assertEquals(file.logBytes, line + log[1].length + 1);
    const loaded = await loadRegistry(dir);
    assertEquals(names(loaded), names(file.registry));
    await file.close();
  });
});

Deno.test("RegistryFile compacts once the log outgrows the snapshot, and at close", async () => {
  await withTempDir(async (dir) => {
    const file = await RegistryFile.open(dir, { compactBytes: 1024 });
    for (let i = 0; i < 20; i++) file.registry.add(record(`user${i}`));
    await file.save(file.registry.toJson());
    let compactions = 0;
    let previous = 0;
    for (let i = 20; i < 200; i++) {
      file.registry.add(record(`user${i}`));
      await file.save(file.registry.toJson());
      if (file.logBytes < previous) compactions++;
      previous = file.logBytes;
      // Never more log than registry (plus the one batch that tipped it).
      assert(file.logBytes <= (await size(join(dir, REGISTRY_FILE))) + 1024);
    }
    // The registry grew tenfold: a few doublings, not one rewrite per change.
    assert(compactions >= 2 && compactions <= 8, `${compactions} compactions`);
    await file.close();
    assertEquals(await size(join(dir, REGISTRY_LOG_FILE)), 0, "no log after a clean close");
    assertEquals((await loadRegistry(dir)).size, 200);
  });
});

/** A registry of 20 names with Alice and Bob among them, in the snapshot; no log. */
async function baseRegistry(dir: string): Promise<void> {
  const file = await RegistryFile.open(dir, { compactBytes: 0 });
  file.registry.add(record("Alice"));
  file.registry.add(record("Bob"));
  for (let i = 0; i < 18; i++) file.registry.add(record(`user${i}`));
  await file.save(file.registry.toJson());
  await file.close();
  assertEquals(await size(join(dir, REGISTRY_LOG_FILE)), 0);
}

const WATCHED = new Set(["Alice", "Bob", "Carol", "ALICE"]);

Deno.test("RegistryFile after a crash at any byte of an append loads the old or the new registry", async () => {
  await withTempDir(async (dir) => {
    await baseRegistry(dir);
    // One save that deletes Bob and adds Carol, one that brings Alice back in another case.
    const file = await RegistryFile.open(dir, { compactBytes: 0 });
    file.registry.remove("Bob");
    file.registry.add(record("Carol"));
    await file.save(file.registry.toJson());
    file.registry.remove("Alice");
    file.registry.add(record("ALICE", { ip: "10.0.0.9" }));
    await file.save(file.registry.toJson());
    file.release();
    const logPath = join(dir, REGISTRY_LOG_FILE);
    const after = await Deno.readFile(logPath);
    const lines = new TextDecoder().decode(after).split("\n");
    assertEquals(lines.length, 5, "four changes, one line each");
    const ends = [0];
    for (const line of lines.slice(0, -1)) {
      ends.push(ends.at(-1)! + new TextEncoder().encode(line).length + 1);
    }
    const states = new Set<string>();
    for (let cut = 0; cut <= after.length; cut++) {
      await Deno.writeFile(logPath, after.subarray(0, cut));
      const opened = await RegistryFile.open(dir, { compactBytes: 0 });
      states.add(names(opened.registry).filter((n) => WATCHED.has(n)).join(","));
      // The torn tail was cut off, so the next append follows a whole line.
      assertEquals(await size(logPath), ends.filter((end) => end <= cut).at(-1)!);
      opened.release();
    }
    // Each whole line is one more change; a torn one is no change at all.
    assertEquals([...states], ["Alice,Bob", "Alice", "Alice,Carol", "Carol", "Carol,ALICE"]);
  });
});

Deno.test("RegistryFile after a crash between a compaction's snapshot and the log's removal loads the same registry", async () => {
  await withTempDir(async (dir) => {
    await baseRegistry(dir);
    const file = await RegistryFile.open(dir, { compactBytes: 0 });
    file.registry.remove("Alice");
    await file.save(file.registry.toJson());
    file.registry.add(record("Alice", { ip: "10.0.0.9" }));
    await file.save(file.registry.toJson());
    file.registry.remove("Bob");
    await file.save(file.registry.toJson());
    const log = await Deno.readFile(join(dir, REGISTRY_LOG_FILE));
    assertEquals(new TextDecoder().decode(log).split("\n").length, 4);
    const expected = names(file.registry);
    await file.close();
    // The snapshot is new; the old log is still there, as if the process died before removing it.
    await Deno.writeFile(join(dir, REGISTRY_LOG_FILE), log);
    const loaded = await loadRegistry(dir);
    assertEquals(names(loaded), expected);
    assertEquals(loaded.get("alice")?.ip, "10.0.0.9");
  });
});

Deno.test("RegistryFile.open() refuses a log line that is whole but not a change, leaving it as is", async () => {
  await withTempDir(async (dir) => {
    const logPath = join(dir, REGISTRY_LOG_FILE);
    await Deno.writeTextFile(logPath, '{"del":"Alice"}\n{"nothing":1}\n');
    await assertRejects(() => RegistryFile.open(dir), RegistryFileError, "line 2");
    assertEquals(await Deno.readTextFile(logPath), '{"del":"Alice"}\n{"nothing":1}\n');
  });
});
