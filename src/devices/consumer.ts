import { EventHubConsumerClient, earliestEventPosition, type CheckpointStore, type ReceivedEventData } from "@azure/event-hubs";
import type { TokenCredential } from "@azure/identity";
import type { Logger } from "../log";

export type IotHubStatus =
  | { status: "disabled" }
  | { status: "connecting" }
  | { status: "running"; partitions: string[]; last_event_at?: string }
  | { status: "error"; reason: string };

export type EventHubAccess =
  | { connectionString: string }
  | { fullyQualifiedNamespace: string; eventHubName: string; credential: TokenCredential };

export type ConsumerOptions = {
  access: EventHubAccess;
  consumerGroup: string;
  checkpointStore: CheckpointStore;
  /** Handles one event; must not throw (the consumer logs and moves on if it does). */
  handle(event: ReceivedEventData): Promise<void>;
  log: Logger;
  /** Tests shorten these; production keeps the SDK's balanced defaults. */
  retryDelayMs?: number;
  loadBalancing?: { strategy: "balanced" | "greedy"; updateIntervalInMs: number; partitionOwnershipExpirationIntervalInMs?: number };
};

// Connection strings must never reach /health or a log line.
const scrub = (s: string) => s.replace(/(SharedAccessKey|SharedAccessSignature)=[^;\s]+/gi, "$1=[redacted]");

/**
 * Reads device telemetry from IoT Hub's Event Hub-compatible endpoint. Partitions are shared
 * out between replicas through the checkpoint store; each batch is checkpointed once handled, so a
 * restart resumes after it. A device's messages are handled in order; different devices in parallel.
 */
export function startDeviceConsumer(o: ConsumerOptions) {
  const partitions = new Set<string>();
  let lastEventAt: string | undefined;
  let error: string | undefined;
  let stopped = false;

  const options = {
    retryOptions: { retryDelayInMs: o.retryDelayMs ?? 1000, maxRetryDelayInMs: 30_000, maxRetries: 10 },
    loadBalancingOptions: o.loadBalancing,
  };
  const a = o.access;
  const client =
    "connectionString" in a
      ? new EventHubConsumerClient(o.consumerGroup, a.connectionString, o.checkpointStore, options)
      : new EventHubConsumerClient(o.consumerGroup, a.fullyQualifiedNamespace, a.eventHubName, a.credential, o.checkpointStore, options);

  const subscription = client.subscribe(
    {
      async processInitialize(ctx) {
        partitions.add(ctx.partitionId);
        error = undefined;
        o.log.info("device consumer owns a partition", { partitionId: ctx.partitionId });
      },
      async processClose(reason, ctx) {
        partitions.delete(ctx.partitionId);
        o.log.info("device consumer released a partition", { partitionId: ctx.partitionId, reason });
      },
      async processEvents(events, ctx) {
        if (events.length === 0) return;
        error = undefined;
        lastEventAt = new Date().toISOString();
        const byDevice = Map.groupBy(events, (e) => String(e.systemProperties?.["iothub-connection-device-id"] ?? ""));
        await Promise.all(
          [...byDevice.values()].map(async (list) => {
            for (const e of list) await o.handle(e).catch((err) => o.log.error("device event handler failed", { error: err }));
          }),
        );
        await ctx.updateCheckpoint(events.at(-1)!);
      },
      async processError(err, ctx) {
        if (stopped) return;
        error = scrub(`${err.name}: ${err.message}`).slice(0, 300);
        o.log.warn("device consumer error", { partitionId: ctx.partitionId, error: error });
      },
    },
    { startPosition: earliestEventPosition, maxBatchSize: 20, maxWaitTimeInSeconds: 1 },
  );

  return {
    status(): IotHubStatus {
      if (error && partitions.size === 0) return { status: "error", reason: error };
      if (partitions.size === 0) return { status: "connecting" };
      return { status: "running", partitions: [...partitions].sort(), ...(lastEventAt ? { last_event_at: lastEventAt } : {}) };
    },
    async stop() {
      stopped = true;
      await subscription.close();
      await client.close();
    },
  };
}
