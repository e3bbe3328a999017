import fc from "fast-check";
import {
  assert,
  assertEquals,
  assertNotStrictEquals,
  assertStrictEquals,
  assertThrows,
} from "@std/assert";
import {
  decodeMessage,
  encodeMessage,
  HEADER_BYTES,
  MAGIC,
  MIN_PADDED_REQUEST_BYTES,
  PROTOCOL_VERSION,
} from "../lib/wire/codec.ts";
import {
  type FieldKind,
  MAX_DATAGRAM_BYTES,
  type Message,
  MESSAGE_SCHEMAS,
  type MessageOf,
  type MessageType,
  PADDED_REQUEST_TYPES,
} from "../lib/wire/messages.ts";
import { toHex } from "../lib/hex.ts";
import { ProtocolError, type ProtocolErrorCode } from "../lib/wire/protocol_error.ts";

type Schema = { code: number; fields: readonly (readonly [string, FieldKind])[] };

const SCHEMAS = MESSAGE_SCHEMAS as Record<MessageType, Schema>;
const TYPES = Object.keys(SCHEMAS) as MessageType[];
const CODES = TYPES.map((type) => SCHEMAS[type].code);
const PROTOCOL_ERROR_CODES: ReadonlySet<ProtocolErrorCode> = new Set<ProtocolErrorCode>([
  "bad_magic",
  "bad_version",
  "unknown_type",
  "truncated",
  "trailing_bytes",
  "too_long",
  "bad_utf8",
  "bad_value",
  "too_large",
]);

// ---------------------------------------------------------------------------
// Arbitraries, built from the schema table so that a new message type or
// field is covered without touching this file.

function utf8Size(codePoint: number): number {
  if (codePoint < 0x80) return 1;
  if (codePoint < 0x800) return 2;
  if (codePoint < 0x10000) return 3;
  return 4;
}

/** Cuts a string at a code point boundary so its UTF-8 size is at most `max`. */
function truncateToBytes(text: string, max: number): string {
  let size = 0;
  let out = "";
  for (const char of text) {
    size += utf8Size(char.codePointAt(0)!);
    if (size > max) break;
    out += char;
  }
  return out;
}

/** Repeats the code points of `unit` for as long as the UTF-8 size stays within `limit`. */
function fillToBytes(unit: string, limit: number): string {
  const chars = [...unit];
  const parts: string[] = [];
  let size = 0;
  for (let i = 0;; i++) {
    const char = chars[i % chars.length];
    const charSize = utf8Size(char.codePointAt(0)!);
    if (size + charSize > limit) break;
    parts.push(char);
    size += charSize;
  }
  return parts.join("");
}

/** Any Unicode text (astral code points included) whose UTF-8 size is at most `max`. */
function textArbitrary(max: number): fc.Arbitrary<string> {
  const unicode = fc.string({ unit: "binary", maxLength: Math.min(max, 64) });
  return fc.oneof(
    // Short strings of any code points.
    unicode.map((text) => truncateToBytes(text, max)),
    // Strings right at (or just under) the size limit.
    fc.tuple(fc.string({ unit: "binary", minLength: 1, maxLength: 6 }), fc.nat({ max: 3 }))
      .map(([unit, slack]) => fillToBytes(unit, Math.max(0, max - slack))),
  );
}

function bytesArbitrary(max: number): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    fc.uint8Array({ maxLength: max }),
    fc.uint8Array({ minLength: max, maxLength: max }),
  );
}

const ID64_MAX = (1n << 64n) - 1n;

function fieldArbitrary(kind: FieldKind): fc.Arbitrary<unknown> {
  switch (kind.kind) {
    case "u8":
      return fc.integer({ min: 0, max: 0xff });
    case "u16":
      return fc.integer({ min: 0, max: 0xffff });
    case "u32":
      return fc.integer({ min: 0, max: 0xffffffff });
    case "u64":
      return fc.oneof(fc.nat(), fc.constant(Number.MAX_SAFE_INTEGER), fc.maxSafeNat());
    case "list": {
      const item: Record<string, fc.Arbitrary<unknown>> = {};
      for (const [field, itemKind] of kind.of) item[field] = fieldArbitrary(itemKind);
      // Few items: a list of long items can exceed what any datagram or frame holds.
      return fc.array(fc.record(item), { maxLength: Math.min(kind.max, 3) });
    }
    case "id64":
      return fc.bigInt({ min: 0n, max: ID64_MAX }).map((n) => n.toString(16).padStart(16, "0"));
    case "text":
      return textArbitrary(kind.max);
    case "bytes":
      return bytesArbitrary(kind.max);
  }
}

