/**
 * The users file of the server's password mode: `<data-dir>/users.json` by
 * default, human-readable JSON holding each user's name, password hash and
 * creation time, written atomically with mode 0600.
 *
 * ```json
 * {
 *   "version": 1,
 *   "users": [
 *     { "name": "Alice", "passwordHash": "pbkdf2-sha256$600000$...", "createdAt": "2025-01-02T03:04:05.000Z" }
 *   ]
 * }
 * ```
 *
 * @module
 */
import { dirname, join } from "@std/path";
import { nameKey, nameProblem } from "../wire/client_name.ts";
import { passwordHashProblem } from "../server/password_hash.ts";
import { lowerFirstWord } from "../error_line.ts";
import { printable } from "../printable.ts";
import { atomicWriteFile } from "./atomic_write.ts";

/** The users file's name inside the data directory. */
export const USERS_FILE = "users.json";
/** The format version this module reads and writes. */
export const USERS_FILE_VERSION = 1;

/** One user of the password mode. */
export interface UserRecord {
  /** The name as it was added (case kept); unique ignoring case. */
  readonly name: string;
  /** A string from `hashPassword`. */
  readonly passwordHash: string;
  /** When the user was added, as an ISO 8601 timestamp. */
  readonly createdAt: string;
}

/** The users file as JSON. */
export interface UsersJson {
  /** Always {@link USERS_FILE_VERSION}. */
  version: number;
  /** The users, in the order they were added. */
  users: UserRecord[];
}

/** Thrown when the users file cannot be read, parsed or written; the message is one line. */
export class UsersFileError extends Error {
  /** @param message one sentence naming the file and the problem */
  constructor(message: string) {
    super(message);
    this.name = "UsersFileError";
  }
}

/**
 * The users, looked up by name ignoring case (by `nameKey`).
 *
 * @example
 * ```ts
 * const users = await loadUsers("data/users.json");
 * const alice = users.get("ALICE"); // finds "Alice"
 * ```
 */
export class UsersFile {
  readonly #byKey = new Map<string, UserRecord>();

  /**
   * @param records users to start with
   * @throws {RangeError} if two have the same name ignoring case
   */
  constructor(records: Iterable<UserRecord> = []) {
    for (const record of records) this.add(record);
  }

  /** @returns how many users there are */
  get size(): number {
    return this.#byKey.size;
  }

  /**
   * Finds a user.
   *
   * @param name the name in any case (or its `nameKey`)
   * @returns the user, or undefined
   */
  get(name: string): UserRecord | undefined {
    return this.#byKey.get(nameKey(name));
  }

  /**
   * Says whether a user exists.
   *
   * @param name the name in any case
   * @returns true if there is a user by that name
   */
  has(name: string): boolean {
    return this.#byKey.has(nameKey(name));
  }

  /**
   * Adds a user.
   *
   * @param record the new user
   * @throws {RangeError} if the name is taken (ignoring case)
   */
  add(record: UserRecord): void {
    const key = nameKey(record.name);
    const existing = this.#byKey.get(key);
    if (existing !== undefined) {
      throw new RangeError(`Cannot add user "${record.name}": "${existing.name}" exists`);
    }
    this.#byKey.set(key, { ...record });
  }

  /**
   * Replaces a user's password hash, keeping its name and creation time.
   *
   * @param name the name in any case
   * @param passwordHash the new hash
   * @returns the updated user
   * @throws {RangeError} if there is no such user
   */
  setPasswordHash(name: string, passwordHash: string): UserRecord {
    const key = nameKey(name);
    const existing = this.#byKey.get(key);
    if (existing === undefined) throw new RangeError(`No user "${name}"`);
    const updated = { ...existing, passwordHash };
    this.#byKey.set(key, updated);
    return updated;
  }

  /**
   * Removes a user.
   *
   * @param name the name in any case
   * @returns the removed user, or undefined if there was none
   */
  remove(name: string): UserRecord | undefined {
    const key = nameKey(name);
    const existing = this.#byKey.get(key);
    this.#byKey.delete(key);
    return existing;
  }

