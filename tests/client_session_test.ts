import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { ClientCore, type CoreCommand } from "../lib/client/client_core.ts";
import type { ClientOutput } from "../lib/client/outbox.ts";
import type { ClientEvent, CommandResult } from "../lib/client/client_event.ts";
import { CommandError, parseCommand } from "../lib/client/command.ts";
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from "../lib/client/retry_policy.ts";
import { ServerSession, type SessionOutput } from "../lib/client/server_session.ts";
import { VirtualClock } from "../lib/clock.ts";
import { SeededRandom } from "../lib/random.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import {
  AUTH_MODES,
  type MessageOf,
  PRESENCE_CHANGES,
  type Request,
  SESSION_END_REASONS,
} from "../lib/wire/messages.ts";

const NO_JITTER: RetryPolicy = { ...DEFAULT_RETRY_POLICY, jitter: 0 };

function drain(session: ServerSession): SessionOutput[] {
  const out: SessionOutput[] = [];
  for (let o = session.poll(); o !== undefined; o = session.poll()) out.push(o);
  return out;
}

interface Run {
  /** Times of every send, relative to the first. */
  sends: number[];
  /** Time and reason of the failure. */
  failed?: { at: number; reason: string };
}

/** Runs one request with no answer until the session gives up. */
function runUnanswered(
  session: ServerSession,
  clock: VirtualClock,
  via: "udp" | "tcp" = "udp",
): Run {
  const start = clock.now();
  const run: Run = { sends: [] };
  session.start(start, { type: "hello" }, via);
  for (let guard = 0; guard < 1000; guard++) {
    for (const o of drain(session)) {
      if (o.type === "send") run.sends.push(clock.now() - start);
      if (o.type === "failed") run.failed = { at: clock.now() - start, reason: o.reason };
    }
    const next = session.nextTimeout();
    if (next === undefined) return run;
    clock.set(next);
    session.onTimeout(clock.now());
  }
  throw new Error("the session never gave up");
}

// --- ServerSession -----------------------------------------------------------

Deno.test("ServerSession.onTimeout() backs off 500 ms doubling to 8 s and gives up at 30 s", () => {
  const clock = new VirtualClock(1_000_000);
  const session = new ServerSession({ random: new SeededRandom(1), retry: NO_JITTER });
  const run = runUnanswered(session, clock);
  assertEquals(run.sends, [0, 500, 1500, 3500, 7500, 15500, 23500]);
  assertEquals(run.failed?.at, 30_000);
  assertStringIncludes(run.failed!.reason, "did not answer within 30 s");
  assertStringIncludes(run.failed!.reason, "7 attempts");
  assertEquals(session.retransmissions, 6);
  assertEquals(session.nextTimeout(), undefined);
});

Deno.test("ServerSession.onTimeout() keeps jittered delays within ±20% of nominal", () => {
  const nominal = [500, 1000, 2000, 4000, 8000, 8000];
  for (let seed = 1; seed <= 50; seed++) {
    const clock = new VirtualClock();
    const session = new ServerSession({ random: new SeededRandom(seed) });
    const run = runUnanswered(session, clock);
    const gaps = run.sends.slice(1).map((t, i) => t - run.sends[i]);
    assert(gaps.length >= 5, `seed ${seed}: only ${gaps.length} retransmissions`);
    gaps.forEach((gap, i) => {
      const base = nominal[Math.min(i, nominal.length - 1)];
      assert(
        gap >= base * 0.8 - 1e-9 && gap <= base * 1.2 + 1e-9,
        `seed ${seed}: delay ${i} is ${gap} ms, nominal ${base} ms`,
      );
    });
    assertEquals(run.failed?.at, 30_000, `seed ${seed}`);
  }
});

Deno.test("ServerSession.onTimeout() uses different jitter for different seeds", () => {
  const a = runUnanswered(new ServerSession({ random: new SeededRandom(1) }), new VirtualClock());
  const b = runUnanswered(new ServerSession({ random: new SeededRandom(2) }), new VirtualClock());
  assert(a.sends[1] !== b.sends[1]);
});

Deno.test("ServerSession.handle() stops retransmission when the reply comes", () => {
  const clock = new VirtualClock();
  const session = new ServerSession({ random: new SeededRandom(3), retry: NO_JITTER });
  const reqId = session.start(clock.now(), { type: "hello" }, "udp");
  const [send] = drain(session);
  if (send.type !== "send") throw new Error("expected a send");
  const message = send.message;
  assertEquals(message.reqId, reqId);
  assertEquals(message.client, session.clientId);
  assert(/^[0-9a-f]{16}$/.test(session.clientId));

  clock.set(500);
  session.onTimeout(clock.now());
  assertEquals(drain(session).map((o) => o.type), ["send"]);

  const reply = {
    type: "hello_ok",
    reqId,
    tcpPort: 3001,
    serverVersion: "1",
    auth: 0,
    leaseMs: 30_000,
    serverKey: new Uint8Array(32),
  } as const;
  assert(session.handle(clock.now(), reply));
  assertEquals(drain(session), [{ type: "reply", reqId, reply }]);
  assertEquals(session.nextTimeout(), undefined);
  clock.set(60_000);
  session.onTimeout(clock.now());
  assertEquals(drain(session), []);
  assertEquals(session.retransmissions, 1);
  assert(!session.handle(clock.now(), reply), "a duplicate reply is not matched again");
  assertEquals(drain(session), []);
});

Deno.test("ServerSession.handle() ignores a reply for an unknown reqId", () => {
  const session = new ServerSession({ random: new SeededRandom(4), retry: NO_JITTER });
  const reqId = session.start(0, { type: "hello" }, "udp");
  drain(session);
  assert(!session.handle(10, { type: "text_ok", reqId: (reqId + 1) >>> 0 }));
  assertEquals(drain(session), []);
  assertEquals(session.nextTimeout(), 500, "the request is still outstanding");
  assert(
    !session.handle(10, { type: "hello", reqId, client: "0000000000000000" }),
    "a request is not a reply",
  );
  assertEquals(drain(session), []);
});

Deno.test("ServerSession.start() gives consecutive requests distinct ids", () => {
  const session = new ServerSession({ random: new SeededRandom(5) });
  const a = session.start(0, { type: "hello" }, "udp");
  const b = session.start(0, { type: "hello" }, "udp");
  assertEquals(b, (a + 1) >>> 0);
});

Deno.test("ServerSession.onTimeout() does not retransmit TCP requests and fails at give-up", () => {
  const clock = new VirtualClock(5000);
  const session = new ServerSession({ random: new SeededRandom(6) });
  const run = runUnanswered(session, clock, "tcp");
  assertEquals(run.sends, [0]);
  assertEquals(run.failed?.at, 30_000);
  assertStringIncludes(run.failed!.reason, "did not answer within 30 s");
  assertEquals(session.retransmissions, 0);
});

Deno.test("ServerSession.failAll() fails only requests on the given transport", () => {
  const session = new ServerSession({ random: new SeededRandom(7), retry: NO_JITTER });
  const udp = session.start(0, { type: "hello" }, "udp");
  const tcp1 = session.start(0, {
    type: "text",
    name: "",
    token: new Uint8Array(0),
    text: "a",
  }, "tcp");
  const tcp2 = session.start(0, {
    type: "text",
    name: "",
    token: new Uint8Array(0),
    text: "b",
  }, "tcp");
  drain(session);
  session.failAll("tcp", "connection refused");
  assertEquals(drain(session), [
    { type: "failed", reqId: tcp1, code: "connection_failed", reason: "connection refused" },
    { type: "failed", reqId: tcp2, code: "connection_failed", reason: "connection refused" },
  ]);
  assertEquals(session.nextTimeout(), 500);
  assert(session.handle(1, { type: "text_ok", reqId: udp }));
  assert(!session.handle(1, { type: "text_ok", reqId: tcp1 }));
});

// --- ClientCore --------------------------------------------------------------

