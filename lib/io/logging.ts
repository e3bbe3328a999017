import { getRotatingFileSink } from "@logtape/file";
import { configure, dispose, type FormattedValues, getTextFormatter } from "@logtape/logtape";
import { join } from "@std/path";
import { printable } from "../printable.ts";

/** The log levels `--log-level` accepts, from most to least verbose. */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevelName = typeof LOG_LEVELS[number];

/** Options for {@link setupLogging}. */
export interface LoggingOptions {
  /** The directory of the log files, created if missing, e.g. `logs`. */
  dir: string;
  /** The log file name inside `dir`, e.g. `server.log`. */
  file: string;
  /** The lowest level written for the `switchboard` categories. */
  level: LogLevelName;
}

/** The handle {@link setupLogging} returns. */
export interface Logging {
  /** Flushes every buffered line to disk and closes the log file. */
  close(): Promise<void>;
}

const MAX_FILE_BYTES = 5 * 1024 * 1024;
const MAX_FILES = 5;
// Lines reach the file within this long, so `tail -f` and a crash lose little.
const FLUSH_INTERVAL_MS = 200;

/**
 * Configures LogTape to write `["switchboard", ...]` records to a rotating
 * file (5 files of 5 MiB), one line per record: ISO timestamp, level,
 * category, message, then any properties the message does not mention.
 *
 * @param options where to write and the lowest level to keep
 * @returns a handle whose `close()` flushes and closes the log
 *
 * @example
 * ```ts
 * import { getLogger } from "@logtape/logtape";
 *
 * const logging = await setupLogging({ dir: "logs", file: "server.log", level: "info" });
 * getLogger(["switchboard", "server"]).info("registered {name}", { name: "alice" });
 * await logging.close();
 * ```
 */
export async function setupLogging(options: LoggingOptions): Promise<Logging> {
  await Deno.mkdir(options.dir, { recursive: true });
  const formatter = getTextFormatter({
    timestamp: "rfc3339",
    level: "FULL",
    category: ".",
    value: renderValue,
    format: formatLine,
  });
  await configure({
    reset: true,
    sinks: {
      file: getRotatingFileSink(join(options.dir, options.file), {
        formatter,
        maxSize: MAX_FILE_BYTES,
        maxFiles: MAX_FILES,
        nonBlocking: true,
        flushInterval: FLUSH_INTERVAL_MS,
      }),
    },
    loggers: [
      { category: ["switchboard"], lowestLevel: options.level, sinks: ["file"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["file"] },
    ],
  });
  return { close: dispose };
}

function formatLine({ timestamp, level, category, message, record }: FormattedValues): string {
  const mentioned = typeof record.rawMessage === "string"
    ? new Set(Array.from(record.rawMessage.matchAll(/\{([^{}]+)\}/g), (m) => m[1].trim()))
    : new Set<string>();
  const extras = Object.entries(record.properties)
    .filter(([key]) => !mentioned.has(key))
    .map(([key, value]) =>
      ` ${key}=${typeof value === "string" ? JSON.stringify(value) : renderValue(value)}`
    );
  return `${timestamp} ${level.padEnd(7)} ${category}: ${message}${extras.join("")}`;
}

/** Renders a property on one line; errors as `Name: message`, without their stack. */
function renderValue(value: unknown): string {
  if (typeof value === "string") return printable(value);
  if (value instanceof Error) return JSON.stringify(`${value.name}: ${value.message}`);
  return Deno.inspect(value, { colors: false, compact: true, breakLength: Infinity })
    .replace(/\r?\n\s*/g, " ");
}
