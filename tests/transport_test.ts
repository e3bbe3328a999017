import { assert, assertEquals, assertRejects } from "@std/assert";
import { encodeFrame } from "../lib/wire/frame_decoder.ts";
import { FramedConnection } from "../lib/io/framed_connection.ts";
import { type Datagram, UdpSocket } from "../lib/io/udp_socket.ts";
import { MAX_DATAGRAM_BYTES, MAX_FRAME_BYTES } from "../lib/wire/messages.ts";
import { ProtocolError } from "../lib/wire/protocol_error.ts";

/** What `receiveEach` handed over so far (data copied), and a way to wait for more. */
class Inbox {
  readonly datagrams: Datagram[] = [];
  readonly done: Promise<void>;
  #wake: (() => void) | undefined;

  constructor(socket: UdpSocket) {
    this.done = socket.receiveEach((datagram) => {
      this.datagrams.push({ ...datagram, data: datagram.data.slice() });
      this.#wake?.();
    });
  }

  /** The datagram at `index`, waiting for it if it has not come yet. */
  async at(index: number): Promise<Datagram> {
    while (this.datagrams.length <= index) {
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    return this.datagrams[index];
  }
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

for (const hostname of ["127.0.0.1", "::1"]) {
  Deno.test(`UdpSocket sends and receives datagrams on ${hostname}`, async () => {
    const a = UdpSocket.open({ hostname, port: 0 });
    const b = UdpSocket.open({ hostname, port: 0 });
    try {
      assert(a.localPort > 0 && a.localPort !== b.localPort);
      const inbox = new Inbox(b);
      const payload = new Uint8Array(MAX_DATAGRAM_BYTES).fill(7);
      assertEquals(await a.send(payload, hostname, b.localPort), true);
      assertEquals(await inbox.at(0), { data: payload, address: hostname, port: a.localPort });
      assertEquals(await a.send(Uint8Array.of(1, 2), hostname, b.localPort), true);
      assertEquals((await inbox.at(1)).data, Uint8Array.of(1, 2));
      b.close();
      await inbox.done;
      assertEquals(inbox.datagrams.length, 2);
    } finally {
      a.close();
      b.close();
    }
  });
}

Deno.test("UdpSocket.receiveEach() settles when the socket is closed while waiting", async () => {
  const socket = UdpSocket.open({ hostname: "127.0.0.1", port: 0 });
  const inbox = new Inbox(socket);
  await new Promise((resolve) => setTimeout(resolve, 10));
  socket.close();
  await inbox.done;
  assertEquals(inbox.datagrams, []);
});

Deno.test("UdpSocket.receiveEach() hands over a datagram larger than MAX_DATAGRAM_BYTES", async () => {
  const socket = UdpSocket.open({ hostname: "127.0.0.1", port: 0 });
  const raw = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    const inbox = new Inbox(socket);
    const payload = new Uint8Array(5000).fill(9);
    await raw.send(payload, { transport: "udp", hostname: "127.0.0.1", port: socket.localPort });
    assertEquals((await inbox.at(0)).data, payload);
    socket.close();
    await inbox.done;
  } finally {
    socket.close();
    raw.close();
  }
});

Deno.test("UdpSocket.send() goes to each destination in turn, not only the first", async () => {
  const a = UdpSocket.open({ hostname: "127.0.0.1", port: 0 });
  const b = UdpSocket.open({ hostname: "127.0.0.1", port: 0 });
  const c = UdpSocket.open({ hostname: "127.0.0.1", port: 0 });
  try {
    const atB = new Inbox(b), atC = new Inbox(c);
    for (const [to, byte] of [[b, 1], [c, 2], [b, 3], [c, 4]] as const) {
      assertEquals(await a.send(Uint8Array.of(byte), "127.0.0.1", to.localPort), true);
    }
    assertEquals([(await atB.at(0)).data[0], (await atB.at(1)).data[0]], [1, 3]);
    assertEquals([(await atC.at(0)).data[0], (await atC.at(1)).data[0]], [2, 4]);
  } finally {
    a.close();
    b.close();
    c.close();
  }
});

Deno.test("UdpSocket.send() rejects an oversized datagram or a bad port", async () => {
  const socket = UdpSocket.open({ hostname: "127.0.0.1", port: 0 });
  try {
    await assertRejects(
      () => socket.send(new Uint8Array(MAX_DATAGRAM_BYTES + 1), "127.0.0.1", socket.localPort),
      RangeError,
      "1201",
    );
    await assertRejects(() => socket.send(Uint8Array.of(1), "127.0.0.1", 0), RangeError);
  } finally {
    socket.close();
  }
});

Deno.test("UdpSocket.send() resolves false when it cannot send", async () => {
  const socket = UdpSocket.open({ hostname: "127.0.0.1", port: 0 });
  // An IPv6 destination from an IPv4 socket: the system refuses it.
  assertEquals(await socket.send(Uint8Array.of(1), "::1", 9), false);
  socket.close();
  socket.close();
  assertEquals(await socket.send(Uint8Array.of(1), "127.0.0.1", 9), false);
});

/** Opens a loopback TCP pair: a raw client conn and the server side, framed. */
async function tcpPair(): Promise<{ client: Deno.TcpConn; server: FramedConnection }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const [client, accepted] = await Promise.all([
      Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
      listener.accept(),
    ]);
    return { client, server: new FramedConnection(accepted) };
  } finally {
    listener.close();
  }
}

