/**
 * The Switchboard client: flags -> config -> prompt or script. Registers
 * with the server, deregisters, and sends custom messages over TCP.
 *
 * @module
 */
import { PEER_CHANNEL_OPTIONS } from "./lib/client/peer_table.ts";
import { fromHex } from "./lib/hex.ts";
import { hostPort } from "./lib/host_port.ts";
import { getLogger } from "@logtape/logtape";
import { parseArgs } from "@std/cli/parse-args";
import type { ClientEvent, CommandResult } from "./lib/client/client_event.ts";
import { clientEventText, commandResultText, formatBytes } from "./lib/client/client_event_text.ts";
import { type Command, COMMAND_HELP, CommandError, parseCommand } from "./lib/client/command.ts";
import { DEFAULT_RETRY_POLICY } from "./lib/client/retry_policy.ts";
import type { Via } from "./lib/client/server_session.ts";
import {
  ClientDriver,
  resolveServer,
  ServerNameError,
  type TransferProgress,
} from "./lib/io/client_driver.ts";
import { findIdentity, IdentityFileError, loadIdentities } from "./lib/io/identity_file.ts";
import { sampleReadingLines } from "./lib/client/sample_readings.ts";
import { cryptoRandom } from "./lib/random.ts";
import { basename, join } from "@std/path";
import { LineReader } from "./lib/cli/line_reader.ts";
import { Terminal } from "./lib/cli/terminal.ts";
import { displayWidth } from "./lib/display_width.ts";
import { commandCompleter } from "./lib/cli/command_completer.ts";
import { LineHistory } from "./lib/cli/line_history.ts";
import { OnlineNames } from "./lib/cli/online_names.ts";
import {
  LOG_LEVELS,
  type LogFormatName,
  type Logging,
  type LogLevelName,
  setupLogging,
} from "./lib/io/logging.ts";
import { durationFlag, logFormatFlag, sizeFlag } from "./lib/cli/usage_error.ts";
import {
  portFlag,
  rejectSwitchValues,
  rejectUnknownFlags,
  requireValues,
  secondsFlag,
  UsageError,
} from "./lib/cli/usage_error.ts";
import { printable } from "./lib/printable.ts";
import { errorLine, lowerFirstWord } from "./lib/error_line.ts";
import { parseWithSources } from "./lib/cli/flag_sources.ts";
import { CLIENT_FLAGS } from "./lib/cli/program_flags.ts";
import { VERSION } from "./lib/version.ts";
import { normalizeFingerprint } from "./lib/crypto/fingerprint.ts";
import { KnownServersFileError, knownServersPathBeside } from "./lib/io/known_servers_file.ts";
import { ClientKeyFileError, clientKeyPathBeside } from "./lib/io/client_key_file.ts";
import { nameProblem } from "./lib/wire/client_name.ts";
import { fileNameProblem } from "./lib/wire/file_name.ts";

const DEFAULT_SERVER_PORT = 3000;
const DEFAULT_TCP_PORT = 5001;
/** The command words, for Tab completion. */
const COMMAND_WORDS = [...new Set(COMMAND_HELP.map(([usage]) => usage.split(" ")[0]))];

