import type { Logger } from "../../log";
import { ModelError, type Model, type Turn } from "../../model/model";
import type { Message, MessageStatus } from "../../records";
import type { Store } from "../../store/store";
import { nowMs } from "../clock";
import type { ChatOptions } from "../context";
import { describeFailure } from "../errors";
import type { Bus } from "../events";
import type { ReplyLeases } from "../lease";
import type { LiveReplies } from "../live";
import { finishedCalls, replyRounds, type ToolParts, type ToolPrefs } from "../tool-rounds";
import { isStopReason, type Generation, type JobSpec, type ReplyOutcome } from "./replies";

/** What the model is asked for one reply (src/chat/pipeline/prompt.ts builds it). */
export type PromptInput = { turns: Turn[]; temperature?: number; model?: string; tools?: ToolPrefs };

/** What became of a reply; `message` is the stored reply, absent when nothing could be stored. */
export type ReplyResult = ReplyOutcome;

type Parts = {
  store: Store;
  bus: Bus;
  log: Logger;
  model: Model;
  options: ChatOptions;
  tools?: ToolParts;
  live: LiveReplies;
  leases: ReplyLeases;
  /** The service's model-call limit, for a reply's later model calls (tool rounds). */
  admitModelCall(): Promise<void>;
  /** The model's input for a job, read when the reply starts (after any reply queued before it). */
  prompt(spec: JobSpec): Promise<PromptInput>;
};

/**
 * A reply's life once its turn comes, in order: started (mirrored on every replica), prompt built,
 * the model streamed (every text delta through `emit`, checkpointed under the reply's lease), ended
 * (done, stopped, failed or interrupted: stored before the end event, so whoever sees the end can
 * reload it). A failure keeps the text so far, stored and marked. Runs in the chat's lane.
 *
 * Two seams: `emit` is the one place a text delta enters the reply (its chunks, then the bus, where
 * whatever observes a reply's deltas listens), and `rounds` is the one place the model is called
 * (src/chat/tool-rounds.ts makes as many model calls as the reply's tool rounds need).
 */
