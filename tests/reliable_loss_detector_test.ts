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
    detector.onTransmit(segment);
    segments.push(segment);
  }
  return segments;
}

function ack(detector: LossDetector, segment: OutgoingSegment): void {
  segment.acked = true;
  detector.onAcked(segment, 100, 40);
}

Deno.test("LossDetector.takeNextLoss() judges a segment lost once dupThresh later transmissions are acked", () => {
  const detector = new LossDetector(3);
  const [first, second, ...later] = transmitted(detector, 5);
  ack(detector, later[0]);
  ack(detector, later[1]);
  assertEquals(detector.takeNextLoss(3), undefined, "two acks after it are not enough at 3");
  assertStrictEquals(detector.takeNextLoss(2), first);
  assertStrictEquals(detector.takeNextLoss(2), second);
  assertEquals(detector.takeNextLoss(2), undefined, "the oldest left was acked");
  assertEquals(detector.lostCount, 2);
  assertStrictEquals(detector.nextLost(), first);
  detector.takeLost(first);
  detector.onTransmit(first);
  assertEquals(detector.lostCount, 1);
  ack(detector, second);
  assertEquals(detector.lostCount, 0, "an ack of a segment judged lost undoes the judgement");
  assertEquals(detector.nextLost(), undefined);
  ack(detector, later[2]);
  assertStrictEquals(detector.oldest(), first, "the retransmission is outstanding again");
  assertEquals(detector.takeNextLoss(2), undefined, "only acks after the retransmission count");
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
