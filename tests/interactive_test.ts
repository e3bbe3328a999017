/**
 * The client on a real terminal: `script` (util-linux) gives it a
 * pseudo-terminal, so it asks its questions and shows its prompt as it does
 * for a person, and the test types the answers.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import {
  CLIENT_PATH,
  CONFIG_PATH,
  runClient,
  runProgram,
  SERVER_PATH,
  startClient,
  startServer,
  startWorld,
  tempDir,
  withTimeout,
} from "./_processes.ts";

const HAS_SCRIPT = new Deno.Command("sh", { args: ["-c", "command -v script"], stdout: "null" })
  .outputSync().success;

function quote(text: string): string {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/** A client process on a pseudo-terminal, with everything it printed. */
class TerminalClient {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #text = "";
  #reading: Promise<void>;

  /**
   * `term`: TERM for the client; "dumb" (the default) keeps the terminal in
   * line mode. `then`: shell commands run on the terminal after the client.
   */
  constructor(args: string[], cwd: string, term = "dumb", then = "") {
    const command = [Deno.execPath(), "run", "-A", "--config", CONFIG_PATH, CLIENT_PATH, ...args]
      .map(quote).join(" ") + then;
    this.#child = new Deno.Command("script", {
      args: ["-q", "-e", "-c", command, "/dev/null"],
      cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", TERM: term },
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reading = this.#read(this.#child.stdout);
    this.#child.stderr.cancel();
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) this.#text += decoder.decode(chunk);
  }

  get text(): string {
    return this.#text;
  }

  async waitFor(needle: string, after = 0): Promise<number> {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const at = this.#text.indexOf(needle, after);
      if (at !== -1) return at + needle.length;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`timed out waiting for ${JSON.stringify(needle)}; screen:\n${this.#text}`);
  }

  async type(line: string): Promise<void> {
    await this.keys(line + "\r");
  }

  /** Types keys without Enter. */
  async keys(text: string): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(text));
  }

  async finish(): Promise<number> {
    const status = await withTimeout(this.#child.status, 10_000, "the terminal client to exit");
    await this.#writer.close().catch(() => {});
    await this.#reading;
    return status.code;
  }
}

Deno.test({
  name: "client on a terminal asks for server, port and name, and lets a taken name be changed",
  ignore: !HAS_SCRIPT,
  async fn() {
    await using dir = await tempDir();
    await using server = await startServer({
      dataDir: `${dir.path}/data`,
      logDir: `${dir.path}/logs`,
    });
    // Someone (another key) already holds the name the user will type.
    const first = await runClient({
      args: [
        "--server",
        server.address,
        "--name",
        "Alice Smith",
        "--log-dir",
        `${dir.path}/logs`,
        "--data-dir",
        `${dir.path}/someone-else`,
      ],
      stdin: "register\n",
      cwd: dir.path,
    });
    assertEquals(first.code, 0, first.stderr);

    const client = new TerminalClient(["--log-dir", `${dir.path}/logs`], dir.path);
    let at = await client.waitFor("Enter server IP address (or 'localhost'): ");
    // A name that does not resolve is asked again at once.
    await client.type("bogus.invalid");
    at = await client.waitFor('cannot resolve the server name "bogus.invalid"', at);
    at = await client.waitFor("Enter server IP address (or 'localhost'): ", at);
    await client.type(server.address);
    at = await client.waitFor("Enter client TCP port (1024–65535, Enter for 5001): ", at);
    await client.type("80");
    at = await client.waitFor('not "80"', at);
    at = await client.waitFor("Enter client TCP port (1024–65535, Enter for 5001): ", at);
    await client.type("5001");
    at = await client.waitFor("Enter your first name: ", at);
    await client.type("Alice");
    at = await client.waitFor("Enter your last name: ", at);
    await client.type("Smith");
    at = await client.waitFor(`Connected to server ${server.address} (version `, at);
    at = await client.waitFor(`, TCP port ${server.tcpPort}, open login)`, at);
    at = await client.waitFor("> ", at);
    await client.type("register");
    at = await client.waitFor("name is taken", at);
    at = await client.waitFor("Pick another name (empty to cancel): ", at);
    await client.type("bad/name");
    at = await client.waitFor('name "bad/name" may only hold', at);
    at = await client.waitFor("Pick another name (empty to cancel): ", at);
    await client.type("Alice Jones");
    at = await client.waitFor('Registered and logged in as "Alice Jones"', at);
    at = await client.waitFor("> ", at);
    await client.type("status");
    at = await client.waitFor('logged in as "Alice Jones"', at);
    // An invalid name in anything but register is only an error.
    await client.type("lookup B@d");
    const lookupAt = at = await client.waitFor('name "B@d" may only hold', at);
    await client.type("deregister");
    at = await client.waitFor('Deregistered "Alice Jones"; its identity and files are deleted', at);
    assert(!client.text.slice(lookupAt, at).includes("Pick another name"), client.text);
    await client.type("exit");
    assertEquals(await client.finish(), 0, client.text);
    assert(!client.text.includes("    at "), `no stack trace expected:\n${client.text}`);

    const registry = JSON.parse(await Deno.readTextFile(`${dir.path}/data/registrations.json`));
    assertEquals(Object.keys(registry), ["Alice Smith"]);
    assertStringIncludes(server.lines.join("\n"), 'Deregistered "Alice Jones"');
    // The terminal run kept its identities under the working directory's ./data/client.
    const saved = JSON.parse(
      await Deno.readTextFile(`${dir.path}/data/client/identities.json`),
    ).identities.map((i: { name: string }) => i.name);
    assertEquals(saved, [], "deregister forgot Alice Jones");
  },
});

