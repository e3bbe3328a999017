/**
 * Impersonation on real sockets: requests crafted with the codec that name
 * another client, or carry a wrong, short or missing token, change nothing,
 * whether they come from another address (127.0.0.2) or from the victim's own
 * IP address. The core tests (tests/server_core_test.ts) check the same rules
 * one handler at a time; this checks them through the driver, over UDP and
 * TCP, for every request that a session token guards. Each forger has a
 * secure channel of its own (version 3): the channel proves nothing about
 * who it speaks for.
 */
import { assert, assertEquals } from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { ServerDriver } from "../lib/io/server_driver.ts";
import type { ServerEvent } from "../lib/server/server_core.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import type { Message } from "../lib/wire/messages.ts";
import { withTimeout } from "./_processes.ts";
import { SealedStream, SealedUdp } from "./_sealed_wire.ts";

const HOST = "127.0.0.1";

/** One UDP endpoint that sends sealed requests and collects everything sent to it. */
const Peer = SealedUdp;

/** A sealed TCP connection of its own, whose handshake runs with the key `peer` learned. */
async function openStream(port: number, peer: SealedUdp): Promise<SealedStream> {
  return await SealedStream.open(port, peer.tcpChannel());
}

/** The next message on a stream, which must come. */
async function next(stream: SealedStream, what: string): Promise<Message> {
  const message = await withTimeout(stream.read(), 10_000, what);
  if (message === undefined) throw new Error(`the connection closed before ${what}`);
  return message;
}

function assertRefused(reply: Message, code: keyof typeof ERROR_CODES, what: string): void {
  assertEquals(reply.type, "error", `${what}: ${JSON.stringify(reply)}`);
  if (reply.type === "error") {
    assertEquals(reply.code, ERROR_CODES[code], `${what}: ${reply.message}`);
  }
}

