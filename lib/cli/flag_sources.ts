/**
 * Flags from three places, for the server and the client alike: the command
 * line, the environment (`SWITCHBOARD_<FLAG>`, the flag's name in upper
 * snake case: `--udp-port` is `SWITCHBOARD_UDP_PORT`) and a TOML file named
 * by `--config FILE` or `SWITCHBOARD_CONFIG` (keys are the flags' names,
 * `udp-port = 3000` or `udp_port = 3000`). A flag beats the environment,
 * which beats the file. What the environment and the file give becomes
 * command-line flags for the program's own parser, and an error about such
 * a flag names where its value came from.
 *
 * @module
 */
import { parse as parseToml } from "smol-toml";
import { UsageError } from "./usage_error.ts";

/** The flags a program takes, without dashes. */
export interface FlagSpec {
  /** Flags with a value (`--udp-port 3000`). */
  readonly strings: readonly string[];
  /** On/off flags (`--json`). */
  readonly booleans: readonly string[];
}

/** Where the environment and files are read from (the real ones by default). */
export interface FlagSourcesOptions {
  /** Reads an environment variable; undefined when unset. */
  env?: (name: string) => string | undefined;
  /** Reads a file as text. */
  readFile?: (path: string) => string;
  /**
   * Take only these flags from the environment and the file (a subcommand
   * that reads a few of the program's flags); the file may still hold the
   * others. Default: every flag of the spec.
   */
  only?: readonly string[];
}

/** Flags no other source gives: they act on this run only. */
const COMMAND_LINE_ONLY = new Set(["help", "version", "config"]);

/**
 * The environment variable of a flag.
 *
 * @param flag the flag's name without dashes
 * @returns its variable
 *
 * @example
 * ```ts
 * envName("udp-port"); // "SWITCHBOARD_UDP_PORT"
 * ```
 */
export function envName(flag: string): string {
  return `SWITCHBOARD_${flag.toUpperCase().replaceAll("-", "_")}`;
}

/**
 * Every environment variable a program with these flags reads, for
 * `--allow-env`.
 *
 * @param spec the program's flags
 * @returns `SWITCHBOARD_CONFIG` and one variable a flag
 */
export function envNames(spec: FlagSpec): string[] {
  return [
    envName("config"),
    ...[...spec.strings, ...spec.booleans].filter((f) => !COMMAND_LINE_ONLY.has(f)).map(envName),
  ];
}

/**
 * Parses the command line with the values the environment and the config
 * file add, and names the source of a bad value.
 *
 * @param args the command-line arguments
 * @param spec the program's flags
 * @param parse the program's own flag parser, which throws {@linkcode UsageError}
 * @param options where the environment and files come from
 * @returns what `parse` returns
 * @throws {UsageError} from `parse`, prefixed with the variable or file
 *   (`SWITCHBOARD_UDP_PORT: --udp-port must be ...`) when the value came from one
 *
 * @example
 * ```ts
 * const flags = parseWithSources(Deno.args, { strings: ["udp-port"], booleans: [] }, parseFlags);
 * ```
 */
export function parseWithSources<T>(
  args: readonly string[],
  spec: FlagSpec,
  parse: (args: string[]) => T,
  options: FlagSourcesOptions = {},
): T {
  const { args: merged, sources } = addSources(args, spec, options);
  try {
    return parse(merged);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    const flag = /^--([a-z][a-z-]*)/.exec(error.message)?.[1];
    const source = flag === undefined ? undefined : sources.get(flag);
    if (source === undefined) throw error;
    throw new UsageError(`${source}: ${error.message}`);
  }
}

/**
 * The command line with flags added from the environment and the config
 * file, and where each added one came from.
 *
 * @param args the command-line arguments
 * @param spec the program's flags
 * @param options where the environment and files come from
 * @returns the arguments to parse, and the source of each added flag
 * @throws {UsageError} for a config file that cannot be read or holds
 *   something that is not a flag
 */
