/**
 * `deno task fuzz`: throws a million random and mutated datagrams, and
 * thousands of malformed TCP streams, at a running Switchboard server while
 * real client processes keep registering, listing, looking up and chatting
 * peer to peer through it, and checks that the server never crashes, answers
 * the real clients throughout, and keeps its memory bounded.
 *
 * The datagrams come from a pool built once from the seed
 * (`scripts/_fuzz_corpus.ts`), cycled with a cheap variation per send, from
 * many sockets on 127.0.0.2 and up (the real clients use 127.0.0.1), paced
 * by the drops the kernel counts on the server's socket so that most of them
 * reach the server's decoder. The server's resident memory is sampled from
 * `/proc/PID/status` throughout (Linux), and the kernel's drop count of its
 * socket from `/proc/net/udp`; Deno lets only `--allow-all` read `/proc`, so
 * `deno task fuzz` runs with it.
 *
 * Exit codes: 0 when every check held, 1 when one failed (each said on
 * stderr), 2 for bad usage, 130 after Ctrl+C.
 *
 * @module
 */
import * as net from "node:net";
import { parseArgs } from "@std/cli/parse-args";
import { fromFileUrl, join } from "@std/path";
import { toHex } from "../lib/hex.ts";
import { encodeFrame } from "../lib/wire/frame_decoder.ts";
import { encodeMessage } from "../lib/wire/codec.ts";
import { MAX_FRAME_BYTES, type Message } from "../lib/wire/messages.ts";
import {
  integerFlag,
  portFlag,
  rejectUnknownFlags,
  requireValues,
  UsageError,
} from "../lib/cli/usage_error.ts";
import { Cleanup, flagsOrExitCode, percentile } from "./_bench_support.ts";
import {
  FastRandom,
  type FuzzContext,
  FuzzCorpus,
  type FuzzDatagram,
  variantForSend,
} from "./_fuzz_corpus.ts";
import { replyOf, TcpExchange, UdpRequester } from "./_wire_client.ts";
import type { ServerChannel } from "../lib/client/server_channel.ts";

const HELP = `deno task fuzz: fuzz a Switchboard server while real clients use it

Sends --count random and mutated datagrams (garbage, wrong magic, version or
type, truncated, oversized up to 65507 bytes, huge length prefixes and list
counts, invalid UTF-8, out-of-range numbers, stale, forged and random session
tokens, replays of real captured requests, all built with the codec and then
mutated) and malformed TCP streams (garbage, huge or zero length prefixes,
truncated frames, slow and half-open connections) at the server, from
127.0.0.2 and up, while three real clients on 127.0.0.1 register, list, look
up and chat peer to peer. Checks that the server never crashes, answers every
client operation within --op-timeout, and that its resident memory stays
under --max-rss and stops growing. Ends with one summary line.

Usage:
  deno task fuzz [flags]

Flags:
  --count N          datagrams to send (default 1000000)
  --seed N           seed of the pool and its variations (default: random, printed)
  --udp-port N       fuzz the server already running at this UDP port (with
                     --tcp-port); by default a server is started in a temp dir
  --tcp-port N       the running server's TCP port
  --host ADDRESS     the server's address (default 127.0.0.1; loopback only)
  --pid N            the running server's process id, for its memory
                     (default: found from its UDP port in /proc)
  --sources N        source addresses 127.0.0.2 and up, 1 to 250 (default 8).
                     Every datagram reaches the server's decoder; its
                     per-address rate limit then lets about 100 a second
                     per address on to the handlers, so more addresses
                     exercise more handlers (and make the run slower)
  --sockets N        sockets per source address (default 1)
  --rate N           most datagrams per second (default 60000); the pace
                     backs off when the server's socket drops datagrams
  --pool N           distinct datagrams in the pool (default 30000)
  --tcp-rate N       malformed TCP streams started per second (default 100)
  --half-open N      idle, half-sent connections held open all along (default 32)
  --max-rss MB       fail if the server's resident memory exceeds this (default 300)
  --max-growth MB    fail if it grows more than this over the second half
                     of the run and at least half as much as over the
                     first half: a steady climb (default 64)
  --op-timeout S     longest a client operation may take (default 5)
  --no-clients       fuzz without the real clients
  --json             end with one JSON line of every figure
  -h, --help         show this help

Exit codes: 0 every check held, 1 a check failed, 2 bad usage, 130 Ctrl+C.`;

const STRING_FLAGS = [
  "count",
  "seed",
  "udp-port",
  "tcp-port",
  "host",
  "pid",
  "sources",
  "sockets",
  "rate",
  "pool",
  "tcp-rate",
  "half-open",
  "max-rss",
  "max-growth",
  "op-timeout",
];
const BOOLEAN_FLAGS = ["no-clients", "json", "help"];

const REPO = fromFileUrl(new URL("../", import.meta.url));
const SERVER_PATH = join(REPO, "server.ts");
const CLIENT_PATH = join(REPO, "client.ts");
const CONFIG_PATH = join(REPO, "deno.json");
const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env"];
/** How often the server's memory and socket drops are read, ms. */
const SAMPLE_MS = 250;
/** The client ids the per-send variation draws from: more than the replay cache keeps. */
const CLIENT_IDS = 12_000;
/** A declared TCP port for the fuzzer's own registrations. */
const DECLARED_TCP_PORT = 40000;

interface Options {
  count: number;
  seed: number;
  target?: { udpPort: number; tcpPort: number; pid?: number };
  host: string;
  sources: number;
  socketsPerSource: number;
  maxRate: number;
  pool: number;
  tcpRate: number;
  halfOpen: number;
  maxRssMb: number;
  maxGrowthMb: number;
  opTimeoutMs: number;
  clients: boolean;
  json: boolean;
}

