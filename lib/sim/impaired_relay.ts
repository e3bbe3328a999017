/**
 * The sans-I/O core of the impairment proxy (`scripts/impair_proxy.ts`): a
 * UDP relay that sits between clients and a server like a NAT box, and passes
 * every datagram it forwards through a {@linkcode SimNetwork} for loss,
 * duplication, reordering, delay and a bottleneck (link rate and queue). No sockets, no timers, no clock: the
 * driver tells it what arrived and when, and asks it what is due.
 *
 * Routing, NAT style, so that two clients' peer-to-peer traffic goes through
 * it too, with no client flag:
 *
 * - A datagram that reaches the **listening** socket from a client is sent
 *   on to the target (the server) from that client's own **upstream**
 *   socket, opened the first time the client is seen. So the server sees
 *   each client at its upstream socket's address, records that address at
 *   `register`/`login`, and tells other clients that address (`lookup`).
 * - A datagram that reaches a client's upstream socket **from the target** is
 *   sent to the client from the listening socket: the client sees its
 *   server's answers come from where it sent its requests.
 * - A datagram that reaches client A's upstream socket **from client B**
 *   (B sent a peer message to the address the server gave it for A) is sent
 *   to A from B's upstream socket. So A sees the message come from the
 *   address the server has for B, and peer verification holds.
 * - Anything else (an unknown source at an upstream socket, the target
 *   writing to the listening socket, more clients than allowed) is dropped
 *   and counted.
 *
 * @module
 */
import type { Random } from "../random.ts";
import { type Impairment, SimNetwork } from "./sim_network.ts";

/** The socket a datagram arrived at or leaves from: `0` is the listening socket. */
export type SocketId = number;

/** The listening socket's id. */
export const LISTEN_SOCKET: SocketId = 0;

/** A datagram the driver should send now. */
export interface RelayDatagram {
  /** The socket to send it from. */
  readonly from: SocketId;
  /** Where to send it, `host:port` (as {@linkcode ImpairedRelay.receive} was given it). */
  readonly to: string;
  /** The payload. */
  readonly data: Uint8Array;
}

/** What the relay did so far. */
export interface RelayStats {
  /** Datagrams received from clients at the listening socket. */
  fromClients: number;
  /** Datagrams received from the target at upstream sockets. */
  fromTarget: number;
  /** Datagrams received from another client at upstream sockets (peer traffic). */
  betweenClients: number;
  /** Datagrams that could not be routed and were dropped. */
  unroutable: number;
  /** Datagrams handed to the impairment (all routed ones). */
  impaired: number;
  /** Copies sent on, duplicates included. */
  forwarded: number;
  /** Datagrams the impairment dropped (the bottleneck's full queue included). */
  lost: number;
  /** Datagrams the bottleneck's full queue dropped. */
  queueDropped: number;
  /** Datagrams that crossed the bottleneck (0 without `rate`). */
  queued: number;
  /** Their total wait in its queue, ms. */
  queueDelayMs: number;
  /** Extra copies the impairment made. */
  duplicated: number;
  /** Copies held back so that later ones overtake them. */
  reordered: number;
  /** Clients seen (upstream sockets opened). */
  clients: number;
}

/** Options of {@linkcode ImpairedRelay}. */
export interface ImpairedRelayOptions {
  /** Where clients' datagrams go, `host:port` written as the driver writes sources. */
  target: string;
  /**
   * Loss, duplication, reordering, delay and the bottleneck, as in the
   * simulator; every routed datagram, whichever way, crosses one shared
   * bottleneck link (a half-duplex radio channel).
   */
  impairment: Impairment;
  /** The seeded random source every impairment decision draws from. */
  random: Random;
  /**
   * Opens an upstream socket for a new client and returns its id (at least
   * 1). Called at most once per client, from inside `receive`.
   */
  openUpstream: (client: string) => SocketId;
  /** Most clients served; datagrams from further ones are dropped (default 1024). */
  maxClients?: number;
}

/**
 * Routes and impairs datagrams between clients and one target.
 *
 * @example
 * ```ts
 * let next = 1;
 * const relay = new ImpairedRelay({
 *   target: "127.0.0.1:3000",
 *   impairment: { loss: 0.1, duplicate: 0, reorder: 0, minDelayMs: 5, maxDelayMs: 5 },
 *   random: new SeededRandom(1),
 *   openUpstream: () => next++,
 * });
 * relay.receive(0, LISTEN_SOCKET, "127.0.0.1:50000", bytes);
 * relay.due(5); // [{ from: 1, to: "127.0.0.1:3000", data: bytes }] unless lost
 * ```
 */
