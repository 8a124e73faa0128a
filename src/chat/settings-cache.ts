import { boundedMap } from "../bounded";
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
  const cached = boundedMap<string, { value: Record<string, unknown> | undefined; until: number }>(10_000);
  // Invalidations of an owner while a read of theirs is in flight: that read is answered, not kept.
  // Counted only while reads are in flight, so nothing grows with other replicas' users.
  const reading = new Map<string, { reads: number; changes: number }>();
  const invalidate = (owner: string) => {
    cached.delete(owner);
    const r = reading.get(owner);
    if (r) r.changes++;
  };
  const unsubscribe = bus.subscribe((e) => {
    if (e.type === "settings_updated") invalidate(e.owner);
    // The shared bus was down: any update may have gone unseen, by a copy or by a read in flight.
    if (e.type === "resync") {
      cached.clear();
      for (const r of reading.values()) r.changes++;
    }
  });
  const cachedStore: Store = {
    ...store,
    async getSettings(owner) {
      const hit = cached.get(owner);
      if (hit && hit.until > Date.now()) return hit.value;
      let r = reading.get(owner);
      if (!r) reading.set(owner, (r = { reads: 0, changes: 0 }));
      r.reads++;
      const mark = r.changes;
      try {
        const value = await store.getSettings(owner);
        if (r.changes === mark) {
          cached.set(owner, { value, until: Date.now() + ttlMs });
        }
        return value;
      } finally {
        if (--r.reads === 0) reading.delete(owner);
      }
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
