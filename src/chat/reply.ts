import { ModelError, type Turn } from "../model/model";
import { isStoreUnavailable } from "../store/errors";
import { nowIso } from "./clock";
import type { ChatDeps } from "./deps";
import { AppError } from "./errors";
import { isStopReason, type Generation, type StopReason } from "./inflight";
import type { Message, MessageStatus } from "../records";

export type ReplyResult = { message?: Message; status?: MessageStatus; error?: { code: string; message: string } };

type ReplyRequest = { chatId: string; prompt: Turn[]; temperature?: number; model?: string; deviceId?: string };

/**
 * Streams the model's reply into a chat: every delta goes out on the bus as it arrives, and the
 * whole reply is stored before the end event, so whoever sees `end` can reload it. A failure keeps
 * the text so far, stored and marked. The caller must hold the chat's slot (inflight.reserve).
 */
export function startReply(deps: ChatDeps, o: ReplyRequest) {
  const g: Generation = {
    chatId: o.chatId,
    traceId: crypto.randomUUID(),
    createdAt: nowIso(),
    chunks: [],
    controller: new AbortController(),
    done: Promise.resolve(),
  };
  deps.inflight.add(g);
  const result = run(deps, g, o).finally(() => deps.inflight.remove(g));
  g.done = result.then(() => {});
  return { traceId: g.traceId, result };
}

async function run(deps: ChatDeps, g: Generation, o: ReplyRequest): Promise<ReplyResult> {
  const { bus, log } = deps;
  const idle = idleWatchdog(g.controller, deps.options.modelIdleTimeoutMs);
  let status: MessageStatus | undefined;
  let error: ReplyResult["error"];
  try {
    for await (const delta of deps.model.stream(o.prompt, { signal: g.controller.signal, temperature: o.temperature, model: o.model })) {
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
      error = reason instanceof ModelError
        ? { code: reason.code, message: reason.message }
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
    type: "reply_end", chatId: g.chatId, traceId: g.traceId, seq: g.chunks.length + 1,
    ...(status ? { status } : {}), ...(error ? { error } : {}),
  });
  return { message: stored, status, error };
}

/**
 * Stops a reply: the model request is aborted upstream, the text so far is stored marked
 * `stopped`, and the stream ends with reason "stopped". Resolves once that is done.
 */
export async function stopReply(deps: Pick<ChatDeps, "inflight">, o: { chatId?: string; traceId?: string }) {
  const g = o.traceId ? deps.inflight.byTrace(o.traceId) : o.chatId ? deps.inflight.get(o.chatId) : undefined;
  if (!g || (o.chatId && g.chatId !== o.chatId)) {
    throw new AppError("NO_GENERATION", "no reply is being generated there", { chatId: o.chatId, traceId: o.traceId });
  }
  g.controller.abort({ stop: "stopped" } satisfies StopReason);
  await g.done;
  return g;
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
