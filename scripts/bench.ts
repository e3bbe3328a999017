/**
 * Measures register+deregister round trips per second over loopback UDP
 * against the real Switchboard server, and the same load against a bare Deno
 * UDP echo server in the same run, and prints the ratio. Both servers run as
 * separate processes; this process is the load generator.
 *
 * Usage: `deno task bench [--seconds S] [--warmup S] [--concurrency K] [--rounds N] [--json]`
 *
 * See docs/BENCHMARKS.md for what each figure means.
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { fromFileUrl, join } from "@std/path";
import { DEFAULT_RETRY_POLICY, retryDelay } from "../lib/client/retry_policy.ts";
import { toHex } from "../lib/hex.ts";
import { cryptoRandom } from "../lib/random.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import { errorCodeName } from "../lib/wire/error_code.ts";
import { type Message, type MessageOf, TOKEN_BYTES } from "../lib/wire/messages.ts";
import { rejectUnknownFlags, UsageError } from "../lib/usage_error.ts";

const HELP = `bench: Switchboard register+deregister round trips/s vs a bare UDP echo server

Usage: deno task bench [flags]

Flags:
  --seconds S       measured seconds per target and round (default 3)
  --warmup S        warm-up seconds before each measurement, not counted (default 0.5)
  --concurrency K   clients with one request in flight each (default 16)
  --rounds N        measure echo then Switchboard N times, alternating (default 2)
  --json            print the figures as JSON instead of a table
  -h, --help        show this help

Both servers run as separate processes on 127.0.0.1 with ports chosen at run
time; the Switchboard server gets a fresh data directory, removed at the end.`;

const REPO = fromFileUrl(new URL("../", import.meta.url));
const ECHO_SCRIPT = fromFileUrl(new URL("./udp_echo_server.ts", import.meta.url));
const HOST = "127.0.0.1";
/** The TCP port the bench clients declare; the server only checks it is >= 1024. */
const DECLARED_TCP_PORT = 40000;
/** How long a request may stay unanswered once the measured window is over. */
const DRAIN_GIVE_UP_MS = 2000;
const STARTUP_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 5000;
const RECEIVE_BUFFER_BYTES = 2048;

interface BenchFlags {
  seconds: number;
  warmup: number;
  concurrency: number;
  rounds: number;
  json: boolean;
}

type Target = "echo" | "switchboard";

/** Figures for one target, summed over rounds. */
interface TargetResult {
  target: Target;
  measuredSeconds: number;
  roundTrips: number;
  pairs: number;
  roundTripsPerSecond: number;
  pairsPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  retransmissions: number;
  errors: number;
  errorSamples: string[];
}

/** One round's throughputs and their ratio. */
interface RoundResult {
  round: number;
  echoRoundTripsPerSecond: number;
  switchboardRoundTripsPerSecond: number;
  ratio: number;
}

interface PhaseResult {
  counters: PhaseCounters;
  measuredMs: number;
}

interface PhaseCounters {
  roundTrips: number;
  pairs: number;
  latencies: number[];
  retransmissions: number;
  errors: number;
  errorSamples: string[];
}

// ---------------------------------------------------------------- flags

function parseFlags(args: string[]): BenchFlags | "help" {
  const parsed = parseArgs(args, {
    string: ["seconds", "warmup", "concurrency", "rounds"],
    boolean: ["json", "help"],
    alias: { h: "help" },
    default: { seconds: "3", warmup: "0.5", concurrency: "16", rounds: "2" },
  });
  rejectUnknownFlags(parsed, ["seconds", "warmup", "concurrency", "rounds", "json", "help", "h"]);
  if (parsed.help) return "help";
  return {
    seconds: numberFlag("--seconds", parsed.seconds, { min: 0.1, max: 3600 }),
    warmup: numberFlag("--warmup", parsed.warmup, { min: 0, max: 3600 }),
    concurrency: integerFlag("--concurrency", parsed.concurrency, { min: 1, max: 1024 }),
    rounds: integerFlag("--rounds", parsed.rounds, { min: 1, max: 100 }),
    json: parsed.json,
  };
}

function numberFlag(flag: string, value: string, range: { min: number; max: number }): number {
  const n = /^\d+(\.\d+)?$/.test(value) ? Number(value) : NaN;
  if (!(n >= range.min && n <= range.max)) {
    throw new UsageError(
      `${flag} must be a number from ${range.min} to ${range.max}, not "${value}"`,
    );
  }
  return n;
}

function integerFlag(flag: string, value: string, range: { min: number; max: number }): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= range.min && n <= range.max)) {
    throw new UsageError(
      `${flag} must be a whole number from ${range.min} to ${range.max}, not "${value}"`,
    );
  }
  return n;
}

