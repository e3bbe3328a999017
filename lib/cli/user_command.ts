/**
 * `switchboard-server user ...`: adds, removes and lists the users of the
 * server's password mode in the users file.
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { promptSecret } from "@std/cli/prompt-secret";
import { errorLine } from "../error_line.ts";
import { hashPassword, passwordProblem } from "../server/password_hash.ts";
import { addSources, type FlagSourcesOptions } from "./flag_sources.ts";
import { SERVER_FLAGS } from "./program_flags.ts";
import {
  rejectSwitchValues,
  rejectUnknownFlags,
  requireValues,
  UsageError,
} from "./usage_error.ts";
import { nameProblem } from "../wire/client_name.ts";
import {
  defaultUsersPath,
  loadUsers,
  saveUsers,
  USERS_FILE,
  type UsersFile,
  UsersFileError,
} from "../io/users_file.ts";

/** The help text of `switchboard-server user --help`. */
export const USER_HELP = `switchboard-server user: manage the users of the server's password mode

Usage:
  switchboard-server user add NAME [--replace] [flags]
  switchboard-server user remove NAME [flags]
  switchboard-server user list [flags]

Commands:
  add NAME        add a user; asks twice for the password, without echo, on a
                  terminal, or reads one line from standard input when it is not
                  a terminal: printf '%s\\n' "$PW" | switchboard-server user add NAME
  remove NAME     remove a user
  list            list the users and when they were added (never the hashes)

Flags:
  --data-dir DIR  the server's data directory (default ./data)
  --users FILE    the users file (default <data-dir>/${USERS_FILE})
  --replace       with add: change the password of a user who exists
                  (adds the user if not)
  --config FILE   the server's TOML config file; its data-dir and users apply
  -h, --help      show this help

--data-dir and --users also come from SWITCHBOARD_DATA_DIR and
SWITCHBOARD_USERS, and from the config file (SWITCHBOARD_CONFIG); a flag beats
the environment, which beats the file.

Names: 1 to 32 letters, digits, spaces, ".", "_" or "-", unique ignoring case.
Passwords: at least 8 characters, at most 256 bytes of UTF-8, no control
characters; compared after Unicode NFC normalization.

The file is written atomically with mode 0600. A running server picks up the
change within a few seconds; there is no need to restart it.`;

/** Longest line read from standard input, in bytes. */
const MAX_INPUT_LINE_BYTES = 4096;

/** Where {@link userCommand} reads and writes; every field has a real default. */
export interface UserCommandIo {
  /**
   * Standard input, read when it is not a terminal: its text, or a byte
   * stream (default `Deno.stdin.readable`). Only the first line is used.
   */
  stdin?: string | ReadableStream<Uint8Array>;
  /** Whether standard input is a terminal (default: `Deno.stdin.isTerminal()`, or false if `stdin` is given). */
  isTerminal?: boolean;
  /** Asks for a secret on the terminal without echo (default: `promptSecret` from `@std/cli`, no mask). */
  promptSecret?: (message: string) => string | null;
  /** Prints one line of standard output (default `console.log`). */
  stdout?: (line: string) => void;
  /** Prints one line of standard error (default `console.error`). */
  stderr?: (line: string) => void;
  /** The current time, for `createdAt` (default `new Date()`). */
  now?: () => Date;
  /** PBKDF2 iterations for new hashes (default 600,000; tests pass fewer). */
  iterations?: number;
  /** Where `SWITCHBOARD_*` and `--config FILE` are read from (the real ones by default). */
  sources?: Omit<FlagSourcesOptions, "only">;
}

type UserArgs =
  | { command: "help" }
  | { command: "add"; name: string; replace: boolean; path: string }
  | { command: "remove"; name: string; path: string }
  | { command: "list"; path: string };

/** A runtime failure with a message for the user (exit 1). */
class UserCommandError extends Error {}

