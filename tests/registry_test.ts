import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { join } from "@std/path";
import {
  loadRegistry,
  REGISTRY_FILE,
  RegistryFile,
  RegistryFileError,
} from "../lib/io/registry_file.ts";
import { Registry, RegistryFormatError, type RegistryRecord } from "../lib/server/registry.ts";
import { ReplayCache } from "../lib/server/replay_cache.ts";
import type { Reply } from "../lib/wire/messages.ts";

const HASH = "ab".repeat(32);

function record(name: string, overrides: Partial<RegistryRecord> = {}): RegistryRecord {
  return {
    name,
    ip: "127.0.0.1",
    udpPort: 50123,
    tcpPort: 5001,
    registeredAt: "2025-01-02T03:04:05.000Z",
    publicKey: "",
    keySha256: HASH,
    registeredBy: "00112233aabbccdd/7",
    ...overrides,
  };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_registry_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// --- Registry ---------------------------------------------------------------

Deno.test("Registry.get() and remove() ignore case", () => {
  const registry = new Registry();
  registry.add(record("Alice Smith"));
  assertEquals(registry.size, 1);
  assertEquals(registry.get("alice smith")?.name, "Alice Smith");
  assertEquals(registry.get("ALICE SMITH")?.name, "Alice Smith");
  assertEquals(registry.get("Bob"), undefined);
  assertEquals(registry.remove("aLiCe SmItH")?.name, "Alice Smith");
  assertEquals(registry.size, 0);
  assertEquals(registry.remove("Alice Smith"), undefined);
});

Deno.test("Registry.add() throws a RangeError for a name taken in another case", () => {
  const registry = new Registry();
  registry.add(record("Alice"));
  const error = assertThrows(() => registry.add(record("ALICE")), RangeError);
  assertStringIncludes(error.message, "ALICE");
  assertEquals(registry.size, 1);
  assertEquals(registry.get("alice")?.name, "Alice");
});

Deno.test("Registry.records() lists records in registration order", () => {
  const registry = new Registry();
  registry.add(record("Carol"));
  registry.add(record("alice"));
  registry.add(record("Bob"));
  assertEquals(registry.records().map((r) => r.name), ["Carol", "alice", "Bob"]);
});

Deno.test("Registry.toJson() gives the seed shape keyed by display name", () => {
  const registry = new Registry();
  registry.add(record("Alice Smith"));
  registry.add(
    record("bob", {
      ip: "10.1.2.3",
      udpPort: 4000,
      tcpPort: 4001,
      publicKey: "cd".repeat(32),
      keySha256: "",
    }),
  );
  assertEquals(registry.toJson(), {
    "Alice Smith": {
      ip: "127.0.0.1",
      udp_port: 50123,
      tcp_port: 5001,
      registered_at: "2025-01-02T03:04:05.000Z",
      public_key: "",
      key_sha256: HASH,
      registered_by: "00112233aabbccdd/7",
    },
    bob: {
      ip: "10.1.2.3",
      udp_port: 4000,
      tcp_port: 4001,
      registered_at: "2025-01-02T03:04:05.000Z",
      public_key: "cd".repeat(32),
      key_sha256: "",
      registered_by: "00112233aabbccdd/7",
    },
  });
});

Deno.test("Registry.fromJson() round-trips toJson()", () => {
  const registry = new Registry();
  registry.add(record("Alice Smith"));
  registry.add(record("Bob-2", { publicKey: "ef".repeat(32), keySha256: "" }));
  const copy = Registry.fromJson(JSON.parse(JSON.stringify(registry.toJson())));
  assertEquals(copy.records(), registry.records());
});

Deno.test("Registry.fromJson() accepts a seed file without registered_at or key_sha256", () => {
  const registry = Registry.fromJson({
    "Alice Smith": { ip: "127.0.0.1", udp_port: 50123, tcp_port: 5001 },
  });
  assertEquals(registry.records(), [{
    name: "Alice Smith",
    ip: "127.0.0.1",
    udpPort: 50123,
    tcpPort: 5001,
    registeredAt: "",
    publicKey: "",
    keySha256: "",
    registeredBy: "",
  }]);
  assertEquals(Registry.fromJson({}).size, 0);
});

Deno.test("Registry.fromJson() loads a version 0.1 file whose hash is token_sha256", () => {
  const registry = Registry.fromJson({
    Alice: { ip: "127.0.0.1", udp_port: 50123, tcp_port: 5001, token_sha256: HASH },
  });
  assertEquals(registry.get("alice")?.keySha256, HASH);
  // It is written back under the new field name only.
  const json = registry.toJson();
  assertEquals(json.Alice.key_sha256, HASH);
  assertEquals(Object.keys(json.Alice).includes("token_sha256"), false);
});

Deno.test("Registry.fromJson() prefers key_sha256 to token_sha256", () => {
  const other = "cd".repeat(32);
  const registry = Registry.fromJson({
    Alice: { ip: "127.0.0.1", udp_port: 1, tcp_port: 2, key_sha256: HASH, token_sha256: other },
  });
  assertEquals(registry.get("Alice")?.keySha256, HASH);
});

Deno.test("Registry.fromJson() rejects a bad token_sha256 as a bad key hash", () => {
  const error = assertThrows(
    () =>
      Registry.fromJson({
        Alice: { ip: "127.0.0.1", udp_port: 1, tcp_port: 2, token_sha256: "xyz" },
      }),
    RegistryFormatError,
  );
  assertStringIncludes(error.message, "Alice");
  assertStringIncludes(error.message, "key_sha256");
});

Deno.test("Registry.fromJson() rejects a top level that is not an object", () => {
  for (const json of [null, [], "x", 3, true]) {
    assertThrows(() => Registry.fromJson(json), RegistryFormatError);
  }
});

Deno.test("Registry.fromJson() rejects bad entries, naming the entry", async (t) => {
  const good = { ip: "127.0.0.1", udp_port: 50123, tcp_port: 5001 };
  const cases: [string, Record<string, unknown>, string][] = [
    ["an entry that is not an object", { Alice: "127.0.0.1" }, "Alice"],
    ["an entry that is an array", { Alice: [1, 2] }, "Alice"],
    ["an entry that is null", { Alice: null }, "Alice"],
    ["a missing ip", { Alice: { udp_port: 1, tcp_port: 2 } }, "Alice"],
    ["an empty ip", { Alice: { ...good, ip: "" } }, "Alice"],
    ["udp_port 0", { Alice: { ...good, udp_port: 0 } }, "udp_port"],
    ["udp_port 65536", { Alice: { ...good, udp_port: 65536 } }, "udp_port"],
    ["a fractional tcp_port", { Alice: { ...good, tcp_port: 5001.5 } }, "tcp_port"],
    ["a string tcp_port", { Alice: { ...good, tcp_port: "5001" } }, "tcp_port"],
    ["a missing tcp_port", { Alice: { ip: "1.2.3.4", udp_port: 1 } }, "tcp_port"],
    ["a name with a slash", { "a/b": good }, "a/b"],
    ["an empty name", { "": good }, "empty"],
    ["a name with a leading space", { " Alice": good }, " Alice"],
    ["a name too long", { ["x".repeat(33)]: good }, "x".repeat(33)],
    ["names differing in case", { Alice: good, ALICE: good }, "ALICE"],
    ["a short key_sha256", { Alice: { ...good, key_sha256: "abcd" } }, "key_sha256"],
    ["an uppercase key_sha256", {
      Alice: { ...good, key_sha256: "AB".repeat(32) },
    }, "key_sha256"],
    ["a numeric key_sha256", { Alice: { ...good, key_sha256: 12 } }, "key_sha256"],
    ["a short public_key", { Alice: { ...good, public_key: "abcd" } }, "public_key"],
    ["an uppercase public_key", { Alice: { ...good, public_key: "AB".repeat(32) } }, "public_key"],
    ["a numeric registered_at", { Alice: { ...good, registered_at: 12 } }, "registered_at"],
    ["a numeric registered_by", { Alice: { ...good, registered_by: 12 } }, "registered_by"],
  ];
  for (const [label, json, mention] of cases) {
    await t.step(label, () => {
      const error = assertThrows(() => Registry.fromJson(json), RegistryFormatError);
      assertStringIncludes(error.message, mention);
      if (label !== "an empty name") assertStringIncludes(error.message, "entry");
    });
  }
});

// --- ReplayCache -------------------------------------------------------------

const CLIENT = "00112233aabbccdd";
const HOST = "192.0.2.7";

function reply(reqId: number): Reply {
  return { type: "text_ok", reqId };
}

function done(cache: ReplayCache, now: number, client: string, reqId: number): void {
  cache.begin(now, client, reqId, `fp${reqId}`, HOST);
  cache.complete(client, reqId, reply(reqId));
}

Deno.test("ReplayCache.check() goes from new to pending to done", () => {
  const cache = new ReplayCache();
  assertEquals(cache.check(0, CLIENT, 1, "fp", HOST), { state: "new" });
  cache.begin(0, CLIENT, 1, "fp", HOST);
  assertEquals(cache.check(10, CLIENT, 1, "fp", HOST), { state: "pending" });
  cache.complete(CLIENT, 1, reply(1));
  assertEquals(cache.check(20, CLIENT, 1, "fp", HOST), { state: "done", reply: reply(1) });
  assertEquals(cache.check(20, CLIENT, 1, "other", HOST), { state: "new" }, "different content");
  assertEquals(
    cache.check(20, "ffffffffffffffff", 1, "fp", HOST),
    { state: "new" },
    "other client",
  );
});

Deno.test("ReplayCache.check() tells a copy of a request sent from another address", () => {
  const cache = new ReplayCache({ ttlMs: 1000 });
  cache.begin(0, CLIENT, 1, "fp", HOST);
  assertEquals(cache.check(10, CLIENT, 1, "fp", "198.51.100.9"), { state: "elsewhere" }, "pending");
  cache.complete(CLIENT, 1, reply(1));
  assertEquals(cache.check(20, CLIENT, 1, "fp", "198.51.100.9"), { state: "elsewhere" }, "done");
  assertEquals(cache.check(20, CLIENT, 1, "fp", HOST).state, "done", "the first address still");
  assertEquals(cache.check(1001, CLIENT, 1, "fp", "198.51.100.9"), { state: "new" }, "expired");
});

Deno.test("ReplayCache.complete() ignores a request that was not begun", () => {
  const cache = new ReplayCache();
  cache.complete(CLIENT, 1, reply(1));
  assertEquals(cache.check(0, CLIENT, 1, "fp1", HOST), { state: "new" });
  assertEquals(cache.clientCount, 0);
});

Deno.test("ReplayCache keeps at most perClient requests per client, oldest out first", () => {
  const cache = new ReplayCache({ perClient: 3 });
  for (let reqId = 1; reqId <= 4; reqId++) done(cache, 0, CLIENT, reqId);
  assertEquals(cache.check(0, CLIENT, 1, "fp1", HOST), { state: "new" });
  for (const reqId of [2, 3, 4]) {
    assertEquals(cache.check(0, CLIENT, reqId, `fp${reqId}`, HOST).state, "done");
  }
});

Deno.test("ReplayCache keeps at most maxClients clients, evicting the least recently used", () => {
  const cache = new ReplayCache({ maxClients: 2 });
  const a = "000000000000000a";
  const b = "000000000000000b";
  const c = "000000000000000c";
  done(cache, 0, a, 1);
  done(cache, 1, b, 1);
  done(cache, 2, a, 2); // a is now more recent than b
  done(cache, 3, c, 1); // evicts b
  assertEquals(cache.clientCount, 2);
  assertEquals(cache.check(4, b, 1, "fp1", HOST), { state: "new" });
  assertEquals(cache.check(4, a, 1, "fp1", HOST).state, "done");
  assertEquals(cache.check(4, a, 2, "fp2", HOST).state, "done");
  assertEquals(cache.check(4, c, 1, "fp1", HOST).state, "done");
});

Deno.test("ReplayCache forgets an answered request after ttlMs", () => {
  const cache = new ReplayCache({ ttlMs: 1000 });
  done(cache, 5000, CLIENT, 1);
  assertEquals(cache.check(6000, CLIENT, 1, "fp1", HOST).state, "done");
  assertEquals(cache.check(6001, CLIENT, 1, "fp1", HOST), { state: "new" });
});

Deno.test("ReplayCache defaults to 64 requests per client and a 120 s ttl", () => {
  const cache = new ReplayCache();
  for (let reqId = 0; reqId < 65; reqId++) done(cache, 0, CLIENT, reqId);
  assertEquals(cache.check(0, CLIENT, 0, "fp0", HOST), { state: "new" });
  assertEquals(cache.check(0, CLIENT, 1, "fp1", HOST).state, "done");
  assertEquals(cache.check(120_000, CLIENT, 1, "fp1", HOST).state, "done");
  assertEquals(cache.check(120_001, CLIENT, 1, "fp1", HOST), { state: "new" });
});

// --- registry_file -----------------------------------------------------------

Deno.test("RegistryFile.open() gives an empty registry when the file is missing", async () => {
  await withTempDir(async (dir) => {
    const dataDir = join(dir, "data", "nested");
    const file = await RegistryFile.open(dataDir);
    file.release();
    assertEquals(file.registry.size, 0);
    assert((await Deno.stat(dataDir)).isDirectory, "the data directory is created");
  });
});

Deno.test("loadRegistry() refuses a registry that is a link to a missing file", async () => {
  await withTempDir(async (dir) => {
    await Deno.symlink(join(dir, "gone.json"), join(dir, "registrations.json"));
    await assertRejects(
      () => loadRegistry(dir),
      RegistryFileError,
      "symbolic link to a missing file",
    );
    assert((await Deno.lstat(join(dir, "registrations.json"))).isSymlink, "the link is left alone");
  });
});

Deno.test("RegistryFile.save() and loadRegistry() round-trip a registry", async () => {
  await withTempDir(async (dir) => {
    const file = await RegistryFile.open(dir);
    const registry = file.registry;
    registry.add(record("Alice Smith"));
    registry.add(record("Bob", { ip: "10.0.0.2", udpPort: 40000, tcpPort: 40001 }));
    await file.save(registry.toJson());
    await file.close();
    const text = await Deno.readTextFile(join(dir, REGISTRY_FILE));
    assertEquals(JSON.parse(text), registry.toJson());
    assert(text.endsWith("\n"));
    const loaded = await loadRegistry(dir);
    assertEquals(loaded.records(), registry.records());
    const names: string[] = [];
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
    assertEquals(names, [REGISTRY_FILE], "no temp files are left");
  });
});

Deno.test("loadRegistry() reads a seed-shaped file", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(
      join(dir, REGISTRY_FILE),
      '{\n  "Alice Smith": {\n    "ip": "127.0.0.1",\n    "udp_port": 50123,\n    "tcp_port": 5001\n  }\n}\n',
    );
    const registry = await loadRegistry(dir);
    assertEquals(registry.get("alice smith")?.udpPort, 50123);
  });
});

