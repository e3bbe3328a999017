/**
 * End-to-end tests of files stored on the server over TCP: the real server
 * and clients run as processes on loopback ports chosen at run time, each
 * client in a working directory inside the test's temporary directory so
 * that default paths (`./downloads`, `./data/client`) stay there.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { sha256 } from "@noble/hashes/sha2";
import { fromHex, toHex } from "../lib/hex.ts";
import { type KeyPair, keyPairFromPrivateKey } from "../lib/crypto/key_pair.ts";
import { errorCodeName } from "../lib/wire/error_code.ts";
import type { Message } from "../lib/wire/messages.ts";
import {
  assertExit,
  assertOneErrorLine,
  type Finished,
  listFiles,
  runClient,
  type ServerProcess,
  startServer,
  startWorld,
  type World,
} from "./_processes.ts";
import { SealedStream, SealedUdp } from "./_sealed_wire.ts";

/** A {@linkcode World} whose clients run with the usual flags and standard input. */
interface FilesWorld extends World {
  /** Runs a client in `cwd` with the usual flags, more flags and standard input. */
  client(stdin: string, ...more: string[]): Promise<Finished>;
}

async function world(serverFlags: string[] = []): Promise<FilesWorld> {
  const w = await startWorld("switchboard_files_", { serverFlags });
  return {
    ...w,
    client: (stdin, ...more) =>
      runClient({ args: w.args(...more), stdin, cwd: w.cwd, timeoutMs: 20_000 }),
  };
}

async function sha256Of(path: string): Promise<string> {
  return toHex(sha256(await Deno.readFile(path)));
}

/** Writes `size` random bytes to `path`. */
async function randomFile(path: string, size: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) {
    crypto.getRandomValues(bytes.subarray(at, Math.min(size, at + 65536)));
  }
  await Deno.writeFile(path, bytes);
  return bytes;
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

