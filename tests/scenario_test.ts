/**
 * The simulator's scenario language, runner, invariants and CLI
 * (`deno task simulate`).
 */
import { assert, assertEquals, assertMatch, assertStringIncludes, assertThrows } from "@std/assert";
import { fromFileUrl } from "@std/path";
import { BUILT_IN_SCENARIOS } from "../lib/sim/built_in_scenarios.ts";
import {
  DEFAULT_IMPAIRMENT,
  parseDuration,
  parseScenario,
  ScenarioError,
  type Step,
} from "../lib/sim/scenario.ts";
import {
  describeClients,
  initialImpairment,
  rttSummary,
  runScenario,
  withOverrides,
} from "../lib/sim/scenario_runner.ts";
import { checkInvariants, checkPeerMessages } from "../lib/sim/scenario_invariants.ts";
import type { SimPeerMessage } from "../lib/sim/simulation.ts";
import { nameKey } from "../lib/wire/client_name.ts";
import { main } from "../scripts/simulate.ts";
import { CONFIG_PATH } from "./_processes.ts";

const SIMULATE_PATH = fromFileUrl(new URL("../scripts/simulate.ts", import.meta.url));

/** Parses one line and returns its step without the line number. */
function step(line: string): Omit<Step, "line"> {
  const steps = parseScenario(line).steps;
  assertEquals(steps.length, 1);
  const { line: _, ...rest } = steps[0];
  return rest;
}

/** Asserts that parsing fails on `line` with a message that includes `text`. */
function parseError(scenario: string, line: number, text: string): void {
  const error = assertThrows(() => parseScenario(scenario), ScenarioError);
  assertEquals(error.line, line, error.message);
  assertStringIncludes(error.message, `line ${line}: `);
  assertStringIncludes(error.message, text);
}

// --- the parser ---------------------------------------------------------------

Deno.test("parseScenario() reads client lines with the client's command language", () => {
  assertEquals(step("alice: register"), {
    kind: "client",
    who: { name: "alice" },
    command: { kind: "register" },
  });
  assertEquals(step("Alice Smith:   lookup bob"), {
    kind: "client",
    who: { name: "Alice Smith" },
    command: { kind: "lookup", name: "bob" },
  });
  assertEquals(step("bob: send @alice hi: # not a comment"), {
    kind: "client",
    who: { name: "bob" },
    command: { kind: "send", to: "alice", text: "hi: # not a comment" },
  });
  assertEquals(step("node-* every 3: watch off"), {
    kind: "client",
    who: { pattern: "node-*", every: 3 },
    command: { kind: "watch", on: false },
  });
  assertEquals(step("*: list").kind, "client");
});

Deno.test("parseScenario() reads every network and time directive", () => {
  assertEquals(step("loss 0.05"), { kind: "loss", loss: 0.05 });
  assertEquals(step("loss 30% burst 3"), { kind: "loss", loss: 0.3, burst: 3 });
  assertEquals(step("duplicate 20%"), { kind: "duplicate", p: 0.2 });
  assertEquals(step("reorder .1"), { kind: "reorder", p: 0.1 });
  assertEquals(step("delay 30 61"), { kind: "delay", minMs: 30, maxMs: 61 });
  assertEquals(step("delay 0 1s"), { kind: "delay", minMs: 0, maxMs: 1000 });
  assertEquals(step("partition alice bob"), {
    kind: "partition",
    a: { name: "alice" },
    b: { name: "bob" },
    oneWay: false,
  });
  assertEquals(step("partition alice -> server"), {
    kind: "partition",
    a: { name: "alice" },
    b: { server: true },
    oneWay: true,
  });
  assertEquals(step('partition "Alice Smith"->*'), {
    kind: "partition",
    a: { name: "Alice Smith" },
    b: { everyone: true },
    oneWay: true,
  });
  assertEquals(step("heal"), { kind: "heal" });
  assertEquals(step("heal alice"), { kind: "heal", a: { name: "alice" } });
  assertEquals(step("heal alice server"), {
    kind: "heal",
    a: { name: "alice" },
    b: { server: true },
  });
  assertEquals(step("crash server"), { kind: "crash" });
  assertEquals(step("restart server"), { kind: "restart" });
  assertEquals(step("kill node-* every 2"), { kind: "kill", who: { pattern: "node-*", every: 2 } });
  assertEquals(step("kill Alice Smith"), { kind: "kill", who: { name: "Alice Smith" } });
  assertEquals(step("advance 500ms"), { kind: "advance", ms: 500 });
  assertEquals(step("advance 1.5s  # a comment"), { kind: "advance", ms: 1500 });
  assertEquals(step("settle"), { kind: "settle" });
  assertEquals(step("settle 2m"), { kind: "settle", ms: 120_000 });
  assertEquals(step("clients 20 node"), { kind: "clients", count: 20, prefix: "node" });
  assertEquals(step("lease 10s"), { kind: "lease", ms: 10_000 });
});

