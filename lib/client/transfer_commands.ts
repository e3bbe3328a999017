/**
 * The commands on files sent between peers (`sendfile`, `acceptfile`,
 * `declinefile`, `cancel`, `transfers`) and the driver's reports on its
 * file work, passed to {@linkcode FileTransfers}.
 *
 * @module
 */
import type { FileFailure, FileTransfers } from "./file_transfers.ts";
import type { Outbox } from "./outbox.ts";
import type { PeerTable } from "./peer_table.ts";

/** The commands on peer file transfers (the driver has hashed a `sendfile`'s file). */
export type TransferCommand =
  | { readonly kind: "transfers" }
  | {
    readonly kind: "sendfile";
    readonly to?: string;
    readonly path: string;
    readonly name: string;
    readonly size: number;
    readonly sha256: Uint8Array;
  }
  | { readonly kind: "acceptfile" | "declinefile" | "cancel"; readonly id?: number };

/** Transfer states that are not over. */
export const FILE_STATES_RUNNING: ReadonlySet<string> = new Set([
  "offered",
  "preparing",
  "active",
  "verifying",
]);

/**
 * Transfer commands and file work reports.
 *
 * @example
 * ```ts
 * const commands = new TransferCommands(transfers, peers, outbox);
 * commands.run(now, 5, { kind: "transfers" });
 * ```
 */
export class TransferCommands {
  #transfers: FileTransfers;
  #peers: PeerTable;
  #outbox: Outbox;

  /**
   * @param transfers the transfers
   * @param peers the sessions they run on
   * @param outbox where results go
   */
  constructor(transfers: FileTransfers, peers: PeerTable, outbox: Outbox) {
    this.#transfers = transfers;
    this.#peers = peers;
    this.#outbox = outbox;
  }

  /**
   * Runs a transfer command.
   *
   * @param now current time, ms
   * @param id the command's number
   * @param command the command
   */
  run(now: number, id: number, command: TransferCommand): void {
    const kind = command.kind;
    if (kind === "transfers") {
      const transfers = this.#transfers.list();
      return this.#outbox.result(id, { ok: true, command: "transfers", transfers });
    }
    if (kind === "sendfile") {
      const problem = this.#peers.sessionProblem(command.to, "sendfile");
      if (problem !== undefined) return this.#outbox.fail(id, kind, problem, "no_session");
      const peer = this.#peers.open(command.to)[0];
      const transfer = this.#transfers.offer(now, peer, command);
      this.#peers.drain(now, peer);
      return this.#outbox.result(id, {
        ok: true,
        command: "sendfile",
        id: transfer,
        to: peer.peerName,
        name: command.name,
        size: command.size,
      });
    }
    const candidates = this.#transfers.list().filter((t) =>
      kind === "cancel"
        ? FILE_STATES_RUNNING.has(t.state)
        : t.direction === "receive" && t.state === "offered"
    );
    let transfer = command.id;
    if (transfer === undefined) {
      if (candidates.length !== 1) {
        return this.#outbox.fail(
          id,
          kind,
          candidates.length === 0
            ? kind === "cancel" ? "No transfer is running" : "No file is offered to you"
            : `Transfers ${
              candidates.map((t) => t.id).join(", ")
            } could be meant; say which: ${kind} ID`,
          "no_transfer",
        );
      }
      transfer = candidates[0].id;
    }
    const problem = kind === "acceptfile"
      ? this.#transfers.accept(now, transfer)
      : kind === "declinefile"
      ? this.#transfers.decline(now, transfer)
      : this.#transfers.cancel(now, transfer);
    this.#peers.drainAll(now);
    if (problem !== undefined) return this.#outbox.fail(id, kind, problem, "no_transfer");
    const t = this.#transfers.get(transfer)!;
    this.#outbox.result(id, { ok: true, command: kind, id: transfer, name: t.name, peer: t.peer });
  }

  /**
   * The driver read a chunk of a file being sent.
   *
   * @param now current time, ms
   * @param id the transfer
   * @param offset where the chunk starts
   * @param data the bytes
   */
  read(now: number, id: number, offset: number, data: Uint8Array): void {
    this.#transfers.readDone(now, id, offset, data);
    this.#peers.drainAll(now);
  }

  /**
   * The driver is ready to receive a file from `offset`.
   *
   * @param now current time, ms
   * @param id the transfer
   * @param offset where receiving starts
   */
  receiveReady(now: number, id: number, offset: number): void {
    this.#transfers.receiveReady(now, id, offset);
    this.#peers.drainAll(now);
  }

  /**
   * The driver wrote a received file up to `upTo`.
   *
   * @param now current time, ms
   * @param id the transfer
   * @param upTo bytes written
   */
  written(now: number, id: number, upTo: number): void {
    this.#transfers.written(now, id, upTo);
    this.#peers.drainTransfers(now);
  }

  /**
   * The driver verified a received file and put it at `path`.
   *
   * @param now current time, ms
   * @param id the transfer
   * @param path where it is
   */
  received(now: number, id: number, path: string): void {
    this.#transfers.received(now, id, path);
    this.#peers.drainAll(now);
  }

  /**
   * The driver's file work failed.
   *
   * @param now current time, ms
   * @param id the transfer
   * @param problem one sentence, for this side's user only
   * @param failure what failed, all the peer is told
   */
  failed(now: number, id: number, problem: string, failure: FileFailure): void {
    this.#transfers.failed(now, id, problem, failure);
    this.#peers.drainAll(now);
  }
}
