/**
 * A simulated datagram network for the simulator: packets between named
 * endpoints, with seeded loss (independent or in bursts), duplication,
 * reordering, delay, partitions and a bottleneck (a link rate behind a
 * bounded drop-tail queue), delivered on a virtual clock. No sockets.
 *
 * Every random draw comes from the one {@linkcode Random} given to the
 * constructor, in a fixed order, so a run is reproducible from its seed:
 * per datagram one draw for loss, one for duplication, then per copy one for
 * the delay, one for reordering and, when reordered, one for the extra hold.
 * Partitions and the bottleneck's queue draw nothing.
 *
 * @module
 */
import type { Random } from "../random.ts";
import type { SimNat } from "./sim_nat.ts";

/**
 * A run of losses ends once its link has been quiet this long, ms. Without
 * it a burst lasted a number of packets, and a client that sends a hello
 * every second or more stayed inside one for minutes: with 10% loss in runs
 * of 16, all 19 hellos of two minutes were lost through the proxy.
 */
export const BURST_QUIET_MS = 200;

/** How the simulated network mistreats packets. */
export interface Impairment {
  /** Probability that a packet is dropped, 0 to 1 (the long-run rate when `burst` is set). */
  loss: number;
  /**
   * Mean length of a run of consecutive losses, in packets, on each directed
   * link. Absent or at most 1: losses are independent. Above 1: a
   * Gilbert-Elliott two-state model whose long-run loss rate is `loss` and
   * whose mean loss-run length is `burst`. A run ends when its link has
   * carried nothing for {@linkcode BURST_QUIET_MS}: a burst is a spell of
   * bad radio, not a count of packets that an idle sender would wait out.
   */
  burst?: number;
  /** Probability that a packet is delivered twice, 0 to 1. */
  duplicate: number;
  /** Probability that a packet is held back so later ones overtake it, 0 to 1. */
  reorder: number;
  /** Smallest one-way delay, ms. */
  minDelayMs: number;
  /** Largest one-way delay, ms (before reordering). */
  maxDelayMs: number;
  /**
   * Rate of the bottleneck link, bytes of payload a second. Absent or 0: no
   * bottleneck. Datagrams cross it one at a time, in the order sent, each
   * taking `bytes / rate`; then the loss draw (a datagram lost on a radio
   * link still took its time on the air), then the delay. Stream packets
   * (`sendReliable`) do not cross it.
   */
  rate?: number;
  /**
   * Bytes the bottleneck's drop-tail queue holds (the datagram being sent
   * included); a datagram that does not fit is dropped. Default: unbounded.
   * Only meaningful with `rate`.
   */
  queue?: number;
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
  /** True for a stream (`sendReliable`) packet. */
  readonly reliable?: boolean;
}

/** What the network did, for the run's summary. */
export interface NetworkStats {
  /** Packets handed to the network. */
  sent: number;
  /** Packets delivered, duplicates included. */
  delivered: number;
  /** Packets dropped, by loss, by a partition or by a host crash. */
  lost: number;
  /** Extra copies made. */
  duplicated: number;
  /** Packets held back to be reordered. */
  reordered: number;
  /** Datagrams dropped by a partition (counted in `lost` too). */
  partitioned: number;
  /** Stream packets that waited for a partition to heal (never lost for it). */
  stalled: number;
  /** Datagrams the bottleneck's full queue dropped (counted in `lost` too). */
  queueDropped: number;
  /** Datagrams that entered the bottleneck. */
  queued: number;
  /** Total time those datagrams waited in its queue before their turn on the link, ms. */
  queueDelayMs: number;
  /** Most bytes its queue held at once. */
  maxQueueBytes: number;
}

/** Options of a {@linkcode SimNetwork}. */
export interface SimNetworkOptions {
  /**
   * Names the bottleneck link a datagram crosses: datagrams with the same
   * name share one rate and one queue. Default: one link for every datagram,
   * both directions included, as on a half-duplex radio channel.
   */
  linkOf?: (from: string, to: string) => string;
}

/** One cut between two sets of endpoints. */
export interface Partition {
  /** One side: a host (`127.0.0.1`), an endpoint (`127.0.0.1:3000`) or `*` for every one. */
  readonly a: string;
  /** The other side, written the same way. */
  readonly b: string;
  /** True if only `a` to `b` is cut; `b` still reaches `a`. */
  readonly oneWay: boolean;
}

