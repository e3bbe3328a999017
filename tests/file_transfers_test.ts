/**
 * FileTransfers without a network: two instances wired by hand through
 * stand-in sessions, with an in-memory "driver" that reads, writes, verifies
 * and places files as the real one does. Then the command side of
 * ClientCore (acceptfile, declinefile, cancel, sendfile errors) on a clean
 * simulated network.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { FileTransfers, type FileTransfersOutput } from "../lib/client/file_transfers.ts";
import type { FilePayload, PeerSession, PeerState } from "../lib/client/peer_session.ts";
import { parseCommand } from "../lib/client/command.ts";
import type { CommandResult, TransferEvent, TransferInfo } from "../lib/client/client_event.ts";
import type { SimClient } from "../lib/sim/sim_client.ts";
import { Simulation } from "../lib/sim/simulation.ts";
import { toHex } from "../lib/hex.ts";
import { FILE_CHUNK_BYTES } from "../lib/wire/peer_payload.ts";

// ---------------------------------------------------------------------------
// A stand-in session and driver

/** What FileTransfers uses of a PeerSession: its name, state, backlog and sendPayload. */
class FakeSession {
  state: PeerState = "open";
  /** Payloads sent and not yet taken by the link, with their channel message ids. */
  outbox: { id: number; payload: FilePayload }[] = [];
  /** Every payload ever sent, in order. */
  sent: FilePayload[] = [];
  /** Messages sent and not yet acknowledged. */
  unacked = 0;
  #nextId = 1;

  constructor(readonly peerName: string) {}

  /** As a channel would: a 32 KiB chunk is 30 segments. */
  get backlog(): number {
    return this.unacked * 30;
  }

  sendPayload(_now: number, payload: FilePayload): number {
    if (this.state !== "open") throw new TypeError(`Cannot send on a ${this.state} session`);
    const id = this.#nextId++;
    this.outbox.push({ id, payload });
    this.sent.push(payload);
    this.unacked++;
    return id;
  }

  get asSession(): PeerSession {
    return this as unknown as PeerSession;
  }
}

/** One client: its transfers and an in-memory driver for their file work. */
class Side {
  readonly transfers: FileTransfers;
  readonly files = new Map<string, Uint8Array>();
  readonly events: TransferEvent[] = [];
  /** Every file operation, in order. */
  readonly ops: Exclude<FileTransfersOutput, { type: "event" }>[] = [];
  /** While true, reads wait in `pendingReads` until `releaseReads`. */
  holdReads = false;
  pendingReads: (FileTransfersOutput & { type: "read" })[] = [];
  bytesRead = 0;
  /** Makes the check of a received file fail, as a corrupted disk would. */
  corruptOnVerify = false;
  #receiving = new Map<number, { partial: string; name: string; sha256: string }>();

  constructor(readonly name: string, autoAccept = false) {
    this.transfers = new FileTransfers({ autoAccept });
  }

  /** Carries out every output; returns true if there was any. */
  drive(now: number): boolean {
    let any = false;
    for (let out = this.transfers.poll(); out !== undefined; out = this.transfers.poll()) {
      any = true;
      if (out.type === "event") {
        this.events.push(out.event);
        continue;
      }
      this.ops.push(out);
      this.#operate(now, out);
    }
    return any;
  }

  releaseReads(now: number, count = Infinity): void {
    while (count-- > 0 && this.pendingReads.length > 0) {
      this.#read(now, this.pendingReads.shift()!);
    }
  }

  eventKinds(): string[] {
    return this.events.map((e) => e.kind).filter((k) => k !== "file_progress");
  }

  opTypes(): string[] {
    return this.ops.map((op) => op.type);
  }

  info(id = 1): TransferInfo {
    const t = this.transfers.get(id);
    if (t === undefined) throw new Error(`${this.name} has no transfer ${id}`);
    return t;
  }

  #read(now: number, op: FileTransfersOutput & { type: "read" }): void {
    const data = this.files.get(op.path)!;
    this.bytesRead += op.length;
    this.transfers.readDone(now, op.id, op.offset, data.slice(op.offset, op.offset + op.length));
  }

  #operate(now: number, op: Exclude<FileTransfersOutput, { type: "event" }>): void {
    switch (op.type) {
      case "read":
        if (this.holdReads) this.pendingReads.push(op);
        else this.#read(now, op);
        return;
      case "send_end":
        return;
      case "receive_begin": {
        const partial = partialPath(op.name, op.sha256);
        const have = this.files.get(partial) ?? new Uint8Array();
        this.files.set(partial, have);
        this.#receiving.set(op.id, { partial, name: op.name, sha256: op.sha256 });
        return this.transfers.receiveReady(now, op.id, have.length);
      }
      case "write": {
        const r = this.#receiving.get(op.id)!;
        const have = this.files.get(r.partial)!;
        assertEquals(op.offset, have.length, "writes append");
        const grown = new Uint8Array(have.length + op.data.length);
        grown.set(have);
        grown.set(op.data, have.length);
        this.files.set(r.partial, grown);
        return this.transfers.written(now, op.id, op.offset + op.data.length);
      }
      case "receive_end": {
        const r = this.#receiving.get(op.id)!;
        this.#receiving.delete(op.id);
        const data = this.files.get(r.partial)!;
        this.files.delete(r.partial);
        if (this.corruptOnVerify || toHex(sha256(data)) !== r.sha256) {
          return this.transfers.failed(
            now,
            op.id,
            `The SHA-256 of "${r.name}" does not match`,
            "checksum",
          );
        }
        this.files.set(`downloads/${r.name}`, data);
        return this.transfers.received(now, op.id, `downloads/${r.name}`);
      }
      case "receive_abort": {
        const r = this.#receiving.get(op.id);
        this.#receiving.delete(op.id);
        if (r !== undefined && !op.keepPartial) this.files.delete(r.partial);
        return;
      }
    }
  }
}

