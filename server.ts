/**
 * The Switchboard server: flags -> config -> run. Keeps the registry of
 * clients over UDP (control) and TCP (framed messages).
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { StoreError } from "./lib/server/store.ts";
import { ServerDriver } from "./lib/io/server_driver.ts";
import { userCommand } from "./lib/cli/user_command.ts";
import { UsersFileError } from "./lib/io/users_file.ts";
import { BlobStoreError } from "./lib/io/blob_store.ts";
import { DEFAULT_STORAGE_LIMITS } from "./lib/server/stored_files.ts";
import { BindError } from "./lib/io/bind_error.ts";
import { redactUrl, storeUrlProblem } from "./lib/io/store_url.ts";
import {
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
  DEFAULT_TCP_FRAME_MS,
  DEFAULT_TCP_IDLE_MS,
} from "./lib/server/connection_limits.ts";
import {
  DEFAULT_RATE_LIMIT,
  DEFAULT_REGISTER_RATE,
  DEFAULT_SESSION_RATE_LIMIT,
} from "./lib/server/rate_limiter.ts";
import { DataDirLockedError } from "./lib/io/data_dir_lock.ts";
import { RegistryFileError } from "./lib/io/registry_file.ts";
import {
  LOG_LEVELS,
  type LogFormatName,
  type LogLevelName,
  setupLogging,
} from "./lib/io/logging.ts";
import { logFormatFlag } from "./lib/cli/usage_error.ts";
import type { ServerEvent } from "./lib/server/server_core.ts";
import { serverEventText } from "./lib/server/server_event_text.ts";
import { ConsoleLines } from "./lib/cli/console_lines.ts";
import {
  durationFlag,
  integerFlag,
  portFlag,
  rejectSwitchValues,
  rejectUnknownFlags,
  requireValues,
  secondsFlag,
  sizeFlag,
  UsageError,
} from "./lib/cli/usage_error.ts";
import { errorLine } from "./lib/error_line.ts";
import { parseWithSources } from "./lib/cli/flag_sources.ts";
import { SERVER_FLAGS } from "./lib/cli/program_flags.ts";
import { VERSION } from "./lib/version.ts";
import { MetricsObserver } from "./lib/io/metrics_observer.ts";
import { directoryBytes, MetricsServer } from "./lib/io/metrics_server.ts";
import { hostPort } from "./lib/host_port.ts";
import { loadServerIdentity, ServerIdentityFileError } from "./lib/io/server_identity_file.ts";

/** Signals closer together than this count as one. */
const SECOND_SIGNAL_GAP_MS = 1000;

