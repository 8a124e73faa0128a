import type { Store } from "../store/store";
import type { Bus } from "./events";

/**
 * Settings are read for every question (its budget check and its prompt) and change rarely, so
 * each user's are kept here after the first read. An update anywhere, on any replica, announces
 * `settings_updated` on the bus, and every replica drops its copy; a read that raced the update
 * (started before, answered after) is not kept. The store passed to the chat service is this one.
 */
/** A copy is also dropped after this long, for a change made behind the service's back (in the database). */
export const SETTINGS_TTL_MS = 30_000;

export function withSettingsCache(store: Store, bus: Bus, ttlMs = SETTINGS_TTL_MS): { store: Store; stop(): void } {
  const cached = new Map<string, { value: Record<string, unknown> | undefined; until: number }>();
  // Bumped per owner on every invalidation: a read that started before one is answered, not kept.
  const epochs = new Map<string, number>();
  const invalidate = (owner: string) => {
    cached.delete(owner);
    epochs.set(owner, (epochs.get(owner) ?? 0) + 1);
  };
  const unsubscribe = bus.subscribe((e) => {
    if (e.type === "settings_updated") invalidate(e.owner);
    // The shared bus was down: any update may have gone unseen.
    if (e.type === "resync") for (const owner of [...cached.keys()]) invalidate(owner);
  });
  const cachedStore: Store = {
    ...store,
    async getSettings(owner) {
      const hit = cached.get(owner);
      if (hit && hit.until > Date.now()) return hit.value;
      const epoch = epochs.get(owner) ?? 0;
      const value = await store.getSettings(owner);
      if ((epochs.get(owner) ?? 0) === epoch) {
        if (cached.size >= 10_000) cached.delete(cached.keys().next().value!);
        cached.set(owner, { value, until: Date.now() + ttlMs });
      }
      return value;
    },
    async patchSettings(owner, patch) {
      invalidate(owner);
      try {
        return await store.patchSettings(owner, patch);
      } finally {
        invalidate(owner);
        bus.publish({ type: "settings_updated", owner });
      }
    },
    async putSettings(owner, settings) {
      invalidate(owner);
      try {
        return await store.putSettings(owner, settings);
      } finally {
        invalidate(owner);
        bus.publish({ type: "settings_updated", owner });
      }
    },
  };
  return { store: cachedStore, stop: unsubscribe };
}
