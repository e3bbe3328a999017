/**
 * Lines for the console, written together: a busy server prints a few
 * lines for every registration, and one write per line was a system call
 * each (a sixth of the server's CPU with 32 registrations in flight).
 * Lines wait until the current task's synchronous work is done (a
 * microtask), then each run of lines for one stream goes out in one write,
 * in the order they were printed.
 *
 * @module
 */

const encoder = new TextEncoder();

/** Where a line goes. */
export type ConsoleStream = "stdout" | "stderr";

/** A byte sink such as `Deno.stdout`. */
export interface SyncWriter {
  /** Writes some of `bytes` and says how many. */
  writeSync(bytes: Uint8Array): number;
}

/**
 * Buffers console lines and writes them at the end of the current task.
 *
 * @example
 * ```ts
 * const lines = new ConsoleLines();
 * lines.print("Registered \"Ann\"");
 * lines.print("Cannot save the registry", "stderr");
 * // both written once the current task's synchronous work is done
 * ```
 */
export class ConsoleLines {
  #pending: { stream: ConsoleStream; text: string }[] = [];
  #scheduled = false;
  #streams: Record<ConsoleStream, SyncWriter>;

  /** @param streams where each stream's lines go (default: the process's) */
  constructor(
    streams: Record<ConsoleStream, SyncWriter> = { stdout: Deno.stdout, stderr: Deno.stderr },
  ) {
    this.#streams = streams;
  }

  /**
   * Prints a line (a newline is added) at the end of the current task.
   *
   * @param text the line
   * @param stream `stdout` (default) or `stderr`
   */
  print(text: string, stream: ConsoleStream = "stdout"): void {
    this.#pending.push({ stream, text });
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => this.flush());
  }

  /** Writes every line waiting now. */
  flush(): void {
    this.#scheduled = false;
    const pending = this.#pending;
    this.#pending = [];
    for (let i = 0; i < pending.length;) {
      const { stream } = pending[i];
      let text = "";
      for (; i < pending.length && pending[i].stream === stream; i++) {
        text += pending[i].text + "\n";
      }
      writeAll(this.#streams[stream], encoder.encode(text));
    }
  }
}

function writeAll(writer: SyncWriter, bytes: Uint8Array): void {
  try {
    for (let written = 0; written < bytes.length;) {
      written += writer.writeSync(bytes.subarray(written));
    }
  } catch {
    // The console is gone (a closed pipe): nothing to show the lines on.
  }
}
