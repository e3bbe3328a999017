/** Longest client name, in characters. */
export const MAX_NAME_CHARS = 32;

const NAME_PATTERN = /^[\p{L}\p{M}\p{N} ._-]+$/u;

/**
 * Checks a client name against the naming rules: 1 to 32 characters of
 * letters (with their combining marks), digits, space, `.`, `_` and `-`, with
 * at least one letter or digit, not starting with a space or a combining mark
 * and not ending with a space.
 *
 * @param name the name as typed
 * @returns undefined if the name is valid, else one sentence saying why not
 *
 * @example
 * ```ts
 * nameProblem("Alice Smith"); // undefined
 * nameProblem("a/b"); // 'Name "a/b" may only hold letters, ...'
 * ```
 */
export function nameProblem(name: string): string | undefined {
  const length = [...name].length;
  if (length === 0) return "Name is empty";
  if (length > MAX_NAME_CHARS) {
    return `Name "${name}" is ${length} characters long; the limit is ${MAX_NAME_CHARS}`;
  }
  if (!NAME_PATTERN.test(name)) {
    return `Name "${name}" may only hold letters, digits, space, ".", "_" and "-"`;
  }
  if (name.trim() !== name) return `Name "${name}" starts or ends with a space`;
  if (!/^[\p{L}\p{N}._-]/u.test(name)) return `Name "${name}" starts with a combining mark`;
  if (!/[\p{L}\p{N}]/u.test(name)) return `Name "${name}" has no letter or digit`;
  return undefined;
}

/**
 * The key under which a name is unique: names differ only if their keys do,
 * so "Alice" and "alice" are the same name, and so are "Bob Jones" and
 * "Bob  Jones" (which look alike in a list).
 *
 * @param name a valid name
 * @returns its NFC-normalized, lowercased form with runs of spaces as one
 */
export function nameKey(name: string): string {
  return name.normalize("NFC").toLowerCase().replace(/ {2,}/g, " ");
}
