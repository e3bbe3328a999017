/**
 * The simulator's driver: runs the real {@linkcode ServerCore} and any number
 * of {@linkcode ClientCore}s on a {@linkcode SimNetwork} with a virtual clock
 * and one seeded random source, so a run is exactly reproducible from its
 * seed. The server's disk is simulated too: a snapshot becomes durable after
 * a write delay, and a crash loses what was not yet written.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2";
import { toHex } from "../hex.ts";
import { ClientCore, type CoreCommand } from "../client/client_core.ts";
import type { FileOperation, PeerTrace } from "../client/outbox.ts";
import type { ClientEvent, CommandResult } from "../client/client_event.ts";
import type { RetryPolicy } from "../client/retry_policy.ts";
import type { Via } from "../client/server_session.ts";
import { VirtualClock } from "../clock.ts";
import { SeededRandom } from "../random.ts";
import { Registry, type RegistryJson } from "../server/registry.ts";
import {
  type AuthMode,
  type Endpoint,
  type PasswordUser,
  ServerCore,
  type ServerEvent,
} from "../server/server_core.ts";
import { nameKey } from "../wire/client_name.ts";
import { numberedName } from "../wire/file_name.ts";
import type { Command } from "../client/command.ts";
import { isPeerMessage } from "../wire/messages.ts";
import { type Impairment, SimNetwork } from "./sim_network.ts";
import { decodeMessage, encodeMessage } from "../wire/codec.ts";
import type { Message } from "../wire/messages.ts";

const SERVER_HOST = "127.0.0.1";
const SERVER_UDP = `${SERVER_HOST}:3000`;
const SERVER_TCP = `${SERVER_HOST}:3001`;

/** Options of a {@linkcode Simulation}. */
export interface SimulationOptions {
  /** The seed; equal seeds give identical runs. */
  seed: number;
  /** What the network does to datagrams. */
  impairment: Impairment;
  /** How long a registry write takes, ms (default 2 to 20). */
  writeDelayMs?: readonly [number, number];
  /** The clients' retry policy (default: the product's). */
  retry?: RetryPolicy;
  /** The server's session lease, ms (default the product's 30 s). */
  leaseMs?: number;
  /** `open` (default) or `password`. */
  auth?: AuthMode;
  /** Password mode's accounts: name and password. */
  passwords?: Readonly<Record<string, string>>;
  /** Failed logins that block a name (default 3). */
  maxAttempts?: number;
  /** How long a blocked name stays blocked, ms (default 10 s). */
  lockoutMs?: number;
  /** How long checking a password takes, ms (default 150, like PBKDF2 here). */
  passwordCheckMs?: number;
}

/**
 * The simulator's stand-in for a password hash: the real driver checks
 * PBKDF2 hashes off the event loop; the simulation checks this after a
 * delay, which is what the core sees either way.
 */
const SIM_HASH_PREFIX = "sim$";

/** A peer message as the simulator saw it, for invariants and the summary. */
export interface SimPeerMessage {
  /** Sender's name. */
  readonly from: string;
  /** Receiver's name. */
  readonly to: string;
  /** The session id. */
  readonly session: string;
  /** Its number in its session and direction, from 0. */
  readonly index: number;
  /** The text. */
  readonly text: string;
  /** When it was handed to the channel (sent only). */
  readonly sentAt: number;
  /** When the sender learnt it was acknowledged (sent only). */
  ackedAt?: number;
  /** When it was delivered (delivered only). */
  deliveredAt?: number;
}

