/**
 * The peer payload codec: every kind round-trips (property tests), and
 * decoding anything else throws a ProtocolError and nothing else.
 */
import fc from "fast-check";
import { assert, assertEquals } from "@std/assert";
import {
  decodePeerPayload,
  encodePeerPayload,
  FILE_CHUNK_BYTES,
  MAX_OFFER_NAME_BYTES,
  MAX_REASON_BYTES,
  type PeerPayload,
} from "../lib/wire/peer_payload.ts";
import { ProtocolError, type ProtocolErrorCode } from "../lib/wire/protocol_error.ts";

const KINDS = [
  "text",
  "file_offer",
  "file_accept",
  "file_decline",
  "file_chunk",
  "file_cancel",
  "file_done",
] as const satisfies readonly PeerPayload["kind"][];

/** Tag byte of each kind, as docs/PROTOCOL.md gives them. */
const TAG: Record<PeerPayload["kind"], number> = {
  text: 1,
  file_offer: 2,
  file_accept: 3,
  file_decline: 4,
  file_chunk: 5,
  file_cancel: 6,
  file_done: 7,
};

// ---------------------------------------------------------------------------
// Arbitraries

const encoder = new TextEncoder();

function utf8Size(text: string): number {
  return encoder.encode(text).length;
}

/** Cuts a string at a code point boundary so its UTF-8 size is at most `max`. */
function truncateToBytes(text: string, max: number): string {
  let out = "";
  for (const char of text) {
    if (utf8Size(out + char) > max) break;
    out += char;
  }
  return out;
}

/** Any Unicode text (astral code points and a leading BOM included), at most `max` bytes. */
function textArbitrary(max: number): fc.Arbitrary<string> {
  const unicode = fc.string({ unit: "binary", maxLength: 64 });
  return fc.oneof(
    unicode.map((text) => truncateToBytes(text, max)),
    // U+FEFF first: a decoder that strips a BOM would lose it.
    unicode.map((text) => truncateToBytes("\uFEFF" + text, max)),
    // Right at the limit.
    fc.string({ unit: "binary", minLength: 1, maxLength: 4 }).map((unit) =>
      truncateToBytes(unit.repeat(Math.ceil(max / utf8Size(unit)) + 1), max)
    ),
  );
}

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u53 = fc.oneof(
  fc.nat(),
  fc.constant(0),
  fc.constant(Number.MAX_SAFE_INTEGER),
  fc.maxSafeNat(),
);
const sha = fc.uint8Array({ minLength: 32, maxLength: 32 });

const ARBITRARIES: Record<PeerPayload["kind"], fc.Arbitrary<PeerPayload>> = {
  text: fc.record({
    kind: fc.constant("text" as const),
    text: fc.oneof(textArbitrary(2000), fc.constant("")),
  }),
  file_offer: fc.record({
    kind: fc.constant("file_offer" as const),
    transfer: u32,
    size: u53,
    sha256: sha,
    name: textArbitrary(MAX_OFFER_NAME_BYTES),
  }),
  file_accept: fc.record({
    kind: fc.constant("file_accept" as const),
    transfer: u32,
    offset: u53,
  }),
  file_decline: fc.record({
    kind: fc.constant("file_decline" as const),
    transfer: u32,
    reason: textArbitrary(MAX_REASON_BYTES),
  }),
  file_chunk: fc.record({
    kind: fc.constant("file_chunk" as const),
    transfer: u32,
    offset: u53,
    data: fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      fc.constant(new Uint8Array(FILE_CHUNK_BYTES).fill(0xa5)),
    ),
  }),
  file_cancel: fc.record({
    kind: fc.constant("file_cancel" as const),
    transfer: u32,
    bySender: fc.boolean(),
    reason: textArbitrary(MAX_REASON_BYTES),
  }),
  file_done: fc.record({
    kind: fc.constant("file_done" as const),
    transfer: u32,
    ok: fc.boolean(),
    reason: textArbitrary(MAX_REASON_BYTES),
  }),
};

const anyPayload = fc.oneof(...KINDS.map((kind) => ARBITRARIES[kind]));

/** Decodes, returning the ProtocolError if that is what it threw; anything else fails the test. */
function decodeOrError(bytes: Uint8Array): PeerPayload | ProtocolError {
  try {
    return decodePeerPayload(bytes);
  } catch (error) {
    if (!(error instanceof ProtocolError)) {
      throw new Error(`threw ${error} for ${Array.from(bytes.slice(0, 20))}`, { cause: error });
    }
    assert(error.message.length > 0 && !/undefined|NaN/.test(error.message), error.message);
    return error;
  }
}

function assertRejects(bytes: Uint8Array, code: ProtocolErrorCode): void {
  const result = decodeOrError(bytes);
  if (!(result instanceof ProtocolError)) {
    throw new Error(`decoded ${JSON.stringify(result)}, expected ${code}`);
  }
  assertEquals(result.code, code, result.message);
}

function u64(value: bigint): number[] {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, value);
  return [...bytes];
}

// ---------------------------------------------------------------------------
// Round trips

