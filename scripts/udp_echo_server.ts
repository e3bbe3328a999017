/**
 * A bare UDP echo server on `Deno.listenDatagram`: the baseline that
 * `scripts/bench.ts` measures Switchboard against. It binds, prints
 * `Echo UDP listening on port N` and sends every datagram back to its sender,
 * unchanged, until SIGINT or SIGTERM.
 *
 * Usage: `deno run --allow-net --unstable-net scripts/udp_echo_server.ts [--host H] [--port N]`
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { portFlag, rejectUnknownFlags, UsageError } from "../lib/cli/usage_error.ts";

// Room for any UDP payload, as the Switchboard server's socket has.
const RECEIVE_BUFFER_BYTES = 65536;

async function main(args: string[]): Promise<number> {
  let host: string;
  let port: number;
  try {
    const parsed = parseArgs(args, {
      string: ["host", "port"],
      default: { host: "127.0.0.1", port: "0" },
    });
    rejectUnknownFlags(parsed, ["host", "port"]);
    host = parsed.host;
    port = portFlag("--port", parsed.port);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`error: ${error.message}`);
    return 2;
  }
  const socket = Deno.listenDatagram({ transport: "udp", hostname: host, port });
  let stopping = false;
  const stop = () => {
    stopping = true;
    socket.close();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  console.log(`Echo UDP listening on port ${(socket.addr as Deno.NetAddr).port}`);
  const buffer = new Uint8Array(RECEIVE_BUFFER_BYTES);
  let echoed = 0;
  while (!stopping) {
    let received: [Uint8Array, Deno.Addr];
    try {
      received = await socket.receive(buffer);
    } catch (error) {
      if (stopping || error instanceof Deno.errors.BadResource) break;
      // ICMP errors from earlier sends: the socket itself is fine.
      if (error instanceof Deno.errors.ConnectionRefused) continue;
      if (error instanceof Deno.errors.ConnectionReset) continue;
      throw error;
    }
    const [data, from] = received;
    // Copy, as the Switchboard server does, then send without waiting, as it does.
    socket.send(data.slice(), from).catch(() => {});
    echoed++;
  }
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  console.log(`Echo server stopped after ${echoed} datagrams`);
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
