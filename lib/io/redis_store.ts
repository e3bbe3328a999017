/**
 * The Redis store: the registry shared by several server instances.
 *
 * - Identities live in one hash (`<prefix>registry`, field = name key, value
 *   = the record as JSON). A batch of changes is applied by one Lua script,
 *   atomically: a create succeeds only if the name is free or already holds
 *   this very record (a retried write), a delete only removes the record with
 *   the key it names and, if it names one, the last-seen date it names (so an
 *   expiry on one instance never removes an identity that has just logged in
 *   on another: check and delete are one script). A lost race is a {@linkcode StoreError} with
 *   `conflict`, and the core undoes the change and answers with an error.
 * - The same script publishes the batch on `<prefix>registry:news`; every
 *   other instance applies it to its replica. Pub/sub loses what is
 *   published while a subscriber is disconnected, so every resubscription
 *   asks the listener to resync from the hash.
 * - Durability: Redis must run with `appendonly yes` and
 *   `appendfsync always` (it fsyncs before it replies); `open` checks both
 *   with CONFIG GET and refuses to start otherwise.
 * - No command waits for a reconnection (offline queue off) and every
 *   command has a deadline: a Redis that is gone is a refusal, never a hang.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { createClient } from "redis";
import { fromHex, toHex } from "../hex.ts";
import type { PeerNews } from "../server/peer_relay.ts";
import {
  Registry,
  type RegistryChange,
  type RegistryJson,
  type RegistryRecord,
} from "../server/registry.ts";
import {
  type LoginFailures,
  type LoginOutcome,
  type LoginRecorded,
  type PresenceRecord,
  type PresenceWrite,
  type SharedFileRecord,
  type Store,
  StoreError,
  type StoreListener,
} from "../server/store.ts";
import { nameKey } from "../wire/client_name.ts";
import { fileNameKey } from "../wire/file_name.ts";
import {
  APPLY_SCRIPT,
  FILE_SCRIPT,
  LOGIN_FAILURES_SCRIPT,
  LOGIN_SCRIPT,
  PRESENCE_SCRIPT,
  SWEEP_SCRIPT,
} from "./redis_scripts.ts";
import { redactUrl } from "./store_url.ts";

/** How long a command may take before it counts as failed, ms. */
export const REDIS_COMMAND_TIMEOUT_MS = 2000;

type Client = ReturnType<typeof connectClient>;
type Entry = RegistryJson[string] & { name: string };

/** Leases one sweep ends at most (the next sweep takes the rest). */
const SWEEP_LIMIT = 500;

/** Options of {@linkcode RedisStore.open}. */
export interface RedisStoreOptions {
  /** Prefix of every key and channel (default `sb:`). */
  prefix?: string;
  /** Start even if Redis is not set up to fsync every write (tests of the check only). */
  allowUnsafe?: boolean;
}

/**
 * The registry in Redis, shared by every instance that opens the same URL.
 *
 * @example
 * ```ts
 * const store = await RedisStore.open("redis://127.0.0.1:6379");
 * const registry = await store.load();
 * await store.close();
 * ```
 */
export class RedisStore implements Store {
  readonly kind = "redis";
  readonly shared = true;
  /** The URL without its password (for logs and errors). */
  readonly url: string;
  #client: Client;
  #subscriber: Client | undefined;
  #listener: StoreListener | undefined;
  #prefix: string;
  /** Distinguishes this instance's own news from the others'. */
  #origin = crypto.randomUUID();
  #closed = false;
  /** The SHA-1 of each loaded Lua script (Redis forgets them on restart). */
  #shas = new Map<string, string>();

  private constructor(url: string, client: Client, prefix: string) {
    this.url = redactUrl(url);
    this.#client = client;
    this.#prefix = prefix;
  }

  /**
   * Connects to Redis and checks it makes writes durable before replying.
   *
   * @param url `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`
   * @param options key prefix
   * @returns the store
   * @throws {StoreError} if Redis is unreachable or not durable, in one line
   */
  static async open(url: string, options: RedisStoreOptions = {}): Promise<RedisStore> {
    const client = connectClient(url);
    const shown = redactUrl(url);
    try {
      await withDeadline(client.connect(), `Cannot connect to Redis at ${shown}`);
    } catch (error) {
      client.destroy();
      throw new StoreError(`Cannot connect to Redis at ${shown}: ${describe(error)}`);
    }
    const store = new RedisStore(url, client, options.prefix ?? "sb:");
    try {
      await store.#checkDurability(options.allowUnsafe ?? false);
    } catch (error) {
      await store.close();
      throw error;
    }
    return store;
  }

