import { Database } from "bun:sqlite";
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSqliteStore } from "../src/store/sqlite";
import { guardFor } from "../src/store/sqlite/guard";
import { chatFixture, messageFixture } from "./store.contract";

// The SQLite store commits the writes of one event-loop turn together (src/store/sqlite/guard.ts).
// Seen on the file itself: the WAL's frames, and a second connection reading it.

const dir = mkdtempSync(join(tmpdir(), "pichat-group-commit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Pages appended to the WAL so far (each frame is a 24-byte header and one 4096-byte page). */
const walFrames = (path: string) => Math.max(0, (statSync(`${path}-wal`).size - 32) / (4096 + 24));

async function withStore(name: string, fn: (store: ReturnType<typeof openSqliteStore>, path: string) => Promise<void>) {
  const path = join(dir, `${name}.db`);
  const store = openSqliteStore(path);
  try {
    await fn(store, path);
  } finally {
    await store.close();
  }
}

test("fifty writes of one turn are one commit; awaited one by one they are fifty", async () => {
  const frames: Record<string, number> = {};
  for (const mode of ["together", "one by one"] as const) {
    await withStore(mode.replace(/ /g, "-"), async (store, path) => {
      const chat = chatFixture();
      await store.createChat("default", chat);
      const before = walFrames(path);
      const messages = Array.from({ length: 50 }, (_, i) => messageFixture(chat.id, { content: `message ${i}` }));
      if (mode === "together") await Promise.all(messages.map((m) => store.addMessage(m)));
      else for (const m of messages) await store.addMessage(m);
      frames[mode] = walFrames(path) - before;
      expect((await store.listMessages(chat.id, { limit: 100 })).length).toBe(50);
    });
  }
  expect(frames["one by one"]!).toBeGreaterThanOrEqual(50);
  expect(frames.together!).toBeLessThan(10);
});

test("a write that fails is undone alone: the others of its turn are stored, and it rejects", async () => {
  await withStore("one-fails", async (store) => {
    const chat = chatFixture();
    await store.createChat("default", chat);
    const good = Array.from({ length: 10 }, (_, i) => messageFixture(chat.id, { content: `good ${i}` }));
    // A message of a chat that does not exist breaks the foreign key.
    const orphan = messageFixture("no-such-chat");
    const results = await Promise.allSettled([...good.slice(0, 5), orphan, ...good.slice(5)].map((m) => store.addMessage(m)));
    expect(results.map((r) => r.status)).toEqual([...Array(5).fill("fulfilled"), "rejected", ...Array(5).fill("fulfilled")]);
    const stored = await store.listMessages(chat.id, { limit: 100 });
    expect(stored.map((m) => m.content).sort()).toEqual(good.map((m) => m.content).sort());
  });
});

test("a write is on disk when its promise settles, and not visible to another connection before its turn ends", async () => {
  await withStore("visibility", async (store, path) => {
    const chat = chatFixture();
    await store.createChat("default", chat);
    const other = new Database(path, { readonly: true });
    const count = () => other.query<{ n: number }, []>("SELECT count(*) AS n FROM messages").get()!.n;
    try {
      const written = store.addMessage(messageFixture(chat.id));
      expect(count()).toBe(0);
      expect(await written).toBe(true);
      expect(count()).toBe(1);
    } finally {
      other.close();
    }
  });
});

test("a read sees every write issued before it, awaited or not; close() commits what waits", async () => {
  const path = join(dir, "reads.db");
  const store = openSqliteStore(path);
  const chat = chatFixture();
  void store.createChat("default", chat);
  const m = messageFixture(chat.id);
  const added = store.addMessage(m);
  // No await between the writes and the read: the read commits them first.
  expect((await store.listMessages(chat.id, { limit: 10 })).map((x) => x.id)).toEqual([m.id]);
  expect(await added).toBe(true);
  const late = messageFixture(chat.id, { content: "written just before close" });
  const lateAdded = store.addMessage(late);
  await store.close();
  expect(await lateAdded).toBe(true);
  const reopened = openSqliteStore(path);
  expect((await reopened.listMessages(chat.id, { limit: 10 })).map((x) => x.content)).toContain("written just before close");
  await reopened.close();
});

test("a write that ends the whole transaction ends its batch: nothing after it commits alone while reported failed", async () => {
  const db = new Database(join(dir, "rollback.db"));
  try {
    db.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (v TEXT NOT NULL)");
    // What a disk I/O error or a full disk does to a transaction, on demand: the whole of it rolled back.
    db.exec("CREATE TRIGGER t_fail BEFORE INSERT ON t WHEN new.v = 'fail' BEGIN SELECT RAISE(ROLLBACK, 'the transaction ended'); END");
    const guard = guardFor(db);
    const insert = guard.write((v: string) => db.query("INSERT INTO t (v) VALUES (?1)").run(v));
    const settled = await Promise.allSettled(["before", "fail", "after"].map((v) => insert(v)));
    expect(settled.map((s) => s.status)).toEqual(["rejected", "rejected", "rejected"]);
    // Every write was reported failed, and none is stored: "after" did not commit on its own.
    expect(db.query<{ v: string }, []>("SELECT v FROM t").all()).toEqual([]);
    expect(db.inTransaction).toBe(false);
    // The guard goes on: the next turn's writes commit.
    await insert("next");
    expect(db.query<{ v: string }, []>("SELECT v FROM t").all()).toEqual([{ v: "next" }]);
  } finally {
    db.close();
  }
});
