/**
 * Fuzzing: the codec against the fuzz pool in process, a regression test for
 * the TCP input the fuzzer found fatal to the accept loop, and the full run of
 * `scripts/fuzz.ts` (a million datagrams and thousands of malformed TCP
 * streams at a real server while real clients chat through it) as a process.
 *
 * `FUZZ_COUNT=N` changes the number of datagrams of the full run (default
 * 1,000,000); `FUZZ_SEED=N` repeats a run's pool.
 */
import * as net from "node:net";
import { assert, assertEquals, assertGreater, assertLess } from "@std/assert";
import { fromFileUrl } from "@std/path";
import { FrameDecoder } from "../lib/wire/frame_decoder.ts";
import { decodeMessage } from "../lib/wire/codec.ts";
import { ProtocolError } from "../lib/wire/protocol_error.ts";
import { FastRandom, FuzzCorpus, variantForSend } from "../scripts/_fuzz_corpus.ts";
import { TcpExchange, UdpRequester } from "../scripts/_wire_client.ts";
import { CONFIG_PATH, startServer, tempDir } from "./_processes.ts";

const FUZZ_PATH = fromFileUrl(new URL("../scripts/fuzz.ts", import.meta.url));
const COUNT = Number(Deno.env.get("FUZZ_COUNT") ?? 1_000_000);

Deno.test("decodeMessage() and FrameDecoder throw nothing but ProtocolError on the fuzz pool", () => {
  const seed = Number(Deno.env.get("FUZZ_SEED") ?? 1);
  const pool = new FuzzCorpus(seed, {
    liveTokens: [new Uint8Array(16).fill(1)],
    staleTokens: [new Uint8Array(16).fill(2)],
    captured: [],
    names: ["Fz a"],
    newNamePrefix: "Fz",
  }).build(20_000);
  const clientIds = new Uint8Array(8 * 1000).map((_, i) => i * 7);
  const random = new FastRandom(seed);
  const codes = new Map<string, number>();
  let decoded = 0;
  for (let i = 0; i < 100_000; i++) {
    const entry = pool[i % pool.length];
    const bytes = i < pool.length ? entry.bytes : variantForSend(entry, random, clientIds);
    try {
      decodeMessage(bytes);
      decoded++;
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      codes.set(error.code, (codes.get(error.code) ?? 0) + 1);
    }
  }
  for (
    const code of [
      "truncated",
      "bad_magic",
      "bad_version",
      "unknown_type",
      "too_long",
      "bad_utf8",
      "trailing_bytes",
    ]
  ) {
    assertGreater(codes.get(code) ?? 0, 100, `the pool reaches the ${code} check`);
  }
  assertGreater(decoded, 10_000, "many datagrams decode, to reach the handlers");
  // The same bytes as one TCP stream, in odd-sized pieces.
  const decoder = new FrameDecoder();
  let offset = 0;
  const stream = new Uint8Array(pool.slice(0, 2000).reduce((n, e) => n + e.bytes.length, 0));
  for (const entry of pool.slice(0, 2000)) {
    stream.set(entry.bytes, offset);
    offset += entry.bytes.length;
  }
  try {
    for (let at = 0; at < stream.length; at += 1 + random.below(700)) {
      for (const body of decoder.push(stream.subarray(at, at + 1 + random.below(700)))) {
        try {
          decodeMessage(body);
        } catch (error) {
          if (!(error instanceof ProtocolError)) throw error;
        }
      }
    }
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
  }
});

Deno.test("the server goes on accepting TCP connections after clients reset theirs at once", async () => {
  // Found by scripts/fuzz.ts: a connection reset before the server accepts it
  // made accept() fail with NotConnected, which ended the accept loop, so the
  // server never served TCP again (uploads, files, custom messages hung).
  await using dir = await tempDir("switchboard_fuzz_reset_");
  await using server = await startServer({ dataDir: dir.join("data"), logDir: dir.join("logs") });
  for (let round = 0; round < 3; round++) {
    await Promise.all(Array.from({ length: 20 }, () =>
      new Promise<void>((resolve) => {
        const socket = net.connect({ host: "127.0.0.1", port: server.tcpPort });
        socket.on("error", () => {});
        socket.on("close", () => resolve());
        socket.on("connect", () => socket.resetAndDestroy());
      })));
    // A sealed connection: a UDP hello learns the key, then the TCP handshake runs.
    const udp = new UdpRequester({
      hostname: "127.0.0.1",
      server: { hostname: "127.0.0.1", port: server.udpPort },
    });
    assertEquals((await udp.request({ type: "hello" }))?.type, "hello_ok");
    using tcp = await TcpExchange.connect("127.0.0.1", server.tcpPort, udp.tcpChannel());
    await udp.close();
    await tcp.send({
      type: "text",
      reqId: 1,
      client: "0123456789abcdef",
      name: "Nobody",
      token: new Uint8Array(16),
      text: "still serving?",
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const reply = await Promise.race([
      tcp.next(),
      new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), 3000)),
    ]);
    clearTimeout(timer);
    tcp[Symbol.dispose]();
    assertEquals(reply?.type, "text_ok", `round ${round}: the server stopped serving TCP`);
  }
  assertEquals(await server.stop(), 0);
});

Deno.test({
  name: `fuzz.ts: ${COUNT} datagrams and malformed TCP streams; the server survives and serves`,
  async fn() {
    const args = ["run", "--allow-all", "--config", CONFIG_PATH, FUZZ_PATH, "--count", `${COUNT}`];
    const seed = Deno.env.get("FUZZ_SEED");
    if (seed !== undefined) args.push("--seed", seed);
    args.push("--json");
    const started = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killer = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        child.kill("SIGINT");
        resolve();
      }, 600_000);
    });
    const [output] = await Promise.all([child.output(), Promise.race([child.status, killer])]);
    clearTimeout(timer);
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    const shown = `--- stdout ---\n${stdout.slice(-4000)}--- stderr ---\n${stderr.slice(-4000)}`;
    const line = stdout.split("\n").find((l) => l.startsWith("fuzz: "));
    console.log(`  ${line ?? "(no summary line)"}`);
    console.log(`  the whole run took ${((performance.now() - started) / 1000).toFixed(1)} s`);
    assertEquals(output.code, 0, shown);
    const json = stdout.split("\n").find((l) => l.startsWith('{"event":"fuzz_summary"')) ?? "";
    assert(json !== "", shown);
    const summary = JSON.parse(json);
    assertEquals(summary.ok, true, shown);
    assertEquals(summary.udp.sent, COUNT, "every datagram was sent");
    if (summary.udp.kernelDrops !== undefined) {
      assertLess(summary.udp.kernelDrops, COUNT / 2, "most datagrams reached the server's socket");
    }
    assertGreater(summary.tcp.streams, 0, "malformed TCP streams were sent");
    assertGreater(summary.tcp.halfOpenHeld, 0, "half-open connections were held");
    assertLess(summary.rss.peakKb, 300 * 1024, "the server's memory stayed under 300 MB");
    assertGreater(summary.clients.ops, 0, "the real clients worked throughout");
    assertEquals(summary.clients.failures, [], "every client operation succeeded in time");
    assertEquals(summary.clients.chatInOrder, true, "the peer chat arrived whole and in order");
    assertEquals(summary.serverExit, "stopped cleanly");
  },
});
