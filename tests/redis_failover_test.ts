/**
 * Client failover between server instances on one Redis (a real
 * `redis-server`): a client given two instances moves to the other when its
 * instance is killed -9, handshakes with the other (which shares the server
 * key), logs in again under the same name, and a watcher never sees it leave;
 * its TCP work (uploads) follows it to the other instance.
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import type { ClientEvent } from "../lib/client/client_event.ts";
import { ClientDriver } from "../lib/io/client_driver.ts";
import type { ServerEvent } from "../lib/server/server_event.ts";
import { redisUnavailable } from "../scripts/_redis_server.ts";
import { REDIS_TEST_HOST as HOST, waitFor, withRedisInstances } from "./_redis.ts";

if (redisUnavailable !== undefined) {
  console.log(`redis_failover_test: skipped: ${redisUnavailable}`);
}

const LEASE_S = 6;
const FAST_RETRY = { initialMs: 100, maxMs: 400, jitter: 0.2, giveUpMs: 10_000 };

Deno.test({
  name: "ClientDriver with two instances moves when its instance is killed -9, nobody sees it " +
    "leave, and its uploads follow it",
  ignore: redisUnavailable !== undefined,
  fn: () =>
    withRedisInstances(async (cluster) => {
      const a = await cluster.spawn(["--lease", String(LEASE_S)]);
      const onB: ServerEvent[] = [];
      const b = await cluster.instance({
        leaseMs: LEASE_S * 1000,
        onEvent: (event) => onB.push(event),
      });
      const clients: ClientDriver[] = [];
      try {
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
          serverPort: a.udpPort,
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
        const file = join(cluster.dir, "report.txt");
        await Deno.writeTextFile(file, "quarterly numbers\n");
        // Its TCP connection is to A now.
        const first = await roamer.upload(file, "on-a.txt");
        assert(first.ok, JSON.stringify(first));
        const seen = (kind: string) =>
          watcherEvents.some((e) => e.kind === kind && "client" in e && e.client.name === "roamer");
        await waitFor(() => seen("joined"), "the watcher to see roamer join", 15_000);
        await a.kill();
        await waitFor(
          () => roamerEvents.some((e) => e.kind === "logged_in_again"),
          "roamer to log in again on B",
          15_000,
        );
        assertEquals(b.core.sessions.byName("roamer")?.name, "roamer");
        // TCP follows: the upload goes to B, not to the dead A.
        await waitFor(() => roamer.core.serverTcpPort === b.tcpPort, "B's TCP port", 5000);
        const second = await roamer.upload(file, "on-b.txt");
        assert(second.ok, JSON.stringify(second));
        assert(onB.some((e) => e.kind === "file_stored" && e.name === "on-b.txt"));
        // Well past the lease roamer had on A: nobody saw it leave.
        await new Promise((resolve) => setTimeout(resolve, LEASE_S * 1000));
        assertEquals(seen("left"), false, "the watcher saw roamer leave");
        const lookup = await watcher.run({ kind: "lookup", name: "roamer" });
        assert(lookup.ok, JSON.stringify(lookup));
      } finally {
        for (const client of clients) await client.close();
      }
    }),
});
