/**
 * Attacks on the real server process over loopback (which holds all of
 * 127.0.0.0/8, so an attacker can have an address of its own): a guesser
 * next door must not keep the real user out.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { loadRegistry } from "../lib/io/registry_file.ts";
import { EVICTION_GRACE_MS } from "../lib/server/connection_limits.ts";
import { loadServerIdentity } from "../lib/io/server_identity_file.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import type { Message } from "../lib/wire/messages.ts";
import { fromFileUrl } from "@std/path";
import { clientFloods } from "../scripts/_client_floods.ts";
import { TcpSquatters } from "../scripts/_tcp_squatters.ts";
import { TcpExchange, UdpRequester } from "../scripts/_wire_client.ts";
import { channelTo } from "./_sealed_wire.ts";
import {
  assertExit,
  assertOneErrorLine,
  CLIENT_PATH,
  delay,
  pollUntil,
  runClient,
  type RunningProgram,
  runProgram,
  SERVER_PATH,
  startClient,
  startWorld,
} from "./_processes.ts";

/** Writes a command to a client and waits for its first new stdout line or `error:` line. */
async function answer(client: RunningProgram, command: string): Promise<string> {
  const out = client.stdout.lines.length;
  const err = client.stderr.lines.length;
  await client.write(command + "\n");
  const seen = await pollUntil(
    () => {
      const error = client.stderr.lines.slice(err).find((line) => line.startsWith("error: "));
      return Promise.resolve(error ?? client.stdout.lines[out]);
    },
    10_000,
    `an answer to "${command}"`,
    20,
  ).catch((error) => {
    throw new Error(`${error.message}\n${client.stdout.text}\n${client.stderr.text}`);
  });
  return seen;
}

