/**
 * The operator's status line: the server's counters in one line of text.
 *
 * @module
 */
import { durationText as duration } from "../duration_text.ts";

/** The counters the status line shows. */
export interface ServerStatus {
  /** How long the server has run, ms. */
  readonly uptimeMs: number;
  /** Names in the registry. */
  readonly registered: number;
  /** Live sessions (the active list). */
  readonly active: number;
  /** Sessions that watch presence news. */
  readonly watchers: number;
  /** Open TCP connections. */
  readonly tcpConnections: number;
  /** UDP datagrams received. */
  readonly datagramsIn: number;
  /** UDP datagrams sent. */
  readonly datagramsOut: number;
  /** TCP frames received. */
  readonly framesIn: number;
  /** TCP frames sent. */
  readonly framesOut: number;
  /** Requests handled. */
  readonly requests: number;
  /** `presence` messages sent again for want of an acknowledgement. */
  readonly presenceResent: number;
  /** Datagrams and frames that were not valid messages. */
  readonly malformed: number;
  /** Datagrams dropped by the per-address rate limits. */
  readonly rateLimited: number;
  /** Requests refused for want of a live session or a right secret. */
  readonly authFailures: number;
  /** UDP requests refused because their reply would outgrow them (an unpadded `hello`, say). */
  readonly undersized: number;
  /** TCP connections refused by the connection limits. */
  readonly tcpRefused: number;
  /** TCP connections closed for being idle or too slow. */
  readonly tcpTimedOut: number;
}

/**
 * Renders the counters as one line for the console and the log.
 *
 * @param status the counters
 * @returns one line, starting `Status: `
 *
 * @example
 * ```ts
 * serverStatusText(driver.status());
 * // "Status: 2 registered, 1 active (0 watching), 0 TCP connections; in 40 datagrams, ..."
 * ```
 */
export function serverStatusText(status: ServerStatus): string {
  const s = status;
  const rejected = s.malformed + s.rateLimited + s.authFailures + s.undersized + s.tcpRefused +
    s.tcpTimedOut;
  return `Status: ${s.registered} registered, ${s.active} active (${s.watchers} watching), ` +
    `${plural(s.tcpConnections, "TCP connection")}; ` +
    `in ${plural(s.datagramsIn, "datagram")}, ${plural(s.framesIn, "frame")}; ` +
    `out ${plural(s.datagramsOut, "datagram")}, ${plural(s.framesOut, "frame")}; ` +
    `${plural(s.requests, "request")}; ${plural(s.presenceResent, "presence resend")}; ` +
    `rejected ${rejected} (${s.malformed} malformed, ${s.rateLimited} rate-limited, ` +
    `${plural(s.authFailures, "auth failure")}, ${s.undersized} undersized, ` +
    `${s.tcpRefused} TCP refused, ` +
    `${s.tcpTimedOut} TCP timed out); up ${duration(s.uptimeMs)}`;
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}