/** A version 2 identity key (a key-pair identity's login sends {@linkcode NO_SECRET}). */
const KEY = new Uint8Array(16).fill(7);
const NO_SECRET = new Uint8Array(0);
const TOKEN = new Uint8Array(16).fill(9);
const TOKEN2 = new Uint8Array(16).fill(10);
const SHA = new Uint8Array(32).fill(1);
const MIB = 1024 * 1024;

function newClient(
  options: { name?: string; via?: "udp" | "tcp"; failover?: boolean } = {},
): ClientCore {
  return new ClientCore({
    failover: options.failover,
    random: new SeededRandom(11),
    retry: NO_JITTER,
    name: options.name,
    udpPort: 40000,
    tcpPort: 5001,
    via: options.via ?? "udp",
    server: "127.0.0.1:3000",
    // Address discovery's own tests: tests/address_discovery_test.ts.
    discover: false,
  });
}

function drainClient(core: ClientCore): ClientOutput[] {
  const out: ClientOutput[] = [];
  for (let o = core.poll(); o !== undefined; o = core.poll()) out.push(o);
  return out;
}

type Send = Extract<ClientOutput, { type: "send" }>;

function sends(outputs: ClientOutput[]): Send[] {
  return outputs.flatMap((o) => o.type === "send" ? [o] : []);
}

function sentRequest(outputs: ClientOutput[]): { via: string; message: Request; attempt: number } {
  const all = sends(outputs);
  assertEquals(all.length, 1, "expected one send");
  const { via, message, attempt } = all[0];
  if (message.type === "presence_ack" || message.type === "reflect" || message.type === "relay") {
    throw new Error(`expected a request, got ${message.type}`);
  }
  return { via, message, attempt };
}

function events(outputs: ClientOutput[]): ClientEvent[] {
  return outputs.flatMap((o) => o.type === "event" ? [o.event] : []);
}

function acks(outputs: ClientOutput[]): number[] {
  return sends(outputs).flatMap((s) => s.message.type === "presence_ack" ? [s.message.seq] : []);
}

function result(outputs: ClientOutput[]): CommandResult {
  const results = outputs.flatMap((o) => o.type === "result" ? [o.result] : []);
  assertEquals(results.length, 1, "expected one result");
  return results[0];
}

type Ok = Extract<CommandResult, { ok: true }>;
type Failure = Extract<CommandResult, { ok: false }>;

function ok(r: CommandResult): Ok {
  if (!r.ok) throw new Error(`expected success, got: ${r.error}`);
  return r;
}

function watchingOf(r: Ok): boolean {
  if (r.command !== "status") throw new Error(`expected status, got ${r.command}`);
  return r.watching;
}

function failure(r: CommandResult): Failure {
  if (r.ok) throw new Error(`expected a failure, got: ${r.command}`);
  return r;
}

function hello(
  core: ClientCore,
  options: { now?: number; auth?: "open" | "password"; leaseMs?: number } = {},
): Ok {
  const now = options.now ?? 0;
  core.run(now, { kind: "hello" });
  const { message } = sentRequest(drainClient(core));
  core.handle(now + 1, {
    type: "hello_ok",
    reqId: message.reqId,
    tcpPort: 3001,
    serverVersion: "1.2.3",
    auth: AUTH_MODES[options.auth ?? "open"],
    leaseMs: options.leaseMs ?? 30_000,
    serverKey: new Uint8Array(32),
  });
  return ok(result(drainClient(core)));
}

/** Registers `name` at `now` (answered at once) and returns the outputs of the reply. */
function register(core: ClientCore, now: number, name = "Alice", token = TOKEN): ClientOutput[] {
  core.run(now, { kind: "register", name });
  const { message } = sentRequest(drainClient(core));
  core.handle(now, { type: "register_ok", reqId: message.reqId, token });
  return drainClient(core);
}

/** Logs in at `now` (answered at once) and returns the result. */
function login(core: ClientCore, now: number, name: string, secret: Uint8Array): Ok {
  core.run(now, { kind: "login", name, secret });
  const { message } = sentRequest(drainClient(core));
  core.handle(now, { type: "login_ok", reqId: message.reqId, token: TOKEN, replaced: 0 });
  return ok(result(drainClient(core)));
}

/** Runs `watch on` at `now`, answered at once. */
function watch(core: ClientCore, now: number): void {
  core.run(now, { kind: "watch", on: true });
  const { message } = sentRequest(drainClient(core));
  assertEquals(message.type, "watch");
  core.handle(now, { type: "watch_ok", reqId: message.reqId });
  ok(result(drainClient(core)));
}

/** Moves the clock to the core's next timeout and returns what that produced. */
function tick(core: ClientCore, clock: VirtualClock): ClientOutput[] {
  const next = core.nextTimeout();
  if (next === undefined) throw new Error("no timeout armed");
  clock.set(next);
  core.onTimeout(clock.now());
  return drainClient(core);
}

function presence(
  token: Uint8Array,
  seq: number,
  change: keyof typeof PRESENCE_CHANGES,
  name: string,
): MessageOf<"presence"> {
  return {
    type: "presence",
    token,
    seq,
    change: PRESENCE_CHANGES[change],
    name,
    ip: "10.0.0.2",
    udpPort: 4002,
    tcpPort: 5002,
    onlineMs: 1500,
  };
}

Deno.test("ClientCore.run() registers over UDP before hello and outputs the identity first", () => {
  const core = newClient({ name: "Alice" });
  core.run(0, { kind: "register" });
  const { via, message } = sentRequest(drainClient(core));
  assertEquals(via, "udp");
  if (message.type !== "register") throw new Error(`expected register, got ${message.type}`);
  assertEquals(message.name, "Alice");
  assertEquals(message.udpPort, 40000);
  assertEquals(message.tcpPort, 5001);
  assert(core.busy);
  core.handle(1, { type: "register_ok", reqId: message.reqId, token: TOKEN });
  const out = drainClient(core);
  assertEquals(out.map((o) => o.type), ["identity", "result"]);
  assertEquals(out[0], { type: "identity", name: "Alice" });
  assertEquals(ok(result(out)), { ok: true, command: "register", name: "Alice" });
  assertEquals(core.loggedInAs, "Alice");
  assertEquals(core.name, "Alice");
  assert(!core.busy);
});

Deno.test("ClientCore.run() fails tcp before hello with a clear message", () => {
  const core = newClient();
  core.run(0, { kind: "tcp", text: "hi" });
  const out = drainClient(core);
  assertEquals(sends(out), []);
  const r = failure(result(out));
  assertEquals(r.code, "not_connected");
  assertStringIncludes(r.error, "TCP port is not known");
  assert(!core.busy);
});

Deno.test("ClientCore.run() learns auth mode and lease from hello_ok", () => {
  const open = newClient();
  const r = hello(open, { leaseMs: 12_000 });
  assertEquals(r, {
    ok: true,
    command: "hello",
    server: "127.0.0.1:3000",
    serverTcpPort: 3001,
    serverVersion: "1.2.3",
    auth: "open",
    leaseMs: 12_000,
  });
  assertEquals(open.auth, "open");
  assertEquals(open.serverTcpPort, 3001);

  const password = newClient();
  assertEquals(hello(password, { auth: "password" }), {
    ok: true,
    command: "hello",
    server: "127.0.0.1:3000",
    serverTcpPort: 3001,
    serverVersion: "1.2.3",
    auth: "password",
    leaseMs: 30_000,
  });
  assertEquals(password.auth, "password");
});