function parseOptions(args: string[]): Options | "help" {
  const parsed = parseArgs(args, {
    string: STRING_FLAGS,
    boolean: BOOLEAN_FLAGS,
    alias: { h: "help" },
  });
  rejectUnknownFlags(parsed, [...STRING_FLAGS, ...BOOLEAN_FLAGS, "h"]);
  if (parsed.help) return "help";
  requireValues(args, parsed, STRING_FLAGS);
  const int = (flag: string, fallback: number, min: number, max: number) =>
    parsed[flag] === undefined ? fallback : integerFlag(`--${flag}`, parsed[flag], { min, max });
  const host = parsed.host ?? "127.0.0.1";
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)) {
    throw new UsageError(`--host must be a loopback IPv4 address (127.x.y.z), not "${host}"`);
  }
  const udp = parsed["udp-port"];
  const tcp = parsed["tcp-port"];
  if ((udp === undefined) !== (tcp === undefined)) {
    throw new UsageError("--udp-port and --tcp-port go together: give both or neither");
  }
  if (parsed.pid !== undefined && udp === undefined) {
    throw new UsageError("--pid needs --udp-port and --tcp-port (a server started here is known)");
  }
  return {
    count: int("count", 1_000_000, 1, 1_000_000_000),
    seed: parsed.seed === undefined
      ? crypto.getRandomValues(new Uint32Array(1))[0] % 1_000_000_000
      : integerFlag("--seed", parsed.seed, { min: 0, max: 999_999_999 }),
    target: udp === undefined ? undefined : {
      udpPort: portFlag("--udp-port", udp, { min: 1, max: 65535 }),
      tcpPort: portFlag("--tcp-port", tcp, { min: 1, max: 65535 }),
      pid: parsed.pid === undefined
        ? undefined
        : integerFlag("--pid", parsed.pid, { min: 1, max: 999_999_999 }),
    },
    host,
    sources: int("sources", 8, 1, 250),
    socketsPerSource: int("sockets", 1, 1, 64),
    maxRate: int("rate", 60_000, 100, 1_000_000),
    pool: int("pool", 30_000, 100, 1_000_000),
    tcpRate: int("tcp-rate", 100, 0, 10_000),
    halfOpen: int("half-open", 32, 0, 10_000),
    maxRssMb: int("max-rss", 300, 1, 1_000_000),
    maxGrowthMb: int("max-growth", 64, 1, 1_000_000),
    opTimeoutMs: int("op-timeout", 5, 1, 600) * 1000,
    clients: !parsed["no-clients"],
    json: parsed.json,
  };
}

// ------------------------------------------------------------------ helpers

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function mb(kb: number): string {
  return `${(kb / 1024).toFixed(0)} MB`;
}

function sourceAddress(index: number): string {
  return `127.0.0.${2 + index}`;
}

/** Reads lines from a stream, calling `onLine` for each, until it ends. */
async function readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let rest = "";
  try {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + text).split("\n");
      rest = lines.pop()!;
      for (const line of lines) onLine(line);
    }
  } catch {
    // the process went away
  }
  if (rest !== "") onLine(rest);
}

// ------------------------------------------------------------------ the server

/** The server under test: one this script started, or one already running. */
interface ServerUnderTest {
  udpPort: number;
  tcpPort: number;
  pid: number;
  /** Set once the process is seen gone. */
  exited?: string;
  /** Its last lines of output (started servers only). */
  tail: string[];
  /** Stops a server this script started (SIGINT, then SIGKILL); returns its exit code. */
  stop(): Promise<number | null>;
  /** Asks a server this script started for its status line. */
  status(): Promise<string | undefined>;
}

/**
 * The server's JavaScript heap limit under the fuzzer, MB: a server whose
 * live memory grew without bound would die of it, not just look big, and
 * garbage is collected before the resident size says more about V8's
 * heap sizing than about the server.
 */
const SERVER_HEAP_MB = 96;

