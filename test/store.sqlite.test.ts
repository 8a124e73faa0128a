import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSqliteStore } from "../src/store/sqlite";
import { isStoreUnavailable } from "../src/store/errors";
import { chatFixture, storeContract } from "./store.contract";

storeContract("sqlite", async () => {
  const dir = mkdtempSync(join(tmpdir(), "pichat-sqlite-"));
  const store = openSqliteStore(join(dir, "nested", "pichat.db"));
  return { store, cleanup: async () => { await store.close(); rmSync(dir, { recursive: true, force: true }); } };
});

test("sqlite: data survives reopening the file, in WAL mode", async () => {
  const dir = mkdtempSync(join(tmpdir(), "pichat-sqlite-"));
  const path = join(dir, "pichat.db");
  const chat = chatFixture();
  const first = openSqliteStore(path);
  await first.createChat(chat);
  await first.close();
  const second = openSqliteStore(path);
  expect(await second.getChat(chat.id)).toEqual(chat);
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
