/**
 * The interactive client's command history: the lines typed at the command
 * prompt, oldest first, at most a bound, kept in a file per user in the
 * client's data directory (written with mode 0600). Answers to questions
 * and anything typed while a secret is asked never reach it: the line
 * editor adds only lines typed at a prompt that has a history.
 *
 * @module
 */

/** How many lines a history keeps by default. */
export const DEFAULT_HISTORY_LINES = 500;

/**
 * A bounded list of typed lines, saved to a file after each addition.
 *
 * @example
 * ```ts
 * const history = await LineHistory.load("data/client/history/alice.txt");
 * history.add("list");
 * await history.flush();
 * ```
 */
export class LineHistory {
  #path: string | undefined;
  #max: number;
  #entries: string[];
  #saving: Promise<void> = Promise.resolve();

  /**
   * @param entries the lines so far, oldest first
   * @param options `path` to save to (none: kept in memory), `max` lines
   */
  constructor(entries: readonly string[] = [], options: { path?: string; max?: number } = {}) {
    this.#path = options.path;
    this.#max = options.max ?? DEFAULT_HISTORY_LINES;
    this.#entries = entries.slice(-this.#max);
  }

  /**
   * Reads a history file; a missing or unreadable one gives an empty history.
   *
   * @param path the file, created at the first addition
   * @param max the most lines kept
   * @returns the history
   */
  static async load(path: string, max = DEFAULT_HISTORY_LINES): Promise<LineHistory> {
    let text = "";
    try {
      text = await Deno.readTextFile(path);
    } catch {
      // No history yet.
    }
    const lines = text.split("\n").filter((line) => line !== "");
    return new LineHistory(lines, { path, max });
  }

  /** The lines, oldest first. */
  get entries(): readonly string[] {
    return this.#entries;
  }

  /**
   * Adds a line without its trailing spaces (not an empty one, nor the
   * same as the last) and saves.
   *
   * @param typed the line typed
   */
  add(typed: string): void {
    const line = typed.trimEnd();
    if (line.trim() === "" || line.includes("\n") || line === this.#entries.at(-1)) return;
    this.#entries.push(line);
    if (this.#entries.length > this.#max) this.#entries.splice(0, this.#entries.length - this.#max);
    const path = this.#path;
    if (path === undefined) return;
    const text = this.#entries.join("\n") + "\n";
    this.#saving = this.#saving.then(() => save(path, text)).catch(() => {
      // A history that cannot be saved is not worth an error at the prompt.
    });
  }

  /** Waits until every addition is on disk. */
  async flush(): Promise<void> {
    await this.#saving;
  }
}

async function save(path: string, text: string): Promise<void> {
  const dir = path.replace(/[/\\][^/\\]*$/, "");
  if (dir !== path) await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(path, text, { mode: 0o600 });
}
