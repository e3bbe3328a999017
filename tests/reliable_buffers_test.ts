import { assert, assertEquals, assertThrows } from "@std/assert";
import { ReceiveBuffer } from "../lib/reliable/receive_buffer.ts";
import {
  type DataSegment,
  MAX_FRAGMENTS,
  MAX_MESSAGE_BYTES,
  MAX_SACK_RANGES,
  MAX_SEGMENT_PAYLOAD,
  MAX_SEQ,
  type Segment,
  validateSegment,
} from "../lib/reliable/segment.ts";
import { SendBuffer } from "../lib/reliable/send_buffer.ts";

function data(seq: number, fragment = 0, fragments = 1, payload = [seq & 0xff]): DataSegment {
  return { kind: "data", seq, fragment, fragments, payload: new Uint8Array(payload) };
}

Deno.test("segment limits", () => {
  assertEquals(MAX_SEGMENT_PAYLOAD, 1100);
  assertEquals(MAX_MESSAGE_BYTES, 1_048_576);
  assertEquals(MAX_FRAGMENTS, 954);
  assertEquals(MAX_SACK_RANGES, 16);
  assertEquals(MAX_SEQ, 0xffff_fffe);
});

Deno.test("validateSegment() accepts valid segments and names what is wrong", async (t) => {
  await t.step("accepts valid segments", () => {
    assertEquals(validateSegment(data(0)), undefined);
    assertEquals(validateSegment(data(MAX_SEQ, 953, 954, [])), undefined);
    assertEquals(validateSegment({ kind: "keepalive" }), undefined);
    const ranges = Array.from({ length: 16 }, (_, i) => ({ start: 10 * i + 1, end: 10 * i + 5 }));
    assertEquals(
      validateSegment({ kind: "ack", cumulative: 0xffff_ffff, ranges, window: 0 }),
      undefined,
    );
  });

  await t.step("rejects bad data segments", () => {
    const bad: Segment[] = [
      data(-1),
      data(1.5),
      data(MAX_SEQ + 1),
      data(0, 0, 0),
      data(0, 1, 1),
      data(0, 0, MAX_FRAGMENTS + 1),
      data(0, 0, 1, new Array(MAX_SEGMENT_PAYLOAD + 1).fill(0)),
      { kind: "data", seq: 0, fragment: 0, fragments: 1, payload: [1, 2] as unknown as Uint8Array },
    ];
    for (const segment of bad) assert(validateSegment(segment) !== undefined, String(segment));
  });

  await t.step("rejects bad acks and unknown kinds", () => {
    const bad = [
      { kind: "ack", cumulative: -1, ranges: [], window: 1 },
      { kind: "ack", cumulative: 2 ** 32, ranges: [], window: 1 },
      { kind: "ack", cumulative: 0, ranges: [], window: 2 ** 32 },
      { kind: "ack", cumulative: 0, ranges: [{ start: 5, end: 5 }], window: 1 },
      { kind: "ack", cumulative: 0, ranges: [{ start: 6, end: 5 }], window: 1 },
      { kind: "ack", cumulative: 0, ranges: [null], window: 1 },
      { kind: "ack", cumulative: 0, ranges: "x", window: 1 },
      {
        kind: "ack",
        cumulative: 0,
        ranges: Array.from({ length: 17 }, (_, i) => ({ start: 2 * i + 1, end: 2 * i + 2 })),
        window: 1,
      },
      { kind: "nack" },
      null,
    ] as unknown as Segment[];
    for (const segment of bad) {
      assert(validateSegment(segment) !== undefined, JSON.stringify(segment));
    }
    assertEquals(
      validateSegment({ kind: "ack", cumulative: 3, ranges: [{ start: 5, end: 5 }], window: 8 }),
      "SACK range 5..5 is empty or reversed",
    );
  });
});

Deno.test("SendBuffer sends an urgent message ahead of queued bulk ones, not inside one", () => {
  const buffer = new SendBuffer(0);
  buffer.push(1, new Uint8Array(2200)); // seq 0, 1 once numbered
  buffer.push(2, new Uint8Array(2200));
  assertEquals(buffer.takeUnsent()!.seq, 0, "message 1 is now being sent");
  buffer.push(3, Uint8Array.of(42), true);
  buffer.push(4, Uint8Array.of(43), true);
  const order = [];
  for (let s = buffer.takeUnsent(); s; s = buffer.takeUnsent()) order.push([s.seq, s.messageId]);
  assertEquals(order, [[1, 1], [2, 3], [3, 4], [4, 2], [5, 2]]);
  assertEquals(buffer.queued, 0);
  assertEquals(buffer.sendNext, 6);
});