Deno.test("client generates readings, uploads, lists, downloads to DEST and the default path, and deletes", async () => {
  await using w = await world();
  const { server, cwd } = w;
  const result = await w.client(
    [
      "register Fay Files",
      "generate data.csv 1000",
      "upload data.csv",
      "files",
      "download data.csv copies/one/data.csv",
      "download data.csv",
      "delete data.csv",
      "files",
    ].join("\n") + "\n",
  );
  assertExit(result, 0);
  assertEquals(result.stderr, "", "no progress lines for a small file");

  const original = `${cwd}/data.csv`;
  const lines = (await Deno.readTextFile(original)).trimEnd().split("\n");
  assertEquals(lines[0], "timestamp,value");
  assertEquals(lines.length, 1001, "a header and 1000 readings");
  for (const line of lines.slice(1)) assertMatch(line, /^\d{4}-\d\d-\d\dT[\d:.]+Z,-?\d+(\.\d+)?$/);
  const size = (await Deno.stat(original)).size;
  const digest = await sha256Of(original);

  const out = result.stdout;
  assertStringIncludes(out, "Wrote 1000 sample readings to data.csv\n");
  assertStringIncludes(out, `Uploaded "data.csv" (${size} bytes, SHA-256 checked by the server)\n`);
  assertMatch(
    out,
    new RegExp(
      `^1 file, ${size} of 1073741824 bytes used\\n {2}data\\.csv {2}${size} bytes {2}` +
        `\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z {2}sha256 ${digest.slice(0, 16)}…$`,
      "m",
    ),
  );
  assertStringIncludes(
    out,
    `Downloaded "data.csv" to copies/one/data.csv (${size} bytes, SHA-256 verified)\n`,
  );
  assertStringIncludes(
    out,
    `Downloaded "data.csv" to downloads/data.csv (${size} bytes, SHA-256 verified)\n`,
  );
  assertStringIncludes(out, 'Deleted "data.csv"\n');
  assertMatch(out, /^0 files, 0 of 1073741824 bytes used$/m);

  const bytes = await Deno.readFile(original);
  for (const copy of [`${cwd}/copies/one/data.csv`, `${cwd}/downloads/data.csv`]) {
    assertEquals(await Deno.readFile(copy), bytes, copy);
    assertEquals(await sha256Of(copy), digest, copy);
  }
  const clientFiles = await listFiles(cwd);
  assertEquals(clientFiles.filter((p) => p.endsWith(".part")), [], "no partial downloads left");

  // A later run: upload again under another name, then, after a server restart,
  // download into --download-dir.
  const again = await w.client("login Fay Files\nupload data.csv readings.csv\n");
  assertExit(again, 0);
  assertEquals(await server.stop(), 0);
  await using restarted = await startServer({
    dataDir: w.dataDir,
    logDir: w.dir.join("logs"),
  });
  const elsewhere = w.dir.join("elsewhere");
  const after = await runClient({
    args: [
      "--server",
      restarted.address,
      "--log-dir",
      w.dir.join("logs"),
      "--download-dir",
      elsewhere,
    ],
    stdin: "login Fay Files\nfiles\ndownload readings.csv\n",
    cwd,
  });
  assertExit(after, 0);
  assertMatch(after.stdout, new RegExp(`^1 file, ${size} of \\d+ bytes used$`, "m"));
  assertStringIncludes(after.stdout, `Downloaded "readings.csv" to ${elsewhere}/readings.csv`);
  assertEquals(await Deno.readFile(`${elsewhere}/readings.csv`), bytes);
  assertEquals(await restarted.stop(), 0);

  // The server log records each upload, download and deletion.
  const log = await Deno.readTextFile(w.dir.join("logs", "server.log"));
  const stored = new RegExp(
    `INFO .*Stored file "(data|readings)\\.csv" for "Fay Files" \\(${size} bytes, SHA-256 ${digest}\\)`,
    "g",
  );
  assertEquals(log.match(stored)?.length, 2, log);
  assertEquals(
    log.match(/INFO .*Sending file "data\.csv" \(\d+ bytes\) to "Fay Files"/g)?.length,
    2,
  );
  assertEquals(log.match(/INFO .*Deleted file "data\.csv" of "Fay Files"/g)?.length, 1);
  assertMatch(log, /INFO .*Sending file "readings\.csv" \(\d+ bytes\) to "Fay Files"/);
});

Deno.test("client reports a missing local file, a directory and unknown server files in one line", async () => {
  await using w = await world();
  await Deno.mkdir(`${w.cwd}/folder`);
  const cases: [string, RegExp][] = [
    ["upload nothere.csv", /^error: cannot read nothere\.csv: .*(No such file|not found)/i],
    ["upload folder", /^error: cannot read folder: it is not a regular file$/],
    ["download nothere.csv", /^error: you have no file "nothere\.csv"$/],
    ["delete nothere.csv", /^error: you have no file "nothere\.csv"$/],
  ];
  // In parallel, so each as its own user: a second login as one name ends the first session.
  const results = await Promise.all(
    cases.map(([command], i) => w.client(`register Gil ${i}\n${command}\nfiles\n`)),
  );
  results.forEach((result, i) => {
    assertExit(result, 1);
    assertOneErrorLine(result, cases[i][1]);
    assert(!result.stdout.includes(" files, "), "files did not run after the failure");
  });
  assertEquals(await listFiles(`${w.cwd}`), [
    "data/client/client_key.json",
    "data/client/identities.json",
    "data/client/identities.json.lock",
    "data/client/known_servers.json",
    "data/client/known_servers.json.lock",
  ]);
  assertEquals(await w.server.stop(), 0);
});

/**
 * Logs in over raw UDP with a client's key pair, then asks for uploads with
 * the given names over raw TCP, skipping every check the client makes.
 *
 * @returns the server's error code or reply type for each name
 */
