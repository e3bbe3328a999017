/**
 * `deno task impair`: a UDP proxy that loses, duplicates, reorders and delays
 * datagrams on their way between clients and a Switchboard server, and
 * between the clients themselves, with wall-clock timers on real sockets.
 *
 * Point clients' `--server` at the proxy. The proxy relays like a NAT box
 * (see `lib/sim/impaired_relay.ts`): each client gets its own upstream
 * socket, the server records that socket's address, and peer messages sent
 * to it are relayed too, so a chat between two clients crosses the proxy both
 * ways with no client flag. TCP is not proxied. The impairment decisions are
 * the simulator's (`lib/sim/sim_network.ts`), drawn from one seeded
 * random source.
 *
 * Exit codes: 0 after Ctrl+C or SIGTERM (the counts are printed), 1 if a
 * socket cannot be bound, 2 for bad usage.
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { errorLine } from "../lib/error_line.ts";
import { hostPort } from "../lib/host_port.ts";
import { SeededRandom } from "../lib/random.ts";
import {
  ImpairedRelay,
  LISTEN_SOCKET,
  type RelayStats,
  type SocketId,
} from "../lib/sim/impaired_relay.ts";
import { type Impairment, impairmentProblem, NO_IMPAIRMENT } from "../lib/sim/sim_network.ts";
import { UdpSocket } from "../lib/io/udp_socket.ts";
import {
  integerFlag,
  portFlag,
  rejectUnknownFlags,
  requireValues,
  UsageError,
} from "../lib/cli/usage_error.ts";

const HELP = `deno task impair: a lossy UDP proxy for Switchboard

Relays datagrams between clients and a server, and between the clients, with
loss, duplication, reordering and delay. Point each client's --server at the
proxy; the server then tells clients each other's relayed addresses, so their
peer-to-peer traffic crosses the proxy too. TCP is not proxied.

Usage:
  deno task impair --target HOST:PORT [flags]

Flags:
  --target HOST:PORT   the server's UDP address (required)
  --listen HOST:PORT   where clients send (default 127.0.0.1:0, 0 picks a port)
  --loss P             drop each datagram with probability P, 0.1 or 10% (default 0)
  --burst N            lose datagrams in runs of N on average (Gilbert-Elliott),
                       keeping --loss as the long-run rate; a run ends after
                       200 ms without a datagram on its way (default 1: each
                       datagram on its own)
  --duplicate P        deliver a datagram twice with probability P (default 0)
  --reorder P          hold a copy back so later ones overtake it (default 0)
  --delay MS           one-way delay in ms (default 0)
  --jitter MS          the delay varies by up to ±MS, at least 0 (default 0)
  --rate BYTES         a bottleneck: the link sends this many bytes a second,
                       both ways together, one datagram at a time (default:
                       no bottleneck)
  --queue BYTES        the bottleneck's drop-tail queue, in bytes (default:
                       unbounded; needs --rate)
  --seed N             seed of the impairment decisions (default: random, printed)
  -h, --help           show this help

It prints "Proxy UDP listening on port N" once ready. Ctrl+C or SIGTERM prints
the counts and exits 0. Exit codes: 0 stopped, 1 cannot bind, 2 bad usage.`;

const STRING_FLAGS = [
  "target",
  "listen",
  "loss",
  "burst",
  "duplicate",
  "reorder",
  "delay",
  "jitter",
  "rate",
  "queue",
  "seed",
];
const MAX_DELAY_MS = 60_000;
/** The largest --rate and --queue, bytes (a second): what integerFlag reads. */
const MAX_RATE = 999_999_999;

/** The proxy's settings, from its flags. */
interface ProxyOptions {
  listen: { host: string; port: number };
  target: { host: string; port: number };
  impairment: Impairment;
  delayMs: number;
  jitterMs: number;
  seed: number;
}

function probabilityFlag(flag: string, value: unknown): number {
  const text = String(value);
  const percent = text.endsWith("%");
  const digits = percent ? text.slice(0, -1) : text;
  const p = /^(\d+(\.\d*)?|\.\d+)$/.test(digits) ? Number(digits) / (percent ? 100 : 1) : NaN;
  if (!(p >= 0 && p <= 1)) {
    throw new UsageError(`${flag} must be a probability such as 0.05 or 5%, not "${text}"`);
  }
  return p;
}

