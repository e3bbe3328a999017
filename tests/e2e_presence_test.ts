/**
 * End-to-end tests of identities, logins and presence: the real server and
 * clients run as processes on loopback ports chosen at run time. Each client
 * runs in a working directory inside the test's temporary directory, so its
 * default paths (`./data/client/identities.json`) are exercised and stay out
 * of the source tree. Waits are polls with deadlines, not fixed sleeps.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import {
  assertExit,
  assertOneErrorLine,
  delay,
  describeRun,
  type Finished,
  pollUntil,
  runClient,
  type RunningProgram,
  runProgram,
  SERVER_PATH,
  startClient,
  startServer,
  startWorld,
  type World,
} from "./_processes.ts";

/** A {@linkcode World} whose clients keep their identities in its working directory. */
interface PresenceWorld extends World {
  /** Where clients run in `cwd` keep their identities by default. */
  readonly identityFile: string;
}

async function world(
  serverFlags: string[] = [],
  before?: (dataDir: string) => Promise<void>,
): Promise<PresenceWorld> {
  const w = await startWorld("switchboard_presence_", { serverFlags, before });
  return { ...w, identityFile: `${w.cwd}/data/client/identities.json` };
}

/**
 * Writes a command to a client in plain-text mode and waits for its answer:
 * the first new line on stdout (success) or a new `error:` line on stderr.
 */
async function answer(
  client: RunningProgram,
  command: string,
  ms = 10_000,
): Promise<{ ok: boolean; line: string }> {
  const out = client.stdout.lines.length;
  const err = client.stderr.lines.length;
  await client.write(command + "\n");
  try {
    return await pollUntil<{ ok: boolean; line: string }>(
      () => {
        const error = client.stderr.lines.slice(err).find((line) => line.startsWith("error: "));
        if (error !== undefined) return Promise.resolve({ ok: false, line: error });
        const line = client.stdout.lines[out];
        return Promise.resolve(line === undefined ? undefined : { ok: true, line });
      },
      ms,
      `an answer to "${command}"`,
      20,
    );
  } catch (error) {
    throw new Error(
      `${(error as Error).message}\n--- stdout ---\n${client.stdout.text}` +
        `--- stderr ---\n${client.stderr.text}`,
    );
  }
}

/** One `--json` result line. */
interface JsonResult {
  event: "result";
  command: string;
  ok: boolean;
  message?: string;
  error?: string;
  code?: string;
  [key: string]: unknown;
}

