import { assert, assertEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { fingerprint } from "../lib/crypto/fingerprint.ts";
import {
  checkServerKey,
  KnownServersFileError,
  knownServersPathBeside,
  loadKnownServers,
  ServerKeyChangedError,
} from "../lib/io/known_servers_file.ts";

const KEY_A = new Uint8Array(32).fill(0xa1);
const KEY_B = new Uint8Array(32).fill(0xb2);
const NOW = new Date("2026-12-06T17:00:00Z");

async function withDir(work: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sb_known_" });
  try {
    await work(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("knownServersPathBeside() puts the pins in the identity file's folder", () => {
  assertEquals(
    knownServersPathBeside("/home/a/.sb/identities.json"),
    "/home/a/.sb/known_servers.json",
  );
});

Deno.test("checkServerKey() pins a new server, then knows it, case-insensitively", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "sub", "known_servers.json");
    assertEquals(await checkServerKey(path, "Example.org:3000", KEY_A, NOW), "pinned");
    assertEquals(await checkServerKey(path, "example.org:3000", KEY_A, NOW), "known");
    assertEquals(await loadKnownServers(path), [
      { server: "Example.org:3000", publicKey: "a1".repeat(32), firstSeen: NOW.toISOString() },
    ]);
    if (Deno.build.os !== "windows") assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
  });
});

Deno.test("checkServerKey() refuses a changed key with both fingerprints, and keeps the pin", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "known_servers.json");
    await checkServerKey(path, "example.org:3000", KEY_A, NOW);
    const error = await assertRejects(
      () => checkServerKey(path, "example.org:3000", KEY_B, NOW),
      ServerKeyChangedError,
    );
    assertEquals([error.pinned, error.presented], [fingerprint(KEY_A), fingerprint(KEY_B)]);
    assert(!error.message.includes("\n"));
    assert(error.message.includes(path), error.message);
    assertEquals(await checkServerKey(path, "example.org:3000", KEY_A, NOW), "known");
    assertEquals(await checkServerKey(path, "example.org:3001", KEY_B, NOW), "pinned");
  });
});

Deno.test("checkServerKey() keeps every pin when clients pin at the same time", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "known_servers.json");
    await Promise.all(
      Array.from({ length: 8 }, (_, i) => checkServerKey(path, `h${i}:1`, KEY_A, NOW)),
    );
    assertEquals((await loadKnownServers(path)).length, 8);
  });
});

Deno.test("loadKnownServers() refuses a damaged file and reads a missing one as empty", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "known_servers.json");
    assertEquals(await loadKnownServers(path), []);
    await Deno.writeTextFile(path, JSON.stringify({ version: 1, servers: [{ server: "x" }] }));
    await assertRejects(() => loadKnownServers(path), KnownServersFileError);
    await assertRejects(() => checkServerKey(path, "x", KEY_A, NOW), KnownServersFileError);
  });
});
