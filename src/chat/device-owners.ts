import type { Logger } from "../log";
import type { Store } from "../store/store";

/**
 * The owner of chats from devices nobody answers for (DEVICE_DEFAULT_OWNER=none): no sign-in can
 * produce it (user ids are "default", "u-…" or "oidc-…"), so nobody sees these chats.
 */
export const UNASSIGNED_OWNER = "~unassigned";

/** How long an assignment is remembered: `bun run devices assign` takes effect within this. */
export const DEVICE_OWNER_TTL_MS = 5_000;

/**
 * Whose a device's chats are: its assignment (`bun run devices assign`), else the default owner.
 * `fallback` is a user id, or UNASSIGNED_OWNER.
 */
export function deviceOwners(store: Store, fallback: () => Promise<string>, log: Logger, ttlMs = DEVICE_OWNER_TTL_MS) {
  const cache = new Map<string, { owner: string; until: number }>();
  return async function ownerOf(deviceId: string): Promise<string> {
    const hit = cache.get(deviceId);
    if (hit && hit.until > Date.now()) return hit.owner;
    const owner = (await store.deviceOwner(deviceId)) ?? (await fallback());
    if (cache.size > 10_000) cache.clear();
    cache.set(deviceId, { owner, until: Date.now() + ttlMs });
    if (owner === UNASSIGNED_OWNER && !hit)
      log.warn("a device nobody owns sent a message: stored, not answered; assign it with `bun run devices assign`", { deviceId });
    return owner;
  };
}

/**
 * DEVICE_DEFAULT_OWNER as a user id: "default" is the legacy API_TOKEN user, "none" nobody, and
 * anything else a user's name, looked up when first needed (the user may be created after start).
 */
export function defaultDeviceOwner(store: Store, setting: string, log: Logger): () => Promise<string> {
  if (setting === "none") return async () => UNASSIGNED_OWNER;
  // The legacy user's id is its name (src/auth/identity.ts).
  if (setting === "default") return async () => "default";
  return async () => {
    const user = await store.findUser(setting);
    if (user) return user.id;
    log.warn("DEVICE_DEFAULT_OWNER names no user: messages from unassigned devices are stored, not answered", { user: setting });
    return UNASSIGNED_OWNER;
  };
}
