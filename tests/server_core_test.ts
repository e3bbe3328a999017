import { assert, assertEquals, assertNotEquals, assertStringIncludes } from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { toHex } from "../lib/hex.ts";
import { introductionPsk } from "../lib/crypto/introduction.ts";
import { SeededRandom } from "../lib/random.ts";
import { Registry } from "../lib/server/registry.ts";
import {
  type Endpoint,
  ServerCore,
  type ServerCoreOptions,
  type ServerEvent,
  type ServerOutput,
} from "../lib/server/server_core.ts";
import type { StoredFile } from "../lib/server/stored_files.ts";
import { encodeMessage } from "../lib/wire/codec.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import {
  AUTH_MODES,
  MAX_DATAGRAM_BYTES,
  type Message,
  type MessageOf,
  type MessageType,
  PRESENCE_CHANGES,
  SESSION_END_REASONS,
} from "../lib/wire/messages.ts";

const NOW = Date.UTC(2025, 0, 2, 3, 4, 5);
const ALICE_ID = "00112233aabbccdd";
const BOB_ID = "ffeeddcc99887766";
const CAROL_ID = "0000000000000003";
// Each client's channel key: its open-mode identity (the driver puts it in the endpoint).
const KEY_ALICE = new Uint8Array(32).fill(0xa1);
const KEY_BOB = new Uint8Array(32).fill(0xb0);
const KEY_CAROL = new Uint8Array(32).fill(0xc0);
const FROM_ALICE: Endpoint = {
  transport: "udp",
  address: "10.0.0.1",
  port: 40001,
  clientKey: KEY_ALICE,
};
const FROM_BOB: Endpoint = {
  transport: "udp",
  address: "10.0.0.2",
  port: 40002,
  clientKey: KEY_BOB,
};
const FROM_CAROL: Endpoint = {
  transport: "udp",
  address: "10.0.0.3",
  port: 40003,
  clientKey: KEY_CAROL,
};
/** Open mode's login sends no secret: the channel's key is the proof. */
const NO_SECRET = new Uint8Array(0);

// --- helpers -----------------------------------------------------------------

function newCore(options: Partial<ServerCoreOptions> = {}): ServerCore {
  return new ServerCore({
    registry: new Registry(),
    random: new SeededRandom(1),
    tcpPort: 3001,
    version: "9.9.9",
    ...options,
  });
}

function drain(core: ServerCore): ServerOutput[] {
  const out: ServerOutput[] = [];
  for (let o = core.poll(); o !== undefined; o = core.poll()) out.push(o);
  return out;
}

function sends(outputs: ServerOutput[]): { to: Endpoint; message: Message }[] {
  return outputs.flatMap((o) => o.type === "send" ? [{ to: o.to, message: o.message }] : []);
}

function persists(outputs: ServerOutput[]): Extract<ServerOutput, { type: "persist" }>[] {
  return outputs.flatMap((o) => o.type === "persist" ? [o] : []);
}

function events(outputs: ServerOutput[]): ServerEvent[] {
  return outputs.flatMap((o) => o.type === "event" ? [o.event] : []);
}

function outputsOf<T extends ServerOutput["type"]>(
  outputs: ServerOutput[],
  type: T,
): Extract<ServerOutput, { type: T }>[] {
  return outputs.filter((o): o is Extract<ServerOutput, { type: T }> => o.type === type);
}

/** The messages of one type among the sends, in order. */
function messagesOf<T extends MessageType>(outputs: ServerOutput[], type: T): MessageOf<T>[] {
  return sends(outputs).flatMap((s) => s.message.type === type ? [s.message as MessageOf<T>] : []);
}

/** Asserts a message's type and narrows it. */
function as<T extends MessageType>(message: Message | undefined, type: T): MessageOf<T> {
  if (message === undefined) throw new Error(`expected a ${type} message, got nothing`);
  assertEquals(message.type, type, `expected ${type}, got ${JSON.stringify(message)}`);
  return message as MessageOf<T>;
}

function assertError(message: Message | undefined, code: keyof typeof ERROR_CODES) {
  const error = as(message, "error");
  assertEquals(error.code, ERROR_CODES[code], `expected ${code}, got: ${error.message}`);
  return error;
}

/**
 * Hands the core one message as a driver does: with the size it arrived in,
 * that of its encoding (padding included), as a client of this build sends it.
 */
function handle(core: ServerCore, now: number, from: Endpoint, message: Message): void {
  core.handle(now, from, message, encodeMessage(message).length);
}

/** Handles one message and returns every output. */
function call(core: ServerCore, now: number, from: Endpoint, message: Message): ServerOutput[] {
  handle(core, now, from, message);
  return drain(core);
}

/** Handles one request and returns the one reply sent back to its source. */
function ask(core: ServerCore, now: number, from: Endpoint, message: Message): Message {
  const replies = sends(call(core, now, from, message)).filter((s) =>
    sameEndpoint(s.to, from) && "reqId" in s.message && s.message.type !== "file_chunk"
  );
  assertEquals(replies.length, 1, `expected one reply, got ${JSON.stringify(replies)}`);
  return replies[0].message;
}

function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  return a.transport === b.transport && a.address === b.address && a.port === b.port;
}

/** Runs every timeout due up to `to`, as a driver would, and returns the outputs. */
function advance(core: ServerCore, to: number): ServerOutput[] {
  const out: ServerOutput[] = [];
  for (let i = 0; i < 1000; i++) {
    const next = core.nextTimeout();
    if (next === undefined || next > to) return out;
    core.onTimeout(next);
    out.push(...drain(core));
  }
  throw new Error("onTimeout does not make progress");
}

function register(
  reqId: number,
  name: string,
  options: { client?: string; udpPort?: number; tcpPort?: number } = {},
): MessageOf<"register"> {
  return {
    type: "register",
    reqId,
    client: options.client ?? ALICE_ID,
    name,
    udpPort: options.udpPort ?? 0,
    tcpPort: options.tcpPort ?? 5001,
  };
}

function login(
  reqId: number,
  name: string,
  secret: Uint8Array,
  options: { client?: string; udpPort?: number; tcpPort?: number } = {},
): MessageOf<"login"> {
  return {
    type: "login",
    reqId,
    client: options.client ?? ALICE_ID,
    name,
    secret,
    udpPort: options.udpPort ?? 0,
    tcpPort: options.tcpPort ?? 5001,
  };
}

type TokenRequest = "deregister" | "logout" | "heartbeat" | "files";

function withToken<T extends TokenRequest>(
  type: T,
  reqId: number,
  token: Uint8Array,
  client = ALICE_ID,
): MessageOf<T> {
  return { type, reqId, client, token } as unknown as MessageOf<T>;
}

function list(reqId: number, token: Uint8Array, after = "", client = ALICE_ID): MessageOf<"list"> {
  return { type: "list", reqId, client, token, after };
}

function lookup(reqId: number, token: Uint8Array, name: string): MessageOf<"lookup"> {
  return { type: "lookup", reqId, client: ALICE_ID, token, name, nonce: new Uint8Array(0) };
}

function watch(reqId: number, token: Uint8Array, client: string, on = 1): MessageOf<"watch"> {
  return { type: "watch", reqId, client, token, on };
}

interface Identity {
  /** The channel key it registered with. */
  key: Uint8Array;
  token: Uint8Array;
}

/** Registers `name`, completes the persist, and returns its channel key and session token. */
function registerPersisted(
  core: ServerCore,
  reqId: number,
  name: string,
  from = FROM_ALICE,
  client = ALICE_ID,
  now = NOW,
): Identity {
  handle(core, now, from, register(reqId, name, { client }));
  const [persist] = persists(drain(core));
  assert(persist !== undefined, "no persist output");
  core.persisted(persist.version, now);
  const replies = sends(drain(core)).filter((s) => sameEndpoint(s.to, from));
  const ok = as(replies[0]?.message, "register_ok");
  return { key: from.clientKey!, token: ok.token };
}

// --- hello and register --------------------------------------------------------

Deno.test("ServerCore.handle() answers hello with the TCP port, version, auth mode and lease", () => {
  const core = newCore();
  assertEquals(sends(call(core, NOW, FROM_ALICE, { type: "hello", reqId: 7, client: ALICE_ID })), [
    {
      to: FROM_ALICE,
      message: {
        type: "hello_ok",
        reqId: 7,
        tcpPort: 3001,
        serverVersion: "9.9.9",
        auth: AUTH_MODES.open,
        leaseMs: 30_000,
        serverKey: new Uint8Array(32),
      },
    },
  ]);
  const password = newCore({ auth: "password", leaseMs: 12_000 });
  const reply = as(
    ask(password, NOW, FROM_ALICE, { type: "hello", reqId: 8, client: ALICE_ID }),
    "hello_ok",
  );
  assertEquals([reply.auth, reply.leaseMs], [AUTH_MODES.password, 12_000]);
});

Deno.test("ServerCore.handle() sends register_ok only after persisted(version, now)", () => {
  const core = newCore();
  handle(core, NOW, FROM_ALICE, register(1, "Alice"));
  const before = drain(core);
  assertEquals(sends(before), [], "nothing may be sent before the registry is durable");
  assertEquals(before.length, 1);
  const [persist] = persists(before);
  assertEquals(Object.keys(persist.registry), ["Alice"]);
  assertEquals(persist.registry.Alice.ip, "10.0.0.1");
  assertEquals(persist.registry.Alice.udp_port, 40001);
  assertEquals(persist.registry.Alice.tcp_port, 5001);
  assertEquals(persist.registry.Alice.registered_at, new Date(NOW).toISOString());
  assert(core.hasUnsavedChanges);
  assertEquals(core.sessions.size, 0, "no session before the registration is durable");

  core.persisted(persist.version, NOW + 5);
  const after = drain(core);
  const replies = sends(after);
  assertEquals(replies.length, 1);
  assertEquals(replies[0].to, FROM_ALICE);
  const ok = as(replies[0].message, "register_ok");
  assertEquals(ok.token.length, 16);
  // The name is bound to the channel's public key; no secret is handed out or kept.
  assertEquals(persist.registry.Alice.public_key, toHex(KEY_ALICE));
  assertEquals(persist.registry.Alice.key_sha256, "");
  assertEquals(events(after).map((e) => e.kind), ["registered", "logged_in", "active"]);
  assertEquals(persists(after), []);
  assert(!core.hasUnsavedChanges);
  // register_ok opens a session with the token, from the time of persisted().
  const session = core.sessions.byToken(ok.token);
  assertEquals(session?.name, "Alice");
  assertEquals(session?.since, NOW + 5);
  assertEquals(session?.leaseUntil, NOW + 5 + 30_000);
});

Deno.test("ServerCore.handle() refuses a name taken in another case with name_taken", () => {
  const core = newCore();
  registerPersisted(core, 1, "Alice");
  const out = call(core, NOW, FROM_BOB, register(1, "ALICE", { client: BOB_ID }));
  assertEquals(persists(out), []);
  const [reply] = sends(out);
  assertEquals(reply.to, FROM_BOB);
  const error = assertError(reply.message, "name_taken");
  assertStringIncludes(error.message, "ALICE");
  assertStringIncludes(error.message, "taken");
  assertEquals(core.registry.size, 1);
  assertEquals(core.registry.get("alice")?.ip, "10.0.0.1");
  assertEquals(core.stats.refused, 1);
});

Deno.test("ServerCore.handle() refuses invalid names with invalid_name", () => {
  for (const name of ["", " Alice", "a/b", "x".repeat(33), "semi;colon"]) {
    const core = newCore();
    const out = call(core, NOW, FROM_ALICE, register(1, name));
    assertEquals(persists(out), [], `persisted for ${JSON.stringify(name)}`);
    assertError(sends(out)[0].message, "invalid_name");
    assertEquals(core.registry.size, 0);
  }
});

Deno.test("ServerCore.handle() refuses a name that differs from a registered one only in spaces", () => {
  const core = newCore();
  registerPersisted(core, 1, "Bob Jones");
  const out = call(core, NOW, FROM_BOB, register(1, "Bob  Jones", { client: BOB_ID }));
  assertError(sends(out)[0].message, "name_taken");
  assertEquals(core.registry.size, 1);
});

Deno.test("ServerCore.handle() refuses a TCP port below 1024", () => {
  const core = newCore();
  const out = call(core, NOW, FROM_ALICE, register(1, "Alice", { tcpPort: 1023 }));
  assertEquals(persists(out), []);
  const error = assertError(sends(out)[0].message, "bad_request");
  assertStringIncludes(error.message, "1023");
  assertEquals(core.registry.size, 0);

  assertEquals(
    persists(call(core, NOW, FROM_ALICE, register(2, "Alice", { tcpPort: 1024 }))).length,
    1,
  );
});

Deno.test("ServerCore.handle() answers a retransmitted register from the replay cache", () => {
  const core = newCore();
  handle(core, NOW, FROM_ALICE, register(1, "Alice"));
  const [persist] = persists(drain(core));
  core.persisted(persist.version, NOW);
  const first = drain(core);
  const [original] = sends(first);

  const again = call(core, NOW + 1000, FROM_ALICE, register(1, "Alice"));
  assertEquals(persists(again), [], "a replay must not persist again");
  const [replayed] = sends(again);
  assertEquals(replayed.message, original.message, "the replay carries the same key and token");
  assertEquals(events(again).map((e) => e.kind), ["replayed"]);
  assertEquals(core.registry.size, 1);
  assertEquals(core.sessions.size, 1);
  assertEquals(
    [...events(first), ...events(again)].filter((e) => e.kind === "registered").length,
    1,
  );
  assertEquals(core.stats.replays, 1);
  assertEquals(core.stats.requests, 2);
});

