import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ChatEvent, localBus } from "../src/chat/events";
import { withSettingsCache } from "../src/chat/settings-cache";
import { openSqliteStore } from "../src/store/sqlite";
import type { Store } from "../src/store/store";

// The settings copy kept per replica (src/chat/settings-cache.ts) on a real SQLite file: a read that
// an update or a bus resync overtook is answered but not kept, so the next read goes to the store.

const dir = mkdtempSync(join(tmpdir(), "pichat-settings-cache-"));
const store = openSqliteStore(join(dir, "pichat.db"));
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The store, with the next getSettings held until `release()`; counts the reads that reach it. */
function held(inner: Store) {
  let gate: Promise<void> | undefined;
  let open = () => {};
  const s = {
    reads: 0,
    hold() {
      gate = new Promise<void>((r) => (open = r));
    },
    release: () => open(),
    store: {
      ...inner,
      async getSettings(owner: string) {
        s.reads++;
        const value = await inner.getSettings(owner);
        if (gate) await gate;
        gate = undefined;
        return value;
      },
    } as Store,
  };
  return s;
}

for (const overtaken of [
  { type: "settings_updated", owner: "u" },
  { type: "resync", reason: "bus back" },
] as ChatEvent[]) {
  test(`a read overtaken by ${overtaken.type} is answered but not kept; a read that was not is kept`, async () => {
    const owner = `u-${overtaken.type}`;
    const event = overtaken.type === "settings_updated" ? { ...overtaken, owner } : overtaken;
    await store.putSettings(owner, { systemPrompt: "old" });
    const h = held(store);
    const bus = localBus();
    const cache = withSettingsCache(h.store, bus);
    h.hold();
    const racing = cache.store.getSettings(owner);
    await store.putSettings(owner, { systemPrompt: "new" }); // behind the cache's back, as another replica would
    bus.publish(event);
    h.release();
    expect(await racing).toEqual({ systemPrompt: "old" });
    expect(await cache.store.getSettings(owner)).toEqual({ systemPrompt: "new" });
    expect(h.reads).toBe(2);
    // Nothing raced this one: kept, the store is not asked again.
    expect(await cache.store.getSettings(owner)).toEqual({ systemPrompt: "new" });
    expect(h.reads).toBe(2);
    cache.stop();
  });
}
