/**
 * Version 2 identities (a 16-byte identity key whose SHA-256 the registry
 * kept) meet version 3, where an identity is the client's key pair: such a
 * record logs in once with its old key, inside the encrypted channel, and is
 * then bound to that channel's public key; the old key never logs in again.
 * In the core, and with real processes on an old registry file and an old
 * identity file.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { toHex } from "../lib/hex.ts";
import { SeededRandom } from "../lib/random.ts";
import { Registry } from "../lib/server/registry.ts";
import {
  type Endpoint,
  ServerCore,
  type ServerEvent,
  type ServerOutput,
} from "../lib/server/server_core.ts";
import { ERROR_CODES } from "../lib/wire/error_code.ts";
import type { Message, MessageOf } from "../lib/wire/messages.ts";
import { assertExit, runClient, startServer, tempDir } from "./_processes.ts";

const NOW = Date.UTC(2026, 0, 2);
const OLD_KEY = Uint8Array.from({ length: 16 }, (_, i) => 0x40 + i);
const KEY_A = new Uint8Array(32).fill(0xa1);
const KEY_B = new Uint8Array(32).fill(0xb2);
const FROM_A: Endpoint = { transport: "udp", address: "10.0.0.1", port: 40001, clientKey: KEY_A };
const FROM_B: Endpoint = { transport: "udp", address: "10.0.0.2", port: 40002, clientKey: KEY_B };
const NO_SECRET = new Uint8Array(0);

/** A version 2 registry entry: the hash of its identity key, no public key. */
function version2Entry(key: Uint8Array) {
  return {
    ip: "127.0.0.1",
    udp_port: 5000,
    tcp_port: 5001,
    registered_at: "2025-06-01T00:00:00.000Z",
    key_sha256: toHex(sha256(key)),
    registered_by: "00112233445566778899aabbccddeeff",
  };
}

function coreWithOldRecord(): ServerCore {
  return new ServerCore({
    registry: Registry.fromJson({ Olga: version2Entry(OLD_KEY) }),
    random: new SeededRandom(5),
    tcpPort: 3001,
    version: "9.9.9",
  });
}

function drain(core: ServerCore): ServerOutput[] {
  const out: ServerOutput[] = [];
  for (let o = core.poll(); o !== undefined; o = core.poll()) out.push(o);
  return out;
}

function replies(outputs: ServerOutput[]): Message[] {
  return outputs.flatMap((o) => o.type === "send" ? [o.message] : []);
}

function login(reqId: number, secret: Uint8Array, client = "00000000000000aa"): Message {
  return { type: "login", reqId, client, name: "olga", secret, udpPort: 0, tcpPort: 5001 };
}

function ask(core: ServerCore, from: Endpoint, message: Message): Message {
  core.handle(NOW, from, message, 312);
  const out = drain(core);
  const persist = out.find((o) => o.type === "persist");
  if (persist?.type === "persist") core.persisted(persist.version, NOW);
  return [...replies(out), ...replies(drain(core))].filter((m) => m.type !== "session_ended")[0];
}

Deno.test("ServerCore binds a version 2 record to the channel's key at its first login with the old key, once durable", () => {
  const core = coreWithOldRecord();
  core.handle(NOW, FROM_A, login(1, OLD_KEY), 312);
  const held = drain(core);
  assertEquals(replies(held), [], "no reply before the binding is durable");
  const persist = held.find((o) => o.type === "persist");
  if (persist?.type !== "persist") throw new Error("no persist output");
  assertEquals(persist.registry.Olga.public_key, toHex(KEY_A));
  assertEquals(persist.registry.Olga.key_sha256, "", "the old key's hash is gone");
  core.persisted(persist.version, NOW);
  const out = drain(core);
  const ok = replies(out).find((m) => m.type === "login_ok") as MessageOf<"login_ok">;
  assert(ok !== undefined, "login_ok once durable");
  assertEquals(core.sessions.byToken(ok.token)?.name, "Olga");
  const events = out.flatMap((o) => o.type === "event" ? [o.event] : []) as ServerEvent[];
  assert(events.some((e) => e.kind === "identity_bound" && e.name === "Olga"));

  // The old key no longer logs in (through another channel); the bound key does, with no secret.
  const stolen = ask(core, FROM_B, login(2, OLD_KEY, "00000000000000bb"));
  assertEquals(stolen.type === "error" && stolen.code, ERROR_CODES.login_failed);
  assertEquals(ask(core, FROM_A, login(3, NO_SECRET)).type, "login_ok");
});