/**
 * Runs `switchboard-server user ...`. Prints results on standard output and
 * problems as one `error: ...` line on standard error; it returns the exit
 * code instead of exiting, and reports failures instead of throwing them.
 *
 * @param args the arguments after `user`, such as `["add", "alice"]`
 * @param io standard streams, terminal, clock and hash cost, for tests
 * @returns the exit code: 0 done, 1 runtime failure, 2 bad usage
 *
 * @example
 * ```ts
 * // in server.ts, before the server's own flags are parsed:
 * if (args[0] === "user") return await userCommand(args.slice(1));
 * ```
 */
export async function userCommand(args: string[], io: UserCommandIo = {}): Promise<number> {
  const stdout = io.stdout ?? console.log;
  const stderr = io.stderr ?? console.error;
  let parsed: UserArgs;
  try {
    // --data-dir and --users come from SWITCHBOARD_* and --config as the server's do.
    const { args: merged } = addSources(args, SERVER_FLAGS, { ...io.sources, only: USER_FLAGS });
    parsed = parseUserArgs(merged);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    stderr(errorLine(error.message));
    return 2;
  }
  try {
    switch (parsed.command) {
      case "help":
        stdout(USER_HELP);
        return 0;
      case "list":
        await list(parsed.path, stdout);
        return 0;
      case "remove":
        await remove(parsed.name, parsed.path, stdout);
        return 0;
      case "add":
        await add(parsed, io, stdout);
        return 0;
    }
  } catch (error) {
    if (error instanceof UsageError) {
      stderr(errorLine(error.message));
      return 2;
    }
    stderr(errorLine(failureMessage(error)));
    return 1;
  }
}

/** The server's flags the user command reads. */
const USER_FLAGS = ["data-dir", "users"];

function parseUserArgs(args: string[]): UserArgs {
  const parsed = parseArgs(args, {
    string: ["users", "data-dir", "_"],
    boolean: ["help", "replace"],
    alias: { h: "help" },
    default: { "data-dir": "./data" },
  });
  requireValues(args, parsed, ["users", "data-dir"]);
  rejectSwitchValues(args, ["help", "replace"]);
  const positional = (parsed._ as unknown[]).map(String);
  rejectUnknownFlags(
    { ...parsed, _: [] },
    ["users", "data-dir", "help", "replace", "h"],
    "user --help",
  );
  if (parsed.help) return { command: "help" };
  const [command, ...rest] = positional;
  const path = parsed.users ?? defaultUsersPath(parsed["data-dir"]);
  if (command === undefined) {
    throw new UsageError("missing command: add, remove or list; see user --help");
  }
  if (command !== "add" && command !== "remove" && command !== "list") {
    throw new UsageError(
      `unknown command "${command}": expected add, remove or list; see user --help`,
    );
  }
  if (parsed.replace && command !== "add") {
    throw new UsageError(`--replace only goes with user add; see user --help`);
  }
  if (command === "list") {
    if (rest.length > 0) throw new UsageError(`unexpected argument "${rest[0]}"; see user --help`);
    return { command, path };
  }
  const [name, ...extra] = rest;
  if (name === undefined) throw new UsageError(`user ${command} needs a NAME; see user --help`);
  if (extra.length > 0) {
    throw new UsageError(
      `unexpected argument "${extra[0]}"; quote a name with spaces, such as "Alice Smith"`,
    );
  }
  if (command === "remove") return { command, name, path };
  const problem = nameProblem(name);
  if (problem !== undefined) throw new UsageError(problem);
  return { command, name, replace: parsed.replace, path };
}

async function list(path: string, stdout: (line: string) => void): Promise<void> {
  const users = (await loadUsers(path)).records();
  if (users.length === 0) {
    stdout(`No users in ${path}`);
    return;
  }
  stdout(`${users.length} user${users.length === 1 ? "" : "s"} in ${path}:`);
  const width = Math.max(...users.map((user) => [...user.name].length));
  for (const user of users) {
    const padding = " ".repeat(width - [...user.name].length);
    stdout(`  ${user.name}${padding}  added ${user.createdAt}`);
  }
}

