/**
 * What a peer session's reliable channel carries: chat text and the
 * messages of file transfers, one per channel message, tagged by their
 * first byte.
 *
 * @module
 */
import { ProtocolError } from "./protocol_error.ts";

/** Bytes of file data in one `file_chunk` (30 channel segments with its header). */
export const FILE_CHUNK_BYTES = 32 * 1024;

/** Longest reason of a decline or cancel, in bytes of UTF-8. */
export const MAX_REASON_BYTES = 200;

/** Longest file name in an offer, in bytes of UTF-8 (100 characters of up to 4 bytes). */
export const MAX_OFFER_NAME_BYTES = 400;

/** One channel message between peers. */
export type PeerPayload =
  /** A chat message. */
  | { readonly kind: "text"; readonly text: string }
  /** The sender offers a file; `transfer` is its id, chosen by the sender, unique in the session. */
  | {
    readonly kind: "file_offer";
    readonly transfer: number;
    readonly size: number;
    readonly sha256: Uint8Array;
    readonly name: string;
  }
  /** The receiver takes the file, from `offset` on (above 0 to resume a partial file). */
  | { readonly kind: "file_accept"; readonly transfer: number; readonly offset: number }
  /** The receiver refuses the file. */
  | { readonly kind: "file_decline"; readonly transfer: number; readonly reason: string }
  /** File data at `offset`. */
  | {
    readonly kind: "file_chunk";
    readonly transfer: number;
    readonly offset: number;
    readonly data: Uint8Array;
  }
  /** Either side stops the transfer; `bySender` says which (transfer ids are the sender's). */
  | {
    readonly kind: "file_cancel";
    readonly transfer: number;
    readonly bySender: boolean;
    readonly reason: string;
  }
  /** The receiver checked the whole file: `ok`, or why not. */
  | {
    readonly kind: "file_done";
    readonly transfer: number;
    readonly ok: boolean;
    readonly reason: string;
  };

const TAGS = {
  text: 1,
  file_offer: 2,
  file_accept: 3,
  file_decline: 4,
  file_chunk: 5,
  file_cancel: 6,
  file_done: 7,
} as const satisfies Record<PeerPayload["kind"], number>;

const KINDS = Object.fromEntries(Object.entries(TAGS).map(([k, v]) => [v, k])) as Record<
  number,
  PeerPayload["kind"]
>;

const encoder = new TextEncoder();
// ignoreBOM: a leading U+FEFF is part of the text, not a byte order mark to drop.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Encodes a peer payload: a tag byte, then big-endian fields (transfer u32,
 * sizes and offsets u64, the SHA-256 as 32 bytes), text last as UTF-8.
 *
 * @param payload the payload
 * @returns its bytes, for `ReliableChannel.send`
 *
 * @example
 * ```ts
 * encodePeerPayload({ kind: "file_accept", transfer: 1, offset: 0 }); // 13 bytes, tag 3
 * ```
 */
export function encodePeerPayload(payload: PeerPayload): Uint8Array {
  const head = (extra: number, tail: Uint8Array = new Uint8Array()) => {
    const bytes = new Uint8Array(1 + extra + tail.length);
    bytes[0] = TAGS[payload.kind];
    bytes.set(tail, 1 + extra);
    return { bytes, view: new DataView(bytes.buffer) };
  };
  switch (payload.kind) {
    case "text":
      return head(0, encoder.encode(payload.text)).bytes;
    case "file_offer": {
      const { bytes, view } = head(4 + 8 + 32, encoder.encode(payload.name));
      view.setUint32(1, payload.transfer);
      view.setBigUint64(5, BigInt(payload.size));
      bytes.set(payload.sha256, 13);
      return bytes;
    }
    case "file_accept": {
      const { bytes, view } = head(12);
      view.setUint32(1, payload.transfer);
      view.setBigUint64(5, BigInt(payload.offset));
      return bytes;
    }
    case "file_chunk": {
      const { bytes, view } = head(12, payload.data);
      view.setUint32(1, payload.transfer);
      view.setBigUint64(5, BigInt(payload.offset));
      return bytes;
    }
    case "file_decline": {
      const { bytes, view } = head(4, encoder.encode(payload.reason));
      view.setUint32(1, payload.transfer);
      return bytes;
    }
    case "file_cancel":
    case "file_done": {
      const { bytes, view } = head(5, encoder.encode(payload.reason));
      view.setUint32(1, payload.transfer);
      bytes[5] = (payload.kind === "file_done" ? payload.ok : payload.bySender) ? 1 : 0;
      return bytes;
    }
  }
}

/**
 * Decodes a peer payload.
 *
 * @param bytes one channel message
 * @returns the payload
 * @throws {ProtocolError} for an unknown tag, a short message, bad UTF-8 or a value out of range
 */
export function decodePeerPayload(bytes: Uint8Array): PeerPayload {
  if (bytes.length === 0) throw new ProtocolError("truncated", "A peer payload is empty");
  const kind = KINDS[bytes[0]];
  if (kind === undefined) {
    throw new ProtocolError("unknown_type", `Unknown peer payload tag ${bytes[0]}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const need = (n: number) => {
    if (bytes.length < 1 + n) {
      throw new ProtocolError("truncated", `A ${kind} needs ${1 + n} bytes, not ${bytes.length}`);
    }
  };
  const text = (from: number, max: number) => {
    if (bytes.length - from > max) {
      throw new ProtocolError("too_long", `The text of a ${kind} is over ${max} bytes`);
    }
    try {
      return decoder.decode(bytes.subarray(from));
    } catch {
      throw new ProtocolError("bad_utf8", `The text of a ${kind} is not valid UTF-8`);
    }
  };
  const u64 = (at: number) => {
    const value = view.getBigUint64(at);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new ProtocolError("bad_value", `A ${kind} carries a size or offset beyond 2^53`);
    }
    return Number(value);
  };
  switch (kind) {
    case "text":
      return { kind, text: text(1, Infinity) };
    case "file_offer":
      need(44);
      return {
        kind,
        transfer: view.getUint32(1),
        size: u64(5),
        sha256: bytes.slice(13, 45),
        name: text(45, MAX_OFFER_NAME_BYTES),
      };
    case "file_accept":
      need(12);
      if (bytes.length !== 13) {
        throw new ProtocolError("trailing_bytes", "A file_accept is 13 bytes");
      }
      return { kind, transfer: view.getUint32(1), offset: u64(5) };
    case "file_chunk":
      need(12);
      return { kind, transfer: view.getUint32(1), offset: u64(5), data: bytes.subarray(13) };
    case "file_decline":
      need(4);
      return { kind, transfer: view.getUint32(1), reason: text(5, MAX_REASON_BYTES) };
    case "file_cancel":
    case "file_done": {
      need(5);
      if (bytes[5] > 1) throw new ProtocolError("bad_value", `A ${kind}'s flag byte is 0 or 1`);
      const transfer = view.getUint32(1), flag = bytes[5] === 1;
      const reason = text(6, MAX_REASON_BYTES);
      return kind === "file_done"
        ? { kind, transfer, ok: flag, reason }
        : { kind, transfer, bySender: flag, reason };
    }
  }
}