/** A client of the simulation: a real client core with a command queue. */
export class SimClient {
  /** `address:port` of this client. */
  readonly address: string;
  /** The client core. */
  readonly core: ClientCore;
  /** Results of finished commands, in order. */
  readonly results: CommandResult[] = [];
  /** Commands waiting to run. */
  readonly queue: CoreCommand[] = [];
  /** Events (presence news, session ends), in order. */
  readonly events: ClientEvent[] = [];
  /** The identity key from the last `register`, if any. */
  identityKey: Uint8Array | undefined;
  /** False once the client is stopped (killed): it neither sends nor receives. */
  alive = true;
  /** The name it was added with (or `clientN`). */
  readonly name: string;
  /** Set by `exit`: go offline and stop once the queued commands are done. */
  exitWhenIdle = false;
  /** True once `userCommand` has queued the opening `hello`. */
  greeted = false;
  /**
   * Its files, by path: what `sendfile` reads, and where files from peers
   * land (`downloads/NAME`, partial ones as `downloads/.NAME.SHA.part`).
   */
  readonly files: Map<string, Uint8Array> = new Map();
  /** Most bytes its download directory holds; writes beyond fail as a full disk would. */
  diskBytes = Infinity;

  /**
   * @param address `address:port`
   * @param core the core
   * @param name its name in scenarios and reports
   */
  constructor(address: string, core: ClientCore, name: string) {
    this.address = address;
    this.core = core;
    this.name = name;
  }

  /** True when no command runs or waits. */
  get idle(): boolean {
    return !this.core.busy && this.queue.length === 0;
  }
}

interface PendingWrite {
  at: number;
  version: number;
  registry: RegistryJson;
}

interface Scheduled {
  at: number;
  seq: number;
  action: () => void;
}

/**
 * A deterministic simulation of a server and clients.
 *
 * @example
 * ```ts
 * const sim = new Simulation({ seed: 7, impairment: { ...NO_IMPAIRMENT, loss: 0.3 } });
 * const alice = sim.addClient({ name: "Alice" });
 * sim.command(alice, { kind: "register" });
 * sim.runUntilIdle(120_000);
 * alice.results[0].ok; // true
 * ```
 */
export class Simulation {
  /** The virtual clock. */
  readonly clock: VirtualClock = new VirtualClock(1_000_000);
  /** The run's only random source. */
  readonly random: SeededRandom;
  /** The simulated network. */
  readonly network: SimNetwork;
  /** Every server event, in order, across restarts. */
  readonly serverEvents: ServerEvent[] = [];
  /** The clients, in the order they were added. */
  readonly clients: SimClient[] = [];
  /** Server crashes so far. */
  crashes = 0;
  /** Every peer message handed to a channel, in order (for the invariants). */
  readonly peerSent: SimPeerMessage[] = [];
  /** Every peer message delivered to a client, in order. */
  readonly peerDelivered: SimPeerMessage[] = [];
  #options: SimulationOptions;
  #server: ServerCore | undefined;
  #disk: RegistryJson = {};
  #writes: PendingWrite[] = [];
  #scheduled: Scheduled[] = [];
  #seq = 0;
  #secret: Uint8Array;

  /** @param options seed, impairment, write delay and retry policy */
  constructor(options: SimulationOptions) {
    this.#options = options;
    this.random = new SeededRandom(options.seed);
    this.#secret = this.random.bytes(32);
    this.network = new SimNetwork(this.random, options.impairment);
    this.#server = this.#newServer();
  }

  /** The registry as last made durable on the simulated disk. */
  get disk(): RegistryJson {
    return this.#disk;
  }

  /** The running server core, or undefined while it is down. */
  get server(): ServerCore | undefined {
    return this.#server;
  }

  /**
   * Adds a client.
   *
   * @param options its name, transport and TCP port
   * @returns the client
   */
  addClient(options: { name?: string; via?: Via; tcpPort?: number } = {}): SimClient {
    const index = this.clients.length + 1;
    const address = `127.0.${1 + (index >> 8)}.${index & 0xff}:${4000 + index}`;
    const core = new ClientCore({
      random: this.random,
      retry: this.#options.retry,
      name: options.name,
      udpPort: 4000 + index,
      tcpPort: options.tcpPort ?? 5000 + index,
      via: options.via ?? "udp",
      server: SERVER_UDP,
    });
    const client = new SimClient(address, core, options.name ?? `client${index}`);
    this.clients.push(client);
    return client;
  }

