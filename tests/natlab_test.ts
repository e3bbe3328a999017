/**
 * The NAT lab (`deno task natlab`). As root with `ip` and `nft`: every kind of
 * NAT classifies as intended (mapping, filtering, UDP to other hosts), two real
 * clients on one LAN chat and send a file through the real server, and
 * everything the lab made is gone afterwards, also after Ctrl+C. Elsewhere
 * those tests are ignored, with one line saying why; the text output and the
 * rulesets are checked everywhere.
 */
import { assert, assertEquals, assertMatch, assertThrows } from "@std/assert";
import { fromFileUrl } from "@std/path";
import { Natlab } from "../scripts/_natlab_lab.ts";
import { formatMatrix, summarizePairs } from "../scripts/_natlab_matrix.ts";
import { ALL_KINDS, EXPECTED, natlabRuleset } from "../scripts/_natlab_ruleset.ts";
import { NAMESPACE_PREFIX, natlabUnavailable, runCommand } from "../scripts/_natlab_topology.ts";

const NATLAB_PATH = fromFileUrl(new URL("../scripts/natlab.ts", import.meta.url));
const CONFIG_PATH = fromFileUrl(new URL("../deno.json", import.meta.url));

const unavailable = await natlabUnavailable();
const hasConntrack =
  (await runCommand(["sh", "-c", "command -v conntrack"]).catch(() => "")).trim() !== "";
if (unavailable !== undefined) console.log(`natlab_test: lab tests skipped: ${unavailable}`);

async function labNamespaces(id: string): Promise<string[]> {
  const list = await runCommand(["ip", "netns", "list"]);
  return list.split("\n").map((line) => line.split(" ")[0])
    .filter((name) => name.startsWith(`${NAMESPACE_PREFIX}${id}-`));
}

Deno.test({
  name: "Natlab: every kind of NAT classifies as intended; same-LAN clients chat and send a file",
  ignore: unavailable !== undefined,
}, async (t) => {
  const workDir = await Deno.makeTempDir({ prefix: "switchboard_natlab_test_" });
  let id = "";
  try {
    await using lab = await Natlab.open({ workDir });
    id = lab.topology.id;
    assert((await labNamespaces(id)).length >= 3, "the lab made its namespaces");

    await t.step("selfCheck() measures each kind as intended", async () => {
      const checks = await lab.selfCheck(ALL_KINDS);
      for (const check of checks) {
        assertEquals(
          check.measured && {
            mapping: check.measured.mapping,
            filtering: check.measured.filtering,
            outside: check.measured.outside,
          },
          EXPECTED[check.kind],
          `${check.kind}: ${check.error ?? ""}`,
        );
        assert(check.ok);
        assertMatch(check.measured!.observed, /^100\.64\.0\.\d+:\d+$/, "seen at the NAT's address");
      }
    });

    await t.step(
      "address discovery finds full cone endpoint-independent and symmetric destination-dependent",
      async () => {
        const cell = await lab.runCell("full-cone", "symmetric", { timeoutMs: 5_000 });
        assertEquals(cell.initiatorMapping, "endpoint-independent", cell.error);
        assertEquals(cell.acceptorMapping, "destination-dependent", cell.error);
      },
    );

    await t.step({
      name: "runCell() flushes the NATs' connection tracking when asked, and the lab goes on",
      ignore: !hasConntrack,
      fn: async () => {
        const cell = await lab.runCell("port-restricted", "full-cone", {
          timeoutMs: 20_000,
          flushAtMs: 0,
        });
        assertEquals(cell.path, "direct", cell.error);
        assertEquals(cell.flushed, true, "flushed as the session came up");
        assertEquals(cell.initiatorMapping, "endpoint-independent");
        assertEquals(cell.delivered, cell.sent, "no message lost to the flush");
        assert(cell.file, "the file arrived across the flush");
      },
    });

    await t.step(
      "runCell() goes direct through endpoint-independent mappings, and relays where nothing direct works",
      async () => {
        const cases = [
          ["port-restricted", "port-restricted", "direct"],
          ["symmetric", "full-cone", "direct"],
          ["port-restricted", "symmetric", "relay"],
          ["blocked", "full-cone", "relay"],
        ] as const;
        for (const [a, b, path] of cases) {
          const cell = await lab.runCell(a, b, { timeoutMs: 15_000 });
          assertEquals(cell.path, path, `${a} -> ${b}: ${cell.error ?? ""}`);
          assertEquals(cell.delivered, cell.sent, `${a} -> ${b}`);
          assert(cell.file, `${a} -> ${b}: the file arrived`);
        }
      },
    );

    await t.step(
      "runSameLan() connects, chats and sends a file with the real programs",
      async () => {
        const cell = await lab.runSameLan("same-lan", { timeoutMs: 20_000 });
        assertEquals(cell.path, "direct", cell.error);
        assertEquals(cell.delivered, cell.sent);
        assertEquals(cell.sent, 4);
        assert(cell.file, "the file arrived, SHA-256 checked");
        // through the router (hairpin), from the initiator's public mapping, not across the LAN
        assertMatch(cell.requestFrom ?? "", /^100\.64\.0\.\d+:40000$/);
        assert(
          cell.sessionMs !== null && cell.sessionMs < 5_000,
          `session in ${cell.sessionMs} ms`,
        );
      },
    );
  } finally {
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
  }
  assertEquals(await labNamespaces(id), [], "closing the lab removed every namespace");
});

