import { assertEquals } from "@std/assert";
import {
  alignColumns,
  cutToWidth,
  displayWidth,
  padEndToWidth,
  padStartToWidth,
} from "../lib/display_width.ts";

const FAMILY = "\u{1F468}\u200D\u{1F469}\u200D\u{1F467}";

Deno.test("displayWidth() counts emoji, ZWJ sequences, flags and CJK as two, marks and colours as none", () => {
  assertEquals(displayWidth("🚀"), 2);
  assertEquals(displayWidth(FAMILY), 2);
  assertEquals(displayWidth("\u{1F1EB}\u{1F1F7}"), 2);
  assertEquals(displayWidth("日本語"), 6);
  assertEquals(displayWidth("ｶ"), 1); // half-width katakana
  assertEquals(displayWidth("e\u0301"), 1);
  assertEquals(displayWidth("\x1b[31mred\x1b[0m"), 3);
});

Deno.test("padEndToWidth() and padStartToWidth() pad by columns and never cut", () => {
  assertEquals(padEndToWidth("日本", 6), "日本  ");
  assertEquals(padEndToWidth("🚀", 1), "🚀");
  assertEquals(padStartToWidth("42", 5), "   42");
});

Deno.test("cutToWidth() keeps whole characters as seen", () => {
  assertEquals(cutToWidth("日本語", 5), "日本");
  assertEquals(cutToWidth(`a${FAMILY}b`, 2), "a");
  assertEquals(cutToWidth(`a${FAMILY}b`, 3), `a${FAMILY}`);
});

Deno.test("alignColumns() aligns wide names and long addresses", () => {
  assertEquals(
    alignColumns([
      ["Bob 日本", "::ffff:127.0.0.1", "UDP 5000"],
      ["Ann", "10.0.0.1", "UDP 6"],
    ]),
    [
      "Bob 日本  ::ffff:127.0.0.1  UDP 5000",
      "Ann       10.0.0.1          UDP 6",
    ],
  );
});
