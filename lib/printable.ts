const CONTROL = /[\p{Cc}\u2028\u2029]/gu;
const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * Escapes control characters so that text from the network or a file
 * cannot forge extra lines in a log or move a terminal's cursor.
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
