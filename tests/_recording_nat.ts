/**
 * A recording NAT for tests on loopback: one host behind it, every datagram
 * kept, and those from peers optionally altered on their way in.
 *
 * @module
 */

const HOST = "127.0.0.1";

/**
 * A full-cone NAT with one host behind it, on loopback: the world reaches
 * the host at `outside`; each remote port has an inside socket of its own,
 * from which the host sees that remote. Every datagram is kept.
 */
export class RecordingNat {
  /**
   * Every datagram that crossed, with whether it came from or went to a peer
   * (not the server), and whether it went to the host.
   */
  readonly datagrams: { peer: boolean; toHost: boolean; bytes: Uint8Array }[] = [];
  readonly outside: Deno.DatagramConn;
  /** Changes a datagram from a peer on its way to the host, if set. */
  tamper: ((bytes: Uint8Array) => Uint8Array[]) | undefined;
  #server: number;
  #inside = new Map<number, Deno.DatagramConn>();
  #host: Deno.NetAddr | undefined;
  #loops: Promise<void>[] = [];

  constructor(serverPort: number) {
    this.#server = serverPort;
    this.outside = Deno.listenDatagram({ transport: "udp", hostname: HOST, port: 0 });
    this.#loops.push(this.#fromOutside());
  }

  /** The port the world reaches the host at. */
  get port(): number {
    return (this.outside.addr as Deno.NetAddr).port;
  }

  /** The port the host sends to, to reach `remotePort` through the NAT. */
  insidePort(remotePort: number): number {
    return (this.#insideFor(remotePort).addr as Deno.NetAddr).port;
  }

  #insideFor(remotePort: number): Deno.DatagramConn {
    let socket = this.#inside.get(remotePort);
    if (socket !== undefined) return socket;
    socket = Deno.listenDatagram({ transport: "udp", hostname: HOST, port: 0 });
    this.#inside.set(remotePort, socket);
    const conn = socket;
    this.#loops.push((async () => {
      try {
        for await (const [data, from] of conn) {
          this.#host = from as Deno.NetAddr;
          this.datagrams.push({
            peer: remotePort !== this.#server,
            toHost: false,
            bytes: data.slice(),
          });
          await this.outside.send(data, { transport: "udp", hostname: HOST, port: remotePort });
        }
      } catch {
        // closed
      }
    })());
    return socket;
  }

  async #fromOutside(): Promise<void> {
    try {
      for await (const [data, from] of this.outside) {
        const port = (from as Deno.NetAddr).port;
        const bytes = data.slice();
        const peer = port !== this.#server;
        this.datagrams.push({ peer, toHost: true, bytes });
        const host = this.#host;
        if (host === undefined) continue;
        const inside = this.#insideFor(port);
        for (const out of (peer ? this.tamper?.(bytes) : undefined) ?? [bytes]) {
          await inside.send(out, host);
        }
      }
    } catch {
      // closed
    }
  }

  /** The peer datagrams, as one array. */
  peerBytes(): Uint8Array {
    return Uint8Array.from(this.datagrams.filter((d) => d.peer).flatMap((d) => [...d.bytes]));
  }

  async close(): Promise<void> {
    this.outside.close();
    for (const socket of this.#inside.values()) socket.close();
    await Promise.all(this.#loops);
  }
}