// ---------------------------------------------------------------- processes

/** A child process that printed the port it listens on. */
interface Started {
  label: string;
  child: Deno.ChildProcess;
  port: number;
  /** Resolves when both output streams are drained. */
  drained: Promise<void>;
  /** The last lines it printed, for error messages. */
  tail: string[];
  /** Set by the first stopProcess(), so that the process gets one SIGTERM only. */
  stopped?: Promise<number | null>;
}

/** Every child spawned, so that cleanup stops them whatever happened. */
const children = new Set<Started>();

async function startProcess(
  label: string,
  args: string[],
  portLine: RegExp,
): Promise<Started> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const tail: string[] = [];
  const started: Started = { label, child, port: 0, drained: Promise.resolve(), tail };
  children.add(started);
  const { promise: portFound, resolve: foundPort } = Promise.withResolvers<number>();
  // Keep reading both streams for the whole run: the server prints one line
  // per registration, and a full pipe would stall it.
  started.drained = Promise.all([
    drainLines(child.stdout, tail, (line) => {
      const match = portLine.exec(line);
      if (match) foundPort(Number(match[1]));
    }),
    drainLines(child.stderr, tail, () => {}),
  ]).then(() => {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    portFound,
    child.status.then((status) => `exited with code ${status.code} before listening`),
    new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve("did not start listening in time"), STARTUP_TIMEOUT_MS);
    }),
  ]);
  clearTimeout(timer);
  if (typeof outcome === "string") {
    await stopProcess(started);
    throw new Error(`The ${label} ${outcome}:\n  ${tail.join("\n  ")}`);
  }
  started.port = outcome;
  return started;
}

async function drainLines(
  stream: ReadableStream<Uint8Array>,
  tail: string[],
  onLine: (line: string) => void,
): Promise<void> {
  let rest = "";
  try {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + text).split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        onLine(line);
        tail.push(line);
        if (tail.length > 20) tail.shift();
      }
    }
  } catch {
    // The process went away: nothing more to read.
  }
  if (rest !== "") tail.push(rest);
}

/**
 * Sends SIGTERM once (a second one makes the server exit at once, skipping its
 * shutdown), waits, then SIGKILL; returns the exit code.
 */
function stopProcess(started: Started): Promise<number | null> {
  started.stopped ??= terminate(started);
  return started.stopped;
}

async function terminate(started: Started): Promise<number | null> {
  const { child } = started;
  const exited = child.status.then((status) => status.code);
  try {
    child.kill("SIGTERM");
  } catch {
    // already gone
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  let code: number | null | undefined = await Promise.race([
    exited,
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), STOP_TIMEOUT_MS);
    }),
  ]);
  clearTimeout(timer);
  if (code === undefined) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await exited;
    code = null;
  }
  await started.drained;
  return code;
}

// ---------------------------------------------------------------- load

type Received = { data: Uint8Array } | { closed: true };

/** One simulated client: one socket, one client id, one request in flight. */
class LoadClient {
  readonly clientId = toHex(cryptoRandom.bytes(8));
  #socket: Deno.DatagramConn;
  #buffer = new Uint8Array(RECEIVE_BUFFER_BYTES);
  #pendingReceive: Promise<Received> | undefined;
  #nextReqId = Math.floor(cryptoRandom.next() * 0x1_0000_0000);

  constructor() {
    this.#socket = Deno.listenDatagram({ transport: "udp", hostname: HOST, port: 0 });
  }