const HELP = `switchboard-client ${VERSION}: a Switchboard client

Usage: switchboard-client [flags]

On a terminal it asks for what the flags did not give, then shows a prompt.
With piped input or --script it runs the commands in order and stops at the
first failure (exit 1).

Flags:
  --server HOST:PORT  the server's UDP address (default localhost:${DEFAULT_SERVER_PORT}; asked on a terminal);
                      HOST:PORT,HOST:PORT,... for instances sharing one Redis: the client
                      moves to the next when one stops answering
  --name NAME         the name to register under (asked on a terminal as first and last name)
  --tcp-port N        this client's TCP port, 1024 to 65535 (default ${DEFAULT_TCP_PORT}; asked on a terminal)
  --udp-port N        this client's UDP port; 0 picks a free one (default 0)
  --server-key FP     the fingerprint of the server's key (what \`switchboard-server key\`
                      prints); without it the first key seen is trusted and pinned in
                      known_servers.json beside the identity file, and a changed key is refused
  --transport T       udp or tcp: how register and deregister travel (default udp)
  --timeout SECONDS   give up on an unanswered request after this long (default 30)
  --data-dir DIR      where this client keeps its identities (default ./data/client)
  --identity FILE     the identity file (default DATA-DIR/identities.json); the client's
                      key pair, its identity on open servers, is client_key.json beside it
  --password-file F   read the login password from F (password servers, script mode);
                      the SWITCHBOARD_PASSWORD variable works too
  --download-dir DIR  where download and files from peers land (default ./downloads)
  --accept-files      accept every file a peer offers (else: acceptfile / declinefile)
  --max-receive SIZE  decline offers of files larger than this (default 4G)
  --keep-partial D    remove partial files of ended transfers after D, such as 12h
                      or 30m (default 1d)
  --traversal MODE    on (default): peers are introduced by the server, probe
                      for a direct path and use its relay meanwhile; off: send
                      straight to the address the server sees (as through
                      deno task impair, whose proxy must carry the traffic)
  --channel-mode M    selective (default), or baselines for benchmarks: newreno
                      (selective with the congestion control before BBR) or
                      stop-and-wait (seed 001's one segment at a time, 10 s timeout)
  --script FILE       run the commands in FILE instead of reading standard input
  --json              print one JSON object per line for every event and result
  --log-dir DIR       where client.log is written (default ./logs)
  --log-level LEVEL   debug, info, warning or error (default info)
  --log-format F      text (one line a record) or json (one object a line) (default text)
  --log-stderr        log to standard error instead of DIR/client.log
  --config FILE       read flags from the TOML file FILE (server = "host:3000"); also
                      SWITCHBOARD_CONFIG
  -h, --help          show this help
  -V, --version       print the version

Every flag can also come from the environment as SWITCHBOARD_<FLAG>
(SWITCHBOARD_SERVER=host:3000, SWITCHBOARD_ACCEPT_FILES=true) or from the config
file; a flag on the command line beats the environment, which beats the file.

Commands:
${COMMAND_HELP.map(([usage, text]) => `  ${usage.padEnd(18)}  ${text}`).join("\n")}`;

interface ClientFlags {
  server?: { host: string; port: number };
  /** Other instances after the first in `--server a:3000,b:3000`. */
  failover?: { host: string; port: number }[];
  name?: string;
  tcpPort?: number;
  udpPort: number;
  via: Via;
  timeoutMs: number;
  script?: string;
  json: boolean;
  logDir: string;
  logLevel: LogLevelName;
  logFormat: LogFormatName;
  logStderr: boolean;
  dataDir: string;
  identityFile: string;
  passwordFile?: string;
  downloadDir: string;
  acceptFiles: boolean;
  maxReceive: number;
  keepPartialMs: number;
  channelMode: "selective" | "newreno" | "stop_and_wait";
  /** Whether peer sessions use the server's introductions, probes and relay. */
  traverse: boolean;
  serverKey?: string;
}

function parseFlags(args: string[]): ClientFlags | "help" | "version" {
  const strings = CLIENT_FLAGS.strings;
  const parsed = parseArgs(args, {
    string: strings,
    boolean: CLIENT_FLAGS.booleans,
    alias: { h: "help", V: "version" },
    default: {
      "udp-port": "0",
      transport: "udp",
      "log-dir": "./logs",
      "log-level": "info",
      "log-format": "text",
      "data-dir": "./data/client",
      "download-dir": "./downloads",
      "max-receive": "4G",
      "keep-partial": "1d",
      "channel-mode": "selective",
      traversal: "on",
    },
  });
  requireValues(args, parsed, strings);
  rejectSwitchValues(args, CLIENT_FLAGS.booleans);
  rejectUnknownFlags(parsed, [...strings, ...CLIENT_FLAGS.booleans, "h", "V"]);
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
  const traversal = parsed.traversal;
  if (traversal !== "on" && traversal !== "off") {
    throw new UsageError(`--traversal must be on or off, not "${traversal}"`);
  }
  const channelMode = parsed["channel-mode"];
  if (channelMode !== "selective" && channelMode !== "newreno" && channelMode !== "stop-and-wait") {
    throw new UsageError(
      `--channel-mode must be selective, newreno or stop-and-wait, not "${channelMode}"`,
    );
  }
  const serverKey = parsed["server-key"] === undefined
    ? undefined
    : normalizeFingerprint(parsed["server-key"]);
  if (parsed["server-key"] !== undefined && serverKey === undefined) {
    throw new UsageError(
      `--server-key must be a key fingerprint like abcd-efgh-ijkl-mnop-qrst-uvwx-yz23-4567, not "${
        parsed["server-key"]
      }"`,
    );
  }
  const name = parsed.name;
  if (name !== undefined) {
    const problem = nameProblem(name);
    if (problem !== undefined) throw new UsageError(`--name: ${problem}`);
  }
  return {
    ...serverFlag(parsed.server),
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
    logFormat: logFormatFlag(parsed["log-format"]),
    logStderr: parsed["log-stderr"],
    dataDir: parsed["data-dir"],
    identityFile: parsed.identity ?? join(parsed["data-dir"], "identities.json"),
    passwordFile: parsed["password-file"],
    downloadDir: downloadDirFlag(parsed["download-dir"]),
    acceptFiles: parsed["accept-files"],
    maxReceive: sizeFlag("--max-receive", parsed["max-receive"]),
    keepPartialMs: keepPartialFlag(parsed["keep-partial"]),
    channelMode: channelMode === "stop-and-wait" ? "stop_and_wait" : channelMode,
    traverse: traversal === "on",
    serverKey,
  };
}

