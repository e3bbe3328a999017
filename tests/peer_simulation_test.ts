/**
 * Peer-to-peer chat on the simulated network with the real cores and a
 * virtual clock, over many seeds: two to four clients register, connect
 * (one calls the others), exchange messages both ways at once and
 * terminate, under loss, duplication, reordering, a server crash, or a
 * client killed mid-chat. A failing run names its seed; replay it with
 * SIM_SEED=<seed> deno test --allow-all tests/peer_simulation_test.ts
 */
import { forSeeds, seeds } from "./_seeds.ts";
import { assert, assertEquals } from "@std/assert";
import { PEER_CHANNEL_OPTIONS } from "../lib/client/peer_table.ts";
import type { CommandResult } from "../lib/client/client_event.ts";
import { parseCommand } from "../lib/client/command.ts";
import type { SimClient } from "../lib/sim/sim_client.ts";
import { type SimPeerMessage, Simulation } from "../lib/sim/simulation.ts";
import { DEFAULT_CHANNEL_OPTIONS } from "../lib/reliable/reliable_channel.ts";
import type { Impairment } from "../lib/sim/sim_network.ts";

const CLEAN: Impairment = { loss: 0, duplicate: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 5 };

const PROFILES = {
  clean: CLEAN,
  "10% loss": { loss: 0.1, duplicate: 0, reorder: 0, minDelayMs: 5, maxDelayMs: 40 },
  "30% loss": { loss: 0.3, duplicate: 0, reorder: 0, minDelayMs: 5, maxDelayMs: 40 },
  "20% duplication": { loss: 0, duplicate: 0.2, reorder: 0, minDelayMs: 1, maxDelayMs: 30 },
  reordering: { loss: 0, duplicate: 0, reorder: 0.3, minDelayMs: 1, maxDelayMs: 80 },
  "30% loss, 20% duplication and reordering": {
    loss: 0.3,
    duplicate: 0.2,
    reorder: 0.2,
    minDelayMs: 1,
    maxDelayMs: 100,
  },
} as const satisfies Record<string, Impairment>;

/** Mild trouble for the crash and kill scenarios. */
const MILD: Impairment = {
  loss: 0.05,
  duplicate: 0.05,
  reorder: 0.05,
  minDelayMs: 1,
  maxDelayMs: 20,
};

/** Longest a MILD datagram is in flight: the largest delay plus the reordering hold. */
const IN_FLIGHT_MS = 3 * MILD.maxDelayMs + 10;

/** Seeds per profile; 6 chat profiles plus crash and kill give 8 × 26 = 208 runs. */
const SEEDS_PER_PROFILE = 26;
/** Messages each way per session. */
const MESSAGES = 100;
const NAMES = ["Alice", "Bob", "Carol", "Dave"];
/** Limit of `wait` in the scripts, s (virtual). */
const WAIT_S = 900;
const DEAD_AFTER_MS = PEER_CHANNEL_OPTIONS.deadAfterMs ?? DEFAULT_CHANNEL_OPTIONS.deadAfterMs;

/** Queues lines of the command language on a client, as a user would type them. */
function script(sim: Simulation, client: SimClient, lines: string[]): void {
  for (const line of lines) {
    const command = parseCommand(line);
    if (command === undefined) throw new Error(`not a command: ${line}`);
    sim.userCommand(client, command);
  }
}

interface Chat {
  sim: Simulation;
  hub: SimClient;
  others: SimClient[];
  /** Where each client's chat results start (after registration). */
  chatFrom: Map<SimClient, number>;
}

/**
 * Registers `count` clients on a clean network (retrying until each is in),
 * switches to `impairment`, then queues the chat: the hub (Alice) connects
 * to each other client, everyone sends `MESSAGES` messages to each of its
 * peers, waits for the peers' messages, and the hub terminates every session.
 */
