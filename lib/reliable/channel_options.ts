/**
 * The options of a {@linkcode ReliableChannel}: what each one means, their
 * defaults, the low-latency preset, and their validation.
 *
 * @module
 */
import { MAX_SACK_RANGES, MAX_SEGMENT_PAYLOAD } from "./segment.ts";

/**
 * How a channel recovers losses: `"selective"` (windows, SACK, adaptive RTO,
 * fast retransmit) or `"stop_and_wait"` (one segment in flight, fixed
 * timeout; the baseline of comparisons, as seed 001 behaves).
 */
export type ChannelMode = "selective" | "stop_and_wait";

/**
 * Which congestion controller a selective channel runs: `"bbr"` (a model of
 * the path's bandwidth and RTT, paced; see {@linkcode BbrControl}) or
 * `"newreno"` (NewReno with Veno's loss discrimination, the controller
 * before BBR, kept as the baseline of benchmarks; see
 * {@linkcode CongestionControl}).
 */
export type CongestionChoice = "bbr" | "newreno";

/** Options of a {@linkcode ReliableChannel}; every one has a default. */
export interface ReliableChannelOptions {
  /** Recovery mode. Default `"selective"`. */
  mode?: ChannelMode;
  /** Sequence number of our first data segment. Default 0. */
  initialSeq?: number;
  /** Sequence number of the peer's first data segment. Default 0. */
  peerInitialSeq?: number;
  /**
   * Most segments in flight (a span of sequence numbers), and the largest
   * congestion window. Beyond half of it, new segments go out only while
   * what is in flight is below the controller's cruise window (BBR: one BDP
   * and its queue allowance; NewReno: none), so the second half serves to
   * repair holes while the link stays busy. Default 2048; 1 in stop-and-wait.
   */
  sendWindow?: number;
  /**
   * Sequence numbers accepted from the cumulative point on, so at most
   * `receiveWindow - 1` out-of-order segments (about 2.3 MB at the
   * default) are buffered; advertised to the peer. Default 2048; 1 in
   * stop-and-wait.
   */
  receiveWindow?: number;
  /**
   * Congestion control and pacing (see {@linkcode CongestionControl}).
   * Default true; false in stop-and-wait, which has one segment in flight.
   */
  congestionControl?: boolean;
  /** Which controller, when `congestionControl` is on. Default `"bbr"`. */
  congestion?: CongestionChoice;
  /** Congestion window at the start, segments. Default 10 (RFC 6928). */
  initialWindow?: number;
  /** Most segments sent back to back before pacing spaces them out. Default 32. */
  maxBurst?: number;
  /**
   * Acknowledge at once after this many in-order data segments that did
   * not complete a message (delayed acks, as TCP's every second segment).
   * Segments that complete a message, arrive out of order, fill a gap or
   * are duplicates are acknowledged at once. Default 8 (an ack's send costs
   * the receiver as much as receiving three datagrams); 1 in stop-and-wait.
   */
  ackEvery?: number;
  /** Longest delay of an acknowledgement, ms. Default 10. */
  ackDelayMs?: number;
  /** Most SACK ranges per ack, 0 to 16. Default 16; 0 in stop-and-wait. */
  maxSackRanges?: number;
  /**
   * Fast retransmit threshold: a segment is lost once this many segments
   * transmitted after its latest transmission are acknowledged. Default 2.
   */
  dupThresh?: number;
  /** RTO before the first RTT sample, ms. Default 1000 (RFC 6298). */
  initialRtoMs?: number;
  /** Lower bound of the RTO, ms. Default 200. */
  minRtoMs?: number;
  /** Upper bound of the RTO, backoff included, ms. Default 60000. */
  maxRtoMs?: number;
  /** Clock granularity G of RFC 6298, ms. Default 10. */
  granularityMs?: number;
  /** The fixed retransmission timeout of stop-and-wait mode, ms. Default 10000. */
  stopAndWaitRtoMs?: number;
  /** Send a keepalive after this long without sending anything, ms. Default 5000. */
  keepaliveMs?: number;
  /** Declare the peer dead after this long without hearing from it, ms. Default 20000. */
  deadAfterMs?: number;
  /**
   * Declare the peer dead when a segment needs retransmitting after this
   * many retransmissions. Default 80: as many tries as a silent peer gets
   * probes before `deadAfterMs` ends (see `PROBES_BEFORE_DEATH`), so a burst
   * of loss that a live channel rides out does not kill it this way either.
   */
  maxRetransmits?: number;
  /**
   * Copies of each data segment transmission while the stream is thin (at
   * most {@linkcode THIN_STREAM_BYTES} unacknowledged or waiting): 1 sends it once; 2
   * sends a redundant copy right behind it, which hides most single losses
   * from the latency for twice the packets of a thin stream. Default 1.
   */
  copies?: number;
}

