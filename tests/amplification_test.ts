/**
 * The server is no amplifier: over UDP, a request that carries no live
 * session token (a forged source address needs none) is never answered with
 * more bytes than it carried, and the requests that open a session (hello,
 * register, login, text) with at most UNVALIDATED_REPLY_FACTOR times as many.
 * Checked on the core, over every message type with random fields and
 * missing, random, short and ended tokens, and on real sockets.
 */
import { assert, assertEquals } from "@std/assert";
import fc from "fast-check";
import { ServerDriver } from "../lib/driver/server_driver.ts";
import { SeededRandom } from "../lib/random.ts";
import { Registry } from "../lib/server/registry.ts";
import {
  type Endpoint,
  ServerCore,
  type ServerOutput,
  UNVALIDATED_REPLY_FACTOR,
} from "../lib/server/server_core.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import {
  type FieldKind,
  MAX_DATAGRAM_BYTES,
  type Message,
  MESSAGE_SCHEMAS,
  type MessageOf,
  type MessageType,
  REQUEST_TYPES,
} from "../lib/wire/messages.ts";
import { VERSION } from "../lib/version.ts";

const NOW = Date.UTC(2026, 0, 1);
const ALICE: Endpoint = { transport: "udp", address: "10.0.0.1", port: 5000 };
const CAROL_FIRST: Endpoint = { transport: "udp", address: "10.0.0.3", port: 5003 };
const CAROL_SECOND: Endpoint = { transport: "udp", address: "10.0.0.4", port: 5004 };
const DAVE: Endpoint = { transport: "udp", address: "10.0.0.5", port: 5005 };
/** The forged source: the victim of a reflection attack. */
const VICTIM: Endpoint = { transport: "udp", address: "198.51.100.77", port: 53 };

/** Hands the core a message as the driver does: with the size of its encoding. */
function handle(core: ServerCore, now: number, from: Endpoint, message: Message): void {
  core.handle(now, from, message, encodeMessage(message).length);
}

/** Requests whose replies a client needs whole before it has a session. */
const OPENS_SESSION = new Set(["hello", "register", "login", "text"]);

function drain(core: ServerCore): ServerOutput[] {
  const out: ServerOutput[] = [];
  for (let o = core.poll(); o !== undefined; o = core.poll()) out.push(o);
  return out;
}

/** Runs every output the driver would complete at once: writes, password checks. */
function settle(core: ServerCore, now: number): ServerOutput[] {
  const all: ServerOutput[] = [];
  for (let round = 0; round < 10; round++) {
    const out = drain(core);
    if (out.length === 0) break;
    all.push(...out);
    for (const o of out) {
      if (o.type === "persist") core.persisted(o.version, now);
      if (o.type === "verify_password") core.passwordChecked(now, o.id, false);
    }
  }
  return all;
}

function sendsTo(outputs: ServerOutput[], to: Endpoint): Message[] {
  return outputs.flatMap((o) =>
    o.type === "send" && o.to.transport === to.transport && o.to.address === to.address &&
      o.to.port === to.port
      ? [o.message]
      : []
  );
}

function errorOf(message: Message | undefined): MessageOf<"error"> {
  if (message?.type !== "error") {
    throw new Error(`expected an error, got ${JSON.stringify(message)}`);
  }
  return message;
}

function login(reqId: number, name: string, secret: Uint8Array): MessageOf<"login"> {
  return {
    type: "login",
    reqId,
    client: "00000000000000aa",
    name,
    secret,
    udpPort: 0,
    tcpPort: 5001,
  };
}

interface World {
  core: ServerCore;
  /** Tokens of sessions that ended, with the address their session had. */
  ended: { token: Uint8Array; at: Endpoint }[];
}

/**
 * A core with Alice online (and watching), Carol's first session replaced by
 * a second, and Dave's session expired: the replies to their dead tokens are
 * the longest the server remembers.
 */
