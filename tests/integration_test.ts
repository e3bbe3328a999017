import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import { join } from "@std/path";
import type { ClientEvent, CommandResult } from "../lib/client/client_event.ts";
import type { Via } from "../lib/client/server_session.ts";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { REGISTRY_FILE } from "../lib/io/registry_file.ts";
import { findIdentity, loadIdentities } from "../lib/io/identity_file.ts";
import { clientKeyPathBeside } from "../lib/io/client_key_file.ts";
import { type ServerConfig, ServerDriver } from "../lib/io/server_driver.ts";
import { saveUsers, UsersFile } from "../lib/io/users_file.ts";
import { hashPassword } from "../lib/server/password_hash.ts";
import type { ServerEvent } from "../lib/server/server_core.ts";
import { SealedUdp } from "./_sealed_wire.ts";

const HOST = "127.0.0.1";
const FAST_RETRY = { initialMs: 100, maxMs: 400, jitter: 0.2, giveUpMs: 3000 };

type ServerOptions = Partial<
  Pick<
    ServerConfig,
    "udpPort" | "auth" | "usersFile" | "leaseMs" | "maxAttempts" | "lockoutMs" | "storage"
  >
>;

interface ClientOptions {
  via?: Via;
  server?: ServerDriver;
  identityFile?: string;
  onEvent?: (event: ClientEvent) => void;
}

interface Harness {
  dataDir: string;
  events: ServerEvent[];
  start(options?: ServerOptions): Promise<ServerDriver>;
  client(name?: string, options?: Via | ClientOptions): Promise<ClientDriver>;
}