/**
 * A stream with at most this many payload bytes unacknowledged or waiting
 * to be sent (four full segments) is thin: interactive traffic, where
 * redundant copies cost little. A bulk stream whose flight drained while its
 * sender was busy is not thin: it has more waiting.
 */
export const THIN_STREAM_BYTES = 4 * MAX_SEGMENT_PAYLOAD;

/**
 * The fast retransmit threshold of a stream that is not thin, at least (as
 * TCP's three duplicate acks): a bulk transfer over a path that reorders
 * does not take every overtaken segment for lost.
 */
export const BULK_DUP_THRESH = 3;

/** The options of a channel with every default filled in. */
export type ResolvedChannelOptions = Required<ReliableChannelOptions>;

/** Defaults of the selective mode. */
export const DEFAULT_CHANNEL_OPTIONS: Readonly<ResolvedChannelOptions> = Object.freeze({
  mode: "selective",
  initialSeq: 0,
  peerInitialSeq: 0,
  sendWindow: 2048,
  receiveWindow: 2048,
  congestionControl: true,
  congestion: "bbr",
  initialWindow: 10,
  maxBurst: 32,
  ackEvery: 8,
  ackDelayMs: 10,
  maxSackRanges: MAX_SACK_RANGES,
  dupThresh: 2,
  initialRtoMs: 1000,
  minRtoMs: 200,
  maxRtoMs: 60_000,
  granularityMs: 10,
  stopAndWaitRtoMs: 10_000,
  keepaliveMs: 5000,
  deadAfterMs: 20_000,
  maxRetransmits: 80,
  copies: 1,
});

/**
 * A preset for interactive traffic on lossy links: a redundant copy of each
 * data segment while the stream is thin, and fast retransmit on the first
 * sign of a gap. On KCP's latency test (5% loss each way) it brings the mean
 * round trip from about 157 ms (defaults) to about 102 ms, for about 1.7
 * times the packets; see `scripts/kcp_compare.ts`.
 *
 * @example
 * ```ts
 * const channel = new ReliableChannel(now, LOW_LATENCY_CHANNEL_OPTIONS);
 * ```
 */
export const LOW_LATENCY_CHANNEL_OPTIONS: Readonly<ReliableChannelOptions> = Object.freeze({
  copies: 2,
  dupThresh: 1,
});

/**
 * Fills in the defaults of a channel's options (those of stop-and-wait in
 * that mode) and checks every value.
 *
 * @param options the options given, `undefined` ones taken as absent
 * @returns the options in force, frozen
 * @throws {RangeError} when an option is out of its range or of the wrong kind
 *
 * @example
 * ```ts
 * resolveChannelOptions({ mode: "stop_and_wait" }).sendWindow; // 1
 * ```
 */
export function resolveChannelOptions(options: ReliableChannelOptions): ResolvedChannelOptions {
  const stopAndWait = options.mode === "stop_and_wait";
  const o: ResolvedChannelOptions = {
    ...DEFAULT_CHANNEL_OPTIONS,
    ...(stopAndWait
      ? { sendWindow: 1, receiveWindow: 1, maxSackRanges: 0, congestionControl: false, ackEvery: 1 }
      : {}),
    ...withoutUndefined(options),
  };
  if (o.mode !== "selective" && o.mode !== "stop_and_wait") {
    throw new RangeError(`Cannot use channel mode "${o.mode}"`);
  }
  integer("sendWindow", o.sendWindow, 1, 0xffff_ffff);
  integer("receiveWindow", o.receiveWindow, 1, 0xffff_ffff);
  integer("maxSackRanges", o.maxSackRanges, 0, MAX_SACK_RANGES);
  integer("dupThresh", o.dupThresh, 1, 0xffff);
  integer("maxRetransmits", o.maxRetransmits, 0, 0xffff);
  integer("copies", o.copies, 1, 4);
  integer("initialWindow", o.initialWindow, 1, 0xffff_ffff);
  integer("maxBurst", o.maxBurst, 1, 0xffff_ffff);
  integer("ackEvery", o.ackEvery, 1, 0xffff);
  if (o.congestion !== "bbr" && o.congestion !== "newreno") {
    throw new RangeError(`Cannot use congestion "${o.congestion}": it must be "bbr" or "newreno"`);
  }
  if (typeof o.congestionControl !== "boolean") {
    throw new RangeError(
      `Cannot use congestionControl ${o.congestionControl}: it must be a boolean`,
    );
  }
  for (const name of ["stopAndWaitRtoMs", "keepaliveMs", "deadAfterMs", "ackDelayMs"] as const) {
    if (!(o[name] > 0) || !Number.isFinite(o[name])) {
      throw new RangeError(`Cannot use ${name} ${o[name]}: it must be a positive number`);
    }
  }
  return Object.freeze(o);
}

function withoutUndefined(options: ReliableChannelOptions): ReliableChannelOptions {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
}

function integer(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(
      `Cannot use ${name} ${value}: it must be an integer from ${min} to ${max}`,
    );
  }
}
