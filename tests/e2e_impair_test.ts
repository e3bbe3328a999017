/**
 * End-to-end through the impairment proxy: the real server, the real
 * `scripts/impair_proxy.ts` and two real clients as separate processes on
 * loopback ports chosen at run time. Both clients reach the server through
 * the proxy, so the server hands each the other's relayed address and their
 * peer-to-peer chat crosses the proxy both ways, at 10% loss with
 * duplication, reordering and jitter.
 */
import { assert, assertEquals, assertGreater, assertMatch } from "@std/assert";
import { fromFileUrl } from "@std/path";
import {
  describeRun,
  type Finished,
  nonEmptyLines,
  RunningProgram,
  startClient,
  startServer,
  type TempDir,
  tempDir,
} from "./_processes.ts";

const PROXY_PATH = fromFileUrl(new URL("../scripts/impair_proxy.ts", import.meta.url));

/** Messages each way. */
const MESSAGES = 100;

/** The impairment the chat crosses. */
const IMPAIRMENT = ["--loss", "10%", "--duplicate", "5%", "--reorder", "5%", "--delay", "5"];

/** Alice's messages: plain, non-ASCII, and every 50th long enough to take several fragments. */
function aliceText(i: number): string {
  if (i % 50 === 49) return `Alice ${i} ` + "0123456789abcdef".repeat(200) + ` end ${i}`;
  return `Alice ${i} héllo ✓ ${"x".repeat(i % 7)}.`;
}

function bobText(i: number): string {
  return `Bob ${i} 😀 ${"y".repeat(i % 11)}!`;
}

type JsonLine = Record<string, unknown> & { event: string };

function jsonLines(label: string, result: Finished): JsonLine[] {
  return nonEmptyLines(result.stdout).map((line) => {
    try {
      return JSON.parse(line) as JsonLine;
    } catch {
      throw new Error(`${label} printed a line that is not JSON: ${line}`);
    }
  });
}

async function scriptArgs(
  dir: TempDir,
  server: string,
  name: string,
  lines: readonly string[],
): Promise<string[]> {
  const script = dir.join(`${name}.txt`);
  await Deno.writeTextFile(script, lines.join("\n") + "\n");
  return [
    "--server",
    server,
    "--data-dir",
    dir.join(`${name}-data`),
    "--log-dir",
    dir.join("logs"),
    "--timeout",
    "30",
    // Peers send straight to the addresses the server sees: the proxy's. With
    // traversal on they would find each other's interface addresses and go
    // around the proxy.
    "--traversal",
    "off",
    "--json",
    "--script",
    script,
  ];
}

/** Starts the proxy in front of a server and returns it with its port. */
async function startProxy(
  target: string,
  seed: number,
): Promise<{ proxy: RunningProgram; port: number }> {
  const proxy = new RunningProgram("proxy", PROXY_PATH, [
    "--target",
    target,
    "--seed",
    String(seed),
    ...IMPAIRMENT,
  ]);
  try {
    const line = await proxy.waitForLine(/^Proxy UDP listening on port \d+$/);
    return { proxy, port: Number(line.split(" ").at(-1)) };
  } catch (error) {
    await proxy[Symbol.asyncDispose]();
    throw error;
  }
}

Deno.test("two clients chat through the impairment proxy at 10% loss: intact, once, in order", async () => {
  const seed = Number(Deno.env.get("IMPAIR_SEED") ?? Math.floor(Math.random() * 1_000_000));
  console.log(`  proxy seed ${seed} (IMPAIR_SEED=${seed} repeats its decisions)`);
  await using dir = await tempDir("switchboard_e2e_impair_");
  await using server = await startServer({ dataDir: dir.join("data"), logDir: dir.join("logs") });
  const started = await startProxy(server.address, seed);
  await using proxy = started.proxy;
  const via = `127.0.0.1:${started.port}`;
  const bobArgs = await scriptArgs(dir, via, "Bob", [
    "register Bob",
    "accept",
    ...Array.from({ length: MESSAGES }, (_, i) => `send ${bobText(i)}`),
    `wait messages ${MESSAGES} within 120`,
    "wait terminate within 60",
  ]);
  const aliceArgs = await scriptArgs(dir, via, "Alice", [
    "register Alice",
    "connect Bob",
    ...Array.from({ length: MESSAGES }, (_, i) => `send ${aliceText(i)}`),
    `wait messages ${MESSAGES} within 120`,
    "terminate",
  ]);
  const t0 = performance.now();
  await using bob = startClient(bobArgs, { cwd: dir.path });
  await bob.waitForLine(/"command":"register","ok":true/, 30_000);
  await using alice = startClient(aliceArgs, { cwd: dir.path });
  const [a, b] = await Promise.all([alice.finished(240_000), bob.finished(240_000)]);
  const took = Math.round(performance.now() - t0);
  const shown = (label: string, r: Finished) => describeRun(r, { label, lastChars: 3000 });
  assertEquals(a.code, 0, shown("Alice", a) + shown("Bob", b));
  assertEquals(b.code, 0, shown("Bob", b) + shown("Alice", a));
  for (
    const [label, result, from, text] of [
      ["Alice", a, "Bob", bobText],
      ["Bob", b, "Alice", aliceText],
    ] as const
  ) {
    const lines = jsonLines(label, result);
    const messages = lines.filter((l) => l.event === "message");
    assertEquals(
      messages.map((m) => m.text),
      Array.from({ length: MESSAGES }, (_, i) => text(i)),
      `${label} got every message intact, exactly once, in order`,
    );
    assertEquals(messages.map((m) => m.index), [...Array(MESSAGES).keys()]);
    assert(messages.every((m) => m.from === from), `${label}: every message from ${from}`);
    const results = lines.filter((l) => l.event === "result");
    assert(results.every((r) => r.ok === true), `${label}: every command succeeded`);
    assertEquals(results.filter((r) => r.command === "send").length, MESSAGES);
  }
  const stopped = await proxy.signal("SIGINT");
  assertEquals(stopped.code, 0, describeRun(stopped, { label: "proxy" }));
  const counts = stopped.stdout.split("\n").find((line) => line.startsWith("Counts: ")) ?? "";
  assertMatch(counts, /^Counts: /, describeRun(stopped, { label: "proxy" }));
  console.log(`  ${MESSAGES} messages each way in ${took} ms; proxy ${counts}`);
  const number = (pattern: RegExp) => Number(pattern.exec(counts)?.[1] ?? NaN);
  assertGreater(number(/(\d+) between clients/), 2 * MESSAGES, "the chat crossed the proxy");
  assertGreater(number(/(\d+) lost/), 0, "the proxy lost datagrams");
  assertGreater(number(/(\d+) duplicated/), 0, "the proxy duplicated datagrams");
  assertGreater(number(/(\d+) reordered/), 0, "the proxy reordered datagrams");
  assertMatch(counts, /; 2 clients$/);
  assertEquals(await server.stop(), 0);
});

