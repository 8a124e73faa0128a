import type { Amqp } from "azure-iothub";
import type { ChatDeps } from "../chat/deps";
import type { Config } from "../config";
import type { IotHubStatus } from "../http/health";
import { createC2DSender } from "./c2d";
import { storeCheckpoints } from "./checkpoints";
import { startDeviceConsumer, type ConsumerOptions } from "./consumer";
import { handleDeviceMessage, type DeviceDeps } from "./handle";
import { parseDeviceEvent } from "./telemetry";

export type DeviceBridgeOptions = {
  eventHubConnectionString: string;
  iotHubConnectionString: string;
  consumerGroup: string;
  replyMaxAgeMs: number;
  processedTtlS: number;
  /** Seams for tests against the local AMQP peer; production leaves them unset. */
  c2dTransport?: typeof Amqp;
  retryDelayMs?: number;
  loadBalancing?: ConsumerOptions["loadBalancing"];
};

export function deviceBridgeOptions(c: Config): DeviceBridgeOptions {
  if (!c.EVENT_HUB_COMPATIBLE_CONN_STR || !c.IOT_HUB_CONNECTION_STRING) {
    throw new Error("EVENT_HUB_COMPATIBLE_CONN_STR and IOT_HUB_CONNECTION_STRING are required for the device bridge");
  }
  return {
    eventHubConnectionString: c.EVENT_HUB_COMPATIBLE_CONN_STR,
    iotHubConnectionString: c.IOT_HUB_CONNECTION_STRING,
    consumerGroup: c.IOT_HUB_CONSUMER_GROUP,
    replyMaxAgeMs: c.DEVICE_REPLY_MAX_AGE_S * 1000,
    processedTtlS: c.PROCESSED_MESSAGE_TTL_DAYS * 86_400,
  };
}

export type DeviceBridge = { status(): IotHubStatus; stop(): Promise<void> };

/** Devices in, through the same chat use-cases as the browsers. */
export function startDeviceBridge(chat: ChatDeps, o: DeviceBridgeOptions): DeviceBridge {
  const log = chat.log.child({ component: "devices" });
  const c2d = createC2DSender({ connectionString: o.iotHubConnectionString, Transport: o.c2dTransport });
  const deps: DeviceDeps = { ...chat, log, c2d, options: { ...chat.options, replyMaxAgeMs: o.replyMaxAgeMs, processedTtlS: o.processedTtlS } };

  const consumer = startDeviceConsumer({
    connectionString: o.eventHubConnectionString,
    consumerGroup: o.consumerGroup,
    checkpointStore: storeCheckpoints(chat.store),
    log,
    retryDelayMs: o.retryDelayMs,
    loadBalancing: o.loadBalancing,
    async handle(event) {
      const parsed = parseDeviceEvent(event);
      if (!parsed.ok) {
        log.warn("skipped device event that is not valid telemetry", {
          reason: parsed.reason, sequenceNumber: event.sequenceNumber,
          deviceId: event.systemProperties?.["iothub-connection-device-id"],
        });
        return;
      }
      const started = performance.now();
      const outcome = await handleDeviceMessage(deps, parsed.value);
      log.info("device message handled", {
        deviceId: parsed.value.deviceId, messageId: parsed.value.messageId, outcome,
        durationMs: Math.round(performance.now() - started),
      });
    },
  });

  return {
    status: consumer.status,
    async stop() {
      await consumer.stop();
      await c2d.close();
    },
  };
}