Deno.test("ServerCore.handle() never hands a register's reply to a copy sent from another host", () => {
  const core = newCore();
  const original = registerPersisted(core, 1, "Alice");
  const sameHostNewPort: Endpoint = { ...FROM_ALICE, port: 40999 };

  // The same bytes, through the same channel key, from another host: refused, the token stays
  // private. (Through another key they are another request: see the next lines.)
  const otherHost: Endpoint = { ...FROM_BOB, clientKey: KEY_ALICE };
  const copy = call(core, NOW + 1000, otherHost, register(1, "Alice"));
  assertEquals(messagesOf(copy, "register_ok"), []);
  assertStringIncludes(
    assertError(sends(copy)[0].message, "bad_request").message,
    "came from another address",
  );
  assertEquals(core.sessions.size, 1);
  // A retransmission from the same host (a NAT that rebound the port) is still answered.
  const [again] = messagesOf(
    call(core, NOW + 2000, sameHostNewPort, register(1, "Alice")),
    "register_ok",
  );
  assertEquals(again.token, original.token);
  // Through Bob's own channel the same bytes are a new request, for a taken name.
  assertError(
    sends(call(core, NOW + 2500, FROM_BOB, register(1, "Alice")))[0].message,
    "name_taken",
  );

  // After a restart (no replay cache), the copy from another host is a new request for a taken name.
  const restarted = newCore({ registry: Registry.fromJson(core.registry.toJson()) });
  const late = call(restarted, NOW + 3000, FROM_BOB, register(1, "Alice"));
  assertEquals(messagesOf(late, "register_ok"), []);
  assertError(sends(late)[0].message, "name_taken");
});

Deno.test("ServerCore.handle() answers a refused request again with the same error", () => {
  const core = newCore();
  const [first] = sends(call(core, NOW, FROM_ALICE, register(1, "a/b")));
  const [second] = sends(call(core, NOW, FROM_ALICE, register(1, "a/b")));
  assertEquals(second.message, first.message);
  assertEquals(core.stats.replays, 1);
});

Deno.test("ServerCore.handle() drops a retransmission while the write is pending", () => {
  const core = newCore();
  handle(core, NOW, FROM_ALICE, register(1, "Alice"));
  const [persist] = persists(drain(core));
  handle(core, NOW + 500, FROM_ALICE, register(1, "Alice"));
  handle(core, NOW + 1500, FROM_ALICE, register(1, "Alice"));
  assertEquals(drain(core), [], "retransmissions of a pending request are dropped");
  core.persisted(persist.version, NOW + 1600);
  const out = drain(core);
  assertEquals(sends(out).length, 1, "answered once");
  assertEquals(sends(out)[0].message.type, "register_ok");
  assertEquals(events(out).filter((e) => e.kind === "registered").length, 1);
  assertEquals(core.registry.size, 1);
});

Deno.test("ServerCore.handle() executes a reused reqId with different content as new", () => {
  const core = newCore();
  assertError(sends(call(core, NOW, FROM_ALICE, register(1, "a/b")))[0].message, "invalid_name");
  // Same client id and reqId, different name: not a retransmission.
  const out = call(core, NOW, FROM_ALICE, register(1, "Alice"));
  assertEquals(persists(out).length, 1, "the new request is executed");
  assertEquals(sends(out), []);
  core.persisted(persists(out)[0].version, NOW);
  assertEquals(sends(drain(core))[0].message.type, "register_ok");
  assertEquals(core.registry.get("alice")?.name, "Alice");
  assertEquals(core.stats.replays, 0);
});

Deno.test("ServerCore.handle() keeps replay state per client id", () => {
  const core = newCore();
  registerPersisted(core, 1, "Alice");
  // Bob uses the same reqId and content shape but another client id.
  assertError(
    sends(call(core, NOW, FROM_BOB, register(1, "Alice", { client: BOB_ID })))[0].message,
    "name_taken",
  );
});

// --- deregister ------------------------------------------------------------------

Deno.test("ServerCore.handle() deregisters only with the session token", async (t) => {
  await t.step("a wrong token gives not_logged_in and leaves the registry", () => {
    const core = newCore();
    const { token } = registerPersisted(core, 1, "Alice");
    const wrong = token.slice();
    wrong[0] ^= 0xff;
    const out = call(core, NOW, FROM_BOB, withToken("deregister", 5, wrong, BOB_ID));
    assertEquals(persists(out), []);
    assertError(sends(out)[0].message, "not_logged_in");
    assertEquals(core.registry.size, 1);
    assertEquals(core.sessions.size, 1);
  });

  await t.step("an empty token gives not_logged_in", () => {
    const core = newCore();
    registerPersisted(core, 1, "Alice");
    const reply = ask(core, NOW, FROM_BOB, withToken("deregister", 5, new Uint8Array(0), BOB_ID));
    assertError(reply, "not_logged_in");
    assertEquals(core.registry.size, 1);
  });

  await t.step("the name's bytes are not a session token", () => {
    const core = newCore();
    registerPersisted(core, 1, "Alice");
    const guess = KEY_ALICE.subarray(0, 16);
    assertError(ask(core, NOW, FROM_ALICE, withToken("deregister", 5, guess)), "not_logged_in");
    assertEquals(core.registry.size, 1);
  });

  await t.step("a second deregister while the first is being saved gives not_registered", () => {
    const core = newCore();
    const { token } = registerPersisted(core, 1, "Alice");
    const [write] = persists(call(core, NOW, FROM_ALICE, withToken("deregister", 2, token)));
    assert(write !== undefined);
    const error = assertError(
      ask(core, NOW, FROM_ALICE, withToken("deregister", 3, token)),
      "not_registered",
    );
    assertStringIncludes(error.message, "Alice");
    core.persisted(write.version, NOW);
    assertEquals(messagesOf(drain(core), "deregister_ok"), [{ type: "deregister_ok", reqId: 2 }]);
  });

  await t.step("the right token removes the identity, ends the session and deletes files", () => {
    const core = newCore();
    const { key, token } = registerPersisted(core, 1, "Alice");
    const bob = registerPersisted(core, 1, "Bob", FROM_BOB, BOB_ID);
    ask(core, NOW, FROM_BOB, watch(2, bob.token, BOB_ID));
    const out = call(core, NOW + 10, FROM_ALICE, withToken("deregister", 2, token));
    assertEquals(sends(out), []);
    const [persist] = persists(out);
    assertEquals(Object.keys(persist.registry), ["Bob"]);
    assertEquals(core.registry.size, 1);
    assertEquals(core.sessions.size, 2, "the session lasts until the change is durable");

    core.persisted(persist.version, NOW + 20);
    const after = drain(core);
    assertEquals(messagesOf(after, "deregister_ok"), [{ type: "deregister_ok", reqId: 2 }]);
    const deregistered = events(after).find((e) => e.kind === "deregistered");
    if (deregistered?.kind !== "deregistered") throw new Error("no deregistered event");
    assertEquals([deregistered.name, deregistered.transport], ["Alice", "udp"]);
    assert(
      events(after).some((e) =>
        e.kind === "logged_out" && e.name === "Alice" && e.why === "deregister"
      ),
    );
    assertEquals(outputsOf(after, "delete_user_files"), [
      { type: "delete_user_files", user: "Alice" },
    ]);
    const [left] = messagesOf(after, "presence");
    assertEquals([left.name, left.change], ["Alice", PRESENCE_CHANGES.left]);
    assertEquals(core.sessions.byName("Alice"), undefined);

    // The old token and the old key are dead.
    assertError(ask(core, NOW + 30, FROM_ALICE, withToken("heartbeat", 3, token)), "not_logged_in");
    assertError(ask(core, NOW + 30, FROM_ALICE, login(4, "Alice", NO_SECRET)), "login_failed");
    void key;
  });

  await t.step("a seed entry without a key can neither log in nor be deregistered", () => {
    const registry = Registry.fromJson({
      Seed: { ip: "10.0.0.9", udp_port: 4000, tcp_port: 4001 },
    });
    const core = newCore({ registry });
    assertError(ask(core, NOW, FROM_ALICE, login(3, "Seed", new Uint8Array(16))), "login_failed");
    assertError(
      ask(core, NOW, FROM_ALICE, withToken("deregister", 4, new Uint8Array(16))),
      "not_logged_in",
    );
    assertEquals(core.registry.size, 1);
  });

  await t.step("password mode refuses it with not_allowed", () => {
    const core = newCore({
      auth: "password",
      users: new Map([["alice", { name: "Alice", passwordHash: "H" }]]),
    });
    handle(core, NOW, FROM_ALICE, login(1, "Alice", new TextEncoder().encode("pw")));
    const [verify] = outputsOf(drain(core), "verify_password");
    core.passwordChecked(NOW, verify.id, true);
    const { token } = as(messagesOf(drain(core), "login_ok")[0], "login_ok");
    assertError(ask(core, NOW, FROM_ALICE, withToken("deregister", 2, token)), "not_allowed");
    assertEquals(core.sessions.size, 1);
  });
});

Deno.test("ServerCore.persistFailed() undoes a register and answers not_saved", () => {
  const core = newCore();
  handle(core, NOW, FROM_ALICE, register(1, "Alice"));
  const [persist] = persists(drain(core));
  assertEquals(core.registry.size, 1);
  core.persistFailed(persist.version, "disk full");
  const out = drain(core);
  assertEquals(core.registry.size, 0);
  assertEquals(core.sessions.size, 0);
  const error = assertError(sends(out)[0].message, "not_saved");
  assertStringIncludes(error.message, "Alice");
  assert(events(out).some((e) => e.kind === "save_failed" && e.reason === "disk full"));
  assertEquals(events(out).filter((e) => e.kind === "registered"), []);
  assertEquals(persists(out), [], "nothing left to persist");
  assert(!core.hasUnsavedChanges);

  // The name is free again for a new request.
  assertEquals(
    persists(call(core, NOW, FROM_BOB, register(1, "Alice", { client: BOB_ID }))).length,
    1,
  );
});

Deno.test("ServerCore.persistFailed() undoes a deregister and answers not_saved", () => {
  const core = newCore();
  const { key, token } = registerPersisted(core, 1, "Alice");
  const [persist] = persists(call(core, NOW, FROM_ALICE, withToken("deregister", 2, token)));
  assertEquals(core.registry.size, 0);
  core.persistFailed(persist.version, "read-only file system");
  const out = drain(core);
  assertError(sends(out)[0].message, "not_saved");
  assertEquals(outputsOf(out, "delete_user_files"), []);
  assertEquals(core.registry.get("alice")?.publicKey, toHex(key));
  // The session survives.
  assertEquals(ask(core, NOW, FROM_ALICE, withToken("heartbeat", 3, token)).type, "heartbeat_ok");
});

Deno.test("ServerCore.handle() group-commits changes made while a persist is in flight", () => {
  const core = newCore();
  const [first] = persists(call(core, NOW, FROM_ALICE, register(1, "Alice")));
  assertEquals(Object.keys(first.registry), ["Alice"]);

  handle(core, NOW, FROM_BOB, register(1, "Bob", { client: BOB_ID }));
  handle(core, NOW, FROM_CAROL, register(1, "Carol", { client: CAROL_ID }));
  assertEquals(drain(core), [], "no second persist while the first is in flight");

  core.persisted(first.version, NOW);
  const out = drain(core);
  assertEquals(sends(out).map((s) => s.to), [FROM_ALICE]);
  const [second] = persists(out);
  assert(second.version > first.version);
  assertEquals(Object.keys(second.registry), ["Alice", "Bob", "Carol"]);

  core.persisted(second.version, NOW);
  const last = drain(core);
  assertEquals(sends(last).map((s) => s.message.type), ["register_ok", "register_ok"]);
  assertEquals(sends(last).map((s) => s.to.port), [40002, 40003]);
  assertEquals(persists(last), []);
  assertEquals(core.sessions.size, 3);
});

Deno.test("ServerCore.persistFailed() undoes every change not yet durable", () => {
  const core = newCore();
  const [first] = persists(call(core, NOW, FROM_ALICE, register(1, "Alice")));
  call(core, NOW, FROM_BOB, register(1, "Bob", { client: BOB_ID }));
  core.persistFailed(first.version, "disk full");
  const out = drain(core);
  // Bob's change was made on top of Alice's unsaved one, so both are undone.
  assertEquals(sends(out).map((s) => (s.message as MessageOf<"error">).code), [
    ERROR_CODES.not_saved,
    ERROR_CODES.not_saved,
  ]);
  assertEquals(persists(out), []);
  assertEquals(core.registry.size, 0);
  assertEquals(core.hasUnsavedChanges, false);
  // The server goes on: the next change is written as usual.
  const [next] = persists(call(core, NOW, FROM_BOB, register(2, "Bob", { client: BOB_ID })));
  assertEquals(Object.keys(next.registry), ["Bob"]);
  core.persisted(next.version, NOW);
  assertEquals(sends(drain(core))[0].message.type, "register_ok");
});

Deno.test("ServerCore.persistFailed() restores a name whose deregister and re-register were pending", () => {
  const core = newCore();
  const { token } = registerPersisted(core, 1, "Alice");
  const [write] = persists(call(core, NOW, FROM_ALICE, withToken("deregister", 2, token)));
  call(core, NOW, FROM_BOB, register(1, "alice", { client: BOB_ID }));
  core.persistFailed(write.version, "disk full");
  const out = drain(core);
  assertEquals(sends(out).length, 2);
  assertEquals(core.registry.records().map((r) => r.name), ["Alice"]);
  assertEquals(core.hasUnsavedChanges, false);
});

Deno.test("ServerCore.handle() takes the UDP port from the source over UDP", () => {
  const core = newCore();
  call(core, NOW, FROM_ALICE, register(1, "Alice", { udpPort: 12345 }));
  assertEquals(core.registry.get("Alice")?.udpPort, FROM_ALICE.port);
});

