/**
 * What the secure channel (protocol version 3) costs a client on loopback,
 * measured in one run against a baseline in the same run: the first sealed
 * request of a client (which waits for the Noise IK handshake) against the
 * same request repeated on the live session (one round trip each). The
 * request is a `register` of a taken name: answered at once, nothing written.
 * Real server and client drivers.
 *
 * ```
 * deno run -A scripts/bench_secure_link.ts [--clients 40]
 * ```
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { ServerDriver } from "../lib/io/server_driver.ts";

const HOST = "127.0.0.1";

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function main(): Promise<void> {
  const flags = parseArgs(Deno.args, { string: ["clients"], default: { clients: "40" } });
  const count = Number(flags.clients);
  const dataDir = await Deno.makeTempDir({ prefix: "switchboard_bench_secure_" });
  const server = await ServerDriver.start({
    host: HOST,
    udpPort: 0,
    tcpPort: 0,
    dataDir,
    version: "bench",
    limits: { rateLimit: 0, sessionRateLimit: 0 },
  });
  const hello: number[] = [], first: number[] = [], later: number[] = [];
  const firstDatagrams: number[] = [], laterDatagrams: number[] = [];
  const datagrams = () => server.traffic.datagramsIn + server.traffic.datagramsOut;
  try {
    for (let i = 0; i < count; i++) {
      const client = await ClientDriver.open({
        serverHost: HOST,
        serverPort: server.udpPort,
        udpPort: 0,
        tcpPort: 5001,
        name: `Bench ${i}`,
        via: "udp",
      });
      try {
        let t = performance.now();
        await client.run({ kind: "hello" });
        hello.push(performance.now() - t);
        if (i === 0) {
          const taken = await client.run({ kind: "register", name: "Taken" });
          if (!taken.ok) throw new Error(JSON.stringify(taken));
          continue;
        }
        t = performance.now();
        let d = datagrams();
        const refused = await client.run({ kind: "register", name: "Taken" });
        first.push(performance.now() - t);
        firstDatagrams.push(datagrams() - d);
        if (refused.ok) throw new Error("the name was not taken");
        for (let j = 0; j < 5; j++) {
          t = performance.now();
          d = datagrams();
          await client.run({ kind: "register", name: "Taken" });
          later.push(performance.now() - t);
          laterDatagrams.push(datagrams() - d);
        }
      } finally {
        await client.close();
      }
    }
  } finally {
    await server.close();
    await Deno.remove(dataDir, { recursive: true });
  }
  const rtt = median(later);
  console.log(`${count} clients on loopback, medians:`);
  console.log(`  clear hello (1 RTT)                      ${median(hello).toFixed(2)} ms`);
  console.log(`  sealed request, live session (1 RTT)     ${rtt.toFixed(2)} ms`);
  const exchanges = median(firstDatagrams) / 2, baseline = median(laterDatagrams) / 2;
  console.log(
    `  first sealed request                     ${median(first).toFixed(2)} ms, ` +
      `${exchanges} exchanges against ${baseline}: ${exchanges - baseline} round trip added ` +
      `(${(median(first) - rtt).toFixed(2)} ms here, mostly the handshake's CPU on both sides)`,
  );
}

if (import.meta.main) await main();
