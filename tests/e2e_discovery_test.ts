/**
 * Address discovery end to end: the real server answers `reflect` on its
 * main and second UDP ports, and the real client's `status` shows the
 * address the server saw and the mapping type (on loopback: no NAT, so
 * endpoint-independent; without a second port: unknown). Behind real NATs:
 * tests/natlab_test.ts.
 */
import { assertEquals, assertMatch } from "@std/assert";
import { delay, startClient, startWorld } from "./_processes.ts";

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
