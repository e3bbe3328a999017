/**
 * End-to-end tests: the real server and client run as separate processes on
 * loopback ports chosen at run time, and the client is driven through its
 * standard input (or a script file) the way a user drives it.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { dirname, join } from "@std/path";
import { clientKeyPathBeside } from "../lib/io/client_key_file.ts";
import { encodeFrame } from "../lib/wire/frame_decoder.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import {
  CLIENT_PATH,
  delay,
  type Finished,
  runClient,
  runProgram,
  SERVER_PATH,
  serverArgs,
  startClient,
  startServer,
  tempDir,
  unusedUdpPort,
  withTimeout,
} from "./_processes.ts";

/**
 * Flags every client in these tests gets, so nothing is written to the cwd:
 * logs in `logDir`, identities in `client/` beside it.
 */
/** Flags for a client with a key of its own (another data directory): someone else. */
function otherKey(logDir: string): string[] {
  return ["--data-dir", join(dirname(logDir), "someone-else")];
}

function clientArgs(server: string, name: string, logDir: string, ...more: string[]): string[] {
  return [
    "--server",
    server,
    "--name",
    name,
    "--log-dir",
    logDir,
    "--data-dir",
    join(dirname(logDir), "client"),
    "--timeout",
    "5",
    ...more,
  ];
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function nonEmptyLines(text: string): string[] {
  return text.split("\n").filter((line) => line !== "");
}

function describe(result: Finished): string {
  return `exit ${result.code}\n--- stdout ---\n${result.stdout}--- stderr ---\n${result.stderr}`;
}

function assertExit(result: Finished, code: number): void {
  assertEquals(result.code, code, describe(result));
}

/** Asserts stderr is exactly one `error:` line and nothing looks like a stack trace. */
function assertOneErrorLine(result: Finished, pattern: RegExp): string {
  const lines = nonEmptyLines(result.stderr);
  assertEquals(lines.length, 1, `expected one line on stderr\n${describe(result)}`);
  assertMatch(lines[0], /^error: /);
  assertMatch(lines[0], pattern);
  assert(!/^\s+at /m.test(result.stderr + result.stdout), `stack trace\n${describe(result)}`);
  return lines[0];
}

type RegistryFile = Record<string, Record<string, unknown>>;

interface SavedIdentity {
  server: string;
  name: string;
  key: string;
}

async function readIdentities(path: string): Promise<SavedIdentity[]> {
  return JSON.parse(await Deno.readTextFile(path)).identities;
}

async function readRegistry(dataDir: string): Promise<RegistryFile> {
  return JSON.parse(await Deno.readTextFile(`${dataDir}/registrations.json`));
}

function assertRegistryEntry(entry: Record<string, unknown> | undefined, udpPort?: number): void {
  if (entry === undefined) throw new Error("The registry entry is missing");
  for (const key of ["ip", "udp_port", "tcp_port", "registered_at", "public_key"]) {
    assert(Object.hasOwn(entry, key), `the entry has "${key}": ${JSON.stringify(entry)}`);
  }
  assert(!Object.hasOwn(entry, "token"), "no token in clear");
  assertEquals(entry.ip, "127.0.0.1");
  assertEquals(entry.tcp_port, 5001);
  assert(Number.isInteger(entry.udp_port) && (entry.udp_port as number) > 0, "udp_port");
  if (udpPort !== undefined) assertEquals(entry.udp_port, udpPort);
  assert(!Number.isNaN(Date.parse(entry.registered_at as string)), "registered_at is a date");
  assertMatch(entry.public_key as string, /^[0-9a-f]{64}$/);
  assertEquals(entry.key_sha256, "", "no secret's hash: the public key is the identity");
}

Deno.test("server and client register, message, show status and deregister end to end", async () => {
  await using dir = await tempDir();
  const dataDir = dir.join("data");
  const logDir = dir.join("logs");
  const identityFile = dir.join("client", "identities.json");
  await using server = await startServer({ dataDir, logDir });
  await using client = startClient(clientArgs(server.address, "Alice Smith", logDir));

  await client.waitForLine(
    new RegExp(
      `^Connected to server ${
        escape(server.address)
      } \\(version [^)]+, TCP port ${server.tcpPort}, open login\\)$`,
    ),
  );

  await client.write("register\n");
  await client.waitForLine(/^Registered and logged in as "Alice Smith"$/);
  await server.waitForLine(
    /^Registered "Alice Smith" at 127\.0\.0\.1 \(UDP port \d+, TCP port 5001\).* UDP\b/,
  );
  // The reply comes only once the registration is durable: the file has it now.
  const text = await Deno.readTextFile(`${dataDir}/registrations.json`);
  const registry = JSON.parse(text) as RegistryFile;
  assertEquals(Object.keys(registry), ["Alice Smith"]);
  assertRegistryEntry(registry["Alice Smith"]);
  assert(!/"token"\s*:/.test(text), "no token in clear");
  if (Deno.build.os !== "windows") {
    const mode = (await Deno.stat(`${dataDir}/registrations.json`)).mode!;
    assertEquals(mode & 0o777, 0o600, "registrations.json is private to its owner");
  }
  // register noted the identity before it said so, privately; the name is bound to the
  // public key of the client's key pair, kept beside it.
  const identities = await readIdentities(identityFile);
  assertEquals(identities.map((i) => [i.server, i.name]), [[server.address, "Alice Smith"]]);
  assertEquals(identities[0].key, undefined, "no secret is saved");
  const keyFile = clientKeyPathBeside(identityFile);
  const clientKey = JSON.parse(await Deno.readTextFile(keyFile));
  assertEquals(registry["Alice Smith"].public_key, clientKey.publicKey);
  if (Deno.build.os !== "windows") {
    assertEquals((await Deno.stat(identityFile)).mode! & 0o777, 0o600, "identities are private");
    assertEquals((await Deno.stat(keyFile)).mode! & 0o777, 0o600, "the key pair is private");
  }

  await client.write('tcp hello from Alice, with {braces} and "quotes"\n');
  await client.waitForLine(/^The server acknowledged the TCP message$/);
  await server.waitForLine(
    /^Message from "Alice Smith" over TCP, request \d+: "hello from Alice, with \{braces\} and \\"quotes\\""/,
  );

  await client.write("status\n");
  const status = await client.waitForLine(/^Server /);
  const statusMatch = new RegExp(
    `^Server ${escape(server.address)} \\(TCP port ${server.tcpPort}, open login\\); ` +
      `name "Alice Smith", logged in as "Alice Smith"; UDP port (\\d+), TCP port 5001; ` +
      // Address discovery may be done, half done (the mapping type comes last) or not yet.
      `requests over UDP(?:; public address 127\\.0\\.0\\.1:(\\d+)(?:, NAT mapping endpoint-independent)?)?$`,
  ).exec(status);
  if (statusMatch === null) throw new Error(`Unexpected status line: ${status}`);
  assertEquals(registry["Alice Smith"].udp_port, Number(statusMatch[1]));
  // Address discovery (tests/e2e_discovery_test.ts), if done, saw the same port.
  if (statusMatch[2] !== undefined) assertEquals(Number(statusMatch[2]), Number(statusMatch[1]));

  await client.write("deregister\n");
  await client.waitForLine(/^Deregistered "Alice Smith"; its identity and files are deleted$/);
  await server.waitForLine(/^Deregistered "Alice Smith"\W.*\bUDP\b/);
  assertEquals(await readRegistry(dataDir), {});
  assertEquals(await readIdentities(identityFile), [], "deregister forgets the saved identity");

  const result = await client.finished();
  assertExit(result, 0);
  assertEquals(result.stderr, "");

  assertEquals(await server.stop(), 0);
  const serverLog = await Deno.readTextFile(`${logDir}/server.log`);
  assertMatch(serverLog, /INFO .*Registered "Alice Smith" at 127\.0\.0\.1 \(UDP port \d+/);
  assertMatch(
    serverLog,
    /INFO .*Message from "Alice Smith" over TCP, request \d+: "hello from Alice/,
  );
  assertMatch(serverLog, /INFO .*Deregistered "Alice Smith"\W.*\bUDP\b/);
  assert(!serverLog.includes(clientKey.privateKey), "no private key in the server log");
  const clientLogText = await Deno.readTextFile(`${logDir}/client.log`);
  assert(!clientLogText.includes(clientKey.privateKey), "no private key in the client log");
  const clientLog = await Deno.stat(`${logDir}/client.log`);
  assert(clientLog.isFile && clientLog.size > 0, "logs/client.log is written");
});

Deno.test("client register refuses a name taken in another case, in text and JSON", async () => {
  await using dir = await tempDir();
  const dataDir = dir.join("data");
  const logDir = dir.join("logs");
  await using server = await startServer({ dataDir, logDir });

  const first = await runClient({
    args: clientArgs(server.address, "Alice Smith", logDir),
    stdin: "register\n",
  });
  assertExit(first, 0);
  assertStringIncludes(first.stdout, 'Registered and logged in as "Alice Smith"');

  // Others, with keys of their own (the same key registering its name again is logged in).
  const second = await runClient({
    args: clientArgs(server.address, "alice SMITH", logDir, ...otherKey(logDir)),
    stdin: "register\nstatus\n",
  });
  assertExit(second, 1);
  assertOneErrorLine(second, /"alice SMITH".*name is taken/);
  assert(!second.stdout.includes("Server "), "status after the failure did not run");

  const json = await runClient({
    args: clientArgs(server.address, "ALICE smith", logDir, "--json", ...otherKey(logDir)),
    stdin: "register\n",
  });
  assertExit(json, 1);
  const objects = nonEmptyLines(json.stdout).map((line) => JSON.parse(line));
  assert(objects.every((o) => typeof o === "object" && o !== null && !Array.isArray(o)));
  assertEquals(objects[0].event, "connected");
  const failure = objects.find((o) => o.event === "result" && o.command === "register");
  assert(failure !== undefined, json.stdout);
  assertEquals(failure.ok, false);
  assertEquals(failure.code, "name_taken");
  assertStringIncludes(failure.error, "ALICE smith");

  assertEquals(Object.keys(await readRegistry(dataDir)), ["Alice Smith"]);
  await server.waitForLine(
    /^Refused register request \d+ from udp 127\.0\.0\.1:\d+: .*"alice SMITH"/,
  );
  assertEquals(await server.stop(), 0);
});

Deno.test("client registers and deregisters over TCP with --transport tcp", async () => {
  await using dir = await tempDir();
  const dataDir = dir.join("data");
  const logDir = dir.join("logs");
  await using server = await startServer({ dataDir, logDir });

  await using client = startClient(
    clientArgs(server.address, "Erin Stone", logDir, "--transport", "tcp"),
  );
  await client.write("register\n");
  await client.waitForLine(/^Registered and logged in as "Erin Stone"$/);
  await server.waitForLine(
    /^Registered "Erin Stone" at 127\.0\.0\.1 \(UDP port \d+, TCP port 5001\).* TCP\b/,
  );
  assertRegistryEntry((await readRegistry(dataDir))["Erin Stone"]);
  await client.write("status\nderegister\n");
  // Address discovery may or may not have finished by now: the public address
  // and the mapping type come when they are known.
  await client.waitForLine(/requests over TCP(?:; public address [^;]+)?$/);
  await client.waitForLine(/^Deregistered "Erin Stone"; /);
  await server.waitForLine(/^Deregistered "Erin Stone"\W.*\bTCP\b/);
  assertExit(await client.finished(), 0);
  assertEquals(await readRegistry(dataDir), {});
  assertEquals(await server.stop(), 0);
});

Deno.test("client --script runs a file and stops at the first failing or unknown command", async () => {
  await using dir = await tempDir();
  const dataDir = dir.join("data");
  const logDir = dir.join("logs");
  await using server = await startServer({ dataDir, logDir });

  await Deno.writeTextFile(
    dir.join("ok.txt"),
    "# a comment, then a blank line\n\nregister\ntcp scripted hello\nstatus\nderegister\nexit\n",
  );
  const ok = await runClient({
    args: clientArgs(server.address, "Fay Script", logDir, "--script", dir.join("ok.txt")),
  });
  assertExit(ok, 0);
  assertEquals(ok.stderr, "");
  assertStringIncludes(ok.stdout, 'Registered and logged in as "Fay Script"');
  assertStringIncludes(ok.stdout, "The server acknowledged the TCP message");
  assertStringIncludes(ok.stdout, 'Deregistered "Fay Script"');
  await server.waitForLine(/^Message from "Fay Script" over TCP, request \d+: "scripted hello"/);

  await Deno.writeTextFile(
    dir.join("fails.txt"),
    "register\nregister\nstatus\ntcp must not be sent after a failure\n",
  );
  const fails = await runClient({
    args: clientArgs(server.address, "Gus Script", logDir, "--script", dir.join("fails.txt")),
  });
  assertExit(fails, 1);
  assertOneErrorLine(fails, /already logged in as "Gus Script"/);
  assertStringIncludes(fails.stdout, 'Registered and logged in as "Gus Script"');
  assert(!fails.stdout.includes("Server "), `status ran after the failure\n${describe(fails)}`);

  await Deno.writeTextFile(
    dir.join("unknown.txt"),
    "status\nfrobnicate the widgets\ntcp must not be sent after an unknown command\n",
  );
  const unknown = await runClient({
    args: clientArgs(server.address, "Hal Script", logDir, "--script", dir.join("unknown.txt")),
  });
  assertExit(unknown, 1);
  assertOneErrorLine(unknown, /frobnicate/);

  // A marker sent after both failures: once the server shows it, the others had their chance.
  const marker = await runClient({
    args: clientArgs(server.address, "Ivy Script", logDir),
    stdin: "tcp marker after the failures\n",
  });
  assertExit(marker, 0);
  await server.waitForLine(/marker after the failures/);
  assertEquals(server.lines.filter((line) => line.includes("must not be sent")), []);
  assertEquals(Object.keys(await readRegistry(dataDir)), ["Gus Script"]);
  assertEquals(await server.stop(), 0);
});

Deno.test("server keeps acknowledged registrations across SIGINT, SIGTERM and SIGKILL", async (t) => {
  await using dir = await tempDir();
  const dataDir = dir.join("data");
  const logDir = dir.join("logs");

  await t.step("a graceful SIGINT keeps the registry and exits 0", async () => {
    await using server = await startServer({ dataDir, logDir });
    const reg = await runClient({
      args: clientArgs(server.address, "Carol Jones", logDir),
      stdin: "register\n",
    });
    assertExit(reg, 0);
    assertEquals(await server.stop("SIGINT"), 0);
    assertStringIncludes(server.lines.join("\n"), "SIGINT received: shutting down...");
    assertEquals(server.lines.at(-1), "Server stopped");
    assertEquals(server.errorLines, []);
    assertRegistryEntry((await readRegistry(dataDir))["Carol Jones"]);
  });

  await t.step("after the restart the name is still taken; SIGKILL after an ack", async () => {
    await using server = await startServer({ dataDir, logDir });
    await server.waitForLine(/^Registry: 1 registered, in /);
    const again = await runClient({
      args: clientArgs(server.address, "CAROL JONES", logDir, ...otherKey(logDir)),
      stdin: "register\n",
    });
    assertExit(again, 1);
    assertOneErrorLine(again, /"CAROL JONES".*name is taken/);

    const reg = await runClient({
      args: clientArgs(server.address, "Dave Brown", logDir),
      stdin: "register\n",
    });
    assertExit(reg, 0);
    assertStringIncludes(reg.stdout, 'Registered and logged in as "Dave Brown"');
    await server.kill9();
    assert(!server.alive);
    const registry = await readRegistry(dataDir);
    assertEquals(Object.keys(registry).sort(), ["Carol Jones", "Dave Brown"]);
    assertRegistryEntry(registry["Dave Brown"]);
  });

  await t.step("after SIGKILL the registry loads and SIGTERM exits 0", async () => {
    await using server = await startServer({ dataDir, logDir });
    await server.waitForLine(/^Registry: 2 registered, in /);
    const again = await runClient({
      args: clientArgs(server.address, "dave brown", logDir, "--json", ...otherKey(logDir)),
      stdin: "register\n",
    });
    assertExit(again, 1);
    assertStringIncludes(again.stdout, '"code":"name_taken"');
    assertEquals(await server.stop("SIGTERM"), 0);
    assertEquals(server.lines.at(-1), "Server stopped");
  });

  const left = [...Deno.readDirSync(dataDir)].map((entry) => entry.name);
  assert(left.includes("registrations.json"), left.join(", "));
  assertEquals(left.filter((name) => name.includes(".tmp")), [], "no temp files left behind");
});

Deno.test("server refuses to start on a corrupt registrations.json and leaves it untouched", async (t) => {
  await using dir = await tempDir();
  const corrupt: [string, string][] = [
    ["truncated JSON", '{"Alice Smith": {"ip": "127.0.0.1", "udp_port": 4'],
    ["not an object of names", "[1, 2, 3]\n"],
    ["a bad entry", '{"Alice Smith": {"ip": "127.0.0.1", "udp_port": "x", "tcp_port": 5001}}'],
    ["binary junk", "\u0000\u00ff\ufffd garbage"],
  ];
  for (const [what, content] of corrupt) {
    await t.step(what, async () => {
      const dataDir = dir.join(what.replaceAll(" ", "_"));
      await Deno.mkdir(dataDir);
      const path = `${dataDir}/registrations.json`;
      await Deno.writeTextFile(path, content);
      const before = await Deno.readFile(path);
      const result = await runProgram(SERVER_PATH, { args: serverArgs(dataDir, dir.join("logs")) });
      assertExit(result, 1);
      assertOneErrorLine(result, /registrations\.json/);
      assert(!result.stdout.includes("listening"), describe(result));
      assertEquals(await Deno.readFile(path), before, "the corrupt file is unchanged");
    });
  }
});

Deno.test("client gives up on an unreachable server after --timeout with one error line", async () => {
  await using dir = await tempDir();
  const port = unusedUdpPort();
  const started = performance.now();
  const result = await runClient({
    args: [
      "--server",
      `127.0.0.1:${port}`,
      "--name",
      "Nobody Home",
      "--timeout",
      "2",
      "--log-dir",
      dir.join("logs"),
    ],
    stdin: "register\n",
    timeoutMs: 8_000,
  });
  const elapsed = performance.now() - started;
  assertExit(result, 1);
  assertOneErrorLine(result, /^error: cannot reach the server: .*did not answer within 2 s/);
  assert(elapsed >= 1_900 && elapsed < 4_500, `took ${Math.round(elapsed)} ms`);
});

/** A small seeded PRNG (mulberry32), so a failing run can be replayed from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(random: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(random() * 256);
  return out;
}

function randomHex64(random: () => number): string {
  return Array.from(randomBytes(random, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads until the server closes the connection; returns everything it sent. */
async function readToEnd(conn: Deno.TcpConn, ms: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const read = async () => {
    const buffer = new Uint8Array(4096);
    while (true) {
      let n: number | null;
      try {
        n = await conn.read(buffer);
      } catch (error) {
        if (error instanceof Deno.errors.ConnectionReset) return;
        throw error;
      }
      if (n === null) return;
      chunks.push(buffer.slice(0, n));
    }
  };
  await withTimeout(read(), ms, "the server to close a broken TCP connection");
  const out = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

async function connect(port: number): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: "127.0.0.1", port, transport: "tcp" });
}

