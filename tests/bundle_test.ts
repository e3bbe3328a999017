/**
 * The release builds: `deno task bundle` builds single-file programs that run
 * end to end from another directory, with no deno.json and an empty Deno
 * cache, under exactly the permissions the executables get; `deno task
 * compile` fails with one clear line when it cannot get Deno's runtime.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { PROGRAMS, UNSTABLE_FLAGS } from "../scripts/compile.ts";
import { VERSION } from "../lib/version.ts";
import {
  assertExit,
  assertOneErrorLine,
  CONFIG_PATH,
  describeRun,
  type Finished,
  LineCollector,
  nonEmptyLines,
  serverArgs,
  type TempDir,
  tempDir,
  withTimeout,
} from "./_processes.ts";

const [SERVER, CLIENT] = PROGRAMS;

/** How long a build may take on a small machine busy with parallel tests. */
const BUILD_MS = 180_000;
/** How long a bundled program gets to start, answer, or finish a short script. */
const RUN_MS = 60_000;

/** Where and how a child process runs. */
interface ChildOptions {
  /** Its working directory. */
  cwd?: string;
  /** Its whole environment (nothing is inherited). */
  env: Record<string, string>;
}

/** A deno child process whose output is collected line by line. */
class Child implements AsyncDisposable {
  readonly stdout: LineCollector;
  readonly stderr: LineCollector;
  readonly #label: string;
  readonly #process: Deno.ChildProcess;
  readonly #status: Promise<Deno.CommandStatus>;