export function replyGenerator(p: Parts) {
  const { bus, log } = p;
  const roundsParts = { tools: p.tools, model: p.model, bus, options: p.options, lanes: { admitModelCall: p.admitModelCall } };

  return async function generate(spec: JobSpec, g: Generation): Promise<ReplyResult> {
    const base: Message = {
      id: g.traceId,
      chat_id: g.chatId,
      role: "assistant",
      content: "",
      created_at: replyTime(spec.question),
      parent_id: spec.question.id,
      ...(spec.deviceId ? { device_id: spec.deviceId } : {}),
    };
    g.createdAt = base.created_at;
    // From here every replica mirrors this reply (history and RESUME anywhere).
    p.live.attach(g);
    bus.publish({
      type: "reply_start",
      chatId: g.chatId,
      traceId: g.traceId,
      createdAt: g.createdAt,
      questionId: spec.question.id,
      ...(spec.deviceId ? { deviceId: spec.deviceId } : {}),
    });
    // Checkpoints and heartbeats from here to the end: a death at any moment leaves an orphan others finalise.
    const lease = p.leases.hold(g, base);
    try {
      let prompt: PromptInput;
      try {
        prompt = await p.prompt(spec);
      } catch (e) {
        await lease.stop();
        return notStarted(g, e);
      }
      const cut = await stream(spec, g, prompt);
      // The last checkpoint lands before the final write, never after it.
      await lease.stop();
      return await end(g, base, cut);
    } finally {
      lease.release();
    }
  };

  /** Nothing was asked or stored: the question stays unanswered, and a resend of it answers it. */
  function notStarted(g: Generation, e: unknown): ReplyResult {
    const f = describeFailure(e, "the reply could not be started");
    if (f.code === "INTERNAL_ERROR") log.error("could not start a reply", { chatId: g.chatId, error: e });
    const error = { code: f.code, message: f.message };
    bus.publish({ type: "reply_end", chatId: g.chatId, traceId: g.traceId, seq: 1, status: "incomplete", error });
    return { status: "incomplete", error };
  }

  /** The one way a text delta enters a reply: its chunks (seq = position), then every watcher through the bus. */
  function emit(g: Generation, delta: string) {
    g.chunks.push(delta);
    bus.publish({ type: "reply_delta", chatId: g.chatId, traceId: g.traceId, seq: g.chunks.length, content: delta });
  }

  /** The model's text deltas for a reply, over as many model calls as its tool rounds need. */
  function rounds(spec: JobSpec, g: Generation, prompt: PromptInput, busy: (waiting: boolean) => void): AsyncIterable<string> {
    const kind = spec.laneKey ? "regeneration" : spec.deviceId ? "device" : "reply";
    return replyRounds(roundsParts, g, {
      turns: prompt.turns,
      options: {
        signal: g.controller.signal,
        temperature: prompt.temperature,
        model: prompt.model,
        // Whose reply this is and why, for its usage record (src/chat/usage.ts).
        usage: { userId: spec.owner, kind, chatId: g.chatId, messageId: g.traceId },
      },
      prefs: prompt.tools,
      busy,
    });
  }

  /** Streams the model into the reply; how it was cut short, if it was. */
  async function stream(
    spec: JobSpec,
    g: Generation,
    prompt: PromptInput,
  ): Promise<{ status?: MessageStatus; error?: ReplyResult["error"] }> {
    const idle = idleWatchdog(g.controller, p.options.modelIdleTimeoutMs);
    try {
      for await (const delta of rounds(spec, g, prompt, idle.hold)) {
        // A stopped reply takes nothing more, even deltas the model had already sent (one read of
        // its stream can hold many).
        if (g.controller.signal.aborted) break;
        idle.reset();
        emit(g, delta);
      }
      // The openai SDK ends the iteration quietly when aborted; an abort is never a finished reply.
      g.controller.signal.throwIfAborted();
      return {};
    } catch (e) {
      const reason = g.controller.signal.aborted ? g.controller.signal.reason : e;
      if (isStopReason(reason)) return { status: reason.stop };
      const f = describeFailure(reason);
      const error =
        f.code === "MODEL_ERROR" || f.code === "MODEL_TIMEOUT" || f.code === "TOO_MANY_GENERATIONS"
          ? { code: f.code, message: f.message }
          : { code: "MODEL_ERROR", message: "the model failed while replying" };
      log.warn("model reply failed", { chatId: g.chatId, traceId: g.traceId, code: error.code, error: reason });
      return { status: "incomplete", error };
    } finally {
      idle.stop();
    }
  }

  /** Stores the reply (an empty failed one is noise: not kept), then announces its end. */
  async function end(g: Generation, base: Message, cut: { status?: MessageStatus; error?: ReplyResult["error"] }): Promise<ReplyResult> {
    const { status } = cut;
    let { error } = cut;
    const calls = finishedCalls(g);
    const message: Message = {
      ...base,
      content: g.chunks.join(""),
      ...(status ? { status } : {}),
      ...(calls.length ? { tool_calls: calls } : {}),
    };
    let stored: Message | undefined;
    // Anything with text or tool calls is kept.
    if (message.content || calls.length || !status) {
      try {
        await p.store.putMessage(message);
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
}

/** A reply sorts after its question even when another replica's clock is behind. */
function replyTime(question: Message): string {
  const after = Date.parse(question.created_at) + 1;
  const now = nowMs();
  return new Date(Math.max(after, now)).toISOString();
}

/**
 * Aborts the reply after `ms` without a delta. A delta only records the time (no timer per delta):
 * the one timer, when it fires early, waits out the rest of the silence. While tools run the model
 * is not being waited on (each call has its own TOOL_TIMEOUT_MS): `hold`.
 */
function idleWatchdog(controller: AbortController, ms: number) {
  let last = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
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
