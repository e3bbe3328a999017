/**
 * Password hashing for the server's password mode: PBKDF2-HMAC-SHA256 through
 * WebCrypto, with the parameters of the OWASP Password Storage Cheat Sheet
 * (600,000 iterations, a 16-byte random salt, a 32-byte result).
 *
 * A hash is stored as one self-describing string,
 * `pbkdf2-sha256$<iterations>$<salt>$<hash>`, salt and hash in standard
 * padded base64 (RFC 4648 section 4), so the parameters can change later and
 * old hashes still verify: {@link verifyPassword} reads them from the string.
 *
 * Passwords are normalized to Unicode NFC before hashing, so the same
 * password typed as precomposed or decomposed characters (macOS and Linux
 * keyboards differ) verifies either way.
 *
 * `crypto.subtle.deriveBits` runs on a worker thread in Deno, so hashing
 * does not block the event loop; at 600,000 iterations one hash takes a few
 * hundred milliseconds of CPU.
 *
 * @module
 */

/** The algorithm tag at the start of every stored hash. */
export const HASH_ALGORITHM = "pbkdf2-sha256";
/** PBKDF2 iterations of new hashes (OWASP Password Storage Cheat Sheet, PBKDF2-HMAC-SHA256). */
export const DEFAULT_ITERATIONS = 600_000;
/** Bytes of random salt in new hashes. */
export const SALT_BYTES = 16;
/** Bytes of derived key in new hashes. */
export const HASH_BYTES = 32;
/** Shortest password accepted, in characters (Unicode code points, after NFC). */
export const MIN_PASSWORD_LENGTH = 8;
/** Longest password accepted, in bytes of UTF-8 (after NFC). */
export const MAX_PASSWORD_BYTES = 256;

/** Most iterations a stored hash may ask for, so a doctored file cannot stall the server. */
const MAX_ITERATIONS = 10_000_000;
const MIN_SALT_BYTES = 8;
const MAX_SALT_BYTES = 64;
const MIN_HASH_BYTES = 16;
const MAX_HASH_BYTES = 64;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Thrown by {@link verifyPassword} when a stored hash is not a string this
 * module wrote: an unknown algorithm, bad base64, out-of-range parameters.
 * That is a damaged users file, not a wrong password, so it is not reported
 * as `false`. Check stored strings up front with {@link passwordHashProblem}.
 */
export class PasswordHashError extends Error {
  /** @param message one sentence naming what is wrong (never the hash itself) */
  constructor(message: string) {
    super(message);
    this.name = "PasswordHashError";
  }
}

/** Options for {@link hashPassword}. */
export interface HashPasswordOptions {
  /** PBKDF2 iterations, 1 to 10,000,000 (default 600,000; tests use fewer for speed). */
  iterations?: number;
  /** The salt, 8 to 64 bytes (default 16 fresh random bytes; give one only in tests). */
  salt?: Uint8Array;
}

interface ParsedHash {
  iterations: number;
  salt: Uint8Array<ArrayBuffer>;
  hash: Uint8Array<ArrayBuffer>;
}

/**
 * Hashes a password for storage.
 *
 * @param password the password as typed; it is normalized to NFC first
 * @param options iterations and salt, for tests
 * @returns `pbkdf2-sha256$<iterations>$<salt base64>$<hash base64>`
 * @throws {RangeError} if the iterations or the salt length are out of range
 *
 * @example
 * ```ts
 * const stored = await hashPassword("correct horse battery staple");
 * await verifyPassword(stored, "correct horse battery staple"); // true
 * ```
 */
export async function hashPassword(
  password: string,
  options: HashPasswordOptions = {},
): Promise<string> {
  const iterations = options.iterations ?? DEFAULT_ITERATIONS;
  if (!Number.isSafeInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
    throw new RangeError(
      `Iterations must be an integer from 1 to ${MAX_ITERATIONS}, not ${iterations}`,
    );
  }
  const salt = options.salt === undefined
    ? crypto.getRandomValues(new Uint8Array(SALT_BYTES))
    : new Uint8Array(options.salt);
  if (salt.length < MIN_SALT_BYTES || salt.length > MAX_SALT_BYTES) {
    throw new RangeError(
      `Salt must be ${MIN_SALT_BYTES} to ${MAX_SALT_BYTES} bytes long, not ${salt.length}`,
    );
  }
  const hash = await pbkdf2(password, salt, iterations, HASH_BYTES);
  return [HASH_ALGORITHM, String(iterations), salt.toBase64(), hash.toBase64()].join("$");
}

/**
 * Checks a password against a stored hash, with the iterations, salt and
 * length the stored string names, comparing in constant time.
 *
 * @param stored a string from {@link hashPassword}
 * @param password the password as typed; it is normalized to NFC first
 * @returns true if the password matches
 * @throws {PasswordHashError} if `stored` is malformed
 *
 * @example
 * ```ts
 * // Same cost whether or not the name exists: no timing oracle for names.
 * const user = users.get(name);
 * const matches = await verifyPassword(user?.passwordHash ?? DUMMY_HASH, password);
 * const ok = user !== undefined && matches;
 * ```
 */
