/**
 * The registry: every registered client by name, as kept in memory and as
 * stored in `registrations.json`. Pure data; reading and writing the file is
 * the driver's job (`lib/io/registry_file.ts`).
 *
 * @module
 */
import { nameKey, nameProblem } from "../wire/client_name.ts";

// IPv4 dotted quad, or IPv6 hex groups (possibly with an embedded IPv4).
const IP_PATTERN = /^(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)$/;

/** One registered client. */
export interface RegistryRecord {
  /** The name as the client chose it (display form). */
  readonly name: string;
  /** The client's IP address, as the server saw it. */
  readonly ip: string;
  /** The client's UDP port, as the server saw it. */
  readonly udpPort: number;
  /** The TCP port the client declared. */
  readonly tcpPort: number;
  /** When it registered, ISO 8601. */
  readonly registeredAt: string;
  /**
   * The static public key (X25519) of its key pair, hex: the channel key a
   * login must come through. "" for a version 2 record not yet migrated.
   */
  readonly publicKey: string;
  /**
   * Version 2 only: SHA-256 of its 16-byte identity key, hex; "" for a
   * key-pair identity (or a migrated one).
   */
  readonly keySha256: string;
  /** Fingerprint (hash) of the register request that created it ("" if unknown). */
  readonly registeredBy: string;
  /**
   * When it was last seen, ISO 8601: its registration, latest login or a
   * heartbeat of its session, to within the server's refresh interval.
   * Absent in files from before it was kept.
   */
  readonly lastSeenAt?: string;
}

/**
 * One change to the registry, as a store applies it: a record created (only
 * if its name is free, or holds this very record), or a record removed (only
 * if its name still holds the record with these keys, last seen when this
 * instance saw it: an expiry never removes an identity another instance has
 * just seen log in).
 */
export type RegistryChange =
  | { readonly op: "put"; readonly record: RegistryRecord }
  | {
    readonly op: "delete";
    readonly name: string;
    readonly publicKey: string;
    readonly keySha256: string;
    /** The removed record's `lastSeenAt`, if it had one. */
    readonly lastSeenAt?: string;
  };

/** The JSON shape of `registrations.json`: seed-compatible, plus a few fields. */
export type RegistryJson = Record<string, {
  readonly ip: string;
  readonly udp_port: number;
  readonly tcp_port: number;
  readonly registered_at: string;
  readonly public_key: string;
  readonly key_sha256: string;
  readonly registered_by: string;
  readonly last_seen?: string;
}>;

/** Thrown when `registrations.json` does not hold a valid registry. */
export class RegistryFormatError extends Error {
  /** @param message what is wrong, one sentence */
  constructor(message: string) {
    super(message);
    this.name = "RegistryFormatError";
  }
}

/**
 * Registered clients, unique by case-insensitive name.
 *
 * @example
 * ```ts
 * const registry = new Registry();
 * registry.add({ name: "Alice", ip: "127.0.0.1", udpPort: 5000, tcpPort: 5001,
 *   registeredAt: new Date().toISOString(), publicKey: "", keySha256: "", registeredBy: "" });
 * registry.get("alice")?.name; // "Alice"
 * ```
 */
export class Registry {
  #byKey = new Map<string, RegistryRecord>();
  #journal: RegistryChange[] = [];
  #entries = new WeakMap<RegistryRecord, RegistryJson[string]>();

  /** How many clients are registered. */
  get size(): number {
    return this.#byKey.size;
  }

  /**
   * Finds a client by name, ignoring case.
   *
   * @param name any name
   * @returns its record, or undefined
   */
  get(name: string): RegistryRecord | undefined {
    return this.#byKey.get(nameKey(name));
  }

