import { ModelError, type Turn, type UsageTag } from "../model/model";
import type { Message, MessageStatus } from "../records";
import { nowIso } from "./clock";
import type { ChatClient, ChatContext } from "./context";
import type { ToolCallEvent } from "./events";
import { ChatError, describeFailure } from "./errors";
import { isStopReason, type Generation, type ReplyOutcome, type StopReason } from "./replies";
import { finishedCalls, replyRounds, type ToolPrefs } from "./tool-rounds";

export type ReplyResult = ReplyOutcome;

/** What a reply is asked: the question it answers, and the prompt once its turn comes. */
export type ReplyJob = {
  question: Message;
  /** Builds the model's input when the reply starts (after any reply queued before it). */
  prompt(): Promise<{ turns: Turn[]; temperature?: number; model?: string; tools?: ToolPrefs }>;
  deviceId?: string;
  /** Whose reply this is and why, for its usage record (src/chat/usage.ts). */
  usage?: Pick<UsageTag, "userId" | "kind">;
};

/** What RESUME answers: the rest of a live reply, or the stored one when it has finished. */
export type Resumed =
  | { live: true; chatId: string; traceId: string; content: string; seq: number; toolCalls?: ToolCallEvent[] }
  | { live: false; message: Message };

/** Generating, stopping and resuming the model's replies. */
export function replyCommands(ctx: ChatContext, requireOwned: (owner: string, chatId: string) => Promise<void>) {
  const { replies, store, live } = ctx;

  /**
   * Streams the model's reply to a question: every delta goes out on the bus as it arrives, the
   * text so far is checkpointed to the store (status "streaming", with a lease this process renews),
   * and the whole reply is stored before the end event, so whoever sees `end` can reload it. A
   * failure keeps the text so far, stored and marked. Runs in the chat's lane (replies.start).
   */
  const answer = (job: ReplyJob) => (g: Generation) => run(ctx, g, job);
  /**
   * Stops a reply: the model request is aborted upstream, the text so far is stored marked
   * `stopped`, and the stream ends with reason "stopped". Resolves once that is done.
   */
  async function stop(o: { owner: string; chatId?: string; traceId?: string }) {
    // Another user's reply is answered as one that is not there, after the same store read.
    const owns = (chatId: string) =>
      requireOwned(o.owner, chatId).then(
        () => true,
        (e: unknown) => {
          if (e instanceof ChatError && e.code === "CHAT_NOT_FOUND") return false;
          throw e;
        },
      );
    const g = o.traceId ? replies.byTrace(o.traceId) : o.chatId ? replies.get(o.chatId) : undefined;
    if (g && (!o.chatId || g.chatId === o.chatId) && (await owns(g.chatId))) {
      g.controller.abort({ stop: "stopped" } satisfies StopReason);
      await g.done;
      return { chatId: g.chatId, traceId: g.traceId };
    }
    // Generating on another replica: ask it, and answer once its end frame has gone out.
    const r = o.traceId ? live.byTrace(o.traceId) : o.chatId ? live.get(o.chatId) : undefined;
    if (!r || (o.chatId && r.chatId !== o.chatId) || !(await owns(r.chatId))) {
      if (!r && !g) await owns(o.chatId ?? o.traceId ?? "");
      throw new ChatError("NO_GENERATION", "no reply is being generated there", { chatId: o.chatId, traceId: o.traceId });
    }
    if (!(await stopElsewhere(r))) {
      throw new ChatError("NO_GENERATION", "the replica generating that reply did not answer; it is finalised when its lease lapses", {
        chatId: r.chatId,
        traceId: r.traceId,
      });
    }
    return { chatId: r.chatId, traceId: r.traceId };
  }

  /** Asks whichever replica generates `r` to stop it; true once its end went out. */
  async function stopElsewhere(r: { chatId: string; traceId: string }, ms = 5000): Promise<boolean> {
    ctx.bus.publish({ type: "stop_request", chatId: r.chatId, traceId: r.traceId });
    return live.waitEnd(r.traceId, ms);
  }

  /** The rest of a reply after `fromSeq`, and its live frames from then on for `client`. */
  async function resume(o: { chatId: string; traceId: string; fromSeq: number }, client: ChatClient): Promise<Resumed> {
    await requireOwned(client.owner, o.chatId);
    await live.ready(o.chatId);
    const g = live.get(o.chatId);
    if (g?.traceId === o.traceId) {
      // Synchronous from the check to the return: later deltas follow it in order.
      client.watch(o.chatId);
      return {
        live: true,
        chatId: o.chatId,
        traceId: o.traceId,
        content: g.chunks.slice(o.fromSeq).join(""),
        seq: g.chunks.length,
        ...(g.toolCalls?.length ? { toolCalls: [...g.toolCalls] } : {}),
      };
    }
    // Finished (or finishing) already: the stored reply is the whole text.
    const recent = await store.listMessages(o.chatId, { limit: 50 });
    const done = recent.find((m) => m.id === o.traceId && m.role === "assistant");
    if (!done) {
      throw new ChatError("GENERATION_NOT_FOUND", "no such reply in this chat", { chatId: o.chatId, traceId: o.traceId });
    }
    client.watch(o.chatId);
    return { live: false, message: done };
  }

  return { answer, stop, stopElsewhere, resume };
}

