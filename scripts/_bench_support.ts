/**
 * What `bench.ts` and `bench_presence.ts` share: starting the Switchboard
 * server and the bare UDP echo server as child processes, reading the port
 * each prints and draining their output, stopping them, undoing a run on exit
 * or Ctrl-C, and the small helpers behind the figures they print.
 *
 * @module
 */
import { loadRegistry } from "../lib/io/registry_file.ts";
import { fromFileUrl, join } from "@std/path";
import { UsageError } from "../lib/cli/usage_error.ts";
import { errorCodeName } from "../lib/wire/error_code.ts";
import type { Message } from "../lib/wire/messages.ts";

const REPO = fromFileUrl(new URL("../", import.meta.url));
const ECHO_SCRIPT = fromFileUrl(new URL("./udp_echo_server.ts", import.meta.url));
const STARTUP_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 5000;

/** The loopback address both servers listen on and the load sockets bind. */
export const HOST = "127.0.0.1";
/** The TCP port the bench clients declare; the server only checks it is >= 1024. */
export const DECLARED_TCP_PORT = 40000;
/** The receive buffer of a load socket, bytes: room for any Switchboard reply. */
export const RECEIVE_BUFFER_BYTES = 2048;

// ---------------------------------------------------------------- flags

/**
 * Reads a script's flags as its entry point must: on bad usage it prints
 * `error: <message>` and gives exit code 2; for `--help` it prints the help
 * and gives exit code 0.
 *
 * @param parse parses the flags, returning `"help"` for `--help`; throws
 *   {@linkcode UsageError} on bad usage
 * @param help the help text
 * @returns the flags, or the exit code to return at once
 *
 * @example
 * ```ts
 * const flags = flagsOrExitCode(() => parseFlags(args), HELP);
 * if (typeof flags === "number") return flags;
 * ```
 */
export function flagsOrExitCode<T extends object>(
  parse: () => T | "help",
  help: string,
): T | number {
  let flags;
  try {
    flags = parse();
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`error: ${error.message}`);
    return 2;
  }
  if (flags === "help") {
    console.log(help);
    return 0;
  }
  return flags;
}

// ---------------------------------------------------------------- processes

/** A child process that printed the port it listens on. */
export interface Started {
  /** Names it in messages, such as `"echo server"`. */
  label: string;
  /** The process. */
  child: Deno.ChildProcess;
  /** The port it printed. */
  port: number;
  /** Resolves when both output streams are drained. */
  drained: Promise<void>;
  /** The last lines it printed, for error messages. */
  tail: string[];
  /** The signal {@linkcode stopProcess} sends first. */
  stopSignal: Deno.Signal;
  /** Set by the first stopProcess(), so that the process gets one stop signal only. */
  stopped?: Promise<number | null>;
}

/** Every child spawned, so that cleanup stops them whatever happened. */
const children = new Set<Started>();

/** Options of {@linkcode startServers}. */
export interface StartServersOptions {
  /** The Switchboard server's data directory. */
  dataDir: string;
  /** The Switchboard server's log directory. */
  logDir: string;
  /**
   * The signal that stops each server (a second one makes the Switchboard
   * server exit at once, skipping its shutdown).
   */
  stopSignal: Deno.Signal;
  /** Deno flags for the Switchboard server besides its permissions, such as `--inspect`. */
  denoFlags?: readonly string[];
  /** Flags for the Switchboard server after the usual ones, such as `["--lease", "60"]`. */
  serverFlags?: readonly string[];
  /** Called with each line the Switchboard server prints on standard error. */
  onServerStderrLine?: (line: string) => void;
  /**
   * Report a server that fails to start in one line, `the <label> <what
   * happened>: <its last line>`, instead of `The <label> <what happened>:`
   * followed by its last lines, indented.
   */
  oneLineError?: boolean;
}

/**
 * Starts the Switchboard server (`server.ts`) and the bare UDP echo server
 * (`udp_echo_server.ts`) on {@linkcode HOST} with ports chosen at run time,
 * and waits until both have printed their UDP port. Each keeps its output
 * drained for as long as it runs; {@linkcode stopAllProcesses} stops both
 * even when this throws.
 *
 * @param options the server's directories, how to stop both, and extras
 * @returns both servers
 * @throws {Error} if either exits or stays silent before listening
 *
 * @example
 * ```ts
 * cleanup.add(stopAllProcesses);
 * const { server, echo } = await startServers({ dataDir, logDir, stopSignal: "SIGTERM" });
 * ```
 */
