/**
 * A request retransmitted to another instance after its instance was killed
 * -9 (a real `redis-server`): the answer is the one the first instance gave,
 * never a second execution or a refusal of the client's own retry.
 */
import { assert, assertEquals } from "@std/assert";
import { redisUnavailable } from "../scripts/_redis_server.ts";
import { RawClient, waitFor, withRedisInstances } from "./_redis.ts";

if (redisUnavailable !== undefined) {
  console.log(`redis_replay_test: skipped: ${redisUnavailable}`);
}

Deno.test({
  name: "A register retransmitted to B after A was killed -9 gets A's answer: the same binding " +
    "to the client's key, one registration, no name_taken",
  ignore: redisUnavailable !== undefined,
  fn: () =>
    withRedisInstances(async (cluster) => {
      const a = await cluster.spawn();
      const b = await cluster.instance();
      const client = new RawClient(a.udpPort);
      const other = new RawClient(b.udpPort);
      try {
        const register = {
          type: "register",
          name: "retry",
          udpPort: client.port,
          tcpPort: 5001,
        } as const;
        const first = await client.request(register, 5000, 7);
        if (first?.type !== "register_ok") throw new Error(JSON.stringify(first));
        await waitFor(() => b.core.registry.size === 1, "B to hear of the registration");
        await a.kill();
        // The same request (same client id, request id and bytes), as a
        // client that never saw A's answer retransmits it after failing over.
        client.moveTo(b.udpPort);
        const again = await client.request(register, 5000, 7);
        if (again?.type !== "register_ok") throw new Error(JSON.stringify(again));
        // (Its fingerprint covers the channel's key: the same client, with the same key pair.)
        assertEquals(b.core.registry.size, 1);
        assertEquals(b.core.registry.get("retry")?.publicKey.length, 64);
        // The session it opened on B works.
        const beat = await client.request({ type: "heartbeat", token: again.token });
        assertEquals(beat?.type, "heartbeat_ok");
        // Anyone else asking for the name is still refused.
        const taken = await other.request({ ...register, udpPort: other.port });
        assert(taken?.type === "error" && taken.code === 3, JSON.stringify(taken));
      } finally {
        await client.close();
        await other.close();
      }
    }),
});