  /**
   * @param label names it in errors
   * @param args deno's arguments
   * @param options working directory and environment
   */
  constructor(label: string, args: readonly string[], options: ChildOptions) {
    this.#label = label;
    this.#process = new Deno.Command(Deno.execPath(), {
      args: [...args],
      cwd: options.cwd,
      clearEnv: true,
      env: options.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.stdout = new LineCollector(this.#process.stdout);
    this.stderr = new LineCollector(this.#process.stderr);
    this.#status = this.#process.status;
  }

  /** Waits for a line of standard output that matches. */
  waitForLine(pattern: RegExp, ms = RUN_MS): Promise<string> {
    return this.stdout.waitFor(pattern, ms, `${this.#label} stdout`);
  }

  /** Sends a signal, if it still runs. */
  kill(signal: Deno.Signal): void {
    try {
      this.#process.kill(signal);
    } catch {
      // already gone
    }
  }

  /**
   * Waits for it to exit, killing it after `ms`.
   *
   * @returns how it ended and what it printed
   */
  async finished(ms = RUN_MS): Promise<Finished> {
    let status: Deno.CommandStatus;
    try {
      status = await withTimeout(this.#status, ms, `${this.#label} to exit`);
    } catch (error) {
      await this[Symbol.asyncDispose]();
      throw new Error(
        `${(error as Error).message}\n--- stdout ---\n${this.stdout.text}` +
          `--- stderr ---\n${this.stderr.text}`,
      );
    }
    await Promise.all([this.stdout.done, this.stderr.done]);
    return {
      code: status.code,
      signal: status.signal,
      stdout: this.stdout.text,
      stderr: this.stderr.text,
    };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    await this.#status;
    await Promise.all([this.stdout.done, this.stderr.done]);
  }
}

/** The environment every child gets: no colours, no update check, and `more`. */
function baseEnv(more: Record<string, string> = {}): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.DENORT_BIN;
  return { ...env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", ...more };
}

/** Runs `deno task NAME ARGS` from another directory, as a user would, to its end. */
async function runTask(
  name: string,
  args: readonly string[],
  env: Record<string, string>,
  ms = BUILD_MS,
): Promise<Finished> {
  await using task = new Child(
    `deno task ${name}`,
    ["task", "--quiet", "--config", CONFIG_PATH, name, ...args],
    { env },
  );
  return await task.finished(ms);
}

/** Runs a bundled program from `dir`: no deno.json, an empty Deno cache, its own permissions. */
function runBundle(
  dir: TempDir,
  program: typeof SERVER,
  args: readonly string[],
): Child {
  return new Child(
    program.name,
    [
      "run",
      "--no-config",
      ...UNSTABLE_FLAGS,
      ...program.permissions,
      dir.join("dist", `${program.name}.js`),
      ...args,
    ],
    { cwd: dir.join("run"), env: baseEnv({ DENO_DIR: dir.join("deno_dir") }) },
  );
}

/** Writes a client script and returns the flags that run it with `--json`. */
async function clientArgs(
  dir: TempDir,
  server: string,
  name: string,
  lines: readonly string[],
): Promise<string[]> {
  const script = dir.join("run", `${name}.txt`);
  await Deno.writeTextFile(script, lines.join("\n") + "\n");
  return [
    "--server",
    server,
    "--udp-port",
    "0",
    "--data-dir",
    dir.join("run", `${name}-data`),
    "--log-dir",
    dir.join("run", "logs"),
    "--script",
    script,
    "--json",
  ];
}

type JsonLine = Record<string, unknown> & { event: string };

function jsonLines(label: string, result: Finished): JsonLine[] {
  return nonEmptyLines(result.stdout).map((line) => {
    try {
      return JSON.parse(line) as JsonLine;
    } catch {
      throw new Error(`${label} printed a line that is not JSON: ${line}\n${describeRun(result)}`);
    }
  });
}

/** The result line of the first run of `command`. */
function resultOf(lines: JsonLine[], command: string): JsonLine {
  const found = lines.find((line) => line.event === "result" && line.command === command);
  if (found === undefined) throw new Error(`no result for ${command}: ${JSON.stringify(lines)}`);
  return found;
}

Deno.test("deno task bundle builds programs that run end to end from another directory with their own permissions", async (t) => {
  await using dir = await tempDir("switchboard_bundle_");
  await Deno.mkdir(dir.join("run"));

  const built = await runTask("bundle", ["--out", dir.join("dist")], baseEnv());
  assertExit(built, 0);
  assertEquals(built.stderr, "", describeRun(built));
  for (const program of PROGRAMS) {
    assertMatch(built.stdout, new RegExp(`${program.name}\\.js  \\d+(\\.\\d)? (B|KiB|MiB)\\n`));
    const code = await Deno.readTextFile(dir.join("dist", `${program.name}.js`));
    assert(!/["']npm:|["']jsr:|["']@std\//.test(code), `${program.name}.js imports a package`);
  }

  await t.step("--help and --version work from the bundles", async () => {
    const runs = [
      runBundle(dir, SERVER, ["--help"]),
      runBundle(dir, SERVER, ["--version"]),
      runBundle(dir, CLIENT, ["--help"]),
      runBundle(dir, CLIENT, ["-V"]),
    ];
    const [serverHelp, serverVersion, clientHelp, clientVersion] = await Promise.all(
      runs.map((run) => run.finished()),
    );
    for (const result of [serverHelp, serverVersion, clientHelp, clientVersion]) {
      assertExit(result, 0);
      assertEquals(result.stderr, "", describeRun(result));
    }
    for (const flag of ["--host", "--udp-port", "--tcp-port", "--data-dir", "--log-dir"]) {
      assertStringIncludes(serverHelp.stdout, flag);
    }
    for (const flag of ["--server", "--name", "--tcp-port", "--script", "--json"]) {
      assertStringIncludes(clientHelp.stdout, flag);
    }
    assertEquals(serverVersion.stdout, `switchboard-server ${VERSION}\n`);
    assertEquals(clientVersion.stdout, `switchboard-client ${VERSION}\n`);
  });

  await t.step(
    "a bundled server and two bundled clients register, find each other and chat",
    async () => {
      await using server = runBundle(dir, SERVER, serverArgs(dir.join("data"), dir.join("logs")));
      const udp = await server.waitForLine(/^Server UDP listening on port \d+$/);
      await server.waitForLine(/^Server TCP listening on port \d+$/);
      const address = `127.0.0.1:${udp.split(" ").at(-1)}`;

      const bobArgs = await clientArgs(dir, address, "Bob", [
        "register Bob",
        "accept",
        "lookup Alice",
        "list",
        "wait messages 1 within 60",
        "send hi Alice",
        "wait terminate within 60",
      ]);
      const aliceArgs = await clientArgs(dir, address, "Alice", [
        "register Alice",
        "list",
        "lookup Bob",
        "connect Bob",
        "send hello Bob",
        "wait messages 1 within 60",
        "terminate",
      ]);
      await using bob = runBundle(dir, CLIENT, bobArgs);
      await bob.waitForLine(/^\{"event":"result","command":"register","ok":true/);
      await using alice = runBundle(dir, CLIENT, aliceArgs);
      const [a, b] = await Promise.all([alice.finished(), bob.finished()]);
      const context = describeRun(a, { label: "Alice" }) + describeRun(b, { label: "Bob" });
      assertEquals([a.code, b.code], [0, 0], context);
      assertEquals([a.stderr, b.stderr], ["", ""], context);

      const aliceLines = jsonLines("Alice", a);
      const bobLines = jsonLines("Bob", b);
      for (const lines of [aliceLines, bobLines]) {
        const results = lines.filter((line) => line.event === "result");
        assert(results.every((r) => r.ok === true), context);
        const listed = resultOf(lines, "list").clients as { name: string }[];
        assertEquals(listed.map((c) => c.name).sort(), ["Alice", "Bob"]);
      }
      const bobSeen = resultOf(aliceLines, "lookup").client as Record<string, unknown>;
      const aliceSeen = resultOf(bobLines, "lookup").client as Record<string, unknown>;
      assertEquals([bobSeen.name, bobSeen.ip], ["Bob", "127.0.0.1"]);
      assertEquals([aliceSeen.name, aliceSeen.ip], ["Alice", "127.0.0.1"]);
      const messages = (lines: JsonLine[]) =>
        lines.filter((l) => l.event === "message").map((l) => [l.from, l.text]);
      assertEquals(messages(bobLines), [["Alice", "hello Bob"]]);
      assertEquals(messages(aliceLines), [["Bob", "hi Alice"]]);
      assertEquals(resultOf(aliceLines, "terminate").message, 'Ended the session with "Bob"');

      server.kill("SIGINT");
      const stopped = await server.finished();
      assertExit(stopped, 0);
      assertEquals(stopped.stderr, "", describeRun(stopped));
      assertMatch(stopped.stdout, /"Alice"/);
      assertMatch(stopped.stdout, /\nServer stopped\n$/);
    },
  );
});

/**
 * A Deno cache directory that shares the machine's npm packages but has no
 * downloaded runtimes, so that a denort cached by an earlier build is not
 * used.
 */
async function cacheWithoutRuntimes(dir: TempDir): Promise<string> {
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  const { denoDir } = JSON.parse(new TextDecoder().decode(info.stdout)) as { denoDir: string };
  const path = dir.join("deno_dir");
  await Deno.mkdir(path);
  const npm = `${denoDir}/npm`;
  if (await Deno.stat(npm).then(() => true, () => false)) await Deno.symlink(npm, `${path}/npm`);
  return path;
}

Deno.test("deno task compile says in one line that the denort download failed, and exits 1", async () => {
  await using dir = await tempDir("switchboard_compile_");
  // The download goes to a proxy where nothing listens, so it fails at once on
  // any machine; the npm registry is reached directly in case a package is missing.
  const deadProxy = "http://127.0.0.1:1";
  const env = baseEnv({
    DENO_DIR: await cacheWithoutRuntimes(dir),
    HTTPS_PROXY: deadProxy,
    https_proxy: deadProxy,
    HTTP_PROXY: deadProxy,
    http_proxy: deadProxy,
    NO_PROXY: "registry.npmjs.org",
    no_proxy: "registry.npmjs.org",
  });
  const out = dir.join("dist");
  const started = performance.now();
  const result = await runTask("compile", ["--out", out], env);
  const ms = Math.round(performance.now() - started);
  assertExit(result, 1);
  const target = Deno.build.target.replaceAll(".", "\\.");
  const version = Deno.version.deno.replaceAll(".", "\\.");
  assertOneErrorLine(
    result,
    new RegExp(
      `^error: deno compile needs the denort runtime \\(denort-${target}\\), which could not ` +
        `be downloaded from dl\\.deno\\.land; set DENORT_BIN to a denort binary for this Deno ` +
        `version \\(${version}\\) and run again$`,
    ),
  );
  const files = [];
  for await (const entry of Deno.readDir(out)) files.push(entry.name);
  assertEquals(files, ["compile.log"], "no executable, and deno's output in the log");
  assertStringIncludes(await Deno.readTextFile(`${out}/compile.log`), "dl.deno.land");
  console.log(`  failed as it should in ${ms} ms`);
});

Deno.test("deno task compile refuses a DENORT_BIN that cannot work, in one line", async () => {
  await using dir = await tempDir("switchboard_compile_");
  const out = dir.join("dist");
  const cases: [string, RegExp][] = [
    [
      dir.join("no-such-denort"),
      /^error: DENORT_BIN is ".*no-such-denort", which does not exist; /,
    ],
    [dir.path, /^error: DENORT_BIN is ".*", which is not a file; /],
    [Deno.execPath(), /^error: DENORT_BIN is the deno CLI itself \(".*"\), which cannot run /],
  ];
  const results = await Promise.all(
    cases.map(([denortBin]) =>
      runTask("compile", ["--out", out], baseEnv({ DENORT_BIN: denortBin }))
    ),
  );
  results.forEach((result, i) => {
    assertExit(result, 1);
    assertOneErrorLine(result, cases[i][1]);
  });
});

Deno.test("deno task compile and bundle answer --help and reject bad usage with exit 2", async () => {
  const [compileHelp, bundleHelp, badTarget, badFlag] = await Promise.all([
    runTask("compile", ["--help"], baseEnv()),
    runTask("bundle", ["--help"], baseEnv()),
    runTask("compile", ["--target", "riscv64-unknown-linux-gnu"], baseEnv()),
    runTask("bundle", ["--minify"], baseEnv()),
  ]);
  for (const result of [compileHelp, bundleHelp]) {
    assertExit(result, 0);
    assertEquals(result.stderr, "");
  }
  for (const text of ["--target", "--out", "--verbose", "DENORT_BIN", "aarch64-apple-darwin"]) {
    assertStringIncludes(compileHelp.stdout, text);
  }
  assertStringIncludes(bundleHelp.stdout, ",SWITCHBOARD_PASSWORD,TERM");
  assertExit(badTarget, 2);
  assertOneErrorLine(badTarget, /^error: --target must be one of .*"riscv64-unknown-linux-gnu"$/);
  assertExit(badFlag, 2);
  assertOneErrorLine(badFlag, /^error: unknown flag --minify; see --help$/);
});
