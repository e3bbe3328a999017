/**
 * The simulator's server: the real {@linkcode ServerCore} with a simulated
 * disk (a registry snapshot becomes durable after a write delay; a crash
 * loses what was not yet written, and a write in progress lands or not),
 * stored files in a {@linkcode MemoryBlobStore}, password checks that take
 * time, and one TCP connection per client that the core's connection limits
 * may refuse. Datagrams pass the core's rate limits first.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2";
import type { VirtualClock } from "../clock.ts";
import type { SeededRandom } from "../random.ts";
import { Registry, type RegistryJson } from "../server/registry.ts";
import {
  type Endpoint,
  type PasswordUser,
  ServerCore,
  type ServerEvent,
  type ServerOutput,
} from "../server/server_core.ts";
import { nameKey } from "../wire/client_name.ts";
import { decodeMessage, encodeMessage } from "../wire/codec.ts";
import { ERROR_CODES } from "../wire/error_code.ts";
import { MAX_CHUNK_BYTES, type Message } from "../wire/messages.ts";
import { MemoryBlobStore } from "./memory_blob_store.ts";
import type { SimNetwork } from "./sim_network.ts";
import type { SimulationOptions } from "./simulation.ts";

/** The simulated server's secret of peer introductions, kept across its restarts. */
const SIM_INTRODUCTION_SECRET = new Uint8Array(32).fill(0x5e);

/** The server's UDP address on the simulated network. */
export const SERVER_UDP = "127.0.0.1:3000";
/** The server's TCP address on the simulated network. */
export const SERVER_TCP = "127.0.0.1:3001";
/** The server's second UDP port (address discovery) on the simulated network. */
export const SERVER_UDP2 = "127.0.0.1:3002";

/**
 * The simulator's stand-in for a password hash: the real driver checks
 * PBKDF2 hashes off the event loop; the simulation checks this after a
 * delay, which is what the core sees either way.
 */
const SIM_HASH_PREFIX = "sim$";

/** What the server takes from the simulation it runs in. */
export interface SimServerContext {
  /** The virtual clock. */
  readonly clock: VirtualClock;
  /** The run's only random source. */
  readonly random: SeededRandom;
  /** The simulated network. */
  readonly network: SimNetwork;
  /** Runs an action at a virtual time. */
  at(at: number, action: () => void): void;
}

interface PendingWrite {
  at: number;
  version: number;
  registry: RegistryJson;
}

/**
 * The server of a simulation, across crashes and restarts.
 *
 * @example
 * ```ts
 * const server = new SimServer(sim, options, events);
 * server.receive(now, "127.0.1.1:4001", false, datagram);
 * server.crash();
 * server.restart();
 * ```
 */
export class SimServer {
  /** The server's stored files: its disk, which outlives a crash. */
  readonly blobs: MemoryBlobStore = new MemoryBlobStore();
  /** Crashes so far. */
  crashes = 0;
  #sim: SimServerContext;
  #options: SimulationOptions;
  #events: ServerEvent[];
  #core: ServerCore | undefined;
  #disk: RegistryJson = {};
  #writes: PendingWrite[] = [];
  /** The open TCP connection of each client address, by connId and back. */
  #tcpConns = new Map<string, number>();
  #connAddress = new Map<number, string>();
  #nextConnId = 1;

  /**
   * Starts the server on an empty disk.
   *
   * @param sim the clock, random source, network and scheduler
   * @param options the simulation's options (lease, auth, limits, delays)
   * @param events where every server event goes, in order
   */
  constructor(
    sim: SimServerContext,
    options: SimulationOptions,
    events: ServerEvent[],
  ) {
    this.#sim = sim;
    this.#options = options;
    this.#events = events;
    this.#core = this.#newCore();
  }

  /** The running server core, or undefined while it is down. */
  get core(): ServerCore | undefined {
    return this.#core;
  }

  /** The registry as last made durable on the simulated disk. */
  get disk(): RegistryJson {
    return this.#disk;
  }

  /** True while a registry write is pending. */
  get writing(): boolean {
    return this.#writes.length > 0;
  }

