import type { MessageStatus } from "../records";
import { ChatError } from "./errors";

// The replies this process is generating, and the one owner of the rule "one reply per chat".
// Process-local on purpose: a stream lives where its model request lives.

export type Generation = {
  chatId: string;
  traceId: string;
  createdAt: string;
  /** Every delta so far; chunk n (1-based) has seq n, so a client can resume after any seq. */
  chunks: string[];
  controller: AbortController;
  done: Promise<void>;
};

/** Why a generation was cut short; carried as the AbortController's reason. */
export type StopReason = { stop: Extract<MessageStatus, "stopped" | "interrupted"> };
export const isStopReason = (r: unknown): r is StopReason => typeof r === "object" && r !== null && "stop" in r;

export type Replies = ReturnType<typeof createReplies>;

export function createReplies({ max }: { max: number }) {
  const byChat = new Map<string, Generation>();
  const reserved = new Set<string>();
  // Shutdown: no new replies, and a way to wait until the last one is stored.
  let closed = false;
  let interrupt: StopReason | undefined;
  // Chats being deleted: a reply that registers for one of these is stopped at once.
  const cancelled = new Map<string, number>();
  const idleWaiters = new Set<() => void>();
  const settle = () => {
    if (byChat.size + reserved.size > 0) return;
    for (const w of idleWaiters) w();
    idleWaiters.clear();
  };

  return {
    get: (chatId: string) => byChat.get(chatId),
    byTrace: (traceId: string) => [...byChat.values()].find((g) => g.traceId === traceId),
    get size() {
      return byChat.size + reserved.size;
    },
    /**
     * Holds the chat's single generation slot from before the question is stored until the reply
     * is registered, so two sends racing for one chat cannot both start. Returns the release.
     */
    reserve(chatId: string): () => void {
      if (closed) throw new ChatError("SHUTTING_DOWN", "the server is shutting down; send again shortly", { retryAfterMs: 2000 });
      if (byChat.has(chatId) || reserved.has(chatId)) {
        throw new ChatError("GENERATION_IN_PROGRESS", "a reply is still being generated in this chat; wait for it or stop it");
      }
      if (byChat.size + reserved.size >= max) {
        throw new ChatError("TOO_MANY_GENERATIONS", "the server is generating as many replies as it allows; try again shortly", { retryAfterMs: 1000 });
      }
      reserved.add(chatId);
      return () => {
        reserved.delete(chatId);
        settle();
      };
    },
    /** Resolves when the chat's running reply (if any) is stored; false when none was running. */
    async whenFree(chatId: string): Promise<boolean> {
      const g = byChat.get(chatId);
      if (!g) return false;
      await g.done;
      return true;
    },
    add(g: Generation) {
      reserved.delete(g.chatId);
      byChat.set(g.chatId, g);
      if (interrupt) g.controller.abort(interrupt);
      if ((cancelled.get(g.chatId) ?? 0) > Date.now()) g.controller.abort({ stop: "stopped" } satisfies StopReason);
    },
    /**
     * Stops the chat's reply as "stopped", and any that registers for it in the next `windowMs`
     * (a send that passed its checks before the chat was deleted). Resolves once none is running.
     */
    async cancel(chatId: string, windowMs = 10_000) {
      cancelled.set(chatId, Date.now() + windowMs);
      setTimeout(() => cancelled.delete(chatId), windowMs).unref?.();
      for (let g = byChat.get(chatId); g; g = byChat.get(chatId)) {
        g.controller.abort({ stop: "stopped" } satisfies StopReason);
        await g.done;
      }
    },
    remove(g: Generation) {
      if (byChat.get(g.chatId) === g) byChat.delete(g.chatId);
      settle();
    },
    /** Refuse new replies from now on (SHUTTING_DOWN). */
    close() {
      closed = true;
    },
    /** Resolves once no reply is reserved or running. */
    idle(): Promise<void> {
      return byChat.size + reserved.size === 0 ? Promise.resolve() : new Promise((r) => idleWaiters.add(r));
    },
    /** Cuts every running reply, and any that registers later, short with `reason`. */
    interruptAll(reason: StopReason) {
      interrupt = reason;
      for (const g of byChat.values()) g.controller.abort(reason);
    },
  };
}