export async function startServers(
  options: StartServersOptions,
): Promise<{ server: Started; echo: Started }> {
  const config = join(REPO, "deno.json");
  const common = { stopSignal: options.stopSignal, oneLineError: options.oneLineError };
  const startServer = startProcess([
    "run",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    ...(options.denoFlags ?? []),
    "--config",
    config,
    join(REPO, "server.ts"),
    "--host",
    HOST,
    "--udp-port",
    "0",
    "--tcp-port",
    "0",
    "--data-dir",
    options.dataDir,
    "--log-dir",
    options.logDir,
    "--log-level",
    "warning",
    // A load generator is one address sending thousands of requests a
    // second: the per-address rate limits would measure themselves.
    "--rate-limit",
    "0",
    "--session-rate-limit",
    "0",
    "--register-rate",
    "0",
    ...(options.serverFlags ?? []),
  ], {
    ...common,
    label: "Switchboard server",
    portLine: /^Server UDP listening on port (\d+)$/,
    onStderrLine: options.onServerStderrLine,
  });
  const startEcho = startProcess([
    "run",
    "--allow-net",
    "--config",
    config,
    ECHO_SCRIPT,
    "--host",
    HOST,
  ], { ...common, label: "echo server", portLine: /^Echo UDP listening on port (\d+)$/ });
  const [server, echo] = await Promise.allSettled([startServer, startEcho]);
  if (server.status === "rejected") throw server.reason;
  if (echo.status === "rejected") throw echo.reason;
  return { server: server.value, echo: echo.value };
}

interface StartOptions {
  label: string;
  /** The line that gives the port, in its first group. */
  portLine: RegExp;
  stopSignal: Deno.Signal;
  onStderrLine?: (line: string) => void;
  oneLineError?: boolean;
}

async function startProcess(args: string[], options: StartOptions): Promise<Started> {
  const { label, portLine, stopSignal } = options;
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const tail: string[] = [];
  const started: Started = {
    label,
    child,
    port: 0,
    drained: Promise.resolve(),
    tail,
    stopSignal,
  };
  children.add(started);
  const { promise: portFound, resolve: foundPort } = Promise.withResolvers<number>();
  // Keep reading both streams for the whole run: the server prints lines for
  // registrations and logins, and a full pipe would stall it.
  const onStderrLine = options.onStderrLine ?? (() => {});
  started.drained = Promise.all([
    drainLines(child.stdout, tail, (line) => {
      const match = portLine.exec(line);
      if (match) foundPort(Number(match[1]));
    }),
    drainLines(child.stderr, tail, onStderrLine),
  ]).then(() => {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    portFound,
    child.status.then((status) => `exited with code ${status.code} before listening`),
    new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve("did not start listening in time"), STARTUP_TIMEOUT_MS);
    }),
  ]);
  clearTimeout(timer);
  if (typeof outcome === "string") {
    await stopProcess(started);
    if (!options.oneLineError) throw new Error(`The ${label} ${outcome}:\n  ${tail.join("\n  ")}`);
    const last = tail.filter((line) => line.trim() !== "").at(-1);
    throw new Error(`the ${label} ${outcome}${last === undefined ? "" : `: ${last.trim()}`}`);
  }
  started.port = outcome;
  return started;
}

async function drainLines(
  stream: ReadableStream<Uint8Array>,
  tail: string[],
  onLine: (line: string) => void,
): Promise<void> {
  let rest = "";
  try {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + text).split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        onLine(line);
        tail.push(line);
        if (tail.length > 20) tail.shift();
      }
    }
  } catch {
    // The process went away: nothing more to read.
  }
  if (rest !== "") tail.push(rest);
}

/**
 * Stops a started process: sends its stop signal once (a second one makes the
 * Switchboard server exit at once, skipping its shutdown), waits, then sends
 * SIGKILL, and waits for its output to drain. Safe to call again.
 *
 * @param started the process
 * @returns its exit code, or null if it had to be killed
 */
export function stopProcess(started: Started): Promise<number | null> {
  started.stopped ??= terminate(started);
  return started.stopped;
}

