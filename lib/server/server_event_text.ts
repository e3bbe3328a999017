import { printable } from "../printable.ts";
import { connectionLimitText } from "./connection_limits.ts";
import type { Endpoint, ServerEvent } from "./server_event.ts";

/** A server event rendered for people: log level and one line. */
export interface EventText {
  /** How loud it is. */
  readonly level: "debug" | "info" | "warning" | "error";
  /** One line, with the fields that matter and no secrets. */
  readonly text: string;
  /**
   * True for a line for the log file only, not the console: what the
   * limits do under a flood.
   */
  readonly quiet?: boolean;
}

/**
 * Renders a server event for the log and the console, with control
 * characters from names and messages escaped.
 *
 * @param event the event
 * @returns its level and text
 *
 * @example
 * ```ts
 * serverEventText({ kind: "deregistered", name: "Bob", reqId: 7, fingerprint: "…",
 *   transport: "udp" }).text;
 * // 'Deregistered "Bob" over UDP, request 7'
 * ```
 */
export function serverEventText(event: ServerEvent): EventText {
  const { level, text, quiet } = describe(event);
  return quiet ? { level, text: printable(text), quiet } : { level, text: printable(text) };
}

function describe(event: ServerEvent): EventText {
  switch (event.kind) {
    case "registered":
      return {
        level: "info",
        text: `Registered "${event.name}" at ${event.ip} (UDP port ${event.udpPort}, ` +
          `TCP port ${event.tcpPort}) over ${event.transport.toUpperCase()}, request ${event.reqId}`,
      };
    case "deregistered":
      return {
        level: "info",
        text:
          `Deregistered "${event.name}" over ${event.transport.toUpperCase()}, request ${event.reqId}`,
      };
    case "identity_bound":
      return {
        level: "info",
        text: `Migrated "${event.name}" to a key-pair identity: its version 2 identity key ` +
          `no longer logs in, its client's key does (request ${event.reqId})`,
      };
    case "logged_in":
      if (event.moved) {
        return {
          level: "info",
          text: `"${event.name}" moved here from another instance, at ${event.ip} ` +
            `(UDP port ${event.udpPort}), with its session`,
        };
      }
      return {
        level: "info",
        text: `"${event.name}" logged in from ${event.ip} (UDP port ${event.udpPort}, ` +
          `TCP port ${event.tcpPort}) over ${event.transport.toUpperCase()}` +
          (event.replaced ? ", replacing its older session" : ""),
      };
    case "logged_out":
      return { level: "info", text: `"${event.name}" went offline (${LEFT_BECAUSE[event.why]})` };
    case "active":
      return { level: "info", text: activeListText(event.names, event.here) };
    case "file_stored":
      return {
        level: "info",
        text: `Stored file ${JSON.stringify(event.name)} for "${event.user}" ` +
          `(${event.size} bytes, SHA-256 ${event.sha256})`,
      };
    case "file_deleted":
      return {
        level: "info",
        text: `Deleted file ${JSON.stringify(event.name)} of "${event.user}"`,
      };
    case "file_sent":
      return {
        level: "info",
        text: `Sending file ${JSON.stringify(event.name)} (${event.size} bytes) to "${event.user}"`,
      };
    case "text": {
      const sender = event.verified
        ? JSON.stringify(event.name)
        : `${endpointText(event.from)}${
          event.name === "" ? "" : ` (claims ${JSON.stringify(event.name)}, unverified)`
        }`;
      return {
        level: "info",
        text: `Message from ${sender} over ${event.from.transport.toUpperCase()}, request ` +
          `${event.reqId}: ${excerpt(event.text)}`,
      };
    }
    case "refused":
      return {
        level: "info",
        text: `Refused ${event.request} request ${event.reqId} from ${
          endpointText(event.from)
        }: ${event.reason}`,
      };
    case "replayed":
      return {
        level: "debug",
        text: `Answered a retransmitted ${event.request} request ${event.reqId} from ${
          endpointText(event.from)
        } from the replay cache`,
      };
    case "unexpected":
      return {
        level: "debug",
        text: `Ignored a "${event.type}" message from ${endpointText(event.from)}`,
      };
    case "save_failed":
      return {
        level: "error",
        // A store's own reason may already say what failed.
        text: /^cannot save the registry\b/i.test(event.reason)
          ? event.reason
          : `Could not save the registry: ${event.reason}`,
      };
    case "expired":
      return {
        level: "info",
        text: `Expired "${event.name}": not seen since ${event.lastSeen}; removed with ` +
          `${event.files} stored ${event.files === 1 ? "file" : "files"}`,
      };
    case "rate_limited":
      return {
        level: "warning",
        quiet: true,
        text:
          `Rate limit: dropped ${event.dropped} ${
            event.transport === "udp" ? "UDP datagrams" : "TCP requests"
          } from ${event.address} ` +
          `${event.session ? "with" : "without"} a session since the last report (limit ` +
          `${event.ratePerSecond}/s per address, bursts of ${event.burst}); the next report ` +
          "comes 10 s from now at the earliest",
      };
    case "connection_refused":
      return {
        level: "warning",
        quiet: true,
        text: `TCP limit: refused ${event.refused} connections from ${event.address} since the ` +
          `last report: ${connectionLimitText(event.hit, event.address)}`,
      };
    case "connection_made_room":
      return {
        level: "info",
        quiet: true,
        text: `TCP limit: closed ${event.closed} connections from ${event.address} since the ` +
          `last report, ${connectionLimitText(event.hit, event.address)}`,
      };
    case "connection_closed": {
      const where = `${event.connId} from ${event.address}:${event.port}: ` +
        connectionLimitText(event.hit, event.address);
      return event.hit.kind === "idle"
        ? { level: "info", quiet: true, text: `Closed TCP connection ${where}` }
        : { level: "warning", quiet: true, text: `TCP limit: closed connection ${where}` };
    }
    case "introduced":
      return {
        level: "info",
        quiet: true,
        text: `Introduced "${event.from}" to "${event.to}" for peer session ${event.session} ` +
          `(${event.hosts} host candidate${event.hosts === 1 ? "" : "s"})`,
      };
    case "relay_started":
      return {
        level: "info",
        text: `Relaying peer session ${event.session} between "${event.a}" and "${event.b}"`,
      };
    case "relay_limited":
      return {
        level: "warning",
        quiet: true,
        text: `Relay ${event.why === "quota" ? "quota" : "rate limit"}: dropped ${event.dropped} ` +
          `datagram${event.dropped === 1 ? "" : "s"} from "${event.name}" on peer session ` +
          `${event.session} (${event.bytes} bytes relayed so far)`,
      };
    case "relay_ended":
      return {
        level: "info",
        text: `Stopped relaying peer session ${event.session} between "${event.a}" and ` +
          `"${event.b}": ${event.datagrams} datagrams, ${event.bytes} bytes`,
      };
  }
}

