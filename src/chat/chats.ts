import type { Chat, Message } from "../records";
import { nowIso } from "./clock";
import type { ChatClient, ChatContext } from "./context";
import { chatNotFound } from "./errors";

export const DEFAULT_CHAT_NAME = "New Chat";

/** An assistant message still being generated, as a history request shows it. */
export type StreamingMessage = Message & { streaming: true; seq: number };

/** Creating, listing, reading, renaming and deleting chats. */
export function chatCommands(ctx: ChatContext) {
  const { store, bus, replies, options } = ctx;

  async function requireChat(chatId: string): Promise<Chat> {
    const chat = await store.getChat(chatId);
    if (!chat) throw chatNotFound(chatId);
    return chat;
  }

  /**
   * Oldest first. Without a limit, the whole history up to the configured cap. `hasMore` says
   * older messages exist: ask again with `before` = the oldest one's created_at.
   */
  async function storedHistory(o: { chatId: string; limit?: number; before?: string }): Promise<{ messages: Message[]; hasMore: boolean }> {
    const limit = Math.min(o.limit ?? options.historyMaxMessages, options.historyMaxMessages);
    const page = await store.listMessages(o.chatId, { limit: limit + 1, before: o.before });
    // Messages live only in a chat that exists (deleteChat removes them first): only an empty page
    // needs the chat looked up, to tell "no messages yet" from "no such chat".
    if (page.length === 0) await requireChat(o.chatId);
    return page.length > limit ? { messages: page.slice(1), hasMore: true } : { messages: page, hasMore: false };
  }

  async function createChat(o: { name?: string; deviceId?: string; origin?: string }): Promise<Chat> {
    const t = nowIso();
    const chat: Chat = {
      id: crypto.randomUUID(), name: o.name ?? DEFAULT_CHAT_NAME, active: true, created_at: t, updated_at: t,
      ...(o.deviceId ? { device_id: o.deviceId } : {}),
    };
    await store.createChat(chat);
    bus.publish({ type: "chat_created", chat, origin: o.origin });
    return chat;
  }

  return {
    requireChat,

    listChats: (o: { limit: number; cursor?: string }) => store.listChats(o),

    createChat,

    /**
     * A page of history, and from then on the chat's live frames for `client`. A reply still
     * streaming comes last, as its text so far (`streaming`, `seq`); the live deltas after it
     * meet it exactly, with no gap and no repeat.
     */
    async history(o: { chatId: string; limit?: number; before?: string }, client: ChatClient) {
      const pending = replies.get(o.chatId);
      let { messages, hasMore } = await storedHistory(o);
      if (pending && replies.get(o.chatId) !== pending && !o.before && !messages.some((m) => m.id === pending.traceId)) {
        // The reply finished while we read: it is stored now, and its live end went by unseen.
        ({ messages, hasMore } = await storedHistory(o));
      }
      // From here to the return nothing awaits.
      client.watch(o.chatId);
      const g = o.before ? undefined : replies.get(o.chatId);
      const all: (Message | StreamingMessage)[] = messages;
      if (g && !messages.some((m) => m.id === g.traceId)) {
        all.push({ id: g.traceId, chat_id: g.chatId, role: "assistant", content: g.chunks.join(""), created_at: g.createdAt, streaming: true, seq: g.chunks.length });
      }
      return { chatId: o.chatId, messages: all, hasMore };
    },

    async deleteChat(o: { chatId: string; origin?: string }): Promise<void> {
      // A reply still streaming into a deleted chat would write an orphan message: stop it first.
      const g = replies.get(o.chatId);
      if (g) {
        g.controller.abort({ stop: "stopped" });
        await g.done;
      }
      if (!(await store.deleteChat(o.chatId))) throw chatNotFound(o.chatId);
      bus.publish({ type: "chat_deleted", chatId: o.chatId, origin: o.origin });
    },

    async renameChat(o: { chatId: string; name: string; origin?: string }): Promise<Chat> {
      const chat = { ...(await requireChat(o.chatId)), name: o.name, updated_at: nowIso() };
      if (!(await store.updateChat(chat))) throw chatNotFound(o.chatId);
      bus.publish({ type: "chat_updated", chat, origin: o.origin });
      return chat;
    },

    /** The active chat bound to a device, created (and announced to every browser) on its first message. */
    async deviceChat(deviceId: string): Promise<Chat> {
      return (await store.findDeviceChat(deviceId)) ?? createChat({ name: deviceId, deviceId });
    },

    /** CHAT_NOT_FOUND for the first id that names no chat (WATCH checks its whole list first). */
    async requireChats(chatIds: string[]): Promise<void> {
      const found = await Promise.all(chatIds.map((id) => store.getChat(id)));
      const missing = chatIds.find((_, i) => !found[i]);
      if (missing) throw chatNotFound(missing);
    },
  };
}
