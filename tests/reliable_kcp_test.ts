import { assert, assertEquals } from "@std/assert";
import { runKcpScenario } from "../scripts/_kcp_scenario.ts";
import { LOW_LATENCY_CHANNEL_OPTIONS } from "../lib/reliable/reliable_channel.ts";

// KCP's fast mode on this test: average RTT 136-141 ms, maximum 347-404 ms.
const KCP_BEST_AVERAGE_MS = 136;
const KCP_BEST_MAX_MS = 347;

Deno.test("runKcpScenario() with the low-latency preset beats KCP's fast mode", async (t) => {
  for (const seed of [1, 2, 3, 4]) {
    await t.step(`seed ${seed}`, () => {
      const result = runKcpScenario(seed, { channel: LOW_LATENCY_CHANNEL_OPTIONS });
      assertEquals(result.dead, undefined);
      assertEquals(result.rtts.length, 1000);
      assert(result.averageRttMs < KCP_BEST_AVERAGE_MS, `average ${result.averageRttMs} ms`);
      assert(result.maxRttMs < KCP_BEST_MAX_MS, `max ${result.maxRttMs} ms`);
      assert(result.averageRttMs < 120, `target: average ${result.averageRttMs} ms under 120`);
      assert(result.maxRttMs < 300, `target: max ${result.maxRttMs} ms under 300`);
    });
  }
});

Deno.test("runKcpScenario() with the defaults returns every echo", () => {
  const result = runKcpScenario(1);
  assertEquals(result.dead, undefined);
  assertEquals(result.rtts.length, 1000);
  // Bounded below by the path: 60 ms of fixed delay.
  assert(result.rtts.every((rtt) => rtt >= 60), "no RTT below the path's minimum");
  assert(result.averageRttMs < 200, `average ${result.averageRttMs} ms`);
  assert(result.retransmissions > 0);
});

Deno.test("runKcpScenario() without loss measures the path alone", () => {
  const result = runKcpScenario(1, { loss: 0, messages: 200 });
  assertEquals(result.retransmissions, 0);
  assert(result.averageRttMs > 90 && result.averageRttMs < 110, `${result.averageRttMs}`);
  assert(result.maxRttMs <= 130, `${result.maxRttMs}`);
});

Deno.test("runKcpScenario() is deterministic per seed", () => {
  const a = runKcpScenario(9, { messages: 300 }), b = runKcpScenario(9, { messages: 300 });
  assertEquals(a, b);
  const c = runKcpScenario(10, { messages: 300 });
  assert(a.rtts.join() !== c.rtts.join());
});

Deno.test("runKcpScenario() in stop-and-wait mode is far slower", () => {
  const result = runKcpScenario(1, { messages: 100, channel: { mode: "stop_and_wait" } });
  assertEquals(result.rtts.length, 100);
  const selective = runKcpScenario(1, { messages: 100 });
  assert(
    result.averageRttMs > 5 * selective.averageRttMs,
    `stop-and-wait ${result.averageRttMs} ms, selective ${selective.averageRttMs} ms`,
  );
});
