/**
 * The words for people: every line the client shows for a command's result
 * or an event is made here, from the facts the core reports.
 *
 * @module
 */
import { alignColumns } from "../display_width.ts";
import { durationText } from "../duration_text.ts";
import { lowerFirstWord } from "../error_line.ts";
import { hostPort } from "../host_port.ts";
import type {
  ClientEvent,
  CommandResult,
  OnlineClient,
  PeerPathInfo,
  TransferInfo,
} from "./client_event.ts";
import { COMMAND_HELP } from "./command.ts";

/**
 * Renders an event as one line (a chat message as `[name] text`).
 *
 * @param event the event
 * @returns the line
 *
 * @example
 * ```ts
 * clientEventText({ kind: "message", from: "Bob", text: "hi", index: 0 }); // "[Bob] hi"
 * ```
 */
export function clientEventText(event: ClientEvent): string {
  switch (event.kind) {
    case "joined": {
      const c = event.client;
      return `"${c.name}" is online at ${hostPort(c.ip, c.udpPort)} (TCP port ${c.tcpPort})`;
    }
    case "left":
      return `"${event.client.name}" went offline`;
    case "resync":
      return "Some presence news was lost; use list for who is online now";
    case "session_ended":
      return sessionEndedText(event);
    case "relogin_refused":
      return `The server had lost your session, and logging in again as "${event.name}" was ` +
        `refused: ${lowerFirstWord(event.detail)}; trying again in ${
          Math.max(1, Math.round(event.retryMs / 1000))
        } s`;
    case "logged_in_again":
      return `The server had lost your session; logged in again as "${event.name}"`;
    case "server_moved":
      return `Server ${event.from} ${
        event.why === "shutdown" ? "is shutting down" : "stopped answering"
      }; moving to ${event.to}` +
        (event.name === undefined ? "" : ` with the session of "${event.name}"`);
    case "request":
      return `"${event.name}" wants to connect (${hostPort(event.ip, event.udpPort)}): ` +
        `accept or reject`;
    case "request_refused": {
      const where = event.registered !== undefined
        ? `the server has "${event.registered.name}" with key ${event.registered.key}, ` +
          `not ${event.presentedKey ?? "the one presented"}`
        : event.error !== undefined
        ? lowerFirstWord(event.error)
        : "the server did not answer";
      return `Refused a connection request from ${hostPort(event.ip, event.udpPort)} ` +
        `claiming to be "${event.name}": ${where}`;
    }
    case "message":
      return `[${event.from}] ${event.text}`;
    case "peer_path":
      return event.path.kind === "relay"
        ? `The session with "${event.name}" goes through the server's relay` +
          (event.why === "heartbeats_missed" ? ": the direct path stopped answering" : "")
        : `The session with "${event.name}" goes direct: ${
          hostPort(event.path.local.ip, event.path.local.port)
        } -> ${hostPort(event.path.remote.ip, event.path.remote.port)}`;
    case "peer_ended":
      return event.by === "replaced"
        ? `The session with "${event.name}" ended: it started a new one`
        : peerEndText(event.name, event.by, event.reason);
    case "file_offer":
      return `"${event.peer}" offers "${event.name}" (${formatBytes(event.size)})` +
        (event.autoAccept ? "" : `; acceptfile ${event.id} or declinefile ${event.id}`);
    case "file_accepted":
      return event.direction === "send"
        ? `"${event.peer}" accepted "${event.name}"` +
          (event.startOffset > 0 ? `; resuming at ${formatBytes(event.startOffset)}` : "")
        : `Receiving "${event.name}" from "${event.peer}"` +
          (event.startOffset > 0 ? `, resuming at ${formatBytes(event.startOffset)}` : "");
    case "file_progress":
      return `${event.direction === "send" ? "Sending" : "Receiving"} "${event.name}": ` +
        `${formatBytes(event.done)} of ${formatBytes(event.size)}, ${formatBytes(event.rate)}/s` +
        (event.etaSeconds === null ? "" : `, ${event.etaSeconds} s left`);
    case "file_done":
      return event.direction === "send"
        ? `Sent "${event.name}" to "${event.peer}" (${formatBytes(event.size)}, SHA-256 verified)`
        : `Received "${event.name}" from "${event.peer}" into ${event.path} (${
          formatBytes(event.size)
        }, SHA-256 verified)`;
    case "file_failed": {
      const verb = event.direction === "send"
        ? `Sending "${event.name}" to`
        : `Receiving "${event.name}" from`;
      const why = event.reason === undefined ? "" : `: ${event.reason}`;
      return `${verb} "${event.peer}" ${TRANSFER_END_WORDS[event.state] ?? "failed"}${why}`;
    }
  }
}

