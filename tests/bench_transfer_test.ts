/**
 * `scripts/bench_transfer.ts` as a user runs it: its help, one-line usage
 * errors, and a small run of two flows sharing the proxy's bottleneck with
 * losses in bursts, whose JSON carries each flow's share. Wall-clock
 * figures are not asserted here (docs/BENCHMARKS.md has them); only that
 * both flows moved and the run reported them.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { fromFileUrl } from "@std/path";
import { assertOneErrorLine, describeRun, runProgram } from "./_processes.ts";

const BENCH_PATH = fromFileUrl(new URL("../scripts/bench_transfer.ts", import.meta.url));

Deno.test("bench_transfer.ts --help names the bottleneck's flags, and bad ones are one line with exit 2", async (t) => {
  await t.step("--help", async () => {
    const result = await runProgram(BENCH_PATH, { args: ["--help"] });
    assertEquals(result.code, 0, describeRun(result));
    for (
      const flag of ["--rate", "--delay", "--queue", "--burst", "--jitter", "--reorder", "--flows"]
    ) {
      assertMatch(result.stdout, new RegExp(`^  ${flag}\\b`, "m"));
    }
  });
  const cases: [string[], RegExp][] = [
    [["--flows", "9"], /^error: --flows must be a whole number from 1 to 8/],
    [["--burst", "0"], /^error: --burst must be a whole number/],
    [["--rate", "fast"], /^error: --rate must be a whole number/],
    [["--frobs", "1"], /^error: unknown flag --frobs/],
  ];
  for (const [args, pattern] of cases) {
    await t.step(args.join(" "), async () => {
      const result = await runProgram(BENCH_PATH, { args });
      assertEquals(result.code, 2, describeRun(result));
      assertOneErrorLine(result, pattern);
    });
  }
});

Deno.test("bench_transfer.ts --flows 2 --burst 4: two transfers share the proxy's link, each reported", async () => {
  // As a user runs it: the task, with its own permissions (it starts the server, proxy and clients).
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      ...["task", "-q", "bench:transfer"],
      ...["--skip-loopback", "--skip-baseline", "--json", "--link-size", "3"],
      ...["--losses", "5", "--burst", "4", "--flows", "2", "--rate", "1000000", "--delay", "5"],
    ],
    cwd: fromFileUrl(new URL("..", import.meta.url)),
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(180_000),
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  assertEquals(output.code, 0, `${stdout}\n${new TextDecoder().decode(output.stderr)}`);
  const report = JSON.parse(stdout.trim().split("\n").at(-1)!) as {
    bottleneck: {
      burst: number;
      flows: number;
      queueBytes: number;
      rows: { loss: number; flowShares: number[]; flowSpread: number; shareOfLink: number }[];
    };
  };
  const { bottleneck } = report;
  assertEquals([bottleneck.burst, bottleneck.flows, bottleneck.queueBytes], [4, 2, 10_000]);
  const [row] = bottleneck.rows;
  assertEquals(row.loss, 0.05);
  assertEquals(row.flowShares.length, 2);
  for (const share of row.flowShares) assert(share > 0 && share <= 1, `share ${share}`);
  assert(row.flowSpread >= 1, `spread ${row.flowSpread}`);
  assert(row.shareOfLink > 0, `share ${row.shareOfLink}`);
});