function addressFlag(
  flag: string,
  value: string,
  minPort: number,
): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:\[\]]+)):(.*)$/.exec(value.trim());
  if (match === null) throw new UsageError(`${flag} must look like HOST:PORT, not "${value}"`);
  let host = match[1] ?? match[2];
  if (host === "localhost") host = "127.0.0.1";
  const ipv4 = /^\d{1,3}(\.\d{1,3}){3}$/.test(host) &&
    host.split(".").every((part) => Number(part) <= 255);
  if (!ipv4 && !(match[1] !== undefined && host.includes(":"))) {
    throw new UsageError(
      `${flag} needs an IP address (or localhost) as HOST, not "${host}"`,
    );
  }
  return { host, port: portFlag(`${flag} port`, match[3], { min: minPort, max: 65535 }) };
}

function parseOptions(args: string[]): ProxyOptions | "help" {
  const parsed = parseArgs(args, { string: STRING_FLAGS, boolean: ["help"], alias: { h: "help" } });
  rejectUnknownFlags(parsed, [...STRING_FLAGS, "help", "h"]);
  if (parsed.help) return "help";
  requireValues(args, parsed, STRING_FLAGS);
  if (parsed.target === undefined) throw new UsageError("--target HOST:PORT is required");
  const delayMs = parsed.delay === undefined
    ? 0
    : integerFlag("--delay", parsed.delay, { min: 0, max: MAX_DELAY_MS });
  const jitterMs = parsed.jitter === undefined
    ? 0
    : integerFlag("--jitter", parsed.jitter, { min: 0, max: MAX_DELAY_MS });
  const rate = parsed.rate === undefined
    ? undefined
    : integerFlag("--rate", parsed.rate, { min: 1, max: MAX_RATE });
  const queue = parsed.queue === undefined
    ? undefined
    : integerFlag("--queue", parsed.queue, { min: 1, max: MAX_RATE });
  if (queue !== undefined && rate === undefined) {
    throw new UsageError("--queue needs --rate: a queue forms only behind a link rate");
  }
  const probability = (flag: "loss" | "duplicate" | "reorder") =>
    parsed[flag] === undefined ? 0 : probabilityFlag(`--${flag}`, parsed[flag]);
  const burst = parsed.burst === undefined
    ? undefined
    : integerFlag("--burst", parsed.burst, { min: 1, max: 1000 });
  const loss = probability("loss");
  const burstProblem = burst === undefined
    ? undefined
    : impairmentProblem({ ...NO_IMPAIRMENT, loss, burst });
  if (burstProblem !== undefined) throw new UsageError(burstProblem);
  return {
    listen: addressFlag("--listen", parsed.listen ?? "127.0.0.1:0", 0),
    target: addressFlag("--target", parsed.target, 1),
    impairment: {
      loss,
      ...(burst === undefined ? {} : { burst }),
      duplicate: probability("duplicate"),
      reorder: probability("reorder"),
      minDelayMs: Math.max(0, delayMs - jitterMs),
      maxDelayMs: delayMs + jitterMs,
      ...(rate === undefined ? {} : { rate }),
      ...(queue === undefined ? {} : { queue }),
    },
    delayMs,
    jitterMs,
    seed: parsed.seed === undefined
      ? crypto.getRandomValues(new Uint32Array(1))[0] % 1_000_000_000
      : integerFlag("--seed", parsed.seed, { min: 0, max: 999_999_999 }),
  };
}

function percent(p: number): string {
  return `${Number((p * 100).toFixed(3))}%`;
}

function countsLine(s: RelayStats, oversized: number): string {
  return `Counts: ${s.fromClients} from clients, ${s.fromTarget} from the target, ` +
    `${s.betweenClients} between clients, ${s.unroutable} unroutable; ` +
    `${s.impaired} impaired: ${s.lost} lost, ${s.duplicated} duplicated, ` +
    `${s.reordered} reordered, ${s.forwarded} forwarded` +
    (s.queued > 0
      ? `; bottleneck: ${s.queued} queued, ${s.queueDropped} dropped by the full queue, ` +
        `mean wait ${(s.queueDelayMs / s.queued).toFixed(2)} ms`
      : "") +
    (oversized > 0 ? ` (${oversized} too large to send)` : "") +
    `; ${s.clients} ${s.clients === 1 ? "client" : "clients"}`;
}

