import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSqliteStore } from "../src/store/sqlite";
import { isStoreUnavailable } from "../src/store/errors";
import { allPages, chatFixture, isoAt, messageFixture, storeContract } from "./store.contract";

storeContract("sqlite", async () => {
  const dir = mkdtempSync(join(tmpdir(), "pichat-sqlite-"));
  const store = openSqliteStore(join(dir, "nested", "pichat.db"));
  return {
    store,
    cleanup: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

test("sqlite: data survives reopening the file, in WAL mode", async () => {
  const dir = mkdtempSync(join(tmpdir(), "pichat-sqlite-"));
  const path = join(dir, "pichat.db");
  const chat = chatFixture();
  const first = openSqliteStore(path);
  await first.createChat("default", chat);
  await first.close();
  const second = openSqliteStore(path);
  expect(await second.getChat("default", chat.id)).toEqual(chat);
  const { Database } = await import("bun:sqlite");
  const raw = new Database(path, { readonly: true });
  expect(raw.query<{ journal_mode: string }, []>("PRAGMA journal_mode").get()?.journal_mode).toBe("wal");
  raw.close();
  await second.close();
  rmSync(dir, { recursive: true, force: true });
});

test("sqlite: a closed database reports StoreUnavailableError", async () => {
  const store = openSqliteStore(":memory:");
  await store.close();
  const err = await store.ping().catch((e: unknown) => e);
  expect(isStoreUnavailable(err)).toBe(true);
});

// The schema files were created with before parent_id, leases and claims existed.
const FIRST_SCHEMA = `
CREATE TABLE chats (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, active INTEGER NOT NULL,
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL, device_id TEXT
);
CREATE INDEX chats_recent ON chats (updated_at DESC, created_at DESC, id DESC);
CREATE TABLE messages (
  chat_id TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE, id TEXT NOT NULL,
  role TEXT NOT NULL, content TEXT NOT NULL, created_at TEXT NOT NULL,
  status TEXT, device_id TEXT, PRIMARY KEY (chat_id, id)
);
CREATE INDEX messages_time ON messages (chat_id, created_at);
CREATE TABLE processed_messages (id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE settings (owner TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

test("sqlite: a file from the first schema is migrated on open; its data reads back and the new features work", async () => {
  const { Database } = await import("bun:sqlite");
  const dir = mkdtempSync(join(tmpdir(), "pichat-sqlite-"));
  const path = join(dir, "old.db");
  const old = new Database(path, { create: true });
  old.exec(FIRST_SCHEMA);
  const chat = chatFixture();
  old.query("INSERT INTO chats VALUES (?, ?, 1, ?, ?, NULL)").run(chat.id, chat.name, chat.created_at, chat.updated_at);
  const m = messageFixture(chat.id, { created_at: isoAt(0), id: "b" });
  old.query("INSERT INTO messages VALUES (?, ?, ?, ?, ?, NULL, NULL)").run(m.chat_id, m.id, m.role, m.content, m.created_at);
  old.query("INSERT INTO processed_messages VALUES (?, ?)").run("seen-before", Date.now() + 3_600_000);
  old.close();

  const store = openSqliteStore(path);
  expect(await store.listMessages(chat.id, { limit: 10 })).toStrictEqual([m]);
  // A message id recorded by the old claimProcessed is finished work for the new claims.
  expect(await store.claimMessage("seen-before", "a", 60_000)).toBe("done");
  expect(await store.claimMessage("new-one", "a", 60_000)).toBe("claimed");
  const first = messageFixture(chat.id, { created_at: isoAt(0), id: "a" });
  await store.addMessage(first);
  const reply = {
    ...messageFixture(chat.id, { role: "assistant", created_at: isoAt(1) }),
    parent_id: m.id,
    status: "streaming" as const,
    lease: { owner: "x", until: 1, seq: 0 },
  };
  await store.putMessage(reply);
  expect((await allPages(store, chat.id, 1)).reverse().flat()).toStrictEqual([first, m, reply]);
  expect(await store.findReply(chat.id, m.id)).toStrictEqual(reply);
  await store.close();

  const raw = new Database(path, { readonly: true });
  const columns = (t: string) =>
    raw
      .query<{ name: string }, []>(`SELECT name FROM pragma_table_info('${t}')`)
      .all()
      .map((c) => c.name);
  expect(columns("messages")).toEqual(expect.arrayContaining(["parent_id", "lease_owner", "lease_until", "lease_seq"]));
  expect(columns("processed_messages")).toEqual(expect.arrayContaining(["owner", "lease_until", "done"]));
  const indexes = raw
    .query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'")
    .all()
    .map((r) => r.name);
  expect(indexes).toEqual(expect.arrayContaining(["messages_page", "messages_parent", "messages_streaming"]));
  expect(indexes).not.toContain("messages_time");
  // The history page and reply lookup are index searches, not scans or sorts.
  const plan = (sql: string) =>
    raw
      .query<{ detail: string }, []>(`EXPLAIN QUERY PLAN ${sql}`)
      .all()
      .map((r) => r.detail)
      .join("; ");
  const pagePlan = plan(
    `SELECT * FROM messages WHERE chat_id = 'c' AND (created_at, id) < ('t', 'i') ORDER BY created_at DESC, id DESC LIMIT 5`,
  );
  expect(pagePlan).toContain("messages_page");
  expect(pagePlan).not.toContain("TEMP B-TREE");
  expect(
    plan(`SELECT * FROM messages WHERE chat_id = 'c' AND parent_id = 'q' AND role = 'assistant' ORDER BY created_at DESC, id DESC LIMIT 1`),
  ).toContain("messages_parent");
  raw.close();
  // Opening a migrated file again is a no-op.
  await openSqliteStore(path).close();
  rmSync(dir, { recursive: true, force: true });
});
