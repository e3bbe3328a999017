/**
 * Bursts of loss (Gilbert-Elliott, whose bursts last so many packets, not
 * so much time) through a simulated bottleneck must not kill a transfer:
 * once, after a burst the RTO backed off to 12.8 s, too few probes went out
 * to outlast the burst, and the peer was declared dead after 20 s of
 * silence (10% loss in bursts of 8, one seed in four). Each case runs four
 * seeds with a chat message every 250 ms beside the file: every transfer
 * completes and every chat message arrives, half of them within 1.2 s, all
 * within 8 s (the longest outages of bursts of 16 at 10 and 20%).
 */
import { assert, assertEquals } from "@std/assert";
import { runBottleneck } from "./_bottleneck_flows.ts";

const FILE = 4 * 1024 * 1024;
const DELAY_MS = 20;

/** Loss each way and mean burst length in packets: 5 to 20%, bursts of 4 to 16. */
const CASES: [number, number][] = [[0.05, 16], [0.1, 8], [0.1, 16], [0.2, 4], [0.2, 16]];

function median(values: number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[sorted.length >> 1];
}

Deno.test("bottleneck: a transfer survives bursts of loss and chat keeps flowing", async (t) => {
  for (const rate of [2_000_000, 8_000_000]) {
    for (const [loss, burst] of CASES) {
      for (const seed of [1, 2, 3, 4]) {
        const name = `${rate / 1e6} MB/s, ${loss * 100}% loss in bursts of ${burst}, seed ${seed}`;
        await t.step(name, () => {
          const run = runBottleneck({
            rate,
            delayMs: DELAY_MS,
            queue: rate * 2 * DELAY_MS / 1000,
            loss,
            burst,
            seed,
            flows: [{ bytes: FILE, chatEveryMs: 250 }],
            untilMs: 300_000,
          });
          const flow = run.flows[0];
          assertEquals(flow.sender.deadReason, undefined);
          assertEquals(flow.delivered, FILE, "the whole file arrives");
          assert(flow.chatsSent >= 4);
          assertEquals(flow.chatDelaysMs.length, flow.chatsSent, "every chat message arrives");
          const middle = median(flow.chatDelaysMs);
          assert(middle <= 1200, `median chat delay ${middle.toFixed(0)} ms`);
          const longest = Math.max(...flow.chatDelaysMs);
          assert(longest <= 8000, `a chat message took ${longest.toFixed(0)} ms`);
        });
      }
    }
  }
});
