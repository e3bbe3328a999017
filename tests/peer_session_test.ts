/**
 * Peer sessions, sans-I/O, on virtual time: two {@linkcode PeerSession}s
 * wired by hand through the real codec over a link that loses, copies and
 * delays what the test says; then the client core's peer commands against a
 * stand-in server (impersonation, `send @NAME`, `accept` waiting, `wait`).
 */
import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { ClientCore, type CoreCommand } from "../lib/client/client_core.ts";
import { PEER_CHANNEL_OPTIONS } from "../lib/client/peer_table.ts";
import type { ClientEvent, CommandResult } from "../lib/client/client_event.ts";
import {
  messageOf,
  type PeerAddress,
  type PeerSent,
  PeerSession,
  type PeerSessionOutput,
  segmentOf,
  TERMINATE_ATTEMPTS,
} from "../lib/client/peer_session.ts";
import { PeerCipher, readInitiation } from "../lib/client/peer_cipher.ts";
import { TimestampSource } from "../lib/crypto/introduction.ts";
import { fingerprint } from "../lib/crypto/fingerprint.ts";
import type { TransportLimits } from "../lib/crypto/transport_session.ts";
import { MAX_REQUEST_WORK_PER_SECOND, VERSION_2_PEER_REASON } from "../lib/client/peer_requests.ts";
import { type KeyPair, keyPairFromPrivateKey } from "../lib/crypto/key_pair.ts";
import {
  ALICE_KEYS,
  BOB_KEYS,
  forgeInitiation,
  MALLORY_KEYS,
  NONCE,
  PSK,
  StandInKeys,
} from "./_peer_keys.ts";
import { CommandError, parseCommand } from "../lib/client/command.ts";
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from "../lib/client/retry_policy.ts";
import { SeededRandom } from "../lib/random.ts";
import {
  DEFAULT_CHANNEL_OPTIONS,
  type ReliableChannelOptions,
} from "../lib/reliable/reliable_channel.ts";
import type { Segment } from "../lib/reliable/segment.ts";
import { nameKey } from "../lib/wire/client_name.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import {
  AUTH_MODES,
  MAX_DATAGRAM_BYTES,
  MAX_PEER_PAYLOAD_BYTES,
  MAX_SACK_RANGES,
  type Message,
  type MessageOf,
  type PeerInnerMessage,
  type PeerMessage,
} from "../lib/wire/messages.ts";

const ALICE: PeerAddress = { ip: "10.0.0.1", port: 4001 };
const BOB: PeerAddress = { ip: "10.0.0.2", port: 4002 };
const SESSION = "00112233aabbccdd";
const NO_JITTER: RetryPolicy = { ...DEFAULT_RETRY_POLICY, jitter: 0 };
/** When the product's peer channel declares a silent peer dead. */
const DEAD_AFTER_MS = PEER_CHANNEL_OPTIONS.deadAfterMs ?? DEFAULT_CHANNEL_OPTIONS.deadAfterMs;

// --- A hand-made link between two sessions -----------------------------------

type Side = "a" | "b";

/** Everything a session output, with the virtual time it came out. */
interface Timed {
  readonly at: number;
  readonly output: PeerSessionOutput;
}

/** One datagram handed to the link. */
interface Wire {
  readonly at: number;
  readonly from: Side;
  readonly message: PeerSent;
  readonly dropped: boolean;
}

interface InFlight {
  readonly at: number;
  readonly seq: number;
  readonly to: Side;
  readonly bytes: Uint8Array;
}

interface LinkOptions {
  /** Seeds jitter, loss, copies and delays. */
  seed?: number;
  /** Handshake and terminate schedule (default: the product's, without jitter). */
  retry?: RetryPolicy;
  /** Bob's schedule, if it differs from Alice's (it bounds how long his request waits). */
  bobRetry?: RetryPolicy;
  /** Channel options of both sides (default: the client core's {@linkcode PEER_CHANNEL_OPTIONS}). */
  channel?: ReliableChannelOptions;
  /** One-way delay, ms: fixed, or a range drawn per datagram (which reorders). */
  delayMs?: number | readonly [number, number];
  /** Random loss, each way. */
  loss?: number;
  /** Random duplication, each way. */
  duplicate?: number;
  /** Drops chosen by the test, before random loss. */
  drop?: (from: Side, message: PeerSent) => boolean;
  /** B accepts as soon as the request arrives (default true). */
  autoAccept?: boolean;
}

/**
 * Alice (side `a`, outgoing) and Bob (side `b`, created when the first
 * `peer_connect` reaches him, as the client core does, and taken as
 * verified at once, with the keys and PSK of `_peer_keys.ts`). Every
 * datagram is sealed or a handshake message, decoded by `decodeMessage`,
 * and must fit in {@linkcode MAX_DATAGRAM_BYTES}.
 */
class Link {
  now = 0;
  readonly random: SeededRandom;
  readonly a: PeerSession;
  b: PeerSession | undefined;
  /** Every datagram sent, dropped or not. */
  readonly wire: Wire[] = [];
  /** Every output of each side, sends included, in order. */
  readonly outputs: Record<Side, Timed[]> = { a: [], b: [] };
  readonly #options: LinkOptions;
  #flight: InFlight[] = [];
  #seq = 0;

  constructor(options: LinkOptions = {}) {
    this.#options = options;
    this.random = new SeededRandom(options.seed ?? 1);
    const stamps = new TimestampSource();
    this.a = new PeerSession(0, {
      id: SESSION,
      ownName: "Alice",
      peerName: "Bob",
      address: BOB,
      outgoing: true,
      random: this.random,
      retry: options.retry ?? NO_JITTER,
      channel: options.channel ?? PEER_CHANNEL_OPTIONS,
      cipher: new PeerCipher({
        session: SESSION,
        staticKeyPair: ALICE_KEYS,
        remoteKey: BOB_KEYS.publicKey,
        psk: PSK,
        random: this.random,
      }),
      nonce: NONCE,
      timestamp: (now) => stamps.next(now),
    });
    this.drain("a");
  }

  session(side: Side): PeerSession {
    const session = side === "a" ? this.a : this.b;
    if (session === undefined) throw new Error("Bob has no session yet");
    return session;
  }

  /** Moves a side's outputs to the log and its datagrams onto the link. */
  drain(side: Side): void {
    const session = side === "a" ? this.a : this.b;
    if (session === undefined) return;
    for (let out = session.poll(); out !== undefined; out = session.poll()) {
      this.outputs[side].push({ at: this.now, output: out });
      if (out.type !== "send") continue;
      assertEquals(out.to, side === "a" ? BOB : ALICE, "sent to the peer's address");
      const bytes = out.bytes;
      assert(bytes.length <= MAX_DATAGRAM_BYTES, `${out.sent.type} of ${bytes.length} bytes`);
      const o = this.#options;
      const dropped = (o.drop?.(side, out.sent) ?? false) ||
        this.random.next() < (o.loss ?? 0);
      this.wire.push({ at: this.now, from: side, message: out.sent, dropped });
      if (dropped) continue;
      const copies = this.random.next() < (o.duplicate ?? 0) ? 2 : 1;
      for (let i = 0; i < copies; i++) {
        this.#flight.push({
          at: this.now + this.#delay(),
          seq: this.#seq++,
          to: side === "a" ? "b" : "a",
          bytes,
        });
      }
    }
  }

  #delay(): number {
    const d = this.#options.delayMs ?? 10;
    if (typeof d === "number") return d;
    return d[0] + this.random.next() * (d[1] - d[0]);
  }

  #deliver(packet: InFlight): void {
    const message = decodeMessage(packet.bytes);
    if (message.type.startsWith("peer_") === false) throw new Error(`not a peer message`);
    const peerMessage = message as PeerMessage;
    if (packet.to === "b" && this.b === undefined) {
      if (peerMessage.type !== "peer_connect") return;
      const read = readInitiation(BOB_KEYS, peerMessage, this.random);
      assertEquals(read.introduction.name, "Alice");
      assertEquals(read.remoteKey, ALICE_KEYS.publicKey);
      this.b = new PeerSession(this.now, {
        id: peerMessage.session,
        ownName: "Bob",
        peerName: read.introduction.name,
        address: ALICE,
        outgoing: false,
        random: this.random,
        retry: this.#options.bobRetry ?? this.#options.retry ?? NO_JITTER,
        channel: this.#options.channel ?? PEER_CHANNEL_OPTIONS,
        cipher: new PeerCipher({
          session: peerMessage.session,
          staticKeyPair: BOB_KEYS,
          remoteKey: read.remoteKey,
          random: this.random,
        }),
      });
      assertEquals(this.b.state, "verifying");
      this.b.verified(this.now, read, packet.bytes, PSK);
      if (this.#options.autoAccept ?? true) this.b.accept(this.now);
      this.drain("b");
      return;
    }
    const session = this.session(packet.to);
    const from = packet.to === "a" ? BOB : ALICE;
    const copy = session.cipher.initiation;
    if (
      peerMessage.type === "peer_connect" && session === this.b && session.state === "open" &&
      !(copy?.length === packet.bytes.length && copy.every((b, i) => b === packet.bytes[i]))
    ) {
      // A rekey, as the peer table reads it.
      session.rekey(
        this.now,
        from,
        readInitiation(BOB_KEYS, peerMessage, this.random),
        packet.bytes,
      );
    } else {
      session.handle(this.now, from, peerMessage);
    }
    this.drain(packet.to);
  }

  /** The next time something happens, or undefined. */
  #next(): number | undefined {
    const times = [this.#flight[0]?.at, this.a.nextTimeout(), this.b?.nextTimeout()]
      .filter((t): t is number => t !== undefined);
    return times.length === 0 ? undefined : Math.min(...times);
  }

  /**
   * Runs until `until` (virtual ms) or until `stop` holds.
   *
   * @returns true if `stop` held
   */
  runUntil(until: number, stop: () => boolean = () => false): boolean {
    for (let guard = 0; guard < 1_000_000; guard++) {
      if (stop()) return true;
      const next = this.#next();
      if (next === undefined || next > until) {
        this.now = Math.max(this.now, until);
        return stop();
      }
      this.now = Math.max(this.now, next);
      this.#flight.sort((x, y) => x.at - y.at || x.seq - y.seq);
      while (this.#flight.length > 0 && this.#flight[0].at <= this.now) {
        this.#deliver(this.#flight.shift()!);
      }
      for (const side of ["a", "b"] as const) {
        const session = side === "a" ? this.a : this.b;
        const at = session?.nextTimeout();
        if (session !== undefined && at !== undefined && at <= this.now) {
          session.onTimeout(this.now);
          this.drain(side);
        }
      }
      this.#flight.sort((x, y) => x.at - y.at || x.seq - y.seq);
    }
    throw new Error(`The link never settled (now ${this.now})`);
  }

  /** Runs for `ms` more. */
  runFor(ms: number): void {
    this.runUntil(this.now + ms);
  }

  /** Datagrams of one type from one side. */
  sent(from: Side, type: PeerSent["type"], options: { dropped?: boolean } = {}): Wire[] {
    return this.wire.filter((w) =>
      w.from === from && w.message.type === type &&
      (options.dropped === undefined || w.dropped === options.dropped)
    );
  }

  /** The non-send outputs of one side. */
  events(side: Side): Timed[] {
    return this.outputs[side].filter((t) => t.output.type !== "send");
  }

  texts(side: Side): string[] {
    return this.outputs[side].flatMap((t) => t.output.type === "message" ? [t.output.text] : []);
  }

  closed(side: Side): Extract<PeerSessionOutput, { type: "closed" }> & { at: number } {
    const all = this.outputs[side].flatMap((t) =>
      t.output.type === "closed" ? [{ ...t.output, at: t.at }] : []
    );
    assertEquals(all.length, 1, `side ${side} closes exactly once`);
    return all[0];
  }

  bothOpen(): boolean {
    return this.a.state === "open" && this.b?.state === "open";
  }

  /** Sends on one side and moves its outputs. */
  send(side: Side, text: string): number {
    const id = this.session(side).send(this.now, text);
    this.drain(side);
    return id;
  }

  terminate(side: Side, reason: string): void {
    this.session(side).terminate(this.now, reason);
    this.drain(side);
  }
}

