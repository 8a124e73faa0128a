import type { Database } from "bun:sqlite";
import type { Role, SearchHit } from "../../records";
import { decodeSearchCursor, ftsQuery, markTerms, nextSearchCursor, searchTerms, snippetOf } from "../search-text";
import type { Store } from "../store";

// Full-text search on SQLite: FTS5 over messages(content) and chats(name), tokenized with
// unicode61 and diacritics removed.
//
// Messages are indexed in batches, not as they are written: one FTS5 insert per message cost a
// send 0.3 ms for its question and 0.65 ms for its reply (issue 15), while a batch of many costs
// about what one does. A trigger only notes the row in `search_queue` (a primary-key insert); the
// queue is emptied into the index before every search and every INDEX_EVERY_MS, so a search always
// sees every message stored before it. A reply's "streaming" checkpoints are never indexed: a
// rewrite of one is not even queued, and the finished reply replaces it once.
// The messages index is contentless with contentless_delete (it keeps no copy of the text, and a
// row is removed by rowid); the chats index is external content, kept by triggers (chats change rarely).
// Both are keyed by the tables' rowids: never VACUUM the file without refilling them (docs/storage.md).

/** How often the queue is emptied into the index when nobody searches. */
export const INDEX_EVERY_MS = 30_000;

// Each row carries its chat's owner as one token (the owner's UTF-8 bytes in hex, `ownerKey`), and
// every search matches it inside the index query: FTS5 intersects the owner's rows with the terms'
// instead of matching every user's rows and filtering by owner after the join.
const MESSAGES_FTS =
  "CREATE VIRTUAL TABLE messages_fts USING fts5(content, owner, content='', contentless_delete=1, tokenize='unicode61 remove_diacritics 2')";
const CHATS_FTS =
  "CREATE VIRTUAL TABLE chats_fts USING fts5(name, owner, content='', contentless_delete=1, tokenize='unicode61 remove_diacritics 2')";

/**
 * What a message is found by: its text, then its tool calls' names and results (a reply that looked
 * something up is found by what came back). The snippet is cut from the same text.
 */
const SEARCH_TEXT = `m.content || coalesce((SELECT ' ' || group_concat(json_extract(value, '$.name') || ' ' || json_extract(value, '$.result'), ' ')
  FROM json_each(m.tool_calls)), '')`;

/** The owner as the index holds it: one token of hex digits (SQLite's hex() of the same text, lower-cased). */
export const ownerKey = (owner: string) => Buffer.from(owner, "utf8").toString("hex");

const TRIGGERS = `
DROP TRIGGER IF EXISTS messages_fts_insert;
DROP TRIGGER IF EXISTS messages_fts_delete;
DROP TRIGGER IF EXISTS messages_fts_update;
CREATE TABLE IF NOT EXISTS search_queue (id INTEGER PRIMARY KEY);
-- Not "INSERT OR IGNORE": an upsert's own ON CONFLICT overrides a trigger's conflict clause.
CREATE TRIGGER IF NOT EXISTS messages_search_insert AFTER INSERT ON messages WHEN new.status IS NOT 'streaming' BEGIN
  INSERT INTO search_queue (id) SELECT new.rowid WHERE NOT EXISTS (SELECT 1 FROM search_queue WHERE id = new.rowid);
END;
CREATE TRIGGER IF NOT EXISTS messages_search_update AFTER UPDATE OF content, status ON messages
WHEN old.status IS NOT 'streaming' OR new.status IS NOT 'streaming' BEGIN
  INSERT INTO search_queue (id) SELECT new.rowid WHERE NOT EXISTS (SELECT 1 FROM search_queue WHERE id = new.rowid);
END;
CREATE TRIGGER IF NOT EXISTS messages_search_delete AFTER DELETE ON messages BEGIN
  DELETE FROM messages_fts WHERE rowid = old.rowid;
  DELETE FROM search_queue WHERE id = old.rowid;
END;
DROP TRIGGER IF EXISTS chats_fts_insert;
DROP TRIGGER IF EXISTS chats_fts_delete;
DROP TRIGGER IF EXISTS chats_fts_update;
CREATE TRIGGER chats_fts_insert AFTER INSERT ON chats BEGIN
  INSERT INTO chats_fts (rowid, name, owner) VALUES (new.rowid, new.name, hex(new.owner));
END;
CREATE TRIGGER chats_fts_delete AFTER DELETE ON chats BEGIN
  DELETE FROM chats_fts WHERE rowid = old.rowid;
END;
-- patchChat names the column on every activity update; only a real rename touches the index.
CREATE TRIGGER chats_fts_update AFTER UPDATE OF name ON chats WHEN old.name IS NOT new.name BEGIN
  DELETE FROM chats_fts WHERE rowid = old.rowid;
  INSERT INTO chats_fts (rowid, name, owner) VALUES (new.rowid, new.name, hex(new.owner));
END;
`;

