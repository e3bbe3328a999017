/**
 * The server's limits on real loopback sockets: TCP connections that idle,
 * dribble a frame (slowloris), send one too large or come too many at once
 * are closed with a last `error` frame saying why; uploads that take long but
 * keep coming are not; UDP floods from one address are dropped by its rate
 * limit while other addresses and live sessions go on. Small limits keep each
 * test within a few seconds.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { join } from "@std/path";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { EVICTION_GRACE_MS } from "../lib/server/connection_limits.ts";
import { ServerDriver, type ServerLimits } from "../lib/io/server_driver.ts";
import type { ServerChannel } from "../lib/client/server_channel.ts";
import type { Message, MessageOf } from "../lib/wire/messages.ts";
import { encodeMessage } from "../lib/wire/codec.ts";
import {
  assertOneErrorLine,
  pollUntil,
  runProgram,
  SERVER_PATH,
  serverArgs,
  startClient,
  startServer,
  tempDir,
  withTimeout,
} from "./_processes.ts";
import { channelTo, handshakeOn, openedFrame, sealedFrame, SealedUdp } from "./_sealed_wire.ts";

const HOST = "127.0.0.1";
const FAST_RETRY = { initialMs: 100, maxMs: 400, jitter: 0.2, giveUpMs: 5000 };

/** Runs `fn` with a server with these limits, closing it and its data afterwards. */
async function withServer(
  limits: ServerLimits,
  fn: (server: ServerDriver, dataDir: string) => Promise<void>,
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "switchboard_limits_" });
  const server = await ServerDriver.start({
    host: HOST,
    udpPort: 0,
    tcpPort: 0,
    dataDir,
    version: "0.0.0-test",
    limits,
  });
  try {
    await fn(server, dataDir);
  } finally {
    await server.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

/** Reads a connection to its end; returns the frames the server sent and how long it took. */
async function framesUntilClosed(
  conn: Deno.TcpConn,
  ms: number,
  channel?: ServerChannel,
): Promise<{ messages: Message[]; elapsedMs: number }> {
  const started = performance.now();
  const chunks: number[] = [];
  const buffer = new Uint8Array(4096);
  const read = async () => {
    while (true) {
      let n: number | null;
      try {
        n = await conn.read(buffer);
      } catch (error) {
        if (error instanceof Deno.errors.ConnectionReset) return;
        throw error;
      }
      if (n === null) return;
      chunks.push(...buffer.subarray(0, n));
    }
  };
  await withTimeout(read(), ms, "the server to close the connection");
  const bytes = Uint8Array.from(chunks);
  const messages: Message[] = [];
  for (let at = 0; at + 4 <= bytes.length;) {
    const length = new DataView(bytes.buffer, at).getUint32(0);
    const message = openedFrame(channel, bytes.subarray(at + 4, at + 4 + length));
    if (message !== undefined) messages.push(message);
    at += 4 + length;
  }
  return { messages, elapsedMs: performance.now() - started };
}

function closingReason(messages: Message[]): string {
  const last = messages.at(-1);
  if (last?.type !== "error" || last.reqId !== 0) {
    throw new Error(`expected a closing error frame, got ${JSON.stringify(messages)}`);
  }
  return last.message;
}

async function connect(server: ServerDriver): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: HOST, port: server.tcpPort, transport: "tcp" });
}

/** Reads one frame and opens it. */
async function readSealed(
  conn: Deno.TcpConn,
  channel: ServerChannel,
): Promise<Message | undefined> {
  const header = new Uint8Array(4);
  await readExactly(conn, header);
  const body = new Uint8Array(new DataView(header.buffer).getUint32(0));
  await readExactly(conn, body);
  return openedFrame(channel, body);
}

/** Runs a handshake on a new connection: the secure channel's one round trip. */
async function handshake(server: ServerDriver, conn: Deno.TcpConn): Promise<ServerChannel> {
  const channel = channelTo(server.publicKey);
  await handshakeOn(conn, channel);
  return channel;
}

/** Writes every byte: `Conn.write` may take only part of a large buffer. */
async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

async function readExactly(conn: Deno.Conn, into: Uint8Array): Promise<void> {
  let filled = 0;
  while (filled < into.length) {
    const n = await conn.read(into.subarray(filled));
    if (n === null) throw new Error("the connection closed early");
    filled += n;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `condition` holds, checking every 20 ms, for at most `ms`. */
async function waitFor(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const until = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > until) throw new Error(`timed out waiting for ${what}`);
    await delay(20);
  }
}

