/**
 * Interoperability of lib/crypto's Noise handshakes with two independent
 * implementations, through their published test vectors (copied into
 * tests/crypto_noise_vectors.json, each vector with its source):
 *
 * - cacophony (Haskell): haskell-cryptography/cacophony, vectors/cacophony.txt
 *   at commit 8ee9d41e34a1a596cfa3ab12aa4069ff87dc1247, for
 *   Noise_IK_25519_ChaChaPoly_SHA256 and Noise_IKpsk2_25519_ChaChaPoly_SHA256;
 * - snow (Rust): mcginty/snow, tests/vectors/snow.txt at commit
 *   8ac60f51cfe3e010c84f0a454cc575ad9204fa12, for Noise_IK_25519_ChaChaPoly_SHA256.
 *
 * Each vector fixes both sides' static and ephemeral keys, the prologue and
 * the PSK; the test plays both roles and checks every ciphertext byte.
 */
import { assertEquals, assertThrows } from "@std/assert";
import { fromHex, toHex } from "../lib/hex.ts";
import type { Random } from "../lib/random.ts";
import { CryptoError } from "../lib/crypto/crypto_error.ts";
import { type HandshakePattern, HandshakeState } from "../lib/crypto/handshake_state.ts";
import { keyPairFromPrivateKey } from "../lib/crypto/key_pair.ts";
import { SeededRandom } from "../lib/random.ts";

interface Vector {
  protocol_name: string;
  source: string;
  init_prologue: string;
  init_psks?: string[];
  init_static: string;
  init_ephemeral: string;
  init_remote_static: string;
  resp_prologue: string;
  resp_psks?: string[];
  resp_static: string;
  resp_ephemeral: string;
  handshake_hash?: string;
  messages: { payload: string; ciphertext: string }[];
}

const VECTORS: Vector[] = JSON.parse(
  await Deno.readTextFile(new URL("./crypto_noise_vectors.json", import.meta.url)),
).vectors;

/** A Random that hands out the given bytes once (the vector's ephemeral key). */
function fixedRandom(hex: string): Random {
  let used = false;
  return {
    next: () => 0,
    bytes: (length) => {
      if (used || length !== 32) throw new Error("The vector's ephemeral key was asked for twice");
      used = true;
      return fromHex(hex);
    },
  };
}

function patternOf(name: string): HandshakePattern {
  return name.split("_")[1] as HandshakePattern;
}

for (const v of VECTORS) {
  Deno.test(`HandshakeState: ${v.protocol_name} matches ${v.source.split(" ")[0]}`, () => {
    const pattern = patternOf(v.protocol_name);
    const initiator = new HandshakeState({
      pattern,
      initiator: true,
      staticKeyPair: keyPairFromPrivateKey(fromHex(v.init_static)),
      remoteStaticKey: fromHex(v.init_remote_static),
      psk: v.init_psks?.length ? fromHex(v.init_psks[0]) : undefined,
      prologue: fromHex(v.init_prologue),
      random: fixedRandom(v.init_ephemeral),
    });
    const responder = new HandshakeState({
      pattern,
      initiator: false,
      staticKeyPair: keyPairFromPrivateKey(fromHex(v.resp_static)),
      psk: v.resp_psks?.length ? fromHex(v.resp_psks[0]) : undefined,
      prologue: fromHex(v.resp_prologue),
      random: fixedRandom(v.resp_ephemeral),
    });
    const [m1, m2, ...transport] = v.messages;
    const c1 = initiator.writeMessage(fromHex(m1.payload));
    assertEquals(toHex(c1), m1.ciphertext);
    assertEquals(toHex(responder.readMessage(c1)), m1.payload);
    assertEquals(
      toHex(responder.remoteStaticKey!),
      toHex(keyPairFromPrivateKey(fromHex(v.init_static)).publicKey),
    );
    const c2 = responder.writeMessage(fromHex(m2.payload));
    assertEquals(toHex(c2), m2.ciphertext);
    assertEquals(toHex(initiator.readMessage(c2)), m2.payload);
    if (v.handshake_hash !== undefined) {
      assertEquals(toHex(initiator.handshakeHash), v.handshake_hash);
      assertEquals(toHex(responder.handshakeHash), v.handshake_hash);
    }
    const sides = [initiator.split(), responder.split()];
    transport.forEach((m, i) => {
      const from = sides[i % 2], to = sides[1 - (i % 2)];
      const sealed = from.send.encryptWithAd(new Uint8Array(), fromHex(m.payload));
      assertEquals(toHex(sealed), m.ciphertext);
      assertEquals(toHex(to.receive.decryptWithAd(new Uint8Array(), sealed)), m.payload);
    });
  });
}

function pair(pattern: HandshakePattern, seed: number, psks: [Uint8Array?, Uint8Array?] = []) {
  const random = new SeededRandom(seed);
  const server = keyPairFromPrivateKey(random.bytes(32));
  const client = keyPairFromPrivateKey(random.bytes(32));
  return {
    initiator: new HandshakeState({
      pattern,
      initiator: true,
      staticKeyPair: client,
      remoteStaticKey: server.publicKey,
      psk: psks[0],
      random,
    }),
    responder: new HandshakeState({
      pattern,
      initiator: false,
      staticKeyPair: server,
      psk: psks[1],
      random,
    }),
    client,
    server,
  };
}