  async #checkDurability(allowUnsafe: boolean): Promise<void> {
    let config: Record<string, string>;
    try {
      config = await this.#run((c) => c.configGet("append*"), "check its configuration");
    } catch (error) {
      // A managed Redis may rename CONFIG; its operator vouches for durability.
      getLogger(["switchboard", "server"]).warn(
        "Cannot check that Redis at {url} fsyncs every write ({error}); " +
          "it must run with appendonly yes and appendfsync always",
        { url: this.url, error: describe(error) },
      );
      return;
    }
    if (allowUnsafe) return;
    if (config.appendonly !== "yes" || config.appendfsync !== "always") {
      throw new StoreError(
        `Redis at ${this.url} has appendonly ${config.appendonly ?? "?"} and appendfsync ` +
          `${config.appendfsync ?? "?"}; it needs appendonly yes and appendfsync always, ` +
          "or acknowledged registrations could be lost",
      );
    }
  }

  /** @returns every registered client */
  async load(): Promise<Registry> {
    const all = await this.#run((c) => c.hGetAll(this.#key("registry")), "read the registry");
    const json: RegistryJson = {};
    for (const value of Object.values(all)) {
      const entry = parseEntry(value);
      if (entry !== undefined) json[entry.name] = entry;
    }
    try {
      return Registry.fromJson(json);
    } catch (error) {
      throw new StoreError(`The registry in Redis at ${this.url} is not valid: ${describe(error)}`);
    }
  }

  /** @returns every registered client's record */
  async records(): Promise<RegistryRecord[]> {
    return (await this.load()).records();
  }

  /**
   * Applies changes atomically and publishes them to the other instances,
   * then the session writes, in one script (one round trip).
   *
   * @param _registry unused (Redis takes changes, not snapshots)
   * @param changes the changes, oldest first
   * @param presence session writes, applied only if the changes are
   * @throws {StoreError} if Redis failed or another instance holds a name (nothing written then)
   */
  async persist(
    _registry: RegistryJson,
    changes: readonly RegistryChange[],
    presence: readonly PresenceWrite[] = [],
  ): Promise<void> {
    if (changes.length === 0) return await this.presence(presence);
    const options = {
      keys: [this.#key("registry"), this.#key("registry:news"), ...this.#presenceKeys()],
      arguments: [
        this.#origin,
        JSON.stringify(changes.map(toWire)),
        ...presence.flatMap(presenceArguments),
      ],
    };
    const result = await this.#script("apply", APPLY_SCRIPT, options, "save the registry") as [
      string,
      string,
    ];
    if (result[0] === "conflict") {
      throw new StoreError(
        `"${result[1]}" was registered on another server instance`,
        true,
        result[1],
      );
    }
    if (result[0] === "seen") {
      throw new StoreError(`"${result[1]}" was seen on another server instance meanwhile`, true);
    }
    // A name its key had registered already: Redis keeps its record, so this replica reads it.
    if (result[0] === "kept") this.#listener?.resync();
  }

  /**
   * Subscribes to the other instances' changes; after every resubscription
   * (Redis restarted, connection lost) the listener is told to resync.
   *
   * @param listener told of changes and resyncs
   */
  async listen(listener: StoreListener): Promise<void> {
    this.#listener = listener;
    const subscriber = this.#client.duplicate();
    subscriber.on("error", () => {});
    let first = true;
    subscriber.on("ready", () => {
      if (first) first = false;
      else listener.resync();
    });
    await withDeadline(subscriber.connect(), "Cannot subscribe to Redis");
    this.#subscriber = subscriber;
    await withDeadline(
      subscriber.subscribe(this.#key("registry:news"), (message: string) => {
        const space = message.indexOf(" ");
        if (message.slice(0, space) === this.#origin) return;
        const changes = parseChanges(message.slice(space + 1));
        if (changes === undefined) listener.resync();
        else listener.changed(changes);
      }),
      "Cannot subscribe to Redis",
    );
    await withDeadline(
      subscriber.subscribe(this.#key("presence:news"), (message: string) => {
        const [origin, op] = message.split(" ", 2);
        if (origin === this.#origin || (op !== "join" && op !== "leave")) return;
        const record = parsePresence(message.slice(origin.length + op.length + 2), origin);
        if (record !== undefined) listener.presence(op, record);
      }),
      "Cannot subscribe to Redis",
    );
    await withDeadline(
      subscriber.subscribe(this.#key("files:news"), (message: string) => {
        const space = message.indexOf(" ");
        const op = message.slice(0, space);
        const record = parseFile(message.slice(space + 1));
        if ((op === "put" || op === "delete") && record !== undefined) listener.file(op, record);
      }),
      "Cannot subscribe to Redis",
    );
    await withDeadline(
      subscriber.subscribe(this.#key(`peer:${this.#origin}`), (message: string) => {
        const news = parsePeerNews(message, this.#origin);
        if (news !== undefined) listener.peer(news);
      }),
      "Cannot subscribe to Redis",
    );
    await withDeadline(
      subscriber.subscribe(this.#key("logins"), (message: string) => {
        const space = message.indexOf(" ");
        if (message.slice(0, space) === this.#origin) return;
        const outcome = parseLogin(message.slice(space + 1));
        if (outcome !== undefined) listener.login(outcome.source, outcome.name, outcome.ok);
      }),
      "Cannot subscribe to Redis",
    );
  }

  /**
   * Sends an introduction or a relayed datagram to the instance holding its
   * party, on that instance's own channel (`<prefix>peer:<instance>`), so
   * no other instance hears it.
   *
   * @param news the news
   */
  async peer(news: PeerNews): Promise<void> {
    const { instance, probeKey, payload, ...rest } = news as PeerNews & {
      probeKey?: Uint8Array;
      payload?: Uint8Array;
    };
    const body = JSON.stringify({
      ...rest,
      ...(probeKey ? { probeKey: toHex(probeKey) } : {}),
      ...(payload ? { payload: toHex(payload) } : {}),
    });
    await this.#run((c) => c.publish(this.#key(`peer:${instance}`), body), "pass peer news");
  }

  /**
   * Records a login that failed or succeeded here and tells the other
   * instances (one Lua script): a failure is appended to its (source, name)
   * pair's list in `<prefix>login:failures`, forgotten `keepMs` after the
   * latest, unless the registry binds the name to the key it claims; a
   * success clears the list.
   *
   * @param outcome the login
   * @returns for a failure, the owner's record or the pair's failures
   */
  async login(outcome: LoginOutcome): Promise<LoginRecorded | undefined> {
    const { source, name, ok, at, keepMs, claim } = outcome;
    const [result, value] = await this.#script("login", LOGIN_SCRIPT, {
      keys: [...this.#loginKeys(), this.#key("registry")],
      arguments: [
        this.#origin,
        ok ? "ok" : "failed",
        JSON.stringify([source, name]),
        String(Math.round(at)),
        String(Math.round(keepMs)),
        JSON.stringify({ source, name, ok }),
        name,
        claim ?? "",
      ],
    }, "record a login") as [string, string];
    try {
      if (result === "owner") {
        const entry = parseEntry(value);
        if (entry !== undefined) {
          return { owner: Registry.fromJson({ [entry.name]: entry }).records()[0] };
        }
      }
      const failures = result === "failed" ? JSON.parse(value) : undefined;
      return Array.isArray(failures) && failures.every(Number.isFinite) ? { failures } : undefined;
    } catch {
      return undefined; // not a record or list of ours
    }
  }

  /**
   * @param now the time, ms since the epoch (pairs past their horizon are forgotten)
   * @returns every (source, name) pair's recorded failures
   */
  async loginFailures(now: number): Promise<LoginFailures[]> {
    const all = await this.#script("loginFailures", LOGIN_FAILURES_SCRIPT, {
      keys: this.#loginKeys(),
      arguments: [String(Math.floor(now))],
    }, "read the failed logins") as string[];
    const pairs: LoginFailures[] = [];
    for (let i = 0; i + 1 < all.length; i += 2) {
      try {
        const [source, name] = JSON.parse(all[i]);
        const failures = JSON.parse(all[i + 1]);
        const ok = typeof source === "string" && typeof name === "string" &&
          Array.isArray(failures) && failures.every(Number.isFinite);
        if (ok) pairs.push({ source, name, failures });
      } catch {
        // Not ours: skipped.
      }
    }
    return pairs;
  }

  #loginKeys(): string[] {
    return [this.#key("login:failures"), this.#key("login:horizons"), this.#key("logins")];
  }

  /**
   * Publishes sessions of this instance, in order (one Lua script: each
   * lease in the sorted set, session in the hash, news on the channel). A
   * renew of a lease a sweep ended joins again.
   *
   * @param writes the session writes
   */
  async presence(writes: readonly PresenceWrite[]): Promise<void> {
    if (writes.length === 0) return;
    await this.#script("presence", PRESENCE_SCRIPT, {
      keys: this.#presenceKeys(),
      arguments: [this.#origin, ...writes.flatMap(presenceArguments)],
    }, "publish sessions");
  }

  /**
   * Ends every lease whose deadline is past, publishing each leave once.
   *
   * @param now the time, ms since the epoch
   */
  async sweep(now: number): Promise<void> {
    await this.#script("sweep", SWEEP_SCRIPT, {
      keys: this.#presenceKeys(),
      arguments: [String(Math.floor(now)), String(SWEEP_LIMIT)],
    }, "sweep the leases");
  }

  /** @returns the sessions of the other instances */
  async presenceRecords(): Promise<PresenceRecord[]> {
    const all = await this.#run((c) => c.hGetAll(this.#key("presence")), "read the sessions");
    const records: PresenceRecord[] = [];
    for (const value of Object.values(all) as string[]) {
      const space = value.indexOf(" ");
      if (value.slice(0, space) === this.#origin) continue;
      const record = parsePresence(value.slice(space + 1), value.slice(0, space));
      if (record !== undefined) records.push(record);
    }
    return records;
  }

  /**
   * Records a file stored or deleted on this instance and publishes it (one
   * Lua script: the hash field and the news together).
   *
   * @param op `put`, `delete`, or `gone` (a delete that leaves the owner a tombstone)
   * @param record the file, with its owner
   */
  async file(op: "put" | "delete" | "gone", record: SharedFileRecord): Promise<void> {
    await this.#script("file", FILE_SCRIPT, {
      keys: [this.#key("files"), this.#key("files:news"), this.#goneKey(record.owner)],
      arguments: [op, fileField(record), JSON.stringify(record)],
    }, "record a file");
  }

  /**
   * Replaces what the hash says is on `owner`'s disk with `records` (at the
   * instance's start: what it lost or gained while down).
   *
   * @param owner the instance's TCP address
   * @param records every file on its disk
   */
  async ownFiles(owner: string, records: readonly SharedFileRecord[]): Promise<void> {
    const all = await this.#run((c) => c.hGetAll(this.#key("files")), "read the files");
    const keep = new Set(records.map(fileField));
    const gone = Object.keys(all).filter((field) =>
      parseFile(all[field])?.owner === owner && !keep.has(field)
    );
    for (const field of gone) {
      await this.file("delete", parseFile(all[field])!);
    }
    for (const record of records) {
      if (all[fileField(record)] !== JSON.stringify(record)) await this.file("put", record);
    }
  }

  /**
   * Hands the tombstones of the files on `owner`'s disk whose identity was
   * removed while it was down to `remove`, and forgets them once it is done.
   *
   * @param owner the instance's TCP address
   * @param remove deletes those files from the disk
   */
  async takeGoneFiles(
    owner: string,
    remove: (records: SharedFileRecord[]) => Promise<void>,
  ): Promise<void> {
    const key = this.#goneKey(owner);
    const members = await this.#run((c) => c.sMembers(key), "read the deleted files");
    await remove(members.map(parseFile).filter((r): r is SharedFileRecord => r !== undefined));
    if (members.length > 0) {
      await this.#run((c) => c.sRem(key, members), "forget the deleted files");
    }
  }

  #goneKey(owner: string): string {
    return this.#key(`files:gone:${owner}`);
  }

  /**
   * @param owner this instance's TCP address
   * @returns the files on the other instances' disks
   */
  async fileRecords(owner: string): Promise<SharedFileRecord[]> {
    const all = await this.#run((c) => c.hGetAll(this.#key("files")), "read the files");
    return (Object.values(all) as string[]).map(parseFile).filter((r): r is SharedFileRecord =>
      r !== undefined && r.owner !== owner
    );
  }

  #presenceKeys(): string[] {
    return [this.#key("leases"), this.#key("presence"), this.#key("presence:news")];
  }

  /** Runs a Lua script by its SHA, loading it first, and again after a Redis restart. */
  #script(
    name: string,
    script: string,
    options: { keys: string[]; arguments: string[] },
    what: string,
  ): Promise<unknown> {
    return this.#run(async (c) => {
      let sha = this.#shas.get(name);
      if (sha === undefined) {
        sha = await c.scriptLoad(script);
        this.#shas.set(name, sha);
      }
      try {
        return await c.evalSha(sha, options);
      } catch (error) {
        if (!describe(error).startsWith("NOSCRIPT")) throw error;
        sha = await c.scriptLoad(script);
        this.#shas.set(name, sha);
        return await c.evalSha(sha, options);
      }
    }, what);
  }

  /** Closes both connections. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const client of [this.#subscriber, this.#client]) {
      if (client === undefined) continue;
      if (client.isReady) await client.close().catch(() => client.destroy());
      else client.destroy();
    }
  }

  #key(name: string): string {
    return this.#prefix + name;
  }

  async #run<T>(command: (client: Client) => Promise<T>, what: string): Promise<T> {
    if (!this.#client.isReady) {
      throw new StoreError(`Cannot ${what}: Redis at ${this.url} is unreachable`);
    }
    try {
      return await withDeadline(command(this.#client), `Cannot ${what}`);
    } catch (error) {
      if (error instanceof StoreError) throw error;
      throw new StoreError(`Cannot ${what} in Redis at ${this.url}: ${describe(error)}`);
    }
  }
}

function connectClient(url: string) {
  let everConnected = false;
  const client = createClient({
    url,
    disableOfflineQueue: true,
    socket: {
      connectTimeout: REDIS_COMMAND_TIMEOUT_MS,
      // The first connection fails at once; a lost one is retried quickly.
      reconnectStrategy: (retries: number, cause: Error) =>
        everConnected ? Math.min(50 + retries * 50, 500) : cause,
    },
  });
  client.on("ready", () => everConnected = true);
  client.on("error", () => {});
  return client;
}

async function withDeadline<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new StoreError(`${what}: Redis did not answer in ${REDIS_COMMAND_TIMEOUT_MS} ms`)),
      REDIS_COMMAND_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** A session write as the Lua scripts take it: op, name key, deadline, record JSON. */
