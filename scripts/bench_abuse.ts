/**
 * Attacks on a real server process over loopback, measured: a registration
 * storm from one address (UDP and TCP) while a neighbour registers, and a
 * guesser next door while the owner logs in once a second; TCP slots held by
 * connections that send a `hello` every 20 s (32 from the uploader's own
 * address, then 512 from 16 others) while a client uploads; a client under
 * 2,000 offers of 1 TB and a stranger's `peer_connect` flood
 * (`_client_floods.ts`); then the cost of one registry save at 10,000 names,
 * whole file against appended line (in this process, both ways, same run). With `--before
 * DIR` (another checkout, such as `git archive <commit> | tar -x -C DIR`)
 * the same run goes against that server too, for figures side by side. The
 * attackers speak protocol version 3 (sealed, as `_wire_client.ts` does), so
 * that checkout must speak it too.
 *
 *   deno run -A scripts/bench_abuse.ts [--before DIR] [--storm SECONDS] [--login SECONDS]
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { fromFileUrl, join } from "@std/path";
import { integerFlag } from "../lib/cli/usage_error.ts";
import { atomicWriteFile } from "../lib/io/atomic_write.ts";
import { RegistryFile } from "../lib/io/registry_file.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import type { Message } from "../lib/wire/messages.ts";
import { flagsOrExitCode, percentile, table } from "./_bench_support.ts";
import { type ClientFloodFigures, clientFloods } from "./_client_floods.ts";
import { TcpSquatters } from "./_tcp_squatters.ts";
import { channelTo, serverKeyIn, TcpExchange, UdpRequester } from "./_wire_client.ts";

const HELP = `Usage: deno run -A scripts/bench_abuse.ts [options]

Runs a registration storm, a login-guessing attack and TCP slot squatting
against a real server, and offer and connect floods against a real client,
on loopback, and prints what their users and their memory saw.

  --before DIR       also run against the server of the checkout in DIR
                     (protocol version 3 or later)
  --storm SECONDS    how long the registration storm lasts (default 20)
  --login SECONDS    how long the owner logs in under guessing (default 30)
  -h, --help         show this help`;

const THIS_CHECKOUT = fromFileUrl(new URL("../", import.meta.url));
const DECLARED_TCP_PORT = 40000;

interface Flags {
  before?: string;
  stormS: number;
  loginS: number;
}

function parseFlags(args: string[]): Flags | "help" {
  const parsed = parseArgs(args, {
    string: ["before", "storm", "login"],
    boolean: ["help"],
    alias: { h: "help" },
    default: { storm: "20", login: "30" },
  });
  if (parsed.help) return "help";
  return {
    before: parsed.before,
    stormS: integerFlag("--storm", parsed.storm, { min: 1, max: 300 }),
    loginS: integerFlag("--login", parsed.login, { min: 1, max: 300 }),
  };
}

/** A server process started from a checkout, in a temporary directory. */
interface Server {
  udpPort: number;
  tcpPort: number;
  dataDir: string;
  /** Its static public key, for TCP handshakes (version 3). */
  serverKey: Uint8Array;
  rssMiB(): Promise<number>;
  stop(): Promise<void>;
}

async function startServer(checkout: string): Promise<Server> {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_bench_abuse_" });
  const dataDir = join(dir, "data");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--config",
      join(checkout, "deno.json"),
      join(checkout, "server.ts"),
      "--host",
      "127.0.0.1",
      "--udp-port",
      "0",
      "--tcp-port",
      "0",
      "--data-dir",
      dataDir,
      "--log-dir",
      join(dir, "logs"),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const ports: Record<string, number> = {};
  while (ports.udp === undefined || ports.tcp === undefined) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`The server in ${checkout} did not start:\n${text}`);
    text += value;
    for (const [, kind, port] of text.matchAll(/Server (UDP|TCP) listening on port (\d+)/g)) {
      ports[kind.toLowerCase()] = Number(port);
    }
  }
  // Keep reading so the server never blocks on a full pipe.
  const drained = (async () => {
    while (!(await lines.read()).done) { /* discard */ }
  })();
  return {
    udpPort: ports.udp,
    tcpPort: ports.tcp,
    dataDir,
    serverKey: await serverKeyIn(dataDir),
    async rssMiB() {
      const status = await Deno.readTextFile(`/proc/${child.pid}/status`);
      return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) / 1024;
    },
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await drained;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function register(
  name: string,
): { type: "register"; name: string; udpPort: number; tcpPort: number } {
  return { type: "register", name, udpPort: 0, tcpPort: DECLARED_TCP_PORT };
}

