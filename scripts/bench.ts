/**
 * Measures register+deregister round trips per second over loopback UDP
 * against the real Switchboard server, and the same load against a bare Deno
 * UDP echo server in the same run, and prints the ratio. Both servers run as
 * separate processes; this process is the load generator. Requests to
 * Switchboard go sealed (protocol version 3, one handshake per simulated
 * client in the warm-up), so its figure includes the cipher both ways; the
 * echo server gets them in clear.
 *
 * Usage: `deno task bench [--seconds S] [--warmup S] [--concurrency K] [--rounds N] [--json]`
 *
 * See docs/BENCHMARKS.md for what each figure means.
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { join } from "@std/path";
import { DEFAULT_RETRY_POLICY, retryDelay } from "../lib/client/retry_policy.ts";
import { toHex } from "../lib/hex.ts";
import { cryptoRandom } from "../lib/random.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import { type Message, type MessageOf, TOKEN_BYTES } from "../lib/wire/messages.ts";
import { rejectUnknownFlags, UsageError } from "../lib/cli/usage_error.ts";
import type { ServerGuard } from "../lib/client/server_guard.ts";
import { benchGuard, serverKeyIn } from "./_wire_client.ts";
import {
  Cleanup,
  countRegistered,
  DECLARED_TCP_PORT,
  flagsOrExitCode,
  HOST,
  percentile,
  RECEIVE_BUFFER_BYTES,
  replyText,
  startServers,
  stopAllProcesses,
  stopProcess,
  table,
} from "./_bench_support.ts";

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

/** How long a request may stay unanswered once the measured window is over. */
const DRAIN_GIVE_UP_MS = 2000;

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

// ---------------------------------------------------------------- load

type Received = { data: Uint8Array } | { closed: true };

/** One simulated client: one socket, one client id, one request in flight. */
class LoadClient {
  readonly clientId = toHex(cryptoRandom.bytes(8));
  /** Seals what goes to the Switchboard server (set once it runs). */
  guard: ServerGuard | undefined;
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
   * With a guard (Switchboard) the request goes sealed, as a real client's
   * does (version 3); without (the echo server) in clear. Returns the reply,
   * or a string saying why there is none.
   */
  async roundTrip(
    port: number,
    message: Message & { reqId: number },
    guard: ServerGuard | undefined,
    giveUpAt: () => number,
    counters: PhaseCounters,
  ): Promise<Message | string> {
    const to: Deno.NetAddr = { transport: "udp", hostname: HOST, port };
    const reqId = message.reqId;
    const clear = guard === undefined ? encodeMessage(message) : undefined;
    let attempt = 0;
    while (true) {
      const datagrams = clear !== undefined
        ? [clear]
        : guard!.outgoing(message, performance.now(), attempt + 1);
      for (const bytes of datagrams) await this.#socket.send(bytes, to).catch(() => 0);
      const wait = Math.min(
        retryDelay(attempt, cryptoRandom, DEFAULT_RETRY_POLICY),
        Math.max(0, giveUpAt() - performance.now()),
      );
      const deadline = performance.now() + wait;
      while (true) {
        const received = await this.#receiveUntil(deadline);
        if (received === "timeout") break;
        if ("closed" in received) return "socket closed";
        let messages: Message[];
        if (guard !== undefined) {
          // Sealed replies, and the handshake's own datagrams.
          const input = guard.incoming(received.data, performance.now());
          for (const bytes of input.send) await this.#socket.send(bytes, to).catch(() => 0);
          messages = input.messages;
        } else {
          try {
            messages = [decodeMessage(received.data)];
          } catch {
            continue; // not a Switchboard message: ignore it, as a client does
          }
        }
        const reply = messages.find((m) => "reqId" in m && m.reqId === reqId);
        if (reply !== undefined) return reply;
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
  // The echo server gets the messages in clear; Switchboard sealed (version 3).
  const guard = (client: LoadClient) => target === "echo" ? undefined : client.guard;

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
        register,
        guard(client),
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
        deregister,
        guard(client),
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
  for (const line of table(header, rows)) console.log(line);
  console.log("");
  console.log(
    "A round trip is one request and its reply; a pair is one register plus one deregister\n" +
      "(2 round trips). The echo server answers at once; Switchboard answers a register or\n" +
      "deregister only after registrations.json is fsynced (atomic write, group commit), so it\n" +
      "is bound by the disk, not by the network, and is much slower than echo. Requests to\n" +
      "Switchboard are sealed (version 3); the echo server gets them in clear.",
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
  const flags = flagsOrExitCode(() => parseFlags(args), HELP);
  if (typeof flags === "number") return flags;

  const cleanup = new Cleanup();
  const status = (text: string) => console.error(text);
  try {
    const tmp = await Deno.makeTempDir({ prefix: "switchboard-bench-" });
    cleanup.add(() => Deno.remove(tmp, { recursive: true }));
    const dataDir = join(tmp, "data");

    status("starting the Switchboard server and the echo server...");
    cleanup.add(stopAllProcesses);
    const { server, echo } = await startServers({
      dataDir,
      logDir: join(tmp, "logs"),
      stopSignal: "SIGTERM",
    });

    const clients = Array.from({ length: flags.concurrency }, () => new LoadClient());
    cleanup.add(() => Promise.all(clients.map((c) => c.close())));
    const serverKey = await serverKeyIn(dataDir);
    for (const client of clients) client.guard = benchGuard(`${HOST}:${server.port}`, serverKey);

    const phases: Record<Target, PhaseResult[]> = {
      echo: [],
      switchboard: [],
    };
    for (let round = 1; round <= flags.rounds; round++) {
      for (const target of ["echo", "switchboard"] as const) {
        if (cleanup.interrupted) break;
        const port = target === "echo" ? echo.port : server.port;
        status(`round ${round}/${flags.rounds}: ${target} on UDP port ${port}...`);
        phases[target].push(
          await runPhase(target, port, clients, flags, round, () => cleanup.interrupted),
        );
      }
    }

    if (cleanup.interrupted) return 130;
    await Promise.all(clients.map((c) => c.close()));
    const serverCode = await stopProcess(server);
    await stopProcess(echo);
    if (serverCode !== 0) {
      status(`warning: the Switchboard server exited with code ${serverCode} on SIGTERM`);
    }
    const registryLeft = await countRegistered(dataDir);

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
    await cleanup.close();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
