/**
 * The cryptography of peer sessions on its own: the Noise IKpsk2 handshake
 * in `peer_connect` and `peer_accept`, sealed `peer_sealed` datagrams that
 * refuse every bit flip, truncation, replay and stale counter without moving
 * anything, the session id bound into the handshake, rekeying with key
 * confirmation, and the introduction's timestamps.
 */
import { assert, assertEquals, assertThrows } from "@std/assert";
import {
  decodeIntroduction,
  encodeIntroduction,
  PeerCipher,
  readInitiation,
} from "../lib/client/peer_cipher.ts";
import { CryptoError } from "../lib/crypto/crypto_error.ts";
import {
  compareTimestamps,
  tai64n,
  TimestampRecord,
  TimestampSource,
} from "../lib/crypto/introduction.ts";
import { REPLAY_WINDOW_SIZE } from "../lib/crypto/replay_window.ts";
import { SeededRandom } from "../lib/random.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import { MAX_DATAGRAM_BYTES, type MessageOf, type PeerInnerMessage } from "../lib/wire/messages.ts";
import { ALICE_KEYS, BOB_KEYS, MALLORY_KEYS, NONCE, PSK } from "./_peer_keys.ts";

const SESSION = "0123456789abcdef";
const T0 = Date.UTC(2026, 11, 6, 12);

function intro(name = "Alice", at = T0): Uint8Array {
  return encodeIntroduction({ name, nonce: NONCE, timestamp: tai64n(at) });
}

function connectOf(bytes: Uint8Array): MessageOf<"peer_connect"> {
  const message = decodeMessage(bytes);
  if (message.type !== "peer_connect") throw new Error(`got ${message.type}`);
  return message;
}

function acceptOf(bytes: Uint8Array): MessageOf<"peer_accept"> {
  const message = decodeMessage(bytes);
  if (message.type !== "peer_accept") throw new Error(`got ${message.type}`);
  return message;
}

function sealedOf(bytes: Uint8Array): MessageOf<"peer_sealed"> {
  const message = decodeMessage(bytes);
  if (message.type !== "peer_sealed") throw new Error(`got ${message.type}`);
  return message;
}

/** Alice and Bob after one handshake, with the limits given. */
function pair(limits?: ConstructorParameters<typeof PeerCipher>[0]["limits"]) {
  const random = new SeededRandom(5);
  const alice = new PeerCipher({
    session: SESSION,
    staticKeyPair: ALICE_KEYS,
    remoteKey: BOB_KEYS.publicKey,
    psk: PSK,
    random,
    limits,
  });
  const connect = alice.initiate(T0, intro());
  const read = readInitiation(BOB_KEYS, connectOf(connect), random);
  assertEquals(read.remoteKey, ALICE_KEYS.publicKey);
  assertEquals(read.introduction.name, "Alice");
  const bob = new PeerCipher({
    session: SESSION,
    staticKeyPair: BOB_KEYS,
    remoteKey: read.remoteKey,
    random,
    limits,
  });
  bob.setPsk(PSK);
  const accept = bob.respond(T0, read, connect);
  assert(alice.complete(T0, acceptOf(accept).handshake));
  return { alice, bob, random };
}

const keepalive: PeerInnerMessage = { type: "peer_keepalive", session: SESSION };
const chat = (seq: number, payload?: Uint8Array): MessageOf<"peer_data"> => ({
  type: "peer_data",
  session: SESSION,
  seq,
  fragment: 0,
  fragments: 1,
  payload: payload ?? new TextEncoder().encode(`secret ${seq}`),
});

Deno.test("PeerCipher runs IKpsk2 in peer_connect and peer_accept, then seals both ways", () => {
  const { alice, bob } = pair();
  assert(alice.hasKeys && bob.hasKeys);
  for (let i = 0; i < 3; i++) {
    assertEquals(bob.open(T0, sealedOf(alice.seal(T0, chat(i)))), chat(i));
    assertEquals(alice.open(T0, sealedOf(bob.seal(T0, keepalive))), keepalive);
  }
  // The chat is not in the datagram; a full peer_data fits in one.
  const sealed = alice.seal(T0, chat(9));
  assert(!new TextDecoder().decode(sealed).includes("secret"));
  const full = alice.seal(T0, chat(10, new Uint8Array(1100)));
  assertEquals(full.length, 1160);
  assert(full.length <= MAX_DATAGRAM_BYTES);
});

