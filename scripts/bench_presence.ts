/**
 * Measures Switchboard's presence path with a realistic population: it
 * registers N identities (10,000 by default), keeps M of them online (1,000)
 * by heartbeats within the lease, then measures `lookup` and `heartbeat`
 * round trips per second against the real server, and the same datagrams
 * against a bare UDP echo server in the same run, and reports the ratios. It
 * also reads the server's resident memory (and, through the V8 inspector,
 * its live heap right after a forced full GC) at start, after the
 * registrations and after the logins, and reports bytes per registered and
 * per active client. Both servers run as separate processes; this process is
 * the load generator. Requests to Switchboard go sealed (protocol version 3,
 * one handshake per socket); the echo server gets the same requests in clear.
 *
 * Usage: `deno task bench:presence [--rounds N] [--concurrency K] [--registered N] [--active M]`
 *
 * See docs/BENCHMARKS.md ("Presence") for what each figure means.
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { join } from "@std/path";
import { DEFAULT_RETRY_POLICY, retryDelay } from "../lib/client/retry_policy.ts";
import { toHex } from "../lib/hex.ts";
import { cryptoRandom } from "../lib/random.ts";
import { generateKeyPair } from "../lib/crypto/key_pair.ts";
import { decodeMessage, encodeMessage } from "../lib/wire/codec.ts";
import type { Message, MessageType, Request } from "../lib/wire/messages.ts";
import type { ServerGuard } from "../lib/client/server_guard.ts";
import { TRANSPORT_OVERHEAD } from "../lib/crypto/secure_datagram.ts";
import { benchGuard, serverKeyIn } from "./_wire_client.ts";
import {
  integerFlag,
  rejectUnknownFlags,
  requireValues,
  secondsFlag,
  UsageError,
} from "../lib/cli/usage_error.ts";
import {
  Cleanup,
  countRegistered,
  DECLARED_TCP_PORT,
  flagsOrExitCode,
  HOST,
  percentile,
  RECEIVE_BUFFER_BYTES,
  replyText,
  startServers,
  stopAllProcesses,
  stopProcess,
  table,
} from "./_bench_support.ts";

const HELP = `bench_presence: Switchboard lookups/s and heartbeats/s with many registered and active
clients, against a bare UDP echo server, and the server's memory per client

Usage: deno task bench:presence [flags]

Flags:
  --rounds N             measure lookups and heartbeats, echo then Switchboard,
                         N times, alternating (default 3)
  --concurrency K        simulated clients (sockets) with one request in flight each,
                         for the logins and the measurements (default 32)
  --registered N         identities to register (default 10000)
  --active M             of those, how many log in and stay online (default 1000)
  --seconds S            measured seconds per operation, target and round (default 3)
  --setup-concurrency K  registrations in flight during set-up (default 48)
  --no-gc                do not force a full GC in the server before each memory
                         sample (by default the server runs with --inspect on
                         127.0.0.1 and the bench asks its V8 for the GC and for
                         the heap in use; without it RSS mostly shows garbage)
  -h, --help             show this help

Both servers run as separate processes on 127.0.0.1 with ports chosen at run
time; the Switchboard server runs with --lease 60 and a fresh data directory
under TMPDIR, removed at the end. Memory is the server's VmRSS, from
/proc/PID/status under --allow-all, else from \`ps -o rss= -p PID\`.`;

/** The server's session lease, s: long enough for the whole set-up. */
const LEASE_SECONDS = 60;
/** A session not renewed for this long is renewed before the next phase. */
const RENEW_AFTER_MS = 20_000;
/** Warm-up load before each measured window, not counted. */
const WARMUP_MS = 500;
/** Stateless `hello` requests sent before the first memory sample, to warm the server up. */
const WARMUP_HELLOS = 2000;
/** Quiet time before memory samples, and the samples taken (their median is reported). */
const IDLE_BEFORE_SAMPLE_MS = 1000;
const MEMORY_SAMPLES = 5;
const MEMORY_SAMPLE_GAP_MS = 200;
/** How long the server's V8 inspector gets to collect garbage and report its heap. */
const INSPECTOR_TIMEOUT_MS = 10_000;
/** How many error texts a phase keeps for the summary. */
const ERROR_SAMPLES = 3;

interface Flags {
  rounds: number;
  concurrency: number;
  registered: number;
  active: number;
  seconds: number;
  setupConcurrency: number;
  gc: boolean;
}

type Target = "echo" | "switchboard";
type Operation = "lookup" | "heartbeat";

/** One registered identity: its name, its client id and, once registered, its key. */
interface Identity {
  readonly name: string;
  readonly clientId: string;
}

/** One online session, owned by one load socket. */
interface ActiveSession {
  readonly identity: Identity;
  readonly token: Uint8Array;
  renewedAt: number;
}

interface Counters {
  done: number;
  latencies: number[];
  retransmissions: number;
  errors: number;
  errorSamples: string[];
}

/** One measured phase: one operation against one target in one round. */
interface Phase {
  op: Operation;
  target: Target;
  round: number;
  measuredMs: number;
  counters: Counters;
}