  /**
   * Queues a command on a client; it runs when the client's previous one is done.
   *
   * @param client the client
   * @param command the command
   */
  command(client: SimClient, command: CoreCommand): void {
    client.queue.push(command);
    this.#startQueued();
  }

  /**
   * Runs an action at a virtual time.
   *
   * @param at virtual time, ms
   * @param action what to do
   */
  at(at: number, action: () => void): void {
    this.#scheduled.push({ at, seq: this.#seq++, action });
    this.#scheduled.sort((a, b) => a.at - b.at || a.seq - b.seq);
  }

  /**
   * Crashes the server: its memory is lost, and a write in progress either
   * lands or not (a coin toss), as an atomic rename would.
   */
  crashServer(): void {
    if (this.#server === undefined) return;
    this.#server = undefined;
    const inProgress = this.#writes[0];
    if (inProgress !== undefined && this.random.next() < 0.5) this.#disk = inProgress.registry;
    this.#writes = [];
    this.crashes++;
    this.network.dropFor(SERVER_UDP);
    this.network.dropFor(SERVER_TCP);
  }

  /** Restarts a crashed server from the simulated disk. */
  restartServer(): void {
    if (this.#server !== undefined) return;
    this.#server = this.#newServer();
  }

  /**
   * Runs until nothing is left to do or `maxMs` of virtual time passed.
   *
   * @param maxMs the longest virtual time to run
   * @returns true if the run went idle, false if it hit the limit
   */
  runUntilIdle(maxMs: number): boolean {
    const limit = this.clock.now() + maxMs;
    while (true) {
      const next = this.#nextEventTime();
      if (next === undefined || this.idle) return true;
      if (next > limit) {
        this.clock.set(limit);
        return false;
      }
      this.clock.set(Math.max(this.clock.now(), next));
      this.#step();
    }
  }

  /**
   * Runs every event for `ms` of virtual time (heartbeats, leases and all).
   *
   * @param ms how long
   */
  runFor(ms: number): void {
    const limit = this.clock.now() + ms;
    while (true) {
      const next = this.#nextEventTime();
      if (next === undefined || next > limit) break;
      this.clock.set(Math.max(this.clock.now(), next));
      this.#step();
    }
    this.clock.set(limit);
  }

  /**
   * Queues a command of the client's command language, as a user would type
   * it: `login` uses the identity from `register` (open mode) or the
   * password from the options (password mode); `exit` goes offline and
   * stops the client. Commands that need local files are refused.
   *
   * @param client the client
   * @param command the parsed command
   */
  userCommand(client: SimClient, command: Command): void {
    if (!client.greeted) {
      // Like the real client, reach the server first.
      client.greeted = true;
      this.command(client, { kind: "hello" });
    }
    switch (command.kind) {
      case "help":
        client.results.push({ ok: true, command: "help" });
        return;
      case "exit":
        client.exitWhenIdle = true;
        this.#startQueued();
        return;
      case "sendfile": {
        const data = client.files.get(command.path);
        if (data === undefined) {
          client.results.push({
            ok: false,
            command: "sendfile",
            error: `Cannot read ${command.path}: no such file`,
            code: "file_error",
          });
          return;
        }
        return this.command(client, {
          ...command,
          name: command.path.split("/").at(-1)!,
          size: data.length,
          sha256: sha256(data),
        });
      }
      case "generate":
      case "upload":
      case "download":
        client.results.push({
          ok: false,
          command: command.kind,
          error: "Files are not simulated",
          code: "bad_command",
        });
        return;
      case "login": {
        const name = command.name ?? client.core.name ?? client.name;
        const password = this.#options.passwords?.[name];
        const secret = this.#options.auth === "password"
          ? new TextEncoder().encode(password ?? "")
          : client.identityKey ?? new Uint8Array(0);
        return this.command(client, { kind: "login", name, secret });
      }
      default:
        return this.command(client, command);
    }
  }

  /**
   * Totals of every peer channel so far.
   *
   * @returns retransmissions (timeout and fast) and duplicates discarded
   */
  peerStats(): { retransmitted: number; duplicatesDiscarded: number } {
    let retransmitted = 0;
    let duplicatesDiscarded = 0;
    for (const client of this.clients) {
      for (const peer of client.core.peers) {
        const stats = peer.channel?.stats;
        if (stats === undefined) continue;
        retransmitted += stats.timeoutRetransmissions + stats.fastRetransmissions;
        duplicatesDiscarded += stats.duplicatesDiscarded;
      }
    }
    return { retransmitted, duplicatesDiscarded };
  }

  #trace(now: number, client: SimClient, trace: PeerTrace): void {
    const self = client.core.loggedInAs ?? client.name;
    if (trace.step === "sent") {
      this.peerSent.push({ ...base(self, trace.peer, trace), sentAt: now });
    } else if (trace.step === "acked") {
      const sent = this.peerSent.findLast((m) =>
        m.session === trace.session && m.index === trace.index && m.from === self
      );
      if (sent !== undefined) sent.ackedAt = now;
    } else {
      this.peerDelivered.push({ ...base(trace.peer, self, trace), sentAt: 0, deliveredAt: now });
    }
  }

  /**
   * Stops a client as `kill -9` would: it sends nothing more, and nothing
   * reaches it.
   *
   * @param client the client
   */
  kill(client: SimClient): void {
    client.alive = false;
    client.queue.length = 0;
    this.network.dropFor(client.address);
  }

  #newServer(): ServerCore {
    const users = new Map<string, PasswordUser>();
    for (const [name, password] of Object.entries(this.#options.passwords ?? {})) {
      users.set(nameKey(name), { name, passwordHash: SIM_HASH_PREFIX + password });
    }
    return new ServerCore({
      registry: Registry.fromJson(this.#disk),
      random: this.random,
      secret: this.#secret,
      tcpPort: 3001,
      version: "sim",
      leaseMs: this.#options.leaseMs,
      auth: this.#options.auth,
      users,
      dummyPasswordHash: `${SIM_HASH_PREFIX}\u0000`,
      maxAttempts: this.#options.maxAttempts,
      lockoutMs: this.#options.lockoutMs,
    });
  }

  /** True when no command, write, packet or scheduled action is pending (timers aside). */
  get idle(): boolean {
    return this.#scheduled.length === 0 && this.#writes.length === 0 &&
      this.network.inFlight === 0 && this.clients.every((c) => !c.alive || c.idle);
  }

  #nextEventTime(): number | undefined {
    const times = [
      this.network.nextDelivery(),
      this.#writes[0]?.at,
      this.#scheduled[0]?.at,
      this.#server?.nextTimeout(),
      ...this.clients.filter((c) => c.alive).map((c) => c.core.nextTimeout()),
    ].filter((t): t is number => t !== undefined);
    return times.length === 0 ? undefined : Math.min(...times);
  }

  #step(): void {
    const now = this.clock.now();
    while (this.#scheduled.length > 0 && this.#scheduled[0].at <= now) {
      this.#scheduled.shift()!.action();
    }
    while (this.#writes.length > 0 && this.#writes[0].at <= now) {
      const write = this.#writes.shift()!;
      this.#disk = write.registry;
      this.#server?.persisted(write.version, now);
    }
    const server = this.#server;
    const serverAt = server?.nextTimeout();
    if (server !== undefined && serverAt !== undefined && serverAt <= now) server.onTimeout(now);
    this.#drainServer();
    for (const packet of this.network.deliverDue(now)) {
      let message: Message;
      try {
        message = decodeMessage(packet.data);
      } catch {
        continue;
      }
      if (packet.to === SERVER_UDP || packet.to === SERVER_TCP) {
        if (this.#server === undefined) continue;
        const [address, port] = splitAddress(packet.from);
        const tcp = packet.to === SERVER_TCP;
        const from: Endpoint = tcp
          ? { transport: "tcp", address, port, connId: port }
          : { transport: "udp", address, port };
        this.#server.handle(now, from, message, packet.data.length);
        this.#drainServer();
      } else {
        const client = this.clients.find((c) => c.address === packet.to);
        if (!client?.alive) continue;
        if (isPeerMessage(message)) {
          const [ip, port] = splitAddress(packet.from);
          client.core.handlePeer(now, { ip, port }, message);
        } else {
          client.core.handle(now, message);
        }
      }
    }
    for (const client of this.clients) {
      if (!client.alive) continue;
      const at = client.core.nextTimeout();
      if (at !== undefined && at <= now) client.core.onTimeout(now);
    }
    this.#startQueued();
  }

  #startQueued(): void {
    const now = this.clock.now();
    let progress = true;
    while (progress) {
      progress = false;
      for (const client of this.clients) {
        if (!client.alive) continue;
        progress = this.#drainClient(client) || progress;
        if (!client.core.busy && client.queue.length > 0) {
          client.core.run(now, client.queue.shift()!);
          progress = true;
        } else if (!client.core.busy && client.exitWhenIdle) {
          client.core.leave(now);
          this.#drainClient(client);
          client.alive = false;
          progress = true;
        }
      }
    }
  }

