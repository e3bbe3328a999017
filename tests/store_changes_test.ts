/**
 * The registry's changes as a shared store receives them: every `persist`
 * carries the changes since the previous one, a failed write leaves nothing
 * to write again, and another instance's changes apply without being
 * written back.
 */
import { assert, assertEquals, assertThrows } from "@std/assert";
import { join } from "@std/path";
import { FileStore } from "../lib/io/file_store.ts";
import { loadRegistry, REGISTRY_LOG_FILE } from "../lib/io/registry_file.ts";
import { SeededRandom } from "../lib/random.ts";
import { Registry, type RegistryRecord } from "../lib/server/registry.ts";
import { type Endpoint, ServerCore, type ServerOutput } from "../lib/server/server_core.ts";

const NOW = Date.UTC(2025, 0, 2);
const FROM: Endpoint = {
  transport: "udp",
  address: "10.0.0.1",
  port: 40001,
  clientKey: new Uint8Array(32).fill(1),
};

function record(name: string, publicKey = "a".repeat(64)): RegistryRecord {
  return {
    name,
    ip: "10.0.0.9",
    udpPort: 4000,
    tcpPort: 4001,
    registeredAt: "2025-01-01T00:00:00.000Z",
    publicKey,
    keySha256: "",
    registeredBy: "",
  };
}

function drain(core: ServerCore): ServerOutput[] {
  const out: ServerOutput[] = [];
  for (let o = core.poll(); o !== undefined; o = core.poll()) out.push(o);
  return out;
}

function persistOf(outputs: ServerOutput[]) {
  const found = outputs.find((o) => o.type === "persist");
  if (found?.type !== "persist") throw new Error("no persist output");
  return found;
}

function register(core: ServerCore, name: string, reqId: number): ServerOutput[] {
  core.handle(NOW, FROM, {
    type: "register",
    reqId,
    client: "00112233aabbccdd",
    name,
    udpPort: 4000,
    tcpPort: 4001,
  }, 1200);
  return drain(core);
}

Deno.test("Registry.takeChanges() hands over adds and removes once; fromJson() starts clean", () => {
  const registry = Registry.fromJson({
    Old: { ip: "10.0.0.1", udp_port: 1, tcp_port: 2, registered_at: "", key_sha256: "" },
  });
  assertEquals(registry.takeChanges(), []);
  registry.add(record("Alice"));
  registry.remove("old");
  assertEquals(registry.takeChanges(), [
    { op: "put", record: record("Alice") },
    { op: "delete", name: "Old", publicKey: "", keySha256: "" },
  ]);
  assertEquals(registry.takeChanges(), []);
  assertEquals(registry.remove("nobody"), undefined);
  assertEquals(registry.takeChanges(), [], "removing nobody changes nothing");
});

Deno.test("Registry.apply() takes another instance's changes without recording them", () => {
  const registry = new Registry();
  registry.apply([{ op: "put", record: record("Bob") }]);
  assertEquals(registry.get("bob")?.name, "Bob");
  registry.apply([{ op: "delete", name: "bob", publicKey: "b".repeat(64), keySha256: "" }]);
  assertEquals(registry.get("bob")?.name, "Bob", "a delete of another key leaves the record");
  registry.apply([{ op: "delete", name: "bob", publicKey: "a".repeat(64), keySha256: "" }]);
  assertEquals(registry.get("bob"), undefined);
  registry.replaceAll([record("Carol")]);
  assertEquals(registry.records().map((r) => r.name), ["Carol"]);
  assertEquals(registry.takeChanges(), []);
});

Deno.test("ServerCore persist outputs carry the changes; a failed write leaves none behind", () => {
  const core = new ServerCore({
    registry: new Registry(),
    random: new SeededRandom(1),
    tcpPort: 3001,
    version: "9.9.9",
  });
  const first = persistOf(register(core, "Alice", 1));
  assertEquals(first.changes.map((c) => c.op === "put" ? c.record.name : ""), ["Alice"]);
  // Bob registers while Alice's write is in flight, then that write fails.
  assertEquals(register(core, "Bob", 2).some((o) => o.type === "persist"), false);
  core.persistFailed(first.version, "Redis is gone");
  const answers = drain(core).flatMap((o) => o.type === "send" ? [o.message.type] : []);
  assertEquals(answers, ["error", "error"]);
  assertEquals(core.registry.size, 0);
  assertEquals(core.hasUnsavedChanges, false);
  // The next write carries only what is new, not the undone changes.
  const next = persistOf(register(core, "Carol", 3));
  assertEquals(next.changes.map((c) => c.op === "put" ? c.record.name : ""), ["Carol"]);
  assertThrows(() => core.registrySynced([]), RangeError);
  core.persisted(next.version, NOW);
  drain(core);
  core.registryChanged([{ op: "put", record: record("Dave") }]);
  assertEquals(core.registry.get("dave")?.name, "Dave");
  core.registrySynced([record("Erin")]);
  assertEquals(core.registry.records().map((r) => r.name), ["Erin"]);
});

Deno.test("Registry.replace() (a last-seen date) is a put of the same record for a shared store", () => {
  const registry = new Registry();
  registry.add(record("Alice"));
  registry.takeChanges();
  const seen = { ...record("Alice"), lastSeenAt: "2025-01-03T00:00:00.000Z" };
  registry.replace(seen);
  assertEquals(registry.takeChanges(), [{ op: "put", record: seen }]);
});

Deno.test("FileStore writes through the registry's append-only log and compacts it at close", async () => {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_file_store_" });
  try {
    const store = new FileStore(dir, { compactBytes: 256 });
    const registry = await store.load();
    for (let i = 0; i < 20; i++) {
      registry.add(record(`user${i}`));
      await store.persist(registry.toJson());
    }
    const logged = await Deno.stat(join(dir, REGISTRY_LOG_FILE));
    assert(logged.size > 0, "past compactBytes, saves append to the log");
    assertEquals((await loadRegistry(dir)).size, 20, "snapshot + log hold every record");
    await store.close();
    await assertRejectsNotFound(join(dir, REGISTRY_LOG_FILE));
    assertEquals((await loadRegistry(dir)).size, 20);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function assertRejectsNotFound(path: string): Promise<void> {
  try {
    await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  throw new Error(`${path} still exists`);
}
