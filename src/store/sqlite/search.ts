import type { Database } from "bun:sqlite";
import type { Role, SearchHit } from "../../records";
import { decodeSearchCursor, ftsQuery, markTerms, nextSearchCursor, searchTerms, snippetOf } from "../search-text";
import type { Store } from "../store";

// Full-text search on SQLite: FTS5 tables over messages(content) and chats(name) that store only
// the index (external content: the text stays in its own table), kept in step by triggers.
//
// A reply's "streaming" checkpoints are rewritten every second while it generates; indexing each
// would cost the hot path for text nobody may search yet. The triggers index a message only once
// it is not streaming, and remove from the index exactly what was put there. For that reason the
// index is never filled with FTS5's 'rebuild' (which would take the checkpoints too): a file from
// before search existed is filled with the same rule in one INSERT ... SELECT.
// The index is keyed by the tables' rowids: never VACUUM the file without refilling it (docs/storage.md).

const TABLES = `
CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE chats_fts USING fts5(name, content='chats', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2');
`;

const TRIGGERS = `
CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages WHEN new.status IS NOT 'streaming' BEGIN
  INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages WHEN old.status IS NOT 'streaming' BEGIN
  INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF content, status ON messages
WHEN old.status IS NOT 'streaming' OR new.status IS NOT 'streaming' BEGIN
  INSERT INTO messages_fts (messages_fts, rowid, content) SELECT 'delete', old.rowid, old.content WHERE old.status IS NOT 'streaming';
  INSERT INTO messages_fts (rowid, content) SELECT new.rowid, new.content WHERE new.status IS NOT 'streaming';
END;
CREATE TRIGGER IF NOT EXISTS chats_fts_insert AFTER INSERT ON chats BEGIN
  INSERT INTO chats_fts (rowid, name) VALUES (new.rowid, new.name);
END;
CREATE TRIGGER IF NOT EXISTS chats_fts_delete AFTER DELETE ON chats BEGIN
  INSERT INTO chats_fts (chats_fts, rowid, name) VALUES ('delete', old.rowid, old.name);
END;
-- patchChat names the column on every activity update; only a real rename touches the index.
CREATE TRIGGER IF NOT EXISTS chats_fts_update AFTER UPDATE OF name ON chats WHEN old.name IS NOT new.name BEGIN
  INSERT INTO chats_fts (chats_fts, rowid, name) VALUES ('delete', old.rowid, old.name);
  INSERT INTO chats_fts (rowid, name) VALUES (new.rowid, new.name);
END;
`;

/** Creates the search index and its triggers when the file has none, filled from what it holds. */
export function ensureSearchIndex(db: Database) {
  db.transaction(() => {
    const have = db.query<{ n: number }, []>("SELECT count(*) AS n FROM sqlite_master WHERE name IN ('messages_fts', 'chats_fts')").get()?.n ?? 0;
    if (have < 2) {
      db.exec("DROP TABLE IF EXISTS messages_fts; DROP TABLE IF EXISTS chats_fts;");
      db.exec(TABLES);
      db.exec("INSERT INTO messages_fts (rowid, content) SELECT rowid, content FROM messages WHERE status IS NOT 'streaming'");
      db.exec("INSERT INTO chats_fts (rowid, name) SELECT rowid, name FROM chats");
    }
    db.exec(TRIGGERS);
  }).immediate();
}

type HitRow = {
  chat_id: string; chat_name: string; message_id: string | null; role: Role | null;
  content: string | null; created_at: string; rank: number;
};

export function searchOps(db: Database, guard: <A extends unknown[], R>(fn: (...a: A) => R) => (...a: A) => Promise<Awaited<R>>): Pick<Store, "searchChats"> {
  // bm25 is lower for better matches. A name hit counts double: a chat named after the topic is the
  // likeliest thing someone is looking for. The owner is checked through the chats join, so another
  // owner's rows are matched by FTS5 but never returned.
  const search = db.query<HitRow, { $owner: string; $q: string; $limit: number; $offset: number }>(`
    SELECT * FROM (
      SELECT c.id AS chat_id, c.name AS chat_name, NULL AS message_id, NULL AS role, NULL AS content,
             c.created_at AS created_at, 2 * bm25(chats_fts) AS rank
      FROM chats_fts JOIN chats c ON c.rowid = chats_fts.rowid
      WHERE chats_fts MATCH $q AND c.owner = $owner
      UNION ALL
      SELECT m.chat_id, c.name, m.id, m.role, m.content, m.created_at, bm25(messages_fts)
      FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid JOIN chats c ON c.id = m.chat_id
      WHERE messages_fts MATCH $q AND c.owner = $owner AND m.status IS NOT 'streaming'
    ) ORDER BY rank, created_at DESC, chat_id, message_id LIMIT $limit OFFSET $offset`);

  const toHit = (r: HitRow, terms: string[]): SearchHit => {
    const text = r.content ?? r.chat_name;
    return {
      chatId: r.chat_id,
      chatName: r.chat_name,
      ...(r.message_id === null ? {} : { messageId: r.message_id }),
      ...(r.role === null ? {} : { role: r.role }),
      created_at: r.created_at,
      ...snippetOf(text, markTerms(text, terms).spans),
    };
  };

  return {
    searchChats: guard((owner: string, query: string, { limit, cursor }: { limit: number; cursor?: string }) => {
      const terms = searchTerms(query);
      const offset = decodeSearchCursor(cursor, terms);
      if (terms.length === 0 || limit <= 0) return { items: [] };
      const rows = search.all({ $owner: owner, $q: ftsQuery(terms), $limit: limit + 1, $offset: offset });
      return { items: rows.slice(0, limit).map((r) => toHit(r, terms)), ...nextSearchCursor(terms, offset, limit, rows.length) };
    }),
  };
}
