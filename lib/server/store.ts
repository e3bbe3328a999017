/**
 * The store interface: where the server's shared state is made durable.
 * The core stays sans-I/O; it emits `persist` outputs (a snapshot and the
 * changes since the previous one) and the driver hands them to a store. Two
 * stores exist: the embedded file store (`lib/io/file_store.ts`, the default)
 * and Redis (`lib/io/redis_store.ts`), chosen in `lib/io/open_store.ts`.
 *
 * @module
 */
import type { PeerNews } from "./peer_relay.ts";
import type { Registry, RegistryChange, RegistryJson, RegistryRecord } from "./registry.ts";
import type { StoredFile } from "./stored_files.ts";

/** A session as every instance sees it: who is online where, since when. */
export interface PresenceRecord {
  /** The account's name (display form). */
  readonly name: string;
  /** The client's IP address. */
  readonly ip: string;
  /** The client's UDP port. */
  readonly udpPort: number;
  /** The client's TCP port. */
  readonly tcpPort: number;
  /** When its session opened, ms since the epoch. */
  readonly since: number;
  /** The static key it logged in with, 64 hex digits (vouched for to peers). */
  readonly key?: string;
  /**
   * The SHA-256 of its session token, lowercase hex: lets the instance that
   * holds a file serve a download redirected from the session's instance.
   */
  readonly tokenHash?: string;
  /** The shared store's id of the instance holding the session, where peer news for it goes. */
  readonly instance?: string;
}

/** A write of one of this instance's sessions to shared presence. */
export interface PresenceWrite {
  /** Opened (`join`), renewed by a heartbeat (`renew`), or ended (`leave`). */
  readonly op: "join" | "renew" | "leave";
  /** The session. */
  readonly record: PresenceRecord;
  /** When its lease runs out, ms since the epoch. */
  readonly deadline: number;
}

/** A stored file as every instance sees it: whose, which, and on which instance's disk. */
export interface SharedFileRecord {
  /** The owning user's name (display form). */
  readonly user: string;
  /** The file. */
  readonly file: StoredFile;
  /** The TCP address (`host:port`) of the instance whose disk holds it. */
  readonly owner: string;
}

/** A login that failed or succeeded on one instance, for the shared failed-login counts. */
export interface LoginOutcome {
  /** The source's address key (`addressKey`). */
  readonly source: string;
  /** The name key. */
  readonly name: string;
  /** True if it succeeded (which clears the pair's failures). */
  readonly ok: boolean;
  /** When it happened, ms since the epoch. */
  readonly at: number;
  /** How long the pair's failures matter after this one, ms (the limiter's horizon). */
  readonly keepMs: number;
  /**
   * A failed open-mode login's channel key, 64 hex digits: if the shared
   * registry binds the name to that key (this instance's replica lagged, as
   * after a write whose outcome it never heard), the login is the owner's,
   * and no failure is counted.
   */
  readonly claim?: string;
}

/** What a shared store made of a failed login ({@linkcode Store.login}). */
export type LoginRecorded =
  /** The store binds the name to the claimed key: the owner's login, with the record. */
  | { readonly owner: RegistryRecord }
  /** The failure was counted: the pair's failures in the store, oldest first, this one last. */
  | { readonly failures: readonly number[] };

/** A (source, name) pair's failed logins as a shared store holds them. */
export interface LoginFailures {
  /** The source's address key. */
  readonly source: string;
  /** The name key. */
  readonly name: string;
  /** When each failure happened, ms since the epoch, oldest first. */
  readonly failures: readonly number[];
}

/** What a shared store tells an instance about the others' changes. */
export interface StoreListener {
  /** Changes another instance made durable. */
  changed(changes: readonly RegistryChange[]): void;
  /** A client joined (or moved) on another instance, or left (logged out, lease ran out). */
  presence(op: "join" | "leave", record: PresenceRecord): void;
  /** A login from `source` (an address key) failed (`ok` false) or succeeded on another instance. */
  login(source: string, name: string, ok: boolean): void;
  /** A file was stored (`put`) or deleted on another instance. */
  file(op: "put" | "delete", record: SharedFileRecord): void;
  /** An introduction or relayed datagram for a client of this instance, from another. */
  peer(news: PeerNews): void;
  /** News may have been lost (the subscription was restored): read everything again. */
  resync(): void;
}

