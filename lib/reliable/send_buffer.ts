/**
 * The sending half of a reliable channel's bookkeeping: application messages
 * cut into numbered fragments, those waiting to be sent, and those sent and
 * not yet acknowledged.
 *
 * @module
 */
import type { DeliveryStamp } from "./delivery_rate_sampler.ts";
import { MAX_SEGMENT_PAYLOAD, MAX_SEQ, type SackRange } from "./segment.ts";

/** A data segment the sender holds until it is acknowledged (its delivery stamp included). */
export interface OutgoingSegment extends DeliveryStamp {
  /** Sequence number. */
  readonly seq: number;
  /** Id of the message it belongs to. */
  readonly messageId: number;
  /** Index of the fragment within the message. */
  readonly fragment: number;
  /** Number of fragments of the message. */
  readonly fragments: number;
  /** The fragment's bytes. */
  readonly payload: Uint8Array;
  /** How many times it was transmitted (0 while queued). */
  transmissions: number;
  /** Time of the latest transmission, ms. */
  sentAt: number;
  /** Position of the latest transmission in the channel's order of transmissions. */
  order: number;
  /** True once the peer reported it received (cumulatively or in a SACK range). */
  acked: boolean;
  /** True while it is judged lost and waits for its retransmission. */
  lost: boolean;
}

/** A message waiting for its first fragment to be sent, not yet numbered. */
interface PendingMessage {
  readonly messageId: number;
  readonly bytes: Uint8Array;
  readonly fragments: number;
}

/**
 * Fragments and numbers outgoing messages and tracks them until they are
 * acknowledged. Segments are sent in sequence order; the "flight" is every
 * segment from the lowest not cumulatively acknowledged one up to the last
 * one sent (SACKed ones included), so its size is a span of sequence numbers.
 *
 * A message is numbered when its first fragment is about to leave, so an
 * urgent message pushed after bulk ones goes ahead of all of them but the
 * one already being sent (a message's fragments are consecutive).
 *
 * @example
 * ```ts
 * const buffer = new SendBuffer(0);
 * buffer.push(1, new Uint8Array(1101)); // 2 fragments, seq 0 and 1
 * buffer.takeUnsent(); // seq 0, now in flight
 * buffer.acknowledge(1, []).length; // 1: seq 0 is acknowledged
 * buffer.flightSize; // 0
 * ```
 */
export class SendBuffer {
  // The flight is `#flight[#flightHead..]`, consecutive sequence numbers from
  // the lowest not cumulatively acknowledged, so a seq's index is arithmetic.
  #flight: OutgoingSegment[] = [];
  #flightHead = 0;
  /** Numbered segments of the message being sent, not yet sent. */
  #queue: OutgoingSegment[] = [];
  #queueHead = 0;
  /** Messages not yet numbered: urgent ones first, then the rest, each in order. */
  #urgent: PendingMessage[] = [];
  #urgentHead = 0;
  #bulk: PendingMessage[] = [];
  #bulkHead = 0;
  #pendingFragments = 0;
  #nextSeq: number;
  #unackedBytes = 0;
  #unackedCount = 0;

  /**
   * Creates an empty buffer.
   *
   * @param initialSeq sequence number of the first fragment
   */
  constructor(initialSeq: number) {
    if (!Number.isInteger(initialSeq) || initialSeq < 0 || initialSeq > MAX_SEQ) {
      throw new RangeError(`Cannot start at sequence number ${initialSeq}`);
    }
    this.#nextSeq = initialSeq;
  }

  /** Sequence number of the first segment not yet sent: acknowledgements at or above it are bogus. */
  get sendNext(): number {
    return this.#queue[this.#queueHead]?.seq ?? this.#nextSeq;
  }

  /** Segments waiting for their first transmission. */
  get queued(): number {
    return this.#queue.length - this.#queueHead + this.#pendingFragments;
  }

  /** Span of sequence numbers sent and not cumulatively acknowledged. */
  get flightSize(): number {
    return this.#flight.length - this.#flightHead;
  }

  /** Segments sent and not acknowledged (SACKed ones excluded). */
  get unackedCount(): number {
    return this.#unackedCount;
  }

  /** Payload bytes sent and not yet acknowledged. */
  get unackedBytes(): number {
    return this.#unackedBytes;
  }

  /** Segments queued or in flight. */
  get size(): number {
    return this.flightSize + this.queued;
  }

  /**
   * Queues a message, to be cut into fragments of at most
   * {@linkcode MAX_SEGMENT_PAYLOAD} bytes (one empty fragment for an empty
   * message) when its turn comes.
   *
   * @param messageId id of the message
   * @param message its bytes, copied unless `owned`
   * @param urgent true to send it ahead of every message queued without it
   * @param owned true if the caller gives the bytes up (never touches them
   * again), which saves the copy: a file transfer's chunks are made for it
   * @returns the number of fragments
   */
  push(messageId: number, message: Uint8Array, urgent = false, owned = false): number {
    const fragments = Math.max(1, Math.ceil(message.length / MAX_SEGMENT_PAYLOAD));
    if (this.#nextSeq + this.#pendingFragments + fragments - 1 > MAX_SEQ) {
      throw new RangeError(
        `Cannot send ${fragments} more segments: the sequence space ends at ${MAX_SEQ}`,
      );
    }
    // One copy of the whole message (or none); its fragments will be views on it.
    const pending = { messageId, bytes: owned ? message : message.slice(), fragments };
    if (urgent) this.#urgent.push(pending);
    else this.#bulk.push(pending);
    this.#pendingFragments += fragments;
    return fragments;
  }