function messageArbitrary(type: MessageType): fc.Arbitrary<Message> {
  const model: Record<string, fc.Arbitrary<unknown>> = { type: fc.constant(type) };
  for (const [field, kind] of SCHEMAS[type].fields) model[field] = fieldArbitrary(kind);
  return fc.record(model) as unknown as fc.Arbitrary<Message>;
}

const MESSAGE_ARBITRARIES = Object.fromEntries(
  TYPES.map((type) => [type, messageArbitrary(type)]),
) as Record<MessageType, fc.Arbitrary<Message>>;

const anyMessage: fc.Arbitrary<Message> = fc.oneof(...TYPES.map((t) => MESSAGE_ARBITRARIES[t]));

/** Runs `decodeMessage` and fails unless it returns or throws a ProtocolError. */
function decodeOrProtocolError(bytes: Uint8Array): Message | ProtocolError {
  try {
    return decodeMessage(bytes);
  } catch (error) {
    if (!(error instanceof ProtocolError)) {
      throw new Error(`decodeMessage() threw a non-ProtocolError: ${error}`, { cause: error });
    }
    assert(PROTOCOL_ERROR_CODES.has(error.code), `unexpected code ${error.code}`);
    return error;
  }
}

/**
 * Decoding accepts only canonical encodings: a decoded message re-encodes to
 * the same bytes, but for how many zero bytes pad a padded request.
 */
function assertCanonical(bytes: Uint8Array, message: Message): void {
  const encoded = encodeMessage(message);
  if (!PADDED_REQUEST_TYPES.has(message.type)) return assertEquals(encoded, bytes);
  const common = Math.min(encoded.length, bytes.length);
  assertEquals(encoded.subarray(0, common), bytes.subarray(0, common));
  const rest = encoded.length > common ? encoded.subarray(common) : bytes.subarray(common);
  assert(rest.every((b) => b === 0), "only zero bytes of padding differ");
}

/** The length of a padded request's fields: its encoding without the padding. */
function unpaddedLength(message: Message): number {
  const bytes = encodeMessage(message);
  for (let end = HEADER_BYTES; end <= bytes.length; end++) {
    if (!(decodeOrProtocolError(bytes.subarray(0, end)) instanceof ProtocolError)) return end;
  }
  throw new Error("no prefix decodes");
}

function header(code: number): number[] {
  return [MAGIC[0], MAGIC[1], PROTOCOL_VERSION, code];
}

