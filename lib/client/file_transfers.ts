/**
 * Files sent directly between peers over their session's reliable channel:
 * offers, acceptance (with resume), chunks with backpressure, the receiver's
 * SHA-256 verdict, cancel from either side. Sans-I/O: reading and writing
 * files are outputs for the driver, which reports back.
 *
 * @module
 */
import { toHex } from "../hex.ts";
import { nameKey } from "../wire/client_name.ts";
import { fileNameProblem } from "../wire/file_name.ts";
import { FILE_CHUNK_BYTES, MAX_REASON_BYTES } from "../wire/peer_payload.ts";
import type { FilePayload, PeerSession } from "./peer_session.ts";
import type {
  TransferDirection,
  TransferEvent,
  TransferInfo,
  TransferState,
} from "./client_event.ts";

/** The states a transfer does not leave. */
const FINAL_STATES: ReadonlySet<TransferState> = new Set([
  "done",
  "declined",
  "cancelled",
  "failed",
  "interrupted",
]);

/** What the transfers ask the driver to do, or report. */
export type FileTransfersOutput =
  /** Read `length` bytes at `offset` of the source; answer with `readDone` or `failed`. */
  | {
    readonly type: "read";
    readonly id: number;
    readonly path: string;
    readonly offset: number;
    readonly length: number;
  }
  /** Sending ended (any way): close the source. */
  | { readonly type: "send_end"; readonly id: number }
  /**
   * Prepare to receive: find a partial file of this content to resume, or
   * start one; answer with `receiveReady(offset)` or `failed`.
   */
  | {
    readonly type: "receive_begin";
    readonly id: number;
    readonly peer: string;
    readonly name: string;
    readonly size: number;
    readonly sha256: string;
  }
  /** Append data at `offset` of the partial file; on error answer `failed`. */
  | {
    readonly type: "write";
    readonly id: number;
    readonly offset: number;
    readonly data: Uint8Array;
  }
  /**
   * Everything arrived: flush, check the SHA-256, move the file into place
   * without overwriting; answer with `received(path)` or `failed`.
   */
  | { readonly type: "receive_end"; readonly id: number }
  /** Receiving stopped: close the partial file, and remove it unless `keepPartial`. */
  | { readonly type: "receive_abort"; readonly id: number; readonly keepPartial: boolean }
  /** Something for the user. */
  | { readonly type: "event"; readonly event: TransferEvent };

interface Transfer {
  id: number;
  resumedBy?: number;
  /** The id on the wire: the sender's local id. */
  wireId: number;
  direction: TransferDirection;
  session: PeerSession;
  name: string;
  size: number;
  sha256: Uint8Array;
  path?: string;
  state: TransferState;
  reason?: string;
  /** Sending: next byte to read. Receiving: bytes received. */
  next: number;
  /** Bytes the receiver has: acknowledged (sending) or written (receiving). */
  done: number;
  startOffset: number;
  startedAt: number;
  progressAt: number;
  reads: number;
  /** Sending: channel message id of each chunk -> the offset after it. */
  chunks: Map<number, number>;
}

/** Most reads of one transfer in flight at once. */
const MAX_READS = 4;
/**
 * Channel segments queued or in flight above which no more chunks are read:
 * twice the largest congestion window, so the window never waits for the disk.
 */
const MAX_BACKLOG_SEGMENTS = 2048;
/** Segments of one chunk on the channel (1100 bytes of payload a segment). */
const CHUNK_SEGMENTS = Math.ceil(FILE_CHUNK_BYTES / 1100);
/** The backlog allowed on top of twice the congestion window: the reads in flight. */
const MIN_BACKLOG_SEGMENTS = MAX_READS * CHUNK_SEGMENTS;
/** The reason a cancel by a user carries (others report a problem). */
const USER_CANCEL_REASON = "cancelled by the user";
/** The reason a decline by a user carries (an offer refused for its name says why). */
const USER_DECLINE_REASON = "declined by the user";

/** What went wrong with a transfer's file work on this side. */
export type FileFailure = "read" | "write" | "disk_full" | "no_room" | "checksum";

