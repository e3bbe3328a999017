/**
 * The server is no amplifier: over UDP, a request that carries no live
 * session token (a forged source address needs none) is never answered with
 * more bytes than the datagram it came in, whatever its type. The requests a
 * client sends before it has a session (hello, register, login) are padded to
 * MIN_PADDED_REQUEST_BYTES, the largest reply they can get; one that arrives
 * unpadded is refused with a short error and changes nothing. Checked on the
 * core, over every message type with random fields, padding cut or grown, and
 * missing, random, short and ended tokens, and on real sockets.
 */
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import fc from "fast-check";
import { ServerDriver } from "../lib/io/server_driver.ts";
import { SeededRandom } from "../lib/random.ts";
import { Registry } from "../lib/server/registry.ts";
import { ReplySizing } from "../lib/server/reply_sizing.ts";
import { serverStatusText } from "../lib/server/server_status_text.ts";
import { type Endpoint, ServerCore, type ServerOutput } from "../lib/server/server_core.ts";
import {
  decodeMessage,
  encodeMessage,
  maxMessageBytes,
  MIN_PADDED_REQUEST_BYTES,
} from "../lib/wire/codec.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import {
  type FieldKind,
  MAX_DATAGRAM_BYTES,
  MAX_ERROR_TEXT_BYTES,
  type Message,
  MESSAGE_SCHEMAS,
  type MessageOf,
  type MessageType,
  PADDED_REQUEST_TYPES,
  REQUEST_TYPES,
} from "../lib/wire/messages.ts";
import { VERSION } from "../lib/version.ts";
import { channelTo, SealedUdp } from "./_sealed_wire.ts";

const NOW = Date.UTC(2026, 0, 1);
// Channel keys (open mode's identities); Carol's two addresses are one client.
const ALICE: Endpoint = {
  transport: "udp",
  address: "10.0.0.1",
  port: 5000,
  clientKey: new Uint8Array(32).fill(1),
};
const CAROL_KEY = new Uint8Array(32).fill(3);
const CAROL_FIRST: Endpoint = {
  transport: "udp",
  address: "10.0.0.3",
  port: 5003,
  clientKey: CAROL_KEY,
};
const CAROL_SECOND: Endpoint = {
  transport: "udp",
  address: "10.0.0.4",
  port: 5004,
  clientKey: CAROL_KEY,
};
const DAVE: Endpoint = {
  transport: "udp",
  address: "10.0.0.5",
  port: 5005,
  clientKey: new Uint8Array(32).fill(5),
};
/** The forged source: the victim of a reflection attack. */
const VICTIM: Endpoint = {
  transport: "udp",
  address: "198.51.100.77",
  port: 53,
  clientKey: new Uint8Array(32).fill(7),
};

/** Hands the core a message as the driver does: with the size of its encoding, padded. */
function handle(core: ServerCore, now: number, from: Endpoint, message: Message): void {
  core.handle(now, from, message, encodeMessage(message).length);
}

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
      // Open mode's login sends no secret: the channel's key is the proof.
      return { key: new Uint8Array(0), token: ok.token };
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

/** A padded request's bytes as they may arrive: padding cut anywhere (to none), or grown. */
type Arrival = { readonly how: "as_encoded" } | { readonly how: "cut"; readonly at: number } | {
  readonly how: "stripped";
} | { readonly how: "grown"; readonly by: number };

const arrivals: fc.Arbitrary<Arrival> = fc.oneof(
  { arbitrary: fc.constant({ how: "as_encoded" } as const), weight: 3 },
  fc.record({ how: fc.constant("cut" as const), at: fc.nat() }),
  fc.constant({ how: "stripped" } as const),
  fc.record({ how: fc.constant("grown" as const), by: fc.integer({ min: 1, max: 1000 }) }),
);

function arrive(bytes: Uint8Array, arrival: Arrival): Uint8Array {
  switch (arrival.how) {
    case "as_encoded":
      return bytes;
    case "cut":
      return bytes.subarray(0, arrival.at % (bytes.length + 1));
    case "stripped": {
      let end = bytes.length;
      while (end > 0 && bytes[end - 1] === 0) end--;
      return bytes.subarray(0, end);
    }
    case "grown": {
      const out = new Uint8Array(bytes.length + arrival.by);
      out.set(bytes);
      return out;
    }
  }
}

