/**
 * Presence shared through Redis between server instances, against a real
 * `redis-server`: joins on one instance reach watchers on another, lookups
 * and lists span instances, and a client that stops (or whose instance is
 * killed) leaves every list within its lease plus the sweep.
 */
import { assert, assertEquals } from "@std/assert";
import { ServerDriver } from "../lib/io/server_driver.ts";
import { join } from "@std/path";
import { ServerGuard } from "../lib/client/server_guard.ts";
import { generateKeyPair } from "../lib/crypto/key_pair.ts";
import { SERVER_IDENTITY_FILE } from "../lib/io/server_identity_file.ts";
import { cryptoRandom } from "../lib/random.ts";
import {
  type Message,
  type MessageOf,
  PRESENCE_CHANGES,
  type Request,
} from "../lib/wire/messages.ts";
import { redisUnavailable, TestRedis } from "../scripts/_redis_server.ts";
import { CONFIG_PATH, readUdpPort, SERVER_PATH, withTimeout } from "./_processes.ts";

if (redisUnavailable !== undefined) {
  console.log(`redis_presence_test: skipped: ${redisUnavailable}`);
}

const HOST = "127.0.0.1";
const ignore = redisUnavailable !== undefined;
const LEASE_MS = 1000;

type Presence = MessageOf<"presence">;
type Body = Request extends infer R ? R extends Request ? Omit<R, "reqId" | "client"> : never
  : never;

/**
 * A bare client on one UDP socket, speaking version 3 through the client's
 * `ServerGuard`: requests with retransmission, presence news recorded and
 * acknowledged.
 */
class RawClient {
  readonly news: { at: number; message: Presence }[] = [];
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
    this.#socket = Deno.listenDatagram({ transport: "udp", hostname: HOST, port: 0 });
    this.port = (this.#socket.addr as Deno.NetAddr).port;
    this.#server = { transport: "udp", hostname: HOST, port: serverPort };
    this.#loop = this.#read();
  }

