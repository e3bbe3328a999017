/**
 * Failed logins across instances on one Redis (a real `redis-server`): the
 * failures of one address for one name are recorded in Redis, so guesses
 * spread over the instances meet one limit, whatever the name, and an
 * instance started after some of them counts them too.
 */
import { assertEquals, assertMatch } from "@std/assert";
import { join } from "@std/path";
import { saveUsers, UsersFile } from "../lib/io/users_file.ts";
import { hashPassword } from "../lib/server/password_hash.ts";
import type { Message, MessageOf } from "../lib/wire/messages.ts";
import { UdpRequester } from "../scripts/_wire_client.ts";
import { redisUnavailable } from "../scripts/_redis_server.ts";
import { REDIS_TEST_HOST as HOST, withRedisInstances } from "./_redis.ts";

if (redisUnavailable !== undefined) console.log(`redis_lockout_test: skipped: ${redisUnavailable}`);

function errorText(reply: Message | undefined): string {
  assertEquals(reply?.type, "error", JSON.stringify(reply));
  return (reply as MessageOf<"error">).message;
}

Deno.test({
  name: "Password mode: failed logins for a name with a space, over A and B and then C (started " +
    "after them), block the address for the name at the limit",
  ignore: redisUnavailable !== undefined,
  fn: () =>
    withRedisInstances(async (cluster) => {
      // Found by black-box testing: each instance counted on its own.
      const usersFile = join(cluster.dir, "users.json");
      const passwordHash = await hashPassword("right password", { iterations: 1000 });
      const createdAt = new Date().toISOString();
      await saveUsers(usersFile, new UsersFile([{ name: "Pat Two", passwordHash, createdAt }]));
      const config = { auth: "password", usersFile, maxAttempts: 3 } as const;
      const a = await cluster.instance(config);
      const b = await cluster.instance(config);
      const requesters: UdpRequester[] = [];
      const login = async (server: { udpPort: number }, password: string) => {
        // The news of the previous failure travels (one pub/sub hop; these instances share
        // one event loop with the test, so it may come after the next datagram otherwise).
        await new Promise((resolve) => setTimeout(resolve, 30));
        const on = new UdpRequester({
          hostname: HOST,
          server: { hostname: HOST, port: server.udpPort },
        });
        requesters.push(on);
        return await on.request({
          type: "login",
          name: "pat two",
          secret: new TextEncoder().encode(password),
          udpPort: on.localPort,
          tcpPort: 5001,
        });
      };
      try {
        assertMatch(errorText(await login(b, "wrong")), /2 attempts left/);
        assertMatch(errorText(await login(a, "wrong")), /1 attempt left/);
        // C starts after both failures: it reads them from Redis.
        const c = await cluster.instance(config);
        assertMatch(errorText(await login(c, "wrong")), /"pat two" is now blocked for 10 s/);
        for (const on of [a, b, c]) {
          assertMatch(errorText(await login(on, "right password")), /Too many failed logins/);
        }
      } finally {
        for (const r of requesters) r[Symbol.dispose]();
      }
    }),
});

Deno.test({
  name: "Failed logins fired at server.ts A and B at the same instant lock the name exactly as " +
    "many on one instance would",
  ignore: redisUnavailable !== undefined,
  fn: () =>
    withRedisInstances(async (cluster) => {
      // Each instance used to count its own failure before hearing the other's: two
      // "2 attempts left", then two "1 attempt left", four guesses where one instance allows three.
      const flags = ["--rate-limit", "0", "--session-rate-limit", "0", "--max-attempts", "3"];
      const a = await cluster.spawn(flags);
      const b = await cluster.spawn(flags);
      const requesters: UdpRequester[] = [];
      const on = (server: { udpPort: number }) => {
        const r = new UdpRequester({
          hostname: HOST,
          server: { hostname: HOST, port: server.udpPort },
        });
        requesters.push(r);
        return r;
      };
      const login = (r: UdpRequester, name: string) =>
        r.request(
          { type: "login", name, secret: new Uint8Array(0), udpPort: r.localPort, tcpPort: 5001 },
          { timeoutMs: 5000 },
        );
      try {
        const owner = on(a);
        const registered = await owner.request({
          type: "register",
          name: "Target",
          udpPort: owner.localPort,
          tcpPort: 5001,
        });
        assertEquals(registered?.type, "register_ok", JSON.stringify(registered));
        for (const round of [1, 2, 3]) {
          // Four guesses with other keys, two at each instance, sent together (handshakes first).
          const guessers = [on(a), on(a), on(b), on(b)];
          for (const g of guessers) {
            assertEquals((await g.request({ type: "hello" }))?.type, "hello_ok");
          }
          // A registered name, then names nobody holds: both count alike.
          const name = round === 1 ? "target" : `nobody${round}`;
          const texts = (await Promise.all(guessers.map((g) => login(g, name)))).map(errorText);
          const sorted = texts.map((t) => t.replace(/"[^"]*"/g, "N").replace(/\d+ s\b/, "T s"))
            .sort();
          assertEquals(sorted, [
            "Login failed: wrong name or identity key; 1 attempt left",
            "Login failed: wrong name or identity key; 2 attempts left",
            "Login failed: wrong name or identity key; N is now blocked for T s from your address",
            "Too many failed logins for N from your address; try again in T s",
          ], JSON.stringify(texts));
        }
      } finally {
        for (const r of requesters) r[Symbol.dispose]();
      }
    }),
});
