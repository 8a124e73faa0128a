import type { ReceivedEventData } from "@azure/event-hubs";

// IoT Hub's device connection state events, when a route sends them to the built-in endpoint
// (data source "Device connection state events"): application properties `opType` and
// `iothub-message-schema`, the device in the `iothub-connection-device-id` system property.
const OP_TYPES: Record<string, boolean> = { deviceConnected: true, deviceDisconnected: false };

/** The state such an event reports, or undefined for any other event. */
export function connectionState(e: ReceivedEventData): { deviceId: string; online: boolean; at: string } | undefined {
  const op = e.properties?.opType;
  if (typeof op !== "string" || !(op in OP_TYPES)) return undefined;
  const deviceId = e.systemProperties?.["iothub-connection-device-id"];
  if (typeof deviceId !== "string" || !deviceId) return undefined;
  return { deviceId, online: OP_TYPES[op]!, at: (e.enqueuedTimeUtc ?? new Date()).toISOString() };
}
