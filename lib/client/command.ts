/**
 * The client's command language, shared by the prompt, piped stdin and
 * `--script` files.
 *
 * @module
 */

/** One parsed command. */
export type Command =
  | { readonly kind: "register"; readonly name?: string }
  | { readonly kind: "login"; readonly name?: string }
  | { readonly kind: "logout" }
  | { readonly kind: "deregister" }
  | { readonly kind: "list" }
  | { readonly kind: "lookup"; readonly name: string }
  | { readonly kind: "watch"; readonly on: boolean }
  | { readonly kind: "tcp"; readonly text: string }
  | { readonly kind: "generate"; readonly file: string; readonly count: number }
  | { readonly kind: "upload"; readonly file: string; readonly name?: string }
  | { readonly kind: "files" }
  | { readonly kind: "download"; readonly name: string; readonly dest?: string }
  | { readonly kind: "delete"; readonly name: string }
  | { readonly kind: "connect"; readonly name: string }
  | { readonly kind: "accept"; readonly name?: string }
  | { readonly kind: "reject"; readonly name?: string }
  | { readonly kind: "send"; readonly to?: string; readonly text: string }
  | { readonly kind: "terminate"; readonly name?: string }
  | { readonly kind: "peers" }
  | { readonly kind: "sendfile"; readonly to?: string; readonly path: string }
  | { readonly kind: "acceptfile"; readonly id?: number }
  | { readonly kind: "declinefile"; readonly id?: number }
  | { readonly kind: "cancel"; readonly id?: number }
  | { readonly kind: "transfers" }
  | {
    readonly kind: "wait";
    readonly for: "messages" | "request" | "terminate" | "transfers" | "offer";
    readonly count?: number;
    readonly name?: string;
    readonly withinMs?: number;
  }
  | { readonly kind: "status" }
  | { readonly kind: "help" }
  | { readonly kind: "exit" };

/** Thrown for a line that is not a command. */
export class CommandError extends Error {
  /** @param message what is wrong, one sentence */
  constructor(message: string) {
    super(message);
    this.name = "CommandError";
  }
}

/** The help text: one line per command. */
export const COMMAND_HELP: readonly (readonly [string, string])[] = [
  ["register [NAME]", "create your identity (as NAME, or the name you gave) and log in"],
  ["login [NAME]", "log in with your saved identity, or your password on a password server"],
  ["logout", "go offline (your identity stays)"],
  ["deregister", "delete your identity, and your files, from the server"],
  ["list", "show who is online: name, address, ports, time online"],
  ["lookup NAME", "show where NAME is online, or say it is not"],
  ["watch [on|off]", "be told when someone comes online or goes offline"],
  ["tcp TEXT", "send TEXT to the server over TCP; it logs it and acknowledges"],
  ["generate FILE COUNT", "write COUNT sample readings (timestamp,value) to the CSV FILE"],
  ["upload FILE [NAME]", "store FILE on the server (as NAME), checked with SHA-256"],
  ["files", "list your files on the server and your quota"],
  ["download NAME [DEST]", "fetch your file NAME into DEST, a file or folder (never overwrites)"],
  ["delete NAME", "delete your file NAME from the server"],
  ["connect NAME", "ask NAME for a direct session (the server says where NAME is)"],
  ["accept [NAME]", "accept a connection request (name one if several wait; else waits for one)"],
  ["reject [NAME]", "refuse a connection request"],
  [
    "send [@NAME] TEXT",
    'send TEXT over your session (with NAME, or @"A NAME"); done once NAME has it',
  ],
  ["terminate [NAME]", "end your session (with NAME)"],
  ["peers", "show your direct sessions"],
  [
    "sendfile [@NAME] PATH",
    "offer the file PATH over your session (to NAME); it goes on in the background",
  ],
  ["acceptfile [ID]", "take a file offered to you (into --download-dir; resumes a partial one)"],
  ["declinefile [ID]", "refuse a file offered to you"],
  ["cancel [ID]", "stop a file transfer, either way"],
  ["transfers", "show file transfers: direction, peer, progress, state"],
  ["wait messages N [from NAME] [within S]", "wait until N messages have come (scripts)"],
  [
    "wait request|terminate [from NAME] [within S]",
    "wait for a request, or for a peer to end a session (each end counts once)",
  ],
  [
    "wait offer|transfers [from NAME] [within S]",
    "wait for a file offer, or until no transfer runs",
  ],
  ["status", "show the server, your name, ports and session"],
  ["help", "show this list"],
  ["exit", "go offline and leave (also quit, leave, out; your identity stays)"],
];

