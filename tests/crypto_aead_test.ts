/**
 * The AEAD pieces of lib/crypto against published vectors:
 * draft-irtf-cfrg-xchacha-03 section 2.2.1 (HChaCha20) and appendix A.3.1
 * (AEAD_XChaCha20_Poly1305), which WireGuard's cookie replies use; and
 * HMAC-SHA256 against RFC 4231 and node:crypto's own HMAC; ChaCha20-Poly1305
 * against RFC 8439 section 2.8.2, and its two implementations (libsodium's
 * WebAssembly for small messages, node:crypto for large) against each other.
 */
import { assertEquals, assertThrows } from "@std/assert";
import { fromHex, toHex } from "../lib/hex.ts";
import {
  chacha20Poly1305Open,
  chacha20Poly1305Seal,
  chacha20Poly1305SealInto,
  counterNonce,
  SMALL_MESSAGE_BYTES,
  xchacha20Poly1305Open,
  xchacha20Poly1305Seal,
} from "../lib/crypto/chacha20_poly1305.ts";
import { CryptoError } from "../lib/crypto/crypto_error.ts";
import { hchacha20 } from "../lib/crypto/hchacha20.ts";
import { hmacSha256 } from "../lib/crypto/symmetric_state.ts";
import { createCipheriv, createHmac } from "node:crypto";

function sequence(first: number, length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => first + i);
}

Deno.test("hchacha20() matches draft-irtf-cfrg-xchacha-03 section 2.2.1", () => {
  assertEquals(
    toHex(hchacha20(sequence(0, 32), fromHex("000000090000004a0000000031415927"))),
    "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc",
  );
});

Deno.test("xchacha20Poly1305Seal() matches draft-irtf-cfrg-xchacha-03 appendix A.3.1", () => {
  const key = sequence(0x80, 32), nonce = sequence(0x40, 24);
  const ad = fromHex("50515253c0c1c2c3c4c5c6c7");
  const plaintext = new TextEncoder().encode(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
  );
  const expected = "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb" +
    "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452" +
    "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9" +
    "21f9664c97637da9768812f615c68b13b52e" + "c0875924c1c7987947deafd8780acf49";
  const sealed = xchacha20Poly1305Seal(key, nonce, ad, plaintext);
  assertEquals(toHex(sealed), expected);
  assertEquals(xchacha20Poly1305Open(key, nonce, ad, sealed), plaintext);
  const bad = sealed.slice();
  bad[0] ^= 1;
  assertEquals(
    assertThrows(() => xchacha20Poly1305Open(key, nonce, ad, bad), CryptoError).code,
    "auth_failed",
  );
});

Deno.test("counterNonce() puts the counter little-endian after four zero bytes", () => {
  assertEquals(toHex(counterNonce(0)), "000000000000000000000000");
  assertEquals(toHex(counterNonce(0x0102030405)), "000000000504030201000000");
  assertEquals(toHex(counterNonce(2 ** 53 - 1)), "00000000ffffffffffff1f00");
  assertThrows(() => counterNonce(-1), RangeError);
  assertThrows(() => counterNonce(2 ** 53), RangeError);
});

Deno.test("chacha20Poly1305Open() refuses short input, a wrong nonce and wrong associated data", () => {
  const key = sequence(1, 32), ad = Uint8Array.of(9);
  const sealed = chacha20Poly1305Seal(key, counterNonce(7), ad, Uint8Array.of(1, 2, 3));
  assertEquals(chacha20Poly1305Open(key, counterNonce(7), ad, sealed), Uint8Array.of(1, 2, 3));
  const code = (f: () => unknown) => assertThrows(f, CryptoError).code;
  assertEquals(
    code(() => chacha20Poly1305Open(key, counterNonce(7), ad, sealed.subarray(0, 15))),
    "truncated",
  );
  assertEquals(code(() => chacha20Poly1305Open(key, counterNonce(8), ad, sealed)), "auth_failed");
  assertEquals(
    code(() => chacha20Poly1305Open(key, counterNonce(7), Uint8Array.of(8), sealed)),
    "auth_failed",
  );
});

Deno.test("hmacSha256() matches node:crypto's HMAC and RFC 4231 test case 2", () => {
  assertEquals(
    toHex(
      hmacSha256(
        new TextEncoder().encode("Jefe"),
        new TextEncoder().encode("what do ya want for nothing?"),
      ),
    ),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  );
  for (const keyLength of [0, 1, 32, 63, 64, 65, 200]) {
    const key = sequence(3, keyLength), message = sequence(9, keyLength + 7);
    const expected = new Uint8Array(createHmac("sha256", key).update(message).digest());
    assertEquals(hmacSha256(key, message.subarray(0, 5), message.subarray(5)), expected);
  }
});

