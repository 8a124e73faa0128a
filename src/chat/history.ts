import type { Message } from "../records";
import { encodeMessageCursor } from "../store/cursor";
import { BRANCH_MAX_MESSAGES, branchHistory } from "./branches";
import type { ChatClient, ChatContext } from "./context";
import type { KnownChats } from "./known-chats";
import { lapsed } from "./lease";
import { finishedCalls } from "./tool-rounds";
import { fitPage } from "./page-budget";

/** An assistant message still being generated, as a history request shows it (never with its lease). */
export type StreamingMessage = Message & { streaming: true; seq: number };

/** `cursor` (from the previous page) or `before` (a created_at; older clients) pages back. */
export type HistoryQuery = { chatId: string; limit?: number; before?: string; cursor?: string };

/** A branched chat's page entry keeps its sibling fields when its live entry stands in for it. */
const siblingsOf = (m: Message & { siblings?: number; sibling?: number }) =>
  m.siblings ? { siblings: m.siblings, sibling: m.sibling } : {};

/**
 * What a client sees of a stored message: never its lease. A checkpoint another process is still
 * generating (lease running) is shown as streaming from the seq it reached; one whose lease
 * lapsed and that someone else finalised meanwhile as what it now is.
 */
function present(m: Message, now: number): Message | StreamingMessage {
  if (m.status !== "streaming" && !m.lease) return m;
  const { lease, status, ...rest } = m;
  if (status !== "streaming") return { ...rest, ...(status ? { status } : {}) };
  if (!lease || lapsed(m, now)) return { ...rest, status: "interrupted" };
  return { ...rest, streaming: true, seq: lease.seq };
}

