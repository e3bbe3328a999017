/**
 * The baselines of the transfer benchmark, as separate processes so that
 * they run like the two clients do:
 *
 * - `udp-receive` / `udp-send`: a bare UDP blast, datagrams of one size sent
 *   as fast as `Deno.DatagramConn.send` goes, counted by the receiver (the
 *   ceiling of any reliable protocol on Deno's UDP);
 * - `tcp-receive` / `tcp-send`: a file over one plain TCP connection,
 *   written to disk by the receiver.
 *
 * Receivers print `PORT n` once listening, then one JSON line with what
 * arrived: `{ "bytes": …, "datagrams": …, "ms": … }`, timed from the first
 * byte to the last.
 *
 * Usage:
 *   deno run --allow-net --allow-read --allow-write scripts/transfer_baselines.ts udp-receive
 *   deno run ... scripts/transfer_baselines.ts udp-send PORT COUNT SIZE
 *   deno run ... scripts/transfer_baselines.ts tcp-receive OUT_FILE
 *   deno run ... scripts/transfer_baselines.ts tcp-send PORT FILE
 *
 * @module
 */

const HOST = "127.0.0.1";
/** The UDP receiver stops this long after the last datagram, ms. */
const UDP_IDLE_MS = 1000;

async function udpReceive(): Promise<void> {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: HOST, port: 0 });
  console.log(`PORT ${(socket.addr as Deno.NetAddr).port}`);
  const buffer = new Uint8Array(65536);
  let datagrams = 0, bytes = 0, first = 0, last = 0;
  let idle: ReturnType<typeof setTimeout> | undefined;
  while (true) {
    let received: [Uint8Array, Deno.Addr];
    try {
      received = await socket.receive(buffer);
    } catch {
      break;
    }
    const now = performance.now();
    if (datagrams === 0) first = now;
    last = now;
    datagrams++;
    bytes += received[0].length;
    clearTimeout(idle);
    idle = setTimeout(() => socket.close(), UDP_IDLE_MS);
  }
  console.log(JSON.stringify({ datagrams, bytes, ms: last - first }));
}

async function udpSend(port: number, count: number, size: number): Promise<void> {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: HOST, port: 0 });
  const data = new Uint8Array(size);
  const to = { transport: "udp" as const, hostname: HOST, port };
  for (let i = 0; i < count; i++) await socket.send(data, to);
  socket.close();
}

async function tcpReceive(out: string): Promise<void> {
  const listener = Deno.listen({ hostname: HOST, port: 0 });
  console.log(`PORT ${(listener.addr as Deno.NetAddr).port}`);
  const conn = await listener.accept();
  listener.close();
  const file = await Deno.open(out, { write: true, create: true, truncate: true });
  let bytes = 0, first = 0;
  for await (const chunk of conn.readable) {
    if (bytes === 0) first = performance.now();
    bytes += chunk.length;
    let written = 0;
    while (written < chunk.length) written += await file.write(chunk.subarray(written));
  }
  const last = performance.now();
  file.close();
  console.log(JSON.stringify({ bytes, ms: last - first }));
}

async function tcpSend(port: number, path: string): Promise<void> {
  const conn = await Deno.connect({ hostname: HOST, port });
  const file = await Deno.open(path);
  await file.readable.pipeTo(conn.writable);
}

async function main(args: string[]): Promise<number> {
  const [role, ...rest] = args;
  switch (role) {
    case "udp-receive":
      await udpReceive();
      return 0;
    case "udp-send":
      await udpSend(Number(rest[0]), Number(rest[1]), Number(rest[2]));
      return 0;
    case "tcp-receive":
      await tcpReceive(rest[0]);
      return 0;
    case "tcp-send":
      await tcpSend(Number(rest[0]), rest[1]);
      return 0;
    default:
      console.error(`error: unknown role "${role}"; see the usage at the top of this file`);
      return 2;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
