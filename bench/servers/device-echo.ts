import { readFileSync } from "node:fs";
import { EventHubConsumerClient, earliestEventPosition } from "@azure/event-hubs";
import { createC2DSender } from "../../src/devices/c2d";
import { amqpTrusting } from "../../test/support/amqp-peer";
import { serveChild } from "../lib/proc";

// The device path's baseline: the same SDKs doing the least the path allows. It reads telemetry from
// the Event Hub-compatible endpoint with the same consumer settings as the server (batches of 20,
// 1 s max wait) and answers each event with a C2D message at once: no store, no model, no chat.
// What remains is the SDKs, the AMQP peer and loopback.
//
// BENCH_DEVICE_ECHO: JSON {eventHub, iotHub, certPath, partitions}.

const o = JSON.parse(process.env.BENCH_DEVICE_ECHO ?? "{}") as { eventHub: string; iotHub: string; certPath: string; partitions: number };
const c2d = createC2DSender({
  access: { connectionString: o.iotHub },
  Transport: amqpTrusting(readFileSync(o.certPath, "utf8")),
  retryDelayMs: 200,
});
const client = new EventHubConsumerClient("$Default", o.eventHub, {
  retryOptions: { retryDelayInMs: 200, maxRetryDelayInMs: 30_000, maxRetries: 10 },
});
const owned = new Set<string>();
let answered = 0;

const idOf = (id: unknown) => (typeof id === "string" ? id : id instanceof Uint8Array ? Buffer.from(id).toString("hex") : String(id));

const subscription = client.subscribe(
  {
    async processInitialize(ctx) {
      owned.add(ctx.partitionId);
    },
    async processEvents(events) {
      await Promise.all(
        events.map(async (e) => {
          const deviceId = String(e.systemProperties?.["iothub-connection-device-id"] ?? "");
          const messageId = idOf(e.messageId);
          await c2d.send(
            deviceId,
            {
              response: "ok",
              conversation_id: "baseline",
              message_id: crypto.randomUUID(),
              timestamp: new Date().toISOString(),
            },
            { correlationId: messageId, expiresInMs: 30_000 },
          );
          answered++;
        }),
      );
    },
    async processError(err) {
      process.stderr.write(`[device-echo] ${err.name}: ${err.message}\n`);
    },
  },
  { startPosition: earliestEventPosition, maxBatchSize: 20, maxWaitTimeInSeconds: 1 },
);

const deadline = Date.now() + 20_000;
while (owned.size < o.partitions) {
  if (Date.now() > deadline) throw new Error("the baseline consumer did not open every partition in time");
  await Bun.sleep(20);
}

serveChild(
  { partitions: [...owned] },
  {
    answered: () => answered,
    async stop() {
      await subscription.close();
      await client.close();
      await c2d.close();
    },
  },
);
