import { assertEquals, assertThrows } from "@std/assert";
import { toHex } from "../lib/hex.ts";
import { CryptoError } from "../lib/crypto/crypto_error.ts";
import {
  decodeSecureDatagram,
  encodeSecureDatagram,
  type SecureDatagram,
  TRANSPORT_OVERHEAD,
} from "../lib/crypto/secure_datagram.ts";

const fill = (length: number, value: number) => new Uint8Array(length).fill(value);

Deno.test("encodeSecureDatagram(): the four kinds round-trip", () => {
  const cases: SecureDatagram[] = [
    { kind: "initiation", sender: 0xdeadbeef, handshake: fill(96 + 12, 1) },
    { kind: "response", sender: 1, receiver: 0xdeadbeef, handshake: fill(48, 2) },
    { kind: "cookie_reply", receiver: 9, nonce: fill(24, 3), encryptedCookie: fill(32, 4) },
    { kind: "transport", receiver: 5, counter: 2 ** 53 - 1, ciphertext: fill(16 + 1100, 5) },
  ];
  for (const datagram of cases) {
    const decoded = decodeSecureDatagram(encodeSecureDatagram(datagram));
    assertEquals({ ...decoded }, { ...datagram });
  }
});

Deno.test("encodeSecureDatagram(): the transport layout is header, receiver, counter, ciphertext", () => {
  const bytes = encodeSecureDatagram({
    kind: "transport",
    receiver: 0x01020304,
    counter: 0x0506070809,
    ciphertext: fill(16, 0xaa),
  });
  assertEquals(bytes.length, TRANSPORT_OVERHEAD);
  assertEquals(toHex(bytes.subarray(0, 16)), "53570384" + "01020304" + "0000000506070809");
});

Deno.test("encodeSecureDatagram(): handshake kinds end with 32 zero bytes for the MACs", () => {
  const bytes = encodeSecureDatagram({ kind: "initiation", sender: 1, handshake: fill(96, 7) });
  assertEquals(bytes.length, 4 + 4 + 96 + 32);
  assertEquals(bytes.subarray(bytes.length - 32), new Uint8Array(32));
});

Deno.test("decodeSecureDatagram(): refuses garbage with a CryptoError code, telling another version apart", () => {
  const code = (bytes: Uint8Array) =>
    assertThrows(() => decodeSecureDatagram(bytes), CryptoError).code;
  assertEquals(code(Uint8Array.of(0x53, 0x57, 3)), "truncated");
  assertEquals(code(Uint8Array.of(0x53, 0x58, 3, 0x84)), "malformed");
  assertEquals(code(Uint8Array.of(0x53, 0x57, 2, 0x84)), "bad_version");
  assertEquals(code(Uint8Array.of(0x53, 0x57, 3, 0x01)), "malformed");
  assertEquals(code(Uint8Array.of(0x53, 0x57, 3, 0x84, ...fill(27, 0))), "truncated");
  assertEquals(code(Uint8Array.of(0x53, 0x57, 3, 0x81, ...fill(131, 0))), "truncated");
  assertEquals(code(Uint8Array.of(0x53, 0x57, 3, 0x82, ...fill(87, 0))), "truncated");
  assertEquals(code(Uint8Array.of(0x53, 0x57, 3, 0x83, ...fill(61, 0))), "malformed");
  assertEquals(
    code(Uint8Array.of(0x53, 0x57, 3, 0x84, 0, 0, 0, 0, 0, 0x20, ...fill(22, 0))),
    "malformed",
  );
  assertEquals(code(fill(65_537, 0)), "malformed");
});

Deno.test("decodeSecureDatagram(): every truncation of a response is refused", () => {
  const whole = encodeSecureDatagram({
    kind: "response",
    sender: 1,
    receiver: 2,
    handshake: fill(48, 1),
  });
  for (let length = 0; length < whole.length; length++) {
    assertThrows(() => decodeSecureDatagram(whole.subarray(0, length)), CryptoError);
  }
});
