import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { EventHubConsumerClient, earliestEventPosition, type EventPosition, type ReceivedEventData } from "@azure/event-hubs";
import { Client } from "azure-iothub";
import { Message } from "azure-iothub/dist/common-core/message.js";
import { amqpTrusting, startIotHubPeer, type IotHubPeer } from "./support/amqp-peer.ts";
import { makeLocalhostCert } from "./support/tls-cert.ts";

let peer: IotHubPeer;
let cert: Awaited<ReturnType<typeof makeLocalhostCert>>;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  cert = await makeLocalhostCert();
  peer = await startIotHubPeer({ tls: cert });
});

afterAll(async () => {
  // Clients first: they would otherwise spend their retries reconnecting to a peer that is gone.
  await Promise.allSettled(
    cleanups
      .splice(0)
      .reverse()
      .map((c) => c()),
  );
  await peer?.stop();
});

/** A consumer that buffers events and lets a test await the next matching one, failing at a deadline. */
function consume(opts: { partitionId?: string; startPosition: EventPosition | Record<string, EventPosition> }) {
  const client = new EventHubConsumerClient("$Default", peer.eventHubConnectionString, {
    // The default first retry waits 30 s; 200 ms keeps reconnects inside the test's deadline.
    retryOptions: { retryDelayInMs: 200, maxRetryDelayInMs: 1000, maxRetries: 20 },
  });
  const events: ReceivedEventData[] = [];
  const errors: Error[] = [];
  const waiters = new Set<() => void>();
  const handlers = {
    processEvents: async (batch: ReceivedEventData[]) => {
      events.push(...batch);
      for (const w of waiters) w();
    },
    processError: async (err: Error) => void errors.push(err),
  };
  const options = { startPosition: opts.startPosition, maxWaitTimeInSeconds: 1 };
  const subscription =
    opts.partitionId === undefined ? client.subscribe(handlers, options) : client.subscribe(opts.partitionId, handlers, options);
  const close = async () => {
    await subscription.close();
    await client.close();
  };
  cleanups.push(close);

  function waitFor(pred: (e: ReceivedEventData) => boolean, timeoutMs = 5000): Promise<ReceivedEventData> {
    const seen = events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = events.find(pred);
        if (hit) waiters.delete(check), clearTimeout(timer), resolve(hit);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        const errs = errors.map((e) => e.message).join("; ");
        reject(new Error(`no matching event within ${timeoutMs} ms (got ${events.length}; errors: ${errs || "none"})`));
      }, timeoutMs);
      waiters.add(check);
    });
  }
  return { events, errors, waitFor, close };
}

const fromDevice = (id: string) => (e: ReceivedEventData) => e.systemProperties?.["iothub-connection-device-id"] === id;
const withMessageId = (id: string) => (e: ReceivedEventData) => e.messageId === id;

