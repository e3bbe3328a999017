import { assert, assertEquals, assertThrows } from "@std/assert";
import {
  type ChannelOutput,
  DEFAULT_CHANNEL_OPTIONS,
  LOW_LATENCY_CHANNEL_OPTIONS,
  PROBES_BEFORE_DEATH,
  ReliableChannel,
} from "../lib/reliable/reliable_channel.ts";
import {
  type AckSegment,
  type DataSegment,
  MAX_MESSAGE_BYTES,
  MAX_SEQ,
  type Segment,
} from "../lib/reliable/segment.ts";

function drain(channel: ReliableChannel): ChannelOutput[] {
  const outputs: ChannelOutput[] = [];
  for (let out = channel.poll(); out !== undefined; out = channel.poll()) outputs.push(out);
  return outputs;
}

function segmentsOf(outputs: ChannelOutput[]): Segment[] {
  return outputs.flatMap((out) => out.type === "segment" ? [out.segment] : []);
}

function dataOf(outputs: ChannelOutput[]): DataSegment[] {
  return segmentsOf(outputs).filter((s): s is DataSegment => s.kind === "data");
}

function acksOf(outputs: ChannelOutput[]): AckSegment[] {
  return segmentsOf(outputs).filter((s): s is AckSegment => s.kind === "ack");
}

function deliveredOf(outputs: ChannelOutput[]): Uint8Array[] {
  return outputs.flatMap((out) => out.type === "deliver" ? [out.message] : []);
}

/** Options that isolate the recovery mechanics from congestion control and delayed acks. */
const MECHANICS = { congestionControl: false, ackEvery: 1 } as const;

function ack(
  cumulative: number,
  ranges: [number, number][] = [],
  window = DEFAULT_CHANNEL_OPTIONS.receiveWindow,
): AckSegment {
  return {
    kind: "ack",
    cumulative,
    ranges: ranges.map(([start, end]) => ({ start, end })),
    window,
  };
}

function bytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return out;
}

/**
 * Connects two channels by a perfect link with a fixed one-way delay and runs
 * them until both are idle and quiet, or until `until`.
 */
function runPerfectLink(
  a: ReliableChannel,
  b: ReliableChannel,
  start: number,
  options: { delayMs?: number; until?: number; shuffle?: boolean; stopWhenIdle?: boolean } = {},
): { atA: Uint8Array[]; atB: Uint8Array[]; end: number } {
  const delay = options.delayMs ?? 10;
  const until = options.until ?? start + 600_000;
  const atA: Uint8Array[] = [], atB: Uint8Array[] = [];
  let flight: { at: number; to: ReliableChannel; segment: Segment }[] = [];
  let now = start;
  const pump = () => {
    for (const [from, to, inbox] of [[a, b, atA], [b, a, atB]] as const) {
      const batch: Segment[] = [];
      for (const out of drain(from)) {
        if (out.type === "segment") batch.push(out.segment);
        if (out.type === "deliver") inbox.push(out.message);
      }
      if (options.shuffle) batch.reverse();
      for (const segment of batch) flight.push({ at: now + delay, to, segment });
    }
  };
  pump();
  const stopWhenIdle = options.stopWhenIdle ?? true;
  while (now < until && !(stopWhenIdle && a.idle && b.idle && flight.length === 0)) {
    const next = Math.min(
      ...flight.map((f) => f.at),
      a.nextTimeout() ?? Infinity,
      b.nextTimeout() ?? Infinity,
    );
    now = next;
    const due = flight.filter((f) => f.at <= now);
    flight = flight.filter((f) => f.at > now);
    for (const f of due) f.to.receive(now, f.segment);
    for (const channel of [a, b]) {
      if ((channel.nextTimeout() ?? Infinity) <= now) channel.onTimeout(now);
    }
    pump();
    pump();
  }
  return { atA, atB, end: now };
}

