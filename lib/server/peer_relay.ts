/**
 * The server as rendezvous and relay for peers behind NATs, sans-I/O.
 *
 * **Introductions.** A client that wants a peer session asks with
 * `introduce` (the session id it drew, the peer's name, its own host
 * candidates). The server answers with the peer's candidates (the
 * server-reflexive address it sees the peer's UDP socket at, then the host
 * addresses the peer gave) and a fresh probe key, and at the same moment
 * pushes an `introduction` to the peer with the asker's candidates and the
 * same key: both sides start their checks together (ICE, RFC 8445, with the
 * server as the signalling channel). Introducing the same session again (a
 * retransmission, the peer's own `introduce`, an upgrade attempt) refreshes
 * it and pushes again.
 *
 * **Relay.** For an introduced session the server forwards `relay`
 * datagrams from one party's UDP address to the other's, opaquely (TURN,
 * RFC 8656, in miniature; the payload is the peer datagram, sealed end to
 * end by the peers). Only the two parties, at the UDP address of their
 * server session, may use it; each introduction has its own rate limit
 * (token bucket, bytes a second) and byte quota, and the relay logs when it
 * starts, when it limits and when it ends.
 *
 * **Across instances** (shared presence): a party whose session is on
 * another instance is reached through that instance. `introduce` for such a
 * peer answers with the peer's candidates from its shared session and hands
 * the introduction to the driver as {@linkcode PeerNews}, which the holding
 * instance turns into the `introduction` push ({@linkcode PeerRelay.news});
 * a `relay` datagram for such a party travels the same way, charged to the
 * introduction's rate limit and quota on the instance it entered. The two
 * instances derive the same probe key from the secret they share (the
 * server key), so two introductions made at once on both agree.
 *
 * Bounded: at most {@linkcode PeerRelayLimits.perName} introductions asked
 * for by one name (its oldest goes) and {@linkcode PeerRelayLimits.total} in all; one
 * unused for {@linkcode PeerRelayLimits.idleMs} is forgotten.
 *
 * @module
 */
import { hmacSha256 } from "../crypto/symmetric_state.ts";
import { nameKey } from "../wire/client_name.ts";
import type { MessageOf } from "../wire/messages.ts";
import { MAX_HOST_CANDIDATES, MAX_RELAY_PAYLOAD_BYTES, PROBE_KEY_BYTES } from "../wire/messages.ts";
import type { Random } from "../random.ts";
import type { Endpoint, ServerEvent, ServerOutput } from "./server_event.ts";
import type { Session, SessionTable } from "./session_table.ts";
import type { PresenceRecord } from "./store.ts";

/** The relay's limits. */
export interface PeerRelayLimits {
  /** Sustained relayed bytes a second per introduction, both directions together (default 1 MB/s). */
  bytesPerSecond: number;
  /** Bytes relayed at once above the sustained rate (default 256 KB). */
  burstBytes: number;
  /** Bytes one introduction may relay in all (default 64 MiB); 0 for no limit. */
  quotaBytes: number;
  /** An introduction neither relayed through nor introduced again for this long is forgotten, ms (default 120 s). */
  idleMs: number;
  /** Most introductions one name asked for (default 16); its oldest goes first. */
  perName: number;
  /** Most introductions in all (default 10,000). */
  total: number;
  /** At most one `relay_limited` event per introduction per this period, ms (default 10 s). */
  reportEveryMs: number;
}

/** The default relay limits. */
export const DEFAULT_RELAY_LIMITS: PeerRelayLimits = {
  bytesPerSecond: 1_000_000,
  burstBytes: 256_000,
  quotaBytes: 64 * 1024 * 1024,
  idleMs: 120_000,
  perName: 16,
  total: 10_000,
  reportEveryMs: 10_000,
};

