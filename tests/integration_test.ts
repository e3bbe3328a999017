import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import type { CommandResult } from "../lib/client/client_core.ts";
import type { Via } from "../lib/client/server_session.ts";
import { ClientDriver } from "../lib/driver/client_driver.ts";
import { REGISTRY_FILE } from "../lib/driver/registry_file.ts";
import { ServerDriver } from "../lib/driver/server_driver.ts";
import type { ServerEvent } from "../lib/server/server_core.ts";
import { encodeMessage } from "../lib/wire/codec.ts";

const HOST = "127.0.0.1";

interface Harness {
  dataDir: string;
  events: ServerEvent[];
  start(options?: { udpPort?: number }): Promise<ServerDriver>;
  client(name?: string, via?: Via, server?: ServerDriver): Promise<ClientDriver>;
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
        udpPort: options.udpPort ?? 0,
        tcpPort: 0,
        dataDir,
        version: "0.0.0-test",
        onEvent: (event) => events.push(event),
      });
      servers.push(server);
      return server;
    },
    async client(name, via = "udp", server = servers.at(-1)) {
      if (server === undefined) throw new Error("start a server first");
      const client = await ClientDriver.open({
        serverHost: HOST,
        serverPort: server.udpPort,
        udpPort: 0,
        tcpPort: 5001,
        name,
        via,
        retry: { initialMs: 100, maxMs: 400, jitter: 0.2, giveUpMs: 3000 },
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

type Ok = Extract<CommandResult, { ok: true }>;
type Failure = Extract<CommandResult, { ok: false }>;

function ok(result: CommandResult): Ok {
  if (!result.ok) throw new Error(`${result.command} failed: ${result.error}`);
  return result;
}

function failure(result: CommandResult): Failure {
  if (result.ok) throw new Error(`${result.command} should have failed: ${result.message}`);
  return result;
}

async function readRegistryFile(dataDir: string): Promise<Record<string, Record<string, unknown>>> {
  return JSON.parse(await Deno.readTextFile(join(dataDir, REGISTRY_FILE)));
}

Deno.test("ServerDriver and ClientDriver run hello, register, tcp and deregister", async () => {
  await withHarness(async (h) => {
    const server = await h.start();
    const alice = await h.client("Alice Smith");

    const hello = ok(await alice.run({ kind: "hello" }));
    assertEquals(hello.data?.serverTcpPort, server.tcpPort);
    assertEquals(hello.data?.serverVersion, "0.0.0-test");
    assertEquals(alice.core.serverTcpPort, server.tcpPort);

    ok(await alice.run({ kind: "register" }));
    assertEquals(alice.core.registeredAs, "Alice Smith");
    const record = server.core.registry.get("alice smith");
    assertEquals(record?.ip, HOST);
    assertEquals(record?.udpPort, alice.udpPort);
    assertEquals(record?.tcpPort, 5001);

    const tcp = ok(await alice.run({ kind: "tcp", text: "hello over TCP" }));
    assertStringIncludes(tcp.message, "acknowledged");
    const text = h.events.find((e) => e.kind === "text");
    if (text?.kind !== "text") throw new Error("the server saw no text");
    assertEquals(text.text, "hello over TCP");
    assertEquals(text.verified, true);
    assertEquals(text.name, "Alice Smith");
    assertEquals(text.from.transport, "tcp");
    assertEquals(server.connectionCount, 1);

    ok(await alice.run({ kind: "deregister" }));
    assertEquals(alice.core.registeredAs, undefined);
    assertEquals(server.core.registry.size, 0);
    assertEquals(await readRegistryFile(h.dataDir), {});
    assertEquals(
      h.events.map((e) => e.kind).filter((k) => k !== "text"),
      ["registered", "deregistered"],
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
    assertEquals(impostor.core.registeredAs, undefined);
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
    assertEquals(server.traffic.framesIn, 1);
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
    assertMatch(String(file.Carol.key_sha256), /^[0-9a-f]{64}$/);
    assertMatch(String(file.Carol.registered_at), /^\d{4}-\d\d-\d\dT/);
    if (Deno.build.os !== "windows") {
      const mode = (await Deno.stat(join(h.dataDir, REGISTRY_FILE))).mode!;
      assertEquals(mode & 0o077, 0, "the registry is private to its owner");
    }
  });
});

Deno.test("ServerDriver.start() keeps registrations and tokens across a restart", async () => {
  await withHarness(async (h) => {
    const first = await h.start();
    const udpPort = first.udpPort;
    const erin = await h.client("Erin");
    ok(await erin.run({ kind: "register" }));
    await first.close();

    // Same data dir, same UDP port so that Erin's client still reaches it.
    const second = await h.start({ udpPort });
    assertEquals(second.core.registry.get("erin")?.udpPort, erin.udpPort);

    const other = await h.client("erin");
    const refused = failure(await other.run({ kind: "register" }));
    assertEquals(refused.code, "name_taken");

    // Erin's token from before the restart still proves the name.
    ok(await erin.run({ kind: "deregister" }));
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
      const socket = Deno.listenDatagram({ transport: "udp", hostname: HOST, port: 0 });
      try {
        for (const [i, name] of ["Alice", "Bob", "Carol"].entries()) {
          const message = encodeMessage({
            type: "register",
            reqId: 1,
            client: `000000000000000${i}`,
            name,
            udpPort: 0,
            tcpPort: 5001,
          });
          await socket.send(message, { transport: "udp", hostname: HOST, port: server.udpPort });
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
        socket.close();
      }
    });
  },
});