Deno.test("a file sent peer to peer through the impairment proxy at 10% loss arrives whole", async () => {
  const seed = Number(Deno.env.get("IMPAIR_SEED") ?? Math.floor(Math.random() * 1_000_000));
  console.log(`  proxy seed ${seed} (IMPAIR_SEED=${seed} repeats its decisions)`);
  await using dir = await tempDir("switchboard_e2e_impair_file_");
  await using server = await startServer({ dataDir: dir.join("data"), logDir: dir.join("logs") });
  const started = await startProxy(server.address, seed);
  await using proxy = started.proxy;
  const via = `127.0.0.1:${started.port}`;
  // 600 KiB: hundreds of segments, so windows, SACK and recovery all work.
  const source = dir.join("survey.bin");
  const bytes = new Uint8Array(600 * 1024);
  for (let at = 0; at < bytes.length; at += 65536) {
    crypto.getRandomValues(bytes.subarray(at, Math.min(bytes.length, at + 65536)));
  }
  await Deno.writeFile(source, bytes);
  const downloads = dir.join("bob-downloads");
  const bobArgs = await scriptArgs(dir, via, "Bob", [
    "register Bob",
    "accept",
    "send ready",
    "wait transfers within 120",
    "wait terminate within 60",
  ]);
  const aliceArgs = await scriptArgs(dir, via, "Alice", [
    "register Alice",
    "connect Bob",
    "wait messages 1 within 30",
    `sendfile ${source}`,
    "send chat goes on during the transfer",
    "wait transfers within 120",
    "terminate",
  ]);
  const t0 = performance.now();
  await using bob = startClient([...bobArgs, "--accept-files", "--download-dir", downloads], {
    cwd: dir.path,
  });
  await bob.waitForLine(/"command":"register","ok":true/, 30_000);
  await using alice = startClient(aliceArgs, { cwd: dir.path });
  const [a, b] = await Promise.all([alice.finished(240_000), bob.finished(240_000)]);
  const took = Math.round(performance.now() - t0);
  const shown = (label: string, r: Finished) => describeRun(r, { label, lastChars: 3000 });
  assertEquals(a.code, 0, shown("Alice", a) + shown("Bob", b));
  assertEquals(b.code, 0, shown("Bob", b) + shown("Alice", a));
  const received = await Deno.readFile(`${downloads}/survey.bin`);
  assertEquals(received.length, bytes.length);
  assertEquals(received, bytes, "the file arrived byte for byte");
  const done = jsonLines("Bob", b).filter((l) => l.event === "file_done");
  assertEquals(done.length, 1, "one verified file");
  const chat = jsonLines("Bob", b).filter((l) => l.event === "message").map((l) => l.text);
  assertEquals(chat, ["chat goes on during the transfer"]);
  const stopped = await proxy.signal("SIGINT");
  const counts = stopped.stdout.split("\n").find((line) => line.startsWith("Counts: ")) ?? "";
  console.log(`  600 KiB through the proxy in ${took} ms; proxy ${counts}`);
  const number = (pattern: RegExp) => Number(pattern.exec(counts)?.[1] ?? NaN);
  assertGreater(number(/(\d+) between clients/), 500, "the file crossed the proxy");
  assertGreater(number(/(\d+) lost/), 0, "the proxy lost datagrams");
  assertEquals(await server.stop(), 0);
});
