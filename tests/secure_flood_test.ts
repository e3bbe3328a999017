/**
 * A shared address under attack (issue 18): while about 10,000 datagrams a
 * second come from other ports of 127.0.0.1 (garbage, and replayed handshake
 * initiations that know the server's key), a logged-in client on 127.0.0.1
 * keeps talking to the server, and a new client on 127.0.0.1 that pinned the
 * server's key registers within 5 s: the address is over its budget, so its
 * initiation gets a cookie bound to its port, and the initiation that brings
 * the cookie back is served and charged to that port alone. So does a client
 * at its first contact, with no key pinned: its clear `hello` (padded, so
 * that the `hello_ok` is no larger) passes on its own port's small
 * first-contact budget, which the flooding ports have spent.
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { ServerDriver } from "../lib/io/server_driver.ts";
import { channelTo } from "./_sealed_wire.ts";

const HOST = "127.0.0.1";

Deno.test("a flood from other ports of a client's address stops neither its session nor a new client", async () => {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_flood_" });
  const server = await ServerDriver.start({
    host: HOST,
    udpPort: 0,
    tcpPort: 0,
    dataDir: join(dir, "server"),
    version: "0.0.0-test",
  });
  const pins = join(dir, "client", "known_servers.json");
  const open = (name: string, knownServersFile = pins) =>
    ClientDriver.open({
      serverHost: HOST,
      serverPort: server.udpPort,
      udpPort: 0,
      tcpPort: 5001,
      name,
      via: "udp",
      knownServersFile,
    });
  const alice = await open("Alice Anchor");
  const flooders = Array.from(
    { length: 8 },
    () => Deno.listenDatagram({ transport: "udp", hostname: HOST, port: 0 }),
  );
  let bob: ClientDriver | undefined;
  let carol: ClientDriver | undefined;
  let flooding = true;
  let sent = 0;
  try {
    assert((await alice.run({ kind: "hello" })).ok);
    assert((await alice.run({ kind: "register" })).ok);
    // Alice's first handshake pinned the key: Bob, a new client, starts with it.
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Initiations that know the server's key, replayed: each costs the server a MAC, never a DH.
    const initiations = Array.from(
      { length: 20 },
      () => channelTo(server.publicKey).initiate(performance.now()),
    );
    const target: Deno.NetAddr = { transport: "udp", hostname: HOST, port: server.udpPort };
    const flood = (async () => {
      const started = performance.now();
      while (flooding) {
        // 100 datagrams every 10 ms: 10,000 a second, from 8 ports.
        const due = Math.floor((performance.now() - started) / 10) * 100;
        while (sent < due + 100) {
          const bytes = sent % 5 === 0
            ? initiations[sent % initiations.length]
            : crypto.getRandomValues(new Uint8Array(64 + (sent % 200)));
          await flooders[sent % flooders.length].send(bytes, target).catch(() => {});
          sent++;
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();
    const floodStarted = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 1000));

    // Alice goes on: every request answered.
    for (let i = 0; i < 5; i++) {
      const listed = await alice.run({ kind: "list" } as never);
      assert(listed.ok, `Alice's list ${i}: ${JSON.stringify(listed)}`);
    }
    // Bob, new, on the same address: registered within 5 s.
    const t0 = performance.now();
    bob = await open("Bob Newcomer");
    const hello = await bob.run({ kind: "hello" });
    assert(hello.ok, JSON.stringify(hello));
    const registered = await bob.run({ kind: "register" });
    const took = performance.now() - t0;
    assert(registered.ok, JSON.stringify(registered));
    assert(took < 5000, `Bob took ${Math.round(took)} ms`);
    // Carol, at her first contact (no key pinned: a clear hello first), on the same address too.
    const t1 = performance.now();
    carol = await open("Carol Firstcontact", join(dir, "carol", "known_servers.json"));
    const carolHello = await carol.run({ kind: "hello" });
    assert(carolHello.ok, JSON.stringify(carolHello));
    const carolRegistered = await carol.run({ kind: "register" });
    const carolTook = performance.now() - t1;
    assert(carolRegistered.ok, JSON.stringify(carolRegistered));
    assert(carolTook < 5000, `Carol took ${Math.round(carolTook)} ms`);
    flooding = false;
    await flood;
    const rate = sent / ((performance.now() - floodStarted) / 1000);
    assert(rate > 8000, `only ${Math.round(rate)} datagrams a second`);
    assert(server.traffic.rateLimited > 1000, `${server.traffic.rateLimited} rate-limited`);
    assertEquals(server.core.registry.size, 3);
  } finally {
    flooding = false;
    for (const socket of flooders) socket.close();
    await bob?.close();
    await carol?.close();
    await alice.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