Deno.test("SendBuffer fragments, numbers and acknowledges", async (t) => {
  await t.step("cuts messages into fragments of at most 1100 bytes", () => {
    const buffer = new SendBuffer(7);
    assertEquals(buffer.push(1, new Uint8Array(0)), 1);
    assertEquals(buffer.push(2, new Uint8Array(1100)), 1);
    assertEquals(buffer.push(3, new Uint8Array(1101)), 2);
    assertEquals(buffer.sendNext, 7, "nothing sent yet");
    assertEquals(buffer.queued, 4);
    const taken = [buffer.takeUnsent()!, buffer.takeUnsent()!, buffer.takeUnsent()!];
    assertEquals(taken.map((s) => [s.seq, s.messageId, s.fragment, s.fragments]), [
      [7, 1, 0, 1],
      [8, 2, 0, 1],
      [9, 3, 0, 2],
    ]);
    assertEquals(buffer.peekUnsent()!.payload.length, 1);
    assertEquals(buffer.sendNext, 10);
    assertEquals(buffer.flightSize, 3);
    assertEquals(buffer.unackedBytes, 2200);
  });

  await t.step("copies the message", () => {
    const buffer = new SendBuffer(0);
    const message = new Uint8Array([1, 2, 3]);
    buffer.push(1, message);
    message[0] = 9;
    assertEquals([...buffer.peekUnsent()!.payload], [1, 2, 3]);
  });

  await t.step("takes an owned message as it is: its fragments are views on it", () => {
    const buffer = new SendBuffer(0);
    const message = new Uint8Array(MAX_SEGMENT_PAYLOAD + 1);
    assertEquals(buffer.push(1, message, false, true), 2);
    const first = buffer.takeUnsent()!, second = buffer.takeUnsent()!;
    assert(first.payload.buffer === message.buffer && second.payload.buffer === message.buffer);
    assertEquals([first.payload.length, second.payload.length], [MAX_SEGMENT_PAYLOAD, 1]);
  });

  await t.step(
    "marks cumulative and SACKed segments once, forgets those below the cumulative point",
    () => {
      const buffer = new SendBuffer(0);
      for (let i = 0; i < 6; i++) buffer.push(i + 1, new Uint8Array([i]));
      for (let i = 0; i < 6; i++) buffer.takeUnsent();
      const first = buffer.acknowledge(1, [{ start: 3, end: 5 }]);
      assertEquals(first.map((s) => s.seq), [0, 3, 4]);
      assertEquals(buffer.flightSize, 5); // 1..5, with 3 and 4 SACKed
      assertEquals(buffer.unacked().map((s) => s.seq), [1, 2, 5]);
      assertEquals(buffer.acknowledge(1, [{ start: 3, end: 5 }]), []);
      assertEquals(buffer.acknowledge(5, []).map((s) => s.seq), [1, 2]);
      assertEquals(buffer.flightSize, 1);
      assertEquals(buffer.unackedBytes, 1);
    },
  );

  await t.step("refuses to run out of sequence numbers", () => {
    const buffer = new SendBuffer(MAX_SEQ - 1);
    assertThrows(() => buffer.push(1, new Uint8Array(3000)), RangeError);
    assertEquals(buffer.push(1, new Uint8Array(2200)), 2);
    assertThrows(() => buffer.push(2, new Uint8Array(0)), RangeError);
    assertThrows(() => new SendBuffer(-1), RangeError);
  });
});