/** A UDP socket whose messages are sealed for the server; raw bytes go as they are. */
class RawUdp extends SealedUdp {
  override async send(message: Message | Uint8Array, attempt = 1): Promise<void> {
    if (message instanceof Uint8Array) return await this.sendRaw(message);
    return await super.send(message, attempt);
  }
}

async function registerRaw(udp: RawUdp, name: string, reqId = 1): Promise<Uint8Array> {
  const reply = await udp.ask({
    type: "register",
    reqId,
    client: "00000000000000" + (reqId & 0xff).toString(16).padStart(2, "0"),
    name,
    udpPort: 0,
    tcpPort: 5001,
  });
  if (reply.type !== "register_ok") throw new Error(`register ${name}: ${JSON.stringify(reply)}`);
  return reply.token;
}

// ------------------------------------------------------------------ TCP

Deno.test("ServerDriver closes a TCP connection idle for tcpIdleMs, saying why", async () => {
  await withServer({ tcpIdleMs: 300, tcpFrameMs: 5000 }, async (server) => {
    const conn = await connect(server);
    try {
      // A handshake answered, then silence.
      const channel = await handshake(server, conn);
      const { messages, elapsedMs } = await framesUntilClosed(conn, 5000, channel);
      assertEquals(
        closingReason(messages),
        "Closing the connection: nothing came or went for 0.3 s",
      );
      assert(elapsedMs >= 250, `closed after ${elapsedMs} ms`);
      assertEquals(server.traffic.tcpTimedOut, 1);
    } finally {
      conn.close();
    }
  });
});

Deno.test("ServerDriver closes a frame that dribbles in (slowloris) after tcpFrameMs", async () => {
  await withServer({ tcpIdleMs: 10_000, tcpFrameMs: 500 }, async (server) => {
    const conn = await connect(server);
    try {
      // A frame of 100 bytes, sent a byte every 50 ms: always progressing, never done in time.
      const header = Uint8Array.of(0, 0, 0, 100);
      const dribble = (async () => {
        try {
          for (const byte of [...header, ...new Uint8Array(100)]) {
            await conn.write(Uint8Array.of(byte));
            await delay(50);
          }
        } catch {
          // closed by the server, as it should be
        }
      })();
      const { messages, elapsedMs } = await framesUntilClosed(conn, 5000);
      await dribble;
      assertStringIncludes(
        closingReason(messages),
        "Closing the connection: a frame did not arrive whole within 0.5 s of its first byte",
      );
      assert(elapsedMs < 4500, `closed after ${elapsedMs} ms, before the frame could finish`);
    } finally {
      conn.close();
    }
  });
});

Deno.test("ServerDriver closes a connection whose first request does not come whole within tcpFirstFrameMs", async () => {
  await withServer(
    { tcpIdleMs: 10_000, tcpFrameMs: 10_000, tcpFirstFrameMs: 400 },
    async (server) => {
      const conn = await connect(server);
      try {
        // Bytes keep coming, well within the idle and frame limits, but no whole frame.
        const dribble = (async () => {
          try {
            for (const byte of [0, 0, 0, 100, ...new Uint8Array(100)]) {
              await conn.write(Uint8Array.of(byte));
              await delay(50);
            }
          } catch {
            // closed by the server, as it should be
          }
        })();
        const { messages, elapsedMs } = await framesUntilClosed(conn, 5000);
        await dribble;
        assertEquals(
          closingReason(messages),
          "Closing the connection: no whole request came within 0.4 s of connecting",
        );
        assert(elapsedMs < 3000, `closed after ${elapsedMs} ms`);
      } finally {
        conn.close();
      }
    },
  );
});

Deno.test("ServerDriver refuses a frame over the size limit with a clear error", async () => {
  await withServer({}, async (server) => {
    const conn = await connect(server);
    try {
      await conn.write(Uint8Array.of(0, 1, 0, 1)); // 65,537 bytes announced
      const { messages } = await framesUntilClosed(conn, 5000);
      assertEquals(
        closingReason(messages),
        "Closing the connection: Frame declares 65537 bytes; the limit is 65536",
      );
      assertEquals(server.traffic.rejected, 1);
    } finally {
      conn.close();
    }
  });
});

