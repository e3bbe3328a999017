import { assertEquals } from "@std/assert";
import {
  MAX_QUEUED_NEWS,
  type PresenceEntry,
  PresenceFeed,
  type PresenceSend,
} from "../lib/server/presence_feed.ts";
import { PRESENCE_CHANGES } from "../lib/wire/messages.ts";

const T0 = 1_000_000;
const BOB = new Uint8Array(16).fill(2);
const CAROL = new Uint8Array(16).fill(3);
const ALICE = new Uint8Array(16).fill(1);

function entry(name: string): PresenceEntry {
  return { name, ip: "10.0.0.1", udpPort: 40001, tcpPort: 5001, onlineMs: 0 };
}

/** The (seq, change, name) of each news item in the sends to one token. */
function newsFor(sends: PresenceSend[], token: Uint8Array) {
  return sends.filter((s) => s.token === token).flatMap((s) =>
    s.news.map((n) => [n.seq, n.change, n.entry.name])
  );
}

Deno.test("PresenceFeed.publish() numbers news per watcher and skips the one it is about", () => {
  const feed = new PresenceFeed();
  feed.watch(BOB, "10.0.0.2", 40002);
  assertEquals(feed.publish(T0, PRESENCE_CHANGES.joined, entry("Alice")), [{
    token: BOB,
    ip: "10.0.0.2",
    udpPort: 40002,
    news: [{ seq: 1, change: PRESENCE_CHANGES.joined, entry: entry("Alice") }],
  }]);
  feed.watch(CAROL, "10.0.0.3", 40003);
  const sends = feed.publish(T0 + 1, PRESENCE_CHANGES.left, entry("Alice"), ALICE);
  assertEquals(newsFor(sends, BOB), [[2, PRESENCE_CHANGES.left, "Alice"]]);
  assertEquals(newsFor(sends, CAROL), [[1, PRESENCE_CHANGES.left, "Alice"]]);
  const aboutBob = feed.publish(T0 + 2, PRESENCE_CHANGES.left, entry("Bob"), BOB.slice());
  assertEquals(aboutBob.map((s) => s.token), [CAROL], "Bob is not told about himself");
  assertEquals(feed.size, 2);
  assertEquals(new PresenceFeed().publish(T0, PRESENCE_CHANGES.joined, entry("A")), []);
});

Deno.test("PresenceFeed.resend() repeats unacknowledged news with backoff up to 8 s", () => {
  const feed = new PresenceFeed();
  feed.watch(BOB, "10.0.0.2", 40002);
  assertEquals(feed.nextResend(), undefined);
  feed.publish(T0, PRESENCE_CHANGES.joined, entry("Alice"));
  feed.publish(T0, PRESENCE_CHANGES.joined, entry("Carol"));
  assertEquals(feed.nextResend(), T0 + 500);
  assertEquals(feed.resend(T0 + 499), []);
  let at = T0 + 500;
  const gaps: number[] = [];
  for (let i = 0; i < 7; i++) {
    const sends = feed.resend(at);
    assertEquals(newsFor(sends, BOB).map((n) => n[0]), [1, 2], "all unacknowledged news");
    const next = feed.nextResend()!;
    gaps.push(next - at);
    at = next;
  }
  assertEquals(gaps, [1000, 2000, 4000, 8000, 8000, 8000, 8000]);
});

Deno.test("PresenceFeed.ack() drops what was shown and stops resends when all is", () => {
  const feed = new PresenceFeed();
  feed.watch(BOB, "10.0.0.2", 40002);
  for (const name of ["A", "B", "C"]) feed.publish(T0, PRESENCE_CHANGES.joined, entry(name));
  feed.ack(BOB, 2);
  assertEquals(newsFor(feed.resend(T0 + 500), BOB), [[3, PRESENCE_CHANGES.joined, "C"]]);
  feed.ack(BOB, 1); // stale: harmless
  feed.ack(new Uint8Array(16), 3); // nobody's: harmless
  assertEquals(newsFor(feed.resend(T0 + 1500), BOB).length, 1);
  feed.ack(BOB.slice(), 3);
  assertEquals(feed.nextResend(), undefined);
  assertEquals(feed.resend(T0 + 100_000), []);
  // New news starts again with the first interval.
  feed.publish(T0 + 200_000, PRESENCE_CHANGES.left, entry("A"));
  assertEquals(feed.nextResend(), T0 + 200_500);
  assertEquals(newsFor(feed.resend(T0 + 200_500), BOB), [[4, PRESENCE_CHANGES.left, "A"]]);
});

Deno.test("PresenceFeed replaces a backlog of MAX_QUEUED_NEWS unacknowledged news by a resync", () => {
  const feed = new PresenceFeed();
  feed.watch(BOB, "10.0.0.2", 40002);
  feed.watch(CAROL, "10.0.0.3", 40003);
  for (let i = 1; i <= MAX_QUEUED_NEWS; i++) {
    feed.publish(T0, PRESENCE_CHANGES.joined, entry(`u${i}`));
    feed.ack(CAROL, i); // Carol keeps up
  }
  assertEquals(newsFor(feed.resend(T0 + 500), BOB).length, MAX_QUEUED_NEWS);
  const sends = feed.publish(T0 + 600, PRESENCE_CHANGES.left, entry("u1"));
  const resync = [MAX_QUEUED_NEWS + 1, PRESENCE_CHANGES.resync, "u1"];
  assertEquals(newsFor(sends, BOB), [resync]);
  assertEquals(newsFor(sends, CAROL), [resync.with(1, PRESENCE_CHANGES.left)]);
  assertEquals(newsFor(feed.resend(T0 + 1100), BOB), [resync], "only the resync is left");
  feed.publish(T0 + 1200, PRESENCE_CHANGES.joined, entry("v"));
  assertEquals(newsFor(feed.resend(T0 + 1700), BOB).map((n) => n[0]), [
    MAX_QUEUED_NEWS + 1,
    MAX_QUEUED_NEWS + 2,
  ]);
  feed.ack(BOB, MAX_QUEUED_NEWS + 2);
  feed.ack(CAROL, MAX_QUEUED_NEWS + 2);
  assertEquals(feed.nextResend(), undefined);
});

Deno.test("PresenceFeed.watch() moves a watcher without losing its news; unwatch() forgets it", () => {
  const feed = new PresenceFeed();
  feed.watch(BOB, "10.0.0.2", 40002);
  feed.publish(T0, PRESENCE_CHANGES.joined, entry("Alice"));
  feed.watch(BOB, "10.0.0.99", 40099);
  assertEquals(feed.size, 1);
  const [send] = feed.resend(T0 + 500);
  assertEquals([send.ip, send.udpPort, send.news.map((n) => n.seq)], ["10.0.0.99", 40099, [1]]);
  assertEquals(feed.publish(T0 + 600, PRESENCE_CHANGES.left, entry("Alice"))[0].news[0].seq, 2);
  assertEquals(feed.watching(BOB), true);
  feed.unwatch(BOB);
  assertEquals(feed.watching(BOB), false);
  assertEquals(feed.size, 0);
  assertEquals(feed.nextResend(), undefined);
  assertEquals(feed.resend(T0 + 100_000), []);
  // Watching again starts over at 1.
  feed.watch(BOB, "10.0.0.2", 40002);
  assertEquals(feed.publish(T0, PRESENCE_CHANGES.joined, entry("X"))[0].news[0].seq, 1);
});