async function registryBytes(dataDir: string): Promise<number> {
  let bytes = 0;
  for (const name of ["registrations.json", "registrations.log"]) {
    bytes += await Deno.stat(join(dataDir, name)).then((s) => s.size, () => 0);
  }
  return bytes;
}

/** What the storm did to the server and to its neighbour. */
interface StormFigures {
  idleP50: number;
  stormNames: number;
  neighbourP50: number;
  neighbourP99: number;
  neighbourFailed: number;
  rssBefore: number;
  rssPeak: number;
  registryKiB: number;
}

/**
 * 127.0.0.1 registers new names as fast as the server answers, over UDP (8
 * at once) and TCP (4 connections), while neighbours register one name every
 * 250 ms, each from an address of its own (127.0.2.0 and up), and time it.
 */
async function storm(server: Server, seconds: number): Promise<StormFigures> {
  const to = { hostname: "127.0.0.1", port: server.udpPort };
  using attacker = new UdpRequester({ hostname: "127.0.0.1", server: to });
  const timedRegister = async (i: number) => {
    // Each from an address of its own: many users, one name each.
    using neighbour = new UdpRequester({
      hostname: `127.0.${2 + (i >> 8)}.${i & 255}`,
      server: to,
    });
    const started = performance.now();
    const reply = await neighbour.request(register(`neighbour${i}`), { timeoutMs: 5000 });
    return reply?.type === "register_ok" ? performance.now() - started : undefined;
  };
  const idle: number[] = [];
  for (let i = 0; i < 20; i++) idle.push((await timedRegister(1000 + i)) ?? NaN);
  idle.sort((a, b) => a - b);
  const rssBefore = await server.rssMiB();
  let rssPeak = rssBefore;
  const until = performance.now() + seconds * 1000;
  let stormNames = 0;
  let next = 0;
  const udpWorker = async () => {
    while (performance.now() < until) {
      const reply = await attacker.request(register(`storm${next++}`), { timeoutMs: 2000 });
      if (reply?.type === "register_ok") stormNames++;
    }
  };
  const tcpWorker = async (id: number) => {
    using tcp = await TcpExchange.connect(
      "127.0.0.1",
      server.tcpPort,
      channelTo(server.serverKey),
    );
    for (let reqId = 1; performance.now() < until; reqId++) {
      await tcp.send({
        ...register(`tcp${id}x${reqId}`),
        reqId,
        client: `00000000000000${id.toString(16).padStart(2, "0")}`,
        udpPort: 40001,
      });
      const reply: Message | undefined = await tcp.next();
      if (reply === undefined) break;
      if (reply.type === "register_ok") stormNames++;
    }
  };
  const latencies: number[] = [];
  let neighbourFailed = 0;
  const neighbourLoop = async () => {
    for (let i = 0; performance.now() < until; i++) {
      const ms = await timedRegister(i);
      if (ms !== undefined) latencies.push(ms);
      else neighbourFailed++;
      await sleep(250);
    }
  };
  const sampler = async () => {
    while (performance.now() < until) {
      await sleep(500);
      rssPeak = Math.max(rssPeak, await server.rssMiB());
    }
  };
  await Promise.all([
    ...Array.from({ length: 8 }, udpWorker),
    ...Array.from({ length: 4 }, (_, i) => tcpWorker(i)),
    neighbourLoop(),
    sampler(),
  ]);
  latencies.sort((a, b) => a - b);
  return {
    idleP50: percentile(idle, 0.5),
    stormNames,
    neighbourP50: percentile(latencies, 0.5),
    neighbourP99: percentile(latencies, 0.99),
    neighbourFailed,
    rssBefore,
    rssPeak,
    registryKiB: (await registryBytes(server.dataDir)) / 1024,
  };
}