function presenceArguments({ op, record, deadline }: PresenceWrite): string[] {
  const { name, ip, udpPort, tcpPort, since, key, tokenHash } = record;
  return [
    op,
    nameKey(name),
    String(Math.round(deadline)),
    JSON.stringify({ name, ip, udpPort, tcpPort, since, key, tokenHash }),
  ];
}

type WireChange =
  | { op: "put"; key: string; record: Entry }
  | {
    op: "delete";
    key: string;
    name: string;
    public_key: string;
    key_sha256: string;
    last_seen?: string;
  };

function toWire(change: RegistryChange): WireChange {
  if (change.op === "delete") {
    return {
      op: "delete",
      key: nameKey(change.name),
      name: change.name,
      public_key: change.publicKey,
      key_sha256: change.keySha256,
      ...(change.lastSeenAt === undefined ? {} : { last_seen: change.lastSeenAt }),
    };
  }
  const r = change.record;
  return {
    op: "put",
    key: nameKey(r.name),
    record: {
      name: r.name,
      ip: r.ip,
      udp_port: r.udpPort,
      tcp_port: r.tcpPort,
      registered_at: r.registeredAt,
      public_key: r.publicKey,
      key_sha256: r.keySha256,
      registered_by: r.registeredBy,
      ...(r.lastSeenAt === undefined ? {} : { last_seen: r.lastSeenAt }),
    },
  };
}