interface OpSummary {
  op: Operation;
  target: Target;
  perSecond: number;
  p50: number;
  p99: number;
  max: number;
  retransmissions: number;
  errors: number;
  errorSamples: string[];
  requestBytes: number;
  replyBytes: number;
}

interface MemoryPoint {
  label: string;
  /** Median VmRSS of the samples, bytes. */
  rss: number;
  min: number;
  max: number;
  /** V8 heap in use right after a forced full GC (objects plus ArrayBuffer contents), bytes. */
  heap?: number;
}

function newCounters(): Counters {
  return { done: 0, latencies: [], retransmissions: 0, errors: 0, errorSamples: [] };
}

function failed(counters: Counters, what: string): void {
  counters.errors++;
  if (counters.errorSamples.length < ERROR_SAMPLES) counters.errorSamples.push(what);
}

// ---------------------------------------------------------------- flags

function parseFlags(args: string[]): Flags | "help" {
  const names = [
    "rounds",
    "concurrency",
    "registered",
    "active",
    "seconds",
    "setup-concurrency",
  ] as const;
  const parsed = parseArgs(args, {
    string: [...names],
    boolean: ["help", "gc"],
    negatable: ["gc"],
    alias: { h: "help" },
    default: {
      rounds: "3",
      concurrency: "32",
      registered: "10000",
      active: "1000",
      seconds: "3",
      "setup-concurrency": "48",
      gc: true,
    },
  });
  rejectUnknownFlags(parsed, [...names, "gc", "help", "h"]);
  if (parsed.help) return "help";
  requireValues(args, parsed, names);
  const flags: Flags = {
    rounds: integerFlag("--rounds", parsed.rounds, { min: 1, max: 100 }),
    concurrency: integerFlag("--concurrency", parsed.concurrency, { min: 1, max: 1024 }),
    registered: integerFlag("--registered", parsed.registered, { min: 1, max: 1_000_000 }),
    active: integerFlag("--active", parsed.active, { min: 1, max: 1_000_000 }),
    seconds: secondsFlag("--seconds", parsed.seconds) / 1000,
    setupConcurrency: integerFlag("--setup-concurrency", parsed["setup-concurrency"], {
      min: 1,
      max: 1024,
    }),
    gc: parsed.gc,
  };
  if (flags.active > flags.registered) {
    throw new UsageError(
      `--active (${flags.active}) cannot exceed --registered (${flags.registered})`,
    );
  }
  if (flags.concurrency > flags.active) {
    throw new UsageError(
      `--concurrency (${flags.concurrency}) cannot exceed --active (${flags.active}): ` +
        "every simulated client needs at least one session",
    );
  }
  return flags;
}

// ---------------------------------------------------------------- memory

/** Where the server's memory figures come from, once known. */
let memorySource: "/proc/PID/status" | "ps -o rss" | undefined;

/**
 * Reads a `/proc/PID/status` field in kB, as bytes. Deno lets a process read
 * another's `/proc/PID/*` only under --allow-all; without it, VmRSS comes from
 * `ps -o rss= -p PID` (the same kernel counter) and VmHWM is not available.
 * Returns undefined where neither works (no /proc and no ps).
 */
async function procStatusBytes(pid: number, field: "VmRSS" | "VmHWM"): Promise<number | undefined> {
  if (memorySource !== "ps -o rss") {
    try {
      const text = await Deno.readTextFile(`/proc/${pid}/status`);
      const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(text);
      if (match !== null) {
        memorySource = "/proc/PID/status";
        return Number(match[1]) * 1024;
      }
    } catch (error) {
      const denied = error instanceof Deno.errors.NotCapable ||
        error instanceof Deno.errors.PermissionDenied;
      if (!denied) return undefined;
    }
  }
  if (field !== "VmRSS") return undefined;
  try {
    const { success, stdout } = await new Deno.Command("ps", {
      args: ["-o", "rss=", "-p", String(pid)],
      stdout: "piped",
      stderr: "null",
    }).output();
    const kb = Number(new TextDecoder().decode(stdout).trim());
    if (!success || !Number.isFinite(kb) || kb <= 0) return undefined;
    memorySource = "ps -o rss";
    return kb * 1024;
  } catch {
    return undefined;
  }
}

/**
 * Asks the server's V8, through its inspector, for a full garbage collection,
 * then for its heap usage. Returns the bytes in use: JS objects plus
 * ArrayBuffer contents.
 */