Deno.test("loadRegistry() reads a version 0.1 file with token_sha256", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(
      join(dir, REGISTRY_FILE),
      JSON.stringify({
        Bob: {
          ip: "10.0.0.2",
          udp_port: 40000,
          tcp_port: 40001,
          registered_at: "2025-01-02T03:04:05.000Z",
          token_sha256: HASH,
          registered_by: "",
        },
      }),
    );
    const file = await RegistryFile.open(dir);
    const registry = file.registry;
    assertEquals(registry.get("bob")?.keySha256, HASH);
    registry.add(record("Carol"));
    await file.save(registry.toJson());
    await file.close();
    const saved = JSON.parse(await Deno.readTextFile(join(dir, REGISTRY_FILE)));
    assertEquals(saved.Bob.key_sha256, HASH);
    assertEquals("token_sha256" in saved.Bob, false);
  });
});

Deno.test("loadRegistry() rejects corrupt JSON, naming the file and leaving it as is", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, REGISTRY_FILE);
    const corrupt = '{"Alice": {"ip": "127.0.0.1", "udp_port": 1';
    await Deno.writeTextFile(path, corrupt);
    const error = await assertRejects(() => loadRegistry(dir), RegistryFileError);
    assertStringIncludes(error.message, path);
    assertStringIncludes(error.message, "not valid JSON");
    assertEquals(await Deno.readTextFile(path), corrupt);
  });
});