function partialPath(name: string, sha: string): string {
  return `downloads/.${name}.${sha.slice(0, 16)}.part`;
}

/** Alice and Bob with a session each way and a lossless link that can hold or alter payloads. */
class Pair {
  readonly alice: Side;
  readonly bob: Side;
  /** Alice's session with Bob, and Bob's with Alice. */
  aliceSession = new FakeSession("Bob");
  bobSession = new FakeSession("Alice");
  now = 0;
  /** False to leave chunks unacknowledged (the channel's backlog grows). */
  ackChunks = true;
  /** Rewrites (or drops, returning undefined) what goes from Alice to Bob. */
  toBob: (payload: FilePayload) => FilePayload | undefined = (p) => p;

  constructor(options: { autoAccept?: boolean } = {}) {
    this.alice = new Side("Alice");
    this.bob = new Side("Bob", options.autoAccept);
  }

  offer(file: Uint8Array, name = "a.bin", path = name): number {
    this.alice.files.set(path, file);
    const id = this.alice.transfers.offer(this.now, this.aliceSession.asSession, {
      path,
      name,
      size: file.length,
      sha256: sha256(file),
    });
    this.settle();
    return id;
  }

  /** Runs until nothing moves: outputs carried out, payloads delivered and acknowledged. */
  settle(): void {
    for (let round = 0; round < 10_000; round++) {
      this.now += 10;
      let moved = this.alice.drive(this.now) || this.bob.drive(this.now);
      moved = this.#deliver(this.aliceSession, this.alice, this.bobSession, this.bob, this.toBob) ||
        moved;
      moved = this.#deliver(this.bobSession, this.bob, this.aliceSession, this.alice, (p) => p) ||
        moved;
      if (!moved && !this.alice.drive(this.now) && !this.bob.drive(this.now)) return;
    }
    throw new Error("the transfers never settled");
  }

  /** Ends both sessions, as a dead peer or a terminate would. */
  endSessions(reason = '"Bob" stopped answering'): void {
    this.aliceSession.state = "closed";
    this.bobSession.state = "closed";
    this.aliceSession.outbox = [];
    this.bobSession.outbox = [];
    this.alice.transfers.sessionEnded(this.aliceSession.asSession, reason);
    this.bob.transfers.sessionEnded(this.bobSession.asSession, reason);
    this.settle();
  }

  /** New sessions between the same two clients (after a reconnect). */
  reconnect(): void {
    this.aliceSession = new FakeSession("Bob");
    this.bobSession = new FakeSession("Alice");
  }

  #deliver(
    from: FakeSession,
    sender: Side,
    to: FakeSession,
    receiver: Side,
    alter: (payload: FilePayload) => FilePayload | undefined,
  ): boolean {
    if (from.outbox.length === 0 || to.state !== "open") return false;
    const batch = from.outbox;
    from.outbox = [];
    for (const { id, payload } of batch) {
      const altered = alter(payload);
      if (altered !== undefined) receiver.transfers.handle(this.now, to.asSession, altered);
      // The channel acknowledges what it delivered.
      if (payload.kind === "file_chunk" && !this.ackChunks) continue;
      from.unacked--;
      sender.transfers.acked(this.now, from.asSession, id);
    }
    return true;
  }
}

function file(size: number, seed = 1): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed * 101 + (i >> 11)) & 0xff;
  return bytes;
}

function chunksOf(session: FakeSession): { offset: number; length: number }[] {
  return session.sent.flatMap((p) =>
    p.kind === "file_chunk" ? [{ offset: p.offset, length: p.data.length }] : []
  );
}

const SIZE = 3 * FILE_CHUNK_BYTES + 1696; // four chunks, the last a short one

// ---------------------------------------------------------------------------
// Flows