/** Sends one broken frame, expects an error frame back and the connection closed. */
async function expectRejectedFrame(port: number, bytes: Uint8Array, what: string): Promise<void> {
  const conn = await connect(port);
  try {
    await conn.write(bytes);
    const reply = await readToEnd(conn, 3_000);
    assert(reply.length >= 4, `${what}: the server explains before closing`);
    const length = new DataView(reply.buffer).getUint32(0);
    assertEquals(reply.length, 4 + length, `${what}: one whole frame back`);
    const message = decodeMessage(reply.subarray(4));
    assertEquals(message.type, "error", what);
  } finally {
    conn.close();
  }
}

Deno.test("server survives thousands of garbage datagrams and broken TCP frames", async () => {
  const seed = Date.now() >>> 0;
  const random = prng(seed);
  const context = `seed ${seed}`;
  await using dir = await tempDir();
  const dataDir = dir.join("data");
  const logDir = dir.join("logs");
  await using server = await startServer({ dataDir, logDir, extraArgs: ["--log-level", "debug"] });

  // A victim that stays registered while the garbage flies.
  await using victim = startClient(clientArgs(server.address, "Victor Victim", logDir));
  await victim.write("register\n");
  await victim.waitForLine(/^Registered and logged in as "Victor Victim"$/);

  const target: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: server.udpPort };
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  // Drain the replies the server sends to messages that happen to decode.
  const drained = (async () => {
    try {
      for await (const _ of socket);
    } catch {
      // closed
    }
  })();
  try {
    for (let i = 0; i < 5000; i++) {
      let bytes: Uint8Array;
      const kind = i % 4;
      if (kind === 0 || kind === 1) {
        bytes = randomBytes(random, Math.floor(random() * 1501));
      } else if (kind === 2) {
        // A valid header ("SW", version 1, a type) and a random body.
        const body = randomBytes(random, Math.floor(random() * 1200));
        bytes = new Uint8Array(4 + body.length);
        bytes.set([0x53, 0x57, 1, 1 + Math.floor(random() * 10)]);
        bytes.set(body, 4);
      } else {
        // Well-formed requests with forged tokens: impersonation attempts.
        const token = randomBytes(random, 16);
        const client = randomHex64(random);
        const reqId = Math.floor(random() * 0xffffffff);
        bytes = i % 8 === 3
          ? encodeMessage({ type: "deregister", reqId, client, token })
          : encodeMessage({ type: "text", reqId, client, name: "Victor Victim", token, text: "x" });
      }
      await socket.send(bytes, target);
      // Paced, so that a server starved of CPU by parallel tests still reads most of them.
      if (i % 50 === 49) await delay(2);
    }
  } finally {
    socket.close();
    await drained;
  }

  const tcp = server.tcpPort;
  // Random bytes, then close without waiting.
  await Promise.all(Array.from({ length: 40 }, async () => {
    const conn = await connect(tcp);
    await conn.write(randomBytes(random, 1 + Math.floor(random() * 3000))).catch(() => 0);
    conn.close();
  }));
  // A huge length prefix, a zero length, a valid length with a garbage body, a
  // valid header with a random body: each gets an error and a closed connection.
  await expectRejectedFrame(tcp, Uint8Array.of(0xff, 0xff, 0xff, 0xff), "huge length prefix");
  await expectRejectedFrame(tcp, Uint8Array.of(0, 0, 0, 0), "zero length prefix");
  await expectRejectedFrame(tcp, encodeFrame(randomBytes(random, 50).fill(0, 0, 2)), "garbage");
  await expectRejectedFrame(
    tcp,
    encodeFrame(Uint8Array.of(0x53, 0x57, 1, 7, ...randomBytes(random, 30))),
    "header and random body",
  );
  await expectRejectedFrame(tcp, encodeFrame(Uint8Array.of(0x53, 0x57, 9, 1)), "bad version");
  // Truncated frames: the length promises more than ever comes.
  await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    const conn = await connect(tcp);
    const frame = encodeFrame(
      encodeMessage({ type: "hello", reqId: i, client: randomHex64(random) }),
    );
    await conn.write(frame.subarray(0, 1 + (i % (frame.length - 1)))).catch(() => 0);
    conn.close();
  }));
  // An idle connection held open while a real client works.
  const idle = await connect(tcp);
  try {
    await idle.write(Uint8Array.of(0, 0, 0x10)); // three bytes of a header, then silence
    const check = await runClient({
      args: clientArgs(server.address, "Walt Works", logDir),
      stdin: "register\ntcp still here\nderegister\n",
    });
    assertExit(check, 0);
    assertStringIncludes(check.stdout, 'Deregistered "Walt Works"', context);
  } finally {
    idle.close();
  }

  // None of the forged deregisters worked: the victim is still registered and can leave.
  assert(server.alive, `the server died (${context})`);
  assertEquals(Object.keys(await readRegistry(dataDir)), ["Victor Victim"], context);
  await victim.write("deregister\n");
  await victim.waitForLine(/^Deregistered "Victor Victim"; /);
  assertExit(await victim.finished(), 0);
  assertEquals(await readRegistry(dataDir), {}, context);

  assert(server.alive, `the server died (${context})`);
  assertEquals(await server.stop(), 0, context);
  assertEquals(server.errorLines, [], context);
  const log = await Deno.readTextFile(`${logDir}/server.log`);
  const rejected = log.split("\n").filter((line) => line.includes("Rejected input from udp"));
  assert(
    // The kernel drops datagrams when the receive buffer overflows on a busy machine; a few
    // hundred must still arrive, or the server was not reading at all.
    rejected.length > 200,
    `only ${rejected.length} datagrams reached the server (${context})`,
  );
  assert(log.includes("Rejected input from tcp"), context);
});