Deno.test({
  name: "client on a terminal keeps a half-typed line below chat and the progress bar",
  ignore: !HAS_SCRIPT,
  async fn() {
    await using dir = await tempDir();
    await using server = await startServer({
      dataDir: `${dir.path}/data`,
      logDir: `${dir.path}/logs`,
    });
    const common = (who: string) => [
      "--server",
      server.address,
      "--udp-port",
      "0",
      "--data-dir",
      `${dir.path}/${who}`,
      "--log-dir",
      `${dir.path}/logs`,
      "--download-dir",
      `${dir.path}/${who}-downloads`,
    ];
    const file = `${dir.path}/big.bin`;
    const bigger = crypto.getRandomValues(new Uint8Array(65536));
    await Deno.writeFile(file, new Uint8Array(4 * 65536).map((_, i) => bigger[i % 65536] ^ i));

    const bob = new TerminalClient(
      [...common("bob"), "--name", "Bob", "--tcp-port", "5002", "--accept-files"],
      dir.path,
    );
    let bobAt = await bob.waitFor("> ");
    await bob.type("register");
    bobAt = await bob.waitFor('Registered and logged in as "Bob"', bobAt);

    const alice = new TerminalClient(
      // Stop-and-wait makes the transfer slow enough for the bar to be redrawn.
      [
        ...common("alice"),
        ...["--name", "Alice", "--tcp-port", "5001", "--channel-mode", "stop-and-wait"],
      ],
      dir.path,
      "xterm",
    );
    let at = await alice.waitFor("> ");
    await alice.type("register");
    at = await alice.waitFor('Registered and logged in as "Alice"', at);
    await alice.type("connect Bob");
    bobAt = await bob.waitFor("Alice", bobAt);
    await bob.type("accept");
    at = await alice.waitFor("Bob", at);
    at = await alice.waitFor("> ", at);

    // Alice has typed half a message when Bob's arrives.
    await alice.keys("send hel");
    at = await alice.waitFor("send hel", at);
    await bob.type("send hi Alice");
    at = await alice.waitFor("hi Alice", at);
    // The chat line is printed on its own line, then the prompt and the half-typed text again.
    at = await alice.waitFor("\r\n> send hel", at);
    await alice.keys("lo there\r");
    bobAt = await bob.waitFor("hello there", bobAt);

    // While the file goes, the progress bar sits above the prompt and its half-typed text.
    await alice.type(`sendfile ${file}`);
    await alice.keys("send still");
    at = await alice.waitFor("→ big.bin [", at);
    await alice.waitFor("100%", at);
    await alice.keys(" here\r");
    bobAt = await bob.waitFor("still here", bobAt);
    // Each bar is drawn in place of the last, with the prompt and the typed text below it.
    const screen = alice.text.slice(at - "→ big.bin [".length);
    const bars = [
      // deno-lint-ignore no-control-regex -- the escape sequences are what is checked
      ...screen.matchAll(/(\x1b\[1A)?\x1b\[J→ big\.bin \[[#-]+\] \d+%[^\r\n]*\r*\n([^\r\x1b]*)/g),
    ];
    assert(bars.filter((bar) => bar[1] !== undefined).length >= 2, `no bar redrawn:\n${screen}`);
    // (" here" may already be typed when the last bar is drawn.)
    for (const bar of bars) assertMatch(bar[2], /^> send still( here)?$/, screen);

    // A cancelled transfer takes its bar away.
    await alice.type(`sendfile ${file}`);
    at = await alice.waitFor("→ big.bin [", await alice.waitFor("Offered", at));
    await alice.type("cancel");
    at = await alice.waitFor("was cancelled", at);
    await alice.type("status");
    at = await alice.waitFor("logged in as", at);
    await alice.waitFor("\r\n> ", at);
    assert(!alice.text.slice(at).includes("big.bin ["), alice.text.slice(at));
    await alice.type("exit");
    assertEquals(await alice.finish(), 0, alice.text);
    await bob.type("exit");
    assertEquals(await bob.finish(), 0, bob.text);
    assertEquals(
      await Deno.readFile(`${dir.path}/bob-downloads/big.bin`),
      await Deno.readFile(file),
    );
  },
});

Deno.test({
  name: "client on a terminal asks for a password without showing it, then edits lines again",
  ignore: !HAS_SCRIPT,
  async fn() {
    const password = "correct horse";
    await using w = await startWorld("switchboard_tty_", {
      serverFlags: ["--auth", "password"],
      before: async (dataDir) => {
        const added = await runProgram(SERVER_PATH, {
          args: ["user", "add", "alice", "--data-dir", dataDir],
          stdin: `${password}\n`,
        });
        assertEquals(added.code, 0, added.stderr);
      },
    });
    const client = new TerminalClient(
      w.args("--name", "alice", "--tcp-port", "5001", "--udp-port", "0"),
      w.cwd,
      "xterm",
    );
    let at = await client.waitFor("> ");
    await client.type("login");
    at = await client.waitFor('Password for "alice": ', at);
    // Ctrl+D answers nothing: the login is cancelled, the client goes on.
    await client.keys("\x04");
    at = await client.waitFor("error: no password typed; not logged in", at);
    await client.type("login");
    at = await client.waitFor('Password for "alice": ', at);
    // A typo fixed with Backspace.
    await client.keys("correct horsf\x7fe\r");
    at = await client.waitFor('Logged in as "alice"', at);
    await client.keys("statux\x7fs\r");
    at = await client.waitFor('logged in as "alice"', at);
    // A paste of the command and the password at once does not show the password either.
    await client.type("logout");
    at = await client.waitFor('Logged out "alice"', at);
    await client.keys(`login\r${password}\r`);
    at = await client.waitFor('Logged in as "alice"', at);
    // Already logged in: refused at once, no password asked for.
    await client.type('login "Ann Other"');
    at = await client.waitFor('error: already logged in as "alice"; logout first', at);
    assert(!client.text.includes('Password for "Ann Other"'), client.text);
    await client.type("exit");
    assertEquals(await client.finish(), 0, client.text);
    assert(!client.text.includes("horse"), `the password was shown:\n${client.text}`);
  },
});

Deno.test({
  name: "client on a terminal gives the terminal back when it is terminated",
  ignore: !HAS_SCRIPT,
  async fn() {
    await using w = await startWorld("switchboard_tty_");
    const marker = w.dir.join("terminated-client-data");
    const client = new TerminalClient(
      [...w.args("--name", "Ann", "--tcp-port", "5001", "--udp-port", "0"), "--data-dir", marker],
      w.cwd,
      "xterm",
      // Then what the terminal is left like.
      '; echo "RC=$?"; stty -a',
    );
    let at = await client.waitFor("> ");
    await client.keys("half typed");
    at = await client.waitFor("half typed", at);
    // The client itself, not `script` or the shell around it, whose command lines hold it too.
    const pattern = `^${Deno.execPath()} run .*${marker}`;
    const kill = await new Deno.Command("pkill", { args: ["-TERM", "-f", pattern] }).output();
    assert(kill.success, "no client process to terminate");
    await client.finish();
    const after = client.text.slice(at);
    assertStringIncludes(after, "RC=143");
    // Line mode and echo are back: not "-icanon", "-echo".
    assertMatch(after, /(^|\s)icanon(\s|$)/m);
    assertMatch(after, /(^|\s)echo(\s|$)/m);
    // The half-typed line stays on the screen.
    assertStringIncludes(after, "> half typed\r");
  },
});

Deno.test({
  name: "client on a terminal: a stopped peer holds up neither another peer's chat nor the server",
  ignore: !HAS_SCRIPT,
  async fn() {
    await using w = await startWorld("switchboard_tty_");
    const peer = async (name: string) => {
      const script = w.dir.join(`${name}.txt`);
      await Deno.writeTextFile(script, `register ${name}\naccept\nwait terminate within 120\n`);
      const args = w.args("--udp-port", "0", "--data-dir", w.dir.join(`${name}-data`));
      const client = startClient([...args, "--script", script], { cwd: w.cwd });
      await client.waitForLine(new RegExp(`^Registered and logged in as "${name}"$`), 20_000);
      return client;
    };
    await using bob = await peer("Bob");
    await using carol = await peer("Carol");
    const alice = new TerminalClient(
      [
        ...w.args("--name", "Alice", "--tcp-port", "5001", "--udp-port", "0"),
        "--data-dir",
        w.dir.join("Alice-data"),
      ],
      w.cwd,
    );
    let at = await alice.waitFor("> ");
    await alice.type("register");
    at = await alice.waitFor('Registered and logged in as "Alice"', at);
    await alice.type("connect Bob");
    at = await alice.waitFor('Connected with "Bob"', at);
    await alice.type("connect Carol");
    at = await alice.waitFor('Connected with "Carol"', at);
    carol.process.kill("SIGSTOP");
    const typed = performance.now();
    await alice.type("send @Carol are you there?");
    await alice.type("send @Bob hello");
    await alice.type("list");
    await alice.waitFor('Delivered to "Bob"', at);
    await alice.waitFor("3 online:", at);
    const took = performance.now() - typed;
    assert(took < 5000, `Bob's chat and list waited ${Math.round(took)} ms for Carol`);
    await bob.waitForLine(/^\[Alice\] hello$/, 5000);
    assert(!alice.text.slice(at).includes('Carol" stopped answering'), alice.text);
    await alice.type("exit");
    assertEquals(await alice.finish(), 0, alice.text);
  },
});