function u32(n: number): number[] {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

function u16(n: number): number[] {
  return [n >>> 8, n & 0xff];
}

/** A `hello_ok` whose `serverVersion` (text, max 32) holds the given raw body. */
function helloOkWithVersion(body: number[], length = body.length): Uint8Array {
  return Uint8Array.from([
    ...header(MESSAGE_SCHEMAS.hello_ok.code),
    ...u32(1),
    ...u16(8080),
    ...u16(length),
    ...body,
    0,
    ...u32(30000),
    ...u16(32),
    ...new Uint8Array(32),
  ]);
}

/** Bytes of a `hello_ok` before its `serverVersion` text: header, reqId, tcpPort, length. */
const HEADER_LENGTH_OF_HELLO_OK_TEXT = 4 + 4 + 2 + 2;

function assertProtocolError(bytes: Uint8Array, code: ProtocolErrorCode): void {
  const error = assertThrows(() => decodeMessage(bytes), ProtocolError);
  assertEquals(error.code, code, error.message);
}

// ---------------------------------------------------------------------------
// Round trip

Deno.test("message arbitraries cover every type in MESSAGE_SCHEMAS with exactly its fields", () => {
  assertEquals(Object.keys(MESSAGE_ARBITRARIES).sort(), Object.keys(MESSAGE_SCHEMAS).sort());
  assertEquals(new Set(CODES).size, TYPES.length, "type codes are unique");
  for (const type of TYPES) {
    const expected = ["type", ...SCHEMAS[type].fields.map(([field]) => field)].sort();
    for (const message of fc.sample(MESSAGE_ARBITRARIES[type], { numRuns: 20, seed: 1 })) {
      assertEquals(message.type, type);
      assertEquals(Object.keys(message).sort(), expected);
    }
  }
  const seen = new Set(fc.sample(anyMessage, { numRuns: 500, seed: 1 }).map((m) => m.type));
  assertEquals([...seen].sort(), [...TYPES].sort());
});

Deno.test("textArbitrary() produces astral code points and strings at the size limit", () => {
  const samples = fc.sample(textArbitrary(32), { numRuns: 300, seed: 7 });
  const sizes = samples.map((s) => new TextEncoder().encode(s).length);
  assert(sizes.every((size) => size <= 32));
  assert(sizes.some((size) => size === 32), "some strings fill the limit exactly");
  assert(samples.some((s) => [...s].some((c) => c.codePointAt(0)! > 0xffff)), "astral chars");
});

Deno.test("decodeMessage() inverts encodeMessage() for every message type", async (t) => {
  for (const type of TYPES) {
    await t.step(type, () => {
      fc.assert(
        fc.property(MESSAGE_ARBITRARIES[type], (message) => {
          const bytes = encodeMessage(message);
          assertEquals(
            bytes.subarray(0, HEADER_BYTES),
            Uint8Array.from(header(SCHEMAS[type].code)),
          );
          assertEquals(decodeMessage(bytes), message);
        }),
        { numRuns: 150 },
      );
    });
  }
});

Deno.test("decodeMessage() reads a message from a subarray with a nonzero offset", () => {
  fc.assert(
    fc.property(anyMessage, fc.uint8Array({ maxLength: 9 }), fc.uint8Array({ maxLength: 9 }), (
      message,
      before,
      after,
    ) => {
      const bytes = encodeMessage(message);
      const buffer = Uint8Array.from([...before, ...bytes, ...after]);
      const view = buffer.subarray(before.length, before.length + bytes.length);
      assertEquals(decodeMessage(view), message);
    }),
    { numRuns: 100 },
  );
});

Deno.test("decodeMessage() returns bytes fields that do not alias the input", () => {
  const token = Uint8Array.from({ length: 16 }, (_, i) => i);
  const bytes = encodeMessage({ type: "register_ok", reqId: 3, token });
  const decoded = decodeMessage(bytes);
  if (decoded.type !== "register_ok") throw new Error(`decoded a ${decoded.type}`);
  bytes.fill(0xee);
  assertEquals(decoded.token, token);
  assertNotStrictEquals(decoded.token.buffer, bytes.buffer);
});

Deno.test("decodeMessage() returns peer_data's payload and peer_sealed's ciphertext as views on the input, and only those", () => {
  const payload = Uint8Array.from({ length: 100 }, (_, i) => i);
  const bytes = encodeMessage({
    type: "peer_data",
    session: "0123456789abcdef",
    seq: 7,
    fragment: 0,
    fragments: 1,
    payload,
  });
  const decoded = decodeMessage(bytes);
  if (decoded.type !== "peer_data") throw new Error(`decoded a ${decoded.type}`);
  assertEquals(decoded.payload, payload);
  assertStrictEquals(decoded.payload.buffer, bytes.buffer);
  const viewFields = Object.entries(MESSAGE_SCHEMAS).flatMap(([type, schema]) =>
    (schema.fields as readonly (readonly [string, FieldKind])[]).filter(([, kind]) =>
      kind.kind === "bytes" && kind.view === true
    ).map(([f]) => `${type}.${f}`)
  );
  assertEquals(viewFields, ["peer_data.payload", "peer_sealed.sealed"]);
  const sealed = encodeMessage({
    type: "peer_sealed",
    session: "0123456789abcdef",
    counter: 2 ** 40,
    sealed: payload,
  });
  const opened = decodeMessage(sealed);
  if (opened.type !== "peer_sealed") throw new Error(`decoded a ${opened.type}`);
  assertEquals([opened.counter, opened.sealed], [2 ** 40, payload]);
  assertStrictEquals(opened.sealed.buffer, sealed.buffer);
});

// ---------------------------------------------------------------------------
// Robustness against arbitrary and mutated input

Deno.test("decodeMessage() throws only ProtocolError for arbitrary bytes", () => {
  const anyBytes = fc.oneof(
    fc.uint8Array({ maxLength: 2000 }),
    fc.uint8Array({ maxLength: 2000, size: "max" }),
  );
  fc.assert(
    fc.property(anyBytes, (bytes) => {
      const result = decodeOrProtocolError(bytes);
      if (!(result instanceof ProtocolError)) assertCanonical(bytes, result);
    }),
    { numRuns: 500 },
  );
});

Deno.test("decodeMessage() throws only ProtocolError for arbitrary bytes after a valid header", () => {
  const body = fc.oneof(
    fc.uint8Array({ maxLength: 2000 }),
    fc.uint8Array({ maxLength: 2000, size: "max" }),
  );
  fc.assert(
    fc.property(fc.constantFrom(...CODES), body, (code, rest) => {
      const bytes = Uint8Array.from([...header(code), ...rest]);
      const result = decodeOrProtocolError(bytes);
      if (!(result instanceof ProtocolError)) assertCanonical(bytes, result);
    }),
    { numRuns: 500 },
  );
});

Deno.test("decodeMessage() decodes or throws ProtocolError for a valid encoding with a byte flipped", () => {
  fc.assert(
    fc.property(anyMessage, fc.nat(), fc.integer({ min: 1, max: 0xff }), (message, at, mask) => {
      const bytes = encodeMessage(message);
      const index = at % bytes.length;
      bytes[index] ^= mask;
      const result = decodeOrProtocolError(bytes);
      if (!(result instanceof ProtocolError)) assertCanonical(bytes, result);
    }),
    { numRuns: 300 },
  );
});

Deno.test("decodeMessage() rejects every truncation of a valid encoding as truncated, but of padding", () => {
  fc.assert(
    fc.property(anyMessage, fc.nat(), (message, at) => {
      const bytes = encodeMessage(message);
      const cut = at % bytes.length;
      const result = decodeOrProtocolError(bytes.subarray(0, cut));
      if (PADDED_REQUEST_TYPES.has(message.type) && cut >= unpaddedLength(message)) {
        // Padding cut short, or left out: the same message.
        assertEquals(result, decodeMessage(bytes));
        return;
      }
      if (!(result instanceof ProtocolError)) {
        throw new Error(`cut at ${cut} of ${bytes.length} bytes decoded`);
      }
      assertEquals(result.code, "truncated", result.message);
    }),
    { numRuns: 300 },
  );
});

Deno.test("decodeMessage() rejects a valid encoding with bytes appended as trailing_bytes, but zeros after a padded request", () => {
  fc.assert(
    fc.property(anyMessage, fc.uint8Array({ minLength: 1, maxLength: 40 }), (message, extra) => {
      const bytes = Uint8Array.from([...encodeMessage(message), ...extra]);
      const result = decodeOrProtocolError(bytes);
      if (PADDED_REQUEST_TYPES.has(message.type) && extra.every((b) => b === 0)) {
        assertEquals(result, decodeMessage(encodeMessage(message)));
        return;
      }
      if (!(result instanceof ProtocolError)) throw new Error("appended bytes decoded");
      assertEquals(result.code, "trailing_bytes", result.message);
    }),
    { numRuns: 200 },
  );
});

Deno.test("encodeMessage() pads hello, register and login with zero bytes to MIN_PADDED_REQUEST_BYTES", () => {
  assertEquals(MIN_PADDED_REQUEST_BYTES, 312);
  const client = "0123456789abcdef";
  const hello = encodeMessage({ type: "hello", reqId: 1, client });
  assertEquals(hello.length, 312);
  assertEquals(
    hello.subarray(0, 16),
    Uint8Array.from([...header(1), ...u32(1), 1, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]),
  );
  assert(hello.subarray(16).every((b) => b === 0));
  const register: Message = {
    type: "register",
    reqId: 1,
    client,
    name: "Alice",
    udpPort: 5000,
    tcpPort: 5001,
  };
  assertEquals(encodeMessage(register).length, 312);
  // A login with a long password is longer than the padding: it goes as it is.
  const login: Message = {
    type: "login",
    reqId: 1,
    client,
    name: "A".repeat(128),
    secret: new Uint8Array(256).fill(7),
    udpPort: 0,
    tcpPort: 5001,
  };
  assertEquals(encodeMessage(login).length, 24 + 128 + 256);
  // Other messages are not padded, text included (its reply is 8 bytes).
  const text: Message = {
    type: "text",
    reqId: 1,
    client,
    name: "",
    token: new Uint8Array(0),
    text: "hi",
  };
  assertEquals(encodeMessage(text).length, 24);
  assertEquals(
    encodeMessage({
      type: "hello_ok",
      reqId: 1,
      tcpPort: 3001,
      serverVersion: "0.2.0",
      auth: 0,
      leaseMs: 30_000,
      serverKey: new Uint8Array(32),
    }).length,
    22 + 2 + 32, // version 3: the server's key, for trust on first use
  );
});

Deno.test("decodeMessage() reads a padded request with any number of zero bytes after its fields, and no other bytes", () => {
  const hello: Message = { type: "hello", reqId: 7, client: "0123456789abcdef" };
  const padded = encodeMessage(hello);
  for (const length of [16, 17, 100, 311, 312]) {
    assertEquals(decodeMessage(padded.subarray(0, length)), hello);
  }
  const longer = new Uint8Array(1200);
  longer.set(padded);
  assertEquals(decodeMessage(longer), hello);
  for (const at of [16, 200, 311]) {
    const bad = padded.slice();
    bad[at] = 1;
    assertProtocolError(bad, "trailing_bytes");
  }
  assertProtocolError(padded.subarray(0, 15), "truncated");
});

Deno.test("encodeMessage() refuses to pad beyond maxBytes", () => {
  const hello: Message = { type: "hello", reqId: 7, client: "0123456789abcdef" };
  assertEquals(encodeMessage(hello, { maxBytes: 312 }).length, 312);
  assertThrows(() => encodeMessage(hello, { maxBytes: 311 }), RangeError, "padded, it needs 312");
});

// ---------------------------------------------------------------------------
// Specific rejections

Deno.test("decodeMessage() rejects a truncated header", () => {
  const full = encodeMessage({ type: "text_ok", reqId: 1 });
  for (let length = 0; length < HEADER_BYTES; length++) {
    assertProtocolError(full.subarray(0, length), "truncated");
  }
});

Deno.test("decodeMessage() rejects a bad magic", () => {
  assertProtocolError(Uint8Array.from([0x53, 0x58, 1, 8, ...u32(1)]), "bad_magic");
  assertProtocolError(Uint8Array.from([0x00, 0x57, 1, 8, ...u32(1)]), "bad_magic");
  assertProtocolError(new TextEncoder().encode("GET / HTTP/1.1\r\n"), "bad_magic");
});

Deno.test("decodeMessage() rejects other protocol versions", () => {
  assertProtocolError(Uint8Array.from([0x53, 0x57, 1, 8, ...u32(1)]), "bad_version");
  assertProtocolError(Uint8Array.from([0x53, 0x57, 2, 8, ...u32(1)]), "bad_version");
  assertProtocolError(Uint8Array.from([0x53, 0x57, 4, 8, ...u32(1)]), "bad_version");
  assertProtocolError(Uint8Array.from([0x53, 0x57, 0, 8, ...u32(1)]), "bad_version");
});

Deno.test("decodeMessage() rejects an unknown type code", () => {
  for (let code = 0; code <= 0xff; code++) {
    if (CODES.includes(code)) continue;
    assertProtocolError(Uint8Array.from([...header(code), ...u32(1)]), "unknown_type");
  }
});

Deno.test("decodeMessage() rejects a trailing byte", () => {
  const bytes = Uint8Array.from([...encodeMessage({ type: "text_ok", reqId: 1 }), 0]);
  assertProtocolError(bytes, "trailing_bytes");
});

Deno.test("decodeMessage() rejects a text length above the field maximum as too_long", () => {
  // serverVersion allows 32 bytes: 33 is refused whether or not the body is there.
  assertEquals(decodeMessage(helloOkWithVersion(Array(32).fill(0x61))).type, "hello_ok");
  assertProtocolError(helloOkWithVersion(Array(33).fill(0x61)), "too_long");
  assertProtocolError(helloOkWithVersion([], 33), "too_long");
  assertProtocolError(helloOkWithVersion([], 0xffff), "too_long");
});

Deno.test("decodeMessage() rejects a list longer than its maximum as too_long", () => {
  const bytes = Uint8Array.from([
    ...header(MESSAGE_SCHEMAS.list_page.code),
    ...u32(1),
    ...u32(300),
    0,
    ...u16(256),
  ]);
  assertProtocolError(bytes, "too_long");
});

Deno.test("decodeMessage() rejects a list that ends inside an item as truncated", () => {
  const bytes = Uint8Array.from([
    ...header(MESSAGE_SCHEMAS.list_page.code),
    ...u32(1),
    ...u32(2),
    0,
    ...u16(2),
    ...u16(1),
    0x61,
  ]);
  assertProtocolError(bytes, "truncated");
});

Deno.test("decodeMessage() rejects a u64 above Number.MAX_SAFE_INTEGER", () => {
  const bytes = Uint8Array.from([
    ...header(MESSAGE_SCHEMAS.upload_ok.code),
    ...u32(1),
    0x00,
    0x20,
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
  assertProtocolError(bytes, "too_long");
  const safe = encodeMessage({ type: "upload_ok", reqId: 1, size: Number.MAX_SAFE_INTEGER });
  assertEquals(decodeMessage(safe), { type: "upload_ok", reqId: 1, size: Number.MAX_SAFE_INTEGER });
});

Deno.test("decodeMessage() rejects a bytes length above the field maximum as too_long", () => {
  const bytes = Uint8Array.from([
    ...header(MESSAGE_SCHEMAS.register_ok.code),
    ...u32(1),
    ...u16(17),
    ...Array(17).fill(0),
  ]);
  assertProtocolError(bytes, "too_long");
});

Deno.test("decodeMessage() rejects a text body shorter than its length as truncated", () => {
  const bytes = helloOkWithVersion([0x61, 0x62], 3);
  // The message ends inside the text: what follows the text is cut off.
  assertProtocolError(bytes.subarray(0, HEADER_LENGTH_OF_HELLO_OK_TEXT + 2), "truncated");
});

Deno.test("decodeMessage() rejects invalid UTF-8 in a text field as bad_utf8", () => {
  const invalid: Record<string, number[]> = {
    "bad continuation": [0xc3, 0x28],
    "overlong slash": [0xc0, 0xaf],
    "overlong NUL": [0xe0, 0x80, 0x80],
    "lone high surrogate": [0xed, 0xa0, 0x80],
    "lone low surrogate": [0xed, 0xb0, 0x80],
    "above U+10FFFF": [0xf4, 0x90, 0x80, 0x80],
    "lone continuation": [0x80],
    "cut sequence": [0x61, 0xe2, 0x82],
    "invalid byte": [0xff],
  };
  for (const [label, body] of Object.entries(invalid)) {
    const error = assertThrows(() => decodeMessage(helloOkWithVersion(body)), ProtocolError);
    assertEquals(error.code, "bad_utf8", label);
  }
});

Deno.test("decodeMessage() keeps a leading byte order mark in a text field", () => {
  const message = {
    type: "hello_ok",
    reqId: 1,
    tcpPort: 2,
    serverVersion: "\uFEFFv1",
    auth: 0,
    leaseMs: 1,
    serverKey: new Uint8Array(32),
  } as const;
  assertEquals(decodeMessage(encodeMessage(message)), message);
});

// ---------------------------------------------------------------------------
// Encoding rejections

function textMessage(text: string): Message {
  return {
    type: "text",
    reqId: 1,
    client: "0123456789abcdef",
    name: "a",
    token: new Uint8Array(16),
    text,
  };
}

Deno.test("encodeMessage() throws RangeError when a text message exceeds maxBytes", () => {
  const maxBytes = MAX_DATAGRAM_BYTES;
  // Header 4 + reqId 4 + client 8 + name 2+1 + token 2+16 + text 2 = 39 bytes besides the text.
  const fits = textMessage("x".repeat(maxBytes - 39));
  assertEquals(encodeMessage(fits, { maxBytes }).length, maxBytes);
  assertThrows(
    () => encodeMessage(textMessage("x".repeat(maxBytes - 38)), { maxBytes }),
    RangeError,
  );
  assertThrows(() => encodeMessage(textMessage("é".repeat(600)), { maxBytes }), RangeError);
  // Without the option the same message is fine (it fits a TCP frame).
  assertEquals(encodeMessage(textMessage("x".repeat(maxBytes))).length, maxBytes + 39);
});

Deno.test("encodeMessage() throws RangeError for out-of-range integers", () => {
  const bad: Message[] = [
    { type: "text_ok", reqId: -1 },
    { type: "text_ok", reqId: 2 ** 32 },
    { type: "text_ok", reqId: 1.5 },
    { type: "text_ok", reqId: NaN },
    { type: "text_ok", reqId: Infinity },
    { type: "text_ok", reqId: "1" as unknown as number },
    {
      type: "hello_ok",
      reqId: 1,
      tcpPort: 0x10000,
      serverVersion: "v",
      auth: 0,
      leaseMs: 30000,
      serverKey: new Uint8Array(32),
    },
    {
      type: "hello_ok",
      reqId: 1,
      tcpPort: -1,
      serverVersion: "v",
      auth: 0,
      leaseMs: 30000,
      serverKey: new Uint8Array(32),
    },
    { type: "error", reqId: 1, code: 65536, message: "m" },
  ];
  for (const message of bad) {
    assertThrows(() => encodeMessage(message), RangeError, undefined, JSON.stringify(message));
  }
  assertEquals(encodeMessage({ type: "text_ok", reqId: 2 ** 32 - 1 }).length, 8);
});

Deno.test("encodeMessage() throws RangeError for a malformed id64", () => {
  for (
    const client of [
      "",
      "0123456789abcde",
      "0123456789abcdef0",
      "0123456789ABCDEF",
      "g123456789abcdef",
      " 123456789abcdef",
      "0x23456789abcdef",
    ]
  ) {
    assertThrows(
      () => encodeMessage({ type: "hello", reqId: 1, client }),
      RangeError,
      undefined,
      client,
    );
  }
  assertThrows(
    () => encodeMessage({ type: "hello", reqId: 1, client: 5 as unknown as string }),
    RangeError,
  );
});

Deno.test("encodeMessage() and decodeMessage() keep id64 fields apart across calls", () => {
  // The codec remembers the last id64 both ways; a different one in between
  // must neither be taken for it nor slip past the check.
  const ids = ["0123456789abcdef", "fedcba9876543210", "0123456789abcdef", "0000000000000000"];
  for (const client of ids) {
    const bytes = encodeMessage({ type: "hello", reqId: 1, client });
    assertEquals(toHex(bytes.subarray(8, 16)), client);
    assertEquals((decodeMessage(bytes) as MessageOf<"hello">).client, client);
    assertThrows(() => encodeMessage({ type: "hello", reqId: 1, client: `${client.slice(1)}G` }));
  }
  const flipped = encodeMessage({ type: "hello", reqId: 1, client: ids[0] });
  flipped[15] ^= 1;
  assertEquals((decodeMessage(flipped) as MessageOf<"hello">).client, "0123456789abcdee");
});

Deno.test("encodeMessage() throws RangeError for oversized or mistyped text and bytes fields", () => {
  const base = { reqId: 1, client: "0123456789abcdef", udpPort: 1, tcpPort: 2 };
  // 33 four-byte characters: 132 bytes, above the 128-byte name limit.
  assertThrows(
    () => encodeMessage({ type: "register", ...base, name: "😀".repeat(33) }),
    RangeError,
  );
  assertEquals(decodeMessage(encodeMessage({ type: "register", ...base, name: "😀".repeat(32) })), {
    type: "register",
    ...base,
    name: "😀".repeat(32),
  });
  assertThrows(
    () =>
      encodeMessage({
        type: "register_ok",
        reqId: 1,
        token: new Uint8Array(17),
      }),
    RangeError,
  );
  assertThrows(
    () =>
      encodeMessage({
        type: "register_ok",
        reqId: 1,
        token: [1, 2] as unknown as Uint8Array,
      }),
    RangeError,
  );
  assertThrows(
    () => encodeMessage({ type: "register", ...base, name: 7 as unknown as string }),
    RangeError,
  );
});

Deno.test("encodeMessage() throws RangeError for an unknown type", () => {
  assertThrows(() => encodeMessage({ type: "nope" } as unknown as Message), RangeError);
});