Deno.test("ReceiveBuffer holds, de-duplicates and reassembles", async (t) => {
  await t.step("delivers in order whatever the arrival order", () => {
    const buffer = new ReceiveBuffer(0, 8);
    assertEquals(buffer.offer(data(2, 0, 1)), "accepted");
    assertEquals(buffer.offer(data(1, 1, 2)), "accepted");
    assertEquals(buffer.takeMessages(), []);
    assertEquals(buffer.ranges(16), [{ start: 1, end: 3 }]);
    assertEquals(buffer.offer(data(0, 0, 2)), "accepted");
    assertEquals(buffer.cumulative, 3);
    assertEquals(buffer.takeMessages().map((m) => [...m]), [[0, 1], [2]]);
    assertEquals(buffer.held, 0);
  });

  await t.step("copies payloads: the caller may reuse them once offer returns", () => {
    const buffer = new ReceiveBuffer(0, 8);
    // One reused buffer, as the UDP driver's: held, in order, and a message of three fragments.
    const reused = new Uint8Array(MAX_SEGMENT_PAYLOAD);
    const offer = (
      seq: number,
      fragment: number,
      fragments: number,
      fill: number,
      length: number,
    ) => {
      reused.fill(fill);
      const result = buffer.offer({
        kind: "data",
        seq,
        fragment,
        fragments,
        payload: reused.subarray(0, length),
      });
      reused.fill(0xee);
      return result;
    };
    assertEquals(offer(3, 0, 1, 3, 5), "accepted"); // held above the gap
    assertEquals(offer(0, 0, 3, 0, MAX_SEGMENT_PAYLOAD), "accepted");
    assertEquals(offer(2, 2, 3, 2, 7), "accepted"); // held
    assertEquals(offer(1, 1, 3, 1, MAX_SEGMENT_PAYLOAD), "accepted");
    const [long, short] = buffer.takeMessages();
    assertEquals(long.length, 2 * MAX_SEGMENT_PAYLOAD + 7);
    assertEquals(long.subarray(0, MAX_SEGMENT_PAYLOAD), new Uint8Array(MAX_SEGMENT_PAYLOAD));
    assertEquals([...new Set(long.subarray(MAX_SEGMENT_PAYLOAD, 2 * MAX_SEGMENT_PAYLOAD))], [1]);
    assertEquals([...long.subarray(2 * MAX_SEGMENT_PAYLOAD)], [2, 2, 2, 2, 2, 2, 2]);
    assertEquals([...short], [3, 3, 3, 3, 3]);
  });

  await t.step("discards duplicates below the cumulative point and already held", () => {
    const buffer = new ReceiveBuffer(0, 8);
    buffer.offer(data(0));
    buffer.offer(data(3));
    assertEquals(buffer.offer(data(0)), "duplicate");
    assertEquals(buffer.offer(data(3)), "duplicate");
    assertEquals(buffer.takeMessages().length, 1);
  });

  await t.step("drops segments beyond the window", () => {
    const buffer = new ReceiveBuffer(10, 4);
    assertEquals(buffer.offer(data(14)), "out_of_window");
    assertEquals(buffer.offer(data(13)), "accepted");
    assertEquals(buffer.offer(data(12)), "accepted");
    assertEquals(buffer.offer(data(11)), "accepted");
    assertEquals(buffer.held, 3);
    assertEquals(buffer.ranges(16), [{ start: 11, end: 14 }]);
    assertEquals(buffer.offer(data(10)), "accepted");
    assertEquals(buffer.cumulative, 14);
    assertEquals(buffer.offer(data(14)), "accepted");
  });

  await t.step("reports at most the requested number of ranges: latest, lowest, highest", () => {
    const buffer = new ReceiveBuffer(0, 100);
    for (let seq = 2; seq < 60; seq += 2) buffer.offer(data(seq));
    // The latest one received (58) is the highest here.
    assertEquals(buffer.ranges(30).length, 29, "all 29 when they fit");
    assertEquals(buffer.ranges(30).length, 29, "every arrival is news for two calls");
    assertEquals(buffer.ranges(4), [
      { start: 2, end: 3 },
      { start: 4, end: 5 },
      { start: 56, end: 57 },
      { start: 58, end: 59 },
    ]);
    assertEquals(buffer.ranges(3), [{ start: 2, end: 3 }, { start: 56, end: 57 }, {
      start: 58,
      end: 59,
    }]);
    assertEquals(buffer.ranges(16).length, 16);
    assertEquals(buffer.ranges(0), []);
    // A retransmission arriving in the middle is reported at once, so it is not sent again.
    assertEquals(buffer.offer(data(30)), "duplicate");
    assertEquals(buffer.ranges(4), [
      { start: 2, end: 3 },
      { start: 4, end: 5 },
      { start: 30, end: 31 },
      { start: 58, end: 59 },
    ]);
    buffer.offer(data(31));
    assertEquals(buffer.ranges(3)[1], { start: 30, end: 33 }, "31 joins 30 and 32");
  });

  await t.step("reports the ranges that gained a segment in the next two calls", () => {
    const buffer = new ReceiveBuffer(0, 200);
    for (let seq = 2; seq <= 100; seq += 2) buffer.offer(data(seq));
    buffer.ranges(4);
    buffer.ranges(4);
    // Acks were delayed: three arrivals in the middle since the last one.
    for (const seq of [21, 51, 71]) buffer.offer(data(seq));
    const news = [{ start: 20, end: 23 }, { start: 50, end: 53 }, { start: 70, end: 73 }];
    assertEquals(buffer.ranges(4), [{ start: 2, end: 3 }, ...news]);
    assertEquals(
      buffer.ranges(4),
      [{ start: 2, end: 3 }, ...news],
      "again, in case that ack was lost",
    );
    assertEquals(buffer.ranges(4), [
      { start: 2, end: 3 },
      { start: 4, end: 5 },
      { start: 70, end: 73 },
      { start: 100, end: 101 },
    ], "then the latest, the lowest and the highest again");
  });

  await t.step("completes a message larger than the window", () => {
    const buffer = new ReceiveBuffer(0, 2);
    for (let i = 0; i < 10; i++) assertEquals(buffer.offer(data(i, i, 10, [i])), "accepted");
    assertEquals(buffer.takeMessages().map((m) => [...m]), [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]);
  });

  await t.step("reports a broken fragment sequence", () => {
    const buffer = new ReceiveBuffer(0, 8);
    assertEquals(buffer.offer(data(0, 0, 3)), "accepted");
    assertEquals(buffer.offer(data(1, 0, 1)), "malformed");
    assert(buffer.problem!.includes("Segment 1"), buffer.problem);
    assertEquals(buffer.offer(data(2, 2, 3)), "malformed");
    const other = new ReceiveBuffer(0, 8);
    assertEquals(other.offer(data(0, 1, 2)), "malformed");
  });

  await t.step("refuses bad construction", () => {
    assertThrows(() => new ReceiveBuffer(0, 0), RangeError);
    assertThrows(() => new ReceiveBuffer(-1, 4), RangeError);
  });
});
