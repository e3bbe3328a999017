/**
 * A server that cannot start leaves no trace in a data directory it made
 * for the start (no `files/`, no `server.lock`), and one that already
 * existed keeps what it held.
 */
import { assertEquals, assertMatch } from "@std/assert";
import { runProgram, SERVER_PATH, tempDir } from "./_processes.ts";

for (const transport of ["udp", "tcp"] as const) {
  Deno.test(`server whose ${transport.toUpperCase()} port is in use leaves no new data directory behind`, async () => {
    await using dir = await tempDir();
    const taken = transport === "udp"
      ? Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" })
      : Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (taken.addr as Deno.NetAddr).port;
    try {
      const ports = transport === "udp" ? ["--udp-port", String(port), "--tcp-port", "0"] : [
        "--udp-port",
        "0",
        "--tcp-port",
        String(port),
      ];
      const args = ["--host", "127.0.0.1", ...ports, "--log-dir", `${dir.path}/logs`];
      const fresh = await runProgram(SERVER_PATH, {
        args: [...args, "--data-dir", `${dir.path}/new`],
      });
      assertEquals(fresh.code, 1);
      assertMatch(
        fresh.stderr,
        new RegExp(`^error: ${transport.toUpperCase()} port ${port} is in use`),
      );
      assertEquals(await Deno.stat(`${dir.path}/new`).catch(() => null), null);

      await Deno.mkdir(`${dir.path}/old`);
      await Deno.writeTextFile(`${dir.path}/old/keep.txt`, "mine");
      const old = await runProgram(SERVER_PATH, {
        args: [...args, "--data-dir", `${dir.path}/old`],
      });
      assertEquals(old.code, 1);
      assertEquals(await Deno.readTextFile(`${dir.path}/old/keep.txt`), "mine");
    } finally {
      taken.close();
    }
  });
}