Deno.test("HandshakeState: messageLength() is what writeMessage() produces", () => {
  const { initiator, responder } = pair("IKpsk2", 1, [new Uint8Array(32), new Uint8Array(32)]);
  assertEquals(initiator.messageLength(5), 32 + 48 + 5 + 16);
  const m1 = initiator.writeMessage(new Uint8Array(5));
  assertEquals(m1.length, 101);
  responder.readMessage(m1);
  assertEquals(responder.messageLength(0), 48);
  assertEquals(responder.writeMessage().length, 48);
});

Deno.test("HandshakeState: every bit flip in message 1 is refused with a CryptoError", () => {
  const m1 = pair("IK", 2).initiator.writeMessage(new TextEncoder().encode("hello"));
  for (let bit = 0; bit < m1.length * 8; bit++) {
    const { responder } = pair("IK", 2);
    const bad = m1.slice();
    bad[bit >> 3] ^= 1 << (bit & 7);
    const error = assertThrows(() => responder.readMessage(bad), CryptoError);
    assertEquals(["auth_failed", "bad_key"].includes(error.code), true, error.code);
  }
});

Deno.test("HandshakeState: a truncated message 2 is refused and the handshake is dead", () => {
  const { initiator, responder } = pair("IK", 3);
  responder.readMessage(initiator.writeMessage());
  const m2 = responder.writeMessage();
  assertEquals(
    assertThrows(() => initiator.readMessage(m2.subarray(0, 47)), CryptoError).code,
    "truncated",
  );
  assertThrows(() => initiator.readMessage(m2), TypeError);
});

Deno.test("HandshakeState: an initiator that does not know the real server key fails", () => {
  const { responder } = pair("IK", 4);
  const impostor = pair("IK", 99);
  const m1 = impostor.initiator.writeMessage();
  assertEquals(assertThrows(() => responder.readMessage(m1), CryptoError).code, "auth_failed");
});

Deno.test("HandshakeState: IKpsk2 with different PSKs fails at message 2", () => {
  const a = new Uint8Array(32).fill(1), b = new Uint8Array(32).fill(2);
  const { initiator, responder } = pair("IKpsk2", 5, [a, b]);
  responder.readMessage(initiator.writeMessage());
  const m2 = responder.writeMessage();
  assertEquals(assertThrows(() => initiator.readMessage(m2), CryptoError).code, "auth_failed");
});

Deno.test("HandshakeState: a message out of turn is unexpected_message", () => {
  const { initiator, responder } = pair("IK", 6);
  assertEquals(
    assertThrows(() => initiator.readMessage(new Uint8Array(200)), CryptoError).code,
    "unexpected_message",
  );
  assertThrows(() => responder.writeMessage(), TypeError);
  assertThrows(() => initiator.split(), TypeError);
});

Deno.test("HandshakeState: a low-order ephemeral key is refused as bad_key", () => {
  const { initiator, responder } = pair("IK", 7);
  const m1 = initiator.writeMessage();
  const bad = m1.slice();
  bad.fill(0, 0, 32); // the all-zero point has order 1
  assertEquals(assertThrows(() => responder.readMessage(bad), CryptoError).code, "bad_key");
});

Deno.test("HandshakeState: both sides agree on the hash and the keys", () => {
  const { initiator, responder, client } = pair("IK", 8);
  responder.readMessage(initiator.writeMessage());
  initiator.readMessage(responder.writeMessage());
  assertEquals(initiator.handshakeHash, responder.handshakeHash);
  assertEquals(responder.remoteStaticKey, client.publicKey);
  const a = initiator.split(), b = responder.split();
  const sealed = a.send.encryptWithAd(new Uint8Array(), Uint8Array.of(1, 2, 3));
  assertEquals(b.receive.decryptWithAd(new Uint8Array(), sealed), Uint8Array.of(1, 2, 3));
  const back = b.send.encryptWithAd(new Uint8Array(), Uint8Array.of(4));
  assertEquals(a.receive.decryptWithAd(new Uint8Array(), back), Uint8Array.of(4));
});

Deno.test("HandshakeState: an IKpsk2 responder can take its PSK after reading message 1", () => {
  const psk = new Uint8Array(32).fill(5);
  const { initiator, responder, client } = pair("IKpsk2", 9, [psk, undefined]);
  responder.readMessage(initiator.writeMessage());
  assertEquals(responder.remoteStaticKey, client.publicKey); // who it is: pick the introduction's PSK
  assertThrows(() => responder.writeMessage(), TypeError);
  responder.setPsk(psk);
  initiator.readMessage(responder.writeMessage());
  assertEquals(initiator.handshakeHash, responder.handshakeHash);
  assertThrows(() => responder.setPsk(psk), TypeError);
  assertThrows(() => initiator.setPsk(psk), TypeError);
});

Deno.test("HandshakeState: refuses a PSK for IK, a missing initiator PSK and a short one", () => {
  const random = new SeededRandom(10);
  const keys = keyPairFromPrivateKey(random.bytes(32));
  const base = { staticKeyPair: keys, remoteStaticKey: keys.publicKey, random };
  assertThrows(
    () => new HandshakeState({ ...base, pattern: "IK", initiator: true, psk: new Uint8Array(32) }),
    TypeError,
  );
  assertThrows(
    () => new HandshakeState({ ...base, pattern: "IKpsk2", initiator: true }),
    TypeError,
  );
  assertThrows(
    () =>
      new HandshakeState({ ...base, pattern: "IKpsk2", initiator: true, psk: new Uint8Array(31) }),
    RangeError,
  );
});
