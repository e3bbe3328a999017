import { assert, assertEquals, assertNotEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { SeededRandom } from "../lib/random.ts";
import { dh } from "../lib/crypto/key_pair.ts";
import { fingerprint } from "../lib/crypto/fingerprint.ts";
import {
  loadServerIdentity,
  SERVER_IDENTITY_FILE,
  ServerIdentityFileError,
} from "../lib/io/server_identity_file.ts";

async function withDir(work: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sb_identity_" });
  try {
    await work(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("loadServerIdentity() creates a key pair with mode 0600 and loads the same one again", async () => {
  await withDir(async (dir) => {
    const first = await loadServerIdentity(dir);
    assertEquals(first.created, true);
    assertEquals(first.fingerprint, fingerprint(first.keyPair.publicKey));
    if (Deno.build.os !== "windows") {
      assertEquals((await Deno.stat(join(dir, SERVER_IDENTITY_FILE))).mode! & 0o777, 0o600);
    }
    const again = await loadServerIdentity(dir);
    assertEquals(again.created, false);
    assertEquals(again.keyPair, first.keyPair);
    // The pair is a working X25519 pair: DH agrees both ways with another key.
    const other = (await loadServerIdentity(await Deno.makeTempDir({ dir }))).keyPair;
    assertEquals(
      dh(first.keyPair.privateKey, other.publicKey),
      dh(other.privateKey, first.keyPair.publicKey),
    );
  });
});

Deno.test("loadServerIdentity() draws the key from the random source it is given", async () => {
  await withDir(async (dir) => {
    const a = await loadServerIdentity(join(dir), new SeededRandom(1));
    const b = await loadServerIdentity(await Deno.makeTempDir({ dir }), new SeededRandom(2));
    assertNotEquals(a.fingerprint, b.fingerprint);
  });
});

Deno.test("loadServerIdentity() puts mode 0600 back on a file others can read", async () => {
  if (Deno.build.os === "windows") return;
  await withDir(async (dir) => {
    await loadServerIdentity(dir);
    const path = join(dir, SERVER_IDENTITY_FILE);
    await Deno.chmod(path, 0o644);
    await loadServerIdentity(dir);
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
  });
});

Deno.test("loadServerIdentity() refuses a damaged file or a public key that does not match", async () => {
  await withDir(async (dir) => {
    const path = join(dir, SERVER_IDENTITY_FILE);
    await Deno.writeTextFile(path, "not json", { mode: 0o600 });
    const error = await assertRejects(() => loadServerIdentity(dir), ServerIdentityFileError);
    assert(error.message.includes("move it away"), error.message);
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        version: 1,
        type: "x25519",
        privateKey: "11".repeat(32),
        publicKey: "22".repeat(32),
      }),
    );
    await assertRejects(() => loadServerIdentity(dir), ServerIdentityFileError);
    assertEquals(await Deno.readTextFile(path).then((t) => t.includes("22")), true);
  });
});
