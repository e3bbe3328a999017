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

/** Largest size of a login secret: an identity key or a password's UTF-8. */
export const MAX_SECRET_BYTES = 256;

/** Largest UTF-8 size of a stored file's name on the wire (the rules are stricter). */
export const MAX_FILE_NAME_BYTES = 400;

/** Largest data in one `file_chunk` frame. */
export const MAX_CHUNK_BYTES = 60000;

/** Largest payload of one `peer_data` datagram (the reliability engine's segment size). */
export const MAX_PEER_PAYLOAD_BYTES = 1100;

/** Size of an X25519 static public key, as `lookup_ok` vouches for it. */
export const PEER_KEY_BYTES = 32;

/** Size of an introduction nonce: 8 bytes of the server's time in ms, 8 random. */
export const INTRODUCTION_NONCE_BYTES = 16;

/** Size of the pre-shared key of one introduction (Noise IKpsk2). */
export const PEER_PSK_BYTES = 32;

/** Largest Noise handshake message in `peer_connect` or `peer_accept`. */
export const MAX_PEER_HANDSHAKE_BYTES = 300;

/**
 * Largest sealed inner message of `peer_sealed`: a full `peer_data` (1,122
 * bytes) and the 16-byte tag, so the datagram stays at 1,160 bytes.
 */
export const MAX_PEER_SEALED_BYTES = 1138;

/** Most selective-acknowledgement ranges in one `peer_ack`. */
export const MAX_SACK_RANGES = 16;

/** Most host candidates a client gives in one `introduce`. */
export const MAX_HOST_CANDIDATES = 8;

/** Size of the key that authenticates `peer_probe` and `peer_probe_ok`, in bytes. */
export const PROBE_KEY_BYTES = 16;

/** Size of the tag of a `peer_probe` or `peer_probe_ok`, in bytes. */
export const PROBE_TAG_BYTES = 16;

/** Largest peer datagram a `relay` carries: a datagram less the relay's 14 bytes. */
export const MAX_RELAY_PAYLOAD_BYTES = MAX_DATAGRAM_BYTES - 14;

/** How one field is laid out on the wire. */
export type FieldKind =
  | { readonly kind: "u8" }
  | { readonly kind: "u16" }
  | { readonly kind: "u32" }
  | { readonly kind: "u64" }
  | { readonly kind: "id64" }
  | { readonly kind: "text"; readonly max: number }
  /**
   * Bytes. Decoded as a copy, unless `view` is set: then as a view on the
   * decoded input, for the one field of the busiest datagrams (`peer_data`'s
   * payload, which the reliable channel copies once into its message, and
   * `peer_sealed`'s ciphertext, which opening copies), so a file transfer
   * allocates nothing more per datagram. Whoever keeps a view field must
   * copy it before the input is reused.
   */
  | { readonly kind: "bytes"; readonly max: number; readonly view?: true }
  | { readonly kind: "list"; readonly max: number; readonly of: readonly ListItemField[] };

/** A field of one item of a `list` field (lists do not nest). */
export type ListItemField = readonly [string, Exclude<FieldKind, { kind: "list" }>];

const U8 = { kind: "u8" } as const;
const U16 = { kind: "u16" } as const;
const U32 = { kind: "u32" } as const;
const U64 = { kind: "u64" } as const;
const ID64 = { kind: "id64" } as const;
const NAME = { kind: "text", max: MAX_NAME_BYTES } as const;
const TOKEN = { kind: "bytes", max: TOKEN_BYTES } as const;
const IP = { kind: "text", max: 64 } as const;
const FILE_NAME = { kind: "text", max: MAX_FILE_NAME_BYTES } as const;
const SHA256 = { kind: "bytes", max: 32 } as const;

/** The fields that describe one online client, in `list_page` and `lookup_ok`. */
const ONLINE_CLIENT = [
  ["name", NAME],
  ["ip", IP],
  ["udpPort", U16],
  ["tcpPort", U16],
  ["onlineMs", U64],
] as const;

/** One address a peer may be reached at: a host or server-reflexive candidate. */
const CANDIDATE = [["ip", IP], ["port", U16]] as const;

/** The fields that describe one stored file, in `file_list`. */
const STORED_FILE = [
  ["name", FILE_NAME],
  ["size", U64],
  ["sha256", SHA256],
  ["uploadedAt", U64],
] as const;

/**
 * Every message type: its one-byte code and its fields in wire order.
 * `reqId` pairs a reply with its request; `client` is a random per-process id
 * that, with `reqId`, keys the server's replay cache; `token` is the session
 * token that `register` or `login` returned. A `padded` request (`hello`,
 * `register`, `login`: those a client sends before it has a session) is
 * followed by zero bytes up to `MIN_PADDED_REQUEST_BYTES` (codec.ts), so that
 * the server can answer it over UDP without sending more than it received.
 */