  /** @returns when the server next has something to do, or undefined */
  nextEventTime(): number | undefined {
    const times = [this.#writes[0]?.at, this.#core?.nextTimeout()]
      .filter((t): t is number => t !== undefined);
    return times.length === 0 ? undefined : Math.min(...times);
  }

  /**
   * Lands the writes that are due and runs the core's timers.
   *
   * @param now the virtual time
   */
  step(now: number): void {
    while (this.#writes.length > 0 && this.#writes[0].at <= now) {
      const write = this.#writes.shift()!;
      this.#disk = write.registry;
      this.#core?.persisted(write.version, now);
    }
    const core = this.#core;
    const at = core?.nextTimeout();
    if (core !== undefined && at !== undefined && at <= now) core.onTimeout(now);
    this.drain();
  }

  /**
   * Crashes the server: its memory is lost, and a write in progress either
   * lands or not (a coin toss), as an atomic rename would.
   */
  crash(): void {
    if (this.#core === undefined) return;
    this.#core = undefined;
    const inProgress = this.#writes[0];
    if (inProgress !== undefined && this.#sim.random.next() < 0.5) {
      this.#disk = inProgress.registry;
    }
    this.#writes = [];
    this.blobs.crash();
    this.#tcpConns.clear();
    this.#connAddress.clear();
    this.crashes++;
    this.#sim.network.dropFor(SERVER_UDP);
    this.#sim.network.dropFor(SERVER_TCP);
  }

  /** Restarts a crashed server from the simulated disk. */
  restart(): void {
    if (this.#core === undefined) this.#core = this.#newCore();
  }

  /**
   * Ends a client's TCP connection from its side (the client was killed).
   *
   * @param address the client's `address:port`
   */
  clientGone(address: string): void {
    const connId = this.#tcpConns.get(address);
    if (connId !== undefined) this.#closeConnection(connId, false);
  }

  /** Carries out what the server core asked for. */
  drain(): void {
    const server = this.#core;
    if (server === undefined) return;
    const now = this.#sim.clock.now();
    for (let out = server.poll(); out !== undefined; out = server.poll()) {
      switch (out.type) {
        case "send": {
          const to = `${out.to.address}:${out.to.port}`;
          const bytes = encodeMessage(out.message);
          const udp = out.to.second === true ? SERVER_UDP2 : SERVER_UDP;
          if (out.to.transport === "udp") this.#sim.network.send(now, udp, to, bytes);
          else this.#sim.network.sendReliable(now, SERVER_TCP, to, bytes);
          break;
        }
        case "persist": {
          const [min, max] = this.#options.writeDelayMs ?? [2, 20];
          this.#writes.push({
            at: now + min + this.#sim.random.next() * (max - min),
            version: out.version,
            registry: out.registry,
          });
          break;
        }
        case "event":
          this.#events.push(out.event);
          break;
        case "verify_password": {
          const ok = out.hash === SIM_HASH_PREFIX + out.password;
          this.#sim.at(now + (this.#options.passwordCheckMs ?? 150), () => {
            if (this.#core !== server) return;
            server.passwordChecked(this.#sim.clock.now(), out.id, ok);
            this.drain();
          });
          break;
        }
        case "close":
          this.#closeConnection(out.connId, true);
          break;
        default:
          this.#storageWork(server, out);
      }
    }
  }

  /**
   * A datagram or frame reaches the server: rate limits first for UDP; for
   * TCP, the first frame of a client opens its connection, which the
   * connection limits may refuse, and a request without a session spends
   * the same per-address budget as UDP (`admitFrame`; the real driver also
   * pauses the connection, which needs no model here). `clientKey` is the
   * sender's static key, which a sealed channel would have proved.
   */
  receive(
    now: number,
    source: string,
    tcp: boolean,
    data: Uint8Array,
    second = false,
    clientKey?: Uint8Array,
  ): void {
    const server = this.#core;
    if (server === undefined) return;
    const [address, port] = splitAddress(source);
    let message: Message | undefined;
    try {
      message = decodeMessage(data);
    } catch {
      message = undefined;
    }
    let from: Endpoint = second
      ? { transport: "udp", address, port, second }
      : { transport: "udp", address, port };
    // The simulator runs the cores without the secure layer (docs/SECURE_CHANNEL.md):
    // what carries a live token stands for what would have come sealed.
    const sealed = message !== undefined && server.hasLiveSession(message);
    // A clear `hello` is a first contact, as the real driver takes it (`admitHello`).
    const admitted = message?.type === "hello" && !sealed && !second
      ? server.admitHello(now, from)
      : server.admit(now, from, sealed);
    if (!tcp && !admitted) return this.drain();
    if (tcp) {
      let connId = this.#tcpConns.get(source);
      if (connId === undefined) {
        connId = this.#nextConnId++;
        this.#tcpConns.set(source, connId);
        this.#connAddress.set(connId, source);
        from = { transport: "tcp", address, port, connId };
        const admitted = server.connectionOpened(now, from);
        this.drain();
        if (!admitted) return;
      }
      from = { transport: "tcp", address, port, connId };
    }
    if (message === undefined) return;
    // A scenario's raw datagram stands for a stranger's, sealed with a key
    // pair of its own (derived from its client id).
    const key = clientKey ?? ("client" in message ? strangerKey(message.client) : undefined);
    if (key !== undefined) from = { ...from, clientKey: key };
    if (tcp && !server.admitFrame(now, from, message)) return this.drain();
    server.handle(now, from, message, data.length);
    this.drain();
  }

  /** Ends a client's TCP connection to the server; `tell` sends the client its end. */
  #closeConnection(connId: number, tell: boolean): void {
    const address = this.#connAddress.get(connId);
    if (address === undefined) return;
    this.#connAddress.delete(connId);
    this.#tcpConns.delete(address);
    if (tell) {
      this.#sim.network.sendReliable(this.#sim.clock.now(), SERVER_TCP, address, new Uint8Array(0));
    }
    this.#core?.connectionClosed(connId);
  }