async function rawUploads(
  server: ServerProcess,
  identity: { name: string; keyPair: KeyPair },
  names: string[],
): Promise<string[]> {
  const client = "0123456789abcdef";
  const udp = new SealedUdp("127.0.0.1", server.udpPort, "127.0.0.1", identity.keyPair);
  let token: Uint8Array;
  let channel;
  try {
    const login = {
      type: "login",
      reqId: 1,
      client,
      name: identity.name,
      secret: new Uint8Array(0),
      udpPort: 0,
      tcpPort: 5001,
    } as const;
    // Sent again while unanswered, as a client does: on a loaded machine the
    // handshake may first be answered with a cookie, which the next send brings back.
    let reply: Message | undefined;
    for (let attempt = 0; attempt < 8 && reply === undefined; attempt++) {
      reply = await udp.tryAsk(login, 1_200);
    }
    if (reply === undefined) throw new Error("no reply to login 1");
    if (reply.type !== "login_ok") throw new Error(`login failed: ${JSON.stringify(reply)}`);
    token = reply.token;
    channel = udp.tcpChannel();
  } finally {
    await udp.close();
  }
  const conn = await SealedStream.open(server.tcpPort, channel);
  try {
    const answers: string[] = [];
    for (const [i, name] of names.entries()) {
      const body = new TextEncoder().encode("evil");
      const reply = await conn.ask({
        type: "upload",
        reqId: 100 + i,
        client,
        token,
        name,
        size: body.length,
        sha256: sha256(body),
      });
      answers.push(reply.type === "error" ? errorCodeName(reply.code) : reply.type);
      if (reply.type === "upload_ok") break;
    }
    return answers;
  } finally {
    conn.close();
  }
}

Deno.test("file names that could escape are refused, by the client and by the server, and nothing lands outside", async () => {
  await using w = await world();
  const { dir, server, cwd } = w;
  assertExit(await w.client("register Eve Escape\ngenerate data.csv 10\n"), 0);
  const name = (i: number) => `Eve ${String(i).padStart(2, "0")}`;

  const attempts: [string, RegExp][] = [
    ["upload data.csv ../evil.csv", /^error: file name "\.\.\/evil\.csv" may not contain "\/"$/],
    ["upload data.csv sub/evil.csv", /^error: file name "sub\/evil\.csv" may not contain "\/"$/],
    [`upload data.csv ${dir.path}/evil.csv`, /may not contain "\/"$/],
    ["upload data.csv ..\\evil.csv", /^error: file name "\.\.\\evil\.csv" may not contain "\\"$/],
    ["upload data.csv ..", /^error: file name "\.\." is not allowed$/],
    ["upload data.csv .evil.csv", /^error: file name "\.evil\.csv" may not start with "\."$/],
    ["upload data.csv a/../../evil.csv", /^error: file name "a\/\.\.\/\.\.\/evil\.csv" may/],
    ["download ../evil.csv here.csv", /^error: file name "\.\.\/evil\.csv" may not contain "\/"$/],
    ["delete ../../evil.csv", /^error: you have no file "\.\.\/\.\.\/evil\.csv"$/],
  ];
  // In parallel, so each as its own user: a second login as one name ends the first session.
  const results = await Promise.all(
    attempts.map(([command], i) => w.client(`register ${name(i)}\n${command}\nfiles\n`)),
  );
  results.forEach((result, i) => {
    assertExit(result, 1);
    assertOneErrorLine(result, attempts[i][1]);
  });

  // A hand-made client that skips the client's checks meets the server's.
  const identities: { name: string }[] = JSON.parse(
    await Deno.readTextFile(`${cwd}/data/client/identities.json`),
  ).identities;
  assertEquals(identities.length, attempts.length + 1);
  // Every name here was registered with the one key pair beside the identity file.
  const clientKey = JSON.parse(await Deno.readTextFile(`${cwd}/data/client/client_key.json`));
  const keyPair = keyPairFromPrivateKey(fromHex(clientKey.privateKey));
  const answers = await rawUploads(server, { name: "Eve Escape", keyPair }, [
    "../evil.csv",
    "..",
    "sub/evil.csv",
    "..\\evil.csv",
    "/tmp/evil.csv",
    ".evil",
    "evil\u0000.csv",
    "NUL.csv",
  ]);
  assertEquals(answers, Array(8).fill("invalid_file_name"));
  await server.waitForLine(/^Refused upload request 107 from tcp .*: File name "NUL\.csv"/);

  // Nothing was stored, and nothing named evil exists anywhere in the test's directory.
  const listed = await w.client("login Eve Escape\nfiles\n");
  assertExit(listed, 0);
  assertStringIncludes(listed.stdout, "0 files, 0 of ");
  assertEquals(await server.stop(), 0);
  const everything = await listFiles(dir.path);
  assertEquals(everything.filter((path) => /evil/i.test(path)), [], everything.join("\n"));
  const outside = everything.filter((path) =>
    !path.startsWith("server/") && !path.startsWith("logs/") && !path.startsWith("client/")
  );
  assertEquals(outside, [], "files only in the server's, the logs' and the client's directories");
  assertEquals(
    everything.filter((p) => p.startsWith("client/")),
    [
      "client/data.csv",
      "client/data/client/client_key.json",
      "client/data/client/identities.json",
      "client/data/client/identities.json.lock",
      "client/data/client/known_servers.json",
      "client/data/client/known_servers.json.lock",
    ],
  );
  for (const path of everything.filter((p) => p.startsWith("server/"))) {
    assertMatch(
      path,
      /^server\/(registrations\.json|server_identity\.json|server\.lock|files\/[0-9a-f]{64}\/index\.json)$/,
    );
  }
});