/** Drops the first `n` datagrams of a type from a side. */
function dropFirst(
  n: number,
  from: Side,
  type: PeerSent["type"],
): (side: Side, message: PeerSent) => boolean {
  let left = n;
  return (side, message) => {
    if (side !== from || message.type !== type || left === 0) return false;
    left--;
    return true;
  };
}

/** The output, which must be a `peer_reject` sent. */
function rejectOf(
  out: PeerSessionOutput | undefined,
): { to: PeerAddress; message: Extract<PeerMessage, { type: "peer_reject" }> } {
  if (out?.type !== "send" || out.sent.type !== "peer_reject") {
    throw new Error(`expected a peer_reject, got ${JSON.stringify(out)}`);
  }
  return { to: out.to, message: out.sent };
}

function times(wires: Wire[]): number[] {
  return wires.map((w) => w.at);
}

// --- Handshake ---------------------------------------------------------------

Deno.test("PeerSession opens both sides with one connect and one accept", () => {
  const link = new Link();
  assertEquals(link.a.state, "connecting");
  assertEquals(link.a.outgoing, true);
  const [connect] = link.sent("a", "peer_connect");
  assertEquals(connect.message, { type: "peer_connect", session: SESSION });
  assert(link.runUntil(5000, () => link.bothOpen()));
  assertEquals(link.now, 20, "one round trip of 10 ms each way");
  assertEquals(link.b!.id, SESSION);
  assertEquals(link.b!.peerName, "Alice");
  assertEquals(link.b!.outgoing, false);
  assertEquals(link.sent("a", "peer_connect").length, 1);
  assertEquals(link.sent("b", "peer_accept").map((w) => w.message), [
    { type: "peer_accept", session: SESSION },
  ]);
  // Both hold the same keys: what one seals, the other opens.
  assertEquals(link.a.cipher.handshakes, 1);
  assertEquals(link.b!.cipher.handshakes, 1);
  assertEquals(link.events("a").map((t) => t.output), [{ type: "opened" }]);
  assertEquals(link.events("b").map((t) => t.output), [{ type: "opened" }]);
  assert(link.a.channel !== undefined && link.b!.channel !== undefined);
  // No handshake retransmission once open.
  link.runFor(3000);
  assertEquals(link.sent("a", "peer_connect").length, 1);
});

Deno.test("PeerSession retransmits connect until a lost accept is answered again", () => {
  const link = new Link({ drop: dropFirst(2, "b", "peer_accept") });
  assert(link.runUntil(10_000, () => link.bothOpen()));
  // The first connect at 0, then after 500 and 1000 more ms (no jitter).
  assertEquals(times(link.sent("a", "peer_connect")), [0, 500, 1500]);
  // Bob, open already, answers each copy of the connect with a new accept.
  assertEquals(times(link.sent("b", "peer_accept")), [10, 510, 1510]);
  assertEquals(link.now, 1520);
  assertEquals(link.events("b").filter((t) => t.output.type === "opened").length, 1);
  link.runFor(10_000);
  assertEquals(link.sent("a", "peer_connect").length, 3, "connect stops once open");
});

Deno.test("PeerSession delivers data sealed before a lost accept once a copy of the accept gets through", () => {
  const link = new Link({ drop: dropFirst(1, "b", "peer_accept") });
  assert(link.runUntil(5000, () => link.b?.state === "open"));
  assertEquals(link.a.state, "connecting");
  link.send("b", "hello before the accept");
  // Alice cannot open it without message 2: she waits for the answer to her next connect.
  assert(link.runUntil(5000, () => link.a.state === "open"));
  assertEquals(link.now, 520, "opened by the accept that answered the copy of the connect");
  assert(link.runUntil(10_000, () => link.texts("a").length === 1));
  assertEquals(link.texts("a"), ["hello before the accept"]);
  assert(link.runUntil(10_000, () => link.events("b").some((t) => t.output.type === "acked")));
});

Deno.test("PeerSession repeats its accept with its traffic until the requester's first datagram opens", () => {
  // The first accept is lost, and so is every copy of the connect: only Bob's
  // traffic can bring Alice the keys.
  let connects = 0;
  let accepts = 0;
  const link = new Link({
    drop: (from, message) =>
      (from === "a" && message.type === "peer_connect" && connects++ > 0) ||
      (from === "b" && message.type === "peer_accept" && accepts++ === 0),
  });
  assert(link.runUntil(5000, () => link.b?.state === "open"));
  link.send("b", "are you there?");
  assert(link.runUntil(10_000, () => link.texts("a").length === 1));
  assertEquals(link.a.state, "open");
  const sent = link.sent("b", "peer_accept").length;
  assert(sent >= 2, `${sent} accepts`);
  // Once Alice's ack opened at Bob, the accept rides no more.
  link.runFor(1000);
  const settled = link.sent("b", "peer_accept").length;
  link.send("b", "good");
  link.runFor(5000);
  assertEquals(link.sent("b", "peer_accept").length, settled);
  assertEquals(link.texts("a"), ["are you there?", "good"]);
});

Deno.test("PeerSession reject closes both sides with the reason", () => {
  const link = new Link({ autoAccept: false });
  assert(link.runUntil(5000, () => link.b?.state === "pending"));
  assertThrows(() => link.b!.send(link.now, "too early"), TypeError, "pending");
  link.b!.reject("Bob declined");
  link.drain("b");
  assertEquals(link.sent("b", "peer_reject").map((w) => w.message), [
    { type: "peer_reject", session: SESSION, reason: "Bob declined" },
  ]);
  assertEquals(link.closed("b").by, "rejected");
  assert(link.runUntil(5000, () => link.a.state === "closed"));
  const closed = link.closed("a");
  assertEquals(closed.by, "rejected");
  assertEquals(closed.reason, '"Bob" refused: Bob declined');
  assertEquals(link.a.nextTimeout(), undefined);
  assertEquals(link.b!.nextTimeout(), undefined);
});

Deno.test("PeerSession answers a connect retransmitted after a lost reject with the reject again", () => {
  const link = new Link({ autoAccept: false, drop: dropFirst(1, "b", "peer_reject") });
  assert(link.runUntil(5000, () => link.b?.state === "pending"));
  link.b!.reject("busy");
  link.drain("b");
  assert(link.runUntil(10_000, () => link.a.state === "closed"));
  assertEquals(times(link.sent("a", "peer_connect")), [0, 500]);
  assertEquals(link.sent("b", "peer_reject").map((w) => w.dropped), [true, false]);
  assertEquals(link.closed("a").by, "rejected");
  assertEquals(link.closed("a").reason, '"Bob" refused: busy');
  assertEquals(link.closed("b").by, "rejected", "Bob closed once, at his reject");
});

/** Sends of a connect nobody answers, and when it gave up. */
function unansweredConnect(
  retry: RetryPolicy,
  seed = 1,
): { sends: number[]; closed: ReturnType<Link["closed"]> } {
  const link = new Link({ retry, seed, drop: () => true });
  assert(link.runUntil(10 * retry.giveUpMs, () => link.a.state === "closed"), "never gave up");
  return { sends: times(link.sent("a", "peer_connect")), closed: link.closed("a") };
}

