/**
 * Which server instance a client sends its UDP requests to: the first one
 * given, then the next (in turn) once the current one has left a request
 * unanswered for {@linkcode FAILOVER_AFTER_MS}, or said it is shutting down.
 * The instances share one Redis, so the next one holds the client's session
 * in the shared presence: the client's requests carry its token there and the
 * instance takes the session over (`Directory`), so nobody sees it leave.
 *
 * @module
 */
import { hostPort } from "../host_port.ts";

/**
 * How long an instance may leave a UDP request unanswered before the client
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
 * failover.asked(Date.now()); // a request went to failover.current
 * failover.heard(); // on any datagram from it
 * if (Date.now() >= (failover.dueAt ?? Infinity)) failover.move(Date.now());
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

  /** The instance in use as `host:port`, as the user gave it. */
  get currentName(): string {
    return hostPort(this.current.host, this.current.port);
  }

  /** True if there is another instance to move to. */
  get several(): boolean {
    return this.#servers.length > 1;
  }

  /**
   * When the client should move if the instance in use stays silent, ms;
   * undefined while nothing is unanswered or there is nowhere to go.
   */
  get dueAt(): number | undefined {
    const since = this.#unansweredSince;
    return this.several && since !== undefined ? since + FAILOVER_AFTER_MS : undefined;
  }

  /**
   * Whether a datagram from this address and port comes from one of the
   * instances.
   *
   * @param address the source address
   * @param port the source port
   * @returns `current` for the instance in use, `other` for another, undefined for neither
   */
  instance(address: string, port: number): "current" | "other" | undefined {
    const { address: at, port: on } = this.current;
    if (address === at && port === on) return "current";
    return this.#servers.some((s) => s.address === address && s.port === port)
      ? "other"
      : undefined;
  }

  /**
   * Records a request sent to the instance in use.
   *
   * @param now current time, ms
   */
  asked(now: number): void {
    this.#unansweredSince ??= now;
  }

  /** Records an answer from the instance in use: it is alive. */
  heard(): void {
    this.#unansweredSince = undefined;
  }

  /**
   * Moves to the next instance.
   *
   * @returns the instance left and the one now in use, as `host:port`
   */
  move(): { from: string; to: string } {
    const from = this.currentName;
    this.#current = (this.#current + 1) % this.#servers.length;
    this.#unansweredSince = undefined;
    return { from, to: this.currentName };
  }
}
