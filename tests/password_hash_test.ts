import { assert, assertEquals, assertMatch, assertNotEquals, assertRejects } from "@std/assert";
import {
  DEFAULT_ITERATIONS,
  DUMMY_HASH,
  hashPassword,
  MIN_PASSWORD_LENGTH,
  PasswordHashError,
  passwordHashProblem,
  passwordProblem,
  verifyPassword,
} from "../lib/server/password_hash.ts";

/** Few iterations keep the tests fast; verification reads the count from the string. */
const FAST = { iterations: 1000 };
const SALT = new Uint8Array(16).fill(7);

Deno.test("hashPassword() and verifyPassword() round-trip", async () => {
  const stored = await hashPassword("correct horse battery staple", FAST);
  assertMatch(stored, /^pbkdf2-sha256\$1000\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/);
  assert(await verifyPassword(stored, "correct horse battery staple"));
});

Deno.test("verifyPassword() rejects a wrong password", async () => {
  const stored = await hashPassword("correct horse battery staple", FAST);
  assertEquals(await verifyPassword(stored, "correct horse battery stapl"), false);
  assertEquals(await verifyPassword(stored, "Correct horse battery staple"), false);
  assertEquals(await verifyPassword(stored, ""), false);
});

Deno.test("hashPassword() uses a fresh random salt each time", async () => {
  const a = await hashPassword("same password", FAST);
  const b = await hashPassword("same password", FAST);
  assertNotEquals(a, b);
  assert(await verifyPassword(a, "same password"));
  assert(await verifyPassword(b, "same password"));
});

Deno.test("hashPassword() is deterministic for a given salt", async () => {
  const a = await hashPassword("same password", { ...FAST, salt: SALT });
  const b = await hashPassword("same password", { ...FAST, salt: SALT });
  assertEquals(a, b);
  assert(a.startsWith(`pbkdf2-sha256$1000$${SALT.toBase64()}$`));
});

Deno.test("verifyPassword() checks a PBKDF2-HMAC-SHA256 test vector of 40 bytes", async () => {
  // The RFC 6070 long inputs with SHA-256 (a widely published vector; Python's hashlib agrees):
  // P = "passwordPASSWORDpassword", S = "saltSALTsaltSALTsaltSALTsaltSALTsalt", c = 4096, dkLen = 40
  const stored = "pbkdf2-sha256$4096$c2FsdFNBTFRzYWx0U0FMVHNhbHRTQUxUc2FsdFNBTFRzYWx0$" +
    "NIyJ28vTKy8y2BS4EW6EzysXNH68GAAYHE4qH7jdU+HGNVGMfaxH6Q==";
  assert(await verifyPassword(stored, "passwordPASSWORDpassword"));
  assertEquals(await verifyPassword(stored, "passwordPASSWORDpassworD"), false);
});

Deno.test("hashPassword() output matches an independent PBKDF2 implementation", async () => {
  // Python: base64(hashlib.pbkdf2_hmac("sha256", "café".encode(), b"\x07" * 16, 1000, 32))
  assertEquals(
    await hashPassword("café", { ...FAST, salt: SALT }),
    "pbkdf2-sha256$1000$BwcHBwcHBwcHBwcHBwcHBw==$AgNXqDm2pyQa5eBY57NCFm2a2sxHOjTEtMeFqDZiTy4=",
  );
});

Deno.test("verifyPassword() treats NFC and NFD spellings as the same password", async () => {
  const composed = "caf\u00e9 au lait"; // é as one code point
  const decomposed = "cafe\u0301 au lait"; // e + combining acute
  assertNotEquals(composed, decomposed);
  const stored = await hashPassword(decomposed, { ...FAST, salt: SALT });
  assertEquals(stored, await hashPassword(composed, { ...FAST, salt: SALT }));
  assert(await verifyPassword(stored, composed));
  assert(await verifyPassword(stored, decomposed));
});

Deno.test("verifyPassword() uses the iterations in the stored string", async () => {
  const with1000 = await hashPassword("iteration test", { iterations: 1000, salt: SALT });
  const with1001 = await hashPassword("iteration test", { iterations: 1001, salt: SALT });
  assertNotEquals(with1000.split("$")[3], with1001.split("$")[3]);
  assert(await verifyPassword(with1000, "iteration test"));
  assert(await verifyPassword(with1001, "iteration test"));
  // Same salt and hash, but a different count: the derived key differs.
  const [algorithm, , salt, hash] = with1000.split("$");
  assertEquals(
    await verifyPassword([algorithm, "1001", salt, hash].join("$"), "iteration test"),
    false,
  );
});

Deno.test("hashPassword() defaults to 600000 iterations and a 16-byte salt", async () => {
  assertEquals(DEFAULT_ITERATIONS, 600_000);
  const stored = await hashPassword("default parameters");
  const [algorithm, iterations, salt, hash] = stored.split("$");
  assertEquals(algorithm, "pbkdf2-sha256");
  assertEquals(iterations, "600000");
  assertEquals(Uint8Array.fromBase64(salt).length, 16);
  assertEquals(Uint8Array.fromBase64(hash).length, 32);
});

Deno.test("hashPassword() throws a RangeError for bad iterations or salt", async () => {
  for (const iterations of [0, -1, 1.5, 10_000_001, NaN]) {
    await assertRejects(() => hashPassword("password", { iterations }), RangeError);
  }
  await assertRejects(
    () => hashPassword("password", { ...FAST, salt: new Uint8Array(7) }),
    RangeError,
  );
  await assertRejects(
    () => hashPassword("password", { ...FAST, salt: new Uint8Array(65) }),
    RangeError,
  );
});