async function startServer(dir: string, host: string): Promise<ServerUnderTest> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--v8-flags=--max-old-space-size=${SERVER_HEAP_MB}`,
      ...PERMISSIONS,
      "--config",
      CONFIG_PATH,
      SERVER_PATH,
      "--host",
      host,
      "--udp-port",
      "0",
      "--tcp-port",
      "0",
      "--data-dir",
      join(dir, "data"),
      "--log-dir",
      join(dir, "logs"),
      // The real clients register a new name after each deregister, many a
      // minute from 127.0.0.1: more than the default --register-rate allows.
      "--register-rate",
      "600",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdin = child.stdin.getWriter();
  const tail: string[] = [];
  const ports: Record<string, number> = {};
  let statusLine: ((line: string) => void) | undefined;
  const { promise: ready, resolve: isReady } = Promise.withResolvers<void>();
  const keep = (line: string) => {
    if (line.startsWith("Status: ")) statusLine?.(line);
    tail.push(line);
    if (tail.length > 30) tail.shift();
    const match = /^Server (UDP|TCP) listening on port (\d+)$/.exec(line);
    if (match) ports[match[1]] = Number(match[2]);
    if (ports.UDP && ports.TCP) isReady();
  };
  const drained = Promise.all([readLines(child.stdout, keep), readLines(child.stderr, keep)]);
  const server: ServerUnderTest = {
    udpPort: 0,
    tcpPort: 0,
    pid: child.pid,
    tail,
    async status() {
      if (server.exited !== undefined) return undefined;
      const { promise, resolve } = Promise.withResolvers<string | undefined>();
      statusLine = resolve;
      await stdin.write(new TextEncoder().encode("status\n")).catch(() => {});
      const timer = setTimeout(() => resolve(undefined), 3000);
      const line = await promise;
      clearTimeout(timer);
      statusLine = undefined;
      return line;
    },
    async stop() {
      await stdin.close().catch(() => {});
      if (server.exited === undefined) {
        try {
          child.kill("SIGINT");
        } catch {
          // gone
        }
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const status = await Promise.race([
        child.status,
        new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), 10_000)),
      ]);
      clearTimeout(timer);
      if (status === undefined) {
        child.kill("SIGKILL");
        await child.status;
      }
      await drained;
      return status?.code ?? null;
    },
  };
  child.status.then((status) => {
    server.exited = `exited with code ${status.code}${status.signal ? ` (${status.signal})` : ""}`;
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    ready.then(() => "ready"),
    child.status.then(() => "exited"),
    new Promise<string>((resolve) => timer = setTimeout(() => resolve("silent"), 30_000)),
  ]);
  clearTimeout(timer);
  if (outcome !== "ready") {
    await server.stop();
    throw new Error(`the server ${outcome} before listening: ${tail.at(-1) ?? "(no output)"}`);
  }
  server.udpPort = ports.UDP;
  server.tcpPort = ports.TCP;
  return server;
}

/** Finds the process that owns a UDP socket bound to a port, from /proc. */
async function findServerPid(port: number): Promise<number | undefined> {
  const inodes = new Set(udpSocketLines(port).map((fields) => fields[9]));
  if (inodes.size === 0) return undefined;
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      for await (const fd of Deno.readDir(`/proc/${entry.name}/fd`)) {
        const link = await Deno.readLink(`/proc/${entry.name}/fd/${fd.name}`).catch(() => "");
        const match = /^socket:\[(\d+)\]$/.exec(link);
        if (match && inodes.has(match[1])) return Number(entry.name);
      }
    } catch {
      // not ours to read, or gone
    }
  }
  return undefined;
}

/** The lines of /proc/net/udp for sockets bound to a port, split into fields. */
function udpSocketLines(port: number): string[][] {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/net/udp");
  } catch {
    return [];
  }
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  return text.split("\n").slice(1).map((line) => line.trim().split(/\s+/)).filter((f) =>
    f[1]?.endsWith(`:${hex}`)
  );
}

/** Datagrams the kernel dropped at the server's UDP socket so far (its receive buffer was full). */
function socketDrops(port: number): number | undefined {
  const lines = udpSocketLines(port);
  if (lines.length === 0) return undefined;
  return lines.reduce((sum, fields) => sum + Number(fields[12] ?? 0), 0);
}

function processExists(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch (error) {
    return !(error instanceof Deno.errors.NotFound);
  }
}

function rssKb(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------------ real clients

interface ClientResult {
  ok: boolean;
  command: string;
  message?: string;
  error?: string;
}

/** A client process driven line by line through its standard input, with `--json`. */
class ClientProcess {
  readonly name: string;
  readonly messages: string[] = [];
  readonly latencies: number[] = [];
  readonly failures: string[] = [];
  /** Commands run, and those that succeeded in time. */
  readonly counts = { run: 0, ok: 0 };
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #results: ClientResult[] = [];
  #wake: (() => void) | undefined;
  readonly #drained: Promise<unknown>;
  readonly #stderr: string[] = [];
  #exited = false;

  constructor(name: string, server: string, dir: string) {
    this.name = name;
    this.#child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...PERMISSIONS,
        "--config",
        CONFIG_PATH,
        CLIENT_PATH,
        "--server",
        server,
        "--name",
        name,
        "--json",
        "--timeout",
        "10",
        "--data-dir",
        join(dir, name),
        "--log-dir",
        join(dir, "logs"),
      ],
      cwd: dir,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#drained = Promise.all([
      readLines(this.#child.stdout, (line) => this.#line(line)),
      readLines(this.#child.stderr, (line) => {
        this.#stderr.push(line);
        if (this.#stderr.length > 10) this.#stderr.shift();
      }),
    ]);
    this.#child.status.then(() => {
      this.#exited = true;
      this.#wake?.();
    });
  }

  #line(line: string): void {
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(line);
    } catch {
      return;
    }
    if (json.event === "message") this.messages.push(String(json.text));
    if (json.event === "result") {
      this.#results.push(json as unknown as ClientResult);
      this.#wake?.();
    }
  }

  /**
   * Runs one command and waits for its result.
   *
   * @returns the result, or undefined (and a recorded failure) on a timeout or exit
   */
  async run(command: string, timeoutMs: number): Promise<ClientResult | undefined> {
    const started = performance.now();
    this.counts.run++;
    await this.#writer.write(new TextEncoder().encode(command + "\n")).catch(() => {});
    while (this.#results.length === 0) {
      if (this.#exited) {
        this.failures.push(
          `${this.name}: "${command}": the client exited (${this.#stderr.at(-1)})`,
        );
        return undefined;
      }
      const left = timeoutMs - (performance.now() - started);
      if (left <= 0) {
        this.failures.push(`${this.name}: "${command}" had no result within ${timeoutMs} ms`);
        return undefined;
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
    const result = this.#results.shift()!;
    this.latencies.push(performance.now() - started);
    if (!result.ok) this.failures.push(`${this.name}: "${command}" failed: ${result.error}`);
    else this.counts.ok++;
    return result;
  }

  /** Closes its input and waits for it to exit, killing it after a while. */
  async finish(ms = 10_000): Promise<number | null> {
    await this.#writer.close().catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      this.#child.status,
      new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), ms)),
    ]);
    clearTimeout(timer);
    if (status === undefined) {
      this.kill();
      await this.#child.status;
    }
    await this.#drained;
    return status?.code ?? null;
  }

  /** Kills it at once. */
  kill(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // gone
    }
  }
}

interface ClientFigures {
  ops: number;
  ok: number;
  failures: string[];
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  chatSent: number;
  chatInOrder: boolean;
  registrations: number;
}

/**
 * Three real clients: A and B chat peer to peer and look each other up; C
 * deregisters and registers again under new names and lists. Runs until
 * `done` resolves, then checks the chat and stops them.
 */
async function runClients(
  server: string,
  dir: string,
  tag: string,
  opTimeoutMs: number,
  started: () => void,
  done: Promise<void>,
  cleanup: Cleanup,
): Promise<ClientFigures> {
  const names = { a: `Fuzz A ${tag}`, b: `Fuzz B ${tag}`, c: `Fuzz C ${tag}` };
  const a = new ClientProcess(names.a, server, dir);
  const b = new ClientProcess(names.b, server, dir);
  const c = new ClientProcess(names.c, server, dir);
  const all = [a, b, c];
  cleanup.add(() => Promise.resolve(all.forEach((client) => client.kill())));
  // Start-up (type checking, first run) is not an operation under test.
  const startMs = Math.max(opTimeoutMs, 60_000);
  await Promise.all(all.map((client) => client.run("register", startMs)));
  const accepting = b.run("accept", startMs);
  await a.run(`connect ${names.b}`, startMs);
  await accepting;
  for (const client of all) {
    client.latencies.length = 0;
    client.counts.run = client.counts.ok = 0;
  }
  started();
  let stop = false;
  done.then(() => stop = true);
  let sentA = 0, sentB = 0, registrations = 1;
  const loop = async (client: ClientProcess, step: (i: number) => string) => {
    for (let i = 0; !stop && client.failures.length === 0; i++) {
      await client.run(step(i), opTimeoutMs);
      await sleep(40);
    }
  };
  await Promise.all([
    loop(a, (i) => {
      const op = [
        () => `send a${sentA++}`,
        () => "list",
        () => `lookup ${names.b}`,
        () => `tcp ping ${i}`,
      ];
      return op[i % op.length]();
    }),
    loop(b, (i) => {
      const op = [() => `send b${sentB++}`, () => `lookup ${names.a}`, () => "list"];
      return op[i % op.length]();
    }),
    loop(c, (i) => {
      const op = [
        () => "deregister",
        () => `register ${names.c}.${registrations++}`,
        () => "list",
        () => `lookup ${names.a}`,
      ];
      return op[i % op.length]();
    }),
  ]);
  const failures = all.flatMap((client) => client.failures);
  // Every message, exactly once and in order, each way.
  const expectA = Array.from({ length: sentA }, (_, i) => `a${i}`);
  const expectB = Array.from({ length: sentB }, (_, i) => `b${i}`);
  if (failures.length === 0) {
    await b.run(`wait messages ${sentA} within 10`, 15_000);
    await a.run(`wait messages ${sentB} within 10`, 15_000);
    await a.run("terminate", 15_000);
  }
  const chatInOrder = JSON.stringify(b.messages) === JSON.stringify(expectA) &&
    JSON.stringify(a.messages) === JSON.stringify(expectB);
  const latencies = all.flatMap((client) => client.latencies).sort((x, y) => x - y);
  await Promise.all(all.map((client) => client.finish()));
  return {
    ops: all.reduce((n, client) => n + client.counts.run, 0),
    ok: all.reduce((n, client) => n + client.counts.ok, 0),
    failures: all.flatMap((client) => client.failures),
    p50Ms: Math.round(percentile(latencies, 0.5)),
    p99Ms: Math.round(percentile(latencies, 0.99)),
    maxMs: Math.round(latencies.at(-1) ?? 0),
    chatSent: sentA + sentB,
    chatInOrder,
    registrations,
  };
}

