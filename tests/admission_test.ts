import { assert, assertEquals } from "@std/assert";
import { Admission } from "../lib/server/admission.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import type { ConnectionSample } from "../lib/server/connection_limits.ts";
import type { Endpoint, ServerEvent, ServerOutput } from "../lib/server/server_event.ts";

function host() {
  const events: ServerEvent[] = [];
  const outputs: ServerOutput[] = [];
  const busy = new Set<number>();
  const stats = { rateLimited: 0, tcpRefused: 0, tcpTimedOut: 0 };
  return {
    events,
    outputs,
    busy,
    stats,
    host: {
      emit: (e: ServerEvent) => events.push(e),
      output: (o: ServerOutput) => outputs.push(o),
      busy: (id: number) => busy.has(id),
      stats,
    },
  };
}

const UDP: Endpoint = { transport: "udp", address: "192.0.2.7", port: 5000 };

function tcp(connId: number, address = "192.0.2.7"): Endpoint {
  return { transport: "tcp", address, port: 6000 + connId, connId };
}

function sample(over: Partial<Omit<ConnectionSample, "busy">> = {}) {
  return { bytesRead: 0, bytesWritten: 0, framesRead: 0, pendingBytes: 0, reading: true, ...over };
}

Deno.test("Admission.datagram() applies the strict limit without a session and the loose one with", () => {
  const h = host();
  const admission = new Admission(h.host, { rateLimit: 1, sessionRateLimit: 10 });
  // Bursts of twice the rate, then drops.
  assertEquals([1, 2, 3].map(() => admission.datagram(0, UDP, false)), [true, true, false]);
  assertEquals(h.stats.rateLimited, 1);
  assertEquals(h.events, [{
    kind: "rate_limited",
    transport: "udp",
    address: "192.0.2.7",
    dropped: 1,
    session: false,
    ratePerSecond: 1,
    burst: 2,
  }]);
  assertEquals(admission.datagram(0, UDP, false), false);
  assertEquals(h.events.length, 1, "one report per period");
  assert(admission.datagram(0, UDP, true), "session traffic has its own bucket");
  assert(new Admission(h.host, { rateLimit: 0 }).datagram(0, UDP, false), "0 is no limit");
});

Deno.test("Admission.hello() lets a first contact through on its own port while other ports of its address flood", () => {
  const h = host();
  const admission = new Admission(h.host, { rateLimit: 1, sessionRateLimit: 10 });
  const flooder: Endpoint = { ...UDP, port: 6001 };
  // The flood spends the address's budget, and its own port's first contacts with it.
  for (let i = 0; i < 50; i++) admission.datagram(0, flooder, false);
  assertEquals(admission.datagram(0, UDP, false), false, "the address is over its budget");
  assertEquals(admission.hello(0, flooder), false, "the flooding port has no first contact left");
  // A newcomer's port: its hello and two retransmissions pass, then about one a second.
  const newcomer: Endpoint = { ...UDP, port: 7000 };
  assertEquals([0, 1, 2, 3].map(() => admission.hello(10, newcomer)), [true, true, true, false]);
  // A second on, one from the address's budget (refilled) and one from the port's.
  assertEquals([0, 1, 2].map(() => admission.hello(1010, newcomer)), [true, true, false]);
  // Under its budget, an address's hellos spend only the address's budget.
  const quiet: Endpoint = { ...UDP, address: "192.0.2.8" };
  assertEquals([1, 2].map(() => admission.hello(0, quiet)), [true, true]);
  assertEquals(admission.hello(0, quiet), true, "over it now: the port's first contact");
});

Deno.test("Admission reports the drops of a flood that stopped once their period is over, not only at the next drop", () => {
  const h = host();
  const admission = new Admission(h.host, { rateLimit: 1 });
  for (let i = 0; i < 1002; i++) admission.datagram(0, UDP, false);
  assertEquals(h.events.map((e) => e.kind === "rate_limited" && e.dropped), [1]);
  const at = admission.nextTimeout() ?? Infinity;
  assert(at <= 1_000, `looks again within a second, not ${at}`);
  admission.onTimeout(at);
  assertEquals(h.events.length, 1, "not before the 10 s period is over");
  let now = at;
  while (h.events.length === 1) {
    now = admission.nextTimeout()!;
    assert(now <= 11_000, "reported within the period plus a second");
    admission.onTimeout(now);
  }
  assertEquals(h.events.map((e) => e.kind === "rate_limited" && e.dropped), [1, 999]);
  assertEquals(admission.nextTimeout(), undefined, "nothing owed any more");
});

Deno.test("Admission limits validated traffic per address and port, IPv6 included", () => {
  const h = host();
  const admission = new Admission(h.host, { sessionRateLimit: 1 });
  const v6 = (port: number): Endpoint => ({ transport: "udp", address: "2001:db8::7", port });
  assertEquals([1, 2, 3].map(() => admission.datagram(0, v6(5000), true)), [true, true, false]);
  assert(
    admission.datagram(0, v6(5001), true),
    "another port of the same address has its own budget",
  );
});

