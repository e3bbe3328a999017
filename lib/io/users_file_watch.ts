/**
 * Password mode's users file, watched: read at start, then checked every
 * 2 s (modification time, size, inode) and handed to the server core again
 * when it changed, so that `server.ts user add` takes effect without a
 * restart. A version that does not read is logged and the previous kept.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { PasswordUser } from "../server/accounts.ts";
import { nameKey } from "../wire/client_name.ts";
import { loadUsers, type UsersFile } from "./users_file.ts";

/** How often the users file is checked for changes, ms. */
const USERS_FILE_CHECK_MS = 2000;

const log = getLogger(["switchboard", "server"]);

/**
 * A users file and the accounts read from it.
 *
 * @example
 * ```ts
 * const watch = await UsersFileWatch.open("./data/users.json");
 * core.setUsers(watch.users);
 * watch.start((users) => core.setUsers(users));
 * // ...
 * watch.stop();
 * ```
 */
export class UsersFileWatch {
  /** The file's path. */
  readonly path: string;
  /** The accounts read by `open`, by name key. */
  readonly users: ReadonlyMap<string, PasswordUser>;
  #stamp: string;
  #timer: ReturnType<typeof setInterval> | undefined;

  private constructor(path: string, users: ReadonlyMap<string, PasswordUser>, stamp: string) {
    this.path = path;
    this.users = users;
    this.#stamp = stamp;
  }

  /**
   * Reads the users file.
   *
   * @param path the file
   * @returns the file with its accounts
   * @throws {UsersFileError} if it cannot be read or does not hold valid users
   */
  static async open(path: string): Promise<UsersFileWatch> {
    const stamp = await fileStamp(path);
    return new UsersFileWatch(path, passwordUsers(await loadUsers(path)), stamp);
  }

  /**
   * Starts checking the file for changes.
   *
   * @param changed called with the accounts of each new version that reads
   */
  start(changed: (users: ReadonlyMap<string, PasswordUser>) => void): void {
    this.#timer ??= setInterval(() => this.#check(changed), USERS_FILE_CHECK_MS);
  }

  /** Stops checking. Safe to call twice, or without `start`. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #check(changed: (users: ReadonlyMap<string, PasswordUser>) => void): Promise<void> {
    const stamp = await fileStamp(this.path);
    if (stamp === this.#stamp || this.#timer === undefined) return;
    this.#stamp = stamp;
    try {
      const users = await loadUsers(this.path);
      changed(passwordUsers(users));
      log.info("Reloaded {count} users from {path}", { count: users.size, path: this.path });
    } catch (error) {
      log.error("Kept the previous users: {error}", { error: (error as Error).message });
    }
  }
}

function passwordUsers(users: UsersFile): Map<string, PasswordUser> {
  return new Map(users.records().map((u) => [nameKey(u.name), u]));
}

async function fileStamp(path: string): Promise<string> {
  try {
    const info = await Deno.stat(path);
    return `${info.mtime?.getTime()}/${info.size}/${info.ino}`;
  } catch {
    return "missing";
  }
}