Deno.test({
  name: "client refuses to download a name with path separators and creates nothing",
  async fn() {
    await using w = await world();
    const result = await w.client("register Dan Dirs\ndownload ../../outside/evil.csv\n");
    assertExit(result, 1);
    assertOneErrorLine(result, /"\.\.\/\.\.\/outside\/evil\.csv"/);
    const created = await Deno.stat(w.dir.join("outside")).then(() => true, () => false);
    assert(!created, "the directory outside/ must not be created");
    assertEquals((await listFiles(w.dir.path)).filter((p) => /outside|evil/.test(p)), []);
    // Expected: the same message as upload gives for such a name.
    assertOneErrorLine(result, /file name "\.\.\/\.\.\/outside\/evil\.csv" may not contain "\/"/);
  },
});

Deno.test("server enforces --quota and --max-file-size with a clear message", async (t) => {
  await t.step("--quota 10K", async () => {
    await using w = await world(["--quota", "10K"]);
    await randomFile(`${w.cwd}/big.bin`, 20_000);
    await randomFile(`${w.cwd}/six.bin`, 6_000);
    await randomFile(`${w.cwd}/six2.bin`, 6_000);
    assertExit(await w.client("register Quinn Quota\n"), 0);
    const big = await w.client("login Quinn Quota\nupload big.bin\n");
    assertExit(big, 1);
    assertOneErrorLine(
      big,
      /^error: storing "big\.bin" \(20000 bytes\) would bring you to 20000 bytes; your quota is 10240$/,
    );
    const fits = await w.client("login Quinn Quota\nupload six.bin\nupload six2.bin six.bin\n");
    assertExit(fits, 0);
    const over = await w.client("login Quinn Quota\nupload six2.bin\n");
    assertExit(over, 1);
    assertOneErrorLine(over, /would bring you to 12000 bytes; your quota is 10240$/);
    const files = await w.client("login Quinn Quota\nfiles\n");
    assertExit(files, 0);
    assertMatch(files.stdout, /^1 file, 6000 of 10240 bytes used$/m, "a replacement counts once");
    await w.server.waitForLine(/^Refused upload request \d+ from tcp .*your quota is 10240$/);
    assertEquals(await w.server.stop(), 0);
  });

  await t.step("--max-file-size 5K", async () => {
    await using w = await world(["--max-file-size", "5K"]);
    await randomFile(`${w.cwd}/over.bin`, 5_121);
    await randomFile(`${w.cwd}/limit.bin`, 5_120);
    const over = await w.client("register Max Size\nupload over.bin\n");
    assertExit(over, 1);
    assertOneErrorLine(
      over,
      /^error: "over\.bin" is 5121 bytes; the largest file allowed is 5120$/,
    );
    const limit = await w.client("login Max Size\nupload limit.bin\n");
    assertExit(limit, 0);
    assertStringIncludes(limit.stdout, 'Uploaded "limit.bin" (5120 bytes');
    assertEquals(await w.server.stop(), 0);
  });
});

