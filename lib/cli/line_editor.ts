/**
 * The client's input line on a terminal, sans I/O: it takes what the user
 * types and what the program prints, and returns the exact text to write so
 * that output and a progress line appear above the prompt while the
 * half-typed command stays where it was. The driver (`lib/cli/terminal.ts`)
 * puts the terminal in cbreak mode and does the reading and writing.
 *
 * The screen's bottom block is the status line (a progress bar, when there is
 * one) and below it the prompt and what is typed, which may wrap over several
 * rows. Everything else scrolls above that block. Widths are display columns
 * (`lib/display_width.ts`): emoji, ZWJ sequences and East Asian wide
 * characters take two.
 *
 * Keys: printable text, Enter; Left, Right, Home, End, Ctrl+A, Ctrl+E,
 * Ctrl+B, Ctrl+F (move by a whole character as seen); Backspace and Delete
 * (a whole character as seen, emoji and accents included); Ctrl+U (delete
 * before the cursor), Ctrl+K (after it), Ctrl+W (the word before it); Up,
 * Down, Ctrl+P, Ctrl+N (history, when the question has one); Tab
 * (completion, when a completer is given; twice lists the choices); Ctrl+L
 * (redraw); Ctrl+D on an empty line (end of input; at a secret question, an
 * empty answer). Other control keys and escape sequences are ignored.
 *
 * @module
 */
import { cutToWidth, displayWidth } from "../display_width.ts";
import type { LineHistory } from "./line_history.ts";

/** What typing did: lines finished with Enter, whether input ended, and what to write. */
export interface Typed {
  /** Lines finished with Enter, in order, without the line ending. */
  readonly lines: string[];
  /** True once Ctrl+D was pressed on an empty line. */
  readonly ended: boolean;
  /** Text to write to the terminal. */
  readonly screen: string;
}

/** What a completer offers for the text before the cursor. */
export interface Completion {
  /** Where the word being completed starts in the text before the cursor. */
  readonly from: number;
  /** The words that may replace it, each whole (as they would be typed). */
  readonly words: readonly string[];
}

/** Erases from the cursor to the end of the screen. */
const ERASE_BELOW = "\x1b[J";
const graphemes = new Intl.Segmenter();

/** Options of {@linkcode LineEditor}. */
export interface LineEditorOptions {
  /**
   * True for a line after which the program will ask a secret question
   * (`login` on a password server): what is typed after it, such as a
   * pasted password, is not echoed while the question is not yet shown.
   */
  secretAfter?: (line: string) => boolean;
  /** Offers words for Tab, given the text before the cursor. */
  complete?: (before: string) => Completion;
}

/** Options of {@linkcode LineEditor.ask}. */
export interface AskOptions {
  /** Hide what is typed (a password); it never goes into a history. */
  secret?: boolean;
  /** Up and Down walk this history, and the line answered is added to it. */
  history?: LineHistory;
}

/**
 * A terminal's input line with output and a status line above it.
 *
 * @example
 * ```ts
 * const editor = new LineEditor(() => 80);
 * let screen = editor.ask("> ");          // "> " shown
 * screen = editor.type("hel").screen;     // "hel" echoed
 * screen = editor.print("Bob: hi");       // "Bob: hi" above, "> hel" redrawn below it
 * editor.type("lo\r").lines;              // ["hello"]
 * ```
 */
export class LineEditor {
  #columns: () => number;
  #prompt = "";
  #secret = false;
  #input = "";
  /** Where the cursor is in #input (a UTF-16 index at a character boundary). */
  #cursor = 0;
  #status: string | undefined;
  /** Rows of the bottom block above the cursor's row, as last drawn. */
  #rowsAbove = 0;
  /** The escape sequence read so far, from its ESC; empty outside one. */
  #escape = "";
  /** The last key was a CR, so a following LF is the same Enter. */
  #afterCr = false;
  /** The last key was a Tab that completed nothing. */
  #afterTab = false;
  #ended = false;
  #secretAfter: (line: string) => boolean;
  #complete: ((before: string) => Completion) | undefined;
  #history: LineHistory | undefined;
  /** Which history entry is shown; the entries' count for the line being typed. */
  #historyAt = 0;
  /** The line being typed, kept while history entries are shown. */
  #draft = "";

