/**
 * The receiving half of a reliable channel's bookkeeping: out-of-order
 * segments held within the receive window, the cumulative point, duplicate
 * detection and reassembly of whole messages.
 *
 * @module
 */
import {
  type DataSegment,
  MAX_MESSAGE_BYTES,
  MAX_SEGMENT_PAYLOAD,
  MAX_SEQ,
  type SackRange,
} from "./segment.ts";

/** What {@linkcode ReceiveBuffer.offer} did with a segment. */
export type OfferResult =
  /** New and within the window: kept. */
  | "accepted"
  /** Below the cumulative point or already held: discarded. */
  | "duplicate"
  /** At or beyond `cumulative + window`: dropped, not acknowledged. */
  | "out_of_window"
  /** Breaks the fragment sequence of a message: the stream is unusable; see `problem`. */
  | "malformed";

/**
 * Holds received data segments and turns them into whole messages in order.
 *
 * A segment is accepted when `cumulative <= seq < cumulative + window`.
 * In-order segments move at once into the message being reassembled, which
 * is bounded by {@linkcode MAX_MESSAGE_BYTES} and does not count against the
 * window, so a message larger than the window still completes. Only the
 * segments above a gap are held, at most `window - 1` of them.
 *
 * Payloads are copied: an offered segment's payload may be a view on a
 * buffer the caller reuses for the next datagram. An in-order fragment is
 * copied straight into its message, which is allocated once at its first
 * fragment with room for every fragment at full size: no allocation per
 * datagram on the path a bulk transfer takes.
 *
 * @example
 * ```ts
 * const buffer = new ReceiveBuffer(0, 64);
 * const part = (seq: number, fragment: number) =>
 *   ({ kind: "data", seq, fragment, fragments: 2, payload: new Uint8Array([seq]) }) as const;
 * buffer.offer(part(1, 1)); // "accepted", held above the gap at 0
 * buffer.ranges(16); // [{ start: 1, end: 2 }]
 * buffer.offer(part(0, 0)); // "accepted"
 * buffer.cumulative; // 2
 * buffer.takeMessages(); // [Uint8Array [0, 1]]
 * buffer.offer(part(0, 0)); // "duplicate"
 * ```
 */
export class ReceiveBuffer {
  #cumulative: number;
  #window: number;
  #held = new Map<number, DataSegment>();
  /** The message being reassembled, with room for all its fragments. */
  #message: Uint8Array | undefined;
  #messageBytes = 0;
  #nextFragment = 0;
  #partFragments = 0;
  #ready: Uint8Array[] = [];
  /** The sequence number of the latest data segment offered. */
  #latest = -1;
  /** Segments held since the last `ranges` call: the news the next ack must carry. */
  #fresh: number[] = [];
  /** Those of the call before, repeated once in case that ack was lost. */
  #previousFresh: number[] = [];
  #problem: string | undefined;

  /**
   * Creates an empty buffer.
   *
   * @param initialSeq the peer's first sequence number
   * @param window how many sequence numbers from the cumulative point are accepted, at least 1
   */
  constructor(initialSeq: number, window: number) {
    if (!Number.isInteger(initialSeq) || initialSeq < 0 || initialSeq > MAX_SEQ) {
      throw new RangeError(`Cannot start receiving at sequence number ${initialSeq}`);
    }
    if (!Number.isInteger(window) || window < 1) {
      throw new RangeError(`Cannot use a receive window of ${window} segments`);
    }
    this.#cumulative = initialSeq;
    this.#window = window;
  }

  /** The next sequence number expected: everything below it was received. */
  get cumulative(): number {
    return this.#cumulative;
  }

  /** How many sequence numbers from the cumulative point are accepted. */
  get window(): number {
    return this.#window;
  }

  /** Segments held above a gap. */
  get held(): number {
    return this.#held.size;
  }

  /** Why the stream broke, after an offer returned `"malformed"`. */
  get problem(): string | undefined {
    return this.#problem;
  }

