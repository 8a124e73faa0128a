import type { Bus, ToolCallEvent } from "./events";
import type { Generation } from "./pipeline/replies";

/** A reply streaming somewhere, with its text so far: chunk n (1-based) is seq n. */
export type LiveReply = {
  chatId: string;
  traceId: string;
  createdAt: string;
  chunks: string[];
  /** The question it answers (known from its start or a heartbeat). */
  questionId?: string;
  deviceId?: string;
  /** Another replica's reply: when this replica last heard it was alive (src/chat/lease.ts). */
  heardAt?: number;
  /** Its tool calls so far (src/chat/tool-rounds.ts). */
  toolCalls?: ToolCallEvent[];
};

/**
 * Every reply streaming right now, on this replica or (through the bus) on another, kept in order
 * so a history or RESUME answered here can show the text so far and meet the live deltas exactly.
 * A reply first seen mid-stream (this replica started late, or missed frames while the bus was
 * down) is filled in from `backfill` (the Redis stream that mirrors each reply). Another replica's
 * reply not heard from for `leaseMs` is silent (its replica died): it is not shown, and the lease
 * sweep (src/chat/lease.ts) finalises it.
 */
export type LiveReplies = ReturnType<typeof createLiveReplies>;

export function createLiveReplies(o: {
  bus: Bus;
  leaseMs: number;
  backfill?: (chatId: string, traceId: string) => Promise<string[]>;
  onError?: (e: unknown) => void;
}) {
  const byChat = new Map<string, LiveReply>();
  const byTrace = new Map<string, LiveReply>();
  const local = new Set<string>();
  // Replies whose start or some deltas this replica missed: filled in before they are shown.
  const filling = new Map<string, Promise<void>>();
  const endWaiters = new Map<string, Set<() => void>>();

  // Silence proves nothing while the shared bus cannot hear the other replicas.
  const isSilent = (r: LiveReply, now: number) =>
    !local.has(r.traceId) && now - (r.heardAt ?? now) > o.leaseMs && (o.bus.hearing?.() ?? true);
  const shown = (r: LiveReply | undefined) => (r && !isSilent(r, Date.now()) ? r : undefined);
  const add = (r: LiveReply) => {
    byChat.set(r.chatId, r);
    byTrace.set(r.traceId, r);
  };
  const end = (traceId: string) => {
    const r = byTrace.get(traceId);
    if (r && byChat.get(r.chatId) === r) byChat.delete(r.chatId);
    byTrace.delete(traceId);
    local.delete(traceId);
    filling.delete(traceId);
    for (const w of endWaiters.get(traceId) ?? []) w();
    endWaiters.delete(traceId);
  };
  const fill = (r: LiveReply) => {
    if (!o.backfill || filling.has(r.traceId)) return;
    const p = o
      .backfill(r.chatId, r.traceId)
      .then(
        (chunks) => {
          // Deltas that arrived meanwhile are already in r.chunks at their seq; keep the longer, in order.
          for (let i = 0; i < chunks.length; i++) if (r.chunks[i] === undefined) r.chunks[i] = chunks[i]!;
        },
        (e) => o.onError?.(e),
      )
      .finally(() => filling.delete(r.traceId));
    filling.set(r.traceId, p);
  };

  const unsubscribe = o.bus.subscribe((e) => {
    switch (e.type) {
      case "reply_start":
        if (!local.has(e.traceId))
          add({
            chatId: e.chatId,
            traceId: e.traceId,
            createdAt: e.createdAt,
            chunks: [],
            heardAt: Date.now(),
            ...(e.questionId ? { questionId: e.questionId } : {}),
            ...(e.deviceId ? { deviceId: e.deviceId } : {}),
          });
        return;
      case "reply_delta":
      case "reply_alive": {
        if (local.has(e.traceId)) return; // our own generation holds its chunks
        let r = byTrace.get(e.traceId);
        if (!r) {
          // Mid-stream: its start went by before this replica listened.
          r = { chatId: e.chatId, traceId: e.traceId, createdAt: new Date().toISOString(), chunks: [] };
          add(r);
        }
        r.heardAt = Date.now();
        if (e.type === "reply_alive") {
          if (e.questionId) r.questionId ??= e.questionId;
          if (e.seq > r.chunks.length) fill(r);
          return;
        }
        if (e.seq > r.chunks.length + 1) fill(r);
        r.chunks[e.seq - 1] = e.content;
        return;
      }
      case "reply_tool": {
        // A tool call's start or end: an empty chunk at its seq, and the call as it stands now.
        if (local.has(e.traceId)) return;
        let r = byTrace.get(e.traceId);
        if (!r) {
          r = { chatId: e.chatId, traceId: e.traceId, createdAt: new Date().toISOString(), chunks: [] };
          add(r);
        }
        r.heardAt = Date.now();
        if (e.seq > r.chunks.length + 1) fill(r);
        r.chunks[e.seq - 1] = "";
        const calls = (r.toolCalls ??= []);
        const i = calls.findIndex((c) => c.id === e.call.id);
        if (i >= 0) calls[i] = e.call;
        else calls.push(e.call);
        return;
      }
      case "reply_end":
        return end(e.traceId);
      case "resync": {
        // The bus was down: silence until now proves nothing; the lease counts from here.
        const now = Date.now();
        for (const r of byTrace.values()) if (!local.has(r.traceId)) r.heardAt = now;
        return;
      }
    }
  });

  return {
    /** The reply streaming in a chat, wherever it runs (not one whose replica went silent). */
    get: (chatId: string): LiveReply | undefined => shown(byChat.get(chatId)),
    byTrace: (traceId: string): LiveReply | undefined => shown(byTrace.get(traceId)),
    /** Other replicas' replies not heard from for a lease (src/chat/lease.ts finalises them). */
    silent(): LiveReply[] {
      const now = Date.now();
      return [...byTrace.values()].filter((r) => isSilent(r, now));
    },
    silentIn(chatId: string): LiveReply | undefined {
      const r = byChat.get(chatId);
      return r && isSilent(r, Date.now()) ? r : undefined;
    },
    /** A sign of life from elsewhere (the store holds its lease). */
    heard(traceId: string) {
      const r = byTrace.get(traceId);
      if (r) r.heardAt = Date.now();
    },
    /** Our own generation: its chunks are the ones the model loop appends to. */
    attach(g: Generation) {
      local.add(g.traceId);
      add(g);
    },
    isLocal: (traceId: string) => local.has(traceId),
    /** Resolves once what this replica missed of the chat's live reply is filled in. */
    async ready(chatId: string): Promise<void> {
      const r = byChat.get(chatId);
      const p = r && filling.get(r.traceId);
      if (p) await p;
    },
    /** Resolves true when the reply ends, false after `ms`. */
    waitEnd(traceId: string, ms: number): Promise<boolean> {
      if (!byTrace.has(traceId)) return Promise.resolve(true);
      return new Promise((resolve) => {
        let set = endWaiters.get(traceId);
        if (!set) endWaiters.set(traceId, (set = new Set()));
        const waiters = set;
        const timer = setTimeout(() => {
          waiters.delete(done);
          resolve(false);
        }, ms);
        const done = () => {
          clearTimeout(timer);
          resolve(true);
        };
        waiters.add(done);
      });
    },
    close: unsubscribe,
  };
}
