import type { Bus } from "../chat/events";

export type ReplyTap = ReturnType<typeof tapReplies>;

/**
 * The text of the replies streaming in one chat, from the chat service's bus (wherever they are
 * generated). Opened before the question is sent, so no delta of its reply is missed; the reply
 * path knows nothing of devices.
 */
export function tapReplies(bus: Bus, chatId: string) {
  const chunks = new Map<string, string[]>();
  let wake = Promise.withResolvers<void>();
  const unsubscribe = bus.subscribe((e) => {
    // A tool call takes a place among the deltas (its own seq) and adds no text.
    if ((e.type !== "reply_delta" && e.type !== "reply_tool") || e.chatId !== chatId) return;
    let list = chunks.get(e.traceId);
    if (!list) chunks.set(e.traceId, (list = []));
    list[e.seq - 1] = e.type === "reply_delta" ? e.content : "";
    wake.resolve();
    wake = Promise.withResolvers<void>();
  });
  return {
    /** The reply's text so far, up to its first missing delta. */
    text(traceId: string): string {
      const list = chunks.get(traceId) ?? [];
      let out = "";
      for (let i = 0; i < list.length && list[i] !== undefined; i++) out += list[i];
      return out;
    },
    /** Resolves at the next delta in the chat. */
    changed: () => wake.promise,
    close: unsubscribe,
  };
}
