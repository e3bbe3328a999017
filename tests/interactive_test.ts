/**
 * The client on a real terminal: `script` (util-linux) gives it a
 * pseudo-terminal, so it asks its questions and shows its prompt as it does
 * for a person, and the test types the answers.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import {
  CLIENT_PATH,
  CONFIG_PATH,
  runClient,
  startServer,
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

  constructor(args: string[], cwd: string) {
    const command = [Deno.execPath(), "run", "-A", "--config", CONFIG_PATH, CLIENT_PATH, ...args]
      .map(quote).join(" ");
    this.#child = new Deno.Command("script", {
      args: ["-q", "-e", "-c", command, "/dev/null"],
      cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", TERM: "dumb" },
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
    await this.#writer.write(new TextEncoder().encode(line + "\r"));
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
    // Someone already holds the name the user will type.
    const first = await runClient({
      args: ["--server", server.address, "--name", "Alice Smith", "--log-dir", `${dir.path}/logs`],
      stdin: "register\n",
      cwd: dir.path,
    });
    assertEquals(first.code, 0, first.stderr);

    const client = new TerminalClient(["--log-dir", `${dir.path}/logs`], dir.path);
    let at = await client.waitFor("Enter server IP address (or 'localhost'): ");
    await client.type(server.address);
    at = await client.waitFor("Enter client TCP port (1024–65535): ", at);
    await client.type("80");
    at = await client.waitFor('not "80"', at);
    at = await client.waitFor("Enter client TCP port (1024–65535): ", at);
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
    await client.type("deregister");
    at = await client.waitFor('Deregistered "Alice Jones"; its identity and files are deleted', at);
    await client.type("exit");
    assertEquals(await client.finish(), 0, client.text);
    assert(!client.text.includes("    at "), `no stack trace expected:\n${client.text}`);

    const registry = JSON.parse(await Deno.readTextFile(`${dir.path}/data/registrations.json`));
    assertEquals(Object.keys(registry), ["Alice Smith"]);
    assertStringIncludes(server.lines.join("\n"), 'Deregistered "Alice Jones"');
    // Both runs kept their identities under the working directory's ./data/client.
    const saved = JSON.parse(
      await Deno.readTextFile(`${dir.path}/data/client/identities.json`),
    ).identities.map((i: { name: string }) => i.name);
    assertEquals(saved, ["Alice Smith"], "deregister forgot Alice Jones");
  },
});