Deno.test("ClientCore.run() registers after hello_ok and status shows the session", () => {
  const core = newClient();
  hello(core);
  register(core, 2, "Alice Smith");

  core.run(4, { kind: "status" });
  const status = ok(result(drainClient(core)));
  assertEquals(status, {
    ok: true,
    command: "status",
    server: "127.0.0.1:3000",
    serverVersion: "1.2.3",
    serverTcpPort: 3001,
    auth: "open",
    name: "Alice Smith",
    loggedIn: true,
    watching: false,
    udpPort: 40000,
    tcpPort: 5001,
    via: "udp",
    publicAddress: null,
    mapping: null,
  });

  // tcp now carries the name and the token.
  core.run(5, { kind: "tcp", text: "hello server" });
  const tcp = sentRequest(drainClient(core));
  assertEquals(tcp.via, "tcp");
  if (tcp.message.type !== "text") throw new Error("expected a text request");
  assertEquals(tcp.message.name, "Alice Smith");
  assertEquals(tcp.message.token, TOKEN);
  assertEquals(tcp.message.text, "hello server");
});

Deno.test("ClientCore.run() reports a server error with its code", () => {
  const core = newClient({ name: "Alice" });
  core.run(0, { kind: "register" });
  const { message } = sentRequest(drainClient(core));
  core.handle(1, {
    type: "error",
    reqId: message.reqId,
    code: ERROR_CODES.name_taken,
    message: 'Cannot register "Alice": name is taken',
  });
  const out = drainClient(core);
  assertEquals(out.filter((o) => o.type === "identity"), []);
  const r = failure(result(out));
  assertEquals(r.code, "name_taken");
  assertEquals(r.error, 'Cannot register "Alice": name is taken');
  assertEquals(core.loggedInAs, undefined);
  assertEquals(core.nextTimeout(), undefined, "no heartbeat without a session");
});

Deno.test("ClientCore.run() fails commands that need a session locally when not logged in", () => {
  const core = newClient({ name: "Alice" });
  hello(core);
  const commands: CoreCommand[] = [
    { kind: "deregister" },
    { kind: "logout" },
    { kind: "list" },
    { kind: "lookup", name: "Bob" },
    { kind: "watch", on: true },
    { kind: "files" },
    { kind: "delete", name: "a.txt" },
    { kind: "download", name: "a.txt" },
    { kind: "upload", name: "a.txt", size: 1, sha256: SHA },
  ];
  for (const command of commands) {
    core.run(2, command);
    const out = drainClient(core);
    assertEquals(sends(out), [], command.kind);
    const r = failure(result(out));
    assertEquals(r.code, "not_logged_in", command.kind);
    assertEquals(r.command, command.kind);
    assertStringIncludes(r.error, "Not logged in; use register or login first");
    assert(!core.busy);
  }
});

Deno.test("ClientCore.run() deregisters with the session token and forgets the session", () => {
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  register(core, 10);
  core.run(20, { kind: "deregister" });
  const { via, message } = sentRequest(drainClient(core));
  assertEquals(via, "udp");
  if (message.type !== "deregister") throw new Error(`expected deregister, got ${message.type}`);
  assertEquals(message.token, TOKEN);
  core.handle(21, { type: "deregister_ok", reqId: message.reqId });
  const r = ok(result(drainClient(core)));
  assertEquals(r, { ok: true, command: "deregister", name: "Alice" });
  assertEquals(core.loggedInAs, undefined);
  assertEquals(core.nextTimeout(), undefined, "heartbeats stop");
  core.run(22, { kind: "deregister" });
  assertEquals(failure(result(drainClient(core))).code, "not_logged_in");
});

Deno.test("ClientCore.run() deregisters over TCP when told to", () => {
  const core = newClient({ via: "tcp" });
  hello(core);
  register(core, 2);
  core.run(3, { kind: "deregister" });
  assertEquals(sentRequest(drainClient(core)).via, "tcp");
});

Deno.test("ClientCore.run() logs in with name and secret and reports a takeover", () => {
  const core = newClient();
  hello(core);
  core.run(2, { kind: "login", name: "Alice", secret: NO_SECRET });
  const { via, message } = sentRequest(drainClient(core));
  assertEquals(via, "udp");
  if (message.type !== "login") throw new Error(`expected login, got ${message.type}`);
  assertEquals(message.name, "Alice");
  assertEquals(message.secret, NO_SECRET);
  assertEquals(message.udpPort, 40000);
  assertEquals(message.tcpPort, 5001);
  core.handle(3, { type: "login_ok", reqId: message.reqId, token: TOKEN, replaced: 1 });
  const out = drainClient(core);
  assertEquals(out.filter((o) => o.type === "identity"), [], "login saves no identity");
  const r = ok(result(out));
  assertEquals(r, { ok: true, command: "login", name: "Alice", replaced: true });
  assertEquals(core.loggedInAs, "Alice");
});

Deno.test("ClientCore.run() logs in once with a version 2 identity key, then forgets it", () => {
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  core.run(2, { kind: "login", name: "Alice", secret: KEY });
  const { message } = sentRequest(drainClient(core));
  if (message.type !== "login") throw new Error(`expected login, got ${message.type}`);
  assertEquals(message.secret, KEY, "the old key goes once, inside the channel");
  core.handle(3, { type: "login_ok", reqId: message.reqId, token: TOKEN, replaced: 0 });
  const out = drainClient(core);
  // The server bound the name to the key pair: the identity is saved without the old key.
  assertEquals(out.filter((o) => o.type === "identity"), [{ type: "identity", name: "Alice" }]);
  assertEquals(ok(result(out)).command, "login");
});

Deno.test("ClientCore.run() refuses register and login while logged in", () => {
  const core = newClient();
  hello(core);
  register(core, 2);
  core.run(3, { kind: "login", name: "Bob", secret: KEY });
  const a = drainClient(core);
  assertEquals(sends(a), []);
  assertEquals(failure(result(a)).code, "already_logged_in");
  core.run(3, { kind: "register", name: "Bob" });
  const b = drainClient(core);
  assertEquals(sends(b), []);
  const r = failure(result(b));
  assertEquals(r.code, "already_logged_in");
  assertStringIncludes(r.error, 'Already logged in as "Alice"; logout first');
});

Deno.test("ClientCore.run() logs out and stops heartbeats", () => {
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  register(core, 10);
  assertEquals(core.nextTimeout(), 1010);
  core.run(20, { kind: "logout" });
  const { message } = sentRequest(drainClient(core));
  if (message.type !== "logout") throw new Error(`expected logout, got ${message.type}`);
  assertEquals(message.token, TOKEN);
  core.handle(21, { type: "logout_ok", reqId: message.reqId });
  assertEquals(ok(result(drainClient(core))), { ok: true, command: "logout", name: "Alice" });
  assertEquals(core.loggedInAs, undefined);
  assertEquals(core.nextTimeout(), undefined);
});

Deno.test("ClientCore.leave() sends one logout without waiting and forgets the session", () => {
  const core = newClient();
  hello(core);
  assert(!core.leave(1), "nothing to leave before login");
  register(core, 2);
  assert(core.leave(3));
  const { message } = sentRequest(drainClient(core));
  if (message.type !== "logout") throw new Error(`expected logout, got ${message.type}`);
  assertEquals(message.token, TOKEN);
  assertEquals(core.loggedInAs, undefined);
  assert(!core.busy);
  assert(!core.leave(4));
  // Its reply, if it comes, shows nothing.
  core.handle(5, { type: "logout_ok", reqId: message.reqId });
  assertEquals(drainClient(core), []);
});

Deno.test("ClientCore.run() fails register without a name or with an invalid one", () => {
  const core = newClient();
  core.run(0, { kind: "register" });
  const noName = failure(result(drainClient(core)));
  assertEquals(noName.code, "no_name");
  assertStringIncludes(noName.error, "No name");
  core.run(0, { kind: "register", name: "a/b" });
  const bad = failure(result(drainClient(core)));
  assertEquals(bad.code, "invalid_name");
  core.run(0, { kind: "login", name: "a/b", secret: KEY });
  assertEquals(failure(result(drainClient(core))).code, "invalid_name");
});