Deno.test("ServerDriver caps TCP connections per address and in all", async (t) => {
  await t.step("per address: the oldest connection without a login gives way", async () => {
    await withServer({ maxConnectionsPerAddress: 2, tcpIdleMs: 10_000 }, async (server) => {
      const first = await connect(server);
      const second = await connect(server);
      try {
        await waitFor(() => server.connectionCount === 2, "two connections");
        await delay(EVICTION_GRACE_MS + 100); // a newer connection may push out only an older one
        const third = await connect(server);
        try {
          const { messages } = await framesUntilClosed(first, 5000);
          assertEquals(
            closingReason(messages),
            "Closing the connection: making room for a newer connection from 127.0.0.1 (at most " +
              "2 connections without a login from one address); log in to keep a connection",
          );
          assertEquals(server.traffic.tcpRefused, 1);
          // Those admitted work: each runs its handshake.
          await handshake(server, second);
          await handshake(server, third);
        } finally {
          third.close();
        }
      } finally {
        first.close();
        second.close();
      }
    });
  });

  await t.step("in all: the oldest connection without a login gives way", async () => {
    await withServer({ maxConnections: 1, tcpIdleMs: 10_000 }, async (server) => {
      const first = await connect(server);
      try {
        await waitFor(() => server.connectionCount === 1, "one connection");
        await delay(EVICTION_GRACE_MS + 100);
        const second = await connect(server);
        try {
          const { messages } = await framesUntilClosed(first, 5000);
          assertEquals(
            closingReason(messages),
            "Closing the connection: making room for a newer connection (the server has 1 " +
              "connections; those without a login give way first)",
          );
          await handshake(server, second);
        } finally {
          second.close();
        }
      } finally {
        first.close();
      }
    });
  });
});

Deno.test("ServerDriver takes an upload that lasts longer than every limit while it keeps coming", async () => {
  await withServer({ tcpIdleMs: 800, tcpFrameMs: 800 }, async (server) => {
    const udp = new RawUdp(HOST, server.udpPort);
    // Registered first: the registry write can take longer than the idle limit.
    const token = await registerRaw(udp, "Slow Steady").catch(async (error) => {
      await udp.close();
      throw error;
    });
    const conn = await connect(server);
    try {
      const chunks = Array.from({ length: 6 }, (_, i) => new Uint8Array(3000).fill(i + 1));
      const content = Uint8Array.from(chunks.flatMap((c) => [...c]));
      const upload: MessageOf<"upload"> = {
        type: "upload",
        reqId: 41,
        client: "00000000000000c1",
        token,
        name: "slow.bin",
        size: content.length,
        sha256: sha256(content),
      };
      const started = performance.now();
      const channel = await handshake(server, conn);
      await writeAll(conn, sealedFrame(channel, upload));
      for (const data of chunks) {
        // Each frame arrives in two halves 200 ms apart, with 250 ms between frames:
        // never silent for 800 ms, no frame slower than 800 ms, 2.7 s in all.
        const frame = sealedFrame(channel, { type: "file_chunk", reqId: 41, data });
        await delay(250);
        await writeAll(conn, frame.subarray(0, 1500));
        await delay(200);
        await writeAll(conn, frame.subarray(1500));
      }
      assertEquals(await withTimeout(readSealed(conn, channel), 5000, "upload_ok"), {
        type: "upload_ok",
        reqId: 41,
        size: content.length,
      });
      assert(performance.now() - started > 2000, "the upload took longer than the limits");
      assertEquals(server.traffic.tcpTimedOut, 0);
    } finally {
      conn.close();
      await udp.close();
    }
  });
});