function parseEntry(value: unknown): Entry | undefined {
  try {
    const entry = typeof value === "string" ? JSON.parse(value) : value;
    return typeof entry?.name === "string" ? entry as Entry : undefined;
  } catch {
    return undefined;
  }
}

function parseChanges(text: string): RegistryChange[] | undefined {
  try {
    const wire = JSON.parse(text) as WireChange[];
    const changes: RegistryChange[] = [];
    for (const c of wire) {
      if (c.op === "delete") {
        changes.push({
          op: "delete",
          name: c.name,
          publicKey: c.public_key ?? "",
          keySha256: c.key_sha256,
          ...(c.last_seen === undefined ? {} : { lastSeenAt: c.last_seen }),
        });
      } else {
        const entry = parseEntry(c.record);
        if (entry === undefined) return undefined;
        const [record] = Registry.fromJson({ [entry.name]: entry }).records();
        changes.push({ op: "put", record });
      }
    }
    return changes;
  } catch {
    return undefined;
  }
}

function parsePresence(text: string, instance: string): PresenceRecord | undefined {
  try {
    const r = JSON.parse(text);
    const ok = typeof r?.name === "string" && typeof r.ip === "string" &&
      Number.isInteger(r.udpPort) && Number.isInteger(r.tcpPort) && typeof r.since === "number";
    if (!ok) return undefined;
    const { name, ip, udpPort, tcpPort, since } = r;
    return {
      name,
      ip,
      udpPort,
      tcpPort,
      since,
      ...(typeof r.tokenHash === "string" ? { tokenHash: r.tokenHash } : {}),
      ...(instance === "sweep" ? {} : { instance }),
      ...(typeof r.key === "string" && /^[0-9a-f]{64}$/.test(r.key) ? { key: r.key } : {}),
    };
  } catch {
    return undefined;
  }
}

