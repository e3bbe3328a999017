/**
 * The client's command language, shared by the prompt, piped stdin and
 * `--script` files.
 *
 * @module
 */

/** One parsed command. */
export type Command =
  | { readonly kind: "register"; readonly name?: string }
  | { readonly kind: "deregister" }
  | { readonly kind: "tcp"; readonly text: string }
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
  ["register [NAME]", "register with the server (as NAME, or the name you gave)"],
  ["deregister", "remove your registration from the server"],
  ["tcp TEXT", "send TEXT to the server over TCP; it logs it and acknowledges"],
  ["status", "show the server, your name, ports and registration"],
  ["help", "show this list"],
  ["exit", "leave (your registration stays; use deregister to remove it)"],
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
      return rest === "" ? { kind: "register" } : { kind: "register", name: rest };
    case "tcp":
      if (rest === "") throw new CommandError("tcp needs a message: tcp TEXT");
      return { kind: "tcp", text: rest };
    case "deregister":
    case "status":
    case "help":
    case "exit":
      if (rest !== "") throw new CommandError(`${word} takes no arguments`);
      return { kind: word };
    case "quit":
      return { kind: "exit" };
    default:
      throw new CommandError(`Unknown command "${word}"; type help for the list`);
  }
}
