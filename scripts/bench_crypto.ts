/**
 * Measures the secure layer's CPU cost in one run, each figure beside a
 * baseline from the same run:
 *
 * - a Noise handshake per side (IK, client to server; IKpsk2, peer to peer),
 *   including the MACs, the datagram codec and the transport keys, against
 *   the goal of 1 ms and against the X25519 operations alone (the floor);
 * - sealing and opening a 1,100-byte datagram (encode + seal, decode + open
 *   with the replay window) against a null cipher: the same framing with a
 *   plain copy instead of ChaCha20-Poly1305.
 *
 * Each figure is the median of batches, after a warm-up, in CPU time of this
 * process (`process.cpuUsage()`), so other processes on a shared machine do
 * not inflate it. The handshake replays each side alone with seeded
 * ephemeral keys (a benchmark-only choice; real keys come from the OS).
 *
 * Usage: deno run -A scripts/bench_crypto.ts [--json]
 *
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { cpuUsage } from "node:process";
import { cryptoRandom, SeededRandom } from "../lib/random.ts";
import { CookieChecker } from "../lib/crypto/cookie_checker.ts";
import { CookieGenerator } from "../lib/crypto/cookie_generator.ts";
import { type HandshakePattern, HandshakeState } from "../lib/crypto/handshake_state.ts";
import { dh, generateKeyPair } from "../lib/crypto/key_pair.ts";
import { decodeSecureDatagram, encodeSecureDatagram } from "../lib/crypto/secure_datagram.ts";
import { TransportSession } from "../lib/crypto/transport_session.ts";

const DATAGRAM_PAYLOAD = 1_100;
const BATCHES = 15;

/** CPU milliseconds of this process (user + system), immune to other processes' load. */
function cpuMs(): number {
  const { user, system } = cpuUsage();
  return (user + system) / 1_000;
}

/** Median CPU microseconds per operation of `run(n)`, which returns CPU ms, over batches of `n`. */
function median(batch: number, run: (n: number) => number): number {
  run(batch); // warm-up
  const times: number[] = [];
  for (let b = 0; b < BATCHES; b++) times.push(run(batch) / batch);
  times.sort((x, y) => x - y);
  return times[Math.floor(BATCHES / 2)] * 1_000;
}

/** Times `work` in CPU ms. */
function timed(work: () => void): number {
  const t = cpuMs();
  work();
  return cpuMs() - t;
}

const server = generateKeyPair(cryptoRandom);
const client = generateKeyPair(cryptoRandom);
const source = { address: "127.0.0.1", port: 40_000 };

/**
 * CPU microseconds per handshake on each side. A recorded run gives each
 * side the other's messages; the timed runs replay one side alone with the
 * same seeded ephemeral keys, so each side is timed whole, apart.
 */
function handshake(pattern: HandshakePattern): { initiator: number; responder: number } {
  const psk = pattern === "IKpsk2" ? cryptoRandom.bytes(32) : undefined;
  const checker = new CookieChecker(server.publicKey, { random: cryptoRandom });
  const initiatorChecker = new CookieChecker(client.publicKey, { random: cryptoRandom });
  const clientMacs = new CookieGenerator(client.publicKey);
  const serverMacs = new CookieGenerator(server.publicKey);
  const initiator = (i: number, m2?: Uint8Array) => {
    const hs = new HandshakeState({
      pattern,
      initiator: true,
      staticKeyPair: client,
      remoteStaticKey: server.publicKey,
      psk,
      random: new SeededRandom(2 * i),
    });
    const m1 = serverMacs.addMacs(
      encodeSecureDatagram({ kind: "initiation", sender: i, handshake: hs.writeMessage() }),
      0,
    );
    if (m2 === undefined) return { hs, m1 };
    if (initiatorChecker.check(m2, source, 0, false).kind !== "accept") throw new Error("mac1");
    const d2 = decodeSecureDatagram(m2);
    if (d2.kind !== "response") throw new Error("kind");
    hs.readMessage(d2.handshake);
    new TransportSession(hs.split(), { now: 0, initiator: true });
    return { hs, m1 };
  };
  const responder = (i: number, m1: Uint8Array) => {
    if (checker.check(m1, source, 0, false).kind !== "accept") throw new Error("mac1");
    const d1 = decodeSecureDatagram(m1);
    if (d1.kind !== "initiation") throw new Error("kind");
    const hs = new HandshakeState({
      pattern,
      initiator: false,
      staticKeyPair: server,
      psk,
      random: new SeededRandom(2 * i + 1),
    });
    hs.readMessage(d1.handshake);
    const m2 = clientMacs.addMacs(
      encodeSecureDatagram({
        kind: "response",
        sender: i,
        receiver: d1.sender,
        handshake: hs.writeMessage(),
      }),
      0,
    );
    new TransportSession(hs.split(), { now: 0, initiator: false });
    return m2;
  };
  const batch = 100;
  const transcript = Array.from({ length: batch }, (_, i) => {
    const { m1 } = initiator(i);
    return { m1, m2: responder(i, m1) };
  });
  return {
    initiator: median(batch, (n) =>
      timed(() => {
        for (let i = 0; i < n; i++) initiator(i, transcript[i].m2);
      })),
    responder: median(batch, (n) =>
      timed(() => {
        for (let i = 0; i < n; i++) responder(i, transcript[i].m1);
      })),
  };
}

