/**
 * The path one peer session's datagrams take, sans-I/O: through the
 * server's relay, or direct to an address found by connectivity checks (ICE,
 * RFC 8445, cut down to what two Switchboard clients need).
 *
 * A session starts on the relay, which always works, and upgrades (as
 * Tailscale does): once the server has introduced the two sides it hands
 * each the other's candidates (server-reflexive, then host addresses) and a
 * probe key. Both send `peer_probe`s, one every 50 ms round-robin over the
 * candidates, for 5 s. Each side answers a verified probe with a
 * `peer_probe_ok` to the probe's source address, naming that address, and
 * sends a probe there too (the source is a peer-reflexive candidate: how a
 * symmetric or rebinding NAT shows the peer). The first verified
 * `peer_probe_ok` wins: its source is the direct path. Probing from both
 * sides within one round trip opens both NATs' filters; a Linux router that
 * took the port for itself (a probe that came before the inside host sent
 * anything) shows up as a new source port, which is learned the same way.
 *
 * On a direct path the side sends a probe every 2 s as a heartbeat (every
 * 0.5 s once one goes unanswered); any datagram of the session from the
 * path's address counts as an answer too. With nothing for 3 s the path is
 * dead and the session goes back to the relay at once; it checks again at
 * once (the lost address first), and both sides ask the server to
 * introduce them again, which also shows the server where their NATs map
 * them now. The controlling side (the one that asked for the session) asks
 * again once a minute while relayed, to try for a direct path again. The reliable channel does
 * not see any of this: it spans path changes, so nothing is lost or
 * repeated.
 *
 * Probes are authenticated with the probe key the server gave both sides
 * over their sealed channels: a tag of 16 bytes, HMAC-SHA256 over the
 * encoded message up to the tag.
 *
 * @module
 */
import { hmacSha256 } from "../crypto/symmetric_state.ts";
import { encodeMessage } from "../wire/codec.ts";
import { type MessageOf, PROBE_TAG_BYTES } from "../wire/messages.ts";
import type { PeerAddress } from "./peer_session.ts";

/** The path a session's datagrams take: the server's relay, or direct between two addresses. */
export type PeerPathState =
  | { readonly kind: "relay" }
  | {
    readonly kind: "direct";
    /** Where the peer is sent to. */
    readonly remote: PeerAddress;
    /** Where the peer sees this side (from its `peer_probe_ok`). */
    readonly local: PeerAddress;
  };

/** Why a path changed. */
export type PathChangeReason = "checked" | "heartbeats_missed";

/** What a {@linkcode PeerPath} asks for. */
export type PeerPathOutput =
  /** Send this datagram directly to `to`. */
  | {
    readonly type: "send";
    readonly to: PeerAddress;
    readonly message: MessageOf<"peer_probe" | "peer_probe_ok">;
  }
  /** Ask the server to introduce the two sides again (to try for a direct path). */
  | { readonly type: "introduce" }
  /** The path changed. */
  | {
    readonly type: "changed";
    readonly path: PeerPathState;
    readonly previous: PeerPathState;
    readonly why: PathChangeReason;
  };

/** The timings of a {@linkcode PeerPath}, ms. */
export interface PeerPathTimings {
  /** Between two probes of a check (ICE's Ta; default 50). */
  probeIntervalMs: number;
  /** How long a check lasts (default 5,000). */
  checkMs: number;
  /** Between heartbeats on a direct path (default 2,000). */
  heartbeatMs: number;
  /** A direct path with no verified answer for this long is dead (default 3,000). */
  trustMs: number;
  /** Between attempts to go direct while relayed, controlling side only (default 60,000). */
  upgradeEveryMs: number;
  /** An introduction starts a check only this long after the last one started (default 30,000). */
  minCheckGapMs: number;
}

/** The default timings. */
export const DEFAULT_PATH_TIMINGS: PeerPathTimings = {
  probeIntervalMs: 50,
  checkMs: 5_000,
  heartbeatMs: 2_000,
  trustMs: 3_000,
  upgradeEveryMs: 60_000,
  minCheckGapMs: 30_000,
};