/** What a guesser next door did to the owner's logins. */
interface LoginFigures {
  ownerOk: number;
  ownerTried: number;
  guesses: number;
  guessesChecked: number;
}

/**
 * The owner registers "alice" from 127.0.0.1 and logs in once a second; a
 * guesser on 127.0.0.2 sends wrong keys, and each time it is told it is
 * locked out, waits until the lock ends and starts again.
 */
async function guessing(server: Server, seconds: number): Promise<LoginFigures> {
  const to = { hostname: "127.0.0.1", port: server.udpPort };
  using owner = new UdpRequester({ hostname: "127.0.0.1", server: to });
  using guesser = new UdpRequester({ hostname: "127.0.0.2", server: to });
  const registered = await owner.request(register("alice"));
  if (registered?.type !== "register_ok") throw new Error(`register alice: ${registered?.type}`);
  // The owner's channel key is its identity; the guesser's channel has another.
  const key = new Uint8Array(0);
  const login = (secret: Uint8Array) => ({
    type: "login" as const,
    name: "alice",
    secret,
    udpPort: 0,
    tcpPort: DECLARED_TCP_PORT,
  });
  const until = performance.now() + seconds * 1000;
  const figures: LoginFigures = { ownerOk: 0, ownerTried: 0, guesses: 0, guessesChecked: 0 };
  const guesserLoop = async () => {
    while (performance.now() < until) {
      const reply = await guesser.request(login(crypto.getRandomValues(new Uint8Array(16))));
      figures.guesses++;
      if (reply?.type !== "error") continue;
      if (reply.code === ERROR_CODES.login_failed) figures.guessesChecked++;
      const wait = /(?:try again in|blocked for) (\d+) s/.exec(reply.message);
      if (reply.code === ERROR_CODES.locked_out) {
        if (/Login failed/.test(reply.message)) figures.guessesChecked++;
        await sleep(Number(wait?.[1] ?? 1) * 1000);
      }
    }
  };
  const ownerLoop = async () => {
    while (performance.now() < until) {
      const reply = await owner.request(login(key));
      figures.ownerTried++;
      if (reply?.type === "login_ok") figures.ownerOk++;
      await sleep(1000);
    }
  };
  await Promise.all([guesserLoop(), ownerLoop()]);
  return figures;
}

/** One registry save, timed: the whole file rewritten (before the log) or a line appended. */
interface WriteFigures {
  names: number;
  wholeP50: number;
  wholeKiB: number;
  appendP50: number;
  appendBytes: number;
}

/**
 * Saves a registry of `names` names 30 times with one new name each: once
 * rewriting `registrations.json` whole (atomically, as every save did before
 * the log), once through `RegistryFile` (a line appended and fsynced).
 */