Deno.test("PeerSession retransmits an unanswered connect with backoff and times out at the give-up time", () => {
  const { sends, closed } = unansweredConnect(NO_JITTER);
  assertEquals(sends, [0, 500, 1500, 3500, 7500, 15500, 23500]);
  assertEquals(closed.by, "timeout");
  assertEquals(closed.reason, '"Bob" did not answer within 30 s');
  assertEquals(closed.at, NO_JITTER.giveUpMs);
  for (const giveUpMs of [3000, 10_000]) {
    const run = unansweredConnect({ ...NO_JITTER, giveUpMs });
    assertEquals(run.closed.at, giveUpMs);
    assertEquals(run.closed.reason, `"Bob" did not answer within ${giveUpMs / 1000} s`);
  }
  // With jitter the gaps stay within ±20% of 500 ms doubling to 8 s.
  for (let seed = 1; seed <= 30; seed++) {
    const run = unansweredConnect(DEFAULT_RETRY_POLICY, seed);
    const gaps = run.sends.slice(1).map((t, i) => t - run.sends[i]);
    gaps.forEach((gap, i) => {
      const nominal = Math.min(500 * 2 ** i, 8000);
      assert(gap >= nominal * 0.8 - 1e-9 && gap <= nominal * 1.2 + 1e-9, `seed ${seed}: ${gap}`);
    });
    assert(run.sends.at(-1)! < DEFAULT_RETRY_POLICY.giveUpMs, `seed ${seed}: sent after give-up`);
    assertEquals(run.closed.at, DEFAULT_RETRY_POLICY.giveUpMs, `seed ${seed}: gave up late`);
  }
});

Deno.test("PeerSession expires an incoming request nobody accepts, and tells the requester", () => {
  const random = new SeededRandom(3);
  const connect = forgeInitiation({
    session: SESSION,
    keys: ALICE_KEYS,
    to: BOB_KEYS.publicKey,
    name: "Alice",
  });
  const message = decodeMessage(connect) as MessageOf<"peer_connect">;
  const read = readInitiation(BOB_KEYS, message, random);
  const session = new PeerSession(1000, {
    id: SESSION,
    ownName: "Bob",
    peerName: "Alice",
    address: ALICE,
    outgoing: false,
    random,
    retry: NO_JITTER,
    cipher: new PeerCipher({
      session: SESSION,
      staticKeyPair: BOB_KEYS,
      remoteKey: read.remoteKey,
      random,
    }),
  });
  assertEquals(session.state, "verifying");
  assertEquals(session.poll(), undefined, "an incoming session sends nothing by itself");
  // accept and send are refused before the server confirmed the name.
  assertThrows(() => session.accept(1001), TypeError, "verifying");
  assertThrows(() => session.send(1001, "hi"), TypeError, "verifying");
  // The time to accept counts from the verification.
  session.verified(2000, read, connect, PSK);
  assertEquals(session.state, "pending");
  assertEquals(session.nextTimeout(), 32_000);
  session.onTimeout(31_999);
  assertEquals(session.poll(), undefined);
  session.onTimeout(32_000);
  assertEquals(session.state, "closed");
  const reject = rejectOf(session.poll());
  assertEquals(reject.to, ALICE);
  assertEquals(reject.message.session, SESSION);
  assertStringIncludes(reject.message.reason, "not accepted");
  const closed = session.poll();
  if (closed?.type !== "closed") throw new Error(`expected closed, got ${JSON.stringify(closed)}`);
  assertEquals(closed.by, "timeout");
  assertStringIncludes(closed.reason, 'from "Alice" was not accepted in 30 s');
  assertEquals(session.nextTimeout(), undefined);
  assertThrows(() => session.accept(32_001), TypeError, "closed");
  // A late copy of the connect gets the same answer.
  session.handle(32_500, ALICE, message);
  assertEquals(rejectOf(session.poll()).message.reason, reject.message.reason);
  // In clear: no keys were ever made.
  assertEquals(session.cipher.hasKeys, false);
});

Deno.test("PeerSession connect fails as refused when the request expires unanswered", () => {
  // Bob verifies at once but never accepts. Alice waits 10 s, Bob 5 s: his
  // expiry reaches her as a reject that says why.
  const link = new Link({
    autoAccept: false,
    retry: { ...NO_JITTER, giveUpMs: 10_000 },
    bobRetry: { ...NO_JITTER, giveUpMs: 5000 },
  });
  assert(link.runUntil(60_000, () => link.b?.state === "closed"));
  assertEquals(link.closed("b").at, 5010, "5 s after the request arrived");
  assertEquals(link.closed("b").by, "timeout");
  assert(link.runUntil(60_000, () => link.a.state === "closed"));
  assertEquals(link.closed("a").by, "rejected");
  assertStringIncludes(link.closed("a").reason, "not accepted");
  assert(link.closed("a").at < 10_000, "before Alice's own give-up");
});

// --- Messages over a lossy link ------------------------------------------------

Deno.test("PeerSession delivers text both ways in order, exactly once, over a lossy link", () => {
  for (let seed = 1; seed <= 25; seed++) {
    const link = new Link({ seed, loss: 0.2, duplicate: 0.1, delayMs: [5, 60] });
    assert(link.runUntil(60_000, () => link.bothOpen()), `seed ${seed}: never opened`);
    const sent: Record<Side, string[]> = { a: [], b: [] };
    const ids: Record<Side, number[]> = { a: [], b: [] };
    // 60 messages each way, one every 10 ms from both sides; some span
    // several segments, some are not ASCII.
    for (let i = 0; i < 60; i++) {
      for (const side of ["a", "b"] as const) {
        const text = i % 17 === 5
          ? `${side}${i} ` + "ü".repeat(700 + i)
          : `${side === "a" ? "Alice" : "Bob"} #${i} ✓`;
        sent[side].push(text);
        ids[side].push(link.send(side, text));
      }
      link.runFor(10);
    }
    const allAcked = (side: Side) =>
      link.outputs[side].filter((t) => t.output.type === "acked").length === 60;
    assert(
      link.runUntil(link.now + 120_000, () => allAcked("a") && allAcked("b")),
      `seed ${seed}: not everything was acknowledged`,
    );
    assertEquals(link.texts("b"), sent.a, `seed ${seed}: Alice to Bob`);
    assertEquals(link.texts("a"), sent.b, `seed ${seed}: Bob to Alice`);
    for (const side of ["a", "b"] as const) {
      const indexes = link.outputs[side].flatMap((t) =>
        t.output.type === "message" ? [t.output.index] : []
      );
      assertEquals(indexes, [...indexes.keys()], `seed ${seed}: indexes count from 0`);
      const acked = link.outputs[side].flatMap((t) =>
        t.output.type === "acked" ? [t.output.id] : []
      );
      assertEquals(acked.toSorted((x, y) => x - y), ids[side], `seed ${seed}: acked ids`);
      assertEquals(link.session(side).counts, { sent: 60, received: 60 });
      assertEquals(link.session(side).state, "open");
    }
    const lost = link.wire.filter((w) => w.dropped).length;
    assert(lost > 0, `seed ${seed}: the link lost nothing`);
  }
});

// --- Terminate -----------------------------------------------------------------

Deno.test("PeerSession terminate waits until every sent message is acknowledged", () => {
  // Every first transmission of Alice's data is lost: each needs a retransmission.
  const seen = new Set<number>();
  const link = new Link({
    drop: (from, message) => {
      if (from !== "a" || message.type !== "peer_data" || seen.has(message.seq)) return false;
      seen.add(message.seq);
      return true;
    },
  });
  assert(link.runUntil(5000, () => link.bothOpen()));
  for (let i = 0; i < 5; i++) link.send("a", `last words ${i}`);
  link.terminate("a", "Alice ended the session");
  assertEquals(link.a.state, "closing");
  assertEquals(link.sent("a", "peer_terminate").length, 0, "nothing acked yet: no terminate");
  assert(link.runUntil(60_000, () => link.a.state === "closed" && link.b?.state === "closed"));
  const order = link.outputs.a.map((t) =>
    t.output.type === "send" ? t.output.sent.type : t.output.type
  );
  const firstTerminate = order.indexOf("peer_terminate");
  const lastAcked = order.lastIndexOf("acked");
  assertEquals(order.filter((o) => o === "acked").length, 5);
  assert(firstTerminate > lastAcked, `terminate went before the last ack: ${order.join(",")}`);
  assertEquals(link.texts("b"), [0, 1, 2, 3, 4].map((i) => `last words ${i}`));
  // Bob had everything before he heard the terminate.
  const bOrder = link.events("b").map((t) => t.output.type);
  assertEquals(bOrder.lastIndexOf("message") < bOrder.indexOf("closed"), true);
  assertEquals(link.closed("b").by, "peer");
  assertEquals(link.closed("b").reason, "Alice ended the session");
  assertEquals(link.sent("b", "peer_terminate_ok").length, 1);
  assertEquals(link.closed("a").by, "us");
  assertEquals(link.sent("a", "peer_terminate").length, 1);
  assertEquals(link.a.nextTimeout(), undefined);
  assertEquals(link.b!.nextTimeout(), undefined);
});

Deno.test("PeerSession terminate on an idle open session goes at once", () => {
  const link = new Link();
  assert(link.runUntil(5000, () => link.bothOpen()));
  link.terminate("b", "Bob is done");
  assertEquals(link.sent("b", "peer_terminate").map((w) => w.message), [
    { type: "peer_terminate", session: SESSION, cumulative: 0, reason: "Bob is done" },
  ]);
  assert(link.runUntil(5000, () => link.a.state === "closed" && link.b?.state === "closed"));
  assertEquals(link.closed("b").by, "us");
  assertEquals(link.closed("a").by, "peer");
  // A second terminate or a late copy changes nothing.
  link.terminate("b", "again");
  assertEquals(link.sent("b", "peer_terminate").length, 1);
});

Deno.test("PeerSession retransmits terminate until terminate_ok gets through", () => {
  const link = new Link({ drop: dropFirst(2, "b", "peer_terminate_ok") });
  assert(link.runUntil(5000, () => link.bothOpen()));
  const start = link.now;
  link.terminate("a", "bye");
  assert(link.runUntil(60_000, () => link.a.state === "closed"));
  assertEquals(times(link.sent("a", "peer_terminate")).map((t) => t - start), [0, 500, 1500]);
  // Bob, closed after the first, answers every copy.
  assertEquals(link.sent("b", "peer_terminate_ok").map((w) => w.dropped), [true, true, false]);
  assertEquals(link.closed("a").by, "us");
  assertEquals(link.closed("b").by, "peer");
  link.runFor(60_000);
  assertEquals(link.sent("a", "peer_terminate").length, 3);
});

