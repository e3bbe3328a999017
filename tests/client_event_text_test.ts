/**
 * The words of the client: every result and event the core reports, as
 * people read it. The core's tests assert the facts; these assert wording.
 */
import { assertEquals } from "@std/assert";
import { displayWidth } from "../lib/display_width.ts";
import {
  clientEventText,
  commandResultText,
  listText,
  peerEndText,
  transferLine,
} from "../lib/client/client_event_text.ts";
import type { TransferInfo } from "../lib/client/client_event.ts";

const SESSION = "8c3f1a2b4d5e6f70";
const BOB = { name: "Bob", ip: "10.0.0.2", udpPort: 4002, tcpPort: 5002, onlineMs: 65_000 };

const FILE: TransferInfo = {
  id: 3,
  direction: "receive",
  peer: "Alice",
  name: "a.bin",
  size: 3 * 1024 * 1024,
  sha256: "ab".repeat(32),
  state: "active",
  done: 1024 * 1024,
  startOffset: 0,
};

Deno.test("commandResultText() words the server link's results", () => {
  assertEquals(
    commandResultText({
      ok: true,
      command: "hello",
      server: "127.0.0.1:3000",
      serverTcpPort: 3001,
      serverVersion: "1.2.3",
      auth: "open",
      leaseMs: 30_000,
    }),
    "Connected to server 127.0.0.1:3000 (version 1.2.3, TCP port 3001, open login)",
  );
  assertEquals(
    commandResultText({ ok: true, command: "register", name: "Alice" }),
    'Registered and logged in as "Alice"',
  );
  assertEquals(
    commandResultText({ ok: true, command: "register", name: "Alice", identityProblem: "EACCES" }),
    'Registered and logged in as "Alice", but the identity could not be saved (EACCES); ' +
      "you will not be able to log in as this name later",
  );
  assertEquals(
    commandResultText({ ok: true, command: "login", name: "Alice", replaced: true }),
    'Logged in as "Alice" (your older session elsewhere was ended)',
  );
  assertEquals(
    commandResultText({ ok: true, command: "login", name: "Alice", replaced: false }),
    'Logged in as "Alice"',
  );
  assertEquals(
    commandResultText({ ok: true, command: "logout", name: "Alice" }),
    'Logged out "Alice"',
  );
  assertEquals(
    commandResultText({ ok: true, command: "deregister", name: "Alice" }),
    'Deregistered "Alice"; its identity and files are deleted',
  );
  assertEquals(
    commandResultText({ ok: true, command: "tcp" }),
    "The server acknowledged the TCP message",
  );
  assertEquals(
    commandResultText({
      ok: false,
      command: "list",
      error: "Not logged in",
      code: "not_logged_in",
    }),
    "Not logged in",
  );
});

Deno.test("commandResultText() words status", () => {
  const status = {
    ok: true,
    command: "status",
    server: "127.0.0.1:3000",
    serverVersion: "1.2.3",
    serverTcpPort: 3001,
    auth: "open",
    name: "Alice Smith",
    loggedIn: true,
    watching: true,
    udpPort: 40000,
    tcpPort: 5001,
    via: "udp",
    publicAddress: "203.0.113.1:40000",
    mapping: "destination-dependent",
  } as const;
  assertEquals(
    commandResultText(status),
    'Server 127.0.0.1:3000 (TCP port 3001, open login); name "Alice Smith", logged in as ' +
      '"Alice Smith", watching; UDP port 40000, TCP port 5001; requests over UDP; ' +
      "public address 203.0.113.1:40000, NAT mapping destination-dependent",
  );
  assertEquals(
    commandResultText({
      ...status,
      serverTcpPort: null,
      auth: null,
      name: null,
      loggedIn: false,
      watching: false,
      publicAddress: null,
      mapping: null,
    }),
    "Server 127.0.0.1:3000 (TCP port unknown, unknown login); name not set, not logged in; " +
      "UDP port 40000, TCP port 5001; requests over UDP",
  );
});

