/**
 * Reads text lines from a byte stream such as `Deno.stdin.readable`, one at
 * a time, on demand.
 *
 * @example
 * ```ts
 * const lines = new LineReader(Deno.stdin.readable);
 * const first = await lines.next(); // undefined at end of input
 * ```
 */
export class LineReader {
  #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";
  #done = false;

  /** @param stream UTF-8 bytes */
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }

  /**
   * Reads the next line.
   *
   * @param options `carriageReturn`: a lone CR ends the line too (a terminal
   *   in raw mode sends CR for Enter)
   * @returns the next line without its line ending, or undefined at the end
   */
  async next(options: { carriageReturn?: boolean } = {}): Promise<string | undefined> {
    while (true) {
      const newline = options.carriageReturn
        ? this.#buffer.search(/[\r\n]/)
        : this.#buffer.indexOf("\n");
      if (newline !== -1) {
        const line = this.#buffer.slice(0, newline).replace(/\r$/, "");
        const crlf = this.#buffer.startsWith("\r\n", newline);
        this.#buffer = this.#buffer.slice(newline + (crlf ? 2 : 1));
        return line;
      }
      if (this.#done) {
        if (this.#buffer === "") return undefined;
        const last = this.#buffer;
        this.#buffer = "";
        return last;
      }
      const { value, done } = await this.#reader.read();
      if (done) this.#done = true;
      else this.#buffer += value;
    }
  }

  /** Stops reading and releases the stream. */
  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }
}