const HELP = `switchboard-server ${VERSION}: registration server for Switchboard clients

Usage: switchboard-server [flags]
       switchboard-server user add|remove|list ...   manage password-mode users (user --help)
       switchboard-server key [--data-dir DIR]       print the fingerprint of the server's key
                                                     (created if absent), for clients' --server-key

Flags:
  --host ADDRESS      address to bind UDP and TCP to (default 0.0.0.0)
  --udp-port N        UDP port for control requests; 0 picks a free one (default 3000)
  --tcp-port N        TCP port for framed messages; 0 picks a free one (default 3001)
  --udp-port2 N       second UDP port, for clients' address discovery (NAT mapping
                      type); 0 turns it off (default the UDP port + 2; a free one
                      when --udp-port is 0)
  --data-dir DIR      where server_identity.json (the server's key pair),
                      registrations.json and .log, users.json, files/ and server.lock
                      live (default ./data)
  --store URL         keep the registry in Redis, shared by every instance given the
                      same URL: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (default:
                      DATA-DIR's file; port 6379, database 0); Redis must run with
                      appendonly yes and appendfsync always
  --advertise HOST    with --store: the host other instances send clients to for the
                      files on this one's disk (default --host, or the host name when
                      --host is 0.0.0.0 or ::)
  --auth MODE         open (register creates an identity; default) or password
                      (accounts from the users file, added with: user add NAME)
  --users FILE        password mode's users file (default DATA-DIR/users.json)
  --lease SECONDS     a client without a heartbeat for this long goes offline (default 30)
  --max-attempts N    failed logins, 1 to 5, that block an address for a name (default 3)
  --lockout SECONDS   how long the first block lasts; later ones double (default 10)
  --max-file-size S   largest file a client may store, e.g. 500K, 100M (default 100M)
  --quota S           most bytes stored per user (default 1G)
  --expire-after DURATION
                      remove an identity not seen (registered, logged in, online) for
                      this long, with its files, e.g. 90d, 12h, 30m (default off)
  --max-storage S     most bytes stored by all users together; uploads past it are
                      refused (default 10G)
  --rate-limit N      UDP datagrams a second from one IP address without a session,
                      garbage included (bursts of 2N); 0 for no limit (default ${DEFAULT_RATE_LIMIT})
  --session-rate-limit N
                      UDP datagrams a second from one IP address and port sealed in
                      a secure session (bursts of 2N); 0 for no limit (default ${DEFAULT_SESSION_RATE_LIMIT})
  --register-rate N   new names one IP address may register a minute, over UDP and
                      TCP together (bursts of N); 0 for no limit (default ${DEFAULT_REGISTER_RATE})
  --max-connections N TCP connections open at once in all; when reached, the oldest
                      without a login gives way (default ${DEFAULT_MAX_CONNECTIONS})
  --max-connections-per-ip N
                      TCP connections without a login open at once from one IP address;
                      when reached, its oldest gives way (default ${DEFAULT_MAX_CONNECTIONS_PER_ADDRESS})
  --tcp-idle SECONDS  close a TCP connection silent this long between frames (default ${
  DEFAULT_TCP_IDLE_MS / 1000
})
  --tcp-frame-timeout SECONDS
                      close a TCP connection whose frame has not arrived whole this long
                      after its first byte (default ${DEFAULT_TCP_FRAME_MS / 1000})
  --metrics [HOST:]PORT
                      serve /healthz and Prometheus /metrics over HTTP on PORT, on
                      HOST (default 127.0.0.1: loopback only) (default off)
  --log-dir DIR       where server.log is written (default ./logs)
  --log-level LEVEL   debug, info, warning or error (default info)
  --log-format F      text (one line a record, for people) or json (one object a
                      line, for machines) (default text)
  --log-stderr        log to standard error instead of DIR/server.log (containers)
  --config FILE       read flags from the TOML file FILE (udp-port = 3000); also
                      SWITCHBOARD_CONFIG
  -h, --help          show this help
  -V, --version       print the version

Every flag can also come from the environment as SWITCHBOARD_<FLAG>
(SWITCHBOARD_UDP_PORT=3000, SWITCHBOARD_METRICS=9464) or from the config file;
a flag on the command line beats the environment, which beats the file.

Ctrl+C (SIGINT) or SIGTERM shuts down gracefully; a second one (a second or more
later) exits at once. SIGUSR2, or "status" (or an empty line) typed on the server's
input, prints a status line: registered, active, traffic and rejected inputs. (Not
SIGUSR1: on it the Deno runtime opens a debugger port, 127.0.0.1:9229.)`;

interface ServerFlags {
  host: string;
  udpPort: number;
  tcpPort: number;
  /** The second UDP port; 0 picks a free one; undefined: none. */
  udpPort2: number | undefined;
  dataDir: string;
  store?: string;
  advertise?: string;
  logDir: string;
  logLevel: LogLevelName;
  logFormat: LogFormatName;
  logStderr: boolean;
  auth: "open" | "password";
  usersFile?: string;
  leaseMs: number;
  maxAttempts: number;
  lockoutMs: number;
  maxFileSize: number;
  quota: number;
  maxStorage: number;
  expireAfterMs: number;
  rateLimit: number;
  sessionRateLimit: number;
  registerRate: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  tcpIdleMs: number;
  tcpFrameMs: number;
  metrics?: { host: string; port: number };
}

