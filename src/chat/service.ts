import { chatCommands } from "./chats";
import type { ChatParts } from "./context";
import { replyCommands } from "./reply";
import { createReplies } from "./replies";
import { sendCommands } from "./send";
import { getSettingsOf, updateSettingsOf, type SettingsPatch } from "./settings";
import { titleChat } from "./title";

/**
 * The chat service: every use-case browsers and devices share, built once from its parts.
 * src/ws and src/devices are adapters over this object; nothing else reaches the store or model.
 */
export function createChatService(parts: ChatParts) {
  const replies = createReplies({ max: parts.options.maxGenerations });
  const ctx = { ...parts, replies };
  const chats = chatCommands(ctx);
  const reply = replyCommands(ctx, chats.requireChat);
  const sending = sendCommands(ctx, {
    requireChat: chats.requireChat,
    startReply: reply.start,
    titleLater: (chat, exchange) => void titleChat(ctx, chats.renameChat, chat, exchange),
  });

  return {
    listChats: chats.listChats,
    createChat: chats.createChat,
    history: chats.history,
    deleteChat: chats.deleteChat,
    renameChat: chats.renameChat,
    deviceChat: chats.deviceChat,
    requireChats: chats.requireChats,
    send: sending.send,
    storeQuestion: sending.storeQuestion,
    stop: reply.stop,
    resume: reply.resume,
    getSettings: () => getSettingsOf(parts.store),
    updateSettings: (patch: SettingsPatch) => updateSettingsOf(parts.store, patch),
    /** A device message id, recorded once; false when it was seen before and has not expired. */
    claimOnce: (messageId: string, ttlSeconds: number) => parts.store.claimProcessed(messageId, ttlSeconds),
    /** The server's defaults, shown beside a user's settings. */
    defaults: { systemPrompt: parts.options.systemPrompt, model: parts.model.name },
    /** Replies in flight, for graceful shutdown and tests. */
    replies,
    bus: parts.bus,
  };
}
export type ChatService = ReturnType<typeof createChatService>;
