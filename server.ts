/**
 * The Switchboard server: flags -> config -> run. Keeps the registry of
 * clients over UDP (control) and TCP (framed messages).
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { ServerDriver } from "./lib/driver/server_driver.ts";
import { userCommand } from "./lib/driver/user_command.ts";
import { UsersFileError } from "./lib/driver/users_file.ts";
import { FileStoreError } from "./lib/driver/file_store.ts";
import { DEFAULT_STORAGE_LIMITS } from "./lib/server/stored_files.ts";
import { BindError } from "./lib/driver/bind_error.ts";
import { DataDirLockedError } from "./lib/driver/data_dir_lock.ts";
import { RegistryFileError } from "./lib/driver/registry_file.ts";
import { LOG_LEVELS, type LogLevelName, setupLogging } from "./lib/logging.ts";
import type { ServerEvent } from "./lib/server/server_core.ts";
import { serverEventText } from "./lib/server/server_event_text.ts";
import {
  integerFlag,
  portFlag,
  rejectUnknownFlags,
  requireValues,
  secondsFlag,
  sizeFlag,
  UsageError,
} from "./lib/usage_error.ts";
import { errorLine } from "./lib/error_line.ts";
import { VERSION } from "./lib/version.ts";

/** Signals closer together than this count as one. */
const SECOND_SIGNAL_GAP_MS = 1000;

const HELP = `switchboard-server ${VERSION}: registration server for Switchboard clients

Usage: switchboard-server [flags]
       switchboard-server user add|remove|list ...   manage password-mode users (user --help)

Flags:
  --host ADDRESS      address to bind UDP and TCP to (default 0.0.0.0)
  --udp-port N        UDP port for control requests; 0 picks a free one (default 3000)
  --tcp-port N        TCP port for framed messages; 0 picks a free one (default 3001)
  --data-dir DIR      where registrations.json, server.key, users.json, files/ and
                      server.lock live (default ./data)
  --auth MODE         open (register creates an identity; default) or password
                      (accounts from the users file, added with: user add NAME)
  --users FILE        password mode's users file (default DATA-DIR/users.json)
  --lease SECONDS     a client without a heartbeat for this long goes offline (default 30)
  --max-attempts N    failed logins, 1 to 5, that block a name (default 3)
  --lockout SECONDS   how long a blocked name stays blocked (default 10)
  --max-file-size S   largest file a client may store, e.g. 500K, 100M (default 100M)
  --quota S           most bytes stored per user (default 1G)
  --log-dir DIR       where server.log is written (default ./logs)
  --log-level LEVEL   debug, info, warning or error (default info)
  -h, --help          show this help
  -V, --version       print the version

Ctrl+C (SIGINT) or SIGTERM shuts down gracefully; a second one (a second or more
later) exits at once.`;

interface ServerFlags {
  host: string;
  udpPort: number;
  tcpPort: number;
  dataDir: string;
  logDir: string;
  logLevel: LogLevelName;
  auth: "open" | "password";
  usersFile?: string;
  leaseMs: number;
  maxAttempts: number;
  lockoutMs: number;
  maxFileSize: number;
  quota: number;
}

const STRING_FLAGS = [
  "host",
  "udp-port",
  "tcp-port",
  "data-dir",
  "log-dir",
  "log-level",
  "auth",
  "users",
  "lease",
  "max-attempts",
  "lockout",
  "max-file-size",
  "quota",
];

