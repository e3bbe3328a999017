import { assertEquals, assertThrows } from "@std/assert";
import { IdentityExpiry } from "../lib/server/identity_expiry.ts";
import type { RegistryRecord } from "../lib/server/registry.ts";

const T0 = Date.UTC(2026, 0, 1);
const DAY = 86_400_000;

function record(name: string, registeredAt: number | string, lastSeenAt?: number): RegistryRecord {
  return {
    name,
    ip: "127.0.0.1",
    udpPort: 50000,
    tcpPort: 5001,
    registeredAt: typeof registeredAt === "string"
      ? registeredAt
      : new Date(registeredAt).toISOString(),
    publicKey: "",
    keySha256: "",
    registeredBy: "",
    ...(lastSeenAt === undefined ? {} : { lastSeenAt: new Date(lastSeenAt).toISOString() }),
  };
}

Deno.test("IdentityExpiry picks identities unseen for expireAfterMs and not online", () => {
  const expiry = new IdentityExpiry(30 * DAY);
  const records = [
    record("old", T0 - 40 * DAY),
    record("seen", T0 - 40 * DAY, T0 - 29 * DAY),
    record("exactly", T0 - 31 * DAY, T0 - 30 * DAY),
    record("online", T0 - 90 * DAY),
    record("unreadable", "not a date"),
  ];
  const lapsed = expiry.lapsed(T0, records, (name) => name === "online");
  assertEquals(lapsed.map((r) => r.name), ["old", "exactly"]);
  // Checked again a minute later at the earliest.
  assertEquals(expiry.nextCheck(), T0 + 60_000);
  assertEquals(expiry.lapsed(T0 + 59_999, records, () => false), []);
  assertEquals(expiry.lapsed(T0 + 60_000, records, () => false).map((r) => r.name), [
    "old",
    "exactly",
    "online",
  ]);
});

Deno.test("IdentityExpiry checks every tenth of a short expireAfterMs, a second at least", () => {
  assertEquals(new IdentityExpiry(2000).checkEveryMs, 1000);
  assertEquals(new IdentityExpiry(20_000).checkEveryMs, 2000);
  assertEquals(new IdentityExpiry(90 * DAY).checkEveryMs, 60_000);
});

Deno.test("IdentityExpiry rewrites lastSeenAt at most every tenth of expireAfterMs or hour", () => {
  const week = new IdentityExpiry(7 * DAY);
  assertEquals(week.refreshMs, 3_600_000);
  const seen = record("a", T0 - DAY, T0);
  assertEquals(week.isStale(T0 + 3_599_999, seen), false);
  assertEquals(week.isStale(T0 + 3_600_000, seen), true);
  assertEquals(week.isStale(T0, record("b", T0 - 2 * 3_600_000)), true, "from registeredAt");
  assertEquals(week.isStale(T0, record("c", "")), true, "no date at all");
  assertEquals(new IdentityExpiry(60_000).refreshMs, 6_000);
});

Deno.test("IdentityExpiry off never checks, and still keeps dates", () => {
  const off = new IdentityExpiry();
  off.start(T0);
  assertEquals(off.nextCheck(), undefined);
  assertEquals(off.lapsed(T0 + 1000 * DAY, [record("old", T0 - 1000 * DAY)], () => false), []);
  assertEquals(off.isStale(T0 + 3_600_000, record("a", T0)), true);
  assertThrows(() => new IdentityExpiry(-1), RangeError);
});