Deno.test("ClientCore.run() answers status at once while a server command runs", () => {
  const core = newClient();
  const helloId = core.run(0, { kind: "hello" });
  const hello = sentRequest(drainClient(core));
  const statusId = core.run(0, { kind: "status" });
  const out = drainClient(core);
  assertEquals(out.map((o) => o.type === "result" ? [o.id, o.result.command] : o.type), [
    [statusId, "status"],
  ]);
  assert(core.busy, "hello still runs");
  core.handle(1, {
    type: "hello_ok",
    reqId: hello.message.reqId,
    tcpPort: 3001,
    serverVersion: "1.2.3",
    auth: AUTH_MODES.open,
    leaseMs: 30_000,
    serverKey: new Uint8Array(32),
  });
  const done = drainClient(core).flatMap((o) => o.type === "result" ? [o.id] : []);
  assertEquals(done, [helloId]);
  assert(!core.busy);
});

Deno.test("ClientCore.run() queues server commands behind each other, in order", () => {
  const core = newClient();
  const helloId = core.run(0, { kind: "hello" });
  const hello = sentRequest(drainClient(core));
  const registerId = core.run(0, { kind: "register", name: "Alice" });
  assertEquals(sends(drainClient(core)), [], "register waits for hello");
  core.handle(1, {
    type: "hello_ok",
    reqId: hello.message.reqId,
    tcpPort: 3001,
    serverVersion: "1.2.3",
    auth: AUTH_MODES.open,
    leaseMs: 30_000,
    serverKey: new Uint8Array(32),
  });
  const out = drainClient(core);
  assertEquals(out.flatMap((o) => o.type === "result" ? [o.id] : []), [helloId]);
  const register = sentRequest(out);
  assertEquals(register.message.type, "register", "then register goes out");
  core.handle(2, { type: "register_ok", reqId: register.message.reqId, token: TOKEN });
  const results = drainClient(core).flatMap((o) =>
    o.type === "result" ? [[o.id, o.result.ok]] : []
  );
  assertEquals(results, [[registerId, true]]);
});

Deno.test("ClientCore.onTimeout() fails a request the server never answers", () => {
  const core = newClient();
  const clock = new VirtualClock();
  core.run(clock.now(), { kind: "hello" });
  let r: CommandResult | undefined;
  while (r === undefined) {
    r = tick(core, clock).find((o) => o.type === "result")?.result as CommandResult | undefined;
  }
  const f = failure(r);
  assertEquals(f.command, "hello");
  assertEquals(f.code, "timeout");
  assertStringIncludes(f.error, "The server did not answer within 30 s");
  assertEquals(clock.now(), 30_000);
  assertEquals(core.retransmissions, 6);
});

Deno.test("ClientCore.tcpFailed() fails a running tcp command", () => {
  const core = newClient();
  hello(core);
  core.run(2, { kind: "tcp", text: "hi" });
  drainClient(core);
  core.tcpFailed("connection refused");
  const r = failure(result(drainClient(core)));
  assertEquals(r.command, "tcp");
  assertEquals(r.code, "connection_failed");
  assertEquals(r.error, "Connection refused");
  assert(!core.busy);
});

Deno.test("ClientCore.handle() fails a command whose reply has the wrong type", () => {
  const core = newClient({ name: "Alice" });
  core.run(0, { kind: "register" });
  const { message } = sentRequest(drainClient(core));
  core.handle(1, { type: "deregister_ok", reqId: message.reqId });
  const r = failure(result(drainClient(core)));
  assertEquals(r.code, "unexpected_reply");
  assertStringIncludes(r.error, 'unexpected "deregister_ok"');
  assertEquals(core.loggedInAs, undefined);
});

Deno.test("ClientCore.run() refuses a tcp message over the limit without sending it", () => {
  const core = newClient({ name: "Alice" });
  hello(core);
  core.run(2, { kind: "tcp", text: "é".repeat(30_001) });
  const out = drainClient(core);
  assertEquals(sends(out), []);
  assertStringIncludes(failure(result(out)).error, "60002 bytes of UTF-8; the limit is 60000");
});

// --- ClientCore: heartbeats and automatic re-login ----------------------------

Deno.test("ClientCore.onTimeout() sends a heartbeat every lease/3 after login", () => {
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  assertEquals(core.nextTimeout(), undefined, "no heartbeat before login");
  clock.set(20);
  register(core, clock.now());
  const at: number[] = [];
  for (let i = 0; i < 5; i++) {
    const { via, message, attempt } = sentRequest(tick(core, clock));
    at.push(clock.now());
    assertEquals(via, "udp");
    assertEquals(attempt, 1);
    if (message.type !== "heartbeat") throw new Error(`expected heartbeat, got ${message.type}`);
    assertEquals(message.token, TOKEN);
    clock.advance(5);
    core.handle(clock.now(), { type: "heartbeat_ok", reqId: message.reqId });
    assertEquals(drainClient(core), [], "a heartbeat's reply shows nothing");
  }
  assertEquals(at, [1020, 2020, 3020, 4020, 5020]);
  assert(!core.busy, "heartbeats do not block commands");
});

Deno.test("ClientCore heartbeat interval is a third of the lease, with a floor and a 25 s ceiling", () => {
  // [lease from hello_ok, expected interval]: the lease is taken as at least 1 s;
  // at most 25 s, which holds a NAT binding of 30 s.
  for (
    const [leaseMs, interval] of [[300, 333], [3000, 1000], [60_000, 20_000], [90_000, 25_000], [
      600_000,
      25_000,
    ]]
  ) {
    const core = newClient();
    hello(core, { leaseMs });
    register(core, 100);
    assertEquals(core.nextTimeout(), 100 + interval, `lease ${leaseMs}`);
  }
});

Deno.test("ClientCore.onTimeout() replaces an unanswered heartbeat with a fresh one", () => {
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  clock.set(20);
  register(core, clock.now());
  const first = sentRequest(tick(core, clock));
  assertEquals(clock.now(), 1020);
  const retry = sentRequest(tick(core, clock));
  assertEquals(clock.now(), 1520);
  assertEquals(retry.message.reqId, first.message.reqId);
  assertEquals(retry.attempt, 2);
  const second = sentRequest(tick(core, clock));
  assertEquals(clock.now(), 2020);
  assertEquals(second.attempt, 1);
  assert(second.message.reqId !== first.message.reqId);
  // Only the new heartbeat is retransmitted from now on.
  const retry2 = sentRequest(tick(core, clock));
  assertEquals(clock.now(), 2520);
  assertEquals(retry2.message.reqId, second.message.reqId);
  // A late answer to the first one is ignored.
  core.handle(clock.now(), { type: "heartbeat_ok", reqId: first.message.reqId });
  assertEquals(drainClient(core), []);
  assertEquals(core.loggedInAs, "Alice");
});

/**
 * Answers the next heartbeat with not_logged_in and returns what the client
 * does within the same instant (the re-login may wait for `onTimeout(now)`).
 */
function loseSession(
  core: ClientCore,
  clock: VirtualClock,
  message = "Not logged in",
): ClientOutput[] {
  const heartbeat = sentRequest(tick(core, clock));
  if (heartbeat.message.type !== "heartbeat") {
    throw new Error(`expected heartbeat, got ${heartbeat.message.type}`);
  }
  core.handle(clock.now(), {
    type: "error",
    reqId: heartbeat.message.reqId,
    code: ERROR_CODES.not_logged_in,
    message,
  });
  const out = drainClient(core);
  const next = core.nextTimeout();
  if (sends(out).length === 0 && next !== undefined && next <= clock.now()) {
    core.onTimeout(clock.now());
    out.push(...drainClient(core));
  }
  return out;
}

/** Asserts that `outputs` hold exactly one re-login as Alice, with no secret, and returns it. */
function reloginOf(outputs: ClientOutput[]): MessageOf<"login"> {
  const { via, message } = sentRequest(outputs);
  assertEquals(via, "udp");
  if (message.type !== "login") throw new Error(`expected login, got ${message.type}`);
  assertEquals(message.name, "Alice");
  assertEquals(message.secret, NO_SECRET);
  return message;
}

