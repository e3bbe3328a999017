import { assert, assertEquals, assertNotEquals, assertStringIncludes } from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { toHex } from "../lib/hex.ts";
import { SeededRandom } from "../lib/random.ts";
import { Registry } from "../lib/server/registry.ts";
import {
  type Endpoint,
  ServerCore,
  type ServerEvent,
  type ServerOutput,
} from "../lib/server/server_core.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import type { MessageOf, Reply } from "../lib/wire/messages.ts";

const NOW = Date.UTC(2025, 0, 2, 3, 4, 5);
const ALICE_ID = "00112233aabbccdd";
const BOB_ID = "ffeeddcc99887766";
const FROM_ALICE: Endpoint = { transport: "udp", address: "10.0.0.1", port: 40001 };
const FROM_BOB: Endpoint = { transport: "udp", address: "10.0.0.2", port: 40002 };

function newCore(registry = new Registry()): ServerCore {
  return new ServerCore({
    registry,
    random: new SeededRandom(1),
    tcpPort: 3001,
    version: "9.9.9",
  });
}

function drain(core: ServerCore): ServerOutput[] {
  const out: ServerOutput[] = [];
  for (let o = core.poll(); o !== undefined; o = core.poll()) out.push(o);
  return out;
}

function sends(outputs: ServerOutput[]): { to: Endpoint; message: Reply }[] {
  return outputs.flatMap((o) => o.type === "send" ? [{ to: o.to, message: o.message }] : []);
}

function persists(outputs: ServerOutput[]): Extract<ServerOutput, { type: "persist" }>[] {
  return outputs.flatMap((o) => o.type === "persist" ? [o] : []);
}

function events(outputs: ServerOutput[]): ServerEvent[] {
  return outputs.flatMap((o) => o.type === "event" ? [o.event] : []);
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

/** Registers `name`, completes the persist, and returns the token. */
function registerPersisted(
  core: ServerCore,
  reqId: number,
  name: string,
  from = FROM_ALICE,
  client = ALICE_ID,
): Uint8Array {
  core.handle(NOW, from, register(reqId, name, { client }));
  const [persist] = persists(drain(core));
  assert(persist !== undefined, "no persist output");
  core.persisted(persist.version);
  const [reply] = sends(drain(core));
  assertEquals(reply.message.type, "register_ok");
  return (reply.message as MessageOf<"register_ok">).token;
}

function assertError(reply: Reply, code: keyof typeof ERROR_CODES): MessageOf<"error"> {
  assertEquals(reply.type, "error", `expected an error reply, got ${reply.type}`);
  const error = reply as MessageOf<"error">;
  assertEquals(error.code, ERROR_CODES[code]);
  return error;
}

Deno.test("ServerCore.handle() answers hello with the TCP port and version", () => {
  const core = newCore();
  core.handle(NOW, FROM_ALICE, { type: "hello", reqId: 7, client: ALICE_ID });
  assertEquals(sends(drain(core)), [{
    to: FROM_ALICE,
    message: { type: "hello_ok", reqId: 7, tcpPort: 3001, serverVersion: "9.9.9" },
  }]);
});

Deno.test("ServerCore.handle() sends register_ok only after persisted(version)", () => {
  const core = newCore();
  core.handle(NOW, FROM_ALICE, register(1, "Alice"));
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

  core.persisted(persist.version);
  const after = drain(core);
  const replies = sends(after);
  assertEquals(replies.length, 1);
  assertEquals(replies[0].to, FROM_ALICE);
  assertEquals(replies[0].message.type, "register_ok");
  const token = (replies[0].message as MessageOf<"register_ok">).token;
  assertEquals(token.length, 16);
  assertEquals(persist.registry.Alice.key_sha256, toHex(sha256(token)));
  assertEquals(events(after).map((e) => e.kind), ["registered"]);
  assertEquals(persists(after), []);
  assert(!core.hasUnsavedChanges);
});

Deno.test("ServerCore.handle() refuses a name taken in another case with name_taken", () => {
  const core = newCore();
  registerPersisted(core, 1, "Alice");
  core.handle(NOW, FROM_BOB, register(1, "ALICE", { client: BOB_ID }));
  const out = drain(core);
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
    core.handle(NOW, FROM_ALICE, register(1, name));
    const out = drain(core);
    assertEquals(persists(out), [], `persisted for ${JSON.stringify(name)}`);
    assertError(sends(out)[0].message, "invalid_name");
    assertEquals(core.registry.size, 0);
  }
});

