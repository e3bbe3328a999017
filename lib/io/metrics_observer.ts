/**
 * The server's metrics: what the driver sees (messages in and out by type,
 * inputs rejected, datagrams dropped by the rate limits, registry writes)
 * and every typed `ServerEvent` the core emits, counted into a
 * {@linkcode MetricsRegistry}, plus gauges read when scraped. The driver
 * calls a {@linkcode ServerObserver} at its receive and send points; this is
 * the one that counts.
 *
 * Request latency is the time from a request's arrival to the first reply
 * with its request id to the same address (a change is answered only once
 * it is durable, so it includes the registry write).
 *
 * @module
 */
import type { Endpoint, ServerEvent } from "../server/server_core.ts";
import type { Message } from "../wire/messages.ts";
import { MetricsRegistry } from "./metrics_registry.ts";

/** What the server driver tells an observer, at its receive and send points. */
export interface ServerObserver {
  /** A valid message arrived and is handled. */
  received(from: Endpoint, message: Message): void;
  /** A datagram or frame was not a valid message. */
  rejected(from: Endpoint, reason: string): void;
  /** A datagram or TCP request was dropped by a per-address rate limit (`message` if it decoded). */
  rateLimited(from: Endpoint, message: Message | undefined): void;
  /** A message was sent. */
  sent(to: Endpoint, message: Message): void;
  /** The core emitted an event. */
  event(event: ServerEvent): void;
  /** The registry was written (or failed to be), taking `seconds`. */
  stored(seconds: number, ok: boolean): void;
}

/** Gauges read at every scrape. */
export interface MetricsGauges {
  /** Names in the registry. */
  registered(): number;
  /** Live sessions (the active list). */
  active(): number;
  /** Sessions that watch presence news. */
  watchers(): number;
  /** Open TCP connections. */
  tcpConnections(): number;
  /** Bytes of stored files on disk. */
  storageBytes(): Promise<number>;
  /** Seconds since the server started. */
  uptimeSeconds(): number;
  /** Counters kept by the core and the driver that no event reports. */
  counters(): {
    presenceResent: number;
    authFailures: number;
    undersized: number;
    tcpRefused: number;
    tcpTimedOut: number;
  };
}

/** Requests whose reply is awaited for the latency histogram, at most. */
const MAX_PENDING = 4096;

/**
 * Counts what a server does, for `/metrics`.
 *
 * @example
 * ```ts
 * const metrics = new MetricsObserver("0.5.0", gauges);
 * const server = await ServerDriver.start({ ...config, observer: metrics });
 * await metrics.render(); // the Prometheus page
 * ```
 */
export class MetricsObserver implements ServerObserver {
  readonly #metrics = new MetricsRegistry();
  /** Arrival times (performance.now()) of requests awaiting a reply, by endpoint and id. */
  readonly #pending = new Map<string, { at: number; type: string }>();
  readonly #gauges: MetricsGauges;
  /** Counters copied from the core and driver, as last copied. */
  readonly #copied = new Map<string, number>();
  /** Bytes stored, as of the last scrape. */
  #storage = 0;

  /**
   * @param version the server's version, for `switchboard_build_info`
   * @param gauges read at every scrape
   */
  constructor(version: string, gauges: MetricsGauges) {
    const m = this.#metrics;
    m.gauge("switchboard_build_info", "The server's version, as a label; always 1");
    m.set("switchboard_build_info", 1, { version });
    m.gauge("switchboard_uptime_seconds", "Seconds since the server started", gauges.uptimeSeconds);
    m.gauge("switchboard_registered_clients", "Names in the registry", gauges.registered);
    m.gauge("switchboard_active_sessions", "Clients online (live sessions)", gauges.active);
    m.gauge("switchboard_presence_watchers", "Sessions watching presence news", gauges.watchers);
    m.gauge("switchboard_tcp_connections", "Open TCP connections", gauges.tcpConnections);
    m.gauge(
      "switchboard_storage_used_bytes",
      "Bytes the stored files and their per-user indexes take on disk",
      () => this.#storage,
    );
    for (
      const [name, help] of [
        ["switchboard_datagrams_received_total", "UDP datagrams received, by message type"],
        ["switchboard_datagrams_sent_total", "UDP datagrams sent, by message type"],
        ["switchboard_frames_received_total", "TCP frames received, by message type"],
        ["switchboard_frames_sent_total", "TCP frames sent, by message type"],
      ]
    ) {
      m.counter(name, `${help} ("invalid" for input that is not a message)`, []);
    }
    m.counter(
      "switchboard_inputs_rejected_total",
      "Datagrams and frames that were not valid messages, by reason",
      [{ reason: "oversized" }, { reason: "not_switchboard" }, { reason: "malformed" }],
    );
    m.counter(
      "switchboard_rate_limited_total",
      "UDP datagrams and TCP requests dropped by the per-address limits",
    );
    m.counter("switchboard_requests_refused_total", "Requests refused, by error code", []);
    m.counter(
      "switchboard_requests_replayed_total",
      "Retransmitted requests answered again from the replay cache, not executed twice",
    );
    m.counter("switchboard_events_total", "Events of the server core, by kind", []);
    m.counter("switchboard_presence_resent_total", "Presence news sent again for want of an ack");
    m.counter(
      "switchboard_auth_failures_total",
      "Requests refused for want of a session or secret",
    );
    m.counter("switchboard_undersized_requests_total", "UDP requests smaller than their reply");
    m.counter("switchboard_tcp_refused_total", "TCP connections refused by the connection limits");
    m.counter("switchboard_tcp_timed_out_total", "TCP connections closed idle or too slow");
    m.counter(
      "switchboard_handshake_failures_total",
      "Failed cryptographic handshakes (always 0: the server has no handshake yet)",
    );
    m.counter(
      "switchboard_relay_bytes_total",
      "Bytes of peer datagrams the server relayed (payloads of relay datagrams sent)",
    );
    m.counter("switchboard_store_write_failures_total", "Registry writes that failed");
    m.histogram(
      "switchboard_request_duration_seconds",
      "From a request's arrival to its reply, by request type",
    );
    m.histogram("switchboard_store_write_duration_seconds", "Registry writes to disk");
    this.#gauges = gauges;
  }