const LEFT_BECAUSE = {
  exit: "logged out",
  lease: "its lease ran out without a heartbeat",
  deregister: "deregistered",
  shutdown: "server shutdown",
  moved: "it moved to another instance with its session",
  replaced: "a login on another instance replaced it",
} as const;

/** Most names the active list shows in one line. */
const ACTIVE_NAMES_SHOWN = 20;

/**
 * Renders the active list as one line: up to 20 names, then a count; with
 * shared presence, how many are this instance's own.
 *
 * @param names the active names, in order
 * @param here how many have their session on this instance (shared presence only)
 * @returns for example `Active (2): "Alice", "Bob"` or `Active (2, 1 on this instance): ...`
 */
export function activeListText(names: readonly string[], here?: number): string {
  if (names.length === 0) return "Active (0): nobody";
  const shown = names.slice(0, ACTIVE_NAMES_SHOWN).map((n) => JSON.stringify(n)).join(", ");
  const more = names.length > ACTIVE_NAMES_SHOWN
    ? ` and ${names.length - ACTIVE_NAMES_SHOWN} more`
    : "";
  const where = here === undefined ? "" : `, ${here === 0 ? "none" : here} on this instance`;
  return `Active (${names.length}${where}): ${shown}${more}`;
}

/** How much of a custom message the log keeps. */
const EXCERPT_CHARS = 200;

/** Quotes a message, cut to its first 200 characters with its full size noted. */
function excerpt(text: string): string {
  const chars = [...text];
  if (chars.length <= EXCERPT_CHARS) return JSON.stringify(text);
  const bytes = new TextEncoder().encode(text).length;
  return `${JSON.stringify(chars.slice(0, EXCERPT_CHARS).join(""))}… (${bytes} bytes in all)`;
}

/**
 * Formats an endpoint as `udp 127.0.0.1:5000` or `tcp [::1]:5000`.
 *
 * @param endpoint the endpoint
 * @returns one short string
 */
export function endpointText(endpoint: Endpoint): string {
  const host = endpoint.address.includes(":") ? `[${endpoint.address}]` : endpoint.address;
  return `${endpoint.transport} ${host}:${endpoint.port}`;
}
