import { ModelError, type Turn } from "../model/model";
import { isStoreUnavailable } from "../store/errors";
import { nowIso } from "./clock";
import type { ChatDeps } from "./deps";
import { isStopReason, type Generation } from "./inflight";
import type { Message, MessageStatus } from "./schema";

export type ReplyResult = { message?: Message; status?: MessageStatus; error?: { code: string; message: string } };

/**
 * Streams the model's reply into a chat: every delta goes out on the bus as it arrives, and the
 * whole reply is stored before the end event, so whoever sees `end` can reload it. A failure keeps
 * the text so far, stored and marked. The caller must hold the chat's slot (inflight.reserve).
 */
export function startReply(deps: ChatDeps, o: { chatId: string; prompt: Turn[]; temperature?: number; deviceId?: string }) {
  const g: Generation = {
    chatId: o.chatId,
    traceId: crypto.randomUUID(),
    createdAt: nowIso(),
    content: "",
    seq: 0,
    controller: new AbortController(),
    done: Promise.resolve(),
  };
  deps.inflight.add(g);
  const result = run(deps, g, o).finally(() => deps.inflight.remove(g));
  g.done = result.then(() => {});
  return { traceId: g.traceId, generation: g, result };
}

async function run(deps: ChatDeps, g: Generation, o: { prompt: Turn[]; temperature?: number; deviceId?: string }): Promise<ReplyResult> {
  const { bus, log } = deps;
  const idle = idleWatchdog(g.controller, deps.options.modelIdleTimeoutMs);
  let status: MessageStatus | undefined;
  let error: ReplyResult["error"];
  try {
    for await (const delta of deps.model.stream(o.prompt, { signal: g.controller.signal, temperature: o.temperature })) {
      idle.reset();
      g.content += delta;
      g.seq += 1;
      bus.publish({ type: "reply_delta", chatId: g.chatId, traceId: g.traceId, seq: g.seq, content: delta });
    }
    // The openai SDK ends the iteration quietly when aborted; an abort is never a finished reply.
    g.controller.signal.throwIfAborted();
  } catch (e) {
    const reason = g.controller.signal.aborted ? g.controller.signal.reason : e;
    if (isStopReason(reason)) {
      status = reason.stop;
    } else {
      status = "incomplete";
      error = reason instanceof ModelError
        ? { code: reason.code, message: reason.message }
        : { code: "MODEL_ERROR", message: "the model failed while replying" };
      log.warn("model reply failed", { chatId: g.chatId, traceId: g.traceId, code: error.code, error: reason });
    }
  } finally {
    idle.stop();
  }

  const message: Message = {
    id: g.traceId, chat_id: g.chatId, role: "assistant", content: g.content, created_at: g.createdAt,
    ...(status ? { status } : {}), ...(o.deviceId ? { device_id: o.deviceId } : {}),
  };
  let stored: Message | undefined;
  // An empty failed reply is noise in the history; anything with text is kept.
  if (message.content || !status) {
    try {
      await deps.store.putMessage(message);
      stored = message;
    } catch (e) {
      log.error("could not store the reply", { chatId: g.chatId, traceId: g.traceId, error: e });
      error ??= isStoreUnavailable(e)
        ? { code: "STORE_UNAVAILABLE", message: "the reply could not be saved: the store is unavailable" }
        : { code: "INTERNAL_ERROR", message: "the reply could not be saved" };
    }
  }
  bus.publish({
    type: "reply_end", chatId: g.chatId, traceId: g.traceId, seq: g.seq + 1,
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
