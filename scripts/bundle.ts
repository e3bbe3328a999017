/**
 * `deno task bundle`: builds single-file JavaScript builds of the server and
 * the client with `deno bundle` (esbuild), npm packages inlined, so that each
 * runs with `deno run` from any directory, with no deno.json and no npm cache.
 * It is the way to ship Switchboard where `deno compile` cannot get its
 * runtime, and what the tests run end to end.
 *
 * Exit codes: 0 when both were built, 1 when a build failed, 2 for bad usage.
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { join, resolve } from "@std/path";
import { errorLine } from "../lib/error_line.ts";
import { rejectUnknownFlags, requireValues, UsageError } from "../lib/cli/usage_error.ts";
import {
  denoErrorSummary,
  formatSize,
  type Program,
  PROGRAMS,
  ROOT,
  shownPath,
  UNSTABLE_FLAGS,
} from "./compile.ts";

const HELP = `deno task bundle: single-file JavaScript builds of the Switchboard server and client

Usage: deno task bundle [--out DIR] [--verbose]

Builds switchboard-server.js and switchboard-client.js with deno bundle, npm
packages inlined. Run them with Deno 2.9 or later from any directory:

  deno run ${[...UNSTABLE_FLAGS, ...PROGRAMS[0].permissions].join(" ")} switchboard-server.js --help
  deno run ${[...UNSTABLE_FLAGS, ...PROGRAMS[1].permissions].join(" ")} \\
    switchboard-client.js --help

Flags:
  --out DIR    where the bundles go (default: dist/ in the repository)
  --verbose    show deno bundle's output
  -h, --help   show this help`;

/** What the command line asks for. */
interface BundleFlags {
  outDir: string;
  verbose: boolean;
}

function parseFlags(args: string[]): BundleFlags | "help" {
  const parsed = parseArgs(args, {
    string: ["out"],
    boolean: ["help", "verbose"],
    alias: { h: "help" },
  });
  requireValues(args, parsed, ["out"]);
  rejectUnknownFlags(parsed, ["out", "help", "verbose", "h"]);
  if (parsed.help) return "help";
  return { outDir: resolve(parsed.out ?? join(ROOT, "dist")), verbose: parsed.verbose };
}

/**
 * The name of a program's bundle.
 *
 * @param program the program
 * @returns such as `switchboard-server.js`
 */
export function bundleName(program: Program): string {
  return `${program.name}.js`;
}

/**
 * Bundles one program.
 *
 * @returns the bundle's path
 * @throws {Error} with the one line to print
 */
async function bundleOne(program: Program, flags: BundleFlags): Promise<string> {
  const output = join(flags.outDir, bundleName(program));
  const result = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--config",
      join(ROOT, "deno.json"),
      "--platform",
      "deno",
      "--packages",
      "bundle",
      "--output",
      output,
      join(ROOT, program.entry),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  if (flags.verbose) await Deno.stderr.write(new TextEncoder().encode(text));
  if (!result.success) {
    throw new Error(
      `deno bundle failed for ${program.entry}: ${denoErrorSummary(text)}` +
        (flags.verbose ? "" : "; run with --verbose for deno's output"),
    );
  }
  return output;
}

/**
 * Runs `deno task bundle`.
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
    await Deno.mkdir(flags.outDir, { recursive: true });
    for (const program of PROGRAMS) {
      const path = await bundleOne(program, flags);
      const { size } = await Deno.stat(path);
      console.log(`${shownPath(path)}  ${formatSize(size)}`);
    }
  } catch (error) {
    console.error(errorLine((error as Error).message));
    return 1;
  }
  const server = shownPath(join(flags.outDir, bundleName(PROGRAMS[0])));
  console.log(
    `Run: deno run ${[...UNSTABLE_FLAGS, ...PROGRAMS[0].permissions].join(" ")} ${server}`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