Deno.test("the real user on 127.0.0.1 logs in every time while 127.0.0.2 guesses the key", async () => {
  await using w = await startWorld("switchboard_abuse_", {
    serverFlags: ["--max-attempts", "3", "--lockout", "1"],
  });
  const owner = startClient(w.args(), { cwd: w.cwd });
  try {
    await owner.waitForLine(/^Connected to server/);
    assertMatch(await answer(owner, "register alice"), /^Registered and logged in as "alice"/);
    using guesser = new UdpRequester({
      hostname: "127.0.0.2",
      server: { hostname: "127.0.0.1", port: w.server.udpPort },
    });
    const codes: number[] = [];
    let guessing = true;
    const guesses = (async () => {
      while (guessing) {
        const reply: Message | undefined = await guesser.request({
          type: "login",
          name: "alice",
          secret: crypto.getRandomValues(new Uint8Array(16)),
          udpPort: 0,
          tcpPort: 40000,
        }, { timeoutMs: 2000 });
        if (reply?.type === "error") codes.push(reply.code);
        else throw new Error(`a guess got ${reply?.type ?? "no answer"}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const startedAt = performance.now();
    const logins: string[] = [];
    try {
      for (let i = 0; i < 10; i++) {
        await answer(owner, "logout");
        logins.push(await answer(owner, "login alice"));
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
    } finally {
      guessing = false;
      await guesses;
    }
    const seconds = (performance.now() - startedAt) / 1000;
    for (const line of logins) assert(line.startsWith('Logged in as "alice"'), line);
    // The guesser was refused and slowed: blocks of 1, 2, 4 s... allow 3 tries each.
    const tried = codes.filter((c) => c === ERROR_CODES.login_failed).length;
    const blocked = codes.filter((c) => c === ERROR_CODES.locked_out).length;
    assert(blocked > tried, `${tried} guesses checked, ${blocked} refused unchecked`);
    assert(tried <= 3 * Math.ceil(Math.log2(seconds + 1) + 1), `${tried} guesses in ${seconds} s`);
  } finally {
    await owner.write("quit\n").catch(() => {});
    await owner[Symbol.asyncDispose]();
  }
});

Deno.test("a registration storm from one address over UDP and TCP is cut off; a neighbour still registers", async () => {
  await using w = await startWorld("switchboard_abuse_");
  using storm = new UdpRequester({
    hostname: "127.0.0.1",
    server: { hostname: "127.0.0.1", port: w.server.udpPort },
  });
  const codes: string[] = [];
  for (let i = 0; i < 30; i++) {
    const reply = await storm.request({
      type: "register",
      name: `u${i}`,
      udpPort: 0,
      tcpPort: 40000,
    });
    codes.push(reply?.type === "error" ? `error ${reply.code}` : reply?.type ?? "none");
  }
  using tcp = await TcpExchange.connect("127.0.0.1", w.server.tcpPort, storm.tcpChannel());
  for (let i = 0; i < 3; i++) {
    await tcp.send({
      type: "register",
      reqId: i + 1,
      client: "00000000000000ee",
      name: `t${i}`,
      udpPort: 40001,
      tcpPort: 40000,
    });
    const reply = await tcp.next();
    codes.push(reply?.type === "error" ? `error ${reply.code}` : reply?.type ?? "none");
  }
  const registered = codes.filter((c) => c === "register_ok").length;
  // The default is 20 a minute in bursts of 20; the storm took a few seconds at most.
  assert(registered >= 20 && registered <= 22, codes.join(", "));
  // TCP is no way around it: the same budget.
  assert(codes.slice(30).every((c) => c !== "register_ok"), codes.join(", "));
  assert(
    codes.every((c) => c === "register_ok" || c === `error ${ERROR_CODES.busy}`),
    codes.join(),
  );
  using neighbour = new UdpRequester({
    hostname: "127.0.0.2",
    server: { hostname: "127.0.0.1", port: w.server.udpPort },
  });
  const reply = await neighbour.request({
    type: "register",
    name: "neighbour",
    udpPort: 0,
    tcpPort: 40000,
  });
  assertEquals(reply?.type, "register_ok");
  assertEquals((await loadRegistry(w.dataDir)).size, registered + 1);
});

Deno.test("--max-storage caps what all users store together, with a clear refusal", async () => {
  await using w = await startWorld("switchboard_abuse_", {
    serverFlags: ["--quota", "10K", "--max-storage", "15K"],
  });
  await Deno.writeFile(`${w.cwd}/six.bin`, crypto.getRandomValues(new Uint8Array(6000)));
  const run = (stdin: string) => runClient({ args: w.args(), stdin, cwd: w.cwd });
  for (const user of ["Ann", "Ben"]) {
    assertExit(await run(`register ${user}\nupload six.bin\n`), 0);
  }
  // 12,000 of 15,360 bytes used: Cy is within his quota, not within the server's room.
  const full = await run("register Cy\nupload six.bin\n");
  assertExit(full, 1);
  assertOneErrorLine(
    full,
    /^error: the server's storage is full: it holds 12000 of its 15360 bytes for everyone, too little room for "six\.bin" \(6000 bytes\); try again once files are deleted$/,
  );
  assertExit(await run("login Ann\ndelete six.bin\n"), 0);
  assertExit(await run("login Cy\nupload six.bin\n"), 0);
});

Deno.test("TCP requests without a session spend the address's --rate-limit budget, and a refusal pauses the connection", async () => {
  await using w = await startWorld("switchboard_abuse_", { serverFlags: ["--rate-limit", "1"] });
  // The key from the server's file: a hello over UDP would spend the budget measured here.
  const { keyPair } = await loadServerIdentity(w.dataDir);
  using tcp = await TcpExchange.connect(
    "127.0.0.1",
    w.server.tcpPort,
    channelTo(keyPair.publicKey),
  );
  const started = performance.now();
  const replies: string[] = [];
  for (let reqId = 1; reqId <= 4; reqId++) {
    await tcp.send({ type: "hello", reqId, client: "00000000000000ef" });
    const reply = await tcp.next();
    replies.push(reply?.type === "error" ? `${reply.code} ${reply.message}` : reply?.type ?? "");
  }
  // A burst of 2, then busy; the next is read a second later, when a token has come back.
  assertEquals(replies, [
    "hello_ok",
    "hello_ok",
    `${ERROR_CODES.busy} Too many requests without a session from your address; try again in a moment`,
    "hello_ok",
  ]);
  assert(performance.now() - started >= 990, "the refused connection was read again at once");
});

Deno.test("--expire-after removes an identity not seen for that long, with its files, and logs it; one online stays", async () => {
  await using w = await startWorld("switchboard_abuse_", { serverFlags: ["--expire-after", "2s"] });
  await w.server.waitForLine(/^Server running/);
  await Deno.writeFile(`${w.cwd}/six.bin`, crypto.getRandomValues(new Uint8Array(6000)));
  const online = startClient(w.args(), { cwd: w.cwd });
  try {
    await online.waitForLine(/^Connected to server/);
    assertMatch(await answer(online, "register alive"), /^Registered and logged in as "alive"/);
    const ghost = await runClient({
      args: w.args(),
      stdin: "register ghost\nupload six.bin\n",
      cwd: w.cwd,
    });
    assertExit(ghost, 0);
    const gone = performance.now();
    await w.server.waitForLine(
      /^Expired "ghost": not seen since \S+; removed with 1 stored file$/,
      10_000,
    );
    // Not before 2 s, and within the sweep period (a second) after.
    const took = performance.now() - gone;
    assert(took >= 1500 && took < 6000, `${took} ms`);
    // The registry write follows the log line.
    await pollUntil(
      async () => (await loadRegistry(w.dataDir)).get("ghost") === undefined || undefined,
      5000,
      "ghost gone from the registry files",
    );
    assertEquals((await loadRegistry(w.dataDir)).records().map((r) => r.name), ["alive"]);
    const files = [];
    for await (const entry of Deno.readDir(`${w.dataDir}/files`)) files.push(entry.name);
    assertEquals(files, [], "the expired identity's files are gone");
    // The one online is still there and its name still taken (for someone else's key).
    assertMatch(await answer(online, "status"), /logged in as "alive"/);
    const taken = await runClient({
      args: w.args("--data-dir", `${w.cwd}/someone-else`),
      stdin: "register alive\n",
      cwd: w.cwd,
    });
    assertOneErrorLine(taken, /name is taken/);
  } finally {
    await online.write("quit\n").catch(() => {});
    await online[Symbol.asyncDispose]();
  }
});

Deno.test("server refuses bad --expire-after, --register-rate and --max-storage with exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [["--expire-after", "soon"], /--expire-after must be a duration such as 90d, 12h, 30m or 45s/],
    [["--expire-after", "0.5"], /--expire-after must be a duration .*not "0\.5"/],
    [["--register-rate", "1.5"], /--register-rate must be a whole number from 0 to 1000000/],
    [["--max-storage", "lots"], /--max-storage must be a size such as/],
  ];
  for (const [args, pattern] of cases) {
    const result = await runProgram(SERVER_PATH, { args: [...args, "--udp-port", "0"] });
    assertExit(result, 2);
    assertOneErrorLine(result, pattern);
  }
  const help = await runProgram(SERVER_PATH, { args: ["--help"] });
  for (const flag of ["--expire-after", "--register-rate", "--max-storage"]) {
    assert(help.stdout.includes(flag), flag);
  }
});

Deno.test("32 connections that send a hello every 20 s no longer keep a client on their address from uploading", async () => {
  await using w = await startWorld("switchboard_abuse_");
  await Deno.writeFile(`${w.cwd}/six.bin`, crypto.getRandomValues(new Uint8Array(6000)));
  await using squatters = await TcpSquatters.start({
    hostname: "127.0.0.1",
    port: w.server.tcpPort,
    serverKey: (await loadServerIdentity(w.dataDir)).keyPair.publicKey,
    sources: ["127.0.0.1"],
    perAddress: 32,
  });
  // Squatters older than the grace time give way; younger ones cannot push a newcomer out.
  await delay(EVICTION_GRACE_MS + 100);
  const result = await runClient({
    args: w.args(),
    stdin: "register Ann\nupload six.bin\nfiles\n",
    cwd: w.cwd,
  });
  assertExit(result, 0);
  assertMatch(result.stdout, /six\.bin/);
  // The oldest squatter gave way (and came back): the address keeps its cap.
  assert(squatters.reopened >= 1, `reopened ${squatters.reopened}`);
  assertEquals(squatters.open, 32);
});

Deno.test("the TCP cap held by idle connections from 16 addresses does not stop a logged-in user's upload", async () => {
  await using w = await startWorld("switchboard_abuse_", {
    serverFlags: ["--max-connections", "64"],
  });
  await Deno.writeFile(`${w.cwd}/six.bin`, crypto.getRandomValues(new Uint8Array(6000)));
  const owner = startClient(w.args(), { cwd: w.cwd });
  try {
    await owner.waitForLine(/^Connected to server/);
    assertMatch(await answer(owner, "register alice"), /^Registered and logged in as "alice"/);
    await using squatters = await TcpSquatters.start({
      hostname: "127.0.0.1",
      port: w.server.tcpPort,
      serverKey: (await loadServerIdentity(w.dataDir)).keyPair.publicKey,
      sources: Array.from({ length: 16 }, (_, i) => `127.0.0.${2 + i}`),
      perAddress: 4,
    });
    assertEquals(squatters.open, 64);
    await delay(EVICTION_GRACE_MS + 100);
    assertMatch(await answer(owner, "upload six.bin"), /six\.bin/);
    assertMatch(await answer(owner, "files"), /^1 file, 6000 of/);
    assert(squatters.reopened >= 1, `reopened ${squatters.reopened}`);
  } finally {
    await owner.write("quit\n").catch(() => {});
    await owner[Symbol.asyncDispose]();
  }
});

Deno.test("a client under 2,000 offers of 1 TB and a stranger's connect flood stays under 160 MiB and lets its real peer in", async () => {
  await using w = await startWorld("switchboard_abuse_");
  const figures = await clientFloods({
    checkout: fromFileUrl(new URL("../", import.meta.url)),
    serverPort: w.server.udpPort,
  });
  // Before (bb3c84a): 1,849 to 1,897 partial files, a peak of 196 to 232 MiB.
  assertEquals(figures.partialFiles, 0, JSON.stringify(figures));
  assert(figures.strangerConnects > 10_000, JSON.stringify(figures));
  assert(figures.connectMs < 2000, JSON.stringify(figures));
  assert(figures.peakRssMiB < 160, JSON.stringify(figures));
});

Deno.test("client refuses bad --max-receive and --keep-partial with exit 2", async () => {
  for (
    const [args, pattern] of [
      [["--max-receive", "lots"], /^error: --max-receive must be a size such as/],
      [["--keep-partial", "off"], /^error: --keep-partial must be a duration such as 1d or 12h/],
      [["--keep-partial", "2x"], /^error: --keep-partial must be a duration such as 90d/],
    ] as const
  ) {
    const result = await runProgram(CLIENT_PATH, { args: [...args] });
    assertExit(result, 2);
    assertOneErrorLine(result, pattern);
  }
});