  received(from: Endpoint, message: Message): void {
    this.#metrics.add(inName(from), 1, { type: message.type });
    if (!("reqId" in message)) return;
    if (this.#pending.size >= MAX_PENDING) {
      this.#pending.delete(this.#pending.keys().next().value!);
    }
    this.#pending.set(key(from, message.reqId), { at: performance.now(), type: message.type });
  }

  rejected(from: Endpoint, reason: string): void {
    this.#metrics.add(inName(from), 1, { type: "invalid" });
    this.#metrics.add("switchboard_inputs_rejected_total", 1, { reason: reasonLabel(reason) });
  }

  rateLimited(from: Endpoint, message: Message | undefined): void {
    this.#metrics.add(inName(from), 1, { type: message?.type ?? "invalid" });
    this.#metrics.add("switchboard_rate_limited_total");
  }

  sent(to: Endpoint, message: Message): void {
    const name = to.transport === "udp"
      ? "switchboard_datagrams_sent_total"
      : "switchboard_frames_sent_total";
    this.#metrics.add(name, 1, { type: message.type });
    if (message.type === "relay") {
      this.#metrics.add("switchboard_relay_bytes_total", message.payload.length);
    }
    if (!("reqId" in message)) return;
    const k = key(to, message.reqId);
    const pending = this.#pending.get(k);
    if (pending === undefined) return;
    this.#pending.delete(k);
    this.#metrics.observe(
      "switchboard_request_duration_seconds",
      (performance.now() - pending.at) / 1000,
      { type: pending.type },
    );
  }

  event(event: ServerEvent): void {
    this.#metrics.add("switchboard_events_total", 1, { kind: event.kind });
    if (event.kind === "refused") {
      this.#metrics.add("switchboard_requests_refused_total", 1, { code: event.code });
    } else if (event.kind === "replayed") {
      this.#metrics.add("switchboard_requests_replayed_total");
    }
  }

  stored(seconds: number, ok: boolean): void {
    this.#metrics.observe("switchboard_store_write_duration_seconds", seconds);
    if (!ok) this.#metrics.add("switchboard_store_write_failures_total");
  }

  /**
   * The metrics in the Prometheus text format.
   *
   * @returns the page for `/metrics`
   */
  async render(): Promise<string> {
    this.#storage = await this.#gauges.storageBytes();
    const counters = this.#gauges.counters();
    const m = this.#metrics;
    // Counters the core and driver keep themselves: brought up to date here.
    for (
      const [name, value] of [
        ["switchboard_presence_resent_total", counters.presenceResent],
        ["switchboard_auth_failures_total", counters.authFailures],
        ["switchboard_undersized_requests_total", counters.undersized],
        ["switchboard_tcp_refused_total", counters.tcpRefused],
        ["switchboard_tcp_timed_out_total", counters.tcpTimedOut],
      ] as const
    ) {
      const seen = this.#copied.get(name) ?? 0;
      if (value > seen) m.add(name, value - seen);
      this.#copied.set(name, Math.max(seen, value));
    }
    return m.render();
  }
}

function inName(from: Endpoint): string {
  return from.transport === "udp"
    ? "switchboard_datagrams_received_total"
    : "switchboard_frames_received_total";
}

function key(endpoint: Endpoint, reqId: number): string {
  return `${endpoint.transport} ${endpoint.address} ${endpoint.port} ${endpoint.connId} ${reqId}`;
}

/** A small fixed set of reasons, whatever the decoder's words. */
function reasonLabel(reason: string): string {
  if (/exceeds|too large|too long/i.test(reason)) return "oversized";
  if (/not a Switchboard/i.test(reason)) return "not_switchboard";
  return "malformed";
}