describe("Event Hub-compatible endpoint with EventHubConsumerClient", () => {
  test("from earliest: events sent before and after subscribing arrive with body and system properties", async () => {
    const before = peer.sendTelemetry({
      deviceId: "dev-early",
      body: { t: 21.5 },
      messageId: "m-before",
      contentType: "application/json",
    });
    const consumer = consume({ startPosition: earliestEventPosition });
    const first = await consumer.waitFor(withMessageId("m-before"));
    expect(first.body).toEqual({ t: 21.5 });
    expect(first.systemProperties?.["iothub-connection-device-id"]).toBe("dev-early");
    expect(first.contentType).toBe("application/json");
    expect(first.sequenceNumber).toBe(before.sequenceNumber);
    expect(first.offset).toBe(before.offset);

    peer.sendTelemetry({
      deviceId: "dev-early",
      body: { t: 22 },
      messageId: "m-after",
      contentType: "application/json",
      properties: { kind: "temp" },
    });
    const second = await consumer.waitFor(withMessageId("m-after"));
    expect(second.body).toEqual({ t: 22 });
    expect(second.properties).toEqual({ kind: "temp" });
    expect(second.systemProperties?.["iothub-connection-device-id"]).toBe("dev-early");
    expect(consumer.errors).toEqual([]);
    await consumer.close();
  });

  test("from a known offset: only later events arrive, and the attach carried the offset filter", async () => {
    const device = "dev-offset";
    const a = peer.sendTelemetry({ deviceId: device, body: "a", messageId: "o-a", partitionId: "1" });
    peer.sendTelemetry({ deviceId: device, body: "b", messageId: "o-b", partitionId: "1" });
    const attachesBefore = peer.receiverAttaches.length;
    const consumer = consume({ partitionId: "1", startPosition: { offset: a.offset } });
    await consumer.waitFor(withMessageId("o-b"));
    peer.sendTelemetry({ deviceId: device, body: "c", messageId: "o-c", partitionId: "1" });
    await consumer.waitFor(withMessageId("o-c"));

    expect(consumer.events.filter(fromDevice(device)).map((e) => e.messageId)).toEqual(["o-b", "o-c"]);
    expect(peer.receiverAttaches.slice(attachesBefore)).toEqual([
      { partitionId: "1", consumerGroup: "$Default", filter: `amqp.annotation.x-opt-offset > '${a.offset}'` },
    ]);
    // A string body is the raw payload; "b" is not JSON, so the SDK hands back the bytes.
    expect(Buffer.from(consumer.events.find(withMessageId("o-b"))!.body).toString()).toBe("b");
    await consumer.close();
  });

  test("after dropConnections the consumer reconnects and receives new telemetry", async () => {
    const consumer = consume({ partitionId: "0", startPosition: earliestEventPosition });
    peer.sendTelemetry({ deviceId: "dev-drop", body: { n: 1 }, messageId: "d-1", partitionId: "0" });
    await consumer.waitFor(withMessageId("d-1"));
    const attachesBefore = peer.receiverAttaches.length;

    peer.dropConnections();
    peer.sendTelemetry({ deviceId: "dev-drop", body: { n: 2 }, messageId: "d-2", partitionId: "0" });
    const after = await consumer.waitFor(withMessageId("d-2"), 15_000);
    expect(after.body).toEqual({ n: 2 });
    // The SDK resumes after the last sequence number it saw, so nothing is delivered twice.
    expect(consumer.events.filter(withMessageId("d-1"))).toHaveLength(1);
    expect(peer.receiverAttaches.length).toBeGreaterThan(attachesBefore);
    await consumer.close();
  }, 20_000);

  test("after stop and restart a new subscription still sees earlier events", async () => {
    const kept = peer.sendTelemetry({ deviceId: "dev-restart", body: { kept: true }, messageId: "r-1" });
    await peer.stop();
    await peer.restart();
    const consumer = consume({ partitionId: kept.partitionId, startPosition: earliestEventPosition });
    const seen = await consumer.waitFor(withMessageId("r-1"));
    expect(seen.body).toEqual({ kept: true });
    expect(seen.sequenceNumber).toBe(kept.sequenceNumber);
    await consumer.close();
  });
});

describe("IoT Hub service endpoint with azure-iothub Client (TLS)", () => {
  let client: Client;
  beforeAll(() => {
    client = Client.fromConnectionString(peer.iotHubConnectionString, amqpTrusting(cert.cert));
    // The default policy backs off for minutes; fail fast and never retry an answer the hub gave.
    client.setRetryPolicy({
      shouldRetry: (err: Error) => !["DeviceNotFoundError", "DeviceMaximumQueueDepthExceededError"].includes(err.name),
      nextRetryTimeout: (retryCount: number) => (retryCount > 3 ? -1 : 100),
    });
    cleanups.push(() => client.close());
  });

  test("send lands in peer.c2d with its JSON body and message id", async () => {
    const messageId = randomUUID();
    const message = new Message(JSON.stringify({ text: "hello device" }));
    message.messageId = messageId;
    await client.send("pi-1", message);
    const got = await peer.waitForC2D((m) => m.messageId === messageId);
    expect(got.deviceId).toBe("pi-1");
    expect(got.body).toEqual({ text: "hello device" });
  });

  test("reject modes surface as the SDK's typed errors", async () => {
    try {
      peer.setC2DMode("reject-not-found");
      const notFound = await client.send("ghost", new Message("{}")).catch((e: Error) => e);
      expect(notFound).toBeInstanceOf(Error);
      expect((notFound as Error).name).toBe("DeviceNotFoundError");

      peer.setC2DMode("reject");
      const full = await client.send("pi-1", new Message("{}")).catch((e: Error) => e);
      expect((full as Error).name).toBe("DeviceMaximumQueueDepthExceededError");
    } finally {
      peer.setC2DMode("accept");
    }
    expect(peer.c2d.some((m) => m.deviceId === "ghost")).toBe(false);
  });
});
