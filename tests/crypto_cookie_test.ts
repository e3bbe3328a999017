/**
 * WireGuard's address validation (whitepaper 5.3, 5.4.7) as lib/crypto
 * does it: mac1 proves the sender knows the responder's static key, and
 * under load mac2 proves it can receive at its address and port.
 */
import { assert, assertEquals, assertThrows } from "@std/assert";
import { SeededRandom } from "../lib/random.ts";
import {
  CookieChecker,
  type MacVerdict,
  type SourceAddress,
} from "../lib/crypto/cookie_checker.ts";
import { CookieGenerator } from "../lib/crypto/cookie_generator.ts";
import { CryptoError } from "../lib/crypto/crypto_error.ts";
import { HandshakeState } from "../lib/crypto/handshake_state.ts";
import { keyPairFromPrivateKey } from "../lib/crypto/key_pair.ts";
import {
  COOKIE_REPLY_BYTES,
  decodeSecureDatagram,
  encodeSecureDatagram,
  MIN_INITIATION_BYTES,
  MIN_RESPONSE_BYTES,
} from "../lib/crypto/secure_datagram.ts";

const random = new SeededRandom(2026);
const server = keyPairFromPrivateKey(random.bytes(32));
const client = keyPairFromPrivateKey(random.bytes(32));
const ALICE: SourceAddress = { address: "192.0.2.10", port: 5000 };
const BOB: SourceAddress = { address: "192.0.2.20", port: 5000 };

/** An encoded initiation to the server, without MACs yet. */
function initiation(payload = new Uint8Array(0)): Uint8Array {
  const handshake = new HandshakeState({
    pattern: "IK",
    initiator: true,
    staticKeyPair: client,
    remoteStaticKey: server.publicKey,
    random,
  }).writeMessage(payload);
  return encodeSecureDatagram({ kind: "initiation", sender: 7, handshake });
}

function cookieReplyOf(verdict: MacVerdict) {
  assertEquals(verdict.kind, "cookie");
  return (verdict as Extract<MacVerdict, { kind: "cookie" }>).reply;
}

Deno.test("CookieChecker: accepts a valid mac1 when not under load, without mac2", () => {
  const checker = new CookieChecker(server.publicKey, { random });
  const message = new CookieGenerator(server.publicKey).addMacs(initiation(), 0);
  assertEquals(message.subarray(message.length - 16), new Uint8Array(16));
  assertEquals(checker.check(message, ALICE, 0, false), { kind: "accept" });
});

Deno.test("CookieChecker: a sender that does not know the server key gets no answer", () => {
  const checker = new CookieChecker(server.publicKey, { random });
  const stranger = new CookieGenerator(client.publicKey); // the wrong key
  const message = stranger.addMacs(initiation(), 0);
  assertEquals(checker.check(message, ALICE, 0, false), { kind: "drop", reason: "bad_mac1" });
  assertEquals(checker.check(message, ALICE, 0, true), { kind: "drop", reason: "bad_mac1" });
  assertEquals(checker.check(new Uint8Array(32), ALICE, 0, true), {
    kind: "drop",
    reason: "truncated",
  });
});

Deno.test("CookieChecker: every bit flip before mac2 fails mac1", () => {
  const checker = new CookieChecker(server.publicKey, { random });
  const message = new CookieGenerator(server.publicKey).addMacs(initiation(), 0);
  for (let bit = 0; bit < (message.length - 16) * 8; bit++) {
    const bad = message.slice();
    bad[bit >> 3] ^= 1 << (bit & 7);
    assertEquals(checker.check(bad, ALICE, 0, false).kind, "drop");
  }
});

Deno.test("CookieChecker: every bit flip of mac2 is dropped, under load or not, and no reply is made", () => {
  const checker = new CookieChecker(server.publicKey, { random });
  const message = new CookieGenerator(server.publicKey).addMacs(initiation(), 0);
  for (let bit = (message.length - 16) * 8; bit < message.length * 8; bit++) {
    const bad = message.slice();
    bad[bit >> 3] ^= 1 << (bit & 7);
    assertEquals(checker.check(bad, ALICE, 0, false), { kind: "drop", reason: "bad_mac2" });
  }
});

Deno.test("CookieChecker: a cookie stays good across one secret replacement, under load or not", () => {
  const checker = new CookieChecker(server.publicKey, { random, secretLifetimeMs: 120_000 });
  const macs = new CookieGenerator(server.publicKey);
  const first = macs.addMacs(initiation(), 100_000);
  macs.consumeReply(cookieReplyOf(checker.check(first, ALICE, 100_000, true)), 100_000);
  // The secret is replaced at 120 s; the sender keeps its cookie until 220 s.
  const later = macs.addMacs(initiation(), 210_000);
  assertEquals(checker.check(later, ALICE, 210_000, true), { kind: "accept" });
  assertEquals(checker.check(later, ALICE, 210_000, false), { kind: "accept" });
  assertEquals(checker.check(later, BOB, 210_000, false).kind, "drop", "bound to its source");
});