function setUpChat(seed: number, count: number, impairment: Impairment): Chat {
  const sim = new Simulation({ seed, impairment: CLEAN });
  const clients = NAMES.slice(0, count).map((name) => sim.addClient({ name }));
  for (let round = 0; round < 3 && clients.some((c) => c.core.loggedInAs === undefined); round++) {
    for (const c of clients) if (c.core.loggedInAs === undefined) script(sim, c, ["register"]);
    assert(sim.runUntilIdle(10 * 60_000), "registration never finished");
  }
  assert(clients.every((c) => c.core.loggedInAs !== undefined), "a client never registered");
  sim.network.impairment = impairment;
  const [hub, ...others] = clients;
  const chatFrom = new Map(clients.map((c) => [c, c.results.length]));
  // One session: half of the runs use send without @NAME.
  const at = (c: SimClient) => others.length === 1 && seed % 2 === 0 ? "" : `@${c.name} `;
  script(sim, hub, [
    ...others.map((o) => `connect ${o.name}`),
    ...Array.from(
      { length: MESSAGES },
      (_, i) => others.map((o) => `send ${at(o)}A>${o.name} ${i}`),
    )
      .flat(),
    ...others.map((o) => `wait messages ${MESSAGES} from ${o.name} within ${WAIT_S}`),
    ...others.map((o) => `terminate ${o.name}`),
  ]);
  for (const o of others) {
    script(sim, o, [
      `wait request from Alice within ${WAIT_S}`,
      "accept Alice",
      ...Array.from({ length: MESSAGES }, (_, i) => `send ${at(hub)}${o.name}>A ${i} ✓`),
      `wait messages ${MESSAGES} within ${WAIT_S}`,
      `wait terminate within ${WAIT_S}`,
    ]);
  }
  return { sim, hub, others, chatFrom };
}

function chatResults(chat: Chat, client: SimClient): CommandResult[] {
  return client.results.slice(chat.chatFrom.get(client));
}

function describe(results: CommandResult[]): string {
  return results.map((r) => r.ok ? `${r.command} ok` : `${r.command} ${r.code}: ${r.error}`)
    .join("; ");
}

type Direction = { sent: SimPeerMessage[]; delivered: SimPeerMessage[] };

/**
 * Checks the per-direction invariants on every session and returns the
 * directions by `session from>to`: delivered texts are a prefix of the sent
 * texts, in order (no duplicate, nothing made up); each acknowledged message
 * was delivered, before its acknowledgement reached the sender.
 */
function checkInvariants(sim: Simulation): Map<string, Direction> {
  const directions = new Map<string, Direction>();
  const of = (m: SimPeerMessage) => {
    const key = `${m.session} ${m.from}>${m.to}`;
    let d = directions.get(key);
    if (d === undefined) directions.set(key, d = { sent: [], delivered: [] });
    return d;
  };
  for (const m of sim.peerSent) of(m).sent.push(m);
  for (const m of sim.peerDelivered) of(m).delivered.push(m);
  for (const [key, { sent, delivered }] of directions) {
    assertEquals(sent.map((m) => m.index), [...sent.keys()], `${key}: sent indexes`);
    assertEquals(delivered.map((m) => m.index), [...delivered.keys()], `${key}: delivered indexes`);
    assert(
      delivered.length <= sent.length,
      `${key}: ${delivered.length} delivered, ${sent.length} sent`,
    );
    assertEquals(
      delivered.map((m) => m.text),
      sent.slice(0, delivered.length).map((m) => m.text),
      `${key}: delivered texts are not a prefix of the sent ones`,
    );
    delivered.forEach((m, i) =>
      assert(m.deliveredAt! >= sent[i].sentAt, `${key}: #${i} delivered before it was sent`)
    );
    sent.forEach((m, i) => {
      if (m.ackedAt === undefined) return;
      assert(i < delivered.length, `${key}: #${i} was acknowledged but never delivered`);
      assert(m.ackedAt >= delivered[i].deliveredAt!, `${key}: #${i} acked before delivery`);
    });
  }
  return directions;
}

