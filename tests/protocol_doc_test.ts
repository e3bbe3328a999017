/**
 * Keeps docs/PROTOCOL.md from drifting away from the code: every labelled hex
 * example must decode to the message it claims and re-encode to the same
 * bytes, and the message table, the error table, the constant tables and each
 * message's field table and size must match lib/wire.
 *
 * Convention in the document: a hex example is a ```hex fence preceded by
 * `<!-- message: TYPE -->` (the bytes are one encoded message) or
 * `<!-- frame: TYPE -->` (the bytes are one TCP frame: a four-byte length,
 * then one encoded message). Every ```hex fence must carry such a label.
 * In a fence, a line `00 × N` stands for N bytes of `00` (the padding of
 * hello, register and login); the test expands it and checks every byte.
 */
import { assert, assertEquals } from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { keyPairFromPrivateKey } from "../lib/crypto/key_pair.ts";
import { toHex } from "../lib/hex.ts";
import { Registry } from "../lib/server/registry.ts";
import { ServerCore } from "../lib/server/server_core.ts";
import {
  decodeMessage,
  encodeMessage,
  MIN_PADDED_REQUEST_BYTES,
  PROTOCOL_VERSION,
} from "../lib/wire/codec.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import {
  DEFAULT_CHANNEL_OPTIONS,
  LOW_LATENCY_CHANNEL_OPTIONS,
} from "../lib/reliable/reliable_channel.ts";
import {
  AUTH_MODES,
  type FieldKind,
  MAX_FRAME_BYTES,
  type Message,
  MESSAGE_SCHEMAS,
  type MessageType,
  PADDED_REQUEST_TYPES,
  PRESENCE_CHANGES,
  SESSION_END_REASONS,
} from "../lib/wire/messages.ts";

type Fields = readonly (readonly [string, FieldKind])[];
const SCHEMAS = MESSAGE_SCHEMAS as Record<MessageType, { code: number; fields: Fields }>;
const TYPES = Object.keys(SCHEMAS) as MessageType[];

const DOC_PATH = new URL("../docs/PROTOCOL.md", import.meta.url);
const doc = await Deno.readTextFile(DOC_PATH);
const lines = doc.split("\n");

// ---------------------------------------------------------------------------
// Reading the document

interface HexBlock {
  readonly label: "message" | "frame";
  readonly type: string;
  /** 1-based line of the opening fence. */
  readonly line: number;
  readonly text: string;
}

const LABEL = /^<!-- (message|frame): ([a-z_]+) -->$/;

/** Every ```hex fence with its label; an unlabelled fence is an error. */
function hexBlocks(): HexBlock[] {
  const blocks: HexBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].startsWith("```hex")) continue;
    let j = i - 1;
    while (j >= 0 && lines[j].trim() === "") j--;
    const label = j >= 0 ? LABEL.exec(lines[j].trim()) : null;
    if (label === null) {
      throw new Error(`docs/PROTOCOL.md line ${i + 1}: a hex block without a label comment`);
    }
    const end = lines.findIndex((l, k) => k > i && l.startsWith("```"));
    if (end < 0) throw new Error(`docs/PROTOCOL.md line ${i + 1}: unclosed hex block`);
    blocks.push({
      label: label[1] as "message" | "frame",
      type: label[2],
      line: i + 1,
      text: lines.slice(i + 1, end).join("\n"),
    });
    i = end;
  }
  return blocks;
}

/** Parses whitespace-separated pairs of lowercase hex digits, and lines `XX × N` (N times XX). */
function parseHex(block: HexBlock): Uint8Array {
  const bytes: number[] = [];
  for (const line of block.text.split("\n")) {
    const run = /^([0-9a-f]{2}) × (\d+)$/.exec(line.trim());
    if (run !== null) {
      for (let i = 0; i < Number(run[2]); i++) bytes.push(parseInt(run[1], 16));
      continue;
    }
    for (const token of line.split(/\s+/).filter((t) => t !== "")) {
      assert(
        /^[0-9a-f]{2}$/.test(token),
        `line ${block.line}: "${token}" is not one byte in lowercase hex`,
      );
      bytes.push(parseInt(token, 16));
    }
  }
  return Uint8Array.from(bytes);
}