/**
 * Parses one line of input. Blank lines and lines starting with `#` are
 * comments and give undefined.
 *
 * @param line one line as typed
 * @returns the command, or undefined for a blank or comment line
 * @throws {CommandError} for an unknown command or bad arguments
 *
 * @example
 * ```ts
 * parseCommand("register Alice Smith"); // { kind: "register", name: "Alice Smith" }
 * parseCommand('login "Alice Smith"'); // { kind: "login", name: "Alice Smith" }
 * parseCommand("tcp hello there"); // { kind: "tcp", text: "hello there" }
 * ```
 */
export function parseCommand(line: string): Command | undefined {
  const trimmed = line.trim();
  if (trimmed === "" || trimmed.startsWith("#")) return undefined;
  const space = trimmed.search(/\s/);
  const word = (space === -1 ? trimmed : trimmed.slice(0, space)).toLowerCase();
  const rest = space === -1 ? "" : trimmed.slice(space + 1).trim();
  switch (word) {
    case "register":
    case "login":
      return rest === "" ? { kind: word } : { kind: word, name: unquote(rest) };
    case "tcp":
      if (rest === "") throw new CommandError("tcp needs a message: tcp TEXT");
      return { kind: "tcp", text: rest };
    case "lookup":
      if (rest === "") throw new CommandError("lookup needs a name: lookup NAME");
      return { kind: "lookup", name: unquote(rest) };
    case "watch":
      if (rest === "" || rest.toLowerCase() === "on") return { kind: "watch", on: true };
      if (rest.toLowerCase() === "off") return { kind: "watch", on: false };
      throw new CommandError("watch takes on or off");
    case "generate": {
      const args = splitArgs(rest);
      if (args.length !== 2) {
        throw new CommandError("generate needs a file and a count: generate FILE COUNT");
      }
      const count = Number(args[1]);
      if (!/^\d+$/.test(args[1]) || count < 1 || count > 10_000_000) {
        throw new CommandError(`COUNT must be a whole number from 1 to 10000000, not "${args[1]}"`);
      }
      return { kind: "generate", file: args[0], count };
    }
    case "upload": {
      const args = splitArgs(rest);
      if (args.length < 1 || args.length > 2) {
        throw new CommandError(
          tooManyWords(args.length, "upload needs a file: upload FILE [NAME]"),
        );
      }
      return args.length === 1 ? { kind: "upload", file: args[0] } : {
        kind: "upload",
        file: args[0],
        name: args[1],
      };
    }
    case "download": {
      const args = splitArgs(rest);
      if (args.length < 1 || args.length > 2) {
        throw new CommandError(
          tooManyWords(args.length, "download needs a name: download NAME [DEST]"),
        );
      }
      return args.length === 1 ? { kind: "download", name: args[0] } : {
        kind: "download",
        name: args[0],
        dest: args[1],
      };
    }
    case "delete": {
      const args = splitArgs(rest);
      if (args.length !== 1) {
        throw new CommandError(tooManyWords(args.length, "delete needs one name: delete NAME"));
      }
      return { kind: "delete", name: args[0] };
    }
    case "connect":
      if (rest === "") throw new CommandError("connect needs a name: connect NAME");
      return { kind: "connect", name: unquote(rest) };
    case "accept":
    case "reject":
    case "terminate":
      return rest === "" ? { kind: word } : { kind: word, name: unquote(rest) };
    case "send": {
      if (rest === "") throw new CommandError("send needs a message: send [@NAME] TEXT");
      if (!rest.startsWith("@")) return { kind: "send", text: rest };
      const [to, text] = splitAddressee(rest, "send");
      return { kind: "send", to, text };
    }
    case "sendfile": {
      if (rest === "") throw new CommandError("sendfile needs a file: sendfile [@NAME] PATH");
      if (!rest.startsWith("@")) return { kind: "sendfile", path: onePath(rest) };
      const [to, after] = splitAddressee(rest, "sendfile");
      return { kind: "sendfile", to, path: onePath(after) };
    }
    case "acceptfile":
    case "declinefile":
    case "cancel": {
      if (rest === "") return { kind: word };
      if (!/^\d{1,9}$/.test(rest)) {
        throw new CommandError(`${word} takes a transfer number (see transfers), not "${rest}"`);
      }
      return { kind: word, id: Number(rest) };
    }
    case "wait":
      return parseWait(rest);
    case "transfers":
    case "peers":
    case "logout":
    case "list":
    case "files":
    case "deregister":
    case "status":
    case "help":
    case "exit":
      if (rest !== "") throw new CommandError(`${word} takes no arguments`);
      return { kind: word };
    case "quit":
    case "leave": // seed 001's name for it
    case "out": // seed 004's
      if (rest !== "") throw new CommandError(`${word} takes no arguments`);
      return { kind: "exit" };
    default:
      throw new CommandError(`Unknown command "${word}"; type help for the list`);
  }
}