function world(auth: "open" | "password"): World {
  const core = new ServerCore({
    registry: new Registry(),
    random: new SeededRandom(7),
    tcpPort: 3001,
    version: VERSION,
    auth,
    users: new Map([
      ["alice", { name: "Alice", passwordHash: "H" }],
      ["carol", { name: "Carol", passwordHash: "H" }],
      ["dave", { name: "Dave", passwordHash: "H" }],
    ]),
    leaseMs: 30_000,
  });
  const ended: World["ended"] = [];
  const open = (from: Endpoint, name: string, reqId: number) => {
    if (auth === "open") {
      handle(core, NOW, from, {
        type: "register",
        reqId,
        client: "00000000000000" + reqId.toString(16).padStart(2, "0"),
        name,
        udpPort: 0,
        tcpPort: 5001,
      });
      const out = settle(core, NOW);
      const ok = sendsTo(out, from).find((m) => m.type === "register_ok");
      if (ok?.type !== "register_ok") throw new Error(`${name} did not register`);
      return { key: ok.key, token: ok.token };
    }
    handle(core, NOW, from, login(reqId, name, new TextEncoder().encode("password")));
    const verify = drain(core).find((o) => o.type === "verify_password");
    if (verify?.type !== "verify_password") throw new Error(`${name}: no password check`);
    core.passwordChecked(NOW, verify.id, true);
    const ok = sendsTo(drain(core), from).find((m) => m.type === "login_ok");
    if (ok?.type !== "login_ok") throw new Error(`${name} did not log in`);
    return { key: new TextEncoder().encode("password"), token: ok.token };
  };
  const alice = open(ALICE, "Alice", 1);
  handle(core, NOW, ALICE, {
    type: "watch",
    reqId: 2,
    client: "00000000000000a1",
    token: alice.token,
    on: 1,
  });
  const carol = open(CAROL_FIRST, "Carol", 3);
  handle(core, NOW, CAROL_SECOND, login(4, "Carol", carol.key));
  for (const o of drain(core)) {
    // A password login goes through verify_password: this one succeeds.
    if (o.type === "verify_password") core.passwordChecked(NOW, o.id, true);
  }
  drain(core);
  if (core.hasLiveSession({ type: "presence_ack", token: carol.token, seq: 0 })) {
    throw new Error("Carol's first session was not replaced");
  }
  ended.push({ token: carol.token, at: CAROL_FIRST });
  const dave = open(DAVE, "Dave", 5);
  // Dave stops: his lease runs out while Alice keeps hers.
  handle(core, NOW + 20_000, ALICE, {
    type: "heartbeat",
    reqId: 6,
    client: "00000000000000a1",
    token: alice.token,
  });
  core.onTimeout(NOW + 31_000);
  settle(core, NOW + 31_000);
  ended.push({ token: dave.token, at: DAVE });
  return { core, ended };
}

// ------------------------------------------------------------------ arbitraries

const utf8 = new TextEncoder();

function textOf(max: number): fc.Arbitrary<string> {
  const names = fc.constantFrom("Alice", "alice", "Carol", "Dave", "Nobody", "", "report.csv");
  const random = fc.string({ unit: "grapheme", maxLength: Math.min(max, 140) }).map((s) => {
    let out = s;
    while (utf8.encode(out).length > max) out = out.slice(0, -1);
    return out;
  });
  return fc.oneof(names, random);
}

function fieldOf(
  kind: FieldKind,
  name: string,
  tokens: fc.Arbitrary<Uint8Array>,
): fc.Arbitrary<unknown> {
  switch (kind.kind) {
    case "u8":
      return fc.integer({ min: 0, max: 255 });
    case "u16":
      return fc.oneof(fc.constantFrom(0, 5001), fc.integer({ min: 0, max: 65535 }));
    case "u32":
      return fc.integer({ min: 0, max: 0xffffffff });
    case "u64":
      return fc.oneof(fc.constantFrom(0, 1), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }));
    case "id64":
      return fc.uint8Array({ minLength: 8, maxLength: 8 }).map((b) =>
        Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")
      );
    case "text":
      return textOf(kind.max);
    case "bytes":
      if (name === "token") return tokens;
      return fc.uint8Array({ maxLength: Math.min(kind.max, 64) });
    case "list":
      return fc.array(
        fc.record(Object.fromEntries(kind.of.map(([n, k]) => [n, fieldOf(k, n, tokens)]))),
        { maxLength: 3 },
      );
  }
}

function messageOf(type: MessageType, tokens: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Message> {
  const fields = MESSAGE_SCHEMAS[type].fields as readonly (readonly [string, FieldKind])[];
  return fc.record(Object.fromEntries(fields.map(([n, k]) => [n, fieldOf(k, n, tokens)])))
    .map((record) => ({ type, ...record }) as unknown as Message);
}

/** Missing, short, random and dead tokens: anything but a live session's. */
function deadTokens(w: World): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    fc.constant(new Uint8Array(0)),
    fc.uint8Array({ minLength: 1, maxLength: 15 }),
    fc.uint8Array({ minLength: 16, maxLength: 16 }),
    fc.constantFrom(...w.ended.map((e) => e.token)),
  );
}

/** The most bytes a reply to this request may take when its source is unproven. */
function bound(request: Message, size: number): number {
  return OPENS_SESSION.has(request.type) ? UNVALIDATED_REPLY_FACTOR * size : size;
}

// ------------------------------------------------------------------ the core

