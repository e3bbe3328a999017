/**
 * A NAT for the simulator, with RFC 4787's behaviours: how it maps an inside
 * endpoint to a public port (endpoint-independent, address-dependent,
 * address-and-port-dependent), which outside senders it lets in (endpoint-
 * independent, address-dependent, address-and-port-dependent filtering),
 * bindings that expire on the virtual clock unless outbound traffic refreshes
 * them, and hairpinning on or off. It translates datagrams only; the
 * simulated TCP streams go around it (a TCP connection's state outlives the
 * UDP bindings under study here). {@linkcode SimNetwork.addNat} puts one in
 * front of hosts. Nothing random: public ports are handed out in order.
 *
 * @module
 */

/** RFC 4787 section 4.1: what a NAT's mapping, or section 5: what its filtering, depends on. */
export type NatBehavior =
  | "endpoint-independent"
  | "address-dependent"
  | "address-and-port-dependent";

/** Options of a {@linkcode SimNat}. */
export interface SimNatOptions {
  /** Whether an inside endpoint keeps one public port for every destination (default endpoint-independent). */
  mapping?: NatBehavior;
  /** Which outside senders reach a mapped port (default address-and-port-dependent). */
  filtering?: NatBehavior;
  /** A binding (and each permission on it) lasts this long after the last outbound datagram, ms (default 30 s). */
  bindingTimeoutMs?: number;
  /** Whether an inside host reaches another through the NAT's public address (default false). */
  hairpin?: boolean;
  /** The first public port handed out (default 40000); then the next free one, in order. */
  firstPort?: number;
}

/** What a NAT has done, for tests and the summary. */
export interface NatStats {
  /** Bindings created. */
  mapped: number;
  /** Bindings that expired. */
  expired: number;
  /** Inbound datagrams dropped by filtering or for lack of a binding. */
  filtered: number;
  /** Datagrams dropped because hairpinning is off. */
  hairpinDropped: number;
}

interface Binding {
  readonly inside: string;
  readonly port: number;
  readonly key: string;
  lastOut: number;
  /** Outside endpoints or addresses (by filtering) sent to, with when. */
  readonly permits: Map<string, number>;
}

/**
 * One NAT: a public address in front of inside hosts.
 *
 * @example
 * ```ts
 * const nat = new SimNat("203.0.113.1", { mapping: "address-and-port-dependent" });
 * nat.addHost("127.0.0.5");
 * network.addNat(nat);
 * nat.outbound(0, "127.0.0.5:4005", "127.0.0.1:3000"); // "203.0.113.1:40000"
 * ```
 */
export class SimNat {
  /** The NAT's public address (no port). */
  readonly publicIp: string;
  /** The mapping behaviour. */
  readonly mapping: NatBehavior;
  /** The filtering behaviour. */
  readonly filtering: NatBehavior;
  /** How long a binding lives without outbound traffic, ms. */
  readonly bindingTimeoutMs: number;
  /** Whether hairpinning works. */
  readonly hairpin: boolean;
  /** What it did so far. */
  readonly stats: NatStats = { mapped: 0, expired: 0, filtered: 0, hairpinDropped: 0 };
  #hosts = new Set<string>();
  #byKey = new Map<string, Binding>();
  #byPort = new Map<number, Binding>();
  #firstPort: number;
  #nextPort: number;