// ------------------------------------------------------------------ own sessions

/**
 * Opens the fuzzer's own sessions with real requests, and keeps those
 * requests (as sent) for replay, the tokens live and stale.
 */
async function ownSessions(host: string, port: number, tag: string): Promise<FuzzContext> {
  const captured: Uint8Array[] = [];
  const udp = new UdpRequester({
    hostname: sourceAddress(0),
    server: { hostname: host, port },
    record: captured,
  });
  const context: FuzzContext = {
    liveTokens: [],
    staleTokens: [],
    captured,
    names: [],
    newNamePrefix: `Fz${tag}`,
  };
  try {
    for (let i = 1; i <= 4; i++) {
      const name = `Fz${tag} ${i}`;
      const ok = replyOf(
        await udp.request({
          type: "register",
          name,
          udpPort: udp.localPort,
          tcpPort: DECLARED_TCP_PORT,
        }),
        "register_ok",
      );
      if (ok === undefined) continue;
      context.names.push(name);
      context.staleTokens.push(ok.token);
    }
    for (const [i, name] of context.names.entries()) {
      const ok = replyOf(
        await udp.request({
          type: "login",
          name,
          secret: new Uint8Array(0), // the requester's channel key registered it
          udpPort: udp.localPort,
          tcpPort: DECLARED_TCP_PORT,
        }),
        "login_ok",
      );
      if (ok === undefined) continue;
      const token = ok.token;
      const other = context.names[(i + 1) % context.names.length];
      await udp.request({ type: "heartbeat", token });
      await udp.request({ type: "list", token, after: "" });
      await udp.request({ type: "lookup", token, name: other, nonce: new Uint8Array(0) });
      await udp.request({ type: "watch", token, on: 1 });
      await udp.request({ type: "text", name, token, text: `fuzz ${tag} says hello` });
      await udp.request({ type: "delete", token, name: "nothing.csv" });
      if (i === context.names.length - 1) {
        await udp.request({ type: "logout", token });
        context.staleTokens.push(token);
      } else {
        context.liveTokens.push(token);
      }
    }
  } finally {
    await udp.close();
  }
  return context;
}

// ------------------------------------------------------------------ UDP fuzzing

interface UdpFigures {
  sent: number;
  sendErrors: number;
  seconds: number;
  kernelDrops: number | undefined;
  answered: number;
  probesSent: number;
  probesAnswered: number;
  replyTypes: Record<string, number>;
  finalRate: number;
  byCategory: Record<string, number>;
}

const REPLY_NAMES: Record<number, string> = {
  2: "hello_ok",
  4: "register_ok",
  6: "deregister_ok",
  8: "text_ok",
  9: "error",
  11: "login_ok",
  13: "logout_ok",
  15: "heartbeat_ok",
  17: "list_page",
  19: "lookup_ok",
  21: "watch_ok",
  22: "presence",
  24: "session_ended",
  31: "delete_ok",
};

async function fuzzUdp(
  options: Options,
  server: ServerUnderTest,
  pool: readonly FuzzDatagram[],
  stopped: () => boolean,
  onProgress: (sent: number) => void,
): Promise<UdpFigures> {
  const sockets: Deno.DatagramConn[] = [];
  for (let s = 0; s < options.sources; s++) {
    for (let k = 0; k < options.socketsPerSource; k++) {
      sockets.push(Deno.listenDatagram({ transport: "udp", hostname: sourceAddress(s), port: 0 }));
    }
  }
  const figures: UdpFigures = {
    sent: 0,
    sendErrors: 0,
    seconds: 0,
    kernelDrops: undefined,
    answered: 0,
    probesSent: 0,
    probesAnswered: 0,
    replyTypes: {},
    finalRate: 0,
    byCategory: {},
  };
  const replyCounts = new Map<number, number>();
  const readers = sockets.map(async (socket) => {
    const buffer = new Uint8Array(65536);
    while (true) {
      let data: Uint8Array;
      try {
        [data] = await socket.receive(buffer);
      } catch (error) {
        if (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted) {
          return;
        }
        continue;
      }
      figures.answered++;
      replyCounts.set(data[3], (replyCounts.get(data[3]) ?? 0) + 1);
    }
  });
  const random = new FastRandom(options.seed * 2654435761);
  const clientIds = new Uint8Array(8 * CLIENT_IDS);
  for (let i = 0; i < clientIds.length; i += 65536) {
    crypto.getRandomValues(clientIds.subarray(i, i + 65536));
  }
  const to: Deno.NetAddr = { transport: "udp", hostname: options.host, port: server.udpPort };
  const dropsAtStart = socketDrops(server.udpPort);
  let lastDrops = dropsAtStart ?? 0;
  let lastSent = 0;
  let lastAdjust = performance.now();
  let rate = Math.min(options.maxRate, 15_000);
  let budget = 0;
  let last = performance.now();
  const began = last;
  let next = 0;
  while (figures.sent < options.count && !stopped()) {
    const now = performance.now();
    // Small bursts: the server's socket holds only a few hundred datagrams.
    budget = Math.min(budget + (now - last) * rate / 1000, Math.max(8, rate / 500));
    last = now;
    if (now - lastAdjust >= SAMPLE_MS) {
      // Back off when the server's socket overflowed since the last look.
      const drops = socketDrops(server.udpPort);
      if (drops !== undefined) {
        const dropped = drops - lastDrops;
        const sent = figures.sent - lastSent;
        if (dropped > sent * 0.01) rate = Math.max(1000, rate * 0.8);
        else if (dropped <= sent * 0.002) rate = Math.min(options.maxRate, rate * 1.1);
        lastDrops = drops;
      }
      lastSent = figures.sent;
      lastAdjust = now;
      onProgress(figures.sent);
    }
    const batch = Math.min(Math.floor(budget), options.count - figures.sent, 64);
    if (batch <= 0) {
      await sleep(1);
      continue;
    }
    budget -= batch;
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < batch; i++) {
      const entry = pool[next];
      next = (next + 1 + random.below(3)) % pool.length;
      if (entry.category === "probe") figures.probesSent++;
      figures.byCategory[entry.category] = (figures.byCategory[entry.category] ?? 0) + 1;
      const bytes = variantForSend(entry, random, clientIds);
      sends.push(
        sockets[figures.sent % sockets.length].send(bytes, to).catch(() => figures.sendErrors++),
      );
      figures.sent++;
    }
    await Promise.all(sends);
  }
  figures.seconds = (performance.now() - began) / 1000;
  figures.finalRate = Math.round(rate);
  await sleep(300); // the last answers
  for (const socket of sockets) socket.close();
  await Promise.all(readers);
  const dropsAtEnd = socketDrops(server.udpPort);
  if (dropsAtStart !== undefined && dropsAtEnd !== undefined) {
    figures.kernelDrops = dropsAtEnd - dropsAtStart;
  }
  figures.probesAnswered = replyCounts.get(2) ?? 0;
  for (const [code, count] of replyCounts) {
    figures.replyTypes[REPLY_NAMES[code] ?? `type ${code}`] = count;
  }
  return figures;
}

