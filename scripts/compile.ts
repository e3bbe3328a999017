/**
 * `deno task compile`: builds standalone executables of the server and the
 * client with `deno compile`, for the host and for every other target that
 * `deno compile --target` supports, with the permissions each program needs
 * baked in (never `-A`).
 *
 * `deno compile` needs Deno's `denort` runtime for each target, which it
 * downloads from dl.deno.land or takes from the `DENORT_BIN` variable. When
 * that fails, this prints one line saying so and exits 1; deno's own output
 * goes to `compile.log` in the output directory, and to the terminal with
 * `--verbose`.
 *
 * Exit codes: 0 when every executable was built, 1 when a build failed, 2 for
 * bad usage.
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { fromFileUrl, join, relative, resolve } from "@std/path";
import { errorLine } from "../lib/error_line.ts";
import { rejectUnknownFlags, requireValues, UsageError } from "../lib/cli/usage_error.ts";
import { VERSION } from "../lib/version.ts";
import { envNames } from "../lib/cli/flag_sources.ts";
import { CLIENT_FLAGS, SERVER_FLAGS } from "../lib/cli/program_flags.ts";

/** The repository's root directory. */
export const ROOT: string = fromFileUrl(new URL("..", import.meta.url));

/** One of the two programs, with the permissions it runs with. */
export interface Program {
  /** The executable's base name, such as `switchboard-server`. */
  readonly name: string;
  /** Its entry point, relative to the repository root. */
  readonly entry: string;
  /** The permission flags it needs: baked into executables, given to `deno run` for bundles. */
  readonly permissions: readonly string[];
}

/**
 * The unstable features both programs use (`Deno.listenDatagram`), as
 * `deno.json` lists them.
 */
export const UNSTABLE_FLAGS: readonly string[] = ["--unstable-net"];

/**
 * The server and the client. Network, read and write are not scoped: the
 * host, ports and every directory and file are run-time flags and commands
 * (see docs/DECISIONS.md, "Standalone executables"). The environment is
 * scoped to the variables the code reads: `SWITCHBOARD_<FLAG>` for each flag
 * and `SWITCHBOARD_CONFIG` (`lib/cli/flag_sources.ts`), and for the client
 * `SWITCHBOARD_PASSWORD` and `TERM`, and `statfs` for the client's free-space check
 * and `networkInterfaces` for its host candidates (NAT traversal); nothing
 * else (run, other sys, ffi) is granted.
 */
export const PROGRAMS: readonly Program[] = [
  {
    name: "switchboard-server",
    entry: "server.ts",
    permissions: [
      "--allow-net",
      "--allow-read",
      "--allow-write",
      // node-redis reads these two debugging switches when it connects.
      `--allow-env=${
        [...envNames(SERVER_FLAGS), "REDIS_DEBUG_MAINTENANCE", "REDIS_EMIT_DIAGNOSTICS"].join(",")
      }`,
    ],
  },
  {
    name: "switchboard-client",
    entry: "client.ts",
    permissions: [
      "--allow-net",
      "--allow-read",
      "--allow-write",
      // The free space of the download directory, before a file is accepted;
      // the interfaces' addresses, the host candidates of peer sessions.
      "--allow-sys=statfs,networkInterfaces",
      `--allow-env=${[...envNames(CLIENT_FLAGS), "SWITCHBOARD_PASSWORD", "TERM"].join(",")}`,
    ],
  },
];

/** Every target `deno compile --target` accepts (Deno 2.9). */
export const TARGETS: readonly string[] = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
  "aarch64-pc-windows-msvc",
];

/** How long the check that a host executable runs may take. */
const SMOKE_TEST_MS = 60_000;

const HELP = `deno task compile: standalone executables of the Switchboard server and client

Usage: deno task compile [--target TARGET] [--out DIR] [--verbose]

Builds switchboard-server and switchboard-client with deno compile: first for
this machine (${Deno.build.target}), named without a suffix, then for every
other target, named with the target as a suffix (and .exe for Windows), such as
switchboard-server-aarch64-apple-darwin. Each has its permissions baked in:
network, read and write, and the environment variables it reads
(SWITCHBOARD_<FLAG>, SWITCHBOARD_CONFIG; for the client also
SWITCHBOARD_PASSWORD and TERM).

Flags:
  --target TARGET  build for TARGET only, one of:
                     ${TARGETS.join("\n                     ")}
                   (default: the host, then every other target)
  --out DIR        where the executables go (default: dist/ in the repository)
  --verbose        show deno compile's output (it always goes to DIR/compile.log)
  -h, --help       show this help

Environment:
  DENORT_BIN       a denort binary of Deno ${Deno.version.deno} to build with instead of
                   downloading one from dl.deno.land; it serves one target, so
                   without --target only the host's executables are built`;

