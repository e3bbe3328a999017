/**
 * Measures peer-to-peer file transfer goodput between two real client
 * processes on loopback, each figure beside a baseline measured in the same
 * run:
 *
 * - a 64 MiB `sendfile` against a bare UDP blast of the same number of
 *   datagrams of the same size (the ceiling of any reliable protocol on
 *   Deno's UDP) and against the same file over one plain TCP connection;
 * - `sendfile` through `scripts/impair_proxy.ts` at 5% and 10% loss with
 *   20 ms one-way delay, against the same path in stop-and-wait mode
 *   (seed 001's protocol: one segment at a time, 10 s timeout), per byte
 *   (stop-and-wait moves a smaller file, or it would take hours).
 *
 * Goodput is file bytes over the receiver's time from accepting the offer
 * (`file_accepted`) to the verified file (`file_done`); baselines are timed
 * by their receivers from the first byte to the last.
 *
 * Usage: deno task bench:transfer [--size MIB] [--rounds N] [--lossy-size KIB] [--saw-size KIB] [--skip-lossy] [--json]
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { fromFileUrl, join } from "@std/path";
import { encodeMessage } from "../lib/wire/codec.ts";
import { MAX_PEER_PAYLOAD_BYTES } from "../lib/wire/messages.ts";
import { integerFlag, rejectUnknownFlags } from "../lib/cli/usage_error.ts";
import { flagsOrExitCode, percentile } from "./_bench_support.ts";

const REPO = fromFileUrl(new URL("..", import.meta.url));
const CONFIG = join(REPO, "deno.json");
const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env"];

const HELP =
  `bench:transfer: peer file transfer goodput vs a bare UDP blast, plain TCP, and stop-and-wait

Usage: deno task bench:transfer [flags]

Flags:
  --size MIB        the loopback file (default 64)
  --rounds N        loopback rounds of blast, TCP and sendfile (default 3):
                    the figures are medians, the ratios medians of each
                    round's own ratio, as the machine's speed drifts
  --lossy-size KIB  the file sent through the lossy proxy (default 4096)
  --saw-size KIB    the file stop-and-wait sends through it (default 16)
  --skip-lossy      only the loopback figures
  --model US,...    also, in each round, a bare windowed protocol (window of
                    48, ack every 8, as sendfile's channel runs on loopback)
                    spending each of these microseconds of busy work per
                    datagram on both sides: how much of the blast a
                    protocol keeps for what it costs per datagram
  --json            one JSON object at the end instead of the table
  -h, --help        show this help`;

interface Flags {
  sizeMiB: number;
  rounds: number;
  lossyKiB: number;
  sawKiB: number;
  skipLossy: boolean;
  json: boolean;
  /** Busy microseconds per datagram of the windowed model runs; empty for none. */
  modelWorkUs: number[];
}

