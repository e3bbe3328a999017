/**
 * Tab completion for the interactive client: the first word completes to a
 * command, and where a command takes a peer's name (`lookup`, `connect`,
 * `accept`, `reject`, `terminate`, `login`, and `send @`/`sendfile @`) the
 * word completes to a name online (after `@`, in quotes when it has a space).
 *
 * @module
 */
import type { Completion } from "./line_editor.ts";

/** Commands whose first argument is a name. */
const NAME_COMMANDS = new Set(["lookup", "connect", "accept", "reject", "terminate", "login"]);
/** Commands that take a name after `@`. */
const AT_COMMANDS = new Set(["send", "sendfile"]);

/**
 * Makes a completer for the line editor.
 *
 * @param commands the command words
 * @param names the names to offer now (the people online as last seen)
 * @returns a function from the text before the cursor to what may complete it
 *
 * @example
 * ```ts
 * const complete = commandCompleter(["list", "lookup"], () => ["Ann Lee"]);
 * complete("lo"); // { from: 0, words: ["lookup"] }
 * complete("lookup A"); // { from: 7, words: ["Ann Lee"] }
 * complete("send @A"); // { from: 6, words: ['"Ann Lee"'] }
 * ```
 */
export function commandCompleter(
  commands: readonly string[],
  names: () => Iterable<string>,
): (before: string) => Completion {
  return (before) => {
    const lead = before.length - before.trimStart().length;
    const match = /^(\S+)(\s+)(@?)("?[^"]*|\S*)$/.exec(before.slice(lead));
    if (match === null) {
      if (/\s/.test(before.slice(lead))) return { from: before.length, words: [] };
      const typed = before.slice(lead).toLowerCase();
      return { from: lead, words: commands.filter((c) => c.startsWith(typed)) };
    }
    const [, command, space, at, word] = match;
    const wantsName = at === "" ? NAME_COMMANDS.has(command.toLowerCase()) : AT_COMMANDS.has(
      command.toLowerCase(),
    );
    if (!wantsName) return { from: before.length, words: [] };
    const from = lead + command.length + space.length + at.length;
    const typed = word.replace(/^"/, "").toLowerCase();
    const words = [...new Set(names())]
      .filter((name) => name.toLowerCase().startsWith(typed))
      .sort()
      // After @ a name with a space needs quotes; elsewhere the rest of the line is the name.
      .map((name) => at !== "" && (/\s/.test(name) || word.startsWith('"')) ? `"${name}"` : name);
    return { from, words };
  };
}
