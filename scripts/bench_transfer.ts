/**
 * Measures peer-to-peer file transfer goodput between two real client
 * processes, each figure beside a baseline measured in the same run:
 *
 * - on loopback, a 64 MiB `sendfile` against a bare UDP blast of the same
 *   number of datagrams of the same size (the ceiling of any reliable
 *   protocol on Deno's UDP), the same file over one plain TCP connection,
 *   and the windowed model at 0 us of work per datagram (`--model`);
 * - through `scripts/impair_proxy.ts` as a bottleneck (an 8 MB/s link,
 *   20 ms one-way delay, a drop-tail queue of one bandwidth-delay product)
 *   at 0, 1, 5, 10 and 20% random loss each way: a 16 MiB `sendfile` as a
 *   share of the link rate, beside the Mathis figure for TCP Reno at that
 *   loss and round trip and beside the controller before BBR (the link,
 *   loss in bursts, and several flows sharing it are flags)
 *   (`--channel-mode newreno`, with a smaller file where it is slow); the
 *   proxy's mean queueing delay; and the time of a chat `send` (until the
 *   peer acknowledges it) during each transfer against the same session idle.
 *
 * Goodput is file bytes over the receiver's time from accepting the offer
 * (`file_accepted`) to the verified file (`file_done`); baselines are timed
 * by their receivers from the first byte to the last.
 *
 * Usage: deno task bench:transfer [--size MIB] [--rounds N] [--link-size MIB] [--baseline-size MIB] [--losses P,...] [--rate B] [--delay MS] [--queue B] [--burst N] [--flows N] [--skip-lossy] [--skip-baseline] [--json]
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { fromFileUrl, join } from "@std/path";
import { encodeMessage } from "../lib/wire/codec.ts";
import { MAX_PEER_SEALED_BYTES } from "../lib/wire/messages.ts";
import { encodePeerPayload, FILE_CHUNK_BYTES } from "../lib/wire/peer_payload.ts";
import { MAX_SEGMENT_PAYLOAD } from "../lib/reliable/segment.ts";
import { integerFlag, rejectUnknownFlags } from "../lib/cli/usage_error.ts";
import { flagsOrExitCode, percentile } from "./_bench_support.ts";

const REPO = fromFileUrl(new URL("..", import.meta.url));
const CONFIG = join(REPO, "deno.json");
const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env"];

const HELP = `bench:transfer: peer file transfer goodput vs a bare UDP blast and plain TCP on
loopback, and vs the link rate, TCP Reno's Mathis figure and the controller
before BBR through a lossy 8 MB/s bottleneck

Usage: deno task bench:transfer [flags]

Flags:
  --size MIB           the loopback file (default 64)
  --rounds N           loopback rounds of blast, TCP and sendfile (default 3):
                       the figures are medians, the ratios medians of each
                       round's own ratio, as the machine's speed drifts
  --model US,...       in each round, a bare windowed protocol (window of 48,
                       ack every 8) spending each of these microseconds of
                       busy work per datagram on both sides (default 0; none
                       for an empty value)
  --link-size MIB      the file sent through the bottleneck (default 16)
  --baseline-size MIB  the file the controller before BBR sends through it at
                       5% loss and more, where it moves about 0.2 MB/s or less
                       (default 1; 4 at 1% loss; the full file at 0%)
  --losses P,...       random loss each way through the bottleneck, percent
                       (default 0,1,5,10,20)
  --rate BYTES         the bottleneck's link rate, bytes a second (default
                       8000000)
  --delay MS           its one-way delay (default 20)
  --queue BYTES        its drop-tail queue (default one bandwidth-delay
                       product: rate x 2 x delay)
  --burst N            lose datagrams in runs of N on average, at the same
                       long-run rate (default 1: independent losses)
  --jitter MS          the delay varies by up to +-MS, which reorders
                       datagrams as netem does (default 0)
  --reorder P          hold a datagram back so later ones overtake it, with
                       probability P percent (default 0)
  --flows N            transfers sharing the bottleneck at once, each between
                       its own two clients (default 1); prints each flow's
                       share while all were moving, and the largest over the
                       smallest
  --skip-lossy         only the loopback figures
  --skip-loopback      only the bottleneck figures
  --skip-baseline      no run of the controller before BBR through the bottleneck
  --json               one JSON object at the end instead of the table
  -h, --help           show this help`;

/** The bottleneck of the lossy runs, by default. */
const LINK_RATE = 8_000_000;
const LINK_DELAY_MS = 20;
/** Payload bytes of a full data segment: the MSS of the Mathis figure. */
const SEGMENT_BYTES = 1100;
/** Chat sends while the session is idle, then during the transfer. */
const IDLE_CHATS = 10;
const BUSY_CHATS = 60;