Deno.test("PeerSession terminate gives up after a few unanswered copies, not the give-up time", () => {
  // Bob answers, but nothing of his gets through: as when he exits at once
  // and his peer_terminate_ok is lost.
  let cut = false;
  const link = new Link({ drop: (from) => from === "b" && cut });
  assert(link.runUntil(5000, () => link.bothOpen()));
  cut = true;
  const start = link.now;
  link.terminate("a", "bye");
  assert(link.runUntil(start + 200_000, () => link.a.state === "closed"));
  const closed = link.closed("a");
  assertEquals(closed.by, "timeout");
  assertEquals(closed.reason, `"Bob" did not confirm the end of the session`);
  const sends = times(link.sent("a", "peer_terminate")).map((t) => t - start);
  assertEquals(sends.length, TERMINATE_ATTEMPTS);
  // Sent at 0, 0.5, 1.5 and 3.5 s; closed once the last one's 4 s passed.
  assertEquals(sends, [0, 500, 1500, 3500]);
  assertEquals(closed.at - start, 7500);
  assertEquals(link.a.nextTimeout(), undefined);
});

Deno.test("PeerSession closes both sides when they terminate at the same time", () => {
  const link = new Link();
  assert(link.runUntil(5000, () => link.bothOpen()));
  link.terminate("a", "Alice ended the session");
  link.terminate("b", "Bob ended the session");
  assert(link.runUntil(60_000, () => link.a.state === "closed" && link.b?.state === "closed"));
  link.runFor(60_000);
  for (const side of ["a", "b"] as const) {
    // Each asked for the end and got it: the other's terminate is as good as an ok.
    assertEquals(link.closed(side).by, "us");
    assertEquals(link.sent(side, "peer_terminate").length, 1, `${side} sent one terminate`);
    assertEquals(link.session(side).nextTimeout(), undefined);
  }
});

Deno.test("PeerSession closes as dead when the peer goes silent", () => {
  // Idle session: keepalives find nobody.
  let silent = false;
  const idle = new Link({ drop: (from) => from === "b" && silent });
  assert(idle.runUntil(5000, () => idle.bothOpen()));
  silent = true;
  const openedAt = idle.now;
  assert(idle.runUntil(openedAt + 5 * DEAD_AFTER_MS, () => idle.a.state === "closed"));
  const closed = idle.closed("a");
  assertEquals(closed.by, "dead");
  assertStringIncludes(closed.reason, '"Bob" stopped answering');
  assert(closed.at - openedAt <= DEAD_AFTER_MS, `dead after ${closed.at - openedAt} ms`);
  assert(idle.sent("a", "peer_keepalive").length > 0, "keepalives were tried");

  // Busy session: a message that never gets acknowledged.
  let cut = false;
  const busy = new Link({ drop: (from) => from === "b" && cut });
  assert(busy.runUntil(5000, () => busy.bothOpen()));
  busy.send("a", "before");
  busy.runFor(100);
  cut = true;
  const cutAt = busy.now;
  busy.send("a", "into the void");
  assert(busy.runUntil(cutAt + 5 * DEAD_AFTER_MS, () => busy.a.state === "closed"));
  assertEquals(busy.closed("a").by, "dead");
  assert(busy.closed("a").at - cutAt <= DEAD_AFTER_MS, `dead after ${busy.closed("a").at - cutAt}`);
  assertEquals(busy.events("a").filter((t) => t.output.type === "acked").length, 1);
  assertThrows(() => busy.a.send(busy.now, "more"), TypeError, "closed");
});

Deno.test("PeerSession keeps an idle session alive for 10 minutes over a 30% lossy link", () => {
  // Only one side sends keepalives (the other only acks them): with the
  // product's channel options a live peer is never taken for dead here.
  for (let seed = 1; seed <= 20; seed++) {
    const link = new Link({ seed, loss: 0.3, delayMs: [5, 40] });
    assert(link.runUntil(60_000, () => link.bothOpen()), `seed ${seed}: never opened`);
    link.runFor(600_000);
    assertEquals([link.a.state, link.b!.state], ["open", "open"], `seed ${seed}`);
    assert(link.sent("a", "peer_keepalive").length + link.sent("b", "peer_keepalive").length > 0);
    // The keys expire after 3 minutes: the requester renewed them (every 2 minutes).
    assert(link.a.cipher.handshakes >= 5, `seed ${seed}: ${link.a.cipher.handshakes} handshakes`);
    // Bob answered every rekey that reached him, those whose answer was lost too.
    assert(link.b!.cipher.handshakes >= link.a.cipher.handshakes);
  }
});

Deno.test("PeerSession terminate acknowledges what its sender received", () => {
  // Alice's acks are all lost: only her terminate can tell Bob his message arrived.
  let cut = false;
  const link = new Link({
    drop: (from, message) => cut && from === "a" && message.type === "peer_ack",
  });
  assert(link.runUntil(5000, () => link.bothOpen()));
  cut = true;
  const id = link.send("b", "last words");
  assert(link.runUntil(link.now + 5000, () => link.texts("a").length === 1));
  link.terminate("a", "done");
  const [terminate] = link.sent("a", "peer_terminate");
  assertEquals(terminate.message, {
    type: "peer_terminate",
    session: SESSION,
    cumulative: 1,
    reason: "done",
  });
  assert(link.runUntil(link.now + 60_000, () => link.b?.state === "closed"));
  const outputs = link.events("b").map((t) => t.output);
  const acked = outputs.findIndex((o) => o.type === "acked" && o.id === id);
  assert(acked >= 0, `Bob never learnt his message arrived: ${JSON.stringify(outputs)}`);
  assert(acked < outputs.findIndex((o) => o.type === "closed"), "acked before closed");
  assertEquals(link.closed("b").by, "peer");
  assertEquals(link.texts("a"), ["last words"], "delivered once, retransmissions discarded");
});

// --- Wire mapping --------------------------------------------------------------

Deno.test("messageOf() and segmentOf() round-trip every segment kind through the codec", () => {
  const payload = new Uint8Array(MAX_PEER_PAYLOAD_BYTES).map((_, i) => (i * 37) & 0xff);
  const segments: Segment[] = [
    { kind: "data", seq: 0, fragment: 0, fragments: 1, payload: new Uint8Array(0) },
    { kind: "data", seq: 0xffff_fffe, fragment: 953, fragments: 954, payload },
    { kind: "ack", cumulative: 0, ranges: [], window: 128 },
    {
      kind: "ack",
      cumulative: 0xffff_fff0,
      ranges: Array.from({ length: MAX_SACK_RANGES }, (_, i) => ({
        start: 0xffff_0000 + 4 * i,
        end: 0xffff_0000 + 4 * i + 2,
      })),
      window: 0xffff_ffff,
    },
    { kind: "keepalive" },
  ];
  const id = "fedcba9876543210";
  for (const segment of segments) {
    const message = messageOf(id, segment);
    const bytes = encodeMessage(message);
    assert(
      bytes.length <= MAX_DATAGRAM_BYTES,
      `${segment.kind} takes ${bytes.length} bytes, over ${MAX_DATAGRAM_BYTES}`,
    );
    const decoded = decodeMessage(bytes) as PeerInnerMessage;
    assertEquals(decoded, message);
    assertEquals(decoded.session, id);
    assertEquals(segmentOf(decoded), segment);
  }
  // The full-size data segment is the largest datagram peers exchange.
  const full = encodeMessage(messageOf(id, segments[1]));
  assert(full.length > MAX_PEER_PAYLOAD_BYTES && full.length <= MAX_DATAGRAM_BYTES);
  // A full-size payload from a real session fits too.
  const link = new Link();
  assert(link.runUntil(5000, () => link.bothOpen()));
  link.send("a", "x".repeat(3 * MAX_PEER_PAYLOAD_BYTES));
  link.runFor(1000);
  const data = link.sent("a", "peer_data");
  assert(data.some((w) => w.message.type === "peer_data" && w.message.payload.length === 1100));
  // Sealed, the largest datagram of a session still fits.
  const sealed = encodeMessage({
    type: "peer_sealed",
    session: id,
    counter: Number.MAX_SAFE_INTEGER,
    sealed: new Uint8Array(full.length + 16),
  });
  assertEquals(sealed.length, 1160);
  assert(sealed.length <= MAX_DATAGRAM_BYTES);
  assertEquals(link.texts("b"), ["x".repeat(3 * MAX_PEER_PAYLOAD_BYTES)]);
});

Deno.test("the handshake messages round-trip through the codec", () => {
  const messages: PeerMessage[] = [
    { type: "peer_connect", session: SESSION, handshake: new Uint8Array(300).fill(7) },
    { type: "peer_accept", session: SESSION, handshake: new Uint8Array(48).fill(8) },
    { type: "peer_reject", session: SESSION, reason: "r".repeat(300) },
    { type: "peer_terminate", session: SESSION, cumulative: 0xffff_fffe, reason: "bye" },
    { type: "peer_terminate_ok", session: SESSION },
  ];
  for (const message of messages) {
    const bytes = encodeMessage(message);
    assert(bytes.length <= MAX_DATAGRAM_BYTES);
    assertEquals(decodeMessage(bytes), message);
  }
});

// --- The client core -------------------------------------------------------------

/** One client core in a {@linkcode World}. */
interface Node {
  readonly name: string;
  readonly address: PeerAddress;
  readonly core: ClientCore;
  readonly results: CommandResult[];
  readonly events: ClientEvent[];
  /** Datagrams this core sent to other clients, with their destination and what they carry. */
  readonly peerSends: { to: PeerAddress; message: PeerSent; bytes: Uint8Array }[];
  /** Its static key pair, which the stand-in server vouches for. */
  readonly keys: KeyPair;
}