// ------------------------------------------------------------------ TCP fuzzing

interface TcpFigures {
  streams: number;
  byKind: Record<string, number>;
  answeredStreams: number;
  bytesIn: number;
  refused: number;
  halfOpenHeld: number;
  halfOpenClosedByServer: number;
}

type TcpKind =
  | "garbage"
  | "zero_length"
  | "huge_length"
  | "truncated_frame"
  | "mutated_frames"
  | "valid_requests"
  | "stray_chunks"
  | "slow"
  | "reset"
  | "byte_by_byte";

const TCP_KINDS: readonly [TcpKind, number][] = [
  ["garbage", 14],
  ["zero_length", 5],
  ["huge_length", 10],
  ["truncated_frame", 10],
  ["mutated_frames", 20],
  ["valid_requests", 15],
  ["stray_chunks", 6],
  ["slow", 4],
  ["reset", 10],
  ["byte_by_byte", 6],
];

function u32be(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n >>> 0);
  return out;
}

/** The bytes a malformed (or valid-looking) TCP stream carries, in writes. */
function tcpPayload(
  kind: TcpKind,
  random: FastRandom,
  pool: readonly FuzzDatagram[],
): Uint8Array[] {
  const bytes = (n: number) => {
    const out = new Uint8Array((n + 3) & ~3);
    const view = new DataView(out.buffer);
    for (let i = 0; i < out.length; i += 4) view.setUint32(i, random.u32());
    return out.subarray(0, n);
  };
  const client = toHex(bytes(8));
  const token = bytes(random.below(3) === 0 ? 15 : 16);
  const reqId = random.u32();
  const frame = (message: Message) => encodeFrame(encodeMessage(message));
  switch (kind) {
    case "garbage":
      return [bytes(1 + random.below(8192))];
    case "zero_length":
      return [u32be(0), bytes(random.below(64))];
    case "huge_length":
      return [u32be(MAX_FRAME_BYTES + 1 + random.below(0xfffeffff)), bytes(random.below(1024))];
    case "truncated_frame": {
      const body = pool[random.below(pool.length)].bytes;
      const declared = Math.max(
        1,
        Math.min(MAX_FRAME_BYTES, body.length + 1 + random.below(60000)),
      );
      return [u32be(declared), body.subarray(0, Math.min(body.length, declared - 1))];
    }
    case "mutated_frames": {
      const frames: Uint8Array[] = [];
      for (let n = 1 + random.below(5); n > 0; n--) {
        const body = pool[random.below(pool.length)].bytes;
        if (body.length > 0 && body.length <= MAX_FRAME_BYTES) frames.push(encodeFrame(body));
      }
      return frames;
    }
    case "valid_requests":
      return [
        frame({ type: "hello", reqId, client }),
        frame({
          type: "text",
          reqId: reqId + 1,
          client,
          name: "",
          token,
          text: "x".repeat(random.below(60000)),
        }),
        frame({ type: "files", reqId: reqId + 2, client, token }),
        frame({ type: "download", reqId: reqId + 3, client, token, name: "a.csv" }),
        frame({ type: "delete", reqId: reqId + 4, client, token, name: "a.csv" }),
        frame({ type: "list", reqId: reqId + 5, client, token, after: "" }),
      ];
    case "stray_chunks":
      return [
        frame({ type: "file_chunk", reqId, data: bytes(random.below(60000)) }),
        frame({
          type: "upload",
          reqId: reqId + 1,
          client,
          token,
          name: "f.bin",
          size: random.below(2) === 0 ? 2 ** 53 - 1 : 100,
          sha256: bytes(32),
        }),
        frame({ type: "file_chunk", reqId: reqId + 1, data: bytes(200) }),
      ];
    case "slow":
      return [u32be(MAX_FRAME_BYTES), ...Array.from({ length: 10 }, () => bytes(64))];
    case "reset":
      return [];
    case "byte_by_byte": {
      const whole = frame({ type: "hello", reqId, client });
      return [...whole].map((b) => Uint8Array.of(b));
    }
  }
}

interface StreamOutcome {
  bytesIn: number;
  refused: boolean;
  closedByServer: boolean;
}

/** How one TCP stream behaves after its writes. */
interface StreamOptions {
  /** A pause between writes, ms. */
  paceMs?: number;
  /** How long to wait for the server after the writes, ms. */
  holdMs: number;
  /** Half-close after the writes (end of stream); otherwise stay silent. */
  end: boolean;
  /** Reset the connection as soon as it opens. */
  reset?: boolean;
  /** Ends the stream early. */
  signal?: AbortSignal;
}

