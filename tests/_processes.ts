/**
 * Helpers for end-to-end tests: start the real server and client as separate
 * Deno processes, feed their standard input, read their output, and stop them.
 * Every wait is bounded, and every process, stream and timer is awaited or
 * released, so the test sanitizers stay quiet and a hang fails fast.
 *
 * @module
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { fromFileUrl } from "@std/path";

/** The project's `deno.json`, found from this file so tests run from any directory. */
export const CONFIG_PATH: string = fromFileUrl(new URL("../deno.json", import.meta.url));
/** The server entry point. */
export const SERVER_PATH: string = fromFileUrl(new URL("../server.ts", import.meta.url));
/** The client entry point. */
export const CLIENT_PATH: string = fromFileUrl(new URL("../client.ts", import.meta.url));

const PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys=statfs,networkInterfaces",
];

/** How long a server gets to print its ports. */
const SERVER_START_MS = 10_000;
/**
 * How long a wait for a line lasts by default: generous, because a process
 * starting on a small machine busy with parallel tests can take seconds.
 */
const LINE_MS = 10_000;
/** How long a stopping process gets before it is killed. */
const STOP_MS = 10_000;

/**
 * Races a promise against a timer, and clears the timer either way.
 *
 * @param promise what to wait for
 * @param ms the longest wait
 * @param what names the wait in the error
 * @returns the promise's value
 * @throws {Error} if the time runs out first
 */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits a while.
 *
 * @param ms how long
 */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Calls `probe` until it returns something other than undefined, pausing
 * between calls; for conditions that come true at an unknown moment.
 *
 * @param probe returns the value once the condition holds, else undefined
 * @param ms the deadline, from now
 * @param what names the condition in the error
 * @param pauseMs the pause between calls
 * @returns the probe's first defined value
 * @throws {Error} if the deadline passes first
 *
 * @example
 * ```ts
 * await pollUntil(async () => (await names()).includes("Bob") || undefined, 3_000, "Bob online");
 * ```
 */
export async function pollUntil<T>(
  probe: () => Promise<T | undefined>,
  ms: number,
  what: string,
  pauseMs = 100,
): Promise<T> {
  const deadline = performance.now() + ms;
  while (true) {
    const value = await probe();
    if (value !== undefined) return value;
    if (performance.now() >= deadline) throw new Error(`Timed out after ${ms} ms: ${what}`);
    await delay(pauseMs);
  }
}

/**
 * Lists every file under a directory, recursively, as paths relative to it.
 *
 * @param root the directory
 * @returns the relative paths of its files (not directories), sorted
 */
export async function listFiles(root: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string, prefix: string) => {
    for await (const entry of Deno.readDir(dir)) {
      const path = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
      if (entry.isDirectory) await walk(`${dir}/${entry.name}`, path);
      else found.push(path);
    }
  };
  await walk(root, "");
  return found.sort();
}

/** A temporary directory that removes itself when disposed. */
export interface TempDir extends AsyncDisposable {
  /** Its absolute path. */
  readonly path: string;
  /**
   * A path inside it.
   *
   * @param parts path segments
   * @returns the joined path
   */
  join(...parts: string[]): string;
}

/**
 * Makes a temporary directory; use it with `await using`.
 *
 * @param prefix the directory name's prefix
 * @returns the directory
 *
 * @example
 * ```ts
 * await using dir = await tempDir();
 * const data = dir.join("data");
 * ```
 */
export async function tempDir(prefix = "switchboard_e2e_"): Promise<TempDir> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    join: (...parts: string[]) => [path, ...parts].join("/"),
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Collects a byte stream as text lines while the process runs. */
export class LineCollector {
  /** The complete lines so far (a live array). */
  readonly lines: string[] = [];
  /** Settles once the stream has ended. */
  readonly done: Promise<void>;
  #partial = "";
  #ended = false;
  #waiters = new Set<() => void>();

