import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import type { Chat, Message } from "../records";
import { decodeChatCursor, decodeMessageCursor, encodeChatCursor, encodeMessageCursor } from "./cursor";
import { StoreUnavailableError } from "./errors";
import { mergeSettings } from "./merge";
import type { Checkpoint, Ownership, Page, Store } from "./store";

// Tables as a fresh file gets them. An older file is brought up to date by migrate() below, and the
// indexes are created after that (some are on columns an older file gains only there).
const TABLES = `
CREATE TABLE IF NOT EXISTS chats (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, active INTEGER NOT NULL,
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL, device_id TEXT
);
CREATE TABLE IF NOT EXISTS messages (
  chat_id TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE, id TEXT NOT NULL,
  role TEXT NOT NULL, content TEXT NOT NULL, created_at TEXT NOT NULL,
  status TEXT, device_id TEXT, parent_id TEXT, lease_owner TEXT, lease_until INTEGER, lease_seq INTEGER,
  PRIMARY KEY (chat_id, id)
);
CREATE TABLE IF NOT EXISTS processed_messages (
  id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL, owner TEXT, lease_until INTEGER, done INTEGER NOT NULL DEFAULT 1
);
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

/** Columns added since the first release: `ALTER TABLE ... ADD COLUMN` on files that lack them. */
const ADDED_COLUMNS: Record<string, Record<string, string>> = {
  messages: { parent_id: "TEXT", lease_owner: "TEXT", lease_until: "INTEGER", lease_seq: "INTEGER" },
  // Rows written by claimProcessed before claims existed are finished work: done defaults to 1.
  processed_messages: { owner: "TEXT", lease_until: "INTEGER", done: "INTEGER NOT NULL DEFAULT 1" },
};

const INDEXES = `
CREATE INDEX IF NOT EXISTS chats_recent ON chats (updated_at DESC, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS chats_device ON chats (device_id) WHERE device_id IS NOT NULL;
DROP INDEX IF EXISTS messages_time;
CREATE INDEX IF NOT EXISTS messages_page ON messages (chat_id, created_at, id);
-- (created_at, id) too, so "the newest reply to this question" needs no sort.
CREATE INDEX IF NOT EXISTS messages_parent ON messages (chat_id, parent_id, created_at, id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_streaming ON messages (lease_until) WHERE status = 'streaming';
`;

function migrate(db: Database) {
  db.transaction(() => {
    for (const [table, columns] of Object.entries(ADDED_COLUMNS)) {
      const have = new Set(db.query<{ name: string }, []>(`SELECT name FROM pragma_table_info('${table}')`).all().map((c) => c.name));
      for (const [column, type] of Object.entries(columns)) {
        if (!have.has(column)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`);
      }
    }
  }).immediate();
}

type ChatRow = { id: string; name: string; active: number; created_at: string; updated_at: string; device_id: string | null };
type MessageRow = {
  chat_id: string; id: string; role: Message["role"]; content: string; created_at: string;
  status: string | null; device_id: string | null; parent_id: string | null;
  lease_owner: string | null; lease_until: number | null; lease_seq: number | null;
};
type ClaimRow = { owner: string | null; lease_until: number | null; done: number; expires_at: number };

const toChat = (r: ChatRow): Chat => ({
  id: r.id,
  name: r.name,
  active: r.active === 1,
  created_at: r.created_at,
  updated_at: r.updated_at,
  ...(r.device_id === null ? {} : { device_id: r.device_id }),
});

// Only the fields that were written come back, so a record reads back exactly equal to itself.
const toMessage = (r: MessageRow): Message => ({
  id: r.id,
  chat_id: r.chat_id,
  role: r.role,
  content: r.content,
  created_at: r.created_at,
  ...(r.status === null ? {} : { status: r.status as Message["status"] }),
  ...(r.device_id === null ? {} : { device_id: r.device_id }),
  ...(r.parent_id === null ? {} : { parent_id: r.parent_id }),
  ...(r.lease_owner === null ? {} : { lease: { owner: r.lease_owner, until: r.lease_until ?? 0, seq: r.lease_seq ?? 0 } }),
});

