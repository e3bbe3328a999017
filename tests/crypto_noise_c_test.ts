/**
 * Live interoperability of lib/crypto's handshakes with an independent
 * implementation, in both roles: rweather/noise-c (C), compiled to
 * WebAssembly as the npm package `@richardhopton/noise-c.wasm` (tests only).
 * Unlike the fixed vectors in crypto_noise_test.ts, both sides draw fresh
 * ephemeral keys here.
 */
import { assertEquals, assertThrows } from "@std/assert";
import createNoise from "@richardhopton/noise-c.wasm";
import { SeededRandom } from "../lib/random.ts";
import { CryptoError } from "../lib/crypto/crypto_error.ts";
import { type HandshakePattern, HandshakeState } from "../lib/crypto/handshake_state.ts";
import { generateKeyPair } from "../lib/crypto/key_pair.ts";

/** The parts of noise-c.wasm's API used here. */
interface NoiseC {
  constants: { NOISE_ROLE_INITIATOR: number; NOISE_ROLE_RESPONDER: number };
  HandshakeState: new (protocol: string, role: number) => NoiseCHandshake;
}
interface NoiseCHandshake {
  Initialize(
    prologue: Uint8Array | null,
    s: Uint8Array | null,
    rs: Uint8Array | null,
    psk: Uint8Array | null,
  ): void;
  WriteMessage(payload: Uint8Array | null): Uint8Array;
  ReadMessage(message: Uint8Array, payloadNeeded: boolean): Uint8Array;
  GetHandshakeHash(): Uint8Array;
  GetRemotePublicKey(): Uint8Array;
  Split(): [NoiseCCipher, NoiseCCipher];
  free(): void;
}
interface NoiseCCipher {
  EncryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  DecryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array;
  free(): void;
}

const noise = await new Promise<NoiseC>((resolve) =>
  (createNoise as unknown as (ready: (lib: NoiseC) => void) => void)(resolve)
);
const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);
const PROLOGUE = encoder.encode("switchboard interop");

function setUp(pattern: HandshakePattern, oursInitiates: boolean, seed: number) {
  const random = new SeededRandom(seed);
  const initiatorKeys = generateKeyPair(random), responderKeys = generateKeyPair(random);
  const psk = pattern === "IKpsk2" ? random.bytes(32) : undefined;
  const name = `Noise_${pattern}_25519_ChaChaPoly_SHA256`;
  const theirRole = oursInitiates
    ? noise.constants.NOISE_ROLE_RESPONDER
    : noise.constants.NOISE_ROLE_INITIATOR;
  const theirs = new noise.HandshakeState(name, theirRole);
  const ours = new HandshakeState({
    pattern,
    initiator: oursInitiates,
    staticKeyPair: oursInitiates ? initiatorKeys : responderKeys,
    remoteStaticKey: oursInitiates ? responderKeys.publicKey : undefined,
    psk,
    prologue: PROLOGUE,
    random,
  });
  return { theirs, ours, initiatorKeys, responderKeys, psk: psk ?? null };
}

for (const pattern of ["IK", "IKpsk2"] as const) {
  for (const oursInitiates of [true, false]) {
    const roles = oursInitiates
      ? "ours initiates, noise-c responds"
      : "noise-c initiates, ours responds";
    Deno.test(`HandshakeState: ${pattern} with noise-c, ${roles}`, () => {
      const { theirs, ours, initiatorKeys, responderKeys, psk } = setUp(pattern, oursInitiates, 7);
      const hello = encoder.encode("hello from the initiator");
      const welcome = encoder.encode("welcome");
      if (oursInitiates) {
        theirs.Initialize(PROLOGUE, responderKeys.privateKey, null, psk);
        assertEquals(theirs.ReadMessage(ours.writeMessage(hello), true), hello);
        assertEquals(theirs.GetRemotePublicKey(), initiatorKeys.publicKey);
        assertEquals(ours.readMessage(theirs.WriteMessage(welcome)), welcome);
      } else {
        theirs.Initialize(PROLOGUE, initiatorKeys.privateKey, responderKeys.publicKey, psk);
        assertEquals(ours.readMessage(theirs.WriteMessage(hello)), hello);
        assertEquals(ours.remoteStaticKey, initiatorKeys.publicKey);
        assertEquals(theirs.ReadMessage(ours.writeMessage(welcome), true), welcome);
      }
      assertEquals(theirs.GetHandshakeHash(), ours.handshakeHash);
      const [theirSend, theirReceive] = theirs.Split();
      const mine = ours.split();
      try {
        for (let i = 0; i < 3; i++) {
          const out = encoder.encode(`ours ${i}`), back = encoder.encode(`theirs ${i}`);
          assertEquals(theirReceive.DecryptWithAd(EMPTY, mine.send.encryptWithAd(EMPTY, out)), out);
          assertEquals(
            mine.receive.decryptWithAd(EMPTY, theirSend.EncryptWithAd(EMPTY, back)),
            back,
          );
        }
      } finally {
        theirSend.free();
        theirReceive.free();
      }
    });
  }
}

Deno.test("HandshakeState: an IKpsk2 responder with another PSK is refused by our initiator", () => {
  const { theirs, ours, responderKeys } = setUp("IKpsk2", true, 8);
  theirs.Initialize(PROLOGUE, responderKeys.privateKey, null, new Uint8Array(32).fill(1));
  theirs.ReadMessage(ours.writeMessage(), false);
  const reply = theirs.WriteMessage(null);
  theirs.free();
  assertEquals(assertThrows(() => ours.readMessage(reply), CryptoError).code, "auth_failed");
});

Deno.test("HandshakeState: a noise-c IK initiator with the wrong server key is refused", () => {
  const { theirs, ours, initiatorKeys } = setUp("IK", false, 9);
  const wrongServer = generateKeyPair(new SeededRandom(10));
  theirs.Initialize(PROLOGUE, initiatorKeys.privateKey, wrongServer.publicKey, null);
  const message = theirs.WriteMessage(null);
  theirs.free();
  assertEquals(assertThrows(() => ours.readMessage(message), CryptoError).code, "auth_failed");
});
