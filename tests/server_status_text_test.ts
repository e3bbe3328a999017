import { assertEquals } from "@std/assert";
import { type ServerStatus, serverStatusText } from "../lib/server/server_status_text.ts";

const ZERO: ServerStatus = {
  uptimeMs: 0,
  registered: 0,
  active: 0,
  watchers: 0,
  tcpConnections: 0,
  datagramsIn: 0,
  datagramsOut: 0,
  framesIn: 0,
  framesOut: 0,
  requests: 0,
  presenceResent: 0,
  malformed: 0,
  rateLimited: 0,
  authFailures: 0,
  undersized: 0,
  tcpRefused: 0,
  tcpTimedOut: 0,
};

Deno.test("serverStatusText() shows every counter and adds up the rejected inputs", () => {
  assertEquals(
    serverStatusText({
      uptimeMs: 725_400,
      registered: 12,
      active: 5,
      watchers: 2,
      tcpConnections: 1,
      datagramsIn: 1042,
      datagramsOut: 1015,
      framesIn: 12,
      framesOut: 13,
      requests: 1051,
      presenceResent: 3,
      malformed: 20,
      rateLimited: 9,
      authFailures: 2,
      undersized: 3,
      tcpRefused: 1,
      tcpTimedOut: 4,
    }),
    "Status: 12 registered, 5 active (2 watching), 1 TCP connection; in 1042 datagrams, 12 frames; " +
      "out 1015 datagrams, 13 frames; 1051 requests; 3 presence resends; rejected 39 (20 malformed, " +
      "9 rate-limited, 2 auth failures, 3 undersized, 1 TCP refused, 4 TCP timed out); " +
      "up 12 min 5 s",
  );
});

Deno.test("serverStatusText() counts in the singular and the plural, and shows long uptimes", () => {
  const one = serverStatusText({ ...ZERO, datagramsIn: 1, presenceResent: 1, authFailures: 1 });
  assertEquals(
    one,
    "Status: 0 registered, 0 active (0 watching), 0 TCP connections; in 1 datagram, 0 frames; " +
      "out 0 datagrams, 0 frames; 0 requests; 1 presence resend; rejected 1 (0 malformed, " +
      "0 rate-limited, 1 auth failure, 0 undersized, 0 TCP refused, 0 TCP timed out); up 0 s",
  );
  const up = (ms: number) => serverStatusText({ ...ZERO, uptimeMs: ms }).split("; up ")[1];
  assertEquals(up(59_999), "59 s");
  assertEquals(up(3_600_000 + 61_000), "1 h 1 min");
  assertEquals(up(3 * 86_400_000 + 5 * 3_600_000), "3 d 5 h");
});