async function collectGarbage(inspectorUrl: string): Promise<number> {
  const socket = new WebSocket(inspectorUrl);
  const replies = new Map<number, (result: Record<string, number>) => void>();
  let nextId = 1;
  const { promise: opened, resolve: open, reject: fail } = Promise.withResolvers<void>();
  socket.onopen = () => open();
  socket.onerror = () =>
    fail(new Error(`cannot reach the server's V8 inspector at ${inspectorUrl}`));
  socket.onmessage = (event) => {
    const message = JSON.parse(String(event.data));
    replies.get(message.id)?.(message.result ?? {});
  };
  const call = (method: string) => {
    const id = nextId++;
    const { promise, resolve } = Promise.withResolvers<Record<string, number>>();
    replies.set(id, resolve);
    socket.send(JSON.stringify({ id, method }));
    return promise;
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error("the server's V8 inspector did not answer in time")),
      INSPECTOR_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([
      (async () => {
        await opened;
        await call("HeapProfiler.collectGarbage");
        const usage = await call("Runtime.getHeapUsage");
        return (usage.usedSize ?? 0) + (usage.backingStorageSize ?? 0);
      })(),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
    const { promise: closed, resolve: onClose } = Promise.withResolvers<void>();
    socket.onclose = () => onClose();
    socket.onerror = null;
    if (socket.readyState === WebSocket.CLOSED) onClose();
    else socket.close();
    await closed;
  }
}

/**
 * Forces a full GC in the server when its inspector is on, waits a quiet
 * second, then takes a few RSS samples and keeps their median.
 */
async function sampleMemory(
  pid: number,
  label: string,
  inspectorUrl: string | undefined,
): Promise<MemoryPoint | undefined> {
  const heap = inspectorUrl === undefined ? undefined : await collectGarbage(inspectorUrl);
  await sleep(IDLE_BEFORE_SAMPLE_MS);
  const samples: number[] = [];
  for (let i = 0; i < MEMORY_SAMPLES; i++) {
    if (i > 0) await sleep(MEMORY_SAMPLE_GAP_MS);
    const rss = await procStatusBytes(pid, "VmRSS");
    if (rss === undefined) return undefined;
    samples.push(rss);
  }
  samples.sort((a, b) => a - b);
  return {
    label,
    rss: samples[Math.floor(samples.length / 2)],
    min: samples[0],
    max: samples[samples.length - 1],
    heap,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------- load

/**
 * One simulated client socket with one request in flight at a time. Replies
 * are matched to the waiting request by reqId; a lost datagram is sent again
 * on the real client schedule (500 ms, doubling, jitter).
 */
class LoadSocket {
  #socket: Deno.DatagramConn;
  #waiting = new Map<number, (message: Message | "closed") => void>();
  #nextReqId = Math.floor(cryptoRandom.next() * 0x1_0000_0000);
  #closed = false;
  #loop: Promise<void>;
  /** The sessions this socket logged in and uses as the requester. */
  readonly sessions: ActiveSession[] = [];
  /** Seals what goes to the Switchboard server's port (version 3); the echo server's is clear. */
  sealed: { port: number; guard: ServerGuard } | undefined;

  constructor() {
    this.#socket = Deno.listenDatagram({ transport: "udp", hostname: HOST, port: 0 });
    this.#loop = this.#receiveLoop();
  }

  get localPort(): number {
    return (this.#socket.addr as Deno.NetAddr).port;
  }

  takeReqId(): number {
    const id = this.#nextReqId;
    this.#nextReqId = (this.#nextReqId + 1) >>> 0;
    return id;
  }

  async #receiveLoop(): Promise<void> {
    const buffer = new Uint8Array(RECEIVE_BUFFER_BYTES);
    while (!this.#closed) {
      let data: Uint8Array;
      let from: Deno.Addr;
      try {
        [data, from] = await this.#socket.receive(buffer);
      } catch (error) {
        // ICMP errors from earlier sends: the socket itself is fine.
        if (error instanceof Deno.errors.ConnectionRefused) continue;
        if (error instanceof Deno.errors.ConnectionReset) continue;
        return;
      }
      for (const message of this.#open(data.slice(), (from as Deno.NetAddr).port)) {
        if (!("reqId" in message)) continue; // such as session_ended at shutdown
        const waiter = this.#waiting.get(message.reqId);
        if (waiter === undefined) continue; // a late reply to a retransmission
        this.#waiting.delete(message.reqId);
        waiter(message);
      }
    }
  }

  /** The messages in a datagram: through the guard from the server, else in clear. */
  #open(data: Uint8Array, port: number): Message[] {
    const sealed = this.sealed;
    if (sealed !== undefined && port === sealed.port) {
      const input = sealed.guard.incoming(data, performance.now());
      for (const bytes of input.send) this.#send(bytes, port);
      return input.messages;
    }
    try {
      return [decodeMessage(data)];
    } catch {
      return []; // not a Switchboard message: ignore it, as a client does
    }
  }

  #send(bytes: Uint8Array, port: number): Promise<unknown> {
    return this.#socket.send(bytes, { transport: "udp", hostname: HOST, port }).catch(() => 0);
  }

  /**
   * Sends one request and waits for the message that answers its reqId.
   *
   * @returns the reply, or a string saying why there is none
   */
  async request(port: number, request: Request, counters: Counters): Promise<Message | string> {
    const guard = this.sealed?.port === port ? this.sealed.guard : undefined;
    const clear = guard === undefined ? encodeMessage(request) : undefined;
    const { promise, resolve } = Promise.withResolvers<Message | "closed">();
    this.#waiting.set(request.reqId, resolve);
    const start = performance.now();
    try {
      for (let attempt = 0;; attempt++) {
        if (this.#closed) return "socket closed";
        if (attempt > 0) counters.retransmissions++;
        const datagrams = clear !== undefined
          ? [clear]
          : guard!.outgoing(request, performance.now(), attempt + 1);
        for (const bytes of datagrams) await this.#send(bytes, port);
        const left = DEFAULT_RETRY_POLICY.giveUpMs - (performance.now() - start);
        if (left <= 0) return `no reply after ${attempt + 1} attempts`;
        const wait = Math.min(retryDelay(attempt, cryptoRandom, DEFAULT_RETRY_POLICY), left);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const reply = await Promise.race([
          promise,
          new Promise<undefined>((done) => {
            timer = setTimeout(() => done(undefined), wait);
          }),
        ]);
        clearTimeout(timer);
        if (reply === "closed") return "socket closed";
        if (reply !== undefined) return reply;
      }
    } finally {
      this.#waiting.delete(request.reqId);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const waiter of this.#waiting.values()) waiter("closed");
    this.#waiting.clear();
    try {
      this.#socket.close();
    } catch {
      // already closed
    }
    await this.#loop;
  }
}

/** Thrown by set-up steps that cannot go on; main prints its message on one line. */
class SetupError extends Error {}

/** Sends stateless `hello` requests, so that the first memory sample is of a warm server. */
async function warmUp(sockets: LoadSocket[], port: number): Promise<void> {
  let sent = 0;
  const counters = newCounters();
  const clientId = toHex(cryptoRandom.bytes(8));
  await Promise.all(sockets.map(async (socket) => {
    while (sent < WARMUP_HELLOS) {
      sent++;
      const reply = await socket.request(
        port,
        { type: "hello", reqId: socket.takeReqId(), client: clientId },
        counters,
      );
      if (typeof reply === "string" || reply.type !== "hello_ok") {
        throw new SetupError(`hello during warm-up: ${replyText(reply)}`);
      }
    }
  }));
}

/**
 * Registers every identity, each with its own client id, one per socket at a
 * time, and logs each out as soon as it is registered: the identity stays in
 * the registry, offline. Returns the register latencies and the wall time.
 */
async function registerAll(
  sockets: LoadSocket[],
  port: number,
  identities: Identity[],
  interrupted: () => boolean,
): Promise<{ ms: number; counters: Counters }> {
  const counters = newCounters();
  let next = 0;
  let failure: string | undefined;
  const start = performance.now();
  await Promise.all(sockets.map(async (socket) => {
    while (next < identities.length && failure === undefined && !interrupted()) {
      const identity = identities[next++];
      const sentAt = performance.now();
      const registered = await socket.request(port, {
        type: "register",
        reqId: socket.takeReqId(),
        client: identity.clientId,
        name: identity.name,
        udpPort: socket.localPort,
        tcpPort: DECLARED_TCP_PORT,
      }, counters);
      if (typeof registered === "string" || registered.type !== "register_ok") {
        failure ??= `register "${identity.name}": ${replyText(registered)}`;
        return;
      }
      counters.latencies.push(performance.now() - sentAt);
      counters.done++;
      const loggedOut = await socket.request(port, {
        type: "logout",
        reqId: socket.takeReqId(),
        client: identity.clientId,
        token: registered.token,
      }, counters);
      if (typeof loggedOut === "string" || loggedOut.type !== "logout_ok") {
        failure ??= `logout "${identity.name}": ${replyText(loggedOut)}`;
        return;
      }
    }
  }));
  if (failure !== undefined) throw new SetupError(failure);
  return { ms: performance.now() - start, counters };
}

/**
 * Logs the chosen identities in with their keys: session i belongs to socket
 * i mod K, which logs it in (so the server records that socket's address) and
 * later uses its token.
 */
async function loginAll(
  sockets: LoadSocket[],
  port: number,
  chosen: Identity[],
  interrupted: () => boolean,
): Promise<{ ms: number; counters: Counters }> {
  const counters = newCounters();
  let failure: string | undefined;
  const start = performance.now();
  await Promise.all(sockets.map(async (socket, index) => {
    for (
      let i = index;
      i < chosen.length && failure === undefined && !interrupted();
      i += sockets.length
    ) {
      const identity = chosen[i];
      const sentAt = performance.now();
      const reply = await socket.request(port, {
        type: "login",
        reqId: socket.takeReqId(),
        client: identity.clientId,
        name: identity.name,
        secret: new Uint8Array(0),
        udpPort: socket.localPort,
        tcpPort: DECLARED_TCP_PORT,
      }, counters);
      if (typeof reply === "string" || reply.type !== "login_ok") {
        failure ??= `login "${identity.name}": ${replyText(reply)}`;
        return;
      }
      counters.latencies.push(performance.now() - sentAt);
      counters.done++;
      socket.sessions.push({ identity, token: reply.token, renewedAt: performance.now() });
    }
  }));
  if (failure !== undefined) throw new SetupError(failure);
  return { ms: performance.now() - start, counters };
}

/** Heartbeats every session not renewed in the last RENEW_AFTER_MS, so none reaches its lease. */
async function renewStale(sockets: LoadSocket[], port: number): Promise<void> {
  const counters = newCounters();
  await Promise.all(sockets.map(async (socket) => {
    for (const session of socket.sessions) {
      if (performance.now() - session.renewedAt < RENEW_AFTER_MS) continue;
      const reply = await socket.request(port, heartbeat(socket, session), counters);
      if (typeof reply === "string" || reply.type !== "heartbeat_ok") {
        throw new SetupError(
          `heartbeat for "${session.identity.name}" to keep it online: ${replyText(reply)}`,
        );
      }
      session.renewedAt = performance.now();
    }
  }));
}

function heartbeat(socket: LoadSocket, session: ActiveSession): Request {
  return {
    type: "heartbeat",
    reqId: socket.takeReqId(),
    client: session.identity.clientId,
    token: session.token,
  };
}

function lookup(socket: LoadSocket, session: ActiveSession, name: string): Request {
  return {
    type: "lookup",
    reqId: socket.takeReqId(),
    client: session.identity.clientId,
    token: session.token,
    name,
    nonce: new Uint8Array(0),
  };
}

/** Asks the server how many sessions are online (the `total` of a `list` page). */
async function onlineCount(socket: LoadSocket, port: number): Promise<number> {
  const session = socket.sessions[0];
  const reply = await socket.request(port, {
    type: "list",
    reqId: socket.takeReqId(),
    client: session.identity.clientId,
    token: session.token,
    after: "",
  }, newCounters());
  if (typeof reply === "string" || reply.type !== "list_page") {
    throw new SetupError(`list: ${replyText(reply)}`);
  }
  return reply.total;
}

/**
 * Runs one measured phase: every socket loops, each time taking one of its
 * own sessions at random and sending a heartbeat for it, or a lookup of a
 * random online name. Against the echo server the same datagrams go out and
 * their echoes are awaited and decoded the same way.
 */
async function runPhase(
  op: Operation,
  target: Target,
  port: number,
  sockets: LoadSocket[],
  onlineNames: string[],
  flags: Flags,
  round: number,
  interrupted: () => boolean,
): Promise<Phase> {
  const counters = newCounters();
  const measureFrom = performance.now() + WARMUP_MS;
  const measureTo = measureFrom + flags.seconds * 1000;
  const expected: MessageType = target === "echo" ? op : `${op}_ok`;
  await Promise.all(sockets.map(async (socket) => {
    while (performance.now() < measureTo && !interrupted()) {
      const session = socket.sessions[Math.floor(Math.random() * socket.sessions.length)];
      const request = op === "heartbeat"
        ? heartbeat(socket, session)
        : lookup(socket, session, onlineNames[Math.floor(Math.random() * onlineNames.length)]);
      const sentAt = performance.now();
      const reply = await socket.request(port, request, counters);
      const doneAt = performance.now();
      if (reply === "socket closed") return;
      if (typeof reply === "string" || reply.type !== expected) {
        if (!interrupted()) failed(counters, `${op}: ${replyText(reply)}`);
        continue;
      }
      if (target === "switchboard" && op === "heartbeat") session.renewedAt = doneAt;
      if (doneAt < measureFrom || doneAt >= measureTo) continue;
      counters.done++;
      counters.latencies.push(doneAt - sentAt);
    }
  }));
  return { op, target, round, measuredMs: measureTo - measureFrom, counters };
}

// ---------------------------------------------------------------- figures

function summarize(
  phases: Phase[],
  op: Operation,
  target: Target,
  sizes: Record<Operation, { request: number; reply: number }>,
): OpSummary {
  const mine = phases.filter((p) => p.op === op && p.target === target);
  const latencies = mine.flatMap((p) => p.counters.latencies).sort((a, b) => a - b);
  const total = (pick: (c: Counters) => number) =>
    mine.reduce((sum, p) => sum + pick(p.counters), 0);
  const seconds = mine.reduce((sum, p) => sum + p.measuredMs, 0) / 1000;
  return {
    op,
    target,
    perSecond: seconds === 0 ? 0 : total((c) => c.done) / seconds,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    max: latencies.length === 0 ? 0 : latencies[latencies.length - 1],
    retransmissions: total((c) => c.retransmissions),
    errors: total((c) => c.errors),
    errorSamples: mine.flatMap((p) => p.counters.errorSamples).slice(0, ERROR_SAMPLES),
    requestBytes: sizes[op].request,
    replyBytes: target === "echo" ? sizes[op].request : sizes[op].reply,
  };
}

function rate(phase: Phase | undefined): number {
  return phase === undefined ? 0 : phase.counters.done / (phase.measuredMs / 1000);
}

function ratio(a: number, b: number): number {
  return b === 0 ? 0 : a / b;
}

/** The encoded sizes of the datagrams each operation sends and gets back. */
function datagramSizes(name: string): Record<Operation, { request: number; reply: number }> {
  const token = new Uint8Array(16);
  const client = "0123456789abcdef";
  const size = (message: Message) => encodeMessage(message).length;
  return {
    lookup: {
      request: size({ type: "lookup", reqId: 1, client, token, name, nonce: new Uint8Array(0) }),
      reply: size({
        type: "lookup_ok",
        reqId: 1,
        name,
        ip: HOST,
        udpPort: 40000,
        tcpPort: DECLARED_TCP_PORT,
        onlineMs: 12345,
        key: new Uint8Array(32),
        nonce: new Uint8Array(16),
        psk: new Uint8Array(32),
      }),
    },
    heartbeat: {
      request: size({ type: "heartbeat", reqId: 1, client, token }),
      reply: size({ type: "heartbeat_ok", reqId: 1 }),
    },
  };
}

const MIB = 1024 * 1024;

function mib(bytes: number): string {
  return (bytes / MIB).toFixed(1);
}

function machineLine(): string {
  let kernel = "";
  try {
    kernel = `, kernel ${Deno.osRelease()}`;
  } catch {
    // no --allow-sys: leave the kernel out
  }
  return `machine: ${Deno.build.os} ${Deno.build.arch}${kernel}, ` +
    `${navigator.hardwareConcurrency} logical CPUs, Deno ${Deno.version.deno} (V8 ${Deno.version.v8})`;
}

interface Report {
  flags: Flags;
  register: { ms: number; counters: Counters };
  login: { ms: number; counters: Counters };
  phases: Phase[];
  sizes: Record<Operation, { request: number; reply: number }>;
  memory: (MemoryPoint | undefined)[];
  peakRss: number | undefined;
  onlineBefore: number;
  onlineAfter: number;
  registryOnDisk: number | undefined;
  serverExitCode: number | null;
  dataDir: string;
}

function printReport(r: Report): void {
  const { flags } = r;
  const out: string[] = [];
  out.push(
    "Switchboard presence bench: lookups and heartbeats over loopback UDP vs a bare UDP echo",
  );
  out.push(machineLine());
  out.push(
    `population: ${flags.registered} registered (each its own client id), ${flags.active} ` +
      `online (lease ${LEASE_SECONDS} s, renewed by heartbeats)`,
  );
  out.push(
    `load: ${flags.concurrency} concurrent clients (one socket and one request in flight each, ` +
      `~${Math.round(flags.active / flags.concurrency)} sessions per socket), ` +
      `${WARMUP_MS / 1000} s warm-up + ${flags.seconds} s measured per operation and target, ` +
      `${flags.rounds} round(s)`,
  );
  out.push(`registry: written to ${r.dataDir} (set TMPDIR to measure another disk)`);
  out.push("");

  const setupRow = (
    what: string,
    s: { ms: number; counters: Counters },
    inFlight: number,
  ) => {
    const sorted = [...s.counters.latencies].sort((a, b) => a - b);
    return [
      what,
      String(s.counters.done),
      String(inFlight),
      (s.ms / 1000).toFixed(2),
      (s.counters.done / (s.ms / 1000)).toFixed(1),
      percentile(sorted, 0.5).toFixed(2),
      percentile(sorted, 0.99).toFixed(2),
      String(s.counters.retransmissions),
    ];
  };
  out.push(
    ...table(
      ["set-up", "count", "in flight", "seconds", "per second", "p50 ms", "p99 ms", "retx"],
      [
        setupRow("register (+ logout)", r.register, flags.setupConcurrency),
        setupRow("login", r.login, flags.concurrency),
      ],
    ),
  );
  out.push(
    "(a register is answered only after registrations.json is fsynced; seconds and per second",
    " include the logout that follows each register; p50/p99 are of the register alone)",
  );
  out.push("");

  const summaries: OpSummary[] = [];
  for (const op of ["lookup", "heartbeat"] as const) {
    for (const target of ["echo", "switchboard"] as const) {
      summaries.push(summarize(r.phases, op, target, r.sizes));
    }
  }
  const ratios: Record<Operation, number> = {
    lookup: ratio(summaries[1].perSecond, summaries[0].perSecond),
    heartbeat: ratio(summaries[3].perSecond, summaries[2].perSecond),
  };
  out.push(
    ...table(
      [
        "operation",
        "target",
        "bytes out/back",
        "round trips/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "retx",
        "errors",
        "ratio",
      ],
      summaries.map((s) => [
        s.op,
        s.target,
        `${s.requestBytes}/${s.replyBytes}`,
        s.perSecond.toFixed(1),
        s.p50.toFixed(2),
        s.p99.toFixed(2),
        s.max.toFixed(2),
        String(s.retransmissions),
        String(s.errors),
        s.target === "switchboard" ? ratios[s.op].toFixed(3) : "",
      ]),
      { leftColumns: 2 },
    ),
  );
  out.push(
    `(bytes are the messages; to Switchboard each goes sealed, ${TRANSPORT_OVERHEAD} bytes more ` +
      "each way, version 3)",
  );
  if (flags.rounds > 1) {
    for (const op of ["lookup", "heartbeat"] as const) {
      const perRound: string[] = [];
      for (let round = 1; round <= flags.rounds; round++) {
        const pick = (target: Target) =>
          r.phases.find((p) => p.op === op && p.target === target && p.round === round);
        perRound.push(ratio(rate(pick("switchboard")), rate(pick("echo"))).toFixed(3));
      }
      out.push(`${op} ratio per round: ${perRound.join(", ")}`);
    }
  }
  out.push(
    `online: ${r.onlineBefore} before the load phases, ${r.onlineAfter} after ` +
      `(of ${flags.active}); registry on disk after the run: ${
        r.registryOnDisk ?? "unreadable"
      } names`,
  );
  for (const s of summaries) {
    for (const sample of s.errorSamples) out.push(`${s.target} ${s.op} error: ${sample}`);
  }
  out.push("");

  const [start, registered, active, after] = r.memory;
  if (start === undefined || registered === undefined || active === undefined) {
    out.push("memory: not measured (needs /proc/PID/status or ps)");
  } else {
    const gc = start.heap !== undefined;
    out.push(
      `memory: server VmRSS (from ${memorySource}), median of ${MEMORY_SAMPLES} samples ` +
        `${MEMORY_SAMPLE_GAP_MS} ms apart after ${IDLE_BEFORE_SAMPLE_MS / 1000} s idle` +
        (gc ? ", each point right after a full GC forced through the V8 inspector" : ""),
    );
    const points = [start, registered, active, after].filter((p): p is MemoryPoint =>
      p !== undefined
    );
    out.push(
      ...table(
        ["point", "RSS MiB", "samples min-max MiB", ...(gc ? ["V8 heap in use MiB"] : [])],
        points.map((p) => [
          p.label,
          mib(p.rss),
          `${mib(p.min)}-${mib(p.max)}`,
          ...(gc ? [mib(p.heap ?? 0)] : []),
        ]),
      ),
    );
    if (r.peakRss !== undefined) out.push(`peak RSS (VmHWM) over the run: ${mib(r.peakRss)} MiB`);
    const per = (from: number, to: number, count: number) => ((to - from) / count).toFixed(0);
    const heapPer = (from: MemoryPoint, to: MemoryPoint, count: number) =>
      gc ? `, V8 heap ${per(from.heap ?? 0, to.heap ?? 0, count)} bytes` : "";
    out.push(
      `per registered client: RSS ${per(start.rss, registered.rss, flags.registered)} bytes` +
        `${heapPer(start, registered, flags.registered)} ` +
        `((at ${flags.registered} registered - at start) / ${flags.registered})`,
    );
    out.push(
      `per active client:     RSS ${per(registered.rss, active.rss, flags.active)} bytes` +
        `${heapPer(registered, active, flags.active)} ` +
        `((at ${flags.active} active - at 0 active) / ${flags.active})`,
    );
    out.push(
      gc
        ? "(the V8 heap after a full GC is the live data; RSS also holds freed pages V8 or the\n" +
          " allocator has not returned yet, so RSS per client is an upper bound)"
        : "(no forced GC (--no-gc): RSS still holds the garbage of the phase before, often\n" +
          " tens of MiB, so these figures are GC noise more than data; see --help)",
    );
  }
  out.push("");
  out.push(
    `ratio lookup: switchboard/echo = ${ratios.lookup.toFixed(3)}; ` +
      `ratio heartbeat: switchboard/echo = ${ratios.heartbeat.toFixed(3)}`,
  );
  if (r.serverExitCode !== 0) {
    out.push(`warning: the Switchboard server exited with code ${r.serverExitCode} on SIGINT`);
  }
  console.log(out.join("\n"));
}

// ---------------------------------------------------------------- main

async function main(args: string[]): Promise<number> {
  const flags = flagsOrExitCode(() => parseFlags(args), HELP);
  if (typeof flags === "number") return flags;

  const cleanup = new Cleanup();
  const isInterrupted = () => cleanup.interrupted;
  const status = (text: string) => console.error(text);
  let serverGone: string | undefined;
  try {
    const tmp = await Deno.makeTempDir({ prefix: "switchboard-bench-presence-" }).catch(
      (error) => {
        throw new Error(`cannot make a temp directory (TMPDIR): ${(error as Error).message}`);
      },
    );
    cleanup.add(() => Deno.remove(tmp, { recursive: true }));
    const dataDir = join(tmp, "data");

    status("starting the Switchboard server and the echo server...");
    // The server's V8 inspector address, which it prints on stderr under --inspect.
    let inspector: string | undefined;
    cleanup.add(stopAllProcesses);
    const { server, echo } = await startServers({
      dataDir,
      logDir: join(tmp, "logs"),
      stopSignal: "SIGINT",
      denoFlags: flags.gc ? ["--inspect=127.0.0.1:0"] : [],
      serverFlags: ["--lease", String(LEASE_SECONDS)],
      onServerStderrLine: (line) => {
        const match = /^Debugger listening on (ws:\/\/\S+)$/.exec(line);
        if (match) inspector = match[1];
      },
      oneLineError: true,
    });
    if (flags.gc) {
      // The inspector's address comes on stderr, maybe just after the port line.
      for (let i = 0; i < 40 && inspector === undefined; i++) await sleep(50);
      if (inspector === undefined) {
        throw new Error("the Switchboard server did not print its V8 inspector address");
      }
    }
    const pid = server.child.pid;

    const sockets = Array.from(
      { length: Math.max(flags.concurrency, flags.setupConcurrency) },
      () => new LoadSocket(),
    );
    cleanup.add(() => Promise.all(sockets.map((s) => s.close())));
    const serverKey = await serverKeyIn(dataDir);
    // One key pair for every load socket: an identity registered through one
    // logs in through any (open mode's login is the handshake with the key).
    const keyPair = generateKeyPair(cryptoRandom);
    for (const socket of sockets) {
      socket.sealed = {
        port: server.port,
        guard: benchGuard(`${HOST}:${server.port}`, serverKey, keyPair),
      };
    }
    // If the server dies, say so at once instead of waiting for requests to time out.
    for (const started of [server, echo]) {
      started.child.status.then((exit) => {
        if (started.stopped !== undefined || serverGone !== undefined) return;
        const last = started.tail.filter((line) => line.trim() !== "").at(-1);
        serverGone = `the ${started.label} exited with code ${exit.code} during the run` +
          (last === undefined ? "" : ` (last line: ${last.trim()})`);
        for (const socket of sockets) socket.close();
      });
    }
    const checkServer = () => {
      if (serverGone !== undefined) throw new Error(serverGone);
    };
    const loadSockets = sockets.slice(0, flags.concurrency);

    const memory: (MemoryPoint | undefined)[] = [];
    status(`warming the server up with ${WARMUP_HELLOS} hello requests...`);
    await warmUp(loadSockets, server.port);
    memory.push(await sampleMemory(pid, "start (0 registered)", inspector));

    const width = String(flags.registered - 1).length;
    const identities: Identity[] = Array.from({ length: flags.registered }, (_, i) => ({
      name: `peer-${String(i).padStart(width, "0")}`,
      clientId: toHex(cryptoRandom.bytes(8)),
    }));
    status(
      `registering ${flags.registered} identities, ${flags.setupConcurrency} in flight ` +
        "(each logs out at once)...",
    );
    const register = await registerAll(
      sockets.slice(0, flags.setupConcurrency),
      server.port,
      identities,
      isInterrupted,
    );
    if (cleanup.interrupted) return 130;
    checkServer();
    memory.push(
      await sampleMemory(pid, `${flags.registered} registered, 0 active`, inspector),
    );

    // A random choice of identities comes online.
    const chosen = [...identities];
    for (let i = chosen.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [chosen[i], chosen[j]] = [chosen[j], chosen[i]];
    }
    chosen.length = flags.active;
    status(`logging ${flags.active} identities in, ${flags.concurrency} in flight...`);
    const login = await loginAll(loadSockets, server.port, chosen, isInterrupted);
    if (cleanup.interrupted) return 130;
    checkServer();
    memory.push(
      await sampleMemory(
        pid,
        `${flags.registered} registered, ${flags.active} active`,
        inspector,
      ),
    );
    const onlineBefore = await onlineCount(loadSockets[0], server.port);
    const onlineNames = chosen.map((identity) => identity.name);

    const phases: Phase[] = [];
    for (let round = 1; round <= flags.rounds && !cleanup.interrupted; round++) {
      for (const op of ["lookup", "heartbeat"] as const) {
        for (const target of ["echo", "switchboard"] as const) {
          if (cleanup.interrupted) break;
          await renewStale(loadSockets, server.port);
          const port = target === "echo" ? echo.port : server.port;
          status(`round ${round}/${flags.rounds}: ${op} against ${target} on UDP port ${port}...`);
          phases.push(
            await runPhase(op, target, port, loadSockets, onlineNames, flags, round, isInterrupted),
          );
          checkServer();
        }
      }
    }
    if (cleanup.interrupted) return 130;
    await renewStale(loadSockets, server.port);
    const onlineAfter = await onlineCount(loadSockets[0], server.port);
    memory.push(await sampleMemory(pid, "after the load phases", inspector));
    const peakRss = await procStatusBytes(pid, "VmHWM");
    checkServer();

    status("stopping the servers...");
    const serverExitCode = await stopProcess(server);
    await stopProcess(echo);
    await Promise.all(sockets.map((s) => s.close()));
    const registryOnDisk = await countRegistered(dataDir);

    printReport({
      flags,
      register,
      login,
      phases,
      sizes: datagramSizes(identities[0].name),
      memory,
      peakRss,
      onlineBefore,
      onlineAfter,
      registryOnDisk,
      serverExitCode,
      dataDir,
    });
    const errors = phases.reduce((sum, p) => sum + p.counters.errors, 0);
    if (errors > 0) {
      console.error(`error: ${errors} requests failed during the measurements (see above)`);
      return 1;
    }
    return 0;
  } catch (error) {
    const message = serverGone ?? (error instanceof Error ? error.message : String(error));
    console.error(`error: ${message.split("\n")[0]}`);
    return 1;
  } finally {
    await cleanup.close();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
