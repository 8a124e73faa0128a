import type { Chat, Message } from "../records";
import { nowIso } from "./clock";
import type { ChatClient, ChatContext } from "./context";
import { chatNotFound } from "./errors";
import { encodeMessageCursor } from "../store/cursor";
import { fitPage } from "./page-budget";
import { BRANCH_MAX_MESSAGES, branchHistory } from "./branches";

export const DEFAULT_CHAT_NAME = "New Chat";

/** An assistant message still being generated, as a history request shows it (never with its lease). */
export type StreamingMessage = Message & { streaming: true; seq: number };

/** `cursor` (from the previous page) or `before` (a created_at; older clients) pages back. */
export type HistoryQuery = { chatId: string; limit?: number; before?: string; cursor?: string };

/** Owners known for chat ids, kept for this many ids at most (the oldest go first). */
const KNOWN_OWNERS = 10_000;

/** A branched chat's page entry keeps its sibling fields when its live entry stands in for it. */
const siblingsOf = (m: Message & { siblings?: number; sibling?: number }) =>
  m.siblings ? { siblings: m.siblings, sibling: m.sibling } : {};

/** Creating, listing, reading, renaming and deleting chats. */
export function chatCommands(
  ctx: ChatContext,
  stopElsewhere: (r: { chatId: string; traceId: string }) => Promise<boolean>,
  /** The question a regeneration this process runs answers (src/chat/branches.ts). */
  regeneratingQuestion: (traceId: string) => string | undefined = () => undefined,
) {
  const { store, bus, replies, live, options } = ctx;

  /**
   * Another owner's chat is answered exactly as one that does not exist: the same error, after the
   * same kind of store read (the owner is part of every chat lookup, src/store/store.ts).
   */
  async function requireChat(owner: string, chatId: string): Promise<Chat> {
    const chat = await store.getChat(owner, chatId);
    if (!chat) throw chatNotFound(chatId);
    remember(chatId, owner);
    if (chat.selected !== undefined) markBranched(chatId);
    noteName(chat);
    return chat;
  }

  // Chats known to have a name of their own: no title is wanted, so a send there reads no record to check.
  const named = new Set<string>();
  function noteName(chat: Chat) {
    if (chat.name === DEFAULT_CHAT_NAME) return;
    if (named.size > KNOWN_OWNERS) named.delete(named.values().next().value!);
    named.add(chat.id);
  }

  // Chat ids are never reused and a chat never changes owner, so "this owner has this chat" can be
  // remembered until the chat is deleted: a history page or a send on one's own chat then needs no
  // extra store read. Only the owner's own answer is remembered; anything else reads the store,
  // so a foreign id costs what a missing one costs.
  const known = new Map<string, string>();
  async function requireOwned(owner: string, chatId: string): Promise<void> {
    if (known.get(chatId) === owner) return;
    await requireChat(owner, chatId);
  }
  /** The oldest remembered go first: a chat read again is remembered again. */
  function remember(chatId: string, owner: string) {
    known.delete(chatId);
    known.set(chatId, owner);
    if (known.size > KNOWN_OWNERS) known.delete(known.keys().next().value!);
  }
  const forget = (chatId: string) => {
    known.delete(chatId);
    named.delete(chatId);
    branched.delete(chatId);
  };

  // Chats known to be branched (src/chat/branches.ts). A chat never stops being branched, and every
  // replica hears when one starts (branch_selected on the bus), so "not in this set" for a chat in
  // `known` means never branched: its history and sends cost what they cost before branches existed.
  // The set only grows by facts (a record read with `selected`, an event), so a read racing an event loses nothing.
  const branched = new Set<string>();
  function markBranched(chatId: string) {
    branched.add(chatId);
    if (branched.size > KNOWN_OWNERS) {
      // Forgotten here, so forgotten as known too: the next use reads the record again.
      const oldest = branched.values().next().value!;
      branched.delete(oldest);
      known.delete(oldest);
    }
  }
  /** Whether the owner's chat is branched: from memory for a chat this process knows, else one read of its record. */
  async function isBranched(owner: string, chatId: string): Promise<boolean> {
    if (known.get(chatId) !== owner) await requireChat(owner, chatId);
    return branched.has(chatId);
  }

  /** A branched chat's page: its current branch (read whole, up to BRANCH_MAX_MESSAGES), paged in memory. */
  async function branchedHistory(owner: string, o: HistoryQuery) {
    const chat = await requireChat(owner, o.chatId);
    const stored = await store.listMessages(o.chatId, { limit: BRANCH_MAX_MESSAGES });
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
    branched.has(o.chatId) ? branchedHistory(owner, o) : storedHistory(owner, o);

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
    if (page.items.length === 0) await requireChat(owner, o.chatId);
    return { messages: page.items, hasMore: page.cursor !== undefined, ...(page.cursor ? { cursor: page.cursor } : {}) };
  }

  /**
   * Stored "streaming" checkpoints that are not this process's live reply and whose lease lapsed
   * (their process died) are finalised as interrupted through the store, and shown as it returns
   * them: a dead reply is never shown as finished, nor as still streaming.
   */
  async function finalizeLapsed(chatId: string, messages: Message[], live?: string): Promise<Message[]> {
    const now = Date.now();
    if (!messages.some((m) => m.status === "streaming" && m.id !== live && (!m.lease || m.lease.until < now))) return messages;
    const stale = await store.finalizeStale(now, chatId);
    // As the sweeper does: watchers get the end, and every replica's kept messages are read again.
    for (const m of stale)
      bus.publish({ type: "reply_end", chatId: m.chat_id, traceId: m.id, seq: (m.lease?.seq ?? 0) + 1, status: "interrupted" });
    const finalized = new Map(stale.map((m) => [m.id, m] as const));
    return messages.map((m) => finalized.get(m.id) ?? m);
  }

  /**
   * What a client sees of a stored message: never its lease. A checkpoint another process is still
   * generating (lease running) is shown as streaming from the seq it reached; one whose lease
   * lapsed and that someone else finalised meanwhile as what it now is.
   */
  function present(m: Message, now: number): Message | StreamingMessage {
    if (m.status !== "streaming" && !m.lease) return m;
    const { lease, status, ...rest } = m;
    if (status !== "streaming") return { ...rest, ...(status ? { status } : {}) };
    if (!lease || lease.until < now) return { ...rest, status: "interrupted" };
    return { ...rest, streaming: true, seq: lease.seq };
  }

  async function createChat(o: { owner: string; name?: string; deviceId?: string; origin?: string }): Promise<Chat> {
    const t = nowIso();
    const chat: Chat = {
      id: crypto.randomUUID(),
      name: o.name ?? DEFAULT_CHAT_NAME,
      active: true,
      created_at: t,
      updated_at: t,
      ...(o.deviceId ? { device_id: o.deviceId } : {}),
    };
    await store.createChat(o.owner, chat);
    remember(chat.id, o.owner);
    noteName(chat);
    bus.publish({ type: "chat_created", owner: o.owner, chat, origin: o.origin });
    return chat;
  }

  return {
    requireChat,
    requireOwned,
    forget,
    /** A chat renamed or created with a name (here, or on another replica through chat_updated). */
    noteName,
    /** Whether the chat may still carry the default name (false: known to be named). */
    mayNeedTitle: (chatId: string) => !named.has(chatId),
    markBranched,
    isBranched,
    /** The bus was down (RESYNC): what this process remembers of chats may be stale; read the records again. */
    forgetAll() {
      known.clear();
      branched.clear();
    },

    listChats: (owner: string, o: { limit: number; cursor?: string }) => store.listChats(owner, o),

    createChat,

    /**
     * A page of history, and from then on the chat's live frames for `client`. A reply still
     * streaming comes last, as its text so far (`streaming`, `seq`); the live deltas after it
     * meet it exactly, with no gap and no repeat.
     */
    async history(o: HistoryQuery, client: ChatClient) {
      // Only the newest page (no cursor, no before) shows the reply being generated.
      const newest = !o.before && !o.cursor;
      await requireOwned(client.owner, o.chatId);
      const pending = live.get(o.chatId);
      let { messages, hasMore, cursor, offBranch } = await pageOf(client.owner, o);
      messages = await finalizeLapsed(o.chatId, messages, pending?.traceId);
      if (
        pending &&
        live.get(o.chatId) !== pending &&
        newest &&
        !messages.some((m) => m.id === pending.traceId && m.status !== "streaming")
      ) {
        // The reply finished while we read: it is stored now, and its live end went by unseen.
        ({ messages, hasMore, cursor, offBranch } = await pageOf(client.owner, o));
        messages = await finalizeLapsed(o.chatId, messages, live.get(o.chatId)?.traceId);
      }
      // A reply streaming on another replica that this one joined mid-way: its text so far first.
      await live.ready(o.chatId);
      // From here to the return nothing awaits.
      client.watch(o.chatId);
      const g = newest ? live.get(o.chatId) : undefined;
      const now = Date.now();
      const liveEntry = (g: NonNullable<typeof pending>, createdAt = g.createdAt): StreamingMessage => ({
        id: g.traceId,
        chat_id: g.chatId,
        role: "assistant",
        content: g.chunks.join(""),
        created_at: createdAt,
        streaming: true,
        seq: g.chunks.length,
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
    },

    async deleteChat(o: { owner: string; chatId: string; origin?: string }): Promise<void> {
      // Only the owner's: nothing below may touch another owner's replies.
      await requireChat(o.owner, o.chatId);
      // Delete wins over a racing send. The running reply is stopped first, so its final write
      // lands before the messages go; one that registers in the next seconds is stopped at once.
      // Then the chat record, then its messages: a send that checks for the chat after storing
      // its question sees it gone and removes what it wrote.
      await replies.cancel(o.chatId);
      try {
        const elsewhere = live.get(o.chatId);
        if (elsewhere && !live.isLocal(elsewhere.traceId)) await stopElsewhere(elsewhere);
        if (!(await store.deleteChat(o.owner, o.chatId))) throw chatNotFound(o.chatId);
      } catch (e) {
        // Not deleted (the store failed, or there was no such chat): replies may start in it again.
        replies.uncancel(o.chatId);
        throw e;
      }
      forget(o.chatId);
      bus.publish({ type: "chat_deleted", owner: o.owner, chatId: o.chatId, origin: o.origin });
    },

    async renameChat(o: { owner: string; chatId: string; name: string; origin?: string }): Promise<Chat> {
      // A partial update: a message's activity time landing meanwhile is kept, and vice versa.
      const chat = await store.patchChat(o.owner, o.chatId, { name: o.name, updated_at: nowIso() });
      if (!chat) throw chatNotFound(o.chatId);
      bus.publish({ type: "chat_updated", owner: o.owner, chat, origin: o.origin });
      return chat;
    },

    /** The owner's active chat bound to a device, created (and announced to the owner's browsers) on its first message. */
    async deviceChat(owner: string, deviceId: string): Promise<Chat> {
      return (await store.findDeviceChat(owner, deviceId)) ?? createChat({ owner, name: deviceId, deviceId });
    },

    /** CHAT_NOT_FOUND for the first id that names none of the owner's chats (WATCH checks its whole list first). */
    async requireChats(owner: string, chatIds: string[]): Promise<void> {
      const found = await Promise.allSettled(chatIds.map((id) => requireOwned(owner, id)));
      const i = found.findIndex((r) => r.status === "rejected");
      if (i >= 0) throw (found[i] as PromiseRejectedResult).reason;
    },
  };
}
