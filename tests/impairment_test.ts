/**
 * The impairment proxy: its sans-I/O relay core (`ImpairedRelay`: NAT-style
 * routing between clients, their peers and the server, with the simulator's
 * loss, duplication, reordering and delay) and the command line of
 * `scripts/impair_proxy.ts` (help, one-line usage errors with exit code 2,
 * and a real relay of datagrams with its counts on exit).
 */
import { assert, assertEquals, assertMatch, assertThrows } from "@std/assert";
import { fromFileUrl } from "@std/path";
import { SeededRandom } from "../lib/random.ts";
import { ImpairedRelay, LISTEN_SOCKET, type RelayDatagram } from "../lib/sim/impaired_relay.ts";
import { type Impairment, NO_IMPAIRMENT } from "../lib/sim/sim_network.ts";
import { assertOneErrorLine, describeRun, RunningProgram, runProgram } from "./_processes.ts";

const PROXY_PATH = fromFileUrl(new URL("../scripts/impair_proxy.ts", import.meta.url));

const SERVER = "127.0.0.1:3000";
const ALICE = "127.0.0.1:50001";
const BOB = "127.0.0.1:50002";

function relay(impairment: Impairment = NO_IMPAIRMENT, options: { maxClients?: number } = {}) {
  let next = 1;
  const opened: string[] = [];
  const core = new ImpairedRelay({
    target: SERVER,
    impairment,
    random: new SeededRandom(7),
    openUpstream: (client) => {
      opened.push(client);
      return next++;
    },
    maxClients: options.maxClients,
  });
  return { core, opened };
}

function bytes(n: number): Uint8Array {
  return Uint8Array.of(n & 0xff, n >> 8);
}

function summary(out: RelayDatagram[]): [number, string, number][] {
  return out.map((d) => [d.from, d.to, d.data[0] | (d.data[1] << 8)]);
}

Deno.test("ImpairedRelay sends a client's datagrams to the target from the client's own socket", () => {
  const { core, opened } = relay();
  assert(core.receive(0, LISTEN_SOCKET, ALICE, bytes(1)));
  assert(core.receive(0, LISTEN_SOCKET, BOB, bytes(2)));
  assert(core.receive(0, LISTEN_SOCKET, ALICE, bytes(3)));
  assertEquals(opened, [ALICE, BOB], "one upstream socket per client, opened once");
  assertEquals(core.upstreamOf(ALICE), 1);
  assertEquals(core.upstreamOf(BOB), 2);
  assertEquals(core.due(0), [], "nothing before the 1 ms delay");
  assertEquals(summary(core.due(1)), [[1, SERVER, 1], [2, SERVER, 2], [1, SERVER, 3]]);
  assertEquals(core.stats.fromClients, 3);
  assertEquals(core.stats.clients, 2);
});

Deno.test("ImpairedRelay sends the target's answers to the client from the listening socket", () => {
  const { core } = relay();
  core.receive(0, LISTEN_SOCKET, ALICE, bytes(1));
  core.receive(0, LISTEN_SOCKET, BOB, bytes(2));
  core.due(1);
  assert(core.receive(2, 2, SERVER, bytes(3)));
  assert(core.receive(2, 1, SERVER, bytes(4)));
  assertEquals(summary(core.due(3)), [[LISTEN_SOCKET, BOB, 3], [LISTEN_SOCKET, ALICE, 4]]);
  assertEquals(core.stats.fromTarget, 2);
});

Deno.test("ImpairedRelay relays peer traffic from the sender's upstream socket, as a NAT does", async (t) => {
  const { core } = relay();
  core.receive(0, LISTEN_SOCKET, ALICE, bytes(1)); // Alice is 1
  core.receive(0, LISTEN_SOCKET, BOB, bytes(2)); // Bob is 2
  core.due(1);
  await t.step("Alice writes to Bob's relayed address: Bob sees it from Alice's", () => {
    assert(core.receive(5, 2, ALICE, bytes(10)));
    assertEquals(summary(core.due(6)), [[1, BOB, 10]]);
  });
  await t.step("Bob answers to the address he saw: Alice sees it from Bob's", () => {
    assert(core.receive(7, 1, BOB, bytes(11)));
    assertEquals(summary(core.due(8)), [[2, ALICE, 11]]);
  });
  assertEquals(core.stats.betweenClients, 2);
});

