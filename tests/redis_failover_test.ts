/**
 * Client failover between server instances on one Redis (a real
 * `redis-server`): a client given two instances moves to the other when its
 * instance is killed -9 or shuts down, handshakes with the other (which shares
 * the server key), whose instance takes its session over (same token, same
 * start time, open or password mode); a watcher sees neither a leave nor a
 * second join, and once the client exits it leaves the list at once. Its TCP
 * work (uploads) follows it to the other instance.
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import type { ClientEvent, CommandResult } from "../lib/client/client_event.ts";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { saveUsers, UsersFile } from "../lib/io/users_file.ts";
import { hashPassword } from "../lib/server/password_hash.ts";
import type { ServerEvent } from "../lib/server/server_event.ts";
import { redisUnavailable } from "../scripts/_redis_server.ts";
import {
  type ChildInstance,
  RawClient,
  REDIS_TEST_HOST as HOST,
  type RedisInstances,
  waitFor,
  withRedisInstances,
} from "./_redis.ts";
import { startClient, unusedUdpPort } from "./_processes.ts";

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
          () => b.core.sessions.byName("roamer") !== undefined,
          "roamer's session to move to B",
          15_000,
        );
        assert(roamerEvents.some((e) => e.kind === "server_moved"), JSON.stringify(roamerEvents));
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

const PASSWORD = "correct horse battery";

/** A watcher on C, and a roamer given A then C, logged in (A is a child process). */
async function roamOnto(
  cluster: RedisInstances,
  options: { password?: boolean } = {},
) {
  const passwordArgs: string[] = [];
  let usersFile: string | undefined;
  if (options.password) {
    const file = join(cluster.dir, "users.json");
    usersFile = file;
    const passwordHash = await hashPassword(PASSWORD, { iterations: 1000 });
    const createdAt = new Date().toISOString();
    await saveUsers(
      file,
      new UsersFile(
        ["roamer", "watcher"].map((name) => ({ name, passwordHash, createdAt })),
      ),
    );
    passwordArgs.push("--auth", "password", "--users", file);
  }
  const a: ChildInstance = await cluster.spawn(["--lease", String(LEASE_S), ...passwordArgs]);
  const onC: ServerEvent[] = [];
  const c = await cluster.instance({
    leaseMs: LEASE_S * 1000,
    onEvent: (event) => onC.push(event),
    ...(usersFile ? { auth: "password" as const, usersFile } : {}),
  });
  const clients: ClientDriver[] = [];
  const open = async (name: string, port: number, failover: number[], events: ClientEvent[]) => {
    const client = await ClientDriver.open({
      serverHost: HOST,
      serverPort: port,
      failover: failover.map((p) => ({ host: HOST, port: p })),
      udpPort: 0,
      tcpPort: 5001,
      name,
      via: "udp",
      retry: FAST_RETRY,
      onEvent: (event) => events.push(event),
    });
    clients.push(client);
    assert((await client.run({ kind: "hello" })).ok);
    const secret = new TextEncoder().encode(PASSWORD);
    const joined = options.password
      ? await client.run({ kind: "login", name, secret })
      : await client.run({ kind: "register" });
    assert(joined.ok, JSON.stringify(joined));
    return client;
  };
  const watcherEvents: ClientEvent[] = [];
  const watcher = await open("watcher", c.udpPort, [], watcherEvents);
  assert((await watcher.run({ kind: "watch", on: true })).ok);
  const roamerEvents: ClientEvent[] = [];
  const roamer = await open("roamer", a.udpPort, [c.udpPort], roamerEvents);
  const about = (kind: string) =>
    watcherEvents.filter((e) => e.kind === kind && "client" in e && e.client.name === "roamer");
  await waitFor(() => about("joined").length === 1, "the watcher to see roamer join", 15_000);
  return {
    a,
    c,
    onC,
    watcher,
    roamer,
    roamerEvents,
    about,
    close: async () => {
      for (const client of clients) await client.close();
    },
  };
}

/** The entry of `name` in a `list` result. */
function listed(result: CommandResult, name: string) {
  if (!result.ok || result.command !== "list") throw new Error(JSON.stringify(result));
  return result.clients.find((c) => c.name === name);
}

for (const mode of ["open", "password"] as const) {
  Deno.test({
    name: `ClientDriver with two instances (${mode} mode): after kill -9 a request in flight is ` +
      "answered by the other, under the same session, and nobody sees a leave or a second join",
    ignore: redisUnavailable !== undefined,
    fn: () =>
      withRedisInstances(async (cluster) => {
        const w = await roamOnto(cluster, { password: mode === "password" });
        try {
          const before = Date.now();
          await new Promise((resolve) => setTimeout(resolve, 1000));
          await w.a.kill();
          const list = await w.roamer.run({ kind: "list" });
          const entry = listed(list, "roamer");
          // Time online runs on from the login on A.
          const onlineMs = entry?.onlineMs ?? -1;
          assert(onlineMs >= 1000, `online ${onlineMs} ms after the move: ${JSON.stringify(list)}`);
          assertEquals(w.c.core.sessions.byName("roamer")?.name, "roamer");
          const status = await w.roamer.run({ kind: "status" });
          if (!status.ok || status.command !== "status") throw new Error(JSON.stringify(status));
          assertEquals(status.server, `${HOST}:${w.c.udpPort}`, "status names the instance in use");
          assertEquals(
            w.roamerEvents.filter((e) =>
              e.kind === "session_ended" || e.kind === "logged_in_again"
            ),
            [],
          );
          // Well past the lease roamer had on A.
          await new Promise((resolve) => setTimeout(resolve, LEASE_S * 1000));
          assertEquals(w.about("left"), [], "the watcher saw roamer leave");
          assertEquals(w.about("joined").length, 1, "the watcher saw roamer join again");
          const seen = listed(await w.watcher.run({ kind: "list" }), "roamer");
          assert(seen !== undefined && seen.onlineMs >= Date.now() - before - 500);
          // It exits: it leaves C's list at once, and the watcher sees it go.
          await w.roamer.close();
          await waitFor(
            () => w.about("left").length === 1,
            "the watcher to see roamer leave",
            LEASE_S * 1000 + 250,
          );
          assertEquals(listed(await w.watcher.run({ kind: "list" }), "roamer"), undefined);
        } finally {
          await w.close();
        }
      }),
  });
}

