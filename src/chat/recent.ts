import { boundedMap } from "../bounded";
import type { Message } from "../records";
import { encodeMessageCursor } from "../store/cursor";
import type { Page, Store } from "../store/store";
import type { Bus } from "./events";

// Each chat's newest messages, kept per replica: the newest history page and a reply's prompt are
// read from here instead of the store (issue 15: the store read was half of a history request's
// cost, and a send read the chat's history again for its prompt).
//
// Exact while the bus delivers: every message written is announced on it (a question as
// user_message, a reply as reply_end with the stored message), on every replica, and anything
// else that changes a chat's messages drops its entry (a reply ended without a stored message, a
// reply finalised as interrupted, a deletion, a branch, a gap in the bus). An entry is also dropped
// after `ttlMs`, which bounds how stale it can be while the shared bus is down. Streaming
// checkpoints are not announced: one read with the rest is kept as read (its reply's end replaces
// or drops it), and history reads the store again for one it does not mirror live (history.ts).

export type RecentOptions = {
  /** Messages kept per chat: the most any read asks for (HISTORY_MAX_MESSAGES). */
  perChat: number;
  /** Characters of content kept in all (the oldest-used chats go first); 0 turns the cache off. */
  maxChars: number;
  ttlMs: number;
};

type Entry = {
  /** The newest messages, oldest first, in (created_at, id) order. */
  messages: Message[];
  /** How many it keeps: `perChat`, or more for a branched chat read whole (`upTo`). */
  cap: number;
  /** No older messages exist than these. */
  complete: boolean;
  chars: number;
  until: number;
};

const before = (a: Message, b: Message) => a.created_at < b.created_at || (a.created_at === b.created_at && a.id < b.id);
const charsOf = (m: Message) => m.content.length + 200;

export function recentMessages(store: Store, bus: Bus, o: RecentOptions) {
  // Weighed by characters: the least recently used chats go first.
  const entries = boundedMap<string, Entry>(o.maxChars, { weight: (_, e) => e.chars });
  // Changes to a chat while a store read of it is in flight: that read is answered but not kept
  // (it may or may not have seen the change). Counted only for chats being read, so nothing grows
  // with the chats other replicas touch.
  const reading = new Map<string, { reads: number; changes: number }>();
  let generation = 0;
  const changed = (chatId: string) => {
    const r = reading.get(chatId);
    if (r) r.changes++;
  };

  const drop = (chatId: string) => void entries.delete(chatId);

  /** Puts the message in its place (or replaces it, by id); the oldest go past `perChat`. */
  function upsert(e: Entry, m: Message) {
    const list = e.messages;
    // From the newest end: what changes is nearly always a message just asked or answered.
    let at = list.length - 1;
    while (at >= 0 && list[at]!.id !== m.id) at--;
    if (at >= 0) {
      e.chars -= charsOf(list[at]!);
      list.splice(at, 1);
    }
    let i = list.length;
    while (i > 0 && before(m, list[i - 1]!)) i--;
    // A new message older than everything kept, when older ones exist: it belongs to a page the store answers.
    if (at < 0 && i === 0 && !e.complete && list.length > 0) return;
    e.chars += charsOf(m);
    list.splice(i, 0, m);
    while (list.length > e.cap) {
      e.chars -= charsOf(list.shift()!);
      e.complete = false;
    }
  }

  function apply(chatId: string, m: Message) {
    changed(chatId);
    const e = entries.get(chatId);
    if (!e) return;
    upsert(e, m);
    entries.set(chatId, e); // weighed again
  }

  const unsubscribe = bus.subscribe((e) => {
    switch (e.type) {
      case "user_message":
        return apply(e.message.chat_id, e.message);
      case "reply_end":
        if (e.message) return apply(e.chatId, e.message);
        changed(e.chatId);
        return drop(e.chatId);
      case "chat_deleted":
      case "branch_selected":
      case "messages_changed":
        changed(e.chatId);
        return drop(e.chatId);
      case "resync":
        generation++;
        entries.clear();
        return;
    }
  });

  function keep(chatId: string, e: Entry) {
    if (e.chars > o.maxChars / 4) return; // one huge chat must not push everyone else out
    entries.set(chatId, e);
  }

  async function entryOf(chatId: string, cap = o.perChat): Promise<Entry> {
    const hit = entries.get(chatId);
    // An entry kept for fewer messages than asked (and not the whole chat) is read again, larger.
    if (hit && hit.until > Date.now() && (hit.cap >= cap || hit.complete)) return hit;
    if (hit) drop(chatId);
    let r = reading.get(chatId);
    if (!r) reading.set(chatId, (r = { reads: 0, changes: 0 }));
    r.reads++;
    const mark = r.changes;
    const gen = generation;
    try {
      const page = await store.pageMessages(chatId, { limit: cap });
      const messages = page.items;
      const e: Entry = {
        messages,
        cap,
        complete: page.cursor === undefined,
        until: Date.now() + o.ttlMs,
        chars: messages.reduce((n, m) => n + charsOf(m), 0),
      };
      if (r.changes === mark && generation === gen && !entries.has(chatId)) keep(chatId, e);
      return e;
    } finally {
      if (--r.reads === 0) reading.delete(chatId);
    }
  }

  return {
    /**
     * The chat's newest `limit` messages (at most `perChat`), oldest first, and a cursor when older
     * ones exist: what the store's pageMessages answers (a streaming checkpoint as it was when read).
     */
    async newest(chatId: string, limit: number): Promise<Page<Message>> {
      if (o.maxChars === 0) return store.pageMessages(chatId, { limit });
      const e = await entryOf(chatId);
      const n = Math.min(limit, e.messages.length);
      const items = n > 0 ? e.messages.slice(e.messages.length - n) : [];
      const older = e.messages.length > n || !e.complete;
      const oldest = items[0];
      return older && oldest ? { items, cursor: encodeMessageCursor(chatId, oldest) } : { items };
    },
    /**
     * The chat's newest `max` messages, oldest first (what listMessages answers): a branched chat's
     * whole tree, kept in the same cache as any chat's newest page, under the same rules.
     */
    async upTo(chatId: string, max: number): Promise<Message[]> {
      if (o.maxChars === 0) return store.listMessages(chatId, { limit: max });
      const e = await entryOf(chatId, max);
      return e.messages.length > max ? e.messages.slice(e.messages.length - max) : e.messages.slice();
    },
    stats: () => ({ chats: entries.size, chars: entries.weight }),
    stop: unsubscribe,
  };
}
export type RecentMessages = ReturnType<typeof recentMessages>;
