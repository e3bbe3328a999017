/**
 * End-to-end peer file transfers (`sendfile`): the real server and real
 * clients as separate processes on loopback ports chosen at run time, driven
 * by script files or line by line on standard input, as a user would. Every
 * received file is compared with its source by SHA-256, and every download
 * directory is listed whole, hidden partial files included.
 */
import {
  assert,
  assertEquals,
  assertGreater,
  assertGreaterOrEqual,
  assertLess,
  assertMatch,
} from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { toHex } from "../lib/hex.ts";
import { partialPath } from "../lib/io/transfer_disk.ts";
import {
  assertOneErrorLine,
  type DescribeOptions,
  describeRun,
  type Finished,
  listFiles,
  nonEmptyLines,
  pollUntil,
  type ProgramOptions,
  type RunningProgram,
  type ServerProcess,
  startClient,
  startServer,
  type TempDir,
  tempDir,
} from "./_processes.ts";

const MIB = 1024 * 1024;

/** How long a whole client run may take before it is killed. */
const RUN_MS = 60_000;

/** A server in a fresh temporary directory, and a way to start clients against it. */
interface Setup extends AsyncDisposable {
  readonly dir: TempDir;
  readonly server: ServerProcess;
  /**
   * Starts a client: it runs `lines` as a `--script` file, or, without
   * lines, reads its commands from standard input (piped: script mode).
   * Clients of the same name share a data directory (so `login` works after
   * a restart); downloads go to `NAME-downloads` unless a flag says else.
   */
  client(
    name: string,
    lines: readonly string[] | undefined,
    ...more: (string | ProgramOptions)[]
  ): Promise<RunningProgram>;
}

async function setup(): Promise<Setup> {
  const dir = await tempDir("switchboard_e2e_sendfile_");
  let server: ServerProcess;
  try {
    server = await startServer({ dataDir: dir.join("server"), logDir: dir.join("logs") });
  } catch (error) {
    await dir[Symbol.asyncDispose]();
    throw error;
  }
  let scripts = 0;
  return {
    dir,
    server,
    async client(name, lines, ...rest) {
      const more = rest.filter((x): x is string => typeof x === "string");
      const options = rest.find((x): x is ProgramOptions => typeof x !== "string") ?? {};
      const args = [
        "--server",
        server.address,
        "--udp-port",
        "0",
        "--timeout",
        "10",
        "--data-dir",
        dir.join(`${name}-data`),
        "--log-dir",
        dir.join("logs"),
        ...(more.includes("--download-dir") ? [] : ["--download-dir", downloads(dir, name)]),
        ...more,
      ];
      if (lines !== undefined) {
        const script = dir.join(`${name}-${++scripts}.txt`);
        await Deno.writeTextFile(script, lines.join("\n") + "\n");
        args.push("--script", script);
      }
      return startClient(args, { cwd: dir.path, ...options });
    },
    async [Symbol.asyncDispose]() {
      await server[Symbol.asyncDispose]();
      await dir[Symbol.asyncDispose]();
    },
  };
}

/** The default download directory of a client in {@linkcode setup}. */
function downloads(dir: TempDir, name: string): string {
  return dir.join(`${name}-downloads`);
}

/** Writes `size` random bytes to `path` and returns their SHA-256, hex. */
async function randomFile(path: string, size: number): Promise<string> {
  const bytes = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) {
    crypto.getRandomValues(bytes.subarray(at, Math.min(size, at + 65536)));
  }
  await Deno.writeFile(path, bytes);
  return toHex(sha256(bytes));
}

async function sha256Of(path: string): Promise<string> {
  return toHex(sha256(await Deno.readFile(path)));
}

/** Every file in a directory (hidden ones too), or [] if it does not exist. */
async function filesIn(dir: string): Promise<string[]> {
  return await listFiles(dir).catch((error) => {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  });
}

/** The size of a file, or undefined if there is none. */
async function sizeOf(path: string): Promise<number | undefined> {
  return (await Deno.lstat(path).catch(() => undefined))?.size;
}

function shown(label: string): DescribeOptions {
  return { label, lastChars: 4000 };
}

function describe(label: string, result: Finished): string {
  return describeRun(result, shown(label));
}

type JsonLine = Record<string, unknown> & { event: string };

/** The JSON lines of some output (a `--json` client's standard output). */
function jsonLines(label: string, text: string | readonly string[]): JsonLine[] {
  const lines = typeof text === "string" ? nonEmptyLines(text) : text.filter((l) => l !== "");
  return lines.map((line) => {
    try {
      return JSON.parse(line) as JsonLine;
    } catch {
      throw new Error(`${label} printed a line that is not JSON: ${line}`);
    }
  });
}