/** History pages: stored messages, the current branch of a branched chat, and the reply streaming now. */
export function historyPages(
  ctx: ChatContext,
  known: KnownChats,
  /** The question a regeneration this process runs answers (src/chat/branches.ts). */
  regeneratingQuestion: (traceId: string) => string | undefined = () => undefined,
) {
  const { store, live, leases, options } = ctx;

  /** A branched chat's page: its current branch (read whole, up to BRANCH_MAX_MESSAGES), paged in memory. */
  async function branchedHistory(owner: string, o: HistoryQuery) {
    const chat = await known.requireChat(owner, o.chatId);
    // From the chats' cache (src/chat/recent.ts); a streaming checkpoint this replica does not mirror
    // live is read again from the store, where its lease is current (as for any chat's newest page).
    let stored = await ctx.recent.upTo(o.chatId, BRANCH_MAX_MESSAGES);
    if (stored.some((m) => m.status === "streaming" && m.id !== live.get(o.chatId)?.traceId))
      stored = await store.listMessages(o.chatId, { limit: BRANCH_MAX_MESSAGES });
    const g = !o.before && !o.cursor ? live.get(o.chatId) : undefined;
    const questionId = g && regeneratingQuestion(g.traceId);
    const limit = Math.min(o.limit ?? options.historyMaxMessages, options.historyMaxMessages);
    return branchHistory(
      chat,
      stored,
      { limit, cursor: o.cursor, before: o.before },
      g && questionId ? { traceId: g.traceId, questionId, createdAt: g.createdAt } : undefined,
    );
  }
  /** The page a history request reads: stored order, or the current branch of a branched chat. */
  const pageOf = (
    owner: string,
    o: HistoryQuery,
  ): Promise<{ messages: Message[]; hasMore: boolean; cursor?: string; offBranch?: Set<string> }> =>
    known.branched(o.chatId) ? branchedHistory(owner, o) : storedHistory(owner, o);

  /**
   * Oldest first, in (created_at, id) order. Without a limit, the whole history up to the
   * configured cap. `cursor` is there when older messages exist: ask again with it (or, older
   * clients, with `before` = the oldest one's created_at).
   */
  async function storedHistory(owner: string, o: HistoryQuery): Promise<{ messages: Message[]; hasMore: boolean; cursor?: string }> {
    const limit = Math.min(o.limit ?? options.historyMaxMessages, options.historyMaxMessages);
    // The newest page from the chat's kept messages; older pages from the store. A kept checkpoint
    // of a reply this replica does not mirror live (its process may have died, or renewed its lease
    // since) is read again from the store, where its lease is current.
    const read = () => store.pageMessages(o.chatId, { limit, cursor: o.cursor, before: o.before });
    let page = o.cursor || o.before ? await read() : await ctx.recent.newest(o.chatId, limit);
    if (!o.cursor && !o.before && page.items.some((m) => m.status === "streaming" && m.id !== live.get(o.chatId)?.traceId))
      page = await read();
    // A chat deleted meanwhile (here or on another replica) leaves an empty page: say so.
    if (page.items.length === 0) await known.requireChat(owner, o.chatId);
    return { messages: page.items, hasMore: page.cursor !== undefined, ...(page.cursor ? { cursor: page.cursor } : {}) };
  }

  /**
   * A page of history, and from then on the chat's live frames for `client`. A reply still
   * streaming comes last, as its text so far (`streaming`, `seq`); the live deltas after it
   * meet it exactly, with no gap and no repeat.
   */
  async function history(o: HistoryQuery, client: ChatClient) {
    // Only the newest page (no cursor, no before) shows the reply being generated.
    const newest = !o.before && !o.cursor;
    await known.requireOwned(client.owner, o.chatId);
    // A reply whose replica went silent is finalised before the page is read (src/chat/lease.ts).
    await leases.settle(o.chatId);
    const pending = live.get(o.chatId);
    let { messages, hasMore, cursor, offBranch } = await pageOf(client.owner, o);
    messages = await leases.finalizeLapsed(o.chatId, messages, pending?.traceId);
    if (
      pending &&
      live.get(o.chatId) !== pending &&
      newest &&
      !messages.some((m) => m.id === pending.traceId && m.status !== "streaming")
    ) {
      // The reply finished while we read: it is stored now, and its live end went by unseen.
      ({ messages, hasMore, cursor, offBranch } = await pageOf(client.owner, o));
      messages = await leases.finalizeLapsed(o.chatId, messages, live.get(o.chatId)?.traceId);
    }
    // A reply streaming on another replica that this one joined mid-way: its text so far first.
    await live.ready(o.chatId);
    // From here to the return nothing awaits.
    client.watch(o.chatId);
    const g = newest ? live.get(o.chatId) : undefined;
    const now = Date.now();
    // A live reply's tool calls that have ended (the ones still running are announced by their end frames).
    const liveEntry = (g: NonNullable<typeof pending>, createdAt = g.createdAt, calls = finishedCalls(g)): StreamingMessage => ({
      id: g.traceId,
      chat_id: g.chatId,
      role: "assistant",
      content: g.chunks.join(""),
      created_at: createdAt,
      streaming: true,
      seq: g.chunks.length,
      ...(calls.length ? { tool_calls: calls } : {}),
    });
    // The stored checkpoint of the live reply is shown as the live entry, in its place.
    // (On a branched chat's page it keeps its place among its siblings.)
    const shown = messages.map((m) =>
      g && m.id === g.traceId && m.status === "streaming" ? { ...siblingsOf(m), ...liveEntry(g, m.created_at) } : present(m, now),
    );
    // A reply still being generated belongs to the newest page only (older pages are stored messages).
    const all: (Message | StreamingMessage)[] = newest ? shown : shown.filter((m) => !("streaming" in m));
    // Not a reply streaming on another branch of a branched chat.
    if (g && !messages.some((m) => m.id === g.traceId) && !offBranch?.has(g.traceId)) {
      // In its place by (created_at, id): questions asked while it streams come after it.
      const entry = liveEntry(g);
      let i = all.length;
      while (
        i > 0 &&
        (all[i - 1]!.created_at > entry.created_at || (all[i - 1]!.created_at === entry.created_at && all[i - 1]!.id > entry.id))
      )
        i--;
      all.splice(i, 0, entry);
    }
    // One frame must stay well under the send limit: the oldest messages past the byte budget wait for the next page.
    const fit = options.historyPageMaxBytes ? fitPage(all, options.historyPageMaxBytes) : { messages: all, trimmed: 0 };
    // Cut to the budget: the next page starts right before the oldest message kept.
    const oldest = fit.messages[0];
    if (fit.trimmed > 0 && oldest) cursor = encodeMessageCursor(o.chatId, oldest);
    return { chatId: o.chatId, messages: fit.messages, hasMore: hasMore || fit.trimmed > 0, ...(cursor ? { cursor } : {}) };
  }

  return { history };
}
