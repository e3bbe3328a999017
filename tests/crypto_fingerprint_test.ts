import { assertEquals } from "@std/assert";
import { fromHex } from "../lib/hex.ts";
import { fingerprint, normalizeFingerprint } from "../lib/crypto/fingerprint.ts";
import { sha256 } from "../lib/crypto/symmetric_state.ts";

Deno.test("fingerprint() is the first 20 bytes of SHA-256 in grouped base32", () => {
  const key = new Uint8Array(32);
  // SHA-256 of 32 zero bytes starts 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925.
  assertEquals(sha256(key).subarray(0, 4), fromHex("66687aad"));
  // Python: base64.b32encode(hashlib.sha256(bytes(32)).digest()[:20]).lower(), grouped by four.
  assertEquals(fingerprint(key), "mzuh-vlpy-mk6x-o3ep-ygfy-5h4o-eaej-ofef");
});

Deno.test("normalizeFingerprint() ignores case, spaces and dashes, and refuses non-base32", () => {
  const canonical = fingerprint(new Uint8Array(32).fill(9));
  assertEquals(normalizeFingerprint(canonical.toUpperCase().replaceAll("-", " ")), canonical);
  assertEquals(normalizeFingerprint(canonical.replaceAll("-", "")), canonical);
  assertEquals(normalizeFingerprint(canonical.slice(0, -1)), undefined);
  assertEquals(normalizeFingerprint(canonical.replace(/.$/, "1")), undefined);
});