const STRING_FLAGS = SERVER_FLAGS.strings;

const BOOLEAN_FLAGS = SERVER_FLAGS.booleans;

function parseFlags(args: string[]): ServerFlags | "help" | "version" {
  const parsed = parseArgs(args, {
    string: STRING_FLAGS,
    boolean: BOOLEAN_FLAGS,
    alias: { h: "help", V: "version" },
    default: {
      host: "0.0.0.0",
      "udp-port": "3000",
      "tcp-port": "3001",
      "data-dir": "./data",
      "log-dir": "./logs",
      "log-level": "info",
      "log-format": "text",
      auth: "open",
      lease: "30",
      "max-attempts": "3",
      lockout: "10",
      "max-file-size": "100M",
      quota: "1G",
      "max-storage": "10G",
      "expire-after": "off",
      "rate-limit": String(DEFAULT_RATE_LIMIT),
      "session-rate-limit": String(DEFAULT_SESSION_RATE_LIMIT),
      "register-rate": String(DEFAULT_REGISTER_RATE),
      "max-connections": String(DEFAULT_MAX_CONNECTIONS),
      "max-connections-per-ip": String(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
      "tcp-idle": String(DEFAULT_TCP_IDLE_MS / 1000),
      "tcp-frame-timeout": String(DEFAULT_TCP_FRAME_MS / 1000),
    },
  });
  requireValues(args, parsed, STRING_FLAGS);
  rejectSwitchValues(args, BOOLEAN_FLAGS);
  rejectUnknownFlags(parsed, [...STRING_FLAGS, ...BOOLEAN_FLAGS, "h", "V"]);
  if (parsed.help) return "help";
  if (parsed.version) return "version";
  const logLevel = parsed["log-level"];
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(", ")}, not "${logLevel}"`);
  }
  const auth = parsed.auth;
  if (auth !== "open" && auth !== "password") {
    throw new UsageError(`--auth must be open or password, not "${auth}"`);
  }
  if (parsed.users !== undefined && auth !== "password") {
    throw new UsageError("--users only applies with --auth password");
  }
  const store = parsed.store;
  const storeProblem = store === undefined ? undefined : storeUrlProblem(store);
  if (storeProblem !== undefined) throw new UsageError(storeProblem);
  const maxFileSize = sizeFlag("--max-file-size", parsed["max-file-size"]);
  const quota = sizeFlag("--quota", parsed.quota);
  const maxStorage = sizeFlag("--max-storage", parsed["max-storage"]);
  return {
    host: parsed.host,
    udpPort: portFlag("--udp-port", parsed["udp-port"]),
    tcpPort: portFlag("--tcp-port", parsed["tcp-port"]),
    udpPort2: secondPort(parsed["udp-port2"], portFlag("--udp-port", parsed["udp-port"])),
    dataDir: parsed["data-dir"],
    store,
    advertise: parsed.advertise,
    logDir: parsed["log-dir"],
    logLevel: logLevel as LogLevelName,
    logFormat: logFormatFlag(parsed["log-format"]),
    logStderr: parsed["log-stderr"],
    auth,
    usersFile: parsed.users,
    leaseMs: secondsFlag("--lease", parsed.lease),
    maxAttempts: integerFlag("--max-attempts", parsed["max-attempts"], { min: 1, max: 5 }),
    lockoutMs: secondsFlag("--lockout", parsed.lockout),
    maxFileSize,
    quota,
    maxStorage,
    expireAfterMs: durationFlag("--expire-after", parsed["expire-after"]),
    rateLimit: integerFlag("--rate-limit", parsed["rate-limit"], { min: 0, max: 1_000_000 }),
    sessionRateLimit: integerFlag("--session-rate-limit", parsed["session-rate-limit"], {
      min: 0,
      max: 1_000_000,
    }),
    registerRate: integerFlag("--register-rate", parsed["register-rate"], {
      min: 0,
      max: 1_000_000,
    }),
    maxConnections: integerFlag("--max-connections", parsed["max-connections"], {
      min: 1,
      max: 100_000,
    }),
    maxConnectionsPerIp: integerFlag(
      "--max-connections-per-ip",
      parsed["max-connections-per-ip"],
      { min: 1, max: 100_000 },
    ),
    tcpIdleMs: secondsFlag("--tcp-idle", parsed["tcp-idle"]),
    tcpFrameMs: secondsFlag("--tcp-frame-timeout", parsed["tcp-frame-timeout"]),
    metrics: parsed.metrics === undefined ? undefined : metricsFlag(parsed.metrics),
  };
}

/** Reads `--metrics [HOST:]PORT`: a bare port listens on loopback only. */
function metricsFlag(text: string): { host: string; port: number } {
  const match = /^(?:(?:\[([^\]]+)\]|([^:\[\]]+)):)?([^:]+)$/.exec(text);
  if (match === null) {
    throw new UsageError(`--metrics must look like PORT, HOST:PORT or [IPv6]:PORT, not "${text}"`);
  }
  return { host: match[1] ?? match[2] ?? "127.0.0.1", port: portFlag("--metrics port", match[3]) };
}

/** The events' console lines, written together at the end of each task. */
const eventLines = new ConsoleLines();

function printEvent(event: ServerEvent): void {
  const { level, text, quiet } = serverEventText(event);
  if (level === "debug" || quiet) return;
  eventLines.print(text, level === "info" ? "stdout" : "stderr");
}

/**
 * Where the `user` subcommand's word is, if the arguments hold it where a
 * command goes (first, or after flags such as `--data-dir DIR`): the user
 * command reads the flags around it itself.
 */
function userCommandAt(args: string[], word = "user"): number {
  const strings = [...STRING_FLAGS, "config"];
  const positional = (parseArgs(args, { string: strings, boolean: ["help", "version"] })
    ._ as unknown[]).map(String);
  if (positional[0] !== word) return -1;
  return args.findIndex((arg, i) =>
    arg === word &&
    (i === 0 || !args[i - 1].startsWith("--") || args[i - 1].includes("=") ||
      !strings.includes(args[i - 1].slice(2)))
  );
}

async function main(args: string[]): Promise<number> {
  const user = userCommandAt(args);
  if (user !== -1) return await userCommand(args.toSpliced(user, 1));
  const key = userCommandAt(args, "key");
  if (key !== -1) return await keyCommand(args.toSpliced(key, 1));
  let flags;
  try {
    flags = parseWithSources(args, SERVER_FLAGS, parseFlags);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(errorLine(error.message));
      return 2;
    }
    throw error;
  }
  if (flags === "help") {
    console.log(HELP);
    return 0;
  }
  if (flags === "version") {
    console.log(`switchboard-server ${VERSION}`);
    return 0;
  }
  // Listen for signals before anything else, so that one arriving during
  // start-up cannot fall through to the default action.
  const { promise: stopped, resolve: stop } = Promise.withResolvers<string>();
  let firstSignalAt: number | undefined;
  const onSignal = (signal: Deno.Signal) => () => {
    const now = Date.now();
    if (firstSignalAt === undefined) {
      firstSignalAt = now;
      stop(signal);
      return;
    }
    // Ctrl+C in a terminal reaches the server twice at once when it runs
    // under `deno task` (the process group, and the task runner forwarding
    // it): only a signal that comes later is a second request.
    if (now - firstSignalAt < SECOND_SIGNAL_GAP_MS) return;
    console.error(`${signal} again: exiting at once`);
    Deno.exit(130);
  };
  // The status line on demand; the server exists once it has started.
  let showStatus = (): void => {};
  const signals: [Deno.Signal, () => void][] = [
    ["SIGINT", onSignal("SIGINT")],
    ["SIGTERM", onSignal("SIGTERM")],
    // Not SIGUSR1: Deno (2.9.2 and later), like Node, opens its V8 inspector
    // on 127.0.0.1:9229 when it gets SIGUSR1, whatever the program listens to.
    ["SIGUSR2", () => showStatus()],
  ];
  for (const [signal, handler] of signals) {
    try {
      Deno.addSignalListener(signal, handler);
    } catch {
      // SIGTERM and SIGUSR2 cannot be listened to on Windows
    }
  }
  let logging;
  try {
    logging = await setupLogging({
      dir: flags.logDir,
      file: "server.log",
      level: flags.logLevel,
      format: flags.logFormat,
      stderr: flags.logStderr,
    });
  } catch (error) {
    console.error(errorLine(`cannot write logs to ${flags.logDir}: ${(error as Error).message}`));
    return 1;
  }
  let server: ServerDriver | undefined;
  let serving = false;
  const metrics = new MetricsObserver(VERSION, {
    registered: () => server?.status().registered ?? 0,
    active: () => server?.status().active ?? 0,
    watchers: () => server?.status().watchers ?? 0,
    tcpConnections: () => server?.status().tcpConnections ?? 0,
    storageBytes: () => directoryBytes(`${flags.dataDir}/files`),
    uptimeSeconds: () => (server?.status().uptimeMs ?? 0) / 1000,
    counters: () => {
      const s = server?.status();
      return {
        presenceResent: s?.presenceResent ?? 0,
        authFailures: s?.authFailures ?? 0,
        undersized: s?.undersized ?? 0,
        tcpRefused: s?.tcpRefused ?? 0,
        tcpTimedOut: s?.tcpTimedOut ?? 0,
      };
    },
  });
  let http: MetricsServer | undefined;
  if (flags.metrics !== undefined) {
    try {
      http = MetricsServer.start(flags.metrics.host, flags.metrics.port, {
        version: VERSION,
        uptimeSeconds: () => (server?.status().uptimeMs ?? 0) / 1000,
        serving: () => serving,
        storeReachable: async () =>
          (await Deno.stat(flags.dataDir).catch(() => null))?.isDirectory ?? false,
        metrics: () => metrics.render(),
      });
    } catch (error) {
      await logging.close();
      const where = hostPort(flags.metrics.host, flags.metrics.port);
      console.error(errorLine(
        error instanceof BindError && error.reason === "in_use"
          ? `metrics port ${flags.metrics.port} is in use; pass --metrics with another`
          : `cannot serve metrics on ${where}: ${(error as Error).message}`,
      ));
      return 1;
    }
  }
  try {
    server = await ServerDriver.start({
      host: flags.host,
      udpPort: flags.udpPort,
      tcpPort: flags.tcpPort,
      udpPort2: flags.udpPort2,
      dataDir: flags.dataDir,
      store: flags.store,
      advertise: flags.advertise,
      version: VERSION,
      onEvent: printEvent,
      auth: flags.auth,
      usersFile: flags.usersFile,
      leaseMs: flags.leaseMs,
      maxAttempts: flags.maxAttempts,
      lockoutMs: flags.lockoutMs,
      expireAfterMs: flags.expireAfterMs,
      storage: {
        maxFileSize: flags.maxFileSize,
        quota: flags.quota,
        maxFiles: DEFAULT_STORAGE_LIMITS.maxFiles,
        maxStorage: flags.maxStorage,
      },
      limits: {
        rateLimit: flags.rateLimit,
        sessionRateLimit: flags.sessionRateLimit,
        registerRate: flags.registerRate,
        maxConnections: flags.maxConnections,
        maxConnectionsPerAddress: flags.maxConnectionsPerIp,
        tcpIdleMs: flags.tcpIdleMs,
        tcpFrameMs: flags.tcpFrameMs,
      },
      observer: metrics,
    });
  } catch (error) {
    await http?.close();
    await logging.close();
    console.error(errorLine(startFailure(error, flags)));
    return 1;
  }
  console.log(`Server UDP listening on port ${server.udpPort}`);
  console.log(`Server TCP listening on port ${server.tcpPort}`);
  if (server.udpPort2 !== 0) {
    console.log(`Server UDP listening on port ${server.udpPort2} for address discovery`);
  }
  console.log(
    `Registry: ${server.core.registry.size} registered, in ${
      flags.store === undefined ? flags.dataDir : redactUrl(flags.store)
    }`,
  );
  if (flags.store?.startsWith("redis://")) {
    const note = await unusedRegistryNote(flags.dataDir);
    if (note !== undefined) console.log(note);
  }
  console.log(`Server key: ${server.fingerprint} (clients pin it: --server-key)`);
  console.log(
    `Logins: ${flags.auth}` +
      (flags.auth === "password"
        ? ` (users from ${flags.usersFile ?? `${flags.dataDir}/users.json`})`
        : "") +
      `; lease ${
        flags.leaseMs / 1000
      } s; ${flags.maxAttempts} failed logins block an address for a name for ` +
      `${flags.lockoutMs / 1000} s`,
  );
  console.log(`Limits: ${limitsText(flags)}`);
  if (http !== undefined) {
    console.log(`Metrics: http://${hostPort(http.host, http.port)}/metrics and /healthz`);
  }
  console.log("Server running... (Press Ctrl+C to stop)");
  serving = true;
  const running = server;
  showStatus = () => console.log(running.reportStatus());
  readStatusCommands(() => showStatus());

  const signal = await stopped;
  showStatus = () => {};
  console.log(`${signal} received: shutting down...`);
  serving = false;
  await server.close();
  await http?.close();
  await logging.close();
  // The listeners stay until the process exits: a late copy of the signal
  // must not fall through to the default action (exit 130).
  console.log("Server stopped");
  return 0;
}

