/**
 * Logs for machines: `--log-format json` gives one JSON object a line, and
 * `--log-stderr` sends the log to standard error; in both formats no
 * password, identity key or server key reaches the log, at the debug level.
 */
import { assert, assertEquals } from "@std/assert";
import { runClient, runProgram, SERVER_PATH, startServer, tempDir } from "./_processes.ts";

const PASSWORD = "tr0ub4dor&3-secret";

/** Every secret the run left on disk, as text: the password, the server's and the client's private keys. */
async function secrets(dataDir: string, clientDir: string): Promise<string[]> {
  const found = [PASSWORD];
  // The private keys: the server's, and the client's (its open-mode identity).
  for (const file of [`${dataDir}/server_identity.json`, `${clientDir}/client_key.json`]) {
    const text = await Deno.readTextFile(file).catch(() => "{}");
    const privateKey = JSON.parse(text).privateKey;
    if (typeof privateKey === "string") found.push(privateKey, privateKey.slice(0, 32));
  }
  return found.filter((s) => s.length >= 8);
}

for (const format of ["text", "json"] as const) {
  Deno.test(`no password or key reaches a ${format} log, to a file or to stderr`, async () => {
    await using dir = await tempDir();
    const dataDir = `${dir.path}/data`;
    const added = await runProgram(SERVER_PATH, {
      args: ["user", "add", "alice", "--data-dir", dataDir],
      stdin: `${PASSWORD}\n`,
    });
    assertEquals(added.code, 0, added.stderr);
    await using server = await startServer({
      dataDir,
      logDir: `${dir.path}/logs`,
      extraArgs: [
        "--auth",
        "password",
        "--log-level",
        "debug",
        "--log-format",
        format,
        "--log-stderr",
      ],
    });
    const clientArgs = (name: string) => [
      ...["--server", server.address, "--log-level", "debug", "--log-format", format],
      ...["--log-dir", `${dir.path}/logs`, "--data-dir", `${dir.path}/${name}`],
    ];
    const alice = await runClient({
      args: clientArgs("alice"),
      stdin: "login alice\nstatus\nlogout\n",
      env: { SWITCHBOARD_PASSWORD: PASSWORD },
      cwd: dir.path,
    });
    assertEquals(alice.code, 0, alice.stderr);
    // A wrong password is not logged either.
    const wrong = await runClient({
      args: clientArgs("bob"),
      stdin: "login alice\n",
      env: { SWITCHBOARD_PASSWORD: `${PASSWORD}-wrong` },
      cwd: dir.path,
    });
    assertEquals(wrong.code, 1);
    assertEquals(await server.stop(), 0);

    // The server logged to stderr, not to a file; the clients to client.log.
    assertEquals(await Deno.stat(`${dir.path}/logs/server.log`).catch(() => null), null);
    const serverLog = server.errorLines.join("\n");
    const clientLog = await Deno.readTextFile(`${dir.path}/logs/client.log`);
    assert(serverLog.includes("alice"), serverLog);
    assert(clientLog.includes("alice"), clientLog);
    if (format === "json") {
      for (const line of [...server.errorLines, ...clientLog.trimEnd().split("\n")]) {
        if (line === "") continue;
        const record = JSON.parse(line);
        assert(typeof record.message === "string" && typeof record.level === "string", line);
      }
    }
    const all = await secrets(dataDir, `${dir.path}/alice`);
    for (const secret of all) {
      assert(!serverLog.includes(secret), `${secret} in the server's log:\n${serverLog}`);
      assert(!clientLog.includes(secret), `${secret} in the client's log:\n${clientLog}`);
    }
    // (The wrong password contains the right one, so the loop above covers it too.)
    assert(serverLog.includes("DEBUG") || serverLog.includes('"DEBUG"'), "debug records kept");
  });
}

Deno.test("open mode: an identity's key never reaches the client's or the server's JSON log", async () => {
  await using dir = await tempDir();
  const dataDir = `${dir.path}/data`;
  await using server = await startServer({
    dataDir,
    logDir: `${dir.path}/logs`,
    extraArgs: ["--log-level", "debug", "--log-format", "json"],
  });
  const client = await runClient({
    args: [
      ...["--server", server.address, "--name", "Carol", "--log-level", "debug"],
      ...[
        "--log-format",
        "json",
        "--log-dir",
        `${dir.path}/logs`,
        "--data-dir",
        `${dir.path}/carol`,
      ],
    ],
    stdin: "register\nlogout\nlogin\nderegister\n",
    cwd: dir.path,
  });
  assertEquals(client.code, 0, client.stderr);
  assertEquals(await server.stop(), 0);
  const logs = (await Deno.readTextFile(`${dir.path}/logs/client.log`)) +
    (await Deno.readTextFile(`${dir.path}/logs/server.log`));
  const all = await secrets(dataDir, `${dir.path}/carol`);
  assert(all.length >= 5, `found the keys to look for: ${all}`);
  for (const secret of all) assert(!logs.includes(secret), `${secret} in:\n${logs}`);
});