Deno.test("loadRegistry() rejects an invalid registry, naming the file and the entry", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, REGISTRY_FILE);
    const bad = JSON.stringify({ Bob: { ip: "127.0.0.1", udp_port: 0, tcp_port: 5001 } });
    await Deno.writeTextFile(path, bad);
    const error = await assertRejects(() => loadRegistry(dir), RegistryFileError);
    assertStringIncludes(error.message, path);
    assertStringIncludes(error.message, '"Bob"');
    assertEquals(await Deno.readTextFile(path), bad);
  });
});

Deno.test("RegistryFile.open() removes temp files left by a crash", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(join(dir, REGISTRY_FILE), JSON.stringify({ Alice: seedEntry() }));
    const stale = join(dir, `.${REGISTRY_FILE}.tmp-0123456789abcdef`);
    await Deno.writeTextFile(stale, "{");
    const file = await RegistryFile.open(dir);
    file.release();
    assertEquals(file.registry.size, 1);
    await assertRejects(() => Deno.stat(stale), Deno.errors.NotFound);
  });
});

function seedEntry() {
  return {
    ip: "127.0.0.1",
    udp_port: 50123,
    tcp_port: 5001,
    registered_at: "",
    key_sha256: "",
    registered_by: "",
  };
}

Deno.test("Registry keeps last_seen through JSON, and refuses a bad one", () => {
  const registry = new Registry();
  registry.add(record("Alice", { lastSeenAt: "2026-01-02T03:04:05.000Z" }));
  registry.add(record("Bob"));
  const json = registry.toJson();
  assertEquals(json.Alice.last_seen, "2026-01-02T03:04:05.000Z");
  assertEquals("last_seen" in json.Bob, false, "absent when unknown, as in older files");
  const back = Registry.fromJson(JSON.parse(JSON.stringify(json)));
  assertEquals(back.records(), registry.records());
  assertThrows(
    () => Registry.fromJson({ Bob: { ...json.Bob, last_seen: "yesterday" } }),
    RegistryFormatError,
    'entry "Bob" has a bad "last_seen"',
  );
});

Deno.test("Registry.toJson() shares each record's entry between calls until the record changes", () => {
  const registry = new Registry();
  registry.add(record("Alice"));
  const first = registry.toJson();
  assertEquals(registry.toJson().Alice === first.Alice, true);
  registry.replace({ ...registry.get("alice")!, lastSeenAt: "2026-01-02T03:04:05.000Z" });
  assertEquals(registry.toJson().Alice === first.Alice, false);
  assertThrows(() => registry.replace(record("Nobody")), RangeError, "not registered");
});