/** Writes a command to a `--json` client and returns its result object. */
async function jsonAnswer(client: RunningProgram, command: string, ms = 10_000) {
  const from = client.stdout.lines.length;
  await client.write(command + "\n");
  const line = await client.waitForLine(/^\{"event":"result"/, ms, from);
  return JSON.parse(line) as JsonResult;
}

/** Runs `list` on a logged-in `--json` client and returns the names online. */
async function listNames(client: RunningProgram): Promise<string[]> {
  const result = await jsonAnswer(client, "list");
  assert(result.ok, `list failed: ${JSON.stringify(result)}`);
  return (result.clients as { name: string }[]).map((c) => c.name);
}

/** The local UDP port a `--json` client reports in `status`. */
async function udpPortOf(client: RunningProgram): Promise<number> {
  const status = await jsonAnswer(client, "status");
  return status.udpPort as number;
}

interface OnlineClient {
  name: string;
  ip: string;
  udpPort: number;
  tcpPort: number;
  onlineMs: number;
}

function withoutTime({ onlineMs: _, ...rest }: OnlineClient): Omit<OnlineClient, "onlineMs"> {
  return rest;
}

interface SavedIdentity {
  server: string;
  name: string;
  key: string;
  savedAt: string;
}

async function readIdentities(path: string): Promise<SavedIdentity[]> {
  return JSON.parse(await Deno.readTextFile(path)).identities;
}

/** Waits until every client has said hello to the server. */
async function connected(
  clients: RunningProgram[],
  pattern = /^Connected to server |^\{"event":"connected"/,
) {
  await Promise.all(clients.map((c) => c.waitForLine(pattern, 15_000)));
}

Deno.test("client logs in again in a new process from its saved identity: login NAME, bare login, --identity", async () => {
  await using w = await world();
  const { server, cwd } = w;

  const first = await runClient({
    args: w.args("--name", "Ann Lee"),
    stdin: "register\nexit\n",
    cwd,
  });
  assertExit(first, 0);
  assertStringIncludes(first.stdout, 'Registered and logged in as "Ann Lee"');
  await server.waitForLine(/^"Ann Lee" went offline \(logged out\)$/);
  // The default identity file is ./data/client/identities.json in the working directory.
  const saved = await readIdentities(w.identityFile);
  assertEquals(saved.map((i) => [i.server, i.name]), [[server.address, "Ann Lee"]]);
  assertEquals(saved[0].key, undefined, "the key pair beside it is the identity");

  const byName = await runClient({ args: w.args(), stdin: "login Ann Lee\nstatus\n", cwd });
  assertExit(byName, 0);
  assertStringIncludes(byName.stdout, 'Logged in as "Ann Lee"\n');
  assertMatch(byName.stdout, /; name "Ann Lee", logged in as "Ann Lee"; /);

  const bare = await runClient({ args: w.args(), stdin: "login\nlist\n", cwd });
  assertExit(bare, 0);
  assertStringIncludes(bare.stdout, 'Logged in as "Ann Lee"\n');
  assertMatch(
    bare.stdout,
    /^1 online:\n {2}Ann Lee +127\.0\.0\.1 +UDP \d+ +TCP 5001 +online \d+ s$/m,
  );

  // From another directory the default file is not there; --identity points at it.
  const elsewhere = w.dir.join("elsewhere");
  await Deno.mkdir(elsewhere);
  const missing = await runClient({ args: w.args(), stdin: "login\n", cwd: elsewhere });
  assertExit(missing, 1);
  assertOneErrorLine(missing, /no single saved identity for .*; use login NAME/i);
  const flagged = await runClient({
    args: w.args("--identity", w.identityFile),
    stdin: "login\n",
    cwd: elsewhere,
  });
  assertExit(flagged, 0);
  assertStringIncludes(flagged.stdout, 'Logged in as "Ann Lee"');

  // With two identities for the server, bare login is ambiguous and login NAME picks one.
  const second = await runClient({ args: w.args(), stdin: "register Bo Chen\n", cwd });
  assertExit(second, 0);
  assertEquals((await readIdentities(w.identityFile)).map((i) => i.name).sort(), [
    "Ann Lee",
    "Bo Chen",
  ]);
  const ambiguous = await runClient({ args: w.args(), stdin: "login\n", cwd });
  assertExit(ambiguous, 1);
  assertOneErrorLine(ambiguous, /no single saved identity .*use login NAME/i);
  const picked = await runClient({ args: w.args(), stdin: "login bo chen\n", cwd });
  assertExit(picked, 0);
  assertStringIncludes(picked.stdout, 'Logged in as "Bo Chen"');

  const logins = server.lines.filter((line) =>
    /^"Ann Lee" logged in from 127\.0\.0\.1 /.test(line)
  );
  assertEquals(logins.length, 4, "register, login NAME, bare login, --identity");
  assertEquals(await server.stop(), 0);
});

Deno.test("password mode end to end: user add from stdin, env and file passwords, lockout and its end", async () => {
  const password = "correct horse battery";
  const wrongPassword = "not the password";
  // Both are checked to stay out of the logs.
  let added: Finished | undefined;
  await using w = await world(
    ["--auth", "password", "--max-attempts", "2", "--lockout", "2"],
    async (dataDir) => {
      added = await runProgram(SERVER_PATH, {
        args: ["user", "add", "alice", "--data-dir", dataDir],
        stdin: `${password}\n`,
      });
    },
  );
  const { server, cwd, dataDir } = w;
  assertExit(added!, 0);
  assertMatch(added!.stdout, /^Added user "alice" to /);
  const usersText = await Deno.readTextFile(`${dataDir}/users.json`);
  assert(!usersText.includes(password), "users.json holds a hash, not the password");
  if (Deno.build.os !== "windows") {
    assertEquals((await Deno.stat(`${dataDir}/users.json`)).mode! & 0o777, 0o600);
  }
  await server.waitForLine(
    /^Logins: password .*; 2 failed logins block an address for a name for 2 s$/,
  );

  const right = { SWITCHBOARD_PASSWORD: password };
  const fromEnv = await runClient({
    args: w.args(),
    stdin: "login alice\nstatus\nderegister\n",
    env: right,
    cwd,
  });
  assertExit(fromEnv, 1);
  assertMatch(fromEnv.stdout, /^Connected to server .*, password login\)$/m);
  assertStringIncludes(fromEnv.stdout, 'Logged in as "alice"\n');
  assertMatch(
    fromEnv.stdout,
    /\(TCP port \d+, password login\); name "alice", logged in as "alice";/,
  );
  assertOneErrorLine(fromEnv, /password accounts; only its operator can remove them/);

  const passwordFile = w.dir.join("password.txt");
  await Deno.writeTextFile(passwordFile, `${password}\n`);
  const fromFile = await runClient({
    args: w.args("--name", "alice", "--password-file", passwordFile),
    stdin: "login\n",
    cwd,
  });
  assertExit(fromFile, 0);
  assertStringIncludes(fromFile.stdout, 'Logged in as "alice"');

  const none = await runClient({ args: w.args(), stdin: "login alice\n", cwd });
  assertExit(none, 1);
  assertOneErrorLine(none, /no password: .*--password-file FILE or set SWITCHBOARD_PASSWORD/);

  const register = await runClient({ args: w.args(), stdin: "register bob\n", env: right, cwd });
  assertExit(register, 1);
  assertOneErrorLine(register, /password accounts; ask its operator to add you/);

  // Started beforehand and connected, so the attempts follow each other closely.
  const wrong = { SWITCHBOARD_PASSWORD: wrongPassword };
  const unknown = startClient(w.args(), { cwd, env: right });
  const wrongs = [1, 2, 3].map(() => startClient(w.args(), { cwd, env: wrong }));
  const during = startClient(w.args(), { cwd, env: right });
  const after = startClient(w.args(), { cwd, env: right });
  const clients = [unknown, ...wrongs, during, after];
  let addingBob: Promise<Finished> | undefined;
  try {
    await connected(clients);
    const startedAt = performance.now();
    const nobody = await answer(unknown, "login nobody");
    assert(performance.now() - startedAt < 2_000, "an unknown name fails at once");
    const oneLeft = "error: login failed: wrong name or password; 1 attempt left";
    assertEquals(
      nobody,
      { ok: false, line: oneLeft },
      "an unknown name looks like a wrong password",
    );
    // The second wrong password in a row blocks the name. A streak is forgotten --lockout
    // seconds after its latest failure, counted when the (slow) password check ends; on a
    // busy machine that can take long enough to start a new streak, hence a third client.
    const seen: string[] = [];
    let blockedAt: number | undefined;
    for (const client of wrongs) {
      const result = await answer(client, "login alice");
      seen.push(result.line);
      if (/is now blocked/.test(result.line)) {
        blockedAt = performance.now();
        break;
      }
    }
    assertEquals(seen[0], oneLeft);
    assertEquals(
      seen.at(-1),
      'error: login failed: wrong name or password; "alice" is now blocked for 2 s from your address',
    );
    if (blockedAt === undefined) throw new Error(`never blocked: ${seen.join(" | ")}`);
    const refused = await answer(during, "login alice");
    assert(!refused.ok, refused.line);
    assertMatch(
      refused.line,
      /^error: too many failed logins for "alice" from your address; try again in [12] s$/,
    );

    // Meanwhile the operator adds a user to the running server (checked below).
    addingBob = runProgram(SERVER_PATH, {
      args: ["user", "add", "bob", "--data-dir", dataDir],
      stdin: "bobs own password\n",
    });
    await delay(Math.max(0, blockedAt + 2_100 - performance.now()));
    const later = await answer(after, "login alice");
    assertEquals(later, { ok: true, line: 'Logged in as "alice"' });
    for (const client of [unknown, ...wrongs.slice(0, seen.length), during]) {
      assertEquals((await client.finished()).code, 1);
    }
    for (const unused of wrongs.slice(seen.length)) assertEquals((await unused.finished()).code, 0);
    assertExit(await after.finished(), 0);
  } finally {
    await Promise.all(clients.map((c) => c[Symbol.asyncDispose]()));
    await addingBob?.catch(() => {});
  }

  // A user added while the server runs can log in once the server has re-read the file.
  const serverLog = w.dir.join("logs", "server.log");
  assertExit(await addingBob!, 0);
  await pollUntil(
    async () => (await Deno.readTextFile(serverLog)).includes("Reloaded 2 users") || undefined,
    8_000,
    "the server to re-read users.json",
  );
  const bobLogin = await runClient({
    args: w.args(),
    stdin: "login bob\n",
    env: { SWITCHBOARD_PASSWORD: "bobs own password" },
    cwd,
  });
  assertExit(bobLogin, 0);
  assertStringIncludes(bobLogin.stdout, 'Logged in as "bob"');

  assertEquals(await server.stop(), 0);
  for (const log of ["server.log", "client.log"]) {
    const text = await Deno.readTextFile(w.dir.join("logs", log));
    assert(!text.includes(password) && !text.includes(wrongPassword), `a password in ${log}`);
  }
});

Deno.test("a second login as the same name takes over: the first is told, list shows the name once (seed-004 bug 2)", async () => {
  await using w = await world(["--lease", "1"]);
  const { server, cwd } = w;
  const reg = await runClient({ args: w.args(), stdin: "register Cy Young\n", cwd });
  assertExit(reg, 0);

  await using a = startClient(w.args("--json"), { cwd });
  await using b = startClient(w.args("--json"), { cwd });
  await connected([a, b]);
  const loginA = await jsonAnswer(a, "login Cy Young");
  assertEquals([loginA.ok, loginA.message, loginA.replaced], [
    true,
    'Logged in as "Cy Young"',
    false,
  ]);
  const portB = await udpPortOf(b);
  const loginB = await jsonAnswer(b, "login Cy Young");
  assertEquals(
    [loginB.ok, loginB.message, loginB.replaced],
    [true, 'Logged in as "Cy Young" (your older session elsewhere was ended)', true],
  );
  const ended = JSON.parse(await a.waitForLine(/^\{"event":"session_ended"/));
  assertEquals(ended.reason, "replaced");
  assertEquals(
    ended.message,
    `"Cy Young" logged in elsewhere (127.0.0.1:${portB}); this session has ended`,
  );
  await server.waitForLine(
    /^"Cy Young" logged in from 127\.0\.0\.1 .*, replacing its older session$/,
  );

  const expected = { name: "Cy Young", ip: "127.0.0.1", udpPort: portB, tcpPort: 5001 };
  const listed = await jsonAnswer(b, "list");
  assert(listed.ok, JSON.stringify(listed));
  assertEquals((listed.clients as OnlineClient[]).map(withoutTime), [expected]);
  assertEquals((await jsonAnswer(a, "status")).loggedIn, false);

  // Over a lease and more, the first client does not fight back, and the newer one keeps going.
  await delay(1_500);
  assertEquals(await listNames(b), ["Cy Young"]);
  assertEquals(
    withoutTime((await jsonAnswer(b, "lookup Cy Young")).client as OnlineClient),
    expected,
  );
  const stale = await jsonAnswer(a, "list");
  assertEquals([stale.ok, stale.code], [false, "not_logged_in"]);
  assertEquals(stale.error, "Not logged in; use register or login first");
  assertEquals(
    server.lines.filter((line) => line.startsWith('"Cy Young" logged in from')).length,
    3,
    "register, A, B: nobody logged in again by itself",
  );
  assertExit(await b.finished(), 0);
  assertEquals(await server.stop(), 0);
});

Deno.test("a client killed with SIGKILL leaves the list within lease + 1 s and watchers see it leave (seed-004 bug 1)", async () => {
  await using w = await world(["--lease", "2"]);
  const { server, cwd } = w;
  await using watcher = startClient(w.args("--json", "--name", "Wendy Watch"), { cwd });
  await using victim = startClient(w.args("--name", "Vic Tim"), { cwd });
  await connected([watcher, victim]);
  assert((await jsonAnswer(watcher, "register")).ok);
  assert((await jsonAnswer(watcher, "watch")).ok);
  assertEquals(await answer(victim, "register"), {
    ok: true,
    line: 'Registered and logged in as "Vic Tim"',
  });
  const joined = JSON.parse(await watcher.waitForLine(/^\{"event":"joined"/));
  assertEquals(joined.client.name, "Vic Tim");
  assertEquals((await listNames(watcher)).sort(), ["Vic Tim", "Wendy Watch"]);

  const killedAt = performance.now();
  const leftSeen = watcher.waitForLine(/^\{"event":"left"/, 6_000).then((line) => ({
    line,
    at: performance.now(),
  }));
  assertEquals((await victim.signal("SIGKILL")).signal, "SIGKILL");
  const gone = await pollUntil(
    async () => (await listNames(watcher)).includes("Vic Tim") ? undefined : performance.now(),
    6_000,
    "Vic Tim to leave the list",
  );
  const left = await leftSeen;
  assertEquals(JSON.parse(left.line).client.name, "Vic Tim");
  assertEquals(JSON.parse(left.line).message, '"Vic Tim" went offline');
  assert(gone - killedAt <= 3_000, `left the list after ${Math.round(gone - killedAt)} ms`);
  assert(
    left.at - killedAt <= 3_000,
    `the leave was seen after ${Math.round(left.at - killedAt)} ms`,
  );
  await server.waitForLine(/^"Vic Tim" went offline \(its lease ran out without a heartbeat\)$/);
  assertEquals(
    await listNames(watcher),
    ["Wendy Watch"],
    "the watcher's heartbeats keep it online",
  );
  assertExit(await watcher.finished(), 0);
  assertEquals(await server.stop(), 0);
});

Deno.test("login of an unknown name fails at once with the same message as a wrong key (seed-004 bug 3)", async () => {
  await using w = await world();
  const { server, cwd } = w;
  const reg = await runClient({ args: w.args(), stdin: "register Real Name\n", cwd });
  assertExit(reg, 0);
  // A forged identity file: the real name with a wrong key, and a name nobody registered.
  const [real] = await readIdentities(w.identityFile);
  const forged = w.dir.join("forged.json");
  await Deno.writeTextFile(
    forged,
    JSON.stringify({
      version: 1,
      identities: [
        { ...real, key: "00".repeat(16) },
        { ...real, name: "Ghost Name", key: "11".repeat(16) },
      ],
    }),
  );
  await using ghost = startClient(w.args("--identity", forged), { cwd });
  await using wrongKey = startClient(w.args("--identity", forged), { cwd });
  await connected([ghost, wrongKey]);
  const startedAt = performance.now();
  const unknown = await answer(ghost, "login Ghost Name", 2_000);
  const took = performance.now() - startedAt;
  assert(took < 2_000, `took ${Math.round(took)} ms`);
  const exited = await ghost.finished(2_000);
  assertEquals(exited.code, 1, "the client does not hang after the failure");
  const wrong = await answer(wrongKey, "login Real Name");
  assertExit(await wrongKey.finished(), 1);
  assertEquals(unknown, {
    ok: false,
    line: "error: login failed: wrong name or identity key; 2 attempts left",
  });
  assertEquals(wrong, unknown, "the same words: no hint which names exist");
  assertEquals(
    server.lines.filter((l) => /^Refused login request \d+ .*: Login failed: wrong name/.test(l))
      .length,
    2,
  );
  // The real identity still works after one failure.
  const ok = await runClient({ args: w.args(), stdin: "login Real Name\n", cwd });
  assertExit(ok, 0);
  assertEquals(await server.stop(), 0);
});

Deno.test("lookup finds an online name, in any case, and says an offline or unknown one is not online", async () => {
  await using w = await world();
  const { server, cwd } = w;
  await using ann = startClient(w.args("--json", "--name", "Ann Online"), { cwd });
  await connected([ann]);
  assert((await jsonAnswer(ann, "register")).ok);
  const annPort = await udpPortOf(ann);
  const bo = await runClient({ args: w.args(), stdin: "register Bo Offline\nexit\n", cwd });
  assertExit(bo, 0);
  await server.waitForLine(/^"Bo Offline" went offline \(logged out\)$/);

  const look = await runClient({
    args: w.args(),
    stdin: "register Cee Looker\nlookup Ann Online\nlookup ann ONLINE\nlookup Bo Offline\nstatus\n",
    cwd,
  });
  assertExit(look, 1);
  const found = look.stdout.split("\n").filter((line) => line.includes(" is online at "));
  assertEquals(found.length, 2, describeRun(look));
  for (const line of found) {
    assertMatch(
      line,
      new RegExp(
        `^"Ann Online" is online at 127\\.0\\.0\\.1:${annPort} \\(TCP port 5001\\), for \\d+ s$`,
      ),
    );
  }
  assertOneErrorLine(look, /^error: "Bo Offline" is not online$/);
  assert(!look.stdout.includes("Server "), "status did not run after the failure");

  const never = await runClient({
    args: w.args("--json"),
    stdin: "register Dee\nlookup Never Seen\n",
    cwd,
  });
  assertExit(never, 1);
  const last = JSON.parse(never.stdout.trim().split("\n").at(-1)!);
  assertEquals([last.command, last.ok, last.code, last.error], [
    "lookup",
    false,
    "not_online",
    '"Never Seen" is not online',
  ]);
  assertExit(await ann.finished(), 0);
  assertEquals(await server.stop(), 0);
});

Deno.test("list shows 40 clients that registered at the same moment, each once, over several pages", async () => {
  // 41 new names (40 and the observer) from one address in a moment: over the default
  // --register-rate, and over 40 unless a token refilled meanwhile (1.5 s at 40 a minute).
  await using w = await world(["--log-level", "debug", "--register-rate", "41"]);
  const { server, cwd } = w;
  const names = Array.from({ length: 40 }, (_, i) => `Node ${String(i + 1).padStart(2, "0")}`);
  // A generous --timeout: 40 processes starting at once on a small, busy machine are slow, and
  // every registration waits for an fsync'd registry write; this test is about correctness.
  const flags = (
    name: string,
  ) => [
    "--server",
    server.address,
    "--log-dir",
    w.dir.join("logs"),
    "--timeout",
    "20",
    "--name",
    name,
  ];
  const clients = names.map((name) => startClient(flags(name), { cwd }));
  try {
    await Promise.all(clients.map((client) => client.write("register\n")));
    await Promise.all(
      clients.map(async (client, i) => {
        try {
          await client.waitForLine(
            new RegExp(`^Registered and logged in as "${names[i]}"$`),
            30_000,
          );
        } catch (error) {
          await client.finished(1_000).catch(() => {});
          throw new Error(`${(error as Error).message}--- stderr ---\n${client.stderr.text}`);
        }
      }),
    );
    await using observer = startClient(w.args("--json", "--name", "Observer"), { cwd });
    await connected([observer]);
    assert((await jsonAnswer(observer, "register")).ok);
    const observerPort = await udpPortOf(observer);
    const listed = await listNames(observer);
    assertEquals(listed.length, 41, listed.join(", "));
    assertEquals([...listed].sort(), [...names, "Observer"].sort());
    // Every identity was saved: concurrent writers of one identity file lost none.
    assertEquals((await readIdentities(w.identityFile)).length, 41);
    assertEquals(
      Object.keys(JSON.parse(await Deno.readTextFile(`${w.dataDir}/registrations.json`))).length,
      41,
    );

    // They all leave (exit logs out); the list follows.
    const results = await Promise.all(clients.map((client) => client.finished(15_000)));
    for (const result of results) assertExit(result, 0);
    assertEquals(await listNames(observer), ["Observer"]);
    assertExit(await observer.finished(), 0);
    assertEquals(await server.stop(), 0);
    // 41 entries do not fit one 1200-byte datagram: the first list took two pages or more.
    const log = await Deno.readTextFile(w.dir.join("logs", "server.log"));
    const pages = log.split("\n").filter((line) =>
      new RegExp(`Received "?list"? request \\d+ from udp 127\\.0\\.0\\.1:${observerPort}$`).test(
        line,
      )
    );
    assert(pages.length >= 3, `${pages.length} list requests for two lists`);
  } finally {
    await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
  }
});

Deno.test("after a server restart on the same ports, clients are told, log in again by themselves and watchers see them", async () => {
  await using w = await world(["--lease", "1"]);
  const { cwd } = w;
  await using watcher = startClient(w.args("--json", "--name", "Wanda"), { cwd });
  await using rex = startClient(w.args("--name", "Rex Restart"), { cwd });
  await connected([watcher, rex]);
  assert((await jsonAnswer(watcher, "register")).ok);
  assert((await jsonAnswer(watcher, "watch")).ok);
  assertEquals((await answer(rex, "register")).line, 'Registered and logged in as "Rex Restart"');
  await watcher.waitForLine(/^\{"event":"joined".*"Rex Restart"/);

  const ports = { udp: w.server.udpPort, tcp: w.server.tcpPort };
  assertEquals(await w.server.stop(), 0);
  await rex.waitForLine(/^The server is shutting down$/);
  const ended = JSON.parse(await watcher.waitForLine(/^\{"event":"session_ended"/));
  assertEquals(ended.reason, "server_shutdown");

  await using again = await startServer({
    dataDir: w.dataDir,
    logDir: w.dir.join("logs"),
    extraArgs: ["--lease", "1"],
    ports,
  });
  await again.waitForLine(/^Registry: 2 registered, in /);
  // Within a few heartbeats (lease/3 apart, with retransmissions) both are back.
  await rex.waitForLine(
    /^The server had lost your session; logged in again as "Rex Restart"$/,
    8_000,
  );
  await watcher.waitForLine(/^\{"event":"logged_in_again"/, 8_000);
  await pollUntil(
    async () => (await listNames(watcher)).length === 2 || undefined,
    5_000,
    "both online again",
  );
  assertEquals((await listNames(watcher)).sort(), ["Rex Restart", "Wanda"]);
  // The watch survived: Rex leaving is news again.
  const from = watcher.stdout.lines.length;
  assertExit(await rex.finished(), 0);
  const left = JSON.parse(await watcher.waitForLine(/^\{"event":"left"/, 5_000, from));
  assertEquals(left.client.name, "Rex Restart");
  assertExit(await watcher.finished(), 0);
  assertEquals(await again.stop(), 0);
});