Deno.test("ServerCore.handle() refuses a TCP port below 1024", () => {
  const core = newCore();
  core.handle(NOW, FROM_ALICE, register(1, "Alice", { tcpPort: 1023 }));
  const out = drain(core);
  assertEquals(persists(out), []);
  const error = assertError(sends(out)[0].message, "bad_request");
  assertStringIncludes(error.message, "1023");
  assertEquals(core.registry.size, 0);

  core.handle(NOW, FROM_ALICE, register(2, "Alice", { tcpPort: 1024 }));
  assertEquals(persists(drain(core)).length, 1);
});

Deno.test("ServerCore.handle() answers a retransmitted register from the replay cache", () => {
  const core = newCore();
  core.handle(NOW, FROM_ALICE, register(1, "Alice"));
  const [persist] = persists(drain(core));
  core.persisted(persist.version);
  const first = drain(core);
  const [original] = sends(first);

  core.handle(NOW + 1000, FROM_ALICE, register(1, "Alice"));
  const again = drain(core);
  assertEquals(persists(again), [], "a replay must not persist again");
  const [replayed] = sends(again);
  assertEquals(replayed.message, original.message, "the replay carries the same token");
  assertEquals(events(again).map((e) => e.kind), ["replayed"]);
  assertEquals(core.registry.size, 1);
  assertEquals(
    [...events(first), ...events(again)].filter((e) => e.kind === "registered").length,
    1,
  );
  assertEquals(core.stats.replays, 1);
  assertEquals(core.stats.requests, 2);
});

Deno.test("ServerCore.handle() answers a refused request again with the same error", () => {
  const core = newCore();
  core.handle(NOW, FROM_ALICE, register(1, "a/b"));
  const [first] = sends(drain(core));
  core.handle(NOW, FROM_ALICE, register(1, "a/b"));
  const [second] = sends(drain(core));
  assertEquals(second.message, first.message);
  assertEquals(core.stats.replays, 1);
});

Deno.test("ServerCore.handle() drops a retransmission while the write is pending", () => {
  const core = newCore();
  core.handle(NOW, FROM_ALICE, register(1, "Alice"));
  const [persist] = persists(drain(core));
  core.handle(NOW + 500, FROM_ALICE, register(1, "Alice"));
  core.handle(NOW + 1500, FROM_ALICE, register(1, "Alice"));
  assertEquals(drain(core), [], "retransmissions of a pending request are dropped");
  core.persisted(persist.version);
  const out = drain(core);
  assertEquals(sends(out).length, 1, "answered once");
  assertEquals(sends(out)[0].message.type, "register_ok");
  assertEquals(events(out).filter((e) => e.kind === "registered").length, 1);
  assertEquals(core.registry.size, 1);
});

Deno.test("ServerCore.handle() executes a reused reqId with different content as new", () => {
  const core = newCore();
  core.handle(NOW, FROM_ALICE, register(1, "a/b"));
  assertError(sends(drain(core))[0].message, "invalid_name");
  // Same client id and reqId, different name: not a retransmission.
  core.handle(NOW, FROM_ALICE, register(1, "Alice"));
  const out = drain(core);
  assertEquals(persists(out).length, 1, "the new request is executed");
  assertEquals(sends(out), []);
  core.persisted(persists(out)[0].version);
  assertEquals(sends(drain(core))[0].message.type, "register_ok");
  assertEquals(core.registry.get("alice")?.name, "Alice");
  assertEquals(core.stats.replays, 0);
});

Deno.test("ServerCore.handle() keeps replay state per client id", () => {
  const core = newCore();
  registerPersisted(core, 1, "Alice");
  // Bob uses the same reqId and content shape but another client id.
  core.handle(NOW, FROM_BOB, register(1, "Alice", { client: BOB_ID }));
  assertError(sends(drain(core))[0].message, "name_taken");
});