Deno.test("server and client answer --help and --version and reject bad flags with exit 2", async () => {
  const ok = await Promise.all([
    runProgram(SERVER_PATH, { args: ["--help"] }),
    runProgram(SERVER_PATH, { args: ["--version"] }),
    runProgram(CLIENT_PATH, { args: ["--help"] }),
    runProgram(CLIENT_PATH, { args: ["-V"] }),
  ]);
  for (const result of ok) {
    assertExit(result, 0);
    assertEquals(result.stderr, "");
  }
  for (const flag of ["--host", "--udp-port", "--tcp-port", "--data-dir", "--log-dir"]) {
    assertStringIncludes(ok[0].stdout, flag);
  }
  for (const flag of ["--server", "--name", "--tcp-port", "--transport", "--script", "--json"]) {
    assertStringIncludes(ok[2].stdout, flag);
  }
  assertMatch(ok[1].stdout, /^switchboard-server \d+\.\d+\.\d+(-[\w.]+)?\n$/);
  assertMatch(ok[3].stdout, /^switchboard-client \d+\.\d+\.\d+(-[\w.]+)?\n$/);

  const bad: [string, string[], RegExp][] = [
    [SERVER_PATH, ["--bogus"], /--bogus/],
    [SERVER_PATH, ["--udp-port", "x"], /--udp-port.*"x"/],
    [SERVER_PATH, ["--tcp-port", "70000"], /--tcp-port/],
    [SERVER_PATH, ["--log-level", "loud"], /--log-level/],
    [SERVER_PATH, ["stray"], /stray/],
    [CLIENT_PATH, ["--bogus"], /--bogus/],
    [CLIENT_PATH, ["--tcp-port", "80"], /--tcp-port.*"80"/],
    [CLIENT_PATH, ["--transport", "carrier-pigeon"], /--transport/],
    [CLIENT_PATH, ["--timeout", "0"], /--timeout/],
    [CLIENT_PATH, ["--server", "127.0.0.1:notaport"], /--server/],
    [CLIENT_PATH, ["--name="], /--name/],
    [CLIENT_PATH, ["--script", "/nonexistent/switchboard/script.txt"], /script/],
    [CLIENT_PATH, ["--accept-files=no"], /--accept-files takes no value, not "no"/],
    [CLIENT_PATH, ["--udp-port", "-1"], /--udp-port cannot be negative/],
    [CLIENT_PATH, ["--download-dir", CLIENT_PATH], /--download-dir .* is not a directory/],
    [SERVER_PATH, ["--lease", "-5"], /--lease cannot be negative/],
  ];
  const results = await Promise.all(bad.map(([script, args]) => runProgram(script, { args })));
  results.forEach((result, i) => {
    const [script, args, pattern] = bad[i];
    const what = `${script === SERVER_PATH ? "server" : "client"} ${args.join(" ")}`;
    assertEquals(result.code, 2, `${what}\n${describe(result)}`);
    assertOneErrorLine(result, pattern);
    assertEquals(result.stdout, "", what);
  });
});