Deno.test("PeerCipher drops every bit flip, truncation, replay and stale counter without effect", () => {
  const { alice, bob } = pair();
  const first = alice.seal(T0, chat(0));
  const decodes = (bytes: Uint8Array) => {
    try {
      return decodeMessage(bytes);
    } catch {
      return undefined; // refused before any key is tried
    }
  };
  for (let bit = 0; bit < first.length * 8; bit++) {
    const flipped = first.slice();
    flipped[bit >> 3] ^= 1 << (bit & 7);
    const message = decodes(flipped);
    if (message?.type !== "peer_sealed") continue;
    // A flip in the session id belongs to no session of Bob's table; here it must not open.
    assertEquals(bob.open(T0, message), undefined, `bit ${bit}`);
  }
  for (let length = 0; length < first.length; length++) {
    const message = decodes(first.subarray(0, length));
    if (message?.type === "peer_sealed") assertEquals(bob.open(T0, message), undefined);
  }
  // None of that moved the window: the genuine datagram still opens, once.
  assertEquals(bob.open(T0, sealedOf(first)), chat(0));
  assertEquals(bob.open(T0, sealedOf(first)), undefined, "a replay");
  // Out of order is fine within the window; behind it, stale.
  const late = alice.seal(T0, chat(1));
  for (let i = 2; i < REPLAY_WINDOW_SIZE + 10; i++) {
    bob.open(T0, sealedOf(alice.seal(T0, keepalive)));
  }
  assertEquals(bob.open(T0, sealedOf(late)), undefined, "stale");
  // Mallory's keys, or another session's, open nothing.
  const other = new PeerCipher({
    session: SESSION,
    staticKeyPair: MALLORY_KEYS,
    remoteKey: BOB_KEYS.publicKey,
    psk: PSK,
    random: new SeededRandom(1),
  });
  assertThrows(() => other.seal(T0, keepalive), CryptoError, "no session keys");
  assertEquals(
    bob.open(T0, { ...sealedOf(alice.seal(T0, keepalive)), session: "ffffffffffffffff" }),
    undefined,
  );
});

Deno.test("readInitiation() refuses a message 1 moved under another session id", () => {
  const random = new SeededRandom(2);
  const alice = new PeerCipher({
    session: SESSION,
    staticKeyPair: ALICE_KEYS,
    remoteKey: BOB_KEYS.publicKey,
    psk: PSK,
    random,
  });
  const connect = connectOf(alice.initiate(T0, intro()));
  readInitiation(BOB_KEYS, connect, random);
  assertThrows(
    () => readInitiation(BOB_KEYS, { ...connect, session: "fedcba9876543210" }, random),
    CryptoError,
  );
  // Nor does it open for anyone but Bob.
  assertThrows(() => readInitiation(MALLORY_KEYS, connect, random), CryptoError);
});

Deno.test("PeerCipher with another PSK fails at peer_accept and keeps no keys", () => {
  const random = new SeededRandom(3);
  const alice = new PeerCipher({
    session: SESSION,
    staticKeyPair: ALICE_KEYS,
    remoteKey: BOB_KEYS.publicKey,
    psk: PSK,
    random,
  });
  const connect = alice.initiate(T0, intro());
  const read = readInitiation(BOB_KEYS, connectOf(connect), random);
  const bob = new PeerCipher({
    session: SESSION,
    staticKeyPair: BOB_KEYS,
    remoteKey: read.remoteKey,
    psk: new Uint8Array(32).fill(0x77),
    random,
  });
  const accept = bob.respond(T0, read, connect);
  assertEquals(alice.complete(T0, acceptOf(accept).handshake), false);
  assertEquals(alice.hasKeys, false);
});