export const MESSAGE_SCHEMAS = {
  hello: { code: 1, fields: [["reqId", U32], ["client", ID64]], padded: true },
  hello_ok: {
    code: 2,
    fields: [
      ["reqId", U32],
      ["tcpPort", U16],
      ["serverVersion", { kind: "text", max: 32 }],
      ["auth", U8],
      ["leaseMs", U32],
      ["serverKey", { kind: "bytes", max: 32 }],
    ],
  },
  register: {
    code: 3,
    fields: [["reqId", U32], ["client", ID64], ["name", NAME], ["udpPort", U16], [
      "tcpPort",
      U16,
    ]],
    padded: true,
  },
  register_ok: { code: 4, fields: [["reqId", U32], ["token", TOKEN]] },
  deregister: { code: 5, fields: [["reqId", U32], ["client", ID64], ["token", TOKEN]] },
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
  login: {
    code: 10,
    fields: [
      ["reqId", U32],
      ["client", ID64],
      ["name", NAME],
      ["secret", { kind: "bytes", max: MAX_SECRET_BYTES }],
      ["udpPort", U16],
      ["tcpPort", U16],
    ],
    padded: true,
  },
  login_ok: { code: 11, fields: [["reqId", U32], ["token", TOKEN], ["replaced", U8]] },
  logout: { code: 12, fields: [["reqId", U32], ["client", ID64], ["token", TOKEN]] },
  logout_ok: { code: 13, fields: [["reqId", U32]] },
  heartbeat: { code: 14, fields: [["reqId", U32], ["client", ID64], ["token", TOKEN]] },
  heartbeat_ok: { code: 15, fields: [["reqId", U32]] },
  list: {
    code: 16,
    fields: [["reqId", U32], ["client", ID64], ["token", TOKEN], ["after", NAME]],
  },
  list_page: {
    code: 17,
    fields: [
      ["reqId", U32],
      ["total", U32],
      ["more", U8],
      ["clients", { kind: "list", max: 255, of: ONLINE_CLIENT }],
    ],
  },
  lookup: {
    code: 18,
    fields: [
      ["reqId", U32],
      ["client", ID64],
      ["token", TOKEN],
      ["name", NAME],
      ["nonce", { kind: "bytes", max: INTRODUCTION_NONCE_BYTES }],
    ],
  },
  lookup_ok: {
    code: 19,
    fields: [
      ["reqId", U32],
      ...ONLINE_CLIENT,
      ["key", { kind: "bytes", max: PEER_KEY_BYTES }],
      ["nonce", { kind: "bytes", max: INTRODUCTION_NONCE_BYTES }],
      ["psk", { kind: "bytes", max: PEER_PSK_BYTES }],
    ],
  },
  watch: {
    code: 20,
    fields: [["reqId", U32], ["client", ID64], ["token", TOKEN], ["on", U8]],
  },
  watch_ok: { code: 21, fields: [["reqId", U32]] },
  presence: {
    code: 22,
    fields: [["token", TOKEN], ["seq", U32], ["change", U8], ...ONLINE_CLIENT],
  },
  presence_ack: { code: 23, fields: [["token", TOKEN], ["seq", U32]] },
  session_ended: {
    code: 24,
    fields: [["token", TOKEN], ["reason", U8], ["message", {
      kind: "text",
      max: MAX_ERROR_TEXT_BYTES,
    }]],
  },
  upload: {
    code: 25,
    fields: [
      ["reqId", U32],
      ["client", ID64],
      ["token", TOKEN],
      ["name", FILE_NAME],
      ["size", U64],
      ["sha256", SHA256],
    ],
  },
  upload_ok: { code: 26, fields: [["reqId", U32], ["size", U64]] },
  file_chunk: {
    code: 27,
    fields: [["reqId", U32], ["data", { kind: "bytes", max: MAX_CHUNK_BYTES }]],
  },
  download: {
    code: 28,
    fields: [["reqId", U32], ["client", ID64], ["token", TOKEN], ["name", FILE_NAME]],
  },
  download_ok: { code: 29, fields: [["reqId", U32], ["size", U64], ["sha256", SHA256]] },
  delete: {
    code: 30,
    fields: [["reqId", U32], ["client", ID64], ["token", TOKEN], ["name", FILE_NAME]],
  },
  delete_ok: { code: 31, fields: [["reqId", U32]] },
  files: { code: 32, fields: [["reqId", U32], ["client", ID64], ["token", TOKEN]] },
  file_list: {
    code: 33,
    fields: [
      ["reqId", U32],
      ["usedBytes", U64],
      ["quotaBytes", U64],
      ["files", { kind: "list", max: 1000, of: STORED_FILE }],
    ],
  },
  file_elsewhere: {
    code: 34,
    fields: [["reqId", U32], ["host", { kind: "text", max: 255 }], ["tcpPort", U16]],
  },
  peer_connect: {
    code: 40,
    fields: [["session", ID64], ["handshake", { kind: "bytes", max: MAX_PEER_HANDSHAKE_BYTES }]],
  },
  peer_accept: {
    code: 41,
    fields: [["session", ID64], ["handshake", { kind: "bytes", max: MAX_PEER_HANDSHAKE_BYTES }]],
  },
  peer_reject: {
    code: 42,
    fields: [["session", ID64], ["reason", { kind: "text", max: MAX_ERROR_TEXT_BYTES }]],
  },
  peer_data: {
    code: 43,
    fields: [
      ["session", ID64],
      ["seq", U32],
      ["fragment", U16],
      ["fragments", U16],
      ["payload", { kind: "bytes", max: MAX_PEER_PAYLOAD_BYTES, view: true }],
    ],
  },
  peer_ack: {
    code: 44,
    fields: [
      ["session", ID64],
      ["cumulative", U32],
      ["window", U32],
      ["ranges", { kind: "list", max: MAX_SACK_RANGES, of: [["start", U32], ["end", U32]] }],
    ],
  },
  peer_keepalive: { code: 45, fields: [["session", ID64]] },
  peer_terminate: {
    code: 46,
    fields: [
      ["session", ID64],
      ["cumulative", U32],
      ["reason", { kind: "text", max: MAX_ERROR_TEXT_BYTES }],
    ],
  },
  peer_terminate_ok: { code: 47, fields: [["session", ID64]] },
  reflect: { code: 48, fields: [["reqId", U32], ["client", ID64]], padded: true },
  reflect_ok: {
    code: 49,
    fields: [["reqId", U32], ["ip", IP], ["port", U16], ["port2", U16]],
  },
  peer_sealed: {
    code: 50,
    fields: [
      ["session", ID64],
      ["counter", U64],
      ["sealed", { kind: "bytes", max: MAX_PEER_SEALED_BYTES, view: true }],
    ],
  },
  introduce: {
    code: 60,
    fields: [
      ["reqId", U32],
      ["client", ID64],
      ["token", TOKEN],
      ["name", NAME],
      ["session", ID64],
      ["hosts", { kind: "list", max: MAX_HOST_CANDIDATES, of: CANDIDATE }],
    ],
  },
  introduce_ok: {
    code: 61,
    fields: [
      ["reqId", U32],
      ["session", ID64],
      ["probeKey", { kind: "bytes", max: PROBE_KEY_BYTES }],
      ["candidates", { kind: "list", max: MAX_HOST_CANDIDATES + 1, of: CANDIDATE }],
    ],
  },
  introduction: {
    code: 62,
    fields: [
      ["token", TOKEN],
      ["session", ID64],
      ["name", NAME],
      ["probeKey", { kind: "bytes", max: PROBE_KEY_BYTES }],
      ["candidates", { kind: "list", max: MAX_HOST_CANDIDATES + 1, of: CANDIDATE }],
    ],
  },
  relay: {
    code: 63,
    fields: [["session", ID64], ["payload", { kind: "bytes", max: MAX_RELAY_PAYLOAD_BYTES }]],
  },
  peer_probe: {
    code: 64,
    fields: [["session", ID64], ["nonce", U32], ["tag", { kind: "bytes", max: PROBE_TAG_BYTES }]],
  },
  peer_probe_ok: {
    code: 65,
    fields: [
      ["session", ID64],
      ["nonce", U32],
      ["ip", IP],
      ["port", U16],
      ["tag", { kind: "bytes", max: PROBE_TAG_BYTES }],
    ],
  },
} as const satisfies Record<
  string,
  { code: number; fields: readonly (readonly [string, FieldKind])[]; padded?: true }