interface Packet {
  readonly at: number;
  readonly seq: number;
  readonly from: PeerAddress;
  readonly to: PeerAddress | "server";
  readonly bytes: Uint8Array;
  /** A reply of the stand-in server. */
  readonly fromServer?: boolean;
}

const TOKEN_OF = (i: number) => new Uint8Array(16).fill(i);

/**
 * Client cores on a perfect network (5 ms one way) with a stand-in server
 * that answers hello, register, lookup (from where each client registered),
 * heartbeat and logout.
 */
class World {
  now = 1_000_000;
  /** Peer key limits of the cores added (tests shorten them to see rekeys). */
  peerKeyLimits: Partial<TransportLimits> | undefined;
  /** Lookups the server answered. */
  lookups = 0;
  /** Lookups the server still answers `busy` (an overloaded or just restarted server). */
  busyLookups = 0;
  readonly nodes: Node[] = [];
  #flight: Packet[] = [];
  #seq = 0;
  #online = new Map<
    string,
    { name: string; address: PeerAddress; token: Uint8Array; key: Uint8Array }
  >();
  #introductions = new StandInKeys();

  add(name: string, address: PeerAddress, traverse = false): Node {
    const keys = keyPairFromPrivateKey(new Uint8Array(32).fill(this.nodes.length + 1));
    const node: Node = {
      name,
      address,
      keys,
      core: new ClientCore({
        random: new SeededRandom(this.nodes.length + 7),
        staticKeyPair: keys,
        peerKeyLimits: this.peerKeyLimits,
        retry: NO_JITTER,
        name,
        udpPort: address.port,
        tcpPort: 5001,
        via: "udp",
        server: "127.0.0.1:3000",
        // This world's server only looks up and drops `introduce`, as a server
        // without introductions would (tests/nat_simulation_test.ts has them).
        traverse,
      }),
      results: [],
      events: [],
      peerSends: [],
    };
    this.nodes.push(node);
    this.run(node, { kind: "hello" });
    this.settle();
    this.run(node, { kind: "register" });
    this.settle();
    assertEquals(node.results.map((r) => r.ok), [true, true], `${name} registered`);
    node.results.length = 0;
    return node;
  }

  run(node: Node, command: CoreCommand): void {
    node.core.run(this.now, command);
    this.#drain(node);
  }

  /** Runs a command and everything it causes until it has a result. */
  command(node: Node, command: CoreCommand, maxMs = 120_000): CommandResult {
    const before = node.results.length;
    this.run(node, command);
    this.runUntil(this.now + maxMs, () => node.results.length > before);
    assertEquals(node.results.length, before + 1, `${command.kind} has a result`);
    return node.results[before];
  }

  /** Goes offline as `exit` does: sessions are ended without waiting. */
  leave(node: Node): void {
    node.core.leave(this.now);
    this.#drain(node);
  }

  /** A message from the server to a node, with the node's own token where it takes one. */
  fromServer(to: Node, message: (token: Uint8Array) => Message): void {
    const token = this.#online.get(nameKey(to.name))!.token;
    this.#flight.push({
      at: this.now + 5,
      seq: this.#seq++,
      from: to.address,
      to: to.address,
      bytes: encodeMessage(message(token)),
      fromServer: true,
    });
  }

  /** A datagram from anywhere, as a forger on the network would send it. */
  inject(from: PeerAddress, to: Node, bytes: Uint8Array): void {
    this.#push(from, to.address, bytes);
  }

  #push(from: PeerAddress, to: PeerAddress | "server", bytes: Uint8Array): void {
    this.#flight.push({ at: this.now + 5, seq: this.#seq++, from, to, bytes });
  }

  #drain(node: Node): void {
    for (let out = node.core.poll(); out !== undefined; out = node.core.poll()) {
      switch (out.type) {
        case "result":
          node.results.push(out.result);
          break;
        case "event":
          node.events.push(out.event);
          break;
        case "peer_send":
          node.peerSends.push({ to: out.to, message: out.sent, bytes: out.bytes });
          this.#push(node.address, out.to, out.bytes);
          break;
        case "send":
          this.#push(node.address, "server", encodeMessage(out.message));
          break;
        default:
          break;
      }
    }
  }

  #serve(from: PeerAddress, message: Message): Message | undefined {
    switch (message.type) {
      case "hello":
        return {
          type: "hello_ok",
          reqId: message.reqId,
          tcpPort: 3001,
          serverVersion: "test",
          auth: AUTH_MODES.open,
          leaseMs: 30_000,
          serverKey: new Uint8Array(32),
        };
      case "register": {
        const token = TOKEN_OF(this.#online.size + 1);
        const key = this.nodes.find((n) => sameAddress(n.address, from))!.keys.publicKey;
        this.#online.set(nameKey(message.name), { name: message.name, address: from, token, key });
        return { type: "register_ok", reqId: message.reqId, token };
      }
      case "lookup": {
        this.lookups++;
        if (this.busyLookups > 0) {
          this.busyLookups--;
          return { type: "error", reqId: message.reqId, code: ERROR_CODES.busy, message: "busy" };
        }
        const found = this.#online.get(nameKey(message.name));
        if (found === undefined) {
          return {
            type: "error",
            reqId: message.reqId,
            code: ERROR_CODES.not_online,
            message: `"${message.name}" is not online`,
          };
        }
        const requester = this.nodes.find((n) => sameAddress(n.address, from))!.keys.publicKey;
        return {
          type: "lookup_ok",
          reqId: message.reqId,
          name: found.name,
          ip: found.address.ip,
          udpPort: found.address.port,
          tcpPort: 5001,
          onlineMs: 1000,
          key: found.key,
          ...this.#introductions.introduce(requester, found.key, message.nonce),
        };
      }
      case "heartbeat":
        return { type: "heartbeat_ok", reqId: message.reqId };
      case "list":
        return {
          type: "list_page",
          reqId: message.reqId,
          total: this.#online.size,
          more: 0,
          clients: [...this.#online.values()].map((c) => ({
            name: c.name,
            ip: c.address.ip,
            udpPort: c.address.port,
            tcpPort: 5001,
            onlineMs: 1000,
          })),
        };
      case "logout":
        return { type: "logout_ok", reqId: message.reqId };
      default:
        return undefined;
    }
  }

  #deliver(packet: Packet): void {
    if (packet.to !== "server" && !packet.fromServer) {
      const node = this.nodes.find((n) => sameAddress(n.address, packet.to as PeerAddress));
      node?.core.handlePeer(this.now, packet.from, packet.bytes);
      if (node !== undefined) this.#drain(node);
      return;
    }
    const message = decodeMessage(packet.bytes);
    if (packet.to === "server") {
      const reply = this.#serve(packet.from, message);
      if (reply !== undefined) {
        this.#flight.push({
          at: this.now + 5,
          seq: this.#seq++,
          from: packet.from,
          to: packet.from,
          bytes: encodeMessage(reply),
          fromServer: true,
        });
      }
      return;
    }
    const node = this.nodes.find((n) => sameAddress(n.address, packet.to as PeerAddress));
    if (node === undefined) return;
    node.core.handle(this.now, message);
    this.#drain(node);
  }

  runUntil(until: number, stop: () => boolean = () => false): boolean {
    for (let guard = 0; guard < 1_000_000; guard++) {
      if (stop()) return true;
      this.#flight.sort((x, y) => x.at - y.at || x.seq - y.seq);
      const times = [
        this.#flight[0]?.at,
        ...this.nodes.map((n) => n.core.nextTimeout()),
      ].filter((t): t is number => t !== undefined);
      const next = times.length === 0 ? undefined : Math.min(...times);
      if (next === undefined || next > until) {
        this.now = Math.max(this.now, until);
        return stop();
      }
      this.now = Math.max(this.now, next);
      while (this.#flight.length > 0 && this.#flight[0].at <= this.now) {
        this.#deliver(this.#flight.shift()!);
      }
      for (const node of this.nodes) {
        const at = node.core.nextTimeout();
        if (at !== undefined && at <= this.now) {
          node.core.onTimeout(this.now);
          this.#drain(node);
        }
      }
    }
    throw new Error("The world never settled");
  }

  /** Runs until nothing is in flight (timers aside). */
  settle(): void {
    this.runUntil(this.now + 60_000, () => this.#flight.length === 0);
  }
}

function sameAddress(a: PeerAddress, b: PeerAddress): boolean {
  return a.ip === b.ip && a.port === b.port;
}

function okResult(result: CommandResult): Extract<CommandResult, { ok: true }> {
  if (!result.ok) throw new Error(`expected success, got ${result.code}: ${result.error}`);
  return result;
}

function failed(result: CommandResult): Extract<CommandResult, { ok: false }> {
  if (result.ok) throw new Error(`expected a failure, got: ${result.command}`);
  return result;
}

/** A result's command and the peer it names (`name` or `to`), for connect, accept, send, terminate. */
function done(result: CommandResult): [string, string] {
  const r = okResult(result);
  return [r.command, String("name" in r ? r.name : "to" in r ? r.to : "")];
}

function kinds(node: Node): string[] {
  return node.events.map((e) => e.kind);
}

/** Alice connects to Bob, who accepts; both commands succeed. */
function connectPair(world: World, alice: Node, bob: Node): void {
  const bobBefore = bob.results.length;
  world.run(bob, { kind: "accept", name: alice.name });
  const r = world.command(alice, { kind: "connect", name: bob.name });
  okResult(r);
  world.runUntil(world.now + 10_000, () => bob.results.length > bobBefore);
  assertEquals(done(bob.results[bobBefore]), ["accept", alice.name]);
}

Deno.test("ClientCore connects straight to the peer, a second late, when the server never answers introduce", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE, true);
  const bob = world.add("Bob", BOB, true);
  const start = world.now;
  connectPair(world, alice, bob);
  const took = world.now - start;
  assert(took >= 1_000 && took < 2_000, `connected after ${took} ms`);
  assert(alice.core.peers.every((p) => p.state === "open"));
});

