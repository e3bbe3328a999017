import { printable } from "./printable.ts";

/**
 * Formats an error for the user's terminal as one line: `error: ` and the
 * message with its first word in lower case (acronyms kept) and control
 * characters escaped.
 *
 * @param message one sentence, as the library words it
 * @returns the line to print on stderr
 *
 * @example
 * ```ts
 * errorLine('Cannot register "Bob": name is taken');
 * // 'error: cannot register "Bob": name is taken'
 * errorLine("UDP port 3000 is in use"); // "error: UDP port 3000 is in use"
 * ```
 */
export function errorLine(message: string): string {
  return `error: ${printable(lowerFirstWord(message))}`;
}

/**
 * Puts a sentence's first word in lower case, unless it is an acronym, so
 * the sentence can follow a colon.
 *
 * @param sentence one sentence
 * @returns the sentence, its first word lowered
 */
export function lowerFirstWord(sentence: string): string {
  return /^[A-Z][a-z]/.test(sentence)
    ? sentence.charAt(0).toLowerCase() + sentence.slice(1)
    : sentence;
}
