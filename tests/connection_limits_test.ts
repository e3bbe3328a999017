import { assert, assertEquals, assertThrows } from "@std/assert";
import {
  ConnectionLimits,
  connectionLimitText,
  type ConnectionSample,
  EVICTION_GRACE_MS,
} from "../lib/server/connection_limits.ts";

/** A connection's counters, as the driver would sample them. */
function sample(over: Partial<ConnectionSample> = {}): ConnectionSample {
  return {
    bytesRead: 0,
    bytesWritten: 0,
    framesRead: 0,
    pendingBytes: 0,
    reading: true,
    busy: false,
    ...over,
  };
}

Deno.test("ConnectionLimits.open() caps connections per address and in all", () => {
  const limits = new ConnectionLimits({ maxPerAddress: 2, maxTotal: 3 });
  assertEquals(limits.open(0, 1, "192.0.2.1"), undefined);
  assertEquals(limits.open(0, 2, "192.0.2.1"), undefined);
  assertEquals(limits.open(0, 3, "192.0.2.1")?.hit, { kind: "per_address", limit: 2 });
  assertEquals(limits.open(0, 4, "::ffff:192.0.2.1")?.hit.kind, "per_address", "same address");
  assertEquals(limits.open(0, 5, "192.0.2.2"), undefined);
  assertEquals(limits.open(0, 6, "192.0.2.3")?.hit, { kind: "total", limit: 3 });
  assertEquals(limits.size, 3);
  limits.close(1);
  limits.close(1); // twice is harmless
  limits.close(3); // never admitted: harmless
  assertEquals(limits.size, 2);
  assertEquals(limits.open(0, 7, "192.0.2.1"), undefined, "a closed one frees its slot");
});

Deno.test("ConnectionLimits.makeRoom() closes the oldest unauthenticated connection of the address at its cap", () => {
  const limits = new ConnectionLimits({ maxPerAddress: 2, maxTotal: 10 });
  assertEquals(limits.makeRoom(0, "192.0.2.1"), undefined, "room enough");
  limits.open(0, 1, "192.0.2.1");
  limits.open(1, 2, "192.0.2.1");
  limits.open(2, 3, "192.0.2.2");
  // Another address's cap is its own.
  assertEquals(limits.makeRoom(5_003, "192.0.2.2"), undefined);
  const room = limits.makeRoom(5_003, "::ffff:192.0.2.1");
  assertEquals(room, {
    connId: 1,
    hit: { kind: "made_room", scope: "per_address", limit: 2 },
    report: { closed: 1 },
  });
  assertEquals(limits.size, 2, "forgotten at once");
  assertEquals(limits.open(3, 4, "192.0.2.1"), undefined);
  assertEquals(limits.makeRoom(5_004, "192.0.2.1")?.connId, 2, "then the next oldest");
  assertEquals(limits.makeRoom(5_004, "192.0.2.1"), undefined, "room again");
  limits.close(1); // already forgotten: harmless
  assertEquals(limits.size, 2);
});

Deno.test("ConnectionLimits.makeRoom() never pushes out a connection younger than EVICTION_GRACE_MS", () => {
  // Squatters that reconnect the moment they are closed must not push a new
  // client out before it could log in.
  const limits = new ConnectionLimits({ maxPerAddress: 2, maxTotal: 10 });
  const grace = EVICTION_GRACE_MS;
  limits.open(0, 1, "192.0.2.1");
  limits.open(grace - 100, 2, "192.0.2.1");
  assertEquals(limits.makeRoom(grace - 1, "192.0.2.1"), undefined, "1 is still young");
  assertEquals(limits.makeRoom(grace, "192.0.2.1")?.connId, 1, "1 had its time");
  assertEquals(limits.open(grace, 3, "192.0.2.1"), undefined);
  assertEquals(limits.makeRoom(2 * grace - 101, "192.0.2.1"), undefined, "2 and 3 are young");
  assertEquals(limits.makeRoom(2 * grace - 100, "192.0.2.1")?.connId, 2);
});

Deno.test("ConnectionLimits.authenticate() moves a connection to its user's allowance; it never gives way", () => {
  const limits = new ConnectionLimits({ maxPerAddress: 2, maxPerUser: 2, maxTotal: 4 });
  limits.open(0, 1, "192.0.2.1");
  limits.open(0, 2, "192.0.2.1");
  assert(limits.authenticate(1, "ann"));
  assert(limits.authenticate(1, "ann"), "twice is harmless");
  // The address has one unauthenticated connection: room for one more.
  assertEquals(limits.makeRoom(0, "192.0.2.1"), undefined);
  assertEquals(limits.open(0, 3, "192.0.2.1"), undefined);
  assert(limits.authenticate(3, "ann"));
  // Ann is at her allowance: a third stays unauthenticated.
  limits.open(0, 4, "192.0.2.3");
  assertEquals(limits.authenticate(4, "ann"), false);
  // The total (4) is reached: the oldest unauthenticated one (2) gives way,
  // not the older authenticated 1.
  assertEquals(limits.makeRoom(5_001, "192.0.2.9")?.connId, 2);
  assertEquals(limits.open(1, 5, "192.0.2.9"), undefined);
  assertEquals(limits.makeRoom(5_001, "192.0.2.9")?.connId, 4);
  assertEquals(limits.open(1, 6, "192.0.2.9"), undefined);
  assert(limits.authenticate(5, "bob"));
  assert(limits.authenticate(6, "bob"));
  // All four authenticated: nobody gives way, the new one is refused.
  assertEquals(limits.makeRoom(2, "192.0.2.10"), undefined);
  assertEquals(limits.open(2, 7, "192.0.2.10")?.hit, { kind: "total", limit: 4 });
  // Closing an authenticated one frees its user's allowance.
  limits.close(1);
  limits.open(3, 8, "192.0.2.1");
  assert(limits.authenticate(8, "ann"));
  assertEquals(limits.authenticate(99, "ann"), false, "unknown connection");
});