Deno.test("ReliableChannel sends, acknowledges and delivers", async (t) => {
  await t.step("delivers a message and reports it acknowledged", () => {
    const a = new ReliableChannel(0), b = new ReliableChannel(0);
    const id = a.send(0, new TextEncoder().encode("hello"));
    const sent = drain(a);
    assertEquals(dataOf(sent).map((s) => [s.seq, s.fragment, s.fragments]), [[0, 0, 1]]);
    for (const segment of segmentsOf(sent)) b.receive(30, segment);
    const atB = drain(b);
    assertEquals(acksOf(atB), [ack(1)]);
    assertEquals(new TextDecoder().decode(deliveredOf(atB)[0]), "hello");
    for (const segment of segmentsOf(atB)) a.receive(60, segment);
    assertEquals(drain(a), [{ type: "acked", id }]);
    assert(a.idle);
    assertEquals(a.stats.rttSamples, 1);
    assertEquals(a.stats.srttMs, 60);
    assertEquals(a.stats.rttvarMs, 30);
    assertEquals(a.stats.rtoMs, 200); // max(minRto 200, 60 + 4 * 30)
    assertEquals(b.stats.messagesDelivered, 1);
    assertEquals(b.stats.acksSent, 1);
    assertEquals(a.stats.acksReceived, 1);
  });

  await t.step("starts at the given sequence numbers", () => {
    const a = new ReliableChannel(0, { initialSeq: 1000, peerInitialSeq: 5 });
    const b = new ReliableChannel(0, { initialSeq: 5, peerInitialSeq: 1000 });
    a.send(0, bytes(3000));
    b.send(0, bytes(10, 2));
    const { atA, atB } = runPerfectLink(a, b, 0);
    assertEquals(atB, [bytes(3000)]);
    assertEquals(atA, [bytes(10, 2)]);
    assertEquals(a.stats.dataSegmentsSent, 3);
  });

  await t.step(
    "acknowledges every data segment, duplicates included, and discards duplicates",
    () => {
      const b = new ReliableChannel(0);
      const segment: DataSegment = {
        kind: "data",
        seq: 0,
        fragment: 0,
        fragments: 1,
        payload: new Uint8Array([7]),
      };
      b.receive(1, segment);
      const first = drain(b);
      b.receive(2, segment);
      const second = drain(b);
      assertEquals(deliveredOf(first).length, 1);
      assertEquals(deliveredOf(second).length, 0);
      assertEquals(acksOf(first), [ack(1)]);
      assertEquals(acksOf(second), [ack(1)]);
      assertEquals(b.stats.duplicatesDiscarded, 1);
      assertEquals(b.stats.acksSent, 2);
    },
  );

  await t.step("sends one ack for a batch of segments received between two polls", () => {
    const a = new ReliableChannel(0), b = new ReliableChannel(0);
    for (let i = 0; i < 5; i++) a.send(0, bytes(10, i));
    for (const segment of segmentsOf(drain(a))) b.receive(10, segment);
    const outputs = drain(b);
    assertEquals(acksOf(outputs), [ack(5)]);
    assertEquals(deliveredOf(outputs).length, 5);
  });

  await t.step(
    "acks the first segment above a gap at once, later ones above it after ackEvery",
    () => {
      const b = new ReliableChannel(0, { ackEvery: 3 });
      const fragment = (seq: number): DataSegment => ({
        kind: "data",
        seq,
        fragment: seq,
        fragments: 20,
        payload: new Uint8Array([seq]),
      });
      b.receive(1, fragment(1)); // 0 is missing: the sender must hear of the gap
      assertEquals(acksOf(drain(b)), [ack(0, [[1, 2]])]);
      b.receive(2, fragment(2));
      b.receive(3, fragment(4));
      assertEquals(acksOf(drain(b)), [], "the gap is known: these wait");
      b.receive(4, fragment(5));
      assertEquals(acksOf(drain(b)), [ack(0, [[1, 3], [4, 6]])], "the third one is acked");
      b.receive(5, fragment(6));
      assertEquals(b.nextTimeout(), 5 + DEFAULT_CHANNEL_OPTIONS.ackDelayMs);
      b.receive(6, fragment(0));
      assertEquals(acksOf(drain(b)), [ack(3, [[4, 7]])], "the gap filled is acked at once");
    },
  );

  await t.step("ignores invalid segments and acks of unsent data without throwing", () => {
    const a = new ReliableChannel(0);
    a.send(0, bytes(10));
    drain(a);
    a.receive(1, { kind: "bogus" } as unknown as Segment);
    a.receive(1, null as unknown as Segment);
    a.receive(1, ack(5));
    a.receive(1, { kind: "data", seq: 0, fragment: 3, fragments: 1, payload: new Uint8Array() });
    assertEquals(a.stats.invalidSegments, 4);
    assertEquals(drain(a), []);
    assert(!a.idle);
  });

  await t.step("rejects bad options", () => {
    assertThrows(() => new ReliableChannel(0, { sendWindow: 0 }), RangeError);
    assertThrows(() => new ReliableChannel(0, { receiveWindow: 1.5 }), RangeError);
    assertThrows(() => new ReliableChannel(0, { maxSackRanges: 17 }), RangeError);
    assertThrows(() => new ReliableChannel(0, { dupThresh: 0 }), RangeError);
    assertThrows(() => new ReliableChannel(0, { keepaliveMs: -1 }), RangeError);
    assertThrows(() => new ReliableChannel(0, { copies: 0 }), RangeError);
    assertThrows(() => new ReliableChannel(0, { mode: "go_back_n" as "selective" }), RangeError);
    assertThrows(() => new ReliableChannel(NaN), RangeError);
    assertThrows(() => new ReliableChannel(0, { ackEvery: 0 }), RangeError);
    assertThrows(() => new ReliableChannel(0, { maxBurst: 0 }), RangeError);
    assertThrows(() => new ReliableChannel(0, { initialWindow: 0.5 }), RangeError);
    assertThrows(() => new ReliableChannel(0, { ackDelayMs: 0 }), RangeError);
    assertEquals(new ReliableChannel(0, { sendWindow: undefined }).options.sendWindow, 2048);
  });
});

