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
