import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { join, toFileUrl } from "@std/path";
import { USER_HELP, userCommand, type UserCommandIo } from "../lib/cli/user_command.ts";
import { loadUsers } from "../lib/io/users_file.ts";
import { verifyPassword } from "../lib/server/password_hash.ts";
import { CONFIG_PATH, runProgram, SERVER_PATH } from "./_processes.ts";

const NOW = new Date("2025-01-02T03:04:05.000Z");
const LATER = new Date("2025-02-03T04:05:06.000Z");

interface Run {
  code: number;
  stdout: string[];
  stderr: string[];
}

/** Runs userCommand in-process with piped stdin text (or a fake terminal) and captured output. */
async function run(args: string[], io: UserCommandIo = {}): Promise<Run> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = await userCommand(args, {
    stdin: "",
    now: () => NOW,
    iterations: 1000,
    ...io,
    stdout: (line) => stdout.push(line),
    stderr: (line) => stderr.push(line),
  });
  return { code, stdout, stderr };
}

/** A fake terminal that answers the prompts in turn and records them. */
function terminal(...answers: (string | null)[]): UserCommandIo & { prompts: string[] } {
  const prompts: string[] = [];
  return {
    prompts,
    isTerminal: true,
    stdin: undefined,
    promptSecret: (message) => {
      prompts.push(message);
      if (answers.length === 0) throw new Error(`unexpected prompt ${message}`);
      return answers.shift()!;
    },
  };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_user_cmd_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function assertOneErrorLine(result: Run, code: number, includes: string): void {
  assertEquals(result.code, code, result.stderr.join("\n"));
  assertEquals(result.stdout, []);
  assertEquals(result.stderr.length, 1, result.stderr.join("\n"));
  assertMatch(result.stderr[0], /^error: [^\n]+$/);
  assertStringIncludes(result.stderr[0], includes);
}

// --- add ---------------------------------------------------------------------

Deno.test("userCommand() add reads one line of piped stdin and writes the users file", async () => {
  await withTempDir(async (dir) => {
    const result = await run(["add", "Alice", "--data-dir", dir], {
      stdin: "correct horse\nignored second line\n",
    });
    const path = join(dir, "users.json");
    assertEquals(result, { code: 0, stdout: [`Added user "Alice" to ${path}`], stderr: [] });
    const users = await loadUsers(path);
    const alice = users.get("alice")!;
    assertEquals(alice.name, "Alice");
    assertEquals(alice.createdAt, NOW.toISOString());
    assert(alice.passwordHash.startsWith("pbkdf2-sha256$1000$"));
    assert(await verifyPassword(alice.passwordHash, "correct horse"));
    assertEquals(await verifyPassword(alice.passwordHash, "ignored second line"), false);
    if (Deno.build.os !== "windows") {
      assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
    }
  });
});

Deno.test("userCommand() add reads a byte stream, without CR and without a final newline", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "u.json");
    const stream = (text: string) => ReadableStream.from([new TextEncoder().encode(text)]);
    assertEquals(
      (await run(["add", "a1", "--users", path], { stdin: stream("pass word 1\r\n") })).code,
      0,
    );
    assertEquals(
      (await run(["add", "a2", "--users", path], { stdin: stream("pass word 2") })).code,
      0,
    );
    const chunks = ReadableStream.from(
      ["pass", " wo", "rd 3\nrest"].map((s) => new TextEncoder().encode(s)),
    );
    assertEquals((await run(["add", "a3", "--users", path], { stdin: chunks })).code, 0);
    const users = await loadUsers(path);
    assert(await verifyPassword(users.get("a1")!.passwordHash, "pass word 1"));
    assert(await verifyPassword(users.get("a2")!.passwordHash, "pass word 2"));
    assert(await verifyPassword(users.get("a3")!.passwordHash, "pass word 3"));
  });
});

Deno.test("userCommand() add refuses stdin that is not UTF-8 or too long", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    const bad = ReadableStream.from([
      new Uint8Array([0x70, 0x61, 0xff, 0x73, 0x73, 0x77, 0x6f, 0x72, 0x64]),
    ]);
    assertOneErrorLine(await run(["add", "bob", "--users", path], { stdin: bad }), 1, "UTF-8");
    const long = ReadableStream.from([new Uint8Array(5000).fill(0x61)]);
    assertOneErrorLine(await run(["add", "bob", "--users", path], { stdin: long }), 1, "longer");
    assertEquals((await loadUsers(path)).size, 0);
  });
});

