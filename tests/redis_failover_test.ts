/**
 * Client failover between server instances on one Redis (a real
 * `redis-server`): a client given two instances moves to the other when its
 * instance is killed -9, handshakes with the other (which shares the server
 * key), logs in again under the same name, and a watcher never sees it leave.
 */
import { assert, assertEquals } from "@std/assert";
import type { ClientEvent } from "../lib/client/client_event.ts";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { ServerDriver } from "../lib/io/server_driver.ts";
import { SERVER_IDENTITY_FILE } from "../lib/io/server_identity_file.ts";
import { redisUnavailable, TestRedis } from "../scripts/_redis_server.ts";
import { CONFIG_PATH, readUdpPort, SERVER_PATH, withTimeout } from "./_processes.ts";

if (redisUnavailable !== undefined) {
  console.log(`redis_failover_test: skipped: ${redisUnavailable}`);
}

const HOST = "127.0.0.1";
const LEASE_S = 6;
const FAST_RETRY = { initialMs: 100, maxMs: 400, jitter: 0.2, giveUpMs: 10_000 };

async function waitFor(condition: () => boolean, what: string, ms = 15_000): Promise<void> {
  const until = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

Deno.test({
  name:
    "ClientDriver with two instances moves when its instance is killed -9, and nobody sees it leave",
  ignore: redisUnavailable !== undefined,
  async fn() {
    const redis = await TestRedis.start();
    const dir = await Deno.makeTempDir({ prefix: "switchboard_failover_" });
    const b = await ServerDriver.start({
      host: HOST,
      udpPort: 0,
      tcpPort: 0,
      dataDir: `${dir}/b`,
      version: "0.0.0-test",
      store: redis.url,
      leaseMs: LEASE_S * 1000,
    });
    // Instances of one service share one server key (the client pins it).
    await Deno.mkdir(`${dir}/a`);
    await Deno.copyFile(`${dir}/b/${SERVER_IDENTITY_FILE}`, `${dir}/a/${SERVER_IDENTITY_FILE}`);
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
        `${dir}/a`,
        "--log-dir",
        `${dir}/logs`,
        "--lease",
        String(LEASE_S),
        "--store",
        redis.url,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const clients: ClientDriver[] = [];
    try {
      const aPort = await withTimeout(readUdpPort(child.stdout), 20_000, "instance A to start");
      const watcherEvents: ClientEvent[] = [];
      const watcher = await ClientDriver.open({
        serverHost: HOST,
        serverPort: b.udpPort,
        udpPort: 0,
        tcpPort: 5001,
        name: "watcher",
        via: "udp",
        retry: FAST_RETRY,
        onEvent: (event) => watcherEvents.push(event),
      });
      clients.push(watcher);
      assert((await watcher.run({ kind: "hello" })).ok); // learns the lease
      assert((await watcher.run({ kind: "register" })).ok);
      assert((await watcher.run({ kind: "watch", on: true })).ok);
      const roamerEvents: ClientEvent[] = [];
      const roamer = await ClientDriver.open({
        serverHost: HOST,
        serverPort: aPort,
        failover: [{ host: HOST, port: b.udpPort }],
        udpPort: 0,
        tcpPort: 5002,
        name: "roamer",
        via: "udp",
        retry: FAST_RETRY,
        onEvent: (event) => roamerEvents.push(event),
      });
      clients.push(roamer);
      assert((await roamer.run({ kind: "hello" })).ok);
      assert((await roamer.run({ kind: "register" })).ok);
      const seen = (kind: string) =>
        watcherEvents.some((e) => e.kind === kind && "client" in e && e.client.name === "roamer");
      await waitFor(() => seen("joined"), "the watcher to see roamer join");
      child.kill("SIGKILL");
      await waitFor(
        () => roamerEvents.some((e) => e.kind === "logged_in_again"),
        "roamer to log in again on B",
      );
      assertEquals(b.core.sessions.byName("roamer")?.name, "roamer");
      // Well past the lease roamer had on A: nobody saw it leave.
      await new Promise((resolve) => setTimeout(resolve, LEASE_S * 1000));
      assertEquals(seen("left"), false, "the watcher saw roamer leave");
      const lookup = await watcher.run({ kind: "lookup", name: "roamer" });
      assert(lookup.ok, JSON.stringify(lookup));
    } finally {
      for (const client of clients) await client.close();
      try {
        child.kill("SIGKILL");
      } catch {
        // already dead
      }
      await child.status;
      child.stdin.close();
      await b.close();
      await redis.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