Deno.test("PeerCipher rekeys: the responder keeps the old keys until one message opens under the new", () => {
  const limits = { rekeyAfterMs: 1000, rejectAfterMs: 3000 };
  const { alice, bob, random } = pair(limits);
  assertEquals(alice.rekeyDue(T0 + 999), false);
  assert(alice.rekeyDue(T0 + 6000));
  const at = T0 + 1500;
  const inFlight = alice.seal(at, chat(1)); // sealed under the old keys
  const connect = alice.initiate(at, intro("Alice", at));
  const read = readInitiation(BOB_KEYS, connectOf(connect), random);
  const accept = bob.respond(at, read, connect);
  // Bob still seals under the old keys: Alice may not have his answer yet.
  const old = bob.seal(at, keepalive);
  assertEquals(alice.open(at, sealedOf(old)), keepalive);
  assert(alice.complete(at, acceptOf(accept).handshake));
  assertEquals(alice.handshakes, 2);
  // Alice's new keys confirm Bob's; his old keys still open what was in flight.
  assertEquals(bob.open(at, sealedOf(alice.seal(at, chat(2)))), chat(2));
  assertEquals(bob.open(at, sealedOf(inFlight)), chat(1));
  assertEquals(alice.open(at, sealedOf(bob.seal(at, keepalive))), keepalive);
  // Past the first keys' life, the new ones go on.
  const later = T0 + 3500;
  assertEquals(bob.open(later, sealedOf(alice.seal(later, chat(3)))), chat(3));
});

Deno.test("encodeIntroduction() and decodeIntroduction() round-trip, and refuse what is malformed", () => {
  const stamp = tai64n(T0);
  const decoded = decodeIntroduction(
    encodeIntroduction({ name: "Zoë", nonce: NONCE, timestamp: stamp }),
  );
  assertEquals(decoded, { name: "Zoë", nonce: NONCE, timestamp: stamp });
  assertThrows(() => decodeIntroduction(new Uint8Array(28)), CryptoError, "no valid name");
  assertThrows(() => decodeIntroduction(new Uint8Array(29).fill(0xff)), CryptoError, "UTF-8");
  assertThrows(() => decodeIntroduction(new Uint8Array(28 + 129).fill(0x41)), CryptoError);
});

Deno.test("tai64n() sorts as time does; TimestampSource never repeats; TimestampRecord keeps the greatest", () => {
  assertEquals(
    [...tai64n(0)].map((b) => b.toString(16).padStart(2, "0")).join(""),
    "400000000000000a00000000",
  );
  assert(compareTimestamps(tai64n(T0), tai64n(T0 + 1)) < 0);
  assert(compareTimestamps(tai64n(T0 + 999), tai64n(T0 + 1000)) < 0);
  const source = new TimestampSource();
  const stamps = [source.next(T0), source.next(T0), source.next(T0 - 5000), source.next(T0 + 1)];
  for (let i = 1; i < stamps.length; i++) {
    assert(compareTimestamps(stamps[i - 1], stamps[i]) < 0, `stamp ${i} is not newer`);
  }
  const record = new TimestampRecord(2);
  assert(record.isNewer("a", stamps[1]));
  record.record("a", stamps[1]);
  assertEquals([record.isNewer("a", stamps[0]), record.isNewer("a", stamps[1])], [false, false]);
  assert(record.isNewer("a", stamps[2]));
  record.record("a", stamps[0]); // older: ignored
  assertEquals(record.isNewer("a", stamps[1]), false);
  // Bounded: past two keys the oldest entry goes.
  record.record("b", stamps[0]);
  record.record("c", stamps[0]);
  assert(record.isNewer("a", stamps[1]));
});

Deno.test("encodeMessage() keeps the sealed datagram of a full peer_data within the limit", () => {
  const { alice } = pair();
  const largest = alice.seal(T0, chat(0, new Uint8Array(1100)));
  assert(largest.length <= MAX_DATAGRAM_BYTES);
  assertEquals(encodeMessage(sealedOf(largest)), largest);
  // seal() writes the datagram itself: the codec's layout, counter and length, every time.
  for (let i = 1; i < 300; i++) {
    const bytes = alice.seal(T0, chat(i, new Uint8Array(i)));
    const sealed = sealedOf(bytes);
    assertEquals(sealed.counter, i);
    assertEquals(encodeMessage(sealed), bytes);
  }
});

