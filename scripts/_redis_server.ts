/**
 * A real `redis-server` for tests and `scripts/bench_store.ts`: started on a free loopback port in a
 * temporary directory with the append-only file fsynced on every write
 * (`--appendonly yes --appendfsync always --save ''`), killed (-9) and
 * restarted on the same port and files when a test asks, and removed at
 * the end. Tests that need it are ignored, with one line, where
 * `redis-server` is not installed.
 *
 * @module
 */

/** Why Redis tests cannot run here, or undefined if they can. */
export const redisUnavailable: string | undefined = await (async () => {
  try {
    const { success } = await new Deno.Command("redis-server", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success ? undefined : "redis-server --version failed";
  } catch {
    return "redis-server is not installed (apt-get install redis-server)";
  }
})();

/** A running test Redis. */
export class TestRedis {
  /** Its loopback port. */
  readonly port: number;
  /** Its data directory (append-only file). */
  readonly dir: string;
  #process: Deno.ChildProcess | undefined;
  #extra: string[];

  private constructor(port: number, dir: string, extra: string[]) {
    this.port = port;
    this.dir = dir;
    this.#extra = extra;
  }

  /** `redis://127.0.0.1:PORT`. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /**
   * Starts a fresh Redis.
   *
   * @param extra more `redis-server` arguments (they override the defaults)
   * @returns it, once it answers PING
   */
  static async start(extra: string[] = []): Promise<TestRedis> {
    const dir = await Deno.makeTempDir({ prefix: "switchboard_redis_" });
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const redis = new TestRedis(port, dir, extra);
    await redis.restart();
    return redis;
  }

  /** Starts it again (after `kill`), on the same port and files. */
  async restart(): Promise<void> {
    this.#process = new Deno.Command("redis-server", {
      args: [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--dir",
        this.dir,
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        ...this.#extra,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const until = Date.now() + 10_000;
    while (!(await this.#pong())) {
      if (Date.now() > until) throw new Error(`redis-server did not start on port ${this.port}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /**
   * Runs `redis-cli` against it.
   *
   * @param args the command and its arguments, such as `INFO stats`
   * @returns what it printed
   */
  async cli(...args: string[]): Promise<string> {
    const { stdout } = await new Deno.Command("redis-cli", {
      args: ["-h", "127.0.0.1", "-p", String(this.port), ...args],
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(stdout);
  }

  /**
   * Stops (`SIGSTOP`) or continues (`SIGCONT`) it: a Redis that stalls and
   * then carries out what it was sent meanwhile.
   *
   * @param signal which
   */
  signal(signal: "SIGSTOP" | "SIGCONT"): void {
    this.#process?.kill(signal);
  }

  /** Kills it at once (SIGKILL) and waits for it to be gone. */
  async kill(): Promise<void> {
    const process = this.#process;
    this.#process = undefined;
    if (process === undefined) return;
    process.kill("SIGKILL");
    await process.status;
  }

  /** Kills it and removes its files. */
  async stop(): Promise<void> {
    await this.kill();
    await Deno.remove(this.dir, { recursive: true });
  }

  async #pong(): Promise<boolean> {
    let conn: Deno.TcpConn | undefined;
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
      await conn.write(new TextEncoder().encode("PING\r\n"));
      const buffer = new Uint8Array(16);
      const n = await conn.read(buffer);
      const answer = n === null ? "" : new TextDecoder().decode(buffer.subarray(0, n));
      return answer.startsWith("+PONG") || answer.startsWith("-NOAUTH"); // up, with a password
    } catch {
      return false;
    } finally {
      conn?.close();
    }
  }
}