  /**
   * The server's file work, on {@linkcode SimServer.blobs}: a commit or a deletion is
   * durable after a write delay (a crash before then loses it).
   */
  #storageWork(server: ServerCore, out: ServerOutput): void {
    const now = this.#sim.clock.now();
    const [min, max] = this.#options.writeDelayMs ?? [2, 20];
    const later = (work: () => void) =>
      this.#sim.at(now + min + this.#sim.random.next() * (max - min), () => {
        if (this.#core !== server) return;
        work();
        this.drain();
      });
    switch (out.type) {
      case "upload_begin":
        return this.blobs.beginUpload(out.id, out.user, out.name);
      case "upload_chunk":
        return this.blobs.write(out.id, out.data);
      case "upload_abort":
        return this.blobs.abort(out.id);
      case "upload_commit":
        return later(() =>
          server.uploadDone(out.id, this.blobs.commit(out.id, out, this.#sim.clock.now()))
        );
      case "delete_file":
        return later(() =>
          server.fileDeleted(
            out.id,
            this.blobs.delete(out.user, out.name)
              ? undefined
              : "The server could not delete the file",
          )
        );
      case "delete_user_files":
        return this.blobs.deleteUser(out.user);
      case "download": {
        const to = `${out.to.address}:${out.to.port}`;
        const send = (message: Message) =>
          this.#sim.network.sendReliable(now, SERVER_TCP, to, encodeMessage(message));
        const data = this.blobs.read(out.user, out.file.name);
        if (data === undefined) {
          return send({
            type: "error",
            reqId: out.reqId,
            code: ERROR_CODES.file_not_found,
            message: `The server could not read "${out.file.name}"`,
          });
        }
        send({ type: "download_ok", reqId: out.reqId, size: data.length, sha256: sha256(data) });
        for (let at = 0; at < data.length; at += MAX_CHUNK_BYTES) {
          const chunk = data.subarray(at, Math.min(data.length, at + MAX_CHUNK_BYTES));
          send({ type: "file_chunk", reqId: out.reqId, data: chunk });
        }
        return;
      }
    }
  }

  #newCore(): ServerCore {
    const users = new Map<string, PasswordUser>();
    for (const [name, password] of Object.entries(this.#options.passwords ?? {})) {
      users.set(nameKey(name), { name, passwordHash: SIM_HASH_PREFIX + password });
    }
    return new ServerCore({
      registry: Registry.fromJson(this.#disk),
      random: this.#sim.random,
      // A real server derives it from its key file, so it is the same after a restart
      // and introductions made before a crash still match those made after. The
      // simulator models behaviour, not secrecy: one fixed secret, no random draw.
      introductionSecret: SIM_INTRODUCTION_SECRET,
      tcpPort: 3001,
      version: "sim",
      leaseMs: this.#options.leaseMs,
      auth: this.#options.auth,
      users,
      dummyPasswordHash: `${SIM_HASH_PREFIX}\u0000`,
      maxAttempts: this.#options.maxAttempts,
      lockoutMs: this.#options.lockoutMs,
      limits: this.#options.limits,
      storage: this.#options.storage,
      udpPort2: this.#options.secondPort === false ? 0 : 3002,
      storedFiles: this.blobs.stored(),
    });
  }
}

function splitAddress(address: string): [string, number] {
  const colon = address.lastIndexOf(":");
  return [address.slice(0, colon), Number(address.slice(colon + 1))];
}

/** The static key a stranger (no client of the simulation) would have sealed with. */
function strangerKey(clientId: string): Uint8Array {
  return sha256(new TextEncoder().encode(`sim stranger ${clientId}`));
}
