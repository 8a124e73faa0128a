import type { Turn } from "../model/model";
import { requireChat } from "./chats";
import { nowIso } from "./clock";
import type { ChatDeps } from "./deps";
import { buildPrompt } from "./prompt";
import { startReply, type ReplyResult } from "./reply";
import { getSettings } from "./settings";
import { titleChat } from "./title";
import type { Chat, Message } from "../records";

export type SendResult =
  | { duplicate: true; message: Message }
  | { duplicate: false; message: Message; traceId: string; reply: Promise<ReplyResult> };

/**
 * Stores a user's message, then starts the model's reply, which streams on the bus.
 * The message is durable before the model is asked. A message id seen before in this chat
 * is not stored or answered again (a resend after a reconnect, a redelivered device event).
 */
export async function sendMessage(
  deps: ChatDeps,
  o: {
    chatId: string; content: string; messageId?: string; origin?: string; deviceId?: string;
    /** Context to send instead of the stored history (a device's own conversation). */
    context?: Turn[];
  },
): Promise<SendResult> {
  let release: () => void;
  try {
    release = deps.inflight.reserve(o.chatId);
  } catch (e) {
    // A resend of a question whose reply is still streaming is a duplicate, not a conflict.
    const known = o.messageId && (await deps.store.listMessages(o.chatId, { limit: 20 })).find((m) => m.id === o.messageId);
    if (known) return { duplicate: true, message: known };
    throw e;
  }
  try {
    const chat = await requireChat(deps, o.chatId);
    // Everything the prompt needs is read before the question is stored: once it is stored,
    // nothing may fail before the reply starts, or a resend with the same id would only be a duplicate.
    const [earlier, settings] = await Promise.all([
      o.context ? [] : deps.store.listMessages(chat.id, { limit: deps.options.historyMaxMessages }),
      getSettings(deps),
    ]);
    const message: Message = {
      id: o.messageId ?? crypto.randomUUID(), chat_id: chat.id, role: "user", content: o.content, created_at: nowIso(),
      ...(o.deviceId ? { device_id: o.deviceId } : {}),
    };
    if (!(await deps.store.addMessage(message))) return { duplicate: true, message };
    await touch(deps, chat, message.created_at);
    deps.bus.publish({ type: "user_message", message, origin: o.origin });

    const history = o.context
      ? [...o.context, { role: "user" as const, content: o.content }]
      : [...earlier, message].slice(-deps.options.historyMaxMessages);
    const prompt = buildPrompt(settings.systemPrompt ?? deps.options.systemPrompt, history, deps.options.historyChars);
    const { traceId, result } = startReply(deps, {
      chatId: chat.id, prompt, temperature: settings.temperature, model: settings.model, deviceId: o.deviceId,
    });
    if (deps.options.autoTitle) {
      void result.then(async (r) => {
        if (r.message && !r.status) await titleChat(deps, chat, [message, r.message]);
      });
    }
    return { duplicate: false, message, traceId, reply: result };
  } finally {
    release();
  }
}

// Activity moves a chat to the top of the list; losing that is not worth failing the send.
async function touch(deps: ChatDeps, chat: Chat, at: string) {
  try {
    await deps.store.updateChat({ ...chat, updated_at: at });
  } catch (e) {
    deps.log.warn("could not update chat activity time", { chatId: chat.id, error: e });
  }
}
