/**
 * Presence news for watching clients, delivered reliably over UDP: each
 * change gets the watcher's next sequence number and is resent (with
 * backoff) until the watcher acknowledges it; the watcher shows changes in
 * sequence order and skips copies. Sans-I/O.
 *
 * @module
 */
import { toHex } from "../hex.ts";
import { PRESENCE_CHANGES } from "../wire/messages.ts";

/** One client in a presence message. */
export interface PresenceEntry {
  readonly name: string;
  readonly ip: string;
  readonly udpPort: number;
  readonly tcpPort: number;
  readonly onlineMs: number;
}

/** A change queued for one watcher. */
export interface PresenceNews {
  readonly seq: number;
  readonly change: number;
  readonly entry: PresenceEntry;
}

/** A batch of news to (re)send to one watcher. */
export interface PresenceSend {
  /** The watcher's session token (the message carries it). */
  readonly token: Uint8Array;
  /** Its address. */
  readonly ip: string;
  /** Its UDP port. */
  readonly udpPort: number;
  /** The changes, oldest first. */
  readonly news: readonly PresenceNews[];
}

/** Most changes kept for a watcher that does not acknowledge. */
export const MAX_QUEUED_NEWS = 256;

const FIRST_RESEND_MS = 500;
const MAX_RESEND_MS = 8000;

interface Watcher {
  token: Uint8Array;
  ip: string;
  udpPort: number;
  nextSeq: number;
  queue: PresenceNews[];
  resendAt: number;
  backoffMs: number;
}

/**
 * The watchers and what each has not yet acknowledged.
 *
 * @example
 * ```ts
 * const feed = new PresenceFeed();
 * feed.watch(token, "127.0.0.1", 5000);
 * const sends = feed.publish(now, PRESENCE_CHANGES.joined, entry);
 * feed.ack(token, 1);
 * ```
 */
export class PresenceFeed {
  #watchers = new Map<string, Watcher>();

  /** How many clients watch. */
  get size(): number {
    return this.#watchers.size;
  }

  /**
   * Adds (or moves) a watcher.
   *
   * @param token its session token
   * @param ip its address
   * @param udpPort its UDP port
   */
  watch(token: Uint8Array, ip: string, udpPort: number): void {
    const key = toHex(token);
    const existing = this.#watchers.get(key);
    if (existing !== undefined) {
      existing.ip = ip;
      existing.udpPort = udpPort;
      return;
    }
    this.#watchers.set(key, {
      token,
      ip,
      udpPort,
      nextSeq: 1,
      queue: [],
      resendAt: Infinity,
      backoffMs: FIRST_RESEND_MS,
    });
  }

  /**
   * Removes a watcher and what it had not acknowledged.
   *
   * @param token its session token
   */
  unwatch(token: Uint8Array): void {
    this.#watchers.delete(toHex(token));
  }

  /**
   * Tells whether a session watches.
   *
   * @param token its session token
   * @returns true if it does
   */
  watching(token: Uint8Array): boolean {
    return this.#watchers.has(toHex(token));
  }

  /**
   * Queues a change for every watcher except the one it is about.
   *
   * @param now current time, ms
   * @param change a {@linkcode PRESENCE_CHANGES} value
   * @param entry the client that joined or left
   * @param about the token of the session the change is about (not told)
   * @returns what to send now
   */
  publish(now: number, change: number, entry: PresenceEntry, about?: Uint8Array): PresenceSend[] {
    const skip = about === undefined ? undefined : toHex(about);
    const sends: PresenceSend[] = [];
    for (const [key, w] of this.#watchers) {
      if (key === skip) continue;
      if (w.queue.length >= MAX_QUEUED_NEWS) {
        // The watcher is not acknowledging: replace the backlog by one
        // "resync" notice so it knows to list again.
        w.queue = [{ seq: w.nextSeq++, change: PRESENCE_CHANGES.resync, entry }];
      } else {
        w.queue.push({ seq: w.nextSeq++, change, entry });
      }
      w.backoffMs = FIRST_RESEND_MS;
      w.resendAt = now + w.backoffMs;
      sends.push(sendOf(w, w.queue.slice(-1)));
    }
    return sends;
  }

  /**
   * Records a watcher's acknowledgement of everything up to `seq`.
   *
   * @param token its session token
   * @param seq the highest sequence number it has shown
   */
  ack(token: Uint8Array, seq: number): void {
    const w = this.#watchers.get(toHex(token));
    if (w === undefined) return;
    w.queue = w.queue.filter((n) => n.seq > seq);
    if (w.queue.length === 0) {
      w.resendAt = Infinity;
      w.backoffMs = FIRST_RESEND_MS;
    }
  }

  /** @returns when `resend` should next be called, or undefined */
  nextResend(): number | undefined {
    let next = Infinity;
    for (const w of this.#watchers.values()) next = Math.min(next, w.resendAt);
    return next === Infinity ? undefined : next;
  }

  /**
   * Resends what is due, doubling each watcher's interval up to 8 s.
   *
   * @param now current time, ms
   * @returns what to send
   */
  resend(now: number): PresenceSend[] {
    const sends: PresenceSend[] = [];
    for (const w of this.#watchers.values()) {
      if (w.resendAt > now) continue;
      w.backoffMs = Math.min(w.backoffMs * 2, MAX_RESEND_MS);
      w.resendAt = now + w.backoffMs;
      sends.push(sendOf(w, w.queue));
    }
    return sends;
  }
}

function sendOf(w: Watcher, news: readonly PresenceNews[]): PresenceSend {
  return { token: w.token, ip: w.ip, udpPort: w.udpPort, news };
}
