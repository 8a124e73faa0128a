import type { Checkpoint, CheckpointStore, PartitionOwnership } from "@azure/event-hubs";
import type { Store } from "../store/store";

const scopeOf = (o: { fullyQualifiedNamespace: string; eventHubName: string; consumerGroup: string }) =>
  `${o.fullyQualifiedNamespace.toLowerCase()}/${o.eventHubName.toLowerCase()}/${o.consumerGroup.toLowerCase()}`;

/**
 * The Event Hubs CheckpointStore on our own database (SQLite or Cosmos DB), so progress and
 * partition ownership survive restarts and are shared by every replica reading the hub.
 */
export function storeCheckpoints(store: Store): CheckpointStore {
  return {
    async listOwnership(fullyQualifiedNamespace, eventHubName, consumerGroup) {
      const base = { fullyQualifiedNamespace, eventHubName, consumerGroup };
      return (await store.listOwnership(scopeOf(base))).map((o) => ({ ...base, ...o }));
    },
    async claimOwnership(requested: PartitionOwnership[]) {
      const claimed = await Promise.all(
        requested.map(async (r): Promise<PartitionOwnership[]> => {
          const won = await store.claimOwnership(scopeOf(r), r.partitionId, r.ownerId, r.etag);
          return won ? [{ ...r, ...won }] : [];
        }),
      );
      return claimed.flat();
    },
    async listCheckpoints(fullyQualifiedNamespace, eventHubName, consumerGroup) {
      const base = { fullyQualifiedNamespace, eventHubName, consumerGroup };
      return (await store.listCheckpoints(scopeOf(base))).map((c) => ({ ...base, ...c }));
    },
    async updateCheckpoint(c: Checkpoint) {
      await store.putCheckpoint(scopeOf(c), { partitionId: c.partitionId, sequenceNumber: c.sequenceNumber, offset: String(c.offset) });
    },
  };
}