Deno.test("ServerCore refuses a version 2 record's login with a wrong old key, and leaves it unbound", () => {
  const core = coreWithOldRecord();
  const wrong = OLD_KEY.slice();
  wrong[0] ^= 1;
  for (const secret of [wrong, NO_SECRET]) {
    const reply = ask(core, FROM_B, login(secret.length + 1, secret, "00000000000000bb"));
    assertEquals(reply.type === "error" && reply.code, ERROR_CODES.login_failed);
  }
  assertEquals(core.registry.get("olga")?.publicKey, "");
  assertEquals(core.registry.get("olga")?.keySha256, toHex(sha256(OLD_KEY)));
});

Deno.test("ServerCore undoes the binding if it cannot be saved, and the old key still logs in", () => {
  const core = coreWithOldRecord();
  core.handle(NOW, FROM_A, login(1, OLD_KEY), 312);
  const persist = drain(core).find((o) => o.type === "persist");
  if (persist?.type !== "persist") throw new Error("no persist output");
  core.persistFailed(persist.version, "disk full");
  const reply = replies(drain(core))[0];
  assertEquals(reply.type === "error" && reply.code, ERROR_CODES.not_saved);
  assertEquals(core.sessions.size, 0);
  assertEquals(core.registry.get("olga")?.keySha256, toHex(sha256(OLD_KEY)));
  assertEquals(ask(core, FROM_A, login(2, OLD_KEY)).type, "login_ok");
});

Deno.test("a version 2 registry and identity file: the client logs in once with the old key, both files move to the key pair, and later logins send no secret", async () => {
  await using dir = await tempDir("switchboard_migration_");
  const dataDir = dir.join("data");
  const clientDir = dir.join("client");
  await Deno.mkdir(dataDir, { recursive: true });
  await Deno.mkdir(clientDir, { recursive: true });
  await Deno.writeTextFile(
    `${dataDir}/registrations.json`,
    JSON.stringify({ "Olga Old": version2Entry(OLD_KEY) }),
  );
  await using server = await startServer({ dataDir, logDir: dir.join("logs") });
  await Deno.writeTextFile(
    `${clientDir}/identities.json`,
    JSON.stringify({
      version: 1,
      identities: [{
        server: server.address,
        name: "Olga Old",
        key: toHex(OLD_KEY),
        savedAt: "2025-06-01T00:00:00.000Z",
      }],
    }),
  );
  const args = ["--server", server.address, "--data-dir", clientDir, "--timeout", "5"];
  const first = await runClient({ args, stdin: "login Olga Old\nexit\n" });
  assertExit(first, 0);
  assertStringIncludes(first.stdout, 'Logged in as "Olga Old"');
  await server.waitForLine(/^Migrated "Olga Old" to a key-pair identity/);

  const clientKey = JSON.parse(await Deno.readTextFile(`${clientDir}/client_key.json`));
  const registry = JSON.parse(await Deno.readTextFile(`${dataDir}/registrations.json`));
  assertEquals(registry["Olga Old"].public_key, clientKey.publicKey);
  assertEquals(registry["Olga Old"].key_sha256, "");
  const identities = JSON.parse(await Deno.readTextFile(`${clientDir}/identities.json`));
  assertEquals(identities.version, 2);
  assertEquals(identities.identities.map((i: { name: string }) => i.name), ["Olga Old"]);
  assertEquals(identities.identities[0].key, undefined, "the old key is forgotten");

  // The next run logs in by its key pair alone; another client's key pair cannot.
  const second = await runClient({ args, stdin: "login Olga Old\nexit\n" });
  assertExit(second, 0);
  assertStringIncludes(second.stdout, 'Logged in as "Olga Old"');
  const otherDir = dir.join("other");
  await Deno.mkdir(otherDir);
  await Deno.writeTextFile(`${otherDir}/identities.json`, JSON.stringify(identities));
  const other = await runClient({
    args: ["--server", server.address, "--data-dir", otherDir, "--timeout", "5"],
    stdin: "login Olga Old\n",
  });
  assertExit(other, 1);
  assertMatch(other.stderr, /login failed: wrong name or identity key/i);
  assertEquals(await server.stop(), 0);
});
