import { assertEquals, assertStrictEquals } from "@std/assert";
import { LossDetector } from "../lib/reliable/loss_detector.ts";
import { type OutgoingSegment, SendBuffer } from "../lib/reliable/send_buffer.ts";

/** Segments 0..count-1, each transmitted once in order. */
function transmitted(detector: LossDetector, count: number): OutgoingSegment[] {
  const buffer = new SendBuffer(0);
  for (let i = 0; i < count; i++) buffer.push(i + 1, new Uint8Array([i]), false);
  const segments: OutgoingSegment[] = [];
  for (let i = 0; i < count; i++) {
    const segment = buffer.takeUnsent()!;
    segment.transmissions = 1;
    detector.onTransmit(segment);
    segments.push(segment);
  }
  return segments;
}

/** Acks a segment at `now` (default 40) on a path whose smallest RTT is 40 ms. */
function ack(detector: LossDetector, segment: OutgoingSegment, now = 40): void {
  segment.acked = true;
  detector.onAcked(segment, now, 40);
}

/** Takes the next loss at `now` with `dupThresh`, on a path of 40 ms (SRTT 40). */
function next(detector: LossDetector, dupThresh: number, now = 40): OutgoingSegment | undefined {
  return detector.takeNextLoss(dupThresh, now, 40, 40);
}

Deno.test("LossDetector.takeNextLoss() judges a segment lost once dupThresh later transmissions are acked", () => {
  const detector = new LossDetector(3);
  const [first, second, ...later] = transmitted(detector, 5);
  ack(detector, later[0]);
  ack(detector, later[1]);
  assertEquals(next(detector, 3), undefined, "two acks after it are not enough at 3");
  assertStrictEquals(next(detector, 2), first);
  assertStrictEquals(next(detector, 2), second);
  assertEquals(next(detector, 2), undefined, "the oldest left was acked");
  assertEquals(detector.lostCount, 2);
  assertStrictEquals(detector.nextLost(), first);
  detector.takeLost(first);
  first.transmissions = 2;
  first.sentAt = 40;
  detector.onTransmit(first);
  assertEquals(detector.lostCount, 1);
  ack(detector, second, 80);
  assertEquals(detector.lostCount, 0, "an ack of a segment judged lost undoes the judgement");
  assertEquals(detector.nextLost(), undefined);
  ack(detector, later[2], 80);
  assertStrictEquals(detector.oldest(), first, "the retransmission is outstanding again");
  assertEquals(next(detector, 2, 80), undefined, "only acks after the retransmission count");
});

Deno.test("LossDetector.takeNextLoss() waits for dupThresh later acks while no reordering shows", () => {
  const detector = new LossDetector(3);
  const [first, , third] = transmitted(detector, 3);
  ack(detector, third);
  assertEquals(next(detector, 3, 10_000), undefined, "however long");
  assertEquals(detector.lossAt, undefined);
  assertStrictEquals(next(detector, 1, 10_000), first);
});

Deno.test("LossDetector widens its reordering window once reordering shows", () => {
  const detector = new LossDetector(3);
  const segments = transmitted(detector, 8);
  ack(detector, segments[1]);
  assertEquals(detector.reordering(40, 40), false);
  ack(detector, segments[0], 41); // sent before one acked already, never resent: reordered
  assertEquals(detector.reordering(41, 40), true, "reordering shows");
  assertEquals(detector.reordering(41 + 16 * 40, 40), true);
  assertEquals(detector.reordering(42 + 16 * 40, 40), false, "for 16 round trips");
  for (const segment of segments.slice(3)) ack(detector, segment, 42);
  assertEquals(next(detector, 3, 42), undefined, "five later acks, but reordering was seen");
  // RACK: lost once out for the RTT of the latest sent acked plus min_rtt / 4.
  assertEquals(detector.lossAt, 0 + 42 + 10);
  assertEquals(next(detector, 3, 51), undefined);
  const lost = next(detector, 3, 52)!;
  assertStrictEquals(lost, segments[2]);
  // Its retransmission is acked 5 ms later, sooner than any round trip: the original's ack.
  detector.takeLost(lost);
  lost.transmissions = 2;
  lost.sentAt = 52;
  detector.onTransmit(lost);
  ack(detector, lost, 57);
  assertEquals(detector.spurious, 1);
  const more = transmitted(detector, 2);
  for (const segment of more) segment.sentAt = 60;
  ack(detector, more[1], 100);
  assertEquals(next(detector, 1, 100), undefined);
  assertEquals(detector.lossAt, 60 + 40 + 20, "the window grew to two quarters of min_rtt");
});

Deno.test("LossDetector.markAllLost() judges everything outstanding lost, oldest first", () => {
  const detector = new LossDetector(3);
  const segments = transmitted(detector, 4);
  ack(detector, segments[1]);
  assertEquals(detector.markAllLost(), 3);
  assertEquals(detector.oldest(), undefined);
  const order = [];
  for (let next = detector.nextLost(); next; next = detector.nextLost()) {
    order.push(next.seq);
    detector.takeLost(next);
  }
  assertEquals(order, [0, 2, 3]);
  assertEquals(detector.lostCount, 0);
});

Deno.test("LossDetector.onAcked() does not take an ack of an earlier copy for the retransmission's", () => {
  // `first` is sent again at 50 ms, after `second`; the smallest RTT is 40 ms.
  function judged(firstAckedAt: number): OutgoingSegment | undefined {
    const detector = new LossDetector(3);
    const [first, second, ...later] = transmitted(detector, 4);
    first.transmissions = 2;
    first.sentAt = 50;
    detector.onTransmit(first);
    first.acked = true;
    detector.onAcked(first, firstAckedAt, 40);
    for (const segment of later) ack(detector, segment);
    return detector.takeNextLoss(3) === second ? second : undefined;
  }
  // Acked 10 ms after it left: for the first copy, which says nothing of `second`.
  assertEquals(judged(60), undefined);
  // Acked a round trip after it left: the copy arrived, and `second`, sent before it, did not.
  assertEquals(judged(95)?.seq, 1);
});

Deno.test("LossDetector takes no segment reported after a full ack's for reordered", () => {
  const detector = new LossDetector(3);
  const segments = transmitted(detector, 8);
  detector.onAckRanges(true); // as many ranges as an ack holds: some may have been left out
  ack(detector, segments[1]);
  detector.onAckRanges(false);
  ack(detector, segments[0], 41); // reported late, not reordered
  for (const segment of segments.slice(3)) ack(detector, segment, 42);
  assertStrictEquals(next(detector, 3, 42), segments[2], "the fast-retransmit rule still holds");
});