/**
 * Splits arguments at spaces; double quotes keep spaces in one argument
 * (`upload "my data.csv" data.csv`).
 *
 * @param text the arguments
 * @returns the arguments without quotes
 * @throws {CommandError} for an unclosed quote
 */
export function splitArgs(text: string): string[] {
  if ((text.match(/"/g)?.length ?? 0) % 2 !== 0) throw new CommandError("A quote is not closed");
  return [...text.matchAll(/"([^"]*)"|([^\s"]+)/g)].map((match) => match[1] ?? match[2]);
}

/**
 * Parses the arguments of `wait`: `messages N`, `request` or `terminate`,
 * then optionally `from NAME` and `within SECONDS`.
 */
function parseWait(rest: string): Command {
  let text = rest;
  let withinMs: number | undefined;
  const within = /\s*\bwithin\s+(\S+)\s*$/i.exec(text);
  if (within !== null) {
    const seconds = Number(within[1]);
    if (!(seconds > 0 && seconds <= 86400)) {
      throw new CommandError(`within needs seconds above 0, not "${within[1]}"`);
    }
    withinMs = seconds * 1000;
    text = text.slice(0, within.index);
  }
  let name: string | undefined;
  const from = /\s*\bfrom\s+(.+)$/i.exec(text);
  if (from !== null) {
    name = unquote(from[1].trim());
    text = text.slice(0, from.index);
  }
  const [what, count, ...extra] = text.trim().split(/\s+/);
  const usage =
    "wait messages N | wait request | wait terminate | wait offer | wait transfers, then [from NAME] [within S]";
  switch (what?.toLowerCase()) {
    case "message":
    case "messages": {
      const n = count === undefined ? 1 : Number(count);
      if (!Number.isInteger(n) || n < 1 || extra.length > 0) {
        throw new CommandError(`wait messages needs a count of 1 or more: ${usage}`);
      }
      return { kind: "wait", for: "messages", count: n, name, withinMs };
    }
    case "request":
    case "terminate":
    case "terminated":
    case "offer":
    case "transfers": {
      if (count !== undefined) throw new CommandError(usage);
      const word = what.toLowerCase();
      return {
        kind: "wait",
        for: word === "terminated" ? "terminate" : word as "request" | "offer" | "transfers",
        name,
        withinMs,
      };
    }
    default:
      throw new CommandError(usage);
  }
}

/**
 * Splits `@NAME REST` or `@"A NAME" REST` (names with spaces) for send and sendfile.
 *
 * @returns the name and the rest, trimmed
 */
function splitAddressee(text: string, word: string): [string, string] {
  const what = word === "send" ? "a message" : "a file";
  const usage = word === "send" ? "TEXT" : "PATH";
  if (text.startsWith('@"')) {
    const close = text.indexOf('"', 2);
    const after = close === -1 ? "" : text.slice(close + 1).trim();
    if (close === -1 || after === "") {
      throw new CommandError(`${word} @"NAME" needs a closing quote and ${what}`);
    }
    return [text.slice(2, close), after];
  }
  const space = text.search(/\s/);
  if (space === -1) throw new CommandError(`${word} @NAME needs ${what}: ${word} @NAME ${usage}`);
  if (space === 1) {
    throw new CommandError(`${word} @NAME needs a name after "@": ${word} @NAME ${usage}`);
  }
  return [text.slice(1, space), text.slice(space + 1).trim()];
}

/** One path, quoted if it holds spaces. */
function onePath(text: string): string {
  const args = splitArgs(text);
  if (args.length !== 1) {
    throw new CommandError('sendfile takes one file; quote a path with spaces: "my file.csv"');
  }
  return args[0];
}

/** A name typed in double quotes (`"Alice Smith"`) without them. */
function unquote(name: string): string {
  return /^".*"$/.test(name) && name.length >= 2 ? name.slice(1, -1) : name;
}

/** The usage error for a command given `count` words, saying so when there were too many. */
function tooManyWords(count: number, usage: string): string {
  if (count === 0) return usage;
  const [command, form] = usage.split(": ");
  return `${command.split(" ")[0]} got ${count} words, too many: ${form} ` +
    '(quote a name with spaces in it: "my notes.txt")';
}