/**
 * Renders a command's result: what it did (one or more lines), or for a
 * failure its error sentence.
 *
 * @param result the result
 * @returns the text
 *
 * @example
 * ```ts
 * commandResultText({ ok: true, command: "register", name: "Alice" });
 * // 'Registered and logged in as "Alice"'
 * ```
 */
export function commandResultText(result: CommandResult): string {
  if (!result.ok) return result.error;
  switch (result.command) {
    case "hello":
      return `Connected to server ${result.server} (version ${result.serverVersion}, ` +
        `TCP port ${result.serverTcpPort}, ${result.auth} login)`;
    case "status": {
      const session = !result.loggedIn
        ? "not logged in"
        : `logged in as "${result.name}"${result.watching ? ", watching" : ""}`;
      return `Server ${result.server} (TCP port ${result.serverTcpPort ?? "unknown"}, ` +
        `${result.auth ?? "unknown"} login); ` +
        `name ${result.name === null ? "not set" : `"${result.name}"`}, ${session}; ` +
        `UDP port ${result.udpPort}, TCP port ${result.tcpPort}; ` +
        `requests over ${result.via.toUpperCase()}` +
        (result.publicAddress === null ? "" : `; public address ${result.publicAddress}`) +
        (result.mapping === null ? "" : `, NAT mapping ${result.mapping}`);
    }
    case "register":
      return `Registered and logged in as "${result.name}"` +
        (result.identityProblem === undefined
          ? ""
          : `, but the identity could not be saved (${result.identityProblem}); ` +
            "you will not be able to log in as this name later");
    case "login":
      return `Logged in as "${result.name}"` +
        (result.replaced ? " (your older session elsewhere was ended)" : "");
    case "logout":
      return `Logged out "${result.name}"`;
    case "deregister":
      return `Deregistered "${result.name}"; its identity and files are deleted`;
    case "tcp":
      return "The server acknowledged the TCP message";
    case "list":
      return listText(result.clients);
    case "lookup": {
      const c = result.client;
      return `"${c.name}" is online at ${hostPort(c.ip, c.udpPort)} ` +
        `(TCP port ${c.tcpPort}), for ${durationText(c.onlineMs)}`;
    }
    case "watch":
      return result.watching
        ? "Watching: you will be told when someone comes online or goes offline"
        : "No longer watching";
    case "files": {
      const lines = result.files.map((f) =>
        `  ${f.name}  ${f.size} bytes  ${f.uploadedAt}  sha256 ${f.sha256.slice(0, 16)}…`
      );
      return `${result.files.length} ${result.files.length === 1 ? "file" : "files"}, ` +
        `${result.usedBytes} of ${result.quotaBytes} bytes used` +
        (lines.length > 0 ? `\n${lines.join("\n")}` : "");
    }
    case "delete":
      return `Deleted "${result.name}"`;
    case "upload":
      return `Uploaded "${result.name}" (${result.size} bytes, SHA-256 checked by the server)`;
    case "download":
      return result.dest === undefined
        ? `The server is sending "${result.name}" (${result.size} bytes)`
        : `Downloaded "${result.name}" to ${result.dest} (${result.size} bytes, SHA-256 verified)`;
    case "connect":
    case "accept":
      return `Connected with "${result.name}"`;
    case "reject":
      return `Refused the request from "${result.name}"`;
    case "send":
      return `Delivered to "${result.to}"`;
    case "terminate":
      return `Ended the session with "${result.name}"` +
        (result.reason === undefined ? "" : `; ${result.reason}`);
    case "peers": {
      // The path column only when a session has one (the server introduced its sides).
      const paths = result.peers.some((p) => p.path !== undefined);
      const lines = alignColumns(result.peers.map((p) => [
        p.name,
        p.state,
        hostPort(p.ip, p.udpPort),
        ...(paths ? [pathText(p.path)] : []),
        `${p.sent} sent, ${p.received} received`,
      ])).map((line) => `  ${line}`);
      return result.peers.length === 0
        ? "No peer sessions"
        : `${result.peers.length} peer ${result.peers.length === 1 ? "session" : "sessions"}:\n${
          lines.join("\n")
        }`;
    }
    case "transfers":
      return result.transfers.length === 0
        ? "No transfers"
        : result.transfers.map(transferLine).join("\n");
    case "sendfile":
      return `Offered "${result.name}" (${
        formatBytes(result.size)
      }) to "${result.to}" as transfer ${result.id}`;
    case "acceptfile":
      return `Accepting "${result.name}" from "${result.peer}"`;
    case "declinefile":
      return `Declined "${result.name}" from "${result.peer}"`;
    case "cancel":
      return `Cancelled transfer ${result.id} ("${result.name}")`;
    case "wait":
      switch (result.for) {
        case "messages":
          return messagesWaitedText(result.count, result.name);
        case "request":
          return `"${result.name}" wants to connect`;
        case "terminate":
          return `The session with "${result.name}" ended`;
        case "offer": {
          const o = result.offer;
          const what = `"${o.name}" (${formatBytes(o.size)}) as ${o.id}`;
          return o.state === "offered"
            ? `"${o.peer}" offers ${what}`
            : `"${o.peer}" offered ${what}, now ${o.state}`;
        }
        case "transfers":
          return result.transfers.length === 0
            ? "No transfers"
            : result.transfers.map(transferLine).join("\n");
      }
      break;
    case "help":
      return COMMAND_HELP.map(([usage, text]) => `  ${usage.padEnd(20)}  ${text}`).join("\n");
    case "generate":
      return `Wrote ${result.count} sample readings to ${result.file}`;
  }
}