Deno.test("parseScenario() skips comments and blank lines and keeps line numbers", () => {
  const scenario = parseScenario("# a scenario\n\n  loss 1%\r\n# more\nalice: register\n", "x");
  assertEquals(scenario.name, "x");
  assertEquals(scenario.steps.map((s) => [s.line, s.kind]), [[3, "loss"], [5, "client"]]);
});

Deno.test("parseScenario() expands repeat with {i}", () => {
  const steps = parseScenario("alice: register\nrepeat 3 alice: send m{i} of 3\n").steps;
  assertEquals(
    steps.slice(1).map((s) => s.kind === "client" && s.command),
    [1, 2, 3].map((i) => ({ kind: "send", text: `m${i} of 3` })),
  );
  assert(steps.slice(1).every((s) => s.line === 2));
  assertEquals(parseScenario("repeat 2 advance 1s").steps.length, 2);
});

Deno.test("parseScenario() errors name the line and say what is wrong", () => {
  parseError("alice: register\nlos 5%", 2, 'unknown directive "los"');
  parseError("loss 2", 1, 'loss must be a probability such as 0.05 or 5%, not "2"');
  parseError("loss 0.9 burst 2", 1, "needs a mean burst of at least 9 packets");
  parseError("loss 0.1 burst 0.5", 1, "burst must be a mean length of 1 or more");
  parseError("loss 0.1 bursts 3", 1, "usage: loss P [burst N]");
  parseError("\nduplicate", 2, "usage: duplicate P");
  parseError("delay 50 10", 1, "runs backwards");
  parseError("delay fast slow", 1, "delays must be numbers of ms");
  parseError("partition alice", 1, "usage: partition A B");
  parseError("partition alice => bob", 1, "usage: partition A B");
  parseError("heal a b c", 1, "usage: heal [A [B]]");
  parseError("crash alice", 1, "use kill NAME for a client");
  parseError("restart", 1, "usage: restart server");
  parseError(
    "advance 5",
    1,
    'expected a duration such as 500ms, 5s or 2m (at most a week), not "5"',
  );
  parseError("advance 0s", 1, "expected a duration");
  parseError("kill", 1, "usage: kill WHO");
  parseError("clients 0 node", 1, "clients needs a whole number");
  parseError("clients 5 a/b", 1, "may only hold letters");
  parseError("repeat 3", 1, "repeat needs a line to repeat");
  parseError("repeat 2 repeat 2 advance 1s", 1, "repeat cannot be nested");
  parseError("alice: register\nlease 10s", 2, "lease must come before");
  parseError("alice: fly", 1, 'unknown command "fly"');
  parseError("alice: lookup", 1, "lookup needs a name");
  parseError("alice:", 1, "client lines need a command");
  parseError(": list", 1, "client lines need a name before the colon");
  parseError("a/b: list", 1, "may only hold letters");
  parseError("Server: list", 1, "is the server here");
  parseError("alice every 2: list", 1, "every K needs a pattern");
  parseError('partition "alice bob', 1, "the line has a quote that is not closed");
});

