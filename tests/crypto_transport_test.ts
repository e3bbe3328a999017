import { assertEquals, assertThrows } from "@std/assert";
import fc from "fast-check";
import { SeededRandom } from "../lib/random.ts";
import { CryptoError } from "../lib/crypto/crypto_error.ts";
import { HandshakeState } from "../lib/crypto/handshake_state.ts";
import { keyPairFromPrivateKey } from "../lib/crypto/key_pair.ts";
import { REPLAY_WINDOW_SIZE, ReplayWindow } from "../lib/crypto/replay_window.ts";
import { type TransportLimits, TransportSession } from "../lib/crypto/transport_session.ts";

/** A client and a server session after a real IK handshake at time `now`. */
function sessions(now = 1_000, limits: Partial<TransportLimits> = {}) {
  const random = new SeededRandom(11);
  const server = keyPairFromPrivateKey(random.bytes(32));
  const client = keyPairFromPrivateKey(random.bytes(32));
  const i = new HandshakeState({
    pattern: "IK",
    initiator: true,
    staticKeyPair: client,
    remoteStaticKey: server.publicKey,
    random,
  });
  const r = new HandshakeState({ pattern: "IK", initiator: false, staticKeyPair: server, random });
  r.readMessage(i.writeMessage());
  i.readMessage(r.writeMessage());
  return {
    client: new TransportSession(i.split(), { now, initiator: true, limits }),
    server: new TransportSession(r.split(), { now, initiator: false, limits }),
  };
}

const bytes = (...values: number[]) => Uint8Array.from(values);
const codeOf = (f: () => unknown) => assertThrows(f, CryptoError).code;

Deno.test("TransportSession: messages go both ways with rising counters", () => {
  const { client, server } = sessions();
  const a = client.seal(bytes(1, 2, 3), 1_000);
  const b = client.seal(bytes(4), 1_000);
  assertEquals([a.counter, b.counter], [0, 1]);
  assertEquals(a.ciphertext.length, 3 + 16);
  assertEquals(server.open(b.counter, b.ciphertext, 1_001), bytes(4));
  assertEquals(server.open(a.counter, a.ciphertext, 1_001), bytes(1, 2, 3));
  const back = server.seal(bytes(9), 1_002);
  assertEquals(back.counter, 0);
  assertEquals(client.open(back.counter, back.ciphertext, 1_002), bytes(9));
});

Deno.test("TransportSession: every bit flip is auth_failed and does not burn the counter", () => {
  const { client, server } = sessions();
  const { counter, ciphertext } = client.seal(new Uint8Array(40).fill(7), 1_000);
  for (let bit = 0; bit < ciphertext.length * 8; bit++) {
    const bad = ciphertext.slice();
    bad[bit >> 3] ^= 1 << (bit & 7);
    assertEquals(codeOf(() => server.open(counter, bad, 1_000)), "auth_failed");
  }
  assertEquals(codeOf(() => server.open(counter + 1, ciphertext, 1_000)), "auth_failed");
  assertEquals(server.open(counter, ciphertext, 1_000), new Uint8Array(40).fill(7));
});

Deno.test("TransportSession: truncated messages are refused", () => {
  const { client, server } = sessions();
  const { counter, ciphertext } = client.seal(bytes(1, 2, 3, 4), 1_000);
  for (let length = 0; length < ciphertext.length; length++) {
    const code = codeOf(() => server.open(counter, ciphertext.subarray(0, length), 1_000));
    assertEquals(code, length < 16 ? "truncated" : "auth_failed");
  }
});

Deno.test("TransportSession: a replay is refused, also after the window moved on", () => {
  const { client, server } = sessions();
  const first = client.seal(bytes(1), 1_000);
  server.open(first.counter, first.ciphertext, 1_000);
  assertEquals(codeOf(() => server.open(first.counter, first.ciphertext, 1_000)), "replayed");
  for (let i = 0; i < 100; i++) {
    const m = client.seal(bytes(i), 1_000);
    server.open(m.counter, m.ciphertext, 1_000);
  }
  assertEquals(codeOf(() => server.open(first.counter, first.ciphertext, 1_000)), "replayed");
});

Deno.test("TransportSession: a counter older than the window is stale, even if never seen", () => {
  const { client, server } = sessions();
  const old = client.seal(bytes(1), 1_000);
  let last = old;
  for (let i = 0; i <= REPLAY_WINDOW_SIZE; i++) last = client.seal(bytes(2), 1_000);
  server.open(last.counter, last.ciphertext, 1_000);
  assertEquals(last.counter, REPLAY_WINDOW_SIZE + 1);
  assertEquals(codeOf(() => server.open(old.counter, old.ciphertext, 1_000)), "stale_counter");
});