Deno.test("listText() aligns columns by display width: CJK and emoji names, IPv4-mapped addresses", () => {
  const clients = [
    { ...BOB, name: "Bob 日本語", ip: "::ffff:127.0.0.1" },
    { ...BOB, name: "🚀 Ann ✅", ip: "10.0.0.1", udpPort: 7, tcpPort: 65535 },
    { ...BOB, name: "👨‍👩‍👧 Kim", ip: "2001:db8::1234:5678:9abc", onlineMs: 3_000 },
    { ...BOB, name: "Zoë", ip: "127.0.0.1" },
  ];
  const lines = listText(clients).split("\n");
  assertEquals(lines[0], "4 online:");
  // Every column starts at the same terminal column on every line.
  const starts = (line: string) =>
    [" 10.", " ::", " 127.", " 2001:", "UDP ", "TCP ", "online "].flatMap((word) => {
      const at = line.indexOf(word, word.startsWith(" ") ? 3 : 0);
      return at === -1 ? [] : [displayWidth(line.slice(0, at + (word.startsWith(" ") ? 1 : 0)))];
    });
  const table = lines.slice(1).map(starts);
  for (const columns of table) assertEquals(columns, table[0]);
  assertEquals(table[0], [14, 40, 51, 62]);
  assertEquals(
    lines[2],
    "  🚀 Ann ✅   10.0.0.1                  UDP 7      TCP 65535  online 1 min 5 s",
  );
});

Deno.test("commandResultText() words presence and lookups", () => {
  assertEquals(commandResultText({ ok: true, command: "list", clients: [] }), "Nobody is online");
  const list = commandResultText({ ok: true, command: "list", clients: [BOB] });
  assertEquals(list, listText([BOB]));
  assertEquals(
    list,
    "1 online:\n  Bob  10.0.0.2  UDP 4002   TCP 5002   online 1 min 5 s",
  );
  assertEquals(
    commandResultText({ ok: true, command: "lookup", client: BOB }),
    '"Bob" is online at 10.0.0.2:4002 (TCP port 5002), for 1 min 5 s',
  );
  assertEquals(
    commandResultText({ ok: true, command: "watch", watching: true }),
    "Watching: you will be told when someone comes online or goes offline",
  );
  assertEquals(
    commandResultText({ ok: true, command: "watch", watching: false }),
    "No longer watching",
  );
});

Deno.test("commandResultText() words server files", () => {
  assertEquals(
    commandResultText({
      ok: true,
      command: "files",
      usedBytes: 10,
      quotaBytes: 100,
      files: [{
        name: "a.txt",
        size: 10,
        sha256: "ab".repeat(32),
        uploadedAt: "1970-01-01T00:00:00.000Z",
      }],
    }),
    "1 file, 10 of 100 bytes used\n  a.txt  10 bytes  1970-01-01T00:00:00.000Z  sha256 abababababababab…",
  );
  assertEquals(
    commandResultText({ ok: true, command: "files", usedBytes: 0, quotaBytes: 100, files: [] }),
    "0 files, 0 of 100 bytes used",
  );
  assertEquals(
    commandResultText({ ok: true, command: "delete", name: "a.txt" }),
    'Deleted "a.txt"',
  );
  assertEquals(
    commandResultText({ ok: true, command: "upload", name: "d.csv", size: 1234 }),
    'Uploaded "d.csv" (1234 bytes, SHA-256 checked by the server)',
  );
  const download = { ok: true, command: "download", name: "d.csv", size: 9, sha256: "00" } as const;
  assertEquals(
    commandResultText({ ...download, reqId: 4 }),
    'The server is sending "d.csv" (9 bytes)',
  );
  assertEquals(
    commandResultText({ ...download, dest: "downloads/d.csv" }),
    'Downloaded "d.csv" to downloads/d.csv (9 bytes, SHA-256 verified)',
  );
});

