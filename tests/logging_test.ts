import { assert, assertEquals, assertMatch } from "@std/assert";
import { join } from "@std/path";
import { getLogger } from "@logtape/logtape";
import { LOG_LEVELS, setupLogging } from "../lib/io/logging.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_logging_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("setupLogging() writes one line per record with timestamp, level and category", async () => {
  await withTempDir(async (root) => {
    const dir = join(root, "nested", "logs");
    const logging = await setupLogging({ dir, file: "server.log", level: "info" });
    const logger = getLogger(["switchboard", "server"]);
    logger.info("registered {name}", { name: "Alice" });
    logger.warn("request retransmitted", { requestId: 7, address: "127.0.0.1:4000" });
    logger.error("cannot save {file}", { file: "registry.json", error: new Error("disk full") });
    await logging.close();

    const lines = (await Deno.readTextFile(join(dir, "server.log"))).trimEnd().split("\n");
    assertEquals(lines.length, 3);
    assertMatch(
      lines[0],
      /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z INFO +switchboard\.server: registered Alice$/,
    );
    assertMatch(
      lines[1],
      /WARNING switchboard\.server: request retransmitted requestId=7 address="127\.0\.0\.1:4000"$/,
    );
    assertMatch(
      lines[2],
      /ERROR +switchboard\.server: cannot save registry\.json error="Error: disk full"$/,
    );
  });
});

Deno.test("setupLogging() drops records below the chosen level", async () => {
  await withTempDir(async (dir) => {
    const logging = await setupLogging({ dir, file: "client.log", level: "info" });
    const logger = getLogger(["switchboard", "client"]);
    logger.debug("hidden detail");
    logger.info("shown");
    getLogger(["other"]).error("not ours");
    await logging.close();

    const text = await Deno.readTextFile(join(dir, "client.log"));
    assert(text.includes("shown"));
    assert(!text.includes("hidden detail"));
    assert(!text.includes("not ours"));
  });
});

Deno.test("setupLogging() writes debug records at the debug level", async () => {
  await withTempDir(async (dir) => {
    const logging = await setupLogging({ dir, file: "server.log", level: "debug" });
    getLogger(["switchboard"]).debug("verbose {n}", { n: 1 });
    await logging.close();
    assertMatch(
      await Deno.readTextFile(join(dir, "server.log")),
      /DEBUG +switchboard: verbose 1\n$/,
    );
  });
});

Deno.test("LOG_LEVELS lists the levels from most to least verbose", () => {
  assertEquals([...LOG_LEVELS], ["debug", "info", "warning", "error"]);
});

Deno.test("setupLogging() writes JSON lines that parse, one object a record", async () => {
  await withTempDir(async (dir) => {
    const logging = await setupLogging({ dir, file: "server.log", level: "info", format: "json" });
    getLogger(["switchboard", "server"]).info("registered {name}", { name: "Alice", reqId: 7 });
    getLogger(["switchboard", "server"]).error("failed {error}", { error: new Error("disk full") });
    await logging.close();
    const lines = (await Deno.readTextFile(join(dir, "server.log"))).trimEnd().split("\n");
    const records = lines.map((line) => JSON.parse(line));
    assertEquals(records[0].level, "INFO");
    assertEquals(records[0].logger, "switchboard.server");
    assertEquals(records[0].message, "registered Alice");
    assertEquals(records[0].properties, { name: "Alice", reqId: 7 });
    assertMatch(records[0]["@timestamp"], /^\d{4}-\d{2}-\d{2}T/);
    assertEquals(records[1].properties.error, "Error: disk full");
  });
});

Deno.test("setupLogging() never writes a secret, in text or JSON", async () => {
  for (const format of ["text", "json"] as const) {
    await withTempDir(async (dir) => {
      const logging = await setupLogging({ dir, file: "client.log", level: "debug", format });
      const log = getLogger(["switchboard", "client"]);
      log.info("login {name} with {password}", { name: "Ann", password: "hunter2-pw" });
      log.debug("session {token}", { token: "f00dfeedc0ffee11" });
      log.debug("keys", { privateKey: "a1b2c3d4e5f6", serverKey: "5e5e5e", secret: "s3cr3t" });
      log.debug("raw {bytes}", { bytes: new TextEncoder().encode("bytes-secret") });
      await logging.close();
      const text = await Deno.readTextFile(join(dir, "client.log"));
      for (const secret of ["hunter2-pw", "f00dfeedc0ffee11", "a1b2c3d4e5f6", "5e5e5e", "s3cr3t"]) {
        assert(!text.includes(secret), `${format}: ${secret} in\n${text}`);
      }
      assert(!/98, ?121, ?116/.test(text), `${format}: bytes in\n${text}`);
      assertEquals(text.match(/\[REDACTED\]/g)?.length, format === "json" ? 9 : 6, text);
      assert(text.includes("Ann"));
    });
  }
});