Deno.test("FileTransfers sends a file: offer, accept, chunks, verified done", () => {
  const pair = new Pair();
  const data = file(SIZE);
  const id = pair.offer(data);
  assertEquals(id, 1);
  // Bob was asked; nothing moves until he answers.
  assertEquals(pair.bob.eventKinds(), ["file_offer"]);
  const offer = pair.bob.events[0];
  assertEquals(
    [offer.kind, offer.peer, offer.name, offer.id, offer.direction],
    ["file_offer", "Alice", "a.bin", 1, "receive"],
  );
  assert(offer.kind === "file_offer" && !offer.autoAccept, "the user is asked");
  assertEquals(offer.sha256, toHex(sha256(data)));
  assertEquals(pair.bob.info().state, "offered");
  assert(pair.alice.transfers.busy && pair.bob.transfers.busy);
  assertEquals(pair.alice.bytesRead, 0);

  assertEquals(pair.bob.transfers.accept(pair.now, 1), undefined);
  pair.settle();
  assertEquals(chunksOf(pair.aliceSession), [
    { offset: 0, length: FILE_CHUNK_BYTES },
    { offset: FILE_CHUNK_BYTES, length: FILE_CHUNK_BYTES },
    { offset: 2 * FILE_CHUNK_BYTES, length: FILE_CHUNK_BYTES },
    { offset: 3 * FILE_CHUNK_BYTES, length: 1696 },
  ]);
  assertEquals(pair.alice.bytesRead, SIZE, "each byte read once");
  assertEquals(pair.bob.files.get("downloads/a.bin"), data);
  assertEquals([...pair.bob.files.keys()], ["downloads/a.bin"], "no partial file is left");
  assertEquals(pair.bob.opTypes(), [
    "receive_begin",
    "write",
    "write",
    "write",
    "write",
    "receive_end",
  ]);
  assertEquals(pair.alice.opTypes().filter((t) => t === "send_end"), ["send_end"]);
  assertEquals(pair.alice.eventKinds(), ["file_accepted", "file_done"]);
  assertEquals(pair.bob.eventKinds(), ["file_offer", "file_accepted", "file_done"]);
  const sentDone = pair.alice.events.at(-1)!;
  assertEquals([sentDone.direction, sentDone.peer, sentDone.name], ["send", "Bob", "a.bin"]);
  assertEquals(pair.bob.events.at(-1)!.path, "downloads/a.bin");
  for (const side of [pair.alice, pair.bob]) {
    const t = side.info();
    assertEquals([t.state, t.done, t.size, t.startOffset], ["done", SIZE, SIZE, 0]);
    assertEquals(t.sha256, toHex(sha256(data)));
    assert(!side.transfers.busy);
  }
  assertEquals(pair.alice.info().path, "a.bin");
  assertEquals(pair.bob.info().path, "downloads/a.bin");
  assertEquals(pair.bob.info().direction, "receive");
  // Bob's verdict is the last thing on the wire.
  assertEquals(pair.bobSession.sent.map((p) => p.kind), ["file_accept", "file_done"]);
});

Deno.test("FileTransfers accepts every offer at once with autoAccept", () => {
  const pair = new Pair({ autoAccept: true });
  const data = file(1000);
  pair.offer(data);
  assertEquals(pair.bob.files.get("downloads/a.bin"), data);
  assertEquals(pair.bob.info().state, "done");
  const offer = pair.bob.events[0];
  assert(offer.kind === "file_offer" && offer.autoAccept, "the offer says it was taken at once");
});

Deno.test("FileTransfers sends an empty file without a chunk", () => {
  const pair = new Pair({ autoAccept: true });
  pair.offer(new Uint8Array(), "empty.txt");
  assertEquals(chunksOf(pair.aliceSession), []);
  assertEquals(pair.alice.bytesRead, 0);
  assertEquals(pair.alice.opTypes().filter((t) => t === "read"), []);
  assertEquals(pair.bob.files.get("downloads/empty.txt"), new Uint8Array());
  assertEquals([pair.alice.info().state, pair.bob.info().state], ["done", "done"]);
  assertEquals(pair.bob.opTypes(), ["receive_begin", "receive_end"]);
});

Deno.test("FileTransfers sends a file of exactly one chunk, and of one chunk and a byte", () => {
  for (const size of [1, FILE_CHUNK_BYTES, FILE_CHUNK_BYTES + 1]) {
    const pair = new Pair({ autoAccept: true });
    const data = file(size, size);
    pair.offer(data);
    assertEquals(pair.bob.files.get("downloads/a.bin"), data, `size ${size}`);
    assertEquals(chunksOf(pair.aliceSession).length, Math.ceil(size / FILE_CHUNK_BYTES));
    assertEquals([pair.alice.info().state, pair.bob.info().state], ["done", "done"]);
  }
});