Deno.test("ClientCore refuses a connect request made with a key the server does not vouch for", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  const mallory: PeerAddress = { ip: "10.6.6.6", port: 6666 };
  // Bob waits for a request; a forger with a key pair of its own claims to be Alice.
  world.run(bob, { kind: "accept" });
  const forged = forgeInitiation({
    session: "6666666666666666",
    keys: MALLORY_KEYS,
    to: bob.keys.publicKey,
    name: "Alice",
  });
  world.inject(mallory, bob, forged);
  world.settle();
  const refusals = bob.peerSends.filter((s) => s.message.type === "peer_reject");
  assertEquals(refusals.length, 1);
  assertEquals(refusals[0].to, mallory, "the refusal goes to the forger, not to Alice");
  assertEquals(refusals[0].message.session, "6666666666666666");
  assertEquals(kinds(bob), ["request_refused"]);
  const refused = bob.events[0];
  assertEquals(refused, {
    kind: "request_refused",
    name: "Alice",
    ip: "10.6.6.6",
    udpPort: 6666,
    presentedKey: fingerprint(MALLORY_KEYS.publicKey),
    registered: {
      name: "Alice",
      ip: "10.0.0.1",
      udpPort: 4001,
      key: fingerprint(alice.keys.publicKey),
    },
  });
  assertEquals(bob.results, [], "accept did not take the forged request");
  assertEquals(
    bob.peerSends.filter((s) => sameAddress(s.to, ALICE)).length,
    0,
    "nothing was sent to the real Alice",
  );
  // A copy of the forged connect reaches the closed session: no answer, never shown.
  world.inject(mallory, bob, forged);
  world.settle();
  assertEquals(bob.peerSends.filter((s) => s.message.type === "peer_reject").length, 1);
  assertEquals(kinds(bob), ["request_refused"]);
  // The real Alice still gets through to the waiting accept.
  const r = world.command(alice, { kind: "connect", name: "Bob" });
  assertEquals(done(r), ["connect", "Bob"]);
  world.settle();
  assertEquals(done(bob.results[0]), ["accept", "Alice"]);
  assertEquals(kinds(bob), ["request_refused", "request"]);
});

Deno.test("ClientCore asks again on the next copy of a request whose check got no definite answer", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  world.run(bob, { kind: "accept" });
  // Alice's own lookup is answered; Bob's check of her key meets a busy server.
  world.run(alice, { kind: "connect", name: "Bob" });
  world.runUntil(world.now + 20, () => world.lookups >= 1);
  world.busyLookups = 1;
  world.runUntil(world.now + 400, () => world.lookups >= 2);
  assertEquals(world.busyLookups, 0, "Bob's first check was refused as busy");
  world.runUntil(world.now + 200);
  // Before, Bob refused Alice at once ("could not verify"); now he waits, silent,
  // and her next copy of the same peer_connect is checked again, and accepted.
  assertEquals(bob.peerSends.filter((s) => s.message.type === "peer_reject").length, 0);
  assertEquals(kinds(bob), []);
  world.runUntil(world.now + 10_000, () => bob.results.length > 0);
  assertEquals(world.lookups, 3);
  assertEquals(done(bob.results[0]), ["accept", "Alice"]);
  assertEquals(kinds(bob), ["request"]);
});

Deno.test("ClientCore bounds the work a flood of requests from many addresses costs", () => {
  const world = new World();
  world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  const before = world.lookups;
  // For one second, 5 requests every 10 ms, each from an address of its own (so
  // within its own budget), each a real handshake message 1 of a stranger's key
  // claiming to be Alice: 500 in all, and each lookup is answered within 10 ms.
  for (let i = 0; i < 500; i++) {
    const session = (0x7000_0000_0000_0000n + BigInt(i)).toString(16);
    world.inject(
      { ip: `10.7.${i >> 8}.${i & 0xff}`, port: 7000 },
      bob,
      forgeInitiation({ session, keys: MALLORY_KEYS, to: bob.keys.publicKey, name: "Alice" }),
    );
    if (i % 5 === 4) world.runUntil(world.now + 10);
  }
  world.settle();
  // The handshake work and the lookups stop at the budget for all addresses (a
  // burst, then so many a second); the rest are dropped unanswered.
  const lookups = world.lookups - before;
  assert(
    lookups >= MAX_REQUEST_WORK_PER_SECOND && lookups <= 2 * MAX_REQUEST_WORK_PER_SECOND + 2,
    `${lookups} lookups for 500 requests`,
  );
  const refusals = bob.peerSends.filter((s) => s.message.type === "peer_reject").length;
  assert(refusals <= lookups, `${refusals} refusals`);
  // A second later the budget is back for a real request.
  world.runUntil(world.now + 1000);
  world.run(bob, { kind: "accept" });
  const alice = world.nodes[0];
  const r = world.command(alice, { kind: "connect", name: "Bob" });
  assertEquals(done(r), ["connect", "Bob"]);
});

Deno.test("ClientCore refuses a connect request from a name that is not online", () => {
  const world = new World();
  const bob = world.add("Bob", BOB);
  const ghost: PeerAddress = { ip: "10.9.9.9", port: 9999 };
  world.inject(
    ghost,
    bob,
    forgeInitiation({
      session: "9999999999999999",
      keys: MALLORY_KEYS,
      to: bob.keys.publicKey,
      name: "Ghost",
    }),
  );
  world.settle();
  assertEquals(kinds(bob), ["request_refused"]);
  const refused = bob.events[0];
  assertStringIncludes(refused.kind === "request_refused" ? refused.error! : "", "is not online");
  assertEquals(bob.peerSends.map((s) => [s.to, s.message.type]), [[ghost, "peer_reject"]]);
  const w = world.command(bob, { kind: "wait", for: "request", withinMs: 2000 });
  assertEquals(failed(w).code, "timeout");
  assertEquals(okResult(world.command(bob, { kind: "peers" })), {
    ok: true,
    command: "peers",
    peers: [],
  });
});

Deno.test("ClientCore send needs @NAME when two sessions are open", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  const carol = world.add("Carol", { ip: "10.0.0.3", port: 4003 });
  connectPair(world, alice, bob);
  connectPair(world, carol, bob);
  const ambiguous = failed(world.command(bob, { kind: "send", text: "hi" }));
  assertEquals(ambiguous.code, "no_session");
  assertStringIncludes(ambiguous.error, '"Alice"');
  assertStringIncludes(ambiguous.error, '"Carol"');
  assertStringIncludes(ambiguous.error, "@NAME");
  assertEquals(bob.peerSends.filter((s) => s.message.type === "peer_data").length, 0);
  const sent = okResult(world.command(bob, { kind: "send", to: "carol", text: "hi Carol" }));
  assertEquals(sent, { ok: true, command: "send", to: "Carol", index: 0 });
  world.settle();
  assertEquals(carol.events.filter((e) => e.kind === "message"), [
    { kind: "message", from: "Bob", text: "hi Carol", index: 0 },
  ]);
  assertEquals(alice.events.filter((e) => e.kind === "message"), []);
  // Alice has one session: she needs no name.
  okResult(world.command(alice, { kind: "send", text: "hi Bob" }));
  const nobody = failed(world.command(alice, { kind: "send", to: "Carol", text: "x" }));
  assertEquals(nobody.code, "no_session");
  assertEquals(nobody.error, 'No open session with "Carol"');
  const peers = okResult(world.command(bob, { kind: "peers" }));
  assertEquals(peers.command === "peers" && peers.peers.map((p) => [p.name, p.state]), [
    ["Alice", "open"],
    ["Carol", "open"],
  ]);
});

Deno.test("ClientCore bare accept and reject ask to name one when two requests are pending", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  const carol = world.add("Carol", { ip: "10.0.0.3", port: 4003 });
  world.run(alice, { kind: "connect", name: "Bob" });
  world.run(carol, { kind: "connect", name: "Bob" });
  world.runUntil(world.now + 1_000);
  assertEquals(kinds(bob), ["request", "request"]);
  for (const kind of ["accept", "reject"] as const) {
    const ambiguous = failed(world.command(bob, { kind }));
    assertEquals(ambiguous.code, "no_request");
    assertEquals(
      ambiguous.error,
      `Requests from "Alice", "Carol" are pending; name one: ${kind} NAME`,
    );
  }
  assertEquals(done(world.command(bob, { kind: "accept", name: "carol" })), ["accept", "Carol"]);
  // One request is left: a bare accept takes it.
  assertEquals(done(world.command(bob, { kind: "accept" })), ["accept", "Alice"]);
});

Deno.test("ClientCore accept waits for a request that comes later", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  world.run(bob, { kind: "accept" });
  assert(bob.core.busy);
  world.runUntil(world.now + 10_000);
  assertEquals(bob.results, [], "still waiting after 10 s");
  const r = world.command(alice, { kind: "connect", name: "Bob" });
  assertEquals(done(r), ["connect", "Bob"]);
  world.settle();
  assertEquals(done(bob.results[0]), ["accept", "Alice"]);
  const sessions = [r, bob.results[0]].map((x) => x.ok && "session" in x ? x.session : "");
  assertEquals(sessions[0], sessions[1], "both name the same session");
  assertEquals(kinds(bob), ["request"]);
  okResult(world.command(alice, { kind: "send", text: "it works" }));
});

Deno.test("ClientCore accept gives up when no request comes in time", () => {
  const world = new World();
  const bob = world.add("Bob", BOB);
  const start = world.now;
  const r = failed(world.command(bob, { kind: "accept" }));
  assertEquals(r.code, "timeout");
  assertEquals(r.error, "No connection request within 30 s");
  assertEquals(world.now - start, NO_JITTER.giveUpMs);
  const named = failed(world.command(bob, { kind: "accept", name: "Alice" }));
  assertEquals(named.error, 'No connection request from "Alice" within 30 s');
  const reject = failed(world.command(bob, { kind: "reject" }));
  assertEquals(reject.code, "no_request");
});

