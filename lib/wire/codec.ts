/**
 * Encodes and decodes Switchboard messages. Every message starts with a
 * four-byte header: the magic `"SW"` (0x53 0x57), the protocol version and
 * the message type code; the fields follow in the order of
 * {@linkcode MESSAGE_SCHEMAS}, big-endian. See docs/PROTOCOL.md.
 *
 * @module
 */
import { type FieldKind, type Message, MESSAGE_SCHEMAS, type MessageType } from "./messages.ts";
import { ProtocolError } from "./protocol_error.ts";
import { allocateBytes } from "../byte_pool.ts";
import { HEX_OF_BYTE } from "../hex.ts";

/** First two bytes of every datagram and frame: ASCII "SW". */
export const MAGIC = [0x53, 0x57] as const;

/** The protocol version this build speaks. */
export const PROTOCOL_VERSION = 3;

/** Size of the header that starts every message. */
export const HEADER_BYTES = 4;

type Schema = {
  code: number;
  fields: readonly (readonly [string, FieldKind])[];
  /** Padded with zero bytes to {@linkcode MIN_PADDED_REQUEST_BYTES}. */
  padded?: true;
};

const SCHEMAS = MESSAGE_SCHEMAS as Record<MessageType, Schema>;
const TYPES_BY_CODE = new Map<number, MessageType>(
  (Object.keys(SCHEMAS) as MessageType[]).map((type) => [SCHEMAS[type].code, type]),
);

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const ID64_PATTERN = /^[0-9a-f]{16}$/;

/**
 * The id64 field last encoded or decoded, both ways: a peer session's
 * datagrams all carry the same one (twice, sealed and inside), so its
 * digits are checked and converted once, and decoding hands out the same
 * string each time (a map keyed by it then finds its hash already made).
 * It starts as a valid pair, so a match is always a checked value.
 */
const lastId64 = { hex: "0000000000000000", bytes: new Uint8Array(8) };

/** Options for {@linkcode encodeMessage}. */
export interface EncodeOptions {
  /** Refuse to produce more than this many bytes (a RangeError). */
  maxBytes?: number;
}

/**
 * Encodes a message to bytes. A `padded` request (`hello`, `register`,
 * `login`) is followed by zero bytes up to {@linkcode MIN_PADDED_REQUEST_BYTES}.
 *
 * @param message the message; its fields must satisfy their bounds
 * @param options an optional size limit
 * @returns the encoded bytes, header (and padding) included
 * @throws {RangeError} if a field is out of range or the result exceeds `maxBytes`
 *
 * @example
 * ```ts
 * const bytes = encodeMessage({ type: "deregister_ok", reqId: 7 });
 * ```
 */
export function encodeMessage(message: Message, options: EncodeOptions = {}): Uint8Array {
  const bytes = encodeUnpadded(message, options);
  if (SCHEMAS[message.type].padded !== true || bytes.length >= MIN_PADDED_REQUEST_BYTES) {
    return bytes;
  }
  if (options.maxBytes !== undefined && MIN_PADDED_REQUEST_BYTES > options.maxBytes) {
    throw new RangeError(
      `Cannot encode "${message.type}" in ${options.maxBytes} bytes: ` +
        `padded, it needs ${MIN_PADDED_REQUEST_BYTES}`,
    );
  }
  const padded = new Uint8Array(MIN_PADDED_REQUEST_BYTES);
  padded.set(bytes);
  return padded;
}

/** Encodes a message's header and fields, without padding. */
function encodeUnpadded(message: Message, options: EncodeOptions): Uint8Array {
  const schema = Object.hasOwn(SCHEMAS, message.type) ? SCHEMAS[message.type] : undefined;
  if (schema === undefined) throw new RangeError(`Cannot encode unknown type "${message.type}"`);
  const record = message as unknown as Record<string, unknown>;
  // Two passes over the fields: the first checks every value and sums the
  // size (keeping the UTF-8 of text fields), the second writes into one
  // array. Peer data goes through here for every datagram, so neither pass
  // makes an object: the texts go in one reused list (encoding never
  // re-enters itself), and numbers are written byte by byte, not through a
  // DataView.
  texts.length = 0;
  const size = HEADER_BYTES + measureFields(schema.fields, record);
  if (options.maxBytes !== undefined && size > options.maxBytes) {
    texts.length = 0;
    throw new RangeError(
      `Cannot encode "${message.type}" in ${options.maxBytes} bytes: it needs ${size}`,
    );
  }
  const out = allocateBytes(size);
  out[0] = MAGIC[0];
  out[1] = MAGIC[1];
  out[2] = PROTOCOL_VERSION;
  out[3] = schema.code;
  nextText = 0;
  writeFields(schema.fields, record, out, HEADER_BYTES);
  texts.length = 0;
  return out;
}

