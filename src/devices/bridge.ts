import type { ChatService } from "../chat/service";
import type { Logger } from "../log";
import type { Metrics } from "../metrics";
import type { Store } from "../store/store";
import { c2dAllowance, localHubBudget, type HubBudget } from "./budget";
import { createC2DSender } from "./c2d";
import { sayer } from "./say";
import type { DeviceSayer } from "../chat/devices";
import { storeCheckpoints } from "./checkpoints";
import { startDeviceConsumer, type IotHubStatus } from "./consumer";
import { handleDeviceEvent } from "./handle";
import type { DeviceBridgeOptions } from "./options";

export type DeviceBridge = { status(): IotHubStatus; stop(): Promise<void>; say: DeviceSayer };

/**
 * Devices in, through the same chat service as the browsers. `store` is only the Event Hubs
 * checkpoint store's backing (partition ownership and progress), never chats or messages.
 */
export function startDeviceBridge(
  parts: { chat: ChatService; store: Store; log: Logger; metrics?: Metrics; hubBudget?: HubBudget },
  o: DeviceBridgeOptions,
): DeviceBridge {
  const log = parts.log.child({ component: "devices" });
  if (o.deviceIdFromBody) {
    log.warn(
      "DEVICE_ID_FROM_BODY=true: telemetry without IoT Hub's iothub-connection-device-id property is taken as the device its body names; anyone who can post to the Event Hub can speak as any device",
    );
  }
  const throttles = parts.metrics?.c2dThrottles;
  const c2d = createC2DSender({ access: o.iotHub, Transport: o.c2dTransport, onBusy: (kind) => throttles?.inc({ kind }) });
  const allowance = c2dAllowance(parts.hubBudget ?? localHubBudget(o.c2dPerMinute), {
    windowMs: o.replyMaxAgeMs,
    onShort: () => throttles?.inc({ kind: "budget" }),
  });
  const deps = {
    chat: parts.chat,
    speaker: { send: c2d.send, allowance, expiresInMs: o.replyMaxAgeMs, deadlineMs: o.replyDeadlineMs },
    log,
    metrics: parts.metrics,
    replyMaxAgeMs: o.replyMaxAgeMs,
    processedTtlS: o.processedTtlS,
    claimLeaseMs: o.claimLeaseMs,
    handling: new Map(),
    deviceIdFromBody: o.deviceIdFromBody,
  };

  const consumer = startDeviceConsumer({
    access: o.eventHub,
    consumerGroup: o.consumerGroup,
    checkpointStore: storeCheckpoints(parts.store),
    log,
    retryDelayMs: o.retryDelayMs,
    loadBalancing: o.loadBalancing,
    handle: (event) => handleDeviceEvent(deps, event),
  });

  return {
    status: consumer.status,
    say: sayer({ send: c2d.send, allowance }),
    async stop() {
      await consumer.stop();
      await c2d.close();
    },
  };
}