Deno.test("ServerCore.handle() deregisters only with the right token", async (t) => {
  await t.step("wrong token gives bad_token and leaves the registry", () => {
    const core = newCore();
    const token = registerPersisted(core, 1, "Alice");
    const wrong = token.slice();
    wrong[0] ^= 0xff;
    core.handle(NOW, FROM_BOB, {
      type: "deregister",
      reqId: 5,
      client: BOB_ID,
      name: "alice",
      token: wrong,
    });
    const out = drain(core);
    assertEquals(persists(out), []);
    assertError(sends(out)[0].message, "bad_token");
    assertEquals(core.registry.size, 1);
  });

  await t.step("an empty token gives bad_token", () => {
    const core = newCore();
    registerPersisted(core, 1, "Alice");
    core.handle(NOW, FROM_BOB, {
      type: "deregister",
      reqId: 5,
      client: BOB_ID,
      name: "Alice",
      token: new Uint8Array(0),
    });
    assertError(sends(drain(core))[0].message, "bad_token");
    assertEquals(core.registry.size, 1);
  });

  await t.step("an unknown name gives not_registered", () => {
    const core = newCore();
    core.handle(NOW, FROM_ALICE, {
      type: "deregister",
      reqId: 2,
      client: ALICE_ID,
      name: "Nobody",
      token: new Uint8Array(16),
    });
    const error = assertError(sends(drain(core))[0].message, "not_registered");
    assertStringIncludes(error.message, "Nobody");
  });

  await t.step("the right token removes the entry once persisted", () => {
    const core = newCore();
    const token = registerPersisted(core, 1, "Alice");
    core.handle(NOW, FROM_ALICE, {
      type: "deregister",
      reqId: 2,
      client: ALICE_ID,
      name: "ALICE",
      token,
    });
    const out = drain(core);
    assertEquals(sends(out), []);
    const [persist] = persists(out);
    assertEquals(persist.registry, {});
    assertEquals(core.registry.size, 0);
    core.persisted(persist.version);
    const after = drain(core);
    assertEquals(sends(after)[0].message, { type: "deregister_ok", reqId: 2 });
    const [event] = events(after);
    if (event.kind !== "deregistered") throw new Error(`expected deregistered, got ${event.kind}`);
    assertEquals([event.name, event.transport], ["Alice", "udp"]);
  });

  await t.step("a seed entry without a token cannot be deregistered", () => {
    const registry = Registry.fromJson({
      Seed: { ip: "10.0.0.9", udp_port: 4000, tcp_port: 4001 },
    });
    const core = newCore(registry);
    core.handle(NOW, FROM_ALICE, {
      type: "deregister",
      reqId: 3,
      client: ALICE_ID,
      name: "Seed",
      token: new Uint8Array(16),
    });
    assertError(sends(drain(core))[0].message, "bad_token");
    assertEquals(core.registry.size, 1);
  });
});

Deno.test("ServerCore.persistFailed() undoes a register and answers not_saved", () => {
  const core = newCore();
  core.handle(NOW, FROM_ALICE, register(1, "Alice"));
  const [persist] = persists(drain(core));
  assertEquals(core.registry.size, 1);
  core.persistFailed(persist.version, "disk full");
  const out = drain(core);
  assertEquals(core.registry.size, 0);
  const error = assertError(sends(out)[0].message, "not_saved");
  assertStringIncludes(error.message, "Alice");
  assert(events(out).some((e) => e.kind === "save_failed" && e.reason === "disk full"));
  assertEquals(events(out).filter((e) => e.kind === "registered"), []);
  assertEquals(persists(out), [], "nothing left to persist");
  assert(!core.hasUnsavedChanges);

  // The name is free again for a new request.
  core.handle(NOW, FROM_BOB, register(1, "Alice", { client: BOB_ID }));
  assertEquals(persists(drain(core)).length, 1);
});

Deno.test("ServerCore.persistFailed() undoes a deregister and answers not_saved", () => {
  const core = newCore();
  const token = registerPersisted(core, 1, "Alice");
  core.handle(NOW, FROM_ALICE, {
    type: "deregister",
    reqId: 2,
    client: ALICE_ID,
    name: "Alice",
    token,
  });
  const [persist] = persists(drain(core));
  assertEquals(core.registry.size, 0);
  core.persistFailed(persist.version, "read-only file system");
  assertError(sends(drain(core))[0].message, "not_saved");
  assertEquals(core.registry.get("alice")?.keySha256, toHex(sha256(token)));
});

