/**
 * A program the NAT lab runs inside a namespace (`ip netns exec NS deno run
 * ...`): its output collected line by line with the time each line came, a
 * bounded wait for a line, and a stop that always ends it.
 *
 * @module
 */
import { fromFileUrl } from "@std/path";

/** The project's `deno.json`, for the import map and unstable features. */
export const CONFIG_PATH: string = fromFileUrl(new URL("../deno.json", import.meta.url));

/** A line of output and when it came (`performance.now()`). */
export interface TimedLine {
  /** The line, without its newline. */
  readonly text: string;
  /** When it was read. */
  readonly at: number;
}

/** How long a stopping program gets after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 3_000;

/**
 * A Deno program running in a lab namespace.
 *
 * @example
 * ```ts
 * await using probe = NamespacedProgram.start("reflector", ns, "scripts/_natlab_probe.ts", ["reflect", "100.64.0.2:3478"]);
 * await probe.waitFor(/^ready$/, 10_000);
 * ```
 */
export class NamespacedProgram implements AsyncDisposable {
  /** Names the program in errors. */
  readonly label: string;
  /** Standard output so far. */
  readonly stdout: TimedLine[] = [];
  /** Standard error so far. */
  readonly stderr: TimedLine[] = [];
  /** The exit code, once it has exited. */
  readonly status: Promise<number>;
  readonly #child: Deno.ChildProcess;
  readonly #reading: Promise<unknown>;
  readonly #wakers = new Set<() => void>();
  #exited = false;

  private constructor(label: string, child: Deno.ChildProcess) {
    this.label = label;
    this.#child = child;
    this.#reading = Promise.all([
      this.#collect(child.stdout, this.stdout),
      this.#collect(child.stderr, this.stderr),
    ]);
    this.status = child.status.then((status) => {
      this.#exited = true;
      this.#wake();
      return status.code;
    });
  }

  /**
   * Starts a Deno program in a namespace, with the project's config.
   *
   * @param label names it in errors
   * @param namespace where it runs
   * @param args `deno run` permissions, the script and its arguments
   * @param options its working directory
   * @returns the running program
   */
  static start(
    label: string,
    namespace: string,
    args: readonly string[],
    options: { cwd?: string } = {},
  ): NamespacedProgram {
    const child = new Deno.Command("ip", {
      args: ["netns", "exec", namespace, Deno.execPath(), "run", "--config", CONFIG_PATH, ...args],
      cwd: options.cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    return new NamespacedProgram(label, child);
  }

  /** The process id (`ip netns exec` runs the program in its own process). */
  get pid(): number {
    return this.#child.pid;
  }

  /** True once it has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /**
   * Waits until a line of standard output matches, or the program exits, or
   * the time runs out.
   *
   * @param pattern the line
   * @param ms the longest wait
   * @returns the line, or undefined if none came
   */
  async waitFor(pattern: RegExp, ms: number): Promise<TimedLine | undefined> {
    const deadline = performance.now() + ms;
    while (true) {
      const line = this.stdout.find((l) => pattern.test(l.text));
      if (line !== undefined) return line;
      const left = deadline - performance.now();
      if (this.#exited || left <= 0) return undefined;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.#wakers.delete(wake);
          clearTimeout(timer);
          resolve();
        };
        this.#wakers.add(wake);
        timer = setTimeout(wake, left);
      });
    }
  }

  /**
   * Waits for it to exit by itself, at most `ms`, then stops it.
   *
   * @param ms the longest wait
   * @returns the exit code (128 + signal if it was stopped)
   */
  async finish(ms: number): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, ms));
    await Promise.race([this.status, timeout]);
    clearTimeout(timer);
    return await this.stop();
  }

  /**
   * Stops it: SIGTERM, then SIGKILL if it lingers; waits for its output.
   *
   * @returns the exit code
   */
  async stop(): Promise<number> {
    this.#signal("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => timer = setTimeout(resolve, STOP_GRACE_MS));
    await Promise.race([this.status, grace]);
    clearTimeout(timer);
    this.#signal("SIGKILL");
    const code = await this.status;
    await this.#reading;
    return code;
  }

  /** Stops it; for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Standard error as text (for failure reports). */
  get errorText(): string {
    return this.stderr.map((line) => line.text).join("\n");
  }

  #signal(signal: Deno.Signal): void {
    if (this.#exited) return;
    try {
      this.#child.kill(signal);
    } catch {
      // it has just exited
    }
  }

  async #collect(stream: ReadableStream<Uint8Array>, into: TimedLine[]): Promise<void> {
    let partial = "";
    try {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        const parts = (partial + chunk).split("\n");
        partial = parts.pop()!;
        const at = performance.now();
        for (const text of parts) into.push({ text, at });
        this.#wake();
      }
    } catch {
      // the process went away
    }
    if (partial !== "") into.push({ text: partial, at: performance.now() });
    this.#wake();
  }

  #wake(): void {
    for (const wake of [...this.#wakers]) wake();
  }
}
