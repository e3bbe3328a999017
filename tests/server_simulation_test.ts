/**
 * The server's files and limits in the simulator: uploads, downloads and
 * deletions through the core's storage outputs on an in-memory blob store,
 * and the rate and connection limits as the core decides them, with the
 * real client cores on the simulated network. A failing run names its seed;
 * replay it with SIM_SEED=<seed>.
 */
import { assert, assertEquals } from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { parseCommand } from "../lib/client/command.ts";
import { toHex } from "../lib/hex.ts";
import { MemoryBlobStore } from "../lib/sim/memory_blob_store.ts";
import { SERVER_TCP } from "../lib/sim/sim_server.ts";
import type { SimClient } from "../lib/sim/sim_client.ts";
import { Simulation } from "../lib/sim/simulation.ts";
import { type Impairment, NO_IMPAIRMENT } from "../lib/sim/sim_network.ts";
import { encodeMessage } from "../lib/wire/codec.ts";
import { forSeeds } from "./_seeds.ts";

const LOSSY: Impairment = {
  loss: 0.25,
  duplicate: 0.05,
  reorder: 0.1,
  minDelayMs: 5,
  maxDelayMs: 60,
};
const CLEAN: Impairment = { ...NO_IMPAIRMENT, minDelayMs: 1, maxDelayMs: 5 };

function type(sim: Simulation, client: SimClient, ...lines: string[]): void {
  for (const line of lines) sim.userCommand(client, parseCommand(line)!);
}

function runIdle(sim: Simulation, seed: number): void {
  assert(sim.runUntilIdle(10 * 60_000), `seed ${seed}: the run did not finish`);
}

function result(client: SimClient, command: string) {
  return client.results.filter((r) => r.command === command);
}

Deno.test("Simulation uploads, lists, downloads and deletes a server file under loss", () => {
  let lost = 0;
  forSeeds("tests/server_simulation_test.ts", 12, 100, (seed) => {
    const sim = new Simulation({ seed, impairment: LOSSY });
    const alice = sim.addClient({ name: "Alice" });
    // 6,000 readings: about 140 kB, so several chunks each way.
    type(sim, alice, "register", "generate data.csv 6000", "upload data.csv", "files");
    runIdle(sim, seed);
    const [uploaded] = result(alice, "upload");
    assert(uploaded?.ok, JSON.stringify(uploaded));
    const original = alice.files.get("data.csv")!;
    assert(original.length > 120_000, `only ${original.length} bytes`);
    assertEquals(sim.blobs.read("Alice", "data.csv"), original);
    const [listed] = result(alice, "files");
    assert(listed?.ok, JSON.stringify(listed));

    // A crash and restart: the file was durable, so it is still there
    // (the client logs in again on its next heartbeat).
    sim.crashServer();
    sim.restartServer();
    sim.runFor(40_000);
    type(sim, alice, "download data.csv", "download data.csv");
    runIdle(sim, seed);
    const downloads = result(alice, "download");
    assertEquals(downloads.length, 2, JSON.stringify(downloads));
    assert(downloads.every((r) => r.ok), JSON.stringify(downloads));
    assertEquals(alice.files.get("downloads/data.csv"), original);
    // The second did not overwrite the first.
    assertEquals(alice.files.get("downloads/data (1).csv"), original);

    type(sim, alice, "delete data.csv", "download data.csv");
    runIdle(sim, seed);
    assert(result(alice, "delete")[0]?.ok);
    const missing = result(alice, "download")[2];
    assert(missing !== undefined && !missing.ok && missing.code === "file_not_found");
    assertEquals(sim.blobs.read("Alice", "data.csv"), undefined);
    const kinds = sim.serverEvents.map((e) => e.kind);
    assert(kinds.includes("file_stored") && kinds.includes("file_sent"));
    assert(kinds.includes("file_deleted"));
    lost += sim.network.stats.lost;
  });
  assert(lost > 0, "the network lost datagrams on the way");
});

Deno.test("Simulation refuses uploads over the quota and over the largest file size", () => {
  const sim = new Simulation({
    seed: 5,
    impairment: CLEAN,
    storage: { maxFileSize: 1000, quota: 1500, maxFiles: 10 },
  });
  const bob = sim.addClient({ name: "Bob" });
  bob.files.set("a.bin", new Uint8Array(900).fill(1));
  bob.files.set("big.bin", new Uint8Array(2000));
  type(sim, bob, "register", "upload a.bin", "upload a.bin b.bin", "upload big.bin");
  runIdle(sim, 5);
  const uploads = result(bob, "upload");
  assertEquals(uploads.map((r) => r.ok ? "ok" : r.code), [
    "ok",
    "quota_exceeded",
    "file_too_large",
  ]);
  assertEquals(sim.blobs.stored().map(([user, files]) => [user, files.length]), [["Bob", 1]]);
});

