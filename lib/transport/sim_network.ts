/**
 * A simulated datagram network for the simulator: packets between named
 * endpoints, with seeded loss, duplication, reordering and delay, delivered
 * on a virtual clock. No sockets.
 *
 * @module
 */
import type { Random } from "../random.ts";

/** How the simulated network mistreats packets. */
export interface Impairment {
  /** Probability that a packet is dropped, 0 to 1. */
  loss: number;
  /** Probability that a packet is delivered twice, 0 to 1. */
  duplicate: number;
  /** Probability that a packet is held back so later ones overtake it, 0 to 1. */
  reorder: number;
  /** Smallest one-way delay, ms. */
  minDelayMs: number;
  /** Largest one-way delay, ms (before reordering). */
  maxDelayMs: number;
}

/** A perfect network with 1 ms delay. */
export const NO_IMPAIRMENT: Impairment = {
  loss: 0,
  duplicate: 0,
  reorder: 0,
  minDelayMs: 1,
  maxDelayMs: 1,
};

/** A packet in flight. */
export interface SimPacket {
  /** Sender, `address:port`. */
  readonly from: string;
  /** Receiver, `address:port`. */
  readonly to: string;
  /** The payload. */
  readonly data: Uint8Array;
  /** Virtual time of delivery, ms. */
  readonly deliverAt: number;
  /** Tie-breaker that keeps delivery order deterministic. */
  readonly seq: number;
}

/** What the network did, for the run's summary. */
export interface NetworkStats {
  /** Packets handed to the network. */
  sent: number;
  /** Packets delivered, duplicates included. */
  delivered: number;
  /** Packets dropped. */
  lost: number;
  /** Extra copies made. */
  duplicated: number;
  /** Packets held back to be reordered. */
  reordered: number;
}

/**
 * The simulated network.
 *
 * @example
 * ```ts
 * const net = new SimNetwork(new SeededRandom(1), { ...NO_IMPAIRMENT, loss: 0.1 });
 * net.send(0, "a:1", "b:2", bytes);
 * const due = net.deliverDue(net.nextDelivery() ?? 0);
 * ```
 */
export class SimNetwork {
  /** What happened so far. */
  readonly stats: NetworkStats = { sent: 0, delivered: 0, lost: 0, duplicated: 0, reordered: 0 };
  #random: Random;
  #impairment: Impairment;
  #queue: SimPacket[] = [];
  #seq = 0;
  #reliable = new Map<string, number>();

  /**
   * @param random the run's seeded random source
   * @param impairment loss, duplication, reordering and delay
   */
  constructor(random: Random, impairment: Impairment) {
    this.#random = random;
    this.#impairment = impairment;
  }

  /** Changes the impairment from now on. */
  set impairment(impairment: Impairment) {
    this.#impairment = impairment;
  }

  /** Packets still in flight. */
  get inFlight(): number {
    return this.#queue.length;
  }

  /**
   * Sends an unreliable datagram through the impairments.
   *
   * @param now current virtual time, ms
   * @param from sender `address:port`
   * @param to receiver `address:port`
   * @param data payload
   */
  send(now: number, from: string, to: string, data: Uint8Array): void {
    this.stats.sent++;
    const imp = this.#impairment;
    if (this.#random.next() < imp.loss) {
      this.stats.lost++;
      return;
    }
    const copies = this.#random.next() < imp.duplicate ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let i = 0; i < copies; i++) {
      let delay = imp.minDelayMs + this.#random.next() * (imp.maxDelayMs - imp.minDelayMs);
      if (this.#random.next() < imp.reorder) {
        this.stats.reordered++;
        delay += imp.maxDelayMs + this.#random.next() * (imp.maxDelayMs + 10);
      }
      this.#enqueue({ from, to, data, deliverAt: now + delay, seq: this.#seq++ });
    }
  }

  /**
   * Sends over a simulated stream: never lost, duplicated or reordered,
   * delivered in order per direction after the minimum delay.
   *
   * @param now current virtual time, ms
   * @param from sender `address:port`
   * @param to receiver `address:port`
   * @param data payload
   */
  sendReliable(now: number, from: string, to: string, data: Uint8Array): void {
    this.stats.sent++;
    const key = `${from}>${to}`;
    const at = Math.max(now + this.#impairment.minDelayMs, this.#reliable.get(key) ?? 0);
    this.#reliable.set(key, at);
    this.#enqueue({ from, to, data, deliverAt: at, seq: this.#seq++ });
  }

  /** @returns the time of the next delivery, or undefined when nothing is in flight */
  nextDelivery(): number | undefined {
    return this.#queue[0]?.deliverAt;
  }

  /**
   * Removes and returns every packet due by `now`, in delivery order.
   *
   * @param now current virtual time, ms
   * @returns the packets to deliver
   */
  deliverDue(now: number): SimPacket[] {
    let count = 0;
    while (count < this.#queue.length && this.#queue[count].deliverAt <= now) count++;
    const due = this.#queue.splice(0, count);
    this.stats.delivered += due.length;
    return due;
  }

  /**
   * Drops every packet in flight to or from an address, as when a host
   * crashes.
   *
   * @param address `address:port` of the host
   * @returns how many packets were dropped
   */
  dropFor(address: string): number {
    const before = this.#queue.length;
    this.#queue = this.#queue.filter((p) => p.to !== address);
    const dropped = before - this.#queue.length;
    this.stats.lost += dropped;
    return dropped;
  }

  #enqueue(packet: SimPacket): void {
    let lo = 0, hi = this.#queue.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const q = this.#queue[mid];
      if (
        q.deliverAt < packet.deliverAt || (q.deliverAt === packet.deliverAt && q.seq < packet.seq)
      ) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    this.#queue.splice(lo, 0, packet);
  }
}