Deno.test("FileTransfers declines an offer and tells the sender, in plain words", () => {
  const pair = new Pair();
  pair.offer(file(SIZE));
  assertEquals(pair.bob.transfers.decline(pair.now, 1), undefined);
  pair.settle();
  assertEquals(pair.bob.info().state, "declined");
  const sent = pair.alice.info();
  assertEquals(sent.state, "declined");
  assertEquals(sent.reason, '"Bob" declined it');
  assertEquals(pair.bob.info().reason, undefined);
  assertEquals(pair.alice.bytesRead, 0);
  assertEquals(pair.alice.opTypes(), [], "nothing was read, so nothing to close");
  assertEquals(pair.bob.opTypes(), [], "nothing was prepared");
  assertEquals(pair.alice.eventKinds(), ["file_failed"]);
  assertEquals(pair.alice.events[0].state, "declined");
  // Answered already.
  assertEquals(
    pair.bob.transfers.decline(pair.now, 1),
    "Transfer 1 is declined, not waiting for an answer",
  );
  assertEquals(
    pair.bob.transfers.accept(pair.now, 1),
    "Transfer 1 is declined, not waiting for an answer",
  );
  assertEquals(pair.bob.transfers.accept(pair.now, 9), "There is no offer 9");
  // Alice's own transfer is not an offer to her.
  assertEquals(pair.alice.transfers.accept(pair.now, 1), "There is no offer 1");
});

/** Alice's 10-chunk file to Bob, stopped after two chunks were written. */
function midTransfer(): { pair: Pair; data: Uint8Array } {
  const pair = new Pair({ autoAccept: true });
  pair.alice.holdReads = true;
  const data = file(10 * FILE_CHUNK_BYTES);
  pair.offer(data);
  assertEquals(pair.alice.pendingReads.length, 4, "at most four reads at once");
  pair.alice.releaseReads(pair.now, 2);
  pair.settle();
  const partial = partialPath("a.bin", toHex(sha256(data)));
  assertEquals(pair.bob.files.get(partial)?.length, 2 * FILE_CHUNK_BYTES);
  assertEquals(pair.bob.info().state, "active");
  assertEquals(pair.bob.info().done, 2 * FILE_CHUNK_BYTES);
  return { pair, data };
}

Deno.test("FileTransfers cancel by the sender mid-transfer removes the receiver's partial file", () => {
  const { pair } = midTransfer();
  assertEquals(pair.alice.transfers.cancel(pair.now, 1), undefined);
  // Reads that complete after the cancel send nothing.
  pair.alice.releaseReads(pair.now);
  pair.settle();
  assertEquals(chunksOf(pair.aliceSession).length, 2);
  assertEquals(pair.alice.info().state, "cancelled");
  assertEquals(pair.alice.info().reason, undefined);
  const received = pair.bob.info();
  assertEquals(received.state, "cancelled");
  assertStringIncludes(received.reason!, '"Alice" cancelled it');
  const abort = pair.bob.ops.find((op) => op.type === "receive_abort");
  assertEquals(abort, { type: "receive_abort", id: 1, keepPartial: false });
  assertEquals([...pair.bob.files.keys()], [], "the partial file is gone");
  assertEquals(pair.alice.opTypes().filter((t) => t === "send_end").length, 1);
  assertEquals(pair.alice.transfers.cancel(pair.now, 1), "Transfer 1 is already cancelled");
  assert(!pair.alice.transfers.busy && !pair.bob.transfers.busy);
});

Deno.test("FileTransfers cancel by the receiver mid-transfer stops the sender", () => {
  const { pair } = midTransfer();
  assertEquals(pair.bob.transfers.cancel(pair.now, 1), undefined);
  pair.settle();
  const sent = pair.alice.info();
  assertEquals(sent.state, "cancelled");
  assertEquals(sent.reason, '"Bob" cancelled it');
  assertEquals(pair.alice.opTypes().filter((t) => t === "send_end").length, 1);
  // Reads that complete after the cancel send nothing.
  const chunks = chunksOf(pair.aliceSession).length;
  pair.alice.releaseReads(pair.now);
  pair.settle();
  assertEquals(chunksOf(pair.aliceSession).length, chunks);
  assertEquals(pair.bob.info().state, "cancelled");
  assertEquals(pair.bob.ops.filter((op) => op.type === "write").length, 2);
  assertEquals(
    pair.bob.ops.find((op) => op.type === "receive_abort"),
    { type: "receive_abort", id: 1, keepPartial: false },
  );
  assertEquals([...pair.bob.files.keys()], []);
  // Bob's cancel says it comes from the receiver.
  const cancel = pair.bobSession.sent.find((p) => p.kind === "file_cancel");
  assertEquals(cancel?.kind === "file_cancel" && cancel.bySender, false);
});

Deno.test("FileTransfers ignores chunks that arrive after the receiver cancelled", () => {
  const { pair } = midTransfer();
  // Chunks in flight when Bob cancels still reach him.
  pair.alice.releaseReads(pair.now);
  assertEquals(pair.bob.transfers.cancel(pair.now, 1), undefined);
  pair.settle();
  assertEquals(pair.bob.ops.filter((op) => op.type === "write").length, 2);
  assertEquals([...pair.bob.files.keys()], []);
  assertEquals([pair.alice.info().state, pair.bob.info().state], ["cancelled", "cancelled"]);
});