Deno.test("commandResultText() words peer commands and waits", () => {
  assertEquals(
    commandResultText({ ok: true, command: "connect", name: "Bob", session: "ab" }),
    'Connected with "Bob"',
  );
  assertEquals(
    commandResultText({ ok: true, command: "reject", name: "Bob" }),
    'Refused the request from "Bob"',
  );
  assertEquals(
    commandResultText({ ok: true, command: "send", to: "Carol", index: 0 }),
    'Delivered to "Carol"',
  );
  assertEquals(
    commandResultText({ ok: true, command: "terminate", name: "Bob", confirmed: true }),
    'Ended the session with "Bob"',
  );
  assertEquals(
    commandResultText({
      ok: true,
      command: "terminate",
      name: "Bob",
      confirmed: false,
      reason: '"Bob" stopped answering',
    }),
    'Ended the session with "Bob"; "Bob" stopped answering',
  );
  assertEquals(commandResultText({ ok: true, command: "peers", peers: [] }), "No peer sessions");
  assertEquals(
    commandResultText({
      ok: true,
      command: "peers",
      peers: [{
        name: "Bob",
        session: SESSION,
        state: "open",
        ip: "10.0.0.2",
        udpPort: 4002,
        sent: 2,
        received: 1,
      }],
    }),
    "1 peer session:\n  Bob  open  10.0.0.2:4002  2 sent, 1 received",
  );
  // With paths: relay, or direct with this side's and the peer's address.
  assertEquals(
    commandResultText({
      ok: true,
      command: "peers",
      peers: [
        {
          name: "Bob",
          session: SESSION,
          state: "open",
          ip: "198.51.100.1",
          udpPort: 41000,
          sent: 2,
          received: 1,
          path: { kind: "direct", local: "203.0.113.1:40000", remote: "198.51.100.1:41000" },
        },
        {
          name: "Carol",
          session: SESSION,
          state: "open",
          ip: "192.0.2.9",
          udpPort: 4009,
          sent: 0,
          received: 0,
          path: { kind: "relay" },
        },
      ],
    }),
    "2 peer sessions:\n" +
      "  Bob    open  198.51.100.1:41000  direct 203.0.113.1:40000 -> 198.51.100.1:41000  2 sent, 1 received\n" +
      "  Carol  open  192.0.2.9:4009      relay                                           0 sent, 0 received",
  );
  // Wide names and long addresses align by display width, as in `list`.
  assertEquals(
    commandResultText({
      ok: true,
      command: "peers",
      peers: [
        {
          name: "Cy 한국어",
          session: SESSION,
          state: "open",
          ip: "::ffff:127.0.0.1",
          udpPort: 4003,
          sent: 0,
          received: 0,
        },
        {
          name: "Bob",
          session: SESSION,
          state: "connecting",
          ip: "10.0.0.2",
          udpPort: 4002,
          sent: 2,
          received: 1,
        },
      ],
    }),
    "2 peer sessions:\n" +
      "  Cy 한국어  open        [::ffff:127.0.0.1]:4003  0 sent, 0 received\n" +
      "  Bob        connecting  10.0.0.2:4002            2 sent, 1 received",
  );
  const wait = { ok: true, command: "wait" } as const;
  assertEquals(commandResultText({ ...wait, for: "messages", count: 2 }), "2 messages received");
  assertEquals(
    commandResultText({ ...wait, for: "messages", count: 1, name: "alice" }),
    '1 message received from "alice"',
  );
  assertEquals(
    commandResultText({ ...wait, for: "request", name: "Bob" }),
    '"Bob" wants to connect',
  );
  assertEquals(
    commandResultText({ ...wait, for: "terminate", name: "Alice" }),
    'The session with "Alice" ended',
  );
  assertEquals(
    commandResultText({ ...wait, for: "offer", offer: { ...FILE, state: "offered" } }),
    '"Alice" offers "a.bin" (3.0 MiB) as 3',
  );
  assertEquals(
    commandResultText({ ...wait, for: "offer", offer: FILE }),
    '"Alice" offered "a.bin" (3.0 MiB) as 3, now active',
  );
  assertEquals(commandResultText({ ...wait, for: "transfers", transfers: [] }), "No transfers");
});

