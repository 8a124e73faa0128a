import type { SqlQuerySpec } from "@azure/cosmos";
import type { Checkpoint, Ownership, Store } from "../store";
import { type Cosmos, matchEtag, query, tolerate } from "./requests";

// The Event Hubs consumer's partition ownership and checkpoints, kept in the store per scope.

type CheckpointOps = Pick<Store, "listOwnership" | "claimOwnership" | "listCheckpoints" | "putCheckpoint">;

type OwnershipDoc = { partitionId: string; ownerId: string; lastModifiedTimeInMs: number; _etag?: string };
const toOwnership = (d: OwnershipDoc): Ownership => ({
  partitionId: d.partitionId,
  ownerId: d.ownerId,
  etag: String(d._etag),
  lastModifiedTimeInMs: d.lastModifiedTimeInMs,
});

const byType = (scope: string, type: string): SqlQuerySpec => ({
  query: "SELECT * FROM c WHERE c.scope = @scope AND c.type = @type",
  parameters: [
    { name: "@scope", value: scope },
    { name: "@type", value: type },
  ],
});

export function checkpointOps(k: Cosmos): CheckpointOps {
  const { c, o } = k;

  const claimOwnership = async (scope: string, partitionId: string, ownerId: string, etag?: string) => {
    const doc = { id: `own:${partitionId}`, scope, type: "ownership", partitionId, ownerId, lastModifiedTimeInMs: Date.now() };
    // No etag: create-if-absent (409 = someone holds it). Etag: replace only if still current (412).
    const write =
      etag === undefined
        ? () => c.checkpoints.items.create<OwnershipDoc>(doc, o())
        : () => c.checkpoints.item(doc.id, scope).replace<OwnershipDoc>(doc, { ...o(), ...matchEtag(etag) });
    const res = await tolerate(write, [404, 409, 412], undefined);
    return res?.resource ? toOwnership(res.resource) : undefined;
  };

  return {
    listOwnership: async (scope) => (await query<OwnershipDoc>(k, c.checkpoints, byType(scope, "ownership"), scope)).map(toOwnership),
    claimOwnership,
    listCheckpoints: async (scope) =>
      (await query<Checkpoint>(k, c.checkpoints, byType(scope, "checkpoint"), scope)).map(
        ({ partitionId, sequenceNumber, offset }): Checkpoint => ({ partitionId, sequenceNumber, offset }),
      ),
    putCheckpoint: async (scope, cp) =>
      void (await c.checkpoints.items.upsert({ id: `cp:${cp.partitionId}`, scope, type: "checkpoint", ...cp }, o())),
  };
}