/** Microseconds per X25519 agreement (key import included, as the handshake pays it). */
function dhCost(): number {
  return median(200, (n) => {
    const t = cpuMs();
    for (let i = 0; i < n; i++) dh(client.privateKey, server.publicKey);
    return cpuMs() - t;
  });
}

/** Microseconds to seal+encode and to decode+open one datagram, with ChaCha20-Poly1305 or a copy. */
function datagrams(): Record<string, number> {
  const payload = cryptoRandom.bytes(DATAGRAM_PAYLOAD);
  const hsI = new HandshakeState({
    pattern: "IK",
    initiator: true,
    staticKeyPair: client,
    remoteStaticKey: server.publicKey,
    random: cryptoRandom,
  });
  const hsR = new HandshakeState({
    pattern: "IK",
    initiator: false,
    staticKeyPair: server,
    random: cryptoRandom,
  });
  hsR.readMessage(hsI.writeMessage());
  hsI.readMessage(hsR.writeMessage());
  const sender = new TransportSession(hsI.split(), { now: 0, initiator: true });
  const receiver = new TransportSession(hsR.split(), { now: 0, initiator: false });
  const batch = 2_000;
  const sealed: Uint8Array[] = [];
  const seal = median(batch, (n) => {
    sealed.length = 0;
    const t = cpuMs();
    for (let i = 0; i < n; i++) {
      const { counter, ciphertext } = sender.seal(payload, 0);
      sealed.push(encodeSecureDatagram({ kind: "transport", receiver: 1, counter, ciphertext }));
    }
    return cpuMs() - t;
  });
  const open = median(batch, (n) => {
    const batchOf: Uint8Array[] = [];
    for (let i = 0; i < n; i++) {
      const { counter, ciphertext } = sender.seal(payload, 0);
      batchOf.push(encodeSecureDatagram({ kind: "transport", receiver: 1, counter, ciphertext }));
    }
    const t = cpuMs();
    for (const bytes of batchOf) {
      const d = decodeSecureDatagram(bytes);
      if (d.kind !== "transport") throw new Error("kind");
      receiver.open(d.counter, d.ciphertext, 0);
    }
    return cpuMs() - t;
  });
  let nullCounter = 0;
  const nullSeal = median(batch, (n) => {
    const t = cpuMs();
    for (let i = 0; i < n; i++) {
      const ciphertext = new Uint8Array(payload.length + 16);
      ciphertext.set(payload);
      sealed.push(
        encodeSecureDatagram({
          kind: "transport",
          receiver: 1,
          counter: nullCounter++,
          ciphertext,
        }),
      );
    }
    sealed.length = 0;
    return cpuMs() - t;
  });
  const plain = encodeSecureDatagram({
    kind: "transport",
    receiver: 1,
    counter: 0,
    ciphertext: new Uint8Array(payload.length + 16),
  });
  const nullOpen = median(batch, (n) => {
    const t = cpuMs();
    for (let i = 0; i < n; i++) {
      const d = decodeSecureDatagram(plain);
      if (d.kind !== "transport") throw new Error("kind");
      d.ciphertext.slice(0, d.ciphertext.length - 16);
    }
    return cpuMs() - t;
  });
  return { seal, open, nullSeal, nullOpen };
}

const flags = parseArgs(Deno.args, { boolean: ["json", "help"] });
if (flags.help || flags._.length > 0) {
  console.log("Usage: deno run -A scripts/bench_crypto.ts [--json]");
  Deno.exit(flags.help ? 0 : 2);
}

const dhUs = dhCost();
const ik = handshake("IK");
const ikpsk2 = handshake("IKpsk2");
const d = datagrams();
const result = {
  x25519Us: dhUs,
  handshakeIK: ik,
  handshakeIKpsk2: ikpsk2,
  datagramBytes: DATAGRAM_PAYLOAD,
  sealUs: d.seal,
  openUs: d.open,
  nullSealUs: d.nullSeal,
  nullOpenUs: d.nullOpen,
};
if (flags.json) {
  console.log(JSON.stringify(result));
} else {
  const f = (us: number) => `${us.toFixed(1)} us`;
  const side = (name: string, us: number) =>
    `  ${name.padEnd(10)} ${f(us).padStart(9)}  (${(us / 1000).toFixed(2)} of the 1 ms goal, ${
      (us / dhUs).toFixed(1)
    }x one X25519 of ${f(dhUs)})`;
  console.log(`Handshake CPU per side (process CPU time), median of ${BATCHES} batches of 100:`);
  for (const [name, h] of [["IK", ik], ["IKpsk2", ikpsk2]] as const) {
    console.log(` ${name}`);
    console.log(side("initiator", h.initiator));
    console.log(side("responder", h.responder));
  }
  console.log(
    `Per ${DATAGRAM_PAYLOAD}-byte datagram (process CPU time), median of ${BATCHES} batches of 2000:`,
  );
  console.log(
    `  seal+encode  ${f(d.seal)}   null copy ${f(d.nullSeal)}   (+${f(d.seal - d.nullSeal)})`,
  );
  console.log(
    `  decode+open  ${f(d.open)}   null copy ${f(d.nullOpen)}   (+${f(d.open - d.nullOpen)})`,
  );
  console.log(
    `  sealed throughput on one core: ${(DATAGRAM_PAYLOAD / d.seal).toFixed(0)} MB/s seal, ${
      (DATAGRAM_PAYLOAD / d.open).toFixed(0)
    } MB/s open`,
  );
}