Deno.test("commandResultText() words transfer commands", () => {
  assertEquals(
    commandResultText({
      ok: true,
      command: "sendfile",
      id: 1,
      to: "Bob",
      name: "a.bin",
      size: 2048,
    }),
    'Offered "a.bin" (2.0 KiB) to "Bob" as transfer 1',
  );
  const one = { id: 2, name: "two.bin", peer: "Alice" };
  assertEquals(
    commandResultText({ ok: true, command: "acceptfile", ...one }),
    'Accepting "two.bin" from "Alice"',
  );
  assertEquals(
    commandResultText({ ok: true, command: "declinefile", ...one }),
    'Declined "two.bin" from "Alice"',
  );
  assertEquals(
    commandResultText({ ok: true, command: "cancel", ...one }),
    'Cancelled transfer 2 ("two.bin")',
  );
  assertEquals(
    commandResultText({ ok: true, command: "transfers", transfers: [] }),
    "No transfers",
  );
  assertEquals(
    transferLine(FILE),
    '3  receive "a.bin" from "Alice"  1.0 MiB of 3.0 MiB (33%)  active',
  );
  assertEquals(
    transferLine({ ...FILE, direction: "send", state: "declined", reason: '"Bob" declined it' }),
    '3  send "a.bin" to "Alice"  1.0 MiB of 3.0 MiB (33%)  declined: "Bob" declined it',
  );
  assertEquals(
    commandResultText({ ok: true, command: "generate", file: "r.csv", count: 5 }),
    "Wrote 5 sample readings to r.csv",
  );
});

Deno.test("clientEventText() words presence news and session ends", () => {
  assertEquals(
    clientEventText({ kind: "joined", client: BOB }),
    '"Bob" is online at 10.0.0.2:4002 (TCP port 5002)',
  );
  assertEquals(clientEventText({ kind: "left", client: BOB }), '"Bob" went offline');
  assertEquals(
    clientEventText({ kind: "resync" }),
    "Some presence news was lost; use list for who is online now",
  );
  assertEquals(
    clientEventText({ kind: "logged_in_again", name: "Alice" }),
    'The server had lost your session; logged in again as "Alice"',
  );
  // A move claims nothing before the next instance has answered (black-box test).
  assertEquals(
    clientEventText({
      kind: "server_moved",
      from: "a:3000",
      to: "b:3000",
      why: "silent",
      name: "Alice",
    }),
    'Server a:3000 stopped answering; moving to b:3000 with the session of "Alice"',
  );
  assertEquals(
    clientEventText({
      kind: "server_moved",
      from: "a:3000",
      to: "b:3000",
      why: "shutdown",
      name: undefined,
    }),
    "Server a:3000 is shutting down; moving to b:3000",
  );
  assertEquals(
    clientEventText({
      kind: "relogin_refused",
      name: "Alice",
      detail: "Too many failed logins from your address",
      retryMs: 1900,
    }),
    'The server had lost your session, and logging in again as "Alice" was refused: ' +
      "too many failed logins from your address; trying again in 2 s",
  );
  const ended = { kind: "session_ended", name: "Alice" } as const;
  assertEquals(
    clientEventText({ ...ended, reason: "not_logged_in", detail: "Not logged in" }),
    "Your session ended: not logged in",
  );
  assertEquals(
    clientEventText({ ...ended, reason: "relogin_failed", detail: "Login failed" }),
    "Your session ended and logging in again failed: login failed",
  );
  assertEquals(
    clientEventText({ ...ended, reason: "relogin_failed" }),
    "Your session ended and logging in again failed: unexpected reply",
  );
  assertEquals(
    clientEventText({ ...ended, reason: "watch_failed" }),
    "Logged in again, but watching could not be restored; use watch",
  );
  assertEquals(
    clientEventText({ ...ended, reason: "replaced", detail: '"Alice" logged in elsewhere' }),
    '"Alice" logged in elsewhere',
  );
});

