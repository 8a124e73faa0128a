import type { Turn } from "../model/model";
import type { Chat, Message } from "../records";
import { nowIso } from "./clock";
import type { ChatClient, ChatContext } from "./context";
import { ChatError } from "./errors";
import { buildPrompt } from "./prompt";
import type { ReplyRequest, ReplyResult } from "./reply";
import { getSettingsOf } from "./settings";

export type SendResult =
  | { duplicate: true; message: Message }
  | { duplicate: false; message: Message; traceId: string; reply: Promise<ReplyResult> };

export type SendRequest = {
  chatId: string; content: string; messageId?: string; deviceId?: string;
  /** Context to send instead of the stored history (a device's own conversation). */
  context?: Turn[];
  /** Wait for a running reply in the chat to finish instead of answering GENERATION_IN_PROGRESS. */
  waitIfBusy?: boolean;
};

type Needs = {
  requireChat(chatId: string): Promise<Chat>;
  startReply(o: ReplyRequest): { traceId: string; result: Promise<ReplyResult> };
  /** Called with the first exchange of a chat that may want a title. */
  titleLater(chat: Chat, exchange: [Message, Message]): void;
};

/** Questions in, replies started. */
export function sendCommands(ctx: ChatContext, needs: Needs) {
  const { store, bus, replies, options, log } = ctx;

  /**
   * Stores a question once (by id) and shows it to the chat's other watchers; false when that
   * id was stored before. The one path for browsers and devices, answered or not.
   */
  async function storeQuestion(chat: Chat, o: { content: string; messageId?: string; deviceId?: string; origin?: string }) {
    const message: Message = {
      id: o.messageId ?? crypto.randomUUID(), chat_id: chat.id, role: "user", content: o.content, created_at: nowIso(),
      ...(o.deviceId ? { device_id: o.deviceId } : {}),
    };
    if (!(await store.addMessage(message))) return { stored: false as const, message };
    await touch(chat, message.created_at);
    bus.publish({ type: "user_message", message, origin: o.origin });
    return { stored: true as const, message };
  }

  /**
   * Stores a question, then starts the model's reply, which streams on the bus. The question is
   * durable before the model is asked. A message id seen before in this chat is not stored or
   * answered again (a resend after a reconnect, a redelivered device event).
   */
  async function send(o: SendRequest, client?: ChatClient): Promise<SendResult> {
    // Watch first: the reply may start streaming before send returns.
    const unwatch = client?.watch(o.chatId);
    try {
      return await sendOnce(o, client?.id);
    } catch (e) {
      if (e instanceof ChatError && e.code === "CHAT_NOT_FOUND") unwatch?.();
      throw e;
    }
  }

  async function sendOnce(o: SendRequest, origin: string | undefined): Promise<SendResult> {
    const release = await reserve(o);
    if (typeof release !== "function") return release;
    try {
      const chat = await needs.requireChat(o.chatId);
      // Everything the prompt needs is read before the question is stored: once it is stored,
      // nothing may fail before the reply starts, or a resend with the same id would only be a duplicate.
      const [earlier, settings] = await Promise.all([
        o.context ? [] : store.listMessages(chat.id, { limit: options.historyMaxMessages }),
        getSettingsOf(store),
      ]);
      const q = await storeQuestion(chat, { content: o.content, messageId: o.messageId, deviceId: o.deviceId, origin });
      if (!q.stored) return { duplicate: true, message: q.message };

      const history = o.context
        ? [...o.context, { role: "user" as const, content: o.content }]
        : [...earlier, q.message].slice(-options.historyMaxMessages);
      const prompt = buildPrompt(settings.systemPrompt ?? options.systemPrompt, history, options.historyChars);
      const { traceId, result } = needs.startReply({
        chatId: chat.id, prompt, temperature: settings.temperature, model: settings.model, deviceId: o.deviceId,
      });
      if (options.autoTitle) {
        void result.then((r) => {
          if (r.message && !r.status) needs.titleLater(chat, [q.message, r.message]);
        });
      }
      return { duplicate: false, message: q.message, traceId, reply: result };
    } finally {
      release();
    }
  }

  /** The chat's generation slot, or the answer to give instead of taking it. */
  async function reserve(o: SendRequest): Promise<(() => void) | SendResult> {
    for (let attempt = 0; ; attempt++) {
      try {
        return replies.reserve(o.chatId);
      } catch (e) {
        if (!(e instanceof ChatError && e.code === "GENERATION_IN_PROGRESS")) throw e;
        // A resend of a question whose reply is still streaming is a duplicate, not a conflict.
        const known = o.messageId && (await store.listMessages(o.chatId, { limit: 20 })).find((m) => m.id === o.messageId);
        if (known) return { duplicate: true, message: known };
        // A device's question waits its turn behind a browser's reply.
        if (!o.waitIfBusy || attempt >= 5 || !(await replies.whenFree(o.chatId))) throw e;
      }
    }
  }

  // Activity moves a chat to the top of the list; losing that is not worth failing the send.
  async function touch(chat: Chat, at: string) {
    try {
      await store.updateChat({ ...chat, updated_at: at });
    } catch (e) {
      log.warn("could not update chat activity time", { chatId: chat.id, error: e });
    }
  }

  return { send, storeQuestion };
}
