/**
 * Introductions and the relay between two server instances on one real
 * Redis (`redis-server`): Alice on A, Bob on B. Alice's `introduce` on A
 * reaches Bob as an `introduction` pushed by B, with one probe key for both,
 * and `relay` datagrams cross from A to B and back. The raw clients never
 * probe, so the relay is the only path between them (the way a session
 * starts, and where it stays when nothing direct works).
 */
import { assert, assertEquals } from "@std/assert";
import type { MessageOf } from "../lib/wire/messages.ts";
import { redisUnavailable } from "../scripts/_redis_server.ts";
import type { ClientEvent } from "../lib/client/client_event.ts";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { RawClient, REDIS_TEST_HOST as HOST, waitFor, withRedisInstances } from "./_redis.ts";

if (redisUnavailable !== undefined) {
  console.log(`redis_peer_relay_test: skipped: ${redisUnavailable}`);
}

const SESSION = "5a17c0ffee0b0b01";

Deno.test({
  name:
    "Two instances on one Redis: introductions and the relay reach a peer on the other instance",
  ignore: redisUnavailable !== undefined,
  async fn() {
    await withRedisInstances(async (cluster) => {
      const a = await cluster.instance();
      const b = await cluster.instance();
      const alice = new RawClient(a.udpPort);
      const bob = new RawClient(b.udpPort);
      const carol = new RawClient(a.udpPort);
      try {
        await alice.register("alice");
        await bob.register("bob");
        await carol.register("carol");
        // A knows Bob once B's news of his session arrived.
        for (let i = 0; (await lookup(alice, "bob"))?.type !== "lookup_ok"; i++) {
          assert(i < 50, "A never heard of Bob's session on B");
          await new Promise((resolve) => setTimeout(resolve, 20));
        }

        const reply = await alice.request({
          type: "introduce",
          token: alice.token,
          session: SESSION,
          name: "bob",
          hosts: [{ ip: "192.168.7.10", port: 5000 }],
        });
        assertEquals(reply?.type, "introduce_ok", JSON.stringify(reply));
        const ok = reply as MessageOf<"introduce_ok">;
        // Bob's candidates: where B sees his socket.
        assertEquals(ok.candidates, [{ ip: "127.0.0.1", port: bob.port }]);
        await waitFor(
          () => bob.pushes.some((m) => m.type === "introduction"),
          "Bob's introduction",
        );
        const intro = bob.pushes.find((m) => m.type === "introduction") as MessageOf<
          "introduction"
        >;
        assertEquals(intro.name, "alice");
        assertEquals(intro.session, SESSION);
        assertEquals(intro.probeKey, ok.probeKey);
        assertEquals(intro.candidates, [
          { ip: "127.0.0.1", port: alice.port },
          { ip: "192.168.7.10", port: 5000 },
        ]);

        // Bob introduces himself back on B: the same key, Alice's candidates,
        // and Alice is pushed Bob's host candidates by A.
        const back = await bob.request({
          type: "introduce",
          token: bob.token,
          session: SESSION,
          name: "alice",
          hosts: [{ ip: "10.1.2.3", port: 6000 }],
        }) as MessageOf<"introduce_ok">;
        assertEquals(back.type, "introduce_ok");
        assertEquals(back.probeKey, ok.probeKey);
        assertEquals(back.candidates, intro.candidates);
        await waitFor(
          () => alice.pushes.some((m) => m.type === "introduction"),
          "Alice's introduction",
        );
        const toAlice = alice.pushes.find((m) => m.type === "introduction") as MessageOf<
          "introduction"
        >;
        assertEquals(toAlice.probeKey, ok.probeKey);
        assertEquals(toAlice.candidates, [
          { ip: "127.0.0.1", port: bob.port },
          { ip: "10.1.2.3", port: 6000 },
        ]);

        // The relay, both ways, byte for byte, and no bigger than what came in.
        const there = crypto.getRandomValues(new Uint8Array(1000));
        alice.sendClear({ type: "relay", session: SESSION, payload: there });
        await waitFor(() => bob.relayed.length > 0, "the relay from A to B");
        assertEquals(bob.relayed[0], { type: "relay", session: SESSION, payload: there });
        const back2 = crypto.getRandomValues(new Uint8Array(40));
        bob.sendClear({ type: "relay", session: SESSION, payload: back2 });
        await waitFor(() => alice.relayed.length > 0, "the relay from B to A");
        assertEquals(alice.relayed[0].payload, back2);
        assertEquals(a.core.relayStats.relayed, 2); // in from Alice, out to Alice
        assertEquals(b.core.relayStats.relayed, 2);

        // Carol, on A too, is no party: her datagram of that session goes nowhere.
        carol.sendClear({ type: "relay", session: SESSION, payload: new Uint8Array(8) });
        // A datagram of another session goes nowhere either; the next real one still does.
        alice.sendClear({ type: "relay", session: "0000000000000001", payload: new Uint8Array(8) });
        alice.sendClear({ type: "relay", session: SESSION, payload: new Uint8Array([7]) });
        await waitFor(() => bob.relayed.length > 1, "the next relayed datagram");
        assertEquals(bob.relayed.map((m) => m.payload.length), [1000, 1]);
        assert(a.core.relayStats.refused >= 2);
      } finally {
        for (const c of [alice, bob, carol]) await c.close();
      }
    });
  },
});