Deno.test("ServerCore.handle() takes the UDP port from the message over TCP", () => {
  const core = newCore();
  const tcp: Endpoint = {
    transport: "tcp",
    address: "10.0.0.5",
    port: 51000,
    connId: 4,
    clientKey: KEY_ALICE,
  };
  const [persist] = persists(call(core, NOW, tcp, register(1, "Alice", { udpPort: 12345 })));
  assertEquals(core.registry.get("Alice")?.udpPort, 12345);
  assertEquals(core.registry.get("Alice")?.ip, "10.0.0.5");
  core.persisted(persist.version, NOW);
  const out = drain(core);
  assertEquals(sends(out)[0].to, tcp);
  const registered = events(out).find((e) => e.kind === "registered");
  if (registered?.kind !== "registered") throw new Error("no registered event");
  assertEquals(
    [registered.name, registered.ip, registered.udpPort, registered.tcpPort, registered.transport],
    ["Alice", "10.0.0.5", 12345, 5001, "tcp"],
  );
  assertEquals(core.sessions.byName("Alice")?.udpPort, 12345);

  assertError(
    sends(call(core, NOW, tcp, register(2, "Bob", { udpPort: 0 })))[0].message,
    "bad_request",
  );
});

Deno.test("ServerCore.handle() marks text verified only with the name's session token", async (t) => {
  const core = newCore();
  const { key, token } = registerPersisted(core, 1, "Alice");
  const tcp: Endpoint = { transport: "tcp", address: "10.0.0.1", port: 51000, connId: 1 };
  const cases: [string, string, Uint8Array, boolean][] = [
    ["with its token", "alice", token, true],
    ["with its token and no name", "", token, true],
    ["with the first half of its channel key", "Alice", key.subarray(0, 16), false],
    ["with a wrong token", "Alice", new Uint8Array(16), false],
    ["with no token", "Alice", new Uint8Array(0), false],
    ["claiming another name", "Mallory", token, false],
    ["anonymous", "", new Uint8Array(0), false],
  ];
  let reqId = 10;
  for (const [label, name, tok, verified] of cases) {
    await t.step(label, () => {
      reqId++;
      const out = call(core, NOW, tcp, {
        type: "text",
        reqId,
        client: ALICE_ID,
        name,
        token: tok,
        text: "hi",
      });
      assertEquals(persists(out), []);
      assertEquals(sends(out), [{ to: tcp, message: { type: "text_ok", reqId } }]);
      const [event] = events(out);
      if (event.kind !== "text") throw new Error(`expected a text event, got ${event.kind}`);
      assertEquals(event.verified, verified);
      assertEquals(event.text, "hi");
      assertEquals(event.name, verified ? "Alice" : name);
    });
  }
});

Deno.test("ServerCore.handle() reports a reply sent to it as unexpected", () => {
  const core = newCore();
  const out = call(core, NOW, FROM_ALICE, { type: "text_ok", reqId: 1 });
  assertEquals(sends(out), []);
  assertEquals(events(out), [{ kind: "unexpected", from: FROM_ALICE, type: "text_ok" }]);
  assertEquals(core.stats.requests, 0);
});

Deno.test("ServerCore gives different tokens to different registrations", () => {
  const core = newCore();
  const a = registerPersisted(core, 1, "Alice");
  const b = registerPersisted(core, 1, "Bob", FROM_BOB, BOB_ID);
  assertNotEquals(a.token, b.token);
});

Deno.test("ServerCore.handle() refuses a register that did not come through an encrypted channel", () => {
  const core = newCore();
  const clear: Endpoint = { transport: "udp", address: "10.0.0.1", port: 40001 };
  const error = assertError(ask(core, NOW, clear, register(1, "Alice")), "bad_request");
  assertStringIncludes(error.message, "encrypted channel");
  assertEquals(core.registry.size, 0);
});

Deno.test("ServerCore.handle() gives a register retransmitted after a restart a new session on the same binding", () => {
  const before = newCore();
  const original = registerPersisted(before, 1, "Alice");

  // A new core (the replay cache and sessions are gone) on the persisted registry.
  const after = newCore({
    registry: Registry.fromJson(before.registry.toJson()),
    random: new SeededRandom(2),
  });
  const out = call(after, NOW + 5000, FROM_ALICE, register(1, "Alice"));
  assertEquals(persists(out), [], "nothing changes");
  const [ok] = messagesOf(out, "register_ok");
  assertEquals(ok.reqId, 1);
  assertNotEquals(ok.token, original.token, "the session is new");
  assertEquals(after.sessions.byToken(ok.token)?.name, "Alice");
  assertEquals(after.registry.size, 1);
  // The same request through a channel with another key is a new request for a taken name.
  const stranger: Endpoint = { ...FROM_ALICE, clientKey: KEY_CAROL };
  assertError(ask(after, NOW + 5000, stranger, register(1, "Alice")), "name_taken");
  // The key logs in.
  assertEquals(ask(after, NOW + 6000, FROM_ALICE, login(2, "Alice", NO_SECRET)).type, "login_ok");

  // Another client's request for the name is still refused.
  assertError(
    sends(call(after, NOW + 5000, FROM_BOB, register(1, "Alice", { client: BOB_ID })))[0].message,
    "name_taken",
  );
});

Deno.test("ServerCore.handle() never hands a session to a changed or late copy of a register", () => {
  const before = newCore({ random: new SeededRandom(3) });
  registerPersisted(before, 1, "Alice");
  const restarted = () =>
    newCore({
      random: new SeededRandom(3),
      registry: Registry.fromJson(before.registry.toJson()),
    });

  // Same client id and request id, different content: a new request, refused.
  const changed = restarted();
  assertError(
    sends(call(changed, NOW + 5000, FROM_BOB, register(1, "Alice", { tcpPort: 6000 })))[0].message,
    "name_taken",
  );

  // The very same request after the replay window, through another key: refused too.
  const late = restarted();
  assertError(
    sends(
      call(late, NOW + 10 * 60_000, { ...FROM_ALICE, clientKey: KEY_BOB }, register(1, "Alice")),
    )[0]
      .message,
    "name_taken",
  );
  // Through Alice's own key (her channel proves it) it is her registering her name again: logged in.
  const own = restarted();
  const ok = as(
    sends(call(own, NOW + 10 * 60_000, FROM_ALICE, register(1, "Alice")))[0].message,
    "register_ok",
  );
  assertEquals(own.sessions.byToken(ok.token)?.name, "Alice");
  assertEquals(persists(drain(own)), [], "nothing to write");
});

Deno.test("ServerCore.handle() holds a retransmission whose cache entry was evicted until the write lands", () => {
  const core = newCore({ replay: { perClient: 1 } });
  const [write] = persists(call(core, NOW, FROM_ALICE, register(1, "Alice")));
  // A change-making request with another reqId evicts reqId 1 from the cache.
  call(core, NOW, FROM_ALICE, withToken("logout", 2, new Uint8Array(16)));
  assertEquals(
    sends(call(core, NOW + 500, FROM_ALICE, register(1, "Alice"))),
    [],
    "no reply before the registration is durable",
  );
  core.persisted(write.version, NOW + 600);
  assertEquals(sends(drain(core)).map((s) => s.message.type), ["register_ok"]);
  assertEquals(core.sessions.size, 1);
});

// --- login and one session per name ------------------------------------------------

Deno.test("ServerCore.handle() login with the key from another address replaces the session", async (t) => {
  const core = newCore({ random: new SeededRandom(11) });
  const alice = registerPersisted(core, 1, "Alice");
  const bob = registerPersisted(core, 1, "Bob", FROM_BOB, BOB_ID);
  const elsewhere: Endpoint = {
    transport: "udp",
    address: "192.168.7.7",
    port: 50007,
    clientKey: alice.key,
  };
  let newToken: Uint8Array = new Uint8Array();

  await t.step("login_ok says it replaced a session and carries a new token", () => {
    const out = call(
      core,
      NOW + 100,
      elsewhere,
      login(1, "alice", NO_SECRET, { client: CAROL_ID }),
    );
    const ok = as(sends(out).find((s) => sameEndpoint(s.to, elsewhere))?.message, "login_ok");
    assertEquals([ok.reqId, ok.replaced], [1, 1]);
    assertNotEquals(ok.token, alice.token);
    newToken = ok.token;
    const loggedIn = events(out).find((e) => e.kind === "logged_in");
    if (loggedIn?.kind !== "logged_in") throw new Error("no logged_in event");
    assertEquals([loggedIn.name, loggedIn.ip, loggedIn.udpPort, loggedIn.replaced], [
      "Alice",
      "192.168.7.7",
      50007,
      true,
    ]);

    // The old session is told, at its own address, why it ended.
    const ended = sends(out).filter((s) => s.message.type === "session_ended");
    assertEquals(ended.length, 1);
    assertEquals(ended[0].to, { transport: "udp", address: "10.0.0.1", port: 40001 });
    const notice = as(ended[0].message, "session_ended");
    assertEquals(notice.token, alice.token);
    assertEquals(notice.reason, SESSION_END_REASONS.replaced);
    assertStringIncludes(notice.message, "192.168.7.7:50007");
  });

  await t.step("list shows exactly one entry for the name, at the new address", () => {
    const page = as(ask(core, NOW + 200, FROM_BOB, list(2, bob.token, "", BOB_ID)), "list_page");
    assertEquals(page.total, 2);
    assertEquals(
      page.clients.map((c) => [c.name, c.ip, c.udpPort]),
      [["Alice", "192.168.7.7", 50007], ["Bob", "10.0.0.2", 40002]],
    );
    assertEquals(core.sessions.size, 2);
  });

  await t.step("the old token gets session_replaced saying it was replaced", () => {
    const error = assertError(
      ask(core, NOW + 300, FROM_ALICE, withToken("heartbeat", 3, alice.token)),
      "session_replaced",
    );
    assertStringIncludes(error.message, "logged in elsewhere");
    assertEquals(
      ask(core, NOW + 300, elsewhere, withToken("heartbeat", 4, newToken, CAROL_ID)).type,
      "heartbeat_ok",
    );
  });

  await t.step("a login with no session to replace says replaced 0", () => {
    const other = newCore();
    const { token } = registerPersisted(other, 1, "Alice");
    ask(other, NOW, FROM_ALICE, withToken("logout", 2, token));
    const ok = as(ask(other, NOW, FROM_ALICE, login(3, "Alice", NO_SECRET)), "login_ok");
    assertEquals(ok.replaced, 0);
  });
});

Deno.test("ServerCore.handle() blocks the address that fails logins for a name, not the name", async (t) => {
  const core = newCore({ maxAttempts: 3, lockoutMs: 10_000 });
  registerPersisted(core, 1, "Alice");
  // Bob's own channel key is a wrong key for Alice; any secret is ignored.
  const wrong = new Uint8Array(16).fill(3);
  const key = NO_SECRET;
  // Alice's key pair used from Bob's address (her laptop on his network).
  const BOB_AS_ALICE: Endpoint = { ...FROM_BOB, clientKey: KEY_ALICE };
  const messages: string[] = [];
  // Another port of the guesser's address counts as the guesser.
  const BOB_OTHER_PORT: Endpoint = { ...BOB_AS_ALICE, port: FROM_BOB.port + 1 };

  await t.step("a wrong key gives login_failed with the attempts left", () => {
    const first = assertError(
      ask(core, NOW + 1, FROM_BOB, login(10, "Alice", wrong, { client: BOB_ID })),
      "login_failed",
    );
    assertEquals(first.message, "Login failed: wrong name or identity key; 2 attempts left");
    const second = assertError(
      ask(core, NOW + 2, FROM_BOB, login(11, "ALICE", wrong, { client: BOB_ID })),
      "login_failed",
    );
    assertEquals(second.message, "Login failed: wrong name or identity key; 1 attempt left");
    messages.push(first.message, second.message);
  });

  await t.step("the third failure blocks the address for N s", () => {
    const third = assertError(
      ask(core, NOW + 3, FROM_BOB, login(12, "Alice", new Uint8Array(3), { client: BOB_ID })),
      "locked_out",
    );
    assertStringIncludes(third.message, "Login failed: wrong name or identity key");
    assertStringIncludes(third.message, '"Alice" is now blocked for 10 s from your address');
    messages.push(third.message);
  });

  await t.step("during the block a wrong key is refused unchecked from that address", () => {
    const refused = assertError(
      ask(core, NOW + 5003, FROM_BOB, login(13, "Alice", wrong, { client: BOB_ID })),
      "locked_out",
    );
    assertEquals(
      refused.message,
      'Too many failed logins for "Alice" from your address; try again in 5 s',
    );
    assertEquals(core.sessions.size, 1, "still only the session from register");
    assertEquals(core.sessions.byName("Alice")?.since, NOW);
  });

  await t.step("the owner's key pair logs in during the block, from that address too", () => {
    // Found by a black-box test: guesses from a shared address (a NAT)
    // kept the owner's own key pair out, and her login by itself with it.
    const ok = as(ask(core, NOW + 5004, FROM_ALICE, login(14, "Alice", key)), "login_ok");
    assertEquals(core.sessions.byToken(ok.token)?.name, "Alice");
    const same = as(
      ask(core, NOW + 5005, BOB_OTHER_PORT, login(15, "Alice", key, { client: BOB_ID })),
      "login_ok",
    );
    assertEquals(core.sessions.byToken(same.token)?.name, "Alice");
    // and that does not lift the guesser's block
    assertError(
      ask(core, NOW + 5006, FROM_BOB, login(18, "Alice", wrong, { client: BOB_ID })),
      "locked_out",
    );
  });

  await t.step("after lockoutMs the right key works from the blocked address too", () => {
    const ok = as(
      ask(core, NOW + 10_003, BOB_AS_ALICE, login(16, "Alice", key, { client: BOB_ID })),
      "login_ok",
    );
    assertEquals(core.sessions.byToken(ok.token)?.name, "Alice");
  });

  await t.step("a success clears the count", () => {
    const again = assertError(
      ask(core, NOW + 10_004, FROM_BOB, login(17, "Alice", wrong, { client: BOB_ID })),
      "login_failed",
    );
    assertStringIncludes(again.message, "2 attempts left");
  });

  await t.step("an unknown name fails at once, exactly like a wrong key", () => {
    const unknown: string[] = [];
    for (const [i, at] of [[20, NOW + 1], [21, NOW + 2], [22, NOW + 3]]) {
      const out = call(core, at, FROM_BOB, login(i, "Nobody", wrong, { client: BOB_ID }));
      assertEquals(outputsOf(out, "verify_password"), [], "nothing to wait for in open mode");
      assertEquals(persists(out), []);
      const [reply] = sends(out);
      assertEquals(reply.to, FROM_BOB);
      const error = as(reply.message, "error");
      assertEquals(error.code, ERROR_CODES[i === 22 ? "locked_out" : "login_failed"]);
      unknown.push(error.message.replaceAll("Nobody", "Alice"));
    }
    assertEquals(unknown, messages, "the same messages, name aside");
    const refused = assertError(
      ask(core, NOW + 5003, FROM_BOB, login(23, "Nobody", wrong, { client: BOB_ID })),
      "locked_out",
    );
    assertStringIncludes(refused.message, "try again in 5 s");
    assertError(
      ask(core, NOW + 10_003, FROM_BOB, login(24, "Nobody", wrong, { client: BOB_ID })),
      "login_failed",
    );
  });
});

