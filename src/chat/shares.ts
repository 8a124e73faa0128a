import type { Chat, Message, Share } from "../records";
import { BRANCH_MAX_MESSAGES } from "./branches";
import { nowIso } from "./clock";
import type { ChatContext } from "./context";
import { ChatError } from "./errors";
import type { KnownChats } from "./known-chats";
import { buildTree, byPosition, currentBranch } from "./tree";

// Share a chat by link: a read-only snapshot of its current branch (up to a message), copied when
// shared, so the chat going on changes nothing in it. The link's id is 192 random bits. Every view
// reads the store (the share, then its chat): a revoked share or a deleted chat ends the link on every
// replica at once, with nothing cached anywhere to forget.

/** What the owner sees of a share (SHARE, SHARES): never the messages. */
export type ShareInfo = { id: string; chatId: string; name: string; public: boolean; upTo?: string; messages?: number; created_at: string };
/** What a viewer of /s/<id> gets. */
export type SharedSnapshot = { id: string; name: string; created_at: string; public: boolean; messages: Share["messages"] };

export const MAX_SHARES_PER_USER = 500;
/** Random bytes in a share id (base64url: 32 characters). */
const ID_BYTES = 24;

export const shareNotFound = (shareId: string) => new ChatError("SHARE_NOT_FOUND", "there is no such share", { shareId });

export const newShareId = () => Buffer.from(crypto.getRandomValues(new Uint8Array(ID_BYTES))).toString("base64url");
export const SHARE_ID = /^[A-Za-z0-9_-]{32}$/;

const info = (s: Share, messages?: number): ShareInfo => ({
  id: s.id,
  chatId: s.chat_id,
  name: s.name,
  public: s.public,
  ...(s.up_to !== undefined ? { upTo: s.up_to } : {}),
  ...(messages !== undefined ? { messages } : {}),
  created_at: s.created_at,
});

/** The chat's current branch, oldest first: a branched chat's selected path, else its messages in order. */
function branchOf(chat: Chat, stored: Message[]): Message[] {
  return chat.selected !== undefined ? currentBranch(buildTree(stored), chat.selected) : [...stored].sort(byPosition);
}

export function shareCommands(ctx: Pick<ChatContext, "store">, known: Pick<KnownChats, "requireChat">, o: { allowPublic: boolean }) {
  const { store } = ctx;

  return {
    /** SHARE_CHAT: a snapshot of the current branch up to `upTo` (default: all of it). */
    async share(a: { owner: string; chatId: string; upTo?: string; public?: boolean }): Promise<ShareInfo> {
      const chat = await known.requireChat(a.owner, a.chatId);
      if (a.public && !o.allowPublic)
        throw new ChatError(
          "INVALID_ARGUMENT",
          "public links are not allowed on this server (ALLOW_PUBLIC_SHARES); share for signed-in users",
        );
      if ((await store.listShares(a.owner)).length >= MAX_SHARES_PER_USER)
        throw new ChatError("INVALID_ARGUMENT", `at most ${MAX_SHARES_PER_USER} shared links; revoke some first`);
      const branch = branchOf(chat, await store.listMessages(a.chatId, { limit: BRANCH_MAX_MESSAGES }));
      let upTo = branch.length;
      if (a.upTo !== undefined) {
        upTo = branch.findIndex((m) => m.id === a.upTo) + 1;
        if (upTo === 0)
          throw new ChatError("MESSAGE_NOT_FOUND", `there is no message with id ${a.upTo} on this chat's current branch`, {
            messageId: a.upTo,
          });
      }
      // A reply still being written is not part of a snapshot; no lease ever leaves.
      const messages = branch
        .slice(0, upTo)
        .filter((m) => m.status !== "streaming")
        .map(({ lease: _lease, ...m }) => m);
      const share: Share = {
        id: newShareId(),
        owner: a.owner,
        chat_id: a.chatId,
        name: chat.name,
        public: !!a.public,
        ...(a.upTo !== undefined ? { up_to: a.upTo } : {}),
        messages,
        created_at: nowIso(),
      };
      await store.createShare(share);
      return info(share, messages.length);
    },

    /** GET_SHARES: the owner's links, newest first (one chat's with `chatId`). */
    async list(owner: string, chatId?: string): Promise<ShareInfo[]> {
      const all = await store.listShares(owner);
      return all.filter((s) => chatId === undefined || s.chat_id === chatId).map((s) => info(s));
    },

    /** REVOKE_SHARE: the link ends at once, everywhere. Another user's share answers as a missing one. */
    async revoke(owner: string, shareId: string): Promise<void> {
      if (!SHARE_ID.test(shareId) || !(await store.deleteShare(owner, shareId))) throw shareNotFound(shareId);
    },

    /** The chat was deleted: its links go too (views check the chat as well, so they end even if this fails). */
    forgetChat: (owner: string, chatId: string) => store.deleteChatShares(owner, chatId),

    /**
     * What /s/<id> shows: "missing" for no such share (revoked, its chat deleted, never made), "sign-in"
     * when the viewer must sign in first. Without a viewer, a private share and a missing one are the
     * same "sign-in": nothing tells a stranger which ids exist.
     */
    async view(shareId: string, viewer: string | undefined): Promise<SharedSnapshot | "missing" | "sign-in"> {
      const share = SHARE_ID.test(shareId) ? await store.getShare(shareId) : undefined;
      const open = !!share?.public && o.allowPublic;
      if (viewer === undefined && !open) return "sign-in";
      if (!share || !(await store.getChat(share.owner, share.chat_id))) return "missing";
      return { id: share.id, name: share.name, created_at: share.created_at, public: open, messages: share.messages };
    },
  };
}
export type ShareCommands = ReturnType<typeof shareCommands>;