for (const auth of ["open", "password"] as const) {
  Deno.test(`ServerCore (${auth} mode) answers no request without a live token with more than its bound`, () => {
    const w = world(auth);
    const types = Object.keys(MESSAGE_SCHEMAS) as MessageType[];
    const arbitrary = fc.oneof(...types.map((type) => messageOf(type, deadTokens(w))));
    let answered = 0;
    let now = NOW + 40_000;
    fc.assert(
      fc.property(arbitrary, fc.boolean(), (message, twice) => {
        let bytes: Uint8Array;
        try {
          bytes = encodeMessage(message);
        } catch {
          return; // a value the wire cannot carry: it could not arrive either
        }
        if (bytes.length > MAX_DATAGRAM_BYTES) return; // dropped before the core
        // What the core sees is what the socket decoded.
        const decoded = decodeMessage(bytes);
        if (w.core.hasLiveSession(decoded)) return;
        for (let copy = 0; copy < (twice ? 2 : 1); copy++) {
          now += 1;
          w.core.handle(now, VICTIM, decoded, bytes.length);
          const replies = sendsTo(settle(w.core, now), VICTIM);
          if (!(REQUEST_TYPES as readonly string[]).includes(decoded.type)) {
            assertEquals(replies, [], `${decoded.type} is not a request: no reply`);
          }
          for (const reply of replies) {
            answered++;
            const size = encodeMessage(reply).length;
            assert(
              size <= bound(decoded, bytes.length),
              `${decoded.type} of ${bytes.length} bytes got a ${reply.type} of ${size} bytes: ` +
                JSON.stringify(reply),
            );
          }
        }
      }),
      { numRuns: 3000, seed: 20260101 },
    );
    assert(answered > 500, `only ${answered} replies were checked`);
  });
}

Deno.test("ServerCore answers a token-bearing request without a live session within its own size", () => {
  const w = world("open");
  const tokenTypes = REQUEST_TYPES.filter((t) =>
    (MESSAGE_SCHEMAS[t].fields as readonly (readonly [string, unknown])[]).some(([n]) =>
      n === "token"
    ) && t !== "text"
  );
  assertEquals(tokenTypes.length, 10);
  const tokens = [new Uint8Array(0), new Uint8Array(16).fill(9), ...w.ended.map((e) => e.token)];
  for (const type of tokenTypes) {
    for (const token of tokens) {
      const message = {
        type,
        reqId: 77,
        client: "0123456789abcdef",
        token,
        after: "",
        name: "x",
        on: 1,
        size: 1,
        sha256: new Uint8Array(32),
      } as unknown as Message;
      const fields = MESSAGE_SCHEMAS[type].fields as readonly (readonly [string, unknown])[];
      const request = Object.fromEntries(
        [["type", type], ...fields.map(([n]) => [n, (message as Record<string, unknown>)[n]])],
      ) as unknown as Message;
      const size = encodeMessage(request).length;
      w.core.handle(NOW + 50_000, VICTIM, request, size);
      const [reply] = sendsTo(settle(w.core, NOW + 50_000), VICTIM);
      assert(reply?.type === "error", `${type}: ${JSON.stringify(reply)}`);
      assert(
        encodeMessage(reply).length <= size,
        `${type} with a ${token.length}-byte token: ${encodeMessage(reply).length} > ${size}`,
      );
    }
  }
});

Deno.test("ServerCore shortens such a reply at a clause, and keeps it whole for the token's own address", () => {
  const w = world("open");
  const carol = w.ended[0];
  const heartbeat: Message = {
    type: "heartbeat",
    reqId: 9,
    client: "0123456789abcdef",
    token: carol.token,
  };
  handle(w.core, NOW + 50_000, VICTIM, heartbeat);
  const short = errorOf(sendsTo(settle(w.core, NOW + 50_000), VICTIM)[0]);
  handle(w.core, NOW + 50_000, carol.at, heartbeat);
  const whole = errorOf(sendsTo(settle(w.core, NOW + 50_000), carol.at)[0]);
  assertEquals(
    whole.message,
    '"Carol" logged in elsewhere (10.0.0.4:5004); this session has ended',
  );
  // 34 bytes of heartbeat leave 22 for the message: no clause fits, so whole words.
  assertEquals(short.message, '"Carol" logged in');
  assertEquals(short.code, whole.code, "the code is the same: clients act on it");
  // Over TCP (its handshake proves the address) nothing is shortened.
  const tcp: Endpoint = { transport: "tcp", address: "198.51.100.77", port: 40000, connId: 1 };
  handle(w.core, NOW + 50_000, tcp, heartbeat);
  const overTcp = errorOf(sendsTo(settle(w.core, NOW + 50_000), tcp)[0]);
  assertEquals(overTcp.message, whole.message);
  // An unknown token: the message is cut to its first clause.
  // ("Not logged in (or the server restarted); log in again")
  handle(w.core, NOW + 50_000, VICTIM, { ...heartbeat, token: new Uint8Array(16) });
  const unknown = errorOf(sendsTo(settle(w.core, NOW + 50_000), VICTIM)[0]);
  assertEquals(unknown.message, "Not logged in");
  assert(w.core.stats.shortenedReplies >= 2);
});