/**
 * What the peer is told when this side's file work fails: one plain reason,
 * never a local path or the operating system's words, which stay in the
 * local message.
 */
const FAILURE_TOLD_TO_PEER: Record<FileFailure, string> = {
  read: "the sender could not read the file",
  write: "the receiver could not save the file",
  disk_full: "the receiver's disk is full",
  no_room: "the receiver has too little free space for the file",
  checksum: "the file arrived damaged (its SHA-256 did not match) and was removed",
};
/** Progress events at most this often per transfer, ms. */
const PROGRESS_INTERVAL_MS = 500;

/** Default largest file accepted from a peer, bytes (4 GiB). */
export const DEFAULT_MAX_RECEIVE = 4 * 1024 ** 3;
/** Default most offers waiting for an answer or being received at once. */
export const DEFAULT_MAX_OPEN_OFFERS = 4;

/** Options of {@linkcode FileTransfers}. */
export interface FileTransfersOptions {
  /** Accept every offer at once (`--accept-files`). */
  autoAccept: boolean;
  /** Offers of larger files are declined, bytes (`--max-receive`, default 4 GiB). */
  maxReceive?: number;
  /**
   * Most offers waiting for an answer or being received at once (default
   * 4); more are declined without a record or a line for the user.
   */
  maxOpenOffers?: number;
}

/**
 * Every file transfer of one client, both ways.
 *
 * @example
 * ```ts
 * const transfers = new FileTransfers({ autoAccept: false });
 * const id = transfers.offer(now, session, { path: "a.bin", name: "a.bin", size, sha256 });
 * for (let out = transfers.poll(); out; out = transfers.poll()) {
 *   // read, write, ... and report back with readDone, receiveReady, received, failed
 * }
 * ```
 */
export class FileTransfers {
  #options: FileTransfersOptions;
  #transfers = new Map<number, Transfer>();
  #nextId = 1;
  #outputs: FileTransfersOutput[] = [];

  /** @param options whether offers are accepted at once */
  constructor(options: FileTransfersOptions) {
    this.#options = options;
  }

  /** Every transfer of this run, oldest first. */
  list(): TransferInfo[] {
    return [...this.#transfers.values()].map(info);
  }

  /** True while a transfer is not over (offers waiting for an answer included). */
  get busy(): boolean {
    return [...this.#transfers.values()].some((t) => !FINAL_STATES.has(t.state));
  }

  /** The transfer with this id, if any. */
  get(id: number): TransferInfo | undefined {
    const t = this.#transfers.get(id);
    return t === undefined ? undefined : info(t);
  }

  /**
   * Offers a file to the peer of an open session.
   *
   * @param now the current time, ms
   * @param session the open session
   * @param file the source, the name to offer, its size and SHA-256
   * @returns the transfer's id
   */
  offer(
    now: number,
    session: PeerSession,
    file: { path: string; name: string; size: number; sha256: Uint8Array },
  ): number {
    const id = this.#nextId++;
    const t = this.#add({ id, wireId: id, direction: "send", session, ...file, now });
    session.sendPayload(now, {
      kind: "file_offer",
      transfer: id,
      size: file.size,
      sha256: file.sha256,
      name: file.name,
    });
    return t.id;
  }

  /**
   * Accepts an offer: the driver is asked to prepare the file.
   *
   * @param now the current time, ms
   * @param id the transfer
   * @returns undefined, or why it cannot be accepted
   */
  accept(now: number, id: number): string | undefined {
    const t = this.#transfers.get(id);
    if (t === undefined || t.direction !== "receive") return `There is no offer ${id}`;
    if (t.state !== "offered") return `Transfer ${id} is ${t.state}, not waiting for an answer`;
    t.state = "preparing";
    t.startedAt = now;
    this.#outputs.push({
      type: "receive_begin",
      id,
      peer: t.session.peerName,
      name: t.name,
      size: t.size,
      sha256: toHex(t.sha256),
    });
    return undefined;
  }

