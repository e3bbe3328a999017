import { printable } from "../printable.ts";
import type { Endpoint, ServerEvent } from "./server_core.ts";

/** A server event rendered for people: log level and one line. */
export interface EventText {
  /** How loud it is. */
  readonly level: "debug" | "info" | "warning" | "error";
  /** One line, with the fields that matter and no secrets. */
  readonly text: string;
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
  const { level, text } = describe(event);
  return { level, text: printable(text) };
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
      return { level: "error", text: `Could not save the registry: ${event.reason}` };
  }
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