  /**
   * @param columns the terminal's width now, read at every redraw
   * @param options see {@linkcode LineEditorOptions}
   */
  constructor(columns: () => number, options: LineEditorOptions = {}) {
    this.#columns = columns;
    this.#secretAfter = options.secretAfter ?? (() => false);
    this.#complete = options.complete;
  }

  /** What is typed so far on the current line. */
  get input(): string {
    return this.#input;
  }

  /** Where the cursor is in {@linkcode input}, as a string index. */
  get cursor(): number {
    return this.#cursor;
  }

  /**
   * Shows a prompt; what is typed after it is echoed, unless `secret`.
   *
   * @returns text to write
   */
  ask(prompt: string, options: AskOptions = {}): string {
    const erase = this.#erase();
    this.#prompt = prompt;
    this.#secret = options.secret ?? false;
    this.#history = this.#secret ? undefined : options.history;
    this.#historyAt = this.#history?.entries.length ?? 0;
    return erase + this.#draw();
  }

  /**
   * Takes typed text (as read from the terminal, any number of keys).
   *
   * @returns the lines finished, whether input ended, and what to write
   */
  type(text: string): Typed {
    const lines: string[] = [];
    let screen = "";
    for (const key of text) {
      if (this.#ended) break;
      if (this.#escape !== "") {
        this.#escape += key;
        const action = escapeAction(this.#escape);
        if (action === undefined) continue;
        this.#escape = "";
        screen += this.#key(action);
        continue;
      }
      const afterCr = this.#afterCr;
      this.#afterCr = key === "\r";
      const afterTab = this.#afterTab;
      this.#afterTab = false;
      if (key === "\r" || (key === "\n" && !afterCr)) {
        const line = this.#input;
        lines.push(line);
        // The answered line stays on screen (a secret one without its text).
        this.#cursor = line.length;
        screen += this.#erase() + this.#committed() + "\r\n";
        if (!this.#secret) this.#history?.add(line);
        this.#historyAt = this.#history?.entries.length ?? 0;
        this.#input = "";
        this.#cursor = 0;
        this.#rowsAbove = 0;
        if (!this.#secret && this.#secretAfter(line)) {
          // Until the question is shown, nothing typed is echoed or kept.
          this.#prompt = "";
          this.#secret = true;
          this.#history = undefined;
        }
        screen += this.#draw();
      } else if (key === "\n") {
        // The LF of a CR LF: already handled.
      } else if (key === "\x04") {
        if (this.#input !== "") {
          screen += this.#key("delete");
        } else if (this.#secret) {
          lines.push("");
          screen += this.#erase() + this.#committed() + "\r\n" + this.redraw();
        } else {
          this.#ended = true;
        }
      } else if (key === "\x1b") {
        this.#escape = key;
      } else if (key === "\t") {
        screen += this.#tab(afterTab);
      } else if (CONTROL_KEYS[key] !== undefined) {
        screen += this.#key(CONTROL_KEYS[key]);
      } else if (/[\p{Cc}\p{Cf}\u2028\u2029]/u.test(key)) {
        // Other control keys do nothing.
      } else {
        screen += this.#insert(key);
      }
    }
    return { lines, ended: this.#ended, screen };
  }

  /**
   * Prints text above the status line and the prompt. Every line of `text`
   * must already be safe to show (see `printable`).
   *
   * @returns text to write
   */
  print(text: string): string {
    return this.#erase() + text.replace(/\r?\n/g, "\r\n") + "\r\n" + this.#draw();
  }

  /**
   * Shows or replaces the status line above the prompt, or removes it
   * (`undefined`). It is cut to the terminal's width.
   *
   * @returns text to write
   */
  status(text: string | undefined): string {
    const erase = this.#erase();
    this.#status = text;
    return erase + this.#draw();
  }

  /**
   * Removes the status line from the screen, and the prompt unless
   * something was typed after it, for the end.
   *
   * @returns text to write
   */
  close(): string {
    const erase = this.#erase();
    const typed = this.#input === "" || this.#secret ? "" : this.#committed() + "\r\n";
    this.#status = undefined;
    this.#prompt = "";
    this.#input = "";
    this.#cursor = 0;
    return erase + typed;
  }

  /**
   * Draws the status line and prompt again from the start of an empty row,
   * after something else wrote to the terminal (Ctrl+L, a resumed job).
   *
   * @returns text to write
   */
  redraw(): string {
    this.#rowsAbove = 0;
    return this.#draw();
  }

  /** Does what an editing key asks. */
  #key(action: Action): string {
    const input = this.#input, at = this.#cursor;
    switch (action) {
      case "left":
        return this.#move(previousBoundary(input, at));
      case "right":
        return this.#move(nextBoundary(input, at));
      case "home":
        return this.#move(0);
      case "end":
        return this.#move(input.length);
      case "backspace": {
        const from = previousBoundary(input, at);
        return this.#edit(input.slice(0, from) + input.slice(at), from);
      }
      case "delete":
        return this.#edit(input.slice(0, at) + input.slice(nextBoundary(input, at)), at);
      case "kill_before":
        return this.#edit(input.slice(at), 0);
      case "kill_after":
        return this.#edit(input.slice(0, at), at);
      case "kill_word": {
        const before = input.slice(0, at).replace(/\S*\s*$/u, "");
        return this.#edit(before + input.slice(at), before.length);
      }
      case "up":
        return this.#recall(-1);
      case "down":
        return this.#recall(1);
      case "redraw":
        return "\x1b[H\x1b[2J" + this.redraw();
      case "ignore":
        return "";
    }
  }

  /** Shows the history entry before (-1) or after (+1) the one shown. */
  #recall(step: -1 | 1): string {
    const entries = this.#history?.entries;
    if (entries === undefined) return "";
    const to = this.#historyAt + step;
    if (to < 0 || to > entries.length) return "";
    if (this.#historyAt === entries.length) this.#draft = this.#input;
    this.#historyAt = to;
    const line = to === entries.length ? this.#draft : entries[to];
    return this.#edit(line, line.length);
  }

  /** Completes the word before the cursor; a second Tab lists the choices. */
  #tab(again: boolean): string {
    if (this.#complete === undefined || this.#secret) return "";
    const before = this.#input.slice(0, this.#cursor);
    const { from, words } = this.#complete(before);
    if (words.length === 0) return "";
    const typed = before.slice(from);
    const common = words.length === 1 ? words[0] + " " : commonPrefix(words);
    if (common.length > typed.length) {
      const head = before.slice(0, from) + common;
      return this.#edit(head + this.#input.slice(this.#cursor), head.length);
    }
    this.#afterTab = true;
    if (!again) return "";
    return this.print(words.join("  "));
  }

  #insert(text: string): string {
    if (this.#cursor < this.#input.length) {
      const at = this.#cursor;
      return this.#edit(
        this.#input.slice(0, at) + text + this.#input.slice(at),
        at + text.length,
      );
    }
    this.#input += text;
    this.#cursor = this.#input.length;
    if (this.#secret) return "";
    // Written where the cursor is; the terminal wraps as #rowsAbove counts.
    this.#rowsAbove = this.#statusRows() + this.#position(this.#committed()).row;
    return text;
  }

  #move(cursor: number): string {
    if (this.#secret || cursor === this.#cursor) return "";
    return this.#edit(this.#input, cursor);
  }

  #edit(input: string, cursor: number): string {
    if (input === this.#input && cursor === this.#cursor) return "";
    const erase = this.#erase();
    this.#input = input;
    this.#cursor = this.#secret ? input.length : cursor;
    return erase + this.#draw();
  }

  /** Moves to the start of the bottom block and erases it. */
  #erase(): string {
    const up = this.#rowsAbove > 0 ? `\x1b[${this.#rowsAbove}A` : "";
    this.#rowsAbove = 0;
    return "\r" + up + ERASE_BELOW;
  }

  /**
   * Draws the bottom block at the cursor, which is at the start of an empty
   * row, then puts the cursor where it is in the input.
   */
  #draw(): string {
    let text = "";
    if (this.#status !== undefined) {
      text += cutToWidth(this.#status, this.#columns() - 1) + "\r\n";
    }
    const committed = this.#committed();
    text += committed;
    const end = this.#position(committed);
    let row = end.row;
    if (!this.#secret && this.#cursor < this.#input.length) {
      const at = this.#position(this.#prompt + this.#input.slice(0, this.#cursor));
      // Exactly at a row's end, the next character starts the next row.
      const cursor = at.col >= this.#width() ? { row: at.row + 1, col: 0 } : at;
      if (end.row > cursor.row) text += `\x1b[${end.row - cursor.row}A`;
      text += "\r" + (cursor.col > 0 ? `\x1b[${cursor.col}C` : "");
      row = cursor.row;
    }
    this.#rowsAbove = this.#statusRows() + row;
    return text;
  }

  /** The prompt and what is typed, as shown. */
  #committed(): string {
    return this.#prompt + (this.#secret ? "" : this.#input);
  }