  get localPort(): number {
    return (this.#socket.addr as Deno.NetAddr).port;
  }

  takeReqId(): number {
    const id = this.#nextReqId;
    this.#nextReqId = (this.#nextReqId + 1) >>> 0;
    return id;
  }

  /**
   * Sends one request and waits for the message whose reqId answers it,
   * retransmitting on the client's real schedule (500 ms doubling, jitter).
   * Returns the reply, or a string saying why there is none.
   */
  async roundTrip(
    port: number,
    reqId: number,
    bytes: Uint8Array,
    giveUpAt: () => number,
    counters: PhaseCounters,
  ): Promise<Message | string> {
    const to: Deno.NetAddr = { transport: "udp", hostname: HOST, port };
    let attempt = 0;
    while (true) {
      await this.#socket.send(bytes, to).catch(() => 0);
      const wait = Math.min(
        retryDelay(attempt, cryptoRandom, DEFAULT_RETRY_POLICY),
        Math.max(0, giveUpAt() - performance.now()),
      );
      const deadline = performance.now() + wait;
      while (true) {
        const received = await this.#receiveUntil(deadline);
        if (received === "timeout") break;
        if ("closed" in received) return "socket closed";
        let message: Message;
        try {
          message = decodeMessage(received.data);
        } catch {
          continue; // not a Switchboard message: ignore it, as a client does
        }
        if ("reqId" in message && message.reqId === reqId) return message;
        // A late reply to an earlier retransmission: keep waiting.
      }
      if (performance.now() >= giveUpAt()) return `no reply after ${attempt + 1} attempts`;
      attempt++;
      counters.retransmissions++;
    }
  }

  async #receiveUntil(deadline: number): Promise<Received | "timeout"> {
    this.#pendingReceive ??= this.#socket.receive(this.#buffer).then(
      ([data]) => ({ data: data.slice() }),
      () => ({ closed: true as const }),
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const result = await Promise.race([
      this.#pendingReceive,
      new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), Math.max(0, deadline - performance.now()));
      }),
    ]);
    clearTimeout(timer);
    if (result !== "timeout") this.#pendingReceive = undefined;
    return result;
  }

  async close(): Promise<void> {
    try {
      this.#socket.close();
    } catch {
      // already closed
    }
    await this.#pendingReceive;
  }
}

/**
 * Runs `concurrency` clients against one target: each registers a fresh
 * name, then deregisters it with the token from register_ok, again and
 * again. Against the echo server the same messages are sent and their echoes
 * awaited, so the datagrams, encoding and decoding are the same.
 */
async function runPhase(
  target: Target,
  port: number,
  clients: LoadClient[],
  flags: BenchFlags,
  round: number,
  interrupted: () => boolean,
): Promise<PhaseResult> {
  const counters: PhaseCounters = {
    roundTrips: 0,
    pairs: 0,
    latencies: [],
    retransmissions: 0,
    errors: 0,
    errorSamples: [],
  };
  const start = performance.now();
  const measureFrom = start + flags.warmup * 1000;
  const measureTo = measureFrom + flags.seconds * 1000;
  const giveUpAt = (sentAt: number) => () =>
    Math.min(
      sentAt + DEFAULT_RETRY_POLICY.giveUpMs,
      Math.max(measureTo + DRAIN_GIVE_UP_MS, sentAt + DRAIN_GIVE_UP_MS),
    );
  const fail = (what: string) => {
    counters.errors++;
    if (counters.errorSamples.length < 5) counters.errorSamples.push(what);
  };
  const record = (sentAt: number, doneAt: number) => {
    if (doneAt < measureFrom || doneAt >= measureTo) return false;
    counters.roundTrips++;
    counters.latencies.push(doneAt - sentAt);
    return true;
  };
  const fakeToken = new Uint8Array(TOKEN_BYTES);

  await Promise.all(clients.map(async (client, index) => {
    for (let seq = 0; performance.now() < measureTo && !interrupted(); seq++) {
      const name = `bench-${target[0]}${round}-${index}-${seq.toString(36)}`;
      const register: MessageOf<"register"> = {
        type: "register",
        reqId: client.takeReqId(),
        client: client.clientId,
        name,
        udpPort: client.localPort,
        tcpPort: DECLARED_TCP_PORT,
      };
      let sentAt = performance.now();
      const registered = await client.roundTrip(
        port,
        register.reqId,
        encodeMessage(register),
        giveUpAt(sentAt),
        counters,
      );
      let token: Uint8Array;
      if (typeof registered === "string") {
        if (interrupted()) return;
        fail(`register "${name}": ${registered}`);
        continue;
      } else if (target === "echo" && registered.type === "register") {
        token = fakeToken;
      } else if (registered.type === "register_ok") {
        token = registered.token;
      } else {
        fail(`register "${name}": ${replyText(registered)}`);
        continue;
      }
      record(sentAt, performance.now());

      const deregister: MessageOf<"deregister"> = {
        type: "deregister",
        reqId: client.takeReqId(),
        client: client.clientId,
        token,
      };
      sentAt = performance.now();
      const deregistered = await client.roundTrip(
        port,
        deregister.reqId,
        encodeMessage(deregister),
        giveUpAt(sentAt),
        counters,
      );
      if (typeof deregistered === "string") {
        if (interrupted()) return;
        fail(`deregister "${name}": ${deregistered}`);
        continue;
      }
      const expected = target === "echo" ? "deregister" : "deregister_ok";
      if (deregistered.type !== expected) {
        fail(`deregister "${name}": ${replyText(deregistered)}`);
        continue;
      }
      if (record(sentAt, performance.now())) counters.pairs++;
    }
  }));
  return { counters, measuredMs: measureTo - measureFrom };
}

