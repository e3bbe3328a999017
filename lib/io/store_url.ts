/**
 * The `--store` setting: `file`, or a Redis URL,
 * `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, checked before anything
 * starts and shown without its password in every line that names it.
 *
 * @module
 */

/**
 * Tells what is wrong with a `--store` setting, or nothing.
 *
 * @param spec the setting
 * @returns one sentence for a usage error (the password hidden), or undefined
 *
 * @example
 * ```ts
 * storeUrlProblem("redis://:secret@db:6379/2"); // undefined
 * storeUrlProblem("redis://db:port"); // '--store must be file or redis://…, not "redis://db:port"'
 * ```
 */
export function storeUrlProblem(spec: string): string | undefined {
  if (spec === "file") return undefined;
  const problem = `--store must be file or redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], not "${
    redactUrl(spec)
  }"`;
  let url: URL;
  try {
    url = new URL(spec);
  } catch {
    return problem;
  }
  const ok = url.protocol === "redis:" && url.hostname !== "" && /^(\/\d*)?$/.test(url.pathname) &&
    url.search === "" && url.hash === "" && spec.startsWith("redis://");
  return ok ? undefined : problem;
}

/**
 * Hides the password of a URL (`redis://user:secret@host` becomes
 * `redis://user:***@host`), even one that does not parse, for logs and errors.
 *
 * @param url the URL
 * @returns the URL without its password
 */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*):[^/]*@/i, "$1:***@");
}
