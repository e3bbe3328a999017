/**
 * Hands the core's `persist` outputs to a store, reports the outcome to the
 * core, and keeps the registry replica of a shared store in
 * step: the other instances' changes are applied as they are told, and after
 * a lost subscription or a failed write the whole registry is read again
 * once nothing of ours is waiting to be written.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { PeerNews } from "../server/peer_relay.ts";
import type { RegistryChange, RegistryJson } from "../server/registry.ts";
import type { ServerCore } from "../server/server_core.ts";
import {
  type LoginOutcome,
  type LoginRecorded,
  type PresenceRecord,
  type PresenceWrite,
  type SharedFileRecord,
  type Store,
  StoreError,
} from "../server/store.ts";
import type { StoredFile } from "../server/stored_files.ts";
import { systemClock } from "../clock.ts";
import { nameKey } from "../wire/client_name.ts";

const log = getLogger(["switchboard", "server"]);

/**
 * Writes a shared store may have under way at once. Redis applies the
 * commands of one connection in order and fsyncs once for all it read in one
 * pass, so writes in flight share their fsync (measured: 4k writes a second
 * one at a time, over 50k with 32 in flight); a file snapshot is one at a time.
 */
export const SHARED_STORE_WRITES_IN_FLIGHT = 32;

/** How long after a failed resync of the registry the next is tried, ms. */
const RESYNC_RETRY_MS = 500;

/** How often each instance sweeps the shared leases, ms (a leave is seen within lease + this). */
export const SWEEP_EVERY_MS = 100;

/**
 * How long a session write may wait for a registry write to ride on, ms.
 * A register's join (and a deregister's leave) comes once its change is
 * durable; the next change usually follows within a round trip of a client,
 * and one Redis script then applies both. Past this, or with
 * {@linkcode PRESENCE_BATCH} waiting, the session writes go on their own.
 */
export const PRESENCE_WAIT_MS = 5;

/** Session writes sent in one script at most. */
export const PRESENCE_BATCH = 64;

/**
 * How long an instance holds off sweeping after the shared store was away,
 * ms: the leases' deadlines there went stale while nobody could renew them,
 * and every instance must get back (Redis clients reconnect every 50-500 ms)
 * and renew its own before any sweeps them, or live clients would be seen to
 * leave and join again.
 */
export const SWEEP_GRACE_MS = 2000;

/** What the writer needs of its driver. */
export interface StoreWriterHost {
  /** The core to report to. */
  core: ServerCore;
  /** Sends what the core has to send after a report. */
  drain(): void;
  /** Told how long each write took and whether it worked (metrics). */
  stored?(seconds: number, ok: boolean): void;
  /** This instance's TCP address (`host:port`), which owns the files on its disk (shared store). */
  owner?: string;
  /** The files on this instance's disk at start, by user (shared store). */
  files?: readonly (readonly [string, readonly StoredFile[]])[];
}

/**
 * Writes (in order: serial for a file, pipelined for Redis) and replica
 * upkeep for one store.
 *
 * @example
 * ```ts
 * const writer = new StoreWriter(store, { core, drain: () => driver.drain() });
 * await writer.listen();
 * writer.persist(out.version, out.registry, out.changes);
 * await writer.idle();
 * ```
 */
export class StoreWriter {
  #store: Store;
  #host: StoreWriterHost;
  #chain: Promise<void> = Promise.resolve();
  #pipelined = new Set<Promise<void>>();
  /** Writes started, to notice one that ran while the registry was read. */
  #writes = 0;
  #resyncWanted = false;
  #resyncing = false;
  /** News that came while the registry was being read, applied again after. */
  #newsDuringResync: (readonly RegistryChange[])[] = [];
  #closed = false;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  /** A resync that failed, tried again at this timer. */
  #resyncRetry: ReturnType<typeof setTimeout> | undefined;
  #sweeping = false;
  /** No sweep before this time (the store was away), ms. */
  #sweepAfter = 0;
  /** True once a presence write or a sweep failed: this instance's leases are renewed when the store is back. */
  #renewWanted = false;
  /** Presence writes under way, awaited at close. */
  #presence = new Set<Promise<void>>();
  /** Session writes waiting for a registry write to ride on, oldest first. */
  #sessions: PresenceWrite[] = [];
  /**
   * Leaves whose write failed (the store was away), by name key: written
   * again once it is back, unless the name has a session here again.
   */
  #leavesOwed = new Map<string, PresenceWrite>();
  #sessionTimer: ReturnType<typeof setTimeout> | undefined;