Deno.test("ClientCore logs in again with its key when a heartbeat finds the session gone, and watches again", () => {
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  clock.set(20);
  register(core, clock.now());
  watch(core, clock.now());
  assertEquals(events(drainAfter(core, presence(TOKEN, 1, "joined", "Bob"))).length, 1);

  const lost = loseSession(
    core,
    clock,
    "Not logged in (or the server restarted); log in again",
  );
  assertEquals(events(lost), [], "no event until the new login succeeds");
  const relogin = { message: reloginOf(lost) };
  assertEquals(clock.now(), 1020, "the re-login goes out at once");
  assertEquals(core.loggedInAs, undefined);
  assert(!core.busy, "the re-login runs in the background");

  clock.advance(5);
  core.handle(clock.now(), {
    type: "login_ok",
    reqId: relogin.message.reqId,
    token: TOKEN2,
    replaced: 0,
  });
  const after = drainClient(core);
  assertEquals(after.map((o) => o.type), ["event", "send"]);
  const [event] = events(after);
  assertEquals(event, { kind: "logged_in_again", name: "Alice" });
  const rewatch = sentRequest(after);
  if (rewatch.message.type !== "watch") {
    throw new Error(`expected watch, got ${rewatch.message.type}`);
  }
  assertEquals(rewatch.message.token, TOKEN2);
  assertEquals(rewatch.message.on, 1);
  assertEquals(core.loggedInAs, "Alice");
  core.handle(clock.now(), { type: "watch_ok", reqId: rewatch.message.reqId });
  assertEquals(drainClient(core), [], "the background watch shows no result");

  // The new session's presence feed starts at 1 again; the old token is dead.
  assertEquals(events(drainAfter(core, presence(TOKEN, 2, "left", "Bob"))), []);
  const news = drainAfter(core, presence(TOKEN2, 1, "left", "Bob"));
  assertEquals(events(news).map((e) => e.kind), ["left"]);
  assertEquals(acks(news), [1]);
  core.run(clock.now(), { kind: "status" });
  assertEquals(watchingOf(ok(result(drainClient(core)))), true);

  // Heartbeats go on with the new token.
  const next = sentRequest(tick(core, clock));
  if (next.message.type !== "heartbeat") throw new Error(`expected heartbeat`);
  assertEquals(next.message.token, TOKEN2);
  assertEquals(clock.now(), 1025 + 1000);
});

Deno.test("ClientCore logs in again with the key of a login command and does not watch unasked", () => {
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  login(core, 0, "Alice", KEY);
  const relogin = reloginOf(loseSession(core, clock));
  core.handle(clock.now(), { type: "login_ok", reqId: relogin.reqId, token: TOKEN2, replaced: 0 });
  const out = drainClient(core);
  assertEquals(sends(out), [], "no watch: it was not watching");
  assertEquals(events(out).map((e) => e.kind), ["logged_in_again"]);
  assertEquals(core.loggedInAs, "Alice");
});

Deno.test("ClientCore ends the session with an event when re-login is refused", () => {
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  register(core, 0);
  watch(core, 0);
  const relogin = reloginOf(loseSession(core, clock));
  core.handle(clock.now(), {
    type: "error",
    reqId: relogin.reqId,
    code: ERROR_CODES.login_failed,
    message: "Login failed: wrong name or identity key; 2 attempts left",
  });
  const out = drainClient(core);
  assertEquals(sends(out), []);
  const [event] = events(out);
  assertEquals(event, {
    kind: "session_ended",
    name: "Alice",
    reason: "relogin_failed",
    detail: "Login failed: wrong name or identity key; 2 attempts left",
  });
  assertEquals(core.loggedInAs, undefined);
  assertEquals(core.nextTimeout(), undefined, "it does not try again");
  core.run(clock.now(), { kind: "status" });
  assertEquals(watchingOf(ok(result(drainClient(core)))), false);
});

Deno.test("ClientCore waits out a locked-out re-login with a growing backoff, then logs in again", () => {
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  register(core, 0);
  let relogin = reloginOf(loseSession(core, clock));
  const waits: number[] = [];
  for (let i = 0; i < 4; i++) {
    core.handle(clock.now(), {
      type: "error",
      reqId: relogin.reqId,
      code: i === 2 ? ERROR_CODES.busy : ERROR_CODES.locked_out,
      message: 'Too many failed logins for "Alice" from your address; try again in 8 s',
    });
    const out = drainClient(core);
    assertEquals(sends(out), []);
    const [event] = events(out);
    if (event?.kind !== "relogin_refused") throw new Error(JSON.stringify(out));
    assertEquals(event.name, "Alice");
    const at = core.nextTimeout()!;
    assertEquals(at - clock.now(), event.retryMs);
    waits.push(event.retryMs);
    assertEquals(core.loggedInAs, undefined);
    clock.set(at);
    core.onTimeout(at);
    relogin = reloginOf(drainClient(core));
  }
  // 1 s, doubling, ±20%.
  waits.forEach((ms, i) => assert(ms >= 800 * 2 ** i && ms <= 1200 * 2 ** i, `wait ${i}: ${ms}`));
  core.handle(clock.now(), { type: "login_ok", reqId: relogin.reqId, token: TOKEN2, replaced: 0 });
  assertEquals(events(drainClient(core)).map((e) => e.kind), ["logged_in_again"]);
  assertEquals(core.loggedInAs, "Alice");
});

Deno.test("ClientCore retries a re-login the server never answers every heartbeat interval", () => {
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  register(core, 0);
  watch(core, 0);
  const first = reloginOf(loseSession(core, clock));
  assertEquals(clock.now(), 1000);
  // Retransmitted until the give-up time, then tried afresh a heartbeat interval later.
  let next: MessageOf<"login"> | undefined;
  for (let guard = 0; guard < 100 && next === undefined; guard++) {
    for (const send of sends(tick(core, clock))) {
      if (send.message.type === "login" && send.message.reqId !== first.reqId) {
        next = send.message;
      }
    }
  }
  if (next === undefined) throw new Error("no second re-login");
  assertEquals(clock.now(), 1000 + 30_000 + 1000);
  assertEquals(next.secret, NO_SECRET);
  assertEquals(core.loggedInAs, undefined);
  core.handle(clock.now(), { type: "login_ok", reqId: next.reqId, token: TOKEN2, replaced: 0 });
  const out = drainClient(core);
  assertEquals(events(out).map((e) => e.kind), ["logged_in_again"]);
  const rewatch = sentRequest(out);
  assertEquals(rewatch.message.type, "watch", "it still watches after the long outage");
  assertEquals(core.loggedInAs, "Alice");
});

Deno.test("ClientCore in password mode ends the session with an event instead of re-login", () => {
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { auth: "password", leaseMs: 3000 });
  login(core, 0, "Alice", new TextEncoder().encode("correct horse"));
  const out = loseSession(core, clock, "Not logged in (or the server restarted); log in again");
  assertEquals(sends(out), [], "no automatic login with a password");
  const [event] = events(out);
  assertEquals(event, {
    kind: "session_ended",
    name: "Alice",
    reason: "not_logged_in",
    detail: "Not logged in (or the server restarted); log in again",
  });
  assertEquals(core.loggedInAs, undefined);
  assertEquals(core.nextTimeout(), undefined);
});

Deno.test("ClientCore ends the session without re-login when a heartbeat says it was replaced", () => {
  // The session_ended push was lost; the heartbeat's answer says why.
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  register(core, 0);
  watch(core, 0);
  const heartbeat = sentRequest(tick(core, clock));
  const text = '"Alice" logged in elsewhere (10.0.0.9:4000); this session has ended';
  core.handle(clock.now(), {
    type: "error",
    reqId: heartbeat.message.reqId,
    code: ERROR_CODES.session_replaced,
    message: text,
  });
  const out = drainClient(core);
  assertEquals(sends(out), []);
  assertEquals(events(out), [{
    kind: "session_ended",
    name: "Alice",
    reason: "replaced",
    detail: text,
  }]);
  assertEquals(core.loggedInAs, undefined);
  assertEquals(core.nextTimeout(), undefined, "it never takes the name back");
});

