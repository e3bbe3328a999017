/**
 * End-to-end peer sessions: the real server and two real clients as separate
 * processes on loopback ports chosen at run time, each client driven by a
 * script file as a user would write one.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import {
  assertOneErrorLine,
  type DescribeOptions,
  describeRun,
  type Finished,
  nonEmptyLines,
  type RunningProgram,
  startClient,
  startServer,
  type TempDir,
  tempDir,
} from "./_processes.ts";

/** Messages each way in the long chat. */
const CHAT_MESSAGES = 1000;

/** Writes a script file and returns the client flags that run it. */
async function clientArgs(
  dir: TempDir,
  server: string,
  name: string,
  lines: readonly string[],
  ...more: string[]
): Promise<string[]> {
  const script = dir.join(`${name}.txt`);
  await Deno.writeTextFile(script, lines.join("\n") + "\n");
  return [
    "--server",
    server,
    "--udp-port",
    "0",
    "--data-dir",
    dir.join(`${name}-data`),
    "--log-dir",
    dir.join(`${name}-logs`),
    "--script",
    script,
    ...more,
  ];
}

/** How a failure shows a client's run: named, with only the end of each (long) stream. */
function shown(label: string): DescribeOptions {
  return { label, lastChars: 3000 };
}

function describe(label: string, result: Finished): string {
  return describeRun(result, shown(label));
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

/** Waits until the client's `register` succeeded, in text or JSON output. */
async function registered(client: RunningProgram, name: string): Promise<void> {
  await client.waitForLine(
    new RegExp(
      `^(Registered and logged in as "${name}"|\\{"event":"result","command":"register","ok":true.*)$`,
    ),
    20_000,
  );
}

Deno.test("two real clients chat 1000 messages each way at once and terminate", async () => {
  await using dir = await tempDir("switchboard_e2e_peer_");
  await using server = await startServer({ dataDir: dir.join("data"), logDir: dir.join("logs") });
  const bobLines = [
    "register Bob",
    "accept",
    ...Array.from({ length: CHAT_MESSAGES }, (_, i) => `send Bob ${i} ✓`),
    `wait messages ${CHAT_MESSAGES} within 120`,
    "wait terminate within 60",
  ];
  const aliceLines = [
    "register Alice",
    "connect Bob",
    ...Array.from({ length: CHAT_MESSAGES }, (_, i) => `send Alice ${i}`),
    `wait messages ${CHAT_MESSAGES} within 120`,
    "terminate",
  ];
  const bobArgs = await clientArgs(dir, server.address, "Bob", bobLines, "--json");
  const aliceArgs = await clientArgs(dir, server.address, "Alice", aliceLines, "--json");
  await using bob = startClient(bobArgs, { cwd: dir.path });
  await registered(bob, "Bob");
  const started = performance.now();
  await using alice = startClient(aliceArgs, { cwd: dir.path });
  let connectedAt = 0;
  alice.waitForLine(/"command":"connect","ok":true/, 60_000).then(
    () => connectedAt = performance.now(),
    () => {},
  );
  const [a, b] = await Promise.all([alice.finished(240_000), bob.finished(240_000)]);
  const finishedAt = performance.now();
  assertEquals(a.code, 0, describe("Alice", a) + describe("Bob", b));
  assertEquals(b.code, 0, describe("Bob", b) + describe("Alice", a));
  for (
    const [label, result, from, sent] of [
      ["Alice", a, "Bob", (i: number) => `Bob ${i} ✓`],
      ["Bob", b, "Alice", (i: number) => `Alice ${i}`],
    ] as const
  ) {
    const lines = jsonLines(label, result);
    const messages = lines.filter((l) => l.event === "message");
    assertEquals(messages.length, CHAT_MESSAGES, `${label} got every message once`);
    assertEquals(
      messages.map((m) => m.text),
      Array.from({ length: CHAT_MESSAGES }, (_, i) => sent(i)),
      `${label} got the messages in order`,
    );
    assertEquals(messages.map((m) => m.index), [...Array(CHAT_MESSAGES).keys()]);
    assert(messages.every((m) => m.from === from), `${label}: from ${from}`);
    const results = lines.filter((l) => l.event === "result");
    assert(results.every((r) => r.ok === true), `${label}: every command succeeded`);
    const sends = results.filter((r) => r.command === "send");
    assertEquals(sends.length, CHAT_MESSAGES, `${label} sent every message`);
    assertEquals(sends.map((r) => r.index), [...Array(CHAT_MESSAGES).keys()]);
    assertEquals(result.stderr, "", `${label} printed no error`);
  }
  const bobResults = jsonLines("Bob", b).filter((l) => l.event === "result");
  assertEquals(bobResults.at(-1)?.command, "wait");
  const ended = jsonLines("Bob", b).filter((l) => l.event === "peer_ended");
  assertEquals(ended.length, 1);
  assertEquals(ended[0].by, "peer");
  const aliceResults = jsonLines("Alice", a).filter((l) => l.event === "result");
  assertEquals(aliceResults.at(-1)?.command, "terminate");
  assertEquals(aliceResults.at(-1)?.message, 'Ended the session with "Bob"');
  const chatMs = Math.round(finishedAt - (connectedAt || started));
  console.log(
    `  ${CHAT_MESSAGES} messages each way: ${chatMs} ms from connect to both exits ` +
      `(${Math.round(finishedAt - started)} ms with Alice's start-up)`,
  );
  assertEquals(await server.stop(), 0);
});

Deno.test("a refused connection request fails connect with a clear refused line", async () => {
  await using dir = await tempDir("switchboard_e2e_peer_");
  await using server = await startServer({ dataDir: dir.join("data"), logDir: dir.join("logs") });
  const bobArgs = await clientArgs(dir, server.address, "Bob", [
    "register Bob",
    "wait request within 30",
    "reject",
  ]);
  const aliceArgs = await clientArgs(dir, server.address, "Alice", [
    "register Alice",
    "connect Bob",
    "send never sent",
  ]);
  await using bob = startClient(bobArgs, { cwd: dir.path });
  await registered(bob, "Bob");
  await using alice = startClient(aliceArgs, { cwd: dir.path });
  const [a, b] = await Promise.all([alice.finished(60_000), bob.finished(60_000)]);
  assertEquals(a.code, 1, describe("Alice", a) + describe("Bob", b));
  assertOneErrorLine(a, /\brefused\b/, shown("Alice"));
  assertOneErrorLine(a, /Bob/, shown("Alice"));
  assertEquals(b.code, 0, describe("Bob", b));
  assertMatch(b.stdout, /^"Alice" wants to connect \(127\.0\.0\.1:\d+\): accept or reject$/m);
  assertMatch(b.stdout, /^Refused the request from "Alice"$/m);
  assertEquals(await server.stop(), 0);
});

Deno.test("connect gives up within the --timeout when the peer never accepts", async () => {
  await using dir = await tempDir("switchboard_e2e_peer_");
  await using server = await startServer({ dataDir: dir.join("data"), logDir: dir.join("logs") });
  // Bob sees the request and does nothing (his own request expiry, 30 s, is
  // far off, so Alice's give-up is what ends it).
  const bobArgs = await clientArgs(dir, server.address, "Bob", [
    "register Bob",
    "wait terminate within 60",
  ]);
  const aliceArgs = await clientArgs(
    dir,
    server.address,
    "Alice",
    [
      "register Alice",
      "connect Bob",
    ],
    "--timeout",
    "3",
  );
  await using bob = startClient(bobArgs, { cwd: dir.path });
  await registered(bob, "Bob");
  await using alice = startClient(aliceArgs, { cwd: dir.path });
  await registered(alice, "Alice");
  const connecting = performance.now();
  const a = await alice.finished(30_000);
  const took = performance.now() - connecting;
  assertEquals(a.code, 1, describe("Alice", a));
  assertOneErrorLine(a, /^error: "bob" did not answer within 3 s$/i, shown("Alice"));
  assert(took >= 2500 && took <= 5000, `connect gave up after ${Math.round(took)} ms`);
  console.log(`  connect gave up ${Math.round(took)} ms after Alice registered (--timeout 3)`);
  await bob.waitForLine(/^"Alice" wants to connect \(127\.0\.0\.1:\d+\): accept or reject$/);
  const b = await bob.signal("SIGINT");
  assertEquals(b.code, 130, describe("Bob", b));
  assertEquals(await server.stop(), 0);
});

Deno.test("a client that reaches the end of its script ends its session for the peer", async () => {
  await using dir = await tempDir("switchboard_e2e_peer_");
  await using server = await startServer({ dataDir: dir.join("data"), logDir: dir.join("logs") });
  const bobArgs = await clientArgs(dir, server.address, "Bob", [
    "register Bob",
    "accept",
    "wait messages 1 within 30",
    "wait terminate within 30",
  ]);
  const aliceArgs = await clientArgs(dir, server.address, "Alice", [
    "register Alice",
    "connect Bob",
    "send bye for now",
  ]);
  await using bob = startClient(bobArgs, { cwd: dir.path });
  await registered(bob, "Bob");
  await using alice = startClient(aliceArgs, { cwd: dir.path });
  const [a, b] = await Promise.all([alice.finished(60_000), bob.finished(60_000)]);
  assertEquals(a.code, 0, describe("Alice", a));
  assertEquals(b.code, 0, describe("Bob", b));
  assertMatch(a.stdout, /^Delivered to "Bob"$/m);
  assertMatch(b.stdout, /^\[Alice\] bye for now$/m);
  assertMatch(b.stdout, /^"Alice" ended the session \(it left\)$/m);
  assertEquals(await server.stop(), 0);
});

Deno.test("connect to a name that is not online fails at once with the lookup error", async () => {
  await using dir = await tempDir("switchboard_e2e_peer_");
  await using server = await startServer({ dataDir: dir.join("data"), logDir: dir.join("logs") });
  const aliceArgs = await clientArgs(dir, server.address, "Alice", [
    "register Alice",
    "connect Nobody",
  ]);
  await using alice = startClient(aliceArgs, { cwd: dir.path });
  await registered(alice, "Alice");
  const connecting = performance.now();
  const a = await alice.finished(30_000);
  const took = performance.now() - connecting;
  assertEquals(a.code, 1, describe("Alice", a));
  assertOneErrorLine(a, /^error: "Nobody" is not online$/, shown("Alice"));
  assert(took < 3000, `it took ${Math.round(took)} ms (the default --timeout is 30 s)`);
  assertEquals(await server.stop(), 0);
});

Deno.test("send without a session fails with a one-line error", async () => {
  await using dir = await tempDir("switchboard_e2e_peer_");
  await using server = await startServer({ dataDir: dir.join("data"), logDir: dir.join("logs") });
  const aliceArgs = await clientArgs(dir, server.address, "Alice", [
    "register Alice",
    "send hello",
  ]);
  await using alice = startClient(aliceArgs, { cwd: dir.path });
  const a = await alice.finished(30_000);
  assertEquals(a.code, 1, describe("Alice", a));
  assertOneErrorLine(a, /^error: no open session; use connect NAME$/, shown("Alice"));
  assertEquals(await server.stop(), 0);
});
