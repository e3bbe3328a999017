import { assertEquals, assertStringIncludes } from "@std/assert";
import { redactUrl, storeUrlProblem } from "../lib/io/store_url.ts";

Deno.test("storeUrlProblem() accepts file and redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] only", () => {
  for (
    const good of [
      "file",
      "redis://127.0.0.1:6379",
      "redis://db",
      "redis://:pw@db:6379/2",
      "redis://user:pw@[::1]:6379",
    ]
  ) {
    assertEquals(storeUrlProblem(good), undefined, good);
  }
  for (
    const bad of [
      "redis://db:notaport",
      "redis://db:70000",
      "rediss://db:6380",
      "redis://db:6379/x",
      "redis://db:6379?tls=1",
      "redis://",
      "db:6379",
    ]
  ) {
    assertStringIncludes(storeUrlProblem(bad) ?? "", "--store must be file or redis://", bad);
  }
});

Deno.test("redactUrl() hides the password, even with an @ in it or in a URL that does not parse", () => {
  assertEquals(redactUrl("redis://:secret@db:6379/1"), "redis://:***@db:6379/1");
  assertEquals(redactUrl("redis://admin:s3@cr@t@db:6379"), "redis://admin:***@db:6379");
  assertEquals(redactUrl("rediss://:secret@db:notaport"), "rediss://:***@db:notaport");
  assertEquals(redactUrl("redis://admin@db:6379"), "redis://admin@db:6379");
  assertEquals(redactUrl("redis://db:6379"), "redis://db:6379");
});
