import { assert, assertEquals, assertNotEquals } from "@std/assert";
import { MAX_NAME_CHARS, nameKey, nameProblem } from "../lib/wire/client_name.ts";

Deno.test("nameProblem() accepts valid names", () => {
  const valid = [
    "Alice Smith",
    "a",
    "a".repeat(MAX_NAME_CHARS),
    "é".repeat(MAX_NAME_CHARS),
    "Zoë Ångström",
    "Žofie Dvořáková",
    "Дмитрий",
    "李小龍",
    "r2d2",
    "007",
    "a.b",
    "snake_case",
    "kebab-case",
    "J. R. R. Tolkien",
  ];
  for (const name of valid) assertEquals(nameProblem(name), undefined, name);
});

Deno.test("nameProblem() counts characters, not UTF-16 units or bytes", () => {
  // 32 astral letters (Mathematical Bold A) are 64 UTF-16 units but 32 characters.
  assertEquals(nameProblem("\u{1D400}".repeat(MAX_NAME_CHARS)), undefined);
  assert(nameProblem("\u{1D400}".repeat(MAX_NAME_CHARS + 1)) !== undefined);
});

Deno.test("nameProblem() rejects invalid names with a reason", () => {
  const invalid = [
    "",
    "a".repeat(MAX_NAME_CHARS + 1),
    "a/b",
    "../x",
    "a\\b",
    "tab\t",
    " lead",
    "trail ",
    " ",
    "new\nline",
    "nul\0",
    "😀",
    "smile 😀",
    "a:b",
    "a@b",
    "<script>",
    "a\u00a0b",
    "a\u200bb",
  ];
  for (const name of invalid) {
    const problem = nameProblem(name);
    assert(typeof problem === "string" && problem.length > 0, JSON.stringify(name));
  }
});

Deno.test("nameProblem() says why a name is rejected", () => {
  assertEquals(nameProblem(""), "Name is empty");
  assert(nameProblem("a".repeat(33))!.includes("33 characters"));
  assert(nameProblem(" lead")!.includes("space"));
  assert(nameProblem("a/b")!.includes('"a/b"'));
});

Deno.test("nameKey() makes names equal regardless of case", () => {
  assertEquals(nameKey("ALICE"), nameKey("alice"));
  assertEquals(nameKey("Alice Smith"), nameKey("aLICE sMITH"));
  assertEquals(nameKey("ÅNGSTRÖM"), nameKey("ångström"));
  assertNotEquals(nameKey("alice"), nameKey("alice2"));
});

Deno.test("nameKey() makes names equal that differ only in how many spaces run together", () => {
  assertEquals(nameKey("Bob  Jones"), nameKey("Bob Jones"));
  assertEquals(nameKey("Bob   Q  Jones"), nameKey("bob q jones"));
  assertNotEquals(nameKey("BobJones"), nameKey("Bob Jones"));
});

Deno.test("nameKey() makes NFC and NFD forms equal", () => {
  const nfc = "Zoë Ångström".normalize("NFC");
  const nfd = "Zoë Ångström".normalize("NFD");
  assertNotEquals(nfc, nfd);
  assertEquals(nameKey(nfc), nameKey(nfd));
  assertEquals(nameKey("Zoe\u0308"), nameKey("zo\u00eb"));
  assertEquals(nameKey(nfd), nameKey(nameKey(nfd)));
});

Deno.test("nameProblem() rejects names of marks or punctuation alone", () => {
  for (const name of ["\u0301", "\u0301\u0301", "\u0301a", "...", "-", "_ _"]) {
    assert(nameProblem(name) !== undefined, `expected ${JSON.stringify(name)} to be rejected`);
  }
  for (const name of ["a\u0301", "-x", "x.y", "._9"]) {
    assertEquals(nameProblem(name), undefined, `expected ${JSON.stringify(name)} to be accepted`);
  }
});
