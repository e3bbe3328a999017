/**
 * A client process under attack, measured: a peer with an open session
 * offers it 2,000 files of 1 TB (it runs with `--accept-files`), then a
 * stranger on 127.0.0.2 floods its UDP port with `peer_connect` datagrams
 * (each a new session, encoded with the codec) while its real peer
 * connects. The victim runs from any checkout (this one, or an older one for
 * figures side by side); the attacker, the stranger and the real peer run in
 * this process on this checkout's code. For `tests/e2e_abuse_test.ts` and
 * `scripts/bench_abuse.ts`.
 *
 * @module
 */
import { join } from "@std/path";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { encodeIntroduction, PeerCipher } from "../lib/client/peer_cipher.ts";
import { tai64n } from "../lib/crypto/introduction.ts";
import { generateKeyPair } from "../lib/crypto/key_pair.ts";
import { SeededRandom } from "../lib/random.ts";
import { fromHex } from "../lib/hex.ts";

/** Options of {@linkcode clientFloods}. */
export interface ClientFloodOptions {
  /** The checkout whose `client.ts` is the victim. */
  readonly checkout: string;
  /** The server's UDP port on 127.0.0.1. */
  readonly serverPort: number;
  /** Offers of 1 TB (default 2,000). */
  readonly offers?: number;
  /** `peer_connect` datagrams a second from the stranger (default 4,000). */
  readonly connectsPerSecond?: number;
  /** How long the connect flood lasts, ms (default 4,000). */
  readonly connectFloodMs?: number;
}

/** What the victim went through. */
export interface ClientFloodFigures {
  /** Offers made and partial files left in the victim's download directory. */
  readonly offers: number;
  readonly partialFiles: number;
  /** What those partial files hold, MiB. */
  readonly partialMiB: number;
  /** `peer_connect` datagrams the stranger sent. */
  readonly strangerConnects: number;
  /** The real peer's `connect` under the flood, ms (Infinity if it failed). */
  readonly connectMs: number;
  /** The victim's resident memory at the end and at its peak, MiB. */
  readonly rssMiB: number;
  readonly peakRssMiB: number;
}

const TB = 2 ** 40;

/** A child process whose stdout lines are kept, with a wait for one. */
class Victim {
  readonly child: Deno.ChildProcess;
  #text = "";
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reading: Promise<void>;

  constructor(checkout: string, args: string[]) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--config",
        join(checkout, "deno.json"),
        join(checkout, "client.ts"),
        ...args,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.child.stdin.getWriter();
    const read = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) this.#text += chunk;
    };
    this.#reading = Promise.all([read(this.child.stdout), read(this.child.stderr)]).then(() => {});
  }

  async write(line: string): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(line + "\n"));
  }

  /** Waits until the output from `from` on matches `pattern`; returns where it ends. */
  async waitFor(pattern: RegExp, from: number, ms = 20_000): Promise<number> {
    const until = performance.now() + ms;
    while (performance.now() < until) {
      const match = pattern.exec(this.#text.slice(from));
      if (match !== null) return from + match.index + match[0].length;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`The victim never printed ${pattern}:\n${this.#text.slice(-3000)}`);
  }

  get length(): number {
    return this.#text.length;
  }

  async memory(): Promise<{ rss: number; peak: number }> {
    // Read by `cat`: Deno asks for every permission to read /proc (and tests run without it).
    const { stdout } = await new Deno.Command("cat", { args: [`/proc/${this.child.pid}/status`] })
      .output();
    const status = new TextDecoder().decode(stdout);
    const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1]);
    return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 };
  }

  async stop(): Promise<void> {
    await this.#writer.close().catch(() => {});
    try {
      this.child.kill("SIGTERM");
    } catch {
      // gone already
    }
    await this.child.status;
    await this.#reading.catch(() => {});
  }
}

async function peer(serverPort: number, name: string): Promise<ClientDriver> {
  const driver = await ClientDriver.open({
    serverHost: "127.0.0.1",
    serverPort,
    udpPort: 0,
    tcpPort: 40000,
    name,
    via: "udp",
    retry: { initialMs: 250, maxMs: 1000, jitter: 0.2, giveUpMs: 20_000 },
    acceptFiles: false,
  });
  for (const kind of ["hello", "register"] as const) {
    const result = await driver.run({ kind });
    if (!result.ok) throw new Error(`${name} ${kind}: ${result.error}`);
  }
  return driver;
}

/**
 * Runs the offer flood, then the connect flood with a real peer's connect,
 * against a victim client from `checkout`, and measures it.
 *
 * @param options the victim's checkout, the server, and the floods' sizes
 * @returns the figures
 */