Deno.test({
  name: "Two instances on one Redis: a client whose NAT moved it is found at its new port " +
    "through the other instance",
  ignore: redisUnavailable !== undefined,
  async fn() {
    await withRedisInstances(async (cluster) => {
      const a = await cluster.instance();
      const b = await cluster.instance();
      const alice = new RawClient(a.udpPort);
      const bob = new RawClient(b.udpPort);
      try {
        await alice.register("alice");
        await bob.register("bob");
        const port = async () => {
          const reply = await lookup(bob, "alice");
          return reply?.type === "lookup_ok" ? reply.udpPort : undefined;
        };
        for (let i = 0; (await port()) !== alice.port; i++) {
          assert(i < 50, "B never heard of Alice's session on A");
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        // Alice's NAT maps her anew; her next heartbeat reaches A from there.
        const before = alice.port;
        await alice.rebind();
        const beat = await alice.request({ type: "heartbeat", token: alice.token });
        assertEquals(beat?.type, "heartbeat_ok");
        assert(alice.port !== before);
        let seen: number | undefined;
        for (let i = 0; (seen = await port()) !== alice.port; i++) {
          assert(i < 50, `B still gives Alice's old port ${seen}, not ${alice.port}`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      } finally {
        for (const c of [alice, bob]) await c.close();
      }
    });
  },
});

function lookup(client: RawClient, name: string) {
  return client.request(
    { type: "lookup", token: client.token, name, nonce: new Uint8Array(0) },
    500,
  );
}

const FAST_RETRY = { initialMs: 100, maxMs: 400, jitter: 0.2, giveUpMs: 10_000 };

Deno.test({
  name:
    "Two instances on one Redis: real clients on A and B connect through the relay, go direct and chat",
  ignore: redisUnavailable !== undefined,
  async fn() {
    await withRedisInstances(async (cluster) => {
      const a = await cluster.instance();
      const b = await cluster.instance();
      const clients: ClientDriver[] = [];
      const bobEvents: ClientEvent[] = [];
      const aliceEvents: ClientEvent[] = [];
      try {
        const open = (name: string, port: number, events: ClientEvent[]) =>
          ClientDriver.open({
            serverHost: HOST,
            serverPort: port,
            udpPort: 0,
            tcpPort: 5001,
            name,
            via: "udp",
            retry: FAST_RETRY,
            onEvent: (event) => events.push(event),
          });
        const alice = await open("alice", a.udpPort, aliceEvents);
        clients.push(alice);
        const bob = await open("bob", b.udpPort, bobEvents);
        clients.push(bob);
        for (const client of clients) {
          assert((await client.run({ kind: "hello" })).ok);
          assert((await client.run({ kind: "register" })).ok);
        }
        for (let i = 0; !(await alice.run({ kind: "lookup", name: "bob" })).ok; i++) {
          assert(i < 50, "A never heard of Bob's session on B");
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        const accepted = bob.run({ kind: "accept" });
        const connected = await alice.run({ kind: "connect", name: "bob" });
        assert(connected.ok, JSON.stringify(connected));
        assert((await accepted).ok);
        // Both were introduced, B pushing Alice's introduction to Bob, and
        // the request went through the relay (A to B), as every session starts.
        assert(a.core.relayStats.introduced >= 1 && b.core.relayStats.introduced >= 1);
        assert(b.core.relayStats.relayed >= 1, JSON.stringify(b.core.relayStats));
        // On loopback the checks find the direct path.
        await waitFor(
          () => aliceEvents.some((e) => e.kind === "peer_path" && e.path.kind === "direct"),
          "Alice's session to go direct",
        );
        assert((await alice.run({ kind: "send", text: "across instances" })).ok);
        await waitFor(
          () => bobEvents.some((e) => e.kind === "message" && e.text === "across instances"),
          "Bob to get the message",
        );
      } finally {
        for (const client of clients) await client.close();
      }
    });
  },
});