/** A login's news as published by {@linkcode RedisStore.login}, or undefined if it is not that. */
function parseLogin(text: string): { source: string; name: string; ok: boolean } | undefined {
  try {
    const r = JSON.parse(text);
    return typeof r?.source === "string" && typeof r.name === "string" && typeof r.ok === "boolean"
      ? { source: r.source, name: r.name, ok: r.ok }
      : undefined;
  } catch {
    return undefined;
  }
}

/** Peer news as published by {@linkcode RedisStore.peer}, or undefined if it is not that. */
function parsePeerNews(text: string, instance: string): PeerNews | undefined {
  try {
    const r = JSON.parse(text);
    const ok = typeof r?.session === "string" && typeof r.from === "string" &&
      typeof r.to === "string";
    if (!ok) return undefined;
    const { session, from, to } = r;
    if (r.kind === "relay" && typeof r.payload === "string") {
      return { kind: "relay", instance, session, from, to, payload: fromHex(r.payload) };
    }
    const candidates = Array.isArray(r.candidates) &&
      r.candidates.every((c: { ip?: unknown; port?: unknown }) =>
        typeof c?.ip === "string" && Number.isInteger(c.port)
      );
    if (r.kind === "introduce" && typeof r.probeKey === "string" && candidates) {
      const probeKey = fromHex(r.probeKey);
      return { kind: "introduce", instance, session, from, to, probeKey, candidates: r.candidates };
    }
  } catch {
    // Not JSON, or not hex.
  }
  return undefined;
}

/** A file's field in the hash: its owner, user and name (one user may keep a name on two instances). */
function fileField(record: SharedFileRecord): string {
  return JSON.stringify([record.owner, nameKey(record.user), fileNameKey(record.file.name)]);
}

function parseFile(text: unknown): SharedFileRecord | undefined {
  try {
    const r = typeof text === "string" ? JSON.parse(text) : undefined;
    const f = r?.file;
    const ok = typeof r?.user === "string" && typeof r.owner === "string" &&
      typeof f?.name === "string" && Number.isSafeInteger(f.size) && typeof f.sha256 === "string" &&
      typeof f.uploadedAt === "string";
    return ok
      ? {
        user: r.user,
        owner: r.owner,
        file: { name: f.name, size: f.size, sha256: f.sha256, uploadedAt: f.uploadedAt },
      }
      : undefined;
  } catch {
    return undefined;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