Deno.test({
  name: "ClientDriver with two instances moves when its instance shuts down gracefully " +
    "(SIGTERM), still logged in, and nobody sees it leave",
  ignore: redisUnavailable !== undefined,
  fn: () =>
    withRedisInstances(async (cluster) => {
      const w = await roamOnto(cluster);
      try {
        w.a.child.kill("SIGTERM");
        await w.a.child.status;
        const list = await w.roamer.run({ kind: "list" });
        assert(listed(list, "roamer") !== undefined, JSON.stringify(list));
        assertEquals(w.c.core.sessions.byName("roamer")?.name, "roamer");
        assertEquals(
          w.roamerEvents.filter((e) => e.kind === "session_ended" || e.kind === "logged_in_again"),
          [],
        );
        await new Promise((resolve) => setTimeout(resolve, LEASE_S * 1000));
        assertEquals(w.about("left"), [], "the watcher saw roamer leave");
        assertEquals(w.about("joined").length, 1, "the watcher saw roamer join again");
      } finally {
        await w.close();
      }
    }),
});

Deno.test({
  name: "ClientDriver whose first server is down connects to the next and names it in hello " +
    "and status",
  ignore: redisUnavailable !== undefined,
  fn: () =>
    withRedisInstances(async (cluster) => {
      const c = await cluster.instance();
      const events: ClientEvent[] = [];
      const client = await ClientDriver.open({
        serverHost: HOST,
        serverPort: unusedUdpPort(),
        failover: [{ host: HOST, port: c.udpPort }],
        udpPort: 0,
        tcpPort: 5001,
        via: "udp",
        retry: FAST_RETRY,
        onEvent: (event) => events.push(event),
      });
      try {
        const hello = await client.run({ kind: "hello" });
        if (!hello.ok || hello.command !== "hello") throw new Error(JSON.stringify(hello));
        assertEquals(hello.server, `${HOST}:${c.udpPort}`);
        const status = await client.run({ kind: "status" });
        if (!status.ok || status.command !== "status") throw new Error(JSON.stringify(status));
        assertEquals(status.server, `${HOST}:${c.udpPort}`);
        assertEquals(events.map((e) => e.kind), ["server_moved"]);
      } finally {
        await client.close();
      }
    }),
});

Deno.test({
  name: "client.ts watching on server.ts A, killed -9: what happened on B during its move (a " +
    "leave, a join) is shown once it watches on B",
  ignore: redisUnavailable !== undefined,
  fn: () =>
    withRedisInstances(async (cluster) => {
      // Found by black-box re-testing: news published while the watcher was moving was lost.
      const flags = ["--lease", String(LEASE_S), "--rate-limit", "0"];
      const a = await cluster.spawn(flags);
      const b = await cluster.spawn(flags);
      const cwd = join(cluster.dir, "watcher");
      await Deno.mkdir(cwd);
      const servers = `${HOST}:${a.udpPort},${HOST}:${b.udpPort}`;
      await using watcher = startClient(
        ["--json", "--server", servers, "--name", "Wendy", "--log-dir", join(cwd, "logs")],
        { cwd },
      );
      const leaver = new RawClient(b.udpPort);
      const joiner = new RawClient(b.udpPort);
      try {
        await watcher.write("register\nwatch\n");
        await watcher.waitForLine(/^\{"event":"result","command":"watch","ok":true/, 20_000);
        await leaver.register("leaver");
        await watcher.waitForLine(/^\{"event":"joined".*"leaver"/);
        const from = watcher.stdout.lines.length;
        await a.kill();
        // Before the watcher notices (its next heartbeat goes unanswered for 2 s): news on B.
        assertEquals(
          (await leaver.request({ type: "logout", token: leaver.token }))?.type,
          "logout_ok",
        );
        await joiner.register("joiner");
        const beat = setInterval(
          () => joiner.request({ type: "heartbeat", token: joiner.token }, 1000),
          1000,
        );
        try {
          await watcher.waitForLine(/^\{"event":"server_moved"/, 20_000, from);
          await watcher.waitForLine(/^\{"event":"left".*"leaver"/, 10_000, from);
          await watcher.waitForLine(/^\{"event":"joined".*"joiner"/, 10_000, from);
        } finally {
          clearInterval(beat);
        }
        const shown = watcher.stdout.lines.slice(from).filter((l) =>
          /"event":"(left|joined)"/.test(l)
        );
        assertEquals(shown.length, 2, shown.join("\n"));
      } finally {
        await leaver.close();
        await joiner.close();
      }
    }),
});
