import { assertEquals, assertThrows } from "@std/assert";
import fc from "fast-check";
import { encodeFrame, FrameDecoder } from "../lib/wire/frame_decoder.ts";
import { encodeMessage } from "../lib/wire/codec.ts";
import { MAX_FRAME_BYTES } from "../lib/wire/messages.ts";
import { ProtocolError } from "../lib/wire/protocol_error.ts";

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function header(length: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, length);
  return out;
}

Deno.test("encodeFrame() prefixes the body with its big-endian length", () => {
  assertEquals(encodeFrame(Uint8Array.of(7, 8)), Uint8Array.of(0, 0, 0, 2, 7, 8));
  const big = encodeFrame(new Uint8Array(MAX_FRAME_BYTES));
  assertEquals(big.subarray(0, 4), Uint8Array.of(0, 1, 0, 0));
  assertEquals(big.length, MAX_FRAME_BYTES + 4);
});

Deno.test("encodeFrame() rejects an empty or oversized body", () => {
  assertThrows(() => encodeFrame(new Uint8Array(0)), RangeError, "empty");
  assertThrows(() => encodeFrame(new Uint8Array(MAX_FRAME_BYTES + 1)), RangeError, "65537");
  assertThrows(() => encodeFrame(new Uint8Array(11), { maxFrameBytes: 10 }), RangeError, "11");
  assertThrows(() => encodeFrame(new Uint8Array(1), { maxFrameBytes: 0 }), RangeError);
});

Deno.test("FrameDecoder() rejects an invalid maxFrameBytes", () => {
  assertThrows(() => new FrameDecoder({ maxFrameBytes: 0 }), RangeError);
  assertThrows(() => new FrameDecoder({ maxFrameBytes: 1.5 }), RangeError);
  assertThrows(() => new FrameDecoder({ maxFrameBytes: 2 ** 32 }), RangeError);
});

Deno.test("FrameDecoder.push() recovers frames split at every point", () => {
  const bodies = [Uint8Array.of(1, 2, 3, 4, 5), Uint8Array.of(9), Uint8Array.of(6, 7)];
  const stream = concat(bodies.map((body) => encodeFrame(body)));
  for (let i = 0; i <= stream.length; i++) {
    for (let j = i; j <= stream.length; j++) {
      const decoder = new FrameDecoder();
      const got = [
        ...decoder.push(stream.subarray(0, i)),
        ...decoder.push(stream.subarray(i, j)),
        ...decoder.push(stream.subarray(j)),
      ];
      assertEquals(got, bodies, `split at ${i} and ${j}`);
      assertEquals(decoder.pendingBytes, 0);
    }
  }
});

Deno.test("FrameDecoder.push() recovers a frame fed one byte at a time", () => {
  const body = encodeMessage({ type: "text_ok", reqId: 42 });
  const frame = encodeFrame(body);
  const decoder = new FrameDecoder();
  for (let i = 0; i < frame.length - 1; i++) {
    assertEquals(decoder.push(frame.subarray(i, i + 1)), []);
    assertEquals(decoder.pendingBytes, i + 1);
  }
  assertEquals(decoder.push(frame.subarray(frame.length - 1)), [body]);
  assertEquals(decoder.pendingBytes, 0);
});

Deno.test("FrameDecoder.push() returns back-to-back frames from one chunk", () => {
  const bodies = Array.from({ length: 50 }, (_, i) => new Uint8Array(i + 1).fill(i));
  const decoder = new FrameDecoder();
  assertEquals(decoder.push(concat(bodies.map((body) => encodeFrame(body)))), bodies);
});

Deno.test("FrameDecoder.push() returns copies, not views of its input", () => {
  const chunk = encodeFrame(Uint8Array.of(1, 2, 3));
  const [body] = new FrameDecoder().push(chunk);
  chunk.fill(0);
  assertEquals(body, Uint8Array.of(1, 2, 3));
  assertEquals(body.byteLength, body.buffer.byteLength);
});

Deno.test("FrameDecoder.push() accepts a body of exactly maxFrameBytes", () => {
  const decoder = new FrameDecoder({ maxFrameBytes: 10 });
  const body = new Uint8Array(10).fill(3);
  assertEquals(decoder.push(encodeFrame(body, { maxFrameBytes: 10 })), [body]);
});

Deno.test("FrameDecoder.push() rejects an oversized header", () => {
  const decoder = new FrameDecoder();
  decoder.push(header(MAX_FRAME_BYTES + 1).subarray(0, 3));
  const error = assertThrows(
    () => decoder.push(header(MAX_FRAME_BYTES + 1).subarray(3)),
    ProtocolError,
    "65537",
  );
  assertEquals(error.code, "too_large");
  // Unusable afterwards, even for a valid frame.
  assertThrows(() => decoder.push(encodeFrame(Uint8Array.of(1))), ProtocolError, "65537");

  const small = new FrameDecoder({ maxFrameBytes: 10 });
  assertThrows(() => small.push(header(11)), ProtocolError, "limit is 10");
  assertThrows(() => new FrameDecoder().push(header(0xffffffff)), ProtocolError, "4294967295");
});

Deno.test("FrameDecoder.push() rejects a zero-length header", () => {
  const decoder = new FrameDecoder();
  const error = assertThrows(
    () => decoder.push(concat([header(0), Uint8Array.of(1, 2)])),
    ProtocolError,
    "length of 0",
  );
  assertEquals(error.code, "too_large");
  assertThrows(() => decoder.push(Uint8Array.of(1)), ProtocolError, "length of 0");
});

Deno.test("FrameDecoder.push() handles many small chunks in linear time", () => {
  const body = new Uint8Array(MAX_FRAME_BYTES).map((_, i) => i & 0xff);
  const frame = encodeFrame(body);
  const decoder = new FrameDecoder();
  const got: Uint8Array[] = [];
  for (let i = 0; i < frame.length; i++) got.push(...decoder.push(frame.subarray(i, i + 1)));
  assertEquals(got, [body]);
});

Deno.test("FrameDecoder.push() recovers any frames split arbitrarily", () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 20 }),
      fc.array(fc.nat(), { maxLength: 40 }),
      (bodies, cuts) => {
        const stream = concat(bodies.map((body) => encodeFrame(body)));
        const points = [...new Set(cuts.map((cut) => cut % (stream.length + 1)))]
          .sort((a, b) => a - b);
        const decoder = new FrameDecoder();
        const got: Uint8Array[] = [];
        let start = 0;
        for (const point of [...points, stream.length]) {
          got.push(...decoder.push(stream.subarray(start, point)));
          start = point;
        }
        assertEquals(got, bodies);
        assertEquals(decoder.pendingBytes, 0);
      },
    ),
    { numRuns: 300 },
  );
});
