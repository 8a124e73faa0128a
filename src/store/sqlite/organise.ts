import type { Database } from "bun:sqlite";
import type { ChatMark, Feedback, Folder, Share } from "../../records";
import type { OrganiseOps } from "../ops";
import type { Guard } from "./guard";

// Folders, pins, placements, feedback and shares (tables in schema.ts).

type FeedbackRow = Omit<Feedback, "comment"> & { comment: string | null };
type ShareRow = Omit<Share, "public" | "messages" | "up_to"> & { public: number; messages: string; up_to: string | null };

const toFeedback = ({ comment, ...r }: FeedbackRow): Feedback => ({ ...r, ...(comment === null ? {} : { comment }) });
const toShare = ({ public: pub, messages, up_to, ...r }: ShareRow, withMessages: boolean): Share => ({
  ...r,
  public: pub === 1,
  ...(up_to === null ? {} : { up_to }),
  messages: withMessages ? (JSON.parse(messages) as Share["messages"]) : [],
});
const FEEDBACK = "user_id, chat_id, message_id, rating, comment, model, created_at, updated_at";
const SHARE_HEAD = "id, owner, chat_id, name, public, up_to, '[]' AS messages, created_at";

export function organiseOps(db: Database, guard: Guard): OrganiseOps {
  const q = {
    folders: db.query<Folder, { $owner: string }>("SELECT id, name, created_at FROM folders WHERE owner = $owner ORDER BY created_at, id"),
    addFolder: db.query("INSERT INTO folders (owner, id, name, created_at) VALUES ($owner, $id, $name, $created_at)"),
    renameFolder: db.query<Folder, { $owner: string; $id: string; $name: string }>(
      "UPDATE folders SET name = $name WHERE owner = $owner AND id = $id RETURNING id, name, created_at",
    ),
    dropFolder: db.query("DELETE FROM folders WHERE owner = $owner AND id = $id"),
    unfile: db.query("DELETE FROM chat_folders WHERE owner = $owner AND folder_id = $id"),
    pins: db.query<{ chat_id: string }, { $owner: string }>("SELECT chat_id FROM chat_pins WHERE owner = $owner"),
    placements: db.query<{ chat_id: string; folder_id: string }, { $owner: string }>(
      "SELECT chat_id, folder_id FROM chat_folders WHERE owner = $owner",
    ),
    pin: db.query("INSERT INTO chat_pins (owner, chat_id) VALUES ($owner, $chat) ON CONFLICT DO NOTHING"),
    unpin: db.query("DELETE FROM chat_pins WHERE owner = $owner AND chat_id = $chat"),
    place: db.query(
      "INSERT INTO chat_folders (owner, chat_id, folder_id) VALUES ($owner, $chat, $folder) ON CONFLICT DO UPDATE SET folder_id = excluded.folder_id",
    ),
    unplace: db.query("DELETE FROM chat_folders WHERE owner = $owner AND chat_id = $chat"),
    dropRatings: db.query("DELETE FROM feedback WHERE user_id = $owner AND chat_id = $chat"),
    temporaries: db.query<{ chat_id: string; expires_at: string }, { $owner: string }>(
      "SELECT chat_id, expires_at FROM temporary_chats WHERE owner = $owner",
    ),
    markTemporary: db.query(
      `INSERT INTO temporary_chats (owner, chat_id, expires_at, alive_until) VALUES ($owner, $chat, $expires, $alive)
       ON CONFLICT DO UPDATE SET expires_at = excluded.expires_at, alive_until = excluded.alive_until`,
    ),
    unmarkTemporary: db.query("DELETE FROM temporary_chats WHERE owner = $owner AND chat_id = $chat"),
    renewTemporary: db.query("UPDATE temporary_chats SET alive_until = min(expires_at, $alive) WHERE owner = $owner"),
    dueTemporary: db.query<{ owner: string; chat_id: string }, { $now: string }>(
      "SELECT owner, chat_id FROM temporary_chats WHERE expires_at <= $now UNION SELECT owner, chat_id FROM temporary_chats WHERE alive_until <= $now",
    ),
    putFeedback: db.query(
      `INSERT INTO feedback (${FEEDBACK}) VALUES ($user_id, $chat_id, $message_id, $rating, $comment, $model, $created_at, $updated_at)
       ON CONFLICT (user_id, chat_id, message_id) DO UPDATE SET rating = excluded.rating, comment = excluded.comment,
       model = excluded.model, updated_at = excluded.updated_at`,
    ),
    removeFeedback: db.query("DELETE FROM feedback WHERE user_id = $user AND chat_id = $chat AND message_id = $message"),
    chatFeedback: db.query<FeedbackRow, { $user: string; $chat: string }>(
      `SELECT ${FEEDBACK} FROM feedback WHERE user_id = $user AND chat_id = $chat ORDER BY created_at`,
    ),
    allFeedback: db.query<FeedbackRow, { $since: string }>(
      `SELECT ${FEEDBACK} FROM feedback WHERE updated_at >= $since ORDER BY updated_at, user_id, chat_id, message_id`,
    ),
    addShare: db.query(
      `INSERT INTO shares (id, owner, chat_id, name, public, up_to, messages, created_at)
       VALUES ($id, $owner, $chat_id, $name, $public, $up_to, $messages, $created_at)`,
    ),
    getShare: db.query<ShareRow, { $id: string }>("SELECT * FROM shares WHERE id = $id"),
    shares: db.query<ShareRow, { $owner: string }>(`SELECT ${SHARE_HEAD} FROM shares WHERE owner = $owner ORDER BY created_at DESC, id`),
    dropShare: db.query("DELETE FROM shares WHERE owner = $owner AND id = $id"),
    dropChatShares: db.query("DELETE FROM shares WHERE owner = $owner AND chat_id = $chat"),
  };
  const deleteFolderTx = db.transaction((owner: string, id: string) => {
    const existed = q.dropFolder.run({ $owner: owner, $id: id }).changes > 0;
    if (existed) q.unfile.run({ $owner: owner, $id: id });
    return existed;
  });
  const forgetTx = db.transaction((owner: string, chat: string) => {
    q.unpin.run({ $owner: owner, $chat: chat });
    q.unplace.run({ $owner: owner, $chat: chat });
    q.dropRatings.run({ $owner: owner, $chat: chat });
    q.unmarkTemporary.run({ $owner: owner, $chat: chat });
  });
  return {
    listFolders: guard((owner: string) => q.folders.all({ $owner: owner })),
    createFolder: guard(
      (owner: string, f: Folder) => void q.addFolder.run({ $owner: owner, $id: f.id, $name: f.name, $created_at: f.created_at }),
    ),
    renameFolder: guard(
      (owner: string, id: string, name: string) => q.renameFolder.get({ $owner: owner, $id: id, $name: name }) ?? undefined,
    ),
    deleteFolder: guard((owner: string, id: string) => deleteFolderTx.immediate(owner, id)),
    listMarks: guard((owner: string) => {
      const marks = new Map<string, ChatMark>();
      for (const p of q.pins.all({ $owner: owner })) marks.set(p.chat_id, { chat_id: p.chat_id, pinned: true });
      for (const p of q.placements.all({ $owner: owner }))
        marks.set(p.chat_id, { chat_id: p.chat_id, pinned: marks.get(p.chat_id)?.pinned ?? false, folder_id: p.folder_id });
      for (const t of q.temporaries.all({ $owner: owner }))
        marks.set(t.chat_id, { ...(marks.get(t.chat_id) ?? { chat_id: t.chat_id, pinned: false }), expires_at: t.expires_at });
      return [...marks.values()];
    }),
    setPinned: guard((owner: string, chat: string, pinned: boolean) => void (pinned ? q.pin : q.unpin).run({ $owner: owner, $chat: chat })),
    setFolder: guard(
      (owner: string, chat: string, folder: string | undefined) =>
        void (folder === undefined
          ? q.unplace.run({ $owner: owner, $chat: chat })
          : q.place.run({ $owner: owner, $chat: chat, $folder: folder })),
    ),
    forgetChat: guard((owner: string, chat: string) => forgetTx.immediate(owner, chat)),
    markTemporary: guard(
      (owner: string, chat: string, expires: string, alive: string) =>
        void q.markTemporary.run({ $owner: owner, $chat: chat, $expires: expires, $alive: alive }),
    ),
    unmarkTemporary: guard((owner: string, chat: string) => q.unmarkTemporary.run({ $owner: owner, $chat: chat }).changes > 0),
    renewTemporary: guard((owner: string, alive: string) => void q.renewTemporary.run({ $owner: owner, $alive: alive })),
    dueTemporary: guard((now: string) => q.dueTemporary.all({ $now: now })),
    putFeedback: guard(
      (f: Feedback) =>
        void q.putFeedback.run({
          $user_id: f.user_id,
          $chat_id: f.chat_id,
          $message_id: f.message_id,
          $rating: f.rating,
          $comment: f.comment ?? null,
          $model: f.model,
          $created_at: f.created_at,
          $updated_at: f.updated_at,
        }),
    ),
    removeFeedback: guard(
      (user: string, chat: string, message: string) => q.removeFeedback.run({ $user: user, $chat: chat, $message: message }).changes > 0,
    ),
    chatFeedback: guard((user: string, chat: string) => q.chatFeedback.all({ $user: user, $chat: chat }).map(toFeedback)),
    listFeedback: guard(({ since }: { since: string }) => q.allFeedback.all({ $since: since }).map(toFeedback)),
    createShare: guard(
      (s: Share) =>
        void q.addShare.run({
          $id: s.id,
          $owner: s.owner,
          $chat_id: s.chat_id,
          $name: s.name,
          $public: s.public ? 1 : 0,
          $up_to: s.up_to ?? null,
          $messages: JSON.stringify(s.messages),
          $created_at: s.created_at,
        }),
    ),
    getShare: guard((id: string) => {
      const row = q.getShare.get({ $id: id });
      return row ? toShare(row, true) : undefined;
    }),
    listShares: guard((owner: string) => q.shares.all({ $owner: owner }).map((r) => toShare(r, false))),
    deleteShare: guard((owner: string, id: string) => q.dropShare.run({ $owner: owner, $id: id }).changes > 0),
    deleteChatShares: guard((owner: string, chat: string) => q.dropChatShares.run({ $owner: owner, $chat: chat }).changes),
  };
}
