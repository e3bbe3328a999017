/**
 * `PeerPath` (lib/client/peer_path.ts): connectivity checks between two
 * sides behind the simulator's NATs (`SimNat`, RFC 4787 behaviours) on a
 * virtual clock, so the outcome of each pair of NAT kinds is the one the
 * mappings and filters allow; probe authentication; heartbeats, fallback to
 * the relay and upgrades.
 */
import { assert, assertEquals } from "@std/assert";
import { PeerPath, type PeerPathOutput, probeTag } from "../lib/client/peer_path.ts";
import type { PeerAddress } from "../lib/client/peer_session.ts";
import { type NatBehavior, SimNat } from "../lib/sim/sim_nat.ts";
import { decodeMessage } from "../lib/wire/codec.ts";
import type { MessageOf } from "../lib/wire/messages.ts";

const SESSION = "8c3f1a2b4d5e6f70";
const KEY = new Uint8Array(16).fill(7);
const SERVER = "192.0.2.1:3000";
const ONE_WAY_MS = 15;

type Kind = "full-cone" | "port-restricted" | "symmetric" | "none";

const KINDS: Record<Exclude<Kind, "none">, [NatBehavior, NatBehavior]> = {
  "full-cone": ["endpoint-independent", "endpoint-independent"],
  "port-restricted": ["endpoint-independent", "address-and-port-dependent"],
  "symmetric": ["address-and-port-dependent", "address-and-port-dependent"],
};

interface Side {
  readonly path: PeerPath;
  readonly inside: string;
  readonly nat: SimNat | undefined;
  readonly changes: Extract<PeerPathOutput, { type: "changed" }>[];
  introduces: number;
}

interface InFlight {
  readonly at: number;
  readonly from: string;
  readonly to: string;
  readonly message: MessageOf<"peer_probe" | "peer_probe_ok">;
}

/** Two sides, each behind a NAT of a kind (or none), and the datagrams between them. */
class World {
  now = 0;
  readonly a: Side;
  readonly b: Side;
  #flight: InFlight[] = [];

  constructor(kindA: Kind, kindB: Kind) {
    this.a = side(kindA, "10.0.0.2:5000", "203.0.113.1", true, 1);
    this.b = side(kindB, "10.0.1.2:5000", "198.51.100.1", false, 1_000);
  }

  /** Where the server sees a side (its server-reflexive candidate). */
  reflexive(s: Side): PeerAddress {
    return parse(s.nat?.outbound(this.now, s.inside, SERVER) ?? s.inside);
  }

  /** The server introduces both at once, each with the other's reflexive address. */
  introduce(): void {
    const [ra, rb] = [this.reflexive(this.a), this.reflexive(this.b)];
    this.a.path.introduce(this.now, KEY, [rb]);
    this.b.path.introduce(this.now, KEY, [ra]);
    this.#drain();
  }

  /** Runs the clock to `until`, delivering datagrams and firing timers. */
  run(until: number): void {
    for (let steps = 0; steps < 100_000; steps++) {
      const times = [
        this.a.path.nextTimeout(),
        this.b.path.nextTimeout(),
        ...this.#flight.map((f) => f.at),
      ].filter((t): t is number => t !== undefined && t <= until);
      if (times.length === 0) {
        this.now = until;
        return;
      }
      this.now = Math.max(this.now, Math.min(...times));
      const due = this.#flight.filter((f) => f.at <= this.now);
      this.#flight = this.#flight.filter((f) => f.at > this.now);
      for (const f of due) this.#deliver(f);
      for (const s of [this.a, this.b]) {
        const next = s.path.nextTimeout();
        if (next !== undefined && next <= this.now) s.path.onTimeout(this.now);
      }
      this.#drain();
    }
    throw new Error("the world does not make progress");
  }

  #deliver(f: InFlight): void {
    for (const s of [this.a, this.b]) {
      const inside = s.nat === undefined
        ? (f.to === s.inside ? s.inside : undefined)
        : s.nat.inbound(this.now, f.from, f.to);
      if (inside !== s.inside) continue;
      const from = parse(f.from);
      if (f.message.type === "peer_probe") s.path.handleProbe(this.now, from, f.message);
      else s.path.handleProbeOk(this.now, from, f.message);
    }
  }

  #drain(): void {
    for (const s of [this.a, this.b]) {
      for (let out = s.path.poll(); out; out = s.path.poll()) {
        if (out.type === "changed") s.changes.push(out);
        else if (out.type === "introduce") s.introduces++;
        else {
          const to = `${out.to.ip}:${out.to.port}`;
          const from = s.nat === undefined ? s.inside : s.nat.outbound(this.now, s.inside, to);
          if (from !== undefined) {
            this.#flight.push({ at: this.now + ONE_WAY_MS, from, to, message: out.message });
          }
        }
      }
    }
  }
}