type Fields = readonly (readonly [string, FieldKind])[];

/** The UTF-8 of the text fields of the message being encoded, in order, from `measureFields`. */
const texts: Uint8Array[] = [];
/** The next of `texts` for `writeFields`. */
let nextText = 0;

/** Checks the values of `fields` in `record` and returns their encoded size. */
function measureFields(fields: Fields, record: Record<string, unknown>): number {
  let size = 0;
  for (let f = 0; f < fields.length; f++) {
    const field = fields[f][0], kind = fields[f][1];
    const value = record[field];
    switch (kind.kind) {
      case "u8":
        checkInt(field, value, 0xff);
        size += 1;
        break;
      case "u16":
        checkInt(field, value, 0xffff);
        size += 2;
        break;
      case "u32":
        checkInt(field, value, 0xffffffff);
        size += 4;
        break;
      case "u64":
        checkInt(field, value, Number.MAX_SAFE_INTEGER);
        size += 8;
        break;
      case "id64":
        if (value !== lastId64.hex && (typeof value !== "string" || !ID64_PATTERN.test(value))) {
          throw new RangeError(`Cannot encode field "${field}": not 16 lowercase hex digits`);
        }
        size += 8;
        break;
      case "text": {
        if (typeof value !== "string") {
          throw new RangeError(`Cannot encode field "${field}": not a string`);
        }
        if (!value.isWellFormed()) {
          throw new RangeError(`Cannot encode field "${field}": it holds a lone surrogate`);
        }
        const body = encoder.encode(value);
        checkLength(field, body.length, kind.max);
        texts.push(body);
        size += 2 + body.length;
        break;
      }
      case "bytes":
        if (!(value instanceof Uint8Array)) {
          throw new RangeError(`Cannot encode field "${field}": not a Uint8Array`);
        }
        checkLength(field, value.length, kind.max);
        size += 2 + value.length;
        break;
      case "list": {
        if (!Array.isArray(value)) {
          throw new RangeError(`Cannot encode field "${field}": not an array`);
        }
        if (value.length > kind.max) {
          throw new RangeError(
            `Cannot encode field "${field}": ${value.length} items exceeds ${kind.max}`,
          );
        }
        size += 2;
        for (const item of value) {
          if (typeof item !== "object" || item === null) {
            throw new RangeError(`Cannot encode field "${field}": an item is not an object`);
          }
          size += measureFields(kind.of, item as Record<string, unknown>);
        }
        break;
      }
    }
  }
  return size;
}

/** Writes fields that `measureFields` checked into `out` from `offset`; returns where they end. */
function writeFields(
  fields: Fields,
  record: Record<string, unknown>,
  out: Uint8Array,
  start: number,
): number {
  let offset = start;
  for (let f = 0; f < fields.length; f++) {
    const field = fields[f][0], kind = fields[f][1];
    const value = record[field];
    switch (kind.kind) {
      case "u8":
        out[offset++] = value as number;
        break;
      case "u16":
        offset = writeU16(out, offset, value as number);
        break;
      case "u32":
        offset = writeU32(out, offset, value as number);
        break;
      case "u64": {
        const n = value as number;
        offset = writeU32(out, offset, Math.floor(n / 0x1_0000_0000));
        offset = writeU32(out, offset, n >>> 0);
        break;
      }
      case "id64": {
        const hex = value as string;
        if (hex !== lastId64.hex) {
          for (let i = 0; i < 8; i++) {
            lastId64.bytes[i] = (hexDigit(hex.charCodeAt(2 * i)) << 4) |
              hexDigit(hex.charCodeAt(2 * i + 1));
          }
          lastId64.hex = hex;
        }
        out.set(lastId64.bytes, offset);
        offset += 8;
        break;
      }
      case "text":
      case "bytes": {
        const body = kind.kind === "text" ? texts[nextText++] : value as Uint8Array;
        offset = writeU16(out, offset, body.length);
        out.set(body, offset);
        offset += body.length;
        break;
      }
      case "list": {
        const items = value as Record<string, unknown>[];
        offset = writeU16(out, offset, items.length);
        for (const item of items) offset = writeFields(kind.of, item, out, offset);
        break;
      }
    }
  }
  return offset;
}

