/**
 * What the client core asks its driver to do, or reports, and the queue its
 * parts put that into.
 *
 * @module
 */
import type { MessageOf, Request } from "../wire/messages.ts";
import type { ClientEvent, CommandResult, FailureCode } from "./client_event.ts";
import type { FileTransfersOutput } from "./file_transfers.ts";
import type { PeerAddress, PeerSent } from "./peer_session.ts";
import type { Via } from "./server_session.ts";

/** File work for a transfer between peers: read, write, verify, close. */
export type FileOperation = Exclude<FileTransfersOutput, { type: "event" }>;

/** One step of a peer message's life, for the log and the simulator's invariants. */
export interface PeerTrace {
  /** `sent` (handed to the channel), `acked` (the peer has it) or `delivered` (to us). */
  readonly step: "sent" | "acked" | "delivered";
  /** The session id. */
  readonly session: string;
  /** The other client's name. */
  readonly peer: string;
  /** The message's number in its session and direction, from 0. */
  readonly index: number;
  /** The text. */
  readonly text: string;
}

/** What the core asks its driver to do, or reports. */
export type ClientOutput =
  | {
    readonly type: "send";
    readonly via: Via;
    /** A `relay` goes in clear: its payload is the peers' own datagram. */
    readonly message: Request | MessageOf<"presence_ack" | "reflect" | "relay">;
    /** 1 for the first send, 2 for the first retransmission, and so on. */
    readonly attempt: number;
    /** The server's UDP port to send to when not its main one (address discovery's second port). */
    readonly port?: number;
  }
  /**
   * Move to the next instance of the service now: the one in use said it is
   * shutting down (only when the client was given several, `--server a,b`).
   */
  | { readonly type: "move" }
  /** The result of the command `run` numbered `id`. */
  | { readonly type: "result"; readonly id: number; readonly result: CommandResult }
  | { readonly type: "event"; readonly event: ClientEvent }
  /**
   * Save that this name is registered to the client's key pair on this
   * server, without any version 2 identity key (it no longer logs in).
   */
  | { readonly type: "identity"; readonly name: string }
  /** Send a datagram to another client. */
  /** Send this datagram to a peer (a handshake message, a clear reject, or sealed). */
  | {
    readonly type: "peer_send";
    readonly to: PeerAddress;
    readonly bytes: Uint8Array;
    /** What `bytes` carries, in clear, for traces and tests (never sent as such). */
    readonly sent: PeerSent;
  }
  /** A peer message was sent, acknowledged or delivered (for the log and the simulator). */
  | { readonly type: "trace"; readonly trace: PeerTrace }
  /** File work for a transfer between peers; report back with the `file...` methods. */
  | { readonly type: "file"; readonly op: FileOperation };

/**
 * The queue of a client core's outputs, shared by its parts; it also
 * remembers which commands have finished, so the core can start the next.
 *
 * @example
 * ```ts
 * const outbox = new Outbox();
 * outbox.fail(1, "send", "No open session", "no_session");
 * outbox.poll(); // { type: "result", id: 1, result: { ok: false, ... } }
 * ```
 */
export class Outbox {
  #outputs: ClientOutput[] = [];
  #finished: number[] = [];

  /** @param output the output to queue */
  push(output: ClientOutput): void {
    this.#outputs.push(output);
  }

  /**
   * Reports the result of a command.
   *
   * @param id the command's number
   * @param result its result
   */
  result(id: number, result: CommandResult): void {
    this.#finished.push(id);
    this.#outputs.push({ type: "result", id, result });
  }

  /**
   * Reports a failed command.
   *
   * @param id the command's number
   * @param command its name
   * @param error one sentence
   * @param code why, for programs
   */
  fail(id: number, command: string, error: string, code: FailureCode): void {
    this.result(id, { ok: false, command, error, code });
  }

  /** @param event an event to report */
  event(event: ClientEvent): void {
    this.#outputs.push({ type: "event", event });
  }

  /** @returns the numbers of the commands finished since the last call */
  takeFinished(): number[] {
    const finished = this.#finished;
    this.#finished = [];
    return finished;
  }

  /** @returns the next output, or undefined */
  poll(): ClientOutput | undefined {
    return this.#outputs.shift();
  }
}
