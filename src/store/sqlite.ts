import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import type { Chat, Message } from "../records";
import { decodeCursor, encodeCursor } from "./cursor";
import { StoreUnavailableError } from "./errors";
import type { Checkpoint, Ownership, Store } from "./store";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS chats (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, active INTEGER NOT NULL,
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL, device_id TEXT
);
CREATE INDEX IF NOT EXISTS chats_recent ON chats (updated_at DESC, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS chats_device ON chats (device_id) WHERE device_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS messages (
  chat_id TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE, id TEXT NOT NULL,
  role TEXT NOT NULL, content TEXT NOT NULL, created_at TEXT NOT NULL,
  status TEXT, device_id TEXT, PRIMARY KEY (chat_id, id)
);
CREATE INDEX IF NOT EXISTS messages_time ON messages (chat_id, created_at);
CREATE TABLE IF NOT EXISTS processed_messages (id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ownership (
  scope TEXT NOT NULL, partition_id TEXT NOT NULL, owner_id TEXT NOT NULL,
  etag TEXT NOT NULL, modified_ms INTEGER NOT NULL, PRIMARY KEY (scope, partition_id)
);
CREATE TABLE IF NOT EXISTS checkpoints (
  scope TEXT NOT NULL, partition_id TEXT NOT NULL, sequence_number INTEGER NOT NULL,
  offset TEXT NOT NULL, PRIMARY KEY (scope, partition_id)
);
CREATE TABLE IF NOT EXISTS settings (owner TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

type ChatRow = { id: string; name: string; active: number; created_at: string; updated_at: string; device_id: string | null };
type MessageRow = Omit<Message, "status" | "device_id"> & { status: string | null; device_id: string | null };

const toChat = (r: ChatRow): Chat => ({
  id: r.id,
  name: r.name,
  active: r.active === 1,
  created_at: r.created_at,
  updated_at: r.updated_at,
  ...(r.device_id === null ? {} : { device_id: r.device_id }),
});

const toMessage = (r: MessageRow): Message => ({
  id: r.id,
  chat_id: r.chat_id,
  role: r.role,
  content: r.content,
  created_at: r.created_at,
  ...(r.status === null ? {} : { status: r.status as Message["status"] }),
  ...(r.device_id === null ? {} : { device_id: r.device_id }),
});

const chatParams = (c: Chat) => ({
  $id: c.id, $name: c.name, $active: c.active ? 1 : 0,
  $created_at: c.created_at, $updated_at: c.updated_at, $device_id: c.device_id ?? null,
});

const messageParams = (m: Message) => ({
  $chat_id: m.chat_id, $id: m.id, $role: m.role, $content: m.content,
  $created_at: m.created_at, $status: m.status ?? null, $device_id: m.device_id ?? null,
});

/** `path` ":memory:" gives a private in-memory database (tests of pure logic only). */
export function openSqliteStore(path: string): Store {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path, { create: true, strict: true });
  db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;");
  db.exec(SCHEMA);

  const q = {
    listChats: db.query<ChatRow, { $limit: number }>(
      "SELECT * FROM chats ORDER BY updated_at DESC, created_at DESC, id DESC LIMIT $limit",
    ),
    listChatsAfter: db.query<ChatRow, { $limit: number; $u: string; $c: string; $id: string }>(
      `SELECT * FROM chats WHERE (updated_at, created_at, id) < ($u, $c, $id)
       ORDER BY updated_at DESC, created_at DESC, id DESC LIMIT $limit`,
    ),
    getChat: db.query<ChatRow, { $id: string }>("SELECT * FROM chats WHERE id = $id"),
    insertChat: db.query(
      `INSERT INTO chats (id, name, active, created_at, updated_at, device_id)
       VALUES ($id, $name, $active, $created_at, $updated_at, $device_id)`,
    ),
    updateChat: db.query(
      `UPDATE chats SET name = $name, active = $active, created_at = $created_at,
       updated_at = $updated_at, device_id = $device_id WHERE id = $id`,
    ),
    deleteChat: db.query("DELETE FROM chats WHERE id = $id"),
    deviceChat: db.query<ChatRow, { $device_id: string }>(
      "SELECT * FROM chats WHERE device_id = $device_id AND active = 1 ORDER BY updated_at DESC LIMIT 1",
    ),
    addMessage: db.query(
      `INSERT INTO messages (chat_id, id, role, content, created_at, status, device_id)
       VALUES ($chat_id, $id, $role, $content, $created_at, $status, $device_id) ON CONFLICT DO NOTHING`,
    ),
    putMessage: db.query(
      `INSERT INTO messages (chat_id, id, role, content, created_at, status, device_id)
       VALUES ($chat_id, $id, $role, $content, $created_at, $status, $device_id)
       ON CONFLICT (chat_id, id) DO UPDATE SET role = excluded.role, content = excluded.content,
       created_at = excluded.created_at, status = excluded.status, device_id = excluded.device_id`,
    ),
    // Newest first straight off the (chat_id, created_at) index; reversed in JS rather than
    // re-sorted by SQLite through a temp B-tree.
    listMessages: db.query<MessageRow, { $chat_id: string; $limit: number }>(
      "SELECT rowid AS r, * FROM messages WHERE chat_id = $chat_id ORDER BY created_at DESC, r DESC LIMIT $limit",
    ),
    listMessagesBefore: db.query<MessageRow, { $chat_id: string; $limit: number; $before: string }>(
      `SELECT rowid AS r, * FROM messages WHERE chat_id = $chat_id AND created_at < $before
       ORDER BY created_at DESC, r DESC LIMIT $limit`,
    ),
    claimProcessed: db.query(
      `INSERT INTO processed_messages (id, expires_at) VALUES ($id, $expires_at)
       ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at WHERE processed_messages.expires_at <= $now`,
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

  const deleteChatTx = db.transaction((id: string) => q.deleteChat.run({ $id: id }).changes > 0);

  // bun:sqlite is synchronous; the async signatures keep the contract the same as Cosmos.
  // A closed or broken database file is the embedded equivalent of an unreachable server.
  const guard = <A extends unknown[], R>(fn: (...a: A) => R) => async (...a: A): Promise<Awaited<R>> => {
    try {
      return await fn(...a);
    } catch (e) {
      if (e instanceof Error && /closed|SQLITE_(IOERR|CANTOPEN|BUSY|LOCKED)/i.test(`${e.message} ${(e as { code?: string }).code ?? ""}`)) {
        throw new StoreUnavailableError("the SQLite database is unavailable", { cause: e });
      }
      throw e;
    }
  };

  return {
    kind: "sqlite",
    ping: guard(() => void db.query("SELECT 1").get()),
    close: async () => db.close(),

    listChats: guard(({ limit, cursor }) => {
      const after = cursor === undefined ? undefined : decodeCursor(cursor, 3);
      const rows = after
        ? q.listChatsAfter.all({ $limit: limit + 1, $u: after[0]!, $c: after[1]!, $id: after[2]! })
        : q.listChats.all({ $limit: limit + 1 });
      const items = rows.slice(0, limit).map(toChat);
      const last = items.at(-1);
      return rows.length > limit && last
        ? { items, cursor: encodeCursor([last.updated_at, last.created_at, last.id]) }
        : { items };
    }),
    getChat: guard((id) => {
      const row = q.getChat.get({ $id: id });
      return row ? toChat(row) : undefined;
    }),
    createChat: guard((chat) => void q.insertChat.run(chatParams(chat))),
    updateChat: guard((chat) => q.updateChat.run(chatParams(chat)).changes > 0),
    deleteChat: guard((id) => deleteChatTx(id)),
    findDeviceChat: guard((deviceId) => {
      const row = q.deviceChat.get({ $device_id: deviceId });
      return row ? toChat(row) : undefined;
    }),

    addMessage: guard((m) => q.addMessage.run(messageParams(m)).changes > 0),
    putMessage: guard((m) => void q.putMessage.run(messageParams(m))),
    listMessages: guard((chatId, { limit, before }) => {
      const rows = before === undefined
        ? q.listMessages.all({ $chat_id: chatId, $limit: limit })
        : q.listMessagesBefore.all({ $chat_id: chatId, $limit: limit, $before: before });
      // toMessage copies the named columns only, so the rowid column `r` is left behind.
      const out: Message[] = new Array(rows.length);
      for (let i = 0; i < rows.length; i++) out[i] = toMessage(rows[rows.length - 1 - i]!);
      return out;
    }),

    claimProcessed: guard((id, ttlSeconds) => {
      const now = Date.now();
      return q.claimProcessed.run({ $id: id, $expires_at: now + ttlSeconds * 1000, $now: now }).changes > 0;
    }),
    purgeProcessed: guard(() => q.purgeProcessed.run({ $now: Date.now() }).changes),

    listOwnership: guard((scope) =>
      q.listOwnership.all({ $scope: scope }).map((r) => ({
        partitionId: r.partition_id, ownerId: r.owner_id, etag: r.etag, lastModifiedTimeInMs: r.modified_ms,
      })),
    ),
    claimOwnership: guard((scope, partitionId, ownerId, etag): Ownership | undefined => {
      const next = { $scope: scope, $pid: partitionId, $owner: ownerId, $etag: crypto.randomUUID(), $ms: Date.now() };
      const changed = etag === undefined
        ? q.claimNew.run(next).changes
        : q.claimExisting.run({ ...next, $expected: etag }).changes;
      return changed > 0 ? { partitionId, ownerId, etag: next.$etag, lastModifiedTimeInMs: next.$ms } : undefined;
    }),
    listCheckpoints: guard((scope): Checkpoint[] =>
      q.listCheckpoints.all({ $scope: scope }).map((r) => ({
        partitionId: r.partition_id, sequenceNumber: r.sequence_number, offset: r.offset,
      })),
    ),
    putCheckpoint: guard((scope, cp) =>
      void q.putCheckpoint.run({ $scope: scope, $pid: cp.partitionId, $seq: cp.sequenceNumber, $offset: cp.offset }),
    ),

    getSettings: guard((owner) => {
      const row = q.getSettings.get({ $owner: owner });
      return row ? (JSON.parse(row.value) as Record<string, unknown>) : undefined;
    }),
    putSettings: guard((owner, settings) => void q.putSettings.run({ $owner: owner, $value: JSON.stringify(settings) })),
  };
}