/** The two directions between the hub and one other client. */
function between(directions: Map<string, Direction>, a: string, b: string): Direction[] {
  return [...directions.entries()]
    .filter(([key]) => key.endsWith(` ${a}>${b}`) || key.endsWith(` ${b}>${a}`))
    .map(([, d]) => d);
}

/** How a run ended: `normal` (every command succeeded) or `abnormal` (something gave up). */
type Outcome = "normal" | "abnormal";

function outcomeOf(chat: Chat, client: SimClient): Outcome {
  return chatResults(chat, client).every((r) => r.ok) ? "normal" : "abnormal";
}

/** Runs one chat, checks it, and says how it ended and what the channels did. */
function runChat(
  seed: number,
  impairment: Impairment,
): { outcome: Outcome; stats: ReturnType<Simulation["peerStats"]> } {
  const count = [2, 2, 3, 4][seed % 4];
  const chat = setUpChat(seed, count, impairment);
  const { sim } = chat;
  assert(sim.runUntilIdle(60 * 60_000), "the chat never finished");
  return { outcome: checkChat(chat), stats: sim.peerStats() };
}

/** Checks the invariants, and complete delivery between pairs that ended well. */
function checkChat(chat: Chat): Outcome {
  const { sim, hub, others } = chat;
  const directions = checkInvariants(sim);
  const outcomes = new Map([hub, ...others].map((c) => [c, outcomeOf(chat, c)]));
  for (const other of others) {
    if (outcomes.get(hub) !== "normal" || outcomes.get(other) !== "normal") continue;
    const talks = between(directions, hub.name, other.name);
    assertEquals(talks.length, 2, `${hub.name} and ${other.name} talked both ways`);
    for (const d of talks) {
      assertEquals(d.sent.length, MESSAGES, "every message was sent");
      assertEquals(d.delivered.length, MESSAGES, "every message sent was delivered");
    }
    // Nothing is left open.
    for (const c of [hub, other]) {
      assert(c.core.peers.every((p) => p.state === "closed"), `${c.name} left a session open`);
    }
  }
  // Whatever happened, failures are clean one-sentence errors.
  for (const c of [hub, ...others]) {
    for (const r of chatResults(chat, c)) {
      if (!r.ok) assert(r.error.length > 0 && !/undefined|NaN/.test(r.error), r.error);
    }
  }
  return [...outcomes.values()].includes("abnormal") ? "abnormal" : "normal";
}

let offset = 100_000;
for (const [profile, impairment] of Object.entries(PROFILES)) {
  const first = offset;
  offset += 10_000;
  Deno.test(`Simulation peer chat keeps order and exactly-once delivery: ${profile}`, () => {
    const runs = seeds(SEEDS_PER_PROFILE, first);
    const abnormal: number[] = [];
    let retransmitted = 0;
    let duplicatesDiscarded = 0;
    forSeeds("tests/peer_simulation_test.ts", SEEDS_PER_PROFILE, first, (seed) => {
      const { outcome, stats } = runChat(seed, impairment);
      if (outcome === "abnormal") abnormal.push(seed);
      retransmitted += stats.retransmitted;
      duplicatesDiscarded += stats.duplicatesDiscarded;
    });
    // The impairment really made the channels work.
    if (impairment.loss > 0) assert(retransmitted > 0, "nothing was retransmitted");
    if (impairment.duplicate > 0) assert(duplicatesDiscarded > 0, "no duplicate was discarded");
    // Only heavy loss may make a connect or a session give up now and then.
    const allowed = impairment.loss >= 0.3 ? Math.floor(runs.length * 0.2) : 0;
    assert(
      abnormal.length <= allowed,
      `${abnormal.length} of ${runs.length} runs did not finish normally ` +
        `(seeds ${abnormal.join(", ")}; replay one with SIM_SEED)`,
    );
  });
}