  #width(): number {
    return Math.max(1, this.#columns());
  }

  #statusRows(): number {
    return this.#status === undefined ? 0 : 1;
  }

  /**
   * Where the terminal's cursor is after writing `text` from a row's start:
   * the row, and the column (the width itself when the row is full and the
   * terminal waits to wrap). A wide character that does not fit at a row's
   * end goes to the next row, as terminals do.
   */
  #position(text: string): { row: number; col: number } {
    const width = this.#width();
    let row = 0, col = 0;
    for (const { segment } of graphemes.segment(text)) {
      const w = displayWidth(segment);
      if (w === 0) continue;
      if (col + w > width) {
        row++;
        col = 0;
      }
      col += w;
    }
    return { row, col };
  }
}

/** What an editing key does. */
type Action =
  | "left"
  | "right"
  | "home"
  | "end"
  | "backspace"
  | "delete"
  | "kill_before"
  | "kill_after"
  | "kill_word"
  | "up"
  | "down"
  | "redraw"
  | "ignore";

const CONTROL_KEYS: Record<string, Action> = {
  "\x01": "home", // Ctrl+A
  "\x02": "left", // Ctrl+B
  "\x05": "end", // Ctrl+E
  "\x06": "right", // Ctrl+F
  "\x08": "backspace", // Ctrl+H
  "\x7f": "backspace",
  "\x0b": "kill_after", // Ctrl+K
  "\x0c": "redraw", // Ctrl+L
  "\x0e": "down", // Ctrl+N
  "\x10": "up", // Ctrl+P
  "\x15": "kill_before", // Ctrl+U
  "\x17": "kill_word", // Ctrl+W
};