Deno.test("clientEventText() words peer events", () => {
  const from = { name: "Alice", ip: "10.6.6.6", udpPort: 6666 };
  assertEquals(
    clientEventText({ kind: "request", ...from }),
    '"Alice" wants to connect (10.6.6.6:6666): accept or reject',
  );
  assertEquals(
    clientEventText({
      kind: "request_refused",
      ...from,
      presentedKey: "SHA256:mallory",
      registered: { name: "Alice", ip: "10.0.0.1", udpPort: 4001, key: "SHA256:alice" },
    }),
    'Refused a connection request from 10.6.6.6:6666 claiming to be "Alice": ' +
      'the server has "Alice" with key SHA256:alice, not SHA256:mallory',
  );
  assertEquals(
    clientEventText({ kind: "request_refused", ...from, error: '"Alice" is not online' }),
    'Refused a connection request from 10.6.6.6:6666 claiming to be "Alice": ' +
      '"Alice" is not online',
  );
  assertEquals(
    clientEventText({ kind: "request_refused", ...from }),
    'Refused a connection request from 10.6.6.6:6666 claiming to be "Alice": ' +
      "the server did not answer",
  );
  assertEquals(clientEventText({ kind: "message", from: "Bob", text: "hi", index: 0 }), "[Bob] hi");
  assertEquals(
    clientEventText({ kind: "peer_ended", name: "Alice", by: "peer", reason: "exit" }),
    '"Alice" ended the session (it left)',
  );
  assertEquals(
    clientEventText({ kind: "peer_ended", name: "Alice", by: "replaced", reason: "x" }),
    'The session with "Alice" ended: it started a new one',
  );
  assertEquals(peerEndText("Bob", "us", "terminate"), 'You ended the session with "Bob"');
  assertEquals(peerEndText("Bob", "us", "exit"), 'You left the session with "Bob"');
  assertEquals(peerEndText("Bob", "peer", "terminate"), '"Bob" ended the session');
  assertEquals(peerEndText("Bob", "peer", "busy"), '"Bob" ended the session: busy');
  assertEquals(peerEndText("Bob", "dead", '"Bob" stopped answering'), '"Bob" stopped answering');
});

Deno.test("clientEventText() words file transfer events", () => {
  assertEquals(
    clientEventText({ kind: "file_offer", autoAccept: false, ...FILE, state: "offered" }),
    '"Alice" offers "a.bin" (3.0 MiB); acceptfile 3 or declinefile 3',
  );
  assertEquals(
    clientEventText({ kind: "file_offer", autoAccept: true, ...FILE, state: "offered" }),
    '"Alice" offers "a.bin" (3.0 MiB)',
  );
  assertEquals(
    clientEventText({ kind: "file_accepted", ...FILE, startOffset: 65536 }),
    'Receiving "a.bin" from "Alice", resuming at 64.0 KiB',
  );
  assertEquals(
    clientEventText({ kind: "file_accepted", ...FILE, direction: "send", peer: "Bob" }),
    '"Bob" accepted "a.bin"',
  );
  assertEquals(
    clientEventText({ kind: "file_progress", ...FILE, rate: 1024 * 1024, etaSeconds: 2 }),
    'Receiving "a.bin": 1.0 MiB of 3.0 MiB, 1.0 MiB/s, 2 s left',
  );
  assertEquals(
    clientEventText({ kind: "file_done", ...FILE, state: "done", path: "downloads/a.bin" }),
    'Received "a.bin" from "Alice" into downloads/a.bin (3.0 MiB, SHA-256 verified)',
  );
  assertEquals(
    clientEventText({ kind: "file_done", ...FILE, direction: "send", peer: "Bob", state: "done" }),
    'Sent "a.bin" to "Bob" (3.0 MiB, SHA-256 verified)',
  );
  assertEquals(
    clientEventText({
      kind: "file_failed",
      ...FILE,
      direction: "send",
      peer: "Bob",
      state: "interrupted",
      reason: 'You ended the session with "Bob"',
    }),
    'Sending "a.bin" to "Bob" was interrupted: You ended the session with "Bob"',
  );
  assertEquals(
    clientEventText({ kind: "file_failed", ...FILE, state: "failed", reason: "disk full" }),
    'Receiving "a.bin" from "Alice" failed: disk full',
  );
  assertEquals(
    clientEventText({ kind: "file_failed", ...FILE, state: "declined" }),
    'Receiving "a.bin" from "Alice" was declined',
  );
});

Deno.test("clientEventText() says which path a peer session takes, and why it left a direct one", () => {
  const base = { kind: "peer_path", name: "Bob", session: SESSION } as const;
  assertEquals(
    clientEventText({
      ...base,
      path: {
        kind: "direct",
        local: { ip: "203.0.113.1", port: 40000 },
        remote: { ip: "2001:db8::2", port: 41000 },
      },
      why: "checked",
    }),
    'The session with "Bob" goes direct: 203.0.113.1:40000 -> [2001:db8::2]:41000',
  );
  assertEquals(
    clientEventText({ ...base, path: { kind: "relay" }, why: "heartbeats_missed" }),
    `The session with "Bob" goes through the server's relay: the direct path stopped answering`,
  );
});
