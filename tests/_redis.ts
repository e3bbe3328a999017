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
import { ServerGuard } from "../lib/client/server_guard.ts";
import { generateKeyPair } from "../lib/crypto/key_pair.ts";
import { cryptoRandom } from "../lib/random.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import {
  type Message,
  MESSAGE_SCHEMAS,
  type MessageOf,
  type Request,
} from "../lib/wire/messages.ts";
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

  /** A new data directory holding the first instance's server keys, if there is one yet. */
  async #dataDir(): Promise<string> {
    const dataDir = join(this.dir, `instance-${++this.#count}`);
    await Deno.mkdir(dataDir);
    // Instances of one service share the key clients pin.
    for (const file of this.#count > 1 ? [SERVER_IDENTITY_FILE] : []) {
      await Deno.copyFile(join(this.dir, "instance-1", file), join(dataDir, file));
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

type Presence = MessageOf<"presence">;
/** A request without its ids (the client adds them). */
export type Body = Request extends infer R ? R extends Request ? Omit<R, "reqId" | "client"> : never
  : never;

/**
 * A bare client on one UDP socket, speaking version 3 through the client's
 * `ServerGuard`: requests with retransmission, presence news recorded and
 * acknowledged.
 */
export class RawClient {
  readonly news: { at: number; message: Presence }[] = [];
  /** Other messages the server pushed (sealed, answering no request): `introduction`, `session_ended`. */
  readonly pushes: Message[] = [];
  /** `relay` datagrams the server forwarded (they come in clear). */
  readonly relayed: MessageOf<"relay">[] = [];
  readonly port: number;
  token: Uint8Array = new Uint8Array(16);
  #socket: Deno.DatagramConn;
  #server: Deno.NetAddr;
  #guard = new ServerGuard({
    staticKeyPair: generateKeyPair(cryptoRandom),
    random: cryptoRandom,
    server: "the instances",
  });
  #waiting = new Map<number, (m: Message) => void>();
  #reqId = 1;
  #client = crypto.getRandomValues(new Uint8Array(8)).reduce(
    (s, b) => s + b.toString(16).padStart(2, "0"),
    "",
  );
  #loop: Promise<void>;
  #closed = false;

  constructor(serverPort: number) {
    this.#socket = Deno.listenDatagram({ transport: "udp", hostname: REDIS_TEST_HOST, port: 0 });
    this.port = (this.#socket.addr as Deno.NetAddr).port;
    this.#server = { transport: "udp", hostname: REDIS_TEST_HOST, port: serverPort };
    this.#loop = this.#read();
  }

  /** Points later requests at another instance (same key), handshaking with it. */
  moveTo(serverPort: number): void {
    this.#server = { ...this.#server, port: serverPort };
    for (const bytes of this.#guard.moved(performance.now(), `port ${serverPort}`)) {
      this.#send(bytes);
    }
  }

  /**
   * Sends a request, retransmitting every 200 ms, until its answer comes.
   *
   * @param body the request
   * @param timeoutMs when to give up (the answer is then undefined)
   * @param reqId the request id: a new one unless given (to send a request again)
   * @returns the answer
   */
  async request(body: Body, timeoutMs = 3000, reqId = this.#reqId++): Promise<Message | undefined> {
    const message = { ...body, reqId, client: this.#client } as Request;
    const { promise, resolve } = Promise.withResolvers<Message | undefined>();
    this.#waiting.set(reqId, resolve);
    const until = Date.now() + timeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let attempt = 0;
    const send = () => {
      if (Date.now() > until || this.#closed) return resolve(undefined);
      for (const bytes of this.#guard.outgoing(message, performance.now(), ++attempt)) {
        this.#send(bytes);
      }
      timer = setTimeout(send, 200);
    };
    send();
    try {
      return await promise;
    } finally {
      clearTimeout(timer);
      this.#waiting.delete(reqId);
    }
  }

  async register(name: string): Promise<MessageOf<"register_ok">> {
    const reply = await this.request({ type: "register", name, udpPort: this.port, tcpPort: 5001 });
    if (reply?.type !== "register_ok") {
      throw new Error(`register ${name}: ${JSON.stringify(reply)}`);
    }
    this.token = reply.token;
    return reply;
  }

  /** Sends a message in clear (a `relay` datagram: its payload is the peers' business). */
  sendClear(message: Message): void {
    this.#send(encodeMessage(message));
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#socket.close();
    await this.#loop;
    for (const resolve of this.#waiting.values()) resolve(undefined as never);
  }

  #send(bytes: Uint8Array): void {
    if (!this.#closed) this.#socket.send(bytes, this.#server).catch(() => {});
  }

  async #read(): Promise<void> {
    while (true) {
      let data: Uint8Array;
      try {
        [data] = await this.#socket.receive();
      } catch {
        return;
      }
      if (data[3] === MESSAGE_SCHEMAS.relay.code) {
        const message = decodeMessage(data);
        if (message.type === "relay") this.relayed.push(message);
        continue;
      }
      const input = this.#guard.incoming(data.slice(), performance.now());
      for (const bytes of input.send) this.#send(bytes);
      for (const message of input.messages) {
        if (message.type === "presence") {
          this.news.push({ at: performance.now(), message });
          const ack = { type: "presence_ack", token: message.token, seq: message.seq } as const;
          for (const bytes of this.#guard.outgoing(ack, performance.now(), 1)) this.#send(bytes);
        } else if ("reqId" in message) {
          this.#waiting.get(message.reqId)?.(message);
        } else {
          this.pushes.push(message);
        }
      }
    }
  }
}
