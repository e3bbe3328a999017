/**
 * The Switchboard message catalogue: every message type, its numeric code and
 * its fields, in wire order. The codec (`codec.ts`) encodes and decodes from
 * this table, and the TypeScript types below are derived from it, so a new
 * message is one entry here.
 *
 * @module
 */

/** Largest UDP payload Switchboard sends or accepts, in bytes. */
export const MAX_DATAGRAM_BYTES = 1200;

/** Largest TCP frame body (one encoded message), in bytes. */
export const MAX_FRAME_BYTES = 65536;

/** Largest UTF-8 size of a name on the wire (the name rules are stricter). */
export const MAX_NAME_BYTES = 128;

/** Size of a session token, in bytes. */
export const TOKEN_BYTES = 16;

/** Largest UTF-8 size of a custom text message (fits one TCP frame). */
export const MAX_TEXT_BYTES = 60000;

/** Largest UTF-8 size of an error message. */
export const MAX_ERROR_TEXT_BYTES = 300;

/** How one field is laid out on the wire. */
export type FieldKind =
  | { readonly kind: "u8" }
  | { readonly kind: "u16" }
  | { readonly kind: "u32" }
  | { readonly kind: "id64" }
  | { readonly kind: "text"; readonly max: number }
  | { readonly kind: "bytes"; readonly max: number };

const U16 = { kind: "u16" } as const;
const U32 = { kind: "u32" } as const;
const ID64 = { kind: "id64" } as const;
const NAME = { kind: "text", max: MAX_NAME_BYTES } as const;
const TOKEN = { kind: "bytes", max: TOKEN_BYTES } as const;

/**
 * Every message type: its one-byte code and its fields in wire order.
 * `reqId` pairs a reply with its request; `client` is a random per-process id
 * that, with `reqId`, keys the server's replay cache.
 */
export const MESSAGE_SCHEMAS = {
  hello: { code: 1, fields: [["reqId", U32], ["client", ID64]] },
  hello_ok: {
    code: 2,
    fields: [["reqId", U32], ["tcpPort", U16], ["serverVersion", { kind: "text", max: 32 }]],
  },
  register: {
    code: 3,
    fields: [["reqId", U32], ["client", ID64], ["name", NAME], ["udpPort", U16], [
      "tcpPort",
      U16,
    ]],
  },
  register_ok: { code: 4, fields: [["reqId", U32], ["token", TOKEN]] },
  deregister: {
    code: 5,
    fields: [["reqId", U32], ["client", ID64], ["name", NAME], ["token", TOKEN]],
  },
  deregister_ok: { code: 6, fields: [["reqId", U32]] },
  text: {
    code: 7,
    fields: [["reqId", U32], ["client", ID64], ["name", NAME], ["token", TOKEN], ["text", {
      kind: "text",
      max: MAX_TEXT_BYTES,
    }]],
  },
  text_ok: { code: 8, fields: [["reqId", U32]] },
  error: {
    code: 9,
    fields: [["reqId", U32], ["code", U16], ["message", {
      kind: "text",
      max: MAX_ERROR_TEXT_BYTES,
    }]],
  },
} as const satisfies Record<
  string,
  { code: number; fields: readonly (readonly [string, FieldKind])[] }
>;

/** The name of a message type, such as `"register"`. */
export type MessageType = keyof typeof MESSAGE_SCHEMAS;

type ValueOf<K extends FieldKind> = K extends { kind: "text" | "id64" } ? string
  : K extends { kind: "bytes" } ? Uint8Array
  : number;

type FieldsOf<T extends MessageType> = (typeof MESSAGE_SCHEMAS)[T]["fields"];

/** One decoded message of type `T`: `{ type, ...fields }`. */
export type MessageOf<T extends MessageType> = T extends MessageType ?
    & { readonly type: T }
    & { readonly [F in FieldsOf<T>[number] as F[0]]: ValueOf<F[1]> }
  : never;

/** Any decoded Switchboard message. */
export type Message = MessageOf<MessageType>;

/** Messages a client sends to the server; each carries `reqId` and `client`. */
export type Request = MessageOf<"hello" | "register" | "deregister" | "text">;

/** Messages the server sends back; each carries the `reqId` it answers. */
export type Reply = MessageOf<
  "hello_ok" | "register_ok" | "deregister_ok" | "text_ok" | "error"
>;

const REQUEST_TYPES: ReadonlySet<string> = new Set(["hello", "register", "deregister", "text"]);

/**
 * Tells whether a decoded message is a client request.
 *
 * @param message a decoded message
 * @returns true for `hello`, `register`, `deregister` and `text`
 */
export function isRequest(message: Message): message is Request {
  return REQUEST_TYPES.has(message.type);
}