Deno.test("ReliableChannel fragments and reassembles messages", async (t) => {
  for (const [size, fragments] of [[0, 1], [1, 1], [1100, 1], [1101, 2], [100 * 1024, 94]]) {
    await t.step(`a message of ${size} bytes travels as ${fragments} segments`, () => {
      const a = new ReliableChannel(0), b = new ReliableChannel(0);
      const message = bytes(size, size);
      a.send(0, message);
      const sent = dataOf(drain(a));
      assertEquals(sent.length, Math.min(fragments, DEFAULT_CHANNEL_OPTIONS.initialWindow));
      assert(sent.every((s) => s.fragments === fragments && s.payload.length <= 1100));
      assertEquals(
        sent.reduce((sum, s) => sum + s.payload.length, 0),
        Math.min(size, DEFAULT_CHANNEL_OPTIONS.initialWindow * 1100),
      );
      for (const segment of sent) b.receive(10, segment);
      const { atB } = runPerfectLink(a, b, 10);
      assertEquals(atB, [message]);
    });
  }

  await t.step("reassembles fragments that arrive in reverse order", () => {
    const a = new ReliableChannel(0), b = new ReliableChannel(0);
    const messages = [bytes(100 * 1024, 1), bytes(0), bytes(2201, 3)];
    for (const message of messages) a.send(0, message);
    const { atB } = runPerfectLink(a, b, 0, { shuffle: true });
    assertEquals(atB, messages);
    assertEquals(a.stats.messagesAcked, 3);
  });

  await t.step("carries a message of MAX_MESSAGE_BYTES and refuses one byte more", () => {
    const a = new ReliableChannel(0), b = new ReliableChannel(0);
    assertThrows(() => a.send(0, new Uint8Array(MAX_MESSAGE_BYTES + 1)), RangeError);
    assertThrows(() => a.send(0, "text" as unknown as Uint8Array), TypeError);
    const big = bytes(MAX_MESSAGE_BYTES, 9);
    a.send(0, big);
    const { atB } = runPerfectLink(a, b, 0);
    assertEquals(atB.length, 1);
    assertEquals(atB[0], big);
  });

  await t.step("refuses messages beyond the end of the sequence space", () => {
    const a = new ReliableChannel(0, { initialSeq: MAX_SEQ });
    a.send(0, bytes(1100));
    assertThrows(() => a.send(0, bytes(1)), RangeError);
  });

  await t.step("declares the channel dead when the peer breaks the fragment sequence", () => {
    const b = new ReliableChannel(0);
    b.receive(0, { kind: "data", seq: 0, fragment: 0, fragments: 3, payload: bytes(1100) });
    b.receive(0, { kind: "data", seq: 1, fragment: 0, fragments: 1, payload: bytes(1) });
    const outputs = drain(b);
    assertEquals(segmentsOf(outputs), []);
    assertEquals(outputs.length, 1);
    assertEquals(outputs[0].type, "dead");
    assert(b.deadReason!.startsWith("The peer broke the message stream"), b.deadReason);
  });
});

