/**
 * Address discovery, the server's side: a `reflect` request is answered
 * with the address and port it came from, as the server sees them, and the
 * number of the server's second UDP port, so that a client can ask again
 * there and see whether its NAT maps it to another port for another
 * destination (RFC 4787 section 4.1; STUN's binding request, RFC 8489, in
 * miniature). Stateless and sans-I/O: no session, no replay cache.
 *
 * @module
 */
import { encodeMessage } from "../wire/codec.ts";
import type { Message, MessageOf } from "../wire/messages.ts";
import type { Endpoint, ServerOutput } from "./server_event.ts";

/** Options of a {@linkcode Reflector}. */
export interface ReflectorOptions {
  /** The server's second UDP port, told in every `reflect_ok`; 0 when there is none. */
  port2: number;
  /** Where its replies go (the core's outputs). */
  output: (output: ServerOutput) => void;
}

/**
 * Answers `reflect` requests.
 *
 * @example
 * ```ts
 * const reflector = new Reflector({ port2: 3002, output: (o) => outputs.push(o) });
 * reflector.handle({ transport: "udp", address: "203.0.113.7", port: 40001 }, request, 312);
 * // outputs: a send of { type: "reflect_ok", reqId, ip: "203.0.113.7", port: 40001, port2: 3002 }
 * ```
 */
export class Reflector {
  /** `reflect` requests answered. */
  answered = 0;
  /** `reflect` requests dropped because the reply would have outgrown them. */
  undersized = 0;
  #port2: number;
  #output: (output: ServerOutput) => void;

  /**
   * @param options the second port
   * @throws {RangeError} if the port is not 0 to 65535
   */
  constructor(options: ReflectorOptions) {
    if (!Number.isInteger(options.port2) || options.port2 < 0 || options.port2 > 65535) {
      throw new RangeError(`The second UDP port must be from 0 to 65535, not ${options.port2}`);
    }
    this.#port2 = options.port2;
    this.#output = options.output;
  }

  /** The second UDP port told to clients, 0 for none. */
  get port2(): number {
    return this.#port2;
  }

  /**
   * Takes what is for address discovery: a `reflect` (answered, see
   * {@linkcode Reflector.reply}) and anything that came to the second port,
   * which answers nothing else (ignored).
   *
   * @param from where it came from (`second` if it came to the second port)
   * @param message the decoded message
   * @param receivedBytes the size of the datagram or frame body it came in
   * @returns true if it was taken; false if the core should handle it
   */
  handle(from: Endpoint, message: Message, receivedBytes: number): boolean {
    if (message.type === "reflect") {
      const reply = this.reply(from, message, receivedBytes);
      if (reply !== undefined) this.#output({ type: "send", to: from, message: reply });
      return true;
    }
    return from.second === true;
  }

  /**
   * The reply to a `reflect`: where it came from. Over UDP, a request that
   * arrived in fewer bytes than its reply (it was not padded) gets none, so
   * that a forged source address gains an attacker nothing.
   *
   * @param from where the request came from
   * @param request the request
   * @param receivedBytes the size of the datagram or frame body it came in
   * @returns the reply, or undefined when there is none
   */
  reply(
    from: Endpoint,
    request: MessageOf<"reflect">,
    receivedBytes: number,
  ): MessageOf<"reflect_ok"> | undefined {
    const reply = {
      type: "reflect_ok",
      reqId: request.reqId,
      ip: from.address,
      port: from.port,
      port2: this.#port2,
    } as const;
    if (from.transport === "udp" && encodeMessage(reply).length > receivedBytes) {
      this.undersized++;
      return undefined;
    }
    this.answered++;
    return reply;
  }
}
