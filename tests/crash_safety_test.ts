/**
 * Crash safety: the real server, killed with SIGKILL at random instants
 * (seeded, the seed printed) during a storm of registrations,
 * deregistrations and uploads crafted with the codec in `lib/wire/`, then
 * restarted on the same data directory, again and again. After every
 * restart:
 *
 * - the registry loads (the server starts and reports it);
 * - every registration acknowledged before the kill is there, with the key
 *   it was given, and no acknowledged deregistration came back;
 * - no upload is half visible: every file `files` lists downloads whole with
 *   the listed size and SHA-256, which is that of a version the test sent;
 *   every acknowledged upload is listed (or a later version of the same
 *   name); no temp file or stray blob is left in the store.
 *
 * `CRASH_SEED=N` replays the kill instants and storm shapes of a run (the
 * interleaving with the server still varies); `CRASH_KILLS=N` changes how
 * many kills (default 50).
 */
import { assert, assertEquals, assertGreaterOrEqual } from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { toHex } from "../lib/hex.ts";
import type { KeyPair } from "../lib/crypto/key_pair.ts";
import { loadRegistry } from "../lib/io/registry_file.ts";
import { SeededRandom } from "../lib/random.ts";
import type { Message } from "../lib/wire/messages.ts";
import { MAX_CHUNK_BYTES } from "../lib/wire/messages.ts";
import { replyOf, TcpExchange, UdpRequester } from "../scripts/_wire_client.ts";
import { delay, listFiles, type ServerProcess, startServer, tempDir } from "./_processes.ts";

const KILLS = Number(Deno.env.get("CRASH_KILLS") ?? 50);
/** Concurrent registration loops, each on its own source address (127.0.0.2 and up). */
const REGISTRARS = 6;
/** Users that upload, one upload at a time each. */
const UPLOADERS = 3;
/** File names each uploader cycles through, so uploads replace files. */
const FILE_NAMES = ["a.bin", "b.bin", "c.bin", "d.bin"];
/** The longest file, bytes: several chunks. */
const MAX_FILE_BYTES = 200_000;
/** The kill comes this long after the storm starts, ms: uniform in the range. */
const KILL_AFTER_MS = [30, 600] as const;
/** A declared TCP port for registrations (the server only checks it is >= 1024). */
const DECLARED_TCP_PORT = 40000;

interface Version {
  sha: string;
  size: number;
  acked: boolean;
}

/** What the test knows the server acknowledged, and what it merely attempted. */
class Ledger {
  /** Acknowledged registrations: name to SHA-256 of the key. */
  readonly registered = new Map<string, string>();
  /** Names whose deregistration was sent: acknowledged or not, they may be gone. */
  readonly deregistering = new Set<string>();
  /** Names whose deregistration was acknowledged. */
  readonly deregistered = new Set<string>();
  /** Per uploader and file name, every version sent, in order. */
  readonly versions = new Map<string, Version[]>();
  /** Counters for the summary. */
  readonly counts = { registers: 0, deregisters: 0, uploads: 0, attemptedUploads: 0 };
}

/** The public key, as the registry records the identity of a name registered with it. */
function keyHex(keyPair: KeyPair): string {
  return toHex(keyPair.publicKey);
}

function fileKey(user: string, name: string): string {
  return `${user}/${name}`;
}

