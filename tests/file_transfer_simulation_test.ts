/**
 * Peer-to-peer file transfers on the simulated network with the real client
 * cores, a virtual clock and seeded loss, duplication and reordering: sizes
 * around the chunk size and a multi-MiB file arrive intact, exactly once; a
 * full disk, a decline and a cancel from either side end cleanly on both
 * sides; chat goes on in order during a transfer; a transfer cut off by a
 * dead session resumes where it stopped. A failing run names its seed;
 * replay it with SIM_SEED=<seed> deno test --allow-all tests/file_transfer_simulation_test.ts
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { forSeeds } from "./_seeds.ts";
import { PEER_CHANNEL_OPTIONS } from "../lib/client/peer_table.ts";
import type { ClientEvent, CommandResult, TransferEvent } from "../lib/client/client_event.ts";
import { parseCommand } from "../lib/client/command.ts";
import type { SimClient } from "../lib/sim/sim_client.ts";
import { Simulation } from "../lib/sim/simulation.ts";
import { SERVER_UDP } from "../lib/sim/sim_server.ts";
import { toHex } from "../lib/hex.ts";
import type { Impairment } from "../lib/sim/sim_network.ts";
import { FILE_CHUNK_BYTES } from "../lib/wire/peer_payload.ts";

const FILE = "tests/file_transfer_simulation_test.ts";
const CLEAN: Impairment = { loss: 0, duplicate: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 5 };
/** Heavy trouble for small files. */
const HARSH: Impairment = {
  loss: 0.2,
  duplicate: 0.1,
  reorder: 0.2,
  minDelayMs: 2,
  maxDelayMs: 60,
};
/** Trouble for large files: every mechanism at work, but fast enough for CI. */
const LOSSY: Impairment = {
  loss: 0.1,
  duplicate: 0.1,
  reorder: 0.1,
  minDelayMs: 5,
  maxDelayMs: 40,
};
/** Mild trouble for the cancel, resume and fairness scenarios. */
const MILD: Impairment = {
  loss: 0.03,
  duplicate: 0.03,
  reorder: 0.03,
  minDelayMs: 5,
  maxDelayMs: 30,
};
const MIB = 1024 * 1024;
/** Limit of `wait` in the scripts, s (virtual). */
const WAIT_S = 1200;
const DEAD_AFTER_MS = PEER_CHANNEL_OPTIONS.deadAfterMs!;

function script(sim: Simulation, client: SimClient, lines: string[]): void {
  for (const line of lines) {
    const command = parseCommand(line);
    if (command === undefined) throw new Error(`not a command: ${line}`);
    sim.userCommand(client, command);
  }
}