Deno.test("ReliableChannel respects its windows", async (t) => {
  await t.step("keeps at most sendWindow segments in flight", () => {
    const a = new ReliableChannel(0, { ...MECHANICS, sendWindow: 4 });
    for (let i = 0; i < 10; i++) a.send(0, bytes(5, i));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [0, 1, 2, 3]);
    assertEquals(a.backlog, 10);
    a.receive(50, ack(2));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [4, 5]);
    // SACKed segments still count: the window is a span of sequence numbers, so
    // only the fast retransmission of the gap at 2 goes out.
    a.receive(60, ack(2, [[3, 6]]));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [2]);
    // The backlog (what read-ahead counts) leaves the SACKed 3, 4 and 5 out:
    // 2 in flight again and 6 to 9 queued.
    assertEquals(a.backlog, 5);
    a.receive(70, ack(6));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [6, 7, 8, 9]);
  });

  await t.step("never sends beyond the peer's advertised window", () => {
    const a = new ReliableChannel(0);
    a.send(0, bytes(10));
    drain(a);
    a.receive(10, ack(1, [], 2));
    for (let i = 0; i < 5; i++) a.send(20, bytes(10, i));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [1, 2]);
    a.receive(30, ack(2, [], 0));
    assertEquals(dataOf(drain(a)).length, 0);
    a.receive(40, ack(3, [], 3));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [3, 4, 5]);
  });

  await t.step("drops segments beyond the receive window without acknowledging them", () => {
    const b = new ReliableChannel(0, { receiveWindow: 4 });
    const seg = (seq: number): DataSegment => ({
      kind: "data",
      seq,
      fragment: 0,
      fragments: 1,
      payload: new Uint8Array([seq]),
    });
    b.receive(1, seg(4));
    assertEquals(acksOf(drain(b)), [ack(0, [], 4)]);
    b.receive(2, seg(3));
    b.receive(2, seg(1));
    assertEquals(acksOf(drain(b)), [ack(0, [[1, 2], [3, 4]], 4)]);
    b.receive(3, seg(0));
    const outputs = drain(b);
    assertEquals(acksOf(outputs), [ack(2, [[3, 4]], 4)]);
    assertEquals(deliveredOf(outputs).map((m) => m[0]), [0, 1]);
    assertEquals(b.stats.outOfWindowDropped, 1);
  });

  await t.step("counts the time the send window and the peer's window held the sender back", () => {
    const a = new ReliableChannel(0, { ...MECHANICS, sendWindow: 4 });
    for (let i = 0; i < 10; i++) a.send(0, bytes(5, i));
    drain(a);
    a.receive(50, ack(2)); // 50 ms held by the send window
    drain(a);
    a.receive(80, ack(6, [], 2)); // 30 more; 6 and 7 leave, then the peer's window is full
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [6, 7]);
    a.receive(100, ack(8)); // 20 ms held by the peer's window; 8 and 9 leave
    drain(a);
    a.receive(300, ack(10)); // nothing left to send: not held back
    assertEquals(a.stats.limitedMs, { window: 0, pacing: 0, sendWindow: 80, peerWindow: 20 });
  });

  await t.step("counts the time the congestion window and pacing held the sender back", () => {
    const a = new ReliableChannel(0, { initialWindow: 4, maxBurst: 1 });
    a.send(0, bytes(5));
    drain(a);
    a.receive(40, ack(1)); // an RTT sample: pacing starts
    for (let i = 0; i < 10; i++) a.send(40, bytes(5, i));
    let sent = dataOf(drain(a)).length;
    assertEquals(sent, 1, "one token in the bucket");
    let now = 40;
    while (sent < 10 && now < 200) {
      now = a.nextTimeout()!;
      a.onTimeout(now);
      const out = dataOf(drain(a)).length;
      if (out === 0) break;
      sent += out;
    }
    // Paced out one token at a time, then the window of 4 (of 5 with the
    // first ack) stayed full until the retransmission timer.
    assertEquals(sent, 6);
    const held = a.stats.limitedMs;
    assert(held.pacing > 0 && held.pacing < now - 40, `pacing ${held.pacing}`);
    assertEquals(held.pacing + held.window, now - 40, "held back from the first send on");
    assertEquals(held.sendWindow + held.peerWindow, 0);
  });

  await t.step("carries at most maxSackRanges ranges", () => {
    const b = new ReliableChannel(0, { maxSackRanges: 2 });
    for (const seq of [2, 4, 6, 8]) {
      b.receive(1, { kind: "data", seq, fragment: 0, fragments: 1, payload: new Uint8Array() });
    }
    // The lowest and the highest: what blocks delivery, and what the sender sent last.
    assertEquals(acksOf(drain(b)), [ack(0, [[2, 3], [8, 9]])]);
  });
});

