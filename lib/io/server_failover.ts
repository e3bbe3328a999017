/**
 * Which server instance a client sends its UDP requests to: the first one
 * given, then the next (in turn) once the current has left requests
 * unanswered for {@linkcode FAILOVER_AFTER_MS}. The instances share one
 * Redis, so the next one knows the client's name; it answers the old
 * session's next heartbeat `not_logged_in`, and the client logs in again
 * with its key before its lease runs out, so nobody sees it leave.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { hostPort } from "../host_port.ts";

/**
 * How long an instance may leave UDP requests unanswered before the client
 * moves to the next one, ms: well within a lease (30 s by default, with a
 * heartbeat every third of it).
 */
export const FAILOVER_AFTER_MS = 2000;

/** One server instance. */
export interface ServerInstance {
  /** Its host as given. */
  readonly host: string;
  /** Its resolved address. */
  readonly address: string;
  /** Its UDP port. */
  readonly port: number;
}

/**
 * The instances and the one in use.
 *
 * @example
 * ```ts
 * const failover = new ServerFailover([a, b]);
 * const to = failover.target(true, Date.now()); // send a request there
 * failover.heard(); // on any datagram from the server
 * ```
 */
export class ServerFailover {
  #servers: readonly ServerInstance[];
  #current = 0;
  #unansweredSince: number | undefined;

  /** @param servers the instances, the preferred one first (at least one) */
  constructor(servers: readonly ServerInstance[]) {
    if (servers.length === 0) throw new RangeError("Cannot fail over without a server");
    this.#servers = servers;
  }

  /** The instance in use. */
  get current(): ServerInstance {
    return this.#servers[this.#current];
  }

  /**
   * Whether a datagram from this address and port comes from one of the
   * instances (the client's secure channel takes it).
   *
   * @param address the source address
   * @param port the source port
   * @returns true for an instance's UDP port
   */
  isInstance(address: string, port: number): boolean {
    return this.#servers.some((s) => s.address === address && s.port === port);
  }

  /** Records an answer from the server: it is alive. */
  heard(): void {
    this.#unansweredSince = undefined;
  }

  /**
   * Says where to send, moving to the next instance if the current one has
   * been silent too long.
   *
   * @param request true for a request (it expects an answer), false for an acknowledgement
   * @param now current time, ms
   * @returns the instance to send to
   */
  target(request: boolean, now: number): ServerInstance {
    if (request) this.#unansweredSince ??= now;
    const since = this.#unansweredSince;
    if (this.#servers.length > 1 && since !== undefined && now - since >= FAILOVER_AFTER_MS) {
      const from = this.current;
      this.#current = (this.#current + 1) % this.#servers.length;
      this.#unansweredSince = now;
      getLogger(["switchboard", "client"]).warn("Server {from} stopped answering; moving to {to}", {
        from: hostPort(from.host, from.port),
        to: hostPort(this.current.host, this.current.port),
      });
    }
    return this.current;
  }
}