function replyText(message: Message): string {
  if (message.type === "error") return `error ${errorCodeName(message.code)}: ${message.message}`;
  return `unexpected ${message.type}`;
}

function summarize(
  target: Target,
  phases: PhaseResult[],
): TargetResult {
  const latencies = phases.flatMap((p) => p.counters.latencies).sort((a, b) => a - b);
  const sum = (pick: (c: PhaseCounters) => number) =>
    phases.reduce((total, p) => total + pick(p.counters), 0);
  const seconds = phases.reduce((total, p) => total + p.measuredMs, 0) / 1000;
  const roundTrips = sum((c) => c.roundTrips);
  const pairs = sum((c) => c.pairs);
  return {
    target,
    measuredSeconds: seconds,
    roundTrips,
    pairs,
    roundTripsPerSecond: roundTrips / seconds,
    pairsPerSecond: pairs / seconds,
    latencyMs: {
      p50: percentile(latencies, 0.5),
      p90: percentile(latencies, 0.9),
      p99: percentile(latencies, 0.99),
      max: latencies.length === 0 ? 0 : latencies[latencies.length - 1],
    },
    retransmissions: sum((c) => c.retransmissions),
    errors: sum((c) => c.errors),
    errorSamples: phases.flatMap((p) => p.counters.errorSamples).slice(0, 5),
  };
}

function perRound(phases: Record<Target, PhaseResult[]>): RoundResult[] {
  const rate = (p: PhaseResult) => p.counters.roundTrips / (p.measuredMs / 1000);
  return phases.echo.map((echo, i) => {
    const echoRate = rate(echo);
    const switchboardRate = rate(phases.switchboard[i]);
    return {
      round: i + 1,
      echoRoundTripsPerSecond: echoRate,
      switchboardRoundTripsPerSecond: switchboardRate,
      ratio: echoRate === 0 ? 0 : switchboardRate / echoRate,
    };
  });
}

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

// ---------------------------------------------------------------- output

function machine() {
  return {
    os: Deno.build.os,
    arch: Deno.build.arch,
    osRelease: Deno.osRelease(),
    hardwareConcurrency: navigator.hardwareConcurrency,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
  };
}

function printTable(
  flags: BenchFlags,
  results: TargetResult[],
  rounds: RoundResult[],
  ratio: number,
  details: { registryLeft: number | undefined; dataDir: string },
): void {
  const m = machine();
  console.log("Switchboard bench: register+deregister over loopback UDP vs a bare UDP echo");
  console.log(
    `machine: ${m.os} ${m.arch}, kernel ${m.osRelease}, ${m.hardwareConcurrency} logical CPUs, ` +
      `Deno ${m.deno} (V8 ${m.v8})`,
  );
  console.log(
    `load: ${flags.concurrency} concurrent clients (one socket, one request in flight each), ` +
      `${flags.warmup} s warm-up + ${flags.seconds} s measured per target, ${flags.rounds} round(s)`,
  );
  console.log(
    `registry: written to ${details.dataDir} (set TMPDIR to measure another disk)`,
  );
  console.log("");
  const header = [
    "target",
    "round trips/s",
    "pairs/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "retransmits",
    "errors",
  ];
  const rows = results.map((r) => [
    r.target,
    r.roundTripsPerSecond.toFixed(1),
    r.pairsPerSecond.toFixed(1),
    r.latencyMs.p50.toFixed(2),
    r.latencyMs.p90.toFixed(2),
    r.latencyMs.p99.toFixed(2),
    r.latencyMs.max.toFixed(2),
    String(r.retransmissions),
    String(r.errors),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) =>
    cells.map((cell, i) => i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))
      .join("  ");
  console.log(line(header));
  console.log(line(widths.map((w) => "-".repeat(w))));
  for (const row of rows) console.log(line(row));
  console.log("");
  console.log(
    "A round trip is one request and its reply; a pair is one register plus one deregister\n" +
      "(2 round trips). The echo server answers at once; Switchboard answers a register or\n" +
      "deregister only after registrations.json is fsynced (atomic write, group commit), so it\n" +
      "is bound by the disk, not by the network, and is much slower than echo.",
  );
  if (rounds.length > 1) {
    console.log("");
    for (const r of rounds) {
      console.log(
        `round ${r.round}: echo ${r.echoRoundTripsPerSecond.toFixed(1)} round trips/s, ` +
          `switchboard ${r.switchboardRoundTripsPerSecond.toFixed(1)}, ratio ${r.ratio.toFixed(3)}`,
      );
    }
  }
  for (const r of results) {
    for (const sample of r.errorSamples) console.log(`${r.target} error: ${sample}`);
  }
  if (details.registryLeft !== undefined && details.registryLeft !== 0) {
    console.log(`warning: ${details.registryLeft} names left in the registry after the run`);
  }
  console.log(`ratio: switchboard/echo = ${ratio.toFixed(3)}`);
}