/** The final letters of CSI and SS3 sequences that edit (modifiers such as `1;5` ignored). */
const FINAL_KEYS: Record<string, Action> = {
  A: "up",
  B: "down",
  C: "right",
  D: "left",
  H: "home",
  F: "end",
};

/** The numbers of `ESC [ N ~` sequences that edit. */
const TILDE_KEYS: Record<string, Action> = {
  "1": "home",
  "7": "home",
  "4": "end",
  "8": "end",
  "3": "delete",
};

/**
 * What a (possibly partial) escape sequence does: undefined while it is not
 * complete; `ignore` for one that does not edit (Alt+x, F1, Ctrl+arrows...).
 */
function escapeAction(sequence: string): Action | undefined {
  if (sequence.length < 2) return undefined;
  const kind = sequence[1];
  if (kind !== "[" && kind !== "O") return "ignore"; // Alt+key
  if (sequence.length < 3) return undefined;
  const last = sequence.at(-1)!;
  if (kind === "O") return FINAL_KEYS[last] ?? "ignore";
  if (last < "\x40" || last > "\x7e") return sequence.length > 16 ? "ignore" : undefined;
  const params = sequence.slice(2, -1);
  if (last === "~") return TILDE_KEYS[params] ?? "ignore";
  return params === "" || params === "1" ? FINAL_KEYS[last] ?? "ignore" : "ignore";
}

/** The index of the character boundary before `at`. */
function previousBoundary(text: string, at: number): number {
  let previous = 0;
  for (const { index } of graphemes.segment(text)) {
    if (index >= at) break;
    previous = index;
  }
  return previous;
}

/** The index of the character boundary after `at`. */
function nextBoundary(text: string, at: number): number {
  for (const { index, segment } of graphemes.segment(text)) {
    if (index >= at) return index + segment.length;
  }
  return text.length;
}

function commonPrefix(words: readonly string[]): string {
  let prefix = words[0];
  for (const word of words) {
    while (!word.startsWith(prefix)) prefix = prefix.slice(0, -1);
  }
  return prefix;
}