Deno.test("MemoryBlobStore.commit() stores nothing when size or SHA-256 do not match", () => {
  const store = new MemoryBlobStore();
  const data = new TextEncoder().encode("hello");
  store.beginUpload(1, "Carol", "a.txt");
  store.write(1, data);
  const wrong = store.commit(1, { size: 5, sha256: "00".repeat(32) }, 0);
  assertEquals(wrong.ok ? "stored" : wrong.code, "checksum_mismatch");
  store.beginUpload(2, "Carol", "a.txt");
  store.write(2, data);
  const right = store.commit(2, { size: 5, sha256: toHex(sha256(data)) }, 0);
  assert(right.ok);
  assertEquals(store.read("carol", "A.TXT"), data);
  store.beginUpload(3, "Carol", "b.txt");
  store.crash();
  assertEquals(store.commit(3, { size: 0, sha256: toHex(sha256(new Uint8Array())) }, 0).ok, false);
});

Deno.test("Simulation rate limit drops a flood from one address and serves a polite client", () => {
  forSeeds("tests/server_simulation_test.ts", 4, 200, (seed) => {
    const sim = new Simulation({
      seed,
      impairment: CLEAN,
      limits: { rateLimit: 20 },
    });
    const polite = sim.addClient({ name: "Polite" });
    type(sim, polite, "register", "list", "files", "logout");
    // 2,000 datagrams a second for 3 s from one address: garbage and
    // unpadded hellos, neither with a session.
    const flooder = "198.51.100.9:6000";
    const hello = encodeMessage({ type: "hello", reqId: 1, client: "0123456789abcdef" });
    const start = sim.clock.now();
    for (let i = 0; i < 6000; i++) {
      sim.at(start + i / 2, () => {
        const data = i % 2 === 0 ? hello : new Uint8Array([1, 2, 3, 4, 5]);
        sim.network.send(sim.clock.now(), flooder, "127.0.0.1:3000", data);
      });
    }
    runIdle(sim, seed);
    assert(polite.results.every((r) => r.ok), JSON.stringify(polite.results));
    assertEquals(polite.results.length, 5);
    const stats = sim.server!.stats;
    // At 20 a second with bursts of 40, 3 s lets through about 100 of 6,000.
    assert(stats.rateLimited > 5800, `only ${stats.rateLimited} dropped`);
    const reports = sim.serverEvents.filter((e) => e.kind === "rate_limited");
    assert(reports.length >= 1 && reports.length <= 2, `${reports.length} reports`);
    for (const report of reports) {
      assert(report.kind === "rate_limited" && report.address === "198.51.100.9");
    }
  });
});

Deno.test("Simulation register rate cuts off a registration storm from one address while another registers", () => {
  forSeeds("tests/server_simulation_test.ts", 4, 300, (seed) => {
    const sim = new Simulation({ seed, impairment: CLEAN, limits: { registerRate: 5 } });
    const polite = sim.addClient({ name: "Polite" });
    // 20 new names a second for 10 s from one address, each from its own
    // client id, over UDP and TCP in turn: well under the datagram limit,
    // far over 5 new names a minute.
    const storm = "198.51.100.9";
    const start = sim.clock.now();
    for (let i = 0; i < 200; i++) {
      sim.at(start + i * 50, () => {
        const register = encodeMessage({
          type: "register",
          reqId: 1,
          client: i.toString(16).padStart(16, "0"),
          name: `storm${i}`,
          udpPort: 6000,
          tcpPort: 7000,
        });
        if (i % 2 === 0) {
          sim.network.send(sim.clock.now(), `${storm}:6000`, "127.0.0.1:3000", register);
        } else sim.network.sendReliable(sim.clock.now(), `${storm}:6001`, SERVER_TCP, register);
      });
    }
    sim.at(start + 5_000, () => type(sim, polite, "register", "list"));
    runIdle(sim, seed);
    assert(polite.results.every((r) => r.ok), JSON.stringify(polite.results));
    assertEquals(polite.results.map((r) => r.command), ["hello", "register", "list"]);
    const names = sim.server!.registry.records().map((r) => r.name);
    const stormed = names.filter((n) => n.startsWith("storm"));
    // A burst of 5, and 5 a minute after it: nothing more in 10 s.
    assertEquals(stormed.length, 5, names.join(" "));
    assert(names.includes("Polite"));
    const cutOff = sim.serverEvents.filter((e) =>
      e.kind === "refused" && e.code === "busy" && e.from.address === storm &&
      e.reason.includes("too many new names from your address")
    );
    assertEquals(cutOff.length, 195);
    assert(cutOff.some((e) => e.kind === "refused" && e.from.transport === "tcp"));
  });
});

