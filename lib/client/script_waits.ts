/**
 * What scripts wait for: `wait messages|request|terminate|offer|transfers`
 * and an `accept` that comes before the request. Each wait completes when
 * its condition holds or fails when its time is up; several may wait at once.
 *
 * @module
 */
import { nameKey } from "../wire/client_name.ts";
import type { Command } from "./command.ts";
import type { CommandResult } from "./client_event.ts";
import { messagesWaitedText } from "./client_event_text.ts";
import type { FileTransfers } from "./file_transfers.ts";
import type { TransferInfo } from "./client_event.ts";
import type { Outbox } from "./outbox.ts";
import { type PeerNews, type PeerTable, requestMissing } from "./peer_table.ts";
import type { ClientTimer, TimerTable } from "./timer_table.ts";
import { FILE_STATES_RUNNING } from "./transfer_commands.ts";

/** The commands that may wait. */
export type WaitCommand = Extract<Command, { kind: "wait" | "accept" }>;

/** Options of {@linkcode ScriptWaits}. */
export interface ScriptWaitsOptions {
  peers: PeerTable;
  transfers: FileTransfers;
  outbox: Outbox;
  /** The core's timers; the waits own `waits`. */
  timers: TimerTable<ClientTimer>;
  /** How long an `accept` and a `wait` without `within` wait, ms. */
  giveUpMs: number;
}

/** A waiting command and when it gives up. */
interface Waiting {
  readonly command: WaitCommand;
  readonly deadline: number;
}

/** A wait whose condition holds: its result, and what it reported. */
interface Outcome {
  readonly result: CommandResult;
  readonly transfers?: readonly TransferInfo[];
  readonly offer?: TransferInfo;
  readonly ended?: number;
}

/**
 * Script waits.
 *
 * @example
 * ```ts
 * const waits = new ScriptWaits({ peers, transfers, outbox, timers, giveUpMs: 30_000 });
 * waits.run(now, 6, { kind: "wait", for: "messages", count: 2 });
 * ```
 */
export class ScriptWaits implements PeerNews {
  #options: ScriptWaitsOptions;
  #outbox: Outbox;
  #waiting = new Map<number, Waiting>();
  /** Messages received, by peer (name key), and in all under "". */
  #messages = new Map<string, number>();
  /** Peers whose sessions they ended (or that died), not yet reported by a `wait terminate`. */
  #ended: string[] = [];
  /** Transfers whose end a `wait transfers` has reported. */
  #transfersReported = new Set<number>();
  /** Offers a `wait offer` has reported. */
  #offersReported = new Set<number>();
  #checking = false;
  #again = false;

  /** @param options the peers and transfers waited on, the outbox and the timers */
  constructor(options: ScriptWaitsOptions) {
    this.#options = options;
    this.#outbox = options.outbox;
    options.peers.listen(this);
  }