Deno.test("ImpairedRelay drops what it cannot route and counts it", () => {
  const { core, opened } = relay(NO_IMPAIRMENT, { maxClients: 1 });
  core.receive(0, LISTEN_SOCKET, ALICE, bytes(1));
  assertEquals(core.receive(0, 1, "127.0.0.9:9999", bytes(2)), false, "a stranger at an upstream");
  assertEquals(core.receive(0, 7, SERVER, bytes(3)), false, "an unknown socket");
  assertEquals(
    core.receive(0, LISTEN_SOCKET, SERVER, bytes(4)),
    false,
    "the target at the listener",
  );
  assertEquals(core.receive(0, LISTEN_SOCKET, BOB, bytes(5)), false, "one client too many");
  assertEquals(opened, [ALICE]);
  assertEquals(core.stats.unroutable, 4);
  assertEquals(summary(core.due(10)), [[1, SERVER, 1]]);
});

Deno.test("ImpairedRelay refuses an upstream socket id that is not new", () => {
  const core = new ImpairedRelay({
    target: SERVER,
    impairment: NO_IMPAIRMENT,
    random: new SeededRandom(1),
    openUpstream: () => 0,
  });
  assertThrows(() => core.receive(0, LISTEN_SOCKET, ALICE, bytes(1)), RangeError);
  assertThrows(
    () =>
      new ImpairedRelay({
        target: SERVER,
        impairment: { ...NO_IMPAIRMENT, loss: 2 },
        random: new SeededRandom(1),
        openUpstream: () => 1,
      }),
    RangeError,
  );
});

Deno.test("ImpairedRelay loses, duplicates, reorders and delays as the simulator does", async (t) => {
  const impairment: Impairment = {
    loss: 0.1,
    duplicate: 0.1,
    reorder: 0.1,
    minDelayMs: 10,
    maxDelayMs: 30,
  };
  const run = () => {
    const { core } = relay(impairment);
    const out: RelayDatagram[] = [];
    for (let i = 0; i < 2000; i++) {
      core.receive(i, LISTEN_SOCKET, ALICE, bytes(i));
      assertEquals(core.due(i).length, 0, "nothing leaves before the smallest delay");
      out.push(...core.due(i + 10));
    }
    out.push(...core.due(1e9));
    return { core, out };
  };
  const { core, out } = run();
  await t.step("the counts add up", () => {
    const s = core.stats;
    assertEquals(s.impaired, 2000);
    assertEquals(s.forwarded, out.length);
    assertEquals(s.forwarded, 2000 - s.lost + s.duplicated);
    assert(s.lost > 120 && s.lost < 280, `lost ${s.lost}`);
    assert(s.duplicated > 120 && s.duplicated < 280, `duplicated ${s.duplicated}`);
    assert(s.reordered > 120 && s.reordered < 280, `reordered ${s.reordered}`);
    assertEquals(core.inFlight, 0);
  });
  await t.step("some datagrams overtake others; every survivor arrives at most twice", () => {
    const ids = out.map((d) => d.data[0] | (d.data[1] << 8));
    assert(ids.some((id, i) => i > 0 && id < ids[i - 1]), "some reordering");
    const seen = new Map<number, number>();
    for (const id of ids) seen.set(id, (seen.get(id) ?? 0) + 1);
    assert([...seen.values()].every((n) => n <= 2));
  });
  await t.step("the same seed makes the same decisions", () => {
    assertEquals(summary(run().out), summary(out));
  });
});

Deno.test("ImpairedRelay holds datagrams behind its bottleneck and counts the queue", () => {
  // 100,000 bytes a second, 1,000-byte datagrams: one leaves every 10 ms; the queue holds 3.
  const { core } = relay({
    ...NO_IMPAIRMENT,
    minDelayMs: 5,
    maxDelayMs: 5,
    rate: 100_000,
    queue: 3000,
  });
  for (let i = 0; i < 5; i++) core.receive(0, LISTEN_SOCKET, ALICE, new Uint8Array(1000));
  const times: number[] = [];
  for (let now = 0; now <= 100; now++) {
    for (const _ of core.due(now)) times.push(now);
  }
  assertEquals(times, [15, 25, 35], "three fit the queue, then one every 10 ms, plus 5 ms");
  assertEquals(core.stats.queueDropped, 2);
  assertEquals(core.stats.lost, 2);
  assertEquals(core.stats.queued, 3);
  assertEquals(core.stats.queueDelayMs, 0 + 10 + 20);
});