const KEY_HELP = `Usage: switchboard-server key [--data-dir DIR]

Prints the fingerprint of the server's static key (DIR/server_identity.json,
created with mode 0600 if absent; default DIR ./data). Give it to users: a
client started with --server-key FINGERPRINT talks to no other key.

Flags:
  --data-dir DIR   the server's data directory (default ./data)
  -h, --help       show this help`;

/** `switchboard-server key`: prints the fingerprint of the server's key. */
/**
 * A line for an operator who moved from the data directory's registry to
 * Redis: the names in `registrations.json` are not in Redis, and the server
 * says so instead of starting as if they had never been registered.
 */
async function unusedRegistryNote(dataDir: string): Promise<string | undefined> {
  const path = `${dataDir}/registrations.json`;
  let names: number;
  try {
    names = Object.keys(JSON.parse(await Deno.readTextFile(path))).length;
  } catch {
    return undefined;
  }
  if (names === 0) return undefined;
  return `Note: ${path} (${names} registered) is not used with --store; ` +
    "those names are not in Redis and must register again";
}

async function keyCommand(args: string[]): Promise<number> {
  const parsed = parseArgs(args, {
    string: ["data-dir"],
    boolean: ["help"],
    alias: { h: "help" },
    default: { "data-dir": Deno.env.get("SWITCHBOARD_DATA_DIR") ?? "./data" },
  });
  if (parsed.help) {
    console.log(KEY_HELP);
    return 0;
  }
  const unknown = Object.keys(parsed).find((k) => !["_", "data-dir", "help", "h"].includes(k));
  if (unknown !== undefined || parsed._.length > 0) {
    console.error(errorLine(`key takes only --data-dir; see switchboard-server key --help`));
    return 2;
  }
  try {
    await Deno.mkdir(parsed["data-dir"], { recursive: true });
    const identity = await loadServerIdentity(parsed["data-dir"]);
    console.log(identity.fingerprint);
    return 0;
  } catch (error) {
    console.error(errorLine(`cannot read the server's key: ${(error as Error).message}`));
    return 1;
  }
}