Deno.test({
  name: "ClientCore does not claim to watch when the re-watch after a re-login failed",
  fn: () => {
    const clock = new VirtualClock();
    const core = newClient();
    hello(core, { leaseMs: 3_600_000 });
    register(core, 0);
    watch(core, 0);
    const relogin = reloginOf(loseSession(core, clock));
    core.handle(clock.now(), {
      type: "login_ok",
      reqId: relogin.reqId,
      token: TOKEN2,
      replaced: 0,
    });
    const rewatch = sentRequest(drainClient(core));
    assertEquals(rewatch.message.type, "watch");
    // The watch and all its retransmissions are lost until the client gives up.
    const seen: ClientOutput[] = [];
    while (clock.now() < 1_200_000 + 31_000) seen.push(...tick(core, clock));
    const retried = sends(seen).some((s) =>
      s.message.type === "watch" && s.message.reqId !== rewatch.message.reqId
    );
    core.run(clock.now(), { kind: "status" });
    const watching = watchingOf(ok(result(drainClient(core))));
    assert(
      retried || watching === false || events(seen).length > 0,
      "the client still says it is watching, tells nobody and does not try again",
    );
  },
});

Deno.test("ClientCore ignores other heartbeat errors", () => {
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  register(core, 0);
  const heartbeat = sentRequest(tick(core, clock));
  core.handle(clock.now(), {
    type: "error",
    reqId: heartbeat.message.reqId,
    code: ERROR_CODES.busy,
    message: "Busy",
  });
  assertEquals(drainClient(core), []);
  assertEquals(core.loggedInAs, "Alice");
  assertEquals(core.nextTimeout(), 2000);
});

// --- ClientCore: pushes from the server ---------------------------------------

function drainAfter(
  core: ClientCore,
  message: MessageOf<"presence" | "session_ended">,
  now = 0,
): ClientOutput[] {
  core.handle(now, message);
  return drainClient(core);
}

Deno.test("ClientCore handles session_ended(replaced): clears the session, tells, no re-login", () => {
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  register(core, 0);
  watch(core, 0);
  const text = '"Alice" logged in elsewhere (10.0.0.9:4000); this session has ended';
  const ended = {
    type: "session_ended",
    token: TOKEN,
    reason: SESSION_END_REASONS.replaced,
    message: text,
  } as const;

  // Another session's notice changes nothing.
  assertEquals(drainAfter(core, { ...ended, token: TOKEN2 }), []);
  assertEquals(core.loggedInAs, "Alice");

  const out = drainAfter(core, ended);
  assertEquals(sends(out), []);
  assertEquals(events(out), [{
    kind: "session_ended",
    name: "Alice",
    reason: "replaced",
    detail: text,
  }]);
  assertEquals(core.loggedInAs, undefined);
  assertEquals(core.nextTimeout(), undefined, "no more heartbeats, so no re-login either");
  clock.set(120_000);
  core.onTimeout(clock.now());
  assertEquals(drainClient(core), []);
  // A copy of the notice, and news for the old session, are ignored.
  assertEquals(drainAfter(core, ended), []);
  assertEquals(drainAfter(core, presence(TOKEN, 1, "joined", "Bob")), []);
  core.run(clock.now(), { kind: "status" });
  const status = ok(result(drainClient(core)));
  assert(status.command === "status" && !status.loggedIn && !status.watching);
});

Deno.test("ClientCore logs in again after session_ended(expired) at once, after a shutdown later", () => {
  // [reason, its name, delay before the re-login]: the heartbeat interval is 1 s.
  const cases = [[2, "expired", 0], [3, "server_shutdown", 1000], [99, "unknown", 1000]] as const;
  for (const [reason, name, delay] of cases) {
    const clock = new VirtualClock(500);
    const core = newClient();
    hello(core, { leaseMs: 3000 });
    register(core, 0);
    const out = drainAfter(
      core,
      { type: "session_ended", token: TOKEN, reason, message: "Ended" },
      clock.now(),
    );
    assertEquals(events(out), [{
      kind: "session_ended",
      name: "Alice",
      reason: name,
      detail: "Ended",
    }]);
    assertEquals(core.loggedInAs, undefined);
    assertEquals(core.nextTimeout(), 500 + delay, name);
    reloginOf(tick(core, clock));
  }
});

Deno.test("ClientCore with other instances moves on a shutdown notice, keeping its session, and sends what is in flight there at once", () => {
  const core = newClient({ failover: true });
  hello(core, { auth: "password", leaseMs: 3000 });
  register(core, 0);
  core.run(10, { kind: "list" });
  const list = sentRequest(drainClient(core));
  const out = drainAfter(
    core,
    { type: "session_ended", token: TOKEN, reason: 3, message: "The server is shutting down" },
    20,
  );
  assertEquals(out, [{ type: "move" }]);
  assertEquals(core.loggedInAs, "Alice");
  // The driver moved it: a hello, the list again and a heartbeat go to the new instance now.
  core.moved(30, "127.0.0.1:3000", "127.0.0.1:3010", "shutdown");
  const moved = drainClient(core);
  assertEquals(sends(moved).map((s) => s.message.type), ["hello", "list", "heartbeat"]);
  const again = sends(moved)[1].message;
  assertEquals("reqId" in again && again.reqId, list.message.reqId);
  assertEquals(events(moved), [{
    kind: "server_moved",
    from: "127.0.0.1:3000",
    to: "127.0.0.1:3010",
    why: "shutdown",
    name: "Alice",
  }]);
  core.run(40, { kind: "status" });
  const status = ok(result(drainClient(core)));
  assert(status.command === "status" && status.server === "127.0.0.1:3010" && status.loggedIn);
});

Deno.test("ClientCore in password mode does not log in again after session_ended", () => {
  const core = newClient();
  hello(core, { auth: "password", leaseMs: 3000 });
  login(core, 0, "Alice", new TextEncoder().encode("correct horse"));
  const out = drainAfter(core, {
    type: "session_ended",
    token: TOKEN,
    reason: SESSION_END_REASONS.expired,
    message: "Expired",
  });
  assertEquals(events(out).map((e) => e.kind), ["session_ended"]);
  assertEquals(core.nextTimeout(), undefined);
});

Deno.test("ClientCore shows presence news once and in order, and acknowledges each copy", () => {
  const core = newClient();
  hello(core);
  register(core, 0);
  watch(core, 0);

  // Another session's news: no event, no acknowledgement.
  assertEquals(drainAfter(core, presence(TOKEN2, 1, "joined", "Mallory")), []);

  const first = drainAfter(core, presence(TOKEN, 1, "joined", "Bob"));
  assertEquals(events(first).map((e) => e.kind), ["joined"]);
  assertEquals(events(first)[0], {
    kind: "joined",
    client: { name: "Bob", ip: "10.0.0.2", udpPort: 4002, tcpPort: 5002, onlineMs: 1500 },
  });
  assertEquals(acks(first), [1]);
  const ack = sends(first)[0];
  assertEquals(ack.via, "udp");
  assertEquals(ack.message, { type: "presence_ack", token: TOKEN, seq: 1 });

  // A duplicate is acknowledged again but not shown again.
  const copy = drainAfter(core, presence(TOKEN, 1, "joined", "Bob"));
  assertEquals(events(copy), []);
  assertEquals(acks(copy), [1]);

  // News out of order waits: 3 is not shown before 2, and the ack stays at 1.
  const early = drainAfter(core, presence(TOKEN, 3, "left", "Bob"));
  assertEquals(events(early), []);
  assertEquals(acks(early), [1]);
  const second = drainAfter(core, presence(TOKEN, 2, "joined", "Carol"));
  assertEquals(events(second), [{
    kind: "joined",
    client: { name: "Carol", ip: "10.0.0.2", udpPort: 4002, tcpPort: 5002, onlineMs: 1500 },
  }]);
  assertEquals(acks(second), [2]);
  // The server resends 3 (it was not acknowledged): now it is shown.
  const third = drainAfter(core, presence(TOKEN, 3, "left", "Bob"));
  assertEquals(events(third).map((e) => [e.kind, "client" in e && e.client.name]), [
    ["left", "Bob"],
  ]);
  assertEquals(acks(third), [3]);

  const resync = drainAfter(core, presence(TOKEN, 4, "resync", "Dave"));
  assertEquals(events(resync), [{ kind: "resync" }]);
  assertEquals(acks(resync), [4]);
});