  /** @returns the users in the order they were added */
  records(): UserRecord[] {
    return [...this.#byKey.values()];
  }

  /** @returns the file's JSON form */
  toJson(): UsersJson {
    return {
      version: USERS_FILE_VERSION,
      users: this.records().map((r) => ({
        name: r.name,
        passwordHash: r.passwordHash,
        createdAt: r.createdAt,
      })),
    };
  }

  /**
   * Reads and validates the file's JSON form.
   *
   * @param json parsed JSON
   * @returns the users
   * @throws {UsersFileError} saying what is wrong (without the file's name)
   */
  static fromJson(json: unknown): UsersFile {
    if (!isObject(json)) throw new UsersFileError("The top level is not an object");
    if (json.version !== USERS_FILE_VERSION) {
      throw new UsersFileError(
        `"version" is ${
          JSON.stringify(json.version)
        }; this program reads version ${USERS_FILE_VERSION}`,
      );
    }
    if (!Array.isArray(json.users)) throw new UsersFileError(`"users" is not an array`);
    const users = new UsersFile();
    json.users.forEach((entry: unknown, index: number) => {
      const label = `user ${index + 1}`;
      if (!isObject(entry)) throw new UsersFileError(`${label} is not an object`);
      const { name, passwordHash, createdAt } = entry;
      if (typeof name !== "string") throw new UsersFileError(`${label} has no "name" string`);
      const problem = nameProblem(name);
      if (problem !== undefined) {
        throw new UsersFileError(`${label} has a bad name: ${printable(lowerFirstWord(problem))}`);
      }
      if (typeof passwordHash !== "string") {
        throw new UsersFileError(`${label} ("${name}") has no "passwordHash" string`);
      }
      const hashProblem = passwordHashProblem(passwordHash);
      if (hashProblem !== undefined) {
        throw new UsersFileError(
          `${label} ("${name}") has a bad passwordHash: ${lowerFirstWord(hashProblem)}`,
        );
      }
      if (typeof createdAt !== "string" || Number.isNaN(Date.parse(createdAt))) {
        throw new UsersFileError(`${label} ("${name}") has no ISO 8601 "createdAt" time`);
      }
      const existing = users.get(name);
      if (existing !== undefined) {
        throw new UsersFileError(
          `${label} ("${name}") repeats the name "${existing.name}" (names ignore case)`,
        );
      }
      users.add({ name, passwordHash, createdAt });
    });
    return users;
  }
}

/**
 * The default users file for a data directory.
 *
 * @param dataDir the data directory
 * @returns `<dataDir>/users.json`
 */
export function defaultUsersPath(dataDir: string): string {
  return join(dataDir, USERS_FILE);
}

/**
 * Loads the users file. A missing file is no users; a file that exists but
 * cannot be read or is not valid is an error, and is left untouched.
 *
 * @param path the users file
 * @returns the users
 * @throws {UsersFileError} naming the file and the problem
 *
 * @example
 * ```ts
 * const users = await loadUsers("data/users.json");
 * console.log(users.size);
 * ```
 */
export async function loadUsers(path: string): Promise<UsersFile> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return new UsersFile();
    throw new UsersFileError(`Cannot read ${path}: ${describe(error)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new UsersFileError(
      `${path} is not valid JSON (${describe(error)}); fix it or move it away`,
    );
  }
  try {
    return UsersFile.fromJson(json);
  } catch (error) {
    if (!(error instanceof UsersFileError)) throw error;
    throw new UsersFileError(
      `${path} is not a valid users file: ${lowerFirstWord(error.message)}; fix it or move it away`,
    );
  }
}

/**
 * Writes the users file atomically with mode 0600 (it holds password
 * hashes), creating its directory if needed.
 *
 * @param path the users file
 * @param users the users
 * @returns once the new file is durable
 * @throws {UsersFileError} naming the file if it cannot be written
 *
 * @example
 * ```ts
 * const users = await loadUsers(path);
 * users.add({ name: "Alice", passwordHash: await hashPassword(pw), createdAt: new Date().toISOString() });
 * await saveUsers(path, users);
 * ```
 */
export async function saveUsers(path: string, users: UsersFile): Promise<void> {
  try {
    await Deno.mkdir(dirname(path), { recursive: true });
    await atomicWriteFile(path, JSON.stringify(users.toJson(), null, 2) + "\n", { mode: 0o600 });
  } catch (error) {
    throw new UsersFileError(`Cannot write ${path}: ${describe(error)}`);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