  /**
   * Declines an offer.
   *
   * @param now the current time, ms
   * @param id the transfer
   * @returns undefined, or why it cannot be declined
   */
  decline(now: number, id: number): string | undefined {
    const t = this.#transfers.get(id);
    if (t === undefined || t.direction !== "receive") return `There is no offer ${id}`;
    if (t.state !== "offered") return `Transfer ${id} is ${t.state}, not waiting for an answer`;
    this.#tell(now, t, { kind: "file_decline", transfer: t.wireId, reason: USER_DECLINE_REASON });
    this.#end(t, "declined");
    return undefined;
  }

  /**
   * Cancels a transfer from our side; the peer is told.
   *
   * @param now the current time, ms
   * @param id the transfer
   * @returns undefined, or why it cannot be cancelled
   */
  cancel(now: number, id: number): string | undefined {
    const t = this.#transfers.get(id);
    if (t === undefined) return `There is no transfer ${id}`;
    if (FINAL_STATES.has(t.state)) return `Transfer ${id} is already ${t.state}`;
    this.#tell(now, t, {
      kind: "file_cancel",
      transfer: t.wireId,
      bySender: t.direction === "send",
      reason: USER_CANCEL_REASON,
    });
    this.#end(t, "cancelled");
    return undefined;
  }

  /**
   * Takes a file payload from a session.
   *
   * @param now the current time, ms
   * @param session where it came from
   * @param payload the payload
   */
  handle(now: number, session: PeerSession, payload: FilePayload): void {
    if (payload.kind === "file_offer") return this.#onOffer(now, session, payload);
    // Ids are the sender's: chunks, and cancels by the sender, are for what we receive.
    const receiving = payload.kind === "file_chunk" ||
      (payload.kind === "file_cancel" && payload.bySender);
    const t = this.#find(session, payload.transfer, receiving ? "receive" : "send");
    if (t === undefined || FINAL_STATES.has(t.state)) return;
    switch (payload.kind) {
      case "file_accept":
        if (t.state !== "offered") return;
        if (payload.offset > t.size) {
          return this.#fail(
            now,
            t,
            `the receiver asked to resume at ${payload.offset}, beyond the end`,
          );
        }
        t.state = "active";
        t.next = t.done = t.startOffset = payload.offset;
        t.startedAt = t.progressAt = now;
        this.#emit({ kind: "file_accepted", ...info(t) });
        if (t.next === t.size) t.state = "verifying";
        return this.#pump(now);
      case "file_decline":
        return this.#end(
          t,
          "declined",
          `"${t.session.peerName}" declined it` +
            (payload.reason === USER_DECLINE_REASON ? "" : `: ${payload.reason}`),
        );
      case "file_cancel":
        // A cancel by the other user is a cancel; one for a problem (a full disk) is a failure.
        return this.#end(
          t,
          payload.reason === USER_CANCEL_REASON ? "cancelled" : "failed",
          `"${t.session.peerName}" ` +
            (payload.reason === USER_CANCEL_REASON
              ? "cancelled it"
              : `stopped it: ${payload.reason}`),
        );
      case "file_done":
        if (!payload.ok) {
          return this.#end(t, "failed", `"${t.session.peerName}": ${payload.reason}`);
        }
        t.done = t.size;
        return this.#end(t, "done");
      case "file_chunk":
        return this.#onChunk(now, t, payload.offset, payload.data);
    }
  }

  /**
   * Notes that the peer acknowledged a channel message (chunks move the
   * sender's progress) and reads more.
   *
   * @param now the current time, ms
   * @param session the session
   * @param messageId the channel message id
   */
  acked(now: number, session: PeerSession, messageId: number): void {
    for (const t of this.#transfers.values()) {
      if (t.session !== session || t.direction !== "send") continue;
      const end = t.chunks.get(messageId);
      if (end === undefined) continue;
      t.chunks.delete(messageId);
      t.done = Math.max(t.done, end);
      this.#progress(now, t);
    }
    this.#pump(now);
  }

  /**
   * Reads more chunks for every sending transfer whose channel has room
   * (call after acks and timeouts).
   *
   * @param now the current time, ms
   */
  pump(now: number): void {
    this.#pump(now);
  }

  /**
   * The driver read a chunk: it goes to the peer.
   *
   * @param now the current time, ms
   * @param id the transfer
   * @param offset where the chunk starts
   * @param data the bytes read (as many as asked)
   */
  readDone(now: number, id: number, offset: number, data: Uint8Array): void {
    const t = this.#transfers.get(id);
    if (t === undefined) return;
    t.reads--;
    if (t.state !== "active") return;
    const messageId = this.#tell(now, t, { kind: "file_chunk", transfer: t.wireId, offset, data });
    if (messageId !== undefined) t.chunks.set(messageId, offset + data.length);
    if (t.reads === 0 && t.next === t.size) t.state = "verifying";
    this.#pump(now);
  }

  /**
   * The driver is ready to receive: `offset` bytes of a partial file are
   * already there (0 for a new file).
   *
   * @param now the current time, ms
   * @param id the transfer
   * @param offset bytes to skip
   */
  receiveReady(now: number, id: number, offset: number): void {
    const t = this.#transfers.get(id);
    if (t === undefined || t.state !== "preparing") return;
    t.state = "active";
    t.next = t.done = t.startOffset = Math.min(offset, t.size);
    t.progressAt = now;
    this.#tell(now, t, { kind: "file_accept", transfer: t.wireId, offset: t.next });
    this.#emit({ kind: "file_accepted", ...info(t) });
    if (t.next === t.size) this.#finishReceiving(t);
  }

  /**
   * The driver wrote data (progress of a receiving transfer).
   *
   * @param now the current time, ms
   * @param id the transfer
   * @param upTo the offset now written
   */
  written(now: number, id: number, upTo: number): void {
    const t = this.#transfers.get(id);
    if (t === undefined || t.direction !== "receive") return;
    t.done = Math.max(t.done, upTo);
    this.#progress(now, t);
  }

  /**
   * The driver checked and placed a received file.
   *
   * @param now the current time, ms
   * @param id the transfer
   * @param path where it landed
   */
  received(now: number, id: number, path: string): void {
    const t = this.#transfers.get(id);
    if (t === undefined || t.state !== "verifying") return;
    t.path = path;
    t.done = t.size;
    this.#tell(now, t, { kind: "file_done", transfer: t.wireId, ok: true, reason: "" });
    this.#end(t, "done");
  }

  /**
   * The driver could not go on (read, write, space, checksum): the peer is
   * told and the transfer fails.
   *
   * @param now the current time, ms
   * @param id the transfer
   * @param problem one sentence, for this side's user only
   * @param failure what failed, all the peer is told
   */
  failed(now: number, id: number, problem: string, failure: FileFailure): void {
    const t = this.#transfers.get(id);
    if (t === undefined || FINAL_STATES.has(t.state)) return;
    this.#fail(now, t, problem, FAILURE_TOLD_TO_PEER[failure]);
  }

  /**
   * A session ended: its transfers stop; partial files are kept so that
   * sending the same file again resumes.
   *
   * @param session the session
   * @param reason why it ended
   */
  sessionEnded(session: PeerSession, reason: string): void {
    for (const t of this.#transfers.values()) {
      if (t.session !== session || FINAL_STATES.has(t.state)) continue;
      const resumable = t.direction === "receive" && t.state !== "offered";
      this.#end(
        t,
        "interrupted",
        reason + (resumable ? "; the part received is kept, so sending it again resumes" : ""),
        { keepPartial: true },
      );
    }
  }

  /** @returns the next output, or undefined */
  poll(): FileTransfersOutput | undefined {
    return this.#outputs.shift();
  }

  #add(
    init: {
      id: number;
      wireId: number;
      direction: TransferDirection;
      session: PeerSession;
      name: string;
      size: number;
      sha256: Uint8Array;
      path?: string;
      now: number;
    },
  ): Transfer {
    const t: Transfer = {
      id: init.id,
      wireId: init.wireId,
      direction: init.direction,
      session: init.session,
      name: init.name,
      size: init.size,
      sha256: init.sha256,
      path: init.path,
      state: "offered",
      next: 0,
      done: 0,
      startOffset: 0,
      startedAt: init.now,
      progressAt: init.now,
      reads: 0,
      chunks: new Map(),
    };
    // Sending a file again after an interruption resumes it: the earlier attempt is not a failure.
    const sha = toHex(t.sha256);
    for (const old of this.#transfers.values()) {
      if (
        old.state === "interrupted" && old.resumedBy === undefined &&
        old.direction === t.direction && old.name === t.name && toHex(old.sha256) === sha &&
        nameKey(old.session.peerName) === nameKey(t.session.peerName)
      ) {
        old.resumedBy = t.id;
      }
    }
    this.#transfers.set(t.id, t);
    return t;
  }

  #find(session: PeerSession, wireId: number, direction: TransferDirection): Transfer | undefined {
    for (const t of this.#transfers.values()) {
      if (t.session === session && t.wireId === wireId && t.direction === direction) return t;
    }
    return undefined;
  }

  #onOffer(now: number, session: PeerSession, offer: FilePayload & { kind: "file_offer" }): void {
    if (this.#find(session, offer.transfer, "receive") !== undefined) return;
    const open =
      [...this.#transfers.values()].filter((t) =>
        t.direction === "receive" && !FINAL_STATES.has(t.state)
      ).length;
    if (open >= (this.#options.maxOpenOffers ?? DEFAULT_MAX_OPEN_OFFERS)) {
      // A flood of offers costs one short answer each, and nothing kept.
      session.sendPayload(now, {
        kind: "file_decline",
        transfer: offer.transfer,
        reason: `the receiver has ${open} offers waiting or being received; try again later`,
      });
      return;
    }
    const t = this.#add({
      id: this.#nextId++,
      wireId: offer.transfer,
      direction: "receive",
      session,
      name: offer.name,
      size: offer.size,
      sha256: offer.sha256,
      now,
    });
    const problem = fileNameProblem(offer.name) ?? this.#tooLarge(offer.size);
    if (problem !== undefined) {
      this.#tell(now, t, { kind: "file_decline", transfer: t.wireId, reason: clip(problem) });
      return this.#end(t, "declined", `refused an offer from "${session.peerName}": ${problem}`);
    }
    this.#emit({ kind: "file_offer", autoAccept: this.#options.autoAccept, ...info(t) });
    if (this.#options.autoAccept) this.accept(now, t.id);
  }

  /** Why a file of `size` bytes is refused for its size, or undefined. */
  #tooLarge(size: number): string | undefined {
    const max = this.#options.maxReceive ?? DEFAULT_MAX_RECEIVE;
    if (size <= max) return undefined;
    return `the file (${size} bytes) is larger than the receiver takes (${max} bytes; --max-receive)`;
  }

  #onChunk(now: number, t: Transfer, offset: number, data: Uint8Array): void {
    if (t.direction !== "receive" || t.state !== "active") return;
    if (offset !== t.next || offset + data.length > t.size) {
      return this.#fail(
        now,
        t,
        `the sender sent bytes ${offset} to ${offset + data.length} where ${t.next} was next`,
      );
    }
    t.next += data.length;
    this.#outputs.push({ type: "write", id: t.id, offset, data });
    if (t.next === t.size) this.#finishReceiving(t);
  }

  #finishReceiving(t: Transfer): void {
    t.state = "verifying";
    this.#outputs.push({ type: "receive_end", id: t.id });
  }

  /** Reads chunks round-robin while channels have room. */
  #pump(now: number): void {
    let progressed = true;
    while (progressed) {
      progressed = false;
      for (const t of this.#transfers.values()) {
        if (t.direction !== "send" || t.state !== "active" || t.next >= t.size) continue;
        if (t.reads >= MAX_READS) continue;
        const queued = t.session.backlog + t.reads * CHUNK_SEGMENTS;
        if (queued >= backlogLimit(t.session)) continue;
        const length = Math.min(FILE_CHUNK_BYTES, t.size - t.next);
        this.#outputs.push({ type: "read", id: t.id, path: t.path!, offset: t.next, length });
        t.next += length;
        t.reads++;
        progressed = true;
      }
    }
    void now;
  }

  #progress(now: number, t: Transfer): void {
    if (now - t.progressAt < PROGRESS_INTERVAL_MS && t.done < t.size) return;
    t.progressAt = now;
    const seconds = Math.max(0.001, (now - t.startedAt) / 1000);
    const rate = (t.done - t.startOffset) / seconds;
    const eta = rate > 0 ? (t.size - t.done) / rate : undefined;
    this.#emit({
      kind: "file_progress",
      ...info(t),
      rate: Math.round(rate),
      etaSeconds: eta === undefined ? null : Math.ceil(eta),
    });
  }

  /** Fails a transfer; the peer is told `toPeer`, by default the problem itself. */
  #fail(now: number, t: Transfer, problem: string, toPeer = problem): void {
    const kind = t.direction === "receive" && t.state === "verifying" ? "file_done" : "file_cancel";
    const reason = clip(toPeer);
    if (kind === "file_done") {
      this.#tell(now, t, { kind, transfer: t.wireId, ok: false, reason });
    } else {
      const bySender = t.direction === "send";
      this.#tell(now, t, { kind, transfer: t.wireId, bySender, reason });
    }
    this.#end(t, "failed", problem);
  }

  /** Sends a payload if the session is still open; returns its message id. */
  #tell(now: number, t: Transfer, payload: FilePayload): number | undefined {
    if (t.session.state !== "open") return undefined;
    return t.session.sendPayload(now, payload);
  }

  #end(
    t: Transfer,
    state: TransferState,
    reason?: string,
    options: { keepPartial?: boolean } = {},
  ): void {
    const was = t.state;
    t.state = state;
    t.reason = reason;
    t.chunks.clear();
    if (t.direction === "send") {
      if (was !== "offered") this.#outputs.push({ type: "send_end", id: t.id });
    } else if (was !== "offered" && state !== "done") {
      this.#outputs.push({
        type: "receive_abort",
        id: t.id,
        keepPartial: options.keepPartial === true,
      });
    }
    this.#emit({ kind: state === "done" ? "file_done" : "file_failed", ...info(t) });
  }

  #emit(event: TransferEvent): void {
    this.#outputs.push({ type: "event", event });
  }
}