/** Options of a {@linkcode PeerRelay}. */
export interface PeerRelayOptions {
  /** The live sessions, to find a party by name. */
  sessions: SessionTable;
  /** Source of probe keys. */
  random: Random;
  /** Where pushes and forwarded datagrams go. */
  output: (output: ServerOutput) => void;
  /** Where log events go. */
  emit: (event: ServerEvent) => void;
  /** Limits (defaults: {@linkcode DEFAULT_RELAY_LIMITS}). */
  limits?: Partial<PeerRelayLimits>;
  /** The session a name has on another instance (shared presence), if any. */
  remote?: (name: string) => PresenceRecord | undefined;
  /** The secret the instances share, for the probe keys of introductions across instances. */
  secret?: () => Uint8Array;
}

/**
 * An introduction or a relayed datagram for a party on another instance:
 * the driver publishes it to `instance`, whose driver gives it to
 * {@linkcode PeerRelay.news}.
 */
export type PeerNews =
  | {
    readonly kind: "introduce";
    /** The instance that holds `to`'s session. */
    readonly instance: string;
    readonly session: string;
    readonly from: string;
    readonly to: string;
    readonly probeKey: Uint8Array;
    /** `from`'s candidates, its server-reflexive address first. */
    readonly candidates: readonly Candidate[];
  }
  | {
    readonly kind: "relay";
    readonly instance: string;
    readonly session: string;
    readonly from: string;
    readonly to: string;
    readonly payload: Uint8Array;
  };

/** The relay's counters. */
export interface PeerRelayStats {
  /** `introduce` requests that introduced (or refreshed) a session. */
  introduced: number;
  /** Datagrams forwarded. */
  relayed: number;
  /** Bytes of payload forwarded. */
  relayedBytes: number;
  /** `relay` datagrams dropped: unknown session, a sender that is no party, the other party offline. */
  refused: number;
  /** `relay` datagrams dropped by an introduction's rate limit or quota. */
  limited: number;
}

/** One candidate on the wire. */
export type Candidate = { readonly ip: string; readonly port: number };

/** Where a party's UDP socket is: a live session here, or one on another instance. */
type Place = { readonly ip: string; readonly udpPort: number };

interface Party {
  readonly name: string;
  hosts: readonly Candidate[];
}

interface Introduction {
  readonly session: string;
  readonly parties: readonly [Party, Party];
  readonly probeKey: Uint8Array;
  lastUsed: number;
  /** Token bucket: bytes available, refilled at `bytesPerSecond`. */
  tokens: number;
  refilledAt: number;
  bytes: number;
  datagrams: number;
  started: boolean;
  /** Drops since the last `relay_limited` event, and when that was. */
  dropped: number;
  reportedAt: number | undefined;
}

/** Why `introduce` was refused, for the core to answer with an `error`. */
export interface IntroduceRefusal {
  readonly code: "not_online" | "bad_request";
  readonly reason: string;
}

/**
 * Introductions and the relay.
 *
 * @example
 * ```ts
 * const relay = new PeerRelay({ sessions, random, output, emit });
 * const reply = relay.introduce(now, alice, request); // introduce_ok; Bob gets an introduction
 * relay.relay(now, aliceEndpoint, { type: "relay", session, payload }); // forwarded to Bob
 * ```
 */
export class PeerRelay {
  /** What it did so far. */
  readonly stats: PeerRelayStats = {
    introduced: 0,
    relayed: 0,
    relayedBytes: 0,
    refused: 0,
    limited: 0,
  };
  #sessions: SessionTable;
  #random: Random;
  #output: (output: ServerOutput) => void;
  #emit: (event: ServerEvent) => void;
  #limits: PeerRelayLimits;
  #remote: (name: string) => PresenceRecord | undefined;
  #secret: (() => Uint8Array) | undefined;
  /** By session id, oldest use first (a use moves it to the end). */
  #byId = new Map<string, Introduction>();

