import { assert, assertEquals, assertRejects } from "@std/assert";
import { fromFileUrl, join } from "@std/path";
import { atomicWriteFile, removeStaleTempFiles } from "../lib/io/atomic_write.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_atomic_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function listNames(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

Deno.test("atomicWriteFile() creates and replaces a file", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "registry.json");
    await atomicWriteFile(path, '{"v":1}');
    assertEquals(await Deno.readTextFile(path), '{"v":1}');
    await atomicWriteFile(path, new TextEncoder().encode('{"v":2}'));
    assertEquals(await Deno.readTextFile(path), '{"v":2}');
    assertEquals(await listNames(dir), ["registry.json"]);
  });
});

Deno.test("atomicWriteFile() applies the requested mode", {
  ignore: Deno.build.os === "windows",
}, async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "secret.json");
    await atomicWriteFile(path, "{}", { mode: 0o600 });
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
  });
});

Deno.test("atomicWriteFile() removes its temp file when the rename fails", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "target");
    await Deno.mkdir(join(path, "child"), { recursive: true });
    await assertRejects(() => atomicWriteFile(path, "data"));
    assertEquals(await listNames(dir), ["target"]);
    assert((await Deno.stat(path)).isDirectory);
  });
});

Deno.test("atomicWriteFile() fails without leftovers when the directory is missing", async () => {
  await withTempDir(async (dir) => {
    await assertRejects(
      () => atomicWriteFile(join(dir, "missing", "file.json"), "{}"),
      Deno.errors.NotFound,
    );
    assertEquals(await listNames(dir), []);
  });
});

Deno.test("removeStaleTempFiles() deletes only the file's leftover temp files", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "registry.json"), "{}");
    await Deno.writeTextFile(join(dir, ".registry.json.tmp-0011"), "{");
    await Deno.writeTextFile(join(dir, ".registry.json.tmp-aabb"), "");
    await Deno.writeTextFile(join(dir, ".other.json.tmp-0011"), "");
    assertEquals(await removeStaleTempFiles(dir, "registry.json"), 2);
    assertEquals(await listNames(dir), [".other.json.tmp-0011", "registry.json"]);
    assertEquals(await removeStaleTempFiles(dir, "registry.json"), 0);
    assertEquals(await removeStaleTempFiles(join(dir, "missing"), "registry.json"), 0);
  });
});

Deno.test("atomicWriteFile() never leaves a torn file when the writer is killed", async () => {
  const size = 200 * 1024;
  const versions = ["A", "B"].map((v) => JSON.stringify({ version: v, fill: v.repeat(size) }));
  const kills = 20;
  const config = fromFileUrl(new URL("../deno.json", import.meta.url));
  const moduleUrl = new URL("../lib/io/atomic_write.ts", import.meta.url).href;

  await withTempDir(async (dir) => {
    const path = join(dir, "registry.json");
    const script = join(dir, "writer.ts");
    await Deno.writeTextFile(
      script,
      `import { atomicWriteFile } from ${JSON.stringify(moduleUrl)};
const docs = ${JSON.stringify(["A", "B"])}
  .map((v) => JSON.stringify({ version: v, fill: v.repeat(${size}) }));
console.log("ready");
for (let i = 1; ; i++) await atomicWriteFile(${JSON.stringify(path)}, docs[i % 2]);
`,
    );
    await Deno.writeTextFile(path, versions[0]);

    let interrupted = 0;
    for (let round = 0; round < kills; round++) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "--quiet", "--config", config, "--allow-read", "--allow-write", script],
        stdin: "null",
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const reader = child.stdout.getReader();
      const first = await reader.read();
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 40));
      child.kill("SIGKILL");
      await reader.cancel();
      const status = await child.status;
      assert(!first.done, "writer exited before it started");
      assertEquals(status.signal, "SIGKILL");

      const content = await Deno.readTextFile(path);
      assert(versions.includes(content), `torn file after kill ${round}: ${content.length} bytes`);
      assert(["A", "B"].includes(JSON.parse(content).version));
      interrupted += await removeStaleTempFiles(dir, "registry.json");
    }
    assertEquals(await listNames(dir), ["registry.json", "writer.ts"]);
    console.log(`${kills} kills, ${interrupted} interrupted mid-write`);
  });
});