Deno.test("ClientCore keeps its presence numbering when watch on is given again", () => {
  const core = newClient();
  hello(core);
  register(core, 0);
  watch(core, 0);
  assertEquals(acks(drainAfter(core, presence(TOKEN, 1, "joined", "Bob"))), [1]);
  // The server keeps numbering an existing watcher's news.
  watch(core, 1);
  const next = drainAfter(core, presence(TOKEN, 2, "joined", "Carol"));
  assertEquals(events(next).map((e) => e.kind), ["joined"]);
  assertEquals(acks(next), [2]);
});

Deno.test("ClientCore takes a resync notice ahead of the gap it replaces", () => {
  const core = newClient();
  hello(core);
  register(core, 0);
  watch(core, 0);
  drainAfter(core, presence(TOKEN, 1, "joined", "Bob"));
  // The server dropped news 2..6 for a watcher that did not acknowledge.
  const resync = drainAfter(core, presence(TOKEN, 7, "resync", "Bob"));
  assertEquals(events(resync).map((e) => e.kind), ["resync"]);
  assertEquals(acks(resync), [7]);
  const after = drainAfter(core, presence(TOKEN, 8, "left", "Bob"));
  assertEquals(events(after).map((e) => e.kind), ["left"]);
  // An old resync copy is not shown again.
  assertEquals(events(drainAfter(core, presence(TOKEN, 7, "resync", "Bob"))), []);
});

Deno.test("ClientCore ignores presence news before login", () => {
  const core = newClient();
  hello(core);
  assertEquals(drainAfter(core, presence(TOKEN, 1, "joined", "Bob")), []);
});

// --- ClientCore: list, lookup, files ------------------------------------------

function online(name: string, udpPort: number) {
  return { name, ip: "10.0.0.1", udpPort, tcpPort: 5001, onlineMs: 65_000 };
}

Deno.test("ClientCore.run() list follows pages and collects every client", () => {
  const core = newClient();
  hello(core);
  register(core, 0);
  core.run(1, { kind: "list" });
  const first = sentRequest(drainClient(core));
  assertEquals(first.via, "udp");
  if (first.message.type !== "list") throw new Error(`expected list, got ${first.message.type}`);
  assertEquals(first.message.after, "");
  assertEquals(first.message.token, TOKEN);
  core.handle(2, {
    type: "list_page",
    reqId: first.message.reqId,
    total: 3,
    more: 1,
    clients: [online("Alice", 4001), online("Bob", 4002)],
  });
  const out = drainClient(core);
  assertEquals(out.filter((o) => o.type === "result"), [], "not done after the first page");
  const second = sentRequest(out);
  if (second.message.type !== "list") throw new Error(`expected list, got ${second.message.type}`);
  assertEquals(second.message.after, "Bob");
  assert(second.message.reqId !== first.message.reqId);
  assert(core.busy);
  // A copy of the first page is not taken for the second.
  core.handle(3, {
    type: "list_page",
    reqId: first.message.reqId,
    total: 3,
    more: 1,
    clients: [online("Alice", 4001), online("Bob", 4002)],
  });
  assertEquals(drainClient(core), []);
  core.handle(4, {
    type: "list_page",
    reqId: second.message.reqId,
    total: 3,
    more: 0,
    clients: [online("Carol", 4003)],
  });
  const r = ok(result(drainClient(core)));
  assertEquals(r, {
    ok: true,
    command: "list",
    clients: [online("Alice", 4001), online("Bob", 4002), online("Carol", 4003)],
  });
  assert(!core.busy);
});

Deno.test("ClientCore.run() list reports an empty active list", () => {
  const core = newClient();
  hello(core);
  register(core, 0);
  core.run(1, { kind: "list" });
  const { message } = sentRequest(drainClient(core));
  core.handle(2, { type: "list_page", reqId: message.reqId, total: 0, more: 0, clients: [] });
  assertEquals(ok(result(drainClient(core))), { ok: true, command: "list", clients: [] });
});

Deno.test("ClientCore.run() lookup reports where a client is, or that it is not online", () => {
  const core = newClient();
  hello(core);
  register(core, 0);
  core.run(1, { kind: "lookup", name: "bad/name" });
  assertEquals(failure(result(drainClient(core))).code, "invalid_name");

  core.run(1, { kind: "lookup", name: "Bob" });
  const { message } = sentRequest(drainClient(core));
  if (message.type !== "lookup") throw new Error(`expected lookup, got ${message.type}`);
  assertEquals(message.name, "Bob");
  core.handle(2, {
    type: "lookup_ok",
    reqId: message.reqId,
    ...online("Bob", 4002),
    key: new Uint8Array(32),
    nonce: new Uint8Array(16),
    psk: new Uint8Array(32),
  });
  const found = ok(result(drainClient(core)));
  assertEquals(found, { ok: true, command: "lookup", client: online("Bob", 4002) });

  core.run(3, { kind: "lookup", name: "Carol" });
  const again = sentRequest(drainClient(core));
  core.handle(4, {
    type: "error",
    reqId: again.message.reqId,
    code: ERROR_CODES.not_online,
    message: '"Carol" is not online',
  });
  assertEquals(failure(result(drainClient(core))).code, "not_online");
});

/** Runs a command that is never answered and returns how long it took to fail. */
function timeToGiveUp(core: ClientCore, clock: VirtualClock, command: CoreCommand): number {
  const start = clock.now();
  core.run(start, command);
  const first = drainClient(core);
  assertEquals(sentRequest(first).via, "tcp");
  for (let guard = 0; guard < 100; guard++) {
    const r = tick(core, clock).find((o) => o.type === "result");
    if (r?.type === "result") {
      assertEquals(failure(r.result).code, "timeout");
      assertStringIncludes(
        failure(r.result).error,
        `did not answer within ${(clock.now() - start) / 1000} s`,
      );
      return clock.now() - start;
    }
  }
  throw new Error("the command never gave up");
}

Deno.test("ClientCore.run() gives an upload one more second per started MiB", () => {
  const clock = new VirtualClock();
  const core = newClient();
  // A long lease keeps heartbeats out of the way.
  hello(core, { leaseMs: 3_600_000 });
  register(core, 0);
  const upload = (size: number): CoreCommand => ({
    kind: "upload",
    name: "big.bin",
    size,
    sha256: SHA,
  });
  assertEquals(timeToGiveUp(core, clock, { kind: "files" }), 30_000);
  assertEquals(timeToGiveUp(core, clock, upload(0)), 30_000);
  assertEquals(timeToGiveUp(core, clock, upload(1)), 31_000);
  assertEquals(timeToGiveUp(core, clock, upload(MIB)), 31_000);
  assertEquals(timeToGiveUp(core, clock, upload(MIB + 1)), 32_000);
  assertEquals(timeToGiveUp(core, clock, upload(50 * MIB)), 80_000);
});

Deno.test("ClientCore.run() sends an upload over TCP with its size and hash", () => {
  const core = newClient();
  hello(core);
  register(core, 0);
  core.run(1, { kind: "upload", name: "../evil", size: 1, sha256: SHA });
  assertEquals(failure(result(drainClient(core))).code, "invalid_file_name");
  core.run(1, { kind: "upload", name: "data.csv", size: 1234, sha256: SHA });
  const { via, message } = sentRequest(drainClient(core));
  assertEquals(via, "tcp");
  if (message.type !== "upload") throw new Error(`expected upload, got ${message.type}`);
  assertEquals([message.name, message.size, message.sha256, message.token], [
    "data.csv",
    1234,
    SHA,
    TOKEN,
  ]);
  core.handle(2, { type: "upload_ok", reqId: message.reqId, size: 1234 });
  const r = ok(result(drainClient(core)));
  assertEquals(r, { ok: true, command: "upload", name: "data.csv", size: 1234 });
});

