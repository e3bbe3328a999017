/**
 * Keys for peer tests: Alice's and Bob's static key pairs, one
 * introduction's nonce and PSK, and a forger's initiation made with any key.
 */
import { encodeIntroduction, PeerCipher } from "../lib/client/peer_cipher.ts";
import { introductionPsk, tai64n } from "../lib/crypto/introduction.ts";
import { type KeyPair, keyPairFromPrivateKey } from "../lib/crypto/key_pair.ts";
import { SeededRandom } from "../lib/random.ts";

/** Alice's static key pair. */
export const ALICE_KEYS: KeyPair = keyPairFromPrivateKey(new Uint8Array(32).fill(0xa1));
/** Bob's static key pair. */
export const BOB_KEYS: KeyPair = keyPairFromPrivateKey(new Uint8Array(32).fill(0xb0));
/** Mallory's static key pair: a key nobody vouches for as Alice's. */
export const MALLORY_KEYS: KeyPair = keyPairFromPrivateKey(new Uint8Array(32).fill(0x66));
/** The introduction's nonce. */
export const NONCE: Uint8Array = new Uint8Array(16).fill(0x11);
/** The introduction's PSK. */
export const PSK: Uint8Array = new Uint8Array(32).fill(0x22);

/**
 * A `peer_connect` made with any key pair, claiming any name: what a forger
 * sends (it needs no PSK for message 1).
 *
 * @param options the session, the key pair, the receiver's key, the name, the time
 * @returns the encoded datagram
 */
export function forgeInitiation(options: {
  session: string;
  keys: KeyPair;
  to: Uint8Array;
  name: string;
  atMs?: number;
  nonce?: Uint8Array;
}): Uint8Array {
  const cipher = new PeerCipher({
    session: options.session,
    staticKeyPair: options.keys,
    remoteKey: options.to,
    psk: new Uint8Array(32),
    random: new SeededRandom(99),
  });
  return cipher.initiate(
    0,
    encodeIntroduction({
      name: options.name,
      nonce: options.nonce ?? NONCE,
      timestamp: tai64n(options.atMs ?? Date.UTC(2026, 11, 6)),
    }),
  );
}

/** A stand-in server's introductions: the keys clients logged in with, and their PSKs. */
export class StandInKeys {
  readonly secret: Uint8Array = new Uint8Array(32).fill(0x5e);

  /**
   * @param requester the key of the client that asks
   * @param target the key of the client it asks about
   * @param nonce the lookup's nonce (empty for the requester's first lookup)
   * @returns the nonce and PSK for the `lookup_ok`
   */
  introduce(
    requester: Uint8Array,
    target: Uint8Array,
    nonce: Uint8Array,
  ): { nonce: Uint8Array; psk: Uint8Array } {
    if (nonce.length === 0) {
      const fresh = new Uint8Array(16).fill(0x33);
      return { nonce: fresh, psk: introductionPsk(this.secret, requester, target, fresh) };
    }
    return { nonce, psk: introductionPsk(this.secret, target, requester, nonce) };
  }
}
