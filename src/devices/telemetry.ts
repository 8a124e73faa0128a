import type { ReceivedEventData } from "@azure/event-hubs";
import * as v from "valibot";
import type { Turn } from "../model/model";

// What the Raspberry Pi client sends as device-to-cloud telemetry.
export const TelemetrySchema = v.object({
  // Kept exactly as the device sent it; only an empty or all-whitespace message is refused. The cap
  // (UTF-16 units) lets 100,000 characters of any script through, like MAX_MESSAGE_CHARS's default;
  // IoT Hub itself caps a device message at 256 KB, and the model's window is the real limit.
  message: v.pipe(
    v.string("message must be a string"),
    v.check((s) => s.trim().length > 0, "message must not be empty or only whitespace"),
    v.maxLength(200_000, "message is too long"),
  ),
  conversation: v.optional(v.array(v.object({ role: v.string(), content: v.string() }), "conversation must be a list of {role, content}")),
  timestamp: v.optional(v.number("timestamp must be epoch seconds")),
  device_id: v.optional(v.string()),
  device_test: v.optional(v.boolean()),
  // Opt-in: the device takes its reply as several C2D messages (docs/protocol.md, section 7).
  reply_in_parts: v.optional(v.boolean("reply_in_parts must be true or false")),
});

export type DeviceMessage = {
  /** From IoT Hub's system property; the body's device_id only with DEVICE_ID_FROM_BODY=true. */
  deviceId: string;
  messageId: string;
  text: string;
  conversation?: Turn[];
  /** When IoT Hub received it (or the device says it sent it), for the "too old to answer" rule. */
  sentAtMs: number;
  test: boolean;
  /** It asked for its reply in parts; else one message, as the original client takes it. */
  parts: boolean;
};

const ROLES = new Set(["user", "assistant", "system"]);

export type ParseOptions = {
  /**
   * Take the device id from the body when the system property is missing. Off by default: IoT Hub
   * sets the property on every device message, so a message without it was posted to the Event Hub by
   * someone else, who could otherwise speak as any device.
   */
  deviceIdFromBody?: boolean;
};

export function parseDeviceEvent(
  e: ReceivedEventData,
  o: ParseOptions = {},
): { ok: true; value: DeviceMessage } | { ok: false; reason: string } {
  let body: unknown = e.body;
  if (body instanceof Uint8Array) {
    try {
      body = JSON.parse(Buffer.from(body).toString("utf8"));
    } catch {
      return { ok: false, reason: "body is not JSON" };
    }
  } else if (typeof body === "string") {
    try {
      body = JSON.parse(body);
    } catch {
      return { ok: false, reason: "body is not JSON" };
    }
  }
  const parsed = v.safeParse(TelemetrySchema, body);
  if (!parsed.success) return { ok: false, reason: parsed.issues[0].message };
  const t = parsed.output;
  const deviceId = stringProp(e.systemProperties?.["iothub-connection-device-id"]) ?? (o.deviceIdFromBody ? t.device_id : undefined);
  if (!deviceId) return { ok: false, reason: "no device id (IoT Hub's iothub-connection-device-id property)" };
  const conversation = t.conversation
    ?.filter((turn) => ROLES.has(turn.role) && turn.content)
    .map((turn) => ({ role: turn.role as Turn["role"], content: turn.content }));
  const sentAtMs = e.enqueuedTimeUtc?.getTime() ?? (t.timestamp ? t.timestamp * 1000 : Date.now());
  return {
    ok: true,
    value: {
      deviceId,
      // Without a device message id, the event's position is the next best stable identity.
      messageId: messageIdOf(e.messageId) ?? `event-${e.sequenceNumber}-${e.offset}`,
      text: t.message,
      conversation: conversation?.length ? conversation : undefined,
      sentAtMs,
      test: t.device_test ?? false,
      parts: t.reply_in_parts ?? false,
    },
  };
}

function stringProp(x: unknown): string | undefined {
  return typeof x === "string" && x ? x : undefined;
}

// A UUID message id can arrive as 16 raw bytes.
function messageIdOf(id: unknown): string | undefined {
  if (typeof id === "string" && id) return id;
  if (typeof id === "number") return String(id);
  if (id instanceof Uint8Array && id.length === 16) {
    const h = Buffer.from(id).toString("hex");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  if (id instanceof Uint8Array && id.length > 0) return Buffer.from(id).toString("hex");
  return undefined;
}