/** Runs the proxy until a signal; returns the exit code. */
async function run(options: ProxyOptions): Promise<number> {
  const sockets = new Map<SocketId, UdpSocket>();
  const loops: Promise<void>[] = [];
  let listen: UdpSocket;
  try {
    listen = UdpSocket.open({ hostname: options.listen.host, port: options.listen.port });
  } catch (error) {
    const reason = error instanceof Deno.errors.AddrInUse
      ? `port ${options.listen.port} is in use; pass --listen HOST:0 to pick a free one`
      : (error as Error).message;
    console.error(
      errorLine(
        `cannot listen on ${hostPort(options.listen.host, options.listen.port)}: ${reason}`,
      ),
    );
    return 1;
  }
  sockets.set(LISTEN_SOCKET, listen);
  let nextId = LISTEN_SOCKET + 1;
  let oversized = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timerAt = Infinity;
  let sendTail: Promise<void> = Promise.resolve();

  const relay = new ImpairedRelay({
    target: hostPort(options.target.host, options.target.port),
    impairment: options.impairment,
    random: new SeededRandom(options.seed),
    openUpstream: () => {
      const id = nextId++;
      const socket = UdpSocket.open({ hostname: options.listen.host, port: 0 });
      sockets.set(id, socket);
      loops.push(receiveLoop(id, socket));
      return id;
    },
  });

  const flush = () => {
    timer = undefined;
    timerAt = Infinity;
    const due = relay.due(performance.now());
    if (due.length > 0) {
      sendTail = sendTail.then(async () => {
        for (const datagram of due) {
          const [host, port] = splitHostPort(datagram.to);
          try {
            await sockets.get(datagram.from)?.send(datagram.data, host, port);
          } catch (error) {
            if (!(error instanceof RangeError)) throw error;
            oversized++;
          }
        }
      });
    }
    arm();
  };
  const arm = () => {
    const next = relay.nextDue();
    if (next === undefined || next >= timerAt) return;
    clearTimeout(timer);
    timerAt = next;
    timer = setTimeout(flush, Math.max(0, next - performance.now()));
  };

  function receiveLoop(id: SocketId, socket: UdpSocket): Promise<void> {
    return socket.receiveEach(({ data, address, port }) => {
      // The relay holds datagrams for their delay: a copy, not the socket's buffer.
      relay.receive(performance.now(), id, hostPort(address, port), data.slice());
      if (relay.nextDue() !== undefined && relay.nextDue()! <= performance.now()) flush();
      else arm();
    });
  }

  const { promise: stopped, resolve: stop } = Promise.withResolvers<void>();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, () => stop());
  loops.push(receiveLoop(LISTEN_SOCKET, listen));
  const { impairment: imp } = options;
  console.log(`Proxy UDP listening on port ${listen.localPort}`);
  console.log(
    `Relaying ${hostPort(options.listen.host, listen.localPort)} to ` +
      `${hostPort(options.target.host, options.target.port)}: loss ${percent(imp.loss)}` +
      (imp.burst === undefined ? ", " : ` in bursts of ${imp.burst}, `) +
      `duplicate ${percent(imp.duplicate)}, reorder ${percent(imp.reorder)}, delay ` +
      `${options.delayMs} ms ± ${options.jitterMs} ms` +
      (imp.rate === undefined
        ? ""
        : `, rate ${imp.rate} B/s, queue ${imp.queue ?? "unbounded"}${
          imp.queue === undefined ? "" : " B"
        }`) +
      `; seed ${options.seed}`,
  );
  console.log("Proxy running... (Press Ctrl+C to stop)");
  await stopped;
  clearTimeout(timer);
  for (const socket of sockets.values()) socket.close();
  await Promise.all(loops);
  await sendTail.catch(() => {});
  console.log(countsLine(relay.stats, oversized));
  return 0;
}

function splitHostPort(address: string): [string, number] {
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  return [host, Number(address.slice(colon + 1))];
}

async function main(args: string[]): Promise<number> {
  let options;
  try {
    options = parseOptions(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(errorLine(error.message));
    return 2;
  }
  if (options === "help") {
    console.log(HELP);
    return 0;
  }
  return await run(options);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
