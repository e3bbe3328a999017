/**
 * Stored files across instances on one Redis (a real `redis-server`): a
 * file stays on the disk of the instance that stored it, every instance
 * lists it, and a `download` or `delete` sent to another instance is
 * answered `file_elsewhere` with the owner's TCP address, which the client
 * follows once, transparently, with its session's token.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { join } from "@std/path";
import { sha256 } from "@noble/hashes/sha2";
import { BlobStore } from "../lib/io/blob_store.ts";
import { ClientDriver } from "../lib/io/client_driver.ts";
import { toHex } from "../lib/hex.ts";
import { loadIdentities } from "../lib/io/identity_file.ts";
import { RedisStore } from "../lib/io/redis_store.ts";
import type { ServerEvent } from "../lib/server/server_event.ts";
import { redisUnavailable } from "../scripts/_redis_server.ts";
import { REDIS_TEST_HOST as HOST, withRedisInstances } from "./_redis.ts";

if (redisUnavailable !== undefined) {
  console.log(`redis_files_test: skipped: ${redisUnavailable}`);
}

/**
 * Opens a client of `who` (its own identity and key files in `dir`) as
 * `name` on the instance at `port`, says hello, and adds it to `clients`.
 */
async function openClient(
  clients: ClientDriver[],
  dir: string,
  port: number,
  who: string,
  name: string,
): Promise<ClientDriver> {
  const client = await ClientDriver.open({
    serverHost: HOST,
    serverPort: port,
    udpPort: 0,
    tcpPort: 5001,
    name,
    via: "udp",
    identityFile: join(dir, `${who}.identities.json`),
    keyFile: join(dir, `${who}.client_key.json`),
    downloadDir: join(dir, `downloads-${who}`),
  });
  clients.push(client);
  assert((await client.run({ kind: "hello" })).ok);
  return client;
}

Deno.test({
  name:
    "A file stored on A is listed on B, and a download or delete through B follows file_elsewhere to A",
  ignore: redisUnavailable !== undefined,
  fn: () =>
    withRedisInstances(async (cluster) => {
      const dir = cluster.dir;
      const onA: ServerEvent[] = [];
      const a = await cluster.instance({ onEvent: (event) => onA.push(event) });
      const b = await cluster.instance();
      const clients: ClientDriver[] = [];
      const open = (port: number, name: string) => openClient(clients, dir, port, name, name);
      try {
        const content = new Uint8Array(150_000).map((_, i) => (i * 7919) % 251);
        await Deno.writeFile(join(dir, "notes.bin"), content);
        // Alice stores notes.bin on A, then logs out.
        const first = await open(a.udpPort, "alice");
        assert((await first.run({ kind: "register" })).ok);
        assert((await first.upload(join(dir, "notes.bin"), "spare.bin")).ok);
        const uploaded = await first.upload(join(dir, "notes.bin"), "notes.bin");
        assert(uploaded.ok, JSON.stringify(uploaded));
        const [identity] = await loadIdentities(join(dir, "alice.identities.json"));
        assertEquals(identity.name, "alice");
        await first.close();
        clients.length = 0;

        // She logs in on B, which holds no file of hers on its disk.
        const onB = await open(b.udpPort, "alice");
        const login = await onB.run({
          kind: "login",
          name: "alice",
          secret: new Uint8Array(0), // her key pair (the same key file) is the proof
        });
        assert(login.ok, JSON.stringify(login));
        // B heard of the file by pub/sub when A stored it.
        const listing = async () => {
          const result = await onB.run({ kind: "files" });
          if (!result.ok || result.command !== "files") throw new Error(JSON.stringify(result));
          return result;
        };
        let listed = await listing();
        for (const until = Date.now() + 5000; listed.files.length < 2 && Date.now() < until;) {
          await new Promise((resolve) => setTimeout(resolve, 20));
          listed = await listing();
        }
        assertEquals(listed.files.map((f) => f.name), ["notes.bin", "spare.bin"]);
        assertEquals(listed.usedBytes, 2 * content.length);

        const fetched = await onB.download("notes.bin", join(dir, "fetched.bin"));
        if (!fetched.ok || fetched.command !== "download") throw new Error(JSON.stringify(fetched));
        assertEquals(await Deno.readFile(fetched.dest!), content);
        // A served it: the redirect was followed.
        assertEquals(onA.filter((e) => e.kind === "file_sent").length, 1);

        const missing = await onB.download("nothing.bin", join(dir, "nothing.bin"));
        assert(!missing.ok && missing.code === "file_not_found", JSON.stringify(missing));

        const deleted = await onB.run({ kind: "delete", name: "notes.bin" });
        assert(deleted.ok, JSON.stringify(deleted));
        // A deleted it from its disk and told B.
        let after = await listing();
        for (const until = Date.now() + 5000; after.files.length > 1 && Date.now() < until;) {
          await new Promise((resolve) => setTimeout(resolve, 20));
          after = await listing();
        }
        assertEquals(after.files.map((f) => f.name), ["spare.bin"]);
        const again = await onB.download("notes.bin", join(dir, "again.bin"));
        assert(!again.ok && again.code === "file_not_found", JSON.stringify(again));
        assertEquals(onA.filter((e) => e.kind === "file_deleted").length, 1);
        // With A gone, its file is unavailable: one clear failure, no hang.
        await a.close();
        const unreachable = await onB.download("spare.bin", join(dir, "spare.bin"));
        if (unreachable.ok) throw new Error(JSON.stringify(unreachable));
        assertMatch(
          unreachable.error,
          /Cannot reach the server at 127\.0\.0\.1:\d+ that holds the file/,
        );
      } finally {
        for (const client of clients) await client.close();
      }
    }),
});

