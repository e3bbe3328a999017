/**
 * The invariants a finished simulator run must hold: peer messages in
 * order, exactly once and never fabricated; no ghosts in the active list;
 * no acknowledged registration lost. `scenario_runner.ts` checks them after
 * every run.
 *
 * @module
 */
import type { CommandResult } from "../client/client_event.ts";
import { nameKey } from "../wire/client_name.ts";
import type { SimPeerMessage, Simulation } from "./simulation.ts";

/**
 * Checks the invariants of a finished run (call it after the run settled
 * and one more lease passed):
 *
 * - peer messages: in each direction of each session, what was delivered is,
 *   in order, a prefix of what was sent: no duplicates, nothing fabricated,
 *   order kept;
 * - an acknowledged peer message was delivered, unless an earlier message of
 *   its direction never was acknowledged (a selective ack can cover a
 *   message that waits behind a gap when the session ends);
 * - no ghosts: no session in the server's active list belongs to a killed
 *   client;
 * - every acknowledged registration (a successful `register` whose client
 *   did not try `deregister` afterwards) is on the simulated disk, server
 *   crashes included.
 *
 * @param sim the simulation
 * @returns the violations, one sentence each; empty if all hold
 */
export function checkInvariants(sim: Simulation): string[] {
  const violations = checkPeerMessages(sim.peerSent, sim.peerDelivered);

  const server = sim.server;
  if (server !== undefined) {
    const killed = new Map(sim.clients.filter((c) => !c.alive).map((c) => [c.address, c]));
    for (const session of server.sessions.list()) {
      const ghost = killed.get(`${session.ip}:${session.udpPort}`);
      if (ghost !== undefined) {
        violations.push(
          `Ghost: "${session.name}" of killed client ${ghost.address} is still in the active ` +
            `list a lease after it was killed`,
        );
      }
    }
  }

  const onDisk = new Set(Object.keys(sim.disk).map(nameKey));
  for (const client of sim.clients) {
    for (const name of acknowledgedRegistrations(client.results)) {
      if (!onDisk.has(nameKey(name))) {
        violations.push(
          `Lost registration: "${name}" (client ${client.address}) was acknowledged but is ` +
            `not on disk` + (sim.crashes > 0 ? ` after ${sim.crashes} server crash(es)` : ""),
        );
      }
    }
  }
  return violations;
}

/** Names whose registration a client saw acknowledged and never tried to undo. */
function acknowledgedRegistrations(results: readonly CommandResult[]): string[] {
  const names = new Map<string, string>();
  for (const result of results) {
    if (result.ok && result.command === "register") {
      names.set(nameKey(result.name), result.name);
    } else if (result.command === "deregister") {
      // Failed or not, the server may have executed it (a lost reply).
      names.clear();
    }
  }
  return [...names.values()];
}

/** At most this many peer-message violations are listed per run. */
const MAX_PEER_VIOLATIONS = 10;

/**
 * Checks peer messages: per session and direction, delivered is an in-order
 * prefix of sent, and acknowledged messages behind no unacknowledged one
 * were delivered.
 *
 * @param sent every message sent, in send order
 * @param delivered every message delivered, in delivery order
 * @returns the violations, one sentence each
 *
 * @example
 * ```ts
 * checkPeerMessages([], [{ from: "a", to: "b", session: "s", index: 0, text: "x", sentAt: 0 }]);
 * // ['Fabricated: b got message 0 "x" from a in session s, which was never sent']
 * ```
 */
export function checkPeerMessages(
  sent: readonly SimPeerMessage[],
  delivered: readonly SimPeerMessage[],
): string[] {
  const violations: string[] = [];
  const key = (m: SimPeerMessage) => `${m.session}\u0000${m.from}\u0000${m.to}`;
  const sentBy = new Map<string, Map<number, SimPeerMessage>>();
  for (const m of sent) {
    let byIndex = sentBy.get(key(m));
    if (byIndex === undefined) sentBy.set(key(m), byIndex = new Map());
    byIndex.set(m.index, m);
  }
  const deliveredCount = new Map<string, number>();
  for (const m of delivered) {
    const k = key(m);
    const expected = deliveredCount.get(k) ?? 0;
    const original = sentBy.get(k)?.get(m.index);
    const what = `${m.to} got message ${m.index} ${JSON.stringify(m.text)} from ${m.from} ` +
      `in session ${m.session}`;
    if (original === undefined) {
      violations.push(`Fabricated: ${what}, which was never sent`);
    } else if (original.text !== m.text) {
      violations.push(`Corrupted: ${what}, but ${JSON.stringify(original.text)} was sent`);
    } else if (m.index < expected) {
      violations.push(`Duplicate: ${what} again`);
    } else if (m.index > expected) {
      violations.push(`Out of order: ${what} before message ${expected}`);
    }
    deliveredCount.set(k, Math.max(expected, m.index + 1));
  }
  for (const [k, byIndex] of sentBy) {
    const count = deliveredCount.get(k) ?? 0;
    for (let i = 0; byIndex.get(i)?.ackedAt !== undefined; i++) {
      if (i < count) continue;
      const m = byIndex.get(i)!;
      violations.push(
        `Acknowledged but not delivered: message ${i} ${JSON.stringify(m.text)} from ${m.from} ` +
          `to ${m.to} in session ${m.session}`,
      );
    }
  }
  if (violations.length > MAX_PEER_VIOLATIONS) {
    const more = violations.length - MAX_PEER_VIOLATIONS;
    return [...violations.slice(0, MAX_PEER_VIOLATIONS), `... and ${more} more peer violations`];
  }
  return violations;
}