/**
 * Segments a session's channel may hold before more chunks are read: twice
 * its congestion window plus the reads in flight, so the window stays full,
 * but no more: what is queued must go out before a cancel, a verdict or a
 * chat message on the same channel, so megabytes queued on a slow or lossy
 * link would let a cancelled file arrive whole and hold chat back for seconds.
 */
function backlogLimit(session: PeerSession): number {
  const window = session.channel?.congestionWindow;
  if (window === undefined) return MAX_BACKLOG_SEGMENTS;
  return Math.min(MAX_BACKLOG_SEGMENTS, 2 * window + MIN_BACKLOG_SEGMENTS);
}

function info(t: Transfer): TransferInfo {
  return {
    id: t.id,
    direction: t.direction,
    peer: t.session.peerName,
    name: t.name,
    size: t.size,
    sha256: toHex(t.sha256),
    state: t.state,
    done: t.done,
    startOffset: t.startOffset,
    ...(t.reason === undefined ? {} : { reason: t.reason }),
    ...(t.path === undefined ? {} : { path: t.path }),
    ...(t.resumedBy === undefined ? {} : { resumedBy: t.resumedBy }),
  };
}

/** Cuts a reason to MAX_REASON_BYTES of UTF-8 (by characters, to stay valid). */
function clip(reason: string): string {
  let out = reason;
  while (new TextEncoder().encode(out).length > MAX_REASON_BYTES) {
    out = [...out].slice(0, -1).join("");
  }
  return out;
}
