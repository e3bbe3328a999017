/**
 * Protocol version 3 on real sockets, seen from the path: a small recording
 * proxy between a real client and a real server keeps every datagram and
 * every TCP byte, and none of them holds a token, an identity key, a
 * password, a name, a custom message or a stored file's bytes. The same
 * proxy then turns man-in-the-middle: a server with its own key behind it is
 * refused by a client that pinned the real one, and tampered or replayed
 * datagrams change nothing on the server.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { ServerDriver } from "../lib/io/server_driver.ts";
import { saveUsers, UsersFile } from "../lib/io/users_file.ts";
import { hashPassword } from "../lib/server/password_hash.ts";
import { fingerprint } from "../lib/crypto/fingerprint.ts";
import { MESSAGE_SCHEMAS } from "../lib/wire/messages.ts";
import { loadIdentities } from "../lib/io/identity_file.ts";

const HOST = "127.0.0.1";
const FAST_RETRY = { initialMs: 100, maxMs: 400, jitter: 0.2, giveUpMs: 5000 };

/** Relays UDP and TCP between clients and a server, keeping a copy of every byte. */
class RecordingProxy {
  readonly datagrams: Uint8Array[] = [];
  readonly streams: number[][] = [];
  readonly udp: Deno.DatagramConn;
  readonly tcp: Deno.TcpListener;
  /** Changes a datagram on its way to the server, if set. */
  tamper: ((bytes: Uint8Array) => Uint8Array[]) | undefined;
  #server: { udp: number; tcp: number };
  #client: Deno.NetAddr | undefined;
  #loops: Promise<unknown>[] = [];
  #conns = new Set<Deno.Conn>();

  constructor(server: { udp: number; tcp: number }) {
    this.#server = server;
    this.udp = Deno.listenDatagram({ transport: "udp", hostname: HOST, port: 0 });
    this.tcp = Deno.listen({ hostname: HOST, port: 0 });
    this.#loops.push(this.#relayUdp(), this.#acceptTcp());
  }

  get udpPort(): number {
    return (this.udp.addr as Deno.NetAddr).port;
  }

  async #relayUdp(): Promise<void> {
    const serverAddr: Deno.NetAddr = { transport: "udp", hostname: HOST, port: this.#server.udp };
    try {
      for await (const [data, from] of this.udp) {
        const bytes = data.slice();
        this.datagrams.push(bytes);
        const addr = from as Deno.NetAddr;
        if (addr.port === this.#server.udp) {
          if (this.#client !== undefined) await this.udp.send(this.#rewrite(bytes), this.#client);
        } else {
          this.#client = addr;
          for (const out of this.tamper?.(bytes) ?? [bytes]) await this.udp.send(out, serverAddr);
        }
      }
    } catch {
      // closed
    }
  }

  /** The clear hello_ok names the server's TCP port: the proxy puts its own there. */
  #rewrite(bytes: Uint8Array): Uint8Array {
    if (bytes[2] !== 3 || bytes[3] !== MESSAGE_SCHEMAS.hello_ok.code) return bytes;
    const copy = bytes.slice();
    new DataView(copy.buffer).setUint16(8, (this.tcp.addr as Deno.NetAddr).port);
    return copy;
  }

  async #acceptTcp(): Promise<void> {
    try {
      for await (const inbound of this.tcp) {
        const outbound = await Deno.connect({ hostname: HOST, port: this.#server.tcp });
        this.#conns.add(inbound).add(outbound);
        const up: number[] = [], down: number[] = [];
        this.streams.push(up, down);
        this.#loops.push(this.#pipe(inbound, outbound, up), this.#pipe(outbound, inbound, down));
      }
    } catch {
      // closed
    }
  }

  async #pipe(from: Deno.Conn, to: Deno.Conn, record: number[]): Promise<void> {
    const buffer = new Uint8Array(65_536);
    try {
      while (true) {
        const n = await from.read(buffer);
        if (n === null) break;
        for (let i = 0; i < n; i++) record.push(buffer[i]);
        for (let at = 0; at < n;) at += await to.write(buffer.subarray(at, n));
      }
    } catch {
      // either side closed
    }
    for (const conn of [from, to]) {
      try {
        conn.close();
      } catch {
        // already closed
      }
      this.#conns.delete(conn);
    }
  }

  /** Every byte that crossed, as one array. */
  everything(): Uint8Array {
    const all = [...this.datagrams.flatMap((d) => [...d]), ...this.streams.flat()];
    return Uint8Array.from(all);
  }

