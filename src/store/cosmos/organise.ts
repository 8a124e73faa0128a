import type { ChatMark, Feedback, Folder, Share } from "../../records";
import type { OrganiseOps } from "../ops";
import { type Cosmos, query, read, safeId, strip, tolerate } from "./requests";

// Folders, pins, placements and ratings in the `organise` container, one partition per owner, one
// document each (a pin and a placement are separate, so a pin racing a move keeps both); shares in
// the `shares` container by their id, each with a reference in its owner's partition here.

type Doc = Record<string, unknown> & { id: string; owner: string; kind: "folder" | "pin" | "place" | "feedback" | "temp" | "shareref" };
type TempDoc = Doc & { chat_id: string; expires_at: string; alive_until: string };
const folderId = (id: string) => `folder:${id}`;
const pinId = (chat: string) => `pin:${chat}`;
const placeId = (chat: string) => `place:${chat}`;
const tempId = (chat: string) => `temp:${chat}`;
const shareRefId = (share: string) => `shareref:${share}`;
const feedbackId = (chat: string, message: string) => safeId(`feedback:${chat}:${message}`);
const toFolder = (d: Record<string, unknown>): Folder => ({
  id: String(d.folder_id),
  name: String(d.name),
  created_at: String(d.created_at),
});
const toFeedback = (d: Record<string, unknown>) => strip<Feedback>(d, ["id", "owner", "kind"]);
const toShare = (d: Record<string, unknown>) => strip<Share>(d);

