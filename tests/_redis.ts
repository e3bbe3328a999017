/**
 * Helpers for the Redis tests: a fresh `redis-server` (`TestRedis`), server
 * instances on it in this process or as child processes (`kill -9`-able),
 * all sharing one server key as instances of one service must, and
 * everything stopped and removed at the end.
 *
 * @module
 */
import { join } from "@std/path";
import type { ServerConfig } from "../lib/io/server_config.ts";
import { ServerDriver } from "../lib/io/server_driver.ts";
import { SERVER_IDENTITY_FILE } from "../lib/io/server_identity_file.ts";
import { TestRedis } from "../scripts/_redis_server.ts";
import { CONFIG_PATH, readUdpPort, SERVER_PATH, withTimeout } from "./_processes.ts";

/** The loopback address every instance binds. */
export const REDIS_TEST_HOST = "127.0.0.1";

/** An instance started as a child process. */
export interface ChildInstance {
  /** The process (stdin piped, so closing it stops the server cleanly). */
  readonly child: Deno.ChildProcess;
  /** Its UDP port. */
  readonly udpPort: number;
  /** Kills it with SIGKILL (again is harmless) and waits for it. */
  kill(): Promise<void>;
}

/**
 * Polls `condition` until it holds.
 *
 * @param condition checked every `pauseMs`
 * @param what names the wait in the error
 * @param ms the deadline, from now
 * @param pauseMs the pause between checks
 * @throws {Error} if the deadline passes first
 */
export async function waitFor(
  condition: () => boolean,
  what: string,
  ms = 5000,
  pauseMs = 5,
): Promise<void> {
  const until = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
}

/**
 * A test Redis and the instances on it.
 *
 * @example
 * ```ts
 * await withRedisInstances(async (cluster) => {
 *   const a = await cluster.instance();
 *   const b = await cluster.spawn(["--lease", "1"]);
 * });
 * ```
 */
export class RedisInstances {
  /** The Redis. */
  readonly redis: TestRedis;
  /** A temporary directory for the test's files (data directories are under it). */
  readonly dir: string;
  #servers: ServerDriver[] = [];
  #children: ChildInstance[] = [];
  #count = 0;

  private constructor(redis: TestRedis, dir: string) {
    this.redis = redis;
    this.dir = dir;
  }

  /** @returns a fresh Redis and an empty directory */
  static async start(): Promise<RedisInstances> {
    const redis = await TestRedis.start();
    return new RedisInstances(redis, await Deno.makeTempDir({ prefix: "switchboard_redis_test_" }));
  }

  /**
   * Starts an instance in this process.
   *
   * @param extra settings over the defaults (no rate limits, a 2 s lease)
   * @returns the running instance
   */
  async instance(extra: Partial<ServerConfig> = {}): Promise<ServerDriver> {
    const server = await ServerDriver.start({
      host: REDIS_TEST_HOST,
      udpPort: 0,
      tcpPort: 0,
      dataDir: await this.#dataDir(),
      version: "0.0.0-test",
      store: this.redis.url,
      leaseMs: 2000,
      limits: { rateLimit: 0, sessionRateLimit: 0, registerRate: 0 },
      ...extra,
    });
    this.#servers.push(server);
    return server;
  }

  /**
   * Starts an instance as a child process (`server.ts`), to kill -9.
   *
   * @param args more flags (`--lease 1`, `--rate-limit 0`, ...)
   * @returns it, once it printed its ports
   */
  async spawn(args: string[] = []): Promise<ChildInstance> {
    const dataDir = await this.#dataDir();
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--config",
        CONFIG_PATH,
        SERVER_PATH,
        "--host",
        REDIS_TEST_HOST,
        "--udp-port",
        "0",
        "--tcp-port",
        "0",
        "--data-dir",
        dataDir,
        "--log-dir",
        `${dataDir}-logs`,
        "--store",
        this.redis.url,
        ...args,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    let killed: Promise<void> | undefined;
    const instance: ChildInstance = {
      child,
      udpPort: 0,
      kill: () =>
        killed ??= (async () => {
          try {
            child.kill("SIGKILL");
          } catch {
            // already dead
          }
          await child.status;
          await child.stdin.close().catch(() => {});
        })(),
    };
    this.#children.push(instance);
    const udpPort = await withTimeout(readUdpPort(child.stdout), 20_000, "an instance to start");
    return { ...instance, udpPort };
  }

  /** Stops every instance and Redis, and removes the directory. */
  async stop(): Promise<void> {
    for (const child of this.#children) await child.kill();
    for (const server of this.#servers) await server.close();
    await this.redis.stop();
    await Deno.remove(this.dir, { recursive: true });
  }

  /** A new data directory holding the first instance's server key, if there is one yet. */
  async #dataDir(): Promise<string> {
    const dataDir = join(this.dir, `instance-${++this.#count}`);
    await Deno.mkdir(dataDir);
    if (this.#count > 1) {
      await Deno.copyFile(
        join(this.dir, "instance-1", SERVER_IDENTITY_FILE),
        join(dataDir, SERVER_IDENTITY_FILE),
      );
    }
    return dataDir;
  }
}

/**
 * Runs `fn` with a fresh Redis; stops every instance and Redis after.
 *
 * @param fn the test
 */
export async function withRedisInstances(
  fn: (cluster: RedisInstances) => Promise<void>,
): Promise<void> {
  const cluster = await RedisInstances.start();
  try {
    await fn(cluster);
  } finally {
    await cluster.stop();
  }
}
