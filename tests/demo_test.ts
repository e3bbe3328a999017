/**
 * The README's first command: `deno task demo` runs end to end on its own
 * and says what worked.
 *
 * @module
 */
import { assertEquals, assertMatch } from "@std/assert";
import { fromFileUrl } from "@std/path";

const ROOT = fromFileUrl(new URL("..", import.meta.url));

Deno.test("deno task demo runs every step, pins the server key, shows status, scrapes /metrics and exits 0", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "demo"],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  assertEquals(output.code, 0, new TextDecoder().decode(output.stderr));
  assertMatch(text, /^server +\| Server key: [a-z2-7]{4}(-[a-z2-7]{4}){7} /m);
  assertMatch(text, /^alice +\| Server 127\.0\.0\.1:\d+ .*logged in as "Alice Smith"/m);
  assertMatch(text, /^ +switchboard_active_sessions \d+$/m);
  assertMatch(text, /^Demo finished: .*all worked/m);
});