Deno.test("CookieChecker: under load, a cookie round trip gets the initiation accepted", () => {
  const checker = new CookieChecker(server.publicKey, { random });
  const macs = new CookieGenerator(server.publicKey);
  const first = macs.addMacs(initiation(), 1_000);
  const reply = cookieReplyOf(checker.check(first, ALICE, 1_000, true));
  // Framed and back, as the driver would.
  const framed = encodeSecureDatagram({ kind: "cookie_reply", receiver: 7, ...reply });
  assertEquals(framed.length, COOKIE_REPLY_BYTES);
  const decoded = decodeSecureDatagram(framed);
  if (decoded.kind !== "cookie_reply") throw new Error(`decoded a ${decoded.kind}`);
  macs.consumeReply(decoded, 1_050);
  const second = macs.addMacs(initiation(), 1_100);
  assertEquals(checker.check(second, ALICE, 1_100, true), { kind: "accept" });
});

Deno.test("CookieChecker: a cookie is bound to the IP address and to the port", () => {
  const checker = new CookieChecker(server.publicKey, { random });
  const macs = new CookieGenerator(server.publicKey);
  macs.consumeReply(cookieReplyOf(checker.check(macs.addMacs(initiation(), 0), ALICE, 0, true)), 0);
  const message = macs.addMacs(initiation(), 10);
  assertEquals(checker.check(message, ALICE, 10, true).kind, "accept");
  assertEquals(checker.check(message, { ...ALICE, port: 5001 }, 10, true).kind, "cookie");
  assertEquals(
    checker.check(message, { ...ALICE, address: "192.0.2.11" }, 10, true).kind,
    "cookie",
  );
});

Deno.test("CookieChecker: the secret rotates every two minutes; a cookie dies with the secret after its own", () => {
  const checker = new CookieChecker(server.publicKey, { random });
  const macs = new CookieGenerator(server.publicKey);
  macs.consumeReply(cookieReplyOf(checker.check(macs.addMacs(initiation(), 0), ALICE, 0, true)), 0);
  assertEquals(
    checker.check(macs.addMacs(initiation(), 119_000), ALICE, 119_000, true).kind,
    "accept",
  );
  const late = macs.addMacs(initiation(), 119_999);
  assertEquals(checker.check(late, ALICE, 120_000, true).kind, "accept", "previous secret");
  assertEquals(checker.check(late, ALICE, 240_000, true).kind, "cookie", "two secrets later");
});

Deno.test("CookieGenerator: drops its cookie after two minutes (mac2 back to zeros)", () => {
  const checker = new CookieChecker(server.publicKey, { random, secretLifetimeMs: 10 ** 9 });
  const macs = new CookieGenerator(server.publicKey);
  macs.consumeReply(cookieReplyOf(checker.check(macs.addMacs(initiation(), 0), ALICE, 0, true)), 0);
  const fresh = macs.addMacs(initiation(), 119_999);
  assert(fresh.subarray(fresh.length - 16).some((b) => b !== 0));
  const old = macs.addMacs(initiation(), 120_000);
  assertEquals(old.subarray(old.length - 16), new Uint8Array(16));
  assertEquals(checker.check(old, ALICE, 120_000, true).kind, "cookie");
});

Deno.test("CookieChecker: a wrong mac2 gets a cookie reply, not the handshake", () => {
  const checker = new CookieChecker(server.publicKey, { random });
  const macs = new CookieGenerator(server.publicKey);
  macs.consumeReply(cookieReplyOf(checker.check(macs.addMacs(initiation(), 0), ALICE, 0, true)), 0);
  const message = macs.addMacs(initiation(), 1);
  message[message.length - 1] ^= 1;
  assertEquals(checker.check(message, ALICE, 1, true).kind, "cookie");
});

Deno.test("CookieGenerator: refuses a reply altered, for another message, or before any", () => {
  const checker = new CookieChecker(server.publicKey, { random });
  const code = (f: () => unknown) => assertThrows(f, CryptoError).code;
  assertEquals(
    code(() =>
      new CookieGenerator(server.publicKey).consumeReply({
        nonce: new Uint8Array(24),
        encryptedCookie: new Uint8Array(32),
      }, 0)
    ),
    "bad_cookie",
  );
  const macs = new CookieGenerator(server.publicKey);
  const reply = cookieReplyOf(checker.check(macs.addMacs(initiation(), 0), ALICE, 0, true));
  const altered = { nonce: reply.nonce, encryptedCookie: reply.encryptedCookie.slice() };
  altered.encryptedCookie[3] ^= 0x40;
  assertEquals(code(() => macs.consumeReply(altered, 0)), "bad_cookie");
  macs.addMacs(initiation(), 1); // a newer message: the reply's mac1 no longer matches
  assertEquals(code(() => macs.consumeReply(reply, 1)), "bad_cookie");
  assertEquals(
    code(() => macs.consumeReply({ ...reply, nonce: reply.nonce.subarray(1) }, 1)),
    "bad_cookie",
  );
});

Deno.test("CookieChecker: no reply is larger than the smallest message it can answer", () => {
  assertEquals(COOKIE_REPLY_BYTES, 64);
  assertEquals(MIN_INITIATION_BYTES, 136);
  assertEquals(MIN_RESPONSE_BYTES, 92);
  const checker = new CookieChecker(server.publicKey, { random });
  const smallest = new CookieGenerator(server.publicKey).addMacs(initiation(), 0);
  assertEquals(smallest.length, MIN_INITIATION_BYTES);
  const reply = cookieReplyOf(checker.check(smallest, ALICE, 0, true));
  const framed = encodeSecureDatagram({ kind: "cookie_reply", receiver: 7, ...reply });
  assert(framed.length < smallest.length);
});
