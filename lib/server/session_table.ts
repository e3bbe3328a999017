/**
 * The active list: one session per name, found by name or by token, each
 * alive while its lease lasts. Pure data; the server core decides when.
 *
 * @module
 */
import { toHex } from "../hex.ts";
import { nameKey } from "../wire/client_name.ts";

/** One logged-in client. */
export interface Session {
  /** The name as registered (display form). */
  readonly name: string;
  /** The session token; kept in memory only, never logged. */
  readonly token: Uint8Array;
  /** Where the client is reached: its IP address. */
  ip: string;
  /** Its UDP port (where presence news and peers reach it). */
  udpPort: number;
  /** Its declared TCP port. */
  tcpPort: number;
  /** When the session began, ms. */
  readonly since: number;
  /** When the lease runs out unless renewed, ms. */
  leaseUntil: number;
  /** True if it asked to be told of joins and leaves. */
  watching: boolean;
  /** The static key of the channel it logged in over, vouched for to peers. */
  readonly key?: Uint8Array;
}

/** What a new session needs. */
export interface SessionStart {
  /** The registered name. */
  readonly name: string;
  /** The fresh token. */
  readonly token: Uint8Array;
  /** The client's IP address. */
  readonly ip: string;
  /** The client's UDP port. */
  readonly udpPort: number;
  /** The client's TCP port. */
  readonly tcpPort: number;
  /** The static key of its channel, if it came sealed. */
  readonly key?: Uint8Array;
  /** When it began, if before now (a session that moved from another instance), ms. */
  readonly since?: number;
}

/**
 * Active sessions with leases.
 *
 * @example
 * ```ts
 * const table = new SessionTable(30_000);
 * const { session } = table.open(now, { name: "Alice", token, ip: "127.0.0.1",
 *   udpPort: 5000, tcpPort: 5001 });
 * table.byToken(token) === session; // true
 * table.expire(now + 30_001); // [session]
 * ```
 */
export class SessionTable {
  #leaseMs: number;
  #byName = new Map<string, Session>();
  #byToken = new Map<string, Session>();
  #earliestExpiry: number | undefined;

  /** @param leaseMs how long a session lives without a heartbeat */
  constructor(leaseMs: number) {
    this.#leaseMs = leaseMs;
  }

  /** The lease length, ms. */
  get leaseMs(): number {
    return this.#leaseMs;
  }

  /** How many sessions are active. */
  get size(): number {
    return this.#byName.size;
  }

  /**
   * Opens a session; an active session of the same name is closed and
   * returned as `replaced`.
   *
   * @param now current time, ms
   * @param start the name, token and address
   * @returns the new session and the one it replaced, if any
   */
  open(now: number, start: SessionStart): { session: Session; replaced?: Session } {
    const replaced = this.byName(start.name);
    if (replaced !== undefined) this.close(replaced);
    const session: Session = {
      name: start.name,
      token: start.token,
      ip: start.ip,
      udpPort: start.udpPort,
      tcpPort: start.tcpPort,
      since: start.since ?? now,
      leaseUntil: now + this.#leaseMs,
      watching: false,
      ...(start.key === undefined ? {} : { key: start.key.slice() }),
    };
    this.#byName.set(nameKey(start.name), session);
    this.#byToken.set(toHex(start.token), session);
    if (this.#earliestExpiry === undefined || session.leaseUntil < this.#earliestExpiry) {
      this.#earliestExpiry = session.leaseUntil;
    }
    return { session, replaced };
  }

  /**
   * Finds the session a token belongs to.
   *
   * @param token a token from a request
   * @returns the session, or undefined
   */
  byToken(token: Uint8Array): Session | undefined {
    return this.#byToken.get(toHex(token));
  }

  /**
   * Finds the session of a name, case-insensitively.
   *
   * @param name a name
   * @returns the session, or undefined when the name is not online
   */
  byName(name: string): Session | undefined {
    return this.#byName.get(nameKey(name));
  }

  /**
   * Extends a session's lease from now.
   *
   * @param now current time, ms
   * @param session an active session
   */
  renew(now: number, session: Session): void {
    session.leaseUntil = now + this.#leaseMs;
  }

  /**
   * Ends a session.
   *
   * @param session an active session
   */
  close(session: Session): void {
    const key = nameKey(session.name);
    if (this.#byName.get(key) !== session) return;
    this.#byName.delete(key);
    this.#byToken.delete(toHex(session.token));
  }

  /**
   * Ends every session whose lease has run out.
   *
   * @param now current time, ms
   * @returns the sessions ended, in name order
   */
  expire(now: number): Session[] {
    if (this.#earliestExpiry === undefined || now < this.#earliestExpiry) return [];
    const ended: Session[] = [];
    let earliest: number | undefined;
    for (const session of this.#byName.values()) {
      if (session.leaseUntil <= now) {
        ended.push(session);
      } else if (earliest === undefined || session.leaseUntil < earliest) {
        earliest = session.leaseUntil;
      }
    }
    for (const session of ended) this.close(session);
    this.#earliestExpiry = earliest;
    return ended.sort(byName);
  }

  /** @returns a time at or before the next lease expiry, or undefined */
  nextExpiry(): number | undefined {
    return this.#earliestExpiry;
  }

  /**
   * Lists active sessions in name order.
   *
   * @param after list only names that sort after this name key ("" for all)
   * @returns the sessions
   */
  list(after = ""): Session[] {
    const out: Session[] = [];
    for (const [key, session] of this.#byName) if (key > after) out.push(session);
    return out.sort(byName);
  }

  /** @returns every active session, in no particular order */
  all(): IterableIterator<Session> {
    return this.#byName.values();
  }
}

function byName(a: Session, b: Session): number {
  const ka = nameKey(a.name);
  const kb = nameKey(b.name);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}