Deno.test("ClientCore wait messages counts messages that came before the wait", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  connectPair(world, alice, bob);
  okResult(world.command(alice, { kind: "send", text: "one" }));
  okResult(world.command(alice, { kind: "send", text: "two" }));
  const now = world.now;
  const waited = okResult(world.command(bob, { kind: "wait", for: "messages", count: 2 }));
  assertEquals(world.now, now, "done at once");
  assertEquals(waited, { ok: true, command: "wait", for: "messages", count: 2 });
  // Waiting for a third completes when it arrives.
  world.run(bob, { kind: "wait", for: "messages", count: 3, name: "alice", withinMs: 10_000 });
  world.runUntil(world.now + 1000);
  assertEquals(bob.results.length, 2, "still waiting");
  okResult(world.command(alice, { kind: "send", text: "three" }));
  world.settle();
  assertEquals(okResult(bob.results[2]), {
    ok: true,
    command: "wait",
    for: "messages",
    count: 3,
    name: "alice",
  });
  // Too many: the wait fails after its time, saying how many came.
  const late = failed(
    world.command(bob, { kind: "wait", for: "messages", count: 5, withinMs: 2000 }),
  );
  assertEquals(late.code, "timeout");
  assertEquals(late.error, "Waited 2 s in vain (3 messages received)");
  assertEquals(
    bob.events.filter((e) => e.kind === "message"),
    ["one", "two", "three"].map((text, index) => ({ kind: "message", from: "Alice", text, index })),
  );
});

Deno.test("ClientCore wait terminate completes for a session that ended before the wait", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  connectPair(world, alice, bob);
  const t = okResult(world.command(alice, { kind: "terminate" }));
  assertEquals(t, { ok: true, command: "terminate", name: "Bob", confirmed: true });
  world.settle();
  assertEquals(kinds(bob), ["request", "peer_ended"]);
  assertEquals(bob.events[1], {
    kind: "peer_ended",
    name: "Alice",
    by: "peer",
    reason: "terminate",
  });
  okResult(world.command(bob, { kind: "wait", for: "terminate", withinMs: 1000 }));
  const send = failed(world.command(bob, { kind: "send", text: "anyone?" }));
  assertEquals(send.error, "No open session; use connect NAME");
});

Deno.test("ClientCore wait terminate reports each end once and only ends the peer made", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  connectPair(world, alice, bob);
  okResult(world.command(alice, { kind: "terminate" }));
  world.settle();
  const first = okResult(world.command(bob, { kind: "wait", for: "terminate", withinMs: 1000 }));
  assertEquals(first, { ok: true, command: "wait", for: "terminate", name: "Alice" });
  // That end was reported: the next wait waits for the next session's end.
  connectPair(world, alice, bob);
  world.run(bob, { kind: "wait", for: "terminate", withinMs: 10_000 });
  world.runUntil(world.now + 1000);
  const waiting = bob.results.length;
  okResult(world.command(alice, { kind: "send", text: "still here" }));
  assertEquals(bob.results.length, waiting, "still waiting while the session is open");
  okResult(world.command(alice, { kind: "terminate" }));
  world.settle();
  okResult(bob.results[waiting]);
  // A refused request and a session Bob ended himself are not waited for.
  world.run(alice, { kind: "connect", name: "Bob" });
  okResult(world.command(bob, { kind: "wait", for: "request", withinMs: 5000 }));
  okResult(world.command(bob, { kind: "reject" }));
  world.settle();
  connectPair(world, alice, bob);
  okResult(world.command(bob, { kind: "terminate" }));
  world.settle();
  const none = failed(world.command(bob, { kind: "wait", for: "terminate", withinMs: 2000 }));
  assertEquals(none.code, "timeout");
});

Deno.test("ClientCore terminate succeeds on both sides when both terminate at once", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  connectPair(world, alice, bob);
  const a = alice.results.length;
  const b = bob.results.length;
  world.run(alice, { kind: "terminate" });
  world.run(bob, { kind: "terminate" });
  world.runUntil(world.now + 120_000, () => alice.results.length > a && bob.results.length > b);
  assertEquals(done(alice.results[a]), ["terminate", "Bob"]);
  assertEquals(done(bob.results[b]), ["terminate", "Alice"]);
  world.settle();
  for (const node of [alice, bob]) {
    assert(node.core.peers.every((p) => p.state === "closed"), `${node.name} left it open`);
    assertEquals(node.core.nextTimeout() !== undefined, true, "heartbeats go on");
  }
});

Deno.test("ClientCore send fails when the peer goes silent", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  connectPair(world, alice, bob);
  // Bob disappears from the world: nothing reaches him, he sends nothing.
  world.nodes.splice(world.nodes.indexOf(bob), 1);
  const start = world.now;
  const r = failed(world.command(alice, { kind: "send", text: "hello?" }));
  assertEquals(r.code, "peer_gone");
  assertStringIncludes(r.error, '"Bob" stopped answering');
  assert(world.now - start <= DEAD_AFTER_MS, `failed after ${world.now - start} ms`);
  assertEquals(kinds(alice).at(-1), "peer_ended");
  const ended = alice.events.at(-1);
  assertEquals(ended?.kind === "peer_ended" && ended.by, "dead");
});

Deno.test("ClientCore fails a running send with a clear message when the peer ends the session", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  connectPair(world, alice, bob);
  const before = alice.results.length;
  // Bob ends the session as Alice sends: his terminate crosses her message.
  world.run(alice, { kind: "send", text: "are you there?" });
  world.run(bob, { kind: "terminate" });
  world.runUntil(world.now + 60_000, () => alice.results.length > before);
  const r = failed(alice.results[before]);
  assertEquals(r.code, "peer_gone");
  assertEquals(r.error, '"Bob" ended the session');
  assertEquals(kinds(alice).at(-1), "peer_ended");
});

Deno.test("ClientCore connect refuses a second session with the same peer and yourself", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  connectPair(world, alice, bob);
  const again = failed(world.command(alice, { kind: "connect", name: "bob" }));
  assertEquals(again.code, "bad_command");
  assertEquals(again.error, 'Already in a session with "Bob"');
  const self = failed(world.command(alice, { kind: "connect", name: "ALICE" }));
  assertEquals(self.code, "bad_command");
  assertEquals(self.error, "You cannot connect to yourself");
  const invalid = failed(world.command(alice, { kind: "connect", name: "a/b" }));
  assertEquals(invalid.code, "invalid_name");
});

Deno.test("ClientCore refuses connect requests while it is logged out", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  okResult(world.command(bob, { kind: "logout" }));
  // The stand-in server still gives Bob's address; Bob himself says no.
  const r = failed(world.command(alice, { kind: "connect", name: "Bob" }));
  assertEquals(r.code, "rejected");
  assertEquals(r.error, '"Bob" refused: the client you called is not logged in');
  assertEquals(kinds(bob), []);
});

Deno.test("parseCommand() reads send @NAME TEXT and the other peer commands", () => {
  assertEquals(parseCommand("send hi there"), { kind: "send", text: "hi there" });
  assertEquals(parseCommand("send @Bob hi there"), { kind: "send", to: "Bob", text: "hi there" });
  assertEquals(parseCommand("connect Alice Smith"), { kind: "connect", name: "Alice Smith" });
  assertEquals(parseCommand("accept"), { kind: "accept" });
  assertEquals(parseCommand("reject Alice Smith"), { kind: "reject", name: "Alice Smith" });
  assertEquals(parseCommand("terminate Bob"), { kind: "terminate", name: "Bob" });
  assertEquals(parseCommand("wait messages 3 from Alice Smith within 5"), {
    kind: "wait",
    for: "messages",
    count: 3,
    name: "Alice Smith",
    withinMs: 5000,
  });
  assertThrows(() => parseCommand("send"), CommandError, "send needs a message");
  assertThrows(() => parseCommand("send @Bob"), CommandError, "send @NAME needs a message");
  assertThrows(() => parseCommand("connect"), CommandError, "connect needs a name");
});

Deno.test({
  name: "parseCommand() reads a quoted name with a space in send @NAME",
  fn() {
    assertEquals(parseCommand('send @"Alice Smith" hi there'), {
      kind: "send",
      to: "Alice Smith",
      text: "hi there",
    });
    const world = new World();
    const alice = world.add("Alice Smith", ALICE);
    const bob = world.add("Bob", BOB);
    const carol = world.add("Carol", { ip: "10.0.0.3", port: 4003 });
    connectPair(world, alice, bob);
    connectPair(world, carol, bob);
    const command = parseCommand('send @"Alice Smith" hi there');
    if (command?.kind !== "send") throw new Error("not a send");
    okResult(world.command(bob, command));
  },
});

Deno.test("ClientCore leave tells open peers that the client left", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  connectPair(world, alice, bob);
  world.run(bob, { kind: "wait", for: "terminate", withinMs: 5000 });
  world.leave(alice);
  world.settle();
  assertEquals(bob.events.at(-1)?.kind, "peer_ended");
  assertEquals(bob.events.at(-1), {
    kind: "peer_ended",
    name: "Alice",
    by: "peer",
    reason: "exit",
  });
  assertEquals(okResult(bob.results.at(-1)!).command, "wait");
});

