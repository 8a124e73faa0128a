import { decodeCursor } from "../store/cursor";
import { nowIso } from "./clock";
import type { ChatDeps } from "./deps";
import { AppError } from "./errors";
import type { Chat, Message } from "../records";

export const DEFAULT_CHAT_NAME = "New Chat";

type Deps = Pick<ChatDeps, "store" | "bus" | "inflight" | "options">;

export async function listChats(deps: Deps, o: { limit: number; cursor?: string }) {
  // Both stores issue keyset cursors of three parts; anything else was not issued by us.
  if (o.cursor !== undefined && !decodeCursor(o.cursor, 3)) {
    throw new AppError("INVALID_FRAME", "cursor: not a cursor this server issued; omit it to start from the first page");
  }
  return deps.store.listChats(o);
}

export async function createChat(deps: Deps, o: { name?: string; deviceId?: string; origin?: string }): Promise<Chat> {
  const t = nowIso();
  const chat: Chat = {
    id: crypto.randomUUID(), name: o.name ?? DEFAULT_CHAT_NAME, active: true, created_at: t, updated_at: t,
    ...(o.deviceId ? { device_id: o.deviceId } : {}),
  };
  await deps.store.createChat(chat);
  deps.bus.publish({ type: "chat_created", chat, origin: o.origin });
  return chat;
}

export async function requireChat(deps: Pick<ChatDeps, "store">, chatId: string): Promise<Chat> {
  const chat = await deps.store.getChat(chatId);
  if (!chat) throw new AppError("CHAT_NOT_FOUND", `there is no chat with id ${chatId}`, { chatId });
  return chat;
}

/**
 * Oldest first. Without a limit, the whole history up to the configured cap. `hasMore` says
 * older messages exist: ask again with `before` = the oldest one's created_at.
 */
export async function chatHistory(deps: Deps, o: { chatId: string; limit?: number; before?: string }): Promise<{ messages: Message[]; hasMore: boolean }> {
  const limit = Math.min(o.limit ?? deps.options.historyMaxMessages, deps.options.historyMaxMessages);
  const page = await deps.store.listMessages(o.chatId, { limit: limit + 1, before: o.before });
  // Messages live only in a chat that exists (deleteChat removes them first): only an empty page
  // needs the chat looked up, to tell "no messages yet" from "no such chat".
  if (page.length === 0) await requireChat(deps, o.chatId);
  return page.length > limit ? { messages: page.slice(1), hasMore: true } : { messages: page, hasMore: false };
}

export async function deleteChat(deps: Deps, o: { chatId: string; origin?: string }): Promise<void> {
  // A reply still streaming into a deleted chat would write an orphan message: stop it first.
  const g = deps.inflight.get(o.chatId);
  if (g) {
    g.controller.abort({ stop: "stopped" });
    await g.done;
  }
  if (!(await deps.store.deleteChat(o.chatId))) {
    throw new AppError("CHAT_NOT_FOUND", `there is no chat with id ${o.chatId}`, { chatId: o.chatId });
  }
  deps.bus.publish({ type: "chat_deleted", chatId: o.chatId, origin: o.origin });
}

export async function renameChat(deps: Deps, o: { chatId: string; name: string; origin?: string }): Promise<Chat> {
  const chat = { ...(await requireChat(deps, o.chatId)), name: o.name, updated_at: nowIso() };
  if (!(await deps.store.updateChat(chat))) {
    throw new AppError("CHAT_NOT_FOUND", `there is no chat with id ${o.chatId}`, { chatId: o.chatId });
  }
  deps.bus.publish({ type: "chat_updated", chat, origin: o.origin });
  return chat;
}