Deno.test("ReliableChannel retransmits on timeout with exponential backoff", async (t) => {
  await t.step("doubles the RTO on each timeout and resets it on a new ack", () => {
    // A long deadAfterMs: the cap on the backoff (deadAfterMs / 40) stays out of the way.
    const a = new ReliableChannel(0, { keepaliveMs: 100_000, deadAfterMs: 10_000_000 });
    a.send(0, bytes(10));
    drain(a);
    const times: number[] = [];
    while (times.length < 5) {
      const at = a.nextTimeout()!;
      a.onTimeout(at);
      const seqs = dataOf(drain(a)).map((s) => s.seq);
      assertEquals(seqs, [0]);
      times.push(at);
    }
    assertEquals(times, [1000, 3000, 7000, 15000, 31000]);
    assertEquals(a.stats.timeoutRetransmissions, 5);
    assertEquals(a.stats.rtoMs, 32000);
    a.receive(31_050, ack(1));
    assertEquals(a.stats.rttSamples, 0, "Karn: no sample from a retransmitted segment");
    assertEquals(a.stats.rtoMs, 1000, "backoff reset by the new ack");
    a.send(40_000, bytes(10));
    drain(a);
    assertEquals(a.nextTimeout(), 41_000);
  });

  await t.step("resends two segments, then everything outstanding", () => {
    const a = new ReliableChannel(0, { ...MECHANICS, keepaliveMs: 100_000, deadAfterMs: 1e6 });
    a.send(0, bytes(10));
    a.send(0, bytes(10));
    a.send(500, bytes(10));
    drain(a);
    a.onTimeout(999);
    assertEquals(drain(a), []);
    a.onTimeout(1000);
    // F-RTO, TLP, PTO: the first timeout resends two, a flight merely delayed is not resent.
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [0, 1]);
    assertEquals(a.nextTimeout(), 3000, "the doubled RTO, from the timeout (RFC 6298 5.6)");
    a.onTimeout(3000);
    // RFC 6675 5.1: seq 2 (sent at 500) goes too, not after another, doubled, RTO.
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [2, 0, 1]);
    assertEquals(a.nextTimeout(), 7000);
  });

  /** A channel whose first timeout, at 300 ms, sent probes of 1 and 2 of the four sent at 100. */
  function probedAfterFirstTimeout(): ReliableChannel {
    const a = new ReliableChannel(0, { ...MECHANICS, keepaliveMs: 100_000, deadAfterMs: 1e6 });
    a.send(0, bytes(10));
    drain(a);
    a.receive(40, ack(1)); // the smallest RTT, 40 ms; the RTO without backoff is 200
    for (let i = 0; i < 4; i++) a.send(100, bytes(10, i));
    drain(a);
    a.onTimeout(300);
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [1, 2]);
    return a;
  }

  await t.step("sends nothing more when the probe's ack shows the flight was delayed", () => {
    const a = probedAfterFirstTimeout();
    a.receive(310, ack(5)); // the originals' ack, late
    assertEquals(dataOf(drain(a)), []);
    assertEquals(a.stats.timeoutRetransmissions, 2);
    assertEquals(a.stats.spuriousRetransmissions, 2, "acked 10 ms after the probes left");
    // 3 and 4, sent once at 100, give a sample of 210 ms: 61.25 + 4 x 57.5 + 10 of ack delay.
    assertEquals(a.stats.rtoMs, 301.25, "no backoff left");
  });

  await t.step("takes no RTT from an ack that came a round trip or more after the timeout", () => {
    const a = probedAfterFirstTimeout();
    // 3 and 4's acks were lost; this one may answer the probes. Taken, 3 and 4 sent at 100 would
    // give a sample of 1,900 ms, the timeout's wait and not the path (20% loss on a 2 ms path:
    // an RTO of 4 s and a tenth of the goodput).
    a.receive(2000, ack(5));
    assertEquals(a.stats.rtoMs, 200);
  });

  await t.step("caps the backoff at deadAfterMs / PROBES_BEFORE_DEATH", () => {
    // The first timeout is the tail probe, 2 SRTTs and the ack delay after the send at 100;
    // the backed-off RTO runs from it.
    const cases: [number, number[]][] = [
      [20_000, [190, 440, 690, 940]],
      [1e6, [190, 590, 1390, 2990]],
    ];
    for (const [deadAfterMs, expected] of cases) {
      const a = new ReliableChannel(0, { ...MECHANICS, keepaliveMs: 100_000, deadAfterMs });
      a.send(0, bytes(10));
      drain(a);
      a.receive(40, ack(1)); // a sample of 40 ms: the RTO without backoff is minRtoMs, 200
      a.send(100, bytes(10));
      drain(a);
      const times: number[] = [];
      while (times.length < 4) {
        const at = a.nextTimeout()!;
        a.onTimeout(at);
        assertEquals(dataOf(drain(a)).map((s) => s.seq), [1]);
        times.push(at);
      }
      // With the default 20 s, 250 ms (20000 / 80): 80 probes before the peer is declared dead.
      assertEquals(times, expected);
      assertEquals(deadAfterMs / PROBES_BEFORE_DEATH, deadAfterMs === 20_000 ? 250 : 12_500);
    }
  });

  await t.step(
    "probes the end of a transfer 2 SRTTs after the last progress, not at the RTO",
    () => {
      const a = new ReliableChannel(0, { ...MECHANICS, keepaliveMs: 100_000 });
      a.send(0, bytes(10));
      drain(a);
      a.receive(40, ack(1)); // SRTT 40 ms, the RTO 200
      a.send(100, bytes(10));
      drain(a);
      // Nothing left to send: 100 + 2 x 40 + the 10 ms ack delay (RFC 8985 7.2), not 100 + 200.
      assertEquals(a.nextTimeout(), 190);
      a.onTimeout(190);
      assertEquals(dataOf(drain(a)).map((s) => s.seq), [1]);
      const b = new ReliableChannel(0, { ...MECHANICS, keepaliveMs: 100_000, sendWindow: 1 });
      b.send(0, bytes(10));
      drain(b);
      b.receive(40, ack(1));
      b.send(100, bytes(10));
      b.send(100, bytes(10));
      drain(b);
      assertEquals(b.nextTimeout(), 300, "more waits to be sent: the RTO");
    },
  );

  await t.step("takes no RTT sample from a segment acked while it waited, judged lost", () => {
    const a = new ReliableChannel(0, { keepaliveMs: 100_000 });
    for (let i = 0; i < 10; i++) a.send(0, bytes(10, i));
    assertEquals(dataOf(drain(a)).length, 10);
    a.onTimeout(1000); // the probes
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [0, 1]);
    a.onTimeout(2000); // all ten judged lost; the window after a timeout resends four
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [2, 3, 4, 5]);
    // The first acks were lost: this one covers the six resent and four sent once, at 0.
    a.receive(2040, ack(10));
    assertEquals(a.stats.rttSamples, 0, "no sample of 2040 ms on a path of 40");
  });

  await t.step("takes RTT samples only from segments sent once (Karn)", () => {
    const a = new ReliableChannel(0, { ...MECHANICS, keepaliveMs: 100_000 });
    a.send(0, bytes(10));
    a.send(0, bytes(10));
    drain(a);
    a.onTimeout(1000); // both retransmitted
    drain(a);
    a.send(1100, bytes(10));
    drain(a);
    a.receive(1180, ack(3));
    assertEquals(a.stats.rttSamples, 1);
    assertEquals(a.stats.srttMs, 80);
  });
});

