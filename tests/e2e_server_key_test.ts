/**
 * A running client whose server restarts with a new static key is told at
 * once, in one line, that the key changed, and sends it nothing more: the
 * same hard error as a freshly started client gets, never a silent
 * downgrade nor a 30 s time-out. Real processes on loopback.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { SERVER_IDENTITY_FILE } from "../lib/io/server_identity_file.ts";
import { assertExit, runClient, startClient, startServer, tempDir } from "./_processes.ts";

const CHANGED =
  /key of 127\.0\.0\.1:\d+ changed while connected \(was [^,]+, now [^)]+\): refusing to go on; if the server's key really changed, remove its entry from .*known_servers\.json/i;

for (const how of ["stopped", "killed"] as const) {
  Deno.test(`a running client is told at once, in one line, that its server (${how}) came back with another key`, async () => {
    await using dir = await tempDir("switchboard_server_key_");
    const dataDir = dir.join("data");
    const logDir = dir.join("logs");
    // A 3 s lease: heartbeats (and a new login after a shutdown) every second.
    const extraArgs = ["--lease", "3"];
    const first = await startServer({ dataDir, logDir, extraArgs });
    const ports = { udp: first.udpPort, tcp: first.tcpPort };
    const args = [
      ...["--server", first.address, "--name", "Rita", "--data-dir", dir.join("client")],
      ...["--log-dir", logDir, "--timeout", "30"],
    ];
    await using client = startClient(args);
    await client.write("register\n");
    await client.waitForLine(/^Registered and logged in as "Rita"/);
    if (how === "stopped") assertEquals(await first.stop(), 0);
    else await first.kill9();

    // The operator replaced the server's key (or an impostor took its ports).
    await Deno.remove(`${dataDir}/${SERVER_IDENTITY_FILE}`);
    const restarted = performance.now();
    await using second = await startServer({ dataDir, logDir, extraArgs, ports });
    await client.waitForLine(CHANGED, 15_000);
    const tookS = (performance.now() - restarted) / 1000;
    // Its next exchange (a heartbeat's retransmission, or the new login) tells: seconds, not 30.
    assert(tookS < 15, `told after ${tookS.toFixed(1)} s`);
    await client.write("list\nexit\n");
    const result = await client.finished();
    const said = (result.stdout + result.stderr).split("\n").filter((l) => CHANGED.test(l));
    assertEquals(said.length, 1, `said ${said.length} times:\n${result.stdout}${result.stderr}`);
    // The next command refers to it rather than repeating it (stopped: the
    // shutdown ended the session first, so it is not logged in at all).
    assertMatch(
      result.stdout + result.stderr,
      how === "killed"
        ? /error: not sent: the server's key was refused \(said above\)/
        : /error: not logged in/,
    );
    assert(
      !second.lines.some((l) => /logged in|Registered/.test(l)),
      "nothing reached the new server's accounts",
    );

    // A fresh start against the new key is refused by the pin, in one line too.
    const fresh = await runClient({ args, stdin: "list\n" });
    assertExit(fresh, 1);
    assertMatch(fresh.stderr, /^error: the key of 127\.0\.0\.1:\d+ has changed [^\n]*\n?$/);
    assertEquals(await second.stop(), 0);
  });
}