/** What the command line asks for. */
interface CompileFlags {
  targets: string[];
  outDir: string;
  verbose: boolean;
  denortBin?: string;
}

/** A build failure, worded as the one line the user sees (exit 1). */
class BuildError extends Error {
  /** @param message one line: what failed and what to do */
  constructor(message: string) {
    super(message);
    this.name = "BuildError";
  }
}

/**
 * Names an executable: plain for the host, suffixed by the target otherwise,
 * with `.exe` for Windows.
 *
 * @param program the program's base name
 * @param target the target
 * @returns the file name
 *
 * @example
 * ```ts
 * executableName("switchboard-server", "x86_64-pc-windows-msvc");
 * // "switchboard-server-x86_64-pc-windows-msvc.exe" (on a Linux host)
 * ```
 */
export function executableName(program: string, target: string): string {
  const base = target === Deno.build.target ? program : `${program}-${target}`;
  return target.includes("windows") ? `${base}.exe` : base;
}

/**
 * Sums up deno's error output in one line: its `error:` line and, when it has
 * a chain of causes, the innermost one.
 *
 * @param output what deno printed on stderr
 * @returns the summary, without `error: `, or the last line printed
 */
export function denoErrorSummary(output: string): string {
  const lines = output
    // deno-lint-ignore no-control-regex -- colour codes, should a NO_COLOR deno print any
    .replace(/\x1b\[[0-9;]*m/g, "")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
  const start = lines.findIndex((line) => line.startsWith("error:"));
  if (start === -1) return lines.at(-1) ?? "no output";
  const message = lines[start].slice("error:".length).trim();
  const causes: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (/^Stack backtrace:/.test(line)) break;
    const cause = /^(?:\d+: )?(.+)$/.exec(line)?.[1];
    if (cause !== undefined && cause !== "Caused by:") causes.push(cause);
  }
  const innermost = causes.at(-1);
  return innermost === undefined ? message : `${message}: ${innermost}`;
}

/**
 * Formats a size in bytes for people.
 *
 * @param bytes the size
 * @returns such as `310.3 KiB` or `92.1 MiB`
 */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

/**
 * Shows a path relative to the working directory when it is inside it.
 *
 * @param path an absolute path
 * @returns the path to print
 */
export function shownPath(path: string): string {
  const rel = relative(Deno.cwd(), path);
  return rel.startsWith("..") ? path : rel;
}

function parseFlags(args: string[]): CompileFlags | "help" {
  const strings = ["target", "out"];
  const parsed = parseArgs(args, {
    string: strings,
    boolean: ["help", "verbose"],
    alias: { h: "help" },
  });
  requireValues(args, parsed, strings);
  rejectUnknownFlags(parsed, [...strings, "help", "verbose", "h"]);
  if (parsed.help) return "help";
  const target = parsed.target;
  if (target !== undefined && !TARGETS.includes(target)) {
    throw new UsageError(`--target must be one of ${TARGETS.join(", ")}, not "${target}"`);
  }
  const denortBin = Deno.env.get("DENORT_BIN");
  let targets: string[];
  if (target !== undefined) targets = [target];
  else if (denortBin !== undefined) targets = [Deno.build.target];
  else targets = [Deno.build.target, ...TARGETS.filter((t) => t !== Deno.build.target)];
  return {
    targets,
    outDir: resolve(parsed.out ?? join(ROOT, "dist")),
    verbose: parsed.verbose,
    denortBin,
  };
}

/**
 * Refuses a `DENORT_BIN` that cannot work before deno compile tries it: one
 * that is empty, missing, not a file, or the deno CLI itself (which starts a
 * REPL instead of the embedded program).
 */
async function checkDenortBin(path: string): Promise<void> {
  const hint = `set it to a denort binary for Deno ${Deno.version.deno}, or unset it`;
  if (path === "") throw new BuildError(`DENORT_BIN is set but empty; ${hint}`);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch {
    throw new BuildError(`DENORT_BIN is "${path}", which does not exist; ${hint}`);
  }
  if (!info.isFile) throw new BuildError(`DENORT_BIN is "${path}", which is not a file; ${hint}`);
  const [real, deno] = await Promise.all([
    Deno.realPath(path),
    Deno.realPath(Deno.execPath()),
  ]);
  if (real === deno) {
    throw new BuildError(
      `DENORT_BIN is the deno CLI itself ("${path}"), which cannot run a compiled program; ` +
        `set it to denort, the runtime of Deno ${Deno.version.deno}`,
    );
  }
}

/** Appends to the build log. */
async function log(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(path, text, { append: true });
}