Deno.test("ConnectionLimits.check() closes a connection whose first frame does not come within firstFrameMs", () => {
  const limits = new ConnectionLimits({ firstFrameMs: 5000, idleMs: 60_000, frameMs: 30_000 });
  limits.open(0, 1, "192.0.2.1");
  limits.open(0, 2, "192.0.2.1");
  // Bytes keep coming, but the first frame never completes.
  assertEquals(limits.check(4000, 1, sample({ bytesRead: 3, pendingBytes: 3 })), undefined);
  assertEquals(limits.check(5000, 1, sample({ bytesRead: 5, pendingBytes: 5 })), {
    kind: "no_request",
    limitMs: 5000,
  });
  // One whole frame in time: the deadline no longer applies.
  assertEquals(limits.check(1000, 2, sample({ bytesRead: 20, framesRead: 1 })), undefined);
  assertEquals(limits.check(20_000, 2, sample({ bytesRead: 20, framesRead: 1 })), undefined);
});

Deno.test("ConnectionLimits.open() reports refusals once per period per address", () => {
  const limits = new ConnectionLimits({ maxPerAddress: 1, reportEveryMs: 10_000 });
  limits.open(0, 1, "192.0.2.1");
  assertEquals(limits.open(0, 2, "192.0.2.1")?.report, { refused: 1 });
  for (let i = 0; i < 50; i++) assertEquals(limits.open(i, 3 + i, "192.0.2.1")?.report, undefined);
  assertEquals(limits.open(10_000, 100, "192.0.2.1")?.report, { refused: 51 });
});

Deno.test("ConnectionLimits.check() closes a connection silent for idleMs between frames", () => {
  const limits = new ConnectionLimits({ idleMs: 1000, frameMs: 500 });
  limits.open(0, 1, "192.0.2.1");
  assertEquals(limits.check(500, 1, sample()), undefined);
  assertEquals(limits.check(1000, 1, sample()), { kind: "idle", limitMs: 1000 });
});

Deno.test("ConnectionLimits.check() counts traffic either way as activity", () => {
  const limits = new ConnectionLimits({ idleMs: 1000 });
  limits.open(0, 1, "192.0.2.1");
  assertEquals(limits.check(900, 1, sample({ bytesRead: 20, framesRead: 1 })), undefined);
  assertEquals(limits.check(1800, 1, sample({ bytesRead: 20, framesRead: 1 })), undefined);
  // A download: the server writes, the client only reads.
  assertEquals(
    limits.check(2700, 1, sample({ bytesRead: 20, framesRead: 1, bytesWritten: 9 })),
    undefined,
  );
  assertEquals(
    limits.check(3600, 1, sample({ bytesRead: 20, framesRead: 1, bytesWritten: 99 })),
    undefined,
  );
  // The writes stall (a peer that does not read): idle again.
  assertEquals(
    limits.check(4600, 1, sample({ bytesRead: 20, framesRead: 1, bytesWritten: 99 }))?.kind,
    "idle",
  );
});

