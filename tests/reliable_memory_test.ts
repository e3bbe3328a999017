/**
 * A channel streaming a bulk transfer keeps only what is in flight or
 * queued, not every segment it ever sent: measured in a process of its own
 * after a full garbage collection (tests/_channel_memory.ts).
 */
import { assert, assertEquals } from "@std/assert";
import { fromFileUrl } from "@std/path";

const MEBIBYTES = 48;

Deno.test("ReliableChannel forgets acknowledged segments while its flight never drains", async () => {
  const script = fromFileUrl(new URL("./_channel_memory.ts", import.meta.url));
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--v8-flags=--expose-gc", script, String(MEBIBYTES)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(code, 0, new TextDecoder().decode(stderr));
  const { delivered, heapUsed, external } = JSON.parse(new TextDecoder().decode(stdout));
  assertEquals(delivered, MEBIBYTES * 1024 * 1024);
  // What a channel holds is its window and backlog, about a megabyte; a
  // channel that kept its segments would hold the whole stream.
  const kept = heapUsed + external;
  assert(kept < (MEBIBYTES / 4) * 1024 * 1024, `${(kept / 1048576).toFixed(1)} MiB still in use`);
});
