/**
 * Remembers recent requests per client so that a retransmitted request is
 * answered again and never executed twice. Keyed by the client's random id
 * and the request id; a fingerprint of the request guards against a forged
 * request that reuses someone else's ids, and the address it first came
 * from against a copy of it sent from elsewhere (which would otherwise be
 * handed the reply: a `register_ok` holds an identity key).
 *
 * @module
 */
import type { Reply } from "../wire/messages.ts";

/** What the cache knows about one request. */
export type ReplayState =
  | { readonly state: "new" }
  | { readonly state: "pending" }
  | { readonly state: "done"; readonly reply: Reply }
  | { readonly state: "elsewhere" };

interface Entry {
  fingerprint: string;
  origin: string;
  reply: Reply | undefined;
  at: number;
}

/** How long an answered request is remembered by default, ms. */
export const DEFAULT_REPLAY_TTL_MS = 120_000;

/** Limits of a {@linkcode ReplayCache}. */
export interface ReplayCacheOptions {
  /** How long an answered request is remembered, in ms (default 120 s). */
  ttlMs?: number;
  /** Requests remembered per client (default 64). */
  perClient?: number;
  /** Clients remembered in all; the least recently seen go first (default 10,000). */
  maxClients?: number;
}

/**
 * A bounded replay cache.
 *
 * @example
 * ```ts
 * const cache = new ReplayCache();
 * cache.check(now, "00aa00aa00aa00aa", 1, "fp", "192.0.2.7"); // { state: "new" }
 * cache.begin(now, "00aa00aa00aa00aa", 1, "fp", "192.0.2.7");
 * cache.complete("00aa00aa00aa00aa", 1, reply);
 * cache.check(now, "00aa00aa00aa00aa", 1, "fp", "192.0.2.7"); // { state: "done", reply }
 * cache.check(now, "00aa00aa00aa00aa", 1, "fp", "198.51.100.9"); // { state: "elsewhere" }
 * ```
 */
export class ReplayCache {
  #clients = new Map<string, Map<number, Entry>>();
  #ttlMs: number;
  #perClient: number;
  #maxClients: number;

  /** @param options limits */
  constructor(options: ReplayCacheOptions = {}) {
    this.#ttlMs = options.ttlMs ?? DEFAULT_REPLAY_TTL_MS;
    this.#perClient = options.perClient ?? 64;
    this.#maxClients = options.maxClients ?? 10_000;
  }

  /** How many clients are remembered. */
  get clientCount(): number {
    return this.#clients.size;
  }

  /**
   * Tells whether a request was seen before.
   *
   * @param now current time, ms
   * @param client the client's id
   * @param reqId the request id
   * @param fingerprint identifies the request's content
   * @param origin the address it came from (a retransmission may come from
   * another port of the same host, behind a NAT that rebinds)
   * @returns "new" (execute it), "pending" (drop it), "done" (send the reply
   * again) or "elsewhere" (the same request, seen from another address: refuse it)
   */
  check(
    now: number,
    client: string,
    reqId: number,
    fingerprint: string,
    origin: string,
  ): ReplayState {
    const entry = this.#clients.get(client)?.get(reqId);
    if (entry === undefined || entry.fingerprint !== fingerprint) return { state: "new" };
    if (entry.reply !== undefined && now - entry.at > this.#ttlMs) return { state: "new" };
    if (entry.origin !== origin) return { state: "elsewhere" };
    if (entry.reply === undefined) return { state: "pending" };
    return { state: "done", reply: entry.reply };
  }

  /**
   * Records that a request is being executed.
   *
   * @param now current time, ms
   * @param client the client's id
   * @param reqId the request id
   * @param fingerprint identifies the request's content
   * @param origin the address it came from
   */
  begin(now: number, client: string, reqId: number, fingerprint: string, origin: string): void {
    let requests = this.#clients.get(client);
    if (requests === undefined) {
      requests = new Map();
    } else {
      this.#clients.delete(client);
    }
    this.#clients.set(client, requests);
    requests.delete(reqId);
    requests.set(reqId, { fingerprint, origin, reply: undefined, at: now });
    while (requests.size > this.#perClient) {
      requests.delete(requests.keys().next().value!);
    }
    while (this.#clients.size > this.#maxClients) {
      this.#clients.delete(this.#clients.keys().next().value!);
    }
  }

  /**
   * Stores the reply of a request that was begun.
   *
   * @param client the client's id
   * @param reqId the request id
   * @param reply the reply sent
   */
  complete(client: string, reqId: number, reply: Reply): void {
    const entry = this.#clients.get(client)?.get(reqId);
    if (entry !== undefined) entry.reply = reply;
  }
}
