import { boundedMap } from "../bounded";
import type { Chat, ChatMark, Folder } from "../records";
import { decodeChatCursor, decodeCursor, encodeChatCursor, encodeCursor } from "../store/cursor";
import { InvalidCursorError } from "../store/errors";
import { nowIso } from "./clock";
import type { ChatContext } from "./context";
import { ChatError } from "./errors";
import type { KnownChats } from "./known-chats";
import type { SearchQuery, SearchResults } from "./search";

// Pins and folders (one level): the owner's own records beside each chat (src/store/store.ts). A chat
// as the chat list shows it carries `pinned` and `folderId`; pinned chats come first.

/** A chat with its owner's marks: CHAT_UPDATED after a pin or a move names both; CHAT_LIST only what is set. */
export type ListedChat = Chat & { pinned?: boolean; folderId?: string | null; temporary?: boolean; expiresAt?: string };
/** `temporary`: only the owner's temporary chats (src/chat/temporary.ts); otherwise they are never listed. */
export type ChatListQuery = { limit: number; cursor?: string; folderId?: string; pinned?: boolean; temporary?: boolean };

export const MAX_FOLDERS = 200;
export const MAX_PINS = 100;
/** Owners whose marks a replica keeps in memory at most (the oldest go first). */
const KEPT_OWNERS = 10_000;
/** Store pages one folder-limited search reads at most before answering with what it found. */
const SEARCH_ROUNDS = 8;

export const folderNotFound = (folderId: string) =>
  new ChatError("FOLDER_NOT_FOUND", `there is no folder with id ${folderId}`, { folderId });

const recency = (a: Chat, b: Chat) =>
  a.updated_at !== b.updated_at
    ? b.updated_at.localeCompare(a.updated_at)
    : a.created_at !== b.created_at
      ? b.created_at.localeCompare(a.created_at)
      : b.id.localeCompare(a.id);
const pinnedFirst = (a: ListedChat, b: ListedChat) => (!!a.pinned === !!b.pinned ? recency(a, b) : a.pinned ? -1 : 1);

// A filtered list is read whole (a folder's or the pins' chats: a known, bounded set) and paged here;
// its cursor is a position in pinned-first order.
const encodeMarkedCursor = (c: ListedChat) => encodeCursor(["marked", c.pinned ? "1" : "0", c.updated_at, c.created_at, c.id]);
function decodeMarkedCursor(cursor: string) {
  const [tag, pinned, updated_at, created_at, id] = decodeCursor(cursor, 5);
  if (tag !== "marked" || (pinned !== "0" && pinned !== "1")) throw new InvalidCursorError("cursor");
  return { id: id!, name: "", active: true, created_at: created_at!, updated_at: updated_at!, pinned: pinned === "1", folderId: null };
}
// The first page of the unpinned chats, for a page the pins filled: a position before every chat.
const TOP_CURSOR = encodeChatCursor({
  updated_at: "9999-12-31T23:59:59.999Z",
  created_at: "9999-12-31T23:59:59.999Z",
  id: "ffffffff-ffff-4fff-bfff-ffffffffffff",
});