Deno.test("ConnectionLimits.check() closes a frame that does not arrive whole within frameMs", async (t) => {
  await t.step("a frame started, then silence", () => {
    const limits = new ConnectionLimits({ idleMs: 60_000, frameMs: 1000 });
    limits.open(0, 1, "192.0.2.1");
    assertEquals(limits.check(100, 1, sample({ bytesRead: 3, pendingBytes: 3 })), undefined);
    assertEquals(limits.check(1100, 1, sample({ bytesRead: 3, pendingBytes: 3 })), {
      kind: "slow_frame",
      limitMs: 1000,
      pendingBytes: 3,
    });
  });

  await t.step("a frame trickling in a byte at a time (slowloris) is slow too", () => {
    const limits = new ConnectionLimits({ idleMs: 60_000, frameMs: 1000 });
    limits.open(0, 1, "192.0.2.1");
    let hit;
    for (let i = 1; i <= 20 && hit === undefined; i++) {
      hit = limits.check(i * 100, 1, sample({ bytesRead: i, pendingBytes: i }));
    }
    assertEquals(hit?.kind, "slow_frame");
  });

  await t.step("frames that each arrive in time never add up: a long upload is fine", () => {
    const limits = new ConnectionLimits({ idleMs: 1000, frameMs: 1000 });
    limits.open(0, 1, "192.0.2.1");
    // One 60 KB frame every 600 ms for a minute, each arriving over 500 ms.
    for (let frame = 0; frame < 100; frame++) {
      const t0 = frame * 600;
      const read = frame * 60_000;
      assertEquals(
        limits.check(
          t0 + 100,
          1,
          sample({ bytesRead: read + 100, framesRead: frame, pendingBytes: 100 }),
        ),
        undefined,
      );
      assertEquals(
        limits.check(
          t0 + 500,
          1,
          sample({ bytesRead: read + 59_000, framesRead: frame, pendingBytes: 59_000 }),
        ),
        undefined,
      );
    }
  });

  await t.step("while the server holds reading back, the frame's clock restarts", () => {
    const limits = new ConnectionLimits({ idleMs: 1000, frameMs: 1000 });
    limits.open(0, 1, "192.0.2.1");
    const held = sample({ bytesRead: 70_000, framesRead: 1, pendingBytes: 4_000, reading: false });
    for (let now = 0; now <= 10_000; now += 500) {
      assertEquals(limits.check(now, 1, held), undefined);
    }
    const waiting = { ...held, reading: true };
    assertEquals(limits.check(10_500, 1, waiting), undefined);
    assertEquals(limits.check(11_000, 1, waiting)?.kind, "slow_frame");
  });

  await t.step("while the server stores an upload, the connection is not idle", () => {
    const limits = new ConnectionLimits({ idleMs: 1000, frameMs: 1000 });
    limits.open(0, 1, "192.0.2.1");
    // Busy: its upload_begin came, and the upload is being stored.
    for (let now = 0; now <= 10_000; now += 500) {
      assertEquals(limits.check(now, 1, sample({ busy: true, framesRead: 1 })), undefined);
    }
    assertEquals(limits.check(10_500, 1, sample({ framesRead: 1 })), undefined);
    assertEquals(limits.check(11_000, 1, sample({ framesRead: 1 }))?.kind, "idle");
  });
});

Deno.test("ConnectionLimits.check() closes a connection whose peer takes nothing it is sent", () => {
  const limits = new ConnectionLimits({ idleMs: 1000, frameMs: 1000 });
  limits.open(0, 1, "192.0.2.1");
  // A download the client stopped reading: the server's write is stuck, and so it reads nothing
  // either; that is no excuse.
  const stuck = sample({ bytesWritten: 50_000, writing: true, reading: false });
  assertEquals(limits.check(100, 1, stuck), undefined);
  assertEquals(limits.check(900, 1, stuck), undefined);
  assertEquals(limits.check(1100, 1, stuck), { kind: "idle", limitMs: 1000 });
  // Writes that keep going out are fine, however long they take.
  limits.open(0, 2, "192.0.2.1");
  for (let i = 1; i <= 50; i++) {
    const going = sample({ bytesWritten: i * 60_000, writing: true, reading: false });
    assertEquals(limits.check(i * 500, 2, going), undefined);
  }
});

Deno.test("ConnectionLimits.check() ignores a connection it does not track", () => {
  const limits = new ConnectionLimits({ idleMs: 1 });
  assertEquals(limits.check(1e9, 42, sample()), undefined);
});

Deno.test("ConnectionLimits rejects limits that are not positive", () => {
  assertThrows(() => new ConnectionLimits({ maxPerAddress: 0 }), RangeError);
  assertThrows(() => new ConnectionLimits({ maxTotal: -1 }), RangeError);
  assertThrows(() => new ConnectionLimits({ idleMs: 0 }), RangeError);
  assertThrows(() => new ConnectionLimits({ frameMs: NaN }), RangeError);
});

Deno.test("connectionLimitText() says which limit and what to do", () => {
  assertEquals(
    connectionLimitText({ kind: "per_address", limit: 32 }, "192.0.2.1"),
    "too many connections from 192.0.2.1 (the limit is 32); close one and try again",
  );
  assert(connectionLimitText({ kind: "total", limit: 512 }, "x").includes("the limit is 512"));
  assertEquals(
    connectionLimitText({ kind: "idle", limitMs: 60_000 }, "x"),
    "nothing came or went for 60 s",
  );
  assertEquals(
    connectionLimitText({ kind: "slow_frame", limitMs: 1500, pendingBytes: 3 }, "x"),
    "a frame did not arrive whole within 1.5 s of its first byte (3 bytes came)",
  );
  assertEquals(
    connectionLimitText({ kind: "no_request", limitMs: 5000 }, "x"),
    "no whole request came within 5 s of connecting",
  );
  assertEquals(
    connectionLimitText({ kind: "made_room", scope: "total", limit: 512 }, "x"),
    "making room for a newer connection (the server has 512 connections; those without a " +
      "login give way first)",
  );
});