Deno.test("userCommand() add on a terminal asks twice and requires a match", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    const io = terminal("s3cret passphrase", "s3cret passphrase");
    const result = await run(["add", "Bob Smith", "--users", path], io);
    assertEquals(result, { code: 0, stdout: [`Added user "Bob Smith" to ${path}`], stderr: [] });
    assertEquals(io.prompts, ['Password for "Bob Smith":', "Repeat the password:"]);
    assert(
      await verifyPassword(
        (await loadUsers(path)).get("bob smith")!.passwordHash,
        "s3cret passphrase",
      ),
    );
  });
});

Deno.test("userCommand() add on a terminal changes nothing when the passwords differ", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    const io = terminal("s3cret passphrase", "s3cret passphrasf");
    assertOneErrorLine(await run(["add", "bob", "--users", path], io), 1, "do not match");
    await assertMissing(path);
  });
});

Deno.test("userCommand() add on a terminal refuses a short password before asking again", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    const io = terminal("short");
    assertOneErrorLine(
      await run(["add", "bob", "--users", path], io),
      1,
      "password is 5 characters long; the minimum is 8",
    );
    assertEquals(io.prompts.length, 1);
    await assertMissing(path);
  });
});

Deno.test("userCommand() add refuses bad passwords from stdin, never echoing them", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    for (
      const [stdin, message] of [
        ["hunter2\n", "minimum is 8"],
        ["\n", "0 characters"],
        ["pass\tword99\n", "control character"],
        ["x".repeat(300) + "\n", "the limit is 256"],
        ["", "no password on standard input"],
      ]
    ) {
      const result = await run(["add", "bob", "--users", path], { stdin });
      assertOneErrorLine(result, 1, message);
      if (stdin.trim() !== "") assert(!result.stderr[0].includes(stdin.trim()));
    }
    await assertMissing(path);
  });
});

Deno.test("userCommand() add refuses a name that exists in any case, unless --replace", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    assertEquals(
      (await run(["add", "Alice", "--users", path], { stdin: "first password\n" })).code,
      0,
    );
    const before = await Deno.readTextFile(path);
    assertOneErrorLine(
      await run(["add", "ALICE", "--users", path], { stdin: "second password\n" }),
      1,
      `user "Alice" already exists in ${path}; pass --replace to change the password`,
    );
    assertEquals(await Deno.readTextFile(path), before);
    // with a terminal, it fails before asking
    const io = terminal();
    assertEquals((await run(["add", "alice", "--users", path], io)).code, 1);
    assertEquals(io.prompts, []);
  });
});

Deno.test("userCommand() add --replace changes the password and keeps name and creation time", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    await run(["add", "Alice", "--users", path], { stdin: "first password\n" });
    await run(["add", "bob", "--users", path], { stdin: "bobs password\n" });
    const result = await run(["add", "ALICE", "--replace", "--users", path], {
      stdin: "second password\n",
      now: () => LATER,
    });
    assertEquals(result, {
      code: 0,
      stdout: [`Changed the password of user "Alice" in ${path}`],
      stderr: [],
    });
    const users = await loadUsers(path);
    assertEquals(users.records().map((u) => u.name), ["Alice", "bob"]);
    const alice = users.get("alice")!;
    assertEquals(alice.createdAt, NOW.toISOString());
    assert(await verifyPassword(alice.passwordHash, "second password"));
    assertEquals(await verifyPassword(alice.passwordHash, "first password"), false);
  });
});

Deno.test("userCommand() add --replace adds a user who does not exist", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    const result = await run(["add", "--replace", "carol", "--users", path], {
      stdin: "carols password\n",
    });
    assertEquals(result.stdout, [`Added user "carol" to ${path}`]);
    assert((await loadUsers(path)).has("carol"));
  });
});

Deno.test("userCommand() add keeps names that look like numbers or flags", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    assertEquals((await run(["add", "007", "--users", path], { stdin: "password 007\n" })).code, 0);
    assertEquals(
      (await run(["add", "--users", path, "--", "-dash"], { stdin: "password 008\n" })).code,
      0,
    );
    assertEquals((await loadUsers(path)).records().map((u) => u.name), ["007", "-dash"]);
  });
});

// --- remove and list -----------------------------------------------------------

Deno.test("userCommand() remove deletes a user ignoring case", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    await run(["add", "Alice", "--users", path], { stdin: "first password\n" });
    await run(["add", "bob", "--users", path], { stdin: "bobs password\n" });
    const result = await run(["remove", "ALICE", "--users", path]);
    assertEquals(result, { code: 0, stdout: [`Removed user "Alice" from ${path}`], stderr: [] });
    assertEquals((await loadUsers(path)).records().map((u) => u.name), ["bob"]);
  });
});