Deno.test("parseDuration() reads ms, s, m, min and h", () => {
  assertEquals(parseDuration("250ms"), 250);
  assertEquals(parseDuration("1.5s"), 1500);
  assertEquals(parseDuration("2m"), 120_000);
  assertEquals(parseDuration("2min"), 120_000);
  assertEquals(parseDuration("1h"), 3_600_000);
  assertEquals(parseDuration("5"), undefined);
  assertEquals(parseDuration("-1s"), undefined);
  assertEquals(parseDuration("8d"), undefined);
});

Deno.test("initialImpairment() takes the leading network lines; withOverrides() replaces fields", () => {
  const scenario = parseScenario(
    "loss 30% burst 3\nreorder 5%\ndelay 1 90\nalice: register\nloss 0",
  );
  const start = initialImpairment(scenario);
  assertEquals(start, {
    loss: 0.3,
    burst: 3,
    duplicate: 0,
    reorder: 0.05,
    minDelayMs: 1,
    maxDelayMs: 90,
  });
  assertEquals(withOverrides(start, { loss: 0.1, duplicate: 0.2 }), {
    ...start,
    loss: 0.1,
    duplicate: 0.2,
  });
  assertThrows(() => withOverrides(start, { loss: 0.9 }), RangeError, "at least 9 packets");
  assertEquals(initialImpairment(parseScenario("alice: list")), DEFAULT_IMPAIRMENT);
});

Deno.test("scenarios/*.sim hold the built-in scenarios' text", async () => {
  for (const [name, text] of Object.entries(BUILT_IN_SCENARIOS)) {
    const file = await Deno.readTextFile(new URL(`../scenarios/${name}.sim`, import.meta.url));
    assertEquals(file, text, `scenarios/${name}.sim differs from BUILT_IN_SCENARIOS.${name}`);
    parseScenario(text, name);
  }
});

// --- the runner ---------------------------------------------------------------

function online(run: ReturnType<typeof runScenario>): string[] {
  return run.sim.server?.sessions.list().map((s) => s.name) ?? [];
}

Deno.test("runScenario() registers, watches and lists on a lossy network", () => {
  const run = runScenario(
    parseScenario(
      "loss 10%\nduplicate 5%\nreorder 5%\nalice: register\nbob: register\nsettle\n" +
        "alice: watch\nsettle\ncarol: register\nsettle\nbob: list\n",
      "basic",
    ),
    { seed: 3 },
  );
  assertEquals(run.summary.violations, []);
  assert(run.summary.passed);
  const [alice, bob] = run.sim.clients;
  assert(
    bob.results.some((r) =>
      r.ok && r.command === "list" && r.clients.some((c) => c.name === "carol")
    ),
  );
  assert(alice.events.some((e) => e.kind === "joined" && e.client.name === "carol"));
  assertEquals(online(run).sort(), ["alice", "bob", "carol"]);
  assertEquals(run.summary.clients, 3);
  assert(run.summary.network.lost > 0);
  assertEquals(run.summary.commands.failed, 0);
});

Deno.test("runScenario() stores a generated file on the server and fetches it back", () => {
  const run = runScenario(
    parseScenario(
      "loss 20%\nalice: register\nalice: generate data.csv 3000\nalice: upload data.csv\n" +
        "settle\nalice: download data.csv copy.csv\n",
      "files",
    ),
    { seed: 4 },
  );
  assertEquals(run.summary.violations, []);
  assertEquals(run.summary.commands.failed, 0);
  const [alice] = run.sim.clients;
  assertEquals(alice.files.get("copy.csv"), alice.files.get("data.csv"));
  assert(alice.files.get("copy.csv")!.length > 60_000);
});