export async function clientFloods(options: ClientFloodOptions): Promise<ClientFloodFigures> {
  const offers = options.offers ?? 2000;
  const dir = await Deno.makeTempDir({ prefix: "switchboard_client_floods_" });
  const downloads = join(dir, "downloads");
  const victim = new Victim(options.checkout, [
    "--server",
    `127.0.0.1:${options.serverPort}`,
    "--udp-port",
    "0",
    "--accept-files",
    "--download-dir",
    downloads,
    "--data-dir",
    join(dir, "data"),
    "--log-dir",
    join(dir, "logs"),
  ]);
  const drivers: ClientDriver[] = [];
  try {
    await victim.waitFor(/Connected to server/, 0);
    // Its UDP port, from its log (one chosen here and freed could be taken meanwhile).
    let udpPort = NaN;
    for (let tries = 0; !(udpPort > 0) && tries < 200; tries++) {
      if (tries > 0) await new Promise((resolve) => setTimeout(resolve, 50));
      const log = await Deno.readTextFile(join(dir, "logs", "client.log")).catch(() => "");
      udpPort = Number(/started on UDP port (\d+)/.exec(log)?.[1]);
    }
    if (!(udpPort > 0)) throw new Error("The victim's log names no UDP port");
    let at = victim.length;
    await victim.write("register Bob");
    at = await victim.waitFor(/Registered/, at);

    // The offer flood, over a session the victim accepted.
    const mallory = await peer(options.serverPort, "Mallory");
    drivers.push(mallory);
    await victim.write("accept");
    const connected = await mallory.run({ kind: "connect", name: "Bob" });
    if (!connected.ok) throw new Error(`Mallory could not connect: ${connected.error}`);
    at = await victim.waitFor(/Mallory/, at);
    // A sparse file of 1 TB: what is read of it is zeros, and it costs no disk.
    const source = join(dir, "tera.bin");
    await Deno.writeFile(source, new Uint8Array(0));
    await Deno.truncate(source, TB);
    const sent = await Promise.all(
      Array.from({ length: offers }, (_, i) =>
        mallory.run({
          kind: "sendfile",
          to: "Bob",
          path: source,
          name: `big${i}.bin`,
          size: TB,
          sha256: crypto.getRandomValues(new Uint8Array(32)),
        })),
    );
    if (!sent.every((r) => r.ok)) throw new Error("Mallory's offers were not all made");
    // Let the victim answer them all (or take them, as it did before), then
    // Mallory goes: what the victim began stays behind as partial files.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    await mallory.close();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    let partialFiles = 0;
    let partialBytes = 0;
    try {
      for await (const entry of Deno.readDir(downloads)) {
        if (!entry.name.endsWith(".part")) continue;
        partialFiles++;
        partialBytes += (await Deno.stat(join(downloads, entry.name))).size;
      }
    } catch {
      // no download directory: nothing was begun
    }

    // The connect flood from a stranger, and the real peer's connect in it.
    const alice = await peer(options.serverPort, "Alice");
    drivers.push(alice);
    await victim.write("accept");
    const stranger = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.2", port: 0 });
    let strangerConnects = 0;
    let flooding = true;
    const rate = options.connectsPerSecond ?? 4000;
    const flood = (async () => {
      const started = performance.now();
      const target = { transport: "udp", hostname: "127.0.0.1", port: udpPort } as const;
      while (flooding) {
        const due = Math.floor((performance.now() - started) * rate / 1000);
        while (strangerConnects < due) {
          const n = strangerConnects++;
          const session = n.toString(16).padStart(16, "0");
          await stranger.send(strangerConnect(session), target);
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    const floodMs = options.connectFloodMs ?? 4000;
    await new Promise((resolve) => setTimeout(resolve, Math.min(1000, floodMs / 4)));
    const startedAt = performance.now();
    const connect = await alice.run({ kind: "connect", name: "Bob" });
    const connectMs = connect.ok ? performance.now() - startedAt : Infinity;
    const rest = floodMs - (performance.now() - startedAt) - Math.min(1000, floodMs / 4);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, rest)));
    flooding = false;
    await flood;
    stranger.close();
    const memory = await victim.memory();
    return {
      offers,
      partialFiles,
      partialMiB: partialBytes / 2 ** 20,
      strangerConnects,
      connectMs,
      rssMiB: memory.rss,
      peakRssMiB: memory.peak,
    };
  } finally {
    for (const driver of drivers) await driver.close().catch(() => {});
    await victim.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/**
 * A `peer_connect` from a stranger with a key pair of its own and none of
 * the victim's, made once; each copy carries another session id (which the
 * handshake binds, so none decrypts). It costs the victim a Diffie-Hellman
 * only within its per-address budget, and is then dropped.
 */
function strangerConnect(session: string): Uint8Array {
  strangerInitiation ??= (() => {
    const random = new SeededRandom(7);
    const cipher = new PeerCipher({
      session: "0000000000000000",
      staticKeyPair: generateKeyPair(random),
      remoteKey: generateKeyPair(random).publicKey,
      psk: new Uint8Array(32),
      random,
    });
    const timestamp = tai64n(Date.now());
    const introduction = encodeIntroduction({
      name: "Stranger",
      nonce: new Uint8Array(16),
      timestamp,
    });
    return cipher.initiate(0, introduction);
  })();
  const bytes = strangerInitiation.slice();
  bytes.set(fromHex(session), 4);
  return bytes;
}

let strangerInitiation: Uint8Array | undefined;