async function registryWrites(names: number): Promise<WriteFigures> {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_bench_registry_" });
  try {
    const file = await RegistryFile.open(dir);
    const add = (name: string) =>
      file.registry.add({
        name,
        ip: "127.0.0.1",
        udpPort: 40001,
        tcpPort: DECLARED_TCP_PORT,
        registeredAt: new Date().toISOString(),
        publicKey: "ab".repeat(32),
        keySha256: "",
        registeredBy: "00112233445566778899aabbccddeeff",
        lastSeenAt: new Date().toISOString(),
      });
    for (let i = 0; i < names; i++) add(`user${i}`);
    await file.save(file.registry.toJson());
    const whole: number[] = [];
    const append: number[] = [];
    let wholeBytes = 0;
    for (let i = 0; i < 30; i++) {
      add(`whole${i}`);
      const text = JSON.stringify(file.registry.toJson(), null, 2) + "\n";
      wholeBytes = text.length;
      let started = performance.now();
      await atomicWriteFile(join(dir, "whole.json"), text, { mode: 0o600 });
      whole.push(performance.now() - started);
      add(`append${i}`);
      started = performance.now();
      await file.save(file.registry.toJson());
      append.push(performance.now() - started);
    }
    const appendBytes = file.logBytes / 60;
    await file.close();
    whole.sort((a, b) => a - b);
    append.sort((a, b) => a - b);
    return {
      names,
      wholeP50: percentile(whole, 0.5),
      wholeKiB: wholeBytes / 1024,
      appendP50: percentile(append, 0.5),
      appendBytes,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Whether an upload got through while others held the TCP slots, and how long it took (or why not). */
interface SlotFigures {
  ownAddress: string;
  allSlots: string;
}

/** Runs the checkout's client on `stdin`; returns whether it succeeded and how long it took. */
async function runClient(checkout: string, server: Server, stdin: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_bench_client_" });
  try {
    const started = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--config",
        join(checkout, "deno.json"),
        join(checkout, "client.ts"),
        "--server",
        `127.0.0.1:${server.udpPort}`,
        "--timeout",
        "10",
        "--data-dir",
        join(dir, "data"),
        "--log-dir",
        join(dir, "logs"),
      ],
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
    const { code, stderr } = await child.output();
    const ms = performance.now() - started;
    if (code === 0) return `ok in ${(ms / 1000).toFixed(1)} s`;
    const error = new TextDecoder().decode(stderr).trim().split("\n").at(-1) ?? "";
    return `failed: ${error.replace(/^error: /, "").replace(/ at [\d.]+:\d+/, "").slice(0, 48)}`;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * A client on 127.0.0.1 registers and uploads 1 MiB while 32 connections
 * from its own address hold their slots with a `hello` every 20 s; then
 * another while 512 from 127.0.0.2 to 127.0.0.17 hold the global cap.
 */
async function tcpSlots(checkout: string): Promise<SlotFigures> {
  const server = await startServer(checkout);
  const file = await Deno.makeTempFile({ prefix: "switchboard_bench_upload_" });
  try {
    await Deno.writeFile(file, new Uint8Array(1024 * 1024).fill(7));
    const upload = (name: string) =>
      runClient(checkout, server, `register ${name}\nupload ${file}\n`);
    const hold = (sources: string[]) =>
      TcpSquatters.start({
        hostname: "127.0.0.1",
        port: server.tcpPort,
        serverKey: server.serverKey,
        sources,
        perAddress: 32,
      });
    let squatters = await hold(["127.0.0.1"]);
    const ownAddress = await upload("Ann");
    await squatters.stop();
    squatters = await hold(Array.from({ length: 16 }, (_, i) => `127.0.0.${2 + i}`));
    const allSlots = await upload("Ben");
    await squatters.stop();
    return { ownAddress, allSlots };
  } finally {
    await Deno.remove(file);
    await server.stop();
  }
}

async function measure(checkout: string, flags: Flags) {
  const stormServer = await startServer(checkout);
  let stormFigures: StormFigures;
  try {
    stormFigures = await storm(stormServer, flags.stormS);
  } finally {
    await stormServer.stop();
  }
  const loginServer = await startServer(checkout);
  let loginFigures: LoginFigures;
  try {
    loginFigures = await guessing(loginServer, flags.loginS);
  } finally {
    await loginServer.stop();
  }
  const slots = await tcpSlots(checkout);
  const floodServer = await startServer(checkout);
  let floods: ClientFloodFigures;
  try {
    floods = await clientFloods({ checkout, serverPort: floodServer.udpPort });
  } finally {
    await floodServer.stop();
  }
  return { ...stormFigures, ...loginFigures, slots, floods };
}

async function main(args: string[]): Promise<number> {
  const flags = flagsOrExitCode(() => parseFlags(args), HELP);
  if (typeof flags === "number") return flags;
  const runs: [string, Awaited<ReturnType<typeof measure>>][] = [];
  if (flags.before !== undefined) runs.push(["before", await measure(flags.before, flags)]);
  runs.push(["this checkout", await measure(THIS_CHECKOUT, flags)]);
  const row = (label: string, get: (f: (typeof runs)[number][1]) => string) => [
    label,
    ...runs.map(([, f]) => get(f)),
  ];
  console.log(
    `Registration storm from 127.0.0.1 (UDP x8, TCP x4) for ${flags.stormS} s; ` +
      `a neighbour (a new address each time) registers every 250 ms`,
  );
  console.log(
    `Guessing: the owner on 127.0.0.1 logs in once a second for ${flags.loginS} s; ` +
      "a guesser on 127.0.0.2 guesses again each time its lock ends",
  );
  console.log(
    "TCP slots: a client registers and uploads 1 MiB while connections that send a hello " +
      "every 20 s hold its address's 32 slots, then all 512 (default limits)",
  );
  console.log(
    "Client floods: a peer offers 2,000 files of 1 TB to a client with --accept-files, then " +
      "leaves; a stranger on 127.0.0.2 sends 4,000 peer_connect a second for 4 s while the " +
      "real peer connects\n",
  );
  for (
    const line of table(["", ...runs.map(([name]) => name)], [
      row("neighbour register p50 at idle (ms)", (f) => f.idleP50.toFixed(1)),
      row("names the storm registered", (f) => String(f.stormNames)),
      row("neighbour register p50 in the storm (ms)", (f) => f.neighbourP50.toFixed(1)),
      row("neighbour register p99 in the storm (ms)", (f) => f.neighbourP99.toFixed(1)),
      row("neighbour registers failed", (f) => String(f.neighbourFailed)),
      row(
        "server RSS before / peak (MiB)",
        (f) => `${f.rssBefore.toFixed(0)} / ${f.rssPeak.toFixed(0)}`,
      ),
      row("registry on disk (KiB)", (f) => f.registryKiB.toFixed(0)),
      row("owner logins that got in", (f) => `${f.ownerOk} of ${f.ownerTried}`),
      row("guesses sent / checked", (f) => `${f.guesses} / ${f.guessesChecked}`),
      row("upload, 32 slots of its address held", (f) => f.slots.ownAddress),
      row("upload, all 512 slots held (16 addresses)", (f) => f.slots.allSlots),
      row("client: partial files after 2,000 offers", (f) => String(f.floods.partialFiles)),
      row(
        "client: real connect in the connect flood",
        (f) =>
          Number.isFinite(f.floods.connectMs) ? `${f.floods.connectMs.toFixed(1)} ms` : "failed",
      ),
      row(
        "client RSS end / peak (MiB)",
        (f) => `${f.floods.rssMiB.toFixed(0)} / ${f.floods.peakRssMiB.toFixed(0)}`,
      ),
    ])
  ) console.log(line);
  const writes = await registryWrites(10_000);
  console.log(`\nOne registry save at ${writes.names} names, one change each (p50 of 30):`);
  console.log(
    `  whole file rewritten (before): ${writes.wholeP50.toFixed(1)} ms, ` +
      `${writes.wholeKiB.toFixed(0)} KiB`,
  );
  console.log(
    `  line appended (registrations.log): ${writes.appendP50.toFixed(1)} ms, ` +
      `${writes.appendBytes.toFixed(0)} bytes ` +
      `(${(writes.wholeP50 / writes.appendP50).toFixed(1)}x faster)`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
