/**
 * The simulator's driver: runs the real {@linkcode ServerCore} and any number
 * of {@linkcode ClientCore}s on a {@linkcode SimNetwork} with a virtual clock
 * and one seeded random source, so a run is exactly reproducible from its
 * seed. The server side (its disk, files, password checks and connections)
 * is {@linkcode SimServer}; each client, with its in-memory files, a
 * {@linkcode SimClient}.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2";
import { ClientCore, type CoreCommand } from "../client/client_core.ts";
import type { PeerTrace } from "../client/outbox.ts";
import type { RetryPolicy } from "../client/retry_policy.ts";
import type { Via } from "../client/server_session.ts";
import { VirtualClock } from "../clock.ts";
import { SeededRandom } from "../random.ts";
import { generateKeyPair, type KeyPair } from "../crypto/key_pair.ts";
import type { RegistryJson } from "../server/registry.ts";
import type { ServerLimits } from "../server/admission.ts";
import type { StorageLimits } from "../server/stored_files.ts";
import { sampleReadingsCsv } from "../client/sample_readings.ts";
import type { MemoryBlobStore } from "./memory_blob_store.ts";
import { SERVER_TCP, SERVER_UDP, SERVER_UDP2, SimServer } from "./sim_server.ts";
import { SimClient } from "./sim_client.ts";
import { SimServerFiles } from "./sim_server_files.ts";
import type { AuthMode, ServerCore, ServerEvent } from "../server/server_core.ts";
import type { Command } from "../client/command.ts";
import { isPeerMessage } from "../wire/messages.ts";
import { type Impairment, SimNetwork } from "./sim_network.ts";
import type { SimNat } from "./sim_nat.ts";
import { decodeMessage, encodeMessage } from "../wire/codec.ts";
import type { Message } from "../wire/messages.ts";

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
  /**
   * The server's rate and connection limits (default the core's: the
   * product's, except `registerRate`, off unless given).
   */
  limits?: ServerLimits;
  /** The server's limits on stored files (default the product's). */
  storage?: StorageLimits;
  /** Whether the server has a second UDP port for address discovery (default true). */
  secondPort?: boolean;
}

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
  /** Every peer message handed to a channel, in order (for the invariants). */
  readonly peerSent: SimPeerMessage[] = [];
  /** Every peer message delivered to a client, in order. */
  readonly peerDelivered: SimPeerMessage[] = [];
  #options: SimulationOptions;
  /** Where the clients' static keys come from. */
  #keyRandom: SeededRandom;
  /** The sender's static key of each datagram and frame to the server (the null-cipher channel). */
  #senderKeys = new WeakMap<Uint8Array, Uint8Array>();
  #server: SimServer;
  #scheduled: Scheduled[] = [];
  #seq = 0;
  #serverFiles = new SimServerFiles((client, bytes) =>
    this.network.sendReliable(this.clock.now(), client.address, SERVER_TCP, bytes)
  );

  /** @param options seed, impairment, write delay and retry policy */
  constructor(options: SimulationOptions) {
    this.#options = options;
    this.random = new SeededRandom(options.seed);
    this.#keyRandom = new SeededRandom(options.seed ^ 0x6b657973);
    // Once the server's secret for identity keys (version 2): still drawn,
    // so that every seed replays the run it gave before.
    this.random.bytes(32);
    this.network = new SimNetwork(this.random, options.impairment);
    this.#server = new SimServer(this, options, this.serverEvents);
  }

  /** The registry as last made durable on the simulated disk. */
  get disk(): RegistryJson {
    return this.#server.disk;
  }

  /** The running server core, or undefined while it is down. */
  get server(): ServerCore | undefined {
    return this.#server.core;
  }

  /** The server's stored files: its disk, which outlives a crash. */
  get blobs(): MemoryBlobStore {
    return this.#server.blobs;
  }

  /** Server crashes so far. */
  get crashes(): number {
    return this.#server.crashes;
  }

  /**
   * Adds a client.
   *
   * @param options its name, transport, TCP port and the NAT it sits behind (none by default)
   * @returns the client
   */
  addClient(
    options: { name?: string; via?: Via; tcpPort?: number; nat?: SimNat; keyPair?: KeyPair } = {},
  ): SimClient {
    const index = this.clients.length + 1;
    const address = `127.0.${1 + (index >> 8)}.${index & 0xff}:${4000 + index}`;
    // Static keys from a PRNG of their own, so that adding them moved no other draw.
    const staticKeyPair = options.keyPair ?? generateKeyPair(this.#keyRandom);
    const core = new ClientCore({
      random: this.random,
      retry: this.#options.retry,
      staticKeyPair,
      name: options.name,
      udpPort: 4000 + index,
      tcpPort: options.tcpPort ?? 5000 + index,
      via: options.via ?? "udp",
      server: SERVER_UDP,
      // The simulated host's one interface: behind a NAT, its inside address.
      hostCandidates: () => [{ ip: hostOf(address), port: 4000 + index }],
    });
    const client = new SimClient(address, core, options.name ?? `client${index}`);
    client.keyPair = staticKeyPair;
    client.publicKey = staticKeyPair.publicKey;
    this.clients.push(client);
    if (options.nat !== undefined) this.putBehindNat(client, options.nat);
    return client;
  }

  /**
   * Puts a client's host behind a NAT (before it sends anything, or the
   * server has seen it from its inside address).
   *
   * @param client the client
   * @param nat the NAT; several clients may share one (a LAN)
   */
  putBehindNat(client: SimClient, nat: SimNat): void {
    nat.addHost(client.address.slice(0, client.address.lastIndexOf(":")));
    this.network.addNat(nat);
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
    this.#server.crash();
  }

  /** Restarts a crashed server from the simulated disk. */
  restartServer(): void {
    this.#server.restart();
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
      case "generate": {
        const csv = sampleReadingsCsv(command.count, {
          random: this.random,
          startMs: this.clock.now(),
        });
        client.files.set(command.file, new TextEncoder().encode(csv));
        client.results.push({
          ok: true,
          command: "generate",
          file: command.file,
          count: command.count,
        });
        return;
      }
      case "upload": {
        const data = client.files.get(command.file);
        if (data === undefined) {
          client.results.push({
            ok: false,
            command: "upload",
            error: `Cannot read ${command.file}: no such file`,
            code: "file_error",
          });
          return;
        }
        this.#serverFiles.prepareUpload(client, data);
        const name = command.name ?? command.file.split("/").at(-1)!;
        return this.command(client, {
          kind: "upload",
          name,
          size: data.length,
          sha256: sha256(data),
        });
      }
      case "download":
        this.#serverFiles.prepareDownload(
          client,
          command.name,
          command.dest ?? `downloads/${command.name}`,
        );
        return this.command(client, { kind: "download", name: command.name });
      case "login": {
        const name = command.name ?? client.core.name ?? client.name;
        const password = this.#options.passwords?.[name];
        const secret = this.#options.auth === "password"
          ? new TextEncoder().encode(password ?? "")
          : new Uint8Array(0);
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
    // Its TCP connection to the server ends with it.
    this.#server.clientGone(client.address);
  }

  /** True when no command, write, packet or scheduled action is pending (timers aside). */
  get idle(): boolean {
    return this.#scheduled.length === 0 && !this.#server.writing &&
      this.network.inFlight === 0 && this.clients.every((c) => !c.alive || c.idle);
  }

  #nextEventTime(): number | undefined {
    const times = [
      this.network.nextDelivery(),
      this.#scheduled[0]?.at,
      this.#server.nextEventTime(),
      ...this.clients.filter((c) => c.alive).map((c) => c.core.nextTimeout()),
    ].filter((t): t is number => t !== undefined);
    return times.length === 0 ? undefined : Math.min(...times);
  }

  #step(): void {
    const now = this.clock.now();
    while (this.#scheduled.length > 0 && this.#scheduled[0].at <= now) {
      this.#scheduled.shift()!.action();
    }
    this.#server.step(now);
    for (const packet of this.network.deliverDue(now)) {
      if (packet.to === SERVER_UDP || packet.to === SERVER_TCP || packet.to === SERVER_UDP2) {
        const tcp = packet.to === SERVER_TCP;
        const key = this.#senderKeys.get(packet.data);
        this.#server.receive(now, packet.from, tcp, packet.data, packet.to === SERVER_UDP2, key);
        continue;
      }
      if (packet.from === SERVER_TCP && packet.data.length === 0) {
        // The end of the stream: the server closed this client's connection.
        const client = this.clients.find((c) => c.address === packet.to);
        if (!client?.alive) continue;
        this.#serverFiles.closed(client);
        client.core.tcpFailed("the server closed the TCP connection");
        continue;
      }
      const client = this.clients.find((c) => c.address === packet.to);
      if (!client?.alive) continue;
      if (packet.from !== SERVER_UDP && packet.from !== SERVER_TCP && packet.from !== SERVER_UDP2) {
        // From a peer: the core decodes and opens it.
        const [ip, port] = splitAddress(packet.from);
        client.core.handlePeer(now, { ip, port }, packet.data);
        continue;
      }
      let message: Message;
      try {
        message = decodeMessage(packet.data);
      } catch {
        continue;
      }
      if (isPeerMessage(message)) continue;
      if (packet.from !== SERVER_TCP || !this.#serverFiles.received(client, message)) {
        client.core.handle(now, message);
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
        const result = this.#serverFiles.result(client, out.result);
        if (result !== undefined) client.results.push(result);
        continue;
      }
      if (out.type === "event") {
        client.events.push(out.event);
        continue;
      }
      // The simulated service is one instance: nowhere to move to.
      if (out.type === "identity" || out.type === "move") continue;
      if (out.type === "peer_send") {
        this.network.send(now, client.address, `${out.to.ip}:${out.to.port}`, out.bytes);
        continue;
      }
      if (out.type === "trace") {
        this.#trace(now, client, out.trace);
        continue;
      }
      if (out.type === "file") {
        client.fileOperation(this.clock.now(), out.op);
        continue;
      }
      const bytes = encodeMessage(out.message);
      // The null-cipher channel: the server learns the key a sealed channel would have proved.
      if (client.publicKey !== undefined) this.#senderKeys.set(bytes, client.publicKey);
      if (out.via === "udp") {
        const to = out.port === undefined ? SERVER_UDP : `${hostOf(SERVER_UDP)}:${out.port}`;
        this.network.send(now, client.address, to, bytes);
      } else {
        this.network.sendReliable(now, client.address, SERVER_TCP, bytes);
        this.#serverFiles.sent(client, out.message);
      }
    }
    return any;
  }
}

function base(from: string, to: string, trace: PeerTrace) {
  return { from, to, session: trace.session, index: trace.index, text: trace.text };
}

function splitAddress(address: string): [string, number] {
  const colon = address.lastIndexOf(":");
  return [address.slice(0, colon), Number(address.slice(colon + 1))];
}

function hostOf(address: string): string {
  return address.slice(0, address.lastIndexOf(":"));
}