  /** @param stream the stream to read to its end */
  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = this.#read(stream);
  }

  /** @returns everything read so far */
  get text(): string {
    return this.lines.map((line) => line + "\n").join("") + this.#partial;
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        const parts = (this.#partial + chunk).split("\n");
        this.#partial = parts.pop()!;
        this.lines.push(...parts.map((line) => line.replace(/\r$/, "")));
        this.#wake();
      }
    } catch {
      // the process went away; what was read stays
    }
    if (this.#partial !== "") {
      this.lines.push(this.#partial);
      this.#partial = "";
    }
    this.#ended = true;
    this.#wake();
  }

  #wake(): void {
    for (const wake of this.#waiters) wake();
  }

  /**
   * Waits until a line matches.
   *
   * @param pattern the line
   * @param ms the longest wait
   * @param what names the stream in errors
   * @param from the index of the first line to look at (default 0: all of them)
   * @returns the first matching line
   * @throws {Error} with the output so far if the stream ends or time runs out first
   */
  async waitFor(pattern: RegExp, ms: number, what: string, from = 0): Promise<string> {
    const found = () => this.lines.slice(from).find((line) => pattern.test(line));
    const wait = async () => {
      while (true) {
        const line = found();
        if (line !== undefined) return line;
        if (this.#ended) throw new Error(`${what} ended without a line matching ${pattern}`);
        await new Promise<void>((resolve) => {
          const wake = () => {
            this.#waiters.delete(wake);
            resolve();
          };
          this.#waiters.add(wake);
        });
      }
    };
    try {
      return await withTimeout(wait(), ms, `${what}: a line matching ${pattern}`);
    } catch (error) {
      throw new Error(`${(error as Error).message}\n--- output so far ---\n${this.text}`);
    }
  }
}

/** How a finished process ended, with everything it printed. */
export interface Finished {
  /** Exit code (128 + n after signal n). */
  readonly code: number;
  /** The signal that ended it, if any. */
  readonly signal: Deno.Signal | null;
  /** All of standard output. */
  readonly stdout: string;
  /** All of standard error. */
  readonly stderr: string;
}

/** Options of {@linkcode describeRun} and {@linkcode assertOneErrorLine}. */
export interface DescribeOptions {
  /** Names the program: the description starts `<label>: `. */
  label?: string;
  /** Shows only the last this many characters of each stream. */
  lastChars?: number;
}

/**
 * Describes a finished run for an assertion message: its exit code and what
 * it printed.
 *
 * @param result the run
 * @param options a name for the program, and how much output to show
 * @returns `exit <code>` then its standard output and standard error
 */
export function describeRun(result: Finished, options: DescribeOptions = {}): string {
  const { label, lastChars } = options;
  const shown = (text: string) => lastChars === undefined ? text : text.slice(-lastChars);
  return `${label === undefined ? "" : `${label}: `}exit ${result.code}\n--- stdout ---\n${
    shown(result.stdout)
  }--- stderr ---\n${shown(result.stderr)}`;
}

/**
 * Splits text into lines, leaving out empty ones.
 *
 * @param text the text
 * @returns its non-empty lines
 */
export function nonEmptyLines(text: string): string[] {
  return text.split("\n").filter((line) => line !== "");
}

/**
 * Asserts a run ended with an exit code, showing its output if not.
 *
 * @param result the run
 * @param code the expected exit code
 */
export function assertExit(result: Finished, code: number): void {
  assertEquals(result.code, code, describeRun(result));
}

/**
 * Asserts stderr is exactly one `error:` line matching, and nothing looks like
 * a stack trace.
 *
 * @param result the run
 * @param pattern what the line must match
 * @param options how a failure describes the run
 * @returns the line
 *
 * @example
 * ```ts
 * assertOneErrorLine(result, /^error: you have no file "nothere\.csv"$/);
 * ```
 */
export function assertOneErrorLine(
  result: Finished,
  pattern: RegExp,
  options: DescribeOptions = {},
): string {
  const lines = nonEmptyLines(result.stderr);
  assertEquals(lines.length, 1, `expected one line on stderr\n${describeRun(result, options)}`);
  assertMatch(lines[0], /^error: /);
  assertMatch(lines[0], pattern);
  assert(
    !/^\s+at /m.test(result.stderr + result.stdout),
    `stack trace\n${describeRun(result, options)}`,
  );
  return lines[0];
}

/** Where and how a program runs, besides its flags. */
export interface ProgramOptions {
  /**
   * Its working directory (default: the test's). Give clients a temporary one
   * so that their default paths (`./data/client`, `./downloads`, `./logs`)
   * stay out of the source tree.
   */
  cwd?: string;
  /** More environment variables (`NO_COLOR=1` is always set). */
  env?: Record<string, string>;
  /**
   * A command that runs the program for it, given the `deno run ...` command
   * line as its last arguments: `["unshare", "-rm", "sh", "-c", SCRIPT, "sh"]`
   * (default: none, Deno runs the program directly).
   */
  wrapper?: readonly string[];
}