/** Deterministic bytes, different for each seed. */
function content(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

interface World {
  sim: Simulation;
  clients: Record<string, SimClient>;
  /** Virtual time of each client's events, index for index. */
  eventAt: Map<SimClient, number[]>;
  /** Where each client's results start (after registration). */
  from: Map<SimClient, number>;
}

/** Registers the clients on a clean network, then switches to `impairment`. */
function world(seed: number, names: string[], impairment: Impairment): World {
  const sim = new Simulation({ seed, impairment: CLEAN });
  const clients: Record<string, SimClient> = {};
  for (const name of names) clients[name] = sim.addClient({ name });
  for (let round = 0; round < 3; round++) {
    for (const c of Object.values(clients)) {
      if (c.core.loggedInAs === undefined) script(sim, c, ["register"]);
    }
    assert(sim.runUntilIdle(10 * 60_000), "registration never finished");
  }
  const eventAt = new Map<SimClient, number[]>();
  for (const c of Object.values(clients)) {
    assert(c.core.loggedInAs !== undefined, `${c.name} never registered`);
    eventAt.set(c, timeEvents(sim, c));
  }
  sim.network.impairment = impairment;
  const from = new Map(Object.values(clients).map((c) => [c, c.results.length]));
  return { sim, clients, eventAt, from };
}

/** Records the virtual time of each event a client gets from now on. */
function timeEvents(sim: Simulation, client: SimClient): number[] {
  const times: number[] = client.events.map(() => Number.NaN);
  const push = client.events.push.bind(client.events);
  client.events.push = (...items: ClientEvent[]) => {
    for (const _ of items) times.push(sim.clock.now());
    return push(...items);
  };
  return times;
}

function resultsOf(w: World, client: SimClient): CommandResult[] {
  return client.results.slice(w.from.get(client));
}

function describe(results: CommandResult[]): string {
  return results.map((r) => r.ok ? `${r.command} ok` : `${r.command} ${r.code}: ${r.error}`)
    .join("; ");
}

/** The code and error of a failed result; a success fails the test. */
function failure(r: CommandResult | undefined): { code: string; error: string } {
  if (r === undefined) throw new Error("no result");
  if (r.ok) throw new Error(`${r.command} succeeded`);
  return r;
}

function assertAllOk(w: World, client: SimClient): void {
  const results = resultsOf(w, client);
  assert(results.every((r) => r.ok), `${client.name}: ${describe(results)}`);
}

function fileEvents(
  client: SimClient,
  kind: TransferEvent["kind"],
  name?: string,
): TransferEvent[] {
  return client.events.filter((e): e is TransferEvent =>
    e.kind === kind && (name === undefined || e.name === name)
  );
}

/** Runs until `done` holds, in small steps of virtual time. */
function runUntil(sim: Simulation, done: () => boolean, limitMs = 10 * 60_000): void {
  const end = sim.clock.now() + limitMs;
  while (!done()) {
    assert(sim.clock.now() < end, "the condition never held");
    sim.runFor(20);
  }
}

function partialOf(client: SimClient): [string, Uint8Array] | undefined {
  return [...client.files.entries()].find(([path]) => path.endsWith(".part"));
}

/** Alice connects to each of `peers`; the peers accept. */
function connect(w: World, peers: string[]): void {
  const { sim, clients } = w;
  script(sim, clients.Alice, peers.map((p) => `connect ${p}`));
  for (const p of peers) {
    script(sim, clients[p], [`wait request from Alice within ${WAIT_S}`, "accept Alice"]);
  }
}

/**
 * Alice sends each file to Bob in turn; Bob accepts each and both wait
 * for it. Returns the world after the run.
 */
function sendAll(seed: number, impairment: Impairment, files: Map<string, Uint8Array>): World {
  const w = world(seed, ["Alice", "Bob"], impairment);
  const { sim, clients: { Alice, Bob } } = w;
  connect(w, ["Bob"]);
  for (const [name, data] of files) {
    Alice.files.set(name, data);
    script(sim, Alice, [`sendfile "${name}"`, `wait transfers within ${WAIT_S}`]);
    script(sim, Bob, [
      `wait offer within ${WAIT_S}`,
      "acceptfile",
      `wait transfers within ${WAIT_S}`,
    ]);
  }
  assert(sim.runUntilIdle(4 * 60 * 60_000), "the run never finished");
  return w;
}

/** Every file arrived whole, exactly once, both sides saw it done, nothing else is on disk. */
function checkDelivered(w: World, files: Map<string, Uint8Array>): void {
  const { clients: { Alice, Bob } } = w;
  assertAllOk(w, Alice);
  assertAllOk(w, Bob);
  for (const [name, data] of files) {
    const got = Bob.files.get(`downloads/${name}`);
    if (got === undefined) throw new Error(`${name} never arrived`);
    assertEquals(got.length, data.length, `${name}: size`);
    assertEquals(toHex(sha256(got)), toHex(sha256(data)), `${name}: SHA-256`);
    assertEquals(got, data, `${name}: bytes`);
    assertEquals(fileEvents(Bob, "file_done", name).length, 1, `${name}: Bob's file_done`);
    assertEquals(fileEvents(Alice, "file_done", name).length, 1, `${name}: Alice's file_done`);
  }
  assertEquals(
    [...Bob.files.keys()].sort(),
    [...files.keys()].map((n) => `downloads/${n}`).sort(),
    "no partial file, no second copy",
  );
  for (const client of [Alice, Bob]) {
    assertEquals(client.core.busy, false);
  }
}

// ---------------------------------------------------------------------------
// Sizes and impairment

const EDGE_SIZES: [string, number][] = [
  ["empty.bin", 0],
  ["one.bin", 1],
  ["chunk.bin", FILE_CHUNK_BYTES],
  ["chunk and a byte.bin", FILE_CHUNK_BYTES + 1],
  ["some chunks.dat", 5 * FILE_CHUNK_BYTES - 7],
];

Deno.test("Simulation file transfer: 0, 1, 32768, 32769 bytes and more under 20% loss, duplication and reordering", () => {
  let retransmitted = 0, duplicates = 0;
  forSeeds(FILE, 6, 500_000, (seed) => {
    const files = new Map(
      EDGE_SIZES.map(([name, size], i) => [name, content(size, seed * 10 + i)]),
    );
    const w = sendAll(seed, HARSH, files);
    checkDelivered(w, files);
    const stats = w.sim.peerStats();
    retransmitted += stats.retransmitted;
    duplicates += stats.duplicatesDiscarded;
  });
  assert(retransmitted > 0, "nothing was retransmitted");
  assert(duplicates > 0, "no duplicate was discarded");
});

Deno.test("Simulation file transfer: 3 MiB under 10% loss, duplication and reordering", () => {
  forSeeds(FILE, 3, 510_000, (seed) => {
    const files = new Map([["big file.bin", content(3 * MIB, seed)]]);
    const w = sendAll(seed, LOSSY, files);
    checkDelivered(w, files);
    const net = w.sim.network.stats;
    assert(net.lost > 0 && net.duplicated > 0 && net.reordered > 0, JSON.stringify(net));
    // The sender's view agrees: every byte acknowledged, from offset 0.
    const [sent] = fileEvents(w.clients.Alice, "file_done");
    assertEquals([sent.done, sent.startOffset], [3 * MIB, 0]);
  });
});

Deno.test("Simulation file transfer runs are identical for the same seed", () => {
  const summary = (seed: number) => {
    const files = new Map([["a.bin", content(200_000, 1)]]);
    const w = sendAll(seed, HARSH, files);
    return JSON.stringify({
      now: w.sim.clock.now(),
      net: w.sim.network.stats,
      events: w.clients.Bob.events,
    });
  };
  assertEquals(summary(3), summary(3));
});

Deno.test("Simulation file transfer: the same file twice at once lands in two files", () => {
  forSeeds(FILE, 3, 515_000, (seed) => {
    const w = world(seed, ["Alice", "Bob"], MILD);
    const { sim, clients: { Alice, Bob } } = w;
    const data = content(300_000, seed);
    Alice.files.set("a.bin", data);
    connect(w, ["Bob"]);
    script(sim, Alice, ["sendfile a.bin", "sendfile a.bin", `wait transfers within ${WAIT_S}`]);
    runUntil(sim, () => fileEvents(Bob, "file_offer").length === 2);
    script(sim, Bob, ["acceptfile 1", "acceptfile 2", `wait transfers within ${WAIT_S}`]);
    assert(sim.runUntilIdle(60 * 60_000));
    assertAllOk(w, Alice);
    assertAllOk(w, Bob);
    // Each had a partial file of its own; neither overwrote the other.
    assertEquals([...Bob.files.keys()].sort(), ["downloads/a (1).bin", "downloads/a.bin"]);
    assertEquals(Bob.files.get("downloads/a.bin"), data);
    assertEquals(Bob.files.get("downloads/a (1).bin"), data);
  });
});

// ---------------------------------------------------------------------------
// Ends that are not success

Deno.test("Simulation file transfer to a full disk fails clearly on both sides and leaves nothing", () => {
  forSeeds(FILE, 3, 520_000, (seed) => {
    const w = world(seed, ["Alice", "Bob"], MILD);
    const { sim, clients: { Alice, Bob } } = w;
    Bob.diskBytes = 100_000;
    Alice.files.set("a.bin", content(300_000, seed));
    connect(w, ["Bob"]);
    script(sim, Alice, ["sendfile a.bin", `wait transfers within ${WAIT_S}`]);
    script(sim, Bob, [
      `wait offer within ${WAIT_S}`,
      "acceptfile",
      `wait transfers within ${WAIT_S}`,
    ]);
    assert(sim.runUntilIdle(60 * 60_000));
    const told: [SimClient, string][] = [
      [Alice, "the receiver's disk is full"],
      [Bob, "No space left"],
    ];
    for (const [client, text] of told) {
      const wait = failure(client.results.at(-1));
      assertEquals(wait.code, "transfer_failed");
      assertStringIncludes(wait.error, text);
      const [failed] = fileEvents(client, "file_failed");
      assertStringIncludes(failed.reason!, text);
    }
    // Bob's operating system's words stay with him.
    assert(!fileEvents(Alice, "file_failed")[0].reason!.includes("os error"));
    assertEquals(Bob.core.peers.filter((p) => p.state === "open").length, 1);
    assertEquals([...Bob.files.keys()], [], "no partial file and no final one");
    // The session itself is fine: chat still works.
    script(sim, Alice, ["send still here?"]);
    script(sim, Bob, [`wait messages 1 within ${WAIT_S}`]);
    assert(sim.runUntilIdle(60 * 60_000));
    assert(Bob.results.at(-1)!.ok, describe([Bob.results.at(-1)!]));
  });
});

Deno.test("Simulation file transfer declined by the receiver tells the sender", () => {
  forSeeds(FILE, 3, 530_000, (seed) => {
    const w = world(seed, ["Alice", "Bob"], HARSH);
    const { sim, clients: { Alice, Bob } } = w;
    Alice.files.set("a.bin", content(100_000, seed));
    connect(w, ["Bob"]);
    script(sim, Alice, ["sendfile a.bin", `wait transfers within ${WAIT_S}`]);
    script(sim, Bob, [`wait offer within ${WAIT_S}`, "declinefile"]);
    assert(sim.runUntilIdle(60 * 60_000));
    const wait = failure(Alice.results.at(-1));
    assertEquals(wait.code, "transfer_failed");
    assertStringIncludes(wait.error, '1 declined ("Bob" declined it)');
    assert(Bob.results.at(-1)!.ok);
    assertEquals([...Bob.files.keys()], []);
    assertEquals(Bob.core.peers.filter((p) => p.state === "open").length, 1);
  });
});

Deno.test("Simulation file transfer cancelled mid-transfer by either side stops both", async (t) => {
  for (const canceller of ["Alice", "Bob"]) {
    await t.step(`cancelled by ${canceller === "Alice" ? "the sender" : "the receiver"}`, () => {
      forSeeds(FILE, 3, canceller === "Alice" ? 540_000 : 541_000, (seed) => {
        const w = world(seed, ["Alice", "Bob"], MILD);
        const { sim, clients } = w;
        const { Alice, Bob } = clients;
        // Large enough to be still moving when the cancel arrives.
        const data = content(4 * MIB, seed);
        Alice.files.set("a.bin", data);
        connect(w, ["Bob"]);
        script(sim, Alice, ["sendfile a.bin"]);
        script(sim, Bob, [`wait offer within ${WAIT_S}`, "acceptfile"]);
        runUntil(sim, () => (partialOf(Bob)?.[1].length ?? 0) >= 256 * 1024);
        const other = canceller === "Alice" ? Bob : Alice;
        script(sim, clients[canceller], ["cancel", `wait transfers within ${WAIT_S}`]);
        script(sim, other, [`wait transfers within ${WAIT_S}`]);
        assert(sim.runUntilIdle(60 * 60_000));
        const cancel = clients[canceller].results.at(-2)!;
        assert(cancel.ok, describe([cancel]));
        assertEquals(cancel.command, "cancel");
        for (const client of [Alice, Bob]) {
          const wait = failure(client.results.at(-1));
          assertStringIncludes(wait.error, "1 cancelled");
        }
        assertStringIncludes(
          fileEvents(other, "file_failed")[0].reason!,
          `"${canceller}" cancelled it`,
        );
        assertEquals([...Bob.files.keys()], [], "the partial file is removed");
        assertEquals(fileEvents(Bob, "file_done").length, 0);
      });
    });
  }
});

// ---------------------------------------------------------------------------
// Chat during a transfer

Deno.test("Simulation chat during a file transfer arrives in order, both ways", () => {
  forSeeds(FILE, 3, 550_000, (seed) => {
    const w = world(seed, ["Alice", "Bob"], LOSSY);
    const { sim, clients: { Alice, Bob } } = w;
    // Large enough to be moving still once chat at 10% loss has arrived.
    const data = content(4 * MIB, seed);
    Alice.files.set("a.bin", data);
    connect(w, ["Bob"]);
    const count = 10;
    script(sim, Alice, [
      "sendfile a.bin",
      ...Array.from({ length: count }, (_, i) => `send A${i}`),
      `wait messages ${count} within ${WAIT_S}`,
      `wait transfers within ${WAIT_S}`,
    ]);
    script(sim, Bob, [
      `wait offer within ${WAIT_S}`,
      "acceptfile",
      ...Array.from({ length: count }, (_, i) => `send B${i}`),
      `wait messages ${count} within ${WAIT_S}`,
      `wait transfers within ${WAIT_S}`,
    ]);
    assert(sim.runUntilIdle(60 * 60_000));
    assertAllOk(w, Alice);
    assertAllOk(w, Bob);
    const texts = (from: string) =>
      sim.peerDelivered.filter((m) => m.from === from).map((m) => m.text);
    assertEquals(texts("Alice"), Array.from({ length: count }, (_, i) => `A${i}`));
    assertEquals(texts("Bob"), Array.from({ length: count }, (_, i) => `B${i}`));
    assertEquals(Bob.files.get("downloads/a.bin"), data);
    // Bob's messages do not queue behind the file, which flows the other way.
    const fileDoneAt = w.eventAt.get(Bob)![Bob.events.findIndex((e) => e.kind === "file_done")];
    const bobsLast = sim.peerDelivered.filter((m) => m.from === "Bob").at(-1)!;
    assert(bobsLast.deliveredAt! < fileDoneAt, "Bob's chat waited for the file");
  });
});

Deno.test("Simulation chat sent after sendfile is shown after the offer, even when the offer is resent", () => {
  let offerResent = 0;
  forSeeds(FILE, 40, 560_000, (seed) => {
    const w = world(seed, ["Alice", "Bob"], HARSH);
    const { sim, clients: { Alice, Bob } } = w;
    Alice.files.set("a.bin", content(10, seed));
    connect(w, ["Bob"]);
    script(sim, Alice, ["sendfile a.bin", "send after the offer"]);
    script(sim, Bob, [`wait offer within ${WAIT_S}`, `wait messages 1 within ${WAIT_S}`]);
    assert(sim.runUntilIdle(60 * 60_000));
    assertAllOk(w, Bob);
    const kinds = Bob.events.map((e) => e.kind).filter((k) =>
      k === "file_offer" || k === "message"
    );
    assertEquals(kinds, ["file_offer", "message"]);
    const offerAt = w.eventAt.get(Bob)![Bob.events.findIndex((e) => e.kind === "file_offer")];
    const chatAt = w.eventAt.get(Bob)![Bob.events.findIndex((e) => e.kind === "message")];
    if (offerAt === chatAt) offerResent++;
  });
  // Some seeds delivered both at once (the chat waited for the offer's resend): the case at stake.
  assert(
    offerResent > 0 || Deno.env.get("SIM_SEED") !== undefined,
    "no seed delivered both at once",
  );
});

Deno.test("Simulation file transfer ended by the sender's terminate says so in plain words", () => {
  const w = world(570_000, ["Alice", "Bob"], CLEAN);
  const { sim, clients: { Alice, Bob } } = w;
  Alice.files.set("a.bin", content(2 * MIB, 1));
  connect(w, ["Bob"]);
  script(sim, Alice, ["sendfile a.bin"]);
  script(sim, Bob, [`wait offer within ${WAIT_S}`, "acceptfile"]);
  // Mid-transfer by what arrived: the first progress event can be the last, on a fast path.
  runUntil(sim, () => (partialOf(Bob)?.[1].length ?? 0) >= 256 * 1024);
  script(sim, Alice, ["terminate"]);
  assert(sim.runUntilIdle(60 * 60_000));
  const [sent] = fileEvents(Alice, "file_failed");
  assertEquals(
    [sent.direction, sent.state, sent.reason],
    ["send", "interrupted", 'You ended the session with "Bob"'],
  );
  const [received] = fileEvents(Bob, "file_failed");
  assertEquals([received.direction, received.state, received.reason], [
    "receive",
    "interrupted",
    '"Alice" ended the session; the part received is kept, so sending it again resumes',
  ]);
});

// ---------------------------------------------------------------------------
// Resume

/** Wraps a client's fileReport to count the bytes read for each transfer. */
function countReads(client: SimClient): Map<number, number> {
  const counts = new Map<number, number>();
  const report = client.core.fileReport.bind(client.core);
  client.core.fileReport = (now, r) => {
    if (r.kind === "read") counts.set(r.id, (counts.get(r.id) ?? 0) + r.data.length);
    report(now, r);
  };
  return counts;
}

Deno.test("Simulation file transfer resumes after a partition ended the session", () => {
  forSeeds(FILE, 3, 560_000, (seed) => {
    const w = world(seed, ["Alice", "Bob"], MILD);
    const { sim, clients: { Alice, Bob } } = w;
    const data = content(MIB, seed);
    Alice.files.set("a.bin", data);
    const reads = countReads(Alice);
    connect(w, ["Bob"]);
    script(sim, Alice, ["sendfile a.bin"]);
    script(sim, Bob, [`wait offer within ${WAIT_S}`, "acceptfile"]);
    runUntil(sim, () => (partialOf(Bob)?.[1].length ?? 0) > 256 * 1024);
    // Cut Alice and Bob apart until both sessions die: from each other, and
    // the server's relay to Alice (her requests still reach the server, so
    // her login lives on).
    sim.network.partition(Alice.address, Bob.address);
    sim.network.partition(SERVER_UDP, Alice.address, true);
    runUntil(
      sim,
      () => [Alice, Bob].every((c) => c.core.peers.every((p) => p.state === "closed")),
      3 * DEAD_AFTER_MS,
    );
    sim.network.heal();
    // Both sides report the interruption (and a later wait only the new transfer).
    for (const client of [Alice, Bob]) {
      const t = fileEvents(client, "file_failed").at(-1);
      assertEquals(t?.state, "interrupted", `${client.name}: ${t?.reason}`);
      script(sim, client, ["wait transfers within 1"]);
    }
    assert(sim.runUntilIdle(60_000));
    assertStringIncludes(failure(Bob.results.at(-1)).error, "the part received is kept");
    assertStringIncludes(failure(Alice.results.at(-1)).error, "1 interrupted");
    const [partialPath, partial] = partialOf(Bob)!;
    assert(partial.length > 256 * 1024 && partial.length < data.length);
    assertEquals(partial, data.slice(0, partial.length), "the partial file is a prefix");
    // Again, with the same clients.
    connect(w, ["Bob"]);
    script(sim, Alice, ["sendfile a.bin", `wait transfers within ${WAIT_S}`]);
    script(sim, Bob, [
      `wait offer within ${WAIT_S}`,
      "acceptfile",
      `wait transfers within ${WAIT_S}`,
    ]);
    assert(sim.runUntilIdle(60 * 60_000));
    for (const client of [Alice, Bob]) {
      const wait = client.results.at(-1)!;
      assert(wait.ok, describe([wait]));
    }
    const accepted = fileEvents(Alice, "file_accepted").at(-1)!;
    const start = accepted.startOffset;
    assertEquals(start, partial.length, "resumed where the partial file ends");
    assertEquals(reads.get(2), data.length - start, "only the rest was read the second time");
    assertEquals(Bob.files.get("downloads/a.bin"), data);
    assertEquals(Bob.files.has(partialPath), false);
    assertEquals([...Bob.files.keys()], ["downloads/a.bin"]);
  });
});

/**
 * Starts a new process for a killed Alice, with her identity and her file,
 * that logs in, connects to Bob and sends `a.bin` again; Bob accepts both.
 */
function sendAgain(
  w: World,
  Alice: SimClient,
  data: Uint8Array,
): { again: SimClient; reads: Map<number, number> } {
  // The same key pair (the same key file): her identity, and the key peers see.
  const again = w.sim.addClient({ name: "Alice", keyPair: Alice.keyPair });
  again.files.set("a.bin", data);
  w.from.set(again, 0);
  const reads = countReads(again);
  script(w.sim, again, [
    "login",
    "connect Bob",
    "sendfile a.bin",
    `wait transfers within ${WAIT_S}`,
  ]);
  script(w.sim, w.clients.Bob, [
    `wait request from Alice within ${WAIT_S}`,
    "accept Alice",
    `wait offer within ${WAIT_S}`,
    "acceptfile",
    `wait transfers within ${WAIT_S}`,
  ]);
  return { again, reads };
}

Deno.test("Simulation file transfer resumes from a new sender process after a kill", () => {
  forSeeds(FILE, 3, 570_000, (seed) => {
    const w = world(seed, ["Alice", "Bob"], MILD);
    const { sim, clients: { Alice, Bob } } = w;
    const data = content(MIB, seed);
    Alice.files.set("a.bin", data);
    connect(w, ["Bob"]);
    script(sim, Alice, ["sendfile a.bin"]);
    script(sim, Bob, [
      `wait offer within ${WAIT_S}`,
      "acceptfile",
      `wait transfers within ${WAIT_S}`,
    ]);
    runUntil(sim, () => (partialOf(Bob)?.[1].length ?? 0) > 256 * 1024);
    sim.kill(Alice);
    assert(sim.runUntilIdle(60 * 60_000));
    // Bob's session died with Alice; his wait reports the interruption.
    const interrupted = failure(Bob.results.at(-1));
    assertStringIncludes(interrupted.error, "1 interrupted");
    assertStringIncludes(interrupted.error, "the part received is kept");
    const [, partial] = partialOf(Bob)!;
    // Alice starts again: a new process with her identity and her file.
    const { again, reads } = sendAgain(w, Alice, data);
    assert(sim.runUntilIdle(60 * 60_000));
    assertAllOk(w, again);
    assert(Bob.results.at(-1)!.ok, describe([Bob.results.at(-1)!]));
    const accepted = fileEvents(again, "file_accepted").at(-1)!;
    assertEquals(accepted.startOffset, partial.length);
    assert(partial.length > 0);
    assertEquals(reads.get(1), data.length - partial.length);
    assertEquals(Bob.files.get("downloads/a.bin"), data);
    assertEquals([...Bob.files.keys()], ["downloads/a.bin"]);
  });
});

Deno.test("Simulation file transfer resumes from a sender restarted before the receiver noticed", () => {
  forSeeds(FILE, 3, 580_000, (seed) => {
    const w = world(seed, ["Alice", "Bob"], MILD);
    const { sim, clients: { Alice, Bob } } = w;
    const data = content(MIB, seed);
    Alice.files.set("a.bin", data);
    connect(w, ["Bob"]);
    script(sim, Alice, ["sendfile a.bin"]);
    script(sim, Bob, [`wait offer within ${WAIT_S}`, "acceptfile"]);
    runUntil(sim, () => (partialOf(Bob)?.[1].length ?? 0) > 256 * 1024);
    sim.kill(Alice);
    // At once, well inside the 30 s Bob's side takes to find the old session dead.
    const { again, reads } = sendAgain(w, Alice, data);
    assert(sim.runUntilIdle(60 * 60_000));
    assertAllOk(w, again);
    // The old session was replaced, not found dead, and its transfer resumed.
    const ended = Bob.events.flatMap((e) => e.kind === "peer_ended" ? [e.by] : []);
    assertEquals(ended, ["replaced"], describe(Bob.results));
    const accepted = fileEvents(again, "file_accepted").at(-1)!;
    const start = accepted.startOffset;
    assert(start >= 256 * 1024, `resumed at ${start}`);
    assertEquals(reads.get(1), data.length - start);
    assertEquals(Bob.files.get("downloads/a.bin"), data);
    assertEquals([...Bob.files.keys()], ["downloads/a.bin"]);
  });
});

// ---------------------------------------------------------------------------
// Fairness. The simulated network has no bandwidth model (no bottleneck, no
// queue: each datagram gets an independent delay), so sessions do not
// compete for capacity; what these check is that FileTransfers serves
// concurrent transfers round-robin and none starves.

function durations(w: World, client: SimClient, kind: "file_done", direction: string): number[] {
  const times = w.eventAt.get(client)!;
  return client.events.flatMap((e, i) =>
    e.kind === kind && e.direction === direction ? [times[i]] : []
  );
}

Deno.test("Simulation file transfers from one client to two peers finish within 2x of each other", () => {
  forSeeds(FILE, 2, 580_000, (seed) => {
    const w = world(seed, ["Alice", "Bob", "Carol"], MILD);
    const { sim, clients: { Alice, Bob, Carol } } = w;
    Alice.files.set("b.bin", content(MIB, seed));
    Alice.files.set("c.bin", content(MIB, seed + 1));
    connect(w, ["Bob", "Carol"]);
    script(sim, Alice, ["sendfile @Bob b.bin", "sendfile @Carol c.bin"]);
    for (const peer of [Bob, Carol]) {
      script(sim, peer, [
        `wait offer within ${WAIT_S}`,
        "acceptfile",
        `wait transfers within ${WAIT_S}`,
      ]);
    }
    script(sim, Alice, [`wait transfers within ${WAIT_S}`]);
    // Both transfers are offered at about the same time.
    runUntil(sim, () => fileEvents(Alice, "file_accepted").length === 2);
    const start = sim.clock.now();
    assert(sim.runUntilIdle(60 * 60_000));
    for (const c of [Alice, Bob, Carol]) assertAllOk(w, c);
    const done = durations(w, Alice, "file_done", "send").map((t) => t - start);
    assertEquals(done.length, 2);
    const [fast, slow] = done.sort((a, b) => a - b);
    assert(slow <= 2 * fast, `one took ${slow} ms, the other ${fast} ms`);
  });
});

Deno.test("Simulation file transfers from two clients to one receiver finish within 2x of each other", () => {
  forSeeds(FILE, 2, 590_000, (seed) => {
    const w = world(seed, ["Alice", "Bob", "Carol"], MILD);
    const { sim, clients: { Alice, Bob, Carol } } = w;
    Bob.files.set("b.bin", content(MIB, seed));
    Carol.files.set("c.bin", content(MIB, seed + 1));
    connect(w, ["Bob", "Carol"]);
    for (const sender of [Bob, Carol]) {
      script(sim, sender, [
        `sendfile ${sender.name[0].toLowerCase()}.bin`,
        `wait transfers within ${WAIT_S}`,
      ]);
    }
    script(sim, Alice, [
      `wait offer from Bob within ${WAIT_S}`,
      `wait offer from Carol within ${WAIT_S}`,
      "acceptfile 1",
      "acceptfile 2",
    ]);
    runUntil(sim, () => fileEvents(Alice, "file_accepted").length === 2);
    const start = sim.clock.now();
    script(sim, Alice, [`wait transfers within ${WAIT_S}`]);
    assert(sim.runUntilIdle(60 * 60_000));
    for (const c of [Alice, Bob, Carol]) assertAllOk(w, c);
    const done = durations(w, Alice, "file_done", "receive").map((t) => t - start);
    assertEquals(done.length, 2);
    const [fast, slow] = done.sort((a, b) => a - b);
    assert(slow <= 2 * fast, `one took ${slow} ms, the other ${fast} ms`);
    assertEquals(Alice.files.get("downloads/b.bin"), Bob.files.get("b.bin"));
    assertEquals(Alice.files.get("downloads/c.bin"), Carol.files.get("c.bin"));
  });
});
