import { boundedMap, boundedSet } from "../bounded";
import type { Chat } from "../records";
import type { Store } from "../store/store";
import { chatNotFound } from "./errors";

export const DEFAULT_CHAT_NAME = "New Chat";

/** Owners known for chat ids, kept for this many ids at most (the least recently used go first). */
const KNOWN_OWNERS = 10_000;

/**
 * What this process knows about chats from facts it saw: whose a chat is, whether it has a name of
 * its own, whether it was ever branched. Each fact saves a store read on the hot path (a send, a
 * history page) and is dropped when the chat goes, or all at once after a gap in the bus.
 */
export function knownChats(store: Pick<Store, "getChat" | "getChats">) {
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

  // Chats for which no title is wanted, so a send there reads no record to check and asks the model
  // nothing: named (by their owner or a title), or titled once to no usable title by this process.
  const named = boundedSet<string>(KNOWN_OWNERS);
  function noteName(chat: Chat) {
    if (chat.name === DEFAULT_CHAT_NAME) return;
    named.add(chat.id);
  }

  // Chat ids are never reused and a chat never changes owner, so "this owner has this chat" can be
  // remembered until the chat is deleted: a history page or a send on one's own chat then needs no
  // extra store read. Only the owner's own answer is remembered; anything else reads the store,
  // so a foreign id costs what a missing one costs.
  const known = boundedMap<string, string>(KNOWN_OWNERS);
  async function requireOwned(owner: string, chatId: string): Promise<void> {
    if (known.get(chatId) === owner) return;
    await requireChat(owner, chatId);
  }
  /** The least recently used go first: a chat read again is remembered again. */
  function remember(chatId: string, owner: string) {
    known.set(chatId, owner);
  }

  // Chats known to be branched (src/chat/branches.ts). A chat never stops being branched, and every
  // replica hears when one starts (branch_selected on the bus), so "not in this set" for a chat in
  // `known` means never branched: its history and sends cost what they cost before branches existed.
  // The set only grows by facts (a record read with `selected`, an event), so a read racing an event loses nothing.
  // One forgotten here is forgotten as known too: the next use reads the record again.
  const branched = boundedSet<string>(KNOWN_OWNERS, { dropped: (chatId) => known.delete(chatId) });
  function markBranched(chatId: string) {
    branched.add(chatId);
  }

  /**
   * CHAT_NOT_FOUND for the first id that names none of the owner's chats. Those not known from
   * memory are read in one store read, whatever their number (WATCH: frames per second bound the reads).
   */
  async function requireAllOwned(owner: string, chatIds: string[]): Promise<void> {
    const unknown = chatIds.filter((id) => known.get(id) !== owner);
    if (unknown.length === 0) return;
    const found = new Map((await store.getChats(owner, unknown)).map((c) => [c.id, c] as const));
    for (const id of unknown) {
      const chat = found.get(id);
      if (!chat) throw chatNotFound(id);
      remember(id, owner);
      if (chat.selected !== undefined) markBranched(id);
      noteName(chat);
    }
  }

  return {
    requireChat,
    requireOwned,
    requireAllOwned,
    remember,
    /** A chat renamed or created with a name (here, or on another replica through chat_updated). */
    noteName,
    /** The model gave no usable title: this process asks no more (after a model error it asks again on the next send). */
    noTitleWanted: (chatId: string) => named.add(chatId),
    /** Whether the chat may still want a title (false: known to be named, or titled to nothing). */
    mayNeedTitle: (chatId: string) => !named.has(chatId),
    markBranched,
    /** Whether the chat is known to be branched, from memory only. */
    branched: (chatId: string) => branched.has(chatId),
    /** Whether the owner's chat is branched: from memory for a chat this process knows, else one read of its record. */
    async isBranched(owner: string, chatId: string): Promise<boolean> {
      if (known.get(chatId) !== owner) await requireChat(owner, chatId);
      return branched.has(chatId);
    },
    /** The chat was deleted (here or anywhere): nothing about it holds. */
    forget(chatId: string) {
      known.delete(chatId);
      named.delete(chatId);
      branched.delete(chatId);
    },
    /** The bus was down (RESYNC): what this process remembers of chats may be stale; read the records again. */
    forgetAll() {
      known.clear();
      branched.clear();
    },
  };
}
export type KnownChats = ReturnType<typeof knownChats>;
