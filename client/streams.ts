import type { ServerFrame } from "./types";

type MessageFrame = ServerFrame<"MESSAGE">;

/**
 * The replies a client follows, by traceId, with the last `seq` it applied: what to RESUME after a
 * reconnect, and the filter that keeps a chunk from being applied twice (a live delta racing a
 * catch-up, a second end frame). Replies that ended are remembered (the newest `keepEnded`) so a late
 * frame of one is dropped.
 */
export function createStreams(keepEnded = 2000) {
  const live = new Map<string, { chatId: string; seq: number }>();
  const ended = new Set<string>();

  const end = (traceId: string) => {
    live.delete(traceId);
    ended.add(traceId);
    if (ended.size > keepEnded) ended.delete(ended.values().next().value as string);
  };

  return {
    /** Whether the frame is new (to pass on) or already applied (to drop); records it either way. */
    accept(f: MessageFrame): boolean {
      if (ended.has(f.traceId)) return false;
      const s = live.get(f.traceId);
      if (f.end) {
        end(f.traceId);
        return true;
      }
      const seq = f.seq ?? 0;
      if (s && seq <= s.seq) return false;
      live.set(f.traceId, { chatId: f.chatId, seq });
      return true;
    },
    /** A reply seen in history still streaming: its text up to `seq` is on screen. */
    saw(chatId: string, traceId: string, seq: number) {
      if (ended.has(traceId)) return;
      const s = live.get(traceId);
      if (!s || s.seq < seq) live.set(traceId, { chatId, seq });
    },
    end,
    drop: (traceId: string) => live.delete(traceId),
    forgetChat(chatId: string) {
      for (const [t, s] of live) if (s.chatId === chatId) live.delete(t);
    },
    /** Every reply being followed: [traceId, {chatId, seq}]. */
    following: () => [...live],
    isEnded: (traceId: string) => ended.has(traceId),
    knows: (traceId: string) => live.has(traceId) || ended.has(traceId),
  };
}