Deno.test("Simulation peer chat survives a server crash and restart once sessions are open", () => {
  forSeeds("tests/peer_simulation_test.ts", SEEDS_PER_PROFILE, 200_000, (seed) => {
    const count = [2, 3, 4][seed % 3];
    const chat = setUpChat(seed, count, MILD);
    const { sim, hub, others } = chat;
    // Wait until every session is open and the first messages are through.
    const open = () =>
      hub.core.peers.filter((p) => p.state === "open").length === others.length &&
      sim.peerDelivered.length >= 2;
    for (let i = 0; i < 100_000 && !open(); i++) sim.runFor(5);
    assert(open(), "the sessions never opened");
    sim.crashServer();
    const deliveredAtCrash = sim.peerDelivered.length;
    sim.runFor(500 + sim.random.next() * 5000);
    assert(sim.peerDelivered.length > deliveredAtCrash, "the chat went on without the server");
    sim.restartServer();
    assert(sim.runUntilIdle(60 * 60_000), "the chat never finished");
    assertEquals(sim.crashes, 1);
    const outcome = checkChat(chat);
    assert(
      outcome === "normal",
      [hub, ...others].map((c) => `${c.name}: ${describe(chatResults(chat, c))}`).join("\n"),
    );
  });
});

Deno.test("Simulation peer chat ends a session as dead when the other client is killed", () => {
  forSeeds("tests/peer_simulation_test.ts", SEEDS_PER_PROFILE, 300_000, (seed) => {
    const chat = setUpChat(seed, 2, MILD);
    const { sim, hub: alice, others: [bob] } = chat;
    // Kill Bob halfway through Alice's messages, while both still send.
    const half = () => sim.peerDelivered.filter((m) => m.to === "Bob").length >= MESSAGES / 2;
    for (let i = 0; i < 100_000 && !half(); i++) sim.runFor(1);
    assert(half(), "the chat never got halfway");
    const eventAt: number[] = alice.events.map(() => Number.NaN);
    const push = alice.events.push.bind(alice.events);
    alice.events.push = (...items) => {
      for (const _ of items) eventAt.push(sim.clock.now());
      return push(...items);
    };
    const killedAt = sim.clock.now();
    sim.kill(bob);
    assert(sim.runUntilIdle(60 * 60_000), "Alice never finished");
    checkInvariants(sim);
    const ended = alice.events.findIndex((e) => e.kind === "peer_ended");
    assert(ended >= 0, `Alice never saw the session end: ${JSON.stringify(alice.events)}`);
    const end = alice.events[ended];
    assertEquals(end.kind === "peer_ended" && end.by, "dead");
    // Datagrams Bob sent before he died may still arrive for a while.
    const after = eventAt[ended] - killedAt;
    assert(after <= DEAD_AFTER_MS + IN_FLIGHT_MS, `the session ended ${after} ms after the kill`);
    // The send that was waiting for Bob failed, and the session is closed.
    const failures = chatResults(chat, alice).filter((r) => !r.ok);
    assert(failures.length > 0, "nothing failed");
    const first = failures[0];
    assert(!first.ok);
    assertEquals([first.command, first.code], ["send", "peer_gone"], describe(failures));
    assert(alice.core.peers.every((p) => p.state === "closed"));
    // Every acknowledged message from Alice had reached Bob before he died.
    const acked = sim.peerSent.filter((m) => m.from === "Alice" && m.ackedAt !== undefined);
    const delivered = sim.peerDelivered.filter((m) => m.to === "Bob");
    assert(acked.length <= delivered.length);
    assert(acked.every((m) => m.ackedAt! <= killedAt + IN_FLIGHT_MS));
  });
});

Deno.test("Simulation peer chat runs are identical for the same seed", () => {
  const summary = (seed: number) => {
    const chat = setUpChat(seed, 3, PROFILES["30% loss, 20% duplication and reordering"]);
    chat.sim.runUntilIdle(60 * 60_000);
    return JSON.stringify({
      now: chat.sim.clock.now(),
      net: chat.sim.network.stats,
      sent: chat.sim.peerSent,
      delivered: chat.sim.peerDelivered,
      results: [chat.hub, ...chat.others].map((c) => c.results),
      stats: chat.sim.peerStats(),
    });
  };
  assertEquals(summary(7), summary(7));
  assert(summary(7) !== summary(8));
});