Deno.test("userCommand() remove of an unknown name fails with exit 1", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    assertOneErrorLine(
      await run(["remove", "nobody", "--users", path]),
      1,
      `no user "nobody" in ${path}`,
    );
    await assertMissing(path);
  });
});

Deno.test("userCommand() list prints names and creation times, never hashes", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    assertEquals(await run(["list", "--users", path]), {
      code: 0,
      stdout: [`No users in ${path}`],
      stderr: [],
    });
    await run(["add", "Alice Smith", "--users", path], { stdin: "first password\n" });
    await run(["add", "bob", "--users", path], { stdin: "bobs password\n", now: () => LATER });
    const result = await run(["list", "--users", path]);
    assertEquals(result, {
      code: 0,
      stdout: [
        `2 users in ${path}:`,
        "  Alice Smith  added 2025-01-02T03:04:05.000Z",
        "  bob          added 2025-02-03T04:05:06.000Z",
      ],
      stderr: [],
    });
    assert(!result.stdout.join("\n").includes("pbkdf2"));
  });
});

Deno.test("userCommand() uses <data-dir>/users.json unless --users is given", async () => {
  await withTempDir(async (dir) => {
    await run(["add", "alice", "--data-dir", dir], { stdin: "first password\n" });
    assert((await loadUsers(join(dir, "users.json"))).has("alice"));
    const other = join(dir, "other.json");
    await run(["add", "bob", "--data-dir", dir, "--users", other], { stdin: "bobs password\n" });
    assert((await loadUsers(other)).has("bob"));
    assertEquals((await loadUsers(join(dir, "users.json"))).has("bob"), false);
  });
});

Deno.test("userCommand() reports a broken users file in one line with exit 1", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "users.json");
    await Deno.writeTextFile(path, "{not json");
    for (const args of [["list"], ["remove", "bob"], ["add", "bob"]]) {
      assertOneErrorLine(
        await run([...args, "--users", path], { stdin: "bobs password\n" }),
        1,
        path,
      );
    }
    assertEquals(await Deno.readTextFile(path), "{not json");
  });
});

// --- usage -----------------------------------------------------------------------

Deno.test("userCommand() --help explains every command and flag", async () => {
  for (const args of [["--help"], ["-h"], ["add", "--help"], ["list", "-h"]]) {
    const result = await run(args);
    assertEquals(result, { code: 0, stdout: [USER_HELP], stderr: [] });
  }
  for (
    const word of [
      "add NAME",
      "remove NAME",
      "list",
      "--data-dir",
      "--users",
      "--replace",
      "./data",
    ]
  ) {
    assertStringIncludes(USER_HELP, word);
  }
  assertStringIncludes(USER_HELP, "A running server picks up the\nchange within a few seconds");
});

Deno.test("userCommand() rejects bad usage with exit 2 and one line", async (t) => {
  const cases: [string, string[], string][] = [
    ["no command", [], "missing command"],
    ["an unknown command", ["frobnicate"], 'unknown command "frobnicate"'],
    ["add without a name", ["add"], "user add needs a NAME"],
    ["remove without a name", ["remove"], "user remove needs a NAME"],
    ["an unknown flag", ["list", "--bogus"], "unknown flag --bogus"],
    ["an unknown short flag", ["list", "-x"], "unknown flag --x"],
    ["an extra argument", ["add", "Alice", "Smith"], 'unexpected argument "Smith"'],
    ["an argument to list", ["list", "all"], 'unexpected argument "all"'],
    ["--replace with remove", ["remove", "bob", "--replace"], "--replace only goes with user add"],
    ["--users without a value", ["list", "--users"], "--users needs a value"],
    ["--data-dir with an empty value", ["list", "--data-dir", ""], "--data-dir needs a value"],
    ["a bad name", ["add", "a/b"], 'name "a/b" may only hold'],
    ["a name too long", ["add", "x".repeat(33)], "33 characters long"],
    ["a name with a control character", ["add", "a\u001bb"], "a\\u001bb"],
  ];
  for (const [label, args, message] of cases) {
    await t.step(label, async () => {
      assertOneErrorLine(await run(args, terminal()), 2, message);
    });
  }
});

// --- as a process ------------------------------------------------------------------