Deno.test("verifyPassword() throws PasswordHashError for malformed stored strings", async (t) => {
  const good = await hashPassword("password", { ...FAST, salt: SALT });
  const [, , salt, hash] = good.split("$");
  const cases: [string, string, string][] = [
    ["an empty string", "", "pbkdf2-sha256"],
    ["another algorithm", `bcrypt$1000$${salt}$${hash}`, "pbkdf2-sha256"],
    ["upper-case algorithm", `PBKDF2-SHA256$1000$${salt}$${hash}`, "pbkdf2-sha256"],
    ["too few parts", `pbkdf2-sha256$1000$${salt}`, "parts"],
    ["too many parts", `${good}$extra`, "parts"],
    ["iterations 0", `pbkdf2-sha256$0$${salt}$${hash}`, "iterations"],
    ["negative iterations", `pbkdf2-sha256$-5$${salt}$${hash}`, "iterations"],
    ["leading zero", `pbkdf2-sha256$01000$${salt}$${hash}`, "iterations"],
    ["iterations over the limit", `pbkdf2-sha256$10000001$${salt}$${hash}`, "iterations"],
    ["huge iterations", `pbkdf2-sha256$99999999999$${salt}$${hash}`, "iterations"],
    ["iterations with a space", `pbkdf2-sha256$ 1000$${salt}$${hash}`, "iterations"],
    ["salt not base64", `pbkdf2-sha256$1000$not*base64$${hash}`, "salt"],
    ["salt without padding", `pbkdf2-sha256$1000$${salt.replace(/=+$/, "")}$${hash}`, "salt"],
    [
      "salt with a space",
      `pbkdf2-sha256$1000$${salt.slice(0, 4)} ${salt.slice(4)}$${hash}`,
      "salt",
    ],
    ["salt too short", `pbkdf2-sha256$1000$AAAA$${hash}`, "salt"],
    ["empty salt", `pbkdf2-sha256$1000$$${hash}`, "salt"],
    ["hash too short", `pbkdf2-sha256$1000$${salt}$AAAAAAAA`, "hash"],
    [
      "hash with non-zero padding bits",
      `pbkdf2-sha256$1000$${salt}$${hash.slice(0, -2)}9=`,
      "hash",
    ],
    ["url-safe base64 hash", `pbkdf2-sha256$1000$${salt}$${hash.replace(/./, "-")}`, "hash"],
  ];
  for (const [label, stored, mention] of cases) {
    await t.step(label, async () => {
      const error = await assertRejects(
        () => verifyPassword(stored, "password"),
        PasswordHashError,
      );
      assert(error.message.includes(mention), error.message);
      assertEquals(passwordHashProblem(stored), error.message);
    });
  }
  assertEquals(passwordHashProblem(good), undefined);
});

Deno.test("DUMMY_HASH is well formed, costs the default iterations and matches nothing", async () => {
  assertEquals(passwordHashProblem(DUMMY_HASH), undefined);
  const [, iterations, salt, hash] = DUMMY_HASH.split("$");
  assertEquals(Number(iterations), DEFAULT_ITERATIONS);
  assertEquals(Uint8Array.fromBase64(salt).length, 16);
  assertEquals(Uint8Array.fromBase64(hash).length, 32);
  assertEquals(await verifyPassword(DUMMY_HASH, "correct horse battery staple"), false);
});

Deno.test("passwordProblem() accepts good passwords", () => {
  assertEquals(MIN_PASSWORD_LENGTH, 8);
  for (
    const password of [
      "12345678",
      "correct horse battery staple",
      "päßwörd€",
      "🔑🔑🔑🔑🔑🔑🔑🔑",
      "x".repeat(256),
      "é".repeat(128), // 256 bytes
    ]
  ) {
    assertEquals(passwordProblem(password), undefined, password);
  }
});

Deno.test("passwordProblem() explains what is wrong in one sentence", () => {
  assertEquals(passwordProblem(""), "Password is 0 characters long; the minimum is 8");
  assertEquals(passwordProblem("a"), "Password is 1 character long; the minimum is 8");
  assertEquals(passwordProblem("hunter2"), "Password is 7 characters long; the minimum is 8");
  // 7 code points in NFC, though 8 UTF-16 units in NFD
  assertEquals(
    passwordProblem("cafe\u0301123"),
    "Password is 7 characters long; the minimum is 8",
  );
  assertEquals(
    passwordProblem("x".repeat(257)),
    "Password is 257 bytes long in UTF-8; the limit is 256",
  );
  assertEquals(
    passwordProblem("é".repeat(129)),
    "Password is 258 bytes long in UTF-8; the limit is 256",
  );
  for (const control of ["\t", "\n", "\r", "\0", "\x1b", "\x7f", "\x85"]) {
    assertEquals(
      passwordProblem(`password${control}123`),
      "Password contains a control character such as a tab or line break",
    );
  }
  assertEquals(passwordProblem("password\ud800"), "Password is not valid Unicode text");
  for (const password of ["", "x".repeat(300), "pass\tword"]) {
    const message = passwordProblem(password)!;
    assert(!message.endsWith("."), message);
    assert(!message.includes("\n"), message);
    if (password.length > 0) assert(!message.includes(password), message);
  }
});