Deno.test("server registers concurrent clients with different names and keeps them all", async () => {
  await using dir = await tempDir();
  const dataDir = dir.join("data");
  const logDir = dir.join("logs");
  await using server = await startServer({ dataDir, logDir });
  const names = ["Ann Lee", "Ben Ortiz", "Cy Young", "Dee Park"];
  const results = await Promise.all(names.map((name, i) =>
    runClient({
      args: clientArgs(server.address, name, logDir, ...(i % 2 ? ["--transport", "tcp"] : [])),
      stdin: "register\n",
    })
  ));
  results.forEach((result) => assertExit(result, 0));
  const registry = await readRegistry(dataDir);
  assertEquals(Object.keys(registry).sort(), names);
  for (const name of names) assertRegistryEntry(registry[name]);
  assertEquals(await server.stop(), 0);
  assertEquals(
    await readRegistry(dataDir),
    registry,
    "a graceful stop writes the same registry",
  );
});

Deno.test("client exits 130 on Ctrl-C (SIGINT), goes offline, and its registration stays", async () => {
  await using dir = await tempDir();
  const dataDir = dir.join("data");
  const logDir = dir.join("logs");
  await using server = await startServer({ dataDir, logDir });
  await using client = startClient(clientArgs(server.address, "Ike Interrupt", logDir));
  await client.write("register\n");
  await client.waitForLine(/^Registered and logged in as "Ike Interrupt"$/);
  const result = await client.signal("SIGINT", 5_000);
  assertExit(result, 130);
  assert(!/^\s+at /m.test(result.stderr), describe(result));
  // It went offline on the way out, and its identity stays.
  await server.waitForLine(/^"Ike Interrupt" went offline \(logged out\)$/);
  assertEquals(Object.keys(await readRegistry(dataDir)), ["Ike Interrupt"]);
  assertEquals(await server.stop(), 0);
});

