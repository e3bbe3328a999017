/**
 * A client of the simulator: a real {@linkcode ClientCore} with a command
 * queue, what it was told, and in-memory files on which it does the file
 * work of peer transfers as the real driver does on disk.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2";
import type { ClientCore, CoreCommand } from "../client/client_core.ts";
import type { KeyPair } from "../crypto/key_pair.ts";
import type { ClientEvent, CommandResult } from "../client/client_event.ts";
import type { FileOperation } from "../client/outbox.ts";
import { toHex } from "../hex.ts";
import { numberedName } from "../wire/file_name.ts";

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
  /**
   * Its static key pair: its channel's key, which the server vouches for to
   * peers, and so its open-mode identity (the simulator runs the cores
   * without the secure layer; the server learns the public key a sealed
   * channel would have proved). Give a new client the same key pair
   * (`addClient({ keyPair })`) to model a new process of the same client.
   */
  keyPair: KeyPair | undefined;
  /** Its static public key (that of `keyPair`). */
  publicKey: Uint8Array | undefined;
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

  /**
   * Does the file work of a peer transfer on the in-memory files, at once,
   * and tells the core.
   *
   * @param now current virtual time, ms
   * @param op what the core asked for
   */
  fileOperation(now: number, op: FileOperation): void {
    const core = this.core;
    const receiving = this.#receiving;
    switch (op.type) {
      case "read": {
        const data = this.files.get(op.path);
        if (data === undefined || data.length < op.offset + op.length) {
          const problem = `Cannot read ${op.path}: it changed`;
          return core.fileReport(now, { kind: "failed", id: op.id, problem, failure: "read" });
        }
        const chunk = data.slice(op.offset, op.offset + op.length);
        return core.fileReport(now, { kind: "read", id: op.id, offset: op.offset, data: chunk });
      }
      case "send_end":
        return;
      case "receive_begin": {
        // As the real driver: two transfers of the same content at once do
        // not share a partial file; the second gets one of its own.
        const shared = `downloads/.${op.name}.${op.sha256.slice(0, 16)}.part`;
        const own = this.#claimed.has(shared);
        const partial = own ? shared.replace(/\.part$/, `.${op.id}.part`) : shared;
        this.#claimed.add(partial);
        const have = own
          ? new Uint8Array()
          : (this.files.get(partial) ?? new Uint8Array()).slice(0, op.size);
        this.files.set(partial, have);
        receiving.set(op.id, {
          partial,
          own,
          name: op.name,
          sha256: op.sha256,
        });
        return core.fileReport(now, { kind: "receive_ready", id: op.id, offset: have.length });
      }
      case "write": {
        const r = receiving.get(op.id);
        if (r === undefined) return;
        const have = this.files.get(r.partial)!;
        const used = [...this.files.values()].reduce((sum, f) => sum + f.length, 0);
        if (used + op.data.length > this.diskBytes) {
          this.files.delete(r.partial);
          receiving.delete(op.id);
          this.#claimed.delete(r.partial);
          return core.fileReport(now, {
            kind: "failed",
            id: op.id,
            problem: `Cannot write ${r.name}: No space left on device (os error 28)`,
            failure: "disk_full",
          });
        }
        this.files.set(r.partial, appended(have, op.data));
        return core.fileReport(now, {
          kind: "written",
          id: op.id,
          upTo: op.offset + op.data.length,
        });
      }
      case "receive_end": {
        const key = op.id;
        const r = receiving.get(key);
        if (r === undefined) return;
        receiving.delete(key);
        this.#claimed.delete(r.partial);
        const data = this.files.get(r.partial)!;
        this.files.delete(r.partial);
        if (toHex(sha256(data)) !== r.sha256) {
          return core.fileReport(now, {
            kind: "failed",
            id: op.id,
            problem: `The SHA-256 of "${r.name}" does not match`,
            failure: "checksum",
          });
        }
        let path = `downloads/${r.name}`;
        for (let n = 1; this.files.has(path); n++) path = `downloads/${numberedName(r.name, n)}`;
        this.files.set(path, data);
        return core.fileReport(now, { kind: "received", id: op.id, path });
      }
      case "receive_abort": {
        const key = op.id;
        const r = receiving.get(key);
        receiving.delete(key);
        if (r === undefined) return;
        this.#claimed.delete(r.partial);
        if (!op.keepPartial || r.own) this.files.delete(r.partial);
        return;
      }
    }
  }

  /** Receiving transfers, by id. */
  #receiving = new Map<number, { partial: string; own: boolean; name: string; sha256: string }>();
  /** The partial files a receiving transfer holds. */
  #claimed = new Set<string>();
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