  async close(): Promise<void> {
    this.udp.close();
    this.tcp.close();
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
    await Promise.all(this.#loops);
  }
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

const text = (s: string) => new TextEncoder().encode(s);

/** The pin file's text, once the client has written it (within 5 s). */
async function pinFile(path: string): Promise<string> {
  const until = performance.now() + 5000;
  while (true) {
    try {
      return await Deno.readTextFile(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound) || performance.now() > until) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

Deno.test("a captured session holds no token, key, password, name, message or file bytes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_capture_" });
  const password = "correct horse battery staple";
  const users = new UsersFile([{
    name: "Pat Password",
    passwordHash: await hashPassword(password, { iterations: 1000 }),
    createdAt: new Date(0).toISOString(),
  }]);
  await saveUsers(join(dir, "users.json"), users);
  const open = await ServerDriver.start({
    host: HOST,
    udpPort: 0,
    tcpPort: 0,
    dataDir: join(dir, "open"),
    version: "0.0.0-test",
  });
  const locked = await ServerDriver.start({
    host: HOST,
    udpPort: 0,
    tcpPort: 0,
    dataDir: join(dir, "password"),
    version: "0.0.0-test",
    auth: "password",
    usersFile: join(dir, "users.json"),
  });
  const proxies = [
    new RecordingProxy({ udp: open.udpPort, tcp: open.tcpPort }),
    new RecordingProxy({ udp: locked.udpPort, tcp: locked.tcpPort }),
  ];
  const secrets: Uint8Array[] = [text(password)];
  const content = crypto.getRandomValues(new Uint8Array(5000));
  const file = join(dir, "secret.bin");
  await Deno.writeFile(file, content);
  secrets.push(content.subarray(1000, 1032));
  const clients: ClientDriver[] = [];
  try {
    // Open mode: register (the identity key comes back), log out, log in with it,
    // list, a custom message, an upload and its download.
    const alice = await ClientDriver.open({
      serverHost: HOST,
      serverPort: proxies[0].udpPort,
      udpPort: 0,
      tcpPort: 5001,
      name: "Alice Secret",
      via: "udp",
      retry: FAST_RETRY,
      identityFile: join(dir, "alice", "identities.json"),
      knownServersFile: join(dir, "alice", "known_servers.json"),
      downloadDir: join(dir, "downloads"),
    });
    clients.push(alice);
    const ok = async (result: Promise<{ ok: boolean }>) => {
      const done = await result;
      assert(done.ok, JSON.stringify(done));
      return done;
    };
    await ok(alice.run({ kind: "hello" }));
    await ok(alice.run({ kind: "register" }));
    const [saved] = await loadIdentities(join(dir, "alice", "identities.json"));
    await ok(alice.run({ kind: "logout" }));
    // Open mode's login is the handshake with the client's key pair: no secret is sent.
    await ok(alice.run({ kind: "login", name: saved.name, secret: new Uint8Array(0) }));
    await ok(alice.run({ kind: "list" } as never));
    await ok(alice.run({ kind: "tcp", text: "the eagle lands at midnight" }));
    await ok(alice.upload(file, "secret.bin"));
    await ok(alice.download("secret.bin", join(dir, "got.bin")));
    assertEquals(await Deno.readFile(join(dir, "got.bin")), content);
    secrets.push(text("Alice Secret"), text("the eagle lands at midnight"));
    const session = open.core.sessions.byName("Alice Secret")!;
    secrets.push(session.token);
    // The pin was saved beside the identity file, once the handshake succeeded.
    const pins = await pinFile(join(dir, "alice", "known_servers.json"));
    assertStringIncludes(
      pins,
      [...open.publicKey].map((b) => b.toString(16).padStart(2, "0")).join(""),
    );

    // Password mode: the password goes only inside the channel.
    const pat = await ClientDriver.open({
      serverHost: HOST,
      serverPort: proxies[1].udpPort,
      udpPort: 0,
      tcpPort: 5001,
      via: "udp",
      retry: FAST_RETRY,
      serverKey: locked.fingerprint,
    });
    clients.push(pat);
    await ok(pat.run({ kind: "hello" }));
    await ok(pat.run({ kind: "login", name: "Pat Password", secret: text(password) }));
    await ok(pat.run({ kind: "list" } as never));
    secrets.push(locked.core.sessions.byName("Pat Password")!.token, text("Pat Password"));

    assert(proxies[0].datagrams.length > 5 && proxies[0].streams.length > 0, "open: UDP and TCP");
    assert(proxies[1].datagrams.length > 3, "password: UDP");
    const seen = Uint8Array.from([...proxies[0].everything(), ...proxies[1].everything()]);
    for (const secret of secrets) {
      assert(!contains(seen, secret), `the capture holds ${new TextDecoder().decode(secret)}`);
    }
  } finally {
    for (const client of clients) await client.close();
    for (const proxy of proxies) await proxy.close();
    await open.close();
    await locked.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a man-in-the-middle with its own server key is refused; tampering and replays change nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_mitm_" });
  const real = await ServerDriver.start({
    host: HOST,
    udpPort: 0,
    tcpPort: 0,
    dataDir: join(dir, "real"),
    version: "0.0.0-test",
  });
  const impostor = await ServerDriver.start({
    host: HOST,
    udpPort: 0,
    tcpPort: 0,
    dataDir: join(dir, "impostor"),
    version: "0.0.0-test",
  });
  const proxy = new RecordingProxy({ udp: impostor.udpPort, tcp: impostor.tcpPort });
  const clients: ClientDriver[] = [];
  try {
    // Pinned by fingerprint: the impostor's key is refused in one line, and nothing else is sent.
    const pinned = await ClientDriver.open({
      serverHost: HOST,
      serverPort: proxy.udpPort,
      udpPort: 0,
      tcpPort: 5001,
      name: "Wary Wendy",
      via: "udp",
      retry: FAST_RETRY,
      serverKey: real.fingerprint,
    });
    clients.push(pinned);
    const hello = await pinned.run({ kind: "hello" });
    assert(!hello.ok);
    assertStringIncludes(
      hello.ok ? "" : hello.error,
      `The key of ${HOST}:${proxy.udpPort} is ${impostor.fingerprint}, not ${real.fingerprint}`,
    );
    const register = await pinned.run({ kind: "register" });
    assert(!register.ok);
    assertEquals(impostor.core.registry.size, 0);
    assertEquals(proxy.datagrams.filter((d) => d[3] >= 0x80).length, 0, "no handshake, no data");

    // Pinned on first use: the real server's key is saved; the impostor later is refused.
    const pins = join(dir, "known_servers.json");
    const first = await ClientDriver.open({
      serverHost: HOST,
      serverPort: real.udpPort,
      udpPort: 0,
      tcpPort: 5001,
      via: "udp",
      retry: FAST_RETRY,
      knownServersFile: pins,
    });
    clients.push(first);
    assert((await first.run({ kind: "hello" })).ok);
    assert((await first.run({ kind: "register", name: "Trusting Tom" })).ok);
    // The pin is written once the first handshake succeeded, beside the work.
    const text = await pinFile(pins);
    const server = `${HOST}:${real.udpPort}`;
    // The same host and port now answered by the impostor (as if the proxy sat there).
    await Deno.writeTextFile(pins, text.replace(server, `${HOST}:${proxy.udpPort}`));
    const later = await ClientDriver.open({
      serverHost: HOST,
      serverPort: proxy.udpPort,
      udpPort: 0,
      tcpPort: 5001,
      via: "udp",
      retry: FAST_RETRY,
      knownServersFile: pins,
    });
    clients.push(later);
    const refused = await later.run({ kind: "hello" });
    assert(!refused.ok);
    assertStringIncludes(
      refused.ok ? "" : refused.error,
      `has changed (pinned ${fingerprint(real.publicKey)}, now ${impostor.fingerprint})`,
    );
  } finally {
    for (const client of clients) await client.close();
    await proxy.close();
    await real.close();
    await impostor.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bit-flipped, truncated and replayed datagrams on the path change nothing on the server", async () => {
  const dir = await Deno.makeTempDir({ prefix: "switchboard_tamper_" });
  const server = await ServerDriver.start({
    host: HOST,
    udpPort: 0,
    tcpPort: 0,
    dataDir: join(dir, "server"),
    version: "0.0.0-test",
  });
  const proxy = new RecordingProxy({ udp: server.udpPort, tcp: server.tcpPort });
  const client = await ClientDriver.open({
    serverHost: HOST,
    serverPort: proxy.udpPort,
    udpPort: 0,
    tcpPort: 5001,
    name: "Tess Tamper",
    via: "udp",
    retry: FAST_RETRY,
  });
  try {
    assert((await client.run({ kind: "hello" })).ok);
    // Every sealed datagram reaches the server four times: flipped, cut short, whole, and again.
    let forged = 0;
    proxy.tamper = (bytes) => {
      if (bytes[3] !== 0x84) return [bytes];
      forged += 3;
      const flipped = bytes.slice();
      flipped[20 + (forged % (bytes.length - 20))] ^= 0x40;
      return [flipped, bytes.subarray(0, bytes.length - 1), bytes, bytes];
    };
    assert((await client.run({ kind: "register" })).ok);
    assert((await client.run({ kind: "list" } as never)).ok);
    assert((await client.run({ kind: "list" } as never)).ok);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert(forged >= 9, `${forged} forged`);
    // Registered once, each message delivered once, and nothing answered the forgeries.
    assertEquals(server.core.registry.size, 1);
    const rejected = server.traffic.rejected;
    assert(rejected >= forged, `${rejected} rejected, ${forged} forged`);
  } finally {
    await client.close();
    await proxy.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
