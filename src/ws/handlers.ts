import * as v from "valibot";
import { chatHistory, createChat, deleteChat, listChats, renameChat, requireChat } from "../chat/chats";
import { stopReply } from "../chat/reply";
import type { Message } from "../records";
import { getSettings, updateSettings } from "../chat/settings";
import type { ChatDeps } from "../chat/deps";
import { AppError } from "../chat/errors";
import { sendMessage } from "../chat/send";
import type { Connections, Socket } from "./connections";
import { frames, inbound, type Args, type InboundType, type StreamingMessage } from "./protocol";

export type HandlerContext = {
  ws: Socket;
  deps: ChatDeps;
  conns: Connections;
  limits: { maxMessageChars: number; maxGenerationsPerConnection: number; chatPageSize: number };
  requestId?: string;
  /** Sends to this socket only, echoing the frame's requestId. */
  reply(frame: object): void;
};

type Handler<T extends InboundType> = { schema: (typeof inbound)[T]; run(ctx: HandlerContext, args: Args<T>): Promise<void> };
const handler = <T extends InboundType>(type: T, run: Handler<T>["run"]): Handler<T> => ({ schema: inbound[type], run });

/** One entry per inbound frame type: the schema that checks it and the use-case it calls. */
export const handlers: { [T in InboundType]: Handler<T> } = {
  GET_CHATS: handler("GET_CHATS", async (ctx, a) => {
    const page = await listChats(ctx.deps, { limit: a.limit ?? ctx.limits.chatPageSize, cursor: a.cursor ?? undefined });
    ctx.reply(frames.chatList(page.items, page.cursor));
  }),

  CREATE_CHAT: handler("CREATE_CHAT", async (ctx, a) => {
    const chat = await createChat(ctx.deps, { name: a.name, origin: ctx.ws.data.id });
    ctx.reply(frames.newChat(chat));
  }),

  GET_CHAT_HISTORY: handler("GET_CHAT_HISTORY", async (ctx, a) => {
    const query = { chatId: a.chatId, limit: a.limit ?? undefined, before: a.before ?? undefined };
    const pending = ctx.deps.inflight.get(a.chatId);
    let { messages, hasMore } = await chatHistory(ctx.deps, query);
    if (pending && ctx.deps.inflight.get(a.chatId) !== pending && !a.before && !messages.some((m) => m.id === pending.traceId)) {
      // The reply finished while we read: it is stored now, and its live end went by unseen.
      ({ messages, hasMore } = await chatHistory(ctx.deps, query));
    }
    // From here to the reply nothing awaits: the partial reply and the live deltas after it
    // meet exactly, with no gap and no repeat.
    ctx.conns.watch(ctx.ws, a.chatId);
    const g = a.before ? undefined : ctx.deps.inflight.get(a.chatId);
    const all: (Message | StreamingMessage)[] = messages;
    if (g && !messages.some((m) => m.id === g.traceId)) {
      all.push({ id: g.traceId, chat_id: g.chatId, role: "assistant", content: g.chunks.join(""), created_at: g.createdAt, streaming: true, seq: g.chunks.length });
    }
    ctx.reply(frames.chatHistory(a.chatId, all, hasMore));
  }),

  DELETE_CHAT: handler("DELETE_CHAT", async (ctx, a) => {
    await deleteChat(ctx.deps, { chatId: a.chatId, origin: ctx.ws.data.id });
    ctx.reply(frames.chatDeleted(a.chatId));
  }),

  RENAME_CHAT: handler("RENAME_CHAT", async (ctx, a) => {
    const chat = await renameChat(ctx.deps, { chatId: a.chatId, name: a.name, origin: ctx.ws.data.id });
    ctx.reply(frames.chatUpdated(chat));
  }),

  STOP_GENERATION: handler("STOP_GENERATION", async (ctx, a) => {
    const g = await stopReply(ctx.deps, { chatId: a.chatId ?? undefined, traceId: a.traceId ?? undefined });
    ctx.reply(frames.generationStopped(g.chatId, g.traceId));
  }),

  RESUME: handler("RESUME", async (ctx, a) => {
    const g = ctx.deps.inflight.get(a.chatId);
    if (g?.traceId === a.traceId) {
      // Synchronous from the check to the catch-up frame: later deltas follow it in order.
      ctx.conns.watch(ctx.ws, a.chatId);
      ctx.reply(frames.catchUp(a.chatId, a.traceId, g.chunks.slice(a.fromSeq).join(""), g.chunks.length));
      return;
    }
    // Finished (or finishing) already: the stored reply is the whole text. Only when it is not
    // there does the chat need looking up, to answer CHAT_NOT_FOUND rather than GENERATION_NOT_FOUND.
    const recent = await ctx.deps.store.listMessages(a.chatId, { limit: 50 });
    const done = recent.find((m) => m.id === a.traceId && m.role === "assistant");
    if (!done) {
      await requireChat(ctx.deps, a.chatId);
      throw new AppError("GENERATION_NOT_FOUND", "no such reply in this chat", { chatId: a.chatId, traceId: a.traceId });
    }
    ctx.conns.watch(ctx.ws, a.chatId);
    ctx.reply(frames.finished(done));
  }),

  GET_SETTINGS: handler("GET_SETTINGS", async (ctx) => {
    ctx.reply(frames.settings(await getSettings(ctx.deps), { systemPrompt: ctx.deps.options.systemPrompt, model: ctx.deps.model.name }));
  }),

  UPDATE_SETTINGS: handler("UPDATE_SETTINGS", async (ctx, a) => {
    ctx.reply(frames.settings(await updateSettings(ctx.deps, a), { systemPrompt: ctx.deps.options.systemPrompt, model: ctx.deps.model.name }));
  }),

  SEND_MESSAGE: handler("SEND_MESSAGE", async (ctx, a) => {
    const { ws, limits } = ctx;
    if (a.content.length > limits.maxMessageChars) {
      throw new AppError("MESSAGE_TOO_LONG", `content must be at most ${limits.maxMessageChars} characters`, { limit: limits.maxMessageChars });
    }
    if (ws.data.generations >= limits.maxGenerationsPerConnection) {
      throw new AppError("TOO_MANY_GENERATIONS", `at most ${limits.maxGenerationsPerConnection} replies may stream to one connection at once`, { retryAfterMs: 1000 });
    }
    const allowed = ws.data.sends(Date.now());
    if (!allowed.ok) {
      throw new AppError("RATE_LIMITED", "too many messages; slow down", { retryAfterMs: allowed.retryAfterMs });
    }
    // Watch first: the reply may start streaming before sendMessage returns.
    const wasWatching = ws.data.watching.has(a.chatId);
    ctx.conns.watch(ws, a.chatId);
    let result;
    try {
      result = await sendMessage(ctx.deps, { chatId: a.chatId, content: a.content, messageId: a.messageId, origin: ws.data.id });
    } catch (e) {
      if (!wasWatching && e instanceof AppError && e.code === "CHAT_NOT_FOUND") ctx.conns.unwatch(ws, a.chatId);
      throw e;
    }
    if (result.duplicate) {
      ctx.reply(frames.messageAccepted({ chatId: a.chatId, messageId: result.message.id, duplicate: true }));
      return;
    }
    if (ctx.requestId) {
      ctx.reply(frames.messageAccepted({ chatId: a.chatId, messageId: result.message.id, traceId: result.traceId, duplicate: false }));
    }
    ws.data.generations += 1;
    void result.reply.finally(() => (ws.data.generations -= 1));
  }),
};

export const isInboundType = (t: string): t is InboundType => Object.hasOwn(handlers, t);

export function parseArgs<T extends InboundType>(type: T, raw: Record<string, unknown>) {
  return v.safeParse(handlers[type].schema, raw);
}