Deno.test("ServerCore.handle() answers a retransmitted login from the replay cache", async (t) => {
  await t.step("a failed login repeated does not count as a second failure", () => {
    const core = newCore();
    registerPersisted(core, 1, "Alice");
    const bad = login(5, "Alice", new Uint8Array(16), { client: BOB_ID });
    const first = assertError(ask(core, NOW, FROM_BOB, bad), "login_failed");
    const out = call(core, NOW + 500, FROM_BOB, bad);
    assertEquals(sends(out).map((s) => s.message), [first]);
    assertEquals(events(out).map((e) => e.kind), ["replayed"]);
    call(core, NOW + 1500, FROM_BOB, bad);
    const next = assertError(ask(core, NOW + 2000, FROM_BOB, { ...bad, reqId: 6 }), "login_failed");
    assertStringIncludes(next.message, "1 attempt left");
    assertEquals(core.stats.replays, 2);
  });

  await t.step("a successful login repeated opens no second session", () => {
    const core = newCore();
    registerPersisted(core, 1, "Alice");
    const request = login(7, "Alice", NO_SECRET, { client: BOB_ID });
    const bobAsAlice: Endpoint = { ...FROM_BOB, clientKey: KEY_ALICE };
    const first = as(ask(core, NOW + 10, bobAsAlice, request), "login_ok");
    const out = call(core, NOW + 510, bobAsAlice, request);
    assertEquals(sends(out).map((s) => s.message), [first], "the same token again");
    assertEquals(events(out).map((e) => e.kind), ["replayed"]);
    assertEquals(core.sessions.size, 1);
    assertEquals(core.sessions.byName("Alice")?.token, first.token);
    assertEquals(core.sessions.byName("Alice")?.since, NOW + 10);
  });
});

// --- password mode -------------------------------------------------------------------

const USERS = new Map([
  ["alice", { name: "Alice", passwordHash: "hash-of-alice" }],
  ["bob", { name: "Bob", passwordHash: "hash-of-bob" }],
]);

function passwordCore(options: Partial<ServerCoreOptions> = {}): ServerCore {
  return newCore({ auth: "password", users: USERS, dummyPasswordHash: "dummy-hash", ...options });
}

const utf8 = (text: string) => new TextEncoder().encode(text);

Deno.test("ServerCore in password mode checks passwords through verify_password", async (t) => {
  await t.step("register is refused with not_allowed", () => {
    const core = passwordCore();
    const out = call(core, NOW, FROM_ALICE, register(1, "Carol"));
    assertEquals(persists(out), []);
    const error = assertError(sends(out)[0].message, "not_allowed");
    assertStringIncludes(error.message, "password");
    assertEquals(core.registry.size, 0);
  });

  await t.step("a login waits for the check; a match opens a session", () => {
    const core = passwordCore();
    const out = call(core, NOW, FROM_ALICE, login(1, "alice", utf8("correct horse")));
    assertEquals(sends(out), [], "no answer before the check");
    const [verify] = outputsOf(out, "verify_password");
    assertEquals([verify.hash, verify.password], ["hash-of-alice", "correct horse"]);
    assertEquals(
      call(core, NOW + 100, FROM_ALICE, login(1, "alice", utf8("correct horse"))),
      [],
      "a retransmission is dropped while checking",
    );

    core.passwordChecked(NOW + 200, verify.id, true);
    const done = drain(core);
    const ok = as(sends(done).find((s) => sameEndpoint(s.to, FROM_ALICE))?.message, "login_ok");
    assertEquals([ok.reqId, ok.replaced], [1, 0]);
    const session = core.sessions.byToken(ok.token);
    assertEquals([session?.name, session?.since], ["Alice", NOW + 200]);
    assert(events(done).some((e) => e.kind === "logged_in" && e.name === "Alice"));

    // Reported twice or for an unknown id: nothing happens.
    core.passwordChecked(NOW + 300, verify.id, true);
    core.passwordChecked(NOW + 300, 9999, true);
    assertEquals(drain(core), []);
    // And the retransmission now gets the same answer.
    assertEquals(ask(core, NOW + 400, FROM_ALICE, login(1, "alice", utf8("correct horse"))), ok);
  });

  await t.step("a mismatch gives login_failed naming the password", () => {
    const core = passwordCore();
    const [verify] = outputsOf(
      call(core, NOW, FROM_ALICE, login(1, "Alice", utf8("guess"))),
      "verify_password",
    );
    core.passwordChecked(NOW, verify.id, false);
    const error = assertError(sends(drain(core))[0].message, "login_failed");
    assertEquals(error.message, "Login failed: wrong name or password; 2 attempts left");
    assertEquals(core.sessions.size, 0);
  });

  await t.step("an unknown name is checked against the dummy hash and always fails", () => {
    const core = passwordCore();
    const [verify] = outputsOf(
      call(core, NOW, FROM_ALICE, login(1, "Nobody", utf8("guess"))),
      "verify_password",
    );
    assertEquals(verify.hash, "dummy-hash");
    core.passwordChecked(NOW, verify.id, true);
    const error = assertError(sends(drain(core))[0].message, "login_failed");
    assertEquals(error.message, "Login failed: wrong name or password; 2 attempts left");
    assertEquals(core.sessions.size, 0);
  });

  await t.step("a password that is not UTF-8 is checked as empty", () => {
    const core = passwordCore();
    const out = call(core, NOW, FROM_ALICE, login(1, "Alice", Uint8Array.of(0xff, 0xfe)));
    assertEquals(outputsOf(out, "verify_password")[0].password, "");
  });

  await t.step("a locked-out name is refused without a check", () => {
    const core = passwordCore();
    for (let i = 1; i <= 3; i++) {
      const [verify] = outputsOf(
        call(core, NOW + i, FROM_ALICE, login(i, "Bob", utf8("x"))),
        "verify_password",
      );
      core.passwordChecked(NOW + i, verify.id, false);
      drain(core);
    }
    const out = call(core, NOW + 10, FROM_ALICE, login(4, "Bob", utf8("right")));
    assertEquals(outputsOf(out, "verify_password"), []);
    assertError(sends(out)[0].message, "locked_out");
    assertEquals(
      outputsOf(
        call(core, NOW + 10_003, FROM_ALICE, login(5, "Bob", utf8("right"))),
        "verify_password",
      ).length,
      1,
    );
  });
});

// --- leases, heartbeats, logout ------------------------------------------------------

Deno.test("ServerCore leases: heartbeats renew, silence expires, logout ends at once", async (t) => {
  const LEASE = 10_000;
  const core = newCore({ leaseMs: LEASE });
  const bob = registerPersisted(core, 1, "Bob", FROM_BOB, BOB_ID, NOW);
  assertEquals(as(ask(core, NOW, FROM_BOB, watch(2, bob.token, BOB_ID)), "watch_ok").reqId, 2);
  const alice = registerPersisted(core, 1, "Alice", FROM_ALICE, ALICE_ID, NOW + 1000);
  handle(core, NOW + 1000, FROM_BOB, { type: "presence_ack", token: bob.token, seq: 1 });

  await t.step("a heartbeat renews the lease", () => {
    assertEquals(core.nextTimeout(), NOW + LEASE);
    const reply = ask(core, NOW + 8000, FROM_BOB, withToken("heartbeat", 3, bob.token, BOB_ID));
    assertEquals(reply, { type: "heartbeat_ok", reqId: 3 });
    assertEquals(core.sessions.byToken(bob.token)?.leaseUntil, NOW + 8000 + LEASE);
    assertEquals(advance(core, NOW + LEASE + 500), [], "nobody expires yet");
    assertEquals(core.sessions.size, 2);
  });

  await t.step("no heartbeat for leaseMs: the session ends and watchers see it leave", () => {
    const out = advance(core, NOW + 1000 + LEASE);
    assertEquals(core.sessions.byName("Alice"), undefined);
    assertEquals(core.sessions.size, 1);
    assert(
      events(out).some((e) => e.kind === "logged_out" && e.name === "Alice" && e.why === "lease"),
    );
    const active = events(out).find((e) => e.kind === "active");
    assertEquals(active, { kind: "active", names: ["Bob"] });
    const [left] = sends(out).filter((s) => s.message.type === "presence");
    assertEquals(left.to, { transport: "udp", address: "10.0.0.2", port: 40002 });
    const news = as(left.message, "presence");
    assertEquals([news.name, news.change, news.seq], ["Alice", PRESENCE_CHANGES.left, 2]);
    assertEquals(news.token, bob.token);
    const ended = as(messagesOf(out, "session_ended")[0], "session_ended");
    assertEquals([ended.token, ended.reason], [alice.token, SESSION_END_REASONS.expired]);
  });

  await t.step("the expired token gets not_logged_in saying it expired", () => {
    const error = assertError(
      ask(core, NOW + 1000 + LEASE + 1, FROM_ALICE, withToken("heartbeat", 2, alice.token)),
      "not_logged_in",
    );
    assertStringIncludes(error.message, "expired");
    assertStringIncludes(error.message, "10 s");
    assertError(
      ask(core, NOW + 1000 + LEASE + 1, FROM_ALICE, list(3, alice.token)),
      "not_logged_in",
    );
  });

  await t.step("the key logs back in", () => {
    const ok = as(
      ask(core, NOW + 1000 + LEASE + 2, FROM_ALICE, login(4, "Alice", NO_SECRET)),
      "login_ok",
    );
    assertEquals(ok.replaced, 0);
    assertEquals(core.sessions.size, 2);
  });

  await t.step("logout removes the session at once", () => {
    const t0 = NOW + 1000 + LEASE + 3;
    handle(core, t0, FROM_BOB, { type: "presence_ack", token: bob.token, seq: 3 });
    const session = core.sessions.byName("Alice");
    if (session === undefined) throw new Error("Alice is not online");
    const out = call(core, t0, FROM_ALICE, withToken("logout", 5, session.token));
    assertEquals(messagesOf(out, "logout_ok"), [{ type: "logout_ok", reqId: 5 }]);
    assertEquals(core.sessions.byName("Alice"), undefined);
    assert(events(out).some((e) => e.kind === "logged_out" && e.why === "exit"));
    assertEquals(messagesOf(out, "session_ended"), [], "the client asked; no notice");
    const [left] = messagesOf(out, "presence");
    assertEquals([left.name, left.change, left.seq], ["Alice", PRESENCE_CHANGES.left, 4]);
    assertError(
      ask(core, t0 + 1, FROM_ALICE, withToken("heartbeat", 6, session.token)),
      "not_logged_in",
    );
  });
});

// --- list and lookup ------------------------------------------------------------------

Deno.test("ServerCore.handle() pages list replies to fit a datagram", async (t) => {
  const core = newCore();
  const names: string[] = [];
  for (let i = 0; i < 300; i++) {
    // 28 three-byte characters and 4 digits: 88 bytes of UTF-8, the longest kind of name.
    const name = `${"名".repeat(28)}${String(299 - i).padStart(4, "0")}`;
    const hex = i.toString(16).padStart(4, "0");
    const from: Endpoint = {
      transport: "udp",
      address: `2001:0db8:85a3:0000:0000:8a2e:0370:${hex}`,
      port: 10_000 + i,
      clientKey: new Uint8Array(32).fill(i & 0xff),
    };
    handle(
      core,
      NOW,
      from,
      register(1, name, { client: `00000000000${(0x10000 + i).toString(16)}` }),
    );
    names.push(name);
  }
  for (let p = persists(drain(core)); p.length > 0; p = persists(drain(core))) {
    core.persisted(p[0].version, NOW);
  }
  assertEquals(core.sessions.size, 300);
  const token = core.sessions.list()[0].token;
  const asker: Endpoint = { transport: "udp", address: "10.9.9.9", port: 9999 };

  await t.step("over UDP each page encodes within 1200 bytes and after walks them all", () => {
    const seen: string[] = [];
    let after = "";
    let pages = 0;
    for (;;) {
      const page = as(
        ask(core, NOW + 1000, asker, list(++pages, token, after, BOB_ID)),
        "list_page",
      );
      const bytes = encodeMessage(page, { maxBytes: MAX_DATAGRAM_BYTES });
      assert(bytes.length <= MAX_DATAGRAM_BYTES);
      assertEquals(page.total, 300);
      assert(page.clients.length > 0, "a page is never empty while more are left");
      for (const c of page.clients) assertEquals(c.onlineMs, 1000);
      seen.push(...page.clients.map((c) => c.name));
      if (page.more === 0) break;
      after = page.clients.at(-1)!.name;
      assert(pages < 300, "paging does not end");
    }
    assert(pages > 20, `the list takes many datagrams, not ${pages}`);
    assertEquals(new Set(seen).size, seen.length, "no name twice");
    assertEquals(seen, [...names].sort(), "every name once, in order");
  });

  await t.step("over TCP a page holds up to 255 entries", () => {
    const tcp: Endpoint = { transport: "tcp", address: "10.9.9.9", port: 9998, connId: 1 };
    const first = as(ask(core, NOW, tcp, list(1000, token, "", BOB_ID)), "list_page");
    assertEquals([first.clients.length, first.more, first.total], [255, 1, 300]);
    const second = as(
      ask(core, NOW, tcp, list(1001, token, first.clients[254].name, BOB_ID)),
      "list_page",
    );
    assertEquals([second.clients.length, second.more], [45, 0]);
  });

  await t.step("after the last name gives an empty last page", () => {
    const last = [...names].sort().at(-1)!;
    const page = as(ask(core, NOW, asker, list(2000, token, last, BOB_ID)), "list_page");
    assertEquals([page.clients.length, page.more, page.total], [0, 0, 300]);
  });

  await t.step("list needs a session", () => {
    assertError(ask(core, NOW, asker, list(3000, new Uint8Array(16), "", BOB_ID)), "not_logged_in");
  });
});

