/**
 * Flags from the environment (`SWITCHBOARD_<FLAG>`) and a TOML file
 * (`--config`), in the order flag > environment > file, for the server and
 * the client; errors name where a bad value came from.
 */
import { assertEquals, assertMatch, assertStringIncludes, assertThrows } from "@std/assert";
import { addSources, envName, parseWithSources } from "../lib/cli/flag_sources.ts";
import { UsageError } from "../lib/cli/usage_error.ts";
import { portFlag } from "../lib/cli/usage_error.ts";
import {
  CLIENT_PATH,
  CONFIG_PATH,
  runClient,
  runProgram,
  SERVER_PATH,
  tempDir,
} from "./_processes.ts";

const SPEC = { strings: ["udp-port", "host", "config"], booleans: ["json", "help"] };

function sources(env: Record<string, string>, files: Record<string, string> = {}) {
  return {
    env: (name: string) => env[name],
    readFile: (path: string) => {
      if (!(path in files)) throw new Error("No such file");
      return files[path];
    },
  };
}

Deno.test("envName() is SWITCHBOARD_ and the flag in upper snake case", () => {
  assertEquals(envName("max-connections-per-ip"), "SWITCHBOARD_MAX_CONNECTIONS_PER_IP");
});

Deno.test("addSources(): a flag beats the environment, which beats the file", () => {
  const files = { "s.toml": 'udp_port = 1\nhost = "file.example"\njson = true\n' };
  const all = addSources(["--udp-port", "3"], SPEC, sources({ SWITCHBOARD_HOST: "env" }, files));
  assertEquals(all.args, ["--host", "env", "--udp-port", "3"]); // no config file named
  const merged = addSources(
    ["--config", "s.toml", "--udp-port=3"],
    SPEC,
    sources({ SWITCHBOARD_HOST: "env.example", SWITCHBOARD_JSON: "false" }, files),
  );
  assertEquals(merged.args, ["--host", "env.example", "--json=false", "--udp-port=3"]);
  assertEquals(merged.sources.get("host"), "SWITCHBOARD_HOST");
  const fromFile = addSources([], SPEC, sources({ SWITCHBOARD_CONFIG: "s.toml" }, files));
  assertEquals(fromFile.args, ["--udp-port", "1", "--host", "file.example", "--json"]);
  assertEquals(fromFile.sources.get("udp-port"), "s.toml: udp-port");
});

Deno.test("parseWithSources() names the variable or file a bad value came from", () => {
  const parse = (args: string[]) => portFlag("--udp-port", args[args.indexOf("--udp-port") + 1]);
  assertEquals(parseWithSources([], SPEC, parse, sources({ SWITCHBOARD_UDP_PORT: "7" })), 7);
  assertThrows(
    () => parseWithSources([], SPEC, parse, sources({ SWITCHBOARD_UDP_PORT: "x" })),
    UsageError,
    'SWITCHBOARD_UDP_PORT: --udp-port must be a number from 0 to 65535, not "x"',
  );
  assertThrows(
    () =>
      parseWithSources(
        ["--config", "c.toml"],
        SPEC,
        parse,
        sources({}, { "c.toml": "udp-port = 70000" }),
      ),
    UsageError,
    'c.toml: udp-port: --udp-port must be a number from 0 to 65535, not "70000"',
  );
  // From the command line the message is as before.
  assertThrows(
    () => parseWithSources(["--udp-port", "x"], SPEC, parse, sources({})),
    UsageError,
    "--udp-port must",
  );
});

Deno.test("addSources() refuses a config file that cannot be read, is not TOML, or holds what is not a flag", () => {
  const files = {
    "bad.toml": "udp-port = ",
    "odd.toml": "colour = 1",
    "deep.toml": "[host]\na = 1",
    "b.toml": 'json = "yes"',
  };
  const cases: [string, string][] = [
    ["none.toml", "cannot read config file none.toml (--config): No such file"],
    ["bad.toml", "bad.toml: not valid TOML"],
    ["odd.toml", 'odd.toml: unknown setting "colour"; see --help'],
    ["deep.toml", "deep.toml: host must be a string or a number"],
    ["b.toml", "b.toml: json must be true or false"],
  ];
  for (const [file, message] of cases) {
    assertThrows(
      () => addSources(["--config", file], SPEC, sources({}, files)),
      UsageError,
      message,
    );
  }
  assertThrows(
    () => addSources([], SPEC, sources({ SWITCHBOARD_JSON: "1" })),
    UsageError,
    'SWITCHBOARD_JSON must be true or false, not "1"',
  );
  // --help works whatever the sources hold.
  assertEquals(addSources(["--help"], SPEC, sources({ SWITCHBOARD_CONFIG: "none.toml" })).args, [
    "--help",
  ]);
});

