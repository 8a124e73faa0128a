import { ModelError, type Turn } from "../model/model";
import type { Message, MessageStatus } from "../records";
import { nowIso } from "./clock";
import type { ChatClient, ChatContext } from "./context";
import { ChatError, describeFailure } from "./errors";
import { isStopReason, type Generation, type StopReason } from "./replies";

export type ReplyResult = { message?: Message; status?: MessageStatus; error?: { code: string; message: string } };

export type ReplyRequest = { chatId: string; prompt: Turn[]; temperature?: number; model?: string; deviceId?: string };

/** What RESUME answers: the rest of a live reply, or the stored one when it has finished. */
export type Resumed =
  | { live: true; chatId: string; traceId: string; content: string; seq: number }
  | { live: false; message: Message };

/** Generating, stopping and resuming the model's replies. */
export function replyCommands(ctx: ChatContext, requireChat: (chatId: string) => Promise<unknown>) {
  const { replies, store } = ctx;

  /**
   * Streams the model's reply into a chat: every delta goes out on the bus as it arrives, and the
   * whole reply is stored before the end event, so whoever sees `end` can reload it. A failure keeps
   * the text so far, stored and marked. The caller must hold the chat's slot (replies.reserve).
   */
  function start(o: ReplyRequest) {
    const g: Generation = {
      chatId: o.chatId, traceId: crypto.randomUUID(), createdAt: nowIso(), chunks: [],
      controller: new AbortController(), done: Promise.resolve(),
    };
    replies.add(g);
    const result = run(ctx, g, o).finally(() => replies.remove(g));
    g.done = result.then(() => {});
    return { traceId: g.traceId, result };
  }

  /**
   * Stops a reply: the model request is aborted upstream, the text so far is stored marked
   * `stopped`, and the stream ends with reason "stopped". Resolves once that is done.
   */
  async function stop(o: { chatId?: string; traceId?: string }) {
    const g = o.traceId ? replies.byTrace(o.traceId) : o.chatId ? replies.get(o.chatId) : undefined;
    if (!g || (o.chatId && g.chatId !== o.chatId)) {
      throw new ChatError("NO_GENERATION", "no reply is being generated there", { chatId: o.chatId, traceId: o.traceId });
    }
    g.controller.abort({ stop: "stopped" } satisfies StopReason);
    await g.done;
    return { chatId: g.chatId, traceId: g.traceId };
  }

  /** The rest of a reply after `fromSeq`, and its live frames from then on for `client`. */
  async function resume(o: { chatId: string; traceId: string; fromSeq: number }, client: ChatClient): Promise<Resumed> {
    const g = replies.get(o.chatId);
    if (g?.traceId === o.traceId) {
      // Synchronous from the check to the return: later deltas follow it in order.
      client.watch(o.chatId);
      return { live: true, chatId: o.chatId, traceId: o.traceId, content: g.chunks.slice(o.fromSeq).join(""), seq: g.chunks.length };
    }
    // Finished (or finishing) already: the stored reply is the whole text. Only when it is not
    // there does the chat need looking up, to answer CHAT_NOT_FOUND rather than GENERATION_NOT_FOUND.
    const recent = await store.listMessages(o.chatId, { limit: 50 });
    const done = recent.find((m) => m.id === o.traceId && m.role === "assistant");
    if (!done) {
      await requireChat(o.chatId);
      throw new ChatError("GENERATION_NOT_FOUND", "no such reply in this chat", { chatId: o.chatId, traceId: o.traceId });
    }
    client.watch(o.chatId);
    return { live: false, message: done };
  }

  return { start, stop, resume };
}

async function run(ctx: ChatContext, g: Generation, o: ReplyRequest): Promise<ReplyResult> {
  const { bus, log } = ctx;
  const idle = idleWatchdog(g.controller, ctx.options.modelIdleTimeoutMs);
  let status: MessageStatus | undefined;
  let error: ReplyResult["error"];
  try {
    for await (const delta of ctx.model.stream(o.prompt, { signal: g.controller.signal, temperature: o.temperature, model: o.model })) {
      idle.reset();
      g.chunks.push(delta);
      bus.publish({ type: "reply_delta", chatId: g.chatId, traceId: g.traceId, seq: g.chunks.length, content: delta });
    }
    // The openai SDK ends the iteration quietly when aborted; an abort is never a finished reply.
    g.controller.signal.throwIfAborted();
  } catch (e) {
    const reason = g.controller.signal.aborted ? g.controller.signal.reason : e;
    if (isStopReason(reason)) {
      status = reason.stop;
    } else {
      status = "incomplete";
      const f = describeFailure(reason);
      error = f.code === "MODEL_ERROR" || f.code === "MODEL_TIMEOUT"
        ? { code: f.code, message: f.message }
        : { code: "MODEL_ERROR", message: "the model failed while replying" };
      log.warn("model reply failed", { chatId: g.chatId, traceId: g.traceId, code: error.code, error: reason });
    }
  } finally {
    idle.stop();
  }

  const message: Message = {
    id: g.traceId, chat_id: g.chatId, role: "assistant", content: g.chunks.join(""), created_at: g.createdAt,
    ...(status ? { status } : {}), ...(o.deviceId ? { device_id: o.deviceId } : {}),
  };
  let stored: Message | undefined;
  // An empty failed reply is noise in the history; anything with text is kept.
  if (message.content || !status) {
    try {
      await ctx.store.putMessage(message);
      stored = message;
    } catch (e) {
      log.error("could not store the reply", { chatId: g.chatId, traceId: g.traceId, error: e });
      const f = describeFailure(e, "the reply could not be saved");
      error ??= f.code === "STORE_UNAVAILABLE"
        ? { code: f.code, message: "the reply could not be saved: the store is unavailable" }
        : { code: "INTERNAL_ERROR", message: "the reply could not be saved" };
    }
  }
  bus.publish({
    type: "reply_end", chatId: g.chatId, traceId: g.traceId, seq: g.chunks.length + 1,
    ...(status ? { status } : {}), ...(error ? { error } : {}),
  });
  return { message: stored, status, error };
}

function idleWatchdog(controller: AbortController, ms: number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const reset = () => {
    clearTimeout(timer);
    timer = setTimeout(() => controller.abort(new ModelError("MODEL_TIMEOUT", `the model sent nothing for ${ms} ms`)), ms);
  };
  reset();
  return { reset, stop: () => clearTimeout(timer) };
}
