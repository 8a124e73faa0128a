import type { Chat } from "../records";
import { nowIso } from "./clock";
import type { ChatContext } from "./context";
import { chatNotFound } from "./errors";
import { DEFAULT_CHAT_NAME, type KnownChats } from "./known-chats";

/** Creating, listing, renaming and deleting chats, and checking a list of ids is the owner's. */
export function chatCommands(
  ctx: ChatContext,
  known: KnownChats,
  stopElsewhere: (r: { chatId: string; traceId: string }) => Promise<boolean>,
) {
  const { store, bus, replies, live } = ctx;

  /** `id` and `announce: false`: a temporary chat (src/chat/temporary.ts), marked before it exists and told to nobody else. */
  async function createChat(o: {
    owner: string;
    name?: string;
    deviceId?: string;
    origin?: string;
    id?: string;
    announce?: boolean;
  }): Promise<Chat> {
    const t = nowIso();
    const chat: Chat = {
      id: o.id ?? crypto.randomUUID(),
      name: o.name ?? DEFAULT_CHAT_NAME,
      active: true,
      created_at: t,
      updated_at: t,
      ...(o.deviceId ? { device_id: o.deviceId } : {}),
    };
    await store.createChat(o.owner, chat);
    known.remember(chat.id, o.owner);
    known.noteName(chat);
    if (o.announce !== false) bus.publish({ type: "chat_created", owner: o.owner, chat, origin: o.origin });
    return chat;
  }

  return {
    listChats: (owner: string, o: { limit: number; cursor?: string }) => store.listChats(owner, o),

    createChat,

    async deleteChat(o: { owner: string; chatId: string; origin?: string }): Promise<void> {
      // Only the owner's: nothing below may touch another owner's replies.
      await known.requireChat(o.owner, o.chatId);
      // Delete wins over a racing send. The running reply is stopped first, so its final write
      // lands before the messages go; one that registers in the next seconds is stopped at once.
      // Then the chat record, then its messages: a send that checks for the chat after storing
      // its question sees it gone and removes what it wrote.
      await replies.cancel(o.chatId);
      try {
        const elsewhere = live.get(o.chatId);
        if (elsewhere && !live.isLocal(elsewhere.traceId)) await stopElsewhere(elsewhere);
        if (!(await store.deleteChat(o.owner, o.chatId))) throw chatNotFound(o.chatId);
      } catch (e) {
        // Not deleted (the store failed, or there was no such chat): replies may start in it again.
        replies.uncancel(o.chatId);
        throw e;
      }
      known.forget(o.chatId);
      bus.publish({ type: "chat_deleted", owner: o.owner, chatId: o.chatId, origin: o.origin });
    },

    async renameChat(o: { owner: string; chatId: string; name: string; origin?: string }): Promise<Chat> {
      // A partial update: a message's activity time landing meanwhile is kept, and vice versa.
      const chat = await store.patchChat(o.owner, o.chatId, { name: o.name, updated_at: nowIso() });
      if (!chat) throw chatNotFound(o.chatId);
      bus.publish({ type: "chat_updated", owner: o.owner, chat, origin: o.origin });
      return chat;
    },

    /** CHAT_NOT_FOUND for the first id that names none of the owner's chats (WATCH checks its whole list first, in one store read). */
    requireChats: (owner: string, chatIds: string[]) => known.requireAllOwned(owner, chatIds),
  };
}