Deno.test("ReliableChannel fast-retransmits on SACK evidence", async (t) => {
  await t.step("retransmits at once when dupThresh later segments are acknowledged", () => {
    const a = new ReliableChannel(0);
    for (let i = 0; i < 4; i++) a.send(0, bytes(10, i));
    drain(a);
    a.receive(50, ack(0, [[1, 2]]));
    assertEquals(dataOf(drain(a)), [], "one later segment is not enough with dupThresh 2");
    a.receive(51, ack(0, [[1, 3]]));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [0]);
    assertEquals(a.stats.fastRetransmissions, 1);
  });

  await t.step("retransmits a segment once per round trip", () => {
    const a = new ReliableChannel(0, MECHANICS);
    for (let i = 0; i < 4; i++) a.send(0, bytes(10, i));
    drain(a);
    a.receive(50, ack(0, [[1, 3]]));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [0]);
    a.receive(52, ack(0, [[1, 3]]));
    a.receive(53, ack(0, [[1, 4]]));
    assertEquals(dataOf(drain(a)), [], "seq 3 left before the retransmission: no new evidence");
    a.send(60, bytes(10, 4));
    a.send(60, bytes(10, 5));
    drain(a);
    a.receive(110, ack(0, [[1, 6]]));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [0], "the retransmission was lost too");
    assertEquals(a.stats.fastRetransmissions, 2);
    a.receive(160, ack(6));
    assert(a.idle);
  });

  await t.step("obeys dupThresh 1", () => {
    const a = new ReliableChannel(0, { dupThresh: 1 });
    for (let i = 0; i < 3; i++) a.send(0, bytes(10, i));
    drain(a);
    a.receive(50, ack(0, [[2, 3]]));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [0, 1]);
  });

  await t.step("sends redundant copies while the stream is thin", () => {
    const a = new ReliableChannel(0, LOW_LATENCY_CHANNEL_OPTIONS);
    a.send(0, bytes(10));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [0, 0]);
    a.send(0, bytes(3000));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [1, 1, 2, 2, 3, 3]);
    // Five more segments waiting: a bulk stream, even with little in flight.
    a.send(0, bytes(5000));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [4, 5, 6, 7, 8]);
    assertEquals(a.stats.redundantCopies, 4);
    a.receive(100, ack(9));
    assertEquals(a.stats.rttSamples, 1, "copies sent together keep the sample valid");
  });
});

