/**
 * Address discovery end to end: the real server answers `reflect` on its
 * main and second UDP ports, and the real client's `status` shows the
 * address the server saw and the mapping type (on loopback: no NAT, so
 * endpoint-independent; without a second port: unknown). Version 3:
 * `reflect` sealed to the main port, clear to the second. Behind real NATs:
 * tests/natlab_test.ts.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { ServerGuard } from "../lib/client/server_guard.ts";
import { generateKeyPair } from "../lib/crypto/key_pair.ts";
import { ServerDriver } from "../lib/io/server_driver.ts";
import { cryptoRandom } from "../lib/random.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import { delay, startClient, startWorld } from "./_processes.ts";
import { SealedUdp } from "./_sealed_wire.ts";

/** Registers, then asks `status` until it shows a NAT mapping; returns that line. */
async function discoveredStatus(serverFlags: string[]): Promise<{ line: string; udp: number }> {
  await using w = await startWorld("switchboard_discovery_", { serverFlags });
  await using client = startClient(w.args("--name", "Ann"), { cwd: w.cwd });
  await client.write("register\n");
  await client.waitForLine(/^Registered and logged in as "Ann"$/);
  for (let i = 0; i < 40; i++) {
    const from = client.stdout.lines.length;
    await client.write("status\n");
    const line = await client.waitForLine(/^Server /, undefined, from);
    const udp = Number(/UDP port (\d+), TCP port/.exec(line)?.[1]);
    if (line.includes("NAT mapping")) return { line, udp };
    await delay(100);
  }
  throw new Error("status never showed a NAT mapping");
}

Deno.test("client status shows its public address and an endpoint-independent mapping on loopback", async () => {
  const { line, udp } = await discoveredStatus([]);
  assertMatch(line, /; public address 127\.0\.0\.1:(\d+), NAT mapping endpoint-independent$/);
  assertEquals(Number(/127\.0\.0\.1:(\d+), NAT/.exec(line)?.[1]), udp, "the client's own port");
});

Deno.test("client status shows an unknown mapping when the server has no second port", async () => {
  const { line } = await discoveredStatus(["--udp-port2", "0"]);
  assertMatch(line, /; public address 127\.0\.0\.1:\d+, NAT mapping unknown$/);
});

Deno.test("version 3: reflect goes sealed to the main port and in clear to the second, which takes nothing else", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "switchboard_discovery_" });
  const server = await ServerDriver.start({
    host: "127.0.0.1",
    udpPort: 0,
    tcpPort: 0,
    udpPort2: 0,
    dataDir,
    version: "0.0.0-test",
  });
  const raw = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const sealed = new SealedUdp("127.0.0.1", server.udpPort);
  try {
    assert(server.udpPort2 !== 0, "a second port");
    const reflect = (reqId: number) =>
      ({ type: "reflect", reqId, client: "0000000000000000" }) as const;
    // Main port, sealed (after the clear hello that tells the key): the address it came from.
    assertEquals(
      (await sealed.ask({ type: "hello", reqId: 1, client: "00000000000000aa" })).type,
      "hello_ok",
    );
    const localPort = (sealed.socket.addr as Deno.NetAddr).port;
    assertEquals(await sealed.ask(reflect(2)), {
      type: "reflect_ok",
      reqId: 2,
      ip: "127.0.0.1",
      port: localPort,
      port2: server.udpPort2,
    });
    // Second port, clear and padded: answered in clear.
    const rawPort = (raw.addr as Deno.NetAddr).port;
    const to = (port: number): Deno.NetAddr => ({ transport: "udp", hostname: "127.0.0.1", port });
    await raw.send(encodeMessage(reflect(3)), to(server.udpPort2));
    const [answer, from] = await raw.receive();
    assertEquals((from as Deno.NetAddr).port, server.udpPort2, "answered from the second port");
    assertEquals(decodeMessage(answer), {
      type: "reflect_ok",
      reqId: 3,
      ip: "127.0.0.1",
      port: rawPort,
      port2: server.udpPort2,
    });
    // A clear reflect to the main port, and a handshake or a hello to the second, get nothing.
    const rejected = server.traffic.rejected;
    await raw.send(encodeMessage(reflect(4)), to(server.udpPort));
    const guard = new ServerGuard({
      staticKeyPair: generateKeyPair(cryptoRandom),
      random: cryptoRandom,
      server: "second port",
      pinnedKey: server.publicKey,
    });
    for (const bytes of guard.outgoing(reflect(5), performance.now(), 1)) {
      await raw.send(bytes, to(server.udpPort2));
    }
    await raw.send(
      encodeMessage({ type: "hello", reqId: 6, client: "00000000000000bb" }),
      to(server.udpPort2),
    );
    const late = await Promise.race([
      raw.receive().then(([data]) => data),
      delay(500).then(() => undefined),
    ]);
    assertEquals(late, undefined, "no answer");
    assertEquals(server.traffic.rejected - rejected, 3);
  } finally {
    await sealed.close();
    raw.close();
    await server.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});
