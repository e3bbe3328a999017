/**
 * The four datagram kinds of the secure layer (protocol version 3, draft;
 * docs/SECURE_CHANNEL.md), after WireGuard's (whitepaper section 5.4):
 * handshake initiation, handshake response, cookie reply, transport data.
 * Over TCP each travels whole in one length-prefixed frame. Integers are
 * big-endian like the rest of Switchboard's wire (WireGuard's are
 * little-endian); the AEAD nonce made from a counter stays Noise's.
 *
 * ```
 * every kind  | "SW" | 0x03 | kind |                                 (4 bytes)
 * initiation  | header | sender u32 | Noise message 1 | mac1 | mac2    (>= 136)
 * response    | header | sender u32 | receiver u32 | Noise message 2 | mac1 | mac2 (>= 92)
 * cookie      | header | receiver u32 | nonce (24) | cookie + tag (32) (= 64)
 * transport   | header | receiver u32 | counter u64 | ciphertext + tag (>= 32)
 * ```
 *
 * @module
 */
import { TAG_LENGTH, XNONCE_LENGTH } from "./chacha20_poly1305.ts";
import { MACS_LENGTH } from "./_macs.ts";
import { CryptoError } from "./crypto_error.ts";

/** The protocol version byte of the secure layer. */
export const SECURE_VERSION = 0x03;
/** The largest encoded datagram or frame body this codec takes (TCP's frame limit). */
export const MAX_SECURE_BYTES = 65_536;

/** Kind codes: the high bit marks the secure layer, apart from the inner message codes (1-47). */
export const SECURE_KIND = {
  initiation: 0x81,
  response: 0x82,
  cookie_reply: 0x83,
  transport: 0x84,
} as const;

/** Bytes before a kind's variable part. */
const HEADER = 4;
/** Smallest Noise IK message 1 (e, encrypted s, empty payload's tag) and message 2. */
const MIN_MESSAGE_1 = 32 + 32 + TAG_LENGTH + TAG_LENGTH;
const MIN_MESSAGE_2 = 32 + TAG_LENGTH;

/** Bytes of a cookie reply datagram: smaller than any handshake message it answers. */
export const COOKIE_REPLY_BYTES = HEADER + 4 + XNONCE_LENGTH + 16 + TAG_LENGTH;
/** Bytes of the smallest initiation (empty payload). */
export const MIN_INITIATION_BYTES = HEADER + 4 + MIN_MESSAGE_1 + MACS_LENGTH;
/** Bytes of the smallest response (empty payload). */
export const MIN_RESPONSE_BYTES = HEADER + 8 + MIN_MESSAGE_2 + MACS_LENGTH;
/** Bytes a transport datagram adds to its plaintext. */
export const TRANSPORT_OVERHEAD = HEADER + 4 + 8 + TAG_LENGTH;

/** Handshake message 1, from the initiator. */
export interface InitiationDatagram {
  readonly kind: "initiation";
  /** The index the initiator picked for this session; replies carry it as `receiver`. */
  readonly sender: number;
  /** The Noise message. */
  readonly handshake: Uint8Array;
}

/** Handshake message 2, from the responder. */
export interface ResponseDatagram {
  readonly kind: "response";
  /** The index the responder picked. */
  readonly sender: number;
  /** The initiator's index. */
  readonly receiver: number;
  /** The Noise message. */
  readonly handshake: Uint8Array;
}

/** A cookie reply, instead of a handshake, under load. */
export interface CookieReplyDatagram {
  readonly kind: "cookie_reply";
  /** The index of the handshake message it answers. */
  readonly receiver: number;
  /** 24 random bytes. */
  readonly nonce: Uint8Array;
  /** The cookie sealed with its tag, 32 bytes. */
  readonly encryptedCookie: Uint8Array;
}

/** An encrypted transport message. */
export interface TransportDatagram {
  readonly kind: "transport";
  /** The receiver's index: which session's keys open it. */
  readonly receiver: number;
  /** The message counter, also its nonce. */
  readonly counter: number;
  /** Ciphertext and tag. */
  readonly ciphertext: Uint8Array;
}

/** Any secure-layer datagram. */
export type SecureDatagram =
  | InitiationDatagram
  | ResponseDatagram
  | CookieReplyDatagram
  | TransportDatagram;

/**
 * Encodes a datagram. Handshake kinds end with 32 zero bytes where
 * `CookieGenerator.addMacs` writes mac1 and mac2.
 *
 * @param datagram what to encode
 * @returns the bytes
 * @throws {RangeError} if a field is out of range
 *
 * @example
 * ```ts
 * const bytes = macs.addMacs(encodeSecureDatagram({ kind: "initiation", sender, handshake }), now);
 * ```
 */