/** The encoding of a padded request without its padding: its shortest prefix that decodes. */
function unpadded(bytes: Uint8Array): Uint8Array {
  for (let end = 4; end <= bytes.length; end++) {
    try {
      decodeMessage(bytes.subarray(0, end));
      return bytes.subarray(0, end);
    } catch {
      // truncated: longer
    }
  }
  throw new Error("no prefix decodes");
}

// ------------------------------------------------------------------ the core

Deno.test("MIN_PADDED_REQUEST_BYTES is the largest reply to hello, register or login: an error of 312 bytes", () => {
  assertEquals(MIN_PADDED_REQUEST_BYTES, 4 + 4 + 2 + 2 + MAX_ERROR_TEXT_BYTES);
  assertEquals(MIN_PADDED_REQUEST_BYTES, 312);
  assertEquals(maxMessageBytes("error"), 312);
  assertEquals(maxMessageBytes("hello_ok"), 49 + 2 + 32); // version 3: with the server key
  assertEquals(maxMessageBytes("register_ok"), 26); // version 3: no identity key

  assertEquals(maxMessageBytes("login_ok"), 27);
  assertEquals(maxMessageBytes("reflect_ok"), 78);
  assertEquals([...PADDED_REQUEST_TYPES].sort(), ["hello", "login", "reflect", "register"]);
  assertEquals(encodeMessage({ type: "hello", reqId: 1, client: "0123456789abcdef" }).length, 312);
});

/** The messages the server answers: the requests and address discovery's `reflect`. */
const ANSWERED_TYPES: readonly string[] = [...REQUEST_TYPES, "reflect"];

/** The largest reply of each type seen to each request type, and the datagram it answered. */
const largest = new Map<string, { reply: number; request: number }>();

for (const auth of ["open", "password"] as const) {
  Deno.test(`ServerCore (${auth} mode) answers no request without a live token with more bytes than it came in`, () => {
    const w = world(auth);
    const types = Object.keys(MESSAGE_SCHEMAS) as MessageType[];
    const arbitrary = fc.oneof(...types.map((type) => messageOf(type, deadTokens(w))));
    let answered = 0;
    let now = NOW + 40_000;
    const answeredTypes = new Set<string>();
    fc.assert(
      fc.property(arbitrary, arrivals, fc.boolean(), (message, arrival, twice) => {
        let encoded: Uint8Array;
        try {
          encoded = encodeMessage(message);
        } catch {
          return; // a value the wire cannot carry: it could not arrive either
        }
        const padded = PADDED_REQUEST_TYPES.has(message.type);
        // Only a padded type's padding can change and still decode.
        const bytes = padded ? arrive(encoded, arrival) : encoded;
        if (bytes.length > MAX_DATAGRAM_BYTES) return; // dropped before the core
        let decoded: Message;
        try {
          // What the core sees is what the socket decoded.
          decoded = decodeMessage(bytes);
        } catch {
          assert(padded && arrival.how !== "as_encoded" && arrival.how !== "grown");
          return; // cut into a field: dropped before the core
        }
        if (w.core.hasLiveSession(decoded)) return;
        for (let copy = 0; copy < (twice ? 2 : 1); copy++) {
          now += 1;
          const shortened = w.core.stats.shortenedReplies;
          w.core.handle(now, VICTIM, decoded, bytes.length);
          const outputs = settle(w.core, now);
          const replies = sendsTo(outputs, VICTIM);
          if (!ANSWERED_TYPES.includes(decoded.type)) {
            assertEquals(replies, [], `${decoded.type} is not a request: no reply`);
          }
          for (const reply of replies) {
            answered++;
            answeredTypes.add(decoded.type);
            const size = encodeMessage(reply).length;
            assert(
              size <= bytes.length,
              `${decoded.type} of ${bytes.length} bytes got a ${reply.type} of ${size} bytes: ` +
                JSON.stringify(reply),
            );
            const key = `${decoded.type} -> ${reply.type}`;
            const seen = largest.get(key);
            if (seen === undefined || size > seen.reply) {
              largest.set(key, { reply: size, request: bytes.length });
            }
          }
          if (decoded.type === "reflect") {
            // Address discovery answers a reflect only when the reply fits in
            // it (checked above), and never with an error.
            assertEquals(replies.filter((r) => r.type !== "reflect_ok"), []);
          } else if (padded && bytes.length < MIN_PADDED_REQUEST_BYTES) {
            // Refused before it runs: one short bad_request, and nothing else happens.
            assertEquals(replies.length, 1);
            assertEquals(errorOf(replies[0]).code, ERROR_CODES.bad_request);
            const others = outputs.filter((o) =>
              !(o.type === "send" && o.message === replies[0]) &&
              !(o.type === "event" && o.event.kind === "refused")
            );
            assertEquals(others, [], `an unpadded ${decoded.type} changes nothing`);
          } else if (padded) {
            assertEquals(
              w.core.stats.shortenedReplies,
              shortened,
              "padded: every reply fits whole",
            );
          }
        }
      }),
      { numRuns: 4000, seed: 20260101 },
    );
    assert(answered > 500, `only ${answered} replies were checked`);
    assertEquals([...answeredTypes].sort(), [...ANSWERED_TYPES].sort(), "every request type");
    if (Deno.env.get("AMPLIFICATION_REPORT") !== undefined) {
      for (const [key, seen] of [...largest].sort()) {
        console.log(`${auth}: ${key}: largest ${seen.reply} bytes (to ${seen.request} bytes)`);
      }
      largest.clear();
    }
  });
}