/**
 * Says what is wrong with an impairment, if anything.
 *
 * @param impairment the impairment to check
 * @returns one sentence, or undefined if it is valid
 *
 * @example
 * ```ts
 * impairmentProblem({ ...NO_IMPAIRMENT, loss: 0.8, burst: 2 });
 * // "Loss 0.8 needs a mean burst of at least 4 packets, not 2"
 * ```
 */
export function impairmentProblem(impairment: Impairment): string | undefined {
  const { loss, burst, duplicate, reorder, minDelayMs, maxDelayMs } = impairment;
  for (const [name, p] of [["loss", loss], ["duplicate", duplicate], ["reorder", reorder]]) {
    if (typeof p !== "number" || !(p >= 0 && p <= 1)) {
      return `The ${name} probability must be from 0 to 1, not ${p}`;
    }
  }
  if (!(minDelayMs >= 0) || !(maxDelayMs >= minDelayMs) || !Number.isFinite(maxDelayMs)) {
    return `The delay range must satisfy 0 <= min <= max, not ${minDelayMs} to ${maxDelayMs} ms`;
  }
  const { rate, queue } = impairment;
  if (rate !== undefined && !(rate >= 0 && Number.isFinite(rate))) {
    return `The link rate must be a finite number of bytes a second, at least 0, not ${rate}`;
  }
  if (queue !== undefined && !(queue > 0)) {
    return `The queue must hold more than 0 bytes, not ${queue}`;
  }
  if (burst !== undefined) {
    if (!(burst >= 1) || !Number.isFinite(burst)) {
      return `The mean burst length must be at least 1 packet, not ${burst}`;
    }
    if (burst > 1 && loss > 0 && loss < 1 && goodToBad(loss, burst) > 1 + 1e-9) {
      const least = loss / (1 - loss);
      return `Loss ${loss} needs a mean burst of at least ${
        Number(least.toFixed(3))
      } packets, not ${burst}`;
    }
  }
  return undefined;
}

/** Gilbert-Elliott: the chance to enter the losing state from the good one. */
function goodToBad(loss: number, burst: number): number {
  // Stationary loss = p / (p + r) with r = 1 / burst, so p = loss * r / (1 - loss).
  return loss / (burst * (1 - loss));
}

/**
 * The simulated network.
 *
 * Partitions match by host or by endpoint: a side written as a host
 * (`127.0.0.1`) covers every port of that host, one written as `host:port`
 * covers that endpoint only, and `*` covers everyone. Datagrams across a
 * partition are dropped, both when sent and when they would arrive; stream
 * packets (`sendReliable`) across one wait, in order, and flow again after
 * `heal`, as a TCP connection stalls and resumes.
 *
 * @example
 * ```ts
 * const net = new SimNetwork(new SeededRandom(1), { ...NO_IMPAIRMENT, loss: 0.1, burst: 3 });
 * net.partition("127.0.0.1", "127.0.0.2", true); // 127.0.0.1 no longer reaches 127.0.0.2
 * net.send(0, "127.0.0.1:1", "127.0.0.2:2", bytes); // dropped
 * net.heal();
 * const due = net.deliverDue(net.nextDelivery() ?? 0);
 * // A 1 MB/s link behind a 20 KB queue: 1,000 bytes take 1 ms on it.
 * const slow = new SimNetwork(new SeededRandom(1), { ...NO_IMPAIRMENT, rate: 1e6, queue: 20_000 });
 * ```
 */
export class SimNetwork {
  /** What happened so far. */
  readonly stats: NetworkStats = {
    sent: 0,
    delivered: 0,
    lost: 0,
    duplicated: 0,
    reordered: 0,
    partitioned: 0,
    stalled: 0,
    queueDropped: 0,
    queued: 0,
    queueDelayMs: 0,
    maxQueueBytes: 0,
  };
  #random: Random;
  #linkOf: (from: string, to: string) => string;
  /** Per bottleneck link: when the link finishes sending what it has accepted, ms. */
  #busyUntil = new Map<string, number>();
  #impairment: Impairment;
  #queue: SimPacket[] = [];
  #seq = 0;
  #now = 0;
  #reliable = new Map<string, number>();
  /** The directed links (`from>to`) in the losing state of the burst model. */
  #bursting = new Set<string>();
  /** Per directed link (`from>to`): when it last carried a packet, in the burst model. */
  #lastPacketAt = new Map<string, number>();
  #partitions: Partition[] = [];
  /** Stream packets waiting for a partition to heal, per directed link, in order. */
  #stalled = new Map<string, SimPacket[]>();
  /** NATs in front of hosts: datagrams are translated on the way out and on arrival. */
  #nats: SimNat[] = [];