Deno.test("impair_proxy.ts prints its help and refuses bad flags in one line with exit 2", async (t) => {
  await t.step("--help lists every flag with its default", async () => {
    const result = await runProgram(PROXY_PATH, { args: ["--help"] });
    assertEquals(result.code, 0, describeRun(result));
    for (
      const flag of [
        "--target",
        "--listen",
        "--loss",
        "--burst",
        "--duplicate",
        "--reorder",
        "--delay",
        "--jitter",
        "--rate",
        "--queue",
        "--seed",
        "--help",
      ]
    ) {
      assertMatch(result.stdout, new RegExp(`^  (?:-h, )?${flag}\\b`, "m"));
    }
  });
  const cases: [string[], RegExp][] = [
    [[], /^error: --target HOST:PORT is required$/],
    [["--target", "127.0.0.1:3000", "--loss", "1.5"], /^error: --loss must be a probability/],
    [["--target", "127.0.0.1:3000", "--duplicate", "x"], /^error: --duplicate must be/],
    [["--target", "127.0.0.1:3000", "--reorder=-1"], /^error: --reorder must be/],
    [["--target", "127.0.0.1:3000", "--delay", "1e9"], /^error: --delay must be/],
    [["--target", "127.0.0.1:3000", "--jitter=-5"], /^error: --jitter must be/],
    [["--target", "127.0.0.1:3000", "--seed", "x"], /^error: --seed must be/],
    [["--target", "127.0.0.1:3000", "--burst", "0"], /^error: --burst must be a whole number/],
    [
      ["--target", "127.0.0.1:3000", "--loss", "80%", "--burst", "2"],
      /^error: loss 0.8 needs a mean burst of at least 4 packets, not 2$/,
    ],
    [["--target", "127.0.0.1:3000", "--rate", "0"], /^error: --rate must be a whole number/],
    [["--target", "127.0.0.1:3000", "--rate", "8e6"], /^error: --rate must be a whole number/],
    [["--target", "127.0.0.1:3000", "--queue", "1000"], /^error: --queue needs --rate/],
    [["--target", "127.0.0.1"], /^error: --target must look like HOST:PORT/],
    [["--target", "example.com:3000"], /^error: --target needs an IP address/],
    [["--target", "127.0.0.1:0"], /^error: --target port must be a number from 1/],
    [["--target", "127.0.0.1:3000", "--listen", "127.0.0.1:70000"], /^error: --listen port/],
    [["--target", "127.0.0.1:3000", "--lossy", "1"], /^error: unknown flag --lossy/],
    [["--target", "127.0.0.1:3000", "extra"], /^error: unexpected argument "extra"/],
    [
      ["--target", "127.0.0.1:3000", "--delay", "-1"],
      /^error: cannot use the value -1: it must not be negative/,
    ],
  ];
  for (const [args, pattern] of cases) {
    await t.step(args.join(" ") || "(no flags)", async () => {
      const result = await runProgram(PROXY_PATH, { args });
      assertEquals(result.code, 2, describeRun(result));
      assertOneErrorLine(result, pattern);
      assertEquals(result.stdout, "");
    });
  }
});

/** A real proxy between two loopback sockets: `client` sends to `port`, `target` is its server. */
interface ProxiedSockets extends AsyncDisposable {
  target: Deno.DatagramConn;
  client: Deno.DatagramConn;
  proxy: RunningProgram;
  /** The proxy's listening port. */
  port: number;
}

/** Starts `scripts/impair_proxy.ts` in front of a fresh target socket, with these flags. */
async function proxyBetweenSockets(flags: string[]): Promise<ProxiedSockets> {
  const target = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const client = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const targetPort = (target.addr as Deno.NetAddr).port;
  const proxy = new RunningProgram("proxy", PROXY_PATH, [
    ...["--target", `127.0.0.1:${targetPort}`],
    ...flags,
  ]);
  const dispose = async () => {
    await proxy[Symbol.asyncDispose]();
    for (const socket of [target, client]) socket.close();
  };
  try {
    const line = await proxy.waitForLine(/^Proxy UDP listening on port \d+$/);
    const port = Number(line.split(" ")[5]);
    return { target, client, proxy, port, [Symbol.asyncDispose]: dispose };
  } catch (error) {
    await dispose();
    throw error;
  }
}

