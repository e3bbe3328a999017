/**
 * The paths of the client's peer sessions, under the peer table, sans-I/O:
 * like Tailscale's magicsock, a layer that the sessions do not see. Each
 * session keeps one stable address for its peer (where the server sees it);
 * this layer decides where each datagram really goes.
 *
 * - On `connect` (the first `peer_connect` of a session leaving) it asks the
 *   server to `introduce` the two sides, with this machine's host
 *   candidates; the peer gets an `introduction` at the same moment. Either
 *   way each side gets a {@linkcode PeerPath} with the other's candidates
 *   and the probe key, and the checks start.
 * - A session's datagrams wait for the server's answer to `introduce` (a
 *   round trip; at most 1 s, then they go straight to the peer's address
 *   until it comes). Then, while the checks run, each goes both to the peer's
 *   likely address and through the server's relay (the first copy to
 *   arrive wins; the reliable channel drops the other), except the
 *   `peer_connect`, which goes through the relay only, so that the peer
 *   sees it from the address the server vouches for. Once direct, only to
 *   the verified address; after a check that found none, only through the
 *   relay. A session the server cannot introduce (an older server) goes straight to the peer's address, as
 *   before.
 * - Every datagram of a session, whichever way it came (direct from any
 *   address, or out of a `relay`), reaches the table as if from the peer's
 *   address, so the table's verification and address never depend on the
 *   path.
 * - A session on the relay that hears nothing from its peer for 3 s asks for
 *   an introduction again: its NAT may have moved it, and the request
 *   shows the server where (the relay forwards to where the server last
 *   saw each side).
 * - While the asking side has heard nothing from the peer on a session, it
 *   asks for the introduction again after 1, 2 and 4 s (an `introduction`
 *   is not acknowledged); the peer answers a first `introduction` with its
 *   own `introduce`, which gives the asker its host candidates, and asks
 *   for one itself when it accepts a session it was not introduced to.
 *
 * At most 32 sessions have a path; a new one pushes out the oldest whose
 * session is gone or was never opened.
 *
 * @module
 */
import { nameKey } from "../wire/client_name.ts";
import { toHex } from "../hex.ts";
import {
  decodeMessage,
  encodeMessage,
  HEADER_BYTES,
  MAGIC,
  PROTOCOL_VERSION,
} from "../wire/codec.ts";
import { ProtocolError } from "../wire/protocol_error.ts";
import { MESSAGE_SCHEMAS, type MessageOf } from "../wire/messages.ts";
import type { ClientOutput, Outbox } from "./outbox.ts";
import { PeerPath, type PeerPathState, type PeerPathTimings } from "./peer_path.ts";
import type { PeerAddress } from "./peer_session.ts";
import type { Random } from "../random.ts";
import type { ServerLink } from "./server_link.ts";
import type { ClientTimer, TimerTable } from "./timer_table.ts";

/** What the paths need to know of a peer session. */
export interface PathSession {
  /** The peer's name. */
  readonly peerName: string;
  /** True if this side asked for the session. */
  readonly outgoing: boolean;
  /** True while it may still send or receive (not closed). */
  readonly live: boolean;
}

/** Options of {@linkcode PeerPaths}. */
export interface PeerPathsOptions {
  /** The link to the server, for `introduce`. */
  link: ServerLink;
  /** Where outputs go. */
  outbox: Outbox;
  /** The core's timers; the paths own `paths`. */
  timers: TimerTable<ClientTimer>;
  /** Source of probe nonces. */
  random: Random;
  /** A session by id, from the peer table. */
  session: (id: string) => PathSession | undefined;
  /** This machine's host candidates (default none). */
  hostCandidates?: () => readonly PeerAddress[];
  /** Timings of the paths (tests shorten them). */
  timings?: Partial<PeerPathTimings>;
}

/** Most sessions with a path. */
const MAX_PATHS = 32;
/**
 * Most paths probing for introductions of sessions we do not have, so that
 * introductions a stranger asks for cannot make this client probe many
 * addresses at once (each path sends at most 20 small probes a second).
 */
const MAX_UNSOLICITED = 4;
/**
 * A session on the relay that hears nothing from its peer for this long asks
 * for an introduction again, ms: the channel's keepalives (every 2 s of
 * silence) keep a working session from ever being this quiet.
 */
const SILENT_RELAY_MS = 3_000;
/**
 * How long a session's datagrams wait for the server's answer to `introduce`,
 * ms; then they go straight to the peer's address until it comes (a server
 * without introductions drops the request unanswered).
 */
const HOLD_MS = 1_000;
/** Most datagrams of a session held while its introduction is asked for (the handshake's few). */
const MAX_HELD = 16;
/** When the asking side asks for the introduction again while it has heard nothing, ms after the first. */
const REINTRODUCE_AFTER_MS: readonly number[] = [1_000, 2_000, 4_000];