Deno.test("PROTOCOL.md's peer examples are a real handshake and sealed keepalive", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/PROTOCOL.md", import.meta.url));
  const flat = doc.replace(/\s+/g, " ");
  const hex = (bytes: Uint8Array) =>
    [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  const random = new SeededRandom(1);
  const session = "8c3f1a2b4d5e6f70";
  const nonce = Uint8Array.from([0, 0, 1, 0x94, 0x3c, 0x9a, 0x6e, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
  const at = Date.UTC(2026, 11, 6, 12);
  const alice = new PeerCipher({
    session,
    staticKeyPair: ALICE_KEYS,
    remoteKey: BOB_KEYS.publicKey,
    psk: PSK,
    random,
  });
  const connect = alice.initiate(
    at,
    encodeIntroduction({ name: "Alice", nonce, timestamp: tai64n(at) }),
  );
  const read = readInitiation(BOB_KEYS, connectOf(connect), random);
  assertEquals(read.introduction, { name: "Alice", nonce, timestamp: tai64n(at) });
  const bob = new PeerCipher({
    session,
    staticKeyPair: BOB_KEYS,
    remoteKey: read.remoteKey,
    psk: PSK,
    random,
  });
  const accept = bob.respond(at, read, connect);
  assert(alice.complete(at, acceptOf(accept).handshake));
  const sealed = alice.seal(at, { type: "peer_keepalive", session });
  assertEquals(bob.open(at, sealedOf(sealed)), { type: "peer_keepalive", session });
  for (
    const [what, bytes] of [["peer_connect", connect], ["peer_accept", accept], [
      "peer_sealed",
      sealed,
    ]] as const
  ) {
    // The document groups the header and the first fields; compare byte runs.
    const body = hex(bytes.subarray(14));
    assert(flat.includes(body.slice(0, 200)), `${what}: the example's bytes differ`);
  }
  assert(flat.includes(hex(ALICE_KEYS.publicKey).replaceAll(" ", "")));
  assert(flat.includes(hex(BOB_KEYS.publicKey).replaceAll(" ", "")));
});

Deno.test("PeerCipher's null cipher (benchmarks only) copies, and no flag of the client reaches it", async () => {
  const random = new SeededRandom(4);
  const alice = new PeerCipher({
    session: SESSION,
    staticKeyPair: ALICE_KEYS,
    remoteKey: BOB_KEYS.publicKey,
    psk: PSK,
    random,
    nullCipher: true,
  });
  const connect = alice.initiate(T0, intro());
  const read = readInitiation(BOB_KEYS, connectOf(connect), random);
  const bob = new PeerCipher({
    session: SESSION,
    staticKeyPair: BOB_KEYS,
    remoteKey: read.remoteKey,
    psk: PSK,
    random,
    nullCipher: true,
  });
  assert(alice.complete(T0, acceptOf(bob.respond(T0, read, connect)).handshake));
  const sealed = alice.seal(T0, chat(0));
  assert(new TextDecoder().decode(sealed).includes("secret 0"), "the null cipher copies");
  assertEquals(sealed.length, alice.seal(T0, chat(1)).length, "the same size as sealed");
  assertEquals(bob.open(T0, sealedOf(sealed)), chat(0));
  assertEquals(bob.open(T0, sealedOf(sealed)), undefined, "the replay window still holds");
  // Only scripts set it: the client's entry point and flags never name it.
  for (
    const file of ["../client.ts", "../lib/cli/program_flags.ts", "../lib/cli/flag_sources.ts"]
  ) {
    const text = await Deno.readTextFile(new URL(file, import.meta.url));
    assert(!/null(Peer)?Cipher/i.test(text), `${file} names the null cipher`);
  }
});