Deno.test("download never overwrites a local file, and into a directory (new or not) keeps the name", async () => {
  await using w = await world();
  const { cwd } = w;
  const bytes = await randomFile(`${cwd}/r.csv`, 3000);
  await Deno.writeTextFile(`${cwd}/precious.txt`, "IMPORTANT\n");
  await Deno.mkdir(`${cwd}/box`);
  const result = await w.client(
    [
      "register Olly Overwrite",
      "upload r.csv",
      "download r.csv precious.txt",
      "download r.csv",
      "download r.csv",
      "download r.csv box",
      "download r.csv fresh/",
      "download r.csv made/on/demand/x.csv",
    ].join("\n") + "\n",
  );
  assertExit(result, 0);
  for (
    const landed of [
      "precious (1).txt",
      "downloads/r.csv",
      "downloads/r (1).csv",
      "box/r.csv",
      "fresh/r.csv",
      "made/on/demand/x.csv",
    ]
  ) {
    assertStringIncludes(result.stdout, `Downloaded "r.csv" to ${landed} (3000 bytes`);
    assertEquals(await Deno.readFile(`${cwd}/${landed}`), bytes, landed);
  }
  assertEquals(await Deno.readTextFile(`${cwd}/precious.txt`), "IMPORTANT\n", "left alone");
});

Deno.test("a 5 MiB upload and download show progress on stderr and arrive intact", async () => {
  await using w = await world();
  const { cwd } = w;
  const size = 5 * 1024 * 1024;
  const bytes = await randomFile(`${cwd}/big.bin`, size);
  const result = await w.client("register Pat Progress\nupload big.bin\ndownload big.bin\n");
  assertExit(result, 0);
  assertStringIncludes(result.stdout, `Uploaded "big.bin" (${size} bytes, SHA-256 checked`);
  assertStringIncludes(result.stdout, `Downloaded "big.bin" to downloads/big.bin (${size} bytes`);
  const progress = result.stderr.split("\n").filter((line) => line !== "");
  for (const line of progress) {
    assertMatch(
      line,
      /^(Hashing|Uploading|Downloading) big\.bin: \d{1,3}% \(\d+\.\d of 5\.0 MiB\)$/,
    );
  }
  for (const verb of ["Hashing", "Uploading", "Downloading"]) {
    assert(
      progress.includes(`${verb} big.bin: 100% (5.0 of 5.0 MiB)`),
      `${verb} reaches 100%\n${result.stderr}`,
    );
  }
  const percents = progress.filter((l) => l.startsWith("Uploading")).map((l) =>
    Number(/(\d+)%/.exec(l)![1])
  );
  assertEquals(percents, [...percents].sort((a, b) => a - b), "upload progress only goes up");
  const copy = await Deno.readFile(`${cwd}/downloads/big.bin`);
  assertEquals(copy.length, size);
  assertEquals(toHex(sha256(copy)), toHex(sha256(bytes)));

  const deleted = await w.client("login Pat Progress\ndelete big.bin\n");
  assertExit(deleted, 0);
  assertEquals(await w.server.stop(), 0);
  const log = await Deno.readTextFile(w.dir.join("logs", "server.log"));
  assertMatch(
    log,
    new RegExp(
      `INFO .*Stored file "big\\.bin" for "Pat Progress" \\(${size} bytes, SHA-256 ${
        escape(toHex(sha256(bytes)))
      }\\)`,
    ),
  );
  assertMatch(log, /INFO .*Deleted file "big\.bin" of "Pat Progress"/);
});
