import type { Amqp } from "azure-iothub";
import type { ChatDeps } from "../chat/deps";
import type { Config } from "../config";
import type { IotHubStatus } from "../http/health";
import type { Metrics } from "../metrics";
import type { TokenCredential } from "@azure/identity";
import { azureCredential } from "../azure-auth";
import { createC2DSender, type C2DAccess } from "./c2d";
import { storeCheckpoints } from "./checkpoints";
import { startDeviceConsumer, type ConsumerOptions, type EventHubAccess } from "./consumer";
import { handleDeviceMessage, type DeviceDeps } from "./handle";
import { parseDeviceEvent } from "./telemetry";

export type DeviceBridgeOptions = {
  /** The Event Hub-compatible endpoint: a connection string, or a namespace + hub with Azure identity. */
  eventHub: EventHubAccess;
  /** The IoT Hub service API for C2D: a connection string, or a host name with Azure identity. */
  iotHub: C2DAccess;
  consumerGroup: string;
  replyMaxAgeMs: number;
  processedTtlS: number;
  /** Seams for tests against the local AMQP peer; production leaves them unset. */
  c2dTransport?: typeof Amqp;
  retryDelayMs?: number;
  loadBalancing?: ConsumerOptions["loadBalancing"];
};

/** Keys where configured; Azure identity for whatever has none (config.ts checked one of the two is there). */
export async function deviceBridgeOptions(c: Config, credential: () => Promise<TokenCredential> = azureCredential): Promise<DeviceBridgeOptions> {
  return {
    eventHub: c.EVENT_HUB_COMPATIBLE_CONN_STR
      ? { connectionString: c.EVENT_HUB_COMPATIBLE_CONN_STR }
      : { fullyQualifiedNamespace: c.EVENT_HUB_FULLY_QUALIFIED_NAMESPACE!, eventHubName: c.EVENT_HUB_NAME!, credential: await credential() },
    iotHub: c.IOT_HUB_CONNECTION_STRING
      ? { connectionString: c.IOT_HUB_CONNECTION_STRING }
      : { hostName: c.IOT_HUB_HOST_NAME!, credential: await credential() },
    consumerGroup: c.IOT_HUB_CONSUMER_GROUP,
    replyMaxAgeMs: c.DEVICE_REPLY_MAX_AGE_S * 1000,
    processedTtlS: c.PROCESSED_MESSAGE_TTL_DAYS * 86_400,
  };
}

export type DeviceBridge = { status(): IotHubStatus; stop(): Promise<void> };

/** Devices in, through the same chat use-cases as the browsers. */
export function startDeviceBridge(chat: ChatDeps, o: DeviceBridgeOptions, metrics?: Metrics): DeviceBridge {
  const log = chat.log.child({ component: "devices" });
  const c2d = createC2DSender({ access: o.iotHub, Transport: o.c2dTransport });
  const deps: DeviceDeps = { ...chat, log, c2d, options: { ...chat.options, replyMaxAgeMs: o.replyMaxAgeMs, processedTtlS: o.processedTtlS } };

  const consumer = startDeviceConsumer({
    access: o.eventHub,
    consumerGroup: o.consumerGroup,
    checkpointStore: storeCheckpoints(chat.store),
    log,
    retryDelayMs: o.retryDelayMs,
    loadBalancing: o.loadBalancing,
    async handle(event) {
      const parsed = parseDeviceEvent(event);
      if (!parsed.ok) {
        metrics?.deviceMessages.inc({ outcome: "invalid" });
        log.warn("skipped device event that is not valid telemetry", {
          reason: parsed.reason, sequenceNumber: event.sequenceNumber,
          deviceId: event.systemProperties?.["iothub-connection-device-id"],
        });
        return;
      }
      const started = performance.now();
      const outcome = await handleDeviceMessage(deps, parsed.value).catch((e) => {
        log.error("device message failed", { deviceId: parsed.value.deviceId, messageId: parsed.value.messageId, error: e });
        return "failed" as const;
      });
      metrics?.deviceMessages.inc({ outcome });
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
