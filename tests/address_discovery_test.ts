/**
 * Address discovery: the client part's requests, retransmissions and
 * classification; the core starting it after each login; the server's
 * reflector (answers, second port, amplification). Across NAT kinds in the
 * simulator: tests/sim_nat_test.ts.
 */
import { assertEquals, assertThrows } from "@std/assert";
import { AddressDiscovery } from "../lib/client/address_discovery.ts";
import { ClientCore } from "../lib/client/client_core.ts";
import { type ClientOutput, Outbox } from "../lib/client/outbox.ts";
import { type ClientTimer, TimerTable } from "../lib/client/timer_table.ts";
import { SeededRandom } from "../lib/random.ts";
import { Reflector } from "../lib/server/reflector.ts";
import type { ServerOutput } from "../lib/server/server_event.ts";
import { encodeMessage, MIN_PADDED_REQUEST_BYTES } from "../lib/wire/codec.ts";
import type { MessageOf } from "../lib/wire/messages.ts";

type Reflect = MessageOf<"reflect">;

function setUp() {
  const outbox = new Outbox();
  const timers = new TimerTable<ClientTimer>();
  const discovery = new AddressDiscovery({ outbox, timers });
  const sent = (): { message: Reflect; port: number | undefined; attempt: number }[] => {
    const out: { message: Reflect; port: number | undefined; attempt: number }[] = [];
    for (let o = outbox.poll(); o !== undefined; o = outbox.poll()) {
      if (o.type === "send" && o.message.type === "reflect") {
        out.push({ message: o.message, port: o.port, attempt: o.attempt });
      }
    }
    return out;
  };
  return { discovery, timers, sent };
}

function reply(request: Reflect, ip: string, port: number, port2: number) {
  return { type: "reflect_ok", reqId: request.reqId, ip, port, port2 } as const;
}

Deno.test("AddressDiscovery asks the main port, then the second, and finds an endpoint-independent mapping", () => {
  const { discovery, timers, sent } = setUp();
  discovery.start(0);
  const [first] = sent();
  assertEquals(first.port, undefined, "the main port first");
  assertEquals(timers.next(), 500);
  discovery.handle(10, reply(first.message, "203.0.113.1", 40000, 3002));
  assertEquals(discovery.publicAddress, "203.0.113.1:40000");
  assertEquals(discovery.mapping, undefined, "not known yet");
  const [second] = sent();
  assertEquals(second.port, 3002);
  discovery.handle(20, reply(second.message, "203.0.113.1", 40000, 3002));
  assertEquals(discovery.mapping, "endpoint-independent");
  assertEquals(timers.next(), undefined, "done: no timer");
});

Deno.test("AddressDiscovery finds a destination-dependent mapping when the second port sees another port", () => {
  const { discovery, sent } = setUp();
  discovery.start(0);
  discovery.handle(10, reply(sent()[0].message, "203.0.113.1", 40000, 3002));
  discovery.handle(20, reply(sent()[0].message, "203.0.113.1", 40001, 3002));
  assertEquals(discovery.mapping, "destination-dependent");
  assertEquals(discovery.publicAddress, "203.0.113.1:40000");
});

Deno.test("AddressDiscovery ignores a stale reply and retransmits with backoff, then gives up as unknown", () => {
  const { discovery, timers, sent } = setUp();
  discovery.start(0);
  const [first] = sent();
  discovery.handle(1, { ...reply(first.message, "198.51.100.1", 1, 3002), reqId: 999 });
  assertEquals(discovery.publicAddress, undefined);
  const attempts = [first.attempt];
  for (const at of [500, 1500, 3500]) {
    assertEquals(timers.next(), at);
    discovery.onTimeout(at);
    const [again] = sent();
    assertEquals(again.message.reqId, first.message.reqId, "the same request again");
    attempts.push(again.attempt);
  }
  assertEquals(attempts, [1, 2, 3, 4]);
  assertEquals(timers.next(), 7500);
  discovery.onTimeout(7500);
  assertEquals(sent(), []);
  assertEquals(discovery.mapping, "unknown");
  assertEquals(discovery.running, false);
});

