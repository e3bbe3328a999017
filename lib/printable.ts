// Control characters, line and paragraph separators, and invisible format
// characters (bidi overrides such as U+202E, zero-width characters).
const CONTROL = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;
const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * Escapes control and invisible format characters so that text from the
 * network or a file cannot forge extra lines in a log, move a terminal's
 * cursor or reverse how the rest of a line reads.
 *
 * @param text any text
 * @returns the text with every control character written as an escape
 *
 * @example
 * ```ts
 * printable("a\nb"); // "a\\nb"
 * ```
 */
export function printable(text: string): string {
  return text.replace(
    CONTROL,
    (c) => NAMED[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