export function organiseCommands(ctx: Pick<ChatContext, "store" | "bus">, known: Pick<KnownChats, "requireChat">) {
  const { store, bus } = ctx;

  /** The owner's marks, with placements in folders that no longer exist left out. */
  // Each owner's marks (and folders, once read) kept per replica, so a chat list costs the store what it
  // did before marks existed. Dropped on any change anywhere (the events below cross replicas on the
  // bus); a read that raced a change is not kept; after a gap in the bus nothing kept is trusted.
  const kept = boundedMap<string, { marks: ChatMark[]; folders?: Folder[] }>(KEPT_OWNERS);
  let generation = 0;
  const drop = (owner: string) => {
    generation++;
    kept.delete(owner);
  };
  const unsubscribe = bus.subscribe((e) => {
    if (e.type === "folders_changed" || e.type === "chat_deleted" || e.type === "temporary_chat") drop(e.owner);
    if (e.type === "chat_updated" && "pinned" in e.chat) drop(e.owner);
    if (e.type === "resync") {
      generation++;
      kept.clear();
    }
  });
  async function readMarks(owner: string, needFolders: boolean) {
    const hit = kept.get(owner);
    const wantFolders = (marks: ChatMark[]) => needFolders || marks.some((m) => m.folder_id);
    if (hit && (hit.folders || !wantFolders(hit.marks))) return { marks: hit.marks, folders: hit.folders ?? [] };
    const before = generation;
    const marks = hit?.marks ?? (await store.listMarks(owner));
    const folders = wantFolders(marks) ? await store.listFolders(owner) : undefined;
    if (generation === before) {
      kept.set(owner, { marks, ...(folders ? { folders } : {}) });
    }
    return { marks, folders: folders ?? [] };
  }

  async function marksOf(owner: string, needFolders = false) {
    const { marks, folders } = await readMarks(owner, needFolders);
    const live = new Set(folders.map((f) => f.id));
    const byChat = new Map<string, ChatMark>();
    for (const m of marks) byChat.set(m.chat_id, m.folder_id && !live.has(m.folder_id) ? { chat_id: m.chat_id, pinned: m.pinned } : m);
    const marked = (c: Chat): ListedChat => {
      const m = byChat.get(c.id);
      return { ...c, pinned: m?.pinned ?? false, folderId: m?.folder_id ?? null };
    };
    // In a list, only what is set: a chat never pinned or filed lists exactly as it always did.
    const listed = (c: Chat): ListedChat => {
      const m = byChat.get(c.id);
      return {
        ...c,
        ...(m?.pinned ? { pinned: true } : {}),
        ...(m?.folder_id ? { folderId: m.folder_id } : {}),
        ...(m?.expires_at ? { temporary: true, expiresAt: m.expires_at } : {}),
      } as ListedChat;
    };
    const temporary = new Set(marks.filter((k) => k.expires_at).map((k) => k.chat_id));
    return { marks: [...byChat.values()], folders, live, listed, marked, temporary };
  }

  async function listChats(owner: string, o: ChatListQuery): Promise<{ items: ListedChat[]; cursor?: string }> {
    const m = await marksOf(owner, o.folderId !== undefined);
    if (o.folderId !== undefined && !m.live.has(o.folderId)) throw folderNotFound(o.folderId);
    if (o.folderId !== undefined || o.pinned === true || o.temporary === true) {
      const ids = m.marks
        .filter(
          (k) =>
            (o.folderId === undefined || k.folder_id === o.folderId) &&
            (o.pinned === undefined || k.pinned === o.pinned) &&
            !!k.expires_at === !!o.temporary,
        )
        .map((k) => k.chat_id);
      const all = ids.length ? (await store.getChats(owner, ids)).map(m.listed).sort(pinnedFirst) : [];
      const after = o.cursor === undefined ? undefined : decodeMarkedCursor(o.cursor);
      const rest = after ? all.filter((c) => pinnedFirst(c, after) > 0) : all;
      const items = rest.slice(0, o.limit);
      const last = items.at(-1);
      return rest.length > o.limit && last ? { items, cursor: encodeMarkedCursor(last) } : { items };
    }
    // Everything (pinned first on the first page), or the unpinned only: the store's pages, pins skipped.
    const pinned = new Set(m.marks.filter((k) => k.pinned && !k.expires_at).map((k) => k.chat_id));
    // Skipped in the store's pages: pinned chats (listed first) and temporary ones (never listed here).
    const skip = new Set([...pinned, ...m.temporary]);
    const items: ListedChat[] = [];
    let cursor = o.cursor;
    if (o.cursor === undefined && o.pinned === undefined && pinned.size > 0) {
      items.push(...(await store.getChats(owner, [...pinned])).map(m.listed).sort(recency));
      if (items.length >= o.limit) return { items, cursor: TOP_CURSOR };
    }
    // At most `pinned.size` rows of a page are skipped, so one read fills the page.
    const page = await store.listChats(owner, { limit: o.limit - items.length + skip.size, cursor });
    for (const c of page.items) {
      if (items.length === o.limit) return { items, cursor: encodeChatCursor(items.at(-1)!) };
      if (!skip.has(c.id)) items.push(m.listed(c));
    }
    cursor = page.cursor;
    return cursor ? { items, cursor: items.length ? encodeChatCursor(items.at(-1)!) : cursor } : { items };
  }

  /** The chat as listed now, announced to the owner's other sockets (CHAT_UPDATED). */
  async function announce(owner: string, chatId: string, origin?: string) {
    const chat = await known.requireChat(owner, chatId);
    const listed = (await marksOf(owner)).marked(chat);
    bus.publish({ type: "chat_updated", owner, chat: listed, origin });
    return listed;
  }

  async function foldersChanged(owner: string, origin?: string) {
    const folders = await store.listFolders(owner);
    bus.publish({ type: "folders_changed", owner, folders, origin });
    return folders;
  }

  return {
    listChats,

    /** A chat as CHAT_UPDATED shows it after a pin, a move or a keep: every mark named. */
    async asListed(owner: string, chat: Chat): Promise<ListedChat> {
      const m = await marksOf(owner);
      return { ...m.marked(chat), temporary: m.temporary.has(chat.id) };
    },

    /** Search results without the owner's temporary chats. */
    async withoutTemporary<R extends { hits: { chatId: string }[] }>(owner: string, r: R): Promise<R> {
      if (r.hits.length === 0) return r;
      const { temporary } = await marksOf(owner);
      return temporary.size ? { ...r, hits: r.hits.filter((h) => !temporary.has(h.chatId)) } : r;
    },
    folders: (owner: string) => store.listFolders(owner),

    async pin(o: { owner: string; chatId: string; pinned: boolean; origin?: string }): Promise<ListedChat> {
      await known.requireChat(o.owner, o.chatId);
      if (o.pinned) {
        const pins = (await store.listMarks(o.owner)).filter((k) => k.pinned && k.chat_id !== o.chatId).length;
        if (pins >= MAX_PINS) throw new ChatError("INVALID_ARGUMENT", `at most ${MAX_PINS} chats can be pinned`);
      }
      await store.setPinned(o.owner, o.chatId, o.pinned);
      drop(o.owner); // here at once; the other replicas on the CHAT_UPDATED announce() sends
      return announce(o.owner, o.chatId, o.origin);
    },

    async move(o: { owner: string; chatId: string; folderId: string | null; origin?: string }): Promise<ListedChat> {
      await known.requireChat(o.owner, o.chatId);
      if (o.folderId !== null && !(await store.listFolders(o.owner)).some((f) => f.id === o.folderId)) throw folderNotFound(o.folderId);
      await store.setFolder(o.owner, o.chatId, o.folderId ?? undefined);
      drop(o.owner);
      return announce(o.owner, o.chatId, o.origin);
    },

    async createFolder(o: { owner: string; name: string; origin?: string }): Promise<{ folder: Folder; folders: Folder[] }> {
      if ((await store.listFolders(o.owner)).length >= MAX_FOLDERS)
        throw new ChatError("INVALID_ARGUMENT", `at most ${MAX_FOLDERS} folders`);
      const folder: Folder = { id: crypto.randomUUID(), name: o.name, created_at: nowIso() };
      await store.createFolder(o.owner, folder);
      return { folder, folders: await foldersChanged(o.owner, o.origin) };
    },

    async renameFolder(o: { owner: string; folderId: string; name: string; origin?: string }) {
      const folder = await store.renameFolder(o.owner, o.folderId, o.name);
      if (!folder) throw folderNotFound(o.folderId);
      return { folder, folders: await foldersChanged(o.owner, o.origin) };
    },

    /** The folder goes; its chats stay, in no folder. */
    async deleteFolder(o: { owner: string; folderId: string; origin?: string }) {
      if (!(await store.deleteFolder(o.owner, o.folderId))) throw folderNotFound(o.folderId);
      return { folders: await foldersChanged(o.owner, o.origin) };
    },

    /** SEARCH limited to a folder's chats: the store's pages, other chats' hits left out, asked for what is still missing. */
    async searchIn(
      owner: string,
      folderId: string,
      o: SearchQuery & { limit: number },
      search: (q: SearchQuery) => Promise<SearchResults>,
    ) {
      const m = await marksOf(owner, true);
      if (!m.live.has(folderId)) throw folderNotFound(folderId);
      const inFolder = new Set(m.marks.filter((k) => k.folder_id === folderId).map((k) => k.chat_id));
      const hits: SearchResults["hits"] = [];
      let cursor = o.cursor;
      let hasMore = false;
      for (let round = 0; round < SEARCH_ROUNDS && inFolder.size > 0; round++) {
        const page = await search({ query: o.query, limit: o.limit - hits.length, cursor });
        hits.push(...page.hits.filter((h) => inFolder.has(h.chatId)));
        hasMore ||= !!page.hasMore;
        cursor = page.cursor;
        if (!cursor || hits.length >= o.limit) break;
      }
      return { query: o.query, hits, ...(cursor && inFolder.size > 0 ? { cursor } : {}), ...(hasMore ? { hasMore: true as const } : {}) };
    },

    /** A deleted chat's pin, placement and ratings. */
    forget: (owner: string, chatId: string) => store.forgetChat(owner, chatId),

    close: unsubscribe,
  };
}
export type OrganiseCommands = ReturnType<typeof organiseCommands>;