Deno.test("userCommand() as a process: piped password, default ./data, list", async () => {
  await withTempDir(async (dir) => {
    const script = join(dir, "user_main.ts");
    const module = toFileUrl(join(import.meta.dirname!, "..", "lib", "cli", "user_command.ts"));
    await Deno.writeTextFile(
      script,
      `import { userCommand } from ${JSON.stringify(module.href)};\n` +
        "Deno.exit(await userCommand(Deno.args));\n",
    );
    const runProcess = async (args: string[], stdin: string) => {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-read",
          "--allow-write",
          "--allow-env",
          "--config",
          CONFIG_PATH,
          script,
          ...args,
        ],
        cwd: dir,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).spawn();
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(stdin));
      await writer.close();
      const output = await child.output();
      const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
      return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
    };

    const added = await runProcess(["add", "alice"], "correct horse\n");
    assertEquals(added, { code: 0, stdout: 'Added user "alice" to data/users.json\n', stderr: "" });
    const alice = (await loadUsers(join(dir, "data", "users.json"))).get("alice")!;
    assert(alice.passwordHash.startsWith("pbkdf2-sha256$600000$"));
    assert(await verifyPassword(alice.passwordHash, "correct horse"));

    const again = await runProcess(["add", "Alice"], "another password\n");
    assertEquals(again.code, 1);
    assertEquals(again.stdout, "");
    assertEquals(
      again.stderr,
      'error: user "alice" already exists in data/users.json; pass --replace to change the password\n',
    );

    const listed = await runProcess(["list"], "");
    assertEquals(listed.code, 0);
    assertMatch(
      listed.stdout,
      /^1 user in data\/users\.json:\n {2}alice {2}added \d{4}-\d\d-\d\dT[\d:.]+Z\n$/,
    );
  });
});

async function assertMissing(path: string): Promise<void> {
  try {
    await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  throw new Error(`${path} exists`);
}

Deno.test("server.ts runs the user command with the server's flags before or after it", async () => {
  await withTempDir(async (dir) => {
    const data = join(dir, "elsewhere");
    const before = await runProgram(SERVER_PATH, {
      args: ["--data-dir", data, "user", "add", "alice"],
      stdin: "correct horse\n",
    });
    assertEquals(before.code, 0, before.stderr);
    const after = await runProgram(SERVER_PATH, { args: ["user", "list", "--data-dir", data] });
    assertEquals(after.code, 0, after.stderr);
    assertStringIncludes(after.stdout, "alice");
    // A flag that is not the user command's is refused in one line.
    const wrong = await runProgram(SERVER_PATH, { args: ["--host", "user", "user", "list"] });
    assertEquals(wrong.code, 2);
    assertEquals(wrong.stderr, "error: unknown flag --host; see user --help\n");
  });
});

Deno.test("server.ts user reads --data-dir and --users from SWITCHBOARD_* and --config, a flag first", async () => {
  await withTempDir(async (dir) => {
    const fromEnv = join(dir, "env-data");
    const added = await runProgram(SERVER_PATH, {
      args: ["user", "add", "alice"],
      stdin: "correct horse\n",
      env: { SWITCHBOARD_DATA_DIR: fromEnv },
    });
    assertEquals(added.code, 0, added.stderr);
    assert((await loadUsers(join(fromEnv, "users.json"))).get("alice") !== undefined);

    // The server's config file configures the server too: its other settings are no error here.
    const usersFile = join(dir, "file-users.json");
    const config = join(dir, "server.toml");
    await Deno.writeTextFile(config, `udp-port = 3000\nusers = ${JSON.stringify(usersFile)}\n`);
    for (const args of [["--config", config, "user", "add", "bob"], ["user", "add", "carol"]]) {
      const result = await runProgram(SERVER_PATH, {
        args,
        stdin: "correct horse\n",
        env: { SWITCHBOARD_CONFIG: config },
      });
      assertEquals(result.code, 0, result.stderr);
    }
    assertEquals((await loadUsers(usersFile)).records().map((u) => u.name), ["bob", "carol"]);

    // A flag beats the environment, which beats the file.
    const env = { SWITCHBOARD_CONFIG: config, SWITCHBOARD_USERS: join(fromEnv, "users.json") };
    const byEnv = await runProgram(SERVER_PATH, { args: ["user", "list"], env });
    assertEquals(byEnv.code, 0, byEnv.stderr);
    assertMatch(byEnv.stdout, /^1 user in .*env-data\/users\.json:\n {2}alice /);
    const byFlag = await runProgram(SERVER_PATH, {
      args: ["user", "list", "--users", usersFile],
      env,
    });
    assertMatch(byFlag.stdout, /^2 users in .*file-users\.json:\n {2}bob .*\n {2}carol /);
  });
});