/** Options of a {@linkcode PeerPath}. */
export interface PeerPathOptions {
  /** The session id. */
  session: string;
  /** True on the side that asked for the session: it asks for upgrades. */
  controlling: boolean;
  /** The first probe nonce (random; then counted up). */
  firstNonce: number;
  /** Timings (defaults: {@linkcode DEFAULT_PATH_TIMINGS}). */
  timings?: Partial<PeerPathTimings>;
}

/** Most candidates checked, the peer-reflexive ones learned from probes included. */
const MAX_CANDIDATES = 16;
/** Probes remembered for matching their answers. */
const MAX_OUTSTANDING = 64;

/**
 * The tag of a probe or probe answer: HMAC-SHA256 with the probe key over
 * the message encoded up to its tag, cut to 16 bytes.
 *
 * @param key the probe key from the server
 * @param message the message (its `tag` is ignored)
 * @returns the 16-byte tag
 */
export function probeTag(
  key: Uint8Array,
  message: MessageOf<"peer_probe" | "peer_probe_ok">,
): Uint8Array {
  const blank = encodeMessage({ ...message, tag: new Uint8Array(PROBE_TAG_BYTES) });
  return hmacSha256(key, blank.subarray(0, blank.length - 2 - PROBE_TAG_BYTES))
    .subarray(0, PROBE_TAG_BYTES);
}

/**
 * One session's path.
 *
 * @example
 * ```ts
 * const path = new PeerPath({ session, controlling: true, firstNonce: 1 });
 * path.introduced(now, probeKey, [{ ip: "203.0.113.2", port: 41000 }]);
 * for (let out = path.poll(); out; out = path.poll()) {} // probes to send
 * path.handleProbeOk(now, from, answer); // verified: path.path is direct
 * ```
 */
export class PeerPath {
  readonly #session: string;
  readonly #controlling: boolean;
  readonly #timings: PeerPathTimings;
  #path: PeerPathState = { kind: "relay" };
  #key: Uint8Array | undefined;
  #candidates: PeerAddress[] = [];
  #nonce: number;
  #outstanding = new Map<number, PeerAddress>();
  /** While checking: when it ends, the next probe and which candidate it goes to. */
  #check: { until: number; next: number; index: number } | undefined;
  /** On a direct path: the next heartbeat and the last verified answer. */
  #heartbeat: { next: number; confirmed: number } | undefined;
  #upgradeAt: number | undefined;
  /** When the last check started. */
  #checkedAt: number | undefined;
  /** The direct path's address before it was lost, if it was. */
  #lastRemote: PeerAddress | undefined;
  #outputs: PeerPathOutput[] = [];
  #closed = false;

  /** @param options the session, the side, the first nonce and the timings */
  constructor(options: PeerPathOptions) {
    this.#session = options.session;
    this.#controlling = options.controlling;
    this.#timings = { ...DEFAULT_PATH_TIMINGS, ...options.timings };
    this.#nonce = options.firstNonce >>> 0;
  }

  /** The current path. */
  get path(): PeerPathState {
    return this.#path;
  }

  /** True while connectivity checks run. */
  get checking(): boolean {
    return this.#check !== undefined;
  }

  /** The best guess at the peer's address while no direct path is verified: the last lost one. */
  get lastRemote(): PeerAddress | undefined {
    return this.#lastRemote;
  }

  /**
   * Counts a datagram of the session that came from an address as a sign
   * of life of the direct path, if it is that path's address: a path that
   * carries traffic is not dropped for want of heartbeat answers.
   *
   * @param now current time, ms
   * @param from where it came from
   */
  heard(now: number, from: PeerAddress): void {
    const path = this.#path;
    if (path.kind === "direct" && sameAddress(path.remote, from)) this.#heartbeat!.confirmed = now;
  }

  /** True once the server has introduced the sides (a probe key is known). */
  get introduced(): boolean {
    return this.#key !== undefined;
  }

