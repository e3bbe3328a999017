/**
 * The line editor on a real pseudo-terminal (`script`, from util-linux):
 * cursor keys, Tab completion of commands and of names online, and a
 * history kept per user in the client's data directory.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { CLIENT_PATH, CONFIG_PATH, startServer, tempDir, withTimeout } from "./_processes.ts";

const HAS_SCRIPT = new Deno.Command("sh", { args: ["-c", "command -v script"], stdout: "null" })
  .outputSync().success;

function quote(text: string): string {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/** The client on a pseudo-terminal that says it is an xterm. */
class Pty {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reading: Promise<void>;
  text = "";

  constructor(args: string[], cwd: string) {
    const command = [Deno.execPath(), "run", "-A", "--config", CONFIG_PATH, CLIENT_PATH, ...args]
      .map(quote).join(" ");
    const child = this.#child = new Deno.Command("script", {
      args: ["-q", "-e", "-c", command, "/dev/null"],
      cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
      env: { NO_COLOR: "1", TERM: "xterm" },
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reading = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stdout) this.text += decoder.decode(chunk);
    })();
  }

  async waitFor(needle: string, after = 0): Promise<number> {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const at = this.text.indexOf(needle, after);
      if (at !== -1) return at + needle.length;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`timed out waiting for ${JSON.stringify(needle)}; screen:\n${this.text}`);
  }

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
  name: "client on a terminal: cursor keys, Tab completion of commands and names, history per user",
  ignore: !HAS_SCRIPT,
  async fn() {
    await using dir = await tempDir();
    await using server = await startServer({
      dataDir: `${dir.path}/data`,
      logDir: `${dir.path}/logs`,
    });
    const name = "Bob 日本";
    const args = [
      ...["--server", server.address, "--name", name, "--tcp-port", "5003"],
      ...["--udp-port", "0", "--data-dir", `${dir.path}/bob`, "--log-dir", `${dir.path}/logs`],
    ];
    const bob = new Pty(args, dir.path);
    let at = await bob.waitFor("> ");
    // Tab completes a command; Left, Ctrl+A, End and Ctrl+E move in the line.
    await bob.keys("regi\t");
    at = await bob.waitFor("register ", at);
    await bob.keys("\r");
    at = await bob.waitFor(`Registered and logged in as "${name}"`, at);
    await bob.keys("ist\x01l\x05\r");
    at = await bob.waitFor("1 online:", at);
    // A name online completes, in quotes as it has spaces,
    await bob.keys("lookup B\t");
    at = await bob.waitFor(`lookup ${name} `, at);
    // An emoji and a letter; Left twice, Backspace (the space), End, Backspace twice, space.
    await bob.keys("🚀x\x1b[D\x1b[D\x7f\x1b[F\x7f\x7f \r");
    at = await bob.waitFor(`"${name}" is online at`, at);
    // Up brings the last command back.
    await bob.keys("\x1b[A");
    at = await bob.waitFor(`lookup ${name}`, at);
    await bob.keys("\x15exit\r");
    assertEquals(await bob.finish(), 0, bob.text);

    const saved = await Deno.readTextFile(
      `${dir.path}/bob/history/${encodeURIComponent(name.toLowerCase())}.txt`,
    );
    assertEquals(saved.split("\n"), [
      "register",
      "list",
      `lookup ${name}`,
      "exit",
      "",
    ]);

    // The next session walks the saved history.
    const again = new Pty(args, dir.path);
    at = await again.waitFor("> ");
    await again.keys("login\r");
    at = await again.waitFor(`Logged in as "${name}"`, at);
    await again.keys("\x1b[A\x1b[A\x1b[A");
    at = await again.waitFor(`lookup ${name}`, at);
    await again.keys("\r");
    at = await again.waitFor(`"${name}" is online at`, at);
    await again.keys("exit\r");
    assertEquals(await again.finish(), 0, again.text);
    assert(!again.text.includes("unknown command"), again.text);
    assertStringIncludes(again.text, "exit");
  },
});

Deno.test({
  name:
    "client on a terminal says it is connecting, runs nothing typed meanwhile, and asks a bare tcp for its message",
  ignore: !HAS_SCRIPT,
  async fn() {
    await using dir = await tempDir();
    // A port with no server yet: the client keeps sending hello until one starts there.
    const probe = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
    const udpPort = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const client = new Pty([
      ...["--server", `127.0.0.1:${udpPort}`, "--tcp-port", "5004", "--udp-port", "0"],
      ...["--data-dir", `${dir.path}/ann`, "--log-dir", `${dir.path}/logs`],
    ], dir.path);
    let at = await client.waitFor("Enter your first name: ");
    await client.keys("Ann\r");
    at = await client.waitFor("Enter your last name: ", at);
    await client.keys("Jones\r");
    at = await client.waitFor(`Connecting to 127.0.0.1:${udpPort}... `, at);
    // The user thinks the question is still open and answers again.
    await client.keys("Jones\r");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assertEquals(client.text.slice(at).includes("Enter your last name"), false, client.text);
    await using server = await startServer({
      dataDir: `${dir.path}/data`,
      logDir: `${dir.path}/logs`,
      ports: { udp: udpPort },
    });
    at = await client.waitFor("Not run (typed while connecting): Jones", at);
    at = await client.waitFor("> ", at);
    await client.keys("register\r");
    at = await client.waitFor('Registered and logged in as "Ann Jones"', at);
    await client.keys("tcp\r");
    at = await client.waitFor("Message to send over TCP (empty to cancel): ", at);
    await client.keys("hello over tcp\r");
    await server.waitForLine(/hello over tcp/);
    at = await client.waitFor("> ", at);
    await client.keys("tcp\r\r");
    at = await client.waitFor("> ", await client.waitFor("Message to send over TCP", at));
    await client.keys("exit\r");
    assertEquals(await client.finish(), 0, client.text);
    assert(!client.text.includes("unknown command"), client.text);
    assert(!client.text.includes("tcp needs a message"), client.text);
  },
});