  /** Numbers the next pending message's fragments into the queue, when the queue is empty. */
  #numberNext(): void {
    if (this.#queueHead < this.#queue.length) return;
    let pending: PendingMessage | undefined;
    if (this.#urgentHead < this.#urgent.length) {
      pending = this.#urgent[this.#urgentHead];
      this.#urgent[this.#urgentHead++] = undefined!;
      if (this.#urgentHead === this.#urgent.length) {
        this.#urgent = [];
        this.#urgentHead = 0;
      }
    } else if (this.#bulkHead < this.#bulk.length) {
      pending = this.#bulk[this.#bulkHead];
      this.#bulk[this.#bulkHead++] = undefined!;
      if (this.#bulkHead >= 1024 || this.#bulkHead === this.#bulk.length) {
        this.#bulk = this.#bulk.slice(this.#bulkHead);
        this.#bulkHead = 0;
      }
    }
    if (pending === undefined) return;
    this.#queue = [];
    this.#queueHead = 0;
    this.#pendingFragments -= pending.fragments;
    const { messageId, bytes: copy, fragments } = pending;
    for (let fragment = 0; fragment < fragments; fragment++) {
      const start = fragment * MAX_SEGMENT_PAYLOAD;
      this.#queue.push({
        seq: this.#nextSeq++,
        messageId,
        fragment,
        fragments,
        payload: copy.subarray(start, start + MAX_SEGMENT_PAYLOAD),
        transmissions: 0,
        sentAt: 0,
        order: 0,
        acked: false,
        lost: false,
        delivered: 0,
        deliveredAt: 0,
        firstSentAt: 0,
        appLimited: false,
      });
    }
  }

  /**
   * Looks at the next segment to send for the first time.
   *
   * @returns the first queued segment, or `undefined` when none waits
   */
  peekUnsent(): OutgoingSegment | undefined {
    this.#numberNext();
    return this.#queue[this.#queueHead];
  }

  /**
   * Takes the next segment to send for the first time into the flight.
   *
   * @returns the first queued segment, or `undefined` when none waits
   */
  takeUnsent(): OutgoingSegment | undefined {
    this.#numberNext();
    const segment = this.#queue[this.#queueHead];
    if (segment === undefined) return undefined;
    this.#queue[this.#queueHead++] = undefined!;
    this.#flight.push(segment);
    this.#unackedBytes += segment.payload.length;
    this.#unackedCount++;
    return segment;
  }

  /**
   * Lists what may need retransmitting.
   *
   * @returns the segments sent and not acknowledged, in sequence order
   */
  unacked(): OutgoingSegment[] {
    return this.#flight.slice(this.#flightHead).filter((segment) => !segment.acked);
  }

  /**
   * Applies an acknowledgement: marks what it covers as acknowledged and
   * forgets everything below the cumulative point.
   *
   * @param cumulative the peer's next expected sequence number
   * @param ranges SACK ranges above it
   * @returns the segments acknowledged for the first time, in sequence order
   */
  acknowledge(cumulative: number, ranges: readonly SackRange[]): OutgoingSegment[] {
    const newly: OutgoingSegment[] = [];
    const flight = this.#flight;
    const head = this.#flightHead;
    if (head >= flight.length) return newly;
    const base = flight[head].seq;
    const end = base + flight.length - head;
    const cumulativeEnd = Math.min(Math.max(cumulative, base), end);
    for (let seq = base; seq < cumulativeEnd; seq++) {
      this.#markAcked(flight[head + seq - base], newly);
    }
    for (const range of ranges) {
      const last = Math.min(range.end, end);
      for (let seq = Math.max(range.start, cumulativeEnd); seq < last; seq++) {
        this.#markAcked(flight[head + seq - base], newly);
      }
    }
    if (ranges.length > 1) newly.sort((x, y) => x.seq - y.seq);
    this.#flightHead = head + cumulativeEnd - base;
    if (this.#flightHead >= 1024 && this.#flightHead * 2 >= flight.length) {
      this.#flight = flight.slice(this.#flightHead);
      this.#flightHead = 0;
    } else if (this.#flightHead === flight.length) {
      this.#flight = [];
      this.#flightHead = 0;
    }
    return newly;
  }

  #markAcked(segment: OutgoingSegment, newly: OutgoingSegment[]): void {
    if (segment.acked) return;
    segment.acked = true;
    this.#unackedBytes -= segment.payload.length;
    this.#unackedCount--;
    newly.push(segment);
  }
}