Deno.test("FramedConnection.frames() reads frames written one byte at a time", async () => {
  const { client, server } = await tcpPair();
  try {
    assertEquals(server.remoteAddr, {
      hostname: "127.0.0.1",
      port: (client.localAddr as Deno.NetAddr).port,
    });
    const bodies = [Uint8Array.of(1, 2, 3), new Uint8Array(1000).fill(5), Uint8Array.of(4)];
    client.setNoDelay(true);
    const received = collect(server.frames());
    for (const byte of bodies.flatMap((body) => [...encodeFrame(body)])) {
      await client.write(Uint8Array.of(byte));
    }
    client.close();
    assertEquals(await received, bodies);
  } finally {
    server.close();
  }
});

Deno.test("FramedConnection.frames() reads back-to-back frames from one write", async () => {
  const { client, server } = await tcpPair();
  try {
    const bodies = Array.from({ length: 100 }, (_, i) => new Uint8Array(i + 1).fill(i));
    const stream = new Uint8Array(bodies.reduce((sum, body) => sum + body.length + 4, 0));
    let offset = 0;
    for (const body of bodies) {
      stream.set(encodeFrame(body), offset);
      offset += body.length + 4;
    }
    const received = collect(server.frames());
    await client.write(stream);
    client.close();
    assertEquals(await received, bodies);
  } finally {
    server.close();
  }
});

Deno.test("FramedConnection.write() never interleaves concurrent frames", async () => {
  const { client, server } = await tcpPair();
  const sender = new FramedConnection(client);
  try {
    const bodies = Array.from(
      { length: 20 },
      (_, i) => new Uint8Array(i % 2 === 0 ? MAX_FRAME_BYTES : 10).fill(i),
    );
    const received = collect(server.frames());
    await Promise.all(bodies.map((body) => sender.write(body)));
    sender.close();
    assertEquals(await received, bodies);
    await assertRejects(() => sender.write(Uint8Array.of(1)), Deno.errors.BadResource);
    await assertRejects(() => sender.write(new Uint8Array(0)), RangeError);
  } finally {
    sender.close();
    server.close();
  }
});

Deno.test("FramedConnection.frames() throws ProtocolError on an oversized frame", async () => {
  const { client, server } = await tcpPair();
  try {
    const header = new Uint8Array(4);
    new DataView(header.buffer).setUint32(0, MAX_FRAME_BYTES + 1);
    const received = collect(server.frames());
    await client.write(header);
    const error = await assertRejects(() => received, ProtocolError);
    assertEquals(error.code, "too_large");
  } finally {
    client.close();
    server.close();
  }
});

Deno.test("FramedConnection.frames() throws ProtocolError on a truncated frame", async () => {
  const { client, server } = await tcpPair();
  try {
    const received = collect(server.frames());
    await client.write(encodeFrame(Uint8Array.of(1, 2, 3)).subarray(0, 5));
    client.close();
    const error = await assertRejects(() => received, ProtocolError);
    assertEquals(error.code, "truncated");
  } finally {
    server.close();
  }
});

Deno.test("FramedConnection.close() ends frames() and is idempotent", async () => {
  const { client, server } = await tcpPair();
  try {
    const received = collect(server.frames());
    await new Promise((resolve) => setTimeout(resolve, 10));
    server.close();
    server.close();
    assertEquals(await received, []);
  } finally {
    client.close();
  }
});