Deno.test("client exit logs out; a later run logs in (by a quoted name too); deregister needs login first", async () => {
  await using dir = await tempDir();
  const dataDir = dir.join("data");
  const logDir = dir.join("logs");
  const identityFile = dir.join("client", "identities.json");
  await using server = await startServer({ dataDir, logDir });
  const args = clientArgs(server.address, "Kim Later", logDir);

  const first = await runClient({ args, stdin: "register\nexit\nstatus\n" });
  assertExit(first, 0);
  assertStringIncludes(first.stdout, 'Registered and logged in as "Kim Later"');
  assert(!first.stdout.includes("Server "), "nothing runs after exit");
  await server.waitForLine(/^"Kim Later" went offline \(logged out\)$/);

  const notLoggedIn = await runClient({ args, stdin: "deregister\n" });
  assertExit(notLoggedIn, 1);
  assertOneErrorLine(notLoggedIn, /not logged in; use register or login first/i);
  assertEquals(Object.keys(await readRegistry(dataDir)), ["Kim Later"]);

  // A name with a space may be quoted, as in send @"A NAME".
  const otherArgs = clientArgs(server.address, "Someone Else", logDir);
  const quoted = await runClient({ args: otherArgs, stdin: 'login "Kim Later"\nexit\n' });
  assertExit(quoted, 0);
  assertStringIncludes(quoted.stdout, 'Logged in as "Kim Later"');
  await server.waitForLine(/^"Kim Later" went offline \(logged out\)$/);

  const later = await runClient({ args, stdin: "login\nstatus\nderegister\n" });
  assertExit(later, 0);
  assertStringIncludes(later.stdout, 'Logged in as "Kim Later"');
  assertMatch(later.stdout, /name "Kim Later", logged in as "Kim Later";/);
  assertStringIncludes(
    later.stdout,
    'Deregistered "Kim Later"; its identity and files are deleted',
  );
  assertEquals(await readRegistry(dataDir), {});
  assertEquals(await readIdentities(identityFile), []);

  const gone = await runClient({ args, stdin: "login\n" });
  assertExit(gone, 1);
  assertOneErrorLine(gone, /no saved identity for "Kim Later"/i);
  assertEquals(await server.stop(), 0);
});