function parseFlags(args: string[]): ServerFlags | "help" | "version" {
  const parsed = parseArgs(args, {
    string: STRING_FLAGS,
    boolean: ["help", "version"],
    alias: { h: "help", V: "version" },
    default: {
      host: "0.0.0.0",
      "udp-port": "3000",
      "tcp-port": "3001",
      "data-dir": "./data",
      "log-dir": "./logs",
      "log-level": "info",
      auth: "open",
      lease: "30",
      "max-attempts": "3",
      lockout: "10",
      "max-file-size": "100M",
      quota: "1G",
    },
  });
  requireValues(args, parsed, STRING_FLAGS);
  rejectUnknownFlags(parsed, [...STRING_FLAGS, "help", "version", "h", "V"]);
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
  const maxFileSize = sizeFlag("--max-file-size", parsed["max-file-size"]);
  const quota = sizeFlag("--quota", parsed.quota);
  return {
    host: parsed.host,
    udpPort: portFlag("--udp-port", parsed["udp-port"]),
    tcpPort: portFlag("--tcp-port", parsed["tcp-port"]),
    dataDir: parsed["data-dir"],
    logDir: parsed["log-dir"],
    logLevel: logLevel as LogLevelName,
    auth,
    usersFile: parsed.users,
    leaseMs: secondsFlag("--lease", parsed.lease),
    maxAttempts: integerFlag("--max-attempts", parsed["max-attempts"], { min: 1, max: 5 }),
    lockoutMs: secondsFlag("--lockout", parsed.lockout),
    maxFileSize,
    quota,
  };
}

function printEvent(event: ServerEvent): void {
  const { level, text } = serverEventText(event);
  if (level === "debug") return;
  (level === "info" ? console.log : console.error)(text);
}

async function main(args: string[]): Promise<number> {
  if (args[0] === "user") return await userCommand(args.slice(1));
  let flags;
  try {
    flags = parseFlags(args);
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
  const signals: [Deno.Signal, () => void][] = [
    ["SIGINT", onSignal("SIGINT")],
    ["SIGTERM", onSignal("SIGTERM")],
  ];
  for (const [signal, handler] of signals) {
    try {
      Deno.addSignalListener(signal, handler);
    } catch {
      // SIGTERM cannot be listened to on Windows
    }
  }
  let logging;
  try {
    logging = await setupLogging({ dir: flags.logDir, file: "server.log", level: flags.logLevel });
  } catch (error) {
    console.error(errorLine(`cannot write logs to ${flags.logDir}: ${(error as Error).message}`));
    return 1;
  }
  let server: ServerDriver;
  try {
    server = await ServerDriver.start({
      host: flags.host,
      udpPort: flags.udpPort,
      tcpPort: flags.tcpPort,
      dataDir: flags.dataDir,
      version: VERSION,
      onEvent: printEvent,
      auth: flags.auth,
      usersFile: flags.usersFile,
      leaseMs: flags.leaseMs,
      maxAttempts: flags.maxAttempts,
      lockoutMs: flags.lockoutMs,
      storage: {
        maxFileSize: flags.maxFileSize,
        quota: flags.quota,
        maxFiles: DEFAULT_STORAGE_LIMITS.maxFiles,
      },
    });
  } catch (error) {
    await logging.close();
    console.error(errorLine(startFailure(error, flags)));
    return 1;
  }
  console.log(`Server UDP listening on port ${server.udpPort}`);
  console.log(`Server TCP listening on port ${server.tcpPort}`);
  console.log(`Registry: ${server.core.registry.size} registered, in ${flags.dataDir}`);
  console.log(
    `Logins: ${flags.auth}` +
      (flags.auth === "password"
        ? ` (users from ${flags.usersFile ?? `${flags.dataDir}/users.json`})`
        : "") +
      `; lease ${flags.leaseMs / 1000} s; ${flags.maxAttempts} failed logins block a name for ` +
      `${flags.lockoutMs / 1000} s`,
  );
  console.log("Server running... (Press Ctrl+C to stop)");

  const signal = await stopped;
  console.log(`${signal} received: shutting down...`);
  await server.close();
  await logging.close();
  // The listeners stay until the process exits: a late copy of the signal
  // must not fall through to the default action (exit 130).
  console.log("Server stopped");
  return 0;
}

function startFailure(error: unknown, flags: ServerFlags): string {
  if (
    error instanceof RegistryFileError || error instanceof DataDirLockedError ||
    error instanceof UsersFileError || error instanceof FileStoreError
  ) {
    return error.message;
  }
  if (error instanceof BindError) {
    switch (error.reason) {
      case "in_use":
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