Deno.test({
  name: "natlab.ts removes its namespaces after Ctrl+C and exits 130",
  ignore: unavailable !== undefined,
}, async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", CONFIG_PATH, NATLAB_PATH, "--kinds", "symmetric,full-cone"],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let stderr = "";
  let id: string | undefined;
  const deadline = Date.now() + 30_000;
  while (id === undefined && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    stderr += value;
    id = /namespaces sbnl-([0-9a-f]+)-\*/.exec(stderr)?.[1];
  }
  if (id !== undefined) {
    // it is in the middle of building: the self-check adds and removes sides
    assert((await labNamespaces(id)).length >= 3, "the lab is up");
    child.kill("SIGINT");
  } else {
    child.kill("SIGKILL");
  }
  while (!(await reader.read()).done) { /* drain */ }
  const [status] = await Promise.all([child.status, child.stdout.cancel()]);
  assert(id !== undefined, `natlab.ts did not start its lab:\n${stderr}`);
  assertEquals(status.code, 130);
  assertEquals(await labNamespaces(id!), [], "no namespace left");
});

Deno.test("natlabRuleset() shapes each kind's mapping and filtering", () => {
  const placement = {
    wanAddress: "100.64.0.11",
    hosts: [{ address: "10.11.0.2", udpPort: 40000 }, { address: "10.11.0.3", udpPort: 40001 }],
    serverAddresses: ["100.64.0.2", "100.64.0.3"],
  };
  const rules = Object.fromEntries(
    ALL_KINDS.map((kind) => [kind, natlabRuleset(kind, placement)]),
  );
  assertMatch(rules["full-cone"], /snat to 100\.64\.0\.11\n.*/);
  assertMatch(rules["full-cone"], /iifname "wan" meta l4proto udp dnat to 10\.11\.0\.2\n/);
  assertMatch(rules["addr-restricted"], /ip daddr \. udp dport \. ip saddr @seen accept/);
  assertMatch(rules["port-restricted"], /oifname "wan" masquerade\n/);
  assertMatch(rules["symmetric"], /oifname "wan" masquerade fully-random\n/);
  assertMatch(rules["blocked"], /udp ip daddr != \{ 100\.64\.0\.2, 100\.64\.0\.3 \} drop/);
  assertMatch(rules["same-lan"], /udp dport 40001 dnat to 10\.11\.0\.3\n/);
  assertEquals(rules["same-lan-no-hairpin"].includes("dnat"), false, "no hairpin");
  for (const text of Object.values(rules)) {
    assertMatch(text, /chain input \{\n.*policy drop;/, "the router's own input drops strangers");
  }
  assertThrows(() => natlabRuleset("full-cone", { ...placement, hosts: [] }), RangeError);
});

Deno.test("formatMatrix() prints the paths by pair, then the figures of each pair", () => {
  const mapping = (kind: string) =>
    kind === "symmetric" ? "destination-dependent" : "endpoint-independent";
  const cell = (initiator: string, acceptor: string, ms: number | null, relayed = false) => ({
    initiator,
    acceptor,
    path: ms === null ? "failed" as const : relayed ? "relay" as const : "direct" as const,
    sessionMs: ms,
    delivered: ms === null ? 0 : 4,
    sent: 4,
    file: ms !== null,
    ...(initiator === "same-lan"
      ? { acceptorMapping: "unknown" }
      : { initiatorMapping: mapping(initiator), acceptorMapping: mapping(acceptor) }),
  });
  const cells = [
    cell("full-cone", "full-cone", 12),
    cell("full-cone", "symmetric", 30),
    cell("symmetric", "full-cone", null),
    cell("symmetric", "symmetric", 40, true),
    cell("full-cone", "symmetric", null),
    cell("full-cone", "symmetric", 50),
    cell("same-lan", "same-lan", 8),
  ];
  assertEquals(summarizePairs(cells)[1], {
    initiator: "full-cone",
    acceptor: "symmetric",
    runs: 3,
    direct: 2,
    relayed: 0,
    p50Ms: 30,
    maxMs: 50,
    delivered: 8,
    sent: 12,
    files: 2,
    mappings: "EI/DD",
  });
  assertEquals(
    formatMatrix(cells),
    `initiator \\ acceptor  full-cone  symmetric
full-cone             direct     direct 2/3, failed 1/3
symmetric             failed     relay

initiator  acceptor   path                    session p50 ms  max ms  messages  files  mapping
full-cone  full-cone  direct                  12              12      4/4       1/1    EI/EI
full-cone  symmetric  direct 2/3, failed 1/3  30              50      8/12      2/3    EI/DD
symmetric  full-cone  failed                  -               -       0/4       0/1    DD/EI
symmetric  symmetric  relay                   40              40      4/4       1/1    DD/DD
same-lan   same-lan   direct                  8               8       4/4       1/1    -/?

mapping: initiator/acceptor, as address discovery found it: EI endpoint-independent, DD destination-dependent (symmetric), ? unknown`,
  );
});

Deno.test("natlab.ts rejects an unknown kind with one line and exit code 2", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", CONFIG_PATH, NATLAB_PATH, "--kinds", "full-cone,cgnat"],
    env: { NO_COLOR: "1" },
  }).output();
  assertEquals(code, 2);
  assertEquals(new TextDecoder().decode(stdout), "");
  assertEquals(
    new TextDecoder().decode(stderr),
    'error: --kinds: unknown kind "cgnat"; known: full-cone, addr-restricted, port-restricted, ' +
      "symmetric, blocked, same-lan, same-lan-no-hairpin\n",
  );
});