function side(kind: Kind, inside: string, ip: string, controlling: boolean, nonce: number): Side {
  let nat: SimNat | undefined;
  if (kind !== "none") {
    const [mapping, filtering] = KINDS[kind];
    nat = new SimNat(ip, { mapping, filtering, firstPort: 40_000 });
    nat.addHost(inside.split(":")[0]);
  }
  const path = new PeerPath({ session: SESSION, controlling, firstNonce: nonce });
  return { path, inside, nat, changes: [], introduces: 0 };
}

function parse(address: string): PeerAddress {
  const colon = address.lastIndexOf(":");
  return { ip: address.slice(0, colon), port: Number(address.slice(colon + 1)) };
}

Deno.test("PeerPath goes direct between two endpoint-independent mappings within a few round trips", () => {
  const w = new World("port-restricted", "port-restricted");
  assertEquals(w.a.path.path, { kind: "relay" });
  w.introduce();
  w.run(200);
  assertEquals(w.a.path.path, {
    kind: "direct",
    remote: { ip: "198.51.100.1", port: 40_000 },
    local: { ip: "203.0.113.1", port: 40_000 },
  });
  assertEquals(w.b.path.path.kind, "direct");
  assertEquals(w.a.changes.map((c) => c.why), ["checked"]);
  assertEquals(w.a.changes[0].previous, { kind: "relay" });
  assert(!w.a.path.checking && !w.b.path.checking, "the checks stop at the first verified pair");
});

Deno.test("PeerPath learns a symmetric NAT's port from its probe when the other side filters nothing", () => {
  const w = new World("full-cone", "symmetric");
  w.introduce();
  w.run(500);
  const a = w.a.path.path;
  assert(a.kind === "direct", JSON.stringify(a));
  // Not the port the server saw: a new one, for the new destination.
  assert(a.kind === "direct" && a.remote.port !== w.reflexive(w.b).port);
  assertEquals(w.b.path.path.kind, "direct");
});

Deno.test("PeerPath stays on the relay where no direct path exists, and the controlling side retries each minute", () => {
  const w = new World("port-restricted", "symmetric");
  w.introduce();
  w.run(5_000);
  assertEquals(w.a.path.path, { kind: "relay" });
  assertEquals(w.b.path.path, { kind: "relay" });
  assert(!w.a.path.checking, "the check is bounded in time");
  w.run(66_000);
  assertEquals(w.a.introduces, 1, "one upgrade attempt a minute");
  assertEquals(w.b.introduces, 0, "only the controlling side asks");
  assertEquals(w.a.path.nextTimeout(), 125_000);
});

Deno.test("PeerPath falls back to the relay when heartbeats go unanswered, then upgrades again", () => {
  const w = new World("port-restricted", "full-cone");
  w.introduce();
  w.run(1_000);
  assertEquals(w.a.path.path.kind, "direct");
  // Heartbeats keep the path while the NATs keep their state.
  w.run(30_000);
  assertEquals(w.a.path.path.kind, "direct");
  assertEquals(w.a.changes.length, 1);
  // The NATs forget everything (conntrack -F): the next heartbeats are dropped.
  w.a.nat!.flush();
  w.b.nat!.flush();
  const flushedAt = w.now;
  w.run(flushedAt + 4_000);
  assertEquals(w.a.changes.map((c) => c.why), ["checked", "heartbeats_missed"]);
  const lostAt = w.a.changes[1];
  assertEquals(lostAt.path, { kind: "relay" });
  assert(w.a.path.checking, "a check starts at once");
  assertEquals([w.a.introduces, w.b.introduces], [1, 1], "both ask for a new introduction at once");
  // The server answers with where the NATs map them now: direct once more.
  w.introduce();
  w.run(w.now + 1_000);
  assertEquals(w.a.path.path.kind, "direct");
  assertEquals(w.b.path.path.kind, "direct");
});