/**
 * Builds one executable.
 *
 * @returns the executable's path
 * @throws {BuildError} with the one line to print
 */
async function compileOne(
  program: Program,
  target: string,
  flags: CompileFlags,
  logPath: string,
): Promise<string> {
  const output = join(flags.outDir, executableName(program.name, target));
  const args = [
    "compile",
    "--config",
    join(ROOT, "deno.json"),
    ...UNSTABLE_FLAGS,
    ...program.permissions,
    "--no-prompt",
    "--exclude-unused-npm",
    "--target",
    target,
    "--output",
    output,
    join(ROOT, program.entry),
  ];
  await log(logPath, `\n$ deno ${args.join(" ")}\n`);
  const result = await new Deno.Command(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  await log(logPath, text.endsWith("\n") ? text : `${text}\n`);
  if (flags.verbose) await Deno.stderr.write(new TextEncoder().encode(text));
  if (result.success) return output;
  const where = `${program.entry} (${target})`;
  if (/Could not find denort/.test(text)) {
    throw new BuildError(
      `deno compile could not find denort at DENORT_BIN ("${flags.denortBin}"); set DENORT_BIN ` +
        `to a denort binary for this Deno version (${Deno.version.deno}) and run again`,
    );
  }
  if (/Setting up base binary|dl\.deno\.land.*(error sending request|status|connect)/i.test(text)) {
    throw new BuildError(
      `deno compile needs the denort runtime (denort-${target}), which could not be downloaded ` +
        `from dl.deno.land; set DENORT_BIN to a denort binary for this Deno version ` +
        `(${Deno.version.deno}) and run again`,
    );
  }
  throw new BuildError(
    `deno compile failed for ${where}: ${denoErrorSummary(text)}; ` +
      `deno's output is in ${shownPath(logPath)}`,
  );
}

/**
 * Checks that a host executable runs as its program: `--version` must print
 * its name and version. A `DENORT_BIN` that is not the right denort gives an
 * executable that does something else.
 *
 * @throws {BuildError} after removing the executable if it does not
 */
async function smokeTest(program: Program, path: string): Promise<void> {
  const expected = `${program.name} ${VERSION}`;
  let printed: string;
  try {
    const result = await new Deno.Command(path, {
      args: ["--version"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(SMOKE_TEST_MS),
    }).output();
    printed = new TextDecoder().decode(result.stdout).trim().split("\n")[0] ?? "";
  } catch (error) {
    printed = `nothing (${(error as Error).message})`;
  }
  if (printed === expected) return;
  await Deno.remove(path).catch(() => {});
  throw new BuildError(
    `${shownPath(path)} was built but does not run as ${program.name} (--version printed ` +
      `"${printed}", not "${expected}"), so it was removed; is DENORT_BIN the denort of ` +
      `Deno ${Deno.version.deno} for ${Deno.build.target}?`,
  );
}

async function build(flags: CompileFlags): Promise<void> {
  if (flags.denortBin !== undefined) {
    await checkDenortBin(flags.denortBin);
    if (flags.targets.length === 1 && flags.targets[0] === Deno.build.target) {
      console.log(
        `DENORT_BIN is set: building for this machine (${Deno.build.target}) only; ` +
          "pass --target to build another target with it",
      );
    }
  }
  await Deno.mkdir(flags.outDir, { recursive: true });
  const logPath = join(flags.outDir, "compile.log");
  await Deno.writeTextFile(logPath, `deno task compile, Deno ${Deno.version.deno}\n`);
  const started = performance.now();
  let built = 0;
  for (const target of flags.targets) {
    const host = target === Deno.build.target;
    for (const program of PROGRAMS) {
      console.log(`Compiling ${program.name} for ${target}${host ? " (this machine)" : ""}...`);
      const path = await compileOne(program, target, flags, logPath);
      if (host) await smokeTest(program, path);
      const { size } = await Deno.stat(path);
      console.log(`  ${shownPath(path)}  ${formatSize(size)}`);
      built++;
    }
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(`Built ${built} executables in ${shownPath(flags.outDir)} (${seconds} s)`);
}

/**
 * Runs `deno task compile`.
 *
 * @param args the command-line arguments
 * @returns the exit code
 */
export async function main(args: string[]): Promise<number> {
  let flags;
  try {
    flags = parseFlags(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(errorLine(error.message));
    return 2;
  }
  if (flags === "help") {
    console.log(HELP);
    return 0;
  }
  try {
    await build(flags);
    return 0;
  } catch (error) {
    // A BuildError is worded for the user; anything else (a directory that
    // cannot be written, say) is still one line.
    console.error(errorLine((error as Error).message));
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
