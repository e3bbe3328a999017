import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { ClientCore, type ClientOutput, type CommandResult } from "../lib/client/client_core.ts";
import { CommandError, parseCommand } from "../lib/client/command.ts";
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from "../lib/client/retry_policy.ts";
import { ServerSession, type SessionOutput } from "../lib/client/server_session.ts";
import { VirtualClock } from "../lib/clock.ts";
import { SeededRandom } from "../lib/random.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import type { Request } from "../lib/wire/messages.ts";

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

  const reply = { type: "hello_ok", reqId, tcpPort: 3001, serverVersion: "1" } as const;
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

function newClient(options: { name?: string; via?: "udp" | "tcp" } = {}): ClientCore {
  return new ClientCore({
    random: new SeededRandom(11),
    retry: NO_JITTER,
    name: options.name,
    udpPort: 40000,
    tcpPort: 5001,
    via: options.via ?? "udp",
    server: "127.0.0.1:3000",
  });
}

function drainClient(core: ClientCore): ClientOutput[] {
  const out: ClientOutput[] = [];
  for (let o = core.poll(); o !== undefined; o = core.poll()) out.push(o);
  return out;
}

function sentRequest(outputs: ClientOutput[]): { via: string; message: Request } {
  const sends = outputs.filter((o) => o.type === "send");
  assertEquals(sends.length, 1, "expected one send");
  const send = sends[0];
  if (send.type !== "send") throw new Error("unreachable");
  return { via: send.via, message: send.message };
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

function failure(r: CommandResult): Failure {
  if (r.ok) throw new Error(`expected a failure, got: ${r.message}`);
  return r;
}

function hello(core: ClientCore): void {
  core.run(0, { kind: "hello" });
  const { message } = sentRequest(drainClient(core));
  core.handle(1, { type: "hello_ok", reqId: message.reqId, tcpPort: 3001, serverVersion: "1.2.3" });
  ok(result(drainClient(core)));
}

Deno.test("ClientCore.run() registers over UDP before hello", () => {
  const core = newClient({ name: "Alice" });
  core.run(0, { kind: "register" });
  const { via, message } = sentRequest(drainClient(core));
  assertEquals(via, "udp");
  assertEquals(message.type, "register");
  if (message.type !== "register") throw new Error("unreachable");
  assertEquals(message.name, "Alice");
  assertEquals(message.udpPort, 40000);
  assertEquals(message.tcpPort, 5001);
  assert(core.busy);
  core.handle(1, { type: "register_ok", reqId: message.reqId, token: new Uint8Array(16) });
  ok(result(drainClient(core)));
  assertEquals(core.registeredAs, "Alice");
  assert(!core.busy);
});

Deno.test("ClientCore.run() fails tcp before hello with a clear message", () => {
  const core = newClient();
  core.run(0, { kind: "tcp", text: "hi" });
  const out = drainClient(core);
  assertEquals(out.filter((o) => o.type === "send"), []);
  const r = failure(result(out));
  assertStringIncludes(r.error, "TCP port is not known");
  assert(!core.busy);
});

Deno.test("ClientCore.run() registers after hello_ok and status shows it", () => {
  const core = newClient();
  hello(core);
  assertEquals(core.serverTcpPort, 3001);
  core.run(2, { kind: "register", name: "Alice Smith" });
  const { message } = sentRequest(drainClient(core));
  core.handle(3, { type: "register_ok", reqId: message.reqId, token: new Uint8Array(16).fill(9) });
  const registered = ok(result(drainClient(core)));
  assertStringIncludes(registered.message, "Alice Smith");

  core.run(4, { kind: "status" });
  const status = ok(result(drainClient(core)));
  assertStringIncludes(status.message, 'registered as "Alice Smith"');
  assertEquals(status.data?.registered, true);
  assertEquals(status.data?.name, "Alice Smith");
  assertEquals(status.data?.serverTcpPort, 3001);
  assertEquals(status.data?.serverVersion, "1.2.3");

  // tcp now carries the name and the token.
  core.run(5, { kind: "tcp", text: "hello server" });
  const tcp = sentRequest(drainClient(core));
  assertEquals(tcp.via, "tcp");
  if (tcp.message.type !== "text") throw new Error("expected a text request");
  assertEquals(tcp.message.name, "Alice Smith");
  assertEquals(tcp.message.token, new Uint8Array(16).fill(9));
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
  const r = failure(result(drainClient(core)));
  assertEquals(r.code, "name_taken");
  assertEquals(r.error, 'Cannot register "Alice": name is taken');
  assertEquals(core.registeredAs, undefined);
});

Deno.test("ClientCore.run() fails deregister locally when not registered", () => {
  const core = newClient({ name: "Alice" });
  core.run(0, { kind: "deregister" });
  const out = drainClient(core);
  assertEquals(out.filter((o) => o.type === "send"), []);
  const r = failure(result(out));
  assertStringIncludes(r.error, "Not registered");
});

Deno.test("ClientCore.run() fails register without a name or with an invalid one", () => {
  const core = newClient();
  core.run(0, { kind: "register" });
  const noName = failure(result(drainClient(core)));
  assertStringIncludes(noName.error, "No name");
  core.run(0, { kind: "register", name: "a/b" });
  const bad = failure(result(drainClient(core)));
  assertEquals(bad.code, "invalid_name");
});

Deno.test("ClientCore.run() refuses a second command while one runs", () => {
  const core = newClient();
  core.run(0, { kind: "hello" });
  assertThrows(() => core.run(0, { kind: "status" }), TypeError);
});

Deno.test("ClientCore.onTimeout() fails a request the server never answers", () => {
  const core = newClient();
  const clock = new VirtualClock();
  core.run(clock.now(), { kind: "hello" });
  let r: CommandResult | undefined;
  while (r === undefined) {
    const next = core.nextTimeout();
    if (next === undefined) throw new Error("no timeout armed");
    clock.set(next);
    core.onTimeout(clock.now());
    r = drainClient(core).find((o) => o.type === "result")?.result as CommandResult | undefined;
  }
  const f = failure(r);
  assertEquals(f.command, "hello");
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
  assertEquals(r.error, "Connection refused");
  assert(!core.busy);
});

// --- parseCommand ------------------------------------------------------------

Deno.test("parseCommand() parses each command", () => {
  assertEquals(parseCommand("register"), { kind: "register" });
  assertEquals(parseCommand("  register   Alice Smith  "), {
    kind: "register",
    name: "Alice Smith",
  });
  assertEquals(parseCommand("REGISTER Bob"), { kind: "register", name: "Bob" });
  assertEquals(parseCommand("tcp hello  there"), { kind: "tcp", text: "hello  there" });
  assertEquals(parseCommand("deregister"), { kind: "deregister" });
  assertEquals(parseCommand("status"), { kind: "status" });
  assertEquals(parseCommand("help"), { kind: "help" });
  assertEquals(parseCommand("exit"), { kind: "exit" });
  assertEquals(parseCommand("quit"), { kind: "exit" });
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

Deno.test("ClientCore.handle() fails a command whose reply has the wrong type", () => {
  const core = newClient({ name: "Alice" });
  core.run(0, { kind: "register" });
  const { message } = sentRequest(drainClient(core));
  core.handle(1, { type: "deregister_ok", reqId: message.reqId });
  const r = failure(result(drainClient(core)));
  assertStringIncludes(r.error, 'unexpected "deregister_ok"');
  assertEquals(core.registeredAs, undefined);
});

Deno.test("ClientCore.run() refuses a tcp message over the limit without sending it", () => {
  const core = newClient({ name: "Alice" });
  hello(core);
  core.run(2, { kind: "tcp", text: "é".repeat(30_001) });
  const out = drainClient(core);
  assertEquals(out.filter((o) => o.type === "send"), []);
  assertStringIncludes(failure(result(out)).error, "60002 bytes of UTF-8; the limit is 60000");
});