Deno.test("chacha20Poly1305SealInto() writes what chacha20Poly1305Seal() returns, at an offset", () => {
  const key = new Uint8Array(32).fill(3), ad = Uint8Array.of(1, 2);
  const plaintext = new TextEncoder().encode("sealed in place");
  const out = new Uint8Array(5 + plaintext.length + 16 + 3).fill(0xee);
  chacha20Poly1305SealInto(key, counterNonce(9), ad, plaintext, out, 5);
  const expected = chacha20Poly1305Seal(key, counterNonce(9), ad, plaintext);
  assertEquals(out.subarray(5, 5 + expected.length), expected);
  assertEquals([...out.subarray(0, 5), ...out.subarray(5 + expected.length)], Array(8).fill(0xee));
  assertThrows(
    () => chacha20Poly1305SealInto(key, counterNonce(9), ad, plaintext, out, 9),
    RangeError,
  );
  // Opening gives a plain Uint8Array (a Buffer's slice() would be a view, not a copy).
  const opened = chacha20Poly1305Open(key, counterNonce(9), ad, expected);
  assertEquals(Object.getPrototypeOf(opened), Uint8Array.prototype);
  assertEquals(opened, plaintext);
  const copy = opened.slice();
  copy[0] ^= 1;
  assertEquals(opened, plaintext);
  // A reused nonce buffer is rewritten whole.
  const nonce = counterNonce(2 ** 40 + 5);
  assertEquals(counterNonce(1, nonce), counterNonce(1));
});

Deno.test("chacha20Poly1305Seal() matches RFC 8439 section 2.8.2", () => {
  const key = sequence(0x80, 32);
  const nonce = fromHex("070000004041424344454647");
  const ad = fromHex("50515253c0c1c2c3c4c5c6c7");
  const plaintext = new TextEncoder().encode(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
  );
  const sealed = chacha20Poly1305Seal(key, nonce, ad, plaintext);
  assertEquals(toHex(sealed.subarray(0, 16)), "d31a8d34648e60db7b86afbc53ef7ec2");
  assertEquals(toHex(sealed.subarray(plaintext.length)), "1ae10b594f09e26a7e902ecbd0600691");
  assertEquals(chacha20Poly1305Open(key, nonce, ad, sealed), plaintext);
});

/** node:crypto's ChaCha20-Poly1305, called directly: the reference for every size. */
function referenceSeal(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, plaintext: Uint8Array) {
  const cipher = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
  cipher.setAAD(ad, { plaintextLength: plaintext.length });
  const body = cipher.update(plaintext);
  cipher.final();
  return Uint8Array.from([...body, ...cipher.getAuthTag()]);
}

Deno.test("both ChaCha20-Poly1305 implementations give node:crypto's bytes on each side of the size where they meet", () => {
  const sizes = [0, 1, 63, 64, 65, 1100, 1400, SMALL_MESSAGE_BYTES - 1, SMALL_MESSAGE_BYTES];
  sizes.push(SMALL_MESSAGE_BYTES + 1, 4096, 70_000, 20, 1100); // back to small after a large one
  let seed = 7;
  const random = (length: number) =>
    Uint8Array.from({ length }, () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
  for (const size of sizes) {
    const key = random(32), nonce = counterNonce(size * 31), ad = random(size % 40);
    const plaintext = random(size);
    const sealed = chacha20Poly1305Seal(key, nonce, ad, plaintext);
    assertEquals(toHex(sealed), toHex(referenceSeal(key, nonce, ad, plaintext)), `${size} bytes`);
    assertEquals(chacha20Poly1305Open(key, nonce, ad, sealed), plaintext, `${size} bytes`);
    for (const at of [0, Math.floor(sealed.length / 2), sealed.length - 1]) {
      const tampered = sealed.slice();
      tampered[at] ^= 0x20;
      assertThrows(() => chacha20Poly1305Open(key, nonce, ad, tampered), CryptoError);
    }
    const otherKey = key.slice();
    otherKey[31] ^= 1;
    assertThrows(() => chacha20Poly1305Open(otherKey, nonce, ad, sealed), CryptoError);
  }
});
