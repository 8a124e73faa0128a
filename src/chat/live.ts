import type { Bus } from "./events";
import type { Generation } from "./replies";

/** A reply streaming somewhere, with its text so far: chunk n (1-based) is seq n. */
export type LiveReply = { chatId: string; traceId: string; createdAt: string; chunks: string[] };

/**
 * Every reply streaming right now, on this replica or (through the bus) on another, kept in order
 * so a history or RESUME answered here can show the text so far and meet the live deltas exactly.
 * A reply first seen mid-stream (this replica started late, or missed frames while the bus was
 * down) is filled in from `backfill` (the Redis stream that mirrors each reply).
 */
export type LiveReplies = ReturnType<typeof createLiveReplies>;

export function createLiveReplies(o: {
  bus: Bus;
  backfill?: (chatId: string, traceId: string) => Promise<string[]>;
  onError?: (e: unknown) => void;
}) {
  const byChat = new Map<string, LiveReply>();
  const byTrace = new Map<string, LiveReply>();
  const local = new Set<string>();
  // Replies whose start or some deltas this replica missed: filled in before they are shown.
  const filling = new Map<string, Promise<void>>();
  const endWaiters = new Map<string, Set<() => void>>();

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
        if (!local.has(e.traceId)) add({ chatId: e.chatId, traceId: e.traceId, createdAt: e.createdAt, chunks: [] });
        return;
      case "reply_delta": {
        if (local.has(e.traceId)) return; // our own generation holds its chunks
        let r = byTrace.get(e.traceId);
        if (!r) {
          // Mid-stream: its start went by before this replica listened.
          r = { chatId: e.chatId, traceId: e.traceId, createdAt: new Date().toISOString(), chunks: [] };
          add(r);
        }
        if (e.seq > r.chunks.length + 1) fill(r);
        r.chunks[e.seq - 1] = e.content;
        return;
      }
      case "reply_end":
        return end(e.traceId);
    }
  });

  return {
    /** The reply streaming in a chat, wherever it runs. */
    get: (chatId: string): LiveReply | undefined => byChat.get(chatId),
    byTrace: (traceId: string): LiveReply | undefined => byTrace.get(traceId),
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
