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
