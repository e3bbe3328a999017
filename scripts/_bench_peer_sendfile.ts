/**
 * One side of `bench:secure`'s peer `sendfile` measure, in a process of its
 * own (so each side's cryptography has its own thread, as between two
 * machines). The sender registers, connects to the receiver (retrying until
 * it is online), sends the file once and prints the seconds from the offer
 * to its `file_done` (the receiver verified the file) as one JSON line; the
 * receiver registers, accepts the session and the file, and exits once the
 * file is verified. `--null` seals peer traffic with the benchmark's null
 * cipher (`benchNullPeerCipher`), which no flag of the client reaches.
 *
 * Usage (by scripts/bench_secure_link.ts): deno run -A scripts/_bench_peer_sendfile.ts
 *   --role send|receive --server-port P --name NAME --peer NAME [--file PATH] [--dir DIR] [--null]
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { cpuUsage } from "node:process";
import type { ClientEvent } from "../lib/client/client_event.ts";
import { ClientDriver } from "../lib/io/client_driver.ts";

const HOST = "127.0.0.1";

/** CPU milliseconds of this process (user + system): what the other sessions' load does not inflate. */
function cpuMs(): number {
  const { user, system } = cpuUsage();
  return (user + system) / 1000;
}

async function main(): Promise<void> {
  const flags = parseArgs(Deno.args, {
    string: ["role", "server-port", "name", "peer", "file", "dir"],
    boolean: ["null"],
  });
  const events: ClientEvent[] = [];
  const client = await ClientDriver.open({
    serverHost: HOST,
    serverPort: Number(flags["server-port"]),
    udpPort: 0,
    tcpPort: 5001,
    name: flags.name,
    via: "udp",
    acceptFiles: true,
    downloadDir: flags.dir,
    benchNullPeerCipher: flags.null,
    onEvent: (event) => events.push(event),
  });
  const done = async () => {
    while (!events.some((e) => e.kind === "file_done" || e.kind === "file_failed")) {
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    if (events.some((e) => e.kind === "file_failed")) throw new Error("the transfer failed");
  };
  try {
    if (!(await client.run({ kind: "hello" })).ok) throw new Error("hello failed");
    if (!(await client.run({ kind: "register" })).ok) throw new Error("register failed");
    if (flags.role === "receive") {
      console.log(JSON.stringify({ ready: true }));
      if (!(await client.run({ kind: "accept" })).ok) throw new Error("no request came");
      const cpuStarted = cpuMs();
      await done();
      console.log(JSON.stringify({ cpuSeconds: (cpuMs() - cpuStarted) / 1000 }));
      return;
    }
    for (let tries = 0; !(await client.run({ kind: "connect", name: flags.peer! })).ok; tries++) {
      if (tries > 100) throw new Error(`cannot connect to ${flags.peer}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const started = performance.now();
    const cpuStarted = cpuMs();
    const offer = await client.sendFile(flags.file!);
    if (!offer.ok) throw new Error(JSON.stringify(offer));
    await done();
    const seconds = (performance.now() - started) / 1000;
    const stats = [...client.core.peers].map((peer) => peer.channel?.stats)[0];
    console.log(JSON.stringify({
      seconds,
      cpuSeconds: (cpuMs() - cpuStarted) / 1000,
      segmentsSent: stats?.segmentsSent,
      retransmitted: (stats?.timeoutRetransmissions ?? 0) + (stats?.fastRetransmissions ?? 0),
    }));
  } finally {
    await client.close();
  }
}

if (import.meta.main) await main();