/** A markdown table: its header cells and its rows of cells. */
interface Table {
  readonly header: readonly string[];
  readonly rows: readonly (readonly string[])[];
}

/** Returns a value that must be there, or fails the test with `message`. */
function must<T>(value: T | null | undefined, message: string): T {
  if (value === null || value === undefined) throw new Error(message);
  return value;
}

function cells(line: string): string[] {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
}

/** The tables that start in a range of lines, in order. */
function tables(from: number, to: number): Table[] {
  const found: Table[] = [];
  let i = from;
  while (i < to) {
    if (!lines[i].trimStart().startsWith("|")) {
      i++;
      continue;
    }
    const block: string[] = [];
    while (i < lines.length && lines[i].trimStart().startsWith("|")) block.push(lines[i++]);
    const [header, ...rest] = block.map(cells);
    const rows = rest.filter((row) => !row.every((c) => /^:?-+:?$/.test(c)));
    found.push({ header, rows });
  }
  return found;
}

/** The lines of the section under a heading, up to the next heading of the same or higher level. */
function section(heading: string): { from: number; to: number } {
  const at = lines.findIndex((l) => l === heading);
  assert(at >= 0, `docs/PROTOCOL.md has no heading "${heading}"`);
  const level = heading.indexOf(" ");
  let to = at + 1;
  while (to < lines.length) {
    const hashes = /^(#+) /.exec(lines[to]);
    if (hashes !== null && hashes[1].length <= level) break;
    to++;
  }
  return { from: at + 1, to };
}

/** The first table whose header starts with the given cells. */
function tableWith(found: Table[], ...header: string[]): Table {
  return must(
    found.find((t) => header.every((h, i) => t.header[i] === h)),
    `no table with the columns ${header.join(", ")}`,
  );
}

function unquote(cell: string): string {
  return must(/^`([^`]+)`$/.exec(cell), `expected one \`name\` in the cell "${cell}"`)[1];
}

/** The size of a message with every variable field empty, except tokens, keys and hashes (≤ 32 bytes), counted full. */
function baseSize(fields: Fields): number {
  let size = 4;
  for (const [, kind] of fields) {
    switch (kind.kind) {
      case "u8":
        size += 1;
        break;
      case "u16":
        size += 2;
        break;
      case "u32":
        size += 4;
        break;
      case "u64":
      case "id64":
        size += 8;
        break;
      case "text":
      case "list":
        size += 2;
        break;
      case "bytes":
        size += 2 + (kind.max <= 32 ? kind.max : 0);
        break;
    }
  }
  return size;
}

function checkFieldTable(where: string, table: Table, fields: Fields): void {
  const kindAt = table.header.indexOf("Kind");
  assert(kindAt > 0, `${where}: the field table has no Kind column`);
  const nameAt = kindAt - 1;
  assertEquals(
    table.rows.map((row) => unquote(row[nameAt])),
    fields.map(([name]) => name),
    `${where}: the fields differ from MESSAGE_SCHEMAS`,
  );
  fields.forEach(([name, kind], i) => {
    const cell = table.rows[i][kindAt];
    const match = must(
      /^`(\w+)`(?: \(max ([\d,]+)\))?/.exec(cell),
      `${where}, field ${name}: cannot read the kind "${cell}"`,
    );
    assertEquals(match[1], kind.kind, `${where}, field ${name}: wrong kind`);
    const max = "max" in kind ? kind.max : undefined;
    assertEquals(
      match[2] === undefined ? undefined : Number(match[2].replaceAll(",", "")),
      max,
      `${where}, field ${name}: wrong maximum`,
    );
  });
}

// ---------------------------------------------------------------------------
// The examples

const blocks = hexBlocks();

Deno.test("PROTOCOL.md: the examples include register, register_ok, login_ok and presence", () => {
  const shown = new Set(blocks.filter((b) => b.label === "message").map((b) => b.type));
  for (const type of ["register", "register_ok", "login_ok", "presence"]) {
    assert(shown.has(type), `no labelled example of "${type}"`);
  }
});

