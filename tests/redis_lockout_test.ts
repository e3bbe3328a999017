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