Deno.test("ServerDriver closes a connection that stops reading its download", async () => {
  await withServer({ tcpIdleMs: 500, tcpFrameMs: 5000 }, async (server) => {
    const udp = new RawUdp(HOST, server.udpPort);
    // Registered first: the registry write can take longer than the idle limit.
    const token = await registerRaw(udp, "Stops Reading").catch(async (error) => {
      await udp.close();
      throw error;
    });
    const conn = await connect(server);
    try {
      // 16 MiB: more than the loopback socket buffers of both ends hold.
      const size = 16 * 1024 * 1024;
      const content = new Uint8Array(size);
      for (let i = 0; i < size; i += 4096) content[i] = i >> 12;
      const client = "00000000000000d1";
      const channel = await handshake(server, conn);
      await writeAll(
        conn,
        sealedFrame(channel, {
          type: "upload",
          reqId: 1,
          client,
          token,
          name: "big.bin",
          size,
          sha256: sha256(content),
        }),
      );
      for (let at = 0; at < size; at += 60_000) {
        const data = content.subarray(at, Math.min(size, at + 60_000));
        await writeAll(conn, sealedFrame(channel, { type: "file_chunk", reqId: 1, data }));
      }
      const ok = await withTimeout(readSealed(conn, channel), 10_000, "upload_ok");
      assertEquals(ok?.type, "upload_ok");
      // Ask for it back, and read nothing: the server's writes stall, then it gives up.
      const before = server.traffic.tcpTimedOut;
      await writeAll(
        conn,
        sealedFrame(channel, { type: "download", reqId: 2, client, token, name: "big.bin" }),
      );
      await waitFor(
        () => server.traffic.tcpTimedOut > before,
        "the stalled download's close",
        8000,
      );
      await waitFor(() => server.connectionCount === 0, "the connection to be gone");
    } finally {
      conn.close();
      await udp.close();
    }
  });
});

Deno.test("ClientDriver uploads under tight TCP limits and reconnects after an idle close", async () => {
  await withServer({ tcpIdleMs: 500, tcpFrameMs: 1000 }, async (server, dataDir) => {
    const client = await ClientDriver.open({
      serverHost: HOST,
      serverPort: server.udpPort,
      udpPort: 0,
      tcpPort: 5001,
      name: "Idle Ida",
      via: "udp",
      retry: FAST_RETRY,
    });
    try {
      const hello = await client.run({ kind: "hello" });
      assert(hello.ok, JSON.stringify(hello));
      const registered = await client.run({ kind: "register" });
      assert(registered.ok, JSON.stringify(registered));
      const path = join(dataDir, "blob.bin");
      const bytes = new Uint8Array(2 * 1024 * 1024);
      for (let i = 0; i < bytes.length; i += 65536) {
        crypto.getRandomValues(bytes.subarray(i, i + 65536));
      }
      await Deno.writeFile(path, bytes);
      const uploaded = await client.upload(path, "blob.bin");
      assert(uploaded.ok, JSON.stringify(uploaded));
      // The client keeps its connection; the server closes it once idle.
      await waitFor(() => server.traffic.tcpTimedOut === 1, "the idle close", 5000);
      await waitFor(() => server.connectionCount === 0, "the connection to be gone");
      const again = await client.run({ kind: "tcp", text: "still here" });
      assert(again.ok, JSON.stringify(again));
      const files = await client.run({ kind: "files" });
      assert(files.ok, JSON.stringify(files));
    } finally {
      await client.close();
    }
  });
});

// ------------------------------------------------------------------ UDP

Deno.test("ServerDriver rate-limits one address's flood without starving others or sessions", async () => {
  await withServer({ rateLimit: 1, sessionRateLimit: 1000 }, async (server) => {
    const flooder = new RawUdp("127.0.0.2", server.udpPort);
    const neighbour = new RawUdp("127.0.0.2", server.udpPort);
    const other = new RawUdp(HOST, server.udpPort);
    try {
      // A session on the flooding address, opened before the flood.
      const token = await registerRaw(neighbour, "Near Flood", 1);
      // 2,000 datagrams of garbage and 200 forged requests, in bursts of 110 (a
      // socket's receive buffer holds about 256 small datagrams, and the server
      // shares this test's event loop).
      for (let i = 0; i < 2000; i++) {
        await flooder.send(Uint8Array.of(0x53, 0x57, 2, 99, i & 0xff));
        if (i % 10 === 0) {
          await flooder.send({
            type: "heartbeat",
            reqId: i,
            client: "00000000000000ee",
            token: new Uint8Array(16),
          });
        }
        if (i % 100 === 99) await delay(5);
      }
      await waitFor(
        () => server.traffic.datagramsIn >= 1000,
        "the flood to arrive (a loaded machine may drop some)",
      );
      assert(server.traffic.rateLimited > 500, `only ${server.traffic.rateLimited} dropped`);
      // The flooding address gets nothing more without a session but what its port's first-contact
      // budget lets through for a clear hello (3 at once, then one a second): of 10 clear hellos
      // sent together, most are dropped.
      const hello = { type: "hello", reqId: 7001, client: "00000000000000ef" } as const;
      const before = server.traffic.rateLimited;
      for (let i = 0; i < 10; i++) {
        await flooder.sendRaw(encodeMessage({ ...hello, reqId: 7100 + i }));
      }
      await waitFor(
        () => server.traffic.rateLimited >= before + 6,
        "most of 10 clear hellos dropped",
      );
      // ... but its live session goes on, and so does everyone else.
      const beat = await neighbour.ask({
        type: "heartbeat",
        reqId: 7002,
        client: "0000000000000001",
        token,
      });
      assertEquals(beat.type, "heartbeat_ok");
      assertEquals((await other.ask({ ...hello, reqId: 7003 })).type, "hello_ok");
      await registerRaw(other, "Far Away", 2);
      // A second later the bucket has earned a token: the address may ask again.
      await delay(1100);
      assertEquals((await flooder.ask({ ...hello, reqId: 7004 })).type, "hello_ok");
    } finally {
      await flooder.close();
      await neighbour.close();
      await other.close();
    }
  });
});