Deno.test("forged requests naming another client change nothing, over UDP and TCP", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "switchboard_spoof_" });
  const events: ServerEvent[] = [];
  const server = await ServerDriver.start({
    host: HOST,
    udpPort: 0,
    tcpPort: 0,
    dataDir,
    version: "0.0.0-test",
    onEvent: (event) => events.push(event),
  });
  const victim = new Peer(HOST, server.udpPort);
  const outsider = new Peer("127.0.0.2", server.udpPort);
  const neighbour = new Peer(HOST, server.udpPort); // same IP address, another port
  const streams: SealedStream[] = [];
  try {
    // Victor registers, watches, and stores a file.
    const client = "1111111111111111";
    const registered = await victim.ask({
      type: "register",
      reqId: 1,
      client,
      name: "Victor",
      udpPort: 0,
      tcpPort: 5001,
    });
    if (registered.type !== "register_ok") throw new Error(JSON.stringify(registered));
    const { token } = registered;
    assertEquals(
      (await victim.ask({ type: "watch", reqId: 2, client, token, on: 1 })).type,
      "watch_ok",
    );
    const own = await openStream(server.tcpPort, victim);
    streams.push(own);
    const content = new TextEncoder().encode("Victor's data\n");
    await own.write({
      type: "upload",
      reqId: 3,
      client,
      token,
      name: "notes.txt",
      size: content.length,
      sha256: sha256(content),
    });
    await own.write({ type: "file_chunk", reqId: 3, data: content });
    assertEquals((await next(own, "upload_ok")).type, "upload_ok");
    assertEquals(
      (await victim.ask({ type: "heartbeat", reqId: 4, client, token })).type,
      "heartbeat_ok",
    );

    const registryBefore = await Deno.readTextFile(`${dataDir}/registrations.json`);
    const session = server.core.sessions.byName("Victor")!;
    const leaseBefore = session.leaseUntil;
    const eventsBefore = events.length;

    // The forgeries: every guarded request, with a wrong, a short and an empty token.
    const wrong = token.slice();
    wrong[15] ^= 0x01;
    const forgedTokens = [wrong, token.slice(0, 8), new Uint8Array(0)];
    let reqId = 100;
    for (const from of [outsider, neighbour]) {
      for (const forged of forgedTokens) {
        const attacker = "2222222222222222";
        const udp: (Message & { reqId: number })[] = [
          { type: "deregister", reqId: reqId++, client: attacker, token: forged },
          { type: "logout", reqId: reqId++, client: attacker, token: forged },
          { type: "heartbeat", reqId: reqId++, client: attacker, token: forged },
          { type: "watch", reqId: reqId++, client: attacker, token: forged, on: 0 },
          { type: "list", reqId: reqId++, client: attacker, token: forged, after: "" },
          {
            type: "lookup",
            reqId: reqId++,
            client: attacker,
            token: forged,
            name: "Victor",
            nonce: new Uint8Array(0),
          },
          { type: "delete", reqId: reqId++, client: attacker, token: forged, name: "notes.txt" },
          // The victim's client id too: the replay cache keys on it, and must not mix them up.
          { type: "deregister", reqId: 2, client, token: forged },
          { type: "logout", reqId: reqId++, client, token: forged },
        ];
        for (const request of udp) {
          assertRefused(await from.ask(request), "not_logged_in", `${request.type} over UDP`);
        }
        await from.send({ type: "presence_ack", token: forged, seq: 1_000_000 });
      }
      // A name and no token, or a login through a channel with another key (any secret):
      // refused for what they are.
      assertRefused(
        await from.ask({
          type: "register",
          reqId: reqId++,
          client: "3333333333333333",
          name: "victor",
          udpPort: 0,
          tcpPort: 5001,
        }),
        "name_taken",
        "register of the same name",
      );
      assertRefused(
        await from.ask({
          type: "login",
          reqId: reqId++,
          client: "3333333333333333",
          name: "Victor",
          secret: wrong,
          udpPort: 0,
          tcpPort: 5001,
        }),
        "login_failed",
        "login with a wrong key",
      );
      const text = await from.ask({
        type: "text",
        reqId: reqId++,
        client: "3333333333333333",
        name: "Victor",
        token: wrong,
        text: "I am Victor",
      });
      assertEquals(text.type, "text_ok");
    }

    // Over TCP, from a connection of its own.
    const forger = await openStream(server.tcpPort, outsider);
    streams.push(forger);
    for (const forged of forgedTokens) {
      const attacker = "4444444444444444";
      const tcp: Message[] = [
        {
          type: "upload",
          reqId: reqId++,
          client: attacker,
          token: forged,
          name: "notes.txt",
          size: 3,
          sha256: sha256(Uint8Array.of(1, 2, 3)),
        },
        { type: "download", reqId: reqId++, client: attacker, token: forged, name: "notes.txt" },
        { type: "delete", reqId: reqId++, client: attacker, token: forged, name: "notes.txt" },
        { type: "files", reqId: reqId++, client: attacker, token: forged },
        { type: "deregister", reqId: reqId++, client: attacker, token: forged },
        { type: "logout", reqId: reqId++, client: attacker, token: forged },
      ];
      for (const request of tcp) {
        assertRefused(await forger.ask(request), "not_logged_in", `${request.type} over TCP`);
      }
      // The chunks of a refused upload go nowhere.
      await forger.write({ type: "file_chunk", reqId: reqId - 6, data: Uint8Array.of(1, 2, 3) });
    }

    const forgedEvents = events.slice(eventsBefore);
    // Nothing changed: the registry on disk, the session, its lease, its watch, its files.
    assertEquals(await Deno.readTextFile(`${dataDir}/registrations.json`), registryBefore);
    assertEquals(server.core.registry.size, 1);
    const after = server.core.sessions.byName("Victor");
    if (after !== session) throw new Error("Victor's session changed");
    assertEquals(after.leaseUntil, leaseBefore, "no forged heartbeat renewed the lease");
    assert(after.watching, "no forged watch turned the news off");
    assertEquals(server.core.watchers, 1);
    assertEquals(server.core.sessions.size, 1);
    const files = await own.ask({ type: "files", reqId: 5, client, token });
    if (files.type !== "file_list") throw new Error(JSON.stringify(files));
    assertEquals(files.files.map((f) => [f.name, f.size]), [["notes.txt", content.length]]);
    const download = await own.ask({
      type: "download",
      reqId: 6,
      client,
      token,
      name: "notes.txt",
    });
    assertEquals(download.type, "download_ok");
    const chunk = await next(own, "the file's content");
    assertEquals(chunk.type === "file_chunk" && [...chunk.data], [...content]);
    // The victim heard nothing of it: no session_ended, no presence news.
    assertEquals(
      victim.received.filter((m) => !("reqId" in m)).map((m) => m.type),
      [],
      "no push reached the victim",
    );
    // The log: refusals, one unverified text per forger, and no change of any kind.
    const changes = forgedEvents.filter((e) =>
      !["refused", "text", "unexpected", "replayed"].includes(e.kind)
    );
    assertEquals(changes, []);
    const texts = forgedEvents.filter((e) => e.kind === "text");
    assertEquals(texts.map((e) => e.kind === "text" && e.verified), [false, false]);
    // And the victim's own token still does everything.
    assertEquals(
      (await victim.ask({ type: "heartbeat", reqId: 7, client, token })).type,
      "heartbeat_ok",
    );
    assertEquals(
      (await victim.ask({ type: "deregister", reqId: 8, client, token })).type,
      "deregister_ok",
    );
  } finally {
    for (const stream of streams) stream.close();
    await victim.close();
    await outsider.close();
    await neighbour.close();
    await server.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});