// ---------------------------------------------------------------- main

async function main(args: string[]): Promise<number> {
  let flags;
  try {
    flags = parseFlags(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`error: ${error.message}`);
    return 2;
  }
  if (flags === "help") {
    console.log(HELP);
    return 0;
  }

  const cleanups: (() => Promise<unknown>)[] = [];
  let cleaned: Promise<void> | undefined;
  const cleanup = () =>
    cleaned ??= (async () => {
      for (const step of cleanups.reverse()) await step().catch(() => {});
    })();
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) Deno.exit(130);
    interrupted = true;
    console.error("interrupted: stopping the servers and removing temp files");
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);

  const status = (text: string) => console.error(text);
  try {
    const tmp = await Deno.makeTempDir({ prefix: "switchboard-bench-" });
    cleanups.push(() => Deno.remove(tmp, { recursive: true }));
    const dataDir = join(tmp, "data");
    const config = join(REPO, "deno.json");

    status("starting the Switchboard server and the echo server...");
    const startServer = startProcess("Switchboard server", [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--config",
      config,
      join(REPO, "server.ts"),
      "--host",
      HOST,
      "--udp-port",
      "0",
      "--tcp-port",
      "0",
      "--data-dir",
      dataDir,
      "--log-dir",
      join(tmp, "logs"),
      "--log-level",
      "warning",
    ], /^Server UDP listening on port (\d+)$/);
    const startEcho = startProcess("echo server", [
      "run",
      "--allow-net",
      "--config",
      config,
      ECHO_SCRIPT,
      "--host",
      HOST,
    ], /^Echo UDP listening on port (\d+)$/);
    cleanups.push(() => Promise.all([...children].map(stopProcess)));
    const [server, echo] = await Promise.allSettled([startServer, startEcho]);
    if (server.status === "rejected") throw server.reason;
    if (echo.status === "rejected") throw echo.reason;

    const clients = Array.from({ length: flags.concurrency }, () => new LoadClient());
    cleanups.push(() => Promise.all(clients.map((c) => c.close())));

    const phases: Record<Target, PhaseResult[]> = {
      echo: [],
      switchboard: [],
    };
    for (let round = 1; round <= flags.rounds; round++) {
      for (const target of ["echo", "switchboard"] as const) {
        if (interrupted) break;
        const port = target === "echo" ? echo.value.port : server.value.port;
        status(`round ${round}/${flags.rounds}: ${target} on UDP port ${port}...`);
        phases[target].push(
          await runPhase(target, port, clients, flags, round, () => interrupted),
        );
      }
    }

    if (interrupted) return 130;
    await Promise.all(clients.map((c) => c.close()));
    const serverCode = await stopProcess(server.value);
    await stopProcess(echo.value);
    if (serverCode !== 0) {
      status(`warning: the Switchboard server exited with code ${serverCode} on SIGTERM`);
    }
    let registryLeft: number | undefined;
    try {
      const text = await Deno.readTextFile(join(dataDir, "registrations.json"));
      registryLeft = Object.keys(JSON.parse(text)).length;
    } catch {
      registryLeft = undefined;
    }

    const results = [summarize("echo", phases.echo), summarize("switchboard", phases.switchboard)];
    const [echoResult, switchboardResult] = results;
    const rounds = perRound(phases);
    const ratio = echoResult.roundTripsPerSecond === 0
      ? 0
      : switchboardResult.roundTripsPerSecond / echoResult.roundTripsPerSecond;
    if (flags.json) {
      console.log(JSON.stringify(
        {
          date: new Date().toISOString(),
          machine: machine(),
          settings: {
            seconds: flags.seconds,
            warmupSeconds: flags.warmup,
            concurrency: flags.concurrency,
            rounds: flags.rounds,
          },
          echo: echoResult,
          switchboard: switchboardResult,
          rounds,
          ratio,
          dataDir,
          registryLeftAfterRun: registryLeft,
          serverExitCode: serverCode,
        },
        null,
        2,
      ));
    } else {
      printTable(flags, results, rounds, ratio, { registryLeft, dataDir });
    }
    return switchboardResult.roundTrips > 0 && echoResult.roundTrips > 0 ? 0 : 1;
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    return 1;
  } finally {
    await cleanup();
    Deno.removeSignalListener("SIGINT", onSignal);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