export class ImpairedRelay {
  /** Counters. */
  readonly stats: RelayStats = {
    fromClients: 0,
    fromTarget: 0,
    betweenClients: 0,
    unroutable: 0,
    impaired: 0,
    forwarded: 0,
    lost: 0,
    queueDropped: 0,
    queued: 0,
    queueDelayMs: 0,
    duplicated: 0,
    reordered: 0,
    clients: 0,
  };
  readonly #target: string;
  readonly #network: SimNetwork;
  readonly #openUpstream: (client: string) => SocketId;
  readonly #maxClients: number;
  readonly #upstreamOf = new Map<string, SocketId>();
  readonly #clientOf = new Map<SocketId, string>();

  /**
   * @param options the target, the impairment, the random source and how to open sockets
   * @throws {RangeError} if the impairment is not valid
   */
  constructor(options: ImpairedRelayOptions) {
    this.#target = options.target;
    this.#network = new SimNetwork(options.random, options.impairment);
    this.#openUpstream = options.openUpstream;
    this.#maxClients = options.maxClients ?? 1024;
  }

  /** The impairment in force. */
  get impairment(): Impairment {
    return this.#network.impairment;
  }

  /** Datagrams waiting for their delivery time. */
  get inFlight(): number {
    return this.#network.inFlight;
  }

  /**
   * The upstream socket of a client, if it has one.
   *
   * @param client the client's `host:port`
   * @returns its socket id, or undefined
   */
  upstreamOf(client: string): SocketId | undefined {
    return this.#upstreamOf.get(client);
  }

  /**
   * Takes one datagram that arrived at one of the relay's sockets.
   *
   * @param now the current time, ms (any monotonic clock)
   * @param at the socket it arrived at
   * @param from its source, `host:port`
   * @param data its payload (kept until delivered; do not reuse it)
   * @returns true if it was routed (it may still be lost), false if dropped as unroutable
   */
  receive(now: number, at: SocketId, from: string, data: Uint8Array): boolean {
    let route: { from: SocketId; to: string } | undefined;
    if (at === LISTEN_SOCKET) {
      const upstream = from === this.#target ? undefined : this.#upstreamFor(from);
      if (upstream !== undefined) {
        this.stats.fromClients++;
        route = { from: upstream, to: this.#target };
      }
    } else {
      const client = this.#clientOf.get(at);
      if (client !== undefined && from === this.#target) {
        this.stats.fromTarget++;
        route = { from: LISTEN_SOCKET, to: client };
      } else if (client !== undefined) {
        const sender = this.#upstreamOf.get(from);
        if (sender !== undefined) {
          this.stats.betweenClients++;
          route = { from: sender, to: client };
        }
      }
    }
    if (route === undefined) {
      this.stats.unroutable++;
      return false;
    }
    this.stats.impaired++;
    // SimNetwork's `from` names the socket to send from: a number, as text.
    this.#network.send(now, String(route.from), route.to, data);
    this.#syncStats();
    return true;
  }

  /** @returns when the next datagram is due, or undefined if none waits */
  nextDue(): number | undefined {
    return this.#network.nextDelivery();
  }

  /**
   * Removes and returns the datagrams due by `now`, in delivery order.
   *
   * @param now the current time, ms
   * @returns what to send now
   */
  due(now: number): RelayDatagram[] {
    const out = this.#network.deliverDue(now).map((p) => ({
      from: Number(p.from),
      to: p.to,
      data: p.data,
    }));
    this.#syncStats();
    return out;
  }

  #upstreamFor(client: string): SocketId | undefined {
    const known = this.#upstreamOf.get(client);
    if (known !== undefined) return known;
    if (this.#upstreamOf.size >= this.#maxClients) return undefined;
    const id = this.#openUpstream(client);
    if (!Number.isInteger(id) || id <= LISTEN_SOCKET || this.#clientOf.has(id)) {
      throw new RangeError(`Cannot use upstream socket id ${id}: not a new integer above 0`);
    }
    this.#upstreamOf.set(client, id);
    this.#clientOf.set(id, client);
    this.stats.clients++;
    return id;
  }

  #syncStats(): void {
    const n = this.#network.stats;
    this.stats.forwarded = n.delivered;
    this.stats.lost = n.lost;
    this.stats.queueDropped = n.queueDropped;
    this.stats.queued = n.queued;
    this.stats.queueDelayMs = n.queueDelayMs;
    this.stats.duplicated = n.duplicated;
    this.stats.reordered = n.reordered;
  }
}
