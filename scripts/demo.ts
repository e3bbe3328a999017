/**
 * `deno task demo`: starts a server and two scripted clients on free
 * loopback ports in a temporary data directory, and shows registration, a
 * name collision, presence, discovery, files shared with the server, a
 * direct peer-to-peer chat and deregistration, over the encrypted channel to
 * the server (protocol version 3, the server's key pinned on first use), with
 * an operator's scrape of `/metrics`. Exits 0 by itself.
 *
 * @module
 */
import { fromFileUrl, join } from "@std/path";

const ROOT = fromFileUrl(new URL("..", import.meta.url));
const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env"];
const DEADLINE_MS = 60_000;

const encoder = new TextEncoder();

/** A running program whose output lines are printed with a prefix. */
class Program {
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #lines: string[] = [];
  #wakeup: (() => void) | undefined;
  #done: Promise<void>;

  constructor(label: string, script: string, args: string[], withStdin: boolean) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...PERMISSIONS,
        "--config",
        join(ROOT, "deno.json"),
        join(ROOT, script),
        ...args,
      ],
      stdin: withStdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.#stdin = withStdin ? this.#child.stdin.getWriter() : undefined;
    this.#done = Promise.all([
      this.#pump(label, this.#child.stdout, false),
      this.#pump(label, this.#child.stderr, true),
    ]).then(() => {});
  }

  async #pump(label: string, stream: ReadableStream<Uint8Array>, isErr: boolean): Promise<void> {
    let buffer = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf("\n")) !== -1) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        console.log(`${label.padEnd(8)} ${isErr ? "! " : "| "}${line}`);
        this.#lines.push(line);
        this.#wakeup?.();
      }
    }
  }

  /** Waits for a line matching `pattern` and returns its match. */
  async waitFor(pattern: RegExp): Promise<RegExpMatchArray> {
    const deadline = Date.now() + DEADLINE_MS;
    let seen = 0;
    while (Date.now() < deadline) {
      for (; seen < this.#lines.length; seen++) {
        const match = this.#lines[seen].match(pattern);
        if (match) {
          this.#lines.splice(0, seen + 1);
          return match;
        }
      }
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#wakeup = resolve;
      const timer = setTimeout(resolve, 200);
      await promise;
      clearTimeout(timer);
    }
    throw new Error(`timed out waiting for ${pattern}`);
  }

  async type(line: string): Promise<void> {
    console.log(`${"".padEnd(8)} > ${line}`);
    await this.#stdin!.write(encoder.encode(line + "\n"));
  }

  async finish(signal?: Deno.Signal): Promise<number> {
    if (signal) this.#child.kill(signal);
    if (this.#stdin) await this.#stdin.close().catch(() => {});
    const status = await this.#child.status;
    await this.#done;
    return status.code;
  }
}

function step(text: string): void {
  console.log(`\n== ${text}`);
}

async function clientRun(label: string, args: string[], commands: string[]): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "switchboard-demo-script-" });
  const script = join(dir, "commands.txt");
  await Deno.writeTextFile(script, commands.join("\n") + "\n");
  console.log(`${"".padEnd(8)} (script: ${commands.join("; ")})`);
  const code = await new Program(label, "client.ts", [...args, "--script", script], false).finish();
  await Deno.remove(dir, { recursive: true });
  return code;
}