Deno.test("PROTOCOL.md: every peer message has a labelled example", () => {
  const shown = new Set(blocks.filter((b) => b.label === "message").map((b) => b.type));
  for (const type of TYPES.filter((t) => t.startsWith("peer_"))) {
    assert(shown.has(type), `no labelled example of "${type}"`);
  }
});

for (const block of blocks) {
  Deno.test(`PROTOCOL.md: the ${block.label} example "${block.type}" at line ${block.line}`, () => {
    assert(Object.hasOwn(SCHEMAS, block.type), `"${block.type}" is not a message type`);
    let bytes = parseHex(block);
    if (block.label === "frame") {
      assert(bytes.length > 4, "a frame needs a length and a body");
      const length = new DataView(bytes.buffer).getUint32(0);
      assertEquals(length, bytes.length - 4, "the frame length does not match its body");
      assert(length >= 1 && length <= MAX_FRAME_BYTES, "the frame length is out of range");
      bytes = bytes.subarray(4);
    }
    const message = decodeMessage(bytes);
    assertEquals(message.type, block.type);
    assertEquals(encodeMessage(message), bytes, "re-encoding gives other bytes");
  });
}

Deno.test("PROTOCOL.md: the worked example's client key, fingerprint and binding are what the server makes", () => {
  const example = (type: string) =>
    decodeMessage(parseHex(must(
      blocks.find((b) => b.label === "message" && b.type === type),
      `no example of "${type}"`,
    )));
  const register = example("register") as Message & { type: "register" };
  // The example's client private key is the bytes 0x20 to 0x3f.
  const clientKey = keyPairFromPrivateKey(Uint8Array.from({ length: 32 }, (_, i) => 0x20 + i))
    .publicKey;
  assert(doc.includes(`\`${toHex(clientKey)}\``), "the client's public key is not given");
  const fingerprint = toHex(
    sha256.create().update(encodeMessage(register)).update(clientKey).digest().subarray(0, 16),
  );
  assert(doc.includes(`\`${fingerprint}\``), `the fingerprint ${fingerprint} is not given`);
  const core = new ServerCore({
    registry: new Registry(),
    random: { next: () => 0.5, bytes: (n) => new Uint8Array(n) },
    tcpPort: 3001,
    version: "0.0.0",
  });
  const from = {
    transport: "udp",
    address: "192.0.2.10",
    port: register.udpPort,
    clientKey,
  } as const;
  core.handle(Date.UTC(2025, 0, 1), from, register, encodeMessage(register).length);
  const replies: Message[] = [];
  for (let out = core.poll(); out !== undefined; out = core.poll()) {
    if (out.type === "persist") core.persisted(out.version, Date.UTC(2025, 0, 1));
    if (out.type === "send") replies.push(out.message);
  }
  must(replies.find((m) => m.type === "register_ok"), "no register_ok");
  const record = must(core.registry.get(register.name), "not registered");
  assertEquals([record.publicKey, record.keySha256], [toHex(clientKey), ""]);
  assertEquals(record.registeredBy, fingerprint);
  const login = example("login") as Message & { type: "login" };
  assertEquals(login.secret.length, 0, "the login example carries a secret");
});

// ---------------------------------------------------------------------------
// The tables

Deno.test("PROTOCOL.md: the title and the header name the version the code speaks", () => {
  assertEquals(lines[0], `# Switchboard wire protocol, version ${PROTOCOL_VERSION}`);
  const header = section("## Header");
  const version = `\`0x${PROTOCOL_VERSION.toString(16).padStart(2, "0")}\``;
  assert(
    lines.slice(header.from, header.to).some((l) => l.includes(`protocol version: ${version}`)),
    `the header table does not give the version as ${version}`,
  );
});

Deno.test("PROTOCOL.md: every message type and error code is mentioned", () => {
  for (const type of TYPES) assert(doc.includes(`\`${type}\``), `"${type}" is not mentioned`);
  for (const name of Object.keys(ERROR_CODES)) {
    assert(doc.includes(`\`${name}\``), `error code "${name}" is not mentioned`);
  }
});