  /**
   * Starts a `wait`, or an `accept` (at once if a request is pending).
   *
   * @param now current time, ms
   * @param id the command's number
   * @param command the command
   */
  run(now: number, id: number, command: WaitCommand): void {
    if (command.kind === "accept") {
      const problem = this.#options.peers.requestProblem(command.name, "accept");
      if (problem !== undefined) return this.#outbox.fail(id, "accept", problem, "no_request");
      const peer = this.#options.peers.byName(command.name, ["pending"]);
      if (peer !== undefined) return this.#options.peers.accept(now, id, peer);
    }
    // Transfers end by themselves (a silent peer ends its session), so
    // waiting for them is bounded only when the script says so.
    const withinMs = command.kind === "accept"
      ? this.#options.giveUpMs
      : command.withinMs ?? (command.for === "transfers" ? 86_400_000 : this.#options.giveUpMs);
    this.#waiting.set(id, { command, deadline: now + withinMs });
    this.check(now);
  }

  /** @param peer a chat message from it was delivered */
  message(peer: string): void {
    const key = nameKey(peer);
    this.#messages.set(key, (this.#messages.get(key) ?? 0) + 1);
    this.#messages.set("", (this.#messages.get("") ?? 0) + 1);
  }

  /** @param peer its session ended by its doing, or died */
  ended(peer: string): void {
    this.#ended.push(peer);
  }

  /** @param now current time, ms */
  changed(now: number): void {
    this.check(now);
  }

  /**
   * Completes the waits whose condition holds or whose time is up.
   *
   * @param now current time, ms
   */
  check(now: number): void {
    if (this.#checking) {
      this.#again = true;
      return;
    }
    this.#checking = true;
    try {
      do {
        this.#again = false;
        for (const [id, waiting] of [...this.#waiting]) {
          if (this.#waiting.get(id) === waiting) this.#checkOne(now, id, waiting);
        }
      } while (this.#again);
    } finally {
      this.#checking = false;
    }
    let next: number | undefined;
    for (const { deadline } of this.#waiting.values()) {
      if (next === undefined || deadline < next) next = deadline;
    }
    this.#options.timers.set("waits", next);
  }

  #checkOne(now: number, id: number, { command, deadline }: Waiting): void {
    if (command.kind === "accept") {
      const peer = this.#options.peers.byName(command.name, ["pending"]);
      if (peer !== undefined) {
        this.#waiting.delete(id);
        return this.#options.peers.accept(now, id, peer);
      }
      if (now < deadline) return;
      this.#waiting.delete(id);
      return this.#outbox.fail(
        id,
        "accept",
        `${requestMissing(command.name)} within ${Math.round(this.#options.giveUpMs / 1000)} s`,
        "timeout",
      );
    }
    const done = this.#outcome(command);
    if (done !== undefined) {
      this.#waiting.delete(id);
      for (const t of done.transfers ?? []) this.#transfersReported.add(t.id);
      if (done.offer !== undefined) this.#offersReported.add(done.offer.id);
      if (done.ended !== undefined) this.#ended.splice(done.ended, 1);
      return this.#outbox.result(id, done.result);
    }
    if (now < deadline) return;
    this.#waiting.delete(id);
    const seen = this.#progress(command);
    const seconds = Math.round((command.withinMs ?? this.#options.giveUpMs) / 1000);
    this.#outbox.fail(
      id,
      "wait",
      `Waited ${seconds} s in vain` + (seen ? ` (${seen})` : ""),
      "timeout",
    );
  }

  /** The result of a `wait` whose condition holds, and what it reports, or undefined. */
  #outcome(command: Extract<WaitCommand, { kind: "wait" }>): Outcome | undefined {
    const key = command.name === undefined ? "" : nameKey(command.name);
    switch (command.for) {
      case "messages": {
        const count = this.#messages.get(key) ?? 0;
        if (count < (command.count ?? 1)) return undefined;
        const result = { ok: true, command: "wait", for: "messages", count } as const;
        return { result: command.name === undefined ? result : { ...result, name: command.name } };
      }
      case "request": {
        const peer = this.#options.peers.byName(command.name, ["pending"]);
        if (peer === undefined) return undefined;
        return { result: { ok: true, command: "wait", for: "request", name: peer.peerName } };
      }
      case "terminate": {
        // Each end is reported once, so a script can accept and wait again.
        const at = this.#ended.findIndex((n) => key === "" || nameKey(n) === key);
        if (at === -1) return undefined;
        const name = this.#ended[at];
        return { ended: at, result: { ok: true, command: "wait", for: "terminate", name } };
      }
      case "offer": {
        // Each offer is reported once, whatever happened to it since: with
        // --accept-files it is accepted (or even done) the moment it comes.
        const offer = this.#options.transfers.list().find((t) =>
          t.direction === "receive" && !this.#offersReported.has(t.id) &&
          (key === "" || nameKey(t.peer) === key)
        );
        if (offer === undefined) return undefined;
        return { offer, result: { ok: true, command: "wait", for: "offer", offer } };
      }
      case "transfers": {
        const mine = this.#waitedTransfers(key);
        if (mine.some((t) => FILE_STATES_RUNNING.has(t.state))) return undefined;
        const failed = mine.filter((t) => t.state !== "done" && t.resumedBy === undefined);
        // Reported either way: a later wait looks only at later transfers.
        if (failed.length === 0) {
          return {
            transfers: mine,
            result: { ok: true, command: "wait", for: "transfers", transfers: mine },
          };
        }
        const list = failed.map((t) => `${t.id} ${t.state}${t.reason ? ` (${t.reason})` : ""}`);
        return {
          transfers: mine,
          result: {
            ok: false,
            command: "wait",
            error: `${failed.length} of ${mine.length} transfers did not finish: ${
              list.join("; ")
            }`,
            code: "transfer_failed",
          },
        };
      }
    }
  }

  /** What a `wait` has seen so far, for its time-out error. */
  #progress(command: Extract<WaitCommand, { kind: "wait" }>): string {
    const key = command.name === undefined ? "" : nameKey(command.name);
    if (command.for === "messages") {
      return messagesWaitedText(this.#messages.get(key) ?? 0, command.name);
    }
    if (command.for === "transfers") {
      const mine = this.#waitedTransfers(key);
      const running = mine.filter((t) => FILE_STATES_RUNNING.has(t.state));
      return `${running.length} of ${mine.length} transfers still running`;
    }
    return "";
  }

  #waitedTransfers(key: string): TransferInfo[] {
    return this.#options.transfers.list().filter((t) =>
      !this.#transfersReported.has(t.id) && (key === "" || nameKey(t.peer) === key)
    );
  }
}