Deno.test("decodePeerPayload() inverts encodePeerPayload() for every kind", async (t) => {
  for (const kind of KINDS) {
    await t.step(kind, () => {
      fc.assert(
        fc.property(ARBITRARIES[kind], (payload) => {
          const bytes = encodePeerPayload(payload);
          assertEquals(bytes[0], TAG[kind]);
          assertEquals(decodePeerPayload(bytes), payload);
        }),
        { numRuns: 200 },
      );
    });
  }
});

Deno.test("decodePeerPayload() reads a payload from a subarray with a nonzero offset", () => {
  fc.assert(
    fc.property(anyPayload, fc.uint8Array({ minLength: 1, maxLength: 9 }), (payload, before) => {
      const bytes = encodePeerPayload(payload);
      const buffer = Uint8Array.from([...before, ...bytes, 0xff, 0xff]);
      assertEquals(
        decodePeerPayload(buffer.subarray(before.length, before.length + bytes.length)),
        payload,
      );
    }),
    { numRuns: 200 },
  );
});

Deno.test("decodePeerPayload() keeps a leading U+FEFF in text, names and reasons", () => {
  for (
    const payload of [
      { kind: "text", text: "\uFEFFhello" },
      { kind: "text", text: "\uFEFF" },
      {
        kind: "file_offer",
        transfer: 1,
        size: 2,
        sha256: new Uint8Array(32),
        name: "\uFEFFa.bin",
      },
      { kind: "file_decline", transfer: 1, reason: "\uFEFFno" },
      { kind: "file_cancel", transfer: 1, bySender: true, reason: "\uFEFFstop" },
      { kind: "file_done", transfer: 1, ok: false, reason: "\uFEFFbad" },
    ] satisfies PeerPayload[]
  ) {
    assertEquals(decodePeerPayload(encodePeerPayload(payload)), payload);
  }
});

Deno.test("encodePeerPayload() lays out fields big-endian after the tag", () => {
  assertEquals(
    [...encodePeerPayload({ kind: "file_accept", transfer: 0x01020304, offset: 0x0506 })],
    [3, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 5, 6],
  );
  assertEquals(
    [...encodePeerPayload({
      kind: "file_chunk",
      transfer: 7,
      offset: 2 ** 40,
      data: Uint8Array.of(9, 8),
    })],
    [5, 0, 0, 0, 7, 0, 0, 1, 0, 0, 0, 0, 0, 9, 8],
  );
  const offer = encodePeerPayload({
    kind: "file_offer",
    transfer: 2,
    size: 65536,
    sha256: new Uint8Array(32).fill(0xcc),
    name: "é",
  });
  assertEquals(offer.length, 1 + 4 + 8 + 32 + 2);
  assertEquals([...offer.subarray(0, 13)], [2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0]);
  assertEquals([...offer.subarray(45)], [0xc3, 0xa9]);
  assertEquals(
    [...encodePeerPayload({ kind: "file_done", transfer: 1, ok: true, reason: "" })],
    [7, 0, 0, 0, 1, 1],
  );
  assertEquals(
    [...encodePeerPayload({ kind: "file_cancel", transfer: 1, bySender: false, reason: "x" })],
    [6, 0, 0, 0, 1, 0, 0x78],
  );
  assertEquals([...encodePeerPayload({ kind: "text", text: "hi" })], [1, 0x68, 0x69]);
});

Deno.test("decodePeerPayload() returns a sha256 that does not alias the input", () => {
  const bytes = encodePeerPayload({
    kind: "file_offer",
    transfer: 1,
    size: 1,
    sha256: new Uint8Array(32).fill(1),
    name: "a",
  });
  const decoded = decodePeerPayload(bytes);
  bytes.fill(0xee);
  if (decoded.kind !== "file_offer") throw new Error(`decoded a ${decoded.kind}`);
  assertEquals(decoded.sha256, new Uint8Array(32).fill(1));
});

// ---------------------------------------------------------------------------
// Rejections

Deno.test("decodePeerPayload() rejects an empty message and unknown tags", () => {
  assertRejects(new Uint8Array(), "truncated");
  for (let tag = 0; tag <= 0xff; tag++) {
    if (Object.values(TAG).includes(tag)) continue;
    assertRejects(Uint8Array.from([tag, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), "unknown_type");
  }
});

Deno.test("decodePeerPayload() rejects every cut inside a payload's fixed fields as truncated", () => {
  const fixed: Record<PeerPayload["kind"], number> = {
    text: 0,
    file_offer: 44,
    file_accept: 12,
    file_decline: 4,
    file_chunk: 12,
    file_cancel: 5,
    file_done: 5,
  };
  fc.assert(
    fc.property(anyPayload, fc.nat(), (payload, at) => {
      const need = fixed[payload.kind];
      if (need === 0) return;
      const bytes = encodePeerPayload(payload);
      const cut = 1 + (at % need); // 1 .. need: the tag and part of the fixed fields
      assertRejects(bytes.subarray(0, cut), "truncated");
    }),
    { numRuns: 300 },
  );
});

Deno.test("decodePeerPayload() rejects text that is not UTF-8 as bad_utf8", () => {
  const bad = [[0xff], [0xc3], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xf8, 0x88]];
  for (const tail of bad) {
    assertRejects(Uint8Array.from([1, 0x61, ...tail]), "bad_utf8");
    assertRejects(
      Uint8Array.from([2, 0, 0, 0, 1, ...u64(5n), ...new Uint8Array(32), ...tail]),
      "bad_utf8",
    );
    assertRejects(Uint8Array.from([4, 0, 0, 0, 1, ...tail]), "bad_utf8");
    assertRejects(Uint8Array.from([6, 0, 0, 0, 1, 1, ...tail]), "bad_utf8");
    assertRejects(Uint8Array.from([7, 0, 0, 0, 1, 0, ...tail]), "bad_utf8");
  }
});