/** Reads `--server`: one address, or several instances of one service, comma-separated. */
function serverFlag(text: string | undefined): Pick<ClientFlags, "server" | "failover"> {
  if (text === undefined) return {};
  const [server, ...failover] = text.split(",").map((part) => parseServer(part));
  return { server, failover };
}

/**
 * Parses `host`, `host:port`, `[v6]` or `[v6]:port`; `what` names it in errors.
 */
function parseServer(text: string, what = "--server"): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:\[\]]+))(?::(.*))?$/.exec(text.trim());
  if (match === null) {
    // An IPv6 address with a port needs brackets, as in URLs.
    const v6 = /^((?:[0-9a-f]*:){2,}[0-9a-f.]*):(\d+)$/i.exec(text.trim());
    const hint = v6 === null ? "" : `; an IPv6 address goes in brackets: [${v6[1]}]:${v6[2]}`;
    throw new UsageError(`${what} must look like HOST:PORT, not "${text}"${hint}`);
  }
  const host = match[1] ?? match[2];
  const port = match[3] === undefined
    ? DEFAULT_SERVER_PORT
    : portFlag(`${what} port`, match[3], { min: 1, max: 65535 });
  return { host, port };
}

/**
 * Writes results and events: plain text, or JSON lines with `--json`; on an
 * interactive terminal, above the prompt.
 */
class Output {
  #json: boolean;
  #terminal: Terminal | undefined;

  constructor(json: boolean, terminal?: Terminal) {
    this.#json = json;
    this.#terminal = terminal;
  }

  /** A line (or lines) on standard output. */
  #out(text: string): void {
    if (this.#terminal) this.#terminal.print(text);
    else console.log(text);
  }

  /** A line on standard error. */
  #err(text: string): void {
    if (this.#terminal && Deno.stderr.isTerminal()) this.#terminal.print(text);
    else console.error(text);
  }

