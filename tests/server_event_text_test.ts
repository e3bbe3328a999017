import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import type { Endpoint } from "../lib/server/server_core.ts";
import { serverEventText } from "../lib/server/server_event_text.ts";

const FROM: Endpoint = { transport: "udp", address: "127.0.0.1", port: 4000 };

Deno.test("serverEventText() keeps the first 200 characters of a long message and its size", () => {
  const { text } = serverEventText({
    kind: "text",
    from: FROM,
    reqId: 9,
    name: "",
    verified: false,
    text: "é".repeat(60_000 / 2),
  });
  assertStringIncludes(text, `"${"é".repeat(200)}"… (60000 bytes in all)`);
  assert(text.length < 400, `the line is short: ${text.length} characters`);
  assertStringIncludes(text, "over UDP, request 9");
});

Deno.test("serverEventText() escapes line breaks, quotes and bidi overrides in names", () => {
  const { text } = serverEventText({
    kind: "text",
    from: FROM,
    reqId: 1,
    name: 'Mal"lory\n\u202Eevil',
    verified: false,
    text: "hi",
  });
  assertEquals(text.includes("\n") || text.includes("\u202E"), false);
  assertStringIncludes(text, '(claims "Mal\\"lory\\n\\u202eevil", unverified)');
});

Deno.test("serverEventText() tells a login, and whether it replaced an older session", () => {
  const event = {
    kind: "logged_in",
    name: "Alice",
    ip: "10.0.0.1",
    udpPort: 40001,
    tcpPort: 5001,
    transport: "udp",
    replaced: false,
  } as const;
  assertEquals(serverEventText(event), {
    level: "info",
    text: '"Alice" logged in from 10.0.0.1 (UDP port 40001, TCP port 5001) over UDP',
  });
  assertEquals(
    serverEventText({ ...event, transport: "tcp", replaced: true }).text,
    '"Alice" logged in from 10.0.0.1 (UDP port 40001, TCP port 5001) over TCP, ' +
      "replacing its older session",
  );
});

Deno.test("serverEventText() tells why a client went offline", () => {
  const cases = [
    ["exit", '"Bob" went offline (logged out)'],
    ["lease", '"Bob" went offline (its lease ran out without a heartbeat)'],
    ["deregister", '"Bob" went offline (deregistered)'],
    ["shutdown", '"Bob" went offline (server shutdown)'],
  ] as const;
  for (const [why, text] of cases) {
    assertEquals(serverEventText({ kind: "logged_out", name: "Bob", why }), {
      level: "info",
      text,
    });
  }
});

Deno.test("serverEventText() shows at most 20 active names, then a count", () => {
  assertEquals(serverEventText({ kind: "active", names: [] }).text, "Active (0): nobody");
  assertEquals(
    serverEventText({ kind: "active", names: ["Alice", "Bob"] }).text,
    'Active (2): "Alice", "Bob"',
  );
  const twenty = Array.from({ length: 20 }, (_, i) => `user${i}`);
  const exactly = serverEventText({ kind: "active", names: twenty }).text;
  assertStringIncludes(exactly, '"user19"');
  assertEquals(exactly.includes("more"), false);

  const names = Array.from({ length: 25 }, (_, i) => `user${i}`);
  const { level, text } = serverEventText({ kind: "active", names });
  assertEquals(level, "info");
  assert(text.startsWith('Active (25): "user0", "user1", '), text);
  assert(text.endsWith('"user19" and 5 more'), text);
  assertEquals(text.includes('"user20"'), false);
});

Deno.test("serverEventText() says how many active names are this instance's with shared presence", () => {
  const names = ["Alice", "Bob"];
  assertEquals(
    serverEventText({ kind: "active", names, here: 1 }).text,
    'Active (2, 1 on this instance): "Alice", "Bob"',
  );
  // After a shutdown: the other instances' clients, none of this one's.
  assertEquals(
    serverEventText({ kind: "active", names, here: 0 }).text,
    'Active (2, none on this instance): "Alice", "Bob"',
  );
});

Deno.test("serverEventText() escapes control characters in active names", () => {
  const { text } = serverEventText({ kind: "active", names: ["a\u001b[31mb"] });
  assertEquals(text.includes("\u001b"), false);
});