  /**
   * @param store where to write
   * @param host the core and the driver's drain
   */
  constructor(store: Store, host: StoreWriterHost) {
    this.#store = store;
    this.#host = host;
  }

  /**
   * Subscribes to a shared store's news, reads the other instances'
   * sessions and starts sweeping leases (nothing for the file store).
   */
  async listen(): Promise<void> {
    if (!this.#store.shared) return;
    await this.#store.listen({
      changed: (changes) => {
        if (this.#closed) return;
        if (this.#resyncing) this.#newsDuringResync.push(changes);
        this.#host.core.registryChanged(changes);
      },
      presence: (op, record) => {
        if (this.#closed) return;
        this.#host.core.presenceChanged(systemClock.now(), op, record);
        this.#host.drain();
      },
      peer: (news) => {
        if (this.#closed) return;
        this.#host.core.peerNews(systemClock.now(), news);
        this.#host.drain();
      },
      login: (source, name, ok) => {
        if (!this.#closed) this.#host.core.loginElsewhere(systemClock.now(), source, name, ok);
      },
      file: (op, record) => {
        if (!this.#closed && record.owner !== this.#owner) this.#host.core.fileChanged(op, record);
      },
      resync: () => {
        this.#wantResync();
        this.#resyncPresence();
        this.#resyncFiles();
        this.#resyncLogins();
      },
    });
    const own = (this.#host.files ?? []).flatMap(([user, files]) =>
      files.map((file) => ({ user, file, owner: this.#owner }))
    );
    await this.#store.ownFiles(this.#owner, own);
    await this.#resyncPresence();
    await this.#resyncFiles();
    await this.#resyncLogins();
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_EVERY_MS);
  }

  /**
   * Publishes a session of this instance with the next registry write, or
   * within {@linkcode PRESENCE_WAIT_MS} on its own; a failure is logged (the
   * next heartbeat publishes it again).
   *
   * @param op `join`, `renew` or `leave`
   * @param record the session
   * @param deadline its lease's end
   */
  presence(op: "join" | "renew" | "leave", record: PresenceRecord, deadline: number): void {
    if (this.#closed) return;
    // The name has a session here again: a leave owed from before would end it.
    this.#leavesOwed.delete(nameKey(record.name));
    this.#sessions.push({ op, record, deadline });
    if (this.#sessions.length >= PRESENCE_BATCH) this.#flushSessions();
    else this.#sessionTimer ??= setTimeout(() => this.#flushSessions(), PRESENCE_WAIT_MS);
  }

  /** Takes the session writes waiting, to send now. */
  #takeSessions(): PresenceWrite[] {
    clearTimeout(this.#sessionTimer);
    this.#sessionTimer = undefined;
    const writes = this.#sessions;
    this.#sessions = [];
    return writes;
  }

  #flushSessions(writes = this.#takeSessions()): void {
    if (writes.length === 0) return;
    const written = this.#store.presence(writes).catch((error) => {
      this.#renewWanted = true;
      for (const w of writes) {
        const key = nameKey(w.record.name);
        if (w.op === "leave") this.#leavesOwed.set(key, w);
        else this.#leavesOwed.delete(key);
      }
      log.warn("Cannot publish the sessions of {names}: {error}", {
        names: [...new Set(writes.map((w) => w.record.name))].join(", "),
        error: error instanceof Error ? error.message : String(error),
      });
    });
    this.#presence.add(written);
    written.finally(() => this.#presence.delete(written));
  }

  /**
   * Records a login in the shared store and tells the other instances; a
   * failure to is logged. With an id, the core is told when it is done, and
   * what the store made of it.
   *
   * @param outcome the login
   * @param id the output's id, if the core waits
   */
  login(outcome: LoginOutcome, id?: number): void {
    const written = this.#store.login(outcome);
    const told = (recorded?: LoginRecorded) => {
      if (id === undefined || this.#closed) return;
      this.#host.core.loginRecorded(id, systemClock.now(), recorded);
      this.#host.drain();
    };
    written.then(told, () => told());
    this.#track(written.then(() => {}), `record a login of ${outcome.name}`);
  }

  /**
   * Sends an introduction or relayed datagram to another instance; a failure
   * is logged (the peers retransmit).
   *
   * @param news the news
   */
  peer(news: PeerNews): void {
    const written = this.#store.peer(news).catch((error) =>
      log.debug("Cannot pass a peer {kind} to {name}: {error}", {
        kind: news.kind,
        name: news.to,
        error: error instanceof Error ? error.message : String(error),
      })
    );
    this.#presence.add(written);
    written.finally(() => this.#presence.delete(written));
  }

  /**
   * Records a file stored or deleted on this instance's disk (or removes
   * the record of one on `owner`'s); a failure is logged (each instance's
   * next start records its disk again).
   *
   * @param op `put`, `delete`, or `gone` (another instance's file of a removed identity: a tombstone)
   * @param user the owning user
   * @param file the file
   * @param owner the TCP address of the instance whose disk holds it, if not this one
   */
  file(op: "put" | "delete" | "gone", user: string, file: StoredFile, owner = this.#owner): void {
    const record: SharedFileRecord = { user, file, owner };
    this.#track(this.#store.file(op, record), `record the file "${file.name}" of ${user}`);
  }

  #track(written: Promise<void>, what: string): void {
    const tracked = written.catch((error) =>
      log.warn("Cannot {what}: {error}", {
        what,
        error: error instanceof Error ? error.message : String(error),
      })
    );
    this.#presence.add(tracked);
    tracked.finally(() => this.#presence.delete(tracked));
  }

  get #owner(): string {
    return this.#host.owner ?? "";
  }

  /** Counts the failed logins the shared store holds (at start, and news may have been lost). */
  async #resyncLogins(): Promise<void> {
    try {
      const pairs = await this.#store.loginFailures(systemClock.now());
      if (!this.#closed) this.#host.core.loginsSynced(pairs);
    } catch (error) {
      log.warn("Cannot read the failed logins: {error}", {
        error: error instanceof Error ? error.message : String(error),
      });
    }
  }

  async #resyncFiles(): Promise<void> {
    try {
      const records = await this.#store.fileRecords(this.#owner);
      if (!this.#closed) this.#host.core.filesSynced(records);
    } catch (error) {
      log.warn("Cannot read the other instances' files: {error}", {
        error: error instanceof Error ? error.message : String(error),
      });
    }
  }

  /**
   * Ends the shared leases whose deadline is past. After the store was away,
   * first renews this instance's own leases (their deadlines there went
   * stale), and ends nothing until {@linkcode SWEEP_GRACE_MS} after the last
   * failure; meanwhile a sweep of nothing (deadline 0) tells when it is back.
   */
  async #sweep(): Promise<void> {
    if (this.#sweeping || this.#closed) return;
    this.#sweeping = true;
    const now = systemClock.now();
    try {
      await this.#store.sweep(now < this.#sweepAfter ? 0 : now);
      if (this.#renewWanted && !this.#closed) {
        this.#renewWanted = false;
        this.#host.core.renewShared(now);
        this.#host.drain();
        // The leaves lost while it was away (a logout acknowledged then): without them the
        // other instances would list those clients until their leases ran out.
        for (const leave of this.#leavesOwed.values()) this.#sessions.push(leave);
        this.#leavesOwed.clear();
        this.#flushSessions();
      }
    } catch {
      // Away: the sweeps after it is back end what expired meanwhile, after the grace.
      this.#renewWanted = true;
      this.#sweepAfter = systemClock.now() + SWEEP_GRACE_MS;
    } finally {
      this.#sweeping = false;
    }
  }

  async #resyncPresence(): Promise<void> {
    try {
      const records = await this.#store.presenceRecords();
      if (this.#closed) return;
      this.#host.core.presenceSynced(systemClock.now(), records);
      this.#host.drain();
    } catch (error) {
      log.warn("Cannot read the other instances' sessions: {error}", {
        error: error instanceof Error ? error.message : String(error),
      });
    }
  }

  /**
   * Writes a version after those before it, then tells the core.
   *
   * @param version the `persist` output's version
   * @param snapshot the output, whose `registry` snapshot is read only for a file store
   * @param changes its changes
   */
  persist(
    version: number,
    snapshot: { readonly registry: RegistryJson },
    changes: readonly RegistryChange[],
  ): void {
    this.#writes++;
    // Only the file store reads the snapshot, made now, as it is at this version.
    const registry = this.#store.shared ? {} : snapshot.registry;
    // The session writes waiting ride on this write (one Redis round trip).
    const sessions = this.#store.shared ? this.#takeSessions() : [];
    const write = async () => {
      const started = performance.now();
      try {
        await this.#store.persist(registry, changes, sessions);
        this.#host.stored?.((performance.now() - started) / 1000, true);
        this.#host.core.persisted(version, systemClock.now());
      } catch (error) {
        // A refused write made none of its session writes: they go on their own.
        this.#flushSessions(sessions);
        this.#host.stored?.((performance.now() - started) / 1000, false);
        this.#host.core.persistFailed(
          version,
          error instanceof Error ? error.message : String(error),
          error instanceof StoreError ? error.taken : undefined,
        );
        if (this.#store.shared) this.#resyncWanted = true;
      }
      this.#host.drain();
      this.#maybeResync();
    };
    if (!this.#store.shared) {
      this.#chain = this.#chain.then(write);
      return;
    }
    // Sent at once: the connection keeps them in order.
    const written = write();
    this.#pipelined.add(written);
    written.finally(() => this.#pipelined.delete(written));
  }

  /** Resolves once every write asked for so far is done. */
  async idle(): Promise<void> {
    while (true) {
      const chain = this.#chain;
      await Promise.all([chain, ...this.#pipelined]);
      if (
        chain === this.#chain && this.#pipelined.size === 0 && !this.#host.core.hasUnsavedChanges
      ) return;
    }
  }

  /** Stops applying news, resyncs and sweeps; sends the session writes waiting and waits for them. */
  async close(): Promise<void> {
    this.#flushSessions();
    this.#closed = true;
    clearInterval(this.#sweeper);
    clearTimeout(this.#resyncRetry);
    while (this.#sweeping || this.#presence.size > 0) {
      await Promise.allSettled([...this.#presence, new Promise((r) => setTimeout(r, 5))]);
    }
  }

  #wantResync(): void {
    this.#resyncWanted = true;
    this.#maybeResync();
  }

  async #maybeResync(): Promise<void> {
    clearTimeout(this.#resyncRetry);
    this.#resyncRetry = undefined;
    if (!this.#resyncWanted || this.#resyncing || this.#closed) return;
    if (this.#host.core.hasUnsavedChanges) return; // after the writes under way
    this.#resyncing = true;
    this.#resyncWanted = false;
    const writes = this.#writes;
    try {
      const records = await this.#store.records();
      if (this.#closed) return;
      if (writes !== this.#writes || this.#host.core.hasUnsavedChanges) {
        this.#resyncWanted = true; // ours came in between: read again after them
      } else {
        this.#host.core.registrySynced(records);
        for (const changes of this.#newsDuringResync) this.#host.core.registryChanged(changes);
        log.info("Registry resynced from the {kind} store: {count} registered", {
          kind: this.#store.kind,
          count: records.length,
        });
      }
    } catch (error) {
      // Tried again shortly: a Redis that stalled loses no subscription, so nothing else asks.
      log.warn("Cannot resync the registry: {error}", {
        error: error instanceof Error ? error.message : String(error),
      });
      this.#resyncWanted = true;
      clearTimeout(this.#resyncRetry);
      this.#resyncRetry = setTimeout(() => this.#maybeResync(), RESYNC_RETRY_MS);
    } finally {
      this.#resyncing = false;
      this.#newsDuringResync = [];
    }
    if (
      this.#resyncWanted && !this.#host.core.hasUnsavedChanges && this.#resyncRetry === undefined
    ) {
      queueMicrotask(() => this.#maybeResync());
    }
  }
}