Deno.test("FileTransfers keeps the partial file when the session ends mid-transfer", () => {
  const { pair, data } = midTransfer();
  pair.endSessions();
  const received = pair.bob.info();
  assertEquals(received.state, "interrupted");
  assertStringIncludes(received.reason!, "the part received is kept");
  assertEquals(
    pair.bob.ops.find((op) => op.type === "receive_abort"),
    { type: "receive_abort", id: 1, keepPartial: true },
  );
  const partial = partialPath("a.bin", toHex(sha256(data)));
  assertEquals(pair.bob.files.get(partial), data.slice(0, 2 * FILE_CHUNK_BYTES));
  assertEquals(pair.alice.info().state, "interrupted");
  assertEquals(pair.alice.opTypes().filter((t) => t === "send_end").length, 1);
  // Reads that finish after the end send nothing on the closed session.
  pair.alice.releaseReads(pair.now);
  assertEquals(pair.alice.info().state, "interrupted");
  assert(!pair.alice.transfers.busy && !pair.bob.transfers.busy);
});

Deno.test("FileTransfers resumes an interrupted file: only the rest is sent", () => {
  const { pair, data } = midTransfer();
  pair.endSessions();
  pair.reconnect();
  pair.alice.holdReads = false;
  const readBefore = pair.alice.bytesRead;
  const id = pair.offer(data);
  assertEquals(id, 2);
  const resumed = pair.bob.info(2);
  assertEquals(resumed.state, "done");
  assertEquals(resumed.startOffset, 2 * FILE_CHUNK_BYTES);
  assertEquals(pair.alice.info(2).startOffset, 2 * FILE_CHUNK_BYTES);
  // Only the rest was read and sent.
  assertEquals(pair.alice.bytesRead - readBefore, data.length - 2 * FILE_CHUNK_BYTES);
  assertEquals(chunksOf(pair.aliceSession)[0], { offset: 2 * FILE_CHUNK_BYTES, length: 32768 });
  assertEquals(pair.bobSession.sent[0], {
    kind: "file_accept",
    transfer: 2,
    offset: 2 * FILE_CHUNK_BYTES,
  });
  const accepted = pair.alice.events.find((e) => e.kind === "file_accepted" && e.id === 2);
  assertEquals(accepted!.startOffset, 2 * FILE_CHUNK_BYTES);
  assertEquals(pair.bob.files.get("downloads/a.bin"), data);
  assertEquals([...pair.bob.files.keys()], ["downloads/a.bin"]);
});

Deno.test("FileTransfers resumes a complete partial file without any chunk", () => {
  const pair = new Pair({ autoAccept: true });
  const data = file(5000);
  pair.bob.files.set(partialPath("a.bin", toHex(sha256(data))), data.slice());
  pair.offer(data);
  assertEquals(chunksOf(pair.aliceSession), []);
  assertEquals(pair.alice.bytesRead, 0);
  assertEquals([pair.alice.info().state, pair.bob.info().state], ["done", "done"]);
  assertEquals(pair.bob.files.get("downloads/a.bin"), data);
});

Deno.test("FileTransfers fails a transfer whose chunks arrive out of order", () => {
  const pair = new Pair({ autoAccept: true });
  const data = file(SIZE);
  // Hold the first chunk back and send it after the second.
  let held: FilePayload | undefined;
  const late: FilePayload[] = [];
  pair.toBob = (p) => {
    if (p.kind === "file_chunk" && p.offset === 0) {
      held = p;
      return undefined;
    }
    if (p.kind === "file_chunk" && held !== undefined) late.push(held);
    return p;
  };
  pair.offer(data);
  const received = pair.bob.info();
  assertEquals(received.state, "failed");
  assertEquals(
    received.reason,
    `the sender sent bytes ${FILE_CHUNK_BYTES} to ${2 * FILE_CHUNK_BYTES} where 0 was next`,
  );
  assertEquals(pair.bob.ops.filter((op) => op.type === "write"), []);
  assertEquals(
    pair.bob.ops.find((op) => op.type === "receive_abort"),
    { type: "receive_abort", id: 1, keepPartial: false },
  );
  assertEquals([...pair.bob.files.keys()], []);
  // The sender is told and stops: a failure, not a cancel by a user.
  const sent = pair.alice.info();
  assertEquals(sent.state, "failed");
  assertStringIncludes(sent.reason!, "where 0 was next");
});

Deno.test("FileTransfers fails a transfer whose chunk runs past the offered size", () => {
  const pair = new Pair({ autoAccept: true });
  pair.toBob = (p) => p.kind === "file_chunk" ? { ...p, data: Uint8Array.from([...p.data, 0]) } : p;
  pair.offer(file(100));
  assertEquals(pair.bob.info().state, "failed");
  assertStringIncludes(pair.bob.info().reason!, "bytes 0 to 101");
  assertEquals([...pair.bob.files.keys()], []);
});