  /**
   * @param options sessions, randomness, outputs and limits
   * @throws {RangeError} if a limit is not a positive number (`quotaBytes` may be 0)
   */
  constructor(options: PeerRelayOptions) {
    this.#sessions = options.sessions;
    this.#random = options.random;
    this.#output = options.output;
    this.#emit = options.emit;
    this.#limits = { ...DEFAULT_RELAY_LIMITS, ...options.limits };
    this.#remote = options.remote ?? (() => undefined);
    this.#secret = options.secret;
    for (const [key, value] of Object.entries(this.#limits)) {
      if (!(value > 0) && !(key === "quotaBytes" && value === 0)) {
        throw new RangeError(`The relay limit ${key} must be above 0, not ${value}`);
      }
    }
  }

  /** How many introductions are kept. */
  get size(): number {
    return this.#byId.size;
  }

  /**
   * Introduces the asker to a peer for a session: records the asker's host
   * candidates, pushes an `introduction` to the peer and returns the reply.
   *
   * @param now current time, ms
   * @param asker the asker's live session
   * @param request the request
   * @returns the `introduce_ok`, or why it is refused
   */
  introduce(
    now: number,
    asker: Session,
    request: MessageOf<"introduce">,
  ): MessageOf<"introduce_ok"> | IntroduceRefusal {
    const local = this.#sessions.byName(request.name);
    const remote = local === undefined ? this.#remote(request.name) : undefined;
    const peer: (Place & { name: string }) | undefined = local ??
      (remote?.instance !== undefined && this.#secret !== undefined ? remote : undefined);
    if (peer === undefined) {
      return { code: "not_online", reason: `"${request.name}" is not online` };
    }
    if (nameKey(peer.name) === nameKey(asker.name)) {
      return { code: "bad_request", reason: "Cannot introduce a client to itself" };
    }
    this.#expire(now);
    let intro = this.#byId.get(request.session);
    if (intro !== undefined && !isPartyPair(intro, asker.name, peer.name)) {
      return { code: "bad_request", reason: `Session ${request.session} belongs to others` };
    }
    if (intro === undefined) {
      const probeKey = local === undefined
        ? this.#derivedKey(request.session, asker.name, peer.name)
        : this.#random.bytes(PROBE_KEY_BYTES);
      intro = this.#create(now, request.session, asker.name, peer.name, probeKey);
    }
    this.#touch(now, intro);
    const [mine, theirs] = partiesOf(intro, asker.name);
    mine.hosts = request.hosts.slice(0, MAX_HOST_CANDIDATES).map(({ ip, port }) => ({ ip, port }));
    this.stats.introduced++;
    this.#emit({
      kind: "introduced",
      session: intro.session,
      from: asker.name,
      to: peer.name,
      hosts: mine.hosts.length,
    });
    if (local !== undefined) {
      this.#output({
        type: "send",
        to: { transport: "udp", address: local.ip, port: local.udpPort },
        message: {
          type: "introduction",
          token: local.token,
          session: intro.session,
          name: asker.name,
          probeKey: intro.probeKey,
          candidates: candidatesOf(asker, mine),
        },
      });
    } else {
      this.#output({
        type: "peer_store",
        news: {
          kind: "introduce",
          instance: remote!.instance!,
          session: intro.session,
          from: asker.name,
          to: peer.name,
          probeKey: intro.probeKey,
          candidates: candidatesOf(asker, mine),
        },
      });
    }
    return {
      type: "introduce_ok",
      reqId: request.reqId,
      session: intro.session,
      probeKey: intro.probeKey,
      candidates: candidatesOf(peer, theirs),
    };
  }

  /**
   * Forwards a `relay` datagram to the other party of its session, if it
   * comes from a party's UDP address and the introduction's rate limit and
   * quota allow.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param message the datagram
   * @returns `relayed`, `limited` (a party, over its limits), or `refused`
   *   (no such session, or not from a party: the caller charges the sender's
   *   address as for any datagram without a session)
   */
  relay(
    now: number,
    from: Endpoint,
    message: MessageOf<"relay">,
  ): "relayed" | "limited" | "refused" {
    const intro = from.transport === "udp" ? this.#byId.get(message.session) : undefined;
    const sender = intro?.parties.find((p) => at(this.#sessions.byName(p.name), from));
    if (intro === undefined || sender === undefined) {
      this.stats.refused++;
      return "refused";
    }
    const receiverName = intro.parties[0] === sender
      ? intro.parties[1].name
      : intro.parties[0].name;
    const receiver = this.#sessions.byName(receiverName);
    const remote = receiver === undefined ? this.#remote(receiverName) : undefined;
    if (receiver === undefined && remote?.instance === undefined) {
      this.stats.refused++;
      return "refused";
    }
    const size = message.payload.length;
    const why = this.#charge(now, intro, size);
    if (why !== undefined) {
      this.stats.limited++;
      intro.dropped++;
      if (intro.reportedAt === undefined || now - intro.reportedAt >= this.#limits.reportEveryMs) {
        intro.reportedAt = now;
        this.#emit({
          kind: "relay_limited",
          session: intro.session,
          name: sender.name,
          why,
          dropped: intro.dropped,
          bytes: intro.bytes,
        });
        intro.dropped = 0;
      }
      return "limited";
    }
    this.#touch(now, intro);
    if (!intro.started) {
      intro.started = true;
      this.#emit({
        kind: "relay_started",
        session: intro.session,
        a: intro.parties[0].name,
        b: intro.parties[1].name,
      });
    }
    if (receiver !== undefined) return this.#forward(intro, receiver, message);
    this.#count(intro, size);
    this.#output({
      type: "peer_store",
      news: {
        kind: "relay",
        instance: remote!.instance!,
        session: intro.session,
        from: sender.name,
        to: receiverName,
        payload: message.payload,
      },
    });
    return "relayed";
  }

  /**
   * Takes news from another instance for a party whose session is here: an
   * introduction (recorded, and pushed to the party) or a relayed datagram of
   * an introduced session (forwarded to the party). News for a name with no
   * session here, or a datagram of a session not introduced here, is dropped.
   *
   * @param now current time, ms
   * @param news the news
   */
  news(now: number, news: PeerNews): void {
    const party = this.#sessions.byName(news.to);
    if (party === undefined || nameKey(news.from) === nameKey(news.to)) return;
    this.#expire(now);
    let intro = this.#byId.get(news.session);
    if (intro !== undefined && !isPartyPair(intro, news.from, news.to)) return;
    if (news.kind === "relay") {
      if (intro === undefined || news.payload.length > MAX_RELAY_PAYLOAD_BYTES) return;
      this.#touch(now, intro);
      this.#forward(intro, party, { type: "relay", session: news.session, payload: news.payload });
      return;
    }
    if (news.probeKey.length !== PROBE_KEY_BYTES || news.candidates.length === 0) return;
    intro ??= this.#create(now, news.session, news.from, party.name, news.probeKey.slice());
    this.#touch(now, intro);
    const [theirs] = partiesOf(intro, news.from);
    theirs.hosts = news.candidates.slice(1, 1 + MAX_HOST_CANDIDATES)
      .map(({ ip, port }) => ({ ip, port }));
    this.stats.introduced++;
    this.#emit({
      kind: "introduced",
      session: intro.session,
      from: news.from,
      to: party.name,
      hosts: theirs.hosts.length,
    });
    this.#output({
      type: "send",
      to: { transport: "udp", address: party.ip, port: party.udpPort },
      message: {
        type: "introduction",
        token: party.token,
        session: intro.session,
        name: news.from,
        probeKey: intro.probeKey,
        candidates: news.candidates.slice(0, 1 + MAX_HOST_CANDIDATES)
          .map(({ ip, port }) => ({ ip, port })),
      },
    });
  }

  /** Sends a relayed datagram to a party here. */
  #forward(intro: Introduction, receiver: Session, message: MessageOf<"relay">): "relayed" {
    this.#count(intro, message.payload.length);
    this.#output({
      type: "send",
      to: { transport: "udp", address: receiver.ip, port: receiver.udpPort },
      message,
    });
    return "relayed";
  }

  #count(intro: Introduction, size: number): void {
    intro.bytes += size;
    intro.datagrams++;
    this.stats.relayed++;
    this.stats.relayedBytes += size;
  }

  #create(now: number, session: string, a: string, b: string, probeKey: Uint8Array): Introduction {
    this.#makeRoom(a);
    return {
      session,
      parties: [{ name: a, hosts: [] }, { name: b, hosts: [] }],
      probeKey,
      lastUsed: now,
      tokens: this.#limits.burstBytes,
      refilledAt: now,
      bytes: 0,
      datagrams: 0,
      started: false,
      dropped: 0,
      reportedAt: undefined,
    };
  }

  /**
   * The probe key of a session across instances: HMAC-SHA256 of the shared
   * secret over the session id and the two name keys in order, so that the
   * instances agree without asking each other.
   */
  #derivedKey(session: string, a: string, b: string): Uint8Array {
    const text = ["switchboard probe key", session, ...[nameKey(a), nameKey(b)].sort()].join("\n");
    return hmacSha256(this.#secret!(), new TextEncoder().encode(text)).slice(0, PROBE_KEY_BYTES);
  }

  /** @returns when `onTimeout` should next be called (the oldest introduction's idle end), or undefined */
  nextTimeout(): number | undefined {
    const oldest = this.#byId.values().next();
    return oldest.done ? undefined : oldest.value.lastUsed + this.#limits.idleMs;
  }

  /**
   * Forgets introductions idle for `idleMs`.
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    this.#expire(now);
  }

  /** Takes bytes from the introduction's bucket and quota; returns why not, if not. */
  #charge(now: number, intro: Introduction, size: number): "rate" | "quota" | undefined {
    const quota = this.#limits.quotaBytes;
    if (quota > 0 && intro.bytes + size > quota) return "quota";
    const { bytesPerSecond, burstBytes } = this.#limits;
    intro.tokens = Math.min(
      burstBytes,
      intro.tokens + (now - intro.refilledAt) * bytesPerSecond / 1000,
    );
    intro.refilledAt = now;
    if (intro.tokens < size) return "rate";
    intro.tokens -= size;
    return undefined;
  }

  #touch(now: number, intro: Introduction): void {
    intro.lastUsed = now;
    this.#byId.delete(intro.session);
    this.#byId.set(intro.session, intro);
  }

  #expire(now: number): void {
    for (const intro of this.#byId.values()) {
      if (intro.lastUsed + this.#limits.idleMs > now) break;
      this.#forget(intro);
    }
  }

  /**
   * Makes room for one more introduction asked for by `asker`: its own
   * oldest go, never one another name asked for, so a third client cannot
   * push someone's session off the relay by asking for introductions to them.
   */
  #makeRoom(asker: string): void {
    const key = nameKey(asker);
    const theirs = [...this.#byId.values()].filter((i) => nameKey(i.parties[0].name) === key);
    for (const intro of theirs.slice(0, Math.max(0, theirs.length - this.#limits.perName + 1))) {
      this.#forget(intro);
    }
    while (this.#byId.size >= this.#limits.total) this.#forget(this.#byId.values().next().value!);
  }

  #forget(intro: Introduction): void {
    this.#byId.delete(intro.session);
    if (!intro.started) return;
    this.#emit({
      kind: "relay_ended",
      session: intro.session,
      a: intro.parties[0].name,
      b: intro.parties[1].name,
      bytes: intro.bytes,
      datagrams: intro.datagrams,
    });
  }
}

function isPartyPair(intro: Introduction, a: string, b: string): boolean {
  const names = intro.parties.map((p) => nameKey(p.name)).sort().join("\n");
  return names === [nameKey(a), nameKey(b)].sort().join("\n");
}

/** The party that is `name`, then the other. */
function partiesOf(intro: Introduction, name: string): [Party, Party] {
  const [first, second] = intro.parties;
  return nameKey(first.name) === nameKey(name) ? [first, second] : [second, first];
}

/** A party's candidates: the server-reflexive address its session is at, then its host addresses. */
function candidatesOf(session: Place, party: Party): Candidate[] {
  const reflexive = { ip: session.ip, port: session.udpPort };
  return [
    reflexive,
    ...party.hosts.filter((h) => h.ip !== reflexive.ip || h.port !== reflexive.port),
  ];
}

/** True if a live session's UDP address is this endpoint (an IPv4-mapped address counts as IPv4). */
function at(session: Session | undefined, from: Endpoint): boolean {
  return session !== undefined && session.udpPort === from.port &&
    plainIp(session.ip) === plainIp(from.address);
}

function plainIp(ip: string): string {
  return ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip;
}
