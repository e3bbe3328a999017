/**
 * ConsoleLines: lines printed in one task go out together at its end, in
 * order, one write per run of one stream, whole even when a write takes
 * only part of them.
 */
import { assertEquals } from "@std/assert";
import { ConsoleLines, type SyncWriter } from "../lib/cli/console_lines.ts";

function recorder(log: string[], name: string, most = Infinity): SyncWriter {
  return {
    writeSync(bytes: Uint8Array): number {
      const n = Math.min(bytes.length, most);
      log.push(`${name}:${new TextDecoder().decode(bytes.subarray(0, n))}`);
      return n;
    },
  };
}

Deno.test("ConsoleLines writes a task's lines at its end, one write per run of a stream, in order", async () => {
  const log: string[] = [];
  const lines = new ConsoleLines({ stdout: recorder(log, "out"), stderr: recorder(log, "err") });
  lines.print('Registered "Ann"');
  lines.print('Active (1): "Ann"');
  lines.print("Cannot save", "stderr");
  lines.print('Deregistered "Ann"');
  assertEquals(log, [], "nothing before the task's end");
  await Promise.resolve();
  assertEquals(log, [
    'out:Registered "Ann"\nActive (1): "Ann"\n',
    "err:Cannot save\n",
    'out:Deregistered "Ann"\n',
  ]);
  lines.print("later");
  await Promise.resolve();
  assertEquals(log.at(-1), "out:later\n");
});

Deno.test("ConsoleLines writes the rest when a write takes only part", () => {
  const log: string[] = [];
  const lines = new ConsoleLines({ stdout: recorder(log, "out", 4), stderr: recorder(log, "err") });
  lines.print("abcdefghij");
  lines.flush();
  assertEquals(log, ["out:abcd", "out:efgh", "out:ij\n"]);
});