Deno.test("FileTransfers reports a file whose SHA-256 does not match to both sides", () => {
  const pair = new Pair({ autoAccept: true });
  pair.bob.corruptOnVerify = true;
  pair.offer(file(SIZE));
  const received = pair.bob.info();
  assertEquals(received.state, "failed");
  assertEquals(received.reason, 'The SHA-256 of "a.bin" does not match');
  // The verdict goes back as file_done, not ok.
  const done = pair.bobSession.sent.at(-1)!;
  assertEquals(done, {
    kind: "file_done",
    transfer: 1,
    ok: false,
    reason: "the file arrived damaged (its SHA-256 did not match) and was removed",
  });
  assertEquals(pair.alice.info().state, "failed");
  assertEquals(
    pair.alice.info().reason,
    '"Bob": the file arrived damaged (its SHA-256 did not match) and was removed',
  );
  assertEquals([...pair.bob.files.keys()], []);
});

Deno.test("FileTransfers declines offers whose name could leave the download directory", async (t) => {
  for (const name of ["../evil.sh", "a/b.txt", "..", ".", "dir\\x.txt", ".hidden", "", "nul.txt"]) {
    await t.step(JSON.stringify(name), () => {
      const pair = new Pair({ autoAccept: true });
      pair.offer(file(10), name, "safe.bin");
      const received = pair.bob.info();
      assertEquals(received.state, "declined");
      assertEquals(pair.bob.opTypes(), [], "nothing was prepared or written");
      assertEquals([...pair.bob.files.keys()], []);
      assertEquals(pair.bob.eventKinds(), ["file_failed"]);
      assertStringIncludes(pair.bob.events[0].reason!, 'refused an offer from "Alice"');
      const sent = pair.alice.info();
      assertEquals(sent.state, "declined");
      assertStringIncludes(sent.reason!, '"Bob" declined it: File name');
      assertEquals(pair.alice.bytesRead, 0);
    });
  }
});

Deno.test("FileTransfers fails a send when the receiver asks to resume beyond the end", () => {
  const pair = new Pair();
  pair.offer(file(100));
  pair.alice.transfers.handle(pair.now, pair.aliceSession.asSession, {
    kind: "file_accept",
    transfer: 1,
    offset: 101,
  });
  pair.alice.drive(pair.now);
  assertEquals(pair.alice.info().state, "failed");
  assertStringIncludes(pair.alice.info().reason!, "resume at 101, beyond the end");
  assertEquals(pair.alice.bytesRead, 0);
});

Deno.test("FileTransfers ignores a repeated offer and payloads for unknown transfers", () => {
  const pair = new Pair();
  const data = file(100);
  pair.offer(data);
  const offer = pair.aliceSession.sent[0];
  const session = pair.bobSession.asSession;
  pair.bob.transfers.handle(pair.now, session, offer);
  for (
    const p of [
      { kind: "file_chunk", transfer: 42, offset: 0, data: new Uint8Array(3) },
      { kind: "file_cancel", transfer: 42, bySender: true, reason: "x" },
      { kind: "file_done", transfer: 1, ok: true, reason: "" },
      { kind: "file_accept", transfer: 1, offset: 0 },
    ] satisfies FilePayload[]
  ) {
    pair.bob.transfers.handle(pair.now, session, p);
  }
  pair.bob.drive(pair.now);
  assertEquals(pair.bob.transfers.list().length, 1);
  assertEquals(pair.bob.info().state, "offered");
  assertEquals(pair.bob.opTypes(), []);
});

Deno.test("FileTransfers stops reading while the channel holds 2048 segments", () => {
  const pair = new Pair({ autoAccept: true });
  // No acks: the backlog only grows, 30 segments a chunk.
  pair.ackChunks = false;
  pair.offer(file(100 * FILE_CHUNK_BYTES));
  const chunks = chunksOf(pair.aliceSession).length;
  assertEquals(chunks, Math.ceil(2048 / 30), `${chunks} chunks queued`);
  assertEquals(pair.alice.info().state, "active");
  // Acks free room and reading goes on.
  pair.ackChunks = true;
  pair.aliceSession.unacked = 0;
  pair.alice.transfers.acked(pair.now, pair.aliceSession.asSession, 1);
  pair.settle();
  assertEquals(pair.alice.info().state, "done");
  assertEquals(chunksOf(pair.aliceSession).length, 100);
});

Deno.test("FileTransfers queues little more than twice the congestion window", () => {
  const pair = new Pair({ autoAccept: true });
  pair.ackChunks = false;
  // A channel whose window is 10 segments: 2 * 10 + 4 chunks' reads (120) = 140.
  Object.defineProperty(pair.aliceSession, "channel", {
    value: { congestionWindow: 10 },
  });
  pair.offer(file(100 * FILE_CHUNK_BYTES));
  assertEquals(chunksOf(pair.aliceSession).length, Math.ceil(140 / 30));
});