async function main(): Promise<number> {
  const tmp = await Deno.makeTempDir({ prefix: "switchboard-demo-" });
  const dataDir = join(tmp, "data");
  const logDir = join(tmp, "logs");
  console.log(`Switchboard demo: data and logs in ${tmp}`);
  let server: Program | undefined;
  let alice: Program | undefined;
  try {
    step(
      "Start the server on free loopback ports, with /healthz and /metrics for operators; it " +
        "prints its key's fingerprint, which clients pin",
    );
    const metricsPort = freePort();
    server = new Program("server", "server.ts", [
      "--metrics",
      `127.0.0.1:${metricsPort}`,
      "--host",
      "127.0.0.1",
      "--udp-port",
      "0",
      "--tcp-port",
      "0",
      "--data-dir",
      dataDir,
      "--log-dir",
      logDir,
    ], false);
    const udpPort = (await server.waitFor(/^Server UDP listening on port (\d+)/))[1];
    await server.waitFor(/^Server running/);
    const common = ["--server", `127.0.0.1:${udpPort}`, "--log-dir", logDir];

    step("Alice registers and watches who comes and goes (a session fed line by line)");
    alice = new Program("alice", "client.ts", [
      ...common,
      "--name",
      "Alice Smith",
      "--tcp-port",
      "5001",
      "--data-dir",
      join(tmp, "alice"),
      "--download-dir",
      join(tmp, "alice-downloads"),
    ], true);
    await alice.waitFor(/^Connected to server/);
    await alice.type("register");
    await alice.waitFor(/^Registered and logged in as/);
    console.log(
      `${"".padEnd(8)} (everything after hello travels sealed: Noise IK with the server's key, ` +
        "which Alice's client has now pinned; her identity is the key pair in client_key.json, " +
        "and the server keeps only its public half)",
    );
    await alice.type("watch");
    await alice.waitFor(/^Watching/);
    await alice.type("tcp Hello server, this is Alice over TCP");
    await alice.waitFor(/acknowledged/);

    step('A second client tries the name "alice smith": names ignore case, so it is taken');
    const bobArgs = [...common, "--tcp-port", "5002", "--data-dir", join(tmp, "bob")];
    const collision = await clientRun("bob", bobArgs, ["register alice smith"]);
    console.log(
      `${"".padEnd(8)} (exit code ${collision}: the collision is refused, as it must be)`,
    );
    if (collision !== 1) throw new Error(`expected the collision to exit 1, got ${collision}`);

    step("Bob registers, finds Alice, and shares a data file with the server");
    const csv = join(tmp, "readings.csv");
    const bob = await clientRun("bob", bobArgs, [
      "register Bob Jones",
      "list",
      "lookup alice smith",
      `generate ${csv} 1000`,
      `upload ${csv}`,
      "files",
      `download readings.csv ${join(tmp, "readings-copy.csv")}`,
      "exit",
    ]);
    if (bob !== 0) throw new Error(`Bob's script failed with exit code ${bob}`);
    await alice.waitFor(/"Bob Jones" went offline/);

    step(
      "Bob comes back later (login is the handshake with the key pair his name is bound to: " +
        "no secret crosses the network), chats with Alice and sends her the readings directly, " +
        "end to end encrypted (Noise IKpsk2; the server vouches for each side's key)",
    );
    const chatDir = await Deno.makeTempDir({ prefix: "switchboard-demo-script-" });
    const bobScript = join(chatDir, "commands.txt");
    const bobCommands = [
      "login Bob Jones",
      "connect Alice Smith",
      "send Hi Alice, this goes straight to you over UDP, no server in between",
      "send Retransmitted if lost, delivered once and in order",
      `sendfile ${csv}`,
      "wait transfers within 60",
      "wait messages 1 from Alice Smith within 30",
      "terminate",
      "delete readings.csv",
      "deregister",
    ];
    await Deno.writeTextFile(bobScript, bobCommands.join("\n") + "\n");
    console.log(`${"".padEnd(8)} (script: ${bobCommands.join("; ")})`);
    const bobAgain = new Program("bob", "client.ts", [...bobArgs, "--script", bobScript], false);
    await alice.waitFor(/wants to connect/);
    await alice.type("accept");
    await alice.waitFor(/^Connected with "Bob Jones"/);
    await alice.waitFor(/^\[Bob Jones\] Retransmitted/);
    await alice.waitFor(/offers "readings\.csv"/);
    await alice.type("acceptfile");
    await alice.waitFor(/^Received "readings\.csv" from "Bob Jones"/);
    console.log(
      `${"".padEnd(8)} (the server introduced both sides; their probes found the direct path ` +
        "below, and its relay would have carried the session if none worked)",
    );
    await alice.type("peers");
    await alice.waitFor(/^\s+Bob Jones\b/);
    await alice.type("send Hello Bob, got both of them, and the file");
    await alice.waitFor(/^Delivered to "Bob Jones"/);
    await alice.waitFor(/"Bob Jones" ended the session/);
    const again = await bobAgain.finish();
    await Deno.remove(chatDir, { recursive: true });
    if (again !== 0) throw new Error(`Bob's second script failed with exit code ${again}`);

    step("Alice asks for her status: the server's view of her address, and her NAT's mapping type");
    await alice.type("status");
    await alice.waitFor(/^Server /);

    step(`An operator scrapes http://127.0.0.1:${metricsPort}/metrics (a few of its lines)`);
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    for (const line of metrics.split("\n")) {
      if (/^switchboard_(registered_clients|active_sessions|requests_refused_total)\b/.test(line)) {
        console.log(`${"".padEnd(8)} ${line}`);
      }
    }

    step("Alice deregisters and leaves");
    await alice.type("deregister");
    await alice.waitFor(/^Deregistered/);
    await alice.type("exit");
    const aliceCode = await alice.finish();
    alice = undefined;
    if (aliceCode !== 0) throw new Error(`Alice's client exited with ${aliceCode}`);

    step("Stop the server with Ctrl+C (SIGINT)");
    const serverCode = await server.finish("SIGINT");
    server = undefined;
    if (serverCode !== 0) throw new Error(`the server exited with ${serverCode}`);

    step(`${join(dataDir, "registrations.json")} (empty: everyone deregistered)`);
    console.log(await Deno.readTextFile(join(dataDir, "registrations.json")));
    step(`${join(logDir, "server.log")}`);
    console.log(await Deno.readTextFile(join(logDir, "server.log")));
    console.log(
      "Demo finished: identities, presence, discovery, files, a peer-to-peer chat, a " +
        "peer-to-peer file transfer, metrics and deregistration all worked, over an encrypted " +
        "channel to the server and an end-to-end encrypted peer session that the server " +
        "introduced and that found its direct path.",
    );
    return 0;
  } catch (error) {
    console.error(`error: demo failed: ${(error as Error).message}`);
    return 1;
  } finally {
    await alice?.finish("SIGKILL");
    await server?.finish("SIGKILL");
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** A TCP port that was free a moment ago, on loopback. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

if (import.meta.main) {
  Deno.exit(await main());
}