function parseFlags(args: string[]): Flags | "help" {
  const strings = ["size", "rounds", "lossy-size", "saw-size", "model"];
  const parsed = parseArgs(args, {
    string: strings,
    boolean: ["help", "json", "skip-lossy"],
    alias: { h: "help" },
    default: { size: "64", rounds: "3", "lossy-size": "4096", "saw-size": "16", model: "" },
  });
  rejectUnknownFlags(parsed, [...strings, "help", "json", "skip-lossy", "h"]);
  if (parsed.help) return "help";
  return {
    sizeMiB: integerFlag("--size", parsed.size, { min: 1, max: 4096 }),
    rounds: integerFlag("--rounds", parsed.rounds, { min: 1, max: 50 }),
    lossyKiB: integerFlag("--lossy-size", parsed["lossy-size"], { min: 1, max: 1_048_576 }),
    sawKiB: integerFlag("--saw-size", parsed["saw-size"], { min: 1, max: 1_048_576 }),
    skipLossy: parsed["skip-lossy"],
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
  readonly #label: string;
  #waiters: (() => void)[] = [];
  readonly done: Promise<Deno.CommandStatus>;

  constructor(label: string, args: string[], cwd: string) {
    this.#label = label;
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

  async waitFor(pattern: RegExp, ms: number): Promise<{ at: number; text: string }> {
    const deadline = performance.now() + ms;
    let exited = false;
    this.done.then(() => exited = true);
    while (true) {
      const hit = this.lines.find((line) => pattern.test(line.text));
      if (hit) return hit;
      if (exited || performance.now() > deadline) {
        const tail = this.lines.slice(-8).map((l) => `  ${l.text}`).join("\n");
        throw new Error(`The ${this.#label} never printed ${pattern}:\n${tail}`);
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

/** Size of a full `peer_data` datagram, what the blast sends. */
function peerDataDatagramBytes(): number {
  return encodeMessage({
    type: "peer_data",
    session: "0123456789abcdef",
    seq: 0,
    fragment: 0,
    fragments: 1,
    payload: new Uint8Array(MAX_PEER_PAYLOAD_BYTES),
  }).length;
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
  mode?: "selective" | "stop-and-wait";
}

/** One `sendfile` between two client processes; returns goodput, bytes per second. */
async function sendfile(dir: string, file: string, options: TransferOptions = {}): Promise<number> {
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
    const bob = await client("bob", [
      "register Bob",
      "accept",
      "wait transfers within 3600",
      "wait terminate within 600",
    ], ["--accept-files"]);
    await bob.waitFor(/"command":"register","ok":true/, 60_000);
    const alice = await client("alice", [
      "register Alice",
      "connect Bob",
      `sendfile ${file}`,
      "wait transfers within 3600",
      "terminate",
    ], []);
    const accepted = await bob.waitFor(/"event":"file_accepted"/, 120_000);
    const done = await bob.waitFor(/"event":"file_(done|failed)"/, 3_600_000);
    if (done.text.includes("file_failed")) throw new Error(`The transfer failed: ${done.text}`);
    await Promise.all([alice.done, bob.done]);
    const size = (await Deno.stat(file)).size;
    return size / ((done.at - accepted.at) / 1000);
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

/** The middle value (the upper one of an even count), as the other benchmarks report. */
function median(values: number[]): number {
  return percentile([...values].sort((a, b) => a - b), 0.5);
}

async function main(args: string[]): Promise<number> {
  const flags = flagsOrExitCode(() => parseFlags(args), HELP);
  if (typeof flags === "number") return flags;
  const dir = await Deno.makeTempDir({ prefix: "switchboard_bench_transfer_" });
  try {
    const big = join(dir, "big.bin");
    const size = flags.sizeMiB * 1024 * 1024;
    await randomFile(big, size);
    const datagram = peerDataDatagramBytes();
    const datagrams = Math.ceil(size / MAX_PEER_PAYLOAD_BYTES);
    const say = (text: string) => flags.json || console.log(text);
    say(`Loopback, ${flags.sizeMiB} MiB (${datagrams} datagrams of ${datagram} bytes):`);
    // Rounds back to back, each its own baseline: the machines are shared,
    // and their speed drifts by a third within a minute.
    const blasts: number[] = [], tcps: number[] = [], sendfiles: number[] = [];
    const models = flags.modelWorkUs.map(() => [] as number[]);
    for (let round = 1; round <= flags.rounds; round++) {
      const blast = await udpBlast(dir, datagrams, datagram);
      const tcp = await tcpCopy(dir, big);
      const switchboard = await sendfile(dir, big);
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
    const toBlast = median(sendfiles.map((s, i) => s / blasts[i]));
    const toTcp = median(sendfiles.map((s, i) => s / tcps[i]));
    say(`  bare UDP blast    ${mb(median(blasts))} MB/s (median)`);
    say(`  plain TCP         ${mb(median(tcps))} MB/s`);
    say(`  sendfile          ${mb(median(sendfiles))} MB/s`);
    say(
      `  sendfile / UDP blast ${toBlast.toFixed(2)}, sendfile / TCP ${toTcp.toFixed(2)} ` +
        `(medians of ${flags.rounds} rounds)`,
    );
    for (const [i, workUs] of flags.modelWorkUs.entries()) {
      say(`  model, ${workUs} us per datagram / UDP blast ${median(models[i]).toFixed(2)}`);
    }
    const result: Record<string, unknown> = {
      sizeBytes: size,
      datagramBytes: datagram,
      rounds: flags.rounds,
      udpBlastBytesPerSecond: Math.round(median(blasts)),
      tcpBytesPerSecond: Math.round(median(tcps)),
      sendfileBytesPerSecond: Math.round(median(sendfiles)),
      ratioToUdpBlast: toBlast,
      ratioToTcp: toTcp,
      ratiosToUdpBlast: sendfiles.map((s, i) => s / blasts[i]),
      model: flags.modelWorkUs.map((workUs, i) => ({ workUs, ratioToUdpBlast: median(models[i]) })),
    };
    if (!flags.skipLossy) {
      const lossy = join(dir, "lossy.bin"), small = join(dir, "saw.bin");
      await randomFile(lossy, flags.lossyKiB * 1024);
      await randomFile(small, flags.sawKiB * 1024);
      const rows = [];
      for (const loss of [0.05, 0.1]) {
        const proxy = ["--loss", String(loss), "--delay", "20", "--seed", "1"];
        say(`Through the proxy, ${loss * 100}% loss each way, 20 ms one-way delay:`);
        const selective = await sendfile(dir, lossy, { proxy });
        say(`  sendfile (${flags.lossyKiB} KiB)        ${mb(selective)} MB/s`);
        const saw = await sendfile(dir, small, { proxy, mode: "stop-and-wait" });
        say(`  stop-and-wait (${flags.sawKiB} KiB)     ${mb(saw)} MB/s`);
        say(`  sendfile / stop-and-wait ${(selective / saw).toFixed(1)}`);
        rows.push({
          loss,
          delayMs: 20,
          sendfileBytesPerSecond: Math.round(selective),
          stopAndWaitBytesPerSecond: Math.round(saw),
          ratio: selective / saw,
        });
      }
      result.lossy = rows;
    }
    if (flags.json) console.log(JSON.stringify(result));
    return 0;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
