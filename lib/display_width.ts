/**
 * How many columns text takes on a terminal, and padding by that width for
 * tables: East Asian wide characters and emoji (ZWJ sequences and flags
 * included) take two, combining marks none. The widths come from the
 * `string-width` package (Unicode's East Asian Width and emoji data), not a
 * table of our own.
 *
 * @module
 */
import stringWidth from "string-width";

const graphemes = new Intl.Segmenter();

/**
 * Columns `text` takes on a terminal; escape sequences (colours) take none.
 *
 * @param text one line of text
 * @returns its width in columns
 *
 * @example
 * ```ts
 * displayWidth("ab"); // 2
 * displayWidth("日本"); // 4
 * displayWidth("👨‍👩‍👧"); // 2
 * ```
 */
export function displayWidth(text: string): number {
  return stringWidth(text, { countAnsiEscapeCodes: false });
}

/**
 * Pads `text` with spaces on the right to `width` columns (never cuts it).
 *
 * @param text one line of text
 * @param width the columns it should fill
 * @returns the padded text
 *
 * @example
 * ```ts
 * padEndToWidth("日本", 6); // "日本  "
 * ```
 */
export function padEndToWidth(text: string, width: number): string {
  return text + " ".repeat(Math.max(0, width - displayWidth(text)));
}

/**
 * Pads `text` with spaces on the left to `width` columns (never cuts it), for
 * numbers in a table.
 *
 * @param text one line of text
 * @param width the columns it should fill
 * @returns the padded text
 *
 * @example
 * ```ts
 * padStartToWidth("42", 5); // "   42"
 * ```
 */
export function padStartToWidth(text: string, width: number): string {
  return " ".repeat(Math.max(0, width - displayWidth(text))) + text;
}

/**
 * Cuts `text` to at most `width` columns, whole characters as seen (a ZWJ
 * emoji or an accented letter is kept or dropped whole).
 *
 * @param text one line of text
 * @param width the most columns it may take
 * @returns the text, cut
 *
 * @example
 * ```ts
 * cutToWidth("日本語", 5); // "日本"
 * ```
 */
export function cutToWidth(text: string, width: number): string {
  let out = "", used = 0;
  for (const { segment } of graphemes.segment(text)) {
    used += displayWidth(segment);
    if (used > width) break;
    out += segment;
  }
  return out;
}

/**
 * Lays rows out as columns, each as wide as its widest cell in display
 * columns, separated by two spaces; the last column is not padded.
 *
 * @param rows the table's rows, the header first if it has one
 * @returns the lines of the table
 *
 * @example
 * ```ts
 * alignColumns([["name", "address"], ["日本", "[::1]:3000"]]);
 * // ["name  address", "日本  [::1]:3000"]
 * ```
 */
export function alignColumns(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => widths[i] = Math.max(widths[i] ?? 0, displayWidth(cell)));
  }
  return rows.map((row) =>
    row.map((cell, i) => i === row.length - 1 ? cell : padEndToWidth(cell, widths[i])).join("  ")
  );
}
