/**
 * The token hashes of the other instances' sessions (shared presence), so
 * that the instance whose disk holds a file can serve a `download` or
 * `delete` redirected to it (`file_elsewhere`) with the token of a session
 * on another instance. Only hashes travel: a hash does not open a session.
 *
 * @module
 */
import { nameKey } from "../wire/client_name.ts";
import type { PresenceRecord } from "./store.ts";

/**
 * Token hashes by name and names by token hash.
 *
 * @example
 * ```ts
 * const tokens = new RemoteTokens();
 * tokens.learn({ name: "Alice", ip: "10.0.0.1", udpPort: 1, tcpPort: 1, since: 0, tokenHash: "ab" });
 * tokens.name("ab"); // "Alice"
 * ```
 */
export class RemoteTokens {
  #byName = new Map<string, string>();
  #byHash = new Map<string, string>();

  /** True if no session's hash is known. */
  get empty(): boolean {
    return this.#byHash.size === 0;
  }

  /**
   * Learns (or replaces) a session's token hash.
   *
   * @param record the session, as another instance published it
   */
  learn(record: PresenceRecord): void {
    if (record.tokenHash === undefined) return;
    this.forget(record.name);
    this.#byName.set(nameKey(record.name), record.tokenHash);
    this.#byHash.set(record.tokenHash, record.name);
  }

  /**
   * Forgets the session of a name.
   *
   * @param name the session's name
   */
  forget(name: string): void {
    const hash = this.#byName.get(nameKey(name));
    if (hash === undefined) return;
    this.#byName.delete(nameKey(name));
    this.#byHash.delete(hash);
  }

  /**
   * Finds the session whose token has this hash.
   *
   * @param hash the SHA-256 of a token, lowercase hex
   * @returns the session's name, if one is known
   */
  name(hash: string): string | undefined {
    return this.#byHash.get(hash);
  }
}