>;

/**
 * Messages between two peers (client to client, over UDP): the handshake
 * (`peer_connect`, `peer_accept`), a `peer_reject` before any keys exist,
 * and `peer_sealed`, which carries one {@linkcode PeerInnerMessage}.
 */
export type PeerMessage = MessageOf<
  | "peer_connect"
  | "peer_accept"
  | "peer_reject"
  | "peer_data"
  | "peer_ack"
  | "peer_keepalive"
  | "peer_terminate"
  | "peer_terminate_ok"
  | "peer_sealed"
  | "peer_probe"
  | "peer_probe_ok"
>;

/** The peer messages that travel only sealed inside `peer_sealed` (and `peer_reject`, also clear). */
export type PeerInnerMessage = MessageOf<
  | "peer_reject"
  | "peer_data"
  | "peer_ack"
  | "peer_keepalive"
  | "peer_terminate"
  | "peer_terminate_ok"
>;

const PEER_INNER_TYPES: ReadonlySet<string> = new Set([
  "peer_reject",
  "peer_data",
  "peer_ack",
  "peer_keepalive",
  "peer_terminate",
  "peer_terminate_ok",
]);

/**
 * Tells whether a decoded message may travel sealed inside `peer_sealed`.
 *
 * @param message a decoded message
 * @returns true for the inner peer types
 */
