/**
 * The Switchboard client: flags -> config -> prompt or script. Registers
 * with the server, deregisters, and sends custom messages over TCP.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { parseArgs } from "@std/cli/parse-args";
import type { CommandResult } from "./lib/client/client_core.ts";
import { type Command, COMMAND_HELP, CommandError, parseCommand } from "./lib/client/command.ts";
import { DEFAULT_RETRY_POLICY } from "./lib/client/retry_policy.ts";
import type { Via } from "./lib/client/server_session.ts";
import { ClientDriver } from "./lib/driver/client_driver.ts";
import { LineReader } from "./lib/driver/line_reader.ts";
import { LOG_LEVELS, type Logging, type LogLevelName, setupLogging } from "./lib/logging.ts";
import {
  portFlag,
  rejectUnknownFlags,
  requireValues,
  secondsFlag,
  UsageError,
} from "./lib/usage_error.ts";
import { printable } from "./lib/printable.ts";
import { errorLine, lowerFirstWord } from "./lib/error_line.ts";
import { VERSION } from "./lib/version.ts";
import { nameProblem } from "./lib/wire/client_name.ts";

const DEFAULT_SERVER_PORT = 3000;
const DEFAULT_TCP_PORT = 5001;

const HELP = `switchboard-client ${VERSION}: a Switchboard client

Usage: switchboard-client [flags]

On a terminal it asks for what the flags did not give, then shows a prompt.
With piped input or --script it runs the commands in order and stops at the
first failure (exit 1).

Flags:
  --server HOST:PORT  the server's UDP address (default localhost:${DEFAULT_SERVER_PORT}; asked on a terminal)
  --name NAME         the name to register under (asked on a terminal as first and last name)
  --tcp-port N        this client's TCP port, 1024 to 65535 (default ${DEFAULT_TCP_PORT}; asked on a terminal)
  --udp-port N        this client's UDP port; 0 picks a free one (default 0)
  --transport T       udp or tcp: how register and deregister travel (default udp)
  --timeout SECONDS   give up on an unanswered request after this long (default 30)
  --script FILE       run the commands in FILE instead of reading standard input
  --json              print one JSON object per line for every event and result
  --log-dir DIR       where client.log is written (default ./logs)
  --log-level LEVEL   debug, info, warning or error (default info)
  -h, --help          show this help
  -V, --version       print the version

Commands:
${COMMAND_HELP.map(([usage, text]) => `  ${usage.padEnd(18)}  ${text}`).join("\n")}`;

interface ClientFlags {
  server?: { host: string; port: number };
  name?: string;
  tcpPort?: number;
  udpPort: number;
  via: Via;
  timeoutMs: number;
  script?: string;
  json: boolean;
  logDir: string;
  logLevel: LogLevelName;
}

function parseFlags(args: string[]): ClientFlags | "help" | "version" {
  const strings = [
    "server",
    "name",
    "tcp-port",
    "udp-port",
    "transport",
    "timeout",
    "script",
    "log-dir",
    "log-level",
  ];
  const parsed = parseArgs(args, {
    string: strings,
    boolean: ["help", "version", "json"],
    alias: { h: "help", V: "version" },
    default: { "udp-port": "0", transport: "udp", "log-dir": "./logs", "log-level": "info" },
  });
  requireValues(args, parsed, strings);
  rejectUnknownFlags(parsed, [...strings, "help", "version", "json", "h", "V"]);
  if (parsed.help) return "help";
  if (parsed.version) return "version";
  const via = parsed.transport;
  if (via !== "udp" && via !== "tcp") {
    throw new UsageError(`--transport must be udp or tcp, not "${via}"`);
  }
  const logLevel = parsed["log-level"];
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(", ")}, not "${logLevel}"`);
  }
  const name = parsed.name;
  if (name !== undefined) {
    const problem = nameProblem(name);
    if (problem !== undefined) throw new UsageError(`--name: ${problem}`);
  }
  return {
    server: parsed.server === undefined ? undefined : parseServer(parsed.server),
    name,
    tcpPort: parsed["tcp-port"] === undefined
      ? undefined
      : portFlag("--tcp-port", parsed["tcp-port"], { min: 1024, max: 65535 }),
    udpPort: portFlag("--udp-port", parsed["udp-port"]),
    via,
    timeoutMs: parsed.timeout === undefined
      ? DEFAULT_RETRY_POLICY.giveUpMs
      : secondsFlag("--timeout", parsed.timeout),
    script: parsed.script,
    json: parsed.json,
    logDir: parsed["log-dir"],
    logLevel: logLevel as LogLevelName,
  };
}

/**
 * Parses `host`, `host:port`, `[v6]` or `[v6]:port`.
 */
