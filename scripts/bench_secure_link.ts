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
  // `deno task bench:secure -- --rounds 5` passes the "--" on; parseArgs would stop at it.
  const flags = parseArgs(Deno.args.filter((arg) => arg !== "--"), {
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

/** One `sendfile`'s wall-clock seconds and each side's CPU seconds during it. */
interface Timed {
  seconds: number;
  /** Segments the sender's channel sent, and how many of them were retransmissions. */
  segmentsSent: number;
  retransmitted: number;
  senderCpu: number;
  receiverCpu: number;
}

/** One `sendfile` between two fresh client processes, sealed or with the null cipher. */
async function timedSendfile(
  serverPort: number,
  dir: string,
  path: string,
  tag: string,
  nullCipher: boolean,
): Promise<Timed> {
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
  const last = (output: Uint8Array) =>
    JSON.parse(new TextDecoder().decode(output).trim().split("\n").at(-1)!);
  const { seconds, cpuSeconds, segmentsSent, retransmitted } = last(sent.stdout);
  return {
    seconds,
    segmentsSent,
    retransmitted,
    senderCpu: cpuSeconds,
    receiverCpu: last(received.stdout).cpuSeconds,
  };
}

/** Encrypted `sendfile` against the null cipher, in two processes, rounds alternating. */
async function sendfiles(serverPort: number, dir: string, mib: number, rounds: number) {
  const path = join(dir, "bench.bin");
  const bytes = new Uint8Array(mib * 1024 * 1024);
  for (let i = 0; i < bytes.length; i += 4096) bytes[i] = i & 0xff;
  await Deno.writeFile(path, bytes);
  const rates = { sealed: [] as number[], plain: [] as number[], ratio: [] as number[] };
  const cpu = { sealed: [] as number[], plain: [] as number[], ratio: [] as number[] };
  const sides = { sender: [] as number[], receiver: [] as number[] };
  for (let round = 0; round < rounds; round++) {
    const sealed = await timedSendfile(serverPort, dir, path, `s${round}`, false);
    const plain = await timedSendfile(serverPort, dir, path, `n${round}`, true);
    const s = mib / sealed.seconds, p = mib / plain.seconds;
    // CPU ms per MiB of the busier side: what bounds the rate when the cores are shared.
    const sc = 1000 * Math.max(sealed.senderCpu, sealed.receiverCpu) / mib;
    const pc = 1000 * Math.max(plain.senderCpu, plain.receiverCpu) / mib;
    rates.sealed.push(s);
    rates.plain.push(p);
    rates.ratio.push(s / p);
    cpu.sealed.push(sc);
    cpu.plain.push(pc);
    cpu.ratio.push(pc / sc);
    sides.sender.push(1000 * (sealed.senderCpu - plain.senderCpu) / mib);
    sides.receiver.push(1000 * (sealed.receiverCpu - plain.receiverCpu) / mib);
    console.log(
      `  round ${round + 1}: sealed ${s.toFixed(1)} MiB/s, null ${p.toFixed(1)} MiB/s, ` +
        `ratio ${(s / p).toFixed(2)}; busier side's CPU ${sc.toFixed(1)} against ` +
        `${pc.toFixed(1)} ms/MiB, ratio ${(pc / sc).toFixed(2)}; segments sent ` +
        `${sealed.segmentsSent} (${sealed.retransmitted} again) against ` +
        `${plain.segmentsSent} (${plain.retransmitted})`,
    );
  }
  const load = (await Deno.readTextFile("/proc/loadavg").catch(() => "?")).split(" ")[0];
  console.log(
    `peer sendfile of ${mib} MiB on loopback, two processes, ${rounds} rounds, medians ` +
      `(load average ${load}):`,
  );
  console.log(
    `  sealed (ChaCha20-Poly1305)               ${median(rates.sealed).toFixed(1)} MiB/s`,
  );
  console.log(`  null cipher (benchmark only)             ${median(rates.plain).toFixed(1)} MiB/s`);
  console.log(
    `  sealed / null (median of rounds)         ${median(rates.ratio).toFixed(2)} (goal >= 0.7)`,
  );
  console.log(
    `  busier side's CPU, sealed / null         ${median(cpu.sealed).toFixed(1)} / ` +
      `${median(cpu.plain).toFixed(1)} ms per MiB: rate bound ${median(cpu.ratio).toFixed(2)}`,
  );
  console.log(
    `  CPU the AEAD adds                        sender ${median(sides.sender).toFixed(1)}, ` +
      `receiver ${median(sides.receiver).toFixed(1)} ms per MiB ` +
      `(${(1000 * median(sides.sender) / (1024 * 1024 / 1100)).toFixed(1)} and ` +
      `${(1000 * median(sides.receiver) / (1024 * 1024 / 1100)).toFixed(1)} us a datagram)`,
  );
}

if (import.meta.main) await main();
