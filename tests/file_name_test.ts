import { assert, assertEquals, assertNotEquals } from "@std/assert";
import { isAbsolute, join, normalize, relative, resolve, SEPARATOR } from "@std/path";
import fc from "fast-check";
import {
  fileNameKey,
  fileNameProblem,
  MAX_FILE_NAME_BYTES,
  MAX_FILE_NAME_CHARS,
  numberedName,
} from "../lib/wire/file_name.ts";
import { partialPath } from "../lib/io/transfer_disk.ts";

Deno.test("fileNameProblem() accepts valid names", () => {
  const valid = [
    "a",
    "readings.csv",
    "readings 2024-01-01.csv",
    "archive.tar.gz",
    "snake_case_file",
    "-dash-first",
    "_underscore",
    "a..b",
    "a".repeat(MAX_FILE_NAME_CHARS),
    "é".repeat(MAX_FILE_NAME_CHARS),
    "\u{1D400}".repeat(MAX_FILE_NAME_BYTES / 4),
    "文".repeat(66),
    "Zoës notes",
    "Отчёт.txt",
    "报告.pdf",
    "e\u0301t\u0301e\u0301",
    "__proto__",
    "constructor",
    "console.log",
    "CONFIG.SYS",
    "com10",
    "lpt",
    "nul1.txt",
    "auxiliary.txt",
  ];
  for (const name of valid) assertEquals(fileNameProblem(name), undefined, name);
});

Deno.test("fileNameProblem() rejects invalid names with a reason", () => {
  const invalid = [
    "",
    "a".repeat(MAX_FILE_NAME_CHARS + 1),
    "\u{1D400}".repeat(MAX_FILE_NAME_CHARS + 1),
    ".",
    "..",
    "...",
    ".hidden",
    " lead",
    "trail ",
    "trail.",
    "a:b",
    "C:x",
    "a*b",
    "a?b",
    'a"b',
    "a<b>",
    "a|b",
    "tab\tname",
    "new\nline",
    "cr\rname",
    "nul\0byte",
    "del\u007f",
    "c1\u0085",
    "zero\u200bwidth",
    "bidi\u202etxt.exe",
    "nbsp\u00a0name",
    "line\u2028sep",
    "emoji😀",
    "percent%20",
    "%2e%2e%2f",
    "\u0301accent first",
    "a+b",
    "a,b",
    "a;b",
    "a'b",
    "a~b",
    "a$b",
  ];
  for (const name of invalid) {
    const problem = fileNameProblem(name) ?? "";
    assert(problem.length > 0, JSON.stringify(name));
    assert(!problem.includes("\n") && !problem.endsWith("."), problem);
  }
});

Deno.test("fileNameProblem() rejects every path escape attempt", () => {
  const attempts = [
    "../a",
    "..",
    "a/../../b",
    "/etc/passwd",
    "C:\\x",
    "C:x",
    "a\\b",
    "..\\..\\windows",
    "\\\\server\\share",
    "%2e%2e%2f",
    "..%2f",
    "a\u2215b", // DIVISION SLASH
    "a\uff0fb", // FULLWIDTH SOLIDUS
    "a\u2044b", // FRACTION SLASH
    "a\u29f8b", // BIG SOLIDUS
    "a\uff3cb", // FULLWIDTH REVERSE SOLIDUS
    "\uff0e\uff0e", // FULLWIDTH FULL STOPs
    "a\0.txt",
    "~",
    "~root",
  ];
  for (const name of attempts) {
    assertNotEquals(fileNameProblem(name), undefined, JSON.stringify(name));
  }
});

Deno.test("fileNameProblem() rejects device names reserved on Windows", () => {
  const reserved = [
    "CON",
    "con",
    "Con.txt",
    "PRN",
    "AUX.tar.gz",
    "NUL",
    "nul.csv",
    "COM1",
    "com9.log",
    "COM0",
    "LPT1",
    "lpt9.txt",
    "COM¹",
    "lpt³.txt",
    "CON .txt",
  ];
  for (const name of reserved) {
    const problem = fileNameProblem(name);
    assert(problem?.includes("reserved on Windows"), `${name}: ${problem}`);
  }
});

Deno.test("fileNameProblem() says why a name is rejected", () => {
  assertEquals(fileNameProblem(""), "File name is empty");
  assertEquals(fileNameProblem("../x"), 'File name "../x" may not contain "/"');
  assertEquals(fileNameProblem("a\\b"), 'File name "a\\b" may not contain "\\"');
  assertEquals(
    fileNameProblem("a:b"),
    'File name "a:b" may not contain ":"; use letters, digits, space, ".", "_" and "-"',
  );
  assert(fileNameProblem("a".repeat(101))!.includes("101 characters"));
  assert(fileNameProblem(".hidden")!.includes('start with "."'));
  assert(fileNameProblem(" a")!.includes("start with a space"));
  assert(fileNameProblem("a ")!.includes("end with a space"));
  assert(fileNameProblem("a.")!.includes('end with "."'));
  assertEquals(fileNameProblem(".."), 'File name ".." is not allowed');
});