Deno.test("ServerCore.handle() looks up online names only", () => {
  const core = newCore();
  const alice = registerPersisted(core, 1, "Alice");
  registerPersisted(core, 1, "Bob", FROM_BOB, BOB_ID, NOW + 1000);
  const { nonce, psk, ...found } = as(
    ask(core, NOW + 3000, FROM_ALICE, lookup(2, alice.token, "BOB")),
    "lookup_ok",
  );
  assertEquals(found, {
    type: "lookup_ok",
    reqId: 2,
    name: "Bob",
    ip: "10.0.0.2",
    udpPort: 40002,
    tcpPort: 5001,
    onlineMs: 2000,
    // The key Bob registered and logged in with (his identity) is the one vouched for.
    key: KEY_BOB,
  });
  assert(nonce.length > 0 && psk.length === 32, "an introduction");
  const error = assertError(
    ask(core, NOW, FROM_ALICE, lookup(3, alice.token, "Carol")),
    "not_online",
  );
  assertStringIncludes(error.message, "Carol");
  assertError(ask(core, NOW, FROM_ALICE, lookup(4, new Uint8Array(16), "Bob")), "not_logged_in");
});

Deno.test("ServerCore.handle() vouches for keys and gives both peers the same fresh PSK, and only them", () => {
  const secret = new Uint8Array(32).fill(9);
  const core = newCore({ introductionSecret: secret });
  const aliceKey = new Uint8Array(32).fill(0xa1);
  const bobKey = new Uint8Array(32).fill(0xb0);
  const carolKey = new Uint8Array(32).fill(0xc0);
  const fromAlice: Endpoint = { ...FROM_ALICE, clientKey: aliceKey };
  const fromBob: Endpoint = { ...FROM_BOB, clientKey: bobKey };
  const fromCarol: Endpoint = { ...FROM_CAROL, clientKey: carolKey };
  const alice = registerPersisted(core, 1, "Alice", fromAlice);
  const bob = registerPersisted(core, 1, "Bob", fromBob, BOB_ID);
  const carol = registerPersisted(core, 1, "Carol", fromCarol, CAROL_ID);
  // Alice asks for Bob: his key, a nonce with the time, and the PSK of (Alice, Bob).
  const asked = as(ask(core, NOW, fromAlice, lookup(2, alice.token, "Bob")), "lookup_ok");
  assertEquals(asked.key, bobKey);
  assertEquals(
    new DataView(asked.nonce.buffer, asked.nonce.byteOffset).getBigUint64(0),
    BigInt(NOW),
  );
  assertEquals(asked.psk, introductionPsk(secret, aliceKey, bobKey, asked.nonce));
  // Bob checks Alice's request with her nonce: her key, and the same PSK.
  const check = (from: Endpoint, token: Uint8Array, at: number, nonce = asked.nonce) =>
    ask(core, at, from, { ...lookup(3, token, "Alice"), client: BOB_ID, nonce });
  const checked = as(check(fromBob, bob.token, NOW + 60_000), "lookup_ok");
  assertEquals(checked.key, aliceKey);
  assertEquals(checked.nonce, asked.nonce);
  assertEquals(checked.psk, asked.psk);
  // Carol, with the same nonce, gets the PSK of (Alice, Carol): never Bob's.
  const stolen = as(check(fromCarol, carol.token, NOW + 1000), "lookup_ok");
  assert(!stolen.psk.every((b, i) => b === asked.psk[i]), "Carol got the pair's PSK");
  // A nonce older than two minutes is refused.
  assertError(check(fromBob, bob.token, NOW + 121_000), "bad_request");
  // A fresh nonce per lookup: a second lookup gets another PSK.
  const again = as(ask(core, NOW, fromAlice, lookup(4, alice.token, "Bob")), "lookup_ok");
  assert(!again.psk.every((b, i) => b === asked.psk[i]), "two introductions share a PSK");
});

// --- presence news -----------------------------------------------------------------------

Deno.test("ServerCore presence news are numbered, resent until acknowledged, then quiet", async (t) => {
  const core = newCore({ leaseMs: 60_000 });
  const bob = registerPersisted(core, 1, "Bob", FROM_BOB, BOB_ID);
  const carol = registerPersisted(core, 1, "Carol", FROM_CAROL, CAROL_ID);
  ask(core, NOW, FROM_BOB, watch(2, bob.token, BOB_ID));
  ask(core, NOW, FROM_CAROL, watch(2, carol.token, CAROL_ID));
  let alice: Identity;

  function presenceTo(outputs: ServerOutput[], to: Endpoint): MessageOf<"presence">[] {
    return sends(outputs).filter((s) => sameEndpoint(s.to, to) && s.message.type === "presence")
      .map((s) => s.message as MessageOf<"presence">);
  }

  await t.step("a join is told to every watcher with its own sequence number", () => {
    handle(core, NOW + 100, FROM_ALICE, register(1, "Alice"));
    core.persisted(persists(drain(core))[0].version, NOW + 100);
    const out = drain(core);
    alice = {
      ...as(sends(out).find((s) => sameEndpoint(s.to, FROM_ALICE))?.message, "register_ok"),
      key: KEY_ALICE,
    };
    const [toBob] = presenceTo(out, FROM_BOB);
    assertEquals(toBob, {
      type: "presence",
      token: bob.token,
      seq: 1,
      change: PRESENCE_CHANGES.joined,
      name: "Alice",
      ip: "10.0.0.1",
      udpPort: 40001,
      tcpPort: 5001,
      onlineMs: 0,
    });
    assertEquals(presenceTo(out, FROM_CAROL).map((p) => [p.token, p.seq]), [[carol.token, 1]]);
    assertEquals(presenceTo(out, FROM_ALICE), [], "a client that does not watch hears nothing");
  });

  await t.step("unacknowledged news is resent with backoff", () => {
    assertEquals(core.nextTimeout(), NOW + 600);
    const first = advance(core, NOW + 600);
    assertEquals(presenceTo(first, FROM_BOB).map((p) => p.seq), [1]);
    assertEquals(presenceTo(first, FROM_CAROL).map((p) => p.seq), [1]);
    handle(core, NOW + 700, FROM_CAROL, { type: "presence_ack", token: carol.token, seq: 1 });
    assertEquals(core.nextTimeout(), NOW + 1600, "the interval doubled");
    const second = advance(core, NOW + 1600);
    assertEquals(presenceTo(second, FROM_BOB).map((p) => p.seq), [1]);
    assertEquals(presenceTo(second, FROM_CAROL), [], "Carol acknowledged");
  });

  await t.step("an acknowledgement stops the resends", () => {
    handle(core, NOW + 1700, FROM_BOB, { type: "presence_ack", token: bob.token, seq: 1 });
    assertEquals(drain(core), []);
    assertEquals(sends(advance(core, NOW + 20_000)), []);
  });

  await t.step("a leave follows with the next number; a stale ack is harmless", () => {
    const out = call(core, NOW + 21_000, FROM_ALICE, withToken("logout", 2, alice.token));
    const [left] = presenceTo(out, FROM_BOB);
    assertEquals([left.seq, left.change, left.name], [2, PRESENCE_CHANGES.left, "Alice"]);
    handle(core, NOW + 21_100, FROM_BOB, { type: "presence_ack", token: bob.token, seq: 1 });
    assertEquals(presenceTo(advance(core, NOW + 21_500), FROM_BOB).map((p) => p.seq), [2]);
    handle(core, NOW + 21_600, FROM_BOB, { type: "presence_ack", token: bob.token, seq: 2 });
    handle(core, NOW + 21_600, FROM_CAROL, { type: "presence_ack", token: carol.token, seq: 2 });
    assertEquals(sends(advance(core, NOW + 40_000)), []);
  });

  await t.step("watch off stops the news", () => {
    assertEquals(
      ask(core, NOW + 41_000, FROM_BOB, watch(3, bob.token, BOB_ID, 0)).type,
      "watch_ok",
    );
    const out = call(core, NOW + 41_000, FROM_ALICE, login(3, "Alice", NO_SECRET));
    assertEquals(presenceTo(out, FROM_BOB), []);
    assertEquals(presenceTo(out, FROM_CAROL).map((p) => [p.seq, p.change]), [[
      3,
      PRESENCE_CHANGES.joined,
    ]]);
  });

  await t.step("an ack with a wrong token changes nothing", () => {
    handle(core, NOW + 41_100, FROM_CAROL, { type: "presence_ack", token: bob.token, seq: 3 });
    handle(core, NOW + 41_100, FROM_CAROL, {
      type: "presence_ack",
      token: new Uint8Array(16),
      seq: 3,
    });
    assertEquals(drain(core), []);
    assertEquals(presenceTo(advance(core, NOW + 41_500), FROM_CAROL).map((p) => p.seq), [3]);
  });
});

// --- shared presence: sessions that move between instances ----------------------------

/** The record a core shared for `name` (its last `presence_store` join). */
function sharedRecord(outputs: ServerOutput[], name: string) {
  const stored = outputsOf(outputs, "presence_store").filter((o) =>
    o.op === "join" && o.record.name === name
  );
  assert(stored.length > 0, `no presence_store join for ${name}`);
  return stored[stored.length - 1].record;
}

Deno.test("ServerCore takes over another instance's session from its token and key: same token and start time, no news, and the instance left lets its copy go without a word", () => {
  const a = newCore({ sharedPresence: true, random: new SeededRandom(1) });
  const c = newCore({ sharedPresence: true, random: new SeededRandom(2) });
  handle(a, NOW, FROM_ALICE, register(1, "Alice"));
  const [persist] = persists(drain(a));
  a.persisted(persist.version, NOW);
  const onA = drain(a);
  const token = as(sends(onA)[0].message, "register_ok").token;
  const bob = registerPersisted(c, 1, "Bob", FROM_BOB, BOB_ID);
  ask(c, NOW, FROM_BOB, watch(2, bob.token, BOB_ID));
  c.presenceChanged(NOW, "join", { ...sharedRecord(onA, "Alice"), instance: "a" });
  assertEquals(messagesOf(drain(c), "presence").map((m) => [m.name, m.change]), [
    ["Alice", PRESENCE_CHANGES.joined],
  ]);

  // Same token over a channel with another key: not hers to take.
  assertError(ask(c, NOW + 1000, FROM_CAROL, withToken("heartbeat", 2, token)), "not_logged_in");
  // A is gone; Alice's heartbeat reaches C.
  const moved = call(c, NOW + 5000, FROM_ALICE, withToken("heartbeat", 3, token));
  assertEquals(messagesOf(moved, "heartbeat_ok").length, 1);
  assertEquals(messagesOf(moved, "presence"), [], "watchers hear nothing");
  assertEquals(events(moved).find((e) => e.kind === "logged_in"), {
    kind: "logged_in",
    name: "Alice",
    ip: FROM_ALICE.address,
    udpPort: FROM_ALICE.port,
    tcpPort: 5001,
    transport: "udp",
    replaced: false,
    moved: true,
  });
  const record = sharedRecord(moved, "Alice");
  assertEquals([record.since, record.tokenHash], [NOW, toHex(sha256(token))]);
  const page = as(ask(c, NOW + 5000, FROM_BOB, list(4, bob.token, "", BOB_ID)), "list_page");
  assertEquals(page.clients.find((x) => x.name === "Alice")?.onlineMs, 5000);

  // A (were it alive) hears the join: its copy ends quietly.
  a.presenceChanged(NOW + 5001, "join", { ...record, instance: "c" });
  const left = drain(a);
  assertEquals(messagesOf(left, "session_ended"), []);
  assert(events(left).some((e) => e.kind === "logged_out" && e.why === "moved"));
  assertEquals(a.sessions.byName("Alice"), undefined);

  // Alice logs out on C: the watcher sees her go, and she is listed no more.
  const out = call(c, NOW + 6000, FROM_ALICE, withToken("logout", 5, token));
  assertEquals(messagesOf(out, "presence").map((m) => [m.name, m.change]), [
    ["Alice", PRESENCE_CHANGES.left],
  ]);
  const after = as(ask(c, NOW + 6000, FROM_BOB, list(6, bob.token, "", BOB_ID)), "list_page");
  assertEquals(after.clients.map((x) => x.name), ["Bob"]);
});

Deno.test("ServerCore: another instance's join that arrives after the client moved here (older than the session here) is stale: the session stays, and that instance's leave is not told", () => {
  const c = newCore({ sharedPresence: true });
  const bob = registerPersisted(c, 1, "Bob", FROM_BOB, BOB_ID);
  ask(c, NOW, FROM_BOB, watch(2, bob.token, BOB_ID));
  // The client logs in here before its join on A came over Redis (a loaded machine).
  const mover = registerPersisted(c, 3, "Mover", FROM_ALICE, ALICE_ID, NOW + 1000);
  drain(c);
  const onA = {
    name: "Mover",
    ip: FROM_ALICE.address,
    udpPort: FROM_ALICE.port + 1,
    tcpPort: 5001,
    since: NOW + 500,
    key: toHex(KEY_ALICE),
    tokenHash: "ab".repeat(32),
    instance: "a",
  };
  c.presenceChanged(NOW + 1100, "join", onA);
  const late = drain(c);
  assertEquals(messagesOf(late, "session_ended"), []);
  assertEquals(events(late).filter((e) => e.kind === "logged_out"), []);
  assertEquals(c.sessions.byName("Mover")?.token, mover.token);
  // A's copy runs out of lease: watchers here hear nothing, the client is here.
  c.presenceChanged(NOW + 2000, "leave", onA);
  assertEquals(messagesOf(drain(c), "presence"), []);
  const beat = call(c, NOW + 2100, FROM_ALICE, withToken("heartbeat", 4, mover.token));
  assertEquals(messagesOf(beat, "heartbeat_ok").length, 1);
  // A newer login on A still replaces it.
  c.presenceChanged(NOW + 3000, "join", { ...onA, since: NOW + 3000 });
  assertEquals(c.sessions.byName("Mover"), undefined);
});