Deno.test("ServerCore.handle() group-commits changes made while a persist is in flight", () => {
  const core = newCore();
  core.handle(NOW, FROM_ALICE, register(1, "Alice"));
  const [first] = persists(drain(core));
  assertEquals(Object.keys(first.registry), ["Alice"]);

  core.handle(NOW, FROM_BOB, register(1, "Bob", { client: BOB_ID }));
  core.handle(
    NOW,
    { ...FROM_BOB, port: 40003 },
    register(1, "Carol", { client: "0000000000000003" }),
  );
  assertEquals(drain(core), [], "no second persist while the first is in flight");

  core.persisted(first.version);
  const out = drain(core);
  assertEquals(sends(out).map((s) => s.to), [FROM_ALICE]);
  const [second] = persists(out);
  assert(second.version > first.version);
  assertEquals(Object.keys(second.registry), ["Alice", "Bob", "Carol"]);

  core.persisted(second.version);
  const last = drain(core);
  assertEquals(sends(last).map((s) => s.message.type), ["register_ok", "register_ok"]);
  assertEquals(sends(last).map((s) => s.to.port), [40002, 40003]);
  assertEquals(persists(last), []);
});

Deno.test("ServerCore.persistFailed() undoes every change not yet durable", () => {
  const core = newCore();
  core.handle(NOW, FROM_ALICE, register(1, "Alice"));
  const [first] = persists(drain(core));
  core.handle(NOW, FROM_BOB, register(1, "Bob", { client: BOB_ID }));
  drain(core);
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
  core.handle(NOW, FROM_BOB, register(2, "Bob", { client: BOB_ID }));
  const [next] = persists(drain(core));
  assertEquals(Object.keys(next.registry), ["Bob"]);
  core.persisted(next.version);
  assertEquals(sends(drain(core))[0].message.type, "register_ok");
});

Deno.test("ServerCore.persistFailed() restores a name whose deregister and re-register were pending", () => {
  const core = newCore();
  const token = registerPersisted(core, 1, "Alice");
  core.handle(NOW, FROM_ALICE, {
    type: "deregister",
    reqId: 2,
    client: ALICE_ID,
    name: "Alice",
    token,
  });
  const [write] = persists(drain(core));
  core.handle(NOW, FROM_BOB, register(1, "alice", { client: BOB_ID }));
  drain(core);
  core.persistFailed(write.version, "disk full");
  const out = drain(core);
  assertEquals(sends(out).length, 2);
  assertEquals(core.registry.records().map((r) => r.name), ["Alice"]);
  assertEquals(core.hasUnsavedChanges, false);
});

Deno.test("ServerCore.handle() takes the UDP port from the source over UDP", () => {
  const core = newCore();
  core.handle(NOW, FROM_ALICE, register(1, "Alice", { udpPort: 12345 }));
  drain(core);
  assertEquals(core.registry.get("Alice")?.udpPort, FROM_ALICE.port);
});

Deno.test("ServerCore.handle() takes the UDP port from the message over TCP", () => {
  const core = newCore();
  const tcp: Endpoint = { transport: "tcp", address: "10.0.0.5", port: 51000, connId: 4 };
  core.handle(NOW, tcp, register(1, "Alice", { udpPort: 12345 }));
  const [persist] = persists(drain(core));
  assertEquals(core.registry.get("Alice")?.udpPort, 12345);
  assertEquals(core.registry.get("Alice")?.ip, "10.0.0.5");
  core.persisted(persist.version);
  const out = drain(core);
  assertEquals(sends(out)[0].to, tcp);
  const registered = events(out).find((e) => e.kind === "registered");
  if (registered?.kind !== "registered") throw new Error("no registered event");
  assertEquals(
    [registered.name, registered.ip, registered.udpPort, registered.tcpPort, registered.transport],
    ["Alice", "10.0.0.5", 12345, 5001, "tcp"],
  );

  core.handle(NOW, tcp, register(2, "Bob", { udpPort: 0 }));
  assertError(sends(drain(core))[0].message, "bad_request");
});

