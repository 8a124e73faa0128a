import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { usageRecords } from "../src/chat/usage-records";
import { silentLogger } from "../src/log";
import type { UsageRecord } from "../src/records";
import { StoreUnavailableError } from "../src/store/errors";
import { openSqliteStore } from "../src/store/sqlite";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { until } from "./support/until";

// The usage record queue (src/chat/usage-records.ts) against real stores whose usage writes fail
// while a switch says so: records retried through an outage until stored, each told once, and a
// call's final counts kept whichever of its two records the store took first.

const DAY = new Date().toISOString().slice(0, 10);
const record = (n: number, o: Partial<UsageRecord> = {}): UsageRecord => ({
  id: `reply:m${n}:1`,
  user_id: "u",
  chat_id: "c",
  message_id: `m${n}`,
  model: "m",
  kind: "reply",
  prompt_tokens: 10,
  completion_tokens: 0,
  estimated: true,
  created_at: new Date().toISOString(),
  ...o,
});

/** The store, with its usage writes refused while `down` says so for that method. */
function flaky(store: Store) {
  const down = { addUsage: false, putUsage: false };
  const calls = { addUsage: 0, putUsage: 0 };
  const refuse = (m: keyof typeof down) => {
    calls[m]++;
    if (down[m]) throw new StoreUnavailableError("down for the test");
  };
  const wrapped: Store = {
    ...store,
    addUsage: async (r) => (refuse("addUsage"), store.addUsage(r)),
    putUsage: async (r) => (refuse("putUsage"), store.putUsage(r)),
  };
  return { store: wrapped, down, calls };
}

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`usage record queue on ${kind}`, () => {
    let cosmos: CosmosTestServer | undefined;
    let dir: string | undefined;
    let store: Store;
    beforeAll(async () => {
      if (kind === "cosmos") {
        cosmos = await startCosmosServer();
        store = await openTestCosmosStore(cosmos, "usage-records");
      } else {
        dir = mkdtempSync(join(tmpdir(), "pichat-usage-records-"));
        store = openSqliteStore(join(dir, "pichat.db"));
      }
    });
    afterAll(async () => {
      await store.close();
      await cosmos?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    test("records made during an outage are stored once it ends, each at its final counts, and each stored() runs once", async () => {
      const f = flaky(store);
      const q = usageRecords({ store: f.store, log: silentLogger });
      f.down.addUsage = f.down.putUsage = true;
      const stored = new Map<string, number>();
      const done = (id: string) => () => stored.set(id, (stored.get(id) ?? 0) + 1);
      const base = 100;
      for (let i = base; i < base + 5; i++) {
        const r = record(i);
        q.record(r, () => {}, { replace: false, final: false });
        q.record({ ...r, completion_tokens: 7, estimated: false }, done(r.id), { replace: true, final: true });
      }
      await until(() => f.calls.addUsage >= 1, "a first try");
      expect(stored.size).toBe(0);
      f.down.addUsage = f.down.putUsage = false;
      await q.drained();
      const mine = (await store.listUsage({ userId: "u", since: `${DAY}T00:00:00.000Z` })).filter(
        (r) => Number(r.message_id.slice(1)) >= base,
      );
      expect(mine.map((r) => [r.id, r.completion_tokens, r.estimated]).sort()).toEqual(
        Array.from({ length: 5 }, (_, i) => [`reply:m${base + i}:1`, 7, false]).sort() as never,
      );
      expect([...stored.values()]).toEqual([1, 1, 1, 1, 1]);
    });

    test("a call whose estimate was refused ends at its final counts, and the day's total counts them once", async () => {
      const f = flaky(store);
      const q = usageRecords({ store: f.store, log: silentLogger });
      const before = await store.tokensUsedSince("u2", `${DAY}T00:00:00.000Z`);
      const r = record(200, { user_id: "u2" });
      f.down.addUsage = true; // the estimate is refused; its final counts are not
      q.record(r, () => {}, { replace: false, final: false });
      q.record({ ...r, completion_tokens: 30, estimated: false }, () => {}, { replace: true, final: true });
      await until(() => f.calls.addUsage >= 1, "a first try");
      f.down.addUsage = false;
      await q.drained();
      const [kept] = (await store.listUsage({ userId: "u2", since: `${DAY}T00:00:00.000Z` })).filter((x) => x.id === r.id);
      expect([kept?.prompt_tokens, kept?.completion_tokens, kept?.estimated]).toEqual([10, 30, false]);
      expect((await store.tokensUsedSince("u2", `${DAY}T00:00:00.000Z`)) - before).toBe(40);
    });
  });
}