Deno.test("FileTransfers counts the sender's progress from acknowledged chunks", () => {
  const pair = new Pair({ autoAccept: true });
  pair.alice.holdReads = true;
  const data = file(4 * FILE_CHUNK_BYTES);
  pair.offer(data);
  assertEquals(pair.alice.info().done, 0);
  pair.alice.releaseReads(pair.now, 1);
  pair.settle();
  assertEquals(pair.alice.info().done, FILE_CHUNK_BYTES);
  assertEquals(pair.alice.info().state, "active");
  pair.alice.releaseReads(pair.now);
  pair.settle();
  assertEquals(pair.alice.info().state, "done");
  const progress = pair.alice.events.filter((e) => e.kind === "file_progress");
  assert(progress.length >= 1, "a progress event for the last bytes");
  assertEquals(progress.at(-1)!.done, data.length);
});

// ---------------------------------------------------------------------------
// The commands, through ClientCore on a clean simulated network

function script(sim: Simulation, client: SimClient, lines: string[]): void {
  for (const line of lines) sim.userCommand(client, parseCommand(line)!);
}

/** Alice, Bob and Carol registered; Alice in a session with each of `peers`. */
function connected(peers: string[]): { sim: Simulation; clients: Record<string, SimClient> } {
  const sim = new Simulation({
    seed: 11,
    impairment: { loss: 0, duplicate: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 5 },
  });
  const clients: Record<string, SimClient> = {};
  for (const name of ["Alice", "Bob", "Carol"]) {
    clients[name] = sim.addClient({ name });
    script(sim, clients[name], ["register"]);
  }
  assert(sim.runUntilIdle(60_000));
  for (const peer of peers) {
    script(sim, clients.Alice, [`connect ${peer}`]);
    script(sim, clients[peer], ["wait request within 30", "accept Alice"]);
  }
  assert(sim.runUntilIdle(60_000));
  for (const c of Object.values(clients)) c.results.length = 0;
  return { sim, clients };
}

function last(client: SimClient): CommandResult {
  return client.results.at(-1)!;
}

function errorOf(r: CommandResult): [string, string] {
  if (r.ok) throw new Error(`${r.command} succeeded`);
  return [r.code, r.error];
}

Deno.test("ClientCore acceptfile, declinefile and cancel without a transfer say so", () => {
  const { sim, clients: { Bob } } = connected(["Bob"]);
  script(sim, Bob, ["acceptfile", "declinefile", "cancel", "acceptfile 7", "transfers"]);
  sim.runUntilIdle(10_000);
  assertEquals(Bob.results.slice(0, 4).map(errorOf), [
    ["no_transfer", "No file is offered to you"],
    ["no_transfer", "No file is offered to you"],
    ["no_transfer", "No transfer is running"],
    ["no_transfer", "There is no offer 7"],
  ]);
  assertEquals(last(Bob), { ok: true, command: "transfers", transfers: [] });
});

Deno.test("ClientCore sendfile needs one open session and a readable file", () => {
  const { sim, clients: { Alice, Carol } } = connected(["Bob", "Carol"]);
  Alice.files.set("a.bin", file(10));
  script(sim, Alice, ["sendfile a.bin", "sendfile @Dave a.bin", "sendfile @Bob missing.bin"]);
  sim.runUntilIdle(10_000);
  assertEquals(Alice.results.map(errorOf), [
    ["no_session", 'Sessions with "Bob", "Carol" are open; name one: sendfile @NAME PATH'],
    ["no_session", 'No open session with "Dave"'],
    ["file_error", "Cannot read missing.bin: no such file"],
  ]);
  Carol.files.set("c.bin", file(10));
  script(sim, Carol, ["sendfile @Bob c.bin"]);
  sim.runUntilIdle(10_000);
  assertEquals(errorOf(last(Carol)), ["no_session", 'No open session with "Bob"']);
});