Deno.test("Admission.openConnection() closes the oldest connection without a login to make room, saying why", () => {
  const h = host();
  const admission = new Admission(h.host, { maxConnectionsPerAddress: 1 });
  assert(admission.openConnection(0, tcp(1)));
  assertEquals(h.outputs, []);
  // Connection 1 gets its first-request time (5 s) before it can give way.
  assert(admission.openConnection(5_000, tcp(2)));
  assertEquals(h.stats.tcpRefused, 1);
  const [send, close] = h.outputs;
  if (send.type !== "send" || send.message.type !== "error") throw new Error("not an error");
  assertEquals(send.to.connId, 1);
  assertEquals(
    send.message.message,
    "Closing the connection: making room for a newer connection from 192.0.2.7 (at most 1 " +
      "connections without a login from one address); log in to keep a connection",
  );
  assertEquals(close, { type: "close", connId: 1 });
  assertEquals(h.events, [{
    kind: "connection_made_room",
    address: "192.0.2.7",
    closed: 1,
    hit: { kind: "made_room", scope: "per_address", limit: 1 },
  }]);
  // A connection that carried a session keeps its slot.
  admission.authenticated(2, "Ann");
  assert(admission.openConnection(10_000, tcp(3)));
  assertEquals(h.outputs.length, 2, "nothing closed");
  admission.closeConnection(1); // the driver reports the close: harmless
});

Deno.test("Admission.openConnection() tells a connection over the total cap why when none can give way", () => {
  const h = host();
  const admission = new Admission(h.host, { maxConnections: 1 });
  assert(admission.openConnection(0, tcp(1)));
  admission.authenticated(1, "Ann");
  assertEquals(admission.openConnection(0, tcp(2, "192.0.2.8")), false);
  assertEquals(h.stats.tcpRefused, 1);
  const [send, close] = h.outputs;
  if (send.type !== "send" || send.message.type !== "error") throw new Error("not an error");
  assertEquals(send.to.connId, 2);
  assert(send.message.message.startsWith("Closing the connection: the server has too many"));
  assertEquals(close, { type: "close", connId: 2 });
  assertEquals(h.events[0]?.kind, "connection_refused");
  admission.closeConnection(1);
  assert(admission.openConnection(0, tcp(3)), "room again once one closed");
});

Deno.test("Admission.checkConnection() closes an idle connection once, saying why unless it is not reading", () => {
  const h = host();
  const admission = new Admission(h.host, { tcpIdleMs: 1000 });
  admission.openConnection(0, tcp(1));
  admission.openConnection(0, tcp(2));
  admission.checkConnection(500, tcp(1), sample());
  assertEquals(h.outputs, []);
  // Busy with an upload: the idle clock does not run.
  h.busy.add(2);
  admission.checkConnection(1500, tcp(2), sample());
  assertEquals(h.outputs, []);
  admission.checkConnection(1500, tcp(1), sample());
  assertEquals(h.stats.tcpTimedOut, 1);
  assertEquals(h.outputs.map((o) => o.type), ["send", "close"]);
  assertEquals(h.events.map((e) => e.kind), ["connection_closed"]);
  // Told once already: closed again without a word, not counted twice.
  admission.checkConnection(1600, tcp(1), sample());
  assertEquals(h.outputs.map((o) => o.type), ["send", "close", "close"]);
  assertEquals(h.stats.tcpTimedOut, 1);
  // A peer that takes nothing of what it is sent gets no last word.
  h.busy.delete(2);
  admission.checkConnection(1600, tcp(2), sample({ writing: true }));
  admission.checkConnection(2700, tcp(2), sample({ writing: true }));
  assertEquals(h.outputs.at(-1), { type: "close", connId: 2 });
  assertEquals(h.outputs.at(-2)?.type, "close");
});

Deno.test("Admission.sessionlessRequest() spends the strict UDP budget and answers busy past it", () => {
  const h = host();
  const admission = new Admission(h.host, { rateLimit: 1 });
  const from = tcp(1);
  const hello = { type: "hello", reqId: 7, client: "0123456789abcdef" } as const;
  assert(admission.datagram(0, UDP, false), "one UDP datagram from the same address");
  assert(admission.sessionlessRequest(0, from, hello), "the burst has room for one more");
  assertEquals(admission.sessionlessRequest(0, from, hello), false);
  assertEquals(h.stats.rateLimited, 1);
  const [reply, ...rest] = h.outputs;
  assertEquals(rest, []);
  if (reply?.type !== "send" || reply.message.type !== "error") throw new Error("no error reply");
  assertEquals(reply.to, from);
  assertEquals([reply.message.reqId, reply.message.code], [7, ERROR_CODES.busy]);
  assert(h.events.some((e) => e.kind === "rate_limited" && e.transport === "tcp"));
  assertEquals(admission.datagram(0, UDP, false), false, "and UDP from there waits too");
});