/**
 * Stops every process {@linkcode startServers} started, as
 * {@linkcode stopProcess} does.
 *
 * @returns their exit codes
 */
export function stopAllProcesses(): Promise<(number | null)[]> {
  return Promise.all([...children].map(stopProcess));
}

async function terminate(started: Started): Promise<number | null> {
  const { child } = started;
  const exited = child.status.then((status) => status.code);
  try {
    child.kill(started.stopSignal);
  } catch {
    // already gone
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  let code: number | null | undefined = await Promise.race([
    exited,
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), STOP_TIMEOUT_MS);
    }),
  ]);
  clearTimeout(timer);
  if (code === undefined) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await exited;
    code = null;
  }
  await started.drained;
  return code;
}

// ---------------------------------------------------------------- cleanup

/**
 * The steps that undo a bench run (stop the servers, close sockets, remove
 * temp files), run once, last added first: when the run ends, or on the first
 * Ctrl-C, after which the process exits with code 130; a second Ctrl-C exits
 * at once. Listens for SIGINT from construction until {@linkcode Cleanup.close}.
 *
 * @example
 * ```ts
 * const cleanup = new Cleanup();
 * try {
 *   const tmp = await Deno.makeTempDir();
 *   cleanup.add(() => Deno.remove(tmp, { recursive: true }));
 * } finally {
 *   await cleanup.close();
 * }
 * ```
 */
export class Cleanup {
  #steps: (() => Promise<unknown>)[] = [];
  #done: Promise<void> | undefined;
  #interrupted = false;
  #onSignal = () => {
    if (this.#interrupted) Deno.exit(130);
    this.#interrupted = true;
    console.error("interrupted: stopping the servers and removing temp files");
    this.#run().finally(() => Deno.exit(130));
  };

  /** Starts listening for SIGINT. */
  constructor() {
    Deno.addSignalListener("SIGINT", this.#onSignal);
  }

  /** True once Ctrl-C was pressed: the run should stop and report nothing. */
  get interrupted(): boolean {
    return this.#interrupted;
  }

  /**
   * Adds a step; its errors are ignored.
   *
   * @param step undoes one thing
   */
  add(step: () => Promise<unknown>): void {
    this.#steps.push(step);
  }

  /** Runs the steps (once, whoever asks first), then stops listening for SIGINT. */
  async close(): Promise<void> {
    await this.#run();
    Deno.removeSignalListener("SIGINT", this.#onSignal);
  }

  #run(): Promise<void> {
    return this.#done ??= (async () => {
      for (const step of this.#steps.reverse()) await step().catch(() => {});
    })();
  }
}

// ---------------------------------------------------------------- figures

/**
 * Describes a reply that is not the one expected, for error samples.
 *
 * @param reply the reply, or why there is none
 * @returns `error <code>: <message>`, `unexpected <type>`, or the string itself
 */
export function replyText(reply: Message | string): string {
  if (typeof reply === "string") return reply;
  if (reply.type === "error") return `error ${errorCodeName(reply.code)}: ${reply.message}`;
  return `unexpected ${reply.type}`;
}

/**
 * Reads a quantile from sorted numbers (nearest rank, rounding down).
 *
 * @param sorted numbers in ascending order
 * @param q the quantile, from 0 to 1, such as 0.99
 * @returns the value, or 0 when there are none
 *
 * @example
 * ```ts
 * percentile([1, 2, 3, 4], 0.5); // 3
 * ```
 */
export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/**
 * Lays out a text table: the first columns padded on the right, the others on
 * the left, two spaces apart, a line of dashes under the header.
 *
 * @param header the column titles
 * @param rows the cells, one array a row
 * @param options how many columns are left-aligned (default 1)
 * @returns the lines, without trailing spaces
 */
export function table(
  header: string[],
  rows: string[][],
  options: { leftColumns?: number } = {},
): string[] {
  const leftColumns = options.leftColumns ?? 1;
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) =>
    cells.map((cell, i) => i < leftColumns ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))
      .join("  ").trimEnd();
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)];
}

/**
 * Counts the names in the server's registry files (snapshot and change log).
 *
 * @param dataDir the server's data directory
 * @returns the count, or undefined if the files cannot be read or parsed
 */
export async function countRegistered(dataDir: string): Promise<number | undefined> {
  try {
    return (await loadRegistry(dataDir)).size;
  } catch {
    return undefined;
  }
}
