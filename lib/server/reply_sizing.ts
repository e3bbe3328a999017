/**
 * Reply sizing against amplification, sans-I/O: over UDP, a request's source
 * address can be forged, so the server never answers an unproven address
 * with more bytes than it received (QUIC's anti-amplification limit; quinn
 * names it `anti_amplification_blocked()`). The server core asks this one
 * thing, from one place, how large each reply may be and what to send.
 *
 * @module
 */
import { encodeMessage, MIN_PADDED_REQUEST_BYTES } from "../wire/codec.ts";
import { PADDED_REQUEST_TYPES, type Reply, type Request } from "../wire/messages.ts";
import type { Endpoint } from "./server_event.ts";

/** Size of an `error` reply without its message: header, reqId, code, message length. */
const ERROR_REPLY_BASE_BYTES = 4 + 4 + 2 + 2;

/** What to do with a reply, given the most bytes it may take. */
export type SizedReply =
  /** Send this reply (an `error` may have had its message shortened to fit). */
  | { readonly kind: "send"; readonly reply: Reply; readonly shortened: boolean }
  /** The reply does not fit: refuse the request (`bad_request`) for this reason instead. */
  | { readonly kind: "refuse"; readonly reason: string }
  /** Not even an error without a message fits: send nothing. */
  | { readonly kind: "drop" };

/**
 * Tells how many bytes a reply may take and fits replies to it.
 *
 * @example
 * ```ts
 * const sizing = new ReplySizing((token, to) => sessions.byToken(token) !== undefined);
 * sizing.received(request, datagram.length);
 * const sized = sizing.fit(request.type, reply, sizing.limit(from, request));
 * if (sized.kind === "send") send(from, sized.reply);
 * ```
 */
export class ReplySizing {
  #proven: (token: Uint8Array, to: Endpoint) => boolean;
  /** How many bytes each request arrived in, by the decoded request. */
  #received = new WeakMap<Request, number>();

  /**
   * @param proven tells whether a session token proves that its sender
   *   receives what is sent to `to` (a live session's token, or one sent
   *   again from where its ended session was)
   */
  constructor(proven: (token: Uint8Array, to: Endpoint) => boolean) {
    this.#proven = proven;
  }

  /**
   * Records the size a request arrived in.
   *
   * @param request the decoded request
   * @param bytes the size of its datagram (or frame body)
   */
  received(request: Request, bytes: number): void {
    this.#received.set(request, bytes);
  }

  /**
   * Tells why a request must be refused before it runs: a `hello`,
   * `register` or `login` over UDP smaller than
   * {@linkcode MIN_PADDED_REQUEST_BYTES}, whose reply might not fit in it.
   *
   * @param from where it came from
   * @param request the request
   * @param bytes the size it arrived in
   * @returns the reason, or undefined if it may run
   */
  undersized(from: Endpoint, request: Request, bytes: number): string | undefined {
    if (
      from.transport !== "udp" || !PADDED_REQUEST_TYPES.has(request.type) ||
      bytes >= MIN_PADDED_REQUEST_BYTES
    ) {
      return undefined;
    }
    return `Pad ${request.type} to ${MIN_PADDED_REQUEST_BYTES} bytes (it came in ${bytes}): ` +
      "over UDP the server answers a request from an unproven address with no more bytes " +
      "than it received";
  }

  /**
   * The most bytes a reply to this request may take: no limit over TCP (its
   * handshake proved the address) or for a request whose token proves the
   * address; otherwise the size of the datagram the request came in (0 for
   * one never recorded: nothing rather than too much).
   *
   * @param to where the reply goes
   * @param request the request it answers
   * @returns bytes, or Infinity
   */
  limit(to: Endpoint, request: Request): number {
    if (to.transport !== "udp") return Infinity;
    const token = "token" in request ? request.token : undefined;
    if (token !== undefined && token.length > 0 && this.#proven(token, to)) return Infinity;
    return this.#received.get(request) ?? 0;
  }

  /**
   * Fits a reply within `limit` bytes: an `error` has its message shortened
   * to fit; any other reply that does not fit becomes a refusal (the
   * replies to requests without a live session fit by their layout and the
   * padding that `undersized` checks: see `tests/amplification_test.ts`); if
   * not even an error with no message fits, nothing is sent.
   *
   * @param request the type of the request it answers
   * @param reply the reply
   * @param limit the most bytes, from `limit`
   * @returns what to send
   */
  fit(request: string, reply: Reply, limit: number): SizedReply {
    if (limit === Infinity) return { kind: "send", reply, shortened: false };
    if (reply.type !== "error") {
      const size = encodeMessage(reply).length;
      if (size <= limit) return { kind: "send", reply, shortened: false };
      const what = PADDED_REQUEST_TYPES.has(request as Request["type"])
        ? `Pad ${request} to ${MIN_PADDED_REQUEST_BYTES} bytes`
        : "Send it over TCP";
      return {
        kind: "refuse",
        reason: `${what} (it came in ${limit}): its ${reply.type} reply of ${size} bytes ` +
          "would be larger than the request, and the address is unproven",
      };
    }
    if (ERROR_REPLY_BASE_BYTES > limit) return { kind: "drop" };
    if (ERROR_REPLY_BASE_BYTES + byteLength(reply.message) <= limit) {
      return { kind: "send", reply, shortened: false };
    }
    const message = shorten(reply.message, limit - ERROR_REPLY_BASE_BYTES);
    return { kind: "send", reply: { ...reply, message }, shortened: true };
  }
}

function byteLength(text: string): number {
  return new TextEncoder().encode(text).length;
}

/**
 * Cuts a message for people to at most `maxBytes` of UTF-8: at the end of
 * the longest leading clause that fits (before ` (`, `; `, `: ` or `, `),
 * else of the longest run of whole words, else of whole characters.
 */
function shorten(text: string, maxBytes: number): string {
  if (byteLength(text) <= maxBytes) return text;
  let clause = "";
  for (const match of text.matchAll(/ \(|; |: |, /g)) {
    const head = text.slice(0, match.index);
    if (byteLength(head) > maxBytes) break;
    clause = head;
  }
  if (clause !== "") return clause;
  let words = "";
  for (const match of text.matchAll(/ /g)) {
    const head = text.slice(0, match.index);
    if (byteLength(head) > maxBytes) break;
    words = head;
  }
  if (words !== "") return words;
  let out = "";
  for (const char of text) {
    if (byteLength(out + char) > maxBytes) break;
    out += char;
  }
  return out;
}
