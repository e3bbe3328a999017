/**
 * The datagrams `scripts/fuzz.ts` throws at the server: a pool built once
 * from one seed (random garbage, valid messages of every type built with the
 * codec in `lib/wire/`, and those messages mutated field by field: bad
 * headers, truncation, trailing bytes, huge length prefixes and list counts,
 * out-of-range `u64`s, invalid UTF-8 in text fields, oversized datagrams,
 * stale, forged and random session tokens, and replays of real captured
 * requests), plus a cheap per-send variation so that a pool cycled many
 * times keeps producing new request ids, client ids and bytes. No I/O.
 *
 * @module
 */
import { SeededRandom } from "../lib/random.ts";
import { encodeMessage, HEADER_BYTES, MIN_PADDED_REQUEST_BYTES } from "../lib/wire/codec.ts";
import { nameProblem } from "../lib/wire/client_name.ts";
import {
  type FieldKind,
  MAX_DATAGRAM_BYTES,
  type Message,
  MESSAGE_SCHEMAS,
  type MessageType,
  PADDED_REQUEST_TYPES,
  REQUEST_TYPES,
} from "../lib/wire/messages.ts";

/** What kind of input a pool entry is. */
export type FuzzCategory =
  | "garbage"
  | "magic_garbage"
  | "bad_header"
  | "valid"
  | "mutated"
  | "bad_utf8"
  | "huge_length"
  | "list_count"
  | "u64_range"
  | "oversized"
  | "token"
  | "replay"
  | "probe";

/** One pool entry. */
export interface FuzzDatagram {
  /** The bytes (never modified once in the pool). */
  readonly bytes: Uint8Array;
  /** How it was made. */
  readonly category: FuzzCategory;
  /** Per-send variation allowed: 0 none, 1 fresh ids only, 2 ids and byte flips. */
  readonly vary: 0 | 1 | 2;
}

/** What the fuzzer learned from its own real sessions before fuzzing. */
export interface FuzzContext {
  /** Tokens of sessions still open (the fuzzer's own). */
  liveTokens: Uint8Array[];
  /** Tokens of sessions that ended (logged out or replaced). */
  staleTokens: Uint8Array[];
  /** Requests the fuzzer really sent and the server answered, as sent. */
  captured: Uint8Array[];
  /** Names the fuzzer registered. */
  names: string[];
  /** Prefix of the few new names the pool may register, such as `Fz123`. */
  newNamePrefix: string;
}

type Schema = { code: number; fields: readonly (readonly [string, FieldKind])[] };
const SCHEMAS = MESSAGE_SCHEMAS as Record<MessageType, Schema>;
const ALL_TYPES = Object.keys(SCHEMAS) as MessageType[];
const REQUESTS: readonly MessageType[] = REQUEST_TYPES.filter((t) => t !== "hello");
const REQUEST_CODES = new Set<number>(REQUEST_TYPES.map((t) => SCHEMAS[t].code));
const NOT_REQUESTS = ALL_TYPES.filter((t) => !REQUEST_CODES.has(SCHEMAS[t].code));
/** Requests that could create state (registrations, lockouts): never byte-flipped per send. */
const GUARDED_CODES = new Set([SCHEMAS.register.code, SCHEMAS.login.code, SCHEMAS.hello.code]);
const KNOWN_CODES = new Set(ALL_TYPES.map((t) => SCHEMAS[t].code));
const PADDED_CODES = new Set([...PADDED_REQUEST_TYPES].map((t) => SCHEMAS[t].code));

/** Invalid UTF-8: overlong forms, surrogates, above U+10FFFF, truncated, stray bytes. */
export const BAD_UTF8: readonly (readonly number[])[] = [
  [0xc0, 0x80],
  [0xc1, 0xbf],
  [0xe0, 0x80, 0x80],
  [0xe0, 0x9f, 0xbf],
  [0xed, 0xa0, 0x80],
  [0xed, 0xbf, 0xbf],
  [0xf0, 0x80, 0x80, 0x80],
  [0xf4, 0x90, 0x80, 0x80],
  [0xf5, 0x80, 0x80, 0x80],
  [0xff],
  [0xfe],
  [0x80],
  [0xbf],
  [0xc3],
  [0xe2, 0x82],
  [0xf0, 0x9f, 0x98],
];

