/**
 * The interactive client's terminal: standard input in cbreak mode (keys as
 * they are typed, Ctrl+C still a signal), a `LineEditor` for the input line,
 * and every line of output written above the prompt, so that chat arriving,
 * results and the progress bar never erase what the user is typing.
 *
 * @module
 */
import { type AskOptions, LineEditor, type LineEditorOptions } from "./line_editor.ts";

const encoder = new TextEncoder();

/**
 * Standard input and output as one terminal with a prompt.
 *
 * @example
 * ```ts
 * const terminal = Terminal.open();
 * if (terminal) {
 *   const line = await terminal.next({ prompt: "> " });
 *   terminal.print(`you typed ${line}`);
 *   await terminal.cancel();
 * }
 * ```
 */
export class Terminal {
  #editor: LineEditor;
  #lines: string[] = [];
  #ended = false;
  #wake: (() => void) | undefined;
  #reader: ReadableStreamDefaultReader<string>;
  #reading: Promise<void>;
  #closed = false;

  /** After Ctrl+Z and `fg` the shell has set the terminal back to line mode. */
  #resume = () => {
    Deno.stdin.setRaw(true, { cbreak: true });
    this.#write("\r\n" + this.#editor.redraw());
  };

  private constructor(options: LineEditorOptions) {
    this.#editor = new LineEditor(columns, options);
    Deno.stdin.setRaw(true, { cbreak: true });
    if (Deno.build.os !== "windows") Deno.addSignalListener("SIGCONT", this.#resume);
    this.#reader = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
    this.#reading = this.#read();
  }

  /**
   * Takes over the terminal when standard input and output are both one
   * that can move its cursor (`TERM` set, and not `dumb`).
   *
   * @param options the line editor's
   * @returns the terminal, or undefined when there is none to take
   */
  static open(options: LineEditorOptions = {}): Terminal | undefined {
    if (!Deno.stdin.isTerminal() || !Deno.stdout.isTerminal()) return undefined;
    let term: string;
    try {
      term = Deno.env.get("TERM") ?? "";
    } catch {
      return undefined; // Not allowed to read it: line mode, which works everywhere.
    }
    if (term === "" || term === "dumb") return undefined;
    return new Terminal(options);
  }

  /** The terminal's width now. */
  get columns(): number {
    return columns();
  }

  /**
   * Shows `prompt` and waits for a line (one typed ahead is taken at once).
   *
   * @param options the prompt, and the editor's `secret` and `history` (see `AskOptions`)
   * @returns the line, or undefined at the end of input (Ctrl+D)
   */
  async next(options: AskOptions & { prompt?: string } = {}): Promise<string | undefined> {
    this.#write(this.#editor.ask(options.prompt ?? "", options));
    while (this.#lines.length === 0 && !this.#ended) {
      await new Promise<void>((wake) => this.#wake = wake);
    }
    return this.#lines.shift();
  }

  /**
   * Shows `prompt` without waiting for a line, for a wait the user should
   * see (such as connecting); what is typed meanwhile is kept.
   */
  show(prompt: string): void {
    this.#write(this.#editor.ask(prompt));
  }

  /**
   * Drops the lines typed but not read yet.
   *
   * @returns them, oldest first
   */
  discard(): string[] {
    return this.#lines.splice(0);
  }

  /** Prints lines above the prompt. */
  print(text: string): void {
    this.#write(this.#editor.print(text));
  }

  /** Shows, replaces or (with undefined) removes the status line above the prompt. */
  status(text: string | undefined): void {
    this.#write(this.#editor.status(text));
  }

  /** Clears the prompt, gives the terminal back in its normal mode, and stops reading. */
  async cancel(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#write(this.#editor.close());
    if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGCONT", this.#resume);
    try {
      Deno.stdin.setRaw(false);
    } catch {
      // The terminal is gone.
    }
    await this.#reader.cancel().catch(() => {});
    await this.#reading;
  }

  async #read(): Promise<void> {
    try {
      while (!this.#ended) {
        const { value, done } = await this.#reader.read();
        if (done) break;
        const typed = this.#editor.type(value);
        this.#write(typed.screen);
        this.#lines.push(...typed.lines);
        if (typed.ended) break;
        if (typed.lines.length > 0) this.#wake?.();
      }
    } catch {
      // Reading stopped: the terminal closed, or cancel().
    }
    this.#ended = true;
    this.#wake?.();
  }

  #write(text: string): void {
    if (text === "") return;
    const bytes = encoder.encode(text);
    let written = 0;
    try {
      while (written < bytes.length) written += Deno.stdout.writeSync(bytes.subarray(written));
    } catch {
      // The terminal is gone; nothing to show it on.
    }
  }
}

function columns(): number {
  try {
    return Deno.consoleSize().columns || 80;
  } catch {
    return 80;
  }
}