/** One TCP stream from a chosen source address: connect, write, then end, hold or reset. */
function tcpStream(
  host: string,
  port: number,
  localAddress: string,
  writes: Uint8Array[],
  options: StreamOptions,
): Promise<StreamOutcome> {
  return new Promise((resolve) => {
    const outcome: StreamOutcome = { bytesIn: 0, refused: false, closedByServer: false };
    const socket = net.connect({ host, port, localAddress });
    let connected = false;
    let done = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", finish);
      socket.destroy();
      resolve(outcome);
    };
    options.signal?.addEventListener("abort", finish);
    socket.on("data", (data: Uint8Array) => outcome.bytesIn += data.length);
    socket.on("error", () => {
      if (!connected) outcome.refused = true;
    });
    socket.on("end", () => outcome.closedByServer = true);
    socket.on("close", finish);
    socket.on("connect", async () => {
      connected = true;
      if (options.reset) {
        const s = socket as unknown as { resetAndDestroy?: () => void };
        if (s.resetAndDestroy) s.resetAndDestroy();
        else socket.destroy();
        return;
      }
      for (const chunk of writes) {
        if (done) return;
        if (chunk.length > 0) socket.write(chunk);
        if (options.paceMs) await sleep(options.paceMs);
      }
      if (done) return;
      clearTimeout(timer);
      timer = setTimeout(finish, options.holdMs);
      if (options.end) socket.end();
    });
    // Connecting and writing get a bounded time too.
    timer = setTimeout(finish, options.holdMs + 10_000);
  });
}

async function fuzzTcp(
  options: Options,
  server: ServerUnderTest,
  pool: readonly FuzzDatagram[],
  stopped: () => boolean,
): Promise<TcpFigures> {
  const figures: TcpFigures = {
    streams: 0,
    byKind: {},
    answeredStreams: 0,
    bytesIn: 0,
    refused: 0,
    halfOpenHeld: 0,
    halfOpenClosedByServer: 0,
  };
  const random = new FastRandom(options.seed * 40503 + 7);
  const total = TCP_KINDS.reduce((sum, [, w]) => sum + w, 0);
  const pickKind = (): TcpKind => {
    let pick = random.below(total);
    for (const [kind, weight] of TCP_KINDS) {
      pick -= weight;
      if (pick < 0) return kind;
    }
    return "garbage";
  };
  // Half-open connections: nothing, part of a length prefix, or a prefix
  // declaring the largest frame and a few bytes of it; then silence, all along.
  const release = new AbortController();
  const holders = Array.from({ length: options.halfOpen }, async (_, i) => {
    const partial = i % 3 === 2
      ? [u32be(MAX_FRAME_BYTES), Uint8Array.of(0x53, 0x57)]
      : [u32be(MAX_FRAME_BYTES).subarray(0, i % 3 === 0 ? 0 : 2)];
    while (!stopped()) {
      figures.halfOpenHeld++;
      const source = sourceAddress(i % options.sources);
      const outcome = await tcpStream(options.host, server.tcpPort, source, partial, {
        holdMs: 3_600_000,
        end: false,
        signal: release.signal,
      });
      if (outcome.closedByServer && !stopped()) figures.halfOpenClosedByServer++;
      if (!stopped()) await sleep(200);
    }
  });
  const streams = new Set<Promise<void>>();
  const began = performance.now();
  while (!stopped()) {
    if (options.tcpRate === 0) {
      await sleep(50);
      continue;
    }
    const due = Math.floor((performance.now() - began) / 1000 * options.tcpRate);
    if (figures.streams >= due || streams.size >= 64) {
      await sleep(5);
      continue;
    }
    const kind = pickKind();
    figures.streams++;
    figures.byKind[kind] = (figures.byKind[kind] ?? 0) + 1;
    const source = sourceAddress(random.below(options.sources));
    const stream = tcpStream(options.host, server.tcpPort, source, tcpPayload(kind, random, pool), {
      paceMs: kind === "slow" ? 100 : undefined,
      holdMs: kind === "valid_requests" ? 2000 : 300,
      end: kind !== "slow",
      reset: kind === "reset",
    }).then((outcome) => {
      if (outcome.bytesIn > 0) figures.answeredStreams++;
      figures.bytesIn += outcome.bytesIn;
      if (outcome.refused) figures.refused++;
    }).finally(() => streams.delete(stream));
    streams.add(stream);
  }
  await Promise.all(streams);
  release.abort();
  await Promise.all(holders);
  return figures;
}

// ------------------------------------------------------------------ liveness

interface ProbeFigures {
  /** Round trips of the UDP hellos answered, ms. */
  udpMs: number[];
  /** Round trips of the TCP hellos answered, ms. */
  tcpMs: number[];
  failures: string[];
}

/** A handshake over a new TCP connection; resolves to the round trip, or undefined. */
async function tcpHello(
  host: string,
  port: number,
  timeoutMs: number,
  channel: () => ServerChannel,
): Promise<number | undefined> {
  const started = performance.now();
  let tcp = undefined as TcpExchange | undefined;
  let over = false;
  const attempt = (async () => {
    tcp = await TcpExchange.connect(host, port, channel());
    return over ? undefined : true;
  })().catch(() => undefined);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const done = await Promise.race([
    attempt,
    new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), timeoutMs)),
  ]);
  clearTimeout(timer);
  over = true;
  // Closing ends a read still waiting; a connection made later closes when it is made.
  attempt.finally(() => tcp?.[Symbol.dispose]());
  tcp?.[Symbol.dispose]();
  return done ? performance.now() - started : undefined;
}

/**
 * Asks the server, from 127.0.0.1, for a `hello` over UDP and one over TCP
 * every second, each within the operation timeout, until stopped.
 */
async function probeLiveness(
  host: string,
  server: ServerUnderTest,
  timeoutMs: number,
  stopped: () => boolean,
): Promise<ProbeFigures> {
  const figures: ProbeFigures = { udpMs: [], tcpMs: [], failures: [] };
  const udp = new UdpRequester({
    hostname: "127.0.0.1",
    server: { hostname: host, port: server.udpPort },
  });
  const began = performance.now();
  try {
    while (!stopped()) {
      const at = ((performance.now() - began) / 1000).toFixed(1);
      const t0 = performance.now();
      const reply = await udp.request({ type: "hello" }, { timeoutMs, retransmitMs: 500 });
      if (reply?.type === "hello_ok") figures.udpMs.push(performance.now() - t0);
      else {figures.failures.push(
          `a UDP hello from 127.0.0.1 had no answer within ${timeoutMs} ms (${at} s in)`,
        );}
      const ms = await tcpHello(host, server.tcpPort, timeoutMs, () => udp.tcpChannel());
      if (ms !== undefined) figures.tcpMs.push(ms);
      else {figures.failures.push(
          `a TCP hello from 127.0.0.1 had no answer within ${timeoutMs} ms (${at} s in)`,
        );}
      await sleep(1000);
    }
  } finally {
    await udp.close();
  }
  return figures;
}