interface Entry {
  readonly session: string;
  readonly peerName: string;
  readonly path: PeerPath;
  readonly controlling: boolean;
  /** Where the peer's datagrams appear to come from, for the table (the server-reflexive address). */
  canonical: PeerAddress | undefined;
  /** True once the server introduced the sides; until then datagrams are held. */
  introduced: boolean;
  /** Datagrams held until the introduction (or its failure). */
  readonly held: Extract<ClientOutput, { type: "peer_send" }>[];
  /** True once anything of the session came from the peer. */
  heard: boolean;
  /** When something of the session last came from the peer, either way. */
  lastHeard: number;
  /** When this side last sent `introduce`. */
  introducedAt: number;
  /** True once this side (not controlling) answered the introduction with its own. */
  answered: boolean;
  /** The next re-introduction while nothing was heard, and how many were made. */
  reintroduceAt: number | undefined;
  reintroduced: number;
  readonly createdAt: number;
}

/**
 * The paths of the client's peer sessions.
 *
 * @example
 * ```ts
 * const paths = new PeerPaths({ link, outbox, timers, random, session: (id) => table.info(id) });
 * const out = paths.route(now, peerSendOutput); // direct, or through the relay
 * paths.handle(now, introduction); // an introduction from the server
 * ```
 */
export class PeerPaths {
  #options: PeerPathsOptions;
  #entries = new Map<string, Entry>();

  /** @param options the link, outbox, timers, randomness and the session lookup */
  constructor(options: PeerPathsOptions) {
    this.#options = options;
  }

  /**
   * The path of a session, if it has one.
   *
   * @param session the session id
   * @returns its path, or undefined (the session goes straight to the peer's address)
   */
  pathOf(session: string): PeerPathState | undefined {
    return this.#entries.get(session)?.path.path;
  }

  /**
   * Routes a datagram the peer table sends: straight on, through the relay,
   * or both. A session's first `peer_connect` asks the server to introduce
   * the sides.
   *
   * @param now current time, ms
   * @param out the table's `peer_send`
   * @returns the output to emit now (more may be queued in the outbox), or undefined
   */
  route(
    now: number,
    out: Extract<ClientOutput, { type: "peer_send" }>,
  ): ClientOutput | undefined {
    const sent = out.sent;
    if (sent.type === "peer_probe" || sent.type === "peer_probe_ok") return out;
    let entry = this.#entries.get(sent.session);
    if (entry === undefined && (sent.type === "peer_connect" || sent.type === "peer_accept")) {
      entry = this.#start(now, sent.session, out.to);
    }
    if (entry === undefined) return out;
    const path = entry.path.path;
    if (path.kind === "direct") return { ...out, to: path.remote };
    if (!entry.introduced) {
      // The asking side's are held until the server answers (through the
      // relay, or straight on); past HOLD_MS without an answer, and on the
      // other side (which asked only because an introduction was lost),
      // straight on meanwhile.
      if (!entry.controlling || now >= entry.createdAt + HOLD_MS) return out;
      if (entry.held.length < MAX_HELD) entry.held.push(out);
      return undefined;
    }
    const relay = {
      type: "send",
      via: "udp",
      message: { type: "relay", session: sent.session, payload: out.bytes },
      attempt: 1,
    } as const;
    // Still checking: the peer's address may work too, but the handshake
    // goes through the server only, where the peer sees it from the address
    // the server has for this side.
    if (entry.path.checking && sent.type !== "peer_connect") {
      this.#options.outbox.push(relay);
      const guess = entry.path.lastRemote;
      return guess === undefined ? out : { ...out, to: guess };
    }
    return relay;
  }

  /**
   * Takes a peer datagram that came directly: probes are answered here; any
   * other datagram of a session with a path is handed on as if from the
   * peer's address.
   *
   * @param now current time, ms
   * @param from its source
   * @param bytes the datagram
   * @returns the address to hand it to the table with, or undefined if it was taken here
   */
  inbound(now: number, from: PeerAddress, bytes: Uint8Array): PeerAddress | undefined {
    const session = sessionOf(bytes);
    if (session === undefined) return from;
    const entry = this.#entries.get(session);
    const code = bytes[3];
    if (code === PROBE || code === PROBE_OK) {
      let message;
      try {
        message = decodeMessage(bytes);
      } catch (error) {
        if (error instanceof ProtocolError) return undefined;
        throw error;
      }
      if (message.type === "peer_probe") entry?.path.handleProbe(now, from, message);
      if (message.type === "peer_probe_ok") entry?.path.handleProbeOk(now, from, message);
      this.#drain(now);
      return undefined;
    }
    if (entry === undefined) return from;
    this.#heard(now, entry);
    entry.path.heard(now, from);
    return entry.canonical ?? from;
  }

