/**
 * Whatever arrives from the network, lib/crypto answers with a typed
 * CryptoError or a verdict, never another exception, so a socket loop can
 * drop it and carry on (DESIGN.md: the socket loop survives every input).
 */
import { assertEquals } from "@std/assert";
import fc from "fast-check";
import { SeededRandom } from "../lib/random.ts";
import { CookieChecker } from "../lib/crypto/cookie_checker.ts";
import { CookieGenerator } from "../lib/crypto/cookie_generator.ts";
import { CryptoError } from "../lib/crypto/crypto_error.ts";
import { HandshakeState } from "../lib/crypto/handshake_state.ts";
import { generateKeyPair } from "../lib/crypto/key_pair.ts";
import { decodeSecureDatagram, encodeSecureDatagram } from "../lib/crypto/secure_datagram.ts";
import { TransportSession } from "../lib/crypto/transport_session.ts";

const random = new SeededRandom(404);
const server = generateKeyPair(random), client = generateKeyPair(random);

function onlyCryptoErrors(work: () => unknown): void {
  try {
    work();
  } catch (error) {
    if (!(error instanceof CryptoError)) throw error;
  }
}

/** Random bytes, and mutations of a real datagram (which get past the cheap checks). */
function inputs(real: Uint8Array) {
  return fc.oneof(
    fc.uint8Array({ maxLength: 300 }),
    fc.tuple(
      fc.nat({ max: real.length - 1 }),
      fc.integer({ min: 1, max: 255 }),
      fc.nat({ max: real.length }),
    )
      .map(([at, xor, cut]) => {
        const bytes = real.slice(0, Math.max(cut, at + 1));
        bytes[at] ^= xor;
        return bytes;
      }),
  );
}

Deno.test("decodeSecureDatagram(): any bytes decode or throw a CryptoError", () => {
  const real = encodeSecureDatagram({
    kind: "transport",
    receiver: 1,
    counter: 5,
    ciphertext: new Uint8Array(40),
  });
  fc.assert(
    fc.property(inputs(real), (bytes) => onlyCryptoErrors(() => decodeSecureDatagram(bytes))),
    {
      seed: 1,
      numRuns: 2_000,
    },
  );
});

Deno.test("HandshakeState.readMessage(): any bytes are a CryptoError, for both messages", () => {
  const initiator = new HandshakeState({
    pattern: "IK",
    initiator: true,
    staticKeyPair: client,
    remoteStaticKey: server.publicKey,
    random,
  });
  const m1 = initiator.writeMessage();
  fc.assert(
    fc.property(inputs(m1), (bytes) => {
      const responder = new HandshakeState({
        pattern: "IK",
        initiator: false,
        staticKeyPair: server,
        random,
      });
      onlyCryptoErrors(() => responder.readMessage(bytes));
    }),
    { seed: 2, numRuns: 300 },
  );
  const responder = new HandshakeState({
    pattern: "IK",
    initiator: false,
    staticKeyPair: server,
    random,
  });
  responder.readMessage(m1);
  const m2 = responder.writeMessage();
  fc.assert(
    fc.property(inputs(m2), (bytes) => {
      const fresh = new HandshakeState({
        pattern: "IK",
        initiator: true,
        staticKeyPair: client,
        remoteStaticKey: server.publicKey,
        random,
      });
      fresh.writeMessage();
      onlyCryptoErrors(() => fresh.readMessage(bytes));
    }),
    { seed: 3, numRuns: 300 },
  );
});

Deno.test("TransportSession.open(): any counter and bytes are a CryptoError and change nothing", () => {
  const i = new HandshakeState({
    pattern: "IK",
    initiator: true,
    staticKeyPair: client,
    remoteStaticKey: server.publicKey,
    random,
  });
  const r = new HandshakeState({ pattern: "IK", initiator: false, staticKeyPair: server, random });
  r.readMessage(i.writeMessage());
  i.readMessage(r.writeMessage());
  const sender = new TransportSession(i.split(), { now: 0, initiator: true });
  const receiver = new TransportSession(r.split(), { now: 0, initiator: false });
  const real = sender.seal(new Uint8Array(30), 0);
  fc.assert(
    fc.property(fc.oneof(fc.nat(), fc.double()), inputs(real.ciphertext), (counter, bytes) => {
      onlyCryptoErrors(() => receiver.open(counter, bytes, 0));
    }),
    { seed: 4, numRuns: 1_000 },
  );
  // The real message still opens: nothing above moved the window or the keys.
  assertEquals(receiver.open(real.counter, real.ciphertext, 0), new Uint8Array(30));
});

Deno.test("CookieChecker.check() and CookieGenerator.consumeReply() take any bytes", () => {
  const checker = new CookieChecker(server.publicKey, { random });
  const macs = new CookieGenerator(server.publicKey);
  const real = macs.addMacs(
    encodeSecureDatagram({ kind: "initiation", sender: 3, handshake: new Uint8Array(96) }),
    0,
  );
  fc.assert(
    fc.property(inputs(real), fc.boolean(), (bytes, underLoad) => {
      const verdict = checker.check(bytes, { address: "::1", port: 9 }, 0, underLoad);
      // Without load mac2 is not looked at; everything before it must be intact.
      const covered = real.length - 16;
      if (
        verdict.kind === "accept" &&
        (bytes.length !== real.length || bytes.subarray(0, covered).some((b, k) => b !== real[k]))
      ) {
        throw new Error("a changed message was accepted");
      }
    }),
    { seed: 5, numRuns: 1_000 },
  );
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 40 }),
      fc.uint8Array({ maxLength: 40 }),
      (nonce, cookie) => {
        onlyCryptoErrors(() => macs.consumeReply({ nonce, encryptedCookie: cookie }, 0));
      },
    ),
    { seed: 6, numRuns: 300 },
  );
});