Deno.test("Simulation connection limit refuses a TCP connection over it, then admits once one closes", () => {
  const sim = new Simulation({ seed: 9, impairment: CLEAN, limits: { maxConnections: 2 } });
  const [a, b, c] = ["A", "B", "C"].map((name) => sim.addClient({ name }));
  for (const client of [a, b, c]) type(sim, client, "register");
  runIdle(sim, 9);
  type(sim, a, "files");
  type(sim, b, "files");
  runIdle(sim, 9);
  type(sim, c, "files");
  runIdle(sim, 9);
  const refused = result(c, "files")[0];
  if (refused === undefined || refused.ok) throw new Error(JSON.stringify(refused));
  assert(refused.error.includes("closed the TCP connection"), refused.error);
  assertEquals(sim.server!.stats.tcpRefused, 1);
  const event = sim.serverEvents.find((e) => e.kind === "connection_refused");
  assert(event?.kind === "connection_refused" && event.hit.kind === "total");

  // A's connection ends with A; C's next try opens a new one.
  sim.kill(a);
  type(sim, c, "files");
  runIdle(sim, 9);
  assert(result(c, "files")[1]?.ok, JSON.stringify(result(c, "files")));
  assert(result(b, "files")[0]?.ok);
});

Deno.test("Simulation: idle TCP connections without a login give way to logged-in users, per address and in all", () => {
  forSeeds("tests/server_simulation_test.ts", 4, 301, (seed) => {
    const sim = new Simulation({
      seed,
      impairment: CLEAN,
      limits: { maxConnectionsPerAddress: 3, maxConnections: 6 },
    });
    const [a, b] = ["A", "B"].map((name) => sim.addClient({ name }));
    for (const client of [a, b]) type(sim, client, "register");
    runIdle(sim, seed);
    const aIp = a.address.slice(0, a.address.lastIndexOf(":"));
    // Strangers hold every slot: 3 from A's own address, 3 from others,
    // each with one valid `hello` over TCP and nothing after.
    const hello = (i: number) =>
      encodeMessage({ type: "hello", reqId: 1, client: i.toString(16).padStart(16, "0") });
    const strangers = [
      ...[0, 1, 2].map((i) => `${aIp}:${9000 + i}`),
      ...[1, 2, 3].map((i) => `198.51.100.${i}:9000`),
    ];
    strangers.forEach((source, i) =>
      sim.at(sim.clock.now() + i, () => {
        sim.network.sendReliable(sim.clock.now(), source, SERVER_TCP, hello(i));
      })
    );
    runIdle(sim, seed);
    assertEquals(sim.server!.stats.tcpRefused, 0);
    // A connection gives way only once it has had its first-request time.
    sim.runFor(5_000);
    // A's own address is at its cap: its oldest stranger gives way. Then the
    // total is reached: the oldest stranger of all gives way for B.
    type(sim, a, "files");
    runIdle(sim, seed);
    type(sim, b, "files");
    runIdle(sim, seed);
    assert(result(a, "files")[0]?.ok, JSON.stringify(result(a, "files")));
    assert(result(b, "files")[0]?.ok, JSON.stringify(result(b, "files")));
    assertEquals(sim.server!.stats.tcpRefused, 2);
    // Both were A's address's strangers (the oldest); one report per period.
    const madeRoom = sim.serverEvents.filter((e) => e.kind === "connection_made_room");
    assertEquals(
      madeRoom.map((e) => e.kind === "connection_made_room" && [e.address, e.hit]),
      [[aIp, { kind: "made_room", scope: "per_address", limit: 3 }]],
    );
    // More strangers only push out strangers that had their time (the rest
    // are refused); A's and B's connections, which carried sessions, stay,
    // and they are never told to close.
    sim.runFor(5_000);
    for (let i = 4; i < 14; i++) {
      sim.network.sendReliable(sim.clock.now(), `198.51.100.${i}:9000`, SERVER_TCP, hello(i));
    }
    runIdle(sim, seed);
    assertEquals(sim.server!.stats.tcpRefused, 12);
    type(sim, a, "files");
    type(sim, b, "files");
    runIdle(sim, seed);
    assert(result(a, "files")[1]?.ok && result(b, "files")[1]?.ok);
    for (const client of [a, b]) {
      const told = client.events.filter((e) => JSON.stringify(e).includes("making room"));
      assertEquals(told, [], client.name);
    }
  });
});
