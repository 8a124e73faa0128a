import type { ReceivedEventData } from "@azure/event-hubs";
import type { ChatService } from "../chat/service";
import type { Logger } from "../log";
import type { Metrics } from "../metrics";
import type { C2DSender } from "./c2d";
import { parseDeviceEvent, type DeviceMessage } from "./telemetry";

export type DeviceDeps = {
  chat: ChatService;
  c2d: C2DSender;
  log: Logger;
  metrics?: Metrics;
  replyMaxAgeMs: number;
  processedTtlS: number;
};

export type DeviceOutcome = "answered" | "duplicate" | "stale" | "c2d_failed" | "model_failed";

export const SORRY = "Sorry, I couldn't get an answer just now. Please try again.";

/** One event from the hub: parsed, handled, counted and logged once. Never throws. */
export async function handleDeviceEvent(deps: DeviceDeps, event: ReceivedEventData): Promise<void> {
  const parsed = parseDeviceEvent(event);
  if (!parsed.ok) {
    deps.metrics?.deviceMessages.inc({ outcome: "invalid" });
    deps.log.warn("skipped device event that is not valid telemetry", {
      reason: parsed.reason, sequenceNumber: event.sequenceNumber,
      deviceId: event.systemProperties?.["iothub-connection-device-id"],
    });
    return;
  }
  const m = parsed.value;
  const started = performance.now();
  const outcome = await handleDeviceMessage(deps, m).catch((e) => {
    deps.log.error("device message failed", { deviceId: m.deviceId, messageId: m.messageId, error: e });
    return "failed" as const;
  });
  deps.metrics?.deviceMessages.inc({ outcome });
  deps.log.info("device message handled", {
    deviceId: m.deviceId, messageId: m.messageId, outcome, durationMs: Math.round(performance.now() - started),
  });
}

/**
 * One device question, end to end and at most once: claim its id, store it in the device's chat,
 * stream the model's reply to watching browsers, store the reply, and send it to the device.
 */
export async function handleDeviceMessage(deps: DeviceDeps, m: DeviceMessage): Promise<DeviceOutcome> {
  const { chat } = deps;
  const log = deps.log.child({ deviceId: m.deviceId, messageId: m.messageId });
  // Atomic create-if-absent: a redelivery (restart, partition hand-over, another replica) stops here.
  if (!(await chat.claimOnce(m.messageId, deps.processedTtlS))) {
    log.info("device message already processed; skipped");
    return "duplicate";
  }
  const room = await chat.deviceChat(m.deviceId);

  if (Date.now() - m.sentAtMs > deps.replyMaxAgeMs) {
    // The device stopped waiting long ago: keep the question, skip the model and the reply.
    await chat.storeQuestion(room, { content: m.text, messageId: m.messageId, deviceId: m.deviceId });
    log.info("device message too old to answer; stored only", { ageMs: Date.now() - m.sentAtMs });
    return "stale";
  }

  const sent = await chat.send({ chatId: room.id, content: m.text, messageId: m.messageId, deviceId: m.deviceId, context: m.conversation, waitIfBusy: true });
  if (sent.duplicate) return "duplicate";
  const reply = await sent.reply;
  const answered = reply.message && !reply.error;
  try {
    await deps.c2d.send(
      m.deviceId,
      {
        response: answered ? reply.message!.content : SORRY,
        conversation_id: room.id,
        message_id: sent.traceId,
        timestamp: new Date().toISOString(),
        ...(answered ? {} : { error: reply.error?.code ?? "MODEL_ERROR" }),
      },
      { correlationId: m.messageId, expiresInMs: deps.replyMaxAgeMs },
    );
  } catch (e) {
    log.error("could not send the reply to the device; it stays stored", { chatId: room.id, error: e });
    return "c2d_failed";
  }
  return answered ? "answered" : "model_failed";
}