Deno.test("ServerCore: a login here of a name another instance holds replaces the shared record, so its leave is seen and lists drop it", () => {
  const c = newCore({ sharedPresence: true });
  const bob = registerPersisted(c, 1, "Bob", FROM_BOB, BOB_ID);
  ask(c, NOW, FROM_BOB, watch(2, bob.token, BOB_ID));
  const elsewhere = {
    name: "Ghost",
    ip: FROM_ALICE.address,
    udpPort: FROM_ALICE.port,
    tcpPort: 5001,
    since: NOW - 60_000,
    key: toHex(KEY_ALICE),
    tokenHash: "ab".repeat(32),
    instance: "a",
  };
  c.presenceChanged(NOW, "join", elsewhere);
  drain(c);
  // The same client (same key) logs in here: it moved, so no second join, and its time goes on.
  const ghost = registerPersisted(c, 3, "Ghost", FROM_ALICE, ALICE_ID, NOW + 1000);
  const page = as(ask(c, NOW + 1000, FROM_BOB, list(4, bob.token, "", BOB_ID)), "list_page");
  assertEquals(page.clients.find((x) => x.name === "Ghost")?.onlineMs, 61_000);
  const out = call(c, NOW + 2000, FROM_ALICE, withToken("logout", 5, ghost.token));
  assertEquals(messagesOf(out, "presence").map((m) => [m.name, m.change]), [
    ["Ghost", PRESENCE_CHANGES.left],
  ]);
  const after = as(ask(c, NOW + 2000, FROM_BOB, list(6, bob.token, "", BOB_ID)), "list_page");
  assertEquals(after.clients.map((x) => x.name), ["Bob"], "no ghost");
});

// --- secrets ----------------------------------------------------------------------------

/** Asserts that no event holds a byte array or any of the secrets, in any usual spelling. */
function assertNoSecrets(all: ServerEvent[], secrets: Uint8Array[], texts: string[]): void {
  const json = JSON.stringify(all);
  for (const event of all) {
    for (const value of Object.values(event)) {
      assert(!(value instanceof Uint8Array), `an event holds bytes: ${JSON.stringify(event)}`);
    }
  }
  for (const secret of secrets) {
    assert(secret.length > 0);
    for (
      const spelling of [
        toHex(secret),
        toHex(secret).toUpperCase(),
        btoa(String.fromCharCode(...secret)),
        JSON.stringify(secret),
      ]
    ) {
      assert(!json.includes(spelling), `an event holds the secret ${spelling}`);
    }
  }
  for (const text of texts) assert(!json.includes(text), `an event holds ${JSON.stringify(text)}`);
}

Deno.test("ServerCore events never hold keys, tokens or passwords", () => {
  const all: ServerEvent[] = [];
  const secrets: Uint8Array[] = [];
  const keep = (outputs: ServerOutput[]) => all.push(...events(outputs));

  const core = newCore();
  const tcp: Endpoint = { transport: "tcp", address: "10.0.0.1", port: 51000, connId: 1 };
  handle(core, NOW, FROM_ALICE, register(1, "Alice"));
  keep(drain(core));
  core.persisted(1, NOW);
  const out = drain(core);
  keep(out);
  const alice = as(messagesOf(out, "register_ok")[0], "register_ok");
  secrets.push(alice.token);
  const bob = registerPersisted(core, 1, "Bob", FROM_BOB, BOB_ID);
  secrets.push(bob.token);
  keep(call(core, NOW, FROM_BOB, watch(2, bob.token, BOB_ID)));
  const wrong = new Uint8Array(16).fill(0xa5);
  secrets.push(wrong);
  keep(call(core, NOW, FROM_CAROL, login(1, "Alice", wrong, { client: CAROL_ID })));
  keep(call(core, NOW, FROM_CAROL, login(1, "Alice", wrong, { client: CAROL_ID })));
  keep(call(core, NOW, FROM_CAROL, login(2, "Nobody", wrong, { client: CAROL_ID })));
  const carolAsAlice: Endpoint = { ...FROM_CAROL, clientKey: KEY_ALICE };
  const relog = call(core, NOW, carolAsAlice, login(3, "Alice", NO_SECRET, { client: CAROL_ID }));
  keep(relog);
  const newToken = as(messagesOf(relog, "login_ok")[0], "login_ok").token;
  secrets.push(newToken);
  keep(call(core, NOW, FROM_ALICE, withToken("heartbeat", 4, alice.token)));
  keep(
    call(core, NOW, tcp, {
      type: "text",
      reqId: 5,
      client: CAROL_ID,
      name: "Alice",
      token: newToken,
      text: "hi",
    }),
  );
  keep(
    call(core, NOW, tcp, {
      type: "text",
      reqId: 6,
      client: CAROL_ID,
      name: "Alice",
      token: alice.token,
      text: "hi",
    }),
  );
  keep(
    call(core, NOW, tcp, {
      type: "upload",
      reqId: 7,
      client: CAROL_ID,
      token: newToken,
      name: "a.txt",
      size: 0,
      sha256: new Uint8Array(32),
    }),
  );
  handle(core, NOW, tcp, {
    type: "upload",
    reqId: 70,
    client: CAROL_ID,
    token: newToken,
    name: "b.txt",
    size: 0,
    sha256: new Uint8Array(32),
  });
  const [commit] = outputsOf(drain(core), "upload_commit");
  core.uploadDone(commit.id, { ok: true, file: stored("a.txt", 0) });
  keep(drain(core));
  handle(core, NOW, FROM_BOB, withToken("deregister", 8, bob.token, BOB_ID));
  const [write] = persists(drain(core));
  core.persisted(write.version, NOW);
  keep(drain(core));
  keep(advance(core, NOW + 60_000));
  core.shutdown();
  keep(drain(core));
  assertNoSecrets(all, secrets, []);

  const password = passwordCore();
  const said = "hunter2 correct horse";
  const [verify] = outputsOf(
    call(password, NOW, FROM_ALICE, login(1, "Alice", utf8(said))),
    "verify_password",
  );
  password.passwordChecked(NOW, verify.id, false);
  const failed = drain(password);
  const [check] = outputsOf(
    call(password, NOW, FROM_ALICE, login(2, "Alice", utf8(said + "!"))),
    "verify_password",
  );
  password.passwordChecked(NOW, check.id, true);
  const opened = drain(password);
  const token = as(messagesOf(opened, "login_ok")[0], "login_ok").token;
  assertNoSecrets([...events(failed), ...events(opened)], [token, utf8(said)], [said, "hunter2"]);
  const kinds = new Set(all.map((e) => e.kind));
  for (
    const kind of [
      "registered",
      "deregistered",
      "logged_in",
      "logged_out",
      "active",
      "refused",
      "replayed",
      "text",
      "file_stored",
    ]
  ) {
    assert(kinds.has(kind as ServerEvent["kind"]), `the scenario produced no ${kind} event`);
  }
});

// --- files --------------------------------------------------------------------------------

const LIMITS = { maxFileSize: 1000, quota: 1500, maxFiles: 3 };
const CONN = 7;
const TCP_ALICE: Endpoint = { transport: "tcp", address: "10.0.0.1", port: 51000, connId: CONN };
const HASH = new Uint8Array(32).fill(0xab);

function upload(
  reqId: number,
  token: Uint8Array,
  name: string,
  size: number,
  sha256 = HASH,
): MessageOf<"upload"> {
  return { type: "upload", reqId, client: ALICE_ID, token, name, size, sha256 };
}

function chunk(reqId: number, size: number): MessageOf<"file_chunk"> {
  return { type: "file_chunk", reqId, data: new Uint8Array(size).fill(1) };
}

function stored(name: string, size: number): StoredFile {
  return { name, size, sha256: "ab".repeat(32), uploadedAt: new Date(NOW).toISOString() };
}

/** A core with Alice online; returns her session token. */
function filesCore(
  options: Partial<ServerCoreOptions> = {},
): { core: ServerCore; token: Uint8Array } {
  const core = newCore({ storage: LIMITS, ...options });
  const { token } = registerPersisted(core, 1, "Alice");
  return { core, token };
}

/** Starts an upload and returns its id. */
function begin(
  core: ServerCore,
  reqId: number,
  token: Uint8Array,
  name: string,
  size: number,
  from = TCP_ALICE,
): number {
  const out = call(core, NOW, from, upload(reqId, token, name, size));
  assertEquals(sends(out), [], `upload of ${name} was refused: ${JSON.stringify(sends(out))}`);
  const [started] = outputsOf(out, "upload_begin");
  assertEquals([started.user, started.name, started.connId], ["Alice", name, from.connId]);
  return started.id;
}

Deno.test("ServerCore.handle() refuses uploads that break the rules", async (t) => {
  const { core, token } = filesCore({ storedFiles: [["Alice", [stored("old.bin", 800)]]] });

  await t.step("over UDP: needs_tcp", () => {
    assertError(ask(core, NOW, FROM_ALICE, upload(2, token, "a.txt", 10)), "needs_tcp");
  });

  await t.step("a bad file name: invalid_file_name", () => {
    for (const [i, name] of ["../x", "a/b", "", ".hidden", "nul.txt"].entries()) {
      const out = call(core, NOW, TCP_ALICE, upload(10 + i, token, name, 10));
      assertEquals(outputsOf(out, "upload_begin"), []);
      assertError(sends(out)[0].message, "invalid_file_name");
    }
  });

  await t.step("a hash that is not 32 bytes: bad_request", () => {
    assertError(
      ask(core, NOW, TCP_ALICE, upload(20, token, "a.txt", 10, new Uint8Array(31))),
      "bad_request",
    );
  });

  await t.step("over the largest file size: file_too_large", () => {
    const error = assertError(
      ask(core, NOW, TCP_ALICE, upload(21, token, "big.bin", 1001)),
      "file_too_large",
    );
    assertStringIncludes(error.message, "1000");
  });

  await t.step(
    "over the quota: quota_exceeded, but replacing a file counts its old size out",
    () => {
      const error = assertError(
        ask(core, NOW, TCP_ALICE, upload(22, token, "new.bin", 701)),
        "quota_exceeded",
      );
      assertStringIncludes(error.message, "1500");
      const id = begin(core, 23, token, "OLD.bin", 1000);
      core.connectionClosed(CONN);
      assertEquals(outputsOf(drain(core), "upload_abort"), [{ type: "upload_abort", id }]);
    },
  );

  await t.step("without a session: not_logged_in", () => {
    assertError(
      ask(core, NOW, TCP_ALICE, upload(24, new Uint8Array(16), "a.txt", 1)),
      "not_logged_in",
    );
  });
});

Deno.test("ServerCore.handle() reserves quota for uploads in progress", () => {
  const { core, token } = filesCore();
  const first = begin(core, 2, token, "a.bin", 1000);
  // Alone it would fit (600 <= 1500), but the first upload holds 1000 bytes.
  const other: Endpoint = { ...TCP_ALICE, port: 51001, connId: CONN + 1 };
  assertError(ask(core, NOW, other, upload(3, token, "b.bin", 600)), "quota_exceeded");
  assert(begin(core, 4, token, "c.bin", 500, other) > first, "what fits still starts");
  // Closing the first connection frees its reservation.
  core.connectionClosed(CONN);
  assertEquals(outputsOf(drain(core), "upload_abort"), [{ type: "upload_abort", id: first }]);
  assertError(ask(core, NOW, other, upload(5, token, "d.bin", 1001)), "file_too_large");
  begin(core, 6, token, "d.bin", 1000, other);
});

Deno.test("ServerCore.handle() stores an upload chunk by chunk", async (t) => {
  const { core, token } = filesCore();
  let id = 0;

  await t.step("chunks pass to the driver; the last one brings upload_commit", () => {
    id = begin(core, 2, token, "Notes.txt", 10);
    assertEquals(call(core, NOW, TCP_ALICE, chunk(2, 4)), [
      { type: "upload_chunk", id, data: new Uint8Array(4).fill(1) },
    ]);
    const out = call(core, NOW, TCP_ALICE, chunk(2, 6));
    assertEquals(out.map((o) => o.type), ["upload_chunk", "upload_commit"]);
    assertEquals(outputsOf(out, "upload_commit"), [
      // Dated no earlier than Alice's registration, whichever clock dated that.
      { type: "upload_commit", id, size: 10, sha256: toHex(HASH), notBefore: NOW },
    ]);
    const listing = as(ask(core, NOW, TCP_ALICE, withToken("files", 3, token)), "file_list");
    assertEquals(listing.files, [], "not listed before uploadDone");
  });

  await t.step("a retransmitted upload request does not start a second upload", () => {
    assertEquals(call(core, NOW + 500, TCP_ALICE, upload(2, token, "Notes.txt", 10)), []);
  });

  await t.step("uploadDone ok answers upload_ok and the file is listed", () => {
    const file = stored("Notes.txt", 10);
    core.uploadDone(id, { ok: true, file });
    const out = drain(core);
    assertEquals(messagesOf(out, "upload_ok"), [{ type: "upload_ok", reqId: 2, size: 10 }]);
    assert(
      events(out).some((e) =>
        e.kind === "file_stored" && e.name === "Notes.txt" && e.size === 10 && e.user === "Alice"
      ),
    );
    const listing = as(ask(core, NOW, TCP_ALICE, withToken("files", 4, token)), "file_list");
    assertEquals(listing, {
      type: "file_list",
      reqId: 4,
      usedBytes: 10,
      quotaBytes: 1500,
      files: [{ name: "Notes.txt", size: 10, sha256: HASH, uploadedAt: NOW }],
    });
    core.uploadDone(id, { ok: true, file });
    assertEquals(drain(core), [], "a second report is ignored");
  });

  await t.step("a chunk for no upload is ignored", () => {
    assertEquals(call(core, NOW, TCP_ALICE, chunk(2, 1)), []);
    assertEquals(call(core, NOW, TCP_ALICE, chunk(99, 1)), []);
  });

  await t.step("an empty file commits at once", () => {
    const out = call(core, NOW, TCP_ALICE, upload(5, token, "empty.txt", 0));
    assertEquals(out.map((o) => o.type), ["upload_begin", "upload_commit"]);
  });

  await t.step("files over UDP: needs_tcp", () => {
    assertError(ask(core, NOW, FROM_ALICE, withToken("files", 6, token)), "needs_tcp");
  });
});