/** A running program with piped standard streams. */
export class RunningProgram implements AsyncDisposable {
  /** The child process. */
  readonly process: Deno.ChildProcess;
  /** What it has printed on standard output so far, line by line. */
  readonly stdout: LineCollector;
  /** What it has printed on standard error so far, line by line. */
  readonly stderr: LineCollector;
  readonly #label: string;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #status: Promise<Deno.CommandStatus>;
  #exited = false;
  #stdinClosed = false;

  /**
   * @param label names the program in errors
   * @param script `SERVER_PATH` or `CLIENT_PATH`
   * @param args its flags
   * @param options its working directory and more environment variables
   */
  constructor(
    label: string,
    script: string,
    args: readonly string[],
    options: ProgramOptions = {},
  ) {
    this.#label = label;
    const command = [
      ...(options.wrapper ?? []),
      Deno.execPath(),
      "run",
      ...PERMISSIONS,
      "--config",
      CONFIG_PATH,
      script,
      ...args,
    ];
    this.process = new Deno.Command(command[0], {
      args: command.slice(1),
      cwd: options.cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...options.env },
    }).spawn();
    this.#writer = this.process.stdin.getWriter();
    this.stdout = new LineCollector(this.process.stdout);
    this.stderr = new LineCollector(this.process.stderr);
    this.#status = this.process.status;
    this.#status.then(() => this.#exited = true);
  }

  /** True once the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /**
   * Writes text to its standard input; errors (it exited) are ignored.
   *
   * @param text what to write, newlines included
   */
  async write(text: string): Promise<void> {
    if (this.#stdinClosed) throw new TypeError(`${this.#label}: stdin is already closed`);
    await this.#writer.write(new TextEncoder().encode(text)).catch(() => {});
  }

  /** Closes its standard input (end of file). Safe to call twice. */
  async closeStdin(): Promise<void> {
    if (this.#stdinClosed) return;
    this.#stdinClosed = true;
    await this.#writer.close().catch(() => {});
  }

  /**
   * Waits for a line of standard output that matches.
   *
   * @param pattern the line to wait for
   * @param ms the longest wait
   * @param from the index of the first line to look at (default 0); pass
   *   `stdout.lines.length` before writing a command to see only its output
   * @returns the first matching line
   */
  waitForLine(pattern: RegExp, ms = LINE_MS, from = 0): Promise<string> {
    return this.stdout.waitFor(pattern, ms, `${this.#label} stdout`, from);
  }

  /**
   * Waits for the process to exit on its own, killing it after `ms`.
   *
   * @param ms the longest wait
   * @returns how it ended and what it printed
   * @throws {Error} with its output if it had to be killed
   */
  async finished(ms = STOP_MS): Promise<Finished> {
    await this.closeStdin();
    return await this.#exit(ms);
  }

  async #exit(ms: number): Promise<Finished> {
    let status: Deno.CommandStatus;
    try {
      status = await withTimeout(this.#status, ms, `${this.#label} to exit`);
    } catch (error) {
      await this.#forceKill();
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

  /**
   * Sends a signal and waits for the exit. Standard input stays open until
   * then, as on a terminal, so the program sees the signal and no end of input.
   *
   * @param signal the signal
   * @param ms the longest wait before SIGKILL
   * @returns how it ended
   */
  async signal(signal: Deno.Signal, ms = STOP_MS): Promise<Finished> {
    try {
      this.process.kill(signal);
    } catch {
      // already gone
    }
    try {
      return await this.#exit(ms);
    } finally {
      await this.closeStdin();
    }
  }

  async #forceKill(): Promise<void> {
    try {
      this.process.kill("SIGKILL");
    } catch {
      // already gone
    }
    await this.closeStdin();
    await this.#status;
    await Promise.all([this.stdout.done, this.stderr.done]);
  }

  /** Kills the process if it still runs and releases its streams. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#forceKill();
  }
}

/** Options of {@linkcode startServer}. */
export interface ServerOptions {
  /** The data directory. */
  dataDir: string;
  /** The log directory. */
  logDir: string;
  /** More flags. */
  extraArgs?: readonly string[];
  /** UDP and TCP ports (default 0 and 0: free ones), e.g. to restart on the same ports. */
  ports?: { udp?: number; tcp?: number };
}

/** A server process listening on loopback ports chosen at start. */
export interface ServerProcess extends AsyncDisposable {
  /** Its UDP port. */
  readonly udpPort: number;
  /** Its TCP port. */
  readonly tcpPort: number;
  /** `127.0.0.1:<udpPort>`, for the client's `--server`. */
  readonly address: string;
  /** Its standard output so far, line by line (a live array). */
  readonly lines: readonly string[];
  /** Its standard error so far, line by line (a live array). */
  readonly errorLines: readonly string[];
  /** The program, for lower-level waits. */
  readonly program: RunningProgram;
  /** The child process. */
  readonly process: Deno.ChildProcess;
  /** True while the process runs. */
  readonly alive: boolean;
  /**
   * Waits for a line of standard output that matches.
   *
   * @param pattern the line
   * @param ms the longest wait
   * @param from the index of the first line to look at (default 0)
   */
  waitForLine(pattern: RegExp, ms?: number, from?: number): Promise<string>;
  /**
   * Sends a signal (default SIGINT) and waits for the exit.
   *
   * @returns the exit code
   */
  stop(signal?: Deno.Signal): Promise<number>;
  /** Kills with SIGKILL and waits for the exit. */
  kill9(): Promise<void>;
}

/**
 * The server flags every test uses: loopback only, ports given (0 picks free
 * ones), and its own data and log directories.
 *
 * @param dataDir the data directory
 * @param logDir the log directory
 * @param ports UDP and TCP ports (default 0 and 0)
 * @returns the arguments for `server.ts`
 */
export function serverArgs(
  dataDir: string,
  logDir: string,
  ports: { udp?: number; tcp?: number } = {},
): string[] {
  return [
    "--host",
    "127.0.0.1",
    "--udp-port",
    String(ports.udp ?? 0),
    "--tcp-port",
    String(ports.tcp ?? 0),
    "--data-dir",
    dataDir,
    "--log-dir",
    logDir,
  ];
}

/**
 * Starts `server.ts` on 127.0.0.1 (ports 0 unless given) and waits for it to print both
 * ports. Use it with `await using`, which kills it if the test did not stop it.
 *
 * @param options data and log directories, more flags
 * @returns the running server
 * @throws {Error} with its output if it exits or stays silent
 *
 * @example
 * ```ts
 * await using server = await startServer({ dataDir, logDir });
 * assertEquals(await server.stop(), 0);
 * ```
 */
export async function startServer(options: ServerOptions): Promise<ServerProcess> {
  const program = new RunningProgram("server", SERVER_PATH, [
    ...serverArgs(options.dataDir, options.logDir, options.ports),
    ...(options.extraArgs ?? []),
  ]);
  let udpPort: number;
  let tcpPort: number;
  try {
    const udp = await program.waitForLine(/^Server UDP listening on port \d+$/, SERVER_START_MS);
    const tcp = await program.waitForLine(/^Server TCP listening on port \d+$/, SERVER_START_MS);
    udpPort = Number(udp.split(" ").at(-1));
    tcpPort = Number(tcp.split(" ").at(-1));
  } catch (error) {
    await program[Symbol.asyncDispose]();
    throw new Error(`${(error as Error).message}\n--- stderr ---\n${program.stderr.text}`);
  }
  return {
    udpPort,
    tcpPort,
    address: `127.0.0.1:${udpPort}`,
    lines: program.stdout.lines,
    errorLines: program.stderr.lines,
    program,
    process: program.process,
    get alive() {
      return !program.exited;
    },
    waitForLine: (pattern, ms, from) => program.waitForLine(pattern, ms, from),
    stop: async (signal = "SIGINT") => (await program.signal(signal)).code,
    kill9: async () => {
      await program.signal("SIGKILL");
    },
    [Symbol.asyncDispose]: () => program[Symbol.asyncDispose](),
  };
}

/** Options of {@linkcode runClient} and {@linkcode runProgram}. */
export interface RunOptions extends ProgramOptions {
  /** Command-line flags. */
  args: readonly string[];
  /** Everything to write to standard input before closing it. */
  stdin?: string;
  /** The longest run before the process is killed and the test fails. */
  timeoutMs?: number;
}

/**
 * Runs a program to completion.
 *
 * @param script `SERVER_PATH` or `CLIENT_PATH`
 * @param options flags, standard input and a time limit
 * @returns its exit code and output
 */
export async function runProgram(script: string, options: RunOptions): Promise<Finished> {
  const label = script === SERVER_PATH ? "server" : "client";
  await using program = new RunningProgram(label, script, options.args, options);
  if (options.stdin !== undefined) await program.write(options.stdin);
  return await program.finished(options.timeoutMs ?? 10_000);
}

/**
 * Runs `client.ts` to completion with the given flags and standard input.
 *
 * @param options flags, standard input and a time limit
 * @returns its exit code and output
 *
 * @example
 * ```ts
 * const { code, stdout } = await runClient({
 *   args: ["--server", server.address, "--name", "Alice Smith"],
 *   stdin: "register\nderegister\n",
 * });
 * ```
 */
export function runClient(options: RunOptions): Promise<Finished> {
  return runProgram(CLIENT_PATH, options);
}

/**
 * Starts `client.ts` and leaves it running, to be fed line by line.
 *
 * @param args command-line flags
 * @param options working directory and environment
 * @returns the running client; `await using` kills it if left running
 */
export function startClient(
  args: readonly string[],
  options: ProgramOptions = {},
): RunningProgram {
  return new RunningProgram("client", CLIENT_PATH, args, options);
}

/** A server in a fresh temporary directory, and a working directory for clients. */
export interface World extends AsyncDisposable {
  /** The temporary directory, removed on disposal. */
  readonly dir: TempDir;
  /** The server, killed on disposal if still running. */
  readonly server: ServerProcess;
  /** The server's data directory: `server` in `dir`. */
  readonly dataDir: string;
  /** The clients' working directory: `client` in `dir`. */
  readonly cwd: string;
  /**
   * The flags every client gets: the server, logs in the temp dir, a request timeout
   * short enough to fail fast and long enough for a busy machine.
   *
   * @param more more flags
   */
  args(...more: string[]): string[];
}

/** Options of {@linkcode startWorld}. */
export interface WorldOptions {
  /** More server flags. */
  serverFlags?: readonly string[];
  /** Runs before the server starts, such as to add users to its data directory. */
  before?: (dataDir: string) => Promise<void>;
}

/**
 * Makes a temporary directory with a working directory for clients, and
 * starts a server with its data (`server`) and logs (`logs`) in it. Use it
 * with `await using`, which stops the server and removes the directory.
 *
 * @param prefix the temporary directory's name prefix
 * @param options more server flags, and what to do before it starts
 * @returns the world
 * @throws {Error} if the server does not start; the directory is removed
 *
 * @example
 * ```ts
 * await using w = await startWorld("switchboard_files_", { serverFlags: ["--quota", "10K"] });
 * const result = await runClient({ args: w.args(), stdin: "register Ann\n", cwd: w.cwd });
 * ```
 */
export async function startWorld(prefix: string, options: WorldOptions = {}): Promise<World> {
  const dir = await tempDir(prefix);
  const dataDir = dir.join("server");
  const logDir = dir.join("logs");
  const cwd = dir.join("client");
  await Deno.mkdir(cwd);
  let server: ServerProcess;
  try {
    await options.before?.(dataDir);
    server = await startServer({ dataDir, logDir, extraArgs: options.serverFlags });
  } catch (error) {
    await dir[Symbol.asyncDispose]();
    throw error;
  }
  return {
    dir,
    server,
    dataDir,
    cwd,
    args: (
      ...more
    ) => ["--server", server.address, "--log-dir", logDir, "--timeout", "10", ...more],
    async [Symbol.asyncDispose]() {
      await server[Symbol.asyncDispose]();
      await dir[Symbol.asyncDispose]();
    },
  };
}

/**
 * Finds a loopback UDP port with nothing listening on it (bound, then freed).
 *
 * @returns the port
 */
export function unusedUdpPort(): number {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (socket.addr as Deno.NetAddr).port;
  socket.close();
  return port;
}

/**
 * Reads a server process's stdout until it prints its UDP port, then drains the rest.
 *
 * @param stdout the process's standard output
 * @returns the port
 */
export async function readUdpPort(stdout: ReadableStream<Uint8Array>): Promise<number> {
  const lines = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (true) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`server exited: ${text}`);
    text += value;
    const match = /Server UDP listening on port (\d+)/.exec(text);
    if (match !== null) {
      (async () => {
        while (!(await lines.read()).done) { /* drain */ }
      })();
      return Number(match[1]);
    }
  }
}