Deno.test("runScenario() keeps acknowledged registrations across a crash and restart", () => {
  const run = runScenario(
    parseScenario(
      "loss 20%\nrepeat 6 user-{i}: register\nadvance 300ms\ncrash server\nadvance 2s\n" +
        "restart server\nsettle\nlate: register\n",
    ),
    { seed: 11 },
  );
  assertEquals(run.summary.violations, []);
  assertEquals(run.summary.crashes, 1);
  const onDisk = Object.keys(run.sim.disk).map(nameKey);
  for (const client of run.sim.clients) {
    if (client.results.some((r) => r.command === "register" && r.ok)) {
      assert(onDisk.includes(nameKey(client.name)), client.name);
    }
  }
  assert(onDisk.includes("late"));
});

Deno.test("runScenario() drops killed clients from the active list within a lease", () => {
  const run = runScenario(
    parseScenario("lease 5s\nclients 6 node\nnode-*: register\nsettle\nkill node-* every 3\n"),
    { seed: 2 },
  );
  assertEquals(run.summary.violations, []);
  assertEquals(run.summary.killed, 2);
  assertEquals(run.sim.clients.filter((c) => !c.alive).map((c) => c.name), ["node-1", "node-4"]);
  assertEquals(online(run).sort(), ["node-2", "node-3", "node-5", "node-6"]);
});

Deno.test("runScenario() --clients overrides the count of clients lines", () => {
  const scenario = parseScenario("clients 3 node\nnode-*: register\n");
  assertEquals(runScenario(scenario, { seed: 1, clients: 7 }).sim.clients.length, 7);
  assertEquals(runScenario(scenario, { seed: 1 }).sim.clients.length, 3);
});

Deno.test("runScenario() partitions a client from the server, then heals", () => {
  const run = runScenario(
    parseScenario(
      "lease 5s\nalice: register\nbob: register\nbob: watch\nsettle\n" +
        "partition alice server\nadvance 10s\nbob: list\nheal\nadvance 10s\nbob: list\n",
    ),
    { seed: 5 },
  );
  assertEquals(run.summary.violations, []);
  assert(run.summary.network.partitioned > 0);
  const [alice, bob] = run.sim.clients;
  const lists = bob.results.filter((r) => r.command === "list" && r.ok);
  assertEquals(lists.length, 2);
  const names = lists.map((r) => r.ok && r.command === "list" ? r.clients.map((c) => c.name) : []);
  assert(!names[0].includes("alice"), "alice outlived her lease");
  assert(names[1].includes("alice"), "alice did not come back");
  assert(alice.events.some((e) => e.kind === "logged_in_again"));
  assert(bob.events.some((e) => e.kind === "left") && bob.events.some((e) => e.kind === "joined"));
});

Deno.test("runScenario() one-way partition: the server still reaches the client", () => {
  const run = runScenario(
    parseScenario("alice: register\nsettle\npartition server -> alice\nalice: list\nsettle 5s\n"),
    { seed: 1 },
  );
  assertEquals(run.summary.violations, []);
  assertEquals(run.sim.network.partitions.length, 1);
  assert(run.sim.network.blocked("127.0.0.1:3000", run.sim.clients[0].address));
  assert(!run.sim.network.blocked(run.sim.clients[0].address, "127.0.0.1:3000"));
});

Deno.test("runScenario() changes the network mid-run", () => {
  const run = runScenario(
    parseScenario("alice: register\nsettle\nloss 10% burst 2\nduplicate 1%\ndelay 3 4\n"),
    { seed: 1, overrides: { reorder: 0.5 } },
  );
  assertEquals(run.sim.network.impairment, {
    loss: 0.1,
    burst: 2,
    duplicate: 0.01,
    reorder: 0.5,
    minDelayMs: 3,
    maxDelayMs: 4,
  });
});