const TEXT_PIECES = [
  "a",
  "Z",
  "0",
  " ",
  ".",
  "_",
  "-",
  "/",
  "\\",
  "..",
  "%s",
  "é",
  "ß",
  "✓",
  "名",
  "😀",
  "\u0301",
  "\u200b",
  "\u202e",
  "\ufeff",
  "\u0000",
  "\u0007",
  "\n",
  "CON",
  "Alice",
  "💩💩",
];

const PIECE_BYTES = TEXT_PIECES.map((piece) => new TextEncoder().encode(piece).length);

const INTERESTING_U8 = [0, 1, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING_U16 = [0, 1, 1023, 1024, 0x7fff, 0x8000, 0xfffe, 0xffff];
const INTERESTING_U32 = [0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const INTERESTING_U64 = [0, 1, 2 ** 32, 2 ** 53 - 1, 1_700_000_000_000];

/** Where one field of an encoded message lies. */
export interface FieldSpan {
  /** The field's name. */
  readonly name: string;
  /** Its kind. */
  readonly kind: FieldKind["kind"];
  /** Offset of its first byte (the length prefix or count, for those kinds). */
  readonly at: number;
  /** Bytes it takes, prefix included (for a list, the count only). */
  readonly size: number;
  /** For text, bytes and list: the most the schema allows. */
  readonly max?: number;
}

/**
 * Lays out the fields of an encoded message, as far as they lie inside it.
 *
 * @param bytes an encoded message (mutated ones give the spans that fit)
 * @returns its fields in order, list items included
 */
export function layout(bytes: Uint8Array): FieldSpan[] {
  const type = ALL_TYPES.find((t) => SCHEMAS[t].code === bytes[3]);
  if (type === undefined) return [];
  const spans: FieldSpan[] = [];
  let at = HEADER_BYTES;
  const u16 = (offset: number) => (bytes[offset] << 8) | bytes[offset + 1];
  const walk = (fields: readonly (readonly [string, FieldKind])[]) => {
    for (const [name, kind] of fields) {
      if (at >= bytes.length) return;
      switch (kind.kind) {
        case "u8":
        case "u16":
        case "u32":
        case "u64":
        case "id64": {
          const size = { u8: 1, u16: 2, u32: 4, u64: 8, id64: 8 }[kind.kind];
          spans.push({ name, kind: kind.kind, at, size });
          at += size;
          break;
        }
        case "text":
        case "bytes": {
          const size = 2 + u16(at);
          spans.push({ name, kind: kind.kind, at, size, max: kind.max });
          at += size;
          break;
        }
        case "list": {
          const count = u16(at);
          spans.push({ name, kind: "list", at, size: 2, max: kind.max });
          at += 2;
          for (let i = 0; i < count && at < bytes.length; i++) walk(kind.of);
          break;
        }
      }
    }
  };
  walk(SCHEMAS[type].fields);
  return spans.filter((span) => span.at + span.size <= bytes.length);
}

/**
 * Builds the fuzz pool from a seed.
 *
 * @example
 * ```ts
 * const pool = new FuzzCorpus(1, context).build(50_000);
 * ```
 */
export class FuzzCorpus {
  readonly #r: SeededRandom;
  readonly #ctx: FuzzContext;
  #newNames = 0;

  /**
   * @param seed the seed every choice draws from
   * @param context tokens, names and captured requests of the fuzzer's own sessions
   */
  constructor(seed: number, context: FuzzContext) {
    this.#r = new SeededRandom(seed);
    this.#ctx = context;
  }

  /**
   * Makes the pool.
   *
   * @param size how many datagrams
   * @returns them, in a random order
   */
  build(size: number): FuzzDatagram[] {
    const weights: [number, () => FuzzDatagram][] = [
      [8, () => this.#garbage()],
      [6, () => this.#magicGarbage()],
      [6, () => this.#badHeader()],
      [14, () => this.#valid()],
      [22, () => this.#mutated()],
      [7, () => this.#badUtf8()],
      [6, () => this.#hugeLength()],
      [2, () => this.#listCount()],
      [2, () => this.#u64Range()],
      [0.4, () => this.#oversized()],
      [12, () => this.#tokenRequest()],
      [8, () => this.#replay()],
      [3, () => this.#probe()],
    ];
    const total = weights.reduce((sum, [w]) => sum + w, 0);
    const pool: FuzzDatagram[] = [];
    while (pool.length < size) {
      let pick = this.#r.next() * total;
      for (const [weight, make] of weights) {
        pick -= weight;
        if (pick < 0) {
          pool.push(make());
          break;
        }
      }
    }
    return pool;
  }

  // ------------------------------------------------------------ primitives

  #int(n: number): number {
    return Math.floor(this.#r.next() * n);
  }

  #pick<T>(items: readonly T[]): T {
    return items[this.#int(items.length)];
  }

  #chance(p: number): boolean {
    return this.#r.next() < p;
  }

  #bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const word = (this.#r.next() * 0x1_0000_0000) >>> 0;
      out[i] = word;
      if (i + 1 < n) out[i + 1] = word >>> 8;
      if (i + 2 < n) out[i + 2] = word >>> 16;
      if (i + 3 < n) out[i + 3] = word >>> 24;
    }
    return out;
  }

  #text(maxBytes: number): string {
    const cap = Math.min(maxBytes, this.#chance(0.9) ? 40 : 400);
    const target = this.#int(cap + 1);
    let out = "";
    let size = 0;
    while (size < target) {
      const piece = this.#int(TEXT_PIECES.length);
      if (size + PIECE_BYTES[piece] > maxBytes) break;
      out += TEXT_PIECES[piece];
      size += PIECE_BYTES[piece];
    }
    return out;
  }

  #token(): Uint8Array {
    const { liveTokens, staleTokens } = this.#ctx;
    const roll = this.#r.next();
    if (roll < 0.1 && liveTokens.length > 0) return this.#pick(liveTokens);
    if (roll < 0.3 && staleTokens.length > 0) return this.#pick(staleTokens);
    if (roll < 0.45 && liveTokens.length > 0) {
      const forged = this.#pick(liveTokens).slice();
      forged[this.#int(16)] ^= 1 << this.#int(8);
      return forged;
    }
    if (roll < 0.6) return this.#bytes(this.#pick([0, 1, 8, 15]));
    return this.#bytes(16);
  }

  #name(field: string, type: MessageType): string {
    const { names } = this.#ctx;
    if (type === "register") {
      // Few new registrations: mostly taken or invalid names.
      if (this.#chance(0.05) && this.#newNames < 200) {
        return `${this.#ctx.newNamePrefix} n${this.#newNames++}`;
      }
      if (this.#chance(0.4) && names.length > 0) return this.#pick(names);
      const name = this.#text(128);
      return nameProblem(name) === undefined ? `${name}/` : name;
    }
    if (field === "name" && names.length > 0 && this.#chance(0.4)) return this.#pick(names);
    return this.#text(128);
  }

  #value(type: MessageType, field: string, kind: FieldKind): unknown {
    switch (kind.kind) {
      case "u8":
        return this.#chance(0.5) ? this.#pick(INTERESTING_U8) : this.#int(256);
      case "u16":
        return this.#chance(0.5) ? this.#pick(INTERESTING_U16) : this.#int(65536);
      case "u32":
        return this.#chance(0.5) ? this.#pick(INTERESTING_U32) : this.#int(0x1_0000_0000);
      case "u64":
        return this.#chance(0.5) ? this.#pick(INTERESTING_U64) : this.#int(2 ** 53);
      case "id64":
        return [...this.#bytes(8)].map((b) => b.toString(16).padStart(2, "0")).join("");
      case "text":
        if (field === "name" || field === "after") return this.#name(field, type);
        return this.#text(Math.min(kind.max, 600));
      case "bytes":
        if (field === "token") return this.#token();
        if (kind.max === 16 || kind.max === 32) {
          return this.#bytes(this.#chance(0.8) ? kind.max : this.#int(kind.max + 1));
        }
        return this.#bytes(this.#int(Math.min(kind.max, 600) + 1));
      case "list": {
        const count = this.#int(Math.min(kind.max, 5) + 1);
        return Array.from({ length: count }, () => {
          const item: Record<string, unknown> = {};
          for (const [name, k] of kind.of) item[name] = this.#value(type, name, k);
          return item;
        });
      }
    }
  }

  /** A valid encoded message of a type, within the datagram limit. */
  #message(type: MessageType): Uint8Array {
    for (let attempt = 0;; attempt++) {
      const message: Record<string, unknown> = { type };
      for (const [field, kind] of SCHEMAS[type].fields) {
        message[field] = this.#value(type, field, kind);
      }
      const bytes = encodeMessage(message as unknown as Message);
      if (bytes.length <= MAX_DATAGRAM_BYTES || attempt > 20) return bytes;
    }
  }

  #anyType(): MessageType {
    return this.#chance(0.7) ? this.#pick(REQUESTS) : this.#pick(NOT_REQUESTS);
  }

  #entry(bytes: Uint8Array, category: FuzzCategory): FuzzDatagram {
    const guarded = bytes.length >= 4 && GUARDED_CODES.has(bytes[3]);
    return { bytes, category, vary: guarded ? 1 : 2 };
  }

  // ------------------------------------------------------------ mutations

  /**
   * Applies one to three random mutations to a valid message. Padding is
   * most of the bytes of a `hello`, `register` or `login`: mostly their
   * fields are mutated alone, then padded again (or not, now and then), so
   * that mutations reach the fields and the handlers behind them, not only
   * the check of the padding.
   */
  #mutate(source: Uint8Array): Uint8Array {
    const last = PADDED_CODES.has(source[3]) ? layout(source).at(-1) : undefined;
    if (last === undefined || this.#chance(0.2)) return this.#mutateBytes(source);
    const fields = this.#mutateBytes(source.subarray(0, last.at + last.size));
    if (fields.length >= MIN_PADDED_REQUEST_BYTES || this.#chance(0.25)) return fields;
    return concat(fields, new Uint8Array(MIN_PADDED_REQUEST_BYTES - fields.length));
  }

  #mutateBytes(source: Uint8Array): Uint8Array {
    let bytes: Uint8Array = source.slice();
    const rounds = 1 + this.#int(3);
    for (let i = 0; i < rounds; i++) {
      switch (this.#int(9)) {
        case 0: // bit flips anywhere past the magic
          for (let n = 1 + this.#int(4); n > 0; n--) {
            bytes[2 + this.#int(Math.max(1, bytes.length - 2))] ^= 1 << this.#int(8);
          }
          break;
        case 1: // an interesting byte value
          bytes[this.#int(bytes.length)] = this.#pick(INTERESTING_U8);
          break;
        case 2: // truncation
          bytes = bytes.subarray(0, this.#int(bytes.length));
          break;
        case 3: // trailing bytes
          bytes = concat(bytes, this.#bytes(1 + this.#int(16)));
          break;
        case 4: { // a length prefix or count broken
          const spans = layout(bytes).filter((s) => s.max !== undefined);
          if (spans.length > 0) bytes = this.#breakLength(bytes, this.#pick(spans));
          break;
        }
        case 5: // another type's code over the same fields
          bytes[3] = this.#pick(ALL_TYPES.map((t) => SCHEMAS[t].code));
          break;
        case 6: // two messages in one datagram
          bytes = concat(bytes, this.#message(this.#anyType()));
          break;
        case 7: { // a byte removed or inserted inside
          const at = this.#int(bytes.length + 1);
          bytes = this.#chance(0.5)
            ? concat(bytes.subarray(0, at), bytes.subarray(at + 1))
            : concat(concat(bytes.subarray(0, at), this.#bytes(1)), bytes.subarray(at));
          break;
        }
        default: { // a field overwritten with random bytes
          const spans = layout(bytes);
          if (spans.length === 0) break;
          const span = this.#pick(spans);
          bytes.set(this.#bytes(span.size).subarray(0, bytes.length - span.at), span.at);
        }
      }
      if (bytes.length === 0) break;
    }
    return bytes;
  }

  #breakLength(source: Uint8Array, span: FieldSpan): Uint8Array {
    const bytes = source.slice();
    const current = (bytes[span.at] << 8) | bytes[span.at + 1];
    const value = this.#pick([
      0xffff,
      (span.max ?? 0) + 1,
      current + 1,
      Math.max(0, current - 1),
      current + 1000,
      0,
    ]) & 0xffff;
    bytes[span.at] = value >> 8;
    bytes[span.at + 1] = value & 0xff;
    return bytes;
  }

  // ------------------------------------------------------------ categories

  #garbage(): FuzzDatagram {
    const length = this.#chance(0.8) ? this.#int(64) : this.#int(MAX_DATAGRAM_BYTES + 1);
    return this.#entry(this.#bytes(length), "garbage");
  }

  #magicGarbage(): FuzzDatagram {
    const body = this.#bytes(this.#int(200));
    const head = Uint8Array.of(
      0x53,
      0x57,
      2,
      this.#chance(0.7) ? this.#pick([...KNOWN_CODES]) : this.#int(256),
    );
    return this.#entry(
      concat(head, body).subarray(0, 2 + this.#int(body.length + 3)),
      "magic_garbage",
    );
  }

  #badHeader(): FuzzDatagram {
    const bytes = this.#message(this.#anyType()).slice();
    switch (this.#int(4)) {
      case 0:
        bytes[this.#int(2)] ^= 1 + this.#int(255);
        break;
      case 1:
        bytes[2] = this.#pick([0, 1, 3, 4, 0x7f, 0xff]);
        break;
      case 2: {
        let code = this.#int(256);
        while (KNOWN_CODES.has(code)) code = this.#int(256);
        bytes[3] = code;
        break;
      }
      default:
        return this.#entry(bytes.subarray(0, this.#int(4)), "bad_header");
    }
    return this.#entry(bytes, "bad_header");
  }

  #valid(): FuzzDatagram {
    return this.#entry(this.#message(this.#anyType()), "valid");
  }

  #mutated(): FuzzDatagram {
    return this.#entry(this.#mutate(this.#message(this.#anyType())), "mutated");
  }

  #badUtf8(): FuzzDatagram {
    for (let attempt = 0; attempt < 20; attempt++) {
      const bytes = this.#message(this.#anyType()).slice();
      const texts = layout(bytes).filter((s) => s.kind === "text" && s.size > 2);
      if (texts.length === 0) continue;
      const span = this.#pick(texts);
      const bad = this.#pick(BAD_UTF8);
      const room = span.size - 2;
      const at = span.at + 2 + this.#int(room);
      const seq = bad.slice(0, span.at + span.size - at);
      bytes.set(seq, at);
      return this.#entry(bytes, "bad_utf8");
    }
    return this.#mutated();
  }

  #hugeLength(): FuzzDatagram {
    for (let attempt = 0; attempt < 20; attempt++) {
      const bytes = this.#message(this.#anyType());
      const spans = layout(bytes).filter((s) => s.kind === "text" || s.kind === "bytes");
      if (spans.length === 0) continue;
      return this.#entry(this.#breakLength(bytes, this.#pick(spans)), "huge_length");
    }
    return this.#mutated();
  }

  #listCount(): FuzzDatagram {
    const type = this.#pick(["list_page", "file_list", "peer_ack"] as const);
    const bytes = this.#message(type);
    const span = layout(bytes).find((s) => s.kind === "list")!;
    return this.#entry(this.#breakLength(bytes, span), "list_count");
  }

  #u64Range(): FuzzDatagram {
    const type = this.#pick(
      ["upload", "upload_ok", "lookup_ok", "download_ok", "presence"] as const,
    );
    const bytes = this.#message(type).slice();
    const span = this.#pick(layout(bytes).filter((s) => s.kind === "u64"));
    bytes[span.at] = this.#pick([0xff, 0x80, 0x00]);
    bytes[span.at + 1] = this.#pick([0x20, 0xff, 0x1f]);
    return this.#entry(bytes, "u64_range");
  }

  #oversized(): FuzzDatagram {
    const size = this.#pick([1201, 1500, 4096, 9000, 16384, 32768, 65507]);
    const head = this.#message(this.#anyType());
    return this.#entry(concat(head, this.#bytes(Math.max(0, size - head.length))), "oversized");
  }

  #tokenRequest(): FuzzDatagram {
    const type = this.#pick(
      [
        "heartbeat",
        "list",
        "lookup",
        "watch",
        "logout",
        "deregister",
        "delete",
        "files",
        "download",
        "upload",
        "text",
        "presence_ack",
      ] as const,
    );
    return this.#entry(this.#message(type), "token");
  }

  #replay(): FuzzDatagram {
    const { captured } = this.#ctx;
    if (captured.length === 0) return this.#mutated();
    const real = this.#pick(captured);
    if (this.#chance(0.3)) return { bytes: real, category: "replay", vary: 0 };
    return this.#entry(this.#mutate(real), "replay");
  }

  #probe(): FuzzDatagram {
    return { bytes: this.#message("hello"), category: "probe", vary: 1 };
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** A fast xorshift generator for the per-send variations (not for anything else). */
export class FastRandom {
  #state: number;

  /** @param seed any integer but 0 */
  constructor(seed: number) {
    this.#state = (seed >>> 0) || 0x9e3779b9;
  }

  /** @returns 32 random bits as an unsigned integer */
  u32(): number {
    let x = this.#state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return this.#state = x >>> 0;
  }

  /**
   * @param n the bound
   * @returns an integer in 0..n-1
   */
  below(n: number): number {
    return this.u32() % n;
  }
}

/**
 * Varies a pool entry for one send, cheaply: fresh request and client ids
 * (client ids drawn from a fixed set, so that the server's replay cache fills
 * to its limits), a flipped byte or two, or a truncation. Entries marked
 * `vary: 0` go as they are; `vary: 1` only get fresh ids.
 *
 * @param entry the pool entry
 * @param random the per-send generator
 * @param clientIds client ids to draw from, 8 bytes each, back to back
 * @returns the bytes to send (the entry's own array when unchanged)
 */
export function variantForSend(
  entry: FuzzDatagram,
  random: FastRandom,
  clientIds: Uint8Array,
): Uint8Array {
  const source = entry.bytes;
  if (entry.vary === 0 || source.length < 16) return source;
  const roll = random.below(100);
  const isRequest = REQUEST_CODES.has(source[3]) && source[0] === 0x53;
  if (isRequest && (entry.vary === 1 || roll < 45)) {
    const bytes = source.slice();
    const reqId = random.u32();
    bytes[4] = reqId >>> 24;
    bytes[5] = reqId >>> 16;
    bytes[6] = reqId >>> 8;
    bytes[7] = reqId;
    const id = random.below(clientIds.length / 8) * 8;
    bytes.set(clientIds.subarray(id, id + 8), 8);
    return bytes;
  }
  if (entry.vary === 1) return source;
  if (roll < 70) {
    const bytes = source.slice();
    bytes[4 + random.below(bytes.length - 4)] ^= 1 << random.below(8);
    if (roll < 55) bytes[4 + random.below(bytes.length - 4)] ^= 1 << random.below(8);
    return bytes;
  }
  if (roll < 78) return source.subarray(0, random.below(source.length));
  return source;
}