Deno.test("ReliableChannel keeps the peer informed and detects its death", async (t) => {
  await t.step("sends a keepalive after keepaliveMs of silence and the peer acks it", () => {
    const a = new ReliableChannel(0), b = new ReliableChannel(0);
    assertEquals(a.nextTimeout(), 5000);
    a.onTimeout(4999);
    assertEquals(drain(a), []);
    a.onTimeout(5000);
    const out = segmentsOf(drain(a));
    assertEquals(out, [{ kind: "keepalive" }]);
    b.receive(5010, out[0]);
    const reply = segmentsOf(drain(b));
    assertEquals(reply, [ack(0)]);
    a.receive(5020, reply[0]);
    assertEquals(a.nextTimeout(), 10_000);
    assertEquals(a.stats.keepalivesSent, 1);
    assertEquals(b.stats.keepalivesReceived, 1);
  });

  await t.step("stays alive over an idle, working link", () => {
    const a = new ReliableChannel(0), b = new ReliableChannel(0);
    runPerfectLink(a, b, 0, { until: 120_000, stopWhenIdle: false });
    assert(a.stats.keepalivesSent + b.stats.keepalivesSent >= 120_000 / 5000 - 1);
    a.send(120_000, bytes(10));
    const { atB } = runPerfectLink(a, b, 120_000);
    assertEquals(atB.length, 1);
    assertEquals(a.deadReason, undefined);
    assertEquals(b.deadReason, undefined);
  });

  await t.step("reports dead once after deadAfterMs of silence and stops", () => {
    const a = new ReliableChannel(0);
    a.send(0, bytes(10));
    const outputs: ChannelOutput[] = drain(a);
    for (let at = a.nextTimeout(); at !== undefined; at = a.nextTimeout()) {
      a.onTimeout(at);
      outputs.push(...drain(a));
    }
    const dead = outputs.filter((out) => out.type === "dead");
    assertEquals(dead, [{ type: "dead", reason: "Nothing was heard from the peer for 20000 ms" }]);
    assertEquals(outputs.at(-1)!.type, "dead");
    assertEquals(a.deadReason, "Nothing was heard from the peer for 20000 ms");
    assertEquals(a.nextTimeout(), undefined);
    assertThrows(() => a.send(30_000, bytes(1)), TypeError);
    a.receive(30_000, ack(1));
    a.onTimeout(40_000);
    assertEquals(drain(a), []);
  });

  await t.step("reports dead when a segment was retransmitted maxRetransmits times", () => {
    const a = new ReliableChannel(0, { maxRetransmits: 3 });
    a.send(0, bytes(10));
    let sends = dataOf(drain(a)).length;
    const outputs: ChannelOutput[] = [];
    for (let at = a.nextTimeout(); at !== undefined; at = a.nextTimeout()) {
      a.receive(at, { kind: "keepalive" }); // the peer is alive, but the data never arrives
      a.onTimeout(at);
      const out = drain(a);
      sends += dataOf(out).length;
      outputs.push(...out);
    }
    assertEquals(sends, 4);
    assertEquals(outputs.at(-1), {
      type: "dead",
      reason: "Segment 0 was retransmitted 3 times without being acknowledged",
    });
  });

  await t.step("dies after a partition and keeps what was delivered", () => {
    const a = new ReliableChannel(0), b = new ReliableChannel(0);
    a.send(0, bytes(10, 1));
    b.send(0, bytes(10, 2));
    const { atA, atB, end } = runPerfectLink(a, b, 0);
    assertEquals([atA.length, atB.length], [1, 1]);
    a.send(end, bytes(10, 3)); // the link is cut from now on
    drain(a);
    drain(b);
    let now = end;
    while (a.deadReason === undefined || b.deadReason === undefined) {
      now = Math.min(a.nextTimeout() ?? Infinity, b.nextTimeout() ?? Infinity);
      a.onTimeout(now);
      b.onTimeout(now);
      drain(a);
      drain(b);
    }
    assert(now - end <= 20_000 + 1, `dead after ${now - end} ms`);
    assertEquals(a.stats.messagesDelivered, 1);
  });
});

