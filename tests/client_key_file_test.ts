import { assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { toHex } from "../lib/hex.ts";
import {
  CLIENT_KEY_FILE,
  ClientKeyFileError,
  clientKeyPathBeside,
  loadClientKey,
} from "../lib/io/client_key_file.ts";
import {
  findIdentity,
  IdentityFileError,
  loadIdentities,
  saveIdentity,
} from "../lib/io/identity_file.ts";
import { tempDir } from "./_processes.ts";

Deno.test("loadClientKey() makes a private key pair once and reads the same one back", async () => {
  await using dir = await tempDir("switchboard_client_key_");
  const path = clientKeyPathBeside(dir.join("client", "identities.json"));
  assertEquals(path, dir.join("client", CLIENT_KEY_FILE));
  const made = await loadClientKey(path);
  assertEquals(made.created, true);
  const again = await loadClientKey(path);
  assertEquals(again.created, false);
  assertEquals(again.keyPair.publicKey, made.keyPair.publicKey);
  assertEquals(again.keyPair.privateKey, made.keyPair.privateKey);
  if (Deno.build.os !== "windows") assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
  const json = JSON.parse(await Deno.readTextFile(path));
  assertEquals(json.publicKey, toHex(made.keyPair.publicKey));
  // No temporary file is left beside it.
  const names = [];
  for await (const entry of Deno.readDir(dir.join("client"))) names.push(entry.name);
  assertEquals(names, [CLIENT_KEY_FILE]);
});

Deno.test("loadClientKey() gives clients that start together one key", async () => {
  await using dir = await tempDir("switchboard_client_key_");
  const path = dir.join(CLIENT_KEY_FILE);
  const keys = await Promise.all(Array.from({ length: 8 }, () => loadClientKey(path)));
  const publicKeys = new Set(keys.map((k) => toHex(k.keyPair.publicKey)));
  assertEquals(publicKeys.size, 1);
  assertEquals(keys.filter((k) => k.created).length, 1);
});

Deno.test("loadClientKey() refuses a damaged key file in one line, and never replaces it", async () => {
  await using dir = await tempDir("switchboard_client_key_");
  const path = dir.join(CLIENT_KEY_FILE);
  await loadClientKey(path);
  const json = JSON.parse(await Deno.readTextFile(path));
  json.publicKey = toHex(new Uint8Array(32));
  await Deno.writeTextFile(path, JSON.stringify(json));
  const error = await assertRejects(() => loadClientKey(path), ClientKeyFileError);
  assertStringIncludes(error.message, "is not a valid client key");
  assertEquals(error.message.includes("\n"), false);
  assertEquals(JSON.parse(await Deno.readTextFile(path)), json, "the file is left as it was");
});

Deno.test("loadIdentities() reads version 1 files (with keys) and version 2 (without); saveIdentity() drops the key", async () => {
  await using dir = await tempDir("switchboard_identities_");
  const path = join(dir.path, "identities.json");
  const old = {
    version: 1,
    identities: [
      { server: "h:1", name: "Old", key: "ab".repeat(16), savedAt: "2025-01-01T00:00:00Z" },
      { server: "h:1", name: "Other", key: "cd".repeat(16), savedAt: "2025-01-01T00:00:00Z" },
    ],
  };
  await Deno.writeTextFile(path, JSON.stringify(old));
  assertEquals(findIdentity(await loadIdentities(path), "h:1", "old")?.key, "ab".repeat(16));
  await saveIdentity(path, { server: "h:1", name: "Old" });
  const saved = JSON.parse(await Deno.readTextFile(path));
  assertEquals(saved.version, 2);
  const byName = new Map(saved.identities.map((i: { name: string }) => [i.name, i]));
  assertEquals((byName.get("Old") as { key?: string }).key, undefined);
  assertEquals(
    (byName.get("Other") as { key?: string }).key,
    "cd".repeat(16),
    "others keep theirs",
  );
  // A version 1 entry without a key is not a valid file.
  await Deno.writeTextFile(
    path,
    JSON.stringify({ version: 1, identities: [{ server: "h:1", name: "X", savedAt: "" }] }),
  );
  await assertRejects(() => loadIdentities(path), IdentityFileError);
});