export function organiseOps(k: Cosmos): OrganiseOps {
  const { o } = k;
  const c = k.c.organise;
  const shares = k.c.shares;
  const ofOwner = <T>(owner: string, where: string, params: { name: string; value: string }[] = []) =>
    query<T & Record<string, unknown>>(
      k,
      c,
      { query: `SELECT * FROM c WHERE c.owner = @owner AND ${where}`, parameters: [{ name: "@owner", value: owner }, ...params] },
      owner,
    );
  const remove = (id: string, owner: string) => tolerate(async () => (await c.item(id, owner).delete(o()), true), [404], false);

  return {
    listFolders: async (owner) =>
      (await ofOwner(owner, "c.kind = 'folder'"))
        .map(toFolder)
        .sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id)),
    createFolder: async (owner, f) => {
      const doc: Doc = { id: folderId(f.id), owner, kind: "folder", folder_id: f.id, name: f.name, created_at: f.created_at };
      await c.items.create(doc, o());
    },
    renameFolder: async (owner, id, name) => {
      const doc = await read<Doc>(k, c, folderId(id), owner);
      if (!doc || doc.kind !== "folder") return undefined;
      const next = { ...strip<Doc>(doc), name };
      const ok = await tolerate(async () => (await c.item(doc.id, owner).replace(next, o()), true), [404], false);
      return ok ? toFolder(next) : undefined;
    },
    deleteFolder: async (owner, id) => {
      if (!(await remove(folderId(id), owner))) return false;
      const placed = await ofOwner<{ id: string }>(owner, "c.kind = 'place' AND c.folder_id = @f", [{ name: "@f", value: id }]);
      await Promise.all(placed.map((p) => remove(p.id, owner)));
      return true;
    },
    listMarks: async (owner) => {
      const docs = await ofOwner<{ kind: string; chat_id: string; folder_id?: string; expires_at?: string }>(
        owner,
        "(c.kind = 'pin' OR c.kind = 'place' OR c.kind = 'temp')",
      );
      const marks = new Map<string, ChatMark>();
      for (const d of docs) {
        const m = marks.get(d.chat_id) ?? { chat_id: d.chat_id, pinned: false };
        if (d.kind === "pin") m.pinned = true;
        else if (d.kind === "temp" && d.expires_at) m.expires_at = d.expires_at;
        else if (d.folder_id) m.folder_id = d.folder_id;
        marks.set(d.chat_id, m);
      }
      return [...marks.values()];
    },
    setPinned: async (owner, chat, pinned) => {
      if (!pinned) return void (await remove(pinId(chat), owner));
      const doc: Doc = { id: pinId(chat), owner, kind: "pin", chat_id: chat };
      await c.items.upsert(doc, o());
    },
    setFolder: async (owner, chat, folder) => {
      if (folder === undefined) return void (await remove(placeId(chat), owner));
      const doc: Doc = { id: placeId(chat), owner, kind: "place", chat_id: chat, folder_id: folder };
      await c.items.upsert(doc, o());
    },
    forgetChat: async (owner, chat) => {
      const ratings = await ofOwner<{ id: string }>(owner, "c.kind = 'feedback' AND c.chat_id = @chat", [{ name: "@chat", value: chat }]);
      await Promise.all([
        remove(pinId(chat), owner),
        remove(placeId(chat), owner),
        remove(tempId(chat), owner),
        ...ratings.map((r) => remove(r.id, owner)),
      ]);
    },
    markTemporary: async (owner, chat, expires, alive) => {
      const doc: TempDoc = { id: tempId(chat), owner, kind: "temp", chat_id: chat, expires_at: expires, alive_until: alive };
      await c.items.upsert(doc, o());
    },
    unmarkTemporary: (owner, chat) => remove(tempId(chat), owner),
    renewTemporary: async (owner, alive) => {
      const docs = await ofOwner<TempDoc>(owner, "c.kind = 'temp'");
      await Promise.all(
        docs.map((d) =>
          // Only if it is still there: a renewal racing a keep or a sweep must not bring a mark back.
          tolerate(
            async () =>
              void (await c
                .item(d.id, owner)
                .patch([{ op: "set", path: "/alive_until", value: alive < d.expires_at ? alive : d.expires_at }], o())),
            [404],
            undefined,
          ),
        ),
      );
    },
    // Every owner's: a cross-partition query, run by the sweeper a few times a minute.
    dueTemporary: async (now) =>
      (
        await query<{ owner: string; chat_id: string }>(k, c, {
          query: "SELECT c.owner, c.chat_id FROM c WHERE c.kind = 'temp' AND (c.expires_at <= @now OR c.alive_until <= @now)",
          parameters: [{ name: "@now", value: now }],
        })
      ).map((d) => ({ owner: d.owner, chat_id: d.chat_id })),
    putFeedback: async (f) => {
      const doc: Doc = { ...f, id: feedbackId(f.chat_id, f.message_id), owner: f.user_id, kind: "feedback" };
      await c.items.upsert(doc, o());
    },
    removeFeedback: (user, chat, message) => remove(feedbackId(chat, message), user),
    chatFeedback: async (user, chat) =>
      (await ofOwner(user, "c.kind = 'feedback' AND c.chat_id = @chat", [{ name: "@chat", value: chat }]))
        .map(toFeedback)
        .sort((a, b) => a.created_at.localeCompare(b.created_at)),
    // Every user's: a cross-partition query, for the operator's export only.
    listFeedback: async ({ since }) =>
      (
        await query<Record<string, unknown>>(k, c, {
          query: "SELECT * FROM c WHERE c.kind = 'feedback' AND c.updated_at >= @since",
          parameters: [{ name: "@since", value: since }],
        })
      )
        .map(toFeedback)
        .sort((a, b) => a.updated_at.localeCompare(b.updated_at)),
    // The snapshot in `shares` (by id: the link's point read), and a reference in the owner's partition
    // here (`shareref:<id>`, without the messages), so listing and a chat's deletion stay in one partition.
    createShare: async (s) => {
      await shares.items.create(s, o());
      const { messages: _m, ...head } = s;
      const ref: Doc = { ...head, id: shareRefId(s.id), share_id: s.id, owner: s.owner, kind: "shareref" };
      await c.items.create(ref, o());
    },
    getShare: async (id) => {
      const doc = await read<Share>(k, shares, id, id);
      return doc ? toShare(doc) : undefined;
    },
    listShares: async (owner) =>
      (await ofOwner(owner, "c.kind = 'shareref'"))
        .map((d) => ({ ...strip<Share>(d, ["kind", "share_id"]), id: String(d.share_id), messages: [] }))
        .sort((a, b) => b.created_at.localeCompare(a.created_at)),
    // The link ends first (the snapshot goes), then its reference; only the owner's reference lets it.
    deleteShare: async (owner, id) => {
      const ref = await read<Doc>(k, c, shareRefId(id), owner);
      if (!ref || ref.kind !== "shareref") return false;
      await tolerate(async () => void (await shares.item(id, id).delete(o())), [404], undefined);
      return remove(shareRefId(id), owner);
    },
    deleteChatShares: async (owner, chat) => {
      const refs = await ofOwner<{ share_id: string }>(owner, "c.kind = 'shareref' AND c.chat_id = @chat", [
        { name: "@chat", value: chat },
      ]);
      const gone = await Promise.all(
        refs.map(async (r) => {
          await tolerate(async () => void (await shares.item(r.share_id, r.share_id).delete(o())), [404], undefined);
          return remove(shareRefId(r.share_id), owner);
        }),
      );
      return gone.filter(Boolean).length;
    },
  };
}