  /**
   * Takes what the server sends for the paths: an `introduction`, or a
   * `relay` (its payload is returned to hand to the table).
   *
   * @param now current time, ms
   * @param message the message
   * @returns for a `relay` of a session with a path: the peer's datagram and the address to hand it with
   */
  handle(
    now: number,
    message: MessageOf<"introduction" | "relay">,
  ): { from: PeerAddress; bytes: Uint8Array } | undefined {
    if (message.type === "introduction") {
      this.#introduction(now, message);
      return undefined;
    }
    const entry = this.#entries.get(message.session);
    if (entry?.canonical === undefined) return undefined;
    const inner = message.payload;
    // The peer's datagram of this session, as it was sent; a probe never travels relayed.
    if (sessionOf(inner) !== message.session || inner[3] === PROBE || inner[3] === PROBE_OK) {
      return undefined;
    }
    this.#heard(now, entry);
    return { from: entry.canonical, bytes: inner };
  }

  /**
   * Serves the paths' timers: probes, heartbeats, upgrades, re-introductions;
   * forgets the paths of sessions that are gone.
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    for (const entry of this.#entries.values()) {
      const session = this.#options.session(entry.session);
      if (session !== undefined && !session.live) {
        this.#forget(entry);
        continue;
      }
      const due = entry.path.nextTimeout();
      if (due !== undefined && due <= now) entry.path.onTimeout(now);
      if (!entry.introduced && now >= entry.createdAt + HOLD_MS) {
        // The server has not answered (an older one drops `introduce`): straight on meanwhile.
        for (const out of entry.held.splice(0)) this.#options.outbox.push(out);
      }
      if (this.#silent(now, entry)) {
        // Heard nothing for a while through the relay: this side's NAT may
        // have moved it, and the relay sends to where the server last saw it.
        // A request shows the server where it is now.
        this.#introduce(now, entry);
      }
      if (entry.reintroduceAt !== undefined && entry.reintroduceAt <= now) {
        entry.reintroduced++;
        entry.reintroduceAt = entry.reintroduced < REINTRODUCE_AFTER_MS.length
          ? entry.createdAt + REINTRODUCE_AFTER_MS[entry.reintroduced]
          : undefined;
        this.#introduce(now, entry);
      }
    }
    this.#drain(now);
  }

  /**
   * Starts the path of a session on its first `peer_connect` (this side
   * asked) or its first `peer_accept` without an introduction (the server's
   * was lost): asks the server to introduce the sides.
   */
  #start(now: number, session: string, to: PeerAddress): Entry | undefined {
    const info = this.#options.session(session);
    if (info === undefined || !info.live || this.#options.link.token === undefined) {
      return undefined;
    }
    const entry = this.#add(now, session, info.peerName, info.outgoing);
    entry.canonical = to;
    entry.answered = true;
    if (info.outgoing) entry.reintroduceAt = now + REINTRODUCE_AFTER_MS[0];
    this.#introduce(now, entry);
    this.#drain(now);
    return entry;
  }

  #add(now: number, session: string, peerName: string, controlling: boolean): Entry {
    if (this.#entries.size >= MAX_PATHS) {
      const stale = [...this.#entries.values()].find((e) => {
        const s = this.#options.session(e.session);
        return s === undefined || !s.live;
      }) ?? this.#entries.values().next().value!;
      this.#forget(stale);
    }
    const nonce = Math.floor(this.#options.random.next() * 0x1_0000_0000) >>> 0;
    const entry: Entry = {
      session,
      peerName,
      path: new PeerPath({
        session,
        controlling,
        firstNonce: nonce,
        timings: this.#options.timings,
      }),
      controlling,
      canonical: undefined,
      introduced: false,
      held: [],
      heard: false,
      lastHeard: now,
      introducedAt: now,
      answered: controlling,
      reintroduceAt: undefined,
      reintroduced: 0,
      createdAt: now,
    };
    this.#entries.set(session, entry);
    return entry;
  }

  /** Asks the server to introduce the sides (again). */
  #introduce(now: number, entry: Entry): void {
    // Counted as asked even when it cannot be (logged out): the silence
    // timer must move on.
    entry.introducedAt = now;
    const token = this.#options.link.token;
    if (token === undefined) return;
    const hosts = (this.#options.hostCandidates?.() ?? []).slice(0, 8);
    const body = {
      type: "introduce",
      token,
      name: entry.peerName,
      session: entry.session,
      hosts,
    } as const;
    this.#options.link.request(now, body, "udp", (at, outcome) => {
      if (this.#entries.get(entry.session) !== entry) return;
      const reply = outcome.type === "reply" ? outcome.reply : undefined;
      if (reply?.type === "introduce_ok") {
        entry.path.introduce(at, reply.probeKey, reply.candidates);
        this.#introduced(at, entry);
      } else if (!entry.introduced) {
        // No introduction (an older server): straight to the peer.
        this.#forget(entry);
        for (const out of entry.held) this.#options.outbox.push(out);
      }
      this.#drain(at);
    });
  }

  #introduction(now: number, message: MessageOf<"introduction">): void {
    if (!this.#options.link.ownsToken(message.token)) return;
    let entry = this.#entries.get(message.session);
    if (entry !== undefined && nameKey(entry.peerName) !== nameKey(message.name)) return;
    if (entry === undefined) {
      // An introduction for no session of ours (yet: it may come just ahead
      // of the peer's connect). Any logged-in stranger can have the server
      // send us such introductions naming any address, so only a few of
      // them probe at once: the oldest makes way.
      const unsolicited = [...this.#entries.values()].filter((e) =>
        this.#options.session(e.session) === undefined
      );
      if (unsolicited.length >= MAX_UNSOLICITED) this.#forget(unsolicited[0]);
      entry = this.#add(now, message.session, message.name, false);
    }
    entry.canonical ??= message.candidates[0];
    entry.path.introduce(now, message.probeKey, message.candidates);
    this.#introduced(now, entry);
    if (!entry.answered) {
      entry.answered = true;
      this.#introduce(now, entry);
    }
    this.#drain(now);
  }

  /** The server introduced the sides: what was held goes out, routed. */
  #introduced(now: number, entry: Entry): void {
    if (entry.introduced) return;
    entry.introduced = true;
    const held = entry.held.splice(0);
    for (const out of held) {
      const routed = this.route(now, out);
      if (routed !== undefined) this.#options.outbox.push(routed);
    }
  }

  /** True if a session on the relay has heard nothing from its peer for a while, nor asked. */
  #silent(now: number, entry: Entry): boolean {
    return entry.heard && entry.path.path.kind === "relay" &&
      now >= Math.max(entry.lastHeard, entry.introducedAt) + SILENT_RELAY_MS;
  }

  #heard(now: number, entry: Entry): void {
    entry.heard = true;
    entry.lastHeard = now;
    entry.reintroduceAt = undefined;
  }

  #forget(entry: Entry): void {
    entry.path.close();
    this.#entries.delete(entry.session);
  }

  /** Moves the paths' outputs to the outbox and arms the timer. */
  #drain(now: number): void {
    const outbox = this.#options.outbox;
    let next: number | undefined;
    for (const entry of this.#entries.values()) {
      for (let out = entry.path.poll(); out !== undefined; out = entry.path.poll()) {
        if (out.type === "send") {
          outbox.push({
            type: "peer_send",
            to: out.to,
            bytes: encodeMessage(out.message),
            sent: out.message,
          });
        } else if (out.type === "introduce") this.#introduce(now, entry);
        else {
          outbox.event({
            kind: "peer_path",
            name: entry.peerName,
            session: entry.session,
            path: out.path,
            why: out.why,
          });
        }
      }
      const silentAt = entry.heard && entry.path.path.kind === "relay"
        ? Math.max(entry.lastHeard, entry.introducedAt) + SILENT_RELAY_MS
        : undefined;
      const releaseAt = entry.held.length > 0 ? entry.createdAt + HOLD_MS : undefined;
      for (const at of [entry.path.nextTimeout(), entry.reintroduceAt, silentAt, releaseAt]) {
        if (at !== undefined && (next === undefined || at < next)) next = at;
      }
    }
    // A check for gone sessions at least every few seconds while any path is kept.
    if (this.#entries.size > 0 && (next === undefined || next > now + 5_000)) next = now + 5_000;
    this.#options.timers.set("paths", next);
  }
}

const PROBE = MESSAGE_SCHEMAS.peer_probe.code;
const PROBE_OK = MESSAGE_SCHEMAS.peer_probe_ok.code;

/**
 * The session id of a peer datagram (every peer message starts with it,
 * right after the header), or undefined if it is not one of ours.
 */
function sessionOf(bytes: Uint8Array): string | undefined {
  if (
    bytes.length < HEADER_BYTES + 8 || bytes[0] !== MAGIC[0] || bytes[1] !== MAGIC[1] ||
    bytes[2] !== PROTOCOL_VERSION
  ) {
    return undefined;
  }
  return toHex(bytes.subarray(HEADER_BYTES, HEADER_BYTES + 8));
}