function writeU16(out: Uint8Array, offset: number, value: number): number {
  out[offset] = value >>> 8;
  out[offset + 1] = value;
  return offset + 2;
}

function writeU32(out: Uint8Array, offset: number, value: number): number {
  out[offset] = value >>> 24;
  out[offset + 1] = value >>> 16;
  out[offset + 2] = value >>> 8;
  out[offset + 3] = value;
  return offset + 4;
}

/** The value of one lowercase hex digit (checked by ID64_PATTERN). */
function hexDigit(code: number): number {
  return code <= 0x39 ? code - 0x30 : code - 0x57;
}

function checkLength(field: string, length: number, max: number): void {
  if (length > max) {
    throw new RangeError(`Cannot encode field "${field}": ${length} bytes exceeds ${max}`);
  }
}

function checkInt(field: string, value: unknown, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`Cannot encode field "${field}": ${String(value)} is not in 0..${max}`);
  }
  return value;
}

/**
 * Decodes one message. It throws nothing but {@linkcode ProtocolError},
 * whatever the input.
 *
 * @param bytes a whole datagram or frame body
 * @returns the decoded message
 * @throws {ProtocolError} if the bytes are not exactly one valid message
 *
 * @example
 * ```ts
 * const message = decodeMessage(encodeMessage({ type: "text_ok", reqId: 1 }));
 * ```
 */
export function decodeMessage(bytes: Uint8Array): Message {
  if (bytes.length < HEADER_BYTES) {
    throw new ProtocolError("truncated", `Message of ${bytes.length} bytes has no header`);
  }
  if (bytes[0] !== MAGIC[0] || bytes[1] !== MAGIC[1]) {
    throw new ProtocolError("bad_magic", "Message does not start with the Switchboard magic");
  }
  if (bytes[2] !== PROTOCOL_VERSION) {
    throw new ProtocolError(
      "bad_version",
      `Message has protocol version ${bytes[2]}; this build speaks ${PROTOCOL_VERSION}`,
    );
  }
  const type = TYPES_BY_CODE.get(bytes[3]);
  if (type === undefined) {
    throw new ProtocolError("unknown_type", `Message type ${bytes[3]} is unknown`);
  }
  const result: Record<string, unknown> = { type };
  const offset = decodeFields(SCHEMAS[type].fields, bytes, type, HEADER_BYTES, result);
  if (offset !== bytes.length && !(SCHEMAS[type].padded === true && allZero(bytes, offset))) {
    throw new ProtocolError(
      "trailing_bytes",
      `Message "${type}" has ${bytes.length - offset} bytes after its last field`,
    );
  }
  return result as unknown as Message;
}

