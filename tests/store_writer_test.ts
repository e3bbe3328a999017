/**
 * The store writer's session writes against a recording store: they ride
 * on the next registry write (one Redis round trip for both), go on their
 * own when none comes in time or a batch is full, go again on their own
 * when the registry write carrying them is refused, and are sent at close.
 */
import { assertEquals } from "@std/assert";
import { PRESENCE_BATCH, PRESENCE_WAIT_MS, StoreWriter } from "../lib/io/store_writer.ts";
import type { RegistryChange } from "../lib/server/registry.ts";
import type { ServerCore } from "../lib/server/server_core.ts";
import { type PresenceWrite, type Store, StoreError } from "../lib/server/store.ts";
import { waitFor } from "./_redis.ts";

/** A shared store that records what it was asked to write. */
function recordingStore(refuse = false): { store: Store; calls: string[] } {
  const calls: string[] = [];
  const names = (writes: readonly PresenceWrite[] = []) =>
    writes.map((w) => `${w.op} ${w.record.name}`).join(",");
  const nothing = () => Promise.resolve();
  const store = {
    kind: "redis",
    shared: true,
    persist(_registry: unknown, changes: readonly RegistryChange[], presence = []) {
      calls.push(`persist ${changes.length} [${names(presence)}]`);
      return refuse ? Promise.reject(new StoreError("refused", true)) : nothing();
    },
    presence(writes: readonly PresenceWrite[]) {
      calls.push(`presence [${names(writes)}]`);
      return nothing();
    },
  } as unknown as Store;
  return { store, calls };
}

function writer(store: Store): { writer: StoreWriter; outcomes: string[] } {
  const outcomes: string[] = [];
  const core = {
    hasUnsavedChanges: false,
    persisted: (version: number) => outcomes.push(`persisted ${version}`),
    persistFailed: (version: number) => outcomes.push(`failed ${version}`),
  } as unknown as ServerCore;
  return { writer: new StoreWriter(store, { core, drain: () => {} }), outcomes };
}

const RECORD = { name: "Ann", ip: "10.0.0.1", udpPort: 4000, tcpPort: 4001, since: 1 };
const CHANGE: RegistryChange = {
  op: "delete",
  name: "Bob",
  publicKey: "b".repeat(64),
  keySha256: "",
};

Deno.test("StoreWriter sends a session write with the next registry write, in one call", async () => {
  const { store, calls } = recordingStore();
  const { writer: w, outcomes } = writer(store);
  w.presence("join", RECORD, 60_000);
  w.persist(1, { registry: {} }, [CHANGE]);
  await w.idle();
  assertEquals(calls, ["persist 1 [join Ann]"]);
  assertEquals(outcomes, ["persisted 1"]);
  await new Promise((resolve) => setTimeout(resolve, PRESENCE_WAIT_MS * 4));
  assertEquals(calls.length, 1, "nothing sent twice");
  await w.close();
});

Deno.test(`StoreWriter sends session writes on their own when no registry write comes in ${PRESENCE_WAIT_MS} ms`, async () => {
  const { store, calls } = recordingStore();
  const { writer: w } = writer(store);
  w.presence("join", RECORD, 60_000);
  w.presence("leave", RECORD, 60_000);
  assertEquals(calls, [], "waiting for a registry write");
  await waitFor(() => calls.length > 0, "the session writes", 2000, 1);
  assertEquals(calls, ["presence [join Ann,leave Ann]"]);
  await w.close();
});

Deno.test(`StoreWriter sends ${PRESENCE_BATCH} session writes at once`, async () => {
  const { store, calls } = recordingStore();
  const { writer: w } = writer(store);
  for (let i = 0; i < PRESENCE_BATCH; i++) w.presence("renew", RECORD, 60_000);
  assertEquals(calls.length, 1);
  await w.close();
});

Deno.test("StoreWriter sends the session writes of a refused registry write on their own", async () => {
  const { store, calls } = recordingStore(true);
  const { writer: w, outcomes } = writer(store);
  w.presence("join", RECORD, 60_000);
  w.persist(1, { registry: {} }, [CHANGE]);
  await w.idle();
  assertEquals(calls, ["persist 1 [join Ann]", "presence [join Ann]"]);
  assertEquals(outcomes, ["failed 1"]);
  await w.close();
});

Deno.test("StoreWriter.close() sends the session writes waiting", async () => {
  const { store, calls } = recordingStore();
  const { writer: w } = writer(store);
  w.presence("leave", RECORD, 60_000);
  await w.close();
  assertEquals(calls, ["presence [leave Ann]"]);
  w.presence("join", RECORD, 60_000);
  assertEquals(calls.length, 1, "nothing after close");
});