/** Random content, unique per version (crypto random; its SHA-256 is recorded). */
function content(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** A user the test uploads as. */
interface Uploader {
  name: string;
  /** The key pair it registered with: its login is a handshake with it. */
  keyPair: KeyPair;
}

interface Storm {
  /** Ends every loop (after the kill) and waits for them. */
  stop(): Promise<void>;
}

function udpTo(server: ServerProcess, index: number, keyPair?: KeyPair): UdpRequester {
  return new UdpRequester({
    hostname: `127.0.0.${2 + (index % 8)}`,
    server: { hostname: "127.0.0.1", port: server.udpPort },
    keyPair,
  });
}

/** Registers new names and deregisters half of them, recording acknowledgements. */
async function registrar(
  udp: UdpRequester,
  id: string,
  ledger: Ledger,
  random: SeededRandom,
  running: () => boolean,
): Promise<void> {
  for (let n = 0; running(); n++) {
    const name = `Crash ${id}-${n}`;
    const reply = await udp.request(
      { type: "register", name, udpPort: udp.localPort, tcpPort: DECLARED_TCP_PORT },
      { timeoutMs: 3000 },
    );
    const ok = replyOf(reply, "register_ok");
    if (ok === undefined) {
      if (reply !== undefined && running()) throw new Error(`register ${name}: ${show(reply)}`);
      return;
    }
    ledger.registered.set(name, keyHex(udp.keyPair));
    ledger.counts.registers++;
    if (random.next() < 0.5) continue;
    ledger.deregistering.add(name);
    const bye = await udp.request({ type: "deregister", token: ok.token }, { timeoutMs: 3000 });
    if (replyOf(bye, "deregister_ok") !== undefined) {
      ledger.deregistered.add(name);
      ledger.counts.deregisters++;
    } else if (bye !== undefined && running()) {
      throw new Error(`deregister ${name}: ${show(bye)}`);
    } else {
      return;
    }
  }
}

/** A sealed TCP connection to the server: a UDP hello learns its key, then the handshake runs. */
async function tcpTo(server: ServerProcess): Promise<TcpExchange> {
  const udp = new UdpRequester({
    hostname: "127.0.0.1",
    server: { hostname: "127.0.0.1", port: server.udpPort },
  });
  try {
    if (replyOf(await udp.request({ type: "hello" }), "hello_ok") === undefined) {
      throw new Error("no hello_ok: the server's key is unknown");
    }
    return await TcpExchange.connect("127.0.0.1", server.tcpPort, udp.tcpChannel());
  } finally {
    await udp.close();
  }
}

/** Uploads versions of the uploader's files one at a time, recording acknowledgements. */
async function uploadLoop(
  server: ServerProcess,
  uploader: Uploader,
  token: Uint8Array,
  ledger: Ledger,
  random: SeededRandom,
  running: () => boolean,
): Promise<void> {
  const client = toHex(crypto.getRandomValues(new Uint8Array(8)));
  for (let reqId = 1; running(); reqId++) {
    const name = FILE_NAMES[Math.floor(random.next() * FILE_NAMES.length)];
    const size = 1 + Math.floor(random.next() ** 2 * MAX_FILE_BYTES);
    const data = content(size);
    const digest = sha256(data);
    const version: Version = { sha: toHex(digest), size, acked: false };
    const key = fileKey(uploader.name, name);
    if (!ledger.versions.has(key)) ledger.versions.set(key, []);
    ledger.versions.get(key)!.push(version);
    ledger.counts.attemptedUploads++;
    let reply: Message | undefined;
    try {
      using tcp = await tcpTo(server);
      await tcp.send({ type: "upload", reqId, client, token, name, size, sha256: digest });
      for (let at = 0; at < size; at += MAX_CHUNK_BYTES) {
        await tcp.send({
          type: "file_chunk",
          reqId,
          data: data.subarray(at, at + MAX_CHUNK_BYTES),
        });
      }
      reply = await tcp.next();
    } catch {
      return; // the server died under us
    }
    if (replyOf(reply, "upload_ok") !== undefined) {
      version.acked = true;
      ledger.counts.uploads++;
    } else if (reply !== undefined && running()) {
      throw new Error(`upload ${name} as ${uploader.name}: ${show(reply)}`);
    } else {
      return;
    }
  }
}

/** Returns a value that must be there, or fails the test naming what and the reply. */
function must<T>(value: T | undefined, what: string, reply?: Message): T {
  if (value === undefined) {
    throw new Error(`${what}: ${reply === undefined ? "no (expected) answer" : show(reply)}`);
  }
  return value;
}

function show(reply: Message): string {
  return reply.type === "error" ? `error ${reply.code}: ${reply.message}` : reply.type;
}

async function login(udp: UdpRequester, uploader: Uploader): Promise<Uint8Array> {
  const reply = await udp.request({
    type: "login",
    name: uploader.name,
    secret: new Uint8Array(0),
    udpPort: udp.localPort,
    tcpPort: DECLARED_TCP_PORT,
  });
  return must(replyOf(reply, "login_ok"), `login ${uploader.name}`, reply).token;
}

function startStorm(
  server: ServerProcess,
  uploaders: readonly Uploader[],
  tokens: readonly Uint8Array[],
  ledger: Ledger,
  random: SeededRandom,
  cycle: number,
): Storm {
  let running = true;
  const isRunning = () => running;
  const sockets = Array.from({ length: REGISTRARS }, (_, i) => udpTo(server, i));
  let failure: unknown;
  const loops = [
    ...sockets.map((udp, i) => registrar(udp, `${cycle}.${i}`, ledger, random, isRunning)),
    ...uploaders.map((u, i) => uploadLoop(server, u, tokens[i], ledger, random, isRunning)),
  ].map((loop) => loop.catch((error) => failure ??= error));
  return {
    async stop() {
      running = false;
      for (const udp of sockets) udp[Symbol.dispose]();
      await Promise.all(loops);
      await Promise.all(sockets.map((udp) => udp.close()));
      if (failure !== undefined) throw failure;
    },
  };
}

/** Checks the registry file and the file store against the ledger, after a restart. */
async function verify(
  server: ServerProcess,
  dataDir: string,
  uploaders: readonly Uploader[],
  ledger: Ledger,
  context: string,
  restarted = true,
): Promise<Uint8Array[]> {
  const loaded = await server.waitForLine(/^Registry: \d+ registered/);
  // The snapshot and the change log, as the server loaded them.
  const registry = (await loadRegistry(dataDir)).toJson();
  if (restarted) {
    assertEquals(
      loaded.split(" ")[1],
      String(Object.keys(registry).length),
      `${context}: the server loaded the registry file`,
    );
  }
  for (const [name, sha] of ledger.registered) {
    if (ledger.deregistering.has(name)) continue;
    assertEquals(
      registry[name]?.public_key,
      sha,
      `${context}: acknowledged registration "${name}" is missing or changed`,
    );
  }
  for (const name of ledger.deregistered) {
    assert(!(name in registry), `${context}: acknowledged deregistration "${name}" came back`);
  }
  const leftovers = (await listFiles(dataDir)).filter((path) => /\.tmp-|\.part$/.test(path));
  assertEquals(leftovers, [], `${context}: temp files left after the restart`);

  using udp = udpTo(server, 7, uploaders[0]?.keyPair);
  const tokens: Uint8Array[] = [];
  for (const uploader of uploaders) {
    const token = await login(udp, uploader);
    tokens.push(token);
    await verifyFiles(server, uploader, token, ledger, context);
  }
  await udp.close();
  // The store holds exactly the blobs its indexes list, nothing half written.
  for (const path of await listFiles(`${dataDir}/files`).catch(() => [])) {
    assert(/^[0-9a-f]{64}\/(index\.json|[0-9a-f]{32}\.blob)$/.test(path), `${context}: ${path}`);
  }
  return tokens;
}

async function verifyFiles(
  server: ServerProcess,
  uploader: Uploader,
  token: Uint8Array,
  ledger: Ledger,
  context: string,
): Promise<void> {
  const client = toHex(crypto.getRandomValues(new Uint8Array(8)));
  using tcp = await tcpTo(server);
  await tcp.send({ type: "files", reqId: 1, client, token });
  const list = must(
    replyOf(await tcp.next(), "file_list"),
    `${context}: files of ${uploader.name}`,
  );
  const listed = new Map(list.files.map((f) => [f.name, f]));
  for (const name of FILE_NAMES) {
    const versions = ledger.versions.get(fileKey(uploader.name, name)) ?? [];
    const lastAcked = versions.findLastIndex((v) => v.acked);
    const file = listed.get(name);
    if (file === undefined) {
      assertEquals(lastAcked, -1, `${context}: acknowledged upload ${uploader.name}/${name} lost`);
      continue;
    }
    const sha = toHex(file.sha256);
    const index = versions.findLastIndex((v) => v.sha === sha);
    assert(index !== -1, `${context}: ${uploader.name}/${name} has content nobody sent`);
    assertEquals(file.size, versions[index].size, `${context}: listed size of ${name}`);
    assertGreaterOrEqual(
      index,
      lastAcked,
      `${context}: ${uploader.name}/${name} went back to a version older than the acknowledged one`,
    );
  }
  assertEquals(listed.size, list.files.length);
  for (const name of listed.keys()) assert(FILE_NAMES.includes(name), `${context}: ${name}`);
  // Download each listed file whole and check it.
  let reqId = 2;
  for (const file of list.files) {
    await tcp.send({ type: "download", reqId, client, token, name: file.name });
    const ok = must(replyOf(await tcp.next(), "download_ok"), `${context}: download ${file.name}`);
    assertEquals([ok.size, toHex(ok.sha256)], [file.size, toHex(file.sha256)]);
    const hash = sha256.create();
    let received = 0;
    while (received < ok.size) {
      const chunk = must(
        replyOf(await tcp.next(), "file_chunk"),
        `${context}: ${file.name} ended after ${received} bytes`,
      );
      assertEquals(chunk.reqId, reqId);
      hash.update(chunk.data);
      received += chunk.data.length;
    }
    assertEquals(received, file.size, `${context}: ${file.name} size`);
    assertEquals(toHex(hash.digest()), toHex(file.sha256), `${context}: ${file.name} content`);
    reqId++;
  }
}

/** The storm registers hundreds of names from one address: what is tested is durability, not the limit. */
const STORM_FLAGS = ["--register-rate", "0"];

Deno.test(`the server survives ${KILLS} SIGKILLs during a storm of registrations and uploads`, async () => {
  const seed = Number(Deno.env.get("CRASH_SEED") ?? Math.floor(Math.random() * 1_000_000_000));
  console.log(`  seed ${seed} (CRASH_SEED=${seed} replays the kill instants)`);
  // Kill instants from one stream, storm choices from another: the instants
  // replay exactly whatever the interleaving.
  const killRandom = new SeededRandom(seed);
  const random = new SeededRandom(seed ^ 0x5bd1e995);
  await using dir = await tempDir("switchboard_crash_");
  const dataDir = dir.join("data");
  const logDir = dir.join("logs");
  const ledger = new Ledger();
  const started = performance.now();
  let server = await startServer({ dataDir, logDir, extraArgs: STORM_FLAGS });
  const ports = { udp: server.udpPort, tcp: server.tcpPort };
  const uploaders: Uploader[] = [];
  try {
    {
      using udp = udpTo(server, 0);
      for (let i = 1; i <= UPLOADERS; i++) {
        const name = `Uploader ${i}`;
        const reply = await udp.request({
          type: "register",
          name,
          udpPort: udp.localPort,
          tcpPort: DECLARED_TCP_PORT,
        });
        must(replyOf(reply, "register_ok"), `register ${name}`, reply);
        uploaders.push({ name, keyPair: udp.keyPair });
        ledger.registered.set(name, keyHex(udp.keyPair));
      }
      await udp.close();
    }
    let tokens = await verify(server, dataDir, uploaders, ledger, "first start", false);
    const killedAt: number[] = [];
    for (let kill = 1; kill <= KILLS; kill++) {
      const after = KILL_AFTER_MS[0] + killRandom.next() * (KILL_AFTER_MS[1] - KILL_AFTER_MS[0]);
      killedAt.push(Math.round(after));
      const storm = startStorm(server, uploaders, tokens, ledger, random, kill);
      await delay(after);
      await server.kill9();
      await storm.stop();
      const context = `after kill ${kill} (${Math.round(after)} ms into the storm; seed ${seed})`;
      server = await restart(dataDir, logDir, ports);
      tokens = await verify(server, dataDir, uploaders, ledger, context);
    }
    assertEquals(await server.stop(), 0, "the last server stops cleanly");
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const c = ledger.counts;
    console.log(
      `  ${KILLS} kills in ${seconds} s (at ${Math.min(...killedAt)} to ${
        Math.max(...killedAt)
      } ms into each storm); acknowledged ${c.registers} registrations, ${c.deregisters} ` +
        `deregistrations, ${c.uploads} of ${c.attemptedUploads} uploads; all held`,
    );
    assertGreaterOrEqual(c.registers, KILLS, "the storms registered names");
    assertGreaterOrEqual(c.uploads, KILLS / 5, "the storms uploaded files");
  } finally {
    await server[Symbol.asyncDispose]();
  }
});

/** Restarts on the same ports if they are free, on new ones if not. */
async function restart(
  dataDir: string,
  logDir: string,
  ports: { udp: number; tcp: number },
): Promise<ServerProcess> {
  try {
    return await startServer({ dataDir, logDir, ports, extraArgs: STORM_FLAGS });
  } catch (error) {
    if (!/in use/.test((error as Error).message)) throw error;
    return await startServer({ dataDir, logDir, extraArgs: STORM_FLAGS });
  }
}