export function isPeerInnerMessage(message: Message): message is PeerInnerMessage {
  return PEER_INNER_TYPES.has(message.type);
}

/**
 * Tells whether a decoded message is a peer message.
 *
 * @param message a decoded message
 * @returns true for the `peer_*` types
 */
export function isPeerMessage(message: Message): message is PeerMessage {
  return message.type.startsWith("peer_");
}

/** The name of a message type, such as `"register"`. */
export type MessageType = keyof typeof MESSAGE_SCHEMAS;

type ValueOf<K extends FieldKind> = K extends { kind: "text" | "id64" } ? string
  : K extends { kind: "bytes" } ? Uint8Array
  : K extends { kind: "list"; of: infer F extends readonly ListItemField[] } ? readonly ItemOf<F>[]
  : number;

/** One item of a `list` field, as decoded. */
export type ItemOf<F extends readonly ListItemField[]> = {
  readonly [G in F[number] as G[0]]: ValueOf<G[1]>;
};

type FieldsOf<T extends MessageType> = (typeof MESSAGE_SCHEMAS)[T]["fields"];

/** One decoded message of type `T`: `{ type, ...fields }`. */
export type MessageOf<T extends MessageType> = T extends MessageType ?
    & { readonly type: T }
    & { readonly [F in FieldsOf<T>[number] as F[0]]: ValueOf<F[1]> }
  : never;

/** Any decoded Switchboard message. */
export type Message = MessageOf<MessageType>;

/** The types of the requests a client sends to the server. */
export const REQUEST_TYPES = [
  "hello",
  "register",
  "deregister",
  "text",
  "login",
  "logout",
  "heartbeat",
  "list",
  "lookup",
  "watch",
  "upload",
  "download",
  "delete",
  "files",
  "introduce",
] as const satisfies readonly MessageType[];

/**
 * The requests that are padded with zero bytes to `MIN_PADDED_REQUEST_BYTES`
 * (codec.ts): those marked `padded` in {@linkcode MESSAGE_SCHEMAS}.
 */
export const PADDED_REQUEST_TYPES: ReadonlySet<MessageType> = new Set(
  (Object.keys(MESSAGE_SCHEMAS) as MessageType[]).filter((type) =>
    "padded" in MESSAGE_SCHEMAS[type]
  ),
);

/** Messages a client sends to the server; each carries `reqId` and `client`. */
export type Request = MessageOf<(typeof REQUEST_TYPES)[number]>;

/** Messages the server sends back; each carries the `reqId` it answers. */
export type Reply = MessageOf<
  | "hello_ok"
  | "register_ok"
  | "deregister_ok"
  | "text_ok"
  | "error"
  | "login_ok"
  | "logout_ok"
  | "heartbeat_ok"
  | "list_page"
  | "lookup_ok"
  | "watch_ok"
  | "upload_ok"
  | "download_ok"
  | "delete_ok"
  | "file_list"
  | "file_elsewhere"
  | "introduce_ok"
>;

/** Messages the server sends without being asked: presence news, session ends, introductions. */
export type Push = MessageOf<"presence" | "session_ended" | "introduction">;

const REQUEST_TYPE_SET: ReadonlySet<string> = new Set(REQUEST_TYPES);

/**
 * Tells whether a decoded message is a client request.
 *
 * @param message a decoded message
 * @returns true for the types in {@linkcode REQUEST_TYPES}
 */
export function isRequest(message: Message): message is Request {
  return REQUEST_TYPE_SET.has(message.type);
}

/** How the server authenticates logins, as told in `hello_ok`. */
export const AUTH_MODES = { open: 0, password: 1 } as const;

/** What a `presence` message reports. */
export const PRESENCE_CHANGES = { joined: 1, left: 2, resync: 3 } as const;

/** Why a session ended, as told in `session_ended`. */
export const SESSION_END_REASONS = { replaced: 1, expired: 2, server_shutdown: 3 } as const;