Deno.test("PeerPath ignores probes with a wrong tag, key or session and answers a verified one at its source", () => {
  const path = new PeerPath({ session: SESSION, controlling: false, firstNonce: 5 });
  const probe = {
    type: "peer_probe",
    session: SESSION,
    nonce: 9,
    tag: new Uint8Array(16),
  } as const;
  const signed = { ...probe, tag: probeTag(KEY, probe) };
  const from = { ip: "203.0.113.9", port: 4444 };
  assertEquals(path.handleProbe(0, from, signed), false, "no key yet: nothing is verified");
  path.introduce(0, KEY, []);
  assertEquals(path.handleProbe(0, from, { ...signed, nonce: 10 }), false);
  assertEquals(
    path.handleProbe(0, from, { ...signed, tag: probeTag(new Uint8Array(16), probe) }),
    false,
  );
  assertEquals(path.handleProbe(0, from, { ...signed, session: "0000000000000001" }), false);
  assertEquals(path.poll(), undefined);
  assertEquals(path.handleProbe(0, from, signed), true);
  const answer = path.poll();
  assert(answer?.type === "send");
  assertEquals(answer?.type === "send" && answer.to, from);
  const message = answer?.type === "send" ? answer.message : undefined;
  assert(message?.type === "peer_probe_ok");
  assertEquals(message?.type === "peer_probe_ok" && [message.ip, message.port, message.nonce], [
    "203.0.113.9",
    4444,
    9,
  ]);
  // A probe_ok that answers no probe of ours is ignored.
  const stray = { ...message!, nonce: 12345 } as MessageOf<"peer_probe_ok">;
  assertEquals(path.handleProbeOk(0, from, { ...stray, tag: probeTag(KEY, stray) }), false);
});

Deno.test("probeTag() gives the tags of PROTOCOL.md's peer_probe and peer_probe_ok examples", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/PROTOCOL.md", import.meta.url));
  const key = /probe key `([0-9a-f]{32})`/.exec(doc)?.[1] ?? "";
  assertEquals(key.length, 32, "the document names the probe key of its examples");
  const keyBytes = Uint8Array.from(key.match(/../g)!, (h) => parseInt(h, 16));
  for (const type of ["peer_probe", "peer_probe_ok"] as const) {
    const block = new RegExp(`<!-- message: ${type} -->\\s+\`\`\`hex\\n([^\`]+)\`\`\``).exec(doc);
    const hex = block?.[1] ?? "";
    assert(hex !== "", `no ${type} example`);
    const bytes = Uint8Array.from(hex.trim().split(/\s+/), (h) => parseInt(h, 16));
    const message = decodeMessage(bytes) as MessageOf<"peer_probe" | "peer_probe_ok">;
    assertEquals(message.tag, probeTag(keyBytes, message), `${type}: the tag is not the key's`);
  }
});

Deno.test("PeerPath rations checks: introductions again within 30 s only add candidates", () => {
  const path = new PeerPath({ session: SESSION, controlling: false, firstNonce: 1 });
  const probes = () => {
    let n = 0;
    for (let out = path.poll(); out; out = path.poll()) if (out.type === "send") n++;
    return n;
  };
  const stranger = { ip: "192.0.2.99", port: 9 };
  path.introduce(0, KEY, [stranger]);
  for (let t = 0; t <= 6_000; t += 50) path.onTimeout(t);
  const first = probes();
  assert(first >= 90 && first <= 101, `one check: ${first} probes`);
  // The peer has the server introduce it again and again: no new check for 30 s.
  for (let t = 6_000; t < 30_000; t += 1_000) {
    path.introduce(t, KEY, [stranger]);
    path.onTimeout(t);
  }
  assertEquals(probes(), 0);
  assertEquals(path.checking, false);
  path.introduce(30_000, KEY, [stranger]);
  assertEquals(path.checking, true, "a check again once 30 s have passed");
});

Deno.test("PeerPath never answers its own probe: a candidate naming its own socket is no direct path", () => {
  const self = { ip: "10.0.0.2", port: 5000 };
  const path = new PeerPath({ session: SESSION, controlling: true, firstNonce: 1 });
  path.introduce(0, KEY, [{ ip: "198.51.100.1", port: 41000 }, self]);
  let answers = 0;
  for (let now = 0; now < 6_000; now += 50) {
    path.onTimeout(now);
    for (let out = path.poll(); out !== undefined; out = path.poll()) {
      if (out.type !== "send" || out.to.ip !== self.ip || out.to.port !== self.port) continue;
      // The datagram loops back to this very socket, as it does between two
      // LANs that both number their host 10.0.0.2 and run the client on 5000.
      if (out.message.type === "peer_probe") path.handleProbe(now, self, out.message);
      else {
        answers++;
        path.handleProbeOk(now, self, out.message);
      }
    }
  }
  assertEquals(answers, 0);
  assertEquals(path.path, { kind: "relay" });
});