Deno.test("runScenario() reports a pattern that matches nobody with its line", () => {
  const error = assertThrows(
    () => runScenario(parseScenario("alice: register\n\nkill bob-*\n"), { seed: 1 }),
    ScenarioError,
  );
  assertEquals(error.line, 3);
  assertStringIncludes(error.message, 'no client matches "bob-*"');
});

Deno.test("runScenario() fails a run that never settles", () => {
  const run = runScenario(
    parseScenario("alice: register\nalice: wait messages 1 within 3600\n"),
    { seed: 1 },
  );
  assert(!run.summary.passed);
  assertMatch(run.summary.violations[0], /did not settle within 10 virtual minutes: alice/);
});

Deno.test("runScenario() is reproducible from the seed", () => {
  for (const name of ["crowd", "harsh"]) {
    const scenario = parseScenario(BUILT_IN_SCENARIOS[name], name);
    const a = runScenario(scenario, { seed: 9, clients: 8 });
    const b = runScenario(scenario, { seed: 9, clients: 8 });
    assertEquals(JSON.stringify(a.summary), JSON.stringify(b.summary));
    assertEquals(describeClients(a.sim), describeClients(b.sim));
    const c = runScenario(scenario, { seed: 10, clients: 8 });
    assert(JSON.stringify(c.summary) !== JSON.stringify(a.summary), name);
  }
});

Deno.test("runScenario() chat delivers every message once, in order, both ways", () => {
  const run = runScenario(parseScenario(BUILT_IN_SCENARIOS.chat, "chat"), { seed: 4 });
  assertEquals(run.summary.violations, []);
  assertEquals(run.summary.peer.sent, 600);
  assertEquals(run.summary.peer.delivered, 600);
  assert(run.summary.rttMs !== null && run.summary.rttMs.count > 0);
  const fromAlice = run.sim.peerDelivered.filter((m) => m.from === "alice").map((m) => m.text);
  assertEquals(fromAlice, Array.from({ length: 300 }, (_, i) => `from alice ${i + 1}`));
});

Deno.test("runScenario() harsh and crowd hold their invariants over seeds", () => {
  for (const name of ["harsh", "crowd"]) {
    const scenario = parseScenario(BUILT_IN_SCENARIOS[name], name);
    for (let seed = 1; seed <= 8; seed++) {
      const run = runScenario(scenario, { seed, clients: 10 });
      assertEquals(run.summary.violations, [], `${name} seed ${seed}`);
    }
  }
});

// --- the invariants -------------------------------------------------------------

function message(
  from: string,
  to: string,
  index: number,
  extra: Partial<SimPeerMessage> = {},
): SimPeerMessage {
  return { from, to, session: "s1", index, text: `m${index}`, sentAt: 100 + index, ...extra };
}

Deno.test("checkPeerMessages() accepts an in-order prefix per direction", () => {
  const sent = [
    message("a", "b", 0, { ackedAt: 150 }),
    message("b", "a", 0, { ackedAt: 150 }),
    message("a", "b", 1, { ackedAt: 160 }),
    message("a", "b", 2),
  ];
  const delivered = [message("a", "b", 0), message("b", "a", 0), message("a", "b", 1)];
  assertEquals(checkPeerMessages(sent, delivered), []);
});

Deno.test("checkPeerMessages() finds fabricated, corrupted, duplicate and reordered deliveries", () => {
  const sent = [0, 1, 2].map((i) => message("a", "b", i));
  assertEquals(checkPeerMessages(sent, [message("a", "b", 0, { session: "s2" })]), [
    'Fabricated: b got message 0 "m0" from a in session s2, which was never sent',
  ]);
  assertEquals(checkPeerMessages(sent, [message("a", "b", 0, { text: "evil" })]), [
    'Corrupted: b got message 0 "evil" from a in session s1, but "m0" was sent',
  ]);
  assertEquals(checkPeerMessages(sent, [message("a", "b", 0), message("a", "b", 0)]), [
    'Duplicate: b got message 0 "m0" from a in session s1 again',
  ]);
  assertEquals(checkPeerMessages(sent, [message("a", "b", 1), message("a", "b", 0)]), [
    'Out of order: b got message 1 "m1" from a in session s1 before message 0',
    'Duplicate: b got message 0 "m0" from a in session s1 again',
  ]);
});

