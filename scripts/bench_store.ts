/**
 * Measures, in one run, durable register+deregister round trips a second
 * against the server with its file store, the server with Redis
 * (`--store`, a `redis-server` started here with `appendfsync always`), and
 * the bare UDP echo server; then heartbeats and lookups with Redis against
 * the echo. Every target runs as its own process on loopback; this process
 * is the load generator, `--concurrency` requesters with one request in
 * flight each.
 *
 * Usage: `deno task bench:store [--seconds S] [--concurrency K] [--json]`
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
}

/** Runs `concurrency` requesters doing `work` against `port` for `seconds`. */
async function measure(
  target: string,
  port: number,
  work: Work,
  options: { seconds: number; concurrency: number; echo: boolean },
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
  const end = performance.now() + options.seconds * 1000;
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
    latencies.length = 0;
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
  for (const r of requesters) await r.close();
  latencies.sort((a, b) => a - b);
  return {
    target,
    work,
    perSecond: latencies.length / options.seconds,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    errors,
  };
}

async function main(args: string[]): Promise<number> {
  const parsed = parseArgs(args, {
    string: ["seconds", "concurrency"],
    boolean: ["json", "help"],
    default: { seconds: "3", concurrency: "32" },
  });
  rejectUnknownFlags(parsed, ["seconds", "concurrency", "json", "help"]);
  if (parsed.help) {
    console.log("Usage: deno task bench:store [--seconds S] [--concurrency K] [--json]");
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
    const start = (name: string, flags: string[]) =>
      startServers({
        dataDir: `${root}/${name}/data`,
        logDir: `${root}/${name}/logs`,
        stopSignal: "SIGTERM",
        serverFlags: flags,
      });
    const file = await start("file", []);
    const shared = await start("redis", ["--store", redis.url]);
    const echo: Started = file.echo;
    const o = { seconds, concurrency, echo: false };
    const figures: Figure[] = [
      await measure("echo", echo.port, "register", { ...o, echo: true }),
      await measure("file store", file.server.port, "register", o),
      await measure("redis store", shared.server.port, "register", o),
      await measure("echo", echo.port, "heartbeat", { ...o, echo: true }),
      await measure("redis store", shared.server.port, "heartbeat", o),
      await measure("echo", echo.port, "lookup", { ...o, echo: true }),
      await measure("redis store", shared.server.port, "lookup", o),
    ];
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
          ["work", "target", "round trips/s", "vs echo", "p50 ms", "p99 ms", "errors"],
          figures.map((f) => [
            f.work,
            f.target,
            f.perSecond.toFixed(0),
            (f.perSecond / of("echo", f.work)).toFixed(2),
            f.p50.toFixed(2),
            f.p99.toFixed(2),
            String(f.errors),
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