Deno.test("ServerCore.handle() refuses chunks beyond the declared size", () => {
  const { core, token } = filesCore();
  const id = begin(core, 2, token, "a.bin", 10);
  call(core, NOW, TCP_ALICE, chunk(2, 6));
  const out = call(core, NOW, TCP_ALICE, chunk(2, 5));
  assertEquals(outputsOf(out, "upload_chunk"), [], "the excess is not written");
  assertEquals(outputsOf(out, "upload_commit"), []);
  assertEquals(outputsOf(out, "upload_abort"), [{ type: "upload_abort", id }]);
  const error = assertError(messagesOf(out, "error")[0], "bad_request");
  assertStringIncludes(error.message, "10 bytes");
  // The upload is gone and its reservation freed.
  assertEquals(call(core, NOW, TCP_ALICE, chunk(2, 1)), []);
  begin(core, 3, token, "b.bin", 1000);
});

Deno.test("ServerCore.handle() ignores chunks from another connection", () => {
  const { core, token } = filesCore();
  begin(core, 2, token, "a.bin", 10);
  const intruder: Endpoint = { ...TCP_ALICE, port: 52000, connId: CONN + 5 };
  assertEquals(call(core, NOW, intruder, chunk(2, 10)), []);
  assertEquals(call(core, NOW, TCP_ALICE, chunk(2, 10)).map((o) => o.type), [
    "upload_chunk",
    "upload_commit",
  ]);
});

Deno.test("ServerCore.uploadDone() reports a failed upload and frees its room", () => {
  const { core, token } = filesCore();
  const id = begin(core, 2, token, "a.bin", 1000);
  call(core, NOW, TCP_ALICE, chunk(2, 1000));
  core.uploadDone(id, {
    ok: false,
    code: "checksum_mismatch",
    reason: "The content does not match its SHA-256",
  });
  const out = drain(core);
  const error = assertError(messagesOf(out, "error")[0], "checksum_mismatch");
  assertStringIncludes(error.message, "SHA-256");
  assertEquals(sends(out)[0].to, TCP_ALICE);
  const listing = as(ask(core, NOW, TCP_ALICE, withToken("files", 3, token)), "file_list");
  assertEquals([listing.usedBytes, listing.files], [0, []]);

  const again = begin(core, 4, token, "a.bin", 1000);
  call(core, NOW, TCP_ALICE, chunk(4, 1000));
  core.uploadDone(again, { ok: false, code: "io", reason: "Disk full" });
  assertError(messagesOf(drain(core), "error")[0], "not_saved");
  begin(core, 5, token, "a.bin", 1000);
});

Deno.test("ServerCore.connectionClosed() aborts the uploads on that connection only", () => {
  const { core, token } = filesCore();
  const other: Endpoint = { ...TCP_ALICE, port: 51001, connId: CONN + 1 };
  const a = begin(core, 2, token, "a.bin", 100);
  const b = begin(core, 3, token, "b.bin", 100, other);
  call(core, NOW, TCP_ALICE, chunk(2, 50));
  core.connectionClosed(CONN);
  assertEquals(
    drain(core),
    [{ type: "upload_abort", id: a }],
    "nothing is sent on a closed connection",
  );
  assertEquals(call(core, NOW, TCP_ALICE, chunk(2, 50)), []);
  core.uploadDone(a, { ok: true, file: stored("a.bin", 100) });
  assertEquals(drain(core), [], "a late report for an aborted upload is ignored");
  assertEquals(call(core, NOW, other, chunk(3, 100)).map((o) => o.type), [
    "upload_chunk",
    "upload_commit",
  ]);
  core.uploadDone(b, { ok: true, file: stored("b.bin", 100) });
  assertEquals(messagesOf(drain(core), "upload_ok").length, 1);
});

Deno.test("ServerCore.handle() serves downloads of stored files only", () => {
  const { core, token } = filesCore({ storedFiles: [["alice", [stored("data.csv", 42)]]] });
  const download = (reqId: number, name: string): MessageOf<"download"> => ({
    type: "download",
    reqId,
    client: ALICE_ID,
    token,
    name,
  });
  const error = assertError(
    ask(core, NOW, TCP_ALICE, download(2, "missing.csv")),
    "file_not_found",
  );
  assertStringIncludes(error.message, "missing.csv");
  assertError(ask(core, NOW, FROM_ALICE, download(3, "data.csv")), "needs_tcp");
  const out = call(core, NOW, TCP_ALICE, download(4, "DATA.csv"));
  assertEquals(sends(out), [], "the driver sends download_ok with the content");
  assertEquals(outputsOf(out, "download"), [
    { type: "download", to: TCP_ALICE, reqId: 4, user: "Alice", file: stored("data.csv", 42) },
  ]);
  assertEquals(events(out), [{ kind: "file_sent", user: "Alice", name: "data.csv", size: 42 }]);
});

Deno.test("ServerCore (shared store) redirects a download or delete of another instance's file, lists it, and serves another instance's session", () => {
  const { core, token } = filesCore({
    sharedPresence: true,
    storedFiles: [["Alice", [stored("here.csv", 10)]]],
  });
  drain(core);
  core.fileChanged("put", { user: "alice", file: stored("there.csv", 20), owner: "[::1]:4001" });
  const request = (type: "download" | "delete", reqId: number, name: string, auth = token) => ({
    type,
    reqId,
    client: ALICE_ID,
    token: auth,
    name,
  } as const);
  assertEquals(
    as(ask(core, NOW, TCP_ALICE, request("download", 2, "THERE.csv")), "file_elsewhere"),
    {
      type: "file_elsewhere",
      reqId: 2,
      host: "::1",
      tcpPort: 4001,
    },
  );
  assertEquals(
    as(ask(core, NOW, TCP_ALICE, request("delete", 3, "there.csv")), "file_elsewhere").tcpPort,
    4001,
  );
  const list = as(
    ask(core, NOW, TCP_ALICE, { type: "files", reqId: 4, client: ALICE_ID, token }),
    "file_list",
  );
  assertEquals(list.files.map((f) => f.name), ["here.csv", "there.csv"]);
  assertEquals(list.usedBytes, 30);
  core.fileChanged("delete", { user: "Alice", file: stored("there.csv", 20), owner: "[::1]:4001" });
  assertError(ask(core, NOW, TCP_ALICE, request("download", 5, "there.csv")), "file_not_found");

  // Bob's session is on another instance: his token opens a download here (only its hash is known).
  const bobToken = new Uint8Array(16).fill(0xbb);
  const other = newCore({
    sharedPresence: true,
    storage: LIMITS,
    storedFiles: [["Bob", [stored("b.csv", 5)]]],
  });
  const bobDownload = {
    type: "download",
    reqId: 6,
    client: BOB_ID,
    token: bobToken,
    name: "b.csv",
  } as const;
  assertError(ask(other, NOW, TCP_ALICE, bobDownload), "not_logged_in");
  other.presenceChanged(NOW, "join", {
    name: "Bob",
    ip: "10.0.0.2",
    udpPort: 1,
    tcpPort: 2,
    since: NOW,
    tokenHash: toHex(sha256(bobToken)),
  });
  const out = call(other, NOW, TCP_ALICE, { ...bobDownload, reqId: 7 });
  assertEquals(outputsOf(out, "download").map((o) => [o.user, o.file.name]), [["Bob", "b.csv"]]);
  // Nothing else: his token lists nothing here, and once he leaves it opens nothing.
  assertError(
    ask(other, NOW, TCP_ALICE, { type: "files", reqId: 8, client: BOB_ID, token: bobToken }),
    "not_logged_in",
  );
  other.presenceChanged(NOW, "leave", {
    name: "Bob",
    ip: "10.0.0.2",
    udpPort: 1,
    tcpPort: 2,
    since: NOW,
  });
  assertError(ask(other, NOW, TCP_ALICE, { ...bobDownload, reqId: 9 }), "not_logged_in");
});

Deno.test("ServerCore.registryChanged() removes the files here of an identity removed on another instance", () => {
  const { core } = filesCore({
    sharedPresence: true,
    storedFiles: [["Old", [stored("kept.csv", 10)]]],
  });
  const record = {
    name: "Old",
    ip: "10.0.0.9",
    udpPort: 1,
    tcpPort: 2,
    registeredAt: new Date(NOW).toISOString(),
    publicKey: "0".repeat(64),
    keySha256: "",
    registeredBy: "f".repeat(32),
  };
  core.registryChanged([{ op: "put", record }]);
  drain(core);
  const keys = { publicKey: record.publicKey, keySha256: record.keySha256 };
  core.registryChanged([{ op: "delete", name: "Old", ...keys }]);
  const out = drain(core);
  assertEquals(outputsOf(out, "delete_user_files"), [{ type: "delete_user_files", user: "Old" }]);
  assertEquals(outputsOf(out, "file_store").map((o) => [o.op, o.file.name]), [[
    "delete",
    "kept.csv",
  ]]);
  // A name with nothing here costs nothing.
  core.registryChanged([{ op: "put", record: { ...record, name: "Other" } }]);
  core.registryChanged([{ op: "delete", name: "Other", ...keys }]);
  assertEquals(drain(core), []);
});

Deno.test("ServerCore.handle() deletes a file once the driver has", async (t) => {
  const { core, token } = filesCore({
    storedFiles: [["Alice", [stored("a.txt", 100), stored("b.txt", 200)]]],
  });
  const remove = (reqId: number, name: string): MessageOf<"delete"> => ({
    type: "delete",
    reqId,
    client: ALICE_ID,
    token,
    name,
  });

  await t.step("a missing file: file_not_found", () => {
    assertError(ask(core, NOW, TCP_ALICE, remove(2, "c.txt")), "file_not_found");
  });

  await t.step("delete asks for delete_file; fileDeleted answers delete_ok", () => {
    const out = call(core, NOW, TCP_ALICE, remove(3, "A.TXT"));
    assertEquals(sends(out), []);
    const [deletion] = outputsOf(out, "delete_file");
    assertEquals([deletion.user, deletion.name], ["Alice", "a.txt"]);
    core.fileDeleted(deletion.id);
    const done = drain(core);
    assertEquals(messagesOf(done, "delete_ok"), [{ type: "delete_ok", reqId: 3 }]);
    assertEquals(events(done), [{ kind: "file_deleted", user: "Alice", name: "a.txt" }]);
    const listing = as(ask(core, NOW, TCP_ALICE, withToken("files", 4, token)), "file_list");
    assertEquals([listing.usedBytes, listing.files.map((f) => f.name)], [200, ["b.txt"]]);
    assertEquals(
      ask(core, NOW, TCP_ALICE, remove(3, "A.TXT")),
      { type: "delete_ok", reqId: 3 },
      "a retransmission is answered again",
    );
  });

  await t.step("a failed deletion answers not_saved and keeps the file", () => {
    const [deletion] = outputsOf(call(core, NOW, TCP_ALICE, remove(5, "b.txt")), "delete_file");
    core.fileDeleted(deletion.id, "The server could not delete the file");
    assertError(messagesOf(drain(core), "error")[0], "not_saved");
    const listing = as(ask(core, NOW, TCP_ALICE, withToken("files", 6, token)), "file_list");
    assertEquals(listing.files.map((f) => f.name), ["b.txt"]);
  });
});

// --- shutdown ---------------------------------------------------------------------------------

Deno.test("ServerCore.shutdown() ends every session and tells each client", () => {
  const core = newCore();
  const alice = registerPersisted(core, 1, "Alice");
  const bob = registerPersisted(core, 1, "Bob", FROM_BOB, BOB_ID);
  core.shutdown();
  const out = drain(core);
  const ended = messagesOf(out, "session_ended");
  assertEquals(ended.map((m) => m.reason), [
    SESSION_END_REASONS.server_shutdown,
    SESSION_END_REASONS.server_shutdown,
  ]);
  assertEquals(
    new Set(ended.map((m) => toHex(m.token))),
    new Set([toHex(alice.token), toHex(bob.token)]),
  );
  assertEquals(core.sessions.size, 0);
  assertEquals(events(out).at(-1), { kind: "active", names: [] });
});

// --- regressions: lockout under concurrent guesses, file slots, deregister mid-upload ---

Deno.test({
  name: "ServerCore.handle() counts logins still being checked against the lockout (password mode)",
  fn: () => {
    const core = passwordCore({ maxAttempts: 3 });
    let verifications = 0;
    for (let i = 1; i <= 5; i++) {
      const out = call(
        core,
        NOW,
        FROM_BOB,
        login(i, "Alice", utf8(`guess ${i}`), { client: BOB_ID }),
      );
      verifications += outputsOf(out, "verify_password").length;
    }
    assert(verifications <= 3, `${verifications} guesses were checked at once; the limit is 3`);
  },
});

Deno.test({
  name: "ServerCore.handle() counts uploads in progress against maxFiles",
  fn: () => {
    const { core, token } = filesCore({
      storedFiles: [["Alice", [stored("a.txt", 1), stored("b.txt", 1)]]],
    });
    const other: Endpoint = { ...TCP_ALICE, port: 51001, connId: CONN + 1 };
    begin(core, 2, token, "c.txt", 1);
    assertError(ask(core, NOW, other, upload(3, token, "d.txt", 1)), "quota_exceeded");
  },
});

