/**
 * The segments a {@linkcode ReliableChannel} exchanges with its peer, as plain
 * values: the wire codec maps them to bytes. Every number is an integer; the
 * limits below are what a decoder must enforce and what
 * {@linkcode validateSegment} checks.
 *
 * @module
 */

/** Largest payload of one data segment, bytes. The wire adds at most ~60 bytes of headers. */
export const MAX_SEGMENT_PAYLOAD = 1100;

/** Largest application message a channel carries, bytes (1 MiB). */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

/** Most fragments one message can have: `ceil(MAX_MESSAGE_BYTES / MAX_SEGMENT_PAYLOAD)`, 954. */
export const MAX_FRAGMENTS: number = Math.ceil(MAX_MESSAGE_BYTES / MAX_SEGMENT_PAYLOAD);

/** Most SACK ranges one acknowledgement carries. */
export const MAX_SACK_RANGES = 16;

/**
 * Largest sequence number a data segment may carry, so that the cumulative
 * acknowledgement after it (`seq + 1`) still fits in a u32. Sequence numbers
 * do not wrap within a session.
 */
export const MAX_SEQ = 0xffff_fffe;

const U32_MAX = 0xffff_ffff;

/** A half-open range `[start, end)` of sequence numbers received above the cumulative point. */
export interface SackRange {
  /** First sequence number received. */
  readonly start: number;
  /** One past the last sequence number received; greater than `start`. */
  readonly end: number;
}

/** One fragment of an application message. */
export interface DataSegment {
  /** Segment kind. */
  readonly kind: "data";
  /** Sequence number, 0 to {@linkcode MAX_SEQ}. */
  readonly seq: number;
  /** Index of this fragment within its message, 0 to `fragments - 1`. */
  readonly fragment: number;
  /** Number of fragments of the message, 1 to {@linkcode MAX_FRAGMENTS}. */
  readonly fragments: number;
  /** Up to {@linkcode MAX_SEGMENT_PAYLOAD} bytes of the message. */
  readonly payload: Uint8Array;
}

/** An acknowledgement: what the receiver holds and how much more it accepts. */
export interface AckSegment {
  /** Segment kind. */
  readonly kind: "ack";
  /** The next sequence number expected: everything below was received. u32. */
  readonly cumulative: number;
  /** Up to {@linkcode MAX_SACK_RANGES} ranges received above `cumulative`, ascending. */
  readonly ranges: readonly SackRange[];
  /**
   * How many sequence numbers, counted from `cumulative`, the receiver
   * accepts: the sender keeps every new `seq` below `cumulative + window`. u32.
   */
  readonly window: number;
}

/** A sign of life sent when the channel has been silent; the peer answers with an ack. */
export interface KeepaliveSegment {
  /** Segment kind. */
  readonly kind: "keepalive";
}

/** Anything a channel sends or receives. */
export type Segment = DataSegment | AckSegment | KeepaliveSegment;

function isU32(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= U32_MAX;
}

/**
 * Checks that a segment respects the limits of this module, for values that
 * come from the network. A channel ignores (and counts) segments that fail.
 *
 * @param segment the segment to check
 * @returns what is wrong with it, or `undefined` when it is valid
 *
 * @example
 * ```ts
 * validateSegment({ kind: "keepalive" }); // undefined
 * validateSegment({ kind: "ack", cumulative: 3, ranges: [{ start: 5, end: 5 }], window: 8 });
 * // "SACK range 5..5 is empty or reversed"
 * ```
 */
export function validateSegment(segment: Segment): string | undefined {
  switch (segment?.kind) {
    case "data": {
      const { seq, fragment, fragments, payload } = segment;
      if (!isU32(seq) || seq > MAX_SEQ) return `Data sequence number ${seq} is out of range`;
      if (!isU32(fragments) || fragments < 1 || fragments > MAX_FRAGMENTS) {
        return `Fragment count ${fragments} is out of range`;
      }
      if (!isU32(fragment) || fragment >= fragments) {
        return `Fragment index ${fragment} is out of range for ${fragments} fragments`;
      }
      if (!(payload instanceof Uint8Array)) return "Data payload is not a Uint8Array";
      if (payload.length > MAX_SEGMENT_PAYLOAD) {
        return `Data payload of ${payload.length} bytes exceeds ${MAX_SEGMENT_PAYLOAD}`;
      }
      return undefined;
    }
    case "ack": {
      const { cumulative, ranges, window } = segment;
      if (!isU32(cumulative)) return `Cumulative acknowledgement ${cumulative} is out of range`;
      if (!isU32(window)) return `Window ${window} is out of range`;
      if (!Array.isArray(ranges) || ranges.length > MAX_SACK_RANGES) {
        return `An ack carries at most ${MAX_SACK_RANGES} SACK ranges`;
      }
      for (const range of ranges) {
        if (!isU32(range?.start) || !isU32(range?.end) || range.start >= range.end) {
          return `SACK range ${range?.start}..${range?.end} is empty or reversed`;
        }
      }
      return undefined;
    }
    case "keepalive":
      return undefined;
    default:
      return `Unknown segment kind ${JSON.stringify((segment as { kind?: unknown })?.kind)}`;
  }
}