export async function verifyPassword(stored: string, password: string): Promise<boolean> {
  const parsed = parseHash(stored);
  const actual = await pbkdf2(password, parsed.salt, parsed.iterations, parsed.hash.length);
  return constantTimeEqual(actual, parsed.hash);
}

/**
 * Says what is wrong with a stored hash string, without hashing anything.
 *
 * @param stored a string that should come from {@link hashPassword}
 * @returns undefined if it is well formed, else one sentence saying why not
 *
 * @example
 * ```ts
 * passwordHashProblem("md5$abc"); // 'Password hash does not start with "pbkdf2-sha256$"'
 * ```
 */
export function passwordHashProblem(stored: string): string | undefined {
  try {
    parseHash(stored);
    return undefined;
  } catch (error) {
    if (error instanceof PasswordHashError) return error.message;
    throw error;
  }
}

/**
 * A well-formed hash with the default parameters that no password matches
 * (its hash part is fixed bytes, not the result of hashing anything; finding
 * a password for it would take a preimage of PBKDF2-HMAC-SHA256). Verify
 * against it when a login names an unknown user, so that the answer takes as
 * long as for a known one and does not reveal which names exist.
 */
export const DUMMY_HASH: string = [
  HASH_ALGORITHM,
  String(DEFAULT_ITERATIONS),
  "c3dpdGNoYm9hcmQtZHVteQ==",
  "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
].join("$");

/**
 * Checks a new password against the rules: at least 8 characters, at most
 * 256 bytes of UTF-8, no control characters, all measured after NFC.
 *
 * @param password the password as typed
 * @returns undefined if it is acceptable, else one sentence saying why not
 *   (the message never contains the password)
 *
 * @example
 * ```ts
 * passwordProblem("hunter2"); // "Password is 7 characters long; the minimum is 8"
 * passwordProblem("correct horse"); // undefined
 * ```
 */
export function passwordProblem(password: string): string | undefined {
  if (/\p{Cs}/u.test(password)) return "Password is not valid Unicode text";
  const normalized = password.normalize("NFC");
  if (/\p{Cc}/u.test(normalized)) {
    return "Password contains a control character such as a tab or line break";
  }
  const length = [...normalized].length;
  if (length < MIN_PASSWORD_LENGTH) {
    return `Password is ${length} character${
      length === 1 ? "" : "s"
    } long; the minimum is ${MIN_PASSWORD_LENGTH}`;
  }
  const bytes = new TextEncoder().encode(normalized).length;
  if (bytes > MAX_PASSWORD_BYTES) {
    return `Password is ${bytes} bytes long in UTF-8; the limit is ${MAX_PASSWORD_BYTES}`;
  }
  return undefined;
}

function parseHash(stored: string): ParsedHash {
  if (typeof stored !== "string") throw new PasswordHashError("Password hash is not a string");
  const parts = stored.split("$");
  if (parts[0] !== HASH_ALGORITHM) {
    throw new PasswordHashError(`Password hash does not start with "${HASH_ALGORITHM}$"`);
  }
  if (parts.length !== 4) {
    throw new PasswordHashError(
      `Password hash has ${parts.length} "$"-separated parts; expected 4`,
    );
  }
  const [, iterationsText, saltText, hashText] = parts;
  const iterations = /^[1-9][0-9]{0,7}$/.test(iterationsText) ? Number(iterationsText) : NaN;
  if (!(iterations <= MAX_ITERATIONS)) {
    throw new PasswordHashError(
      `Password hash iterations must be a whole number from 1 to ${MAX_ITERATIONS}`,
    );
  }
  const salt = decodeBase64(saltText, "salt", MIN_SALT_BYTES, MAX_SALT_BYTES);
  const hash = decodeBase64(hashText, "hash", MIN_HASH_BYTES, MAX_HASH_BYTES);
  return { iterations, salt, hash };
}

function decodeBase64(
  text: string,
  what: string,
  min: number,
  max: number,
): Uint8Array<ArrayBuffer> {
  let bytes: Uint8Array<ArrayBuffer> | undefined;
  if (BASE64.test(text)) {
    try {
      bytes = Uint8Array.fromBase64(text, { lastChunkHandling: "strict" });
    } catch {
      // non-zero padding bits: not a string we wrote
    }
  }
  if (bytes === undefined) {
    throw new PasswordHashError(`Password hash ${what} is not padded standard base64`);
  }
  if (bytes.length < min || bytes.length > max) {
    throw new PasswordHashError(
      `Password hash ${what} is ${bytes.length} bytes long; expected ${min} to ${max}`,
    );
  }
  return bytes;
}

async function pbkdf2(
  password: string,
  salt: Uint8Array<ArrayBuffer>,
  iterations: number,
  bytes: number,
): Promise<Uint8Array<ArrayBuffer>> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(password.normalize("NFC")),
    "PBKDF2",
    false,
    ["deriveBits"],
  );
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    key,
    bytes * 8,
  );
  return new Uint8Array(bits);
}

/** Compares two byte arrays of public length in time independent of their content. */
function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a[i] ^ b[i];
  return difference === 0;
}