  /**
   * Adds a client whose name is not taken.
   *
   * @param record the new record
   * @throws {RangeError} if the name is taken
   */
  add(record: RegistryRecord): void {
    const key = nameKey(record.name);
    if (this.#byKey.has(key)) throw new RangeError(`Cannot add "${record.name}": name is taken`);
    this.#byKey.set(key, record);
    this.#journal.push({ op: "put", record });
  }

  /**
   * Replaces the record of a registered name (same name, any field changed).
   *
   * @param record the new record
   * @throws {RangeError} if the name is not registered
   */
  replace(record: RegistryRecord): void {
    const key = nameKey(record.name);
    if (!this.#byKey.has(key)) {
      throw new RangeError(`Cannot replace "${record.name}": not registered`);
    }
    this.#byKey.set(key, record);
    this.#journal.push({ op: "put", record });
  }

  /**
   * Removes a client.
   *
   * @param name its name, any case
   * @returns the removed record, or undefined if there was none
   */
  remove(name: string): RegistryRecord | undefined {
    const key = nameKey(name);
    const record = this.#byKey.get(key);
    if (record === undefined) return undefined;
    this.#byKey.delete(key);
    this.#journal.push({
      op: "delete",
      name: record.name,
      publicKey: record.publicKey,
      keySha256: record.keySha256,
      ...(record.lastSeenAt === undefined ? {} : { lastSeenAt: record.lastSeenAt }),
    });
    return record;
  }

  /**
   * Hands over the changes made by `add`, `replace` and `remove` since the last call,
   * for a store that writes changes rather than snapshots.
   *
   * @returns the changes, oldest first
   */
  takeChanges(): RegistryChange[] {
    const changes = this.#journal;
    this.#journal = [];
    return changes;
  }

  /**
   * Applies changes another server instance made (already durable in the
   * shared store), without recording them as this instance's changes.
   *
   * @param changes the changes, oldest first
   */
  apply(changes: readonly RegistryChange[]): void {
    for (const change of changes) {
      if (change.op === "put") {
        this.#byKey.set(nameKey(change.record.name), change.record);
      } else {
        const key = nameKey(change.name);
        const held = this.#byKey.get(key);
        if (held?.publicKey === change.publicKey && held.keySha256 === change.keySha256) {
          this.#byKey.delete(key);
        }
      }
    }
  }

  /**
   * Replaces every record with the shared store's, without recording
   * changes (a resync after a lost subscription or a failed write).
   *
   * @param records every record the store holds
   */
  replaceAll(records: Iterable<RegistryRecord>): void {
    this.#byKey.clear();
    for (const record of records) this.#byKey.set(nameKey(record.name), record);
  }

  /** @returns every record, in registration order */
  records(): RegistryRecord[] {
    return [...this.#byKey.values()];
  }

  /**
   * The registry in the shape of `registrations.json`. Each entry object is
   * made once per record and shared by every later call, so a writer can
   * tell what changed since its last save by identity alone (see
   * `lib/io/registry_file.ts`); treat the entries as read-only.
   *
   * @returns a new object holding the (shared) entries, in registration order
   */
  toJson(): RegistryJson {
    const out: RegistryJson = {};
    for (const r of this.#byKey.values()) {
      let entry = this.#entries.get(r);
      if (entry === undefined) {
        entry = Object.freeze({
          ip: r.ip,
          udp_port: r.udpPort,
          tcp_port: r.tcpPort,
          registered_at: r.registeredAt,
          public_key: r.publicKey,
          key_sha256: r.keySha256,
          registered_by: r.registeredBy,
          ...(r.lastSeenAt === undefined ? {} : { last_seen: r.lastSeenAt }),
        });
        this.#entries.set(r, entry);
      }
      out[r.name] = entry;
    }
    return out;
  }

  /**
   * Builds a registry from parsed `registrations.json` content, checking
   * every entry. Seed files without `registered_at` and keys load; such
   * entries can only be removed by editing the file. Version 2 entries
   * (`key_sha256`, no `public_key`) load as they are: their first login
   * binds them to a key pair (`accounts.ts`).
   *
   * @param json the parsed file
   * @returns the registry
   * @throws {RegistryFormatError} naming the first bad entry
   */
  static fromJson(json: unknown): Registry {
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new RegistryFormatError("the top level is not a JSON object of names");
    }
    const registry = new Registry();
    for (const [name, value] of Object.entries(json)) {
      const problem = nameProblem(name);
      if (problem !== undefined) throw new RegistryFormatError(`entry "${name}": ${problem}`);
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        throw new RegistryFormatError(`entry "${name}" is not an object`);
      }
      const entry = value as Record<string, unknown>;
      if (typeof entry.ip !== "string" || !IP_PATTERN.test(entry.ip)) {
        throw new RegistryFormatError(`entry "${name}" has no valid "ip"`);
      }
      for (const field of ["udp_port", "tcp_port"]) {
        const port = entry[field];
        if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
          throw new RegistryFormatError(`entry "${name}" has no valid "${field}"`);
        }
      }
      const registeredAt = entry.registered_at ?? "";
      // Version 0.1 stored the hash of its only secret as "token_sha256".
      const keySha256 = entry.key_sha256 ?? entry.token_sha256 ?? "";
      if (typeof registeredAt !== "string") {
        throw new RegistryFormatError(`entry "${name}" has a bad "registered_at"`);
      }
      if (typeof keySha256 !== "string" || !/^([0-9a-f]{64})?$/.test(keySha256)) {
        throw new RegistryFormatError(`entry "${name}" has a bad "key_sha256"`);
      }
      const publicKey = entry.public_key ?? "";
      if (typeof publicKey !== "string" || !/^([0-9a-f]{64})?$/.test(publicKey)) {
        throw new RegistryFormatError(`entry "${name}" has a bad "public_key"`);
      }
      const registeredBy = entry.registered_by ?? "";
      if (typeof registeredBy !== "string" || registeredBy.length > 64) {
        throw new RegistryFormatError(`entry "${name}" has a bad "registered_by"`);
      }
      const lastSeen = entry.last_seen;
      if (lastSeen !== undefined && (typeof lastSeen !== "string" || isNaN(Date.parse(lastSeen)))) {
        throw new RegistryFormatError(`entry "${name}" has a bad "last_seen"`);
      }
      if (registry.get(name) !== undefined) {
        throw new RegistryFormatError(`entry "${name}" repeats a name (names ignore case)`);
      }
      registry.add({
        name,
        ip: entry.ip,
        udpPort: entry.udp_port as number,
        tcpPort: entry.tcp_port as number,
        registeredAt,
        publicKey,
        keySha256,
        registeredBy,
        ...(lastSeen === undefined ? {} : { lastSeenAt: lastSeen }),
      });
    }
    registry.takeChanges();
    return registry;
  }
}