Deno.test("PROTOCOL.md: the message table matches MESSAGE_SCHEMAS", () => {
  const { from, to } = section("## Messages");
  const table = tableWith(tables(from, to), "Code", "Type");
  const documented = Object.fromEntries(table.rows.map((row) => [unquote(row[1]), Number(row[0])]));
  const actual = Object.fromEntries(TYPES.map((type) => [type, SCHEMAS[type].code]));
  assertEquals(documented, actual);
});

Deno.test("PROTOCOL.md: the error code table matches ERROR_CODES", () => {
  const { from, to } = section("## Error codes");
  const table = tableWith(tables(from, to), "Code", "Name");
  const documented = Object.fromEntries(table.rows.map((row) => [unquote(row[1]), Number(row[0])]));
  assertEquals(documented, { ...ERROR_CODES });
});

Deno.test("PROTOCOL.md: the tables of AUTH_MODES, PRESENCE_CHANGES and SESSION_END_REASONS", () => {
  const constants = { AUTH_MODES, PRESENCE_CHANGES, SESSION_END_REASONS };
  for (const [name, values] of Object.entries(constants)) {
    const at = lines.indexOf(`\`${name}\`:`);
    assert(at >= 0, `no line "\`${name}\`:" before its table`);
    // The table must follow at once: only a blank line between.
    assertEquals(lines[at + 1], "", `no table right after "\`${name}\`:"`);
    const table = must(tables(at + 2, at + 3)[0], `no table right after "\`${name}\`:"`);
    assertEquals(table.header[0], "Value");
    const documented = Object.fromEntries(
      table.rows.map((row) => [unquote(row[1]), Number(row[0])]),
    );
    assertEquals(documented, { ...values }, name);
  }
});

for (const type of TYPES) {
  Deno.test(`PROTOCOL.md: the section of "${type}" matches its schema`, () => {
    const { code, fields } = SCHEMAS[type];
    const heading = `### \`${type}\` (${code})`;
    const { from, to } = section(heading);
    const found = tables(from, to);
    checkFieldTable(heading, tableWith(found, "#", "Field", "Kind"), fields);
    // Each list field's items are described by the next "Item field" table.
    const itemTables = found.filter((t) => t.header[1] === "Item field");
    const lists = fields.flatMap(([name, kind]) => kind.kind === "list" ? [[name, kind.of]] : []);
    assertEquals(itemTables.length, lists.length, `${heading}: one item table per list field`);
    lists.forEach(([name, of], i) =>
      checkFieldTable(`${heading}, ${name}`, itemTables[i], of as Fields)
    );
    const size = must(
      /Size: ([\d,]+)/.exec(lines.slice(from, to).join("\n")),
      `${heading}: no "Size:" line`,
    );
    assertEquals(Number(size[1].replaceAll(",", "")), baseSize(fields), `${heading}: wrong size`);
    const padded = `padded to ${MIN_PADDED_REQUEST_BYTES}`;
    assertEquals(
      lines.slice(from, to).join(" ").includes(padded),
      PADDED_REQUEST_TYPES.has(type),
      `${heading}: "${padded}" is said of the padded requests only`,
    );
  });
}

Deno.test("PROTOCOL.md: the peer channel's option table matches the defaults and the chat preset", () => {
  const { from, to } = section("### Peer channel");
  const table = tableWith(tables(from, to), "Option", "Default", "Chat sessions");
  const chat: Record<string, unknown> = {
    ...DEFAULT_CHANNEL_OPTIONS,
    ...LOW_LATENCY_CHANNEL_OPTIONS,
  };
  const defaults: Record<string, unknown> = { ...DEFAULT_CHANNEL_OPTIONS };
  const number = (cell: string) => Number(cell.replaceAll("*", "").replaceAll(",", ""));
  assert(table.rows.length > 0, "the option table is empty");
  for (const row of table.rows) {
    const name = unquote(row[0]);
    assert(Object.hasOwn(defaults, name), `"${name}" is not a channel option`);
    assertEquals(number(row[1]), defaults[name], `the default of ${name}`);
    assertEquals(number(row[2]), chat[name], `${name} in chat sessions`);
  }
});
