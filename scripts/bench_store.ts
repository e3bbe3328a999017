/**
 * Measures, in one run, durable register+deregister round trips a second
 * against the server with its file store, the server with Redis
 * (`--store`, a `redis-server` started here with `appendfsync always`), and
 * the bare UDP echo server; then heartbeats and lookups with Redis against
 * the echo. Every target runs as its own process on loopback; this process
 * is the load generator, `--concurrency` requesters with one request in
 * flight each. To show where the time goes it also reports the CPU per
 * request of the server process (from `/proc`), of Redis (`INFO cpu`) and of
 * this load generator (`/proc`), Redis's commands per request,
 * and a ceiling: the same Redis with `appendfsync no` set after the server
 * started (not durable; never a deployment).
 *
 * Usage: `deno task bench:store [--seconds S] [--concurrency K] [--register-only]
 * [--cpu-prof DIR] [--json]` (`--register-only`: the durable registrations and the echo only;
 * `--cpu-prof DIR`: both servers write a V8 CPU profile there when they stop).
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { rejectUnknownFlags } from "../lib/cli/usage_error.ts";
import type { Message } from "../lib/wire/messages.ts";
import { TOKEN_BYTES } from "../lib/wire/messages.ts";
import {
  Cleanup,
  HOST,
  percentile,
  type Started,
  startServers,
  stopAllProcesses,
  table,
} from "./_bench_support.ts";
import { redisUnavailable, TestRedis } from "./_redis_server.ts";
import { type RequestBody, UdpRequester } from "./_wire_client.ts";

type Work = "register" | "heartbeat" | "lookup";

interface Figure {
  target: string;
  work: Work;
  perSecond: number;
  p50: number;
  p99: number;
  errors: number;
  /** The server process's CPU time per request, ms (undefined for the echo). */
  cpuMs?: number;
  /** Redis commands per request (Redis targets only). */
  redisCommands?: number;
  /** Redis's CPU time per request, ms (Redis targets only). */
  redisCpuMs?: number;
  /** This process's CPU time per request, ms: the load generator's. */
  benchCpuMs: number;
}

/** A process's CPU time so far, ms (user + system, from `/proc/PID/stat`). */
async function cpuMs(pid: number): Promise<number> {
  // Read by `cat`: reading /proc directly needs --allow-all.
  const { stdout } = await new Deno.Command("cat", { args: [`/proc/${pid}/stat`], stdout: "piped" })
    .output();
  const stat = new TextDecoder().decode(stdout);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of the file, 12 and 13 after the name; 100 ticks a second.
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** Redis's commands so far and its CPU time so far, ms (every thread). */
async function redisStats(redis: TestRedis): Promise<{ commands: number; cpuMs: number }> {
  const info = await redis.cli("INFO", "stats", "cpu");
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(info)?.[1]);
  return {
    commands: field("total_commands_processed"),
    cpuMs: (field("used_cpu_sys") + field("used_cpu_user")) * 1000,
  };
}

/** Runs `concurrency` requesters doing `work` against `port` for `seconds`. */
async function measure(
  target: string,
  port: number,
  work: Work,
  options: {
    seconds: number;
    concurrency: number;
    echo: boolean;
    pid?: number;
    redis?: TestRedis;
  },
): Promise<Figure> {
  const latencies: number[] = [];
  let errors = 0;
  const requesters = Array.from(
    { length: options.concurrency },
    // Sealed (version 3) to Switchboard; the echo server gets the same messages in clear.
    () =>
      new UdpRequester({ hostname: HOST, server: { hostname: HOST, port }, clear: options.echo }),
  );
  const fake = new Uint8Array(TOKEN_BYTES);
  const ok = (reply: Message | undefined, type: string) =>
    reply !== undefined && (reply.type === type || (options.echo && reply.type !== "error"));
  const timed = async (udp: UdpRequester, body: RequestBody, type: string) => {
    const started = performance.now();
    const reply = await udp.request(body, { timeoutMs: 3000, retransmitMs: 500 });
    if (!ok(reply, type)) {
      errors++;
      return undefined;
    }
    latencies.push(performance.now() - started);
    return reply;
  };
  const tag = crypto.randomUUID().slice(0, 6);
  let end = Infinity;
  let ready = 0;
  const allReady = Promise.withResolvers<void>();
  let cpuBefore = 0;
  let benchCpuBefore = 0;
  let redisBefore = { commands: 0, cpuMs: 0 };
  await Promise.all(requesters.map(async (udp, i) => {
    const name = `b${tag}-${i}`;
    let token: Uint8Array = fake;
    if (work !== "register") {
      const reply = await udp.request({
        type: "register",
        name,
        udpPort: udp.localPort,
        tcpPort: 5001,
      });
      if (reply?.type === "register_ok") token = reply.token;
    }
    // Every requester has its session: the measured time starts now, for all.
    if (++ready === requesters.length) {
      cpuBefore = options.pid === undefined ? 0 : await cpuMs(options.pid);
      benchCpuBefore = await cpuMs(Deno.pid);
      if (options.redis !== undefined) redisBefore = await redisStats(options.redis);
      latencies.length = 0;
      errors = 0;
      end = performance.now() + options.seconds * 1000;
      allReady.resolve();
    }
    await allReady.promise;
    for (let n = 0; performance.now() < end; n++) {
      if (work === "register") {
        const reply = await timed(
          udp,
          { type: "register", name: `${name}-${n}`, udpPort: udp.localPort, tcpPort: 5001 },
          "register_ok",
        );
        const got = reply?.type === "register_ok" ? reply.token : fake;
        await timed(udp, { type: "deregister", token: got }, "deregister_ok");
      } else if (work === "heartbeat") {
        await timed(udp, { type: "heartbeat", token }, "heartbeat_ok");
      } else {
        await timed(udp, { type: "lookup", token, name, nonce: new Uint8Array(0) }, "lookup_ok");
      }
    }
  }));
  const cpu = options.pid === undefined ? undefined : await cpuMs(options.pid) - cpuBefore;
  const benchCpu = await cpuMs(Deno.pid) - benchCpuBefore;
  const redis = options.redis === undefined ? undefined : await redisStats(options.redis);
  for (const r of requesters) await r.close();
  const requests = latencies.length;
  latencies.sort((a, b) => a - b);
  return {
    target,
    work,
    perSecond: requests / options.seconds,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    errors,
    ...(cpu === undefined ? {} : { cpuMs: cpu / requests }),
    ...(redis === undefined ? {} : {
      // Less our own INFO.
      redisCommands: (redis.commands - redisBefore.commands - 1) / requests,
      redisCpuMs: (redis.cpuMs - redisBefore.cpuMs) / requests,
    }),
    benchCpuMs: benchCpu / requests,
  };
}

