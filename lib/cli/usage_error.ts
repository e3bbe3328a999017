import { LOG_FORMATS, type LogFormatName } from "../io/logging.ts";

/**
 * Thrown for bad command-line usage; entry points print its message as
 * `error: <message>` and exit with code 2.
 *
 * @example
 * ```ts
 * throw new UsageError("--udp-port must be a number from 0 to 65535, not \"x\"");
 * ```
 */
export class UsageError extends Error {
  /** @param message one line: what is wrong and what to do */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Reads a port number flag.
 *
 * @param flag the flag's name, for the message, such as `"--udp-port"`
 * @param value the raw value from the parser
 * @param range the allowed range (default 0 to 65535)
 * @returns the port
 * @throws {UsageError} if the value is not an integer in range
 */
export function portFlag(
  flag: string,
  value: unknown,
  range: { min: number; max: number } = { min: 0, max: 65535 },
): number {
  const text = String(value);
  const port = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(port >= range.min && port <= range.max)) {
    throw new UsageError(
      `${flag} must be a number from ${range.min} to ${range.max}, not "${text}"`,
    );
  }
  return port;
}

/**
 * Reads a positive number of seconds.
 *
 * @param flag the flag's name, for the message
 * @param value the raw value from the parser
 * @returns the value in milliseconds
 * @throws {UsageError} if it is not a positive number
 */
export function secondsFlag(flag: string, value: unknown): number {
  const text = String(value);
  const seconds = /^\d+(\.\d+)?$/.test(text) ? Number(text) : NaN;
  if (!(seconds > 0 && seconds <= 86400)) {
    throw new UsageError(
      `${flag} must be a number of seconds above 0 and at most 86400, not "${text}"`,
    );
  }
  return seconds * 1000;
}

/** Seconds, minutes, hours or days in a duration flag. */
const DURATION_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses a duration such as `90d`, `12h`, `30m` or `45s` (a bare number is
 * seconds), or `off`.
 *
 * @param flag the flag's name, for the message
 * @param value the flag's value
 * @returns milliseconds, 0 for off
 * @throws {UsageError} if it is neither
 *
 * @example
 * ```ts
 * durationFlag("--keep-partial", "12h"); // 43200000
 * ```
 */
export function durationFlag(flag: string, value: string): number {
  if (value === "off" || value === "0") return 0;
  const match = /^(\d+(?:\.\d+)?)([smhd]?)$/.exec(value);
  const ms = match === null ? NaN : Number(match[1]) * DURATION_UNITS[match[2] || "s"];
  if (!(ms >= 1000 && ms <= 100 * 365 * 86_400_000)) {
    throw new UsageError(
      `${flag} must be a duration such as 90d, 12h, 30m or 45s (at least 1 s), or off, ` +
        `not "${value}"`,
    );
  }
  return ms;
}

/**
 * Parses a size flag: bytes, or a number with K, M or G (powers of 1024).
 *
 * @param flag the flag's name, for the message
 * @param value the flag's value
 * @returns the size in bytes
 * @throws {UsageError} if it is not a size from 1 byte to 1 TiB
 *
 * @example
 * ```ts
 * sizeFlag("--quota", "100M"); // 104857600
 * ```
 */
export function sizeFlag(flag: string, value: unknown): number {
  const text = String(value);
  const match = /^(\d+(?:\.\d+)?)([KMG]?)i?B?$/i.exec(text.trim());
  const unit = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[match?.[2]?.toUpperCase() ?? ""];
  const bytes = match === null || unit === undefined ? NaN : Math.floor(Number(match[1]) * unit);
  if (!(bytes >= 1 && bytes <= 1024 ** 4)) {
    throw new UsageError(
      `${flag} must be a size such as 1048576, 500K, 100M or 2G, not "${text}"`,
    );
  }
  return bytes;
}

/**
 * Parses a whole-number flag within a range.
 *
 * @param flag the flag's name, for the message
 * @param value the flag's value
 * @param range the smallest and largest allowed
 * @returns the number
 * @throws {UsageError} if it is not a whole number in the range
 */
export function integerFlag(
  flag: string,
  value: unknown,
  range: { min: number; max: number },
): number {
  const text = String(value);
  const n = /^\d{1,9}$/.test(text) ? Number(text) : NaN;
  if (!(n >= range.min && n <= range.max)) {
    throw new UsageError(
      `${flag} must be a whole number from ${range.min} to ${range.max}, not "${text}"`,
    );
  }
  return n;
}

/**
 * Rejects flags a program does not know, which `parseArgs` collects in `_`
 * or as extra keys.
 *
 * @param parsed the parser's result
 * @param known every flag name the program accepts, without dashes
 * @param help where the user reads about them (`--help`, `user --help`)
 * @throws {UsageError} naming the first unknown flag or stray argument
 */
export function rejectUnknownFlags(
  parsed: Record<string, unknown>,
  known: readonly string[],
  help = "--help",
): void {
  for (const key of Object.keys(parsed)) {
    if (key === "_" || known.includes(key)) continue;
    // `--delay -1` reaches here as a short flag "1": say what the user wrote.
    if (/^[0-9.]/.test(key)) {
      throw new UsageError(`cannot use the value -${key}: it must not be negative; see ${help}`);
    }
    throw new UsageError(`unknown flag --${key}; see ${help}`);
  }
  const rest = parsed._ as unknown[];
  if (rest.length > 0) throw new UsageError(`unexpected argument "${rest[0]}"; see ${help}`);
}

/**
 * Rejects string flags given without a value: `--script --json`, `--name=`
 * or `--name ""`.
 *
 * @param args the raw arguments
 * @param parsed the parser's result
 * @param flags the string flags to check, without dashes
 * @throws {UsageError} naming the first flag with an empty value
 */
export function requireValues(
  args: readonly string[],
  parsed: Record<string, unknown>,
  flags: readonly string[],
): void {
  const empty = args.findIndex((arg, i) => arg === "" && i > 0 && args[i - 1].startsWith("--"));
  if (empty !== -1) throw new UsageError(`${args[empty - 1]} needs a value`);
  for (const flag of flags) {
    if (parsed[flag] !== "") continue;
    // The parser takes "-1" for a flag: say what was meant.
    const next = args[args.indexOf(`--${flag}`) + 1] ?? "";
    if (args.includes(`--${flag}`) && /^-\d/.test(next)) {
      throw new UsageError(`--${flag} cannot be negative, not "${next}"`);
    }
    throw new UsageError(`--${flag} needs a value`);
  }
}

/**
 * Rejects a value given to an on/off flag, such as `--accept-files=no`,
 * which the parser would take as on. Only `true` and `false` are allowed.
 *
 * @param args the raw arguments
 * @param switches the boolean flags, without dashes
 * @throws {UsageError} naming the first such flag
 */
export function rejectSwitchValues(args: readonly string[], switches: readonly string[]): void {
  for (const arg of args) {
    if (arg === "--") return;
    const match = /^--([^=]+)=(.*)$/s.exec(arg);
    if (match === null || !switches.includes(match[1])) continue;
    if (match[2] === "true" || match[2] === "false") continue;
    throw new UsageError(`--${match[1]} takes no value, not "${match[2]}"; leave it out for off`);
  }
}

/**
 * Reads `--log-format`.
 *
 * @param value the raw value
 * @returns `text` or `json`
 * @throws {UsageError} for anything else
 */
export function logFormatFlag(value: unknown): LogFormatName {
  const text = String(value);
  if (!(LOG_FORMATS as readonly string[]).includes(text)) {
    throw new UsageError(`--log-format must be text or json, not "${text}"`);
  }
  return text as LogFormatName;
}