/** The counters of the server's status line, where it printed one. */
interface ServerCounters {
  datagramsIn: number;
  malformed: number;
  rateLimited: number;
  requests: number;
  tcpRefused: number;
  tcpTimedOut: number;
}

function serverCounters(line: string | undefined): ServerCounters | undefined {
  if (line === undefined) return undefined;
  const n = (pattern: RegExp) => Number(pattern.exec(line)?.[1] ?? NaN);
  return {
    datagramsIn: n(/\bin (\d+) datagrams?\b/),
    malformed: n(/(\d+) malformed/),
    rateLimited: n(/(\d+) rate-limited/),
    requests: n(/(\d+) requests?;/),
    tcpRefused: n(/(\d+) TCP refused/),
    tcpTimedOut: n(/(\d+) TCP timed out/),
  };
}

function counterDelta(
  before: ServerCounters | undefined,
  after: ServerCounters | undefined,
): ServerCounters | undefined {
  if (before === undefined || after === undefined) return undefined;
  const out = { ...after };
  for (const key of Object.keys(out) as (keyof ServerCounters)[]) out[key] -= before[key];
  return out;
}

// ------------------------------------------------------------------ main

interface Summary {
  ok: boolean;
  problems: string[];
  seed: number;
  udp: UdpFigures;
  tcp: TcpFigures;
  rss: {
    firstKb: number;
    peakKb: number;
    lastKb: number;
    firstHalfGrowthKb: number;
    secondHalfGrowthKb: number;
    samples: number;
  };
  probes: { udpMaxMs: number; tcpMaxMs: number; count: number };
  server?: ServerCounters;
  clients?: ClientFigures;
  serverExit?: string;
  seconds: number;
}

async function run(options: Options, cleanup: Cleanup): Promise<number> {
  const started = performance.now();
  const dir = await Deno.makeTempDir({ prefix: "switchboard_fuzz_" });
  cleanup.add(() => Deno.remove(dir, { recursive: true }));
  let server: ServerUnderTest;
  if (options.target === undefined) {
    server = await startServer(dir, options.host);
    cleanup.add(() => server.stop());
  } else {
    const pid = options.target.pid ?? await findServerPid(options.target.udpPort);
    if (pid === undefined) {
      console.error(
        `error: no process owns UDP port ${options.target.udpPort} here; pass --pid PID`,
      );
      return 1;
    }
    server = {
      ...options.target,
      pid,
      tail: [],
      stop: () => Promise.resolve(null),
      status: () => Promise.resolve(undefined),
    };
  }
  const tag = options.seed.toString(36);
  console.log(
    `Fuzzing the server at ${options.host} UDP ${server.udpPort} TCP ${server.tcpPort} ` +
      `(pid ${server.pid}); seed ${options.seed}`,
  );

  // Memory and liveness, sampled all along.
  const samples: { t: number; kb: number }[] = [];
  let fuzzFrom = 0;
  let fuzzTo = Infinity;
  const sampler = setInterval(() => {
    const kb = rssKb(server.pid);
    if (kb !== undefined) samples.push({ t: performance.now(), kb });
    else if (!processExists(server.pid)) server.exited ??= "vanished";
  }, SAMPLE_MS);
  cleanup.add(() => Promise.resolve(clearInterval(sampler)));

  const context = await ownSessions(options.host, server.udpPort, tag);
  const poolStart = performance.now();
  const pool = new FuzzCorpus(options.seed, context).build(options.pool);
  console.log(
    `Built ${pool.length} datagrams in ${((performance.now() - poolStart) / 1000).toFixed(1)} s ` +
      `(${context.captured.length} captured requests, ${context.liveTokens.length} live and ` +
      `${context.staleTokens.length} stale tokens)`,
  );

  const { promise: clientsReady, resolve: clientsAreReady } = Promise.withResolvers<void>();
  const { promise: fuzzDone, resolve: fuzzIsDone } = Promise.withResolvers<void>();
  const clients = options.clients
    ? runClients(
      `${options.host}:${server.udpPort}`,
      dir,
      tag,
      options.opTimeoutMs,
      clientsAreReady,
      fuzzDone,
      cleanup,
    )
    : (clientsAreReady(), undefined);
  clients?.catch(() => clientsAreReady());
  await clientsReady;
  const stop = () => server.exited !== undefined || cleanup.interrupted;
  const countersBefore = serverCounters(await server.status());
  let probing = true;
  const probes = probeLiveness(options.host, server, options.opTimeoutMs, () => !probing || stop());
  fuzzFrom = performance.now();
  let lastReport = fuzzFrom;
  const [udp, tcp] = await (async () => {
    let udpDone = false;
    const tcpRun = fuzzTcp(options, server, pool, () => udpDone || stop());
    const udpRun = await fuzzUdp(options, server, pool, stop, (sent) => {
      if (performance.now() - lastReport < 10_000) return;
      lastReport = performance.now();
      const kb = samples.at(-1)?.kb ?? 0;
      console.log(
        `  ${sent} sent, ${((lastReport - fuzzFrom) / 1000).toFixed(0)} s, server RSS ${mb(kb)}`,
      );
    });
    udpDone = true;
    return [udpRun, await tcpRun] as const;
  })();
  fuzzTo = performance.now();
  fuzzIsDone();
  probing = false;
  const probeFigures = await probes;
  const countersAfter = serverCounters(await server.status());
  const clientFigures = await clients;
  await sleep(SAMPLE_MS);
  clearInterval(sampler);

  // ------------------------------------------------------------ checks
  const problems: string[] = [];
  const during = samples.filter((s) => s.t >= fuzzFrom && s.t <= fuzzTo);
  const kbs = (during.length > 0 ? during : samples).map((s) => s.kb);
  const median = (values: number[]) => [...values].sort((x, y) => x - y)[values.length >> 1] ?? 0;
  const mid = during.filter((s) =>
    s.t >= fuzzFrom + (fuzzTo - fuzzFrom) * 0.45 &&
    s.t <= fuzzFrom + (fuzzTo - fuzzFrom) * 0.55
  ).map((s) => s.kb);
  const end = during.filter((s) => s.t >= fuzzFrom + (fuzzTo - fuzzFrom) * 0.9).map((s) => s.kb);
  const firstKb = samples.filter((s) => s.t < fuzzFrom).at(-1)?.kb ?? samples[0]?.kb ?? 0;
  const known = mid.length > 0 && end.length > 0;
  const rss = {
    firstKb,
    peakKb: Math.max(0, ...samples.map((s) => s.kb)),
    lastKb: samples.at(-1)?.kb ?? 0,
    firstHalfGrowthKb: known ? median(mid) - firstKb : 0,
    secondHalfGrowthKb: known ? median(end) - median(mid) : 0,
    samples: kbs.length,
  };
  if (server.exited !== undefined) {
    problems.push(
      `the server ${server.exited} during the run: ${server.tail.slice(-3).join(" | ")}`,
    );
  }
  if (rss.peakKb > options.maxRssMb * 1024) {
    problems.push(
      `the server's memory peaked at ${mb(rss.peakKb)}, above --max-rss ${options.maxRssMb} MB`,
    );
  }
  // A bounded server's memory levels off: it may grow early (caches fill, the
  // heap finds its size) but not keep climbing as fast in the second half.
  if (
    rss.secondHalfGrowthKb > options.maxGrowthMb * 1024 &&
    rss.secondHalfGrowthKb > rss.firstHalfGrowthKb / 2
  ) {
    problems.push(
      `the server's memory kept growing: ${mb(rss.firstHalfGrowthKb)} over the first half of ` +
        `the run, ${mb(rss.secondHalfGrowthKb)} over the second (--max-growth ` +
        `${options.maxGrowthMb} MB)`,
    );
  }
  for (const failure of probeFigures.failures.slice(0, 5)) problems.push(failure);
  if (clientFigures !== undefined) {
    for (const failure of clientFigures.failures.slice(0, 5)) problems.push(failure);
    if (clientFigures.failures.length === 0 && !clientFigures.chatInOrder) {
      problems.push("the peer chat lost, duplicated or reordered messages");
    }
  }
  // A fresh request from 127.0.0.1 is still answered.
  if (server.exited === undefined) {
    using udp = new UdpRequester({
      hostname: "127.0.0.1",
      server: { hostname: options.host, port: server.udpPort },
    });
    const hello = await udp.request({ type: "hello" }, { timeoutMs: options.opTimeoutMs });
    if (hello?.type !== "hello_ok") {
      problems.push("the server did not answer a hello after the run");
    }
    await udp.close();
  }
  let serverExit: string | undefined;
  if (options.target === undefined) {
    const code = await server.stop();
    serverExit = code === 0 ? "stopped cleanly" : `stop gave exit code ${code}`;
    if (code !== 0 && server.exited === undefined) {
      problems.push(`the server's stop gave exit code ${code}`);
    }
  }

  const summary: Summary = {
    ok: problems.length === 0,
    problems,
    seed: options.seed,
    udp,
    tcp,
    rss,
    probes: {
      udpMaxMs: Math.round(Math.max(0, ...probeFigures.udpMs)),
      tcpMaxMs: Math.round(Math.max(0, ...probeFigures.tcpMs)),
      count: probeFigures.udpMs.length + probeFigures.tcpMs.length,
    },
    server: counterDelta(countersBefore, countersAfter),
    clients: clientFigures,
    serverExit,
    seconds: (performance.now() - started) / 1000,
  };
  console.log(summaryLine(summary));
  if (options.json) console.log(JSON.stringify({ event: "fuzz_summary", ...summary }));
  for (const problem of problems) console.error(`error: ${problem}`);
  return problems.length === 0 ? 0 : 1;
}