/** The bottleneck of the lossy runs. */
interface Link {
  /** Bytes a second, both directions together. */
  rate: number;
  /** One-way delay, ms. */
  delayMs: number;
  /** Drop-tail queue, bytes. */
  queue: number;
  /** Mean length of a run of losses, datagrams (1: independent). */
  burst: number;
  /** The delay varies by up to this many ms either way. */
  jitterMs: number;
  /** Probability that a datagram is held back so later ones overtake it. */
  reorder: number;
  /** Transfers sharing it at once. */
  flows: number;
}

interface Flags {
  sizeMiB: number;
  link: Link;
  rounds: number;
  linkMiB: number;
  baselineMiB: number;
  losses: number[];
  skipLossy: boolean;
  skipLoopback: boolean;
  skipBaseline: boolean;
  json: boolean;
  /** Busy microseconds per datagram of the windowed model runs; empty for none. */
  modelWorkUs: number[];
}

function parseFlags(args: string[]): Flags | "help" {
  const strings = [
    ...["size", "rounds", "link-size", "baseline-size", "losses", "model"],
    ...["rate", "delay", "queue", "burst", "flows", "jitter", "reorder"],
  ];
  const switches = ["help", "json", "skip-lossy", "skip-loopback", "skip-baseline"];
  const parsed = parseArgs(args, {
    string: strings,
    boolean: switches,
    alias: { h: "help" },
    default: {
      size: "64",
      rounds: "3",
      "link-size": "16",
      "baseline-size": "1",
      losses: "0,1,5,10,20",
      model: "0",
      rate: String(LINK_RATE),
      delay: String(LINK_DELAY_MS),
      burst: "1",
      flows: "1",
      jitter: "0",
      reorder: "0",
    },
  });
  rejectUnknownFlags(parsed, [...strings, ...switches, "h"]);
  if (parsed.help) return "help";
  const rate = integerFlag("--rate", parsed.rate, { min: 10_000, max: 999_999_999 });
  const delayMs = integerFlag("--delay", parsed.delay, { min: 0, max: 10_000 });
  const link: Link = {
    rate,
    delayMs,
    queue: parsed.queue === undefined
      ? Math.max(3000, Math.round(rate * 2 * delayMs / 1000))
      : integerFlag("--queue", parsed.queue, { min: 1500, max: 999_999_999 }),
    burst: integerFlag("--burst", parsed.burst, { min: 1, max: 1000 }),
    jitterMs: integerFlag("--jitter", parsed.jitter, { min: 0, max: delayMs }),
    reorder: integerFlag("--reorder", parsed.reorder, { min: 0, max: 50 }) / 100,
    flows: integerFlag("--flows", parsed.flows, { min: 1, max: 8 }),
  };
  return {
    link,
    sizeMiB: integerFlag("--size", parsed.size, { min: 1, max: 4096 }),
    rounds: integerFlag("--rounds", parsed.rounds, { min: 1, max: 50 }),
    linkMiB: integerFlag("--link-size", parsed["link-size"], { min: 1, max: 4096 }),
    baselineMiB: integerFlag("--baseline-size", parsed["baseline-size"], { min: 1, max: 4096 }),
    losses: parsed.losses.split(",").map((p: string) =>
      integerFlag("--losses", p, { min: 0, max: 50 }) / 100
    ),
    skipLossy: parsed["skip-lossy"],
    skipLoopback: parsed["skip-loopback"],
    skipBaseline: parsed["skip-baseline"],
    json: parsed.json,
    modelWorkUs: parsed.model === ""
      ? []
      : parsed.model.split(",").map((us: string) =>
        integerFlag("--model", us, { min: 0, max: 1000 })
      ),
  };
}

