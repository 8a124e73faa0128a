import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { ensureSearchIndex } from "./search";

// Tables as a fresh file gets them. An older file is brought up to date by migrate() below, and the
// indexes are created after that (some are on columns an older file gains only there).
const TABLES = `
CREATE TABLE IF NOT EXISTS chats (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL DEFAULT 'default', name TEXT NOT NULL, active INTEGER NOT NULL,
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL, device_id TEXT, selected TEXT
);
CREATE TABLE IF NOT EXISTS messages (
  chat_id TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE, id TEXT NOT NULL,
  role TEXT NOT NULL, content TEXT NOT NULL, created_at TEXT NOT NULL,
  status TEXT, device_id TEXT, parent_id TEXT, lease_owner TEXT, lease_until INTEGER, lease_seq INTEGER,
  tool_calls TEXT,
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
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL);
-- Personal tokens by their SHA-256 (hex); the token itself is never stored.
CREATE TABLE IF NOT EXISTS api_tokens (
  hash TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_tokens_user ON api_tokens (user_id);
CREATE TABLE IF NOT EXISTS device_owners (device_id TEXT PRIMARY KEY, owner TEXT NOT NULL);
-- One row per model call (src/chat/usage.ts); the id is the same on every replica, so a row is written once.
CREATE TABLE IF NOT EXISTS usage (
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL, chat_id TEXT NOT NULL, message_id TEXT NOT NULL, model TEXT NOT NULL,
  kind TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, estimated INTEGER NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_user_time ON usage (user_id, created_at);
CREATE INDEX IF NOT EXISTS usage_time ON usage (created_at);
-- Each user's tokens per UTC day, kept with every record written (a budget check reads one row, not the day's records).
CREATE TABLE IF NOT EXISTS usage_daily (user_id TEXT NOT NULL, day TEXT NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (user_id, day));
-- A user's own tokens per day (NULL: no limit); no row: USER_TOKENS_PER_DAY applies.
CREATE TABLE IF NOT EXISTS user_limits (user_id TEXT PRIMARY KEY, tokens_per_day INTEGER);
-- Organising chats (organise.ts): folders, pins and which folder a chat is in, per owner.
CREATE TABLE IF NOT EXISTS folders (owner TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (owner, id));
CREATE TABLE IF NOT EXISTS chat_pins (owner TEXT NOT NULL, chat_id TEXT NOT NULL, PRIMARY KEY (owner, chat_id));
CREATE TABLE IF NOT EXISTS chat_folders (owner TEXT NOT NULL, chat_id TEXT NOT NULL, folder_id TEXT NOT NULL, PRIMARY KEY (owner, chat_id));
-- Temporary chats: gone at expires_at, or once nobody renewed alive_until (their owner left).
CREATE TABLE IF NOT EXISTS temporary_chats (
  owner TEXT NOT NULL, chat_id TEXT NOT NULL, expires_at TEXT NOT NULL, alive_until TEXT NOT NULL, PRIMARY KEY (owner, chat_id)
);
CREATE INDEX IF NOT EXISTS temporary_due ON temporary_chats (expires_at);
CREATE INDEX IF NOT EXISTS temporary_alive ON temporary_chats (alive_until);
-- One rating per user and reply version.
CREATE TABLE IF NOT EXISTS feedback (
  user_id TEXT NOT NULL, chat_id TEXT NOT NULL, message_id TEXT NOT NULL, rating TEXT NOT NULL, comment TEXT,
  model TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (user_id, chat_id, message_id)
);
CREATE INDEX IF NOT EXISTS feedback_time ON feedback (updated_at);
-- Shared snapshots: the messages as JSON, frozen when shared.
CREATE TABLE IF NOT EXISTS shares (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, chat_id TEXT NOT NULL, name TEXT NOT NULL, public INTEGER NOT NULL,
  up_to TEXT, messages TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shares_owner ON shares (owner, created_at);
`;

/** Columns added since the first release: `ALTER TABLE ... ADD COLUMN` on files that lack them. */
const ADDED_COLUMNS: Record<string, Record<string, string>> = {
  // Chats from before users existed belong to the legacy API_TOKEN user (src/auth/identity.ts).
  // A branched chat's current message (src/chat/branches.ts); NULL on every other chat.
  chats: { owner: "TEXT NOT NULL DEFAULT 'default'", selected: "TEXT" },
  messages: { parent_id: "TEXT", lease_owner: "TEXT", lease_until: "INTEGER", lease_seq: "INTEGER", tool_calls: "TEXT" },
  // Rows written by claimProcessed before claims existed are finished work: done defaults to 1.
  processed_messages: { owner: "TEXT", lease_until: "INTEGER", done: "INTEGER NOT NULL DEFAULT 1" },
};

const INDEXES = `
-- Listing is per owner, most recent first.
DROP INDEX IF EXISTS chats_recent;
CREATE INDEX IF NOT EXISTS chats_owner_recent ON chats (owner, updated_at DESC, created_at DESC, id DESC);
DROP INDEX IF EXISTS chats_device;
CREATE INDEX IF NOT EXISTS chats_owner_device ON chats (owner, device_id) WHERE device_id IS NOT NULL;
DROP INDEX IF EXISTS messages_time;
CREATE INDEX IF NOT EXISTS messages_page ON messages (chat_id, created_at, id);
-- (created_at, id) too, so "the newest reply to this question" needs no sort.
CREATE INDEX IF NOT EXISTS messages_parent ON messages (chat_id, parent_id, created_at, id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_streaming ON messages (lease_until) WHERE status = 'streaming';
`;

function migrate(db: Database) {
  db.transaction(() => {
    for (const [table, columns] of Object.entries(ADDED_COLUMNS)) {
      const have = new Set(
        db
          .query<{ name: string }, []>(`SELECT name FROM pragma_table_info('${table}')`)
          .all()
          .map((c) => c.name),
      );
      for (const [column, type] of Object.entries(columns)) {
        if (!have.has(column)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`);
      }
    }
  }).immediate();
}

/** The file opened (created if missing) and brought up to the current schema. */
export function openDatabase(path: string): Database {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path, { create: true, strict: true });
  db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;");
  db.exec(TABLES);
  migrate(db);
  db.exec(INDEXES);
  // Full-text search (search.ts): created, and filled from existing rows, on a file that has none.
  ensureSearchIndex(db);
  return db;
}