/** Starts the server with only `env` and `args` (no ports on the command line); returns its ports line. */
async function serverFrom(env: Record<string, string>, args: string[], cwd: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", CONFIG_PATH, SERVER_PATH, ...args],
    env,
    cwd,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("Server running")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  child.kill("SIGINT");
  await reader.cancel();
  const [status, stderr] = await Promise.all([child.status, new Response(child.stderr).text()]);
  await child.stdin.close();
  return { text, stderr, code: status.code };
}

Deno.test("server: configured only from the environment, or only from a file", async () => {
  await using dir = await tempDir();
  const fromEnv = await serverFrom(
    {
      SWITCHBOARD_HOST: "127.0.0.1",
      SWITCHBOARD_UDP_PORT: "0",
      SWITCHBOARD_TCP_PORT: "0",
      SWITCHBOARD_DATA_DIR: `${dir.path}/env-data`,
      SWITCHBOARD_LOG_DIR: `${dir.path}/logs`,
      SWITCHBOARD_LEASE: "42",
    },
    [],
    dir.path,
  );
  assertStringIncludes(fromEnv.text, `in ${dir.path}/env-data`, fromEnv.stderr);
  assertStringIncludes(fromEnv.text, "lease 42 s");
  await Deno.writeTextFile(
    `${dir.path}/server.toml`,
    [
      'host = "127.0.0.1"',
      "udp-port = 0",
      "tcp_port = 0",
      `data-dir = "${dir.path}/file-data"`,
      `log-dir = "${dir.path}/logs"`,
      "lease = 43",
      "max-attempts = 2",
    ].join("\n"),
  );
  const fromFile = await serverFrom({ SWITCHBOARD_MAX_ATTEMPTS: "4" }, [
    "--config",
    "server.toml",
    "--lease",
    "44",
  ], dir.path);
  assertStringIncludes(fromFile.text, `in ${dir.path}/file-data`, fromFile.stderr);
  // The flag beats the file; the environment beats the file.
  assertStringIncludes(fromFile.text, "lease 44 s; 4 failed logins");
});

Deno.test("server and client: a bad value from the environment names the variable; --help says so", async () => {
  const server = await runProgram(SERVER_PATH, { args: [], env: { SWITCHBOARD_UDP_PORT: "x" } });
  assertEquals(server.code, 2);
  assertEquals(
    server.stderr.trim(),
    'error: SWITCHBOARD_UDP_PORT: --udp-port must be a number from 0 to 65535, not "x"',
  );
  const client = await runClient({ args: [], env: { SWITCHBOARD_SERVER: "::1:3000" } });
  assertEquals(client.code, 2);
  assertEquals(
    client.stderr.trim(),
    'error: SWITCHBOARD_SERVER: --server must look like HOST:PORT, not "::1:3000"; an IPv6 address goes in brackets: [::1]:3000',
  );
  for (const path of [SERVER_PATH, CLIENT_PATH]) {
    const help = await runProgram(path, {
      args: ["--help"],
      env: { SWITCHBOARD_CONFIG: "/nonexistent" },
    });
    assertEquals(help.code, 0);
    assertStringIncludes(help.stdout, "SWITCHBOARD_<FLAG>");
    assertMatch(help.stdout, /beats the environment, which beats the file/);
  }
});

Deno.test("--allow-env is scoped to the variables the programs read, alike in deno.json and executables", async () => {
  const { PROGRAMS } = await import("../scripts/compile.ts");
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  for (const [task, program] of [["server", PROGRAMS[0]], ["client", PROGRAMS[1]]] as const) {
    const scoped = program.permissions.find((p: string) => p.startsWith("--allow-env="));
    assertStringIncludes(config.tasks[task], ` ${scoped} `);
    assertEquals(config.tasks[task].match(/--allow-env\b/g).length, 1);
  }
  // With only those permissions, a variable is read and named in the error.
  const run = new Deno.Command(Deno.execPath(), {
    args: ["run", "--config", CONFIG_PATH, ...PROGRAMS[0].permissions, SERVER_PATH],
    env: { SWITCHBOARD_TCP_PORT: "-3" },
    stdout: "null",
    stderr: "piped",
  });
  const result = await run.output();
  assertEquals(result.code, 2);
  assertMatch(new TextDecoder().decode(result.stderr), /^error: SWITCHBOARD_TCP_PORT: --tcp-port/);
});