export function encodeSecureDatagram(datagram: SecureDatagram): Uint8Array {
  let body: Uint8Array[];
  switch (datagram.kind) {
    case "initiation":
      body = [u32(datagram.sender), datagram.handshake, new Uint8Array(MACS_LENGTH)];
      break;
    case "response":
      body = [
        u32(datagram.sender),
        u32(datagram.receiver),
        datagram.handshake,
        new Uint8Array(MACS_LENGTH),
      ];
      break;
    case "cookie_reply":
      if (datagram.nonce.length !== XNONCE_LENGTH || datagram.encryptedCookie.length !== 32) {
        throw new RangeError("Cannot encode a cookie reply: nonce or cookie has the wrong length");
      }
      body = [u32(datagram.receiver), datagram.nonce, datagram.encryptedCookie];
      break;
    case "transport":
      body = [u32(datagram.receiver), u64(datagram.counter), datagram.ciphertext];
      break;
  }
  let length = HEADER;
  for (const part of body) length += part.length;
  if (length > MAX_SECURE_BYTES) throw new RangeError(`Cannot encode ${length} bytes`);
  const out = new Uint8Array(length);
  out.set([0x53, 0x57, SECURE_VERSION, SECURE_KIND[datagram.kind]]);
  let at = HEADER;
  for (const part of body) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * Decodes a datagram or frame body. The handshake kinds' MACs are not
 * returned: `CookieChecker.check` reads them from the raw bytes.
 *
 * @param bytes what arrived
 * @returns the datagram; its byte fields are views into `bytes`
 * @throws {CryptoError} `bad_version` (another Switchboard version), `truncated`, or
 *   `malformed` (wrong magic, unknown kind, extra bytes, too large, a counter beyond 2^53 - 1)
 */
export function decodeSecureDatagram(bytes: Uint8Array): SecureDatagram {
  if (bytes.length > MAX_SECURE_BYTES) {
    throw new CryptoError("malformed", `A ${bytes.length}-byte datagram is too large`);
  }
  if (bytes.length < HEADER) throw new CryptoError("truncated", "The header is cut short");
  if (bytes[0] !== 0x53 || bytes[1] !== 0x57) {
    throw new CryptoError("malformed", "Message does not start with the Switchboard magic");
  }
  if (bytes[2] !== SECURE_VERSION) {
    throw new CryptoError("bad_version", `Version ${bytes[2]} is not the secure layer's 3`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const need = (length: number, what: string) => {
    if (bytes.length < length) {
      throw new CryptoError(
        "truncated",
        `A ${bytes.length}-byte ${what} is shorter than ${length}`,
      );
    }
  };
  switch (bytes[3]) {
    case SECURE_KIND.initiation:
      need(MIN_INITIATION_BYTES, "initiation");
      return {
        kind: "initiation",
        sender: view.getUint32(4),
        handshake: bytes.subarray(8, bytes.length - MACS_LENGTH),
      };
    case SECURE_KIND.response:
      need(MIN_RESPONSE_BYTES, "response");
      return {
        kind: "response",
        sender: view.getUint32(4),
        receiver: view.getUint32(8),
        handshake: bytes.subarray(12, bytes.length - MACS_LENGTH),
      };
    case SECURE_KIND.cookie_reply:
      need(COOKIE_REPLY_BYTES, "cookie reply");
      if (bytes.length > COOKIE_REPLY_BYTES) {
        throw new CryptoError("malformed", "A cookie reply is 64 bytes");
      }
      return {
        kind: "cookie_reply",
        receiver: view.getUint32(4),
        nonce: bytes.subarray(8, 8 + XNONCE_LENGTH),
        encryptedCookie: bytes.subarray(8 + XNONCE_LENGTH),
      };
    case SECURE_KIND.transport: {
      need(TRANSPORT_OVERHEAD, "transport message");
      const high = view.getUint32(8), low = view.getUint32(12);
      if (high > 0x1f_ffff) {
        throw new CryptoError("malformed", "A transport counter exceeds 2^53 - 1");
      }
      return {
        kind: "transport",
        receiver: view.getUint32(4),
        counter: high * 0x1_0000_0000 + low,
        ciphertext: bytes.subarray(16),
      };
    }
    default:
      throw new CryptoError("malformed", `Kind ${bytes[3]} is not a secure-layer datagram`);
  }
}

function u32(value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new RangeError(`Cannot encode ${value} as u32`);
  }
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

function u64(value: number): Uint8Array {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`Cannot encode ${value} as u64`);
  }
  const out = new Uint8Array(8);
  const view = new DataView(out.buffer);
  view.setUint32(0, Math.floor(value / 0x1_0000_0000));
  view.setUint32(4, value >>> 0);
  return out;
}