  /**
   * Takes an introduction from the server (`introduce_ok` or
   * `introduction`): the probe key and the peer's candidates. Starts a
   * check unless the path is direct already.
   *
   * @param now current time, ms
   * @param probeKey the key for this session's probes
   * @param candidates the peer's candidates, server-reflexive first
   */
  introduce(now: number, probeKey: Uint8Array, candidates: readonly PeerAddress[]): void {
    if (this.#closed) return;
    this.#key = probeKey;
    for (const candidate of candidates) this.#learn(candidate);
    if (this.#path.kind === "direct" || this.#check !== undefined) return;
    // At most one check per `minCheckGapMs`, however often the peer has the
    // server introduce it: candidates name any address, so checks are rationed.
    if (this.#checkedAt !== undefined && now < this.#checkedAt + this.#timings.minCheckGapMs) {
      return;
    }
    this.#startCheck(now);
    this.#upgradeAt = undefined;
    this.onTimeout(now);
  }

  /**
   * Handles a `peer_probe`: a verified one is answered at its source, and
   * the source is checked too (a peer-reflexive candidate).
   *
   * @param now current time, ms
   * @param from its source address
   * @param probe the probe
   * @returns true if it was verified
   */
  handleProbe(now: number, from: PeerAddress, probe: MessageOf<"peer_probe">): boolean {
    if (this.#closed || !this.#verified(probe)) return false;
    // One of this side's own probes come back: a peer's candidate names this
    // very socket (two home LANs with the same addresses and port, or a
    // candidate a stranger made up). Answering it would make a "direct
    // path" to itself, which answers its own heartbeats forever.
    const sentTo = this.#outstanding.get(probe.nonce);
    if (sentTo !== undefined && sameAddress(sentTo, from)) return false;
    const answer = {
      type: "peer_probe_ok",
      session: this.#session,
      nonce: probe.nonce,
      ip: from.ip,
      port: from.port,
      tag: new Uint8Array(PROBE_TAG_BYTES),
    } as const;
    this.#outputs.push({
      type: "send",
      to: from,
      message: { ...answer, tag: probeTag(this.#key!, answer) },
    });
    if (this.#path.kind === "relay") {
      this.#learn(from);
      // A triggered check (ICE section 7.3.1.4): probe the source at once,
      // now that this side's NAT has just let the peer in from there.
      this.#probe(from);
      if (this.#check === undefined) this.#startCheck(now);
    }
    return true;
  }

  /**
   * Handles a `peer_probe_ok`: a verified answer to one of our probes makes
   * its source the direct path (if the path is the relay), or renews the
   * direct path's trust.
   *
   * @param now current time, ms
   * @param from its source address
   * @param answer the answer
   * @returns true if it was verified and answered a probe of ours
   */
  handleProbeOk(now: number, from: PeerAddress, answer: MessageOf<"peer_probe_ok">): boolean {
    if (this.#closed || !this.#verified(answer) || !this.#outstanding.has(answer.nonce)) {
      return false;
    }
    this.#outstanding.delete(answer.nonce);
    const path = this.#path;
    if (path.kind === "direct") {
      if (sameAddress(path.remote, from)) this.#heartbeat!.confirmed = now;
      return true;
    }
    this.#check = undefined;
    this.#upgradeAt = undefined;
    this.#heartbeat = { next: now + this.#timings.heartbeatMs, confirmed: now };
    this.#change({
      kind: "direct",
      remote: { ip: from.ip, port: from.port },
      local: { ip: answer.ip, port: answer.port },
    }, "checked");
    return true;
  }

  /** @returns when `onTimeout` should next be called, or undefined */
  nextTimeout(): number | undefined {
    if (this.#closed) return undefined;
    const times = [
      this.#check?.next,
      this.#check?.until,
      this.#heartbeat?.next,
      this.#heartbeat === undefined ? undefined : this.#heartbeat.confirmed + this.#timings.trustMs,
      this.#upgradeAt,
    ].filter((t): t is number => t !== undefined);
    return times.length === 0 ? undefined : Math.min(...times);
  }

  /**
   * Sends the probes and heartbeats due, ends a check that ran its time,
   * drops a direct path that stopped answering, and asks for upgrades.
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    if (this.#closed) return;
    const check = this.#check;
    if (check !== undefined) {
      if (now >= check.until) {
        this.#check = undefined;
        if (this.#controlling) this.#upgradeAt = now + this.#timings.upgradeEveryMs;
      } else if (now >= check.next && this.#candidates.length > 0) {
        this.#probe(this.#candidates[check.index % this.#candidates.length]);
        check.index++;
        check.next = now + this.#timings.probeIntervalMs;
      } else if (now >= check.next) {
        check.next = now + this.#timings.probeIntervalMs;
      }
    }
    const heartbeat = this.#heartbeat;
    if (heartbeat !== undefined && this.#path.kind === "direct") {
      if (now >= heartbeat.confirmed + this.#timings.trustMs) {
        const lost = this.#path.remote;
        this.#heartbeat = undefined;
        this.#change({ kind: "relay" }, "heartbeats_missed");
        // Check again at once, the lost address first (the NAT may only have
        // forgotten its binding), and have the peer probe too.
        this.#lastRemote = lost;
        this.#learn(lost);
        this.#startCheck(now);
        // Both sides ask: the request also shows the server where this side's
        // NAT maps it now, which the relay needs.
        this.#upgradeAt = now;
        this.#probe(lost);
      } else if (now >= heartbeat.next) {
        this.#probe(this.#path.remote);
        // Unanswered so far: the next one sooner, so a lost datagram or two
        // does not cost the path.
        const unanswered = now - heartbeat.confirmed > this.#timings.heartbeatMs;
        heartbeat.next = now +
          (unanswered ? this.#timings.heartbeatMs / 4 : this.#timings.heartbeatMs);
      }
    }
    if (this.#upgradeAt !== undefined && now >= this.#upgradeAt) {
      this.#upgradeAt = this.#controlling ? now + this.#timings.upgradeEveryMs : undefined;
      this.#outputs.push({ type: "introduce" });
    }
  }

  /**
   * Takes the next output.
   *
   * @returns the next thing to do, or undefined
   */
  poll(): PeerPathOutput | undefined {
    return this.#outputs.shift();
  }

  /** Stops everything: the session ended. */
  close(): void {
    this.#closed = true;
    this.#check = undefined;
    this.#heartbeat = undefined;
    this.#upgradeAt = undefined;
    this.#outputs.length = 0;
  }

  #startCheck(now: number): void {
    this.#check = { until: now + this.#timings.checkMs, next: now, index: 0 };
    this.#checkedAt = now;
  }

  #verified(message: MessageOf<"peer_probe" | "peer_probe_ok">): boolean {
    if (this.#key === undefined || message.session !== this.#session) return false;
    const expected = probeTag(this.#key, message);
    if (message.tag.length !== expected.length) return false;
    let diff = 0;
    for (let i = 0; i < expected.length; i++) diff |= expected[i] ^ message.tag[i];
    return diff === 0;
  }

  /** Adds a candidate; returns true if it was known already. */
  #learn(candidate: PeerAddress): boolean {
    if (this.#candidates.some((c) => sameAddress(c, candidate))) return true;
    if (this.#candidates.length < MAX_CANDIDATES) {
      this.#candidates.push({ ip: candidate.ip, port: candidate.port });
    }
    return false;
  }

  #probe(to: PeerAddress): void {
    const nonce = this.#nonce;
    this.#nonce = (this.#nonce + 1) >>> 0;
    this.#outstanding.set(nonce, to);
    if (this.#outstanding.size > MAX_OUTSTANDING) {
      this.#outstanding.delete(this.#outstanding.keys().next().value!);
    }
    const probe = {
      type: "peer_probe",
      session: this.#session,
      nonce,
      tag: new Uint8Array(PROBE_TAG_BYTES),
    } as const;
    this.#outputs.push({
      type: "send",
      to,
      message: { ...probe, tag: probeTag(this.#key!, probe) },
    });
  }

  #change(path: PeerPathState, why: PathChangeReason): void {
    const previous = this.#path;
    this.#path = path;
    this.#outputs.push({ type: "changed", path, previous, why });
  }
}

/** True if two addresses are the same (an IPv4-mapped address counts as its IPv4 one). */
function sameAddress(a: PeerAddress, b: PeerAddress): boolean {
  return a.port === b.port && plainIp(a.ip) === plainIp(b.ip);
}

function plainIp(ip: string): string {
  return ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip;
}