/**
 * Where the registry is durable. A `persist` resolves only once the change
 * is durable, and rejects with a {@linkcode StoreError} otherwise.
 */
export interface Store {
  /** `file` or `redis`, for logs. */
  readonly kind: "file" | "redis";
  /** True if several instances may share it (news and resyncs happen). */
  readonly shared: boolean;
  /** Reads the whole registry. */
  load(): Promise<Registry>;
  /**
   * Makes a registry version durable.
   *
   * @param registry the snapshot (file store)
   * @param changes the changes since the previous persist (shared store)
   * @param presence session writes to make in the same step, after the
   *   changes (shared store; one round trip for both): a persist that fails
   *   has made none of them
   */
  persist(
    registry: RegistryJson,
    changes: readonly RegistryChange[],
    presence?: readonly PresenceWrite[],
  ): Promise<void>;
  /** Subscribes to other instances' changes (a shared store only). */
  listen(listener: StoreListener): Promise<void>;
  /** Every record, for a resync. */
  records(): Promise<RegistryRecord[]>;
  /**
   * Publishes sessions of this instance, in order: each opened (`join`),
   * renewed by a heartbeat until its deadline (`renew`), or ended (`leave`).
   * Not awaited by replies: presence is soft state, renewed by every heartbeat.
   */
  presence(writes: readonly PresenceWrite[]): Promise<void>;
  /** Sends an introduction or relayed datagram to the instance `news.instance` (pub/sub, not awaited by replies). */
  peer(news: PeerNews): Promise<void>;
  /**
   * Records a login that failed or succeeded here (a failure is added to
   * its pair's list, a success clears it) and tells the other instances,
   * in one atomic step: failures at once on several instances each see the
   * others'.
   *
   * @returns for a failure, the owner's record (the claim holds) or the
   *   pair's failures; nothing for a success or a store that shares nothing
   */
  login(outcome: LoginOutcome): Promise<LoginRecorded | undefined>;
  /** Every pair's recorded failures, for a start or resync (past the horizon they are gone). */
  loginFailures(now: number): Promise<LoginFailures[]>;
  /** Ends the leases whose deadline is past (each once, whichever instance sweeps first). */
  sweep(now: number): Promise<void>;
  /** The sessions of the other instances, for a resync. */
  presenceRecords(): Promise<PresenceRecord[]>;
  /**
   * Records a file stored (`put`) or deleted on this instance's disk, and
   * tells the other instances. Not awaited by replies: the file index is
   * rebuilt from each instance's disk at its start (`ownFiles`). `gone`
   * removes the record of a file on another instance's disk whose identity
   * was removed, and leaves a tombstone: that instance, if it was down,
   * deletes the file at its next start (`takeGoneFiles`).
   */
  file(op: "put" | "delete" | "gone", record: SharedFileRecord): Promise<void>;
  /**
   * Hands the tombstones of `owner`'s files to `remove`, and forgets them once it is done.
   *
   * @param owner the instance's TCP address
   * @param remove deletes those files from its disk
   */
  takeGoneFiles(
    owner: string,
    remove: (records: SharedFileRecord[]) => Promise<void>,
  ): Promise<void>;
  /**
   * Replaces the records of the files on one instance's disk (at its start).
   *
   * @param owner the instance's TCP address
   * @param records every file on its disk
   */
  ownFiles(owner: string, records: readonly SharedFileRecord[]): Promise<void>;
  /** The files of the other instances, for a resync. */
  fileRecords(owner: string): Promise<SharedFileRecord[]>;
  /** Releases connections. */
  close(): Promise<void>;
}

/** A store write or read that failed; the message is one line for the operator. */
export class StoreError extends Error {
  /** True if the write lost a race: another instance holds the name. */
  readonly conflict: boolean;
  /** The name another instance registered meanwhile, if that was the race lost. */
  readonly taken?: string;
  /**
   * @param message what failed
   * @param conflict true for a lost create-if-absent race
   * @param taken the name registered elsewhere, for a lost create race
   */
  constructor(message: string, conflict = false, taken?: string) {
    super(message);
    this.name = "StoreError";
    this.conflict = conflict;
    if (taken !== undefined) this.taken = taken;
  }
}