Deno.test("ClientCore acceptfile without an id asks which of several offers", () => {
  const { sim, clients: { Alice, Bob } } = connected(["Bob"]);
  Alice.files.set("one.bin", file(1000, 1));
  Alice.files.set("two.bin", file(2000, 2));
  script(sim, Alice, ["sendfile one.bin", "sendfile two.bin"]);
  script(sim, Bob, ["wait offer within 30"]);
  sim.runUntilIdle(10_000);
  script(sim, Bob, ["acceptfile", "declinefile"]);
  sim.runUntilIdle(10_000);
  assertEquals(Bob.results.slice(-2).map(errorOf), [
    ["no_transfer", "Transfers 1, 2 could be meant; say which: acceptfile ID"],
    ["no_transfer", "Transfers 1, 2 could be meant; say which: declinefile ID"],
  ]);
  script(sim, Bob, ["acceptfile 2", "declinefile", "wait transfers within 60"]);
  script(sim, Alice, ["wait transfers within 60"]);
  sim.runUntilIdle(120_000);
  const [accepted, declined, waited] = Bob.results.slice(-3);
  assertEquals(accepted, {
    ok: true,
    command: "acceptfile",
    id: 2,
    name: "two.bin",
    peer: "Alice",
  });
  assertEquals(declined, {
    ok: true,
    command: "declinefile",
    id: 1,
    name: "one.bin",
    peer: "Alice",
  });
  // One declined, so waiting reports the transfers did not all finish.
  assertEquals(errorOf(waited)[0], "transfer_failed");
  assertStringIncludes(errorOf(waited)[1], "1 of 2 transfers did not finish: 1 declined");
  assertEquals(Bob.files.get("downloads/two.bin"), file(2000, 2));
  assertEquals(Bob.files.has("downloads/one.bin"), false);
  const aliceWait = last(Alice);
  assertEquals(errorOf(aliceWait)[0], "transfer_failed");
  assertStringIncludes(errorOf(aliceWait)[1], '"Bob" declined it)');
  script(sim, Alice, ["transfers"]);
  sim.runUntilIdle(10_000);
  const listing = last(Alice);
  if (!listing.ok || listing.command !== "transfers") throw new Error("expected transfers");
  assertEquals(
    listing.transfers.map((t) => [t.id, t.direction, t.name, t.peer, t.done, t.size, t.state]),
    [
      [1, "send", "one.bin", "Bob", 0, 1000, "declined"],
      [2, "send", "two.bin", "Bob", 2000, 2000, "done"],
    ],
  );
});

Deno.test("FileTransfers declines an offer larger than maxReceive, saying so to both sides", () => {
  const transfers = new FileTransfers({ autoAccept: true, maxReceive: 1000 });
  const alice = new FakeSession("Alice");
  const offer = (transfer: number, size: number): FilePayload => ({
    kind: "file_offer",
    transfer,
    size,
    sha256: new Uint8Array(32),
    name: "big.bin",
  });
  transfers.handle(0, alice.asSession, offer(1, 1001));
  transfers.handle(0, alice.asSession, offer(2, 1000));
  const outputs: FileTransfersOutput[] = [];
  for (let out = transfers.poll(); out !== undefined; out = transfers.poll()) outputs.push(out);
  assertEquals(alice.sent[0], {
    kind: "file_decline",
    transfer: 1,
    reason: "the file (1001 bytes) is larger than the receiver takes (1000 bytes; --max-receive)",
  });
  assertEquals(transfers.get(1)?.state, "declined");
  assertStringIncludes(transfers.get(1)!.reason!, 'refused an offer from "Alice": the file');
  // One of exactly the limit is prepared.
  assertEquals(outputs.filter((o) => o.type === "receive_begin").map((o) => o.id), [2]);
  // The default limit is 4 GiB.
  const byDefault = new FileTransfers({ autoAccept: true });
  byDefault.handle(0, alice.asSession, offer(3, 4 * 1024 ** 3 + 1));
  assertEquals(byDefault.get(1)?.state, "declined");
});

Deno.test("FileTransfers keeps at most 4 offers open; more are declined with nothing kept", () => {
  const transfers = new FileTransfers({ autoAccept: false });
  const stranger = new FakeSession("Mallory");
  for (let i = 1; i <= 2000; i++) {
    transfers.handle(0, stranger.asSession, {
      kind: "file_offer",
      transfer: i,
      size: 2 ** 40,
      sha256: new Uint8Array(32),
      name: `x${i}.bin`,
    });
  }
  let events = 0;
  for (let out = transfers.poll(); out !== undefined; out = transfers.poll()) events++;
  // 1 TB is over --max-receive: each is declined at once, with a line.
  assertEquals(transfers.list().length, 2000);
  assert(transfers.list().every((t) => t.state === "declined"));
  assertEquals(events, 2000);

  // Offers within the limit wait for an answer: four at once, no more.
  const small = new FileTransfers({ autoAccept: false });
  for (let i = 1; i <= 2000; i++) {
    small.handle(0, stranger.asSession, {
      kind: "file_offer",
      transfer: 10_000 + i,
      size: 10,
      sha256: new Uint8Array(32),
      name: `y${i}.bin`,
    });
  }
  assertEquals(small.list().map((t) => t.state), ["offered", "offered", "offered", "offered"]);
  const refused = stranger.sent.filter((p) => p.kind === "file_decline" && p.transfer > 10_004);
  assertEquals(refused.length, 1996);
  assertEquals(refused[0], {
    kind: "file_decline",
    transfer: 10_005,
    reason: "the receiver has 4 offers waiting or being received; try again later",
  });
  // Once one is answered, there is room for another.
  small.decline(0, 1);
  small.handle(0, stranger.asSession, {
    kind: "file_offer",
    transfer: 20_000,
    size: 10,
    sha256: new Uint8Array(32),
    name: "z.bin",
  });
  assertEquals(small.list().at(-1)?.state, "offered");
});