Deno.test("impair_proxy.ts relays datagrams both ways and prints its counts on SIGTERM", async () => {
  await using proxied = await proxyBetweenSockets(["--seed", "1"]);
  const { target, client, proxy, port } = proxied;
  await proxy.waitForLine(/loss 0%, duplicate 0%, reorder 0%, delay 0 ms ± 0 ms; seed 1$/);
  const buffer = new Uint8Array(100);
  await client.send(Uint8Array.of(1, 2, 3), { transport: "udp", hostname: "127.0.0.1", port });
  const [request, upstream] = await target.receive(buffer);
  assertEquals([...request], [1, 2, 3]);
  await target.send(Uint8Array.of(4, 5), upstream);
  const [reply, from] = await client.receive(buffer);
  assertEquals([...reply], [4, 5]);
  assertEquals((from as Deno.NetAddr).port, port, "the answer comes from the listening port");
  const stopped = await proxy.signal("SIGTERM");
  assertEquals(stopped.code, 0, describeRun(stopped));
  assertMatch(
    stopped.stdout,
    /^Counts: 1 from clients, 1 from the target, 0 between clients, 0 unroutable; 2 impaired: 0 lost, 0 duplicated, 0 reordered, 2 forwarded; 1 client$/m,
  );
});

Deno.test("impair_proxy.ts --rate spaces datagrams out and --queue drops what overflows", async () => {
  // 20,000 bytes a second: a 1,000-byte datagram takes 50 ms; the queue holds 4 of them.
  await using proxied = await proxyBetweenSockets([
    ...["--rate", "20000", "--queue", "4000", "--seed", "1"],
  ]);
  const { target, client, proxy, port } = proxied;
  await proxy.waitForLine(/rate 20000 B\/s, queue 4000 B; seed 1$/);
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port };
  const started = performance.now();
  for (let i = 0; i < 6; i++) await client.send(new Uint8Array(1000).fill(i), to);
  const buffer = new Uint8Array(2000);
  const arrivals: number[] = [];
  for (let i = 0; i < 4; i++) {
    const [data] = await target.receive(buffer);
    arrivals.push(data[0]);
  }
  const elapsed = performance.now() - started;
  assertEquals(arrivals, [0, 1, 2, 3], "the first four, in order; the rest overflowed");
  assert(elapsed >= 190, `four datagrams of 50 ms each took ${elapsed.toFixed(0)} ms`);
  const stopped = await proxy.signal("SIGTERM");
  assertEquals(stopped.code, 0, describeRun(stopped));
  assertMatch(
    stopped.stdout,
    /; bottleneck: 4 queued, 2 dropped by the full queue, mean wait \d+\.\d\d ms; 1 client$/m,
  );
});

Deno.test("impair_proxy.ts --burst loses datagrams in runs at the same long-run rate", async () => {
  /** The lengths of the runs of lost datagrams among `count` numbered ones sent through a proxy. */
  async function lossRuns(count: number, flags: string[]): Promise<number[]> {
    await using proxied = await proxyBetweenSockets(["--seed", "7", ...flags]);
    const { target, client, port } = proxied;
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port };
    const received = new Set<number>();
    const receiving = (async () => {
      const buffer = new Uint8Array(100);
      while (received.size < count) {
        const [data] = await target.receive(buffer);
        const n = new DataView(data.buffer, data.byteOffset).getUint16(0);
        received.add(n);
        if (n === count - 1) break;
      }
    })();
    for (let i = 0; i < count; i++) {
      const datagram = new Uint8Array(2);
      new DataView(datagram.buffer).setUint16(0, i);
      await client.send(datagram, to);
      // A few at a time, so that no socket between here and the target overflows.
      if (i % 20 === 19) await new Promise((resolve) => setTimeout(resolve, 4));
    }
    // The last one is always sent until it gets through: it marks the end.
    const last = new Uint8Array(2);
    new DataView(last.buffer).setUint16(0, count - 1);
    const resend = setInterval(() => client.send(last, to).catch(() => {}), 20);
    try {
      await receiving;
    } finally {
      clearInterval(resend);
    }
    const runs: number[] = [];
    let run = 0;
    for (let i = 0; i < count - 1; i++) {
      if (received.has(i)) {
        if (run > 0) runs.push(run);
        run = 0;
      } else run++;
    }
    if (run > 0) runs.push(run);
    return runs;
  }
  const count = 2000;
  const mean = (runs: number[]) => runs.reduce((a, b) => a + b, 0) / runs.length;
  const lost = (runs: number[]) => runs.reduce((a, b) => a + b, 0) / (count - 1);
  const independent = await lossRuns(count, ["--loss", "10%"]);
  const bursty = await lossRuns(count, ["--loss", "10%", "--burst", "8"]);
  for (const [label, runs] of [["independent", independent], ["bursts", bursty]] as const) {
    const share = lost(runs);
    assert(share > 0.05 && share < 0.15, `${label}: lost ${share.toFixed(3)}, not about 10%`);
  }
  assert(mean(independent) < 1.5, `independent losses come in runs of ${mean(independent)}`);
  assert(mean(bursty) > 4, `--burst 8 lost in runs of ${mean(bursty)} on average`);
});
