import { assert, assertEquals } from "@std/assert";
import { type Session, SessionTable } from "../lib/server/session_table.ts";

const T0 = 1_000_000;
const LEASE = 10_000;

function token(n: number): Uint8Array {
  return new Uint8Array(16).fill(n);
}

function open(table: SessionTable, now: number, name: string, n: number, ip = "10.0.0.1") {
  return table.open(now, { name, token: token(n), ip, udpPort: 40_000 + n, tcpPort: 5001 });
}

Deno.test("SessionTable.open() starts a session found by token and by name in any case", () => {
  const table = new SessionTable(LEASE);
  assertEquals(table.leaseMs, LEASE);
  const { session, replaced } = open(table, T0, "Alice", 1);
  assertEquals(replaced, undefined);
  assertEquals(session, {
    name: "Alice",
    token: token(1),
    ip: "10.0.0.1",
    udpPort: 40_001,
    tcpPort: 5001,
    since: T0,
    leaseUntil: T0 + LEASE,
    watching: false,
  });
  assertEquals(table.size, 1);
  assert(table.byToken(token(1)) === session);
  assert(table.byToken(token(1).slice()) === session, "found by the token's value");
  assert(table.byName("ALICE") === session);
  assertEquals(table.byToken(token(2)), undefined);
  assertEquals(table.byToken(new Uint8Array(0)), undefined);
  assertEquals(table.byName("Bob"), undefined);
  assertEquals(table.nextExpiry(), T0 + LEASE);
});

Deno.test("SessionTable.open() replaces the session of the same name", () => {
  const table = new SessionTable(LEASE);
  const first = open(table, T0, "Alice", 1).session;
  const { session, replaced } = open(table, T0 + 5, "alice", 2, "10.0.0.9");
  assert(replaced === first);
  assertEquals(table.size, 1);
  assertEquals(table.byToken(token(1)), undefined, "the old token is dead");
  assert(table.byName("Alice") === session);
  assertEquals([session.name, session.ip], ["alice", "10.0.0.9"]);
  assertEquals(table.list().map((s) => s.ip), ["10.0.0.9"], "one entry per name");
  // Closing the replaced session again does not touch the new one.
  table.close(first);
  assert(table.byName("Alice") === session);
  assertEquals(table.size, 1);
});

Deno.test("SessionTable.close() ends a session", () => {
  const table = new SessionTable(LEASE);
  const { session } = open(table, T0, "Alice", 1);
  open(table, T0, "Bob", 2);
  table.close(session);
  assertEquals(table.size, 1);
  assertEquals(table.byToken(token(1)), undefined);
  assertEquals(table.byName("Alice"), undefined);
  table.close(session);
  assertEquals(table.size, 1);
});

Deno.test("SessionTable.expire() ends the sessions whose lease ran out, in name order", () => {
  const table = new SessionTable(LEASE);
  open(table, T0, "Carol", 3);
  open(table, T0, "alice", 1);
  const bob = open(table, T0 + 2000, "Bob", 2).session;
  assertEquals(table.expire(T0 + LEASE - 1), []);
  const ended = table.expire(T0 + LEASE);
  assertEquals(ended.map((s) => s.name), ["alice", "Carol"]);
  assertEquals(table.size, 1);
  assertEquals(table.byName("Carol"), undefined);
  assertEquals(table.nextExpiry(), T0 + 2000 + LEASE);
  assertEquals(table.expire(T0 + 2000 + LEASE).map((s) => s.name), [bob.name]);
  assertEquals(table.size, 0);
  assertEquals(table.nextExpiry(), undefined);
});

Deno.test("SessionTable.renew() extends a lease from now", () => {
  const table = new SessionTable(LEASE);
  const { session } = open(table, T0, "Alice", 1);
  table.renew(T0 + 8000, session);
  assertEquals(session.leaseUntil, T0 + 8000 + LEASE);
  const next = table.nextExpiry();
  assert(next !== undefined && next <= T0 + 8000 + LEASE, "nextExpiry is never late");
  assertEquals(table.expire(T0 + LEASE), [], "a renewed session survives its first lease");
  assertEquals(table.nextExpiry(), T0 + 8000 + LEASE);
  assertEquals(table.expire(T0 + 8000 + LEASE).map((s) => s.name), ["Alice"]);
});

Deno.test("SessionTable.nextExpiry() follows the earliest lease", () => {
  const table = new SessionTable(LEASE);
  assertEquals(table.nextExpiry(), undefined);
  open(table, T0 + 500, "Bob", 2);
  open(table, T0, "Alice", 1);
  assertEquals(table.nextExpiry(), T0 + LEASE);
});

Deno.test("SessionTable.list() sorts by name key and starts after a name", () => {
  const table = new SessionTable(LEASE);
  for (const [i, name] of ["dave", "Bob", "alice", "Carol"].entries()) open(table, T0, name, i);
  const names = (sessions: Session[]) => sessions.map((s) => s.name);
  assertEquals(names(table.list()), ["alice", "Bob", "Carol", "dave"]);
  assertEquals(names(table.list("bob")), ["Carol", "dave"]);
  assertEquals(names(table.list("b")), ["Bob", "Carol", "dave"]);
  assertEquals(names(table.list("dave")), []);
  assertEquals(names([...table.all()]).sort(), ["Bob", "Carol", "alice", "dave"]);
});