function signed(kb: number): string {
  return `${kb >= 0 ? "+" : "-"}${mb(Math.abs(kb))}`;
}

function summaryLine(s: Summary): string {
  const u = s.udp;
  const reached = u.kernelDrops === undefined
    ? "kernel drops unknown"
    : `${(100 * (u.sent - u.kernelDrops) / u.sent).toFixed(1)}% reached the server's socket ` +
      `(${u.kernelDrops} dropped by the kernel)`;
  const probes = u.probesSent === 0
    ? ""
    : `; probes answered ${(100 * u.probesAnswered / u.probesSent).toFixed(1)}%`;
  const c = s.clients;
  const k = s.server;
  const handled = k === undefined
    ? ""
    : `; the server counted ${k.datagramsIn} datagrams in: ${k.malformed} malformed, ` +
      `${k.rateLimited} rate-limited, ${k.requests} requests handled`;
  const clients = c === undefined
    ? "no clients"
    : `client ops ${c.ok}/${c.ops} ok (p50 ${c.p50Ms} ms, ` +
      `p99 ${c.p99Ms} ms, max ${c.maxMs} ms), chat ${c.chatSent} messages ` +
      `${c.chatInOrder ? "in order" : "NOT in order"}, ${c.registrations} registrations`;
  return `fuzz: ${s.ok ? "ok" : "FAILED"}: ${u.sent} datagrams in ${u.seconds.toFixed(1)} s ` +
    `(${
      Math.round(u.sent / u.seconds)
    }/s); ${reached}${handled}; ${u.answered} answered${probes}; ` +
    `${s.tcp.streams} TCP streams (${s.tcp.answeredStreams} answered) and ${s.tcp.halfOpenHeld} ` +
    `half-open; server RSS first ${mb(s.rss.firstKb)}, peak ${mb(s.rss.peakKb)}, last ` +
    `${mb(s.rss.lastKb)} (growth ${signed(s.rss.firstHalfGrowthKb)} over the first half, ` +
    `${
      signed(s.rss.secondHalfGrowthKb)
    } over the second); ${clients}; hellos from 127.0.0.1 max UDP ${s.probes.udpMaxMs} ms, TCP ` +
    `${s.probes.tcpMaxMs} ms; server ${
      s.serverExit ?? (s.problems.length ? "see errors" : "alive")
    }; ` +
    `seed ${s.seed}`;
}

async function main(args: string[]): Promise<number> {
  const options = flagsOrExitCode(() => parseOptions(args), HELP);
  if (typeof options === "number") return options;
  const cleanup = new Cleanup();
  try {
    return await run(options, cleanup);
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    return 1;
  } finally {
    await cleanup.close();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