  /**
   * @param random the run's seeded random source
   * @param impairment loss, duplication, reordering, delay and the bottleneck
   * @param options how datagrams map to bottleneck links
   * @throws {RangeError} if the impairment is not valid (see {@linkcode impairmentProblem})
   */
  constructor(random: Random, impairment: Impairment, options: SimNetworkOptions = {}) {
    this.#random = random;
    this.#impairment = checked(impairment);
    this.#linkOf = options.linkOf ?? (() => "");
  }

  /** The impairment in force. */
  get impairment(): Impairment {
    return this.#impairment;
  }

  /**
   * Changes the impairment from now on.
   *
   * @throws {RangeError} if the impairment is not valid
   */
  set impairment(impairment: Impairment) {
    this.#impairment = checked(impairment);
  }

  /** Packets scheduled for delivery (stream packets stalled by a partition not included). */
  get inFlight(): number {
    return this.#queue.length;
  }

  /** Stream packets waiting for a partition to heal. */
  get stalled(): number {
    let count = 0;
    for (const packets of this.#stalled.values()) count += packets.length;
    return count;
  }

  /** The partitions in force, oldest first. */
  get partitions(): readonly Partition[] {
    return this.#partitions;
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
    this.#now = Math.max(this.#now, now);
    this.stats.sent++;
    const outside = this.#natOut(now, from, to);
    if (outside === undefined) {
      this.stats.lost++;
      return;
    }
    if (this.blocked(from, to)) {
      this.stats.lost++;
      this.stats.partitioned++;
      return;
    }
    const imp = this.#impairment;
    const departAt = this.#bottleneck(now, from, to, data.length);
    if (departAt === undefined) {
      this.stats.lost++;
      this.stats.queueDropped++;
      return;
    }
    if (this.#lose(`${from}>${to}`, imp)) {
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
      this.#enqueue({ from: outside, to, data, deliverAt: departAt + delay, seq: this.#seq++ });
    }
  }

  /**
   * Bytes waiting in a bottleneck link's queue at a time, the datagram
   * being sent included.
   *
   * @param now the time, ms
   * @param link the link's name (see {@linkcode SimNetworkOptions.linkOf}); default the shared one
   * @returns the bytes, 0 without a bottleneck
   */
  queueBytes(now: number, link = ""): number {
    const rate = this.#impairment.rate ?? 0;
    if (rate <= 0) return 0;
    return Math.max(0, (this.#busyUntil.get(link) ?? 0) - now) * rate / 1000;
  }

  /**
   * Takes a datagram into its bottleneck link: drop-tail when the queue is
   * full, else the link sends it after what it holds.
   *
   * @returns when it leaves the link, or undefined when the queue dropped it
   */
  #bottleneck(now: number, from: string, to: string, bytes: number): number | undefined {
    const { rate = 0, queue = Infinity } = this.#impairment;
    if (rate <= 0) return now;
    const link = this.#linkOf(from, to);
    const start = Math.max(now, this.#busyUntil.get(link) ?? 0);
    const backlog = (start - now) * rate / 1000;
    if (backlog > 0 && backlog + bytes > queue) return undefined;
    const departAt = start + bytes * 1000 / rate;
    this.#busyUntil.set(link, departAt);
    this.stats.queued++;
    this.stats.queueDelayMs += start - now;
    this.stats.maxQueueBytes = Math.max(this.stats.maxQueueBytes, backlog + bytes);
    return departAt;
  }

  /**
   * Sends over a simulated stream: never lost, duplicated or reordered,
   * delivered in order per direction after the minimum delay. Across a
   * partition it waits until the partition heals.
   *
   * @param now current virtual time, ms
   * @param from sender `address:port`
   * @param to receiver `address:port`
   * @param data payload
   */
  sendReliable(now: number, from: string, to: string, data: Uint8Array): void {
    this.#now = Math.max(this.#now, now);
    this.stats.sent++;
    const key = `${from}>${to}`;
    const packet = { from, to, data, deliverAt: now, seq: this.#seq++, reliable: true };
    const waiting = this.#stalled.get(key);
    if (waiting !== undefined || this.blocked(from, to)) {
      this.#stall(key, packet);
      return;
    }
    this.#schedule(key, packet, now);
  }

  /** @returns the time of the next delivery, or undefined when nothing is in flight */
  nextDelivery(): number | undefined {
    return this.#queue[0]?.deliverAt;
  }

  /**
   * Removes and returns every packet due by `now`, in delivery order.
   * Datagrams that would cross a partition are dropped instead; stream
   * packets that would cross one wait for the heal.
   *
   * @param now current virtual time, ms
   * @returns the packets to deliver
   */
  deliverDue(now: number): SimPacket[] {
    this.#now = Math.max(this.#now, now);
    let count = 0;
    while (count < this.#queue.length && this.#queue[count].deliverAt <= now) count++;
    const due = this.#natIn(now, this.#queue.splice(0, count));
    if (this.#partitions.length === 0) {
      this.stats.delivered += due.length;
      return due;
    }
    const delivered: SimPacket[] = [];
    for (const packet of due) {
      if (!this.blocked(packet.from, packet.to)) {
        delivered.push(packet);
      } else if (packet.reliable) {
        this.#stall(`${packet.from}>${packet.to}`, packet);
      } else {
        this.stats.lost++;
        this.stats.partitioned++;
      }
    }
    this.stats.delivered += delivered.length;
    return delivered;
  }

  /**
   * Drops every packet in flight to an address, as when a host crashes,
   * stalled stream packets included.
   *
   * @param address `address:port` of the host
   * @returns how many packets were dropped
   */
  dropFor(address: string): number {
    const before = this.#queue.length;
    this.#queue = this.#queue.filter((p) => p.to !== address);
    let dropped = before - this.#queue.length;
    for (const [key, packets] of [...this.#stalled]) {
      if (packets[0].to !== address) continue;
      dropped += packets.length;
      this.#stalled.delete(key);
    }
    this.stats.lost += dropped;
    return dropped;
  }

  /**
   * Cuts the network between two sides: nothing goes from `a` to `b`, nor
   * from `b` to `a` unless `oneWay`. A side is a host (`127.0.0.1`, every
   * port), an endpoint (`127.0.0.1:3000`) or `*` (everyone).
   *
   * @param a one side
   * @param b the other side
   * @param oneWay cut only the direction from `a` to `b`
   *
   * @example
   * ```ts
   * net.partition("127.0.0.1", "*"); // isolate the host 127.0.0.1
   * net.partition("127.0.1.2", "127.0.0.1", true); // 127.0.1.2 can hear 127.0.0.1 but not reach it
   * ```
   */
  partition(a: string, b: string, oneWay = false): void {
    this.#partitions.push({ a, b, oneWay });
    // Stream packets already on their way now wait, in order, ahead of later ones.
    const kept: SimPacket[] = [];
    for (const packet of this.#queue) {
      if (packet.reliable && this.blocked(packet.from, packet.to)) {
        this.#stall(`${packet.from}>${packet.to}`, packet);
      } else {
        kept.push(packet);
      }
    }
    this.#queue = kept;
  }

  /**
   * Removes partitions and lets stalled stream packets flow again, in order,
   * from `now` on (default: the latest time the network was given).
   * `heal()` removes every partition; `heal(a)` every one with `a` as a
   * side; `heal(a, b)` every one between `a` and `b`, in either direction.
   * Sides are matched as written in {@linkcode SimNetwork.partition}.
   *
   * @param a one side
   * @param b the other side
   * @param options the current virtual time
   * @returns how many partitions were removed
   */
  heal(a?: string, b?: string, options: { now?: number } = {}): number {
    const before = this.#partitions.length;
    this.#partitions = this.#partitions.filter((p) => {
      if (a === undefined) return false;
      if (b === undefined) return p.a !== a && p.b !== a;
      return !((p.a === a && p.b === b) || (p.a === b && p.b === a));
    });
    const now = Math.max(this.#now, options.now ?? 0);
    for (const [key, packets] of [...this.#stalled]) {
      if (this.blocked(packets[0].from, packets[0].to)) continue;
      this.#stalled.delete(key);
      for (const packet of packets) this.#schedule(key, packet, now);
    }
    return before - this.#partitions.length;
  }

  /**
   * Tells whether a partition cuts the direction from one endpoint to another.
   *
   * @param from sender `address:port`
   * @param to receiver `address:port`
   * @returns true if a packet from `from` to `to` cannot pass now
   */
  blocked(from: string, to: string): boolean {
    for (const p of this.#partitions) {
      if (covers(p.a, from) && covers(p.b, to)) return true;
      if (!p.oneWay && covers(p.b, from) && covers(p.a, to)) return true;
    }
    return false;
  }

  /**
   * Puts a NAT in front of its hosts (see {@linkcode SimNat}): their
   * datagrams leave with its public address, datagrams to it reach them only
   * as its bindings and filtering allow, and an inside address cannot be
   * reached from outside. Stream packets are not translated.
   *
   * @param nat the NAT; adding it twice changes nothing
   */
  addNat(nat: SimNat): void {
    if (!this.#nats.includes(nat)) this.#nats.push(nat);
  }

  /** The sender as seen outside its NAT, or undefined if the datagram goes nowhere. */
  #natOut(now: number, from: string, to: string): string | undefined {
    if (this.#nats.length === 0) return from;
    const nat = this.#nats.find((n) => n.covers(from));
    const target = this.#nats.find((n) => n.covers(to));
    if (target !== undefined && target !== nat) return undefined;
    return nat === undefined ? from : nat.outbound(now, from, to);
  }

  /** Arriving datagrams with NATs' public addresses translated; those a NAT drops are lost. */
  #natIn(now: number, due: SimPacket[]): SimPacket[] {
    if (this.#nats.length === 0) return due;
    const kept: SimPacket[] = [];
    for (const packet of due) {
      const nat = packet.reliable
        ? undefined
        : this.#nats.find((n) => n.publicIp === hostOf(packet.to));
      const to = nat === undefined ? packet.to : nat.inbound(now, packet.from, packet.to);
      if (to === undefined) this.stats.lost++;
      else kept.push(to === packet.to ? packet : { ...packet, to });
    }
    return kept;
  }

  /** Draws whether the next datagram on a link is lost: exactly one draw. */
  #lose(link: string, imp: Impairment): boolean {
    const u = this.#random.next();
    const burst = imp.burst ?? 1;
    if (burst <= 1 || imp.loss <= 0 || imp.loss >= 1) return u < imp.loss;
    // Gilbert-Elliott: step the link's state, then lose the packet in the bad state.
    const quiet = this.#now - (this.#lastPacketAt.get(link) ?? -Infinity) >= BURST_QUIET_MS;
    this.#lastPacketAt.set(link, this.#now);
    const bad = this.#bursting.has(link) && !quiet;
    const next = bad ? u >= 1 / burst : u < goodToBad(imp.loss, burst);
    if (next) this.#bursting.add(link);
    else this.#bursting.delete(link);
    return next;
  }

  #stall(key: string, packet: SimPacket): void {
    const waiting = this.#stalled.get(key);
    if (waiting === undefined) this.#stalled.set(key, [packet]);
    else waiting.push(packet);
    this.stats.stalled++;
  }

  #schedule(key: string, packet: SimPacket, now: number): void {
    const at = Math.max(now + this.#impairment.minDelayMs, this.#reliable.get(key) ?? 0);
    this.#reliable.set(key, at);
    this.#enqueue({ ...packet, deliverAt: at, seq: packet.seq });
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

function checked(impairment: Impairment): Impairment {
  const problem = impairmentProblem(impairment);
  if (problem !== undefined) throw new RangeError(problem);
  return impairment;
}

/** True if a partition side covers an `address:port`. */
function covers(side: string, address: string): boolean {
  if (side === "*" || side === address) return true;
  const colon = address.lastIndexOf(":");
  return colon !== -1 && address.slice(0, colon) === side;
}

function hostOf(address: string): string {
  return address.slice(0, address.lastIndexOf(":"));
}
