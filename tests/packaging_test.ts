/**
 * packaging/switchboard-server.service: `systemd-analyze verify` accepts it
 * (with ExecStart pointed at an executable that exists here), its sandbox
 * rates as well exposed at most 2.0 by `systemd-analyze security`, and every
 * variable it sets is one the server reads. Skipped, with one line, where
 * systemd-analyze is not installed.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { envNames } from "../lib/cli/flag_sources.ts";
import { SERVER_FLAGS } from "../lib/cli/program_flags.ts";

const UNIT = new URL("../packaging/switchboard-server.service", import.meta.url);
const HAS_SYSTEMD_ANALYZE = new Deno.Command("sh", {
  args: ["-c", "command -v systemd-analyze"],
  stdout: "null",
}).outputSync().success;

Deno.test("switchboard-server.service sets only variables the server reads, and sandboxes it", async () => {
  const unit = await Deno.readTextFile(UNIT);
  const known = new Set(envNames(SERVER_FLAGS));
  const set = [...unit.matchAll(/^Environment=([A-Z_]+)=/gm)].map((m) => m[1]);
  assert(set.length >= 4, unit);
  for (const name of set) assert(known.has(name), `${name} is not read by the server`);
  for (const line of ["DynamicUser=yes", "StateDirectory=switchboard", "ProtectSystem=strict"]) {
    assertStringIncludes(unit, `\n${line}\n`);
  }
  assertStringIncludes(unit, "\nExecStart=/usr/local/bin/switchboard-server\n");
});

Deno.test({
  name: `systemd-analyze verify and security accept switchboard-server.service${
    HAS_SYSTEMD_ANALYZE ? "" : " (skipped: systemd-analyze is not installed)"
  }`,
  ignore: !HAS_SYSTEMD_ANALYZE,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "switchboard_unit_" });
    try {
      // verify checks that ExecStart's program exists: point it at one that does.
      const unit = (await Deno.readTextFile(UNIT))
        .replace("ExecStart=/usr/local/bin/switchboard-server", "ExecStart=/bin/true");
      const path = `${dir}/switchboard-server.service`;
      await Deno.writeTextFile(path, unit);
      const verify = await new Deno.Command("systemd-analyze", {
        args: ["verify", path],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const said = new TextDecoder().decode(verify.stderr) +
        new TextDecoder().decode(verify.stdout);
      assertEquals(verify.code, 0, said);
      assertEquals(said.trim(), "", said);
      const security = await new Deno.Command("systemd-analyze", {
        args: ["security", "--offline=yes", "--no-pager", path],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const report = new TextDecoder().decode(security.stdout);
      const level = Number(/Overall exposure level for \S+: ([\d.]+)/.exec(report)?.[1]);
      assert(level <= 2.0, `exposure ${level}:\n${report}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
