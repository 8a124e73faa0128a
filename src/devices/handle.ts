import { createChat } from "../chat/chats";
import { nowIso } from "../chat/clock";
import type { ChatDeps } from "../chat/deps";
import { AppError } from "../chat/errors";
import { sendMessage } from "../chat/send";
import type { Chat } from "../records";
import type { C2DSender } from "./c2d";
import type { DeviceMessage } from "./telemetry";

export type DeviceDeps = ChatDeps & {
  c2d: C2DSender;
  options: ChatDeps["options"] & { replyMaxAgeMs: number; processedTtlS: number };
};

export type DeviceOutcome = "answered" | "duplicate" | "stale" | "c2d_failed" | "model_failed";

export const SORRY = "Sorry, I couldn't get an answer just now. Please try again.";

/**
 * One device question, end to end and at most once: claim its id, store it in the device's chat,
 * stream the model's reply to watching browsers, store the reply, and send it to the device.
 */
export async function handleDeviceMessage(deps: DeviceDeps, m: DeviceMessage): Promise<DeviceOutcome> {
  const log = deps.log.child({ deviceId: m.deviceId, messageId: m.messageId });
  // Atomic create-if-absent: a redelivery (restart, partition hand-over, another replica) stops here.
  if (!(await deps.store.claimProcessed(m.messageId, deps.options.processedTtlS))) {
    log.info("device message already processed; skipped");
    return "duplicate";
  }
  const chat = await deviceChat(deps, m.deviceId);

  if (Date.now() - m.sentAtMs > deps.options.replyMaxAgeMs) {
    // The device stopped waiting long ago: keep the question, skip the model and the reply.
    const message = { id: m.messageId, chat_id: chat.id, role: "user" as const, content: m.text, created_at: nowIso(), device_id: m.deviceId };
    if (await deps.store.addMessage(message)) deps.bus.publish({ type: "user_message", message });
    log.info("device message too old to answer; stored only", { ageMs: Date.now() - m.sentAtMs });
    return "stale";
  }

  const sent = await sendWhenChatIsFree(deps, { chatId: chat.id, content: m.text, messageId: m.messageId, deviceId: m.deviceId, context: m.conversation });
  if (sent.duplicate) return "duplicate";
  const reply = await sent.reply;
  const answered = reply.message && !reply.error;
  try {
    await deps.c2d.send(
      m.deviceId,
      {
        response: answered ? reply.message!.content : SORRY,
        conversation_id: chat.id,
        message_id: sent.traceId,
        timestamp: new Date().toISOString(),
        ...(answered ? {} : { error: reply.error?.code ?? "MODEL_ERROR" }),
      },
      { correlationId: m.messageId, expiresInMs: deps.options.replyMaxAgeMs },
    );
  } catch (e) {
    log.error("could not send the reply to the device; it stays stored", { chatId: chat.id, error: e });
    return "c2d_failed";
  }
  return answered ? "answered" : "model_failed";
}

/** The device's active chat, created (and announced to every browser) on its first message. */
async function deviceChat(deps: DeviceDeps, deviceId: string): Promise<Chat> {
  return (await deps.store.findDeviceChat(deviceId)) ?? createChat(deps, { name: deviceId, deviceId });
}

// A browser may be mid-reply in the device's chat; the device's question waits its turn.
async function sendWhenChatIsFree(deps: DeviceDeps, o: Parameters<typeof sendMessage>[1]) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await sendMessage(deps, o);
    } catch (e) {
      const busy = deps.inflight.get(o.chatId);
      if (!(e instanceof AppError && e.code === "GENERATION_IN_PROGRESS") || attempt >= 5 || !busy) throw e;
      await busy.done;
    }
  }
}