function limitsText(flags: ServerFlags): string {
  const rate = (n: number) => n === 0 ? "no limit" : `${n}/s`;
  return `UDP per IP address ${rate(flags.rateLimit)} without a session, ` +
    `${rate(flags.sessionRateLimit)} with one; TCP ${flags.maxConnectionsPerIp} connections ` +
    `without a login per IP address, ${flags.maxConnections} in all, closed after ${
      flags.tcpIdleMs / 1000
    } s ` +
    `idle or a frame slower than ${flags.tcpFrameMs / 1000} s; ` +
    (flags.registerRate === 0
      ? "new names: no limit"
      : `${flags.registerRate} new names a minute per IP address`);
}

/** Input that goes on this long without a line break is not a person typing: stop reading. */
const MAX_COMMAND_INPUT_BYTES = 64 * 1024;

/**
 * Reads the operator's commands from standard input, whatever it is (a
 * terminal, a pipe, a file; /dev/null ends at once): "status" or an empty line
 * shows the status line, anything else gets a hint. The end of the input ends
 * the reading, nothing else, and so does input that is not lines (64 KiB
 * without a line break). A read still waiting at shutdown does not hold the
 * process: it exits.
 *
 * @param show prints the status line
 */
function readStatusCommands(show: () => void): void {
  (async () => {
    const buffer = new Uint8Array(4096);
    const decoder = new TextDecoder();
    let pending = "";
    while (true) {
      const n = await Deno.stdin.read(buffer);
      if (n === null) return;
      pending += decoder.decode(buffer.subarray(0, n), { stream: true });
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      if (pending.length > MAX_COMMAND_INPUT_BYTES) return;
      for (const line of lines) {
        const command = line.trim().toLowerCase();
        if (command === "" || command === "status" || command === "s") show();
        else {console.log(
            `Unknown command ${JSON.stringify(line.trim())}: type status (or press Enter)`,
          );}
      }
    }
  })().catch(() => {
    // stdin went away: nothing more to read
  });
}