function parseServer(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:\[\]]+))(?::(.*))?$/.exec(text.trim());
  if (match === null) {
    throw new UsageError(`--server must look like HOST:PORT, not "${text}"`);
  }
  const host = match[1] ?? match[2];
  const port = match[3] === undefined
    ? DEFAULT_SERVER_PORT
    : portFlag("--server port", match[3], { min: 1, max: 65535 });
  return { host, port };
}

/** Writes results and events: plain text, or JSON lines with `--json`. */
class Output {
  #json: boolean;

  constructor(json: boolean) {
    this.#json = json;
  }

  event(event: string, text: string, data: Record<string, unknown> = {}): void {
    if (this.#json) console.log(JSON.stringify({ event, message: text, ...data }));
    else console.log(printable(text));
  }

  result(result: CommandResult): void {
    if (this.#json) {
      const { ok, command } = result;
      const rest = result.ok
        ? { message: result.message, ...result.data }
        : { error: result.error, code: result.code };
      console.log(JSON.stringify({ event: "result", command, ok, ...rest }));
      if (!result.ok) console.error(errorLine(result.error));
    } else if (result.ok) {
      console.log(printable(result.message));
    } else {
      console.error(errorLine(result.error));
    }
  }

  error(text: string, code: string): void {
    if (this.#json) console.log(JSON.stringify({ event: "error", error: text, code }));
    console.error(errorLine(text));
  }
}

const encoder = new TextEncoder();

async function ask(lines: LineReader, question: string): Promise<string> {
  await Deno.stdout.write(encoder.encode(question));
  const answer = await lines.next();
  if (answer === undefined) throw new UsageError("input ended before the question was answered");
  return answer.trim();
}

async function askSettings(flags: ClientFlags, lines: LineReader): Promise<Required<ClientFlags>> {
  let server = flags.server;
  while (server === undefined) {
    const answer = await ask(lines, "Enter server IP address (or 'localhost'): ");
    try {
      server = parseServer(answer === "" ? "localhost" : answer);
    } catch (error) {
      console.error(errorLine((error as Error).message));
    }
  }
  let tcpPort = flags.tcpPort;
  while (tcpPort === undefined) {
    const answer = await ask(lines, "Enter client TCP port (1024–65535): ");
    try {
      tcpPort = portFlag("TCP port", answer, { min: 1024, max: 65535 });
    } catch (error) {
      console.error(errorLine((error as Error).message));
    }
  }
  let name = flags.name;
  while (name === undefined) {
    const first = await ask(lines, "Enter your first name: ");
    const last = await ask(lines, "Enter your last name: ");
    const candidate = [first, last].filter((part) => part !== "").join(" ");
    const problem = nameProblem(candidate);
    if (problem === undefined) name = candidate;
    else console.error(errorLine(problem));
  }
  return { ...flags, server, tcpPort, name, script: "" };
}

async function main(args: string[]): Promise<number> {
  let flags: ClientFlags;
  try {
    const parsed = parseFlags(args);
    if (parsed === "help") {
      console.log(HELP);
      return 0;
    }
    if (parsed === "version") {
      console.log(`switchboard-client ${VERSION}`);
      return 0;
    }
    flags = parsed;
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(errorLine(error.message));
      return 2;
    }
    throw error;
  }
  // Everything opened below is closed once, on the way out. Ctrl+C at any
  // point (a prompt, a pending request) leaves with exit code 130, even if
  // the end of input was seen at the same moment.
  const opened: Opened = {};
  let interrupted = false;
  let leaving: Promise<number> | undefined;
  const leave = (code: number): Promise<number> =>
    leaving ??= (async () => {
      await opened.client?.close();
      await opened.lines?.cancel();
      await opened.logging?.close();
      return interrupted ? 130 : code;
    })();
  const onInterrupt = () => {
    interrupted = true;
    getLogger(["switchboard", "client"]).info("Interrupted by Ctrl+C (SIGINT)");
    leave(130).then(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    return await leave(await session(flags, opened));
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
  }
}

/** What a session has opened so far, for `main` to close on the way out. */
interface Opened {
  lines?: LineReader;
  logging?: Logging;
  client?: ClientDriver;
}

/** Runs the client from the parsed flags and returns its exit code. */
async function session(flags: ClientFlags, opened: Opened): Promise<number> {
  const interactive = flags.script === undefined && Deno.stdin.isTerminal();
  let input: ReadableStream<Uint8Array>;
  if (flags.script !== undefined) {
    try {
      if ((await Deno.stat(flags.script)).isDirectory) throw new Error("it is a directory");
      input = (await Deno.open(flags.script)).readable;
    } catch (error) {
      console.error(errorLine(`cannot read script ${flags.script}: ${(error as Error).message}`));
      return 2;
    }
  } else {
    input = Deno.stdin.readable;
  }
  const lines = opened.lines = new LineReader(input);
  const output = new Output(flags.json);
  let settings;
  try {
    settings = interactive ? await askSettings(flags, lines) : {
      ...flags,
      server: flags.server ?? { host: "localhost", port: DEFAULT_SERVER_PORT },
      tcpPort: flags.tcpPort ?? DEFAULT_TCP_PORT,
    };
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(errorLine(error.message));
      return 2;
    }
    throw error;
  }

  try {
    opened.logging = await setupLogging({
      dir: flags.logDir,
      file: "client.log",
      level: flags.logLevel,
    });
  } catch (error) {
    console.error(errorLine(`cannot write logs to ${flags.logDir}: ${(error as Error).message}`));
    return 1;
  }
  let client: ClientDriver;
  try {
    client = opened.client = await ClientDriver.open({
      serverHost: settings.server.host,
      serverPort: settings.server.port,
      udpPort: settings.udpPort,
      tcpPort: settings.tcpPort,
      name: settings.name,
      via: settings.via,
      retry: { ...DEFAULT_RETRY_POLICY, giveUpMs: settings.timeoutMs },
    });
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      output.error(
        `UDP port ${settings.udpPort} is in use; pass --udp-port 0 to pick a free one`,
        "udp_port_in_use",
      );
    } else {
      output.error(`cannot open a UDP socket: ${(error as Error).message}`, "udp_failed");
    }
    return 1;
  }