Deno.test("ClientCore commands on a silent peer's session hold up neither other sessions nor the server", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  const carol = world.add("Carol", { ip: "10.0.0.3", port: 4003 });
  connectPair(world, alice, bob);
  connectPair(world, alice, carol);
  alice.results.length = 0;
  // Carol stops: nothing reaches her, she sends nothing (kill -STOP).
  world.nodes.splice(world.nodes.indexOf(carol), 1);
  const start = world.now;
  world.run(alice, { kind: "send", to: "Carol", text: "are you there?" });
  world.run(alice, { kind: "send", to: "Bob", text: "hello" });
  world.run(alice, { kind: "list" });
  world.run(alice, { kind: "send", to: "carol", text: "still there?" });
  world.runUntil(start + 1000, () => alice.results.length >= 2);
  assert(world.now - start < 100, `Bob's send and list took ${world.now - start} ms`);
  assertEquals(alice.results.map((r) => [r.command, r.ok]).sort(), [["list", true], [
    "send",
    true,
  ]]);
  assertEquals(done(alice.results.find((r) => r.command === "send")!), ["send", "Bob"]);
  assert(alice.core.busy, "the sends to Carol still wait");
  world.settle();
  assertEquals(bob.events.filter((e) => e.kind === "message").map((e) => "text" in e && e.text), [
    "hello",
  ]);
  // Carol's sends end in their order: the first when she is found dead,
  // the second after it, on a session that is no longer open.
  world.runUntil(start + 3 * DEAD_AFTER_MS, () => alice.results.length >= 4);
  const [first, second] = alice.results.slice(2).map(failed);
  assertEquals([first.command, first.code], ["send", "peer_gone"]);
  assertEquals([second.command, second.code], ["send", "no_session"]);
  assert(!alice.core.busy);
});

Deno.test("ClientCore runs commands on one session in order, each after the one before", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  connectPair(world, alice, bob);
  alice.results.length = 0;
  for (const text of ["one", "two", "three"]) {
    world.run(alice, { kind: "send", to: "Bob", text });
  }
  world.run(alice, { kind: "terminate", name: "Bob" });
  // Only the first is on the wire until Bob acknowledges it.
  assertEquals(alice.core.peers[0].counts.sent, 1);
  world.runUntil(world.now + 10_000, () => alice.results.length >= 4);
  assertEquals(alice.results.map((r) => r.command), ["send", "send", "send", "terminate"]);
  assert(alice.results.every((r) => r.ok));
  world.settle();
  assertEquals(
    bob.events.flatMap((e) => e.kind === "message" ? [e.text] : []),
    ["one", "two", "three"],
  );
});

Deno.test("ClientCore drops a flood of connect requests from a stranger without work or answer, and lets its real peer in at once", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  const stranger: PeerAddress = { ip: "10.6.6.6", port: 6666 };
  // 1,000 requests at once, each a new session, in Alice's name and others'.
  for (let i = 0; i < 1000; i++) {
    const session = i.toString(16).padStart(16, "0");
    const name = i % 2 ? "Alice" : `N${i}`;
    world.inject(
      stranger,
      bob,
      forgeInitiation({ session, keys: MALLORY_KEYS, to: bob.keys.publicKey, name }),
    );
  }
  world.settle();
  // A burst of 5 lookups for the stranger's address, refused once answered;
  // every other request was dropped without a session, a lookup or a reply (so
  // a forged source cannot make Bob answer at its sending rate).
  assertEquals(world.lookups, 5);
  const refusals = bob.peerSends.filter((s) => s.message.type === "peer_reject");
  assertEquals(refusals.length, 5);
  assert(bob.core.peers.length <= 5, `${bob.core.peers.length} sessions kept`);
  // Alice, from her own address, is looked up and gets through at once.
  world.run(bob, { kind: "accept" });
  const r = world.command(alice, { kind: "connect", name: "Bob" });
  assertEquals(done(r), ["connect", "Bob"]);
  world.settle();
  assertEquals(done(bob.results[0]), ["accept", "Alice"]);
});

Deno.test("ClientCore keeps at most 8 connect requests waiting; more are refused without a lookup", () => {
  const world = new World();
  const bob = world.add("Bob", BOB);
  const names = Array.from({ length: 10 }, (_, i) => `P${i}`);
  const nodes = names.map((name, i) => world.add(name, { ip: `10.1.0.${i + 1}`, port: 5000 }));
  for (const node of nodes) world.run(node, { kind: "connect", name: "Bob" });
  world.settle();
  const waiting = bob.core.peers.filter((p) => p.state === "pending");
  assertEquals(waiting.length, 8);
  assertEquals(bob.events.filter((e) => e.kind === "request").length, 8);
  const refused = bob.peerSends.filter((s) =>
    s.message.type === "peer_reject" &&
    s.message.reason === "too many requests are waiting for an answer; try again later"
  );
  assertEquals(refused.length >= 2, true, `${refused.length} refused`);
});

Deno.test("ClientCore answers a copy of a real connect from a forged source harmlessly", () => {
  const world = new World();
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  connectPair(world, alice, bob);
  const connect = alice.peerSends.find((s) => s.message.type === "peer_connect")!.bytes;
  const accept = bob.peerSends.find((s) => s.message.type === "peer_accept")!.bytes;
  const mallory: PeerAddress = { ip: "10.6.6.6", port: 6666 };
  const sends = bob.peerSends.length;
  const events = bob.events.length;
  // Alice's own connect, sent again from Mallory's address: a copy, answered with the same
  // accept at the copy's source, which only Alice's keys can use.
  world.inject(mallory, bob, connect);
  world.settle();
  const answers = bob.peerSends.slice(sends);
  assertEquals(answers.map((s) => [s.to, s.message.type]), [[mallory, "peer_accept"]]);
  assertEquals(answers[0].bytes, accept);
  // Moved under another session id, the same handshake opens nothing and gets no answer.
  const moved = connect.slice();
  moved[11] ^= 1;
  world.inject(mallory, bob, moved);
  world.settle();
  assertEquals(bob.peerSends.length, sends + 1);
  assertEquals(bob.events.length, events, "no new request, no refusal");
  // The session still talks to Alice, and only to her.
  const [session] = bob.core.peers;
  assertEquals([session.state, session.address], ["open", ALICE]);
  assertEquals(done(world.command(alice, { kind: "send", text: "still here" })), ["send", "Bob"]);
  assertEquals(bob.events.flatMap((e) => e.kind === "message" ? [e.text] : []), ["still here"]);
  assertEquals(bob.peerSends.slice(sends + 1).filter((s) => !sameAddress(s.to, ALICE)), []);
});

Deno.test("ClientCore answers a version 2 peer_connect with a version 2 peer_reject that says to upgrade", () => {
  const world = new World();
  const bob = world.add("Bob", BOB);
  const old: PeerAddress = { ip: "10.2.2.2", port: 2222 };
  const name = new TextEncoder().encode("Alice");
  const v2 = Uint8Array.of(0x53, 0x57, 0x02, 0x28, 1, 2, 3, 4, 5, 6, 7, 8, 0, name.length, ...name);
  world.inject(old, bob, v2);
  world.settle();
  assertEquals(bob.peerSends.length, 1);
  const [reply] = bob.peerSends;
  assertEquals(reply.to, old);
  assertEquals(reply.bytes[2], 2, "in version 2, which the old client reads");
  const readable = reply.bytes.slice();
  readable[2] = 3;
  assertEquals(decodeMessage(readable), {
    type: "peer_reject",
    session: "0102030405060708",
    reason: VERSION_2_PEER_REASON,
  });
  assertEquals(bob.core.peers.length, 0, "nothing kept");
  // A clear version 3 channel message is not a session's: no answer.
  world.inject(old, bob, encodeMessage({ type: "peer_keepalive", session: "0102030405060708" }));
  world.settle();
  assertEquals(bob.peerSends.length, 1);
});

Deno.test("ClientCore renews peer keys, and drops a replayed older renewal by its timestamp", () => {
  const world = new World();
  world.peerKeyLimits = { rekeyAfterMs: 2000, rejectAfterMs: 60_000 };
  const alice = world.add("Alice", ALICE);
  const bob = world.add("Bob", BOB);
  connectPair(world, alice, bob);
  world.runUntil(world.now + 16_000);
  const connects = alice.peerSends.filter((s) => s.message.type === "peer_connect");
  assert(connects.length >= 3, `${connects.length} handshakes`);
  const [session] = alice.core.peers;
  assertEquals(session.cipher.handshakes, connects.length);
  assertEquals(session.state, "open");
  // Chat goes on under the new keys.
  assertEquals(done(world.command(alice, { kind: "send", text: "renewed" })), ["send", "Bob"]);
  const sends = bob.peerSends.length;
  // An older renewal, replayed from Alice's own address: not newer, dropped unanswered.
  world.inject(ALICE, bob, connects[1].bytes);
  world.settle();
  assertEquals(bob.peerSends.length, sends);
  // The latest is a copy: answered again.
  world.inject(ALICE, bob, connects.at(-1)!.bytes);
  world.settle();
  assertEquals(bob.peerSends.slice(sends).map((s) => s.message.type), ["peer_accept"]);
  assertEquals(bob.core.peers[0].state, "open");
});

Deno.test("ClientCore probes for at most 4 introductions of sessions it does not have, whoever asks for them", () => {
  const world = new World();
  const bob = world.add("Bob", { ip: "192.0.2.20", port: 5000 }, true);
  // A logged-in stranger has the server introduce Bob to 20 made-up
  // sessions, each naming 8 addresses of a victim.
  const victim = (i: number) => ({ ip: `198.51.100.${i + 1}`, port: 9000 });
  for (let n = 0; n < 20; n++) {
    world.fromServer(bob, (token) => ({
      type: "introduction",
      token,
      session: (0x1000 + n).toString(16).padStart(16, "0"),
      name: "Mallory",
      probeKey: new Uint8Array(16).fill(n + 1),
      candidates: Array.from({ length: 8 }, (_, i) => victim(i)),
    }));
  }
  world.runUntil(world.now + 1_000);
  const from = bob.peerSends.length;
  world.runUntil(world.now + 3_000);
  const probing = new Set(
    bob.peerSends.slice(from).filter((s) => s.message.type === "peer_probe").map((s) =>
      s.message.session
    ),
  );
  assert(probing.size > 0, "the newest introductions probe");
  assert(probing.size <= 4, `at most 4 made-up sessions probe at once, not ${probing.size}`);
});