  #drainClient(client: SimClient): boolean {
    const now = this.clock.now();
    let any = false;
    for (let out = client.core.poll(); out !== undefined; out = client.core.poll()) {
      any = true;
      if (out.type === "result") {
        client.results.push(out.result);
        continue;
      }
      if (out.type === "event") {
        client.events.push(out.event);
        continue;
      }
      if (out.type === "identity") {
        client.identityKey = out.key;
        continue;
      }
      if (out.type === "peer_send") {
        const bytes = encodeMessage(out.message);
        this.network.send(now, client.address, `${out.to.ip}:${out.to.port}`, bytes);
        continue;
      }
      if (out.type === "trace") {
        this.#trace(now, client, out.trace);
        continue;
      }
      if (out.type === "file") {
        this.#fileOperation(client, out.op);
        continue;
      }
      const bytes = encodeMessage(out.message);
      if (out.via === "udp") this.network.send(now, client.address, SERVER_UDP, bytes);
      else this.network.sendReliable(now, client.address, SERVER_TCP, bytes);
    }
    return any;
  }

  /** The file work of peer transfers, on the client's in-memory files, at once. */
  #fileOperation(client: SimClient, op: FileOperation): void {
    const now = this.clock.now();
    const core = client.core;
    const receiving = this.#receiving;
    switch (op.type) {
      case "read": {
        const data = client.files.get(op.path);
        if (data === undefined || data.length < op.offset + op.length) {
          return core.fileFailed(now, op.id, `Cannot read ${op.path}: it changed`, "read");
        }
        return core.fileRead(now, op.id, op.offset, data.slice(op.offset, op.offset + op.length));
      }
      case "send_end":
        return;
      case "receive_begin": {
        // As the real driver: two transfers of the same content at once do
        // not share a partial file; the second gets one of its own.
        const shared = `downloads/.${op.name}.${op.sha256.slice(0, 16)}.part`;
        const own = this.#claimed.has(`${client.address}/${shared}`);
        const partial = own ? shared.replace(/\.part$/, `.${op.id}.part`) : shared;
        this.#claimed.add(`${client.address}/${partial}`);
        const have = own
          ? new Uint8Array()
          : (client.files.get(partial) ?? new Uint8Array()).slice(0, op.size);
        client.files.set(partial, have);
        receiving.set(`${client.address}/${op.id}`, {
          partial,
          own,
          name: op.name,
          sha256: op.sha256,
        });
        return core.fileReceiveReady(now, op.id, have.length);
      }
      case "write": {
        const r = receiving.get(`${client.address}/${op.id}`);
        if (r === undefined) return;
        const have = client.files.get(r.partial)!;
        const used = [...client.files.values()].reduce((sum, f) => sum + f.length, 0);
        if (used + op.data.length > client.diskBytes) {
          client.files.delete(r.partial);
          receiving.delete(`${client.address}/${op.id}`);
          this.#claimed.delete(`${client.address}/${r.partial}`);
          return core.fileFailed(
            now,
            op.id,
            `Cannot write ${r.name}: No space left on device (os error 28)`,
            "disk_full",
          );
        }
        client.files.set(r.partial, appended(have, op.data));
        return core.fileWritten(now, op.id, op.offset + op.data.length);
      }
      case "receive_end": {
        const key = `${client.address}/${op.id}`;
        const r = receiving.get(key);
        if (r === undefined) return;
        receiving.delete(key);
        this.#claimed.delete(`${client.address}/${r.partial}`);
        const data = client.files.get(r.partial)!;
        client.files.delete(r.partial);
        if (toHex(sha256(data)) !== r.sha256) {
          return core.fileFailed(
            now,
            op.id,
            `The SHA-256 of "${r.name}" does not match`,
            "checksum",
          );
        }
        let path = `downloads/${r.name}`;
        for (let n = 1; client.files.has(path); n++) path = `downloads/${numberedName(r.name, n)}`;
        client.files.set(path, data);
        return core.fileReceived(now, op.id, path);
      }
      case "receive_abort": {
        const key = `${client.address}/${op.id}`;
        const r = receiving.get(key);
        receiving.delete(key);
        if (r === undefined) return;
        this.#claimed.delete(`${client.address}/${r.partial}`);
        if (!op.keepPartial || r.own) client.files.delete(r.partial);
        return;
      }
    }
  }

  #receiving = new Map<
    string,
    { partial: string; own: boolean; name: string; sha256: string }
  >();
  /** `address/path` of the partial files a receiving transfer holds. */
  #claimed = new Set<string>();

  #drainServer(): void {
    const server = this.#server;
    if (server === undefined) return;
    const now = this.clock.now();
    for (let out = server.poll(); out !== undefined; out = server.poll()) {
      switch (out.type) {
        case "send": {
          const to = `${out.to.address}:${out.to.port}`;
          const bytes = encodeMessage(out.message);
          if (out.to.transport === "udp") this.network.send(now, SERVER_UDP, to, bytes);
          else this.network.sendReliable(now, SERVER_TCP, to, bytes);
          break;
        }
        case "persist": {
          const [min, max] = this.#options.writeDelayMs ?? [2, 20];
          this.#writes.push({
            at: now + min + this.random.next() * (max - min),
            version: out.version,
            registry: out.registry,
          });
          break;
        }
        case "event":
          this.serverEvents.push(out.event);
          break;
        case "verify_password": {
          const ok = out.hash === SIM_HASH_PREFIX + out.password;
          this.at(now + (this.#options.passwordCheckMs ?? 150), () => {
            if (this.#server !== server) return;
            server.passwordChecked(this.clock.now(), out.id, ok);
            this.#drainServer();
          });
          break;
        }
        default:
          // Files are not simulated: their tests use the real driver.
          break;
      }
    }
  }
}

function base(from: string, to: string, trace: PeerTrace) {
  return { from, to, session: trace.session, index: trace.index, text: trace.text };
}

function splitAddress(address: string): [string, number] {
  const colon = address.lastIndexOf(":");
  return [address.slice(0, colon), Number(address.slice(colon + 1))];
}

/** Buffers of partial files made by `appended`, which no one else writes to. */
const GROWABLE = new WeakSet<ArrayBufferLike>();

/**
 * `data` after `have`: written in place behind `have` when its buffer has
 * room (a partial file grows by doubling, so a large transfer copies each
 * byte a few times, not once per chunk after it).
 */
function appended(have: Uint8Array, data: Uint8Array): Uint8Array {
  const length = have.length + data.length;
  if (GROWABLE.has(have.buffer) && have.byteOffset === 0 && have.buffer.byteLength >= length) {
    const grown = new Uint8Array(have.buffer, 0, length);
    grown.set(data, have.length);
    return grown;
  }
  const buffer = new Uint8Array(Math.max(length, 2 * have.length, 64 * 1024));
  GROWABLE.add(buffer.buffer);
  buffer.set(have);
  buffer.set(data, have.length);
  return buffer.subarray(0, length);
}