/**
 * How many messages a `wait messages` has seen, for its result and its
 * time-out error.
 *
 * @param count messages received
 * @param name the peer waited on, if one was named
 * @returns the text
 */
export function messagesWaitedText(count: number, name?: string): string {
  return `${count} ${count === 1 ? "message" : "messages"} received` +
    (name ? ` from "${name}"` : "");
}

/**
 * Renders the active list as a table whose columns align on a terminal:
 * widths are display columns (`lib/display_width.ts`), so CJK and emoji
 * names and long addresses such as `::ffff:127.0.0.1` line up.
 *
 * @param clients the online clients
 * @returns a heading line and one line per client
 */
export function listText(clients: readonly OnlineClient[]): string {
  if (clients.length === 0) return "Nobody is online";
  const rows = clients.map((c) => [
    c.name,
    c.ip,
    `UDP ${String(c.udpPort).padEnd(5)}`,
    `TCP ${String(c.tcpPort).padEnd(5)}`,
    `online ${durationText(c.onlineMs)}`,
  ]);
  return `${clients.length} online:\n${alignColumns(rows).map((line) => `  ${line}`).join("\n")}`;
}

/**
 * How a peer session's end reads for people.
 *
 * @param name the peer's name
 * @param by who or what ended it
 * @param reason the reason it carried
 * @returns one sentence
 */
export function peerEndText(name: string, by: string, reason: string): string {
  if (by === "us") {
    // Our own ending, named by its command.
    if (reason === "terminate") return `You ended the session with "${name}"`;
    if (reason === "exit") return `You left the session with "${name}"`;
  }
  if (by !== "peer") return reason.charAt(0).toUpperCase() + reason.slice(1);
  const why = reason === "exit" ? " (it left)" : reason === "terminate" ? "" : `: ${reason}`;
  return `"${name}" ended the session${why}`;
}

/**
 * One transfer on one line, for `transfers` and `wait transfers`.
 *
 * @param t the transfer
 * @returns the line
 */
export function transferLine(t: TransferInfo): string {
  const arrow = t.direction === "send" ? `to "${t.peer}"` : `from "${t.peer}"`;
  const percent = t.size === 0 ? 100 : Math.floor((t.done / t.size) * 100);
  return `${t.id}  ${t.direction} "${t.name}" ${arrow}  ${formatBytes(t.done)} of ${
    formatBytes(t.size)
  } (${percent}%)  ${t.state}${t.reason ? `: ${t.reason}` : ""}`;
}

function sessionEndedText(event: Extract<ClientEvent, { kind: "session_ended" }>): string {
  switch (event.reason) {
    case "watch_failed":
      return "Logged in again, but watching could not be restored; use watch";
    case "not_logged_in":
      return `Your session ended: ${lowerFirstWord(event.detail ?? "the server forgot it")}`;
    case "relogin_failed":
      return `Your session ended and logging in again failed: ${
        event.detail === undefined ? "unexpected reply" : lowerFirstWord(event.detail)
      }`;
    default:
      return event.detail ?? `Your session ended (${event.reason})`;
  }
}

const TRANSFER_END_WORDS: Partial<Record<TransferInfo["state"], string>> = {
  declined: "was declined",
  cancelled: "was cancelled",
  interrupted: "was interrupted",
};

/**
 * Formats a byte count for people: `512 B`, `1.5 KiB`, `64.0 MiB`.
 *
 * @param bytes a count of bytes
 * @returns the text
 */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** A session's path in `peers`: `relay`, or `direct` with the addresses (without a path: straight to the peer). */
function pathText(path: PeerPathInfo | undefined): string {
  if (path === undefined) return "direct";
  return path.kind === "relay" ? "relay" : `direct ${path.local} -> ${path.remote}`;
}