Deno.test("serverEventText() tells stored, deleted and sent files", () => {
  const sha256 = "ab".repeat(32);
  assertEquals(
    serverEventText({ kind: "file_stored", user: "Alice", name: "data 1.csv", size: 42, sha256 }),
    {
      level: "info",
      text: `Stored file "data 1.csv" for "Alice" (42 bytes, SHA-256 ${sha256})`,
    },
  );
  assertEquals(serverEventText({ kind: "file_deleted", user: "Alice", name: "data 1.csv" }), {
    level: "info",
    text: 'Deleted file "data 1.csv" of "Alice"',
  });
  assertEquals(
    serverEventText({ kind: "file_sent", user: "Alice", name: "data 1.csv", size: 42 }),
    { level: "info", text: 'Sending file "data 1.csv" (42 bytes) to "Alice"' },
  );
});

Deno.test("serverEventText() renders registrations without secrets", () => {
  assertEquals(
    serverEventText({
      kind: "registered",
      name: "Alice",
      reqId: 3,
      fingerprint: "00".repeat(16),
      ip: "10.0.0.1",
      udpPort: 40001,
      tcpPort: 5001,
      transport: "udp",
    }),
    {
      level: "info",
      text: 'Registered "Alice" at 10.0.0.1 (UDP port 40001, TCP port 5001) over UDP, request 3',
    },
  );
  assertEquals(
    serverEventText({
      kind: "deregistered",
      name: "Bob",
      reqId: 7,
      fingerprint: "00".repeat(16),
      transport: "udp",
    }).text,
    'Deregistered "Bob" over UDP, request 7',
  );
});

Deno.test("serverEventText() tells an expired identity, when it was last seen and its files", () => {
  const lastSeen = "2026-01-02T03:04:05.000Z";
  assertEquals(serverEventText({ kind: "expired", name: "Bob", lastSeen, files: 1 }), {
    level: "info",
    text: `Expired "Bob": not seen since ${lastSeen}; removed with 1 stored file`,
  });
  assertStringIncludes(
    serverEventText({ kind: "expired", name: "Bob", lastSeen, files: 0 }).text,
    "removed with 0 stored files",
  );
});

Deno.test("serverEventText() tells what the limits did, for the log only", () => {
  const rate = serverEventText({
    kind: "rate_limited",
    transport: "udp",
    address: "192.0.2.7",
    dropped: 12,
    session: false,
    ratePerSecond: 100,
    burst: 200,
  });
  assertEquals(rate.level, "warning");
  assertEquals(rate.quiet, true);
  assertStringIncludes(
    rate.text,
    "Rate limit: dropped 12 UDP datagrams from 192.0.2.7 without a session since the last " +
      "report (limit 100/s per address, bursts of 200)",
  );
  const refused = serverEventText({
    kind: "connection_refused",
    address: "192.0.2.7",
    refused: 3,
    hit: { kind: "total", limit: 512 },
  });
  assertEquals(refused.quiet, true);
  assertStringIncludes(refused.text, "TCP limit: refused 3 connections from 192.0.2.7");
  const idle = serverEventText({
    kind: "connection_closed",
    connId: 4,
    address: "192.0.2.7",
    port: 6000,
    hit: { kind: "idle", limitMs: 60_000 },
  });
  assertEquals([idle.level, idle.quiet], ["info", true]);
  assertEquals(
    idle.text,
    "Closed TCP connection 4 from 192.0.2.7:6000: nothing came or went for 60 s",
  );
  const slow = serverEventText({
    kind: "connection_closed",
    connId: 5,
    address: "192.0.2.7",
    port: 6001,
    hit: { kind: "slow_frame", limitMs: 30_000, pendingBytes: 10 },
  });
  assertEquals(slow.level, "warning");
  assertStringIncludes(slow.text, "TCP limit: closed connection 5 from 192.0.2.7:6001: a frame");
  assertEquals(serverEventText({ kind: "active", names: [] }).quiet, undefined);
});

Deno.test("serverEventText() says a failed save once, whether or not the store's reason says it", () => {
  assertEquals(
    serverEventText({
      kind: "save_failed",
      reason: "Cannot save the registry: Redis at redis://127.0.0.1:6379 is unreachable",
    }).text,
    "Cannot save the registry: Redis at redis://127.0.0.1:6379 is unreachable",
  );
  assertEquals(
    serverEventText({ kind: "save_failed", reason: "No space left on device" }).text,
    "Could not save the registry: No space left on device",
  );
});