Deno.test("TransportSession: messages reordered within the window are all delivered once", () => {
  const { client, server } = sessions();
  const sealed = Array.from({ length: 300 }, (_, i) => client.seal(bytes(i & 0xff), 1_000));
  const order = sealed.map((_, i) => i).sort((a, b) => ((a * 7919) % 300) - ((b * 7919) % 300));
  for (const i of order) {
    assertEquals(server.open(sealed[i].counter, sealed[i].ciphertext, 1_000), bytes(i & 0xff));
  }
  for (const m of sealed) {
    assertEquals(codeOf(() => server.open(m.counter, m.ciphertext, 1_000)), "replayed");
  }
});

Deno.test("TransportSession: a forged counter far ahead does not move the window", () => {
  const { client, server } = sessions();
  const m = client.seal(bytes(5), 1_000);
  assertEquals(codeOf(() => server.open(1_000_000, m.ciphertext, 1_000)), "auth_failed");
  assertEquals(server.open(m.counter, m.ciphertext, 1_000), bytes(5));
});

Deno.test("TransportSession: counters outside [0, limit) are refused before decrypting", () => {
  const { client, server } = sessions(0, { rejectAfterMessages: 10 });
  const m = client.seal(bytes(5), 0);
  for (const counter of [-1, 0.5, 10, 2 ** 60, NaN]) {
    assertEquals(codeOf(() => server.open(counter, m.ciphertext, 0)), "stale_counter");
  }
});

Deno.test("TransportSession: the initiator rekeys after rekeyAfterMs; both expire after rejectAfterMs", () => {
  const { client, server } = sessions(5_000);
  assertEquals(client.rekeyDue(5_000 + 119_999), false);
  assertEquals(client.rekeyDue(5_000 + 120_000), true);
  assertEquals(server.rekeyDue(5_000 + 179_999), false);
  const m = client.seal(bytes(1), 5_000 + 179_999);
  assertEquals(server.open(m.counter, m.ciphertext, 5_000 + 179_999), bytes(1));
  assertEquals(client.isExpired(5_000 + 180_000), true);
  assertEquals(codeOf(() => client.seal(bytes(1), 5_000 + 180_000)), "expired");
  const late = client.seal(bytes(2), 5_000 + 179_999);
  assertEquals(
    codeOf(() => server.open(late.counter, late.ciphertext, 5_000 + 180_000)),
    "expired",
  );
});

Deno.test("TransportSession: either side rekeys after rekeyAfterMessages and stops at rejectAfterMessages", () => {
  const { server } = sessions(0, { rekeyAfterMessages: 3, rejectAfterMessages: 5 });
  for (let i = 0; i < 3; i++) {
    assertEquals(server.rekeyDue(0), false);
    server.seal(bytes(i), 0);
  }
  assertEquals(server.rekeyDue(0), true);
  server.seal(bytes(3), 0);
  server.seal(bytes(4), 0);
  assertEquals(codeOf(() => server.seal(bytes(5), 0)), "expired");
  assertEquals(server.sent, 5);
});

Deno.test("ReplayWindow: agrees with a set of seen counters over random arrival orders", () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 6000 }), { maxLength: 400 }), (counters) => {
      const window = new ReplayWindow();
      const seen = new Set<number>();
      let newest = -1;
      for (const c of counters) {
        const expected = seen.has(c)
          ? (newest - c > REPLAY_WINDOW_SIZE ? "stale" : "replayed")
          : (newest - c > REPLAY_WINDOW_SIZE ? "stale" : "fresh");
        assertEquals(window.accept(c), expected, `counter ${c} after newest ${newest}`);
        if (expected === "fresh") {
          seen.add(c);
          newest = Math.max(newest, c);
        }
      }
    }),
    { seed: 18, numRuns: 300 },
  );
});

Deno.test("ReplayWindow: a jump of more than the whole ring clears it", () => {
  const window = new ReplayWindow();
  window.accept(3);
  window.accept(3 + 64 * 32 * 5);
  assertEquals(window.check(3 + 64 * 32 * 5 - 1), "fresh");
  assertEquals(window.check(3 + 64 * 32 * 5 - REPLAY_WINDOW_SIZE), "fresh");
  assertEquals(window.check(3 + 64 * 32 * 5 - REPLAY_WINDOW_SIZE - 1), "stale");
});