/** A child process whose output lines are collected with their arrival times. */
class Child {
  readonly lines: { at: number; text: string }[] = [];
  readonly process: Deno.ChildProcess;
  readonly label: string;
  #waiters: (() => void)[] = [];
  readonly done: Promise<Deno.CommandStatus>;

  constructor(label: string, args: string[], cwd: string) {
    this.label = label;
    this.process = new Deno.Command(Deno.execPath(), {
      args,
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const collect = async (stream: ReadableStream<Uint8Array>) => {
      let rest = "";
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        const parts = (rest + chunk).split("\n");
        rest = parts.pop()!;
        for (const text of parts) this.lines.push({ at: performance.now(), text });
        for (const wake of this.#waiters.splice(0)) wake();
      }
    };
    const drained = Promise.all([collect(this.process.stdout), collect(this.process.stderr)]);
    this.done = drained.then(() => this.process.status);
  }

  /** Waits for the `count`th line that matches, and returns it. */
  async waitFor(pattern: RegExp, ms: number, count = 1): Promise<{ at: number; text: string }> {
    const deadline = performance.now() + ms;
    let exited = false;
    this.done.then(() => exited = true);
    while (true) {
      const hit = this.lines.filter((line) => pattern.test(line.text))[count - 1];
      if (hit) return hit;
      if (exited || performance.now() > deadline) {
        const tail = this.lines.slice(-8).map((l) => `  ${l.text}`).join("\n");
        throw new Error(`The ${this.label} never printed ${pattern}:\n${tail}`);
      }
      await new Promise<void>((wake) => {
        this.#waiters.push(wake);
        setTimeout(wake, 200);
      });
    }
  }

  stop(): void {
    try {
      this.process.kill("SIGTERM");
    } catch {
      // Already gone.
    }
  }
}

function deno(script: string, ...args: string[]): string[] {
  return ["run", ...PERMISSIONS, "--config", CONFIG, join(REPO, script), ...args];
}

/**
 * Size of a full sealed peer datagram (a `peer_sealed` holding a full
 * `peer_data`), what `sendfile` sends and so what the blast and the model
 * send.
 */
function sealedDatagramBytes(): number {
  return encodeMessage({
    type: "peer_sealed",
    session: "0123456789abcdef",
    counter: 0,
    sealed: new Uint8Array(MAX_PEER_SEALED_BYTES),
  }).length;
}

/**
 * File bytes in one of `sendfile`'s data datagrams: a 32 KiB chunk and its
 * header are cut into segments of at most `MAX_SEGMENT_PAYLOAD` bytes.
 */
function fileBytesPerDatagram(): number {
  const chunk = encodePeerPayload({
    kind: "file_chunk",
    transfer: 0,
    offset: 0,
    data: new Uint8Array(FILE_CHUNK_BYTES),
  });
  return FILE_CHUNK_BYTES / Math.ceil(chunk.length / MAX_SEGMENT_PAYLOAD);
}

async function udpBlast(dir: string, count: number, size: number): Promise<number> {
  const receiver = new Child(
    "UDP receiver",
    deno("scripts/transfer_baselines.ts", "udp-receive"),
    dir,
  );
  const port = (await receiver.waitFor(/^PORT \d+$/, 20_000)).text.split(" ")[1];
  const sender = new Child(
    "UDP sender",
    deno("scripts/transfer_baselines.ts", "udp-send", port, String(count), String(size)),
    dir,
  );
  await sender.done;
  const line = await receiver.waitFor(/^\{/, 60_000);
  const { bytes, ms } = JSON.parse(line.text) as { bytes: number; ms: number };
  return bytes / (ms / 1000);
}

async function tcpCopy(dir: string, file: string): Promise<number> {
  const out = join(dir, "tcp-copy.bin");
  const receiver = new Child(
    "TCP receiver",
    deno("scripts/transfer_baselines.ts", "tcp-receive", out),
    dir,
  );
  const port = (await receiver.waitFor(/^PORT \d+$/, 20_000)).text.split(" ")[1];
  const sender = new Child(
    "TCP sender",
    deno("scripts/transfer_baselines.ts", "tcp-send", port, file),
    dir,
  );
  await sender.done;
  const line = await receiver.waitFor(/^\{/, 120_000);
  await Deno.remove(out);
  const { bytes, ms } = JSON.parse(line.text) as { bytes: number; ms: number };
  return bytes / (ms / 1000);
}

/** The window and ack frequency of the model: what sendfile's channel runs at on loopback. */
const MODEL_WINDOW = 48;
const MODEL_ACK_EVERY = 8;

/** A bare windowed protocol with `workUs` of busy work per datagram on each side; bytes per second. */
async function windowModel(
  dir: string,
  count: number,
  size: number,
  workUs: number,
): Promise<number> {
  const receiver = new Child(
    "model receiver",
    deno(
      "scripts/transfer_baselines.ts",
      "window-receive",
      String(workUs),
      String(MODEL_ACK_EVERY),
    ),
    dir,
  );
  const port = (await receiver.waitFor(/^PORT \d+$/, 20_000)).text.split(" ")[1];
  const sender = new Child(
    "model sender",
    deno(
      "scripts/transfer_baselines.ts",
      "window-send",
      port,
      String(count),
      String(size),
      String(MODEL_WINDOW),
      String(workUs),
    ),
    dir,
  );
  const status = await sender.done;
  if (!status.success) {
    receiver.stop();
    const why = sender.lines.map((l) => l.text).join(" ");
    throw new Error(`The model's sender failed: ${why}`);
  }
  const line = await receiver.waitFor(/^\{/, 60_000);
  const { bytes, ms } = JSON.parse(line.text) as { bytes: number; ms: number };
  return bytes / (ms / 1000);
}

interface TransferOptions {
  /** Put scripts/impair_proxy.ts in the path with these flags. */
  proxy?: string[];
  mode?: "selective" | "newreno";
  /** Time chat sends: some before the file, more while it moves. */
  chat?: boolean;
  /** Transfers at once, each between its own two clients (the first one chats). */
  flows?: number;
}

interface TransferResult {
  /** File bytes a second, of the first flow. */
  goodput: number;
  /**
   * Each flow's file bytes a second while every flow was moving (one flow: its goodput; none if
   * one was done before another began).
   */
  overlapGoodputs: number[];
  /** How long every flow was moving at once, ms. */
  overlapMs: number;
  /** The proxy's counts line, printed when it stops. */
  proxyCounts?: string;
  /** Durations of chat sends (until acknowledged) with the session idle, ms. */
  chatIdleMs: number[];
  /** Durations of chat sends that ended while the file was moving, ms. */
  chatBusyMs: number[];
}

/** One `sendfile` between two client processes. */
async function sendfile(
  dir: string,
  file: string,
  options: TransferOptions = {},
): Promise<TransferResult> {
  const run = await Deno.makeTempDir({ dir, prefix: "run_" });
  const children: Child[] = [];
  try {
    const server = new Child(
      "server",
      deno(
        "server.ts",
        "--host",
        "127.0.0.1",
        "--udp-port",
        "0",
        "--tcp-port",
        "0",
        "--data-dir",
        join(run, "server"),
        "--log-dir",
        join(run, "logs"),
      ),
      run,
    );
    children.push(server);
    let port = (await server.waitFor(/UDP listening on port \d+/, 30_000)).text.match(/\d+$/)![0];
    if (options.proxy) {
      const proxy = new Child(
        "proxy",
        deno("scripts/impair_proxy.ts", "--target", `127.0.0.1:${port}`, ...options.proxy),
        run,
      );
      children.push(proxy);
      port = (await proxy.waitFor(/^Proxy UDP listening on port \d+$/, 30_000)).text.match(
        /\d+$/,
      )![0];
    }
    const client = async (name: string, lines: string[], extra: string[]) => {
      const script = join(run, `${name}.txt`);
      await Deno.writeTextFile(script, lines.join("\n") + "\n");
      const child = new Child(
        name,
        deno(
          "client.ts",
          "--server",
          `127.0.0.1:${port}`,
          "--data-dir",
          join(run, name),
          "--log-dir",
          join(run, "logs"),
          "--download-dir",
          join(run, `${name}-downloads`),
          "--timeout",
          "120",
          "--channel-mode",
          options.mode ?? "selective",
          // Through the proxy, not around it over the machine's own addresses.
          "--traversal",
          "off",
          "--json",
          "--script",
          script,
          ...extra,
        ),
        run,
      );
      children.push(child);
      return child;
    };
    const flows = options.flows ?? 1;
    const suffix = (i: number) => i === 0 ? "" : String(i + 1);
    const bobs: Child[] = [];
    for (let i = 0; i < flows; i++) {
      bobs.push(
        await client(`bob${suffix(i)}`, [
          `register Bob${suffix(i)}`,
          "accept",
          "wait transfers within 3600",
          "wait terminate within 600",
        ], ["--accept-files"]),
      );
    }
    for (const bob of bobs) await bob.waitFor(/"command":"register","ok":true/, 60_000);
    const chats = (count: number, label: string) =>
      Array.from({ length: count }, (_, i) => `send Bob ${label} ${i}`);
    const alices: Child[] = [];
    for (let i = 0; i < flows; i++) {
      const chat = options.chat && i === 0;
      alices.push(
        await client(`alice${suffix(i)}`, [
          `register Alice${suffix(i)}`,
          `connect Bob${suffix(i)}`,
          ...(chat ? chats(IDLE_CHATS, "idle") : []),
          `sendfile ${file}`,
          ...(chat ? chats(BUSY_CHATS, "busy") : []),
          "wait transfers within 3600",
          "terminate",
        ], []),
      );
      // The first flow's idle chats are timed before any file moves.
      if (chat && flows > 1) {
        await alices[0].waitFor(/"command":"send","ok":true/, 120_000, IDLE_CHATS);
      }
    }
    const moved = await Promise.all(bobs.map(async (bob) => {
      const accepted = await bob.waitFor(/"event":"file_accepted"/, 120_000);
      const done = await bob.waitFor(/"event":"file_(done|failed)"/, 3_600_000);
      if (done.text.includes("file_failed")) throw new Error(`The transfer failed: ${done.text}`);
      return { bob, accepted, done };
    }));
    await Promise.all([...alices, ...bobs].map((child) => child.done));
    const size = (await Deno.stat(file)).size;
    const { accepted, done } = moved[0];
    const alice = alices[0];
    // A command's duration: from the previous command's result to its own.
    const results = alice.lines.filter((line) => line.text.includes('"event":"result"'));
    const offered = results.findIndex((line) => line.text.includes('"command":"sendfile"'));
    const chatIdleMs: number[] = [], chatBusyMs: number[] = [];
    for (let i = 1; i < results.length; i++) {
      const line = results[i];
      if (!line.text.includes('"command":"send","ok":true')) continue;
      const ms = line.at - results[i - 1].at;
      if (i < offered) chatIdleMs.push(ms);
      else if (results[i - 1].at >= accepted.at && line.at <= done.at) chatBusyMs.push(ms);
    }
    // Each flow's bytes while all were moving, from its receiver's progress lines.
    const from = Math.max(...moved.map((m) => m.accepted.at));
    const until = Math.min(...moved.map((m) => m.done.at));
    const overlapGoodputs = flows === 1
      ? [size / ((done.at - accepted.at) / 1000)]
      : until <= from
      ? [] // One was done before another began.
      : moved.map((m) => {
        const points = [{ at: m.accepted.at, bytes: 0 }];
        for (const line of m.bob.lines) {
          if (!line.text.includes('"event":"file_progress"')) continue;
          points.push({ at: line.at, bytes: (JSON.parse(line.text) as { done: number }).done });
        }
        points.push({ at: m.done.at, bytes: size });
        return (bytesAt(points, until) - bytesAt(points, from)) / ((until - from) / 1000);
      });
    const proxy = children.find((child) => child.label === "proxy");
    if (proxy !== undefined) {
      proxy.stop();
      await proxy.done;
    }
    return {
      goodput: size / ((done.at - accepted.at) / 1000),
      overlapGoodputs,
      overlapMs: Math.max(0, until - from),
      proxyCounts: proxy?.lines.find((line) => line.text.startsWith("Counts: "))?.text,
      chatIdleMs,
      chatBusyMs,
    };
  } finally {
    for (const child of children.reverse()) child.stop();
    await Promise.allSettled(children.map((c) => c.done));
    await Deno.remove(run, { recursive: true }).catch(() => {});
  }
}

async function randomFile(path: string, bytes: number): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const block = new Uint8Array(1024 * 1024);
  for (let left = bytes; left > 0; left -= block.length) {
    for (let i = 0; i < block.length; i += 65536) {
      crypto.getRandomValues(block.subarray(i, i + 65536));
    }
    await file.write(block.subarray(0, Math.min(block.length, left)));
  }
  file.close();
}

const mb = (bytesPerSecond: number) => (bytesPerSecond / 1e6).toFixed(2);

/** Bytes moved by a time, linearly between the nearest progress points around it. */
function bytesAt(points: { at: number; bytes: number }[], at: number): number {
  const after = points.findIndex((point) => point.at >= at);
  if (after === -1) return points[points.length - 1].bytes;
  if (after === 0) return points[0].bytes;
  const [a, b] = [points[after - 1], points[after]];
  return a.bytes + (b.bytes - a.bytes) * (at - a.at) / Math.max(1e-9, b.at - a.at);
}

/** The middle value (the upper one of an even count), as the other benchmarks report. */
function median(values: number[]): number {
  return percentile([...values].sort((a, b) => a - b), 0.5);
}

/** TCP Reno's goodput by the Mathis formula, MSS/RTT x 1.22/sqrt(p), bytes a second (at most the link). */
function mathis(link: Link, loss: number): number {
  if (loss === 0) return link.rate;
  const rtt = 2 * link.delayMs / 1000;
  return Math.min(link.rate, SEGMENT_BYTES / rtt * 1.22 / Math.sqrt(loss));
}

/** The file size the controller before BBR sends at a loss, MiB: it is slow where loss is high. */
function baselineMiB(flags: Flags, loss: number): number {
  if (loss === 0) return flags.linkMiB;
  if (loss < 0.05) return Math.min(flags.linkMiB, 4 * flags.baselineMiB);
  return Math.min(flags.linkMiB, flags.baselineMiB);
}

async function loopback(dir: string, flags: Flags, say: (text: string) => void) {
  const big = join(dir, "big.bin");
  const size = flags.sizeMiB * 1024 * 1024;
  await randomFile(big, size);
  const datagram = sealedDatagramBytes();
  const fileBytes = fileBytesPerDatagram();
  const datagrams = Math.ceil(size / fileBytes);
  say(`Loopback, ${flags.sizeMiB} MiB (${datagrams} datagrams of ${datagram} bytes):`);
  // Rounds back to back, each its own baseline: the machines are shared,
  // and their speed drifts by a third within a minute.
  const blasts: number[] = [], tcps: number[] = [], sendfiles: number[] = [];
  const models = flags.modelWorkUs.map(() => [] as number[]);
  for (let round = 1; round <= flags.rounds; round++) {
    const blast = await udpBlast(dir, datagrams, datagram);
    const tcp = await tcpCopy(dir, big);
    const switchboard = (await sendfile(dir, big)).goodput;
    blasts.push(blast);
    tcps.push(tcp);
    sendfiles.push(switchboard);
    say(
      `  round ${round}: UDP blast ${mb(blast)} MB/s, TCP ${mb(tcp)} MB/s, ` +
        `sendfile ${mb(switchboard)} MB/s (${(switchboard / blast).toFixed(2)} of the blast)`,
    );
    for (const [i, workUs] of flags.modelWorkUs.entries()) {
      const model = await windowModel(dir, datagrams, datagram, workUs);
      models[i].push(model / blast);
      say(
        `    model, ${workUs} us per datagram: ${mb(model)} MB/s (${(model / blast).toFixed(2)})`,
      );
    }
  }
  await Deno.remove(big);
  const toBlast = median(sendfiles.map((s, i) => s / blasts[i]));
  const toTcp = median(sendfiles.map((s, i) => s / tcps[i]));
  // Item 6 of issue 20: sendfile against the windowed model at 0 us, round
  // by round, in datagrams a second (both send datagrams of one size; each
  // of sendfile's carries `fileBytes` of the file, each of the model's
  // counts whole).
  const zero = flags.modelWorkUs.indexOf(0);
  const toModel = zero === -1
    ? undefined
    : median(sendfiles.map((s, i) => s / fileBytes / (blasts[i] * models[zero][i] / datagram)));
  say(`  bare UDP blast    ${mb(median(blasts))} MB/s (median)`);
  say(`  plain TCP         ${mb(median(tcps))} MB/s`);
  say(`  sendfile          ${mb(median(sendfiles))} MB/s`);
  say(
    `  sendfile / UDP blast ${toBlast.toFixed(2)}, sendfile / TCP ${toTcp.toFixed(2)}` +
      (toModel === undefined ? "" : `, sendfile / model at 0 us ${toModel.toFixed(2)}`) +
      ` (medians of ${flags.rounds} rounds)`,
  );
  for (const [i, workUs] of flags.modelWorkUs.entries()) {
    say(`  model, ${workUs} us per datagram / UDP blast ${median(models[i]).toFixed(2)}`);
  }
  return {
    sizeBytes: size,
    datagramBytes: datagram,
    rounds: flags.rounds,
    udpBlastBytesPerSecond: Math.round(median(blasts)),
    tcpBytesPerSecond: Math.round(median(tcps)),
    sendfileBytesPerSecond: Math.round(median(sendfiles)),
    ratioToUdpBlast: toBlast,
    ratioToTcp: toTcp,
    ratioToModelAt0Us: toModel,
    ratiosToUdpBlast: sendfiles.map((s, i) => s / blasts[i]),
    model: flags.modelWorkUs.map((workUs, i) => ({ workUs, ratioToUdpBlast: median(models[i]) })),
  };
}

async function bottleneck(dir: string, flags: Flags, say: (text: string) => void) {
  const file = join(dir, "link.bin");
  await randomFile(file, flags.linkMiB * 1024 * 1024);
  const baselineFiles = new Map<number, string>();
  const { link } = flags;
  say(
    `Through the proxy: a ${link.rate / 1e6} MB/s link, ${link.delayMs} ms one-way delay, ` +
      `a queue of ${link.queue} bytes (${
        (link.queue / (link.rate * 2 * link.delayMs / 1000)).toFixed(2)
      } BDP)` +
      (link.burst > 1 ? `, losses in runs of ${link.burst} on average` : "") +
      (link.jitterMs > 0 ? `, jitter +-${link.jitterMs} ms` : "") +
      (link.reorder > 0 ? `, ${link.reorder * 100}% reordered` : "") +
      (link.flows > 1 ? `, ${link.flows} flows at once` : "") +
      `; ${flags.linkMiB} MiB, shares of the link rate:`,
  );
  const rows = [];
  for (const loss of flags.losses) {
    const proxy = [
      ...["--loss", String(loss), "--delay", String(link.delayMs)],
      ...["--rate", String(link.rate), "--queue", String(link.queue), "--seed", "1"],
      ...(link.burst > 1 && loss > 0 ? ["--burst", String(link.burst)] : []),
      ...["--jitter", String(link.jitterMs), "--reorder", String(link.reorder)],
    ];
    const bbr = await sendfile(dir, file, { proxy, chat: true, flows: link.flows });
    const mib = baselineMiB(flags, loss);
    const baselineFile = baselineFiles.get(mib) ??
      (mib === flags.linkMiB ? file : join(dir, `baseline-${mib}.bin`));
    if (!baselineFiles.has(mib)) {
      if (baselineFile !== file) await randomFile(baselineFile, mib * 1024 * 1024);
      baselineFiles.set(mib, baselineFile);
    }
    const old = flags.skipBaseline
      ? { goodput: NaN }
      : await sendfile(dir, baselineFile, { proxy, mode: "newreno", flows: link.flows });
    const wait = /mean wait (\d+\.\d+) ms/.exec(bbr.proxyCounts ?? "")?.[1];
    const dropped = /(\d+) dropped by the full queue/.exec(bbr.proxyCounts ?? "")?.[1];
    const row = {
      loss,
      sendfileBytesPerSecond: Math.round(bbr.goodput),
      shareOfLink: bbr.goodput / link.rate,
      newrenoBytesPerSecond: Math.round(old.goodput),
      newrenoShareOfLink: old.goodput / link.rate,
      newrenoFileBytes: mib * 1024 * 1024,
      mathisShareOfLink: mathis(link, loss) / link.rate,
      meanQueueingDelayMs: wait === undefined ? undefined : Number(wait),
      queueDrops: dropped === undefined ? undefined : Number(dropped),
      chatIdleMs: median(bbr.chatIdleMs),
      chatBusyMs: bbr.chatBusyMs.length === 0 ? undefined : median(bbr.chatBusyMs),
      chatBusyCount: bbr.chatBusyMs.length,
      /** Each flow's share of the link while all of them were moving. */
      flowShares: bbr.overlapGoodputs.map((goodput) => goodput / link.rate),
      /** The largest flow's goodput over the smallest's, while all were moving. */
      flowSpread: bbr.overlapGoodputs.length === 0
        ? undefined
        : Math.max(...bbr.overlapGoodputs) / Math.min(...bbr.overlapGoodputs),
    };
    rows.push(row);
    say(
      `  ${String(loss * 100).padStart(2)}% loss: sendfile ${row.shareOfLink.toFixed(2)} ` +
        `(${mb(bbr.goodput)} MB/s); ` +
        (flags.skipBaseline
          ? ""
          : `NewReno-Veno ${row.newrenoShareOfLink.toFixed(3)} (${mib} MiB); `) +
        `Reno by Mathis ${row.mathisShareOfLink.toFixed(3)}; queueing ` +
        `${row.meanQueueingDelayMs ?? "?"} ms, ${row.queueDrops ?? "?"} queue drops; chat send ${
          row.chatIdleMs.toFixed(0)
        } ms idle, ` +
        `${row.chatBusyMs?.toFixed(0) ?? "-"} ms during (median of ${row.chatBusyCount})`,
    );
    if (link.flows > 1 && row.flowSpread === undefined) {
      say("      the flows never all moved at once: give them a larger --link-size");
    } else if (link.flows > 1) {
      if (bbr.overlapMs < 10_000) {
        say(
          `      (the flows moved together for ${(bbr.overlapMs / 1000).toFixed(1)} s only: ` +
            "progress comes every 0.5 s, so these shares are rough; give a larger --link-size)",
        );
      }
      say(
        `      flows while all moved: ${row.flowShares.map((x) => x.toFixed(2)).join(", ")} ` +
          `of the link (together ${row.flowShares.reduce((a, b) => a + b, 0).toFixed(2)}; ` +
          `largest / smallest ${row.flowSpread?.toFixed(2)})`,
      );
    }
  }
  return rows;
}

async function main(args: string[]): Promise<number> {
  const flags = flagsOrExitCode(() => parseFlags(args), HELP);
  if (typeof flags === "number") return flags;
  const dir = await Deno.makeTempDir({ prefix: "switchboard_bench_transfer_" });
  try {
    const say = (text: string) => flags.json || console.log(text);
    const result: Record<string, unknown> = flags.skipLoopback
      ? {}
      : await loopback(dir, flags, say);
    if (!flags.skipLossy) {
      result.bottleneck = {
        rateBytesPerSecond: flags.link.rate,
        delayMs: flags.link.delayMs,
        queueBytes: flags.link.queue,
        burst: flags.link.burst,
        flows: flags.link.flows,
        rows: await bottleneck(dir, flags, say),
      };
    }
    if (flags.json) console.log(JSON.stringify(result));
    return 0;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
