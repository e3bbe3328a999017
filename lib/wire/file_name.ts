/**
 * The rules for names of files that users share through the server.
 *
 * @module
 */

/** Longest file name, in characters (code points). */
export const MAX_FILE_NAME_CHARS = 100;

/**
 * Longest file name in UTF-8 bytes: file systems allow 255, and a received
 * file needs room for its partial file's `.NAME.<16 hex>.part` and for a
 * ` (1)` when the name is taken.
 */
export const MAX_FILE_NAME_BYTES = 200;

const FILE_NAME_PATTERN = /^[\p{L}\p{M}\p{N} ._-]+$/u;
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;
// Device names Windows reserves in every directory, with or without an
// extension ("nul.txt" too); the superscript digits count as digits there.
const WINDOWS_RESERVED = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])$/u;
const QUOTED_CHARS = 40;

/**
 * Checks a file name against the naming rules: 1 to 100 characters (and at
 * most 200 bytes of UTF-8) of letters
 * (with their combining marks), digits, space, `.`, `_` and `-`; not `.` or
 * `..`, not starting with `.`, a space or a combining mark, not ending with a
 * space or `.`, and not a device name Windows reserves (`CON`, `NUL.txt`,
 * `com1`, ...). A valid name holds no path separator, so joined to a
 * directory it always names an entry inside that directory.
 *
 * @param name the name as given by the user
 * @returns undefined if the name is valid, else one sentence saying why not
 *
 * @example
 * ```ts
 * fileNameProblem("readings 2024.csv"); // undefined
 * fileNameProblem("../x"); // 'File name "../x" may not contain "/"'
 * ```
 */
export function fileNameProblem(name: string): string | undefined {
  const length = [...name].length;
  if (length === 0) return "File name is empty";
  const quoted = quote(name);
  if (length > MAX_FILE_NAME_CHARS) {
    return `File name ${quoted} is ${length} characters long; the limit is ${MAX_FILE_NAME_CHARS}`;
  }
  const bytes = new TextEncoder().encode(name).length;
  if (bytes > MAX_FILE_NAME_BYTES) {
    return `File name ${quoted} takes ${bytes} bytes in UTF-8; the limit is ${MAX_FILE_NAME_BYTES}`;
  }
  for (const separator of ["/", "\\"]) {
    if (name.includes(separator)) return `File name ${quoted} may not contain "${separator}"`;
  }
  if (!FILE_NAME_PATTERN.test(name)) {
    const bad = [...name].find((c) => !FILE_NAME_PATTERN.test(c)) ?? "";
    const shown = bad.match(UNPRINTABLE) ? codePoint(bad) : `"${bad}"`;
    return `File name ${quoted} may not contain ${shown}; use letters, digits, space, ".", "_" and "-"`;
  }
  if (name === "." || name === "..") return `File name ${quoted} is not allowed`;
  if (name.startsWith(".")) return `File name ${quoted} may not start with "."`;
  if (name.startsWith(" ")) return `File name ${quoted} may not start with a space`;
  if (/^\p{M}/u.test(name)) return `File name ${quoted} may not start with a combining mark`;
  if (name.endsWith(" ")) return `File name ${quoted} may not end with a space`;
  if (name.endsWith(".")) return `File name ${quoted} may not end with "."`;
  const stem = name.toLowerCase().split(".")[0].trimEnd();
  if (WINDOWS_RESERVED.test(stem)) {
    return `File name ${quoted} is a device name reserved on Windows`;
  }
  return undefined;
}

/**
 * The key under which a user's file name is unique: two names differ only if
 * their keys do, so "Report.csv" and "report.CSV" are the same file, as they
 * would be on a case-insensitive file system.
 *
 * @param name a valid file name
 * @returns its NFC-normalized, lowercased form
 *
 * @example
 * ```ts
 * fileNameKey("Report.CSV"); // "report.csv"
 * ```
 */
export function fileNameKey(name: string): string {
  return name.normalize("NFC").toLowerCase();
}

/** Quotes a name for a message, escaping invisible characters and eliding the middle of long ones. */
function quote(name: string): string {
  const chars = [...name];
  const shown = chars.length > QUOTED_CHARS
    ? `${chars.slice(0, QUOTED_CHARS - 10).join("")}…${chars.slice(-9).join("")}`
    : name;
  return `"${shown.replace(UNPRINTABLE, escape)}"`;
}

function escape(char: string): string {
  const code = char.codePointAt(0)!;
  return code > 0xffff ? `\\u{${code.toString(16)}}` : `\\u${code.toString(16).padStart(4, "0")}`;
}

function codePoint(char: string): string {
  return `U+${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
}

/** Compound extensions kept whole when a number is put into a name. */
const COMPOUND_EXTENSIONS = /\.tar\.(?:gz|bz2|xz|zst|lz|lzma|Z)$/i;

/**
 * The `n`th name to try for a file whose name is taken: the number goes
 * before the extension (`report (1).csv`), and before a compound one too
 * (`a (1).tar.gz`); a dot file's name is all stem (`.env (1)`).
 *
 * @param name the file's name
 * @param n 0 for the name itself, then 1, 2, …
 * @returns the name to try
 *
 * @example
 * ```ts
 * numberedName("report.csv", 1); // "report (1).csv"
 * numberedName("a.tar.gz", 2); // "a (2).tar.gz"
 * ```
 */
export function numberedName(name: string, n: number): string {
  if (n === 0) return name;
  const compound = COMPOUND_EXTENSIONS.exec(name);
  const dot = name.lastIndexOf(".");
  const at = compound !== null && compound.index > 0 ? compound.index : dot > 0 ? dot : name.length;
  return `${name.slice(0, at)} (${n})${name.slice(at)}`;
}