  /**
   * @param publicIp its public address
   * @param options mapping, filtering, binding timeout, hairpinning, first port
   * @throws {RangeError} if the timeout or the first port is out of range
   */
  constructor(publicIp: string, options: SimNatOptions = {}) {
    this.publicIp = publicIp;
    this.mapping = options.mapping ?? "endpoint-independent";
    this.filtering = options.filtering ?? "address-and-port-dependent";
    this.bindingTimeoutMs = options.bindingTimeoutMs ?? 30_000;
    this.hairpin = options.hairpin ?? false;
    this.#firstPort = options.firstPort ?? 40_000;
    if (!(this.bindingTimeoutMs > 0)) {
      throw new RangeError(`A binding timeout must be above 0 ms, not ${this.bindingTimeoutMs}`);
    }
    if (!Number.isInteger(this.#firstPort) || this.#firstPort < 1 || this.#firstPort > 65535) {
      throw new RangeError(`The first public port must be from 1 to 65535, not ${this.#firstPort}`);
    }
    this.#nextPort = this.#firstPort;
  }

  /**
   * Puts a host behind this NAT.
   *
   * @param host the inside address, without a port
   */
  addHost(host: string): void {
    this.#hosts.add(host);
  }

  /**
   * Tells whether an endpoint or host is inside this NAT.
   *
   * @param address `host:port` or a host
   * @returns true if its host is behind the NAT
   */
  covers(address: string): boolean {
    return this.#hosts.has(hostOf(address));
  }

  /** Live bindings at a time (expired ones are dropped first). */
  bindings(now: number): number {
    this.#expire(now);
    return this.#byKey.size;
  }

  /** Forgets every binding, as `conntrack -F` does on a Linux router. */
  flush(): void {
    this.#byKey.clear();
    this.#byPort.clear();
  }

  /**
   * Translates a datagram leaving an inside endpoint: finds or makes its
   * binding, refreshes it and records the destination as permitted.
   *
   * @param now the time, ms
   * @param from the inside `host:port`
   * @param to the destination `host:port`
   * @returns the public `host:port` it leaves with, the inside one for a
   *   destination inside too, or undefined if the NAT drops it (hairpinning off)
   */
  outbound(now: number, from: string, to: string): string | undefined {
    if (this.covers(to)) return from;
    if (hostOf(to) === this.publicIp && !this.hairpin) {
      this.stats.hairpinDropped++;
      return undefined;
    }
    this.#expire(now);
    const key = `${from}|${this.#scope(this.mapping, to)}`;
    let binding = this.#byKey.get(key);
    if (binding === undefined) {
      binding = { inside: from, port: this.#freePort(), key, lastOut: now, permits: new Map() };
      this.#byKey.set(key, binding);
      this.#byPort.set(binding.port, binding);
      this.stats.mapped++;
    }
    binding.lastOut = now;
    binding.permits.set(this.#scope(this.filtering, to), now);
    return `${this.publicIp}:${binding.port}`;
  }

  /**
   * Translates a datagram arriving at the public address, if a live binding
   * and the filtering let it in.
   *
   * @param now the time, ms
   * @param from the sender's `host:port` (as seen outside)
   * @param to the public `host:port` it was sent to
   * @returns the inside `host:port`, or undefined if it is dropped
   */
  inbound(now: number, from: string, to: string): string | undefined {
    this.#expire(now);
    const binding = this.#byPort.get(portOf(to));
    const permitted = binding?.permits.get(this.#scope(this.filtering, from));
    if (
      binding === undefined || permitted === undefined ||
      permitted + this.bindingTimeoutMs <= now
    ) {
      this.stats.filtered++;
      return undefined;
    }
    return binding.inside;
  }

  /** What part of a remote endpoint a behaviour depends on ("" for none). */
  #scope(behavior: NatBehavior, remote: string): string {
    if (behavior === "endpoint-independent") return "";
    if (behavior === "address-dependent") return hostOf(remote);
    return remote;
  }

  #expire(now: number): void {
    for (const [key, binding] of this.#byKey) {
      if (binding.lastOut + this.bindingTimeoutMs > now) continue;
      this.#byKey.delete(key);
      this.#byPort.delete(binding.port);
      this.stats.expired++;
    }
  }

  #freePort(): number {
    const span = 65536 - this.#firstPort;
    for (let tries = 0; tries < span; tries++) {
      const port = this.#nextPort;
      this.#nextPort = port === 65535 ? this.#firstPort : port + 1;
      if (!this.#byPort.has(port)) return port;
    }
    throw new RangeError(`NAT ${this.publicIp} has no free public port`);
  }
}

function hostOf(address: string): string {
  const colon = address.lastIndexOf(":");
  return colon === -1 || address.indexOf(":") !== colon ? address : address.slice(0, colon);
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(":") + 1));
}