async function main(args: string[]): Promise<number> {
  const parsed = parseArgs(args, {
    string: ["seconds", "concurrency", "cpu-prof"],
    boolean: ["json", "help", "register-only"],
    default: { seconds: "3", concurrency: "32" },
  });
  rejectUnknownFlags(parsed, [
    "seconds",
    "concurrency",
    "register-only",
    "cpu-prof",
    "json",
    "help",
  ]);
  if (parsed.help) {
    console.log(
      "Usage: deno task bench:store [--seconds S] [--concurrency K] [--register-only] " +
        "[--cpu-prof DIR] [--json]",
    );
    return 0;
  }
  const seconds = Number(parsed.seconds);
  const concurrency = Number(parsed.concurrency);
  if (!(seconds > 0 && seconds <= 60) || !(concurrency >= 1 && concurrency <= 256)) {
    console.error("error: --seconds must be in (0, 60] and --concurrency in [1, 256]");
    return 2;
  }
  if (redisUnavailable !== undefined) {
    console.error(`error: ${redisUnavailable}`);
    return 1;
  }
  const cleanup = new Cleanup();
  const root = await Deno.makeTempDir({ prefix: "switchboard_bench_store_" });
  cleanup.add(() => Deno.remove(root, { recursive: true }));
  cleanup.add(stopAllProcesses);
  const redis = await TestRedis.start();
  cleanup.add(() => redis.stop());
  try {
    const profiles = parsed["cpu-prof"];
    const start = (name: string, flags: string[]) =>
      startServers({
        dataDir: `${root}/${name}/data`,
        logDir: `${root}/${name}/logs`,
        stopSignal: "SIGTERM",
        serverFlags: flags,
        denoFlags: profiles === undefined
          ? []
          : ["--cpu-prof", "--cpu-prof-dir", profiles, "--cpu-prof-name", `${name}.cpuprofile`],
      });
    const file = await start("file", []);
    const shared = await start("redis", ["--store", redis.url]);
    const echo: Started = file.echo;
    const o = { seconds, concurrency, echo: false };
    const onFile = { ...o, pid: file.server.child.pid };
    const onRedis = { ...o, pid: shared.server.child.pid, redis };
    const figures: Figure[] = [
      await measure("echo", echo.port, "register", { ...o, echo: true }),
      await measure("file store", file.server.port, "register", onFile),
      await measure("redis store", shared.server.port, "register", onRedis),
    ];
    if (!parsed["register-only"]) {
      // The ceiling of the Redis path: no fsync at all (set after the server's check).
      await redis.cli("CONFIG", "SET", "appendfsync", "no");
      figures.push(await measure("redis, fsync off", shared.server.port, "register", onRedis));
      await redis.cli("CONFIG", "SET", "appendfsync", "always");
      figures.push(
        await measure("echo", echo.port, "heartbeat", { ...o, echo: true }),
        await measure("redis store", shared.server.port, "heartbeat", onRedis),
        await measure("echo", echo.port, "lookup", { ...o, echo: true }),
        await measure("redis store", shared.server.port, "lookup", onRedis),
      );
    }
    const of = (target: string, work: Work) =>
      figures.find((f) => f.target === target && f.work === work)!.perSecond;
    const ratio = of("redis store", "register") / of("file store", "register");
    if (parsed.json) {
      console.log(JSON.stringify({ concurrency, seconds, figures, redisOverFile: ratio }));
    } else {
      console.log(
        `Store bench: ${concurrency} requesters, ${seconds} s each, loopback UDP, ` +
          `Redis ${redis.url} with appendfsync always`,
      );
      for (
        const line of table(
          [
            "work",
            "target",
            "round trips/s",
            "vs echo",
            "p50 ms",
            "p99 ms",
            "errors",
            "server CPU ms/req",
            "Redis CPU ms/req",
            "bench CPU ms/req",
            "Redis cmds/req",
          ],
          figures.map((f) => [
            f.work,
            f.target,
            f.perSecond.toFixed(0),
            (f.perSecond / of("echo", f.work)).toFixed(2),
            f.p50.toFixed(2),
            f.p99.toFixed(2),
            String(f.errors),
            f.cpuMs?.toFixed(3) ?? "",
            f.redisCpuMs?.toFixed(3) ?? "",
            f.benchCpuMs.toFixed(3),
            f.redisCommands?.toFixed(2) ?? "",
          ]),
          { leftColumns: 2 },
        )
      ) console.log(line);
      console.log(`Redis-backed registration / file store: ${ratio.toFixed(2)}x (goal >= 3x)`);
    }
    return 0;
  } finally {
    await cleanup.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