Deno.test("AddressDiscovery without a second server port reports unknown mapping", () => {
  const { discovery, sent } = setUp();
  discovery.start(0);
  discovery.handle(10, reply(sent()[0].message, "203.0.113.1", 40000, 0));
  assertEquals(sent(), []);
  assertEquals(discovery.mapping, "unknown");
  assertEquals(discovery.publicAddress, "203.0.113.1:40000");
  assertThrows(() => new AddressDiscovery({ ...setUpOptions(), backoffMs: [] }), RangeError);
});

function setUpOptions() {
  return { outbox: new Outbox(), timers: new TimerTable<ClientTimer>() };
}

Deno.test("ClientCore starts address discovery after login, again after a new login, and not when told not to", () => {
  for (const discover of [true, false]) {
    const core = new ClientCore({
      random: new SeededRandom(1),
      udpPort: 40000,
      tcpPort: 5001,
      via: "udp",
      server: "127.0.0.1:3000",
      discover,
    });
    const reflects = (outputs: ClientOutput[]) =>
      outputs.filter((o) => o.type === "send" && o.message.type === "reflect").length;
    core.run(0, { kind: "login", name: "alice", secret: new Uint8Array(16) });
    const out: ClientOutput[] = [];
    for (let o = core.poll(); o !== undefined; o = core.poll()) out.push(o);
    const login = out.find((o) => o.type === "send" && o.message.type === "login");
    if (login?.type !== "send" || login.message.type !== "login") throw new Error("no login sent");
    assertEquals(reflects(out), 0, "nothing before the login is done");
    const token = new Uint8Array(16).fill(9);
    core.handle(5, { type: "login_ok", reqId: login.message.reqId, token, replaced: 0 });
    const after: ClientOutput[] = [];
    for (let o = core.poll(); o !== undefined; o = core.poll()) after.push(o);
    assertEquals(reflects(after), discover ? 1 : 0);
  }
});

Deno.test("Reflector answers where a padded reflect came from, on either port, and nothing else on the second", () => {
  const outputs: ServerOutput[] = [];
  const reflector = new Reflector({ port2: 3002, output: (o) => outputs.push(o) });
  const request = { type: "reflect", reqId: 7, client: "0000000000000000" } as const;
  const bytes = encodeMessage(request).length;
  assertEquals(bytes, MIN_PADDED_REQUEST_BYTES, "padded like hello");
  const from = { transport: "udp", address: "203.0.113.1", port: 40000 } as const;
  assertEquals(reflector.handle(from, request, bytes), true);
  assertEquals(outputs, [{
    type: "send",
    to: from,
    message: { type: "reflect_ok", reqId: 7, ip: "203.0.113.1", port: 40000, port2: 3002 },
  }]);
  const second = { ...from, port: 40001, second: true } as const;
  assertEquals(reflector.handle(second, request, bytes), true);
  assertEquals(outputs.length, 2);
  assertEquals(
    outputs[1].type === "send" && outputs[1].to,
    second,
    "the reply leaves the second port",
  );
  // The second port answers reflect only; the main one hands other messages to the core.
  const heartbeat = {
    type: "heartbeat",
    reqId: 1,
    client: "0000000000000000",
    token: new Uint8Array(16),
  } as const;
  assertEquals(reflector.handle(second, heartbeat, 100), true);
  assertEquals(reflector.handle(from, heartbeat, 100), false);
  assertEquals(outputs.length, 2);
  // An unpadded reflect over UDP gets nothing: no amplification.
  assertEquals(reflector.handle(from, request, 16), true);
  assertEquals(outputs.length, 2);
  assertEquals(reflector.undersized, 1);
  assertThrows(() => new Reflector({ port2: 70_000, output: () => {} }), RangeError);
});