async function run(ctx: ChatContext, g: Generation, job: ReplyJob): Promise<ReplyResult> {
  const { bus } = ctx;
  const base: Message = {
    id: g.traceId,
    chat_id: g.chatId,
    role: "assistant",
    content: "",
    created_at: replyTime(job.question),
    parent_id: job.question.id,
    ...(job.deviceId ? { device_id: job.deviceId } : {}),
  };
  g.createdAt = base.created_at;
  // From here every replica mirrors this reply (history and RESUME anywhere).
  ctx.live.attach(g);
  bus.publish({
    type: "reply_start",
    chatId: g.chatId,
    traceId: g.traceId,
    createdAt: g.createdAt,
    questionId: job.question.id,
    ...(job.deviceId ? { deviceId: job.deviceId } : {}),
  });
  // Checkpoints and heartbeats from here to the end: a death at any moment leaves an orphan others finalise.
  const lease = ctx.leases.hold(g, base);
  try {
    return await generate(ctx, g, job, base, lease);
  } finally {
    lease.release();
  }
}

async function generate(
  ctx: ChatContext,
  g: Generation,
  job: ReplyJob,
  base: Message,
  lease: ReturnType<ChatContext["leases"]["hold"]>,
): Promise<ReplyResult> {
  const { bus, log } = ctx;
  let prompt: Awaited<ReturnType<ReplyJob["prompt"]>>;
  try {
    prompt = await job.prompt();
  } catch (e) {
    await lease.stop();
    // Nothing was asked or stored: the question stays unanswered, and a resend of it answers it.
    const f = describeFailure(e, "the reply could not be started");
    if (f.code === "INTERNAL_ERROR") log.error("could not start a reply", { chatId: g.chatId, error: e });
    const error = { code: f.code, message: f.message };
    bus.publish({ type: "reply_end", chatId: g.chatId, traceId: g.traceId, seq: 1, status: "incomplete", error });
    return { status: "incomplete", error };
  }
  const idle = idleWatchdog(g.controller, ctx.options.modelIdleTimeoutMs);
  let status: MessageStatus | undefined;
  let error: ReplyResult["error"];
  try {
    for await (const delta of replyRounds(ctx, g, {
      turns: prompt.turns,
      options: {
        signal: g.controller.signal,
        temperature: prompt.temperature,
        model: prompt.model,
        ...(job.usage ? { usage: { ...job.usage, chatId: g.chatId, messageId: g.traceId } } : {}),
      },
      prefs: prompt.tools,
      busy: idle.hold,
    })) {
      // A stopped reply takes nothing more, even deltas the model had already sent (one read of
      // its stream can hold many).
      if (g.controller.signal.aborted) break;
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
      error =
        f.code === "MODEL_ERROR" || f.code === "MODEL_TIMEOUT" || f.code === "TOO_MANY_GENERATIONS"
          ? { code: f.code, message: f.message }
          : { code: "MODEL_ERROR", message: "the model failed while replying" };
      log.warn("model reply failed", { chatId: g.chatId, traceId: g.traceId, code: error.code, error: reason });
    }
  } finally {
    idle.stop();
    // The last checkpoint lands before the final write, never after it.
    await lease.stop();
  }

  const calls = finishedCalls(g);
  const message: Message = {
    ...base,
    content: g.chunks.join(""),
    ...(status ? { status } : {}),
    ...(calls.length ? { tool_calls: calls } : {}),
  };
  let stored: Message | undefined;
  // An empty failed reply is noise in the history; anything with text or tool calls is kept.
  if (message.content || calls.length || !status) {
    try {
      await ctx.store.putMessage(message);
      stored = message;
    } catch (e) {
      log.error("could not store the reply", { chatId: g.chatId, traceId: g.traceId, error: e });
      const f = describeFailure(e, "the reply could not be saved");
      error ??=
        f.code === "STORE_UNAVAILABLE"
          ? { code: f.code, message: "the reply could not be saved: the store is unavailable" }
          : { code: "INTERNAL_ERROR", message: "the reply could not be saved" };
    }
  }
  bus.publish({
    type: "reply_end",
    chatId: g.chatId,
    traceId: g.traceId,
    seq: g.chunks.length + 1,
    ...(status ? { status } : {}),
    ...(error ? { error } : {}),
    ...(stored ? { message: stored } : {}),
  });
  return { message: stored, status, error };
}

/** A reply sorts after its question even when another replica's clock is behind. */
function replyTime(question: Message): string {
  const after = Date.parse(question.created_at) + 1;
  const now = Date.parse(nowIso());
  return new Date(Math.max(after, now)).toISOString();
}

/**
 * Aborts the reply after `ms` without a delta. A delta only records the time (no timer per delta):
 * the one timer, when it fires early, waits out the rest of the silence.
 */
function idleWatchdog(controller: AbortController, ms: number) {
  let last = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  // While tools run the model is not being waited on (each call has its own TOOL_TIMEOUT_MS).
  let held = false;
  const check = () => {
    const silent = held ? 0 : performance.now() - last;
    if (silent >= ms) controller.abort(new ModelError("MODEL_TIMEOUT", `the model sent nothing for ${ms} ms`));
    else timer = setTimeout(check, ms - silent);
  };
  timer = setTimeout(check, ms);
  return {
    reset: () => void (last = performance.now()),
    hold: (on: boolean) => {
      held = on;
      last = performance.now();
    },
    stop: () => clearTimeout(timer),
  };
}