Deno.test("ServerCore fits a reply cached for a TCP request when a copy comes over UDP", () => {
  const w = world("open");
  const tcp: Endpoint = { transport: "tcp", address: "10.0.0.9", port: 40000, connId: 1 };
  const register: Message = {
    type: "register",
    reqId: 1,
    client: "00000000000000f1",
    name: "Al",
    udpPort: 5000,
    tcpPort: 80,
  };
  handle(w.core, NOW + 50_000, tcp, register);
  const first = errorOf(sendsTo(settle(w.core, NOW + 50_000), tcp)[0]);
  const size = 24; // unpadded, as an older client sends it
  assert(encodeMessage(first).length > size, "over TCP the refusal is whole");
  w.core.handle(NOW + 50_001, VICTIM, register, size);
  const copy = errorOf(sendsTo(settle(w.core, NOW + 50_001), VICTIM)[0]);
  assertEquals(copy.code, first.code);
  assert(encodeMessage(copy).length <= UNVALIDATED_REPLY_FACTOR * size);
});

Deno.test("hello_ok for this version stays within the bound for a 16-byte hello", () => {
  const w = world("open");
  const hello: Message = { type: "hello", reqId: 1, client: "0123456789abcdef" };
  // Unpadded, as an older client sends it.
  w.core.handle(NOW, VICTIM, hello, 16);
  const [reply] = sendsTo(settle(w.core, NOW), VICTIM);
  assert(reply?.type === "hello_ok");
  assert(encodeMessage(reply).length <= UNVALIDATED_REPLY_FACTOR * 16, `version ${VERSION}`);
});

// ------------------------------------------------------------------ real sockets

Deno.test("ServerDriver answers raw datagrams with dead tokens within their bound", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "switchboard_amplification_" });
  const server = await ServerDriver.start({
    host: "127.0.0.1",
    udpPort: 0,
    tcpPort: 0,
    dataDir,
    version: VERSION,
  });
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const target: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: server.udpPort };
  try {
    const client = "0123456789abcdef";
    const token = new Uint8Array(16).fill(0x5a);
    const requests: Message[] = [
      { type: "hello", reqId: 1, client },
      { type: "register", reqId: 2, client, name: "", udpPort: 0, tcpPort: 5001 },
      { type: "register", reqId: 3, client, name: "A", udpPort: 0, tcpPort: 1 },
      { type: "register", reqId: 4, client, name: "Amp", udpPort: 0, tcpPort: 5001 },
      {
        type: "register",
        reqId: 5,
        client: "0123456789abcdee",
        name: "amp",
        udpPort: 0,
        tcpPort: 5001,
      },
      {
        type: "login",
        reqId: 6,
        client,
        name: "Amp",
        secret: new Uint8Array(0),
        udpPort: 0,
        tcpPort: 5001,
      },
      { type: "text", reqId: 7, client, name: "Amp", token, text: "hi" },
      { type: "deregister", reqId: 8, client, token: new Uint8Array(0) },
      { type: "logout", reqId: 9, client, token },
      { type: "heartbeat", reqId: 10, client, token },
      { type: "list", reqId: 11, client, token, after: "" },
      { type: "lookup", reqId: 12, client, token, name: "Amp" },
      { type: "watch", reqId: 13, client, token, on: 1 },
      { type: "upload", reqId: 14, client, token, name: "f", size: 1, sha256: new Uint8Array(32) },
      { type: "download", reqId: 15, client, token, name: "f" },
      { type: "delete", reqId: 16, client, token, name: "f" },
      { type: "files", reqId: 17, client, token },
    ];
    for (const request of requests) {
      const bytes = encodeMessage(request);
      await socket.send(bytes, target);
      const [data] = await receiveWithin(socket, 10_000);
      const reply = decodeMessage(data);
      assert(
        "reqId" in reply && request.type !== "presence_ack" &&
          reply.reqId === (request as { reqId: number }).reqId,
      );
      assert(
        data.length <= bound(request, bytes.length),
        `${request.type} (${bytes.length} bytes) got ${reply.type} of ${data.length} bytes`,
      );
    }
  } finally {
    socket.close();
    await server.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});

async function receiveWithin(
  socket: Deno.DatagramConn,
  ms: number,
): Promise<[Uint8Array, Deno.Addr]> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      socket.receive(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no reply within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
