import { assertEquals, assertMatch } from "@std/assert";
import { VERSION } from "../lib/version.ts";

Deno.test("VERSION is semantic and CHANGELOG.md's newest section names it", async () => {
  assertMatch(VERSION, /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/);
  const changelog = await Deno.readTextFile(new URL("../CHANGELOG.md", import.meta.url));
  const newest = /^## \[([^\]]+)\]/m.exec(changelog)?.[1];
  assertEquals(newest, VERSION);
});
