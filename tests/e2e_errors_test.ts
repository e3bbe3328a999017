/**
 * End-to-end tests of the error paths a user meets: one clear line, the
 * right exit code, no stack trace, and a server that goes on serving.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { SealedUdp } from "./_sealed_wire.ts";
import {
  CLIENT_PATH,
  type Finished,
  runClient,
  runProgram,
  SERVER_PATH,
  serverArgs,
  startServer,
  tempDir,
} from "./_processes.ts";

function describe(result: Finished): string {
  return `exit ${result.code}\n--- stdout ---\n${result.stdout}--- stderr ---\n${result.stderr}`;
}

function assertOneErrorLine(result: Finished, code: number, pattern: RegExp): void {
  assertEquals(result.code, code, describe(result));
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  assertEquals(lines.length, 1, `expected one line on stderr\n${describe(result)}`);
  assertMatch(lines[0], /^error: /);
  assertMatch(lines[0], pattern);
  assert(!/^\s+at /m.test(result.stderr + result.stdout), `stack trace\n${describe(result)}`);
}

Deno.test("client refuses a TCP message over the size limit with one line and keeps its session", async () => {
  await using dir = await tempDir();
  const logDir = dir.join("logs");
  await using server = await startServer({ dataDir: dir.join("data"), logDir });
  const result = await runClient({
    args: ["--server", server.address, "--name", "Big", "--log-dir", logDir],
    cwd: dir.path,
    stdin: `register\ntcp ${"x".repeat(60_001)}\n`,
  });
  assertOneErrorLine(result, 1, /60001 bytes.*limit is 60000/);
  // It left cleanly after the failure; the same text at the limit goes through.
  const ok = await runClient({
    args: ["--server", server.address, "--name", "Fits", "--log-dir", logDir],
    cwd: dir.path,
    stdin: `tcp ${"y".repeat(60_000)}\n`,
  });
  assertEquals(ok.code, 0, describe(ok));
});

Deno.test("server refuses a second server on the same data directory", async () => {
  await using dir = await tempDir();
  const dataDir = dir.join("data");
  const logDir = dir.join("logs");
  await using _server = await startServer({ dataDir, logDir });
  const second = await runProgram(SERVER_PATH, { args: serverArgs(dataDir, logDir) });
  assertOneErrorLine(second, 1, /another server is using data directory/);
});

Deno.test("server says which port is in use", async () => {
  await using dir = await tempDir();
  const logDir = dir.join("logs");
  await using server = await startServer({ dataDir: dir.join("data"), logDir });
  const udp = await runProgram(SERVER_PATH, {
    args: serverArgs(dir.join("d2"), logDir, { udp: server.udpPort }),
  });
  assertOneErrorLine(udp, 1, new RegExp(`^error: UDP port ${server.udpPort} is in use`));
  const tcp = await runProgram(SERVER_PATH, {
    args: serverArgs(dir.join("d3"), logDir, { tcp: server.tcpPort }),
  });
  assertOneErrorLine(tcp, 1, new RegExp(`^error: TCP port ${server.tcpPort} is in use`));
});

Deno.test("server treats two signals at once as one and shuts down gracefully", async () => {
  await using dir = await tempDir();
  await using server = await startServer({ dataDir: dir.join("data"), logDir: dir.join("logs") });
  server.process.kill("SIGINT");
  server.process.kill("SIGINT");
  assertEquals(await server.stop(), 0);
  assertStringIncludes(server.lines.join("\n"), "Server stopped");
  const log = await Deno.readTextFile(dir.join("logs/server.log"));
  assertStringIncludes(log, "Server stopped");
});

Deno.test("client refuses a directory as --script with one line", async () => {
  await using dir = await tempDir();
  const result = await runProgram(CLIENT_PATH, {
    args: ["--script", dir.path, "--log-dir", dir.join("logs")],
  });
  assertOneErrorLine(result, 2, /cannot read script .*it is a directory/);
});

Deno.test("server log and console show a forged line break in a name as an escape", async () => {
  await using dir = await tempDir();
  const logDir = dir.join("logs");
  await using server = await startServer({ dataDir: dir.join("data"), logDir });
  // A name with a line break cannot be typed, so send it as a raw request.
  const udp = new SealedUdp("127.0.0.1", server.udpPort);
  try {
    await udp.ask({
      type: "register",
      reqId: 1,
      client: "0123456789abcdef",
      name: 'x\n2026-01-01T00:00:00.000Z INFO    switchboard.server: Registered "Mallory"',
      udpPort: 0,
      tcpPort: 5001,
    });
  } finally {
    await udp.close();
  }
  assertEquals(await server.stop(), 0);
  const log = await Deno.readTextFile(`${logDir}/server.log`);
  for (const line of log.split("\n").filter((l) => l !== "")) {
    assertMatch(line, /^\d{4}-\d{2}-\d{2}T/, `every log line is a record of its own: ${line}`);
  }
  assertStringIncludes(log, "x\\n2026-01-01");
  assert(!server.lines.some((line) => line.startsWith("2026-01-01")), "console line forged");
});

Deno.test("client --json gives every command a result line and every failure a code", async () => {
  await using dir = await tempDir();
  const logDir = dir.join("logs");
  await using server = await startServer({ dataDir: dir.join("data"), logDir });
  const run = (stdin: string) =>
    runClient({
      args: ["--server", server.address, "--name", "Jo", "--log-dir", logDir, "--json"],
      cwd: dir.path,
      stdin,
    });

  const taken = await run("help\nregister\nregister\n");
  assertEquals(taken.code, 1, describe(taken));
  const events = taken.stdout.trim().split("\n").map((line) => JSON.parse(line));
  assertEquals(events.map((e) => [e.event, e.command, e.ok, e.code]), [
    ["connected", undefined, undefined, undefined],
    ["result", "help", true, undefined],
    ["result", "register", true, undefined],
    ["result", "register", false, "already_logged_in"],
  ]);
  assertEquals(events[0].serverTcpPort, server.tcpPort);

  const unknown = await run("dance\n");
  assertEquals(unknown.code, 1, describe(unknown));
  const last = JSON.parse(unknown.stdout.trim().split("\n").at(-1)!);
  assertEquals([last.event, last.command, last.ok, last.code], [
    "result",
    "dance",
    false,
    "bad_command",
  ]);
});

Deno.test("client refuses to register when its identity file is corrupt or unwritable, and the name stays free", async () => {
  await using dir = await tempDir();
  const logDir = dir.join("logs");
  await using server = await startServer({ dataDir: dir.join("data"), logDir });
  const corrupt = dir.join("corrupt.json");
  await Deno.writeTextFile(corrupt, "{garbage");
  const notADir = dir.join("afile");
  await Deno.writeTextFile(notADir, "");
  for (
    const [identity, pattern] of [
      [corrupt, /cannot register: .*corrupt\.json is not a valid identity file/],
      [`${notADir}/ids.json`, /cannot register: cannot write .*afile\/ids\.json/],
    ] as const
  ) {
    const refused = await runClient({
      args: ["--server", server.address, "--name", "Kept Free", "--identity", identity],
      cwd: dir.path,
      stdin: "register\n",
    });
    assertOneErrorLine(refused, 1, pattern);
  }
  assertEquals(
    await Deno.readTextFile(corrupt),
    "{garbage",
    "the corrupt file is left for the user",
  );
  const ok = await runClient({
    args: ["--server", server.address, "--name", "Kept Free", "--log-dir", logDir],
    cwd: dir.path,
    stdin: "register\n",
  });
  assertEquals(ok.code, 0, describe(ok));
  assertStringIncludes(ok.stdout, 'Registered and logged in as "Kept Free"');
});

Deno.test("client says at once that a server name does not resolve, instead of retrying", async () => {
  await using dir = await tempDir();
  const started = performance.now();
  const result = await runClient({
    args: [
      "--server",
      "no-such-host.invalid:3000",
      "--timeout",
      "60",
      "--log-dir",
      dir.join("logs"),
    ],
    cwd: dir.path,
    stdin: "",
  });
  assertOneErrorLine(result, 1, /cannot resolve the server name "no-such-host\.invalid"/);
  // Retrying would take the whole --timeout; only the resolver's own time is spent.
  assert(performance.now() - started < 30_000, "it retried");
});