Deno.test({
  name: "ServerCore deregister ends the uploads in progress of the user",
  fn: () => {
    const { core, token } = filesCore();
    const id = begin(core, 2, token, "secret.txt", 10);
    handle(core, NOW, FROM_ALICE, withToken("deregister", 3, token));
    core.persisted(persists(drain(core))[0].version, NOW);
    drain(core);
    // The driver may already have the bytes and commit them: the core must not keep the file.
    call(core, NOW, TCP_ALICE, chunk(2, 10));
    core.uploadDone(id, { ok: true, file: stored("secret.txt", 10) });
    assertEquals(events(drain(core)).filter((e) => e.kind === "file_stored"), []);
    const mallory = registerPersisted(core, 1, "alice", FROM_BOB, BOB_ID);
    const tcp: Endpoint = { transport: "tcp", address: "10.0.0.2", port: 52000, connId: 9 };
    const listing = as(
      ask(core, NOW, tcp, withToken("files", 2, mallory.token, BOB_ID)),
      "file_list",
    );
    assertEquals(listing.files, [], "the new owner of the name sees no file");
  },
});

// --- counters and the session check of the rate limits ------------------------------

Deno.test("ServerCore.hasLiveSession() holds for a live session's token only", () => {
  const core = newCore({ leaseMs: 1000 });
  const { key, token } = registerPersisted(core, 1, "Alice");
  assert(core.hasLiveSession(withToken("heartbeat", 2, token)));
  assert(core.hasLiveSession({ type: "presence_ack", token, seq: 0 }));
  assert(!core.hasLiveSession(withToken("heartbeat", 2, key)), "the identity key is no token");
  assert(!core.hasLiveSession(withToken("heartbeat", 2, new Uint8Array(0))));
  assert(!core.hasLiveSession({ type: "hello", reqId: 1, client: ALICE_ID }), "no token field");
  assert(!core.hasLiveSession(register(3, "Bob")));
  advance(core, NOW + 2000);
  assert(!core.hasLiveSession(withToken("heartbeat", 2, token)), "the lease ran out");
});

Deno.test("ServerCore.stats counts auth failures, presence resends and shortened replies", () => {
  const core = newCore({ leaseMs: 60_000 });
  const alice = registerPersisted(core, 1, "Alice");
  const bob = registerPersisted(core, 1, "Bob", FROM_BOB, BOB_ID);
  ask(core, NOW, FROM_BOB, watch(2, bob.token, BOB_ID));
  assertEquals(core.watchers, 1);
  assertEquals(core.stats.authFailures, 0);
  // Two refusals for a dead token, two failed logins: four auth failures.
  assertError(
    ask(core, NOW, FROM_CAROL, withToken("logout", 5, new Uint8Array(16))),
    "not_logged_in",
  );
  assertError(ask(core, NOW, FROM_CAROL, list(6, new Uint8Array(0))), "not_logged_in");
  assertError(ask(core, NOW, FROM_CAROL, login(7, "Alice", new Uint8Array(16))), "login_failed");
  assertError(ask(core, NOW, FROM_CAROL, login(8, "Nobody", new Uint8Array(16))), "login_failed");
  // Refusals of another kind are not auth failures.
  assertError(ask(core, NOW, FROM_CAROL, register(9, "alice", { client: CAROL_ID })), "name_taken");
  assertEquals(core.stats.authFailures, 4);
  assertEquals(core.stats.refused, 5);
  // Both token refusals went to a source that had no session: shortened to fit.
  assertEquals(core.stats.shortenedReplies, 2);

  // Alice logs out: Bob is told, does not acknowledge, and the news is resent twice.
  ask(core, NOW, FROM_ALICE, withToken("logout", 3, alice.token));
  assertEquals(core.stats.presenceResent, 0);
  advance(core, NOW + 1600);
  assertEquals(core.stats.presenceResent, 2, "at 500 ms and 1.5 s");
  handle(core, NOW + 1700, FROM_BOB, { type: "presence_ack", token: bob.token, seq: 1 });
  advance(core, NOW + 20_000);
  assertEquals(core.stats.presenceResent, 2, "quiet once acknowledged");
});

// --- bounded growth: new names per address ---

Deno.test("ServerCore.handle() limits new names per address over UDP and TCP together", () => {
  const core = newCore({ limits: { registerRate: 3 } });
  const tcpAlice: Endpoint = {
    transport: "tcp",
    address: "10.0.0.1",
    port: 50000,
    connId: 7,
    clientKey: KEY_ALICE,
  };
  registerPersisted(core, 1, "a1");
  registerPersisted(core, 2, "a2");
  // A TCP register from the same address spends the same budget.
  handle(core, NOW, tcpAlice, register(3, "a3", { udpPort: 40001 }));
  core.persisted(persists(drain(core))[0].version, NOW);
  as(sends(drain(core))[0].message, "register_ok");
  const refused = assertError(
    ask(core, NOW + 1, tcpAlice, register(4, "a4", { udpPort: 40001 })),
    "busy",
  );
  assertEquals(
    refused.message,
    'Cannot register "a4": too many new names from your address (at most 3 a minute); ' +
      "try again later",
  );
  assertError(ask(core, NOW + 2, FROM_ALICE, register(5, "a5")), "busy");
  assertEquals(core.registry.size, 3, "nothing was added for a refused register");
  // Another address is not affected.
  registerPersisted(core, 1, "b1", FROM_BOB, BOB_ID);
  // The budget comes back at 3 a minute: one new name every 20 s.
  assertError(ask(core, NOW + 19_000, FROM_ALICE, register(6, "a6")), "busy");
  registerPersisted(core, 7, "a7", FROM_ALICE, ALICE_ID, NOW + 20_001);
  assertEquals(core.registry.size, 5);
});

Deno.test("ServerCore.handle() does not spend the register budget on a taken name or a retransmission", () => {
  const core = newCore({ limits: { registerRate: 1 } });
  registerPersisted(core, 1, "alice");
  // The retransmission is answered from the replay cache, a taken name is refused as taken.
  as(ask(core, NOW + 1, FROM_ALICE, register(1, "alice")), "register_ok");
  assertError(ask(core, NOW + 2, FROM_BOB, register(2, "ALICE", { client: BOB_ID })), "name_taken");
  // Her own key registering her name again is a login, not a new name.
  as(ask(core, NOW + 2, FROM_ALICE, register(3, "ALICE")), "register_ok");
  assertError(ask(core, NOW + 3, FROM_ALICE, register(4, "bob")), "busy");
});

// --- bounded growth: identities not seen expire ---

/** Runs timeouts up to `to`, acknowledging every registry write, and returns the outputs. */
function advanceSaved(core: ServerCore, to: number): ServerOutput[] {
  const out: ServerOutput[] = [];
  for (let i = 0; i < 1000; i++) {
    const next = core.nextTimeout();
    if (next === undefined || next > to) return out;
    core.onTimeout(next);
    const step = drain(core);
    out.push(...step);
    for (const p of persists(step)) {
      core.persisted(p.version, next);
      out.push(...drain(core));
    }
  }
  throw new Error("onTimeout does not make progress");
}

Deno.test("ServerCore with expireAfterMs removes identities not seen for that long, with their files", () => {
  const EXPIRE = 60_000;
  const core = newCore({
    expireAfterMs: EXPIRE,
    storedFiles: [["Bob", [{ name: "b.txt", size: 3, sha256: "ab".repeat(32), uploadedAt: "" }]]],
  });
  const alice = registerPersisted(core, 1, "Alice");
  const bob = registerPersisted(core, 1, "Bob", FROM_BOB, BOB_ID);
  handle(core, NOW, FROM_ALICE, withToken("logout", 2, alice.token));
  handle(core, NOW, FROM_BOB, withToken("logout", 2, bob.token, BOB_ID));
  drain(core);
  // Alice logs in again at +50 s: her last-seen time is written, no reply waits on it.
  const out = call(core, NOW + 50_000, FROM_ALICE, login(3, "Alice", NO_SECRET));
  as(sends(out)[0].message, "login_ok");
  const [touch] = persists(out);
  assertEquals(touch.registry.Alice.last_seen, new Date(NOW + 50_000).toISOString());
  assertEquals(touch.registry.Bob.last_seen, new Date(NOW).toISOString());
  core.persisted(touch.version, NOW + 50_000);
  handle(
    core,
    NOW + 50_000,
    FROM_ALICE,
    withToken("logout", 4, core.sessions.byName("Alice")!.token),
  );
  drain(core);

  const swept = advanceSaved(core, NOW + EXPIRE);
  assertEquals(events(swept).filter((e) => e.kind === "expired" || e.kind === "file_deleted"), [
    { kind: "file_deleted", user: "Bob", name: "b.txt" },
    { kind: "expired", name: "Bob", lastSeen: new Date(NOW).toISOString(), files: 1 },
  ]);
  assertEquals(outputsOf(swept, "delete_user_files"), [{ type: "delete_user_files", user: "Bob" }]);
  assertEquals(Object.keys(persists(swept).at(-1)!.registry), ["Alice"]);
  assertEquals(core.registry.records().map((r) => r.name), ["Alice"]);
  // The name is free again, and Alice goes a minute after she was last seen (checked every
  // expireAfterMs / 10).
  registerPersisted(core, 9, "bob", FROM_CAROL, "0123012301230123", NOW + EXPIRE);
  const expired = (out: ServerOutput[]) =>
    events(out).flatMap((e) => e.kind === "expired" ? [e.name] : []);
  assertEquals(expired(advanceSaved(core, NOW + 50_000 + EXPIRE - 1)), []);
  const later = advanceSaved(core, NOW + 50_000 + EXPIRE + 6_000);
  assertEquals(expired(later), ["Alice"]);
});

Deno.test("ServerCore with expireAfterMs keeps an identity whose session lives on heartbeats", () => {
  const core = newCore({ expireAfterMs: 60_000 });
  const carol = registerPersisted(core, 1, "Carol");
  for (let t = 20_000; t <= 300_000; t += 20_000) {
    advanceSaved(core, NOW + t);
    const out = call(core, NOW + t, FROM_ALICE, withToken("heartbeat", 1 + t / 1000, carol.token));
    as(sends(out)[0].message, "heartbeat_ok");
    for (const p of persists(out)) core.persisted(p.version, NOW + t);
  }
  assertEquals(core.registry.size, 1);
  // Heartbeats refresh the last-seen time every expireAfterMs / 10 at most.
  const seen = Date.parse(core.registry.get("Carol")!.lastSeenAt!);
  assert(seen >= NOW + 300_000 - 6_000, new Date(seen).toISOString());
  // Once the session is gone, the minute starts from then.
  handle(core, NOW + 300_000, FROM_ALICE, withToken("logout", 999, carol.token));
  drain(core);
  advanceSaved(core, NOW + 300_000 + 59_000);
  assertEquals(core.registry.size, 1);
  advanceSaved(core, NOW + 300_000 + 61_000);
  assertEquals(core.registry.size, 0);
});

Deno.test("ServerCore without expireAfterMs never removes an identity", () => {
  const core = newCore();
  const alice = registerPersisted(core, 1, "Alice");
  handle(core, NOW, FROM_ALICE, withToken("logout", 2, alice.token));
  drain(core);
  core.onTimeout(NOW + 10 * 365 * 86_400_000);
  assertEquals(core.registry.size, 1);
});

Deno.test("ServerCore (shared store) refuses a failed login once the store recorded it, and counts the failures the store holds", () => {
  const core = passwordCore({ sharedPresence: true });
  const [verify] = outputsOf(
    call(core, NOW, FROM_ALICE, login(1, "Alice", utf8("guess"))),
    "verify_password",
  );
  core.passwordChecked(NOW, verify.id, false);
  const out = drain(core);
  assertEquals(sends(out), [], "no refusal before the store has the failure");
  const [stored] = outputsOf(out, "login_store");
  assertEquals(stored.outcome, {
    source: "10.0.0.1",
    name: "alice",
    ok: false,
    at: NOW,
    keepMs: 30 * 60_000,
  });
  core.loginRecorded(stored.id!, NOW);
  const error = assertError(sends(drain(core))[0].message, "login_failed");
  assertStringIncludes(error.message, "2 attempts left");
  core.loginRecorded(stored.id!, NOW);
  assertEquals(drain(core), [], "told twice: nothing more");

  // Two failures elsewhere, as the store holds them: the next one here blocks.
  core.loginsSynced([{ source: "10.0.0.1", name: "alice", failures: [NOW + 1, NOW + 2] }]);
  const [again] = outputsOf(
    call(core, NOW + 3, FROM_ALICE, login(2, "Alice", utf8("guess"))),
    "verify_password",
  );
  core.passwordChecked(NOW + 3, again.id, false);
  core.loginRecorded(outputsOf(drain(core), "login_store")[0].id!, NOW + 3);
  assertError(sends(drain(core))[0].message, "locked_out");
});

Deno.test("ServerCore (shared store) answers a failed login as the store counted it, every instance's failures in", () => {
  const core = passwordCore({ sharedPresence: true });
  const guess = (reqId: number, at: number) => {
    const [verify] = outputsOf(
      call(core, at, FROM_ALICE, login(reqId, "Alice", utf8("guess"))),
      "verify_password",
    );
    core.passwordChecked(at, verify.id, false);
    return outputsOf(drain(core), "login_store")[0].id!;
  };
  // Another instance's failure came first: this one is the second.
  core.loginRecorded(guess(1, NOW), NOW, { failures: [NOW - 1, NOW] });
  assertStringIncludes(
    assertError(sends(drain(core))[0].message, "login_failed").message,
    "1 attempt left",
  );
  // Two came meanwhile: the block began before this one, which is refused as blocked.
  core.loginRecorded(guess(2, NOW + 1), NOW + 1, {
    failures: [NOW - 1, NOW, NOW, NOW + 1, NOW + 1],
  });
  assertStringIncludes(
    assertError(sends(drain(core))[0].message, "locked_out").message,
    "Too many failed logins",
  );
});
