/**
 * Keeps the layers of `lib/` running one way (docs/ARCHITECTURE.md):
 *
 * 0. `lib/*.ts`: small shared helpers (hex, clock, random, version, ...)
 * 1. `lib/wire/`, `lib/crypto/`: the codec and the cryptography
 * 2. `lib/reliable/`: the sans-I/O reliability engine
 * 3. `lib/server/` and `lib/client/`: the sans-I/O cores
 * 4. `lib/io/` (the real driver) and `lib/sim/` (the simulator)
 * 5. `lib/cli/` (the terminal, usage errors, subcommands)
 * 6. `server.ts`, `client.ts`, `scripts/`; then `tests/`, which may import anything
 *
 * A file may import its own folder and any lower layer; `lib/server/` and
 * `lib/client/` never import each other, and the simulator never imports the
 * real driver. Only layers 3 and 4 may call `Deno.*`, and the cores never
 * read a clock or arm a timer of their own.
 *
 * @module
 */
import { assertEquals } from "@std/assert";
import { dirname, fromFileUrl, join, relative, resolve } from "@std/path";

const ROOT = resolve(dirname(fromFileUrl(import.meta.url)), "..");

/** Which layer a repository path belongs to, or undefined outside lib/ and the entry points. */
function layerOf(path: string): { layer: number; group: string } | undefined {
  if (path === "server.ts" || path === "client.ts") return { layer: 6, group: "entry" };
  if (path.startsWith("scripts/")) return { layer: 6, group: "scripts" };
  if (path.startsWith("tests/")) return { layer: 7, group: "tests" };
  if (!path.startsWith("lib/")) return undefined;
  const parts = path.split("/");
  if (parts.length === 2) return { layer: 0, group: "lib" };
  const group = parts[1];
  const layers: Record<string, number> = {
    wire: 1,
    crypto: 1,
    reliable: 2,
    server: 3,
    client: 3,
    io: 4,
    sim: 4,
    cli: 5,
  };
  const layer = layers[group];
  if (layer === undefined) throw new Error(`lib/${group}/ is not a known layer; add it here`);
  return { layer, group };
}

/** Pairs of groups that may not import each other even though the layers allow it. */
const FORBIDDEN = new Set(["server->client", "client->server", "sim->io"]);

/** Folders whose code may call Deno.* (besides entry points, scripts and tests). */
const OS_GROUPS = new Set(["io", "sim", "cli", "entry", "scripts", "tests"]);
/** Folders whose code must take time from an injected clock and never arm timers. */
const CORE_GROUPS = new Set(["wire", "crypto", "reliable", "server", "client"]);

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(join(ROOT, dir))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...await sourceFiles(path));
    else if (entry.name.endsWith(".ts")) out.push(path);
  }
  return out.sort();
}

/** The code of a file without its comments, so documentation may mention anything. */
function withoutComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`])\/\/.*$/gm, "$1");
}

function relativeImports(source: string): string[] {
  const found: string[] = [];
  const pattern = /(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g;
  for (const match of source.matchAll(pattern)) found.push(match[1]);
  return found;
}

const ALL_FILES = [
  "server.ts",
  "client.ts",
  ...await sourceFiles("lib"),
  ...await sourceFiles("scripts"),
  ...await sourceFiles("tests"),
];

/** What is wrong with the imports of one file, as lines; empty when they follow the layers. */
function importProblems(file: string, source: string): string[] {
  const problems: string[] = [];
  const from = layerOf(file)!;
  for (const spec of relativeImports(withoutComments(source))) {
    const target = relative(ROOT, resolve(ROOT, dirname(file), spec));
    const to = layerOf(target);
    if (to === undefined) continue;
    if (from.group !== to.group && to.layer >= from.layer && from.group !== "tests") {
      problems.push(`${file} imports ${target} (${to.group} is not below ${from.group})`);
    } else if (FORBIDDEN.has(`${from.group}->${to.group}`)) {
      problems.push(`${file} imports ${target} (${from.group} may not use ${to.group})`);
    }
  }
  return problems;
}

Deno.test("layering: every import runs down the layers, never up or sideways", async () => {
  const problems: string[] = [];
  for (const file of ALL_FILES) {
    problems.push(...importProblems(file, await Deno.readTextFile(join(ROOT, file))));
  }
  assertEquals(problems, []);
});

Deno.test("layering: only the driver, simulator and terminal folders call Deno.*", async () => {
  const problems: string[] = [];
  for (const file of ALL_FILES) {
    const { group } = layerOf(file)!;
    if (OS_GROUPS.has(group)) continue;
    const code = withoutComments(await Deno.readTextFile(join(ROOT, file)));
    if (/\bDeno\./.test(code)) problems.push(`${file} calls Deno.*`);
    if (
      CORE_GROUPS.has(group) && /\b(setTimeout|setInterval|Date\.now|performance\.now)\b/.test(code)
    ) {
      problems.push(`${file} reads the clock or arms a timer itself`);
    }
  }
  assertEquals(problems, []);
});

Deno.test("layering: no two files in lib/ are named with the same words reordered", () => {
  const seen = new Map<string, string>();
  const problems: string[] = [];
  for (const file of ALL_FILES.filter((f) => f.startsWith("lib/"))) {
    const base = file.split("/").pop()!.replace(/\.ts$/, "").replace(/^_/, "");
    const key = base.split("_").sort().join("_");
    const other = seen.get(key);
    if (other !== undefined) problems.push(`${other} and ${file}`);
    seen.set(key, file);
  }
  assertEquals(problems, []);
});

Deno.test("layering: importProblems() catches imports up or sideways", () => {
  assertEquals(
    importProblems("lib/wire/codec.ts", 'import { X } from "../client/x.ts";').length,
    1,
  );
  assertEquals(importProblems("lib/server/core.ts", 'import { X } from "../io/x.ts";').length, 1);
  assertEquals(
    importProblems("lib/client/core.ts", 'import { X } from "../server/x.ts";').length,
    1,
  );
  assertEquals(importProblems("lib/sim/net.ts", 'import { X } from "../io/udp.ts";').length, 1);
  assertEquals(importProblems("lib/io/x.ts", 'import { X } from "../../server.ts";').length, 1);
  assertEquals(importProblems("lib/io/x.ts", 'import { X } from "../server/x.ts";'), []);
  assertEquals(importProblems("lib/wire/x.ts", '// import { X } from "../io/x.ts";'), []);
});