const chatParams = (c: Chat) => ({
  $id: c.id, $name: c.name, $active: c.active ? 1 : 0,
  $created_at: c.created_at, $updated_at: c.updated_at, $device_id: c.device_id ?? null,
});

const messageParams = (m: Message) => ({
  $chat_id: m.chat_id, $id: m.id, $role: m.role, $content: m.content,
  $created_at: m.created_at, $status: m.status ?? null, $device_id: m.device_id ?? null,
  $parent_id: m.parent_id ?? null, $lease_owner: m.lease?.owner ?? null,
  $lease_until: m.lease?.until ?? null, $lease_seq: m.lease?.seq ?? null,
});

const MESSAGE_COLUMNS = "chat_id, id, role, content, created_at, status, device_id, parent_id, lease_owner, lease_until, lease_seq";
const MESSAGE_VALUES = "$chat_id, $id, $role, $content, $created_at, $status, $device_id, $parent_id, $lease_owner, $lease_until, $lease_seq";

/** `path` ":memory:" gives a private in-memory database (tests of pure logic only). */
export function openSqliteStore(path: string): Store {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path, { create: true, strict: true });
  db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;");
  db.exec(TABLES);
  migrate(db);
  db.exec(INDEXES);

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
    // One statement: only the named columns change, and activity time never goes backwards.
    patchChat: db.query<ChatRow, { $id: string; $name: string | null; $u: string | null }>(
      `UPDATE chats SET name = coalesce($name, name), updated_at = max(updated_at, coalesce($u, updated_at))
       WHERE id = $id RETURNING *`,
    ),
    deleteChat: db.query("DELETE FROM chats WHERE id = $id"),
    deleteMessages: db.query("DELETE FROM messages WHERE chat_id = $id"),
    deviceChat: db.query<ChatRow, { $device_id: string }>(
      "SELECT * FROM chats WHERE device_id = $device_id AND active = 1 ORDER BY updated_at DESC LIMIT 1",
    ),
    addMessage: db.query(`INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES (${MESSAGE_VALUES}) ON CONFLICT DO NOTHING`),
    putMessage: db.query(
      `INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES (${MESSAGE_VALUES})
       ON CONFLICT (chat_id, id) DO UPDATE SET role = excluded.role, content = excluded.content,
       created_at = excluded.created_at, status = excluded.status, device_id = excluded.device_id,
       parent_id = excluded.parent_id, lease_owner = excluded.lease_owner, lease_until = excluded.lease_until,
       lease_seq = excluded.lease_seq`,
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

  // The chat first, then its messages (the foreign key cascade, and an explicit sweep for rows an
  // older file may hold without one), in one transaction.
  const deleteChatTx = db.transaction((id: string) => {
    const existed = q.deleteChat.run({ $id: id }).changes > 0;
    q.deleteMessages.run({ $id: id });
    return existed;
  });

  const claimTx = db.transaction((id: string, owner: string, leaseMs: number): "claimed" | "held" | "done" => {
    const now = Date.now();
    if (q.claimMessage.run({ $id: id, $owner: owner, $until: now + leaseMs, $now: now }).changes > 0) return "claimed";
    return q.getClaim.get({ $id: id })?.done === 1 ? "done" : "held";
  });

  const patchSettingsTx = db.transaction((owner: string, patch: Record<string, unknown>) => {
    const row = q.getSettings.get({ $owner: owner });
    const next = mergeSettings(row ? (JSON.parse(row.value) as Record<string, unknown>) : {}, patch);
    q.putSettings.run({ $owner: owner, $value: JSON.stringify(next) });
    return next;
  });

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

  /** Newest `limit` rows (fetched one extra to learn whether older ones exist), returned oldest first. */
  const page = (rows: MessageRow[], limit: number, chatId: string): Page<Message> => {
    const n = Math.min(rows.length, limit);
    const items: Message[] = new Array(n);
    for (let i = 0; i < n; i++) items[i] = toMessage(rows[n - 1 - i]!);
    const oldest = items[0];
    return rows.length > limit && oldest ? { items, cursor: encodeMessageCursor(chatId, oldest) } : { items };
  };

  const byPosition = (a: Message, b: Message) =>
    a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;

  return {
    kind: "sqlite",
    ping: guard(() => void db.query("SELECT 1").get()),
    close: async () => db.close(),

    listChats: guard(({ limit, cursor }) => {
      const after = cursor === undefined ? undefined : decodeChatCursor(cursor);
      const rows = after
        ? q.listChatsAfter.all({ $limit: limit + 1, $u: after.updated_at, $c: after.created_at, $id: after.id })
        : q.listChats.all({ $limit: limit + 1 });
      const items = rows.slice(0, limit).map(toChat);
      const last = items.at(-1);
      return rows.length > limit && last ? { items, cursor: encodeChatCursor(last) } : { items };
    }),
    getChat: guard((id) => {
      const row = q.getChat.get({ $id: id });
      return row ? toChat(row) : undefined;
    }),
    createChat: guard((chat) => void q.insertChat.run(chatParams(chat))),
    updateChat: guard((chat) => q.updateChat.run(chatParams(chat)).changes > 0),
    patchChat: guard((id, patch) => {
      const row = q.patchChat.get({ $id: id, $name: patch.name ?? null, $u: patch.updated_at ?? null });
      return row ? toChat(row) : undefined;
    }),
    deleteChat: guard((id) => deleteChatTx(id)),
    findDeviceChat: guard((deviceId) => {
      const row = q.deviceChat.get({ $device_id: deviceId });
      return row ? toChat(row) : undefined;
    }),

    addMessage: guard((m) => q.addMessage.run(messageParams(m)).changes > 0),
    putMessage: guard((m) => void q.putMessage.run(messageParams(m))),
    listMessages: guard((chatId, { limit, before }) => {
      if (limit <= 0) return [];
      const rows = before === undefined
        ? q.pageMessages.all({ $chat_id: chatId, $limit: limit })
        : q.pageMessagesBefore.all({ $chat_id: chatId, $limit: limit, $before: before });
      return page(rows, limit, chatId).items;
    }),
    pageMessages: guard((chatId, { limit, cursor, before }) => {
      // Checked before anything else: a bad cursor is the caller's error even on an empty chat.
      const after = cursor === undefined ? undefined : decodeMessageCursor(cursor, chatId);
      if (limit <= 0) return { items: [] };
      const rows = after
        ? q.pageMessagesAfter.all({ $chat_id: chatId, $limit: limit + 1, $t: after.created_at, $id: after.id })
        : before === undefined
          ? q.pageMessages.all({ $chat_id: chatId, $limit: limit + 1 })
          : q.pageMessagesBefore.all({ $chat_id: chatId, $limit: limit + 1, $before: before });
      return page(rows, limit, chatId);
    }),
    findReply: guard((chatId, questionId) => {
      const row = q.findReply.get({ $chat_id: chatId, $parent_id: questionId });
      return row ? toMessage(row) : undefined;
    }),
    finalizeStale: guard((now, chatId) => {
      const rows = chatId === undefined ? q.finalizeStale.all({ $now: now }) : q.finalizeStaleIn.all({ $now: now, $chat_id: chatId });
      return rows.map(toMessage).sort(byPosition);
    }),

    claimProcessed: guard((id, ttlSeconds) => {
      const now = Date.now();
      return q.claimProcessed.run({ $id: id, $expires_at: now + ttlSeconds * 1000, $now: now }).changes > 0;
    }),
    claimMessage: guard((id, owner, leaseMs) => claimTx.immediate(id, owner, leaseMs)),
    renewClaim: guard((id, owner, leaseMs) => {
      const until = Date.now() + leaseMs;
      return q.renewClaim.run({ $id: id, $owner: owner, $until: until }).changes > 0;
    }),
    completeClaim: guard((id, owner, ttlSeconds) =>
      void q.completeClaim.run({ $id: id, $owner: owner, $expires_at: Date.now() + ttlSeconds * 1000 }),
    ),
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
    patchSettings: guard((owner, patch) => patchSettingsTx.immediate(owner, patch)),
  };
}