  /**
   * Takes a data segment (already checked with `validateSegment`). Its
   * payload is copied, so the caller may reuse it once this returns.
   *
   * @param segment the segment
   * @returns what was done with it
   */
  offer(segment: DataSegment): OfferResult {
    if (this.#problem !== undefined) return "malformed";
    const { seq } = segment;
    this.#latest = seq;
    if (seq < this.#cumulative || this.#held.has(seq)) return "duplicate";
    if (seq >= this.#cumulative + this.#window) return "out_of_window";
    if (seq !== this.#cumulative) {
      this.#held.set(seq, { ...segment, payload: segment.payload.slice() });
      this.#fresh.push(seq);
      return "accepted";
    }
    for (
      let next: DataSegment | undefined = segment;
      next;
      next = this.#held.get(this.#cumulative)
    ) {
      if (next !== segment) this.#held.delete(this.#cumulative);
      this.#cumulative++;
      this.#problem = this.#reassemble(next);
      if (this.#problem !== undefined) return "malformed";
    }
    return "accepted";
  }

  /**
   * Hands over the whole messages completed so far.
   *
   * @returns the messages completed since the last call, in order
   */
  takeMessages(): Uint8Array[] {
    const ready = this.#ready;
    this.#ready = [];
    return ready;
  }

  /**
   * The held segments as SACK ranges, ascending. When there are more than
   * `max`: the range holding the latest segment received (as TCP's first
   * SACK block), the ranges that gained a segment since the last call and
   * the one before (so every arrival is reported twice, however many acks
   * are delayed: one ack lost does not make arrivals look lost),
   * then the lowest half and the highest rest. The highest tell the sender
   * what its latest transmissions did (its loss detection and delivery rate
   * run on them), the lowest what its retransmissions of the oldest holes
   * did, and the latest that a retransmission arrived, which ends its
   * retransmissions. With 10% loss and hundreds of segments in flight,
   * reporting only the lowest left most arrivals unreported for a round
   * trip or more; an arrival never reported is retransmitted for nothing.
   *
   * @param max most ranges to return
   * @returns up to `max` ranges `[start, end)`
   */
  ranges(max: number): SackRange[] {
    const fresh = this.#fresh;
    const previous = this.#previousFresh;
    this.#previousFresh = fresh;
    this.#fresh = [];
    const seqs = [...this.#held.keys()].sort((a, b) => a - b);
    const ranges: SackRange[] = [];
    for (let i = 0; i < seqs.length;) {
      const start = seqs[i];
      let end = start + 1;
      while (++i < seqs.length && seqs[i] === end) end++;
      ranges.push({ start, end });
    }
    if (ranges.length <= max) return ranges;
    if (max <= 0) return [];
    const chosen = new Set<number>();
    const latest = ranges.findIndex((r) => r.start <= this.#latest && this.#latest < r.end);
    if (latest !== -1) chosen.add(latest);
    for (const news of [fresh, previous]) {
      for (const seq of news) {
        if (chosen.size >= max) break;
        const index = rangeHolding(ranges, seq);
        if (index !== -1) chosen.add(index);
      }
    }
    for (let i = 0; i < Math.floor(max / 2) && chosen.size < max; i++) chosen.add(i);
    for (let i = ranges.length - 1; chosen.size < max; i--) chosen.add(i);
    return [...chosen].sort((a, b) => a - b).map((i) => ranges[i]);
  }

  #reassemble(segment: DataSegment): string | undefined {
    const expected = this.#nextFragment;
    const { fragment, fragments, payload } = segment;
    if (fragment !== expected || (expected > 0 && fragments !== this.#partFragments)) {
      return `Segment ${segment.seq} is fragment ${fragment} of ${fragments} where fragment ${expected}${
        expected > 0 ? ` of ${this.#partFragments}` : ""
      } was expected`;
    }
    if (this.#messageBytes + payload.length > MAX_MESSAGE_BYTES) {
      return `A message grew beyond ${MAX_MESSAGE_BYTES} bytes at segment ${segment.seq}`;
    }
    if (fragment === 0) {
      this.#partFragments = fragments;
      // Every fragment holds at most MAX_SEGMENT_PAYLOAD bytes, so this is room enough.
      this.#message = new Uint8Array(
        fragments === 1
          ? payload.length
          : Math.min(fragments * MAX_SEGMENT_PAYLOAD, MAX_MESSAGE_BYTES),
      );
    }
    const message = this.#message!;
    message.set(payload, this.#messageBytes);
    this.#messageBytes += payload.length;
    this.#nextFragment++;
    if (fragment === fragments - 1) {
      const bytes = this.#messageBytes;
      this.#ready.push(bytes === message.length ? message : message.subarray(0, bytes));
      this.#message = undefined;
      this.#messageBytes = 0;
      this.#nextFragment = 0;
    }
    return undefined;
  }
}

/** The index of the range holding `seq` in ascending, disjoint ranges, or -1. */
function rangeHolding(ranges: readonly SackRange[], seq: number): number {
  let low = 0, high = ranges.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const range = ranges[middle];
    if (seq < range.start) high = middle - 1;
    else if (seq >= range.end) low = middle + 1;
    else return middle;
  }
  return -1;
}