Deno.test("checkPeerMessages() requires acknowledged messages to be delivered, gaps aside", () => {
  const sent = [
    message("a", "b", 0, { ackedAt: 150 }),
    message("a", "b", 1, { ackedAt: 160 }),
    message("a", "b", 2),
    message("a", "b", 3, { ackedAt: 170 }), // selectively acked behind a gap
  ];
  assertEquals(checkPeerMessages(sent, [message("a", "b", 0)]), [
    'Acknowledged but not delivered: message 1 "m1" from a to b in session s1',
  ]);
  assertEquals(checkPeerMessages(sent, [message("a", "b", 0), message("a", "b", 1)]), []);
});

Deno.test("checkPeerMessages() lists at most ten violations", () => {
  const delivered = Array.from({ length: 15 }, (_, i) => message("a", "b", i));
  const violations = checkPeerMessages([], delivered);
  assertEquals(violations.length, 11);
  assertEquals(violations[10], "... and 5 more peer violations");
});

Deno.test("checkInvariants() detects a fabricated peer message in a finished run", () => {
  const run = runScenario(parseScenario(BUILT_IN_SCENARIOS.chat, "chat"), { seed: 1 });
  assertEquals(checkInvariants(run.sim), []);
  run.sim.peerDelivered.push({ ...run.sim.peerDelivered[0], index: 9999, text: "forged" });
  assertEquals(checkInvariants(run.sim).length, 1);
  assertStringIncludes(checkInvariants(run.sim)[0], "Fabricated");
});

Deno.test("checkInvariants() detects a ghost before its lease ran out", () => {
  const scenario = parseScenario("alice: register\nbob: register\nsettle\nkill alice\n");
  const run = runScenario(scenario, { seed: 1 });
  assertEquals(checkInvariants(run.sim), []);
  // Checked right after a kill, without the final lease: alice is still listed.
  const sim = runScenario(parseScenario("alice: register\nsettle\n"), { seed: 1 }).sim;
  sim.kill(sim.clients[0]);
  const violations = checkInvariants(sim);
  assertEquals(violations.length, 1);
  assertMatch(violations[0], /^Ghost: "alice" of killed client 127\.0\.1\.1:4001/);
});

Deno.test("checkInvariants() detects an acknowledged registration missing from disk", () => {
  const sim = runScenario(parseScenario("alice: register\nsettle\n"), { seed: 1 }).sim;
  assertEquals(checkInvariants(sim), []);
  sim.clients[0].results.push({
    ok: true,
    command: "register",
    name: "phantom",
  });
  assertEquals(checkInvariants(sim), [
    'Lost registration: "phantom" (client 127.0.1.1:4001) was acknowledged but is not on disk',
  ]);
  // A deregister attempt afterwards, even a failed one, may have removed it.
  sim.clients[0].results.push({
    ok: false,
    command: "deregister",
    error: "No answer",
    code: "timeout",
  });
  assertEquals(checkInvariants(sim), []);
});

Deno.test("rttSummary() gives mean, nearest-rank p99 and max", () => {
  assertEquals(rttSummary([]), null);
  const rtts = Array.from({ length: 200 }, (_, i) => i + 1);
  assertEquals(rttSummary(rtts), { count: 200, mean: 100.5, p99: 198, max: 200 });
  assertEquals(rttSummary([5]), { count: 1, mean: 5, p99: 5, max: 5 });
});

// --- the CLI --------------------------------------------------------------------

