import type { Message } from "../../records";
import type { Store } from "../../store/store";
import type { ChatClient } from "../context";
import { ChatError } from "../errors";
import type { Bus, ToolCallEvent } from "../events";
import type { LiveReplies } from "../live";
import type { Replies, StopReason } from "./replies";

/** What RESUME answers: the rest of a live reply, or the stored one when it has finished. */
export type Resumed =
  | { live: true; chatId: string; traceId: string; content: string; seq: number; toolCalls?: ToolCallEvent[] }
  | { live: false; message: Message };

/** Stopping and resuming a reply, wherever it is generated. */
export function replyControl(o: {
  replies: Replies;
  live: LiveReplies;
  bus: Bus;
  store: Store;
  requireOwned(owner: string, chatId: string): Promise<void>;
}) {
  const { replies, live, store, requireOwned } = o;

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
    o.bus.publish({ type: "stop_request", chatId: r.chatId, traceId: r.traceId });
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

  return { stop, stopElsewhere, resume };
}