Deno.test("ServerDriver with rate limits off answers every request", async () => {
  await withServer({ rateLimit: 0, sessionRateLimit: 0 }, async (server) => {
    const udp = new RawUdp(HOST, server.udpPort);
    try {
      // 600 hellos, three times the burst of the default limit, 50 at a time
      // (a socket's receive buffer holds about 256 small datagrams).
      for (let batch = 0; batch < 12; batch++) {
        for (let i = 0; i < 50; i++) {
          await udp.send({ type: "hello", reqId: batch * 50 + i, client: "00000000000000aa" });
        }
        const until = performance.now() + 2000;
        while (udp.received.length < (batch + 1) * 50 && performance.now() < until) {
          await delay(10);
        }
      }
      const replies = udp.received.length;
      assertEquals(server.traffic.rateLimited, 0);
      assert(replies > 500, `${replies} replies (a loaded machine may drop a few)`);
    } finally {
      await udp.close();
    }
  });
});

// ------------------------------------------------------------------ the server process

Deno.test("server prints a status line on SIGUSR2 and on 'status', and logs when a limit triggers", async () => {
  await using dir = await tempDir();
  const logDir = dir.join("logs");
  await using server = await startServer({
    dataDir: dir.join("data"),
    logDir,
    extraArgs: ["--rate-limit", "10", "--max-connections-per-ip", "1", "--tcp-idle", "2"],
  });
  await server.waitForLine(
    /^Limits: UDP per IP address 10\/s without a session, 2000\/s with one; TCP 1 connections without a login per IP address, 512 in all, closed after 2 s idle or a frame slower than 30 s; 20 new names a minute per IP address$/,
  );
  await server.waitForLine(/^Server running/);

  // A flood from 127.0.0.2: 300 datagrams of garbage, far over 10/s.
  const flooder = new RawUdp("127.0.0.2", server.udpPort);
  try {
    for (let i = 0; i < 300; i++) {
      await flooder.send(Uint8Array.of(1, 2, 3, i & 0xff));
      if (i % 50 === 49) await delay(5);
    }
  } finally {
    await flooder.close();
  }
  // Two TCP connections from one address: the first, once it had its grace
  // time, gives way; the second idles out.
  const first = await Deno.connect({ hostname: HOST, port: server.tcpPort });
  await delay(EVICTION_GRACE_MS + 100);
  const second = await Deno.connect({ hostname: HOST, port: server.tcpPort });
  try {
    const refused = await framesUntilClosed(first, 5000);
    assertStringIncludes(
      closingReason(refused.messages),
      "making room for a newer connection from 127.0.0.1",
    );
    const idled = await framesUntilClosed(second, 5000);
    assertStringIncludes(closingReason(idled.messages), "nothing came or went for 2 s");
  } finally {
    first.close();
    second.close();
  }

  let from = server.lines.length;
  server.process.kill("SIGUSR2");
  const onSignal = await server.waitForLine(/^Status: /, 5000, from);
  const rateLimited = Number(/(\d+) rate-limited/.exec(onSignal)?.[1]);
  assert(rateLimited > 100, onSignal);
  assertStringIncludes(onSignal, "1 TCP refused, 1 TCP timed out");
  // (The closed connections may still be counted: the server forgets them a moment after.)
  assertStringIncludes(onSignal, "0 registered, 0 active (0 watching), ");

  from = server.lines.length;
  await server.program.write("status\n");
  const typed = await server.waitForLine(/^Status: /, 5000, from);
  assert(Number(/(\d+) rate-limited/.exec(typed)?.[1]) >= rateLimited, typed);
  from = server.lines.length;
  await server.program.write("help me\n");
  await server.waitForLine(
    /^Unknown command "help me": type status \(or press Enter\)$/,
    5000,
    from,
  );
  // The end of its input changes nothing: it still stops cleanly on a signal.
  await server.program.closeStdin();
  assertEquals(await server.stop("SIGTERM"), 0);
  assertEquals(server.errorLines, [], "nothing on stderr: the limits log to the file only");

  const log = await Deno.readTextFile(join(logDir, "server.log"));
  const rateLines = log.split("\n").filter((line) => line.includes("Rate limit: dropped"));
  assertEquals(rateLines.length, 1, "one line per address per 10 s, not one per datagram");
  assertStringIncludes(rateLines[0], "UDP datagrams from 127.0.0.2 without a session");
  assertStringIncludes(log, "TCP limit: closed 1 connections from 127.0.0.1 since the last report");
  assertStringIncludes(log, "Closed TCP connection 2 from 127.0.0.1");
  assert(
    log.split("\n").filter((line) => line.includes("INFO    switchboard.server: Status: "))
      .length === 2,
  );
});

