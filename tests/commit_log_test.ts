import { assertEquals } from "@std/assert";
import { CommitLog } from "../lib/server/commit_log.ts";

Deno.test("CommitLog writes one snapshot at a time and releases changes once durable", () => {
  const log = new CommitLog<string>();
  assertEquals(log.hasUnsavedChanges, false);
  assertEquals(log.nextSnapshot(), undefined, "nothing to write");
  log.hold("a");
  assertEquals(log.nextSnapshot(), 1);
  log.hold("b");
  log.hold("c");
  assertEquals(log.nextSnapshot(), undefined, "one write in flight at a time");
  assertEquals(log.holds((c) => c === "b"), true);
  assertEquals(log.persisted(1), ["a"]);
  assertEquals(log.hasUnsavedChanges, true);
  assertEquals(log.nextSnapshot(), 3, "the next write carries every change since");
  assertEquals(log.persisted(3), ["b", "c"]);
  assertEquals(log.hasUnsavedChanges, false);
  assertEquals(log.holds(() => true), false);
});

Deno.test("CommitLog.failed() fails every change not yet durable, newest first", () => {
  const log = new CommitLog<string>();
  log.hold("a");
  assertEquals(log.nextSnapshot(), 1);
  log.hold("b");
  assertEquals(log.failed(1), ["b", "a"], "b was built on a: undo b first");
  assertEquals(log.hasUnsavedChanges, false);
  assertEquals(log.nextSnapshot(), undefined);
  log.hold("c");
  assertEquals(log.nextSnapshot(), 3);
  assertEquals(log.persisted(3), ["c"]);
});

Deno.test("CommitLog with several writes in flight hands out each new version at once", () => {
  const log = new CommitLog<string>(2);
  log.hold("a");
  assertEquals(log.nextSnapshot(), 1);
  assertEquals(log.nextSnapshot(), undefined, "nothing new to write");
  log.hold("b");
  assertEquals(log.nextSnapshot(), 2, "a second write while the first is under way");
  log.hold("c");
  assertEquals(log.nextSnapshot(), undefined, "at most two in flight");
  assertEquals(log.persisted(1), ["a"]);
  assertEquals(log.nextSnapshot(), 3);
  assertEquals(log.persisted(2), ["b"]);
  assertEquals(log.failed(3), ["c"]);
  assertEquals(log.hasUnsavedChanges, false);
  assertEquals(log.nextSnapshot(), undefined);
  log.hold("d");
  assertEquals(log.nextSnapshot(), 4);
});

Deno.test("CommitLog.touch() asks for a snapshot with nothing to release", () => {
  const log = new CommitLog<string>();
  log.touch();
  assertEquals(log.hasUnsavedChanges, true);
  assertEquals(log.nextSnapshot(), 1);
  log.hold("a");
  log.touch();
  assertEquals(log.persisted(1), [], "the touch alone was written");
  assertEquals(log.nextSnapshot(), 3);
  assertEquals(log.persisted(3), ["a"]);
  assertEquals(log.hasUnsavedChanges, false);
});
