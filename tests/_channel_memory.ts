/**
 * Run by tests/reliable_memory_test.ts as its own process, with
 * `--v8-flags=--expose-gc`: streams MEBIBYTES MiB from one channel to
 * another through a delay line, so acknowledgements never cover the whole
 * flight (as in a bulk transfer), then prints the memory still in use after
 * a full garbage collection, as JSON.
 *
 * Usage: deno run --v8-flags=--expose-gc tests/_channel_memory.ts MEBIBYTES
 */
import { ReliableChannel } from "../lib/reliable/reliable_channel.ts";
import type { Segment } from "../lib/reliable/segment.ts";

const MESSAGE_BYTES = 32 * 1024;
/** Steps a segment spends on the way, each way. */
const DELAY_STEPS = 2;

const total = Number(Deno.args[0]) * 1024 * 1024;
const gc = (globalThis as unknown as { gc: () => void }).gc;
const sender = new ReliableChannel(0);
const receiver = new ReliableChannel(0);
const toReceiver: Segment[][] = Array.from({ length: DELAY_STEPS }, () => []);
const toSender: Segment[][] = Array.from({ length: DELAY_STEPS }, () => []);
let sent = 0, delivered = 0;
for (let now = 0; delivered < total; now++) {
  while (sent < total && sender.backlog < 4096) {
    sender.send(now, new Uint8Array(MESSAGE_BYTES));
    sent += MESSAGE_BYTES;
  }
  sender.onTimeout(now);
  const outbound: Segment[] = [], inbound: Segment[] = [];
  for (let out = sender.poll(); out; out = sender.poll()) {
    if (out.type === "segment") outbound.push(out.segment);
  }
  toReceiver.push(outbound);
  for (const segment of toReceiver.shift()!) receiver.receive(now, segment);
  receiver.onTimeout(now);
  for (let out = receiver.poll(); out; out = receiver.poll()) {
    if (out.type === "segment") inbound.push(out.segment);
    if (out.type === "deliver") delivered += out.message.length;
  }
  toSender.push(inbound);
  for (const segment of toSender.shift()!) sender.receive(now, segment);
  if (now > 1_000_000) throw new Error("the stream never finished");
}
// Array buffers are freed by a sweeper after the collection: let it finish.
for (let i = 0; i < 3; i++) {
  gc();
  await new Promise((resolve) => setTimeout(resolve, 20));
}
const { heapUsed, external } = Deno.memoryUsage();
// The channels are still in use (a transfer goes on): what they hold counts.
console.log(JSON.stringify({ delivered, heapUsed, external, backlog: sender.backlog }));
receiver.receive(0, { kind: "keepalive" });