Deno.test("ReliableChannel in stop-and-wait mode", async (t) => {
  await t.step("keeps one segment in flight, ignores SACKs and waits the fixed timeout", () => {
    const a = new ReliableChannel(0, { mode: "stop_and_wait", deadAfterMs: 1e9 });
    for (let i = 0; i < 3; i++) a.send(0, bytes(10, i));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [0]);
    a.receive(50, ack(0, [[1, 3]]));
    assertEquals(dataOf(drain(a)), [], "no fast retransmit, no new segment");
    assertEquals(a.nextTimeout(), 5000, "keepalive first");
    a.onTimeout(5000);
    assertEquals(segmentsOf(drain(a)), [{ kind: "keepalive" }]);
    assertEquals(a.nextTimeout(), 10_000);
    a.onTimeout(10_000);
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [0]);
    assertEquals(a.nextTimeout(), 15_000, "keepalive again: no backoff of the 10 s timeout");
    a.onTimeout(15_000);
    drain(a);
    assertEquals(a.nextTimeout(), 20_000);
    a.receive(20_000, ack(1));
    assertEquals(dataOf(drain(a)).map((s) => s.seq), [1]);
    assertEquals(a.stats.rtoMs, 10_000);
  });

  await t.step("accepts only the next segment and advertises a window of 1", () => {
    const b = new ReliableChannel(0, { mode: "stop_and_wait" });
    const seg = (seq: number): DataSegment => ({
      kind: "data",
      seq,
      fragment: 0,
      fragments: 1,
      payload: new Uint8Array([seq]),
    });
    b.receive(0, seg(1));
    assertEquals(acksOf(drain(b)), [ack(0, [], 1)]);
    b.receive(0, seg(0));
    assertEquals(acksOf(drain(b)), [ack(1, [], 1)]);
  });

  await t.step("is much slower than selective mode over a long link", () => {
    const run = (mode: "selective" | "stop_and_wait") => {
      const a = new ReliableChannel(0, { mode }), b = new ReliableChannel(0, { mode });
      for (let i = 0; i < 20; i++) a.send(0, bytes(2000, i));
      return runPerfectLink(a, b, 0, { delayMs: 50 });
    };
    const selective = run("selective"), stopAndWait = run("stop_and_wait");
    assertEquals(selective.atB.length, 20);
    assertEquals(stopAndWait.atB.length, 20);
    // 40 segments: one round trip each in stop-and-wait; in selective mode,
    // slow start from 10 segments sends them in three windows.
    assert(stopAndWait.end >= 40 * 100, `stop-and-wait took ${stopAndWait.end} ms`);
    assert(selective.end <= 4 * 100 + 1, `selective took ${selective.end} ms`);
  });
});

Deno.test("ReliableChannel sends nothing after dying during an ack", () => {
  const a = new ReliableChannel(0, { maxRetransmits: 0, sendWindow: 4, dupThresh: 1 });
  for (let i = 0; i < 5; i++) a.send(0, bytes(10, i));
  assertEquals(dataOf(drain(a)).map((s) => s.seq), [0, 1, 2, 3]);
  // The ack opens the window for seq 4, but seq 1 needs a retransmission it may not have.
  a.receive(50, ack(1, [[3, 4]]));
  const outputs = drain(a);
  assertEquals(outputs, [
    { type: "acked", id: 1 },
    { type: "acked", id: 4 },
    { type: "dead", reason: "Segment 1 was retransmitted 0 times without being acknowledged" },
  ]);
});

Deno.test("ReliableChannel sends an urgent message ahead of queued bulk data", async (t) => {
  for (const urgent of [true, false]) {
    await t.step(urgent ? "urgent" : "not urgent", () => {
      const a = new ReliableChannel(0), b = new ReliableChannel(0);
      for (let i = 0; i < 10; i++) a.send(0, new Uint8Array(32 * 1024).fill(i));
      const chat = a.send(0, Uint8Array.of(200), { urgent });
      const delivered: number[] = [];
      let ackedAt: number | undefined;
      for (let now = 0; now < 60_000 && delivered.length < 11; now += 5) {
        for (let out = a.poll(); out; out = a.poll()) {
          if (out.type === "segment") b.receive(now + 20, out.segment);
          if (out.type === "acked" && out.id === chat) ackedAt ??= now;
        }
        for (let out = b.poll(); out; out = b.poll()) {
          if (out.type === "segment") a.receive(now + 20, out.segment);
          if (out.type === "deliver") delivered.push(out.message[0]);
        }
        if ((a.nextTimeout() ?? Infinity) <= now) a.onTimeout(now);
        if ((b.nextTimeout() ?? Infinity) <= now) b.onTimeout(now);
      }
      // The first message was already being sent: the chat can only follow it.
      const position = delivered.indexOf(200);
      assertEquals(position, urgent ? 1 : 10);
    });
  }
});

Deno.test("ReliableChannel runs BBR by default and NewReno on request, and rejects others", () => {
  assertEquals(new ReliableChannel(0).options.congestion, "bbr");
  assertEquals(new ReliableChannel(0, { congestion: "newreno" }).options.congestion, "newreno");
  assertThrows(
    () => new ReliableChannel(0, { congestion: "cubic" as "bbr" }),
    RangeError,
    'Cannot use congestion "cubic"',
  );
});