export function addSources(
  args: readonly string[],
  spec: FlagSpec,
  options: FlagSourcesOptions = {},
): { args: string[]; sources: Map<string, string> } {
  const env = options.env ?? readEnv;
  const readFile = options.readFile ?? Deno.readTextFileSync;
  const rest = [...args];
  const sources = new Map<string, string>();
  // --help and --version work whatever the environment and files hold.
  if (rest.some((arg) => /^(-h|-V|--help|--version)$/.test(arg))) return { args: rest, sources };

  let configPath: string | undefined;
  let configSource = "--config";
  const at = rest.findIndex((arg) => arg === "--config" || arg.startsWith("--config="));
  if (at !== -1) {
    configPath = rest[at].includes("=") ? rest[at].slice("--config=".length) : rest[at + 1];
    rest.splice(at, rest[at].includes("=") ? 1 : 2);
    if (configPath === undefined || configPath === "" || configPath.startsWith("--")) {
      throw new UsageError("--config needs a value");
    }
  } else {
    configPath = nonEmpty(env(envName("config")));
    configSource = envName("config");
  }
  const file = configPath === undefined ? {} : readConfig(configPath, configSource, spec, readFile);

  const given = new Set(
    rest.filter((arg) => arg.startsWith("--")).map((arg) => arg.slice(2).split("=")[0]),
  );
  const added: string[] = [];
  for (const flag of [...spec.strings, ...spec.booleans]) {
    if (COMMAND_LINE_ONLY.has(flag) || given.has(flag)) continue;
    if (options.only !== undefined && !options.only.includes(flag)) continue;
    const boolean = spec.booleans.includes(flag);
    const fromEnv = nonEmpty(env(envName(flag)));
    if (fromEnv !== undefined) {
      sources.set(flag, envName(flag));
      if (boolean && fromEnv !== "true" && fromEnv !== "false") {
        throw new UsageError(`${envName(flag)} must be true or false, not "${fromEnv}"`);
      }
      added.push(...flagArgs(flag, fromEnv, boolean));
    } else if (flag in file) {
      sources.set(flag, `${configPath}: ${flag}`);
      added.push(...flagArgs(flag, file[flag], boolean));
    }
  }
  return { args: [...added, ...rest], sources };
}

function flagArgs(flag: string, value: string, boolean: boolean): string[] {
  if (!boolean) return [`--${flag}`, value];
  return value === "true" ? [`--${flag}`] : [`--${flag}=false`];
}

/** Reads the TOML file into flag values as text; nested tables are not flags. */
function readConfig(
  path: string,
  source: string,
  spec: FlagSpec,
  readFile: (path: string) => string,
): Record<string, string> {
  let text: string;
  try {
    text = readFile(path);
  } catch (error) {
    throw new UsageError(
      `cannot read config file ${path} (${source}): ${(error as Error).message}`,
    );
  }
  let table: Record<string, unknown>;
  try {
    table = parseToml(text);
  } catch (error) {
    const first = (error as Error).message.split("\n")[0];
    throw new UsageError(`${path}: not valid TOML: ${first}`);
  }
  const values: Record<string, string> = {};
  for (const [key, value] of Object.entries(table)) {
    const flag = key.replaceAll("_", "-");
    const known = [...spec.strings, ...spec.booleans].includes(flag) &&
      !COMMAND_LINE_ONLY.has(flag);
    if (!known) throw new UsageError(`${path}: unknown setting "${key}"; see --help`);
    const boolean = spec.booleans.includes(flag);
    if (boolean ? typeof value !== "boolean" : !["string", "number"].includes(typeof value)) {
      throw new UsageError(
        `${path}: ${key} must be ${boolean ? "true or false" : "a string or a number"}`,
      );
    }
    values[flag] = String(value);
  }
  return values;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === "" ? undefined : value;
}

/** An environment variable, or undefined when unset or not allowed to be read. */
function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // Not granted by --allow-env: as if unset.
  }
}
