import { StoreUnavailableError } from "../errors";
import { mergeSettings } from "../merge";
import type { Store } from "../store";
import { type Cosmos, ETAG_ATTEMPTS, matchEtag, read, safeId, tolerate } from "./requests";

type SettingsOps = Pick<Store, "getSettings" | "putSettings" | "patchSettings">;

type SettingsDoc = { id: string; owner: string; value: Record<string, unknown>; _etag?: string };

export function settingsOps(k: Cosmos): SettingsOps {
  const { c, o } = k;

  const patchSettings = async (owner: string, patch: Record<string, unknown>) => {
    const id = safeId(owner);
    for (let attempt = 0; attempt < ETAG_ATTEMPTS; attempt++) {
      const existing = await read<SettingsDoc>(k, c.settings, id, owner);
      const value = mergeSettings(existing?.value ?? {}, patch);
      const doc: SettingsDoc = { id, owner, value };
      // Create-if-absent, or replace-if-unchanged: a patch racing another re-reads and merges again.
      const written = existing
        ? await tolerate(
            async () => (await c.settings.item(id, owner).replace(doc, { ...o(), ...matchEtag(String(existing._etag)) }), true),
            [404, 412],
            false,
          )
        : await tolerate(async () => (await c.settings.items.create(doc, o()), true), [409], false);
      if (written) return value;
    }
    throw new StoreUnavailableError("Cosmos DB: the settings changed on every attempt to update them; try again");
  };

  return {
    getSettings: async (owner) => (await read<{ value: Record<string, unknown> }>(k, c.settings, safeId(owner), owner))?.value,
    putSettings: async (owner, settings) => void (await c.settings.items.upsert({ id: safeId(owner), owner, value: settings }, o())),
    patchSettings,
  };
}