Deno.test("ServerCore answers a token-bearing request without a live session within its own size", () => {
  const w = world("open");
  const tokenTypes = REQUEST_TYPES.filter((t) =>
    (MESSAGE_SCHEMAS[t].fields as readonly (readonly [string, unknown])[]).some(([n]) =>
      n === "token"
    ) && t !== "text"
  );
  assertEquals(tokenTypes.length, 11);
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
        session: "0123456789abcdef",
        hosts: [],
        nonce: new Uint8Array(0),
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

Deno.test("ServerCore fits a reply cached for a TCP request to the datagram of a copy over UDP", () => {
  const w = world("open");
  // One client's two channels: the same static key.
  const clientKey = new Uint8Array(32).fill(9);
  const tcp: Endpoint = {
    transport: "tcp",
    address: "10.0.0.9",
    port: 40000,
    connId: 1,
    clientKey,
  };
  // Over UDP from the same host: an unproven address (its source could be forged).
  const udp: Endpoint = { transport: "udp", address: "10.0.0.9", port: 53, clientKey };
  // A refusal cached over TCP, its copy from an unproven address in 34 bytes.
  const deregister: Message = {
    type: "deregister",
    reqId: 1,
    client: "00000000000000f1",
    token: new Uint8Array(16).fill(3),
  };
  handle(w.core, NOW + 50_000, tcp, deregister);
  const first = errorOf(sendsTo(settle(w.core, NOW + 50_000), tcp)[0]);
  assertEquals(first.message, "Not logged in (or the server restarted); log in again");
  handle(w.core, NOW + 50_001, udp, deregister);
  const copy = errorOf(sendsTo(settle(w.core, NOW + 50_001), udp)[0]);
  assertEquals(copy.code, first.code);
  assertEquals(copy.message, "Not logged in");
  assert(encodeMessage(copy).length <= encodeMessage(deregister).length);
  // A padded register has room for any error whole.
  const register: Message = {
    type: "register",
    reqId: 2,
    client: "00000000000000f1",
    name: "Al",
    udpPort: 5000,
    tcpPort: 80,
  };
  handle(w.core, NOW + 50_000, tcp, register);
  const refusal = errorOf(sendsTo(settle(w.core, NOW + 50_000), tcp)[0]);
  handle(w.core, NOW + 50_001, udp, register);
  const again = errorOf(sendsTo(settle(w.core, NOW + 50_001), udp)[0]);
  assertEquals(again, refusal);
  assert(encodeMessage(again).length <= MIN_PADDED_REQUEST_BYTES);
  // A copy from another host is refused, not answered from the cache, and fits too.
  // (The same client's key: through another key it would be another request.)
  const victim: Endpoint = { ...VICTIM, clientKey };
  handle(w.core, NOW + 50_002, victim, deregister);
  const elsewhere = errorOf(sendsTo(settle(w.core, NOW + 50_002), victim)[0]);
  assertEquals(elsewhere.code, ERROR_CODES.bad_request);
  assert(encodeMessage(elsewhere).length <= encodeMessage(deregister).length);
});

Deno.test("ServerCore gives a padded hello, register and login from an unproven address their whole replies", () => {
  const w = world("open");
  const client = "0123456789abcdef";
  const replyTo = (message: Message) => {
    handle(w.core, NOW + 50_000, VICTIM, message);
    // (The login replaces the session the register opened at VICTIM: session_ended goes there.)
    const replies = sendsTo(settle(w.core, NOW + 50_000), VICTIM).filter((m) => "reqId" in m);
    assertEquals(replies.length, 1);
    assert(encodeMessage(replies[0]).length <= encodeMessage(message).length);
    return replies[0];
  };
  assertEquals(replyTo({ type: "hello", reqId: 1, client }).type, "hello_ok");
  const register = { type: "register", reqId: 2, client, name: "Eve", udpPort: 0, tcpPort: 5001 };
  const ok = replyTo(register as Message);
  if (ok.type !== "register_ok") throw new Error(JSON.stringify(ok));
  assertEquals(replyTo(login(3, "Eve", new Uint8Array(0))).type, "login_ok");
  // Registering her own name again is logged in (her key holds it): its whole reply too.
  assertEquals(replyTo({ ...register, reqId: 4 } as Message).type, "register_ok");
  assertEquals(w.core.stats.shortenedReplies, 0);
  assertEquals(w.core.stats.undersizedRequests, 0);
});

for (const auth of ["open", "password"] as const) {
  Deno.test(`ServerCore (${auth} mode) refuses an unpadded hello, register or login over UDP with a short error and changes nothing`, () => {
    const w = world(auth);
    const client = "0123456789abcdef";
    // A password that would let Frank in (open mode: the channel is the proof).
    let secret: Uint8Array = new TextEncoder().encode("password");
    if (auth === "open") {
      handle(w.core, NOW, VICTIM, {
        type: "register",
        reqId: 90,
        client: "00000000000000b0",
        name: "Frank",
        udpPort: 0,
        tcpPort: 5001,
      });
      const ok = sendsTo(settle(w.core, NOW), VICTIM)[0];
      if (ok?.type !== "register_ok") throw new Error(JSON.stringify(ok));
      secret = new Uint8Array(0);
    }
    const requests: Message[] = [
      { type: "hello", reqId: 1, client },
      { type: "register", reqId: 2, client, name: "Eve", udpPort: 0, tcpPort: 5001 },
      { type: "register", reqId: 3, client, name: "E".repeat(100), udpPort: 0, tcpPort: 5001 },
      login(4, auth === "open" ? "Frank" : "Alice", secret),
    ];
    const registry = JSON.stringify(w.core.registry.toJson());
    const sessions = w.core.sessions.size;
    let refused = w.core.stats.undersizedRequests;
    for (const request of requests) {
      const padded = encodeMessage(request);
      const bare = unpadded(padded);
      assert(bare.length < MIN_PADDED_REQUEST_BYTES);
      for (const bytes of [bare, padded.subarray(0, MIN_PADDED_REQUEST_BYTES - 1)]) {
        w.core.handle(NOW + 50_000, VICTIM, decodeMessage(bytes), bytes.length);
        const outputs = settle(w.core, NOW + 50_000);
        const replies = sendsTo(outputs, VICTIM);
        assertEquals(replies.length, 1, `${request.type} of ${bytes.length} bytes`);
        const error = errorOf(replies[0]);
        assertEquals(error.code, ERROR_CODES.bad_request);
        assert(encodeMessage(error).length <= bytes.length);
        const prefix = `Pad ${request.type} to 312 bytes`;
        if (bytes.length >= 12 + prefix.length) assert(error.message.startsWith(prefix));
        const events = outputs.flatMap((o) => o.type === "event" ? [o.event] : []);
        assertEquals(events.map((e) => e.kind), ["refused"]);
        assertStringIncludes(
          events[0].kind === "refused" ? events[0].reason : "",
          `(it came in ${bytes.length})`,
        );
        assertEquals(outputs.length, 2, "a reply and an event: no persist, no password check");
        assertEquals(w.core.stats.undersizedRequests, ++refused);
        assertEquals(JSON.stringify(w.core.registry.toJson()), registry);
        assertEquals(w.core.sessions.size, sessions);
      }
    }
    // The unpadded hello (16 bytes) leaves 4 bytes for the message.
    const hello = requests[0];
    w.core.handle(NOW + 50_000, VICTIM, hello, 16);
    assertEquals(errorOf(sendsTo(settle(w.core, NOW + 50_000), VICTIM)[0]).message, "Pad");
    // Nothing reached the replay cache: the same requests padded run now.
    if (auth === "open") {
      handle(w.core, NOW + 50_000, VICTIM, requests[1]);
      assertEquals(sendsTo(settle(w.core, NOW + 50_000), VICTIM)[0]?.type, "register_ok");
      handle(w.core, NOW + 50_000, VICTIM, requests[3]);
      // (Frank's session from register was at VICTIM too: it is told it ended.)
      const replies = sendsTo(settle(w.core, NOW + 50_000), VICTIM);
      assertEquals(replies.find((m) => m.type !== "session_ended")?.type, "login_ok");
    }
    // Over TCP (the address is proven) an unpadded request is fine.
    const tcp: Endpoint = { transport: "tcp", address: "10.0.0.9", port: 40000, connId: 1 };
    w.core.handle(NOW + 50_000, tcp, hello, 16);
    assertEquals(sendsTo(settle(w.core, NOW + 50_000), tcp)[0]?.type, "hello_ok");
  });
}

// ------------------------------------------------------------------ real sockets

Deno.test("ServerDriver answers unauthenticated datagrams (clear hello, handshakes, version 2) with no more bytes than they carry", async () => {
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
  const exchange = async (bytes: Uint8Array, reqId: number) => {
    // Each exchange waits for its own answer: nothing else is in flight.
    await socket.send(bytes, target);
    const [data] = await receiveWithin(socket, 10_000);
    const reply = decodeMessage(data);
    assert("reqId" in reply && reply.reqId === reqId, JSON.stringify(reply));
    return { data, reply };
  };
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
      { type: "lookup", reqId: 12, client, token, name: "Amp", nonce: new Uint8Array(0) },
      { type: "watch", reqId: 13, client, token, on: 1 },
      { type: "upload", reqId: 14, client, token, name: "f", size: 1, sha256: new Uint8Array(32) },
      { type: "download", reqId: 15, client, token, name: "f" },
      { type: "delete", reqId: 16, client, token, name: "f" },
      { type: "files", reqId: 17, client, token },
      {
        type: "introduce",
        reqId: 18,
        client,
        token,
        name: "Amp",
        session: "0123456789abcdef",
        hosts: [],
      },
    ];
    assertEquals(new Set(requests.map((r) => r.type)).size, REQUEST_TYPES.length);
    // Version 3: in clear only hello is answered, and with fewer bytes; the
    // rest gets nothing at all (it must come sealed).
    for (const request of requests) {
      const bytes = encodeMessage(request);
      await socket.send(bytes, target);
      if (request.type !== "hello") continue;
      const [data] = await receiveWithin(socket, 10_000);
      assertEquals(decodeMessage(data).type, "hello_ok");
      assert(data.length <= bytes.length, `hello_ok of ${data.length} bytes`);
    }
    // Unpadded, hello gets a short bad_request, and runs not.
    const bare = unpadded(encodeMessage({ type: "hello", reqId: 21, client }));
    const { data, reply } = await exchange(bare, 21);
    assert(data.length <= bare.length, `hello of ${bare.length}: ${data.length}`);
    assertEquals(errorOf(reply).code, ERROR_CODES.bad_request);
    assertEquals(server.core.stats.undersizedRequests, 1);
    assert(/1 undersized/.test(serverStatusText(server.status())));
    // A handshake initiation gets a response smaller than itself; one whose
    // mac1 is wrong (a sender that does not know the server's key) gets nothing.
    const channel = channelTo(server.publicKey);
    const initiation = channel.initiate(performance.now());
    await socket.send(initiation, target);
    const [response] = await receiveWithin(socket, 10_000);
    assertEquals(response[3], 0x82);
    assert(response.length < initiation.length, `${response.length} >= ${initiation.length}`);
    const stranger = channelTo(new Uint8Array(32).fill(9)).initiate(performance.now());
    await socket.send(stranger, target);
    // A version 2 hello, padded, is told in version 2 that version 3 is required.
    const v2 = encodeMessage({ type: "hello", reqId: 31, client });
    v2[2] = 2;
    await socket.send(v2, target);
    const [refusal] = await receiveWithin(socket, 10_000);
    assertEquals(refusal[2], 2);
    assert(refusal.length <= v2.length);
    const v3 = refusal.slice();
    v3[2] = 3;
    assertStringIncludes(errorOf(decodeMessage(v3)).message, "protocol version 3");
    // Nothing else came: the clear requests, the stranger's initiation got no answer.
    await assertRejects(() => receiveWithin(socket, 300));
    assertEquals(server.core.registry.size, 0);
  } finally {
    socket.close();
    await server.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("ServerDriver answers a clear hello in clear and within its size, even from the address and port of a secure session", async () => {
  // Found by a black-box test: a forged clear hello from a client's own
  // address and port got its reply sealed in that client's session, 32 bytes
  // over the size it was fitted to (16 bytes in, 47 out).
  const dataDir = await Deno.makeTempDir({ prefix: "switchboard_amplification_" });
  const server = await ServerDriver.start({
    host: "127.0.0.1",
    udpPort: 0,
    tcpPort: 0,
    dataDir,
    version: VERSION,
  });
  const client = "0123456789abcdef";
  const sealed = new SealedUdp("127.0.0.1", server.udpPort);
  try {
    assertEquals((await sealed.ask({ type: "hello", reqId: 1, client })).type, "hello_ok");
    // The key is pinned: this hello goes sealed and confirms the session.
    assertEquals((await sealed.ask({ type: "hello", reqId: 2, client })).type, "hello_ok");
    const padded = encodeMessage({ type: "hello", reqId: 3, client });
    for (const bytes of [unpadded(padded), padded]) {
      const before = sealed.raw.length;
      await sealed.sendRaw(bytes);
      await sealed.waitFor(() => sealed.raw.length > before ? true : undefined);
      const reply = sealed.raw[before];
      assert(reply.length <= bytes.length, `${reply.length} bytes for ${bytes.length}`);
      assertEquals(reply[3] & 0x80, 0, "in clear");
    }
  } finally {
    await sealed.close();
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

Deno.test("ReplySizing limits replies to unproven UDP addresses to the request's size", () => {
  const proven = new Uint8Array(16).fill(7);
  const sizing = new ReplySizing((token) => token[0] === 7);
  const udp: Endpoint = { transport: "udp", address: "192.0.2.7", port: 5000 };
  const list = { type: "list", reqId: 1, client: "0123456789abcdef", after: "" } as const;
  const withToken = { ...list, token: proven };
  const withOther = { ...list, token: new Uint8Array(16) };
  for (const request of [withToken, withOther]) sizing.received(request, 40);
  assertEquals(sizing.limit(udp, withToken), Infinity, "a proven token");
  assertEquals(sizing.limit(udp, withOther), 40, "the size it came in");
  assertEquals(sizing.limit({ ...udp, transport: "tcp", connId: 1 }, withOther), Infinity);
  assertEquals(sizing.limit(udp, { ...list, token: new Uint8Array(16) }), 0, "never recorded");

  const error = {
    type: "error",
    reqId: 1,
    code: 1,
    message: "Not logged in; log in again",
  } as const;
  const shortened = sizing.fit("list", error, 12 + 13);
  assertEquals(shortened, {
    kind: "send",
    reply: { ...error, message: "Not logged in" },
    shortened: true,
  });
  assertEquals(sizing.fit("list", error, 11), { kind: "drop" });
  const ok = { type: "heartbeat_ok", reqId: 1 } as const;
  assertEquals(sizing.fit("heartbeat", ok, 4).kind, "refuse");
  assertEquals(sizing.fit("heartbeat", ok, Infinity), {
    kind: "send",
    reply: ok,
    shortened: false,
  });
  assertStringIncludes(
    (sizing.fit("hello", ok, 4) as { reason: string }).reason,
    `Pad hello to ${MIN_PADDED_REQUEST_BYTES} bytes`,
  );
});
