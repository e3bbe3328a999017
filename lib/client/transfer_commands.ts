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

/** What the driver did with a file of a peer transfer, reported back to the core. */
export type FileReport =
  /** Read a chunk of a file being sent. */
  | {
    readonly kind: "read";
    readonly id: number;
    readonly offset: number;
    readonly data: Uint8Array;
  }
  /** Ready to receive a file from `offset` (a partial file with the same content has that much). */
  | { readonly kind: "receive_ready"; readonly id: number; readonly offset: number }
  /** Wrote a received file up to `upTo` bytes (for progress). */
  | { readonly kind: "written"; readonly id: number; readonly upTo: number }
  /** Verified a received file and put it at `path`. */
  | { readonly kind: "received"; readonly id: number; readonly path: string }
  /** Could not read, write or verify: `problem` for this side's user, `failure` all the peer is told. */
  | {
    readonly kind: "failed";
    readonly id: number;
    readonly problem: string;
    readonly failure: FileFailure;
  };

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
   * Takes what the driver did with a file: read a chunk of one being sent,
   * got ready to receive one, wrote, verified, or failed.
   *
   * @param now current time, ms
   * @param report what happened
   */
  report(now: number, report: FileReport): void {
    const id = report.id;
    switch (report.kind) {
      case "read":
        this.#transfers.readDone(now, id, report.offset, report.data);
        break;
      case "receive_ready":
        this.#transfers.receiveReady(now, id, report.offset);
        break;
      case "written":
        this.#transfers.written(now, id, report.upTo);
        return this.#peers.drainTransfers(now);
      case "received":
        this.#transfers.received(now, id, report.path);
        break;
      case "failed":
        this.#transfers.failed(now, id, report.problem, report.failure);
        break;
    }
    this.#peers.drainAll(now);
  }
}