/** Runs `fn` with a temp data dir; closes every server and client it opened. */
async function withHarness(fn: (h: Harness) => Promise<void>): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "switchboard_integration_" });
  const servers: ServerDriver[] = [];
  const clients: ClientDriver[] = [];
  const events: ServerEvent[] = [];
  const harness: Harness = {
    dataDir,
    events,
    async start(options = {}) {
      const server = await ServerDriver.start({
        host: HOST,
        udpPort: 0,
        tcpPort: 0,
        dataDir,
        version: "0.0.0-test",
        onEvent: (event) => events.push(event),
        ...options,
      });
      servers.push(server);
      return server;
    },
    async client(name, options = {}) {
      const o = typeof options === "string" ? { via: options } : options;
      const server = o.server ?? servers.at(-1);
      if (server === undefined) throw new Error("start a server first");
      const client = await ClientDriver.open({
        serverHost: HOST,
        serverPort: server.udpPort,
        udpPort: 0,
        tcpPort: 5001,
        name,
        via: o.via ?? "udp",
        retry: FAST_RETRY,
        identityFile: o.identityFile,
        keyFile: o.identityFile === undefined ? undefined : clientKeyPathBeside(o.identityFile),
        onEvent: o.onEvent,
      });
      clients.push(client);
      return client;
    },
  };
  try {
    await fn(harness);
  } finally {
    for (const client of clients) await client.close();
    for (const server of servers) await server.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

/** Waits until `condition` holds, checking every 10 ms, for at most `ms`. */
async function waitFor(condition: () => boolean, what: string, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Writes `size` random bytes to a new file in `dir` and returns its path and bytes. */
async function randomFile(dir: string, name: string, size: number) {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
  const path = join(dir, name);
  await Deno.writeFile(path, bytes);
  return { path, bytes };
}

type Ok = Extract<CommandResult, { ok: true }>;
type Failure = Extract<CommandResult, { ok: false }>;

function ok(result: CommandResult): Ok {
  if (!result.ok) throw new Error(`${result.command} failed: ${result.error}`);
  return result;
}

/** The facts of a successful `command`; anything else fails the test. */
function as<C extends Ok["command"]>(
  result: CommandResult,
  command: C,
): Extract<Ok, { command: C }> {
  const r = ok(result);
  if (r.command !== command) throw new Error(`expected ${command}, got ${r.command}`);
  return r as Extract<Ok, { command: C }>;
}

function failure(result: CommandResult): Failure {
  if (result.ok) throw new Error(`${result.command} should have failed`);
  return result;
}

async function readRegistryFile(dataDir: string): Promise<Record<string, Record<string, unknown>>> {
  return JSON.parse(await Deno.readTextFile(join(dataDir, REGISTRY_FILE)));
}

Deno.test("ServerDriver and ClientDriver run hello, register, tcp and deregister", async () => {
  await withHarness(async (h) => {
    const server = await h.start();
    const alice = await h.client("Alice Smith");

    const hello = as(await alice.run({ kind: "hello" }), "hello");
    assertEquals(hello.serverTcpPort, server.tcpPort);
    assertEquals(hello.serverVersion, "0.0.0-test");
    assertEquals(hello.auth, "open");
    assertEquals(hello.leaseMs, 30_000);
    assertEquals(alice.core.serverTcpPort, server.tcpPort);

    ok(await alice.run({ kind: "register" }));
    assertEquals(alice.core.loggedInAs, "Alice Smith");
    assertEquals(server.core.sessions.byName("alice smith")?.udpPort, alice.udpPort);
    const record = server.core.registry.get("alice smith");
    assertEquals(record?.ip, HOST);
    assertEquals(record?.udpPort, alice.udpPort);
    assertEquals(record?.tcpPort, 5001);

    as(await alice.run({ kind: "tcp", text: "hello over TCP" }), "tcp");
    const text = h.events.find((e) => e.kind === "text");
    if (text?.kind !== "text") throw new Error("the server saw no text");
    assertEquals(text.text, "hello over TCP");
    assertEquals(text.verified, true);
    assertEquals(text.name, "Alice Smith");
    assertEquals(text.from.transport, "tcp");
    assertEquals(server.connectionCount, 1);

    ok(await alice.run({ kind: "deregister" }));
    assertEquals(alice.core.loggedInAs, undefined);
    assertEquals(server.core.registry.size, 0);
    assertEquals(server.core.sessions.size, 0, "deregister ends the session");
    assertEquals(await readRegistryFile(h.dataDir), {});
    assertEquals(
      h.events.map((e) => e.kind).filter((k) => k !== "text" && k !== "active"),
      ["registered", "logged_in", "deregistered", "logged_out"],
    );
  });
});

Deno.test("ServerDriver refuses a second client with the same name as name_taken", async () => {
  await withHarness(async (h) => {
    const server = await h.start();
    const alice = await h.client("Alice");
    const impostor = await h.client("ALICE");
    ok(await alice.run({ kind: "register" }));
    const refused = failure(await impostor.run({ kind: "register" }));
    assertEquals(refused.code, "name_taken");
    assertStringIncludes(refused.error, "ALICE");
    assertEquals(impostor.core.loggedInAs, undefined);
    assertEquals(server.core.registry.size, 1);
    assertEquals(server.core.registry.get("alice")?.udpPort, alice.udpPort);

    // The impostor's text is acknowledged but not verified.
    ok(await impostor.run({ kind: "hello" }));
    ok(await impostor.run({ kind: "tcp", text: "I am Alice" }));
    const text = h.events.find((e) => e.kind === "text");
    if (text?.kind !== "text") throw new Error("the server saw no text");
    assertEquals(text.verified, false);
  });
});

Deno.test("ServerDriver registers a client over TCP with its declared UDP port", async () => {
  await withHarness(async (h) => {
    const server = await h.start();
    const bob = await h.client("Bob", "tcp");
    ok(await bob.run({ kind: "hello" }));
    ok(await bob.run({ kind: "register" }));
    const record = server.core.registry.get("bob");
    assertEquals(record?.udpPort, bob.udpPort);
    const registered = h.events.find((e) => e.kind === "registered");
    if (registered?.kind !== "registered") throw new Error("no registered event");
    assertEquals(registered.transport, "tcp");
    // The handshake's initiation and the keepalive that confirms its keys, then the request.
    assertEquals(server.traffic.framesIn, 3);
    assertEquals(server.traffic.framesOut, 1);

    ok(await bob.run({ kind: "deregister" }));
    assertEquals(server.core.registry.size, 0);
  });
});

Deno.test("ServerDriver leaves the registry file on disk after close", async () => {
  await withHarness(async (h) => {
    const server = await h.start();
    const carol = await h.client("Carol");
    const dave = await h.client("Dave");
    ok(await carol.run({ kind: "register" }));
    ok(await dave.run({ kind: "register" }));
    await server.close();
    assert(!server.core.hasUnsavedChanges);
    const file = await readRegistryFile(h.dataDir);
    assertEquals(Object.keys(file).sort(), ["Carol", "Dave"]);
    assertEquals(file.Carol.ip, HOST);
    assertEquals(file.Carol.udp_port, carol.udpPort);
    assertEquals(file.Carol.tcp_port, 5001);
    assertMatch(String(file.Carol.public_key), /^[0-9a-f]{64}$/);
    assertEquals(file.Carol.key_sha256, "");
    assertMatch(String(file.Carol.registered_at), /^\d{4}-\d\d-\d\dT/);
    if (Deno.build.os !== "windows") {
      const mode = (await Deno.stat(join(h.dataDir, REGISTRY_FILE))).mode!;
      assertEquals(mode & 0o077, 0, "the registry is private to its owner");
    }
  });
});

Deno.test("ServerDriver.start() keeps registrations across a restart; the saved key logs in", async () => {
  await withHarness(async (h) => {
    const identityFile = join(h.dataDir, "client", "identities.json");
    const first = await h.start();
    const udpPort = first.udpPort;
    const erin = await h.client("Erin", { identityFile });
    ok(await erin.run({ kind: "hello" }));
    ok(await erin.run({ kind: "register" }));
    await first.close();

    // Same data dir, same UDP port, so the saved identity's server still matches.
    const second = await h.start({ udpPort });
    assertEquals(second.core.registry.get("erin")?.udpPort, erin.udpPort);
    assertEquals(second.core.sessions.size, 0, "sessions do not survive a restart");

    const other = await h.client("erin");
    const refused = failure(await other.run({ kind: "register" }));
    assertEquals(refused.code, "name_taken");

    const saved = findIdentity(await loadIdentities(identityFile), `${HOST}:${udpPort}`, "Erin");
    if (saved === undefined) throw new Error("no identity was saved for Erin");
    assertEquals(saved.key, undefined, "no secret is saved: the key pair is the identity");
    // Another client's key pair does not log in as Erin, whatever secret it sends.
    const wrong = failure(
      await other.run({ kind: "login", name: "Erin", secret: new Uint8Array(16) }),
    );
    assertEquals(wrong.code, "login_failed");
    // A client with Erin's key file does, with no secret at all.
    const again = await h.client("erin", { identityFile });
    ok(await again.run({ kind: "login", name: "Erin", secret: new Uint8Array(0) }));
    assertEquals(again.core.loggedInAs, "Erin");
    ok(await again.run({ kind: "deregister" }));
    assertEquals(second.core.registry.size, 0);
    assertEquals(await readRegistryFile(h.dataDir), {});
  });
});

Deno.test("ClientDriver fails a request when nobody answers", async () => {
  await withHarness(async (h) => {
    const server = await h.start();
    const udpPort = server.udpPort;
    await server.close();
    const client = await ClientDriver.open({
      serverHost: HOST,
      serverPort: udpPort,
      udpPort: 0,
      tcpPort: 5001,
      via: "udp",
      retry: { initialMs: 20, maxMs: 40, jitter: 0, giveUpMs: 150 },
    });
    try {
      const result = failure(await client.run({ kind: "hello" }));
      assertStringIncludes(result.error, "did not answer within 0.2 s");
    } finally {
      await client.close();
    }
    assert(h.events.length === 0);
  });
});

// BUG (reported, not fixed here): ServerDriver.close() awaits only the persist
// promise it sees when called. A registration group-committed behind an
// in-flight write is chained onto a newer promise by the first write's
// completion, so close() returns while that second write is still running:
// the registry is not flushed at shutdown and file ops leak past close().
Deno.test({
  name: "ServerDriver.close() flushes a group-committed registration",
  ignore: false,
  fn: async () => {
    await withHarness(async (h) => {
      const server = await h.start();
      const socket = new SealedUdp(HOST, server.udpPort);
      try {
        for (const [i, name] of ["Alice", "Bob", "Carol"].entries()) {
          await socket.send({
            type: "register",
            reqId: 1,
            client: `000000000000000${i}`,
            name,
            udpPort: 0,
            tcpPort: 5001,
          });
        }
        while (server.core.registry.size < 3) await new Promise((r) => setTimeout(r, 1));
        await server.close();
        assert(!server.core.hasUnsavedChanges, "close() returned with unsaved changes");
        assertEquals(Object.keys(await readRegistryFile(h.dataDir)).sort(), [
          "Alice",
          "Bob",
          "Carol",
        ]);
      } finally {
        await socket.close();
      }
    });
  },
});

Deno.test("ServerDriver lists, looks up, tells watchers and logs out", async () => {
  await withHarness(async (h) => {
    const server = await h.start();
    const news: ClientEvent[] = [];
    const alice = await h.client("Alice", { onEvent: (event) => news.push(event) });
    const bob = await h.client("Bob");
    for (const client of [alice, bob]) {
      ok(await client.run({ kind: "hello" }));
      ok(await client.run({ kind: "register" }));
    }
    const list = as(await alice.run({ kind: "list" }), "list");
    const clients = list.clients;
    assertEquals(clients.map((c) => [c.name, c.ip, c.udpPort]), [
      ["Alice", HOST, alice.udpPort],
      ["Bob", HOST, bob.udpPort],
    ]);

    const found = as(await alice.run({ kind: "lookup", name: "BOB" }), "lookup");
    assertEquals(found.client.udpPort, bob.udpPort);
    assertEquals(failure(await alice.run({ kind: "lookup", name: "Nobody" })).code, "not_online");

    ok(await alice.run({ kind: "watch", on: true }));
    const carol = await h.client("Carol");
    ok(await carol.run({ kind: "hello" }));
    ok(await carol.run({ kind: "register" }));
    await waitFor(() => news.some((e) => e.kind === "joined"), "Carol's join");

    ok(await bob.run({ kind: "logout" }));
    assertEquals(bob.core.loggedInAs, undefined);
    assertEquals(server.core.sessions.byName("Bob"), undefined);
    assertEquals(server.core.registry.get("Bob")?.name, "Bob", "logout keeps the identity");
    await waitFor(() => news.some((e) => e.kind === "left"), "Bob's leave");
    assertEquals(
      news.map((e) => [e.kind, "client" in e && e.client.name]),
      [["joined", "Carol"], ["left", "Bob"]],
    );
    assertEquals(failure(await alice.run({ kind: "lookup", name: "Bob" })).code, "not_online");
    const after = as(await alice.run({ kind: "list" }), "list");
    assertEquals(after.clients.map((c) => c.name), [
      "Alice",
      "Carol",
    ]);
    assertEquals(failure(await bob.run({ kind: "list" })).code, "not_logged_in");
    const loggedOut = h.events.find((e) => e.kind === "logged_out");
    assertEquals(loggedOut?.kind === "logged_out" && [loggedOut.name, loggedOut.why], [
      "Bob",
      "exit",
    ]);
  });
});

Deno.test("ClientDriver logs in with the key another client saved and replaces it", async () => {
  await withHarness(async (h) => {
    const server = await h.start();
    const identityFile = join(h.dataDir, "client", "identities.json");
    const ended: ClientEvent[] = [];
    const first = await h.client("Alice", {
      identityFile,
      onEvent: (event) => ended.push(event),
    });
    ok(await first.run({ kind: "hello" }));
    ok(await first.run({ kind: "register" }));
    const identities = await loadIdentities(identityFile);
    assertEquals(identities.map((i) => [i.server, i.name]), [[
      `${HOST}:${server.udpPort}`,
      "Alice",
    ]]);
    if (Deno.build.os !== "windows") {
      assertEquals(
        (await Deno.stat(identityFile)).mode! & 0o077,
        0,
        "the identity file is private",
      );
    }

    const second = await h.client(undefined, { identityFile });
    ok(await second.run({ kind: "hello" }));
    const login = as(
      await second.run({ kind: "login", name: "Alice", secret: new Uint8Array(0) }),
      "login",
    );
    assertEquals(login.replaced, true);
    assertEquals(second.core.loggedInAs, "Alice");
    assertEquals(server.core.sessions.size, 1);
    assertEquals(server.core.sessions.byName("alice")?.udpPort, second.udpPort);

    await waitFor(() => ended.some((e) => e.kind === "session_ended"), "the older session's end");
    assertEquals(ended.map((e) => [e.kind, "reason" in e && e.reason]), [[
      "session_ended",
      "replaced",
    ]]);
    assertEquals(first.core.loggedInAs, undefined);
    assertEquals(failure(await first.run({ kind: "list" })).code, "not_logged_in");
    const loggedIn = h.events.filter((e) => e.kind === "logged_in");
    assertEquals(loggedIn.map((e) => e.kind === "logged_in" && e.replaced), [false, true]);
  });
});

Deno.test("ClientDriver uploads a 3 MB file over TCP, downloads it intact and deletes it", async () => {
  await withHarness(async (h) => {
    const server = await h.start();
    const progress: string[] = [];
    const alice = await ClientDriver.open({
      serverHost: HOST,
      serverPort: server.udpPort,
      udpPort: 0,
      tcpPort: 5001,
      name: "Alice",
      via: "udp",
      retry: FAST_RETRY,
      onProgress: (p) => progress.push(p.stage),
    });
    try {
      ok(await alice.run({ kind: "hello" }));
      assertEquals(failure(await alice.upload("/nonexistent/file", "x.bin")).code, "file_error");
      ok(await alice.run({ kind: "register" }));
      const size = 3 * 1024 * 1024 + 17;
      const { path, bytes } = await randomFile(h.dataDir, "upload.bin", size);

      const uploaded = ok(await alice.upload(path, "blob.bin"));
      assertEquals(uploaded, { ok: true, command: "upload", name: "blob.bin", size });
      assert(progress.includes("hash") && progress.includes("upload"));
      const stored = h.events.find((e) => e.kind === "file_stored");
      assertEquals(stored?.kind === "file_stored" && [stored.user, stored.name, stored.size], [
        "Alice",
        "blob.bin",
        size,
      ]);

      const files = as(await alice.run({ kind: "files" }), "files");
      const listed = files.files;
      assertEquals(listed.map((f) => [f.name, f.size]), [["blob.bin", size]]);
      assertMatch(listed[0].sha256, /^[0-9a-f]{64}$/);
      assertEquals(files.usedBytes, size);

      const dest = join(h.dataDir, "downloads", "copy.bin");
      const downloaded = as(await alice.download("BLOB.BIN", dest), "download");
      assertEquals(downloaded.size, size);
      assertEquals(downloaded.sha256, listed[0].sha256);
      assertEquals(downloaded.dest, dest);
      const copy = await Deno.readFile(dest);
      assertEquals(copy.length, bytes.length);
      assert(copy.every((b, i) => b === bytes[i]), "the downloaded bytes differ");
      assert(progress.includes("download"));
      await assertRejects(() => Deno.stat(`${dest}.part`), Deno.errors.NotFound);

      // An empty file goes both ways too.
      const none = await randomFile(h.dataDir, "empty.txt", 0);
      assertEquals(as(await alice.upload(none.path, "empty.txt"), "upload").size, 0);
      const emptyCopy = join(h.dataDir, "downloads", "empty.txt");
      ok(await alice.download("empty.txt", emptyCopy));
      assertEquals((await Deno.readFile(emptyCopy)).length, 0);
      ok(await alice.run({ kind: "delete", name: "empty.txt" }));

      ok(await alice.run({ kind: "delete", name: "blob.bin" }));
      const empty = as(await alice.run({ kind: "files" }), "files");
      assertEquals(empty.files, []);
      assertEquals(empty.usedBytes, 0);
      const missing = failure(await alice.download("blob.bin", join(h.dataDir, "gone.bin")));
      assertEquals(missing.code, "file_not_found");
      assertEquals(
        failure(await alice.run({ kind: "delete", name: "blob.bin" })).code,
        "file_not_found",
      );
    } finally {
      await alice.close();
    }
  });
});

Deno.test("ServerDriver refuses uploads over the quota or the file size limit", async () => {
  await withHarness(async (h) => {
    const MIB = 1024 * 1024;
    await h.start({ storage: { maxFileSize: MIB, quota: 1.5 * MIB, maxFiles: 2 } });
    const bob = await h.client("Bob");
    ok(await bob.run({ kind: "hello" }));
    ok(await bob.run({ kind: "register" }));
    const one = await randomFile(h.dataDir, "one.bin", MIB);
    const big = await randomFile(h.dataDir, "big.bin", MIB + 1);
    const small = await randomFile(h.dataDir, "small.bin", 1000);

    ok(await bob.upload(one.path, "one.bin"));
    const tooLarge = failure(await bob.upload(big.path, "big.bin"));
    assertEquals(tooLarge.code, "file_too_large");
    const overQuota = failure(await bob.upload(one.path, "two.bin"));
    assertEquals(overQuota.code, "quota_exceeded");
    assertStringIncludes(overQuota.error, "quota");
    // Replacing a file counts its old size out.
    ok(await bob.upload(one.path, "one.bin"));
    ok(await bob.upload(small.path, "small.bin"));
    const tooMany = failure(await bob.upload(small.path, "third.bin"));
    assertEquals(tooMany.code, "quota_exceeded");
    assertStringIncludes(tooMany.error, "2 files");

    // The refused uploads' data, already streamed, was not stored.
    const files = as(await bob.run({ kind: "files" }), "files");
    assertEquals(files.files.map((f) => f.name), [
      "one.bin",
      "small.bin",
    ]);
    assertEquals(files.usedBytes, MIB + 1000);
    assertEquals(files.quotaBytes, 1.5 * MIB);
  });
});

Deno.test("ServerDriver drops a client that stops sending heartbeats after its lease", async () => {
  await withHarness(async (h) => {
    const server = await h.start({ leaseMs: 1500 });
    const alive = await h.client("Alive");
    ok(await alive.run({ kind: "hello" }));
    ok(await alive.run({ kind: "register" }));
    // A "client" that registers and then goes silent, as after kill -9.
    const socket = new SealedUdp(HOST, server.udpPort);
    try {
      await socket.send({
        type: "register",
        reqId: 1,
        client: "00000000000000aa",
        name: "Silent",
        udpPort: 0,
        tcpPort: 5001,
      });
      await waitFor(() => server.core.sessions.byName("Silent") !== undefined, "Silent's login");
      const since = Date.now();
      await waitFor(() => server.core.sessions.byName("Silent") === undefined, "Silent's lease");
      assert(Date.now() - since >= 1200, "the session ended before its lease");
      const gone = h.events.find((e) => e.kind === "logged_out");
      assertEquals(gone?.kind === "logged_out" && [gone.name, gone.why], ["Silent", "lease"]);
      // Heartbeats every lease/3 keep the live client in.
      await new Promise((resolve) => setTimeout(resolve, 2000));
      assertEquals(server.core.sessions.byName("Alive")?.udpPort, alive.udpPort);
      assertEquals(alive.core.loggedInAs, "Alive");
    } finally {
      await socket.close();
    }
  });
});

Deno.test("ServerDriver checks passwords from the users file and locks a name out", async () => {
  await withHarness(async (h) => {
    const usersFile = join(h.dataDir, "users.json");
    const passwordHash = await hashPassword("correct horse battery", { iterations: 1000 });
    await saveUsers(
      usersFile,
      new UsersFile([{ name: "Dana", passwordHash, createdAt: new Date().toISOString() }]),
    );
    await h.start({ auth: "password", usersFile, maxAttempts: 2, lockoutMs: 1500 });
    const dana = await h.client("Dana");
    const hello = as(await dana.run({ kind: "hello" }), "hello");
    assertEquals(hello.auth, "password");
    assertEquals(failure(await dana.run({ kind: "register" })).code, "not_allowed");

    const secret = (text: string) => new TextEncoder().encode(text);
    const first = failure(await dana.run({ kind: "login", name: "Dana", secret: secret("nope") }));
    assertEquals(first.code, "login_failed");
    assertStringIncludes(first.error, "1 attempt left");
    const second = failure(await dana.run({ kind: "login", name: "dana", secret: secret("no") }));
    assertEquals(second.code, "locked_out");
    const locked = failure(
      await dana.run({ kind: "login", name: "Dana", secret: secret("correct horse battery") }),
    );
    assertEquals(locked.code, "locked_out", "the right password does not open a locked name");
    await new Promise((resolve) => setTimeout(resolve, 1600));
    ok(await dana.run({ kind: "login", name: "Dana", secret: secret("correct horse battery") }));
    assertEquals(dana.core.loggedInAs, "Dana");
    assertEquals(failure(await dana.run({ kind: "deregister" })).code, "not_allowed");
  });
});

Deno.test("ClientDriver logs in again by itself when the server restarts", async () => {
  await withHarness(async (h) => {
    const first = await h.start({ leaseMs: 1500 });
    const udpPort = first.udpPort;
    const events: ClientEvent[] = [];
    const frank = await h.client("Frank", { onEvent: (event) => events.push(event) });
    ok(await frank.run({ kind: "hello" }));
    ok(await frank.run({ kind: "register" }));
    ok(await frank.run({ kind: "watch", on: true }));
    await first.close();
    const second = await h.start({ udpPort, leaseMs: 1500 });
    await waitFor(
      () => events.some((e) => e.kind === "logged_in_again"),
      "the automatic login",
      5000,
    );
    assertEquals(frank.core.loggedInAs, "Frank");
    await waitFor(() => second.core.sessions.byName("Frank")?.watching === true, "the re-watch");
    assertEquals(second.core.sessions.byName("Frank")?.udpPort, frank.udpPort);
    const loggedIn = h.events.filter((e) => e.kind === "logged_in");
    assertEquals(loggedIn.length, 2, "once on each server");
  });
});