Deno.test("decodePeerPayload() rejects sizes and offsets beyond 2^53 as bad_value", () => {
  const max = BigInt(Number.MAX_SAFE_INTEGER);
  for (const value of [max + 1n, 1n << 60n, (1n << 64n) - 1n]) {
    const offer = [2, 0, 0, 0, 1, ...u64(value), ...new Uint8Array(32), 0x61];
    assertRejects(Uint8Array.from(offer), "bad_value");
    assertRejects(Uint8Array.from([3, 0, 0, 0, 1, ...u64(value)]), "bad_value");
    assertRejects(Uint8Array.from([5, 0, 0, 0, 1, ...u64(value), 1, 2, 3]), "bad_value");
  }
  // 2^53 - 1 itself is fine.
  const accept = decodePeerPayload(Uint8Array.from([3, 0, 0, 0, 1, ...u64(max)]));
  assertEquals(accept, { kind: "file_accept", transfer: 1, offset: Number.MAX_SAFE_INTEGER });
});

Deno.test("decodePeerPayload() rejects a file_accept with trailing bytes", () => {
  fc.assert(
    fc.property(
      ARBITRARIES.file_accept,
      fc.uint8Array({ minLength: 1, maxLength: 20 }),
      (payload, extra) => {
        assertRejects(
          Uint8Array.from([...encodePeerPayload(payload), ...extra]),
          "trailing_bytes",
        );
      },
    ),
    { numRuns: 100 },
  );
});

Deno.test("decodePeerPayload() rejects a flag byte above 1 in file_cancel and file_done", () => {
  for (const tag of [6, 7]) {
    for (const flag of [2, 3, 0x80, 0xff]) {
      assertRejects(Uint8Array.from([tag, 0, 0, 0, 1, flag]), "bad_value");
      assertRejects(Uint8Array.from([tag, 0, 0, 0, 1, flag, 0x61]), "bad_value");
    }
    const decoded = decodePeerPayload(Uint8Array.from([tag, 0, 0, 0, 1, 0]));
    assertEquals("transfer" in decoded && decoded.transfer, 1);
  }
});

Deno.test("decodePeerPayload() rejects names and reasons over their limits as too_long", () => {
  const name = (bytes: number) =>
    Uint8Array.from([2, 0, 0, 0, 1, ...u64(1n), ...new Uint8Array(32), ...Array(bytes).fill(0x61)]);
  assertEquals(decodeOrError(name(MAX_OFFER_NAME_BYTES)) instanceof ProtocolError, false);
  assertRejects(name(MAX_OFFER_NAME_BYTES + 1), "too_long");
  for (const head of [[4, 0, 0, 0, 1], [6, 0, 0, 0, 1, 0], [7, 0, 0, 0, 1, 1]]) {
    const reason = (bytes: number) => Uint8Array.from([...head, ...Array(bytes).fill(0x62)]);
    assertEquals(decodeOrError(reason(MAX_REASON_BYTES)) instanceof ProtocolError, false);
    assertRejects(reason(MAX_REASON_BYTES + 1), "too_long");
  }
});

Deno.test("decodePeerPayload() throws only ProtocolError for arbitrary bytes", () => {
  const anyBytes = fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    fc.uint8Array({ maxLength: 600, size: "max" }),
    // A known tag, then anything.
    fc.tuple(fc.integer({ min: 0, max: 9 }), fc.uint8Array({ maxLength: 80 }))
      .map(([tag, rest]) => Uint8Array.from([tag, ...rest])),
  );
  fc.assert(
    fc.property(anyBytes, (bytes) => {
      const result = decodeOrError(bytes);
      // Whatever decodes is canonical: it encodes back to the same bytes.
      if (!(result instanceof ProtocolError)) assertEquals(encodePeerPayload(result), bytes);
    }),
    { numRuns: 1000 },
  );
});

Deno.test("decodePeerPayload() decodes or throws ProtocolError for a valid encoding with a byte flipped", () => {
  fc.assert(
    fc.property(anyPayload, fc.nat(), fc.integer({ min: 1, max: 0xff }), (payload, at, mask) => {
      const bytes = encodePeerPayload(payload);
      bytes[at % bytes.length] ^= mask;
      const result = decodeOrError(bytes);
      if (!(result instanceof ProtocolError)) assertEquals(encodePeerPayload(result), bytes);
    }),
    { numRuns: 500 },
  );
});
