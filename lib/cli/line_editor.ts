/**
 * The client's input line on a terminal, sans I/O: it takes what the user
 * types and what the program prints, and returns the exact text to write so
 * that output and a progress line appear above the prompt while the
 * half-typed command stays where it was. The driver (`lib/cli/terminal.ts`)
 * puts the terminal in cbreak mode and does the reading and writing.
 *
 * The screen's bottom block is the status line (a progress bar, when there is
 * one) and below it the prompt and what is typed, which may wrap over several
 * rows. Everything else scrolls above that block.
 *
 * Keys: printable text, Enter, Backspace (a whole character as seen, emoji
 * and accents included), Ctrl+U (clear the line), Ctrl+W (delete a word),
 * Ctrl+L (redraw), Ctrl+D on an empty line (end of input; at a secret
 * question, an empty answer). Other control keys and escape sequences
 * (arrows, function keys) are ignored.
 *
 * @module
 */

/** What typing did: lines finished with Enter, whether input ended, and what to write. */
export interface Typed {
  /** Lines finished with Enter, in order, without the line ending. */
  readonly lines: string[];
  /** True once Ctrl+D was pressed on an empty line. */
  readonly ended: boolean;
  /** Text to write to the terminal. */
  readonly screen: string;
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
  #status: string | undefined;
  /** Rows of the bottom block above the cursor's row, as last drawn. */
  #rowsAbove = 0;
  /** Inside an escape sequence: after ESC, after ESC [ (CSI) or after ESC O (SS3). */
  #escape: "" | "esc" | "csi" | "ss3" = "";
  /** The last key was a CR, so a following LF is the same Enter. */
  #afterCr = false;
  #ended = false;
  #secretAfter: (line: string) => boolean;

  /**
   * @param columns the terminal's width now, read at every redraw
   * @param options see {@linkcode LineEditorOptions}
   */
  constructor(columns: () => number, options: LineEditorOptions = {}) {
    this.#columns = columns;
    this.#secretAfter = options.secretAfter ?? (() => false);
  }

  /** What is typed so far on the current line. */
  get input(): string {
    return this.#input;
  }

  /**
   * Shows a prompt; what is typed after it is echoed, unless `secret`.
   *
   * @returns text to write
   */
  ask(prompt: string, options: { secret?: boolean } = {}): string {
    const erase = this.#erase();
    this.#prompt = prompt;
    this.#secret = options.secret ?? false;
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
        this.#skipEscape(key);
        continue;
      }
      const afterCr = this.#afterCr;
      this.#afterCr = key === "\r";
      if (key === "\r" || (key === "\n" && !afterCr)) {
        lines.push(this.#input);
        // The answered line stays on screen (a secret one without its text).
        screen += this.#erase() + this.#committed() + "\r\n";
        this.#input = "";
        this.#rowsAbove = 0;
        if (!this.#secret && this.#secretAfter(lines.at(-1)!)) {
          // Until the question is shown, nothing typed is echoed.
          this.#prompt = "";
          this.#secret = true;
        }
        screen += this.#draw();
      } else if (key === "\n") {
        // The LF of a CR LF: already handled.
      } else if (key === "\x7f" || key === "\b") {
        const last = Array.from(graphemes.segment(this.#input)).at(-1);
        screen += this.#edit(this.#input.slice(0, last?.index ?? 0));
      } else if (key === "\x15") {
        screen += this.#edit("");
      } else if (key === "\x17") {
        screen += this.#edit(this.#input.replace(/\S*\s*$/u, ""));
      } else if (key === "\x0c") {
        screen += "\x1b[H\x1b[2J" + this.redraw();
      } else if (key === "\x04") {
        if (this.#input !== "") continue;
        if (this.#secret) {
          lines.push("");
          screen += this.#erase() + this.#committed() + "\r\n" + this.redraw();
        } else {
          this.#ended = true;
        }
      } else if (key === "\x1b") {
        this.#escape = "esc";
      } else if (key === "\t") {
        screen += this.#append(" ");
      } else if (/[\p{Cc}\p{Cf}\u2028\u2029]/u.test(key)) {
        // Other control keys do nothing.
      } else {
        screen += this.#append(key);
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
    return erase + typed;
  }

  #skipEscape(key: string): void {
    if (this.#escape === "esc") {
      this.#escape = key === "[" ? "csi" : key === "O" ? "ss3" : "";
    } else if (this.#escape === "ss3") {
      this.#escape = "";
    } else if (key >= "\x40" && key <= "\x7e") {
      this.#escape = ""; // The final byte of a CSI sequence.
    }
  }

  #append(text: string): string {
    this.#input += text;
    if (this.#secret) return "";
    // Written where the cursor is; the terminal wraps as #rowsAbove counts.
    this.#rowsAbove = this.#blockRowsAbove();
    return text;
  }

  #edit(input: string): string {
    if (input === this.#input) return "";
    const erase = this.#erase();
    this.#input = input;
    return erase + this.#draw();
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

  /** Moves to the start of the bottom block and erases it. */
  #erase(): string {
    const up = this.#rowsAbove > 0 ? `\x1b[${this.#rowsAbove}A` : "";
    this.#rowsAbove = 0;
    return "\r" + up + ERASE_BELOW;
  }

  /** Draws the bottom block at the cursor, which is at the start of an empty row. */
  #draw(): string {
    let text = "";
    if (this.#status !== undefined) text += cut(this.#status, this.#columns() - 1) + "\r\n";
    text += this.#committed();
    this.#rowsAbove = this.#blockRowsAbove();
    return text;
  }

  /** The prompt and what is typed, as shown. */
  #committed(): string {
    return this.#prompt + (this.#secret ? "" : this.#input);
  }

  #blockRowsAbove(): number {
    const columns = Math.max(1, this.#columns());
    const width = displayWidth(this.#committed());
    // After exactly a row's worth the cursor waits at the row's end (no wrap yet).
    const cursorRow = width === 0 ? 0 : Math.ceil(width / columns) - 1;
    return (this.#status === undefined ? 0 : 1) + cursorRow;
  }
}

/** Cuts text to at most `columns` display columns. */
function cut(text: string, columns: number): string {
  let out = "", width = 0;
  for (const char of text) {
    width += charWidth(char);
    if (width > columns) break;
    out += char;
  }
  return out;
}

/**
 * Columns text takes on a terminal: East Asian wide characters and emoji
 * take two, combining marks none.
 *
 * @example
 * ```ts
 * displayWidth("ab"); // 2
 * displayWidth("日本"); // 4
 * ```
 */
export function displayWidth(text: string): number {
  let width = 0;
  for (const char of text) width += charWidth(char);
  return width;
}

function charWidth(char: string): number {
  const code = char.codePointAt(0)!;
  if (/\p{Mn}|\p{Me}/u.test(char)) return 0;
  const wide = (code >= 0x1100 && code <= 0x115f) || (code >= 0x2e80 && code <= 0xa4cf) ||
    (code >= 0xac00 && code <= 0xd7a3) || (code >= 0xf900 && code <= 0xfaff) ||
    (code >= 0xfe30 && code <= 0xfe4f) || (code >= 0xff00 && code <= 0xff60) ||
    (code >= 0xffe0 && code <= 0xffe6) || (code >= 0x1f300 && code <= 0x1f64f) ||
    (code >= 0x1f900 && code <= 0x1f9ff) || (code >= 0x20000 && code <= 0x3fffd);
  return wide ? 2 : 1;
}