/**
 * Creates the search indexes and their triggers when the file lacks them (or has the earlier,
 * per-row messages index), filled from what it holds.
 */
export function ensureSearchIndex(db: Database) {
  db.transaction(() => {
    const sqlOf = (name: string) =>
      db.query<{ sql: string }, { $n: string }>("SELECT sql FROM sqlite_master WHERE name = $n").get({ $n: name })?.sql;
    // Files from before the owner column (or before contentless_delete) are indexed again, once.
    if (sqlOf("messages_fts") !== MESSAGES_FTS) {
      db.exec(
        "DROP TRIGGER IF EXISTS messages_fts_insert; DROP TRIGGER IF EXISTS messages_fts_delete; DROP TRIGGER IF EXISTS messages_fts_update; DROP TABLE IF EXISTS messages_fts;",
      );
      db.exec(MESSAGES_FTS);
      db.exec(`INSERT INTO messages_fts (rowid, content, owner)
        SELECT m.rowid, ${SEARCH_TEXT}, hex(c.owner) FROM messages m JOIN chats c ON c.id = m.chat_id WHERE m.status IS NOT 'streaming'`);
    }
    if (sqlOf("chats_fts") !== CHATS_FTS) {
      db.exec("DROP TRIGGER IF EXISTS chats_fts_insert; DROP TRIGGER IF EXISTS chats_fts_delete; DROP TRIGGER IF EXISTS chats_fts_update;");
      db.exec("DROP TABLE IF EXISTS chats_fts");
      db.exec(CHATS_FTS);
      db.exec("INSERT INTO chats_fts (rowid, name, owner) SELECT rowid, name, hex(owner) FROM chats");
    }
    db.exec(TRIGGERS);
  }).immediate();
}

/** Empties the queue into the messages index, in one transaction; how many rows it took. */
export function indexQueued(db: Database): () => number {
  const count = db.query<{ n: number }, []>("SELECT count(*) AS n FROM search_queue");
  const drop = db.query("DELETE FROM messages_fts WHERE rowid IN (SELECT id FROM search_queue)");
  const add = db.query(`INSERT INTO messages_fts (rowid, content, owner)
    SELECT m.rowid, ${SEARCH_TEXT}, hex(c.owner) FROM search_queue q JOIN messages m ON m.rowid = q.id JOIN chats c ON c.id = m.chat_id
    WHERE m.status IS NOT 'streaming'`);
  const clear = db.query("DELETE FROM search_queue");
  const tx = db.transaction(() => {
    const n = count.get()?.n ?? 0;
    if (n === 0) return 0;
    drop.run();
    add.run();
    clear.run();
    return n;
  });
  return () => tx.immediate();
}

type HitRow = {
  chat_id: string;
  chat_name: string;
  message_id: string | null;
  role: Role | null;
  content: string | null;
  created_at: string;
  rank: number;
};

export function searchOps(
  db: Database,
  guard: <A extends unknown[], R>(fn: (...a: A) => R) => (...a: A) => Promise<Awaited<R>>,
): Pick<Store, "searchChats"> {
  const flush = indexQueued(db);
  // bm25 is lower for better matches. A name hit counts double: a chat named after the topic is the
  // likeliest thing someone is looking for. The owner is part of the MATCH (its token in the owner
  // column), so FTS5 reads only the owner's rows; the join checks it again.
  const search = db.query<HitRow, { $owner: string; $names: string; $messages: string; $limit: number; $offset: number }>(`
    SELECT * FROM (
      SELECT c.id AS chat_id, c.name AS chat_name, NULL AS message_id, NULL AS role, NULL AS content,
             c.created_at AS created_at, 2 * bm25(chats_fts) AS rank
      FROM chats_fts JOIN chats c ON c.rowid = chats_fts.rowid
      WHERE chats_fts MATCH $names AND c.owner = $owner
      UNION ALL
      SELECT m.chat_id, c.name, m.id, m.role, ${SEARCH_TEXT}, m.created_at, bm25(messages_fts)
      FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid JOIN chats c ON c.id = m.chat_id
      WHERE messages_fts MATCH $messages AND c.owner = $owner AND m.status IS NOT 'streaming'
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
      // Everything stored before this search is found by it.
      flush();
      // The terms are matched in the text column only: an owner's hex token is never a hit.
      const mine = `owner : "${ownerKey(owner)}"`;
      const q = ftsQuery(terms);
      const rows = search.all({
        $owner: owner,
        $names: `${mine} AND name : (${q})`,
        $messages: `${mine} AND content : (${q})`,
        $limit: limit + 1,
        $offset: offset,
      });
      return { items: rows.slice(0, limit).map((r) => toHit(r, terms)), ...nextSearchCursor(terms, offset, limit, rows.length) };
    }),
  };
}