Deno.test("ClientCore.run() lists and deletes files over TCP", () => {
  const core = newClient();
  hello(core);
  register(core, 0);
  core.run(1, { kind: "files" });
  const files = sentRequest(drainClient(core));
  assertEquals(files.via, "tcp");
  core.handle(2, {
    type: "file_list",
    reqId: files.message.reqId,
    usedBytes: 10,
    quotaBytes: 100,
    files: [{ name: "a.txt", size: 10, sha256: new Uint8Array(32).fill(0xab), uploadedAt: 0 }],
  });
  const listed = ok(result(drainClient(core)));
  assertEquals(listed, {
    ok: true,
    command: "files",
    usedBytes: 10,
    quotaBytes: 100,
    files: [{
      name: "a.txt",
      size: 10,
      sha256: "ab".repeat(32),
      uploadedAt: "1970-01-01T00:00:00.000Z",
    }],
  });
  core.run(3, { kind: "delete", name: "a.txt" });
  const del = sentRequest(drainClient(core));
  assertEquals(del.via, "tcp");
  core.handle(4, { type: "delete_ok", reqId: del.message.reqId });
  assertEquals(ok(result(drainClient(core))), { ok: true, command: "delete", name: "a.txt" });
});

// --- parseCommand ------------------------------------------------------------

Deno.test("parseCommand() parses each command", () => {
  assertEquals(parseCommand("register"), { kind: "register" });
  assertEquals(parseCommand("  register   Alice Smith  "), {
    kind: "register",
    name: "Alice Smith",
  });
  assertEquals(parseCommand("REGISTER Bob"), { kind: "register", name: "Bob" });
  assertEquals(parseCommand('login "Alice Smith"'), { kind: "login", name: "Alice Smith" });
  assertEquals(parseCommand('register "Alice Smith"'), { kind: "register", name: "Alice Smith" });
  assertEquals(parseCommand('lookup "Alice Smith"'), { kind: "lookup", name: "Alice Smith" });
  assertEquals(parseCommand("tcp hello  there"), { kind: "tcp", text: "hello  there" });
  assertEquals(parseCommand("deregister"), { kind: "deregister" });
  assertEquals(parseCommand("status"), { kind: "status" });
  assertEquals(parseCommand("help"), { kind: "help" });
  assertEquals(parseCommand("exit"), { kind: "exit" });
  assertEquals(parseCommand("quit"), { kind: "exit" });
  assertEquals(parseCommand("leave"), { kind: "exit" }, "seed 001");
  assertEquals(parseCommand("OUT"), { kind: "exit" }, "seed 004");
  assertThrows(() => parseCommand("leave now"), CommandError, "leave takes no arguments");
});

Deno.test("parseCommand() says when a file command got too many words, and why", () => {
  assertThrows(
    () => parseCommand("upload small.txt my notes.txt"),
    CommandError,
    'upload got 3 words, too many: upload FILE [NAME] (quote a name with spaces in it: "my notes.txt")',
  );
  assertThrows(() => parseCommand("delete my notes.txt"), CommandError, "delete got 2 words");
  assertThrows(() => parseCommand("sendfile @ f1"), CommandError, 'needs a name after "@"');
  assertThrows(() => parseCommand("send @ hi"), CommandError, 'needs a name after "@"');
  assertThrows(
    () => parseCommand("upload"),
    CommandError,
    "upload needs a file: upload FILE [NAME]",
  );
  assertEquals(parseCommand('upload small.txt "my notes.txt"'), {
    kind: "upload",
    file: "small.txt",
    name: "my notes.txt",
  });
});

Deno.test("parseCommand() gives undefined for blank and comment lines", () => {
  for (const line of ["", "   ", "\t", "# a comment", "   # indented comment"]) {
    assertEquals(parseCommand(line), undefined, JSON.stringify(line));
  }
});

Deno.test("parseCommand() throws CommandError for bad lines", () => {
  const tcp = assertThrows(() => parseCommand("tcp"), CommandError);
  assertStringIncludes(tcp.message, "tcp TEXT");
  assertThrows(() => parseCommand("tcp   "), CommandError);
  const unknown = assertThrows(() => parseCommand("frobnicate now"), CommandError);
  assertStringIncludes(unknown.message, "frobnicate");
  assertThrows(() => parseCommand("status now"), CommandError);
  assertThrows(() => parseCommand("deregister Alice"), CommandError);
});

/** Answers `request` with not_logged_in at `now` and returns what the client does then. */
function notLoggedIn(core: ClientCore, now: number, request: Request): ClientOutput[] {
  core.handle(now, {
    type: "error",
    reqId: request.reqId,
    code: ERROR_CODES.not_logged_in,
    message: "Not logged in",
  });
  const out = drainClient(core);
  if (core.nextTimeout() !== undefined && core.nextTimeout()! <= now) {
    core.onTimeout(now);
    out.push(...drainClient(core));
  }
  return out;
}

Deno.test("ClientCore sends a command again under the new session when its old token was refused after a re-login", () => {
  // Found by a black-box test: a `list` in flight while the client moved to
  // another instance failed with "not logged in" once the heartbeat had
  // already logged in again there.
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  register(core, 0);
  core.run(clock.now(), { kind: "list" });
  const list = sentRequest(drainClient(core)).message;
  let heartbeat: Request | undefined;
  while (heartbeat === undefined) {
    heartbeat = sends(tick(core, clock)).map((s) => s.message)
      .find((m): m is Request => m.type === "heartbeat");
  }
  const relogin = reloginOf(notLoggedIn(core, clock.now(), heartbeat));
  core.handle(clock.now(), { type: "login_ok", reqId: relogin.reqId, token: TOKEN2, replaced: 0 });
  drainClient(core);
  const again = sentRequest(notLoggedIn(core, clock.now(), list)).message;
  if (again.type !== "list") throw new Error(`expected list, got ${again.type}`);
  assertEquals(again.token, TOKEN2);
  core.handle(clock.now(), {
    type: "list_page",
    reqId: again.reqId,
    total: 0,
    more: 0,
    clients: [],
  });
  assertEquals(ok(result(drainClient(core))).command, "list");
});

Deno.test("ClientCore logs in again when a command is the first to hear the session is gone, then sends it again once", () => {
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  register(core, 0);
  core.run(clock.now(), { kind: "list" });
  const list = sentRequest(drainClient(core)).message;
  const out = notLoggedIn(core, clock.now(), list);
  assertEquals(events(out), [], "no result and no event yet");
  const relogin = reloginOf(out);
  core.handle(clock.now(), { type: "login_ok", reqId: relogin.reqId, token: TOKEN2, replaced: 0 });
  const after = drainClient(core);
  assertEquals(events(after).map((e) => e.kind), ["logged_in_again"]);
  const again = sentRequest(after).message;
  if (again.type !== "list") throw new Error(`expected list, got ${again.type}`);
  assertEquals(again.token, TOKEN2);
  // Refused again under the new session: the command fails, no loop.
  const failed = notLoggedIn(core, clock.now(), again);
  assertEquals(failure(result(failed)).code, "not_logged_in");
  assertEquals(sends(failed), []);
});

Deno.test("ClientCore fails a command waiting for a re-login that is refused", () => {
  const clock = new VirtualClock();
  const core = newClient();
  hello(core, { leaseMs: 3000 });
  register(core, 0);
  core.run(clock.now(), { kind: "list" });
  const list = sentRequest(drainClient(core)).message;
  const relogin = reloginOf(notLoggedIn(core, clock.now(), list));
  core.handle(clock.now(), {
    type: "error",
    reqId: relogin.reqId,
    code: ERROR_CODES.login_failed,
    message: "Login failed",
  });
  const out = drainClient(core);
  assertEquals(failure(result(out)).command, "list");
});
