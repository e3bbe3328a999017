/**
 * The baselines of the transfer benchmark, as separate processes so that
 * they run like the two clients do:
 *
 * - `udp-receive` / `udp-send`: a bare UDP blast, datagrams of one size sent
 *   as fast as `Deno.DatagramConn.send` goes, counted by the receiver (the
 *   ceiling of any reliable protocol on Deno's UDP);
 * - `tcp-receive` / `tcp-send`: a file over one plain TCP connection,
 *   written to disk by the receiver;
 * - `window-receive` / `window-send`: the least a reliable protocol does, a
 *   fixed window of numbered datagrams, acked cumulatively every few, resent
 *   from the first unacked one after 20 ms without progress (go-back-N),
 *   with a busy wait of a given number of microseconds per datagram on both
 *   sides standing for the protocol's own work. It shows how much of the
 *   blast a windowed protocol keeps for a given cost per datagram.
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
 *   deno run ... scripts/transfer_baselines.ts window-receive WORK_US ACK_EVERY
 *   deno run ... scripts/transfer_baselines.ts window-send PORT COUNT SIZE WINDOW WORK_US
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

/** The sequence number that ends a windowed run. */
const END_SEQ = 0xffffffff;
/** The windowed sender resends from the first unacked datagram after this long without progress, ms. */
const WINDOW_RESEND_MS = 20;
/** The windowed sender gives up after this long without an ack that moves, ms. */
const WINDOW_GIVE_UP_MS = 10_000;
/** The windowed receiver acks at most this long after a datagram, ms. */
const WINDOW_ACK_DELAY_MS = 1;

/** Stands for the protocol's work on one datagram: a busy wait of `us` microseconds. */
function work(us: number): void {
  if (us <= 0) return;
  const until = performance.now() + us / 1000;
  while (performance.now() < until) {
    // Busy: the time a protocol would spend on the datagram.
  }
}

async function windowReceive(workUs: number, ackEvery: number): Promise<void> {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: HOST, port: 0 });
  console.log(`PORT ${(socket.addr as Deno.NetAddr).port}`);
  const buffer = new Uint8Array(65536);
  let next = 0, bytes = 0, first = 0, unacked = 0;
  let peer: Deno.NetAddr | undefined;
  let ackTimer: ReturnType<typeof setTimeout> | undefined;
  const ack = () => {
    clearTimeout(ackTimer);
    ackTimer = undefined;
    unacked = 0;
    const datagram = new Uint8Array(4);
    new DataView(datagram.buffer).setUint32(0, next);
    socket.send(datagram, peer!).catch(() => {});
  };
  let idle: ReturnType<typeof setTimeout> | undefined;
  while (true) {
    clearTimeout(idle);
    idle = setTimeout(() => socket.close(), UDP_IDLE_MS * 2);
    let received: [Uint8Array, Deno.Addr];
    try {
      received = await socket.receive(buffer);
    } catch {
      break; // Closed when the sender went quiet.
    }
    const [data, from] = received;
    peer = from as Deno.NetAddr;
    const seq = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0);
    if (seq === END_SEQ) break;
    if (next === 0 && bytes === 0) first = performance.now();
    work(workUs);
    if (seq === next) {
      next++;
      bytes += data.length;
    }
    if (++unacked >= ackEvery) ack();
    else ackTimer ??= setTimeout(ack, WINDOW_ACK_DELAY_MS);
  }
  const ms = performance.now() - first;
  clearTimeout(ackTimer);
  clearTimeout(idle);
  try {
    socket.close();
  } catch {
    // Already closed.
  }
  console.log(JSON.stringify({ datagrams: next, bytes, ms }));
}

async function windowSend(
  port: number,
  count: number,
  size: number,
  window: number,
  workUs: number,
): Promise<void> {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: HOST, port: 0 });
  const to = { transport: "udp" as const, hostname: HOST, port };
  let acked = 0, sent = 0, progressAt = performance.now(), movedAt = progressAt;
  let wake: (() => void) | undefined;
  const acks = (async () => {
    const buffer = new Uint8Array(64);
    try {
      while (true) {
        const [data] = await socket.receive(buffer);
        const upTo = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0);
        if (upTo > acked) {
          acked = upTo;
          progressAt = movedAt = performance.now();
        }
        wake?.();
      }
    } catch {
      // Closed: the run is over.
    }
  })();
  while (acked < count) {
    while (sent < count && sent - acked < window) {
      work(workUs);
      // A fresh array each time: Deno may read it after send() returns.
      const datagram = new Uint8Array(size);
      new DataView(datagram.buffer).setUint32(0, sent++);
      socket.send(datagram, to).catch(() => {});
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, WINDOW_RESEND_MS);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    wake = undefined;
    if (performance.now() - movedAt >= WINDOW_GIVE_UP_MS) {
      socket.close();
      throw new Error(`no ack moved for ${WINDOW_GIVE_UP_MS} ms: the receiver is gone`);
    }
    if (performance.now() - progressAt >= WINDOW_RESEND_MS) {
      sent = acked;
      progressAt = performance.now();
    }
  }
  const end = new Uint8Array(size);
  new DataView(end.buffer).setUint32(0, END_SEQ);
  for (let i = 0; i < 3; i++) await socket.send(end, to);
  socket.close();
  await acks;
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
    case "window-receive":
      await windowReceive(Number(rest[0]), Number(rest[1]));
      return 0;
    case "window-send": {
      const [port, count, size, window, workUs] = rest.map(Number);
      try {
        await windowSend(port, count, size, window, workUs);
      } catch (error) {
        console.error(`error: ${(error as Error).message}`);
        return 1;
      }
      return 0;
    }
    default:
      console.error(`error: unknown role "${role}"; see the usage at the top of this file`);
      return 2;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
