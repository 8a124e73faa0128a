import { boundedSet } from "../bounded";
import type { Feedback, Message } from "../records";
import { BRANCH_MAX_MESSAGES } from "./branches";
import { nowIso } from "./clock";
import type { ChatContext } from "./context";
import { ChatError } from "./errors";
import type { KnownChats } from "./known-chats";
import { getSettingsOf } from "./settings";

// Thumbs up or down on a reply, with an optional comment: one per user per reply version (each
// regeneration is a message of its own), changeable, removable. Shown in history and export, counted
// by model at /metrics (ChatParts.onFeedback), listed for the operator (`bun run feedback export`).

export type Rating = Feedback["rating"];
/** What a client sees of a rating (history, export, FEEDBACK). */
export type PublicFeedback = { rating: Rating; comment?: string; updated_at: string };
export const FEEDBACK_COMMENT_MAX = 2000;

const KNOWN_UNRATED = 10_000;

export const publicFeedback = (f: Feedback): PublicFeedback => ({
  rating: f.rating,
  ...(f.comment !== undefined ? { comment: f.comment } : {}),
  updated_at: f.updated_at,
});

export function feedbackCommands(
  ctx: Pick<ChatContext, "store" | "bus" | "model"> & { onFeedback?: (f: Feedback) => void },
  known: Pick<KnownChats, "requireChat" | "requireOwned">,
) {
  const { store, bus } = ctx;

  // Chats known to hold none of their owner's ratings: their history pages read no ratings. Dropped
  // on any rating in the chat anywhere (feedback_changed on the bus); a read that raced one is not kept.
  const unrated = boundedSet<string>(KNOWN_UNRATED);
  let generation = 0;
  const keyOf = (owner: string, chatId: string) => `${owner}\u0000${chatId}`;
  const unsubscribe = bus.subscribe((e) => {
    if (e.type === "feedback_changed") {
      generation++;
      unrated.delete(keyOf(e.owner, e.chatId));
    }
    if (e.type === "resync") {
      generation++;
      unrated.clear();
    }
  });

  /** The owner's ratings in a chat by message id (none read for a chat known to have none). */
  async function ratingsIn(owner: string, chatId: string): Promise<Map<string, PublicFeedback>> {
    const key = keyOf(owner, chatId);
    if (unrated.has(key)) return new Map();
    const before = generation;
    const all = await store.chatFeedback(owner, chatId);
    if (all.length === 0 && generation === before) {
      unrated.add(key);
    }
    return new Map(all.map((f) => [f.message_id, publicFeedback(f)]));
  }

  /** The model that wrote a reply: its usage record's, else the user's chosen model, else the server's. */
  async function modelOf(owner: string, reply: Message) {
    const records = await store.listUsage({ userId: owner, since: reply.created_at }).catch(() => []);
    const record = records.find((r) => r.message_id === reply.id && r.kind !== "title");
    if (record) return record.model;
    return (await getSettingsOf(store, owner)).model ?? ctx.model.name;
  }

  return {
    ratingsIn,
    /** A chat just created: known to hold no ratings until a rating anywhere says otherwise. */
    noteUnrated(owner: string, chatId: string) {
      unrated.add(keyOf(owner, chatId));
    },

    /** RATE_REPLY: `rating` null removes the user's rating. */
    async rate(o: { owner: string; chatId: string; messageId: string; rating: Rating | null; comment?: string }) {
      await known.requireChat(o.owner, o.chatId);
      const messages = await store.listMessages(o.chatId, { limit: BRANCH_MAX_MESSAGES });
      const reply = messages.find((m) => m.id === o.messageId);
      if (!reply)
        throw new ChatError("MESSAGE_NOT_FOUND", `there is no message with id ${o.messageId} in this chat`, { messageId: o.messageId });
      if (reply.role !== "assistant") throw new ChatError("INVALID_ARGUMENT", "only a reply can be rated");
      if (reply.status === "streaming") throw new ChatError("INVALID_ARGUMENT", "a reply can be rated once it has finished");
      if (o.rating === null) {
        await store.removeFeedback(o.owner, o.chatId, o.messageId);
        bus.publish({ type: "feedback_changed", owner: o.owner, chatId: o.chatId });
        return { chatId: o.chatId, messageId: o.messageId, feedback: null };
      }
      const before = (await store.chatFeedback(o.owner, o.chatId)).find((f) => f.message_id === o.messageId);
      const t = nowIso();
      const feedback: Feedback = {
        user_id: o.owner,
        chat_id: o.chatId,
        message_id: o.messageId,
        rating: o.rating,
        ...(o.comment ? { comment: o.comment } : {}),
        model: before?.model ?? (await modelOf(o.owner, reply)),
        created_at: before?.created_at ?? t,
        updated_at: t,
      };
      await store.putFeedback(feedback);
      bus.publish({ type: "feedback_changed", owner: o.owner, chatId: o.chatId });
      if (before?.rating !== feedback.rating) ctx.onFeedback?.(feedback);
      return { chatId: o.chatId, messageId: o.messageId, feedback: publicFeedback(feedback) };
    },

    close: unsubscribe,
  };
}
export type FeedbackCommands = ReturnType<typeof feedbackCommands>;
