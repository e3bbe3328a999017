// The windowed model of the transfer benchmark (scripts/transfer_baselines.ts):
// it must deliver every datagram once and in order, or its figures mean nothing.
import { assertEquals } from "@std/assert";
import { fromFileUrl } from "@std/path";
import { assertExit, assertOneErrorLine, CONFIG_PATH, LineCollector } from "./_processes.ts";

const SCRIPT = fromFileUrl(new URL("../scripts/transfer_baselines.ts", import.meta.url));

function start(args: string[]): { process: Deno.ChildProcess; stdout: LineCollector } {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--config", CONFIG_PATH, SCRIPT, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  return { process, stdout: new LineCollector(process.stdout) };
}

async function finish(
  run: { process: Deno.ChildProcess; stdout: LineCollector },
): Promise<{ code: number; signal: Deno.Signal | null; stdout: string; stderr: string }> {
  const stderr = new LineCollector(run.process.stderr);
  const status = await run.process.status;
  await Promise.all([run.stdout.done, stderr.done]);
  return { code: status.code, signal: status.signal, stdout: run.stdout.text, stderr: stderr.text };
}

Deno.test("the windowed model delivers every datagram, with busy work on both sides", async () => {
  const receiver = start(["window-receive", "5", "8"]);
  const port = (await receiver.stdout.waitFor(/^PORT \d+$/, 20_000, "receiver")).split(" ")[1];
  const sender = start(["window-send", port, "3000", "500", "48", "5"]);
  assertExit(await finish(sender), 0);
  const received = await finish(receiver);
  assertExit(received, 0);
  const result = JSON.parse(received.stdout.trim().split("\n").at(-1)!);
  assertEquals({ datagrams: result.datagrams, bytes: result.bytes }, {
    datagrams: 3000,
    bytes: 3000 * 500,
  });
});

Deno.test("the windowed model's sender gives up in one line when nobody acks", async () => {
  // A bound socket that never answers: the sender's datagrams go nowhere useful.
  const silent = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    const port = String((silent.addr as Deno.NetAddr).port);
    const result = await finish(start(["window-send", port, "100", "200", "8", "0"]));
    assertExit(result, 1);
    assertOneErrorLine(result, /no ack moved for 10000 ms/);
  } finally {
    silent.close();
  }
});