async function remove(name: string, path: string, stdout: (line: string) => void): Promise<void> {
  const users = await loadUsers(path);
  const removed = users.remove(name);
  if (removed === undefined) throw new UserCommandError(`No user "${name}" in ${path}`);
  await saveUsers(path, users);
  stdout(`Removed user "${removed.name}" from ${path}`);
}

async function add(
  args: { name: string; replace: boolean; path: string },
  io: UserCommandIo,
  stdout: (line: string) => void,
): Promise<void> {
  const { name, replace, path } = args;
  // Fail before asking for a password if the file is broken or the name taken.
  refuseTaken(await loadUsers(path), name, replace, path);
  const password = await readNewPassword(name, io);
  const problem = passwordProblem(password);
  if (problem !== undefined) throw new UserCommandError(problem);
  const passwordHash = await hashPassword(password, { iterations: io.iterations });
  // Read the file again: it may have changed while the password was typed.
  const users = await loadUsers(path);
  refuseTaken(users, name, replace, path);
  if (users.has(name)) {
    const updated = users.setPasswordHash(name, passwordHash);
    await saveUsers(path, users);
    stdout(`Changed the password of user "${updated.name}" in ${path}`);
    return;
  }
  const createdAt = (io.now?.() ?? new Date()).toISOString();
  users.add({ name, passwordHash, createdAt });
  await saveUsers(path, users);
  stdout(`Added user "${name}" to ${path}`);
}

function refuseTaken(
  users: UsersFile,
  name: string,
  replace: boolean,
  path: string,
): void {
  const existing = users.get(name);
  if (existing === undefined || replace) return;
  throw new UserCommandError(
    `User "${existing.name}" already exists in ${path}; pass --replace to change the password`,
  );
}

/** Asks twice on a terminal, or reads one line of standard input. */
async function readNewPassword(name: string, io: UserCommandIo): Promise<string> {
  const terminal = io.isTerminal ?? (io.stdin === undefined && Deno.stdin.isTerminal());
  if (!terminal) {
    const line = await readFirstLine(io.stdin ?? Deno.stdin.readable);
    if (line === undefined) {
      throw new UserCommandError(
        "No password on standard input; pipe one line, or run in a terminal to be asked",
      );
    }
    return line;
  }
  const ask = io.promptSecret ?? ((message: string) => promptSecret(message, { mask: "" }));
  const first = ask(`Password for "${name}":`);
  if (first === null) throw new UserCommandError("Cannot read a password from the terminal");
  const problem = passwordProblem(first);
  if (problem !== undefined) throw new UserCommandError(problem);
  const second = ask("Repeat the password:");
  if (second !== first) throw new UserCommandError("The passwords do not match; nothing changed");
  return first;
}

/**
 * Reads the first line of the input, without its line ending.
 *
 * @returns the line, or undefined if the input is empty
 */
async function readFirstLine(
  input: string | ReadableStream<Uint8Array>,
): Promise<string | undefined> {
  if (typeof input === "string") {
    if (input === "") return undefined;
    return input.split("\n", 1)[0].replace(/\r$/, "");
  }
  const reader = input.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  let ended = false;
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) {
        ended = true;
        break;
      }
      const newline = value.indexOf(0x0a);
      chunks.push(newline === -1 ? value : value.subarray(0, newline));
      length += newline === -1 ? value.length : newline;
      if (length > MAX_INPUT_LINE_BYTES) {
        throw new UserCommandError(
          `The password on standard input is longer than ${MAX_INPUT_LINE_BYTES} bytes`,
        );
      }
      if (newline !== -1) break;
    }
  } finally {
    if (ended) reader.releaseLock();
    else await reader.cancel().catch(() => {});
  }
  if (ended && length === 0) return undefined;
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes).replace(/\r$/, "");
  } catch {
    throw new UserCommandError("The password on standard input is not valid UTF-8");
  }
}

function failureMessage(error: unknown): string {
  if (error instanceof UserCommandError || error instanceof UsersFileError) return error.message;
  if (error instanceof Deno.errors.PermissionDenied) {
    return `Permission denied: ${(error as Error).message}`;
  }
  return `User command failed: ${error instanceof Error ? error.message : String(error)}`;
}