Deno.test("client carries on, saying nothing, when the server closes its idle TCP connection", async () => {
  await using dir = await tempDir();
  const logDir = dir.join("logs");
  await using server = await startServer({
    dataDir: dir.join("data"),
    logDir,
    extraArgs: ["--tcp-idle", "0.5"],
  });
  await using client = startClient(
    ["--server", server.address, "--name", "Ivy Idle", "--log-dir", logDir, "--tcp-port", "5001"],
    { cwd: dir.path },
  );
  await client.write("register\ntcp first\n");
  await client.waitForLine(/^Registered and logged in as "Ivy Idle"$/);
  const first = client.stdout.lines.length;
  await server.waitForLine(/first/);
  // Past the idle limit: the server closes the client's connection, and logs it.
  const logFile = join(logDir, "server.log");
  await pollUntil(
    async () => (await Deno.readTextFile(logFile)).includes("nothing came or went") || undefined,
    5000,
    "the idle close in the log",
  );
  // And the client saw it: a request written before then would go out on the closing
  // connection and fail with it (the race a loaded CI machine once lost).
  await pollUntil(
    async () =>
      (await Deno.readTextFile(join(logDir, "client.log"))).includes(
        "The server closed the TCP connection",
      ) || undefined,
    5000,
    "the client's note of the close",
  );
  await client.write("tcp second\n");
  await server.waitForLine(/second/).catch((error) => {
    // It failed once in CI (the client logged out after the idle close): say what the client said.
    throw new Error(
      `${(error as Error).message}\n--- client stdout ---\n${client.stdout.text}\n` +
        `--- client stderr ---\n${client.stderr.text}`,
    );
  });
  const result = await client.finished();
  assertEquals(result.code, 0, result.stderr);
  assertEquals(result.stderr, "");
  assert(
    !client.stdout.lines.slice(first).some((line) => /closed|connection|error/i.test(line)),
    client.stdout.text,
  );
  assertEquals(await server.stop(), 0);
});

Deno.test("server refuses bad limit flags with exit 2 and lists them in --help", async () => {
  await using dir = await tempDir();
  const help = await runProgram(SERVER_PATH, { args: ["--help"] });
  for (
    const flag of [
      "--rate-limit",
      "--session-rate-limit",
      "--max-connections",
      "--max-connections-per-ip",
      "--tcp-idle",
      "--tcp-frame-timeout",
    ]
  ) {
    assertStringIncludes(help.stdout, flag);
  }
  const cases: [string[], RegExp][] = [
    [["--rate-limit", "1.5"], /--rate-limit must be a whole number from 0 to 1000000/],
    [["--max-connections", "0"], /--max-connections must be a whole number from 1/],
    [["--max-connections-per-ip", "x"], /--max-connections-per-ip must be a whole number/],
    [["--tcp-idle", "0"], /--tcp-idle must be a number of seconds above 0/],
    [["--tcp-frame-timeout", "soon"], /--tcp-frame-timeout must be a number of seconds/],
  ];
  for (const [args, pattern] of cases) {
    const result = await runProgram(SERVER_PATH, {
      args: [...serverArgs(dir.join("data"), dir.join("logs")), ...args],
    });
    assertEquals(result.code, 2, result.stderr);
    assertOneErrorLine(result, pattern);
  }
});