/** Waits for a JSON event of a running `--json` client that satisfies `match`. */
async function waitForEvent(
  program: RunningProgram,
  label: string,
  match: (line: JsonLine) => boolean,
  ms = 20_000,
): Promise<JsonLine> {
  try {
    return await pollUntil(
      () => Promise.resolve(jsonLines(label, program.stdout.lines).find(match)),
      ms,
      `${label}: an event as expected`,
      20,
    );
  } catch (error) {
    throw new Error(
      `${(error as Error).message}\n--- stdout ---\n${program.stdout.text}` +
        `--- stderr ---\n${program.stderr.text}`,
    );
  }
}

/** Waits until a running client printed its successful `register` or `login`. */
async function loggedIn(program: RunningProgram, label: string): Promise<void> {
  await waitForEvent(
    program,
    label,
    (l) =>
      l.event === "result" && (l.command === "register" || l.command === "login") &&
      l.ok === true,
  );
}

/** Writes lines to a running client's standard input. */
async function type(program: RunningProgram, ...lines: string[]): Promise<void> {
  await program.write(lines.map((line) => line + "\n").join(""));
}

/** The `error:` lines of some standard error (big files add `Hashing` progress lines). */
function errorLines(result: Finished): string[] {
  return nonEmptyLines(result.stderr).filter((line) => !/^Hashing /.test(line));
}

function assertNoStackTrace(label: string, result: Finished): void {
  assert(
    !/^\s+at /m.test(result.stdout + result.stderr),
    `stack trace\n${describe(label, result)}`,
  );
}

function formatRate(bytesPerSecond: number): string {
  return `${(bytesPerSecond / MIB).toFixed(1)} MiB/s`;
}