/** Runs `main()` in process and returns its exit code and output lines. */
function simulate(...args: string[]): { code: number; lines: string[] } {
  const lines: string[] = [];
  const code = main(args, (line) => lines.push(...line.split("\n")));
  return { code, lines };
}

async function simulateProcess(
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--config", CONFIG_PATH, "--allow-read", SIMULATE_PATH, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

Deno.test("simulate prints one line per run and a total", () => {
  const { code, lines } = simulate("--scenario", "crowd", "--clients", "6", "--seeds", "2");
  assertEquals(code, 0);
  assertMatch(lines[0], /^seed 1 PASS: 6 clients \(2 killed\), 0 server crashes, /);
  assertMatch(lines[1], /^seed 2 PASS: /);
  assertEquals(lines[3], "crowd: seeds 1..2, 2 of 2 passed");
  assert(lines.some((l) => l.startsWith("  packets ")));
});

Deno.test("simulate --json prints one object per run and one total", () => {
  const { code, lines } = simulate("--scenario", "chat", "--seed", "3", "--json", "--loss", "0");
  assertEquals(code, 0);
  const objects = lines.map((l) => JSON.parse(l));
  assertEquals(objects.map((o) => o.type), ["run", "total"]);
  assertEquals(objects[0].seed, 3);
  assertEquals(objects[0].network.lost, 0);
  assertEquals(objects[1].peer.delivered, 600);
});

Deno.test("simulate --verbose prints each client's results and events", () => {
  const { lines } = simulate("--scenario", "crowd", "--clients", "3", "--verbose");
  assert(lines.includes("  node-1 at 127.0.1.1:4001 (killed)"));
  assert(lines.some((l) => l.startsWith('    ok register: Registered and logged in as "node-2"')));
});

Deno.test("simulate --scenario kcp reports each mode against KCP's figures", () => {
  const { code, lines } = simulate("--scenario", "kcp", "--seeds", "2");
  assertEquals(code, 0);
  assertStringIncludes(lines[0], "5% loss each way");
  assert(lines.some((l) => /^\| 2 +\|/.test(l)));
  assert(lines.some((l) => l.startsWith("| low latency ")));
  assert(lines.some((l) => l.startsWith("| stop-and-wait ")));
  assert(lines.some((l) => l.includes("| KCP fast mode (published) | 136-141 |")));
  assert(lines.some((l) => l.startsWith("Low-latency preset vs KCP fast mode")));
});

Deno.test("simulate prints the same bytes for the same flags", async () => {
  const args = ["--scenario", "harsh", "--seeds", "2", "--verbose"];
  const [a, b] = [await simulateProcess(...args), await simulateProcess(...args)];
  assertEquals(a.code, 0, a.stderr);
  assertEquals(a.stdout, b.stdout);
  assert(a.stdout.length > 1000);
});

Deno.test("simulate names the failing seed, prints how to replay it and exits 1", async () => {
  const file = await Deno.makeTempFile({ suffix: ".sim" });
  try {
    await Deno.writeTextFile(file, "alice: register\nalice: wait request within 3600\n");
    const { code, stdout } = await simulateProcess(
      "--scenario",
      file,
      "--seeds",
      "2",
      "--loss",
      "1%",
    );
    assertEquals(code, 1);
    assertStringIncludes(
      stdout,
      "FAIL seed 2: the run did not settle within 10 virtual minutes: alice still busy\n" +
        `replay with: deno task simulate --scenario ${file} --seed 2 --loss 1%\n`,
    );
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("simulate rejects bad usage with one line and exit code 2", async () => {
  for (
    const [args, expected] of [
      [["--loss", "2"], 'error: --loss must be a probability such as 0.05 or 5%, not "2"'],
      [["--bogus"], "error: unknown flag --bogus; see --help"],
      [["--scenario", "nope.sim"], 'error: cannot read scenario "nope.sim": no such file'],
      [["--scenario", "chat", "--clients", "3"], "error: --clients needs a scenario with"],
      [["--scenario", "kcp", "--duplicate", "1%"], "error: --duplicate does not apply"],
      [["--scenario", "harsh", "--loss", "0.9"], "error: the flags do not fit harsh: loss 0.9"],
      [["--seeds", "0"], "error: --seeds must be a whole number from 1 to 100000"],
    ] as const
  ) {
    const { code, stdout, stderr } = await simulateProcess(...args);
    assertEquals(code, 2, args.join(" "));
    assertEquals(stdout, "");
    assertEquals(stderr.trimEnd().split("\n").length, 1, stderr);
    assertStringIncludes(stderr, expected);
  }
});

Deno.test("simulate reports a scenario error with its file and line", () => {
  const file = Deno.makeTempFileSync({ suffix: ".sim" });
  try {
    Deno.writeTextFileSync(file, "alice: register\nadvance soon\n");
    const errors: string[] = [];
    const original = console.error;
    console.error = (line: string) => errors.push(line);
    try {
      assertEquals(main(["--scenario", file], () => {}), 2);
    } finally {
      console.error = original;
    }
    assertEquals(errors.length, 1);
    assertStringIncludes(errors[0], `error: ${file}: line 2: expected a duration`);
  } finally {
    Deno.removeSync(file);
  }
});

Deno.test("simulate --help lists every flag with its default", () => {
  const { code, lines } = simulate("--help");
  assertEquals(code, 0);
  const text = lines.join("\n");
  for (
    const flag of [
      "--scenario",
      "--seed N",
      "--seeds N",
      "--clients",
      "--loss",
      "--duplicate",
      "--reorder",
      "--json",
      "--verbose",
      "--timing",
      "--help",
    ]
  ) {
    assertStringIncludes(text, flag);
  }
  assertStringIncludes(text, "default chat");
});

Deno.test("parseScenario() reads nat and flush nats lines and refuses bad ones", () => {
  const steps = parseScenario(
    "nat alice port-restricted\nnat node-* every 2 symmetric lan home\nflush nats\nflush nats bob\n",
  ).steps;
  assertEquals(steps.map((s) => s.kind), ["nat", "nat", "flush", "flush"]);
  assertEquals(steps[0], {
    line: 1,
    kind: "nat",
    who: { name: "alice" },
    nat: "port-restricted",
  });
  assertEquals(steps[1], {
    line: 2,
    kind: "nat",
    who: { pattern: "node-*", every: 2 },
    nat: "symmetric",
    lan: "home",
  });
  assertEquals(steps[3], { line: 4, kind: "flush", who: { name: "bob" } });
  assertThrows(() => parseScenario("nat alice"), ScenarioError, "usage: nat WHO KIND");
  assertThrows(() => parseScenario("nat alice cone"), ScenarioError, 'unknown NAT kind "cone"');
  assertThrows(() => parseScenario("flush alice"), ScenarioError, "usage: flush nats [WHO]");
});

Deno.test("runScenario() puts clients behind NATs: the server sees the NATs' addresses, a LAN shares one", () => {
  const run = runScenario(
    parseScenario(
      "nat alice port-restricted\nnat bob symmetric lan home\nnat carol symmetric lan home\n" +
        "alice: register\nbob: register\ncarol: register\nsettle\nflush nats alice\n",
      "nats",
    ),
    { seed: 5 },
  );
  assertEquals(run.summary.violations, []);
  const at = (name: string) => run.sim.server?.sessions.byName(name)?.ip;
  assertEquals([at("alice"), at("bob"), at("carol")], [
    "203.0.113.1",
    "203.0.113.2",
    "203.0.113.2",
  ]);
  assertThrows(
    () => runScenario(parseScenario("nat alice full-cone\nnat alice symmetric\n"), { seed: 1 }),
    ScenarioError,
    "behind a NAT already",
  );
});