Deno.test("ServerCore.handle() marks text verified only with the name's token", async (t) => {
  const core = newCore();
  const token = registerPersisted(core, 1, "Alice");
  const tcp: Endpoint = { transport: "tcp", address: "10.0.0.1", port: 51000, connId: 1 };
  const cases: [string, string, Uint8Array, boolean][] = [
    ["with its token", "alice", token, true],
    ["with a wrong token", "Alice", new Uint8Array(16), false],
    ["with no token", "Alice", new Uint8Array(0), false],
    ["unregistered", "Mallory", token, false],
    ["anonymous", "", new Uint8Array(0), false],
  ];
  let reqId = 10;
  for (const [label, name, tok, verified] of cases) {
    await t.step(label, () => {
      reqId++;
      core.handle(NOW, tcp, {
        type: "text",
        reqId,
        client: ALICE_ID,
        name,
        token: tok,
        text: "hi",
      });
      const out = drain(core);
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
  core.handle(NOW, FROM_ALICE, { type: "text_ok", reqId: 1 });
  const out = drain(core);
  assertEquals(sends(out), []);
  assertEquals(events(out), [{ kind: "unexpected", from: FROM_ALICE, type: "text_ok" }]);
  assertEquals(core.stats.requests, 0);
});

Deno.test("ServerCore gives different tokens to different registrations", () => {
  const core = newCore();
  const a = registerPersisted(core, 1, "Alice");
  const b = registerPersisted(core, 1, "Bob", FROM_BOB, BOB_ID);
  assertNotEquals(a, b);
});

Deno.test("ServerCore.handle() gives a register retransmitted after a restart its original token", () => {
  const secret = new Uint8Array(32).fill(7);
  const before = new ServerCore({
    registry: new Registry(),
    random: new SeededRandom(1),
    secret,
    tcpPort: 3001,
    version: "9.9.9",
  });
  const token = registerPersisted(before, 1, "Alice");

  // A new core (the replay cache is gone) on the persisted registry and key.
  const after = new ServerCore({
    registry: Registry.fromJson(before.registry.toJson()),
    random: new SeededRandom(2),
    secret,
    tcpPort: 3001,
    version: "9.9.9",
  });
  after.handle(NOW + 5000, FROM_ALICE, register(1, "Alice"));
  const out = drain(after);
  assertEquals(persists(out), [], "nothing changes");
  assertEquals(sends(out).map((s) => s.message), [{ type: "register_ok", reqId: 1, token }]);
  assertEquals(after.registry.size, 1);

  // Another client's request for the name is still refused.
  after.handle(NOW + 5000, FROM_BOB, register(1, "Alice", { client: BOB_ID }));
  assertError(sends(drain(after))[0].message, "name_taken");
});

Deno.test("ServerCore.handle() never hands a token to a changed or late copy of a register", () => {
  const secret = new Uint8Array(32).fill(9);
  const options = { random: new SeededRandom(3), secret, tcpPort: 3001, version: "9.9.9" };
  const before = new ServerCore({ ...options, registry: new Registry() });
  registerPersisted(before, 1, "Alice");
  const restarted = () =>
    new ServerCore({ ...options, registry: Registry.fromJson(before.registry.toJson()) });

  // Same client id and request id, different content: a new request, refused.
  const changed = restarted();
  changed.handle(NOW + 5000, FROM_BOB, register(1, "Alice", { tcpPort: 6000 }));
  assertError(sends(drain(changed))[0].message, "name_taken");

  // The very same request, but after the replay window: refused too.
  const late = restarted();
  late.handle(NOW + 10 * 60_000, FROM_ALICE, register(1, "Alice"));
  assertError(sends(drain(late))[0].message, "name_taken");
});

Deno.test("ServerCore.handle() holds a retransmission whose cache entry was evicted until the write lands", () => {
  const core = new ServerCore({
    registry: new Registry(),
    random: new SeededRandom(1),
    tcpPort: 3001,
    version: "9.9.9",
    replay: { perClient: 1 },
  });
  core.handle(NOW, FROM_ALICE, register(1, "Alice"));
  const [write] = persists(drain(core));
  core.handle(NOW, FROM_ALICE, { type: "hello", reqId: 2, client: ALICE_ID }); // evicts reqId 1
  drain(core);
  core.handle(NOW + 500, FROM_ALICE, register(1, "Alice"));
  assertEquals(sends(drain(core)), [], "no reply before the registration is durable");
  core.persisted(write.version);
  assertEquals(sends(drain(core)).map((s) => s.message.type), ["register_ok"]);
});
