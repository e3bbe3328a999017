/**
 * Address discovery, the client's side: after each login it asks the server
 * (`reflect`, from the UDP socket that also talks to peers) which address
 * and port it sees, then asks the server's second UDP port the same. The
 * same answer from both means the NAT, if any, keeps one public port for
 * every destination (endpoint-independent mapping, RFC 4787 section 4.1),
 * which hole punching can use; different answers mean the mapping depends
 * on the destination (a symmetric NAT). With one server address this cannot
 * tell an address-dependent mapping from an endpoint-independent one.
 *
 * @module
 */
import type { MessageOf } from "../wire/messages.ts";
import type { Outbox } from "./outbox.ts";
import type { ClientTimer, TimerTable } from "./timer_table.ts";

/**
 * What address discovery found about the NAT mapping of the client's UDP
 * socket: `endpoint-independent` (both server ports saw one address and
 * port), `destination-dependent` (they saw different ones: symmetric NAT),
 * `unknown` (the server has no second port, or a port did not answer).
 */
export type MappingType = "endpoint-independent" | "destination-dependent" | "unknown";

/** Options of an {@linkcode AddressDiscovery}. */
export interface AddressDiscoveryOptions {
  /** Where the requests go. */
  outbox: Outbox;
  /** The core's timers; discovery owns `discovery`. */
  timers: TimerTable<ClientTimer>;
  /** How long to wait for a reply after each send, ms: one send per entry, then it gives up (default 500, 1000, 2000, 4000). */
  backoffMs?: readonly number[];
}

/** The `client` of every `reflect`: it names no one, as nothing is kept per client. */
const NO_CLIENT_ID = "0000000000000000";

/** The default waits after each send of a `reflect`, ms: four sends within 7.5 s. */
export const DISCOVERY_BACKOFF_MS: readonly number[] = [500, 1000, 2000, 4000];

/**
 * Asks the server's two UDP ports where the client comes from.
 *
 * @example
 * ```ts
 * const discovery = new AddressDiscovery({ outbox, timers });
 * discovery.start(now); // sends reflect to the main port
 * discovery.handle(now, reply); // a reflect_ok; then asks the second port
 * discovery.publicAddress; // "203.0.113.1:40000"
 * discovery.mapping; // "endpoint-independent"
 * ```
 */
export class AddressDiscovery {
  #outbox: Outbox;
  #timers: TimerTable<ClientTimer>;
  #backoff: readonly number[];
  /** Request ids count up; `reflect` skips the replay cache, so they need not be random. */
  #nextReqId = 1;
  #publicAddress: string | undefined;
  #mapping: MappingType | undefined;
  /** The request in flight: to the main port (`port` undefined) or the second. */
  #asking: { reqId: number; port: number | undefined; attempt: number } | undefined;

  /**
   * @param options outbox, timers and backoff
   * @throws {RangeError} if the backoff is empty
   */
  constructor(options: AddressDiscoveryOptions) {
    if (options.backoffMs?.length === 0) {
      throw new RangeError("The backoff needs at least one wait");
    }
    this.#outbox = options.outbox;
    this.#timers = options.timers;
    this.#backoff = options.backoffMs ?? DISCOVERY_BACKOFF_MS;
  }

  /** The public `address:port` the server's main UDP port saw, once known. */
  get publicAddress(): string | undefined {
    return this.#publicAddress;
  }

  /** The mapping type, once discovery has finished. */
  get mapping(): MappingType | undefined {
    return this.#mapping;
  }

  /** True while a request is in flight. */
  get running(): boolean {
    return this.#asking !== undefined;
  }

  /**
   * Starts over (after a login: the address may have changed): asks the
   * server's main UDP port.
   *
   * @param now current time, ms
   */
  start(now: number): void {
    this.#publicAddress = undefined;
    this.#mapping = undefined;
    this.#ask(now, undefined);
  }

  /**
   * Handles a `reflect_ok`; one that answers no request in flight is ignored.
   *
   * @param now current time, ms
   * @param reply the reply
   */
  handle(now: number, reply: MessageOf<"reflect_ok">): void {
    const asking = this.#asking;
    if (asking === undefined || reply.reqId !== asking.reqId) return;
    const seen = `${reply.ip}:${reply.port}`;
    if (asking.port === undefined) {
      this.#publicAddress = seen;
      if (reply.port2 !== 0) return this.#ask(now, reply.port2);
      return this.#finish("unknown");
    }
    this.#finish(seen === this.#publicAddress ? "endpoint-independent" : "destination-dependent");
  }

  /**
   * Retransmits the request, or gives up after the last wait: the mapping
   * is then `unknown`.
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    const asking = this.#asking;
    if (asking === undefined) return this.#timers.set("discovery", undefined);
    if (asking.attempt + 1 >= this.#backoff.length) return this.#finish("unknown");
    asking.attempt++;
    this.#send(now, asking.attempt);
  }

  #ask(now: number, port: number | undefined): void {
    this.#asking = { reqId: this.#nextReqId, port, attempt: 0 };
    this.#nextReqId = (this.#nextReqId + 1) >>> 0;
    this.#send(now, 0);
  }

  #send(now: number, attempt: number): void {
    const asking = this.#asking!;
    this.#outbox.push({
      type: "send",
      via: "udp",
      message: { type: "reflect", reqId: asking.reqId, client: NO_CLIENT_ID },
      attempt: attempt + 1,
      port: asking.port,
    });
    this.#timers.set("discovery", now + this.#backoff[attempt]);
  }

  #finish(mapping: MappingType): void {
    this.#asking = undefined;
    this.#mapping = mapping;
    this.#timers.set("discovery", undefined);
  }
}