  event(event: string, text: string, data: Record<string, unknown> = {}): void {
    if (this.#json) this.#out(JSON.stringify({ event, message: text, ...data }));
    else this.#out(printable(text));
  }

  result(result: CommandResult): void {
    if (this.#json) {
      if (result.ok) {
        const { ok, command, ...facts } = result;
        const message = commandResultText(result);
        this.#out(JSON.stringify({ event: "result", command, ok, message, ...facts }));
      } else {
        const { ok, command, error, code } = result;
        this.#out(JSON.stringify({ event: "result", command, ok, error, code }));
        this.#err(errorLine(result.error));
      }
    } else if (result.ok) {
      this.#out(commandResultText(result).split("\n").map(printable).join("\n"));
    } else {
      this.#err(errorLine(result.error));
    }
  }

  clientEvent(event: ClientEvent): void {
    if (this.#json) {
      const { kind, ...facts } = event;
      this.#out(JSON.stringify({ event: kind, message: clientEventText(event), ...facts }));
    } else if (event.kind === "file_progress" && (this.#terminal || Deno.stderr.isTerminal())) {
      this.#progressBar(event);
    } else if (event.kind === "peer_path" && this.#terminal === undefined) {
      // Path changes go to the terminal, --json and the log; a script's text
      // output stays the same whatever path its sessions take.
      return;
    } else {
      // A transfer that ended (cancelled, failed) takes its bar with it.
      const ended = event.kind === "file_done" || event.kind === "file_failed";
      if (ended && this.#terminal) this.#terminal.status(undefined);
      if (this.#barShown) this.#endBar();
      this.#out(printable(clientEventText(event)));
    }
  }

  #barShown = false;

  /** One line on the terminal, redrawn: bar, bytes, rate and time left. */
  #progressBar(d: Extract<ClientEvent, { kind: "file_progress" }>): void {
    const fraction = d.size === 0 ? 1 : d.done / d.size;
    const eta = d.etaSeconds === null ? "" : ` ETA ${formatSeconds(d.etaSeconds)}`;
    const head = printable(`${d.direction === "send" ? "→" : "←"} ${d.name} `);
    const tail = ` ${Math.floor(fraction * 100)}% ${formatBytes(d.done)}/${formatBytes(d.size)} ${
      formatBytes(d.rate)
    }/s${eta}`;
    // The bar gives way on a narrow terminal, so that the figures still fit.
    const room = (this.#terminal?.columns ?? 80) - 1 - displayWidth(head + tail) - 2;
    const width = Math.max(4, Math.min(24, room));
    const filled = Math.round(fraction * width);
    const line = `${head}[${"#".repeat(filled)}${"-".repeat(width - filled)}]${tail}`;
    this.#status(line, d.done >= d.size);
  }

  /**
   * A line redrawn in place: the status line above the prompt on an
   * interactive terminal, else the last line of standard error. A `last`
   * one stays on the screen.
   */
  #status(line: string, last: boolean): void {
    if (this.#terminal) {
      if (last) {
        this.#terminal.status(undefined);
        this.#terminal.print(line);
      } else {
        this.#terminal.status(line);
      }
      return;
    }
    Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${line}`));
    this.#barShown = true;
    if (last) this.#endBar();
  }

  #endBar(): void {
    Deno.stderr.writeSync(encoder.encode("\n"));
    this.#barShown = false;
  }

  #progressAt = 0;

  /** Progress of transfers over 1 MiB, on standard error, at most every half second. */
  progress(p: TransferProgress): void {
    if (p.total < 1024 * 1024) return;
    const now = performance.now();
    const last = p.done === p.total;
    if (!last && now - this.#progressAt < 500) return;
    this.#progressAt = now;
    const verb = { hash: "Hashing", upload: "Uploading", download: "Downloading" }[p.stage];
    const percent = Math.floor((p.done / p.total) * 100);
    const mib = (n: number) => (n / 1024 / 1024).toFixed(1);
    const line = printable(
      `${verb} ${p.name}: ${percent}% (${mib(p.done)} of ${mib(p.total)} MiB)`,
    );
    if (this.#terminal) this.#status(line, last);
    else console.error(line);
  }

  error(text: string, code: string): void {
    if (this.#json) this.#out(JSON.stringify({ event: "error", error: text, code }));
    this.#err(errorLine(text));
  }

  /** A plain line for the person at the terminal, in text and JSON mode alike. */
  note(text: string): void {
    this.#out(text);
  }

  /** A problem with what the user typed, on standard error. */
  problem(text: string): void {
    this.#err(errorLine(text));
  }
}

const encoder = new TextEncoder();

function formatSeconds(seconds: number): string {
  if (seconds < 60) return `${seconds} s`;
  const m = Math.floor(seconds / 60), sec = seconds % 60;
  return m < 60 ? `${m} min ${sec} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Where typed lines come from: the interactive terminal, or a stream (piped stdin, a script). */
type Lines = Terminal | LineReader;

/** Shows `prompt` and reads a line; undefined at the end of input. */
async function prompted(
  lines: Lines,
  prompt: string,
  history?: LineHistory,
): Promise<string | undefined> {
  if (lines instanceof Terminal) return await lines.next({ prompt, history });
  await Deno.stdout.write(encoder.encode(prompt));
  return await lines.next();
}

async function ask(lines: Lines, question: string): Promise<string> {
  const answer = await prompted(lines, question);
  if (answer === undefined) throw new UsageError("input ended before the question was answered");
  return answer.trim();
}

async function askSettings(
  flags: ClientFlags,
  lines: Lines,
  output: Output,
): Promise<
  ClientFlags & { server: { host: string; port: number }; tcpPort: number; name: string }
> {
  let server = flags.server;
  while (server === undefined) {
    const answer = await ask(lines, "Enter server IP address (or 'localhost'): ");
    try {
      const given = parseServer(answer === "" ? "localhost" : answer, "The server address");
      // A name that does not resolve is asked again now, not found out after every question.
      await resolveServer(given.host);
      server = given;
    } catch (error) {
      if (!(error instanceof UsageError || error instanceof ServerNameError)) throw error;
      output.problem(error.message);
    }
  }
  let tcpPort = flags.tcpPort;
  while (tcpPort === undefined) {
    const answer = await ask(
      lines,
      `Enter client TCP port (1024–65535, Enter for ${DEFAULT_TCP_PORT}): `,
    );
    try {
      tcpPort = answer === ""
        ? DEFAULT_TCP_PORT
        : portFlag("TCP port", answer, { min: 1024, max: 65535 });
    } catch (error) {
      output.problem((error as Error).message);
    }
  }
  let name = flags.name;
  while (name === undefined) {
    const first = await ask(lines, "Enter your first name: ");
    const last = await ask(lines, "Enter your last name: ");
    const candidate = [first, last].filter((part) => part !== "").join(" ");
    const problem = nameProblem(candidate);
    if (problem === undefined) name = candidate;
    else output.problem(problem);
  }
  return { ...flags, server, tcpPort, name, script: "" };
}

async function main(args: string[]): Promise<number> {
  let flags: ClientFlags;
  try {
    const parsed = parseWithSources(args, CLIENT_FLAGS, parseFlags);
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
  let signalled: number | undefined;
  let leaving: Promise<number> | undefined;
  const leave = (code: number): Promise<number> =>
    leaving ??= (async () => {
      await opened.client?.close();
      await opened.lines?.cancel();
      await opened.history?.flush();
      await opened.logging?.close();
      return signalled ?? code;
    })();
  // SIGTERM, SIGHUP and Ctrl+\ (SIGQUIT) leave the same way: logged out, the terminal given back.
  const signals = Deno.build.os === "windows" ? [["SIGINT", 130, "Ctrl+C"]] as const : [
    ["SIGINT", 130, "Ctrl+C"],
    ["SIGTERM", 143, "a termination request"],
    ["SIGHUP", 129, "a closed terminal"],
    ["SIGQUIT", 131, "Ctrl+\\"],
  ] as const;
  const handlers = signals.map(([signal, code, what]) => {
    const handler = () => {
      signalled ??= code;
      getLogger(["switchboard", "client"]).info(`Interrupted by ${what} (${signal})`);
      leave(code).then((exit) => Deno.exit(exit));
    };
    Deno.addSignalListener(signal, handler);
    return [signal, handler] as const;
  });
  try {
    return await leave(await session(flags, opened));
  } finally {
    for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
  }
}

/** What a session has opened so far, for `main` to close on the way out. */
interface Opened {
  lines?: Lines;
  logging?: Logging;
  client?: ClientDriver;
  history?: LineHistory;
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
  const online = new OnlineNames();
  const terminal = interactive
    ? Terminal.open({
      // On a password server, what follows `login` (a pasted password) is not echoed.
      secretAfter: (line) => opened.client?.core.auth === "password" && isLogin(line),
      complete: commandCompleter(COMMAND_WORDS, () => online.names),
    })
    : undefined;
  const lines = opened.lines = terminal ?? new LineReader(input);
  const output = new Output(flags.json, terminal);
  let settings;
  try {
    settings = interactive ? await askSettings(flags, lines, output) : {
      ...flags,
      server: flags.server ?? { host: "localhost", port: DEFAULT_SERVER_PORT },
      tcpPort: flags.tcpPort ?? DEFAULT_TCP_PORT,
    };
  } catch (error) {
    if (error instanceof UsageError) {
      output.problem(error.message);
      return 2;
    }
    throw error;
  }

  try {
    opened.logging = await setupLogging({
      dir: flags.logDir,
      file: "client.log",
      level: flags.logLevel,
      format: flags.logFormat,
      stderr: flags.logStderr,
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
      failover: settings.failover,
      udpPort: settings.udpPort,
      tcpPort: settings.tcpPort,
      name: settings.name,
      via: settings.via,
      retry: { ...DEFAULT_RETRY_POLICY, giveUpMs: settings.timeoutMs },
      identityFile: settings.identityFile,
      keyFile: clientKeyPathBeside(settings.identityFile),
      serverKey: settings.serverKey,
      knownServersFile: knownServersPathBeside(settings.identityFile),
      onEvent: (event) => {
        online.observe(event);
        output.clientEvent(event);
      },
      onProgress: (progress) => output.progress(progress),
      downloadDir: settings.downloadDir,
      acceptFiles: settings.acceptFiles,
      maxReceive: settings.maxReceive,
      keepPartialMs: settings.keepPartialMs,
      traverse: settings.traverse,
      peerChannel: settings.channelMode === "selective"
        ? undefined
        : settings.channelMode === "newreno"
        ? { ...PEER_CHANNEL_OPTIONS, congestion: "newreno" }
        : { ...PEER_CHANNEL_OPTIONS, mode: "stop_and_wait", copies: 1 },
    });
  } catch (error) {
    if (error instanceof ServerNameError) {
      output.error(error.message, "connection_failed");
    } else if (error instanceof KnownServersFileError || error instanceof ClientKeyFileError) {
      output.error(error.message, "file_error");
    } else if (error instanceof Deno.errors.AddrInUse) {
      output.error(
        `UDP port ${settings.udpPort} is in use; pass --udp-port 0 to pick a free one`,
        "udp_port_in_use",
      );
    } else {
      output.error(`cannot open a UDP socket: ${(error as Error).message}`, "udp_failed");
    }
    return 1;
  }

  // While the server is reached, the last question is not shown again; what
  // is typed meanwhile (an answer given twice) is not run as a command.
  terminal?.show(`Connecting to ${hostPort(settings.server.host, settings.server.port)}... `);
  const hello = await client.run({ kind: "hello" });
  const early = terminal?.discard() ?? [];
  terminal?.show("");
  if (early.some((line) => line.trim() !== "")) {
    output.note(`Not run (typed while connecting): ${early.map((l) => printable(l)).join(", ")}`);
  }
  if (!hello.ok) {
    // A refused server key is its own line: the server was reached, and is not trusted.
    const refusal = client.serverKeyRefusal;
    output.error(refusal ?? `cannot reach the server: ${lowerFirstWord(hello.error)}`, hello.code);
    return 1;
  }
  const { ok: _ok, command: _command, ...facts } = hello;
  output.event("connected", commandResultText(hello), facts);
  const context: Context = { client, output, flags: settings, lines, interactive, online };
  if (interactive) {
    output.note('Type "help" for the commands.');
    // Per user: the name, made safe as a file name.
    const file = encodeURIComponent((settings.name ?? "").toLowerCase()).replaceAll(".", "%2E");
    context.history = opened.history = await LineHistory.load(
      join(settings.dataDir, "history", `${file}.txt`),
    );
    return await interactiveLoop(context);
  }
  return await scriptLoop(context);
}

/** What running a command needs besides the command. */
interface Context {
  client: ClientDriver;
  output: Output;
  flags: ClientFlags & { server: { host: string; port: number } };
  lines: Lines;
  interactive: boolean;
  /** Who was last seen online, for Tab completion. */
  online: OnlineNames;
  /** The command history, on a terminal. */
  history?: LineHistory;
}

async function runCommand(context: Context, command: Command): Promise<CommandResult | "exit"> {
  if (command.kind === "exit") return "exit";
  const result = await commandResult(context, command);
  context.online.observe(result);
  context.output.result(result);
  return result;
}

async function commandResult(context: Context, command: Command): Promise<CommandResult> {
  const { client, flags } = context;
  switch (command.kind) {
    case "help":
      return { ok: true, command: "help" };
    case "login":
      return await login(context, command.name);
    case "generate":
      return await generate(command.file, command.count);
    case "upload":
      return await client.upload(command.file, command.name ?? basename(command.file));
    case "sendfile":
      return await client.sendFile(command.path, command.to);
    case "download": {
      const problem = fileNameProblem(command.name);
      if (problem !== undefined) {
        return { ok: false, command: "download", error: problem, code: "invalid_file_name" };
      }
      return await client.download(
        command.name,
        command.dest ?? join(flags.downloadDir, command.name),
      );
    }
    case "exit":
      throw new TypeError("exit has no result");
    default:
      return await client.run(command);
  }
}

const EMPTY = new Uint8Array();

/** Logs in with the saved identity (open servers) or a password (password servers). */
async function login(context: Context, given: string | undefined): Promise<CommandResult> {
  const { client, flags } = context;
  const fail = (error: string, code: "no_identity" | "no_password" | "no_name") =>
    ({ ok: false, command: "login", error, code }) as const;
  if (client.core.loggedInAs !== undefined) {
    // The core refuses at once ("already logged in"): ask for no password first.
    return await client.run({
      kind: "login",
      name: given ?? client.core.loggedInAs,
      secret: EMPTY,
    });
  }
  if (client.core.auth === "password") {
    const name = given ?? client.core.name;
    if (name === undefined) return fail("No name given; use login NAME", "no_name");
    const password = await readPassword(context, name);
    const asked = context.flags.passwordFile === undefined &&
      Deno.env.get("SWITCHBOARD_PASSWORD") === undefined && context.lines instanceof Terminal;
    if (password === undefined && asked) {
      return fail("No password typed; not logged in", "no_password");
    }
    if (password === undefined) {
      return fail(
        "No password: type it at the prompt, or pass --password-file FILE or set " +
          "SWITCHBOARD_PASSWORD in script mode",
        "no_password",
      );
    }
    return await client.run({ kind: "login", name, secret: new TextEncoder().encode(password) });
  }
  const server = hostPort(flags.server.host, flags.server.port);
  let identities;
  try {
    identities = await loadIdentities(flags.identityFile);
  } catch (error) {
    if (!(error instanceof IdentityFileError)) throw error;
    return fail(error.message, "no_identity");
  }
  const identity = findIdentity(identities, server, given ?? client.core.name);
  if (identity === undefined) {
    const who = given ?? client.core.name;
    return fail(
      who === undefined
        ? `No single saved identity for ${server} in ${flags.identityFile}; use login NAME`
        : `No saved identity for "${who}" in ${flags.identityFile}; register first`,
      "no_identity",
    );
  }
  // The channel's key (client_key.json) is the proof: no secret is sent,
  // but for a version 2 identity key, sent once so that the server binds
  // the name to the key pair.
  const secret = identity.key === undefined ? EMPTY : fromHex(identity.key);
  return await client.run({ kind: "login", name: identity.name, secret });
}

/** The password: from --password-file, SWITCHBOARD_PASSWORD, or asked without echo. */
async function readPassword(context: Context, name: string): Promise<string | undefined> {
  if (context.flags.passwordFile !== undefined) {
    try {
      const text = await Deno.readTextFile(context.flags.passwordFile);
      return text.split(/\r?\n/)[0];
    } catch (error) {
      context.output.error(
        `cannot read --password-file ${context.flags.passwordFile}: ${(error as Error).message}`,
        "no_password",
      );
      return undefined;
    }
  }
  const fromEnv = Deno.env.get("SWITCHBOARD_PASSWORD");
  if (fromEnv !== undefined) return fromEnv;
  if (!context.interactive) return undefined;
  const question = `Password for "${name}": `;
  if (context.lines instanceof Terminal) {
    const typed = await context.lines.next({ prompt: question, secret: true });
    // Nothing typed (Enter, or Ctrl+D) cancels the login rather than failing it at the server.
    return typed === "" ? undefined : typed;
  }
  await Deno.stdout.write(encoder.encode(question));
  Deno.stdin.setRaw(true, { cbreak: true });
  let line: string | undefined;
  try {
    line = await context.lines.next({ carriageReturn: true });
  } finally {
    Deno.stdin.setRaw(false);
    await Deno.stdout.write(encoder.encode("\n"));
  }
  if (line === undefined) return undefined;
  // Without line editing, apply backspaces by hand.
  let password = "";
  for (const char of line) {
    if (char === "\x7f" || char === "\b") password = password.slice(0, -1);
    else password += char;
  }
  return password;
}

/** Writes COUNT sample readings to a CSV file, streaming, never half-written. */
async function generate(path: string, count: number): Promise<CommandResult> {
  const temp = `${path}.part`;
  try {
    const file = await Deno.open(temp, { write: true, create: true, truncate: true });
    const writer = file.writable.getWriter();
    try {
      let batch: string[] = [];
      for (const line of sampleReadingLines(count, { random: cryptoRandom, startMs: Date.now() })) {
        batch.push(line);
        if (batch.length === 10_000) {
          await writer.write(encoder.encode(batch.join("\n") + "\n"));
          batch = [];
        }
      }
      if (batch.length > 0) await writer.write(encoder.encode(batch.join("\n") + "\n"));
    } finally {
      await writer.close();
    }
    await Deno.rename(temp, path);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    return {
      ok: false,
      command: "generate",
      error: `Cannot write ${path}: ${(error as Error).message}`,
      code: "file_error",
    };
  }
  return {
    ok: true,
    command: "generate",
    file: path,
    count,
  };
}

async function scriptLoop(context: Context) {
  const { lines, output } = context;
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
    const result = await runCommand(context, command);
    if (result === "exit") return 0;
    if (!result.ok) return 1;
  }
  return 0;
}

/** `--keep-partial`: a duration; `off` is not one (partial files must not pile up). */
function keepPartialFlag(value: string): number {
  const ms = durationFlag("--keep-partial", value);
  if (ms === 0) {
    throw new UsageError(`--keep-partial must be a duration such as 1d or 12h, not "${value}"`);
  }
  return ms;
}

/** Checks `--download-dir` at start, not when the first file arrives: missing is fine (it is made). */
function downloadDirFlag(dir: string): string {
  let isDirectory: boolean;
  try {
    isDirectory = Deno.statSync(dir).isDirectory;
  } catch {
    return dir;
  }
  if (!isDirectory) throw new UsageError(`--download-dir ${dir} is not a directory`);
  return dir;
}

async function interactiveLoop(context: Context) {
  const { lines, output } = context;
  while (true) {
    const line = await prompted(lines, "> ", context.history);
    if (line === undefined) return 0;
    let command;
    try {
      // A bare tcp asks for its message, as seed 000's client did.
      command = line.trim().toLowerCase() === "tcp"
        ? await askTcpMessage(lines)
        : parseCommand(line);
    } catch (error) {
      if (!(error instanceof CommandError)) throw error;
      output.result(badCommand(line, error));
      continue;
    }
    if (command === undefined) continue;
    if (command.kind === "exit") return 0;
    if (!waitsForTheTerminal(context, command)) {
      // The next line is read at once: commands on other sessions, and the
      // server's, never wait for this one (the core keeps one session's in order).
      runCommand(context, command).catch((error) => {
        if (!context.client.closed) output.problem((error as Error).message);
      });
      continue;
    }
    let result = await runCommand(context, command);
    if (result === "exit") return 0;
    // A taken or invalid name to register under asks for another, until one works or the user gives up.
    while (
      command.kind === "register" && !result.ok &&
      (result.code === "name_taken" || result.code === "invalid_name")
    ) {
      const name = await ask(lines, "Pick another name (empty to cancel): ");
      if (name === "") break;
      result = await runCommand(context, { kind: "register", name }) as CommandResult;
    }
  }
}

/** Asks for the message of a bare `tcp`; an empty answer cancels it. */
async function askTcpMessage(lines: Lines): Promise<Command | undefined> {
  const text = await prompted(lines, "Message to send over TCP (empty to cancel): ");
  return text === undefined || text.trim() === "" ? undefined : { kind: "tcp", text: text.trim() };
}

/**
 * True for the commands that may ask the person something before they end:
 * `register` (another name, if taken) and `login` on a password server.
 */
function waitsForTheTerminal(context: Context, command: Command): boolean {
  return command.kind === "register" ||
    (command.kind === "login" && context.client.core.auth === "password");
}

/** True for a `login` command line. */
function isLogin(line: string): boolean {
  try {
    return parseCommand(line)?.kind === "login";
  } catch {
    return false;
  }
}

function badCommand(line: string, error: CommandError): CommandResult {
  const command = line.trim().split(/\s+/)[0].toLowerCase();
  return { ok: false, command, error: error.message, code: "bad_command" };
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