Deno.test({
  name: "A name deregistered on B while A (holding its files) is down: nobody gets the files, " +
    "not the next owner of the name, and A deletes them when it comes back",
  ignore: redisUnavailable !== undefined,
  fn: () =>
    withRedisInstances(async (cluster) => {
      // Found by black-box testing: the next "Zed" downloaded the first one's file.
      const dir = cluster.dir;
      const a = await cluster.instance();
      const aConfig = { dataDir: join(dir, "instance-1"), udpPort: a.udpPort, tcpPort: a.tcpPort };
      const b = await cluster.instance();
      const clients: ClientDriver[] = [];
      const open = (port: number, who: string, name = "Zed") =>
        openClient(clients, dir, port, who, name);
      try {
        await Deno.writeFile(join(dir, "zf.csv"), new TextEncoder().encode("secret,rows\n"));
        const first = await open(a.udpPort, "first");
        assert((await first.run({ kind: "register" })).ok);
        assert((await first.upload(join(dir, "zf.csv"), "zf.csv")).ok);
        // Yan's name will be nobody's: only the tombstone B leaves tells A to delete his file.
        const yan = await open(a.udpPort, "yan", "Yan");
        assert((await yan.run({ kind: "register" })).ok);
        assert((await yan.upload(join(dir, "zf.csv"), "yf.csv")).ok);
        await a.close(); // down: it hears nothing from now on
        for (const [who, name] of [["first", "Zed"], ["yan", "Yan"]]) {
          const onB = await open(b.udpPort, who, name);
          assert((await onB.run({ kind: "login", name, secret: new Uint8Array(0) })).ok);
          assert((await onB.run({ kind: "deregister" })).ok);
        }

        // Its file's record goes from Redis with the identity (not awaited by the reply).
        const store = await RedisStore.open(cluster.redis.url);
        try {
          let records = await store.fileRecords("");
          for (const until = Date.now() + 5000; records.length > 0 && Date.now() < until;) {
            await new Promise((resolve) => setTimeout(resolve, 20));
            records = await store.fileRecords("");
          }
          assertEquals(records, []);
        } finally {
          await store.close();
        }

        const next = await open(b.udpPort, "next");
        const registered = await next.run({ kind: "register" });
        assert(registered.ok, JSON.stringify(registered));
        const listed = await next.run({ kind: "files" });
        if (!listed.ok || listed.command !== "files") throw new Error(JSON.stringify(listed));
        assertEquals(listed.files, [], "the earlier Zed's file is not listed");
        const early = await next.download("zf.csv", join(dir, "early.csv"));
        assert(!early.ok && early.code === "file_not_found", JSON.stringify(early));

        // A comes back on the same ports: it deletes the earlier identity's files.
        await cluster.instance(aConfig);
        const late = await next.download("zf.csv", join(dir, "late.csv"));
        assert(!late.ok && late.code === "file_not_found", JSON.stringify(late));
        const left = [];
        for await (const entry of Deno.readDir(join(aConfig.dataDir, "files"))) {
          left.push(entry.name);
        }
        assertEquals(left, [], "nothing of the earlier Zed or of Yan on A's disk");
      } finally {
        for (const client of clients) await client.close();
      }
    }),
});

Deno.test({
  name:
    "An instance whose Redis holds none of the names on its disk (a wrong database, or a data " +
    "directory moved from the file store) deletes none of their files",
  ignore: redisUnavailable !== undefined,
  fn: () =>
    withRedisInstances(async (cluster) => {
      const dataDir = join(cluster.dir, "moved");
      const blobs = await BlobStore.open(dataDir);
      const content = new TextEncoder().encode("kept,rows\n");
      const upload = await blobs.beginUpload("Olga", "o.csv");
      await upload.write(content);
      await upload.commit({ size: content.length, sha256: toHex(sha256(content)) });
      await blobs.close();
      await cluster.instance({ dataDir });
      const reopened = await BlobStore.open(dataDir);
      try {
        assertEquals(reopened.list("Olga").map((f) => f.name), ["o.csv"]);
      } finally {
        await reopened.close();
      }
    }),
});
