/**
 * What the secure channel (protocol version 3) costs a client on loopback,
 * measured in one run against a baseline in the same run: the first sealed
 * request of a client (which waits for the Noise IK handshake) against the
 * same request repeated on the live session (one round trip each). The
 * request is a `register` of a taken name: answered at once, nothing written.
 * Then what encryption costs a peer `sendfile` on loopback: the same file
 * between two client processes (`_bench_peer_sendfile.ts`), sealed as in
 * the product and sealed with a null cipher (a copy; a benchmark-only switch
 * no flag reaches), rounds alternating, goodput from the offer to the
 * sender's `file_done` (the receiver verified the file).
 * Real server and client drivers.
 *
 * ```
 * deno run -A scripts/bench_secure_link.ts [--clients 40] [--sendfile-mib 16] [--rounds 3]
 * ```
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { join } from "@std/path";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { ServerDriver } from "../lib/io/server_driver.ts";

const HOST = "127.0.0.1";

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function main(): Promise<void> {
  const flags = parseArgs(Deno.args, {
    string: ["clients", "sendfile-mib", "rounds"],
    default: { clients: "40", "sendfile-mib": "16", rounds: "3" },
  });
  const count = Number(flags.clients);
  const fileMiB = Number(flags["sendfile-mib"]);
  const rounds = Number(flags.rounds);
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
    if (fileMiB > 0) await sendfiles(server.udpPort, dataDir, fileMiB, rounds);
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

const SIDE = new URL("./_bench_peer_sendfile.ts", import.meta.url).pathname;

/** Seconds of one `sendfile` between two fresh client processes, sealed or with the null cipher. */
async function timedSendfile(
  serverPort: number,
  dir: string,
  path: string,
  tag: string,
  nullCipher: boolean,
): Promise<number> {
  const side = (role: string, name: string, peer: string) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        SIDE,
        "--role",
        role,
        "--server-port",
        String(serverPort),
        "--name",
        name,
        "--peer",
        peer,
        "--file",
        path,
        "--dir",
        join(dir, `downloads-${tag}`),
        ...(nullCipher ? ["--null"] : []),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
  const receiver = side("receive", `Receiver ${tag}`, `Sender ${tag}`);
  const sender = side("send", `Sender ${tag}`, `Receiver ${tag}`);
  const [sent, received] = await Promise.all([sender.output(), receiver.output()]);
  if (!sent.success || !received.success) throw new Error(`the ${tag} transfer failed`);
  const lines = new TextDecoder().decode(sent.stdout).trim().split("\n");
  return JSON.parse(lines.at(-1)!).seconds;
}

/** Encrypted `sendfile` against the null cipher, in two processes, rounds alternating. */
async function sendfiles(serverPort: number, dir: string, mib: number, rounds: number) {
  const path = join(dir, "bench.bin");
  const bytes = new Uint8Array(mib * 1024 * 1024);
  for (let i = 0; i < bytes.length; i += 4096) bytes[i] = i & 0xff;
  await Deno.writeFile(path, bytes);
  const rates = { sealed: [] as number[], plain: [] as number[], ratio: [] as number[] };
  for (let round = 0; round < rounds; round++) {
    const s = mib / await timedSendfile(serverPort, dir, path, `s${round}`, false);
    const p = mib / await timedSendfile(serverPort, dir, path, `n${round}`, true);
    rates.sealed.push(s);
    rates.plain.push(p);
    rates.ratio.push(s / p);
    console.log(
      `  round ${round + 1}: sealed ${s.toFixed(1)} MiB/s, null ${p.toFixed(1)} MiB/s, ` +
        `ratio ${(s / p).toFixed(2)}`,
    );
  }
  console.log(`peer sendfile of ${mib} MiB on loopback, two processes, ${rounds} rounds, medians:`);
  console.log(
    `  sealed (ChaCha20-Poly1305)               ${median(rates.sealed).toFixed(1)} MiB/s`,
  );
  console.log(`  null cipher (benchmark only)             ${median(rates.plain).toFixed(1)} MiB/s`);
  console.log(
    `  sealed / null (median of rounds)         ${median(rates.ratio).toFixed(2)} (goal >= 0.7)`,
  );
}

if (import.meta.main) await main();