  const hello = await client.run({ kind: "hello" });
  if (!hello.ok) {
    output.error(`cannot reach the server: ${lowerFirstWord(hello.error)}`, hello.code);
    return 1;
  }
  output.event("connected", hello.message, hello.data);
  if (interactive) {
    console.log('Type "help" for the commands.');
    return await interactiveLoop(client, lines, output);
  }
  return await scriptLoop(client, lines, output);
}

async function runCommand(
  client: ClientDriver,
  command: Command,
  output: Output,
): Promise<CommandResult | "exit"> {
  if (command.kind === "exit") return "exit";
  if (command.kind === "help") {
    const text = COMMAND_HELP.map(([usage, text]) => `  ${usage.padEnd(18)}  ${text}`).join("\n");
    const result: CommandResult = { ok: true, command: "help", message: text };
    output.result(result);
    return result;
  }
  const result = await client.run(command);
  output.result(result);
  return result;
}

async function scriptLoop(client: ClientDriver, lines: LineReader, output: Output) {
  for (let line = await lines.next(); line !== undefined; line = await lines.next()) {
    let command;
    try {
      command = parseCommand(line);
    } catch (error) {
      if (!(error instanceof CommandError)) throw error;
      output.result(badCommand(line, error));
      return 1;
    }
    if (command === undefined) continue;
    const result = await runCommand(client, command, output);
    if (result === "exit") return 0;
    if (!result.ok) return 1;
  }
  return 0;
}

async function interactiveLoop(client: ClientDriver, lines: LineReader, output: Output) {
  while (true) {
    await Deno.stdout.write(encoder.encode("> "));
    const line = await lines.next();
    if (line === undefined) return 0;
    let command;
    try {
      command = parseCommand(line);
    } catch (error) {
      if (!(error instanceof CommandError)) throw error;
      output.result(badCommand(line, error));
      continue;
    }
    if (command === undefined) continue;
    let result = await runCommand(client, command, output);
    if (result === "exit") return 0;
    while (!result.ok && result.code === "name_taken") {
      const name = await ask(lines, "Pick another name (empty to cancel): ");
      if (name === "") break;
      result = await runCommand(client, { kind: "register", name }, output) as CommandResult;
    }
  }
}

function badCommand(line: string, error: CommandError): CommandResult {
  const command = line.trim().split(/\s+/)[0].toLowerCase();
  return { ok: false, command, error: error.message, code: "bad_command" };
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