/** Reads the fields of a message of `type` from `start`, into `result`; returns where they end. */
function decodeFields(
  fields: Fields,
  bytes: Uint8Array,
  type: string,
  start: number,
  result: Record<string, unknown>,
): number {
  // Numbers are read byte by byte, not through a DataView: no object per
  // message (peer data comes through here for every datagram).
  let offset = start;
  for (let f = 0; f < fields.length; f++) {
    const field = fields[f][0], kind = fields[f][1];
    const need = fixedSize(kind);
    if (offset + need > bytes.length) {
      throw new ProtocolError("truncated", `Message "${type}" ends inside field "${field}"`);
    }
    switch (kind.kind) {
      case "u8":
        result[field] = bytes[offset];
        break;
      case "u16":
        result[field] = readU16(bytes, offset);
        break;
      case "u32":
        result[field] = readU32(bytes, offset);
        break;
      case "u64": {
        const high = readU32(bytes, offset);
        // Above 2^53 - 1, Number.MAX_SAFE_INTEGER.
        if (high > 0x1f_ffff) {
          throw new ProtocolError("too_long", `Field "${field}" of "${type}" is out of range`);
        }
        result[field] = high * 0x1_0000_0000 + readU32(bytes, offset + 4);
        break;
      }
      case "id64": {
        const id = lastId64.bytes;
        let same = true;
        for (let i = 0; i < 8 && same; i++) same = bytes[offset + i] === id[i];
        if (!same) {
          let hex = "";
          for (let i = 0; i < 8; i++) {
            id[i] = bytes[offset + i];
            hex += HEX_OF_BYTE[id[i]];
          }
          lastId64.hex = hex;
        }
        result[field] = lastId64.hex;
        break;
      }
      case "list": {
        const count = readU16(bytes, offset);
        if (count > kind.max) {
          throw new ProtocolError(
            "too_long",
            `Field "${field}" of "${type}" has ${count} items; the limit is ${kind.max}`,
          );
        }
        const items: Record<string, unknown>[] = [];
        offset += 2;
        for (let i = 0; i < count; i++) {
          const item: Record<string, unknown> = {};
          offset = decodeFields(kind.of, bytes, type, offset, item);
          items.push(item);
        }
        result[field] = items;
        continue;
      }
      case "text":
      case "bytes": {
        const length = readU16(bytes, offset);
        if (length > kind.max) {
          throw new ProtocolError(
            "too_long",
            `Field "${field}" of "${type}" is ${length} bytes; the limit is ${kind.max}`,
          );
        }
        const begin = offset + 2;
        if (begin + length > bytes.length) {
          throw new ProtocolError("truncated", `Message "${type}" ends inside field "${field}"`);
        }
        const body = bytes.subarray(begin, begin + length);
        if (kind.kind === "bytes") {
          result[field] = kind.view ? body : body.slice();
        } else {
          try {
            result[field] = strictDecoder.decode(body);
          } catch {
            throw new ProtocolError("bad_utf8", `Field "${field}" of "${type}" is not UTF-8`);
          }
        }
        offset = begin + length;
        continue;
      }
    }
    offset += need;
  }
  return offset;
}

function readU16(bytes: Uint8Array, offset: number): number {
  return (bytes[offset] << 8) | bytes[offset + 1];
}

function readU32(bytes: Uint8Array, offset: number): number {
  return ((bytes[offset] << 24) | (bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) |
    bytes[offset + 3]) >>> 0;
}

function fixedSize(kind: FieldKind): number {
  switch (kind.kind) {
    case "u8":
      return 1;
    case "u16":
    case "text":
    case "bytes":
    case "list":
      return 2;
    case "u32":
      return 4;
    case "u64":
    case "id64":
      return 8;
  }
}

/**
 * The most bytes a message of a type can take: each `text` and `bytes` field
 * at its maximum length and each `list` at its most items.
 *
 * @param type a message type
 * @returns its largest encoded size, header included
 */
export function maxMessageBytes(type: MessageType): number {
  return HEADER_BYTES + maxFieldsBytes(SCHEMAS[type].fields);
}

function maxFieldsBytes(fields: readonly (readonly [string, FieldKind])[]): number {
  let size = 0;
  for (const [, kind] of fields) {
    if (kind.kind === "list") size += 2 + kind.max * maxFieldsBytes(kind.of);
    else if (kind.kind === "text" || kind.kind === "bytes") size += 2 + kind.max;
    else size += fixedSize(kind);
  }
  return size;
}

/**
 * The size to which the encoder pads `hello`, `register` and `login` with
 * zero bytes: the largest reply any of them can get. That is an `error` with
 * the longest message (4 + 4 + 2 + 2 + 300 = 312 bytes); `hello_ok`,
 * `register_ok` and `login_ok` are smaller at their largest. So over UDP the
 * server can answer these requests, which come before a session and so from
 * an unproven address, without ever sending more than it received (as QUIC
 * pads a client's Initial packets, RFC 9000 section 8.1).
 */
export const MIN_PADDED_REQUEST_BYTES: number = Math.max(
  ...(["error", "hello_ok", "register_ok", "login_ok", "reflect_ok"] as const).map(
    maxMessageBytes,
  ),
);

/** True if every byte of `bytes` from `start` on is zero. */
function allZero(bytes: Uint8Array, start: number): boolean {
  for (let i = start; i < bytes.length; i++) {
    if (bytes[i] !== 0) return false;
  }
  return true;
}