  /** Points later requests at another instance (same key), handshaking with it. */
  moveTo(serverPort: number): void {
    this.#server = { ...this.#server, port: serverPort };
    for (const bytes of this.#guard.moved(performance.now())) this.#send(bytes);
  }

  async request(body: Body, timeoutMs = 3000): Promise<Message | undefined> {
    const reqId = this.#reqId++;
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
      const input = this.#guard.incoming(data.slice(), performance.now());
      for (const bytes of input.send) this.#send(bytes);
      for (const message of input.messages) {
        if (message.type === "presence") {
          this.news.push({ at: performance.now(), message });
          const ack = { type: "presence_ack", token: message.token, seq: message.seq } as const;
          for (const bytes of this.#guard.outgoing(ack, performance.now(), 1)) this.#send(bytes);
        } else if ("reqId" in message) {
          this.#waiting.get(message.reqId)?.(message);
        }
      }
    }
  }
}

async function waitFor(condition: () => boolean, what: string, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

function heard(client: RawClient, name: string, change: number) {
  return client.news.find((n) => n.message.name === name && n.message.change === change);
}

async function withInstances(
  fn: (redis: TestRedis, start: () => Promise<ServerDriver>, clients: RawClient[]) => Promise<void>,
  leaseMs = LEASE_MS,
): Promise<void> {
  const redis = await TestRedis.start();
  const servers: ServerDriver[] = [];
  const dirs: string[] = [];
  const clients: RawClient[] = [];
  try {
    await fn(redis, async () => {
      const dataDir = await Deno.makeTempDir({ prefix: "switchboard_presence_" });
      // Instances of one service share one server key (clients pin it).
      if (dirs.length > 0) {
        await Deno.copyFile(
          join(dirs[0], SERVER_IDENTITY_FILE),
          join(dataDir, SERVER_IDENTITY_FILE),
        );
      }
      dirs.push(dataDir);
      const server = await ServerDriver.start({
        host: HOST,
        udpPort: 0,
        tcpPort: 0,
        dataDir,
        version: "0.0.0-test",
        store: redis.url,
        leaseMs,
        limits: { rateLimit: 0, sessionRateLimit: 0, registerRate: 0 },
      });
      servers.push(server);
      return server;
    }, clients);
  } finally {
    for (const c of clients) await c.close();
    for (const s of servers) await s.close();
    await redis.stop();
    for (const dir of dirs) await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name:
    "A join made on B reaches a watcher on A within 100 ms (p99 of 100); lookups and lists span instances",
  ignore,
  async fn() {
    await withInstances(async (_redis, start, clients) => {
      const a = await start();
      const b = await start();
      const watcher = new RawClient(a.udpPort);
      clients.push(watcher);
      await watcher.register("watcher");
      assertEquals(
        (await watcher.request({ type: "watch", token: watcher.token, on: 1 }))?.type,
        "watch_ok",
      );
      // The watcher keeps its (short) lease while the joins come.
      const beat = setInterval(
        () => watcher.request({ type: "heartbeat", token: watcher.token }, 500),
        LEASE_MS / 4,
      );
      const delays: number[] = [];
      try {
        for (let i = 0; i < 100; i++) {
          const joiner = new RawClient(b.udpPort);
          clients.push(joiner);
          await joiner.register(`j${i}`);
          const answered = performance.now();
          await waitFor(
            () => heard(watcher, `j${i}`, PRESENCE_CHANGES.joined) !== undefined,
            `j${i}`,
          );
          delays.push(heard(watcher, `j${i}`, PRESENCE_CHANGES.joined)!.at - answered);
        }
      } finally {
        clearInterval(beat);
      }
      delays.sort((x, y) => x - y);
      assert(delays[98] < 100, `p99 ${delays[98].toFixed(1)} ms`);
      // A lookup on A finds a client of B, where B saw it.
      const found = await watcher.request({ type: "lookup", token: watcher.token, name: "j7" });
      assertEquals(found?.type, "lookup_ok", JSON.stringify(found));
      assertEquals((found as MessageOf<"lookup_ok">).udpPort, clients[8].port);
      // A's list holds both instances' clients.
      const page = await watcher.request({ type: "list", token: watcher.token, after: "" });
      assertEquals(page?.type, "list_page");
      assertEquals((page as MessageOf<"list_page">).total, 101);
    }, 30_000); // long leases: the joiners send no heartbeats
  },
});

Deno.test({
  name:
    "A client that stops on A leaves B's watcher within its lease + 250 ms; one that moves to B is never seen to leave",
  ignore,
  async fn() {
    await withInstances(async (_redis, start, clients) => {
      const a = await start();
      const b = await start();
      const watcher = new RawClient(b.udpPort);
      const quiet = new RawClient(a.udpPort);
      const mover = new RawClient(a.udpPort);
      clients.push(watcher, quiet, mover);
      await watcher.register("watcher");
      await watcher.request({ type: "watch", token: watcher.token, on: 1 });
      await mover.register("mover");
      await quiet.register("quiet");
      const lastHeard = performance.now();
      // The mover goes to B and logs in again before its lease runs out.
      mover.moveTo(b.udpPort);
      const login = await mover.request({
        type: "login",
        name: "mover",
        // Its channel's key is its identity: no secret (it kept its key pair moving).
        secret: new Uint8Array(0),
        udpPort: mover.port,
        tcpPort: 5001,
      });
      assertEquals(login?.type, "login_ok", JSON.stringify(login));
      const moverToken = (login as MessageOf<"login_ok">).token;
      const beat = setInterval(() => {
        mover.request({ type: "heartbeat", token: moverToken }, 500);
        watcher.request({ type: "heartbeat", token: watcher.token }, 500);
      }, LEASE_MS / 4);
      try {
        await waitFor(
          () => heard(watcher, "quiet", PRESENCE_CHANGES.left) !== undefined,
          "quiet leaves",
        );
        const left = heard(watcher, "quiet", PRESENCE_CHANGES.left)!.at - lastHeard;
        assert(left <= LEASE_MS + 250, `left after ${left.toFixed(0)} ms`);
        // Well past the mover's first lease, nobody saw it leave.
        await new Promise((resolve) => setTimeout(resolve, LEASE_MS));
        assertEquals(heard(watcher, "mover", PRESENCE_CHANGES.left), undefined);
        const found = await watcher.request({
          type: "lookup",
          token: watcher.token,
          name: "mover",
        });
        assertEquals(found?.type, "lookup_ok");
      } finally {
        clearInterval(beat);
      }
    });
  },
});

Deno.test({
  name:
    "An instance killed -9: its clients leave the other instance's list within their lease + 250 ms",
  ignore,
  async fn() {
    await withInstances(async (redis, start, clients) => {
      const b = await start();
      const dir = await Deno.makeTempDir({ prefix: "switchboard_presence_a_" });
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--config",
          CONFIG_PATH,
          SERVER_PATH,
          "--host",
          HOST,
          "--udp-port",
          "0",
          "--tcp-port",
          "0",
          "--data-dir",
          `${dir}/data`,
          "--log-dir",
          `${dir}/logs`,
          "--lease",
          String(LEASE_MS / 1000),
          "--store",
          redis.url,
        ],
        stdin: "piped",
        stdout: "piped",
        stderr: "null",
      }).spawn();
      try {
        const port = await withTimeout(readUdpPort(child.stdout), 20_000, "instance A to start");
        const watcher = new RawClient(b.udpPort);
        const onA = new RawClient(port);
        clients.push(watcher, onA);
        await watcher.register("watcher");
        await watcher.request({ type: "watch", token: watcher.token, on: 1 });
        await onA.register("doomed");
        await waitFor(
          () => heard(watcher, "doomed", PRESENCE_CHANGES.joined) !== undefined,
          "join",
        );
        const beat = performance.now();
        assertEquals(
          (await onA.request({ type: "heartbeat", token: onA.token }))?.type,
          "heartbeat_ok",
        );
        child.kill("SIGKILL");
        const keep = setInterval(
          () => watcher.request({ type: "heartbeat", token: watcher.token }, 500),
          LEASE_MS / 4,
        );
        try {
          await waitFor(
            () => heard(watcher, "doomed", PRESENCE_CHANGES.left) !== undefined,
            "leave",
          );
        } finally {
          clearInterval(keep);
        }
        const left = heard(watcher, "doomed", PRESENCE_CHANGES.left)!.at - beat;
        assert(left <= LEASE_MS + 250, `left after ${left.toFixed(0)} ms`);
      } finally {
        try {
          child.kill("SIGKILL");
        } catch {
          // already dead
        }
        await child.status;
        child.stdin.close();
        await Deno.remove(dir, { recursive: true });
      }
    });
  },
});
