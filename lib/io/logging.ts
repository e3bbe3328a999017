import { getRotatingFileSink } from "@logtape/file";
import {
  configure,
  dispose,
  type FormattedValues,
  getJsonLinesFormatter,
  getStreamSink,
  getTextFormatter,
  type LogRecord,
  type Sink,
} from "@logtape/logtape";
import { join } from "@std/path";
import { printable } from "../printable.ts";

/** The log levels `--log-level` accepts, from most to least verbose. */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevelName = typeof LOG_LEVELS[number];

/** The formats `--log-format` accepts. */
export const LOG_FORMATS = ["text", "json"] as const;

/** One of {@link LOG_FORMATS}. */
export type LogFormatName = typeof LOG_FORMATS[number];

/** Options for {@link setupLogging}. */
export interface LoggingOptions {
  /** The directory of the log files, created if missing, e.g. `logs`. */
  dir: string;
  /** The log file name inside `dir`, e.g. `server.log`. */
  file: string;
  /** The lowest level written for the `switchboard` categories. */
  level: LogLevelName;
  /**
   * `text` (default): one line a record for people; `json`: one JSON object a
   * line (`@timestamp`, `level`, `logger`, `message`, `properties`).
   */
  format?: LogFormatName;
  /** Write to standard error instead of the file (containers, systemd). */
  stderr?: boolean;
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
 * file (5 files of 5 MiB), or to standard error, one line per record: in
 * text, ISO timestamp, level, category, message, then any properties the
 * message does not mention; in JSON, one object. Secrets never reach either:
 * a property named like a password, secret, token or key, and any bytes,
 * are written as `[REDACTED]`.
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
  const formatter = options.format === "json"
    ? getJsonLinesFormatter({ categorySeparator: ".", message: "rendered" })
    : getTextFormatter({
      timestamp: "rfc3339",
      level: "FULL",
      category: ".",
      value: renderValue,
      format: formatLine,
    });
  let sink: Sink;
  if (options.stderr) {
    // A stream of its own: closing the log must not close standard error.
    const stderr = new WritableStream<Uint8Array>({
      write(chunk) {
        for (let done = 0; done < chunk.length;) {
          done += Deno.stderr.writeSync(chunk.subarray(done));
        }
      },
    });
    sink = getStreamSink(stderr, { formatter });
  } else {
    await Deno.mkdir(options.dir, { recursive: true });
    sink = getRotatingFileSink(join(options.dir, options.file), {
      formatter,
      maxSize: MAX_FILE_BYTES,
      maxFiles: MAX_FILES,
      nonBlocking: true,
      flushInterval: FLUSH_INTERVAL_MS,
    });
  }
  await configure({
    reset: true,
    sinks: { file: withoutSecrets(sink, options.format === "json") },
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

/** Property names whose values are secrets. */
const SECRET_NAME = /pass(word|phrase)?|secret|token|key|psk|credential|authorization|cookie/i;

/** What a secret is written as. */
export const REDACTED = "[REDACTED]";

/**
 * Wraps a sink so that no secret reaches it: properties named like a
 * secret, and bytes of any name, become {@link REDACTED}, in the message
 * and in the properties. For JSON, errors become `Name: message`, and the
 * message is rendered as in the text format.
 */
function withoutSecrets(sink: Sink, json: boolean): Sink {
  const wrapped = (record: LogRecord) => {
    const names = typeof record.rawMessage === "string"
      ? Array.from(record.rawMessage.matchAll(/\{([^{}]+)\}/g), (m) => m[1].trim())
      : [];
    const clean = (name: string | undefined, value: unknown) =>
      (name !== undefined && SECRET_NAME.test(name)) || value instanceof Uint8Array
        ? REDACTED
        : json && value instanceof Error
        ? `${value.name}: ${value.message}`
        : value;
    const parts = record.message.map((part, i) =>
      i % 2 === 0 ? part : clean(names[(i - 1) / 2], part)
    );
    // JSON gets the message as the text format words it (no quotes around names).
    const message = json
      ? [parts.map((part, i) => i % 2 === 0 ? part : renderValue(part)).join("")]
      : parts;
    const properties = Object.fromEntries(
      Object.entries(record.properties).map(([key, value]) => [key, clean(key, value)]),
    );
    sink({ ...record, message, properties });
  };
  const disposable = sink as Partial<AsyncDisposable & Disposable>;
  return Object.assign(wrapped, {
    [Symbol.asyncDispose]: async () => {
      await disposable[Symbol.asyncDispose]?.();
      disposable[Symbol.dispose]?.();
    },
  });
}

/** Renders a property on one line; errors as `Name: message`, without their stack. */
function renderValue(value: unknown): string {
  if (typeof value === "string") return printable(value);
  if (value instanceof Error) return JSON.stringify(`${value.name}: ${value.message}`);
  return Deno.inspect(value, { colors: false, compact: true, breakLength: Infinity })
    .replace(/\r?\n\s*/g, " ");
}