Deno.test("fileNameProblem() keeps invisible characters and long names out of its message", () => {
  const problem = fileNameProblem("evil\u202e\n\0name")!;
  assert(!/[\p{Cc}\p{Cf}]/u.test(problem), JSON.stringify(problem));
  assert(problem.includes("\\u202e") && problem.includes("U+202E"), problem);
  const long = fileNameProblem("x".repeat(100_000))!;
  assert(long.length < 200, `${long.length} characters`);
  assert(long.includes("100000 characters"));
});

Deno.test("fileNameKey() folds case and normalization", () => {
  assertEquals(fileNameKey("Report.CSV"), "report.csv");
  assertEquals(fileNameKey("e\u0301t\u0301e\u0301"), fileNameKey("\u00e9t\u0301\u00c9"));
  assertNotEquals(fileNameKey("a.csv"), fileNameKey("a.txt"));
});

const nameChar = fc.oneof(
  fc.constantFrom(" ", ".", "_", "-", "/", "\\", ":", "\0", "\u2215", "\uff0f", "%"),
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 1 }),
  fc.string({ unit: "binary", minLength: 1, maxLength: 1 }),
  fc.constantFrom(..."abcXYZ019éДé\u0301"),
);
const candidate = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.array(fc.constantFrom(..."aZ09éДé\u0301李 ._-"), { minLength: 1, maxLength: 20 })
      .map((cs) => cs.join("")),
  },
  fc.array(nameChar, { minLength: 0, maxLength: 12 }).map((cs) => cs.join("")),
  fc.string({ unit: "binary", maxLength: 110 }),
  fc.constantFrom("..", ".", "../a", "a/..", "con", "nul.txt"),
);

Deno.test("fileNameProblem() never accepts a name that leaves its directory", () => {
  const base = resolve(Deno.build.os === "windows" ? "C:\\store\\user" : "/store/user");
  let accepted = 0;
  fc.assert(
    fc.property(candidate, (name) => {
      if (fileNameProblem(name) !== undefined) return;
      accepted++;
      const joined = join(base, name);
      const relativePath = relative(base, resolve(joined));
      assertEquals(relativePath, name, `${JSON.stringify(name)} resolves elsewhere`);
      assertEquals(normalize(joined), joined);
      assert(!isAbsolute(name));
      assert(!name.includes(SEPARATOR) && !name.includes("/") && !name.includes("\\"));
      assert(!/\p{Cc}/u.test(name));
      assert([...name].length <= MAX_FILE_NAME_CHARS);
      assertEquals(fileNameProblem(name), undefined);
      // The key of a valid name stays within the same alphabet (lower case can lengthen it).
      assert(!/[\\/\0]/.test(fileNameKey(name)));
    }),
    { numRuns: 2000 },
  );
  assert(accepted > 500, `the generator produced only ${accepted} valid names`);
});

Deno.test("fileNameProblem() keeps names short enough in bytes for a partial file and a suffix", () => {
  assertEquals(
    fileNameProblem("文".repeat(84)),
    `File name "${"文".repeat(30)}…${"文".repeat(9)}" takes 252 bytes in UTF-8; the limit is 200`,
  );
  const longest = "文".repeat(66) + "ab";
  assertEquals(fileNameProblem(longest), undefined);
  // The partial file of a second transfer of the same content adds ".ID" too.
  const partial = partialPath("/d", longest, "ab".repeat(32)).slice("/d/".length);
  const own = partial.replace(/\.part$/, ".4294967295.part");
  assert(new TextEncoder().encode(own).length <= 255, `${own.length} bytes`);
  assert(new TextEncoder().encode(`${longest} (9999)`).length <= 255);
});

Deno.test("numberedName() puts the number before the extension, a compound one kept whole", () => {
  const cases: [string, number, string][] = [
    ["report.csv", 0, "report.csv"],
    ["report.csv", 1, "report (1).csv"],
    ["a.tar.gz", 1, "a (1).tar.gz"],
    ["backup.2026.tar.xz", 3, "backup.2026 (3).tar.xz"],
    ["archive.gz", 2, "archive (2).gz"],
    ["notes", 1, "notes (1)"],
    [".env", 1, ".env (1)"],
    [".tar.gz", 1, ".tar (1).gz"],
    ["v1.2.3", 1, "v1.2 (1).3"],
  ];
  for (const [name, n, want] of cases) assertEquals(numberedName(name, n), want, name);
});