/**
 * The second UDP port from `--udp-port2`: 0 turns it off; by default the
 * UDP port + 2, or a free one when the UDP port is picked (0).
 */
function secondPort(value: string | undefined, udpPort: number): number | undefined {
  if (value === undefined) {
    return udpPort === 0 ? 0 : udpPort + 2 <= 65535 ? udpPort + 2 : undefined;
  }
  const port = portFlag("--udp-port2", value);
  return port === 0 ? undefined : port;
}

function startFailure(error: unknown, flags: ServerFlags): string {
  if (
    error instanceof RegistryFileError || error instanceof DataDirLockedError ||
    error instanceof UsersFileError || error instanceof BlobStoreError ||
    error instanceof ServerIdentityFileError || error instanceof StoreError
  ) {
    return error.message;
  }
  if (error instanceof BindError) {
    switch (error.reason) {
      case "in_use":
        if (error.transport === "udp" && error.port === flags.udpPort2) {
          return `UDP port ${error.port} is in use; pass --udp-port2 to choose another (0: none)`;
        }
        return `${error.transport.toUpperCase()} port ${error.port} is in use; pass ` +
          `--${error.transport}-port to choose another (0 picks a free one)`;
      case "no_address":
        return `cannot bind to ${flags.host}: no such local address; check --host`;
      case "other":
        return `cannot listen on ${flags.host} ${error.transport.toUpperCase()} port ${error.port}: ${
          (error.cause as Error).message
        }`;
    }
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return `permission denied: ${(error as Error).message}`;
  }
  return `cannot start the server: ${(error as Error).message}`;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
