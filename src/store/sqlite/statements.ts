import type { Database } from "bun:sqlite";
import { type ChatRow, type ClaimRow, MESSAGE_COLUMNS, MESSAGE_VALUES, type MessageRow } from "./rows";

/** Every statement the store runs, prepared once per open database. */
export function prepareStatements(db: Database) {
  return {
    // Every chat statement names its owner: another user's chat id matches no row, exactly like an
    // id that does not exist.
    listChats: db.query<ChatRow, { $owner: string; $limit: number }>(
      "SELECT * FROM chats WHERE owner = $owner ORDER BY updated_at DESC, created_at DESC, id DESC LIMIT $limit",
    ),
    listChatsAfter: db.query<ChatRow, { $owner: string; $limit: number; $u: string; $c: string; $id: string }>(
      `SELECT * FROM chats WHERE owner = $owner AND (updated_at, created_at, id) < ($u, $c, $id)
       ORDER BY updated_at DESC, created_at DESC, id DESC LIMIT $limit`,
    ),
    getChat: db.query<ChatRow, { $owner: string; $id: string }>("SELECT * FROM chats WHERE id = $id AND owner = $owner"),
    getChats: db.query<ChatRow, { $owner: string; $ids: string }>(
      "SELECT * FROM chats WHERE owner = $owner AND id IN (SELECT value FROM json_each($ids))",
    ),
    insertChat: db.query(
      `INSERT INTO chats (id, owner, name, active, created_at, updated_at, device_id, selected)
       VALUES ($id, $owner, $name, $active, $created_at, $updated_at, $device_id, $selected)`,
    ),
    // One statement: only the named columns change, and activity time never goes backwards.
    patchChat: db.query<ChatRow, { $owner: string; $id: string; $name: string | null; $u: string | null; $selected: string | null }>(
      `UPDATE chats SET name = coalesce($name, name), updated_at = max(updated_at, coalesce($u, updated_at)),
       selected = coalesce($selected, selected)
       WHERE id = $id AND owner = $owner RETURNING *`,
    ),
    deleteChat: db.query<ChatRow, { $owner: string; $id: string }>("DELETE FROM chats WHERE id = $id AND owner = $owner RETURNING id"),
    deleteMessages: db.query("DELETE FROM messages WHERE chat_id = $id"),
    deviceChats: db.query<ChatRow, { $owner: string; $limit: number }>(
      "SELECT * FROM chats WHERE owner = $owner AND device_id IS NOT NULL AND active = 1 ORDER BY updated_at DESC LIMIT $limit",
    ),
    deviceChat: db.query<ChatRow, { $owner: string; $device_id: string }>(
      "SELECT * FROM chats WHERE owner = $owner AND device_id = $device_id AND active = 1 ORDER BY updated_at DESC LIMIT 1",
    ),
    addMessage: db.query(`INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES (${MESSAGE_VALUES}) ON CONFLICT DO NOTHING`),
    getMessage: db.query<MessageRow, { $chat_id: string; $id: string }>("SELECT * FROM messages WHERE chat_id = $chat_id AND id = $id"),
    hasMessage: db.query<{ one: number }, { $chat_id: string; $id: string }>(
      "SELECT 1 AS one FROM messages WHERE chat_id = $chat_id AND id = $id",
    ),
    touchChat: db.query<{ id: string }, { $owner: string; $id: string; $u: string }>(
      "UPDATE chats SET updated_at = max(updated_at, $u) WHERE id = $id AND owner = $owner RETURNING id",
    ),
    putMessage: db.query(
      `INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES (${MESSAGE_VALUES})
       ON CONFLICT (chat_id, id) DO UPDATE SET role = excluded.role, content = excluded.content,
       created_at = excluded.created_at, status = excluded.status, device_id = excluded.device_id,
       parent_id = excluded.parent_id, lease_owner = excluded.lease_owner, lease_until = excluded.lease_until,
       lease_seq = excluded.lease_seq, tool_calls = excluded.tool_calls`,
    ),
    // Newest first straight off the (chat_id, created_at, id) index; reversed in JS rather than
    // re-sorted by SQLite through a temp B-tree.
    pageMessages: db.query<MessageRow, { $chat_id: string; $limit: number }>(
      "SELECT * FROM messages WHERE chat_id = $chat_id ORDER BY created_at DESC, id DESC LIMIT $limit",
    ),
    pageMessagesBefore: db.query<MessageRow, { $chat_id: string; $limit: number; $before: string }>(
      `SELECT * FROM messages WHERE chat_id = $chat_id AND created_at < $before
       ORDER BY created_at DESC, id DESC LIMIT $limit`,
    ),
    pageMessagesAfter: db.query<MessageRow, { $chat_id: string; $limit: number; $t: string; $id: string }>(
      `SELECT * FROM messages WHERE chat_id = $chat_id AND (created_at, id) < ($t, $id)
       ORDER BY created_at DESC, id DESC LIMIT $limit`,
    ),
    findReply: db.query<MessageRow, { $chat_id: string; $parent_id: string }>(
      `SELECT * FROM messages WHERE chat_id = $chat_id AND parent_id = $parent_id AND role = 'assistant'
       ORDER BY created_at DESC, id DESC LIMIT 1`,
    ),
    // A "streaming" row without a lease has nothing keeping it alive: it counts as lapsed.
    finalizeStale: db.query<MessageRow, { $now: number }>(
      `UPDATE messages SET status = 'interrupted', lease_owner = NULL, lease_until = NULL, lease_seq = NULL
       WHERE status = 'streaming' AND coalesce(lease_until, 0) < $now RETURNING *`,
    ),
    finalizeStaleIn: db.query<MessageRow, { $now: number; $chat_id: string }>(
      `UPDATE messages SET status = 'interrupted', lease_owner = NULL, lease_until = NULL, lease_seq = NULL
       WHERE chat_id = $chat_id AND status = 'streaming' AND coalesce(lease_until, 0) < $now RETURNING *`,
    ),
    claimProcessed: db.query(
      `INSERT INTO processed_messages (id, expires_at, done) VALUES ($id, $expires_at, 1)
       ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, owner = NULL, lease_until = NULL, done = 1
       WHERE processed_messages.expires_at <= $now`,
    ),
    // Taken when new, expired, or an unfinished claim whose lease lapsed (or that is already ours).
    claimMessage: db.query(
      `INSERT INTO processed_messages (id, expires_at, owner, lease_until, done) VALUES ($id, $until, $owner, $until, 0)
       ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, owner = excluded.owner,
       lease_until = excluded.lease_until, done = 0
       WHERE processed_messages.expires_at <= $now OR (processed_messages.done = 0
         AND (processed_messages.owner IS excluded.owner OR coalesce(processed_messages.lease_until, 0) < $now))`,
    ),
    getClaim: db.query<ClaimRow, { $id: string }>("SELECT owner, lease_until, done, expires_at FROM processed_messages WHERE id = $id"),
    renewClaim: db.query(
      `UPDATE processed_messages SET lease_until = $until, expires_at = max(expires_at, $until)
       WHERE id = $id AND owner = $owner AND done = 0`,
    ),
    completeClaim: db.query(
      `INSERT INTO processed_messages (id, expires_at, owner, lease_until, done) VALUES ($id, $expires_at, $owner, NULL, 1)
       ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, lease_until = NULL, done = 1
       WHERE processed_messages.owner IS excluded.owner`,
    ),
    purgeProcessed: db.query("DELETE FROM processed_messages WHERE expires_at <= $now"),
    listOwnership: db.query<{ partition_id: string; owner_id: string; etag: string; modified_ms: number }, { $scope: string }>(
      "SELECT partition_id, owner_id, etag, modified_ms FROM ownership WHERE scope = $scope",
    ),
    claimNew: db.query(
      `INSERT INTO ownership (scope, partition_id, owner_id, etag, modified_ms)
       VALUES ($scope, $pid, $owner, $etag, $ms) ON CONFLICT DO NOTHING`,
    ),
    claimExisting: db.query(
      `UPDATE ownership SET owner_id = $owner, etag = $etag, modified_ms = $ms
       WHERE scope = $scope AND partition_id = $pid AND etag = $expected`,
    ),
    listCheckpoints: db.query<{ partition_id: string; sequence_number: number; offset: string }, { $scope: string }>(
      "SELECT partition_id, sequence_number, offset FROM checkpoints WHERE scope = $scope",
    ),
    putCheckpoint: db.query(
      `INSERT INTO checkpoints (scope, partition_id, sequence_number, offset) VALUES ($scope, $pid, $seq, $offset)
       ON CONFLICT (scope, partition_id) DO UPDATE SET sequence_number = excluded.sequence_number, offset = excluded.offset`,
    ),
    getSettings: db.query<{ value: string }, { $owner: string }>("SELECT value FROM settings WHERE owner = $owner"),
    putSettings: db.query(
      "INSERT INTO settings (owner, value) VALUES ($owner, $value) ON CONFLICT (owner) DO UPDATE SET value = excluded.value",
    ),
  };
}

export type Statements = ReturnType<typeof prepareStatements>;