Deno.test("sendfile delivers 0 B, 1 B, 32 KiB and 5 MiB files intact and never overwrites a name", async () => {
  await using s = await setup();
  const src = s.dir.join("src");
  const again = s.dir.join("again");
  await Deno.mkdir(src);
  await Deno.mkdir(again);
  const sizes = { "zero.bin": 0, "one.bin": 1, "chunk.bin": 32768, "five.bin": 5 * MIB };
  const digests: Record<string, string> = {};
  for (const [name, size] of Object.entries(sizes)) {
    digests[name] = await randomFile(`${src}/${name}`, size);
  }
  // A different file of a taken name.
  const chunkAgain = await randomFile(`${again}/chunk.bin`, 1000);
  const bob = await s.client(
    "Bob",
    [
      "register Bob",
      "accept",
      "wait messages 1 within 45",
      "wait transfers within 30",
    ],
    "--json",
    "--accept-files",
  );
  await using _bob = bob;
  await loggedIn(bob, "Bob");
  const alice = await s.client("Alice", [
    "register Alice",
    "connect Bob",
    `sendfile ${src}/zero.bin`,
    `sendfile ${src}/one.bin`,
    `sendfile ${src}/chunk.bin`,
    "wait transfers within 30",
    `sendfile ${src}/five.bin`,
    "wait transfers within 60",
    // The same name again, once with other content and twice at once with the same content.
    `sendfile ${again}/chunk.bin`,
    `sendfile ${src}/five.bin`,
    `sendfile ${src}/five.bin`,
    "wait transfers within 60",
    "send all sent",
    "wait terminate within 30",
  ], "--json");
  await using _alice = alice;
  // Transfer 4 is the 5 MiB file, alone on the channel: timed from the
  // sender's file_accepted to its file_done (the receiver's verdict).
  let acceptedAt = 0;
  const accepted = alice.waitForLine(/^\{"event":"file_accepted".*"id":4,/, RUN_MS)
    .then(() => acceptedAt = performance.now());
  const done = alice.waitForLine(/^\{"event":"file_done".*"id":4,/, RUN_MS)
    .then(() => performance.now());
  accepted.catch(() => {});
  done.catch(() => {});
  const b = await bob.finished(RUN_MS);
  const a = await alice.finished(RUN_MS);
  assertEquals(b.code, 0, describe("Bob", b) + describe("Alice", a));
  assertEquals(a.code, 0, describe("Alice", a) + describe("Bob", b));
  await accepted;
  const doneAt = await done;

  const dl = downloads(s.dir, "Bob");
  assertEquals(
    await filesIn(dl),
    [
      "chunk (1).bin",
      "chunk.bin",
      "five (1).bin",
      "five (2).bin",
      "five.bin",
      "one.bin",
      "zero.bin",
    ],
    "every file landed under its own name and nothing else (no .part) is left",
  );
  for (const name of Object.keys(sizes)) {
    assertEquals(await sha256Of(`${dl}/${name}`), digests[name], name);
  }
  assertEquals(await sha256Of(`${dl}/chunk (1).bin`), chunkAgain, "the second chunk.bin");
  assertEquals(await sha256Of(`${dl}/five (1).bin`), digests["five.bin"], "five (1).bin");
  assertEquals(await sha256Of(`${dl}/five (2).bin`), digests["five.bin"], "five (2).bin");

  const bobLines = jsonLines("Bob", b.stdout);
  const received = bobLines.filter((l) => l.event === "file_done");
  assertEquals(received.length, 7, describe("Bob", b));
  assert(received.every((l) => l.direction === "receive" && l.state === "done"));
  const offers = bobLines.filter((l) => l.event === "file_offer");
  assertEquals(offers.map((l) => [l.name, l.size]), [
    ["zero.bin", 0],
    ["one.bin", 1],
    ["chunk.bin", 32768],
    ["five.bin", 5 * MIB],
    ["chunk.bin", 1000],
    ["five.bin", 5 * MIB],
    ["five.bin", 5 * MIB],
  ]);
  assertEquals(offers[0].message, '"Alice" offers "zero.bin" (0 B)');
  assertEquals(offers[3].message, '"Alice" offers "five.bin" (5.0 MiB)');
  assertEquals(
    bobLines.filter((l) => l.event === "file_accepted").map((l) => l.startOffset),
    [0, 0, 0, 0, 0, 0, 0],
    "nothing was resumed",
  );
  const aliceLines = jsonLines("Alice", a.stdout);
  const sent = aliceLines.filter((l) => l.event === "file_done");
  assertEquals(sent.map((l) => l.id).sort(), [1, 2, 3, 4, 5, 6, 7]);
  assert(sent.every((l) => /SHA-256 verified/.test(String(l.message))));
  const offered = aliceLines.filter((l) => l.event === "result" && l.command === "sendfile");
  assertEquals(offered[0].message, `Offered "zero.bin" (0 B) to "Bob" as transfer 1`);
  assertEquals(offered[3].message, `Offered "five.bin" (5.0 MiB) to "Bob" as transfer 4`);
  assert(aliceLines.every((l) => l.event !== "file_failed"), describe("Alice", a));
  assert(bobLines.every((l) => l.event !== "file_failed"), describe("Bob", b));
  assertEquals(errorLines(a), [], describe("Alice", a));
  assertEquals(errorLines(b), [], describe("Bob", b));
  const lastProgress = aliceLines.filter((l) => l.event === "file_progress" && l.id === 4).at(-1);
  assertEquals(lastProgress?.done, 5 * MIB);
  const seconds = (doneAt - acceptedAt) / 1000;
  console.log(
    `  5 MiB peer to peer: ${Math.round(seconds * 1000)} ms from accepted to verified, ` +
      `${formatRate((5 * MIB) / seconds)} goodput (the sender's own estimate: ${
        formatRate(Number(lastProgress?.rate))
      })`,
  );
  assertEquals(await s.server.stop(), 0);
});

Deno.test("with --accept-files, wait offer reports each offer once and wait transfers its end", async () => {
  await using s = await setup();
  const one = await randomFile(s.dir.join("one.bin"), 1101);
  const two = await randomFile(s.dir.join("two.bin"), 40_000);
  const bob = await s.client("Bob", [
    "register Bob",
    "accept",
    "wait offer within 30",
    "wait offer within 30",
    "wait transfers within 60",
    "send got both",
    "wait terminate within 30",
  ], "--accept-files");
  await using _bob = bob;
  await bob.waitForLine(/^Registered and logged in as "Bob"$/, 20_000);
  const alice = await s.client("Alice", [
    "register Alice",
    "connect Bob",
    `sendfile ${s.dir.join("one.bin")}`,
    `sendfile ${s.dir.join("two.bin")}`,
    "wait transfers within 60",
    "wait messages 1 within 30",
    "terminate",
  ]);
  await using _alice = alice;
  const a = await alice.finished(RUN_MS);
  const b = await bob.finished(RUN_MS);
  assertEquals(b.code, 0, describe("Bob", b) + describe("Alice", a));
  assertEquals(a.code, 0, describe("Alice", a) + describe("Bob", b));
  assertMatch(b.stdout, /^"Alice" offer(s|ed) "one\.bin" \(1\.1 KiB\) as 1\b/m);
  assertMatch(b.stdout, /^"Alice" offer(s|ed) "two\.bin" \(39\.1 KiB\) as 2\b/m);
  assertEquals(await sha256Of(`${downloads(s.dir, "Bob")}/one.bin`), one);
  assertEquals(await sha256Of(`${downloads(s.dir, "Bob")}/two.bin`), two);
  assertEquals(await s.server.stop(), 0);
});

Deno.test("a declined offer fails the sender's wait transfers with a clear line and writes nothing", async () => {
  await using s = await setup();
  const file = s.dir.join("report.csv");
  await randomFile(file, 2048);
  const bob = await s.client("Bob", [
    "register Bob",
    "accept",
    "wait offer within 30",
    "declinefile",
    "wait terminate within 30",
  ]);
  await using _bob = bob;
  await bob.waitForLine(/^Registered and logged in as "Bob"$/, 20_000);
  const alice = await s.client("Alice", [
    "register Alice",
    "connect Bob",
    `sendfile ${file}`,
    "wait transfers within 30",
    "send never sent",
  ]);
  await using _alice = alice;
  const a = await alice.finished(RUN_MS);
  const b = await bob.finished(RUN_MS);
  assertEquals(a.code, 1, describe("Alice", a) + describe("Bob", b));
  assertEquals(b.code, 0, describe("Bob", b) + describe("Alice", a));
  assertOneErrorLine(
    a,
    /^error: 1 of 1 transfers did not finish: 1 declined \("Bob" declined it\)$/,
    shown("Alice"),
  );
  assertMatch(a.stdout, /^Offered "report\.csv" \(2\.0 KiB\) to "Bob" as transfer 1$/m);
  assertMatch(a.stdout, /^Sending "report\.csv" to "Bob" was declined: "Bob" declined it/m);
  assert(!/never sent/.test(b.stdout), "the script stopped at the failed wait");
  const bobOut = nonEmptyLines(b.stdout);
  assertEquals(bobOut.slice(3), [
    'Connected with "Alice"',
    '"Alice" offers "report.csv" (2.0 KiB); acceptfile 1 or declinefile 1',
    '"Alice" offers "report.csv" (2.0 KiB) as 1',
    'Receiving "report.csv" from "Alice" was declined',
    'Declined "report.csv" from "Alice"',
    '"Alice" ended the session (it left)',
    'The session with "Alice" ended',
  ], describe("Bob", b));
  assertEquals(b.stderr, "", describe("Bob", b));
  assertEquals(await filesIn(downloads(s.dir, "Bob")), [], "nothing written on the receiver");
  assertEquals(await s.server.stop(), 0);
});

Deno.test("cancel stops a transfer from either side: both are told, and the partial file goes", async (t) => {
  await using s = await setup();
  const file = s.dir.join("big.bin");
  const size = 40 * MIB;
  const digest = await randomFile(file, size);

  await t.step("the sender cancels", async () => {
    const bob = await s.client(
      "Bob",
      [
        "register Bob",
        "accept",
        "wait messages 1 within 30",
        "wait transfers within 60",
      ],
      "--json",
      "--accept-files",
    );
    await using _bob = bob;
    await loggedIn(bob, "Bob");
    const alice = await s.client("Alice", undefined, "--json");
    await using _alice = alice;
    await type(alice, "register Alice", "connect Bob", `sendfile ${file}`, "send go");
    const partial = partialPath(downloads(s.dir, "Bob"), "big.bin", digest);
    await pollUntil(
      async () => ((await sizeOf(partial)) ?? 0) >= MIB || undefined,
      20_000,
      "Bob has 1 MiB",
      20,
    );
    await type(alice, "cancel", "transfers");
    const b = await bob.finished(RUN_MS);
    assertEquals(b.code, 1, describe("Bob", b));
    const a = await alice.finished(RUN_MS);
    assertEquals(a.code, 0, describe("Alice", a));
    const aliceLines = jsonLines("Alice", a.stdout);
    const cancel = aliceLines.find((l) => l.event === "result" && l.command === "cancel");
    assertEquals(cancel?.message, 'Cancelled transfer 1 ("big.bin")');
    const aliceFailed = aliceLines.filter((l) => l.event === "file_failed");
    assertEquals(aliceFailed.length, 1, describe("Alice", a));
    assertEquals(aliceFailed[0].state, "cancelled");
    assertEquals(
      aliceFailed[0].message,
      'Sending "big.bin" to "Bob" was cancelled',
    );
    assertLess(Number(aliceFailed[0].done), size, "it was cancelled midway");
    const bobFailed = jsonLines("Bob", b.stdout).filter((l) => l.event === "file_failed");
    assertEquals(bobFailed.length, 1, describe("Bob", b));
    assertEquals(bobFailed[0].state, "cancelled");
    assertEquals(
      bobFailed[0].message,
      'Receiving "big.bin" from "Alice" was cancelled: "Alice" cancelled it',
    );
    assertGreater(Number(bobFailed[0].done), 0);
    assertLess(Number(bobFailed[0].done), size);
    assertEquals(errorLines(b).length, 1, describe("Bob", b));
    assertMatch(
      errorLines(b)[0],
      /^error: 1 of 1 transfers did not finish: 1 cancelled \("Alice" cancelled it\)$/,
    );
    assertNoStackTrace("Bob", b);
    assertEquals(await filesIn(downloads(s.dir, "Bob")), [], "the partial file was removed");
  });

  await t.step("the receiver cancels", async () => {
    const dave = await s.client("Dave", undefined, "--json", "--accept-files");
    await using _dave = dave;
    await type(dave, "register Dave", "accept");
    await loggedIn(dave, "Dave");
    const carol = await s.client("Carol", [
      "register Carol",
      "connect Dave",
      `sendfile ${file}`,
      "wait transfers within 60",
    ], "--json");
    await using _carol = carol;
    const partial = partialPath(downloads(s.dir, "Dave"), "big.bin", digest);
    await pollUntil(
      async () => ((await sizeOf(partial)) ?? 0) >= MIB || undefined,
      20_000,
      "Dave has 1 MiB",
      20,
    );
    await type(dave, "cancel");
    const c = await carol.finished(RUN_MS);
    assertEquals(c.code, 1, describe("Carol", c));
    assertEquals(errorLines(c).length, 1, describe("Carol", c));
    assertMatch(
      errorLines(c)[0],
      /^error: 1 of 1 transfers did not finish: 1 cancelled \("Dave" cancelled it\)$/,
    );
    assertNoStackTrace("Carol", c);
    const carolFailed = jsonLines("Carol", c.stdout).filter((l) => l.event === "file_failed");
    assertEquals(carolFailed.length, 1, describe("Carol", c));
    assertEquals(carolFailed[0].state, "cancelled");
    assertLess(Number(carolFailed[0].done), size);
    await pollUntil(
      async () => (await filesIn(downloads(s.dir, "Dave"))).length === 0 || undefined,
      5_000,
      "Dave's partial file removed",
    );
    const d = await dave.finished(RUN_MS);
    assertEquals(d.code, 0, describe("Dave", d));
    const daveLines = jsonLines("Dave", d.stdout);
    const cancel = daveLines.find((l) => l.event === "result" && l.command === "cancel");
    assertEquals(cancel?.message, 'Cancelled transfer 1 ("big.bin")');
    const daveFailed = daveLines.filter((l) => l.event === "file_failed");
    assertEquals(daveFailed.length, 1, describe("Dave", d));
    assertEquals(
      daveFailed[0].message,
      'Receiving "big.bin" from "Carol" was cancelled',
    );
    assertEquals(await filesIn(downloads(s.dir, "Dave")), []);
  });
  assertEquals(await s.server.stop(), 0);
});

Deno.test("a transfer cut off by a lost peer or a crashed receiver resumes from the partial file", async () => {
  await using s = await setup();
  const file = s.dir.join("big.bin");
  const size = 24 * MIB;
  const digest = await randomFile(file, size);
  const dl = downloads(s.dir, "Bob");
  const partial = partialPath(dl, "big.bin", digest);
  const hasMore = (than: number) => async () =>
    ((await sizeOf(partial)) ?? 0) >= than + MIB || undefined;

  // Round 1: the sender goes away (Ctrl+C) mid-transfer; the receiver keeps running.
  const bob1 = await s.client("Bob", undefined, "--json", "--accept-files");
  await using _bob1 = bob1;
  await type(bob1, "register Bob", "accept");
  await loggedIn(bob1, "Bob");
  const alice1 = await s.client("Alice", undefined, "--json");
  await using _alice1 = alice1;
  await type(alice1, "register Alice", "connect Bob", `sendfile ${file}`);
  await pollUntil(hasMore(0), 20_000, "Bob has 1 MiB", 20);
  const a1 = await alice1.signal("SIGINT");
  assertEquals(a1.code, 130, describe("Alice (1)", a1));
  const interrupted = await waitForEvent(bob1, "Bob", (l) => l.event === "file_failed");
  assertEquals(interrupted.state, "interrupted");
  assertMatch(
    String(interrupted.message),
    /^Receiving "big\.bin" from "Alice" was interrupted: "Alice" ended the session \(it left\); the part received is kept, so sending it again resumes$/,
  );
  const kept1 = await pollUntil(async () => await sizeOf(partial), 5_000, "a kept partial file");
  assertGreater(kept1, 0);
  assertLess(kept1, size, "the sender was stopped midway");
  assertEquals(await filesIn(dl), [`.big.bin.${digest.slice(0, 16)}.part`]);

  // Round 2: sent again, it resumes; then the receiver is killed (kill -9) mid-transfer.
  await type(bob1, "accept");
  const alice2 = await s.client("Alice", undefined, "--json");
  await using _alice2 = alice2;
  await type(alice2, "login", "connect Bob", `sendfile ${file}`);
  const resumed2 = await waitForEvent(alice2, "Alice (2)", (l) => l.event === "file_accepted");
  const start2 = Number(resumed2.startOffset);
  assertGreater(start2, 0, "resumed");
  assertGreaterOrEqual(start2, kept1, "from at least what was on disk");
  assertMatch(String(resumed2.message), /^"Bob" accepted "big\.bin"; resuming at \d+\.\d MiB$/);
  const bobAccepted2 = await waitForEvent(
    bob1,
    "Bob",
    (l) => l.event === "file_accepted" && l.id === 2,
  );
  assertEquals(bobAccepted2.startOffset, start2);
  await pollUntil(hasMore(start2), 20_000, "Bob has 1 MiB more", 20);
  await bob1.signal("SIGKILL");
  const kept2 = (await sizeOf(partial)) ?? 0;
  assertGreater(kept2, start2, "the partial file survives kill -9, with more in it");
  assertLess(kept2, size, "the receiver was killed midway");

  // Round 3: a new receiver process, same identity and download directory.
  // Alice is still in her session with the dead Bob (it would take 30 s to
  // find it dead) and connects again at once: Bob is online at a new
  // address, so that session is over and the new one resumes the file.
  const bob2 = await s.client("Bob", undefined, "--json", "--accept-files");
  await using _bob2 = bob2;
  await type(bob2, "login", "accept");
  await loggedIn(bob2, "Bob");
  const restartedAt = performance.now();
  await type(alice2, "connect Bob", `sendfile ${file}`, "wait transfers within 60");
  const b2Done = await waitForEvent(bob2, "Bob (2)", (l) => l.event === "file_done", RUN_MS);
  assertLess(performance.now() - restartedAt, 25_000, "no wait for the old session to die");
  await bob2.closeStdin();
  const a3 = await alice2.finished(RUN_MS);
  const b2 = await bob2.finished(RUN_MS);
  assertEquals(a3.code, 0, describe("Alice (2)", a3));
  assertEquals(b2.code, 0, describe("Bob (2)", b2));
  assertMatch(a3.stdout, /"event":"peer_ended".*it started a new one/);
  const accepted3 = jsonLines("Alice (2)", a3.stdout).filter((l) => l.event === "file_accepted")
    .slice(1);
  assertEquals(accepted3.map((l) => l.startOffset), [kept2], "resumed where the crash left it");
  const bobAccepted3 = jsonLines("Bob (2)", b2.stdout).filter((l) => l.event === "file_accepted");
  assertEquals(bobAccepted3.map((l) => l.startOffset), [kept2]);
  assertEquals(b2Done.path, `${dl}/big.bin`);
  assertEquals(await sha256Of(`${dl}/big.bin`), digest, "the resumed file is intact");
  assertEquals(await filesIn(dl), ["big.bin"], "no partial file is left");
  console.log(
    `  resumed at ${(start2 / MIB).toFixed(1)} MiB after the sender left, ` +
      `at ${(kept2 / MIB).toFixed(1)} MiB after kill -9 of the receiver, of ${size / MIB} MiB`,
  );
  assertEquals(await s.server.stop(), 0);
});

/**
 * Runs a client in its own user, mount and PID namespaces (`unshare`, no
 * privileges needed) with a small tmpfs mounted on `dir`: a really full
 * file system, which the process alone sees. After the client exits, the
 * wrapper lists what is left in `dir` under {@linkcode LEFT_MARKER}. The
 * namespace's processes all die with the wrapper if a test kills it.
 */
function fullDiskWrapper(dir: string, bytes: number): string[] {
  const script = `dir="$1"; shift; mount -t tmpfs -o size=${bytes} tmpfs "$dir" || exit 97; ` +
    `"$@"; code=$?; echo "${LEFT_MARKER}"; ls -A "$dir"; exit $code`;
  return ["unshare", "-rmp", "--fork", "--kill-child", "sh", "-c", script, "sh", dir];
}

const LEFT_MARKER = "--- left in the download directory:";

/** True if {@linkcode fullDiskWrapper} works here (Linux with unprivileged namespaces). */
async function canMountTmpfs(): Promise<boolean> {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_e2e_tmpfs_" });
  try {
    const { code } = await new Deno.Command("unshare", {
      args: [
        "-rmp",
        "--fork",
        "--kill-child",
        "sh",
        "-c",
        'mount -t tmpfs -o size=4096 tmpfs "$1"',
        "sh",
        dir,
      ],
      stdout: "null",
      stderr: "null",
    }).output();
    return code === 0;
  } catch {
    return false;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test({
  name: "a download directory without room for the file fails both sides before a byte is written",
  ignore: !(await canMountTmpfs()),
  async fn() {
    await using s = await setup();
    const file = s.dir.join("x.bin");
    await randomFile(file, 512 * 1024);
    const dl = downloads(s.dir, "Bob");
    await Deno.mkdir(dl);
    // 192 KiB of space for a 512 KiB file: refused up front (statfs), not at ENOSPC.
    const bob = await s.client(
      "Bob",
      [
        "register Bob",
        "accept",
        "wait messages 1 within 30",
        "wait transfers within 30",
      ],
      "--accept-files",
      { wrapper: fullDiskWrapper(dl, 192 * 1024) },
    );
    await using _bob = bob;
    await bob.waitForLine(/^Registered and logged in as "Bob"$/, 20_000);
    const alice = await s.client("Alice", [
      "register Alice",
      "connect Bob",
      `sendfile ${file}`,
      "send go",
      "wait transfers within 30",
    ]);
    await using _alice = alice;
    const b = await bob.finished(RUN_MS);
    const a = await alice.finished(RUN_MS);
    assertEquals(b.code, 1, describe("Bob", b) + describe("Alice", a));
    assertEquals(a.code, 1, describe("Alice", a) + describe("Bob", b));
    // Bob sees how much room is missing; Alice only that there is too little, not his paths.
    assertOneErrorLine(b, /^error: 1 of 1 transfers did not finish: 1 failed \(/, shown("Bob"));
    assertOneErrorLine(
      b,
      /Not enough free space in .*Bob-downloads for "x\.bin": it needs 524288 more bytes, \d+ are free/,
      shown("Bob"),
    );
    assertOneErrorLine(
      a,
      /^error: 1 of 1 transfers did not finish: 1 failed \("Bob"(: | stopped it: )the receiver has too little free space for the file\)$/,
      shown("Alice"),
    );
    assert(!a.stdout.includes(dl) && !a.stderr.includes(dl), `Bob's path reached Alice`);
    assertMatch(
      b.stdout,
      /^Receiving "x\.bin" from "Alice" failed: Not enough free space in /m,
    );
    const bobOut = nonEmptyLines(b.stdout);
    const left = bobOut.indexOf(LEFT_MARKER);
    assert(left >= 0, describe("Bob", b));
    assertEquals(bobOut.slice(left + 1), [], "neither x.bin nor a partial file is left");
    assertEquals(await s.server.stop(), 0);
  },
});

Deno.test("chat keeps flowing both ways while a file moves", async () => {
  await using s = await setup();
  const file = s.dir.join("twenty.bin");
  const size = 20 * MIB;
  const digest = await randomFile(file, size);
  const count = 3;
  const bob = await s.client(
    "Bob",
    [
      "register Bob",
      "accept",
      "wait messages 1 within 30",
      ...Array.from({ length: count }, (_, i) => `send b${i}`),
      `wait messages ${count} within 30`,
      "wait transfers within 60",
      "wait terminate within 30",
    ],
    "--json",
    "--accept-files",
  );
  await using _bob = bob;
  await loggedIn(bob, "Bob");
  // Alice types her messages once the file is well under way (Bob has 1 MiB of it).
  const alice = await s.client("Alice", undefined, "--json");
  await using _alice = alice;
  const partial = partialPath(downloads(s.dir, "Bob"), "twenty.bin", digest);
  // When each line arrives, as the test sees it, and how much of the file
  // Bob then has on disk (undefined once it is complete and placed).
  const seen = new Map<string, { at: number; bobHas: number | undefined }>();
  const watch = (program: RunningProgram, key: string, pattern: RegExp) =>
    program.waitForLine(pattern, RUN_MS).then(async () => {
      const at = performance.now();
      seen.set(key, { at, bobHas: await sizeOf(partial) });
    }, () => {});
  const message = (from: string, text: string) =>
    new RegExp(`^\\{"event":"message","message":"\\[${from}\\] ${text}"`);
  const watching = [
    watch(alice, "accepted", /^\{"event":"file_accepted"/),
    watch(bob, "received", /^\{"event":"file_done"/),
    ...Array.from({ length: count }, (_, i) => [
      watch(bob, `a${i}`, message("Alice", `a${i}`)),
      watch(alice, `b${i}`, message("Bob", `b${i}`)),
    ]).flat(),
  ];
  await type(alice, "register Alice", "connect Bob", `sendfile ${file}`);
  await pollUntil(
    async () => ((await sizeOf(partial)) ?? 0) >= MIB || undefined,
    20_000,
    "Bob has 1 MiB",
    10,
  );
  const typedAt = performance.now();
  await type(
    alice,
    ...Array.from({ length: count }, (_, i) => `send a${i}`),
    `wait messages ${count} within 30`,
    "wait transfers within 60",
    "terminate",
  );
  await alice.closeStdin();
  const a = await alice.finished(RUN_MS);
  const b = await bob.finished(RUN_MS);
  await Promise.all(watching);
  assertEquals(a.code, 0, describe("Alice", a) + describe("Bob", b));
  assertEquals(b.code, 0, describe("Bob", b) + describe("Alice", a));
  assertEquals(await sha256Of(downloads(s.dir, "Bob") + "/twenty.bin"), digest);

  for (
    const [label, result, from, prefix] of [
      ["Bob", b, "Alice", "a"],
      ["Alice", a, "Bob", "b"],
    ] as const
  ) {
    const lines = jsonLines(label, result.stdout);
    const messages = lines.map((l, at) => ({ l, at })).filter(({ l }) => l.event === "message");
    assertEquals(
      messages.map(({ l }) => [l.from, l.text]),
      Array.from({ length: count }, (_, i) => [from, `${prefix}${i}`]),
      `${label} got every message once, in order`,
    );
    const doneAt = lines.findIndex((l) => l.event === "file_done");
    assert(doneAt >= 0, describe(label, result));
    assert(
      messages.every(({ at }) => at < doneAt),
      `${label}: every message came before the transfer ended\n${describe(label, result)}`,
    );
    // The file was moving when each message came: part of it, not all, was on Bob's disk.
    for (let i = 0; i < count; i++) {
      const bobHas = seen.get(`${prefix}${i}`)?.bobHas;
      assert(
        bobHas !== undefined && bobHas >= MIB && bobHas < size,
        `${label} got ${prefix}${i} when Bob had ${bobHas} bytes of ${size}`,
      );
    }
  }
  const after = (key: string) => Math.round(seen.get(key)!.at - typedAt);
  const had = (key: string) => (seen.get(key)!.bobHas! / MIB).toFixed(1);
  console.log(
    `  20 MiB in ${Math.round(seen.get("received")!.at - seen.get("accepted")!.at)} ms; ` +
      `after Alice typed, her messages reached Bob at ${
        Array.from({ length: count }, (_, i) => `${after(`a${i}`)} ms (${had(`a${i}`)} MiB)`)
          .join(", ")
      } (what Bob had of the file then); Bob's reached her at ${
        Array.from({ length: count }, (_, i) => `${after(`b${i}`)} ms`).join(", ")
      }; the file was in at ${after("received")} ms`,
  );
  assertEquals(await s.server.stop(), 0);
});

Deno.test("sendfile rejects a missing file, a directory, a bad name and no session with one line each", async () => {
  await using s = await setup();
  const dir = s.dir.join("folder");
  await Deno.mkdir(dir);
  const good = s.dir.join("good.bin");
  await randomFile(good, 100);
  const bad = s.dir.join("bad:name.bin");
  await randomFile(bad, 100);
  const cases: [string, string[], RegExp][] = [
    [
      "missing",
      [`sendfile ${s.dir.join("nothere.bin")}`],
      /^error: cannot read .*\/nothere\.bin: No such file or directory/,
    ],
    ["directory", [`sendfile ${dir}`], /^error: cannot read .*\/folder: it is not a regular file$/],
    [
      "bad name",
      [`sendfile ${bad}`],
      /^error: file name "bad:name\.bin" may not contain ":"; use letters, digits, space, "\.", "_" and "-"$/,
    ],
    [
      "no session",
      ["register Alice", `sendfile ${good}`],
      /^error: no open session; use connect NAME first$/,
    ],
    [
      "no session with",
      ["login Alice", `sendfile @Bob ${good}`],
      /^error: no open session with "Bob"$/,
    ],
  ];
  for (const [label, lines, pattern] of cases) {
    const client = await s.client("Alice", [...lines, "status"]);
    await using _client = client;
    const result = await client.finished(RUN_MS);
    assertEquals(result.code, 1, describe(label, result));
    assertOneErrorLine(result, pattern, shown(label));
    assert(
      !/^Server 127\.0\.0\.1:/m.test(result.stdout),
      `${label}: the script stopped at sendfile`,
    );
  }
  assertEquals(await s.server.stop(), 0);
});

Deno.test("two transfers into one receiver at once share its link fairly (within 2x)", async () => {
  // Alice and Carol each send Bob 12 MiB at the same time. Bob's one UDP
  // socket, and its buffer, is the bottleneck both congestion windows share.
  await using s = await setup();
  const size = 12 * MIB;
  const files = { Alice: s.dir.join("from-alice.bin"), Carol: s.dir.join("from-carol.bin") };
  const digests = {
    Alice: await randomFile(files.Alice, size),
    Carol: await randomFile(files.Carol, size),
  };
  const bob = await s.client("Bob", undefined, "--json", "--accept-files");
  await using _bob = bob;
  await type(bob, "register Bob");
  await loggedIn(bob, "Bob");
  const senders = await Promise.all(
    (["Alice", "Carol"] as const).map((name) => s.client(name, undefined, "--json")),
  );
  await using _alice = senders[0];
  await using _carol = senders[1];
  for (const [i, name] of (["Alice", "Carol"] as const).entries()) {
    await type(senders[i], `register ${name}`, "connect Bob");
    await type(bob, "accept");
    await waitForEvent(senders[i], name, (l) => l.command === "connect" && l.ok === true);
  }
  // Both offers go at once; each sender's time runs from there to its verified end.
  const started = performance.now();
  const took: Record<string, number> = {};
  await Promise.all((["Alice", "Carol"] as const).map(async (name, i) => {
    await type(senders[i], `sendfile ${files[name]}`, "wait transfers within 120", "terminate");
    await senders[i].closeStdin();
    await senders[i].waitForLine(/^\{"event":"file_done"/, RUN_MS);
    took[name] = performance.now() - started;
  }));
  await type(bob, "exit");
  await bob.closeStdin();
  for (const program of [...senders, bob]) {
    const result = await program.finished(RUN_MS);
    assertEquals(result.code, 0, describe("client", result));
  }
  for (const name of ["Alice", "Carol"] as const) {
    const dest = `${downloads(s.dir, "Bob")}/from-${name.toLowerCase()}.bin`;
    assertEquals(await sha256Of(dest), digests[name], `${name}'s file arrived intact`);
  }
  const [fast, slow] = [Math.min(took.Alice, took.Carol), Math.max(took.Alice, took.Carol)];
  console.log(
    `  12 MiB each at once: Alice ${Math.round(took.Alice)} ms, Carol ${
      Math.round(took.Carol)
    } ms (slower/faster ${(slow / fast).toFixed(2)})`,
  );
  assertLess(slow / fast, 2, "neither transfer took twice as long as the other");
});
