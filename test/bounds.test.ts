import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Chat, Message } from "../src/records";
import { openSqliteStore } from "../src/store/sqlite";
import { ownerKey } from "../src/store/sqlite/search";
import { addressKey, signInThrottle } from "../src/http/throttle";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { addUser } from "./support/users";

// Requests that used to cost without bound, each with its bound: exports and imports per user,
// failed sign-ins per address, WATCH's store reads, and search's work per query on both stores.

type Calls = Map<string, number>;
/** While set, history pages after the first `holdAfter` wait for it: an export caught mid-download. */
let hold: Promise<void> | undefined;
let holdAfter = 0;
/** The store, counting calls per method (what a request costs the store). */
function counted(store: Store, calls: Calls): Store {
  return new Proxy(store, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof v !== "function") return v;
      return async (...args: unknown[]) => {
        calls.set(String(key), (calls.get(String(key)) ?? 0) + 1);
        if (key === "pageMessages" && hold && holdAfter-- <= 0) await hold;
        return v.apply(target, args);
      };
    },
  });
}

const T = (ms: number) => new Date(Date.UTC(2025, 0, 2, 3, 4, 5) + ms).toISOString();
const auth = (token: string) => ({ Authorization: `Bearer ${token}` });

describe("HTTP bounds (sqlite)", () => {
  let dir: string;
  let base: Store;
  const calls: Calls = new Map();
  let srv: TestServer;
  let alice: Awaited<ReturnType<typeof addUser>>;
  let chatId: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "pichat-bounds-"));
    base = openSqliteStore(join(dir, "pichat.db"));
    srv = await startTestServer(
      { SIGN_IN_FAILURES_PER_MINUTE: "3", TRANSFERS_PER_MINUTE: "4", CHAT_TITLES: "false" },
      { store: counted(base, calls) },
    );
    alice = await addUser(base);
    chatId = crypto.randomUUID();
    const chat: Chat = { id: chatId, name: "Big", active: true, created_at: T(0), updated_at: T(0) };
    await base.createChat(alice.id, chat);
    for (let i = 0; i < 600; i++)
      await base.addMessage({
        id: `m${i}`,
        chat_id: chatId,
        role: "user",
        content: `message ${i} ${"x".repeat(200)}`,
        created_at: T(i + 1),
      });
  });
  afterAll(async () => {
    await srv?.close();
    await base?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("an export holds the user's one slot until its download ends; a second export or an import meanwhile is 429 with Retry-After; then the rate", async () => {
    const gate = Promise.withResolvers<void>();
    hold = gate.promise;
    holdAfter = 3; // 600 messages are 3 pages: the export's first walk reads them all before answering
    const first = await fetch(`${srv.url}/api/chats/${chatId}/export`, { headers: auth(alice.token) });
    expect(first.status).toBe(200); // the download has begun; its pages wait
    const second = await fetch(`${srv.url}/api/chats/${chatId}/export`, { headers: auth(alice.token) });
    expect(second.status).toBe(429);
    expect(Number(second.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(((await second.json()) as { code: string }).code).toBe("TOO_MANY_TRANSFERS");
    const reads = calls.get("pageMessages") ?? 0;
    const imported = await fetch(`${srv.url}/api/chats/import`, {
      method: "POST",
      headers: { ...auth(alice.token), "Content-Type": "application/json" },
      body: JSON.stringify({ format: "pichat.chat", version: 1, chat: { name: "x" }, messages: [] }),
    });
    expect(imported.status).toBe(429);
    expect(calls.get("pageMessages") ?? 0).toBe(reads); // the refused ones read nothing
    // Another user is not held up by alice.
    const bob = await addUser(base);
    const other = await fetch(`${srv.url}/api/chats/${crypto.randomUUID()}/export`, { headers: auth(bob.token) });
    expect(other.status).toBe(404);
    // The download read to its end frees the slot.
    hold = undefined;
    gate.resolve();
    expect((await first.text()).includes("message 599")).toBe(true);
    const third = await fetch(`${srv.url}/api/chats/${chatId}/export`, { headers: auth(alice.token) });
    expect(third.status).toBe(200);
    await third.text();
    // 4 a minute: first, third and (refused ones take no token) one more; the next is over the rate.
    const fourth = await fetch(`${srv.url}/api/chats/${chatId}/export`, { headers: auth(alice.token) });
    expect(fourth.status).toBe(200);
    await fourth.text();
    const fifth = await fetch(`${srv.url}/api/chats/${chatId}/export`, { headers: auth(alice.token) });
    await fifth.text();
    const sixth = await fetch(`${srv.url}/api/chats/${chatId}/export`, { headers: auth(alice.token) });
    expect(sixth.status).toBe(429);
    expect(Number(sixth.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
  });

  test("failed sign-ins: a burst, then 429 without a store read, one log line per window; counted in /metrics", async () => {
    const tries = async (n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) {
        const r = await fetch(`${srv.url}/api/me`, { headers: auth(`pc_${crypto.randomUUID().replaceAll("-", "")}`) });
        out.push(r.status);
        await r.body?.cancel();
      }
      return out;
    };
    const lookups = () => calls.get("userOfToken") ?? 0;
    const before = lookups();
    expect(await tries(3)).toEqual([401, 401, 401]);
    expect(lookups()).toBe(before + 3);
    const refused = await tries(20);
    expect(refused.every((s) => s === 429)).toBe(true);
    expect(lookups()).toBe(before + 3); // no store read for any of them
    const r = await fetch(`${srv.url}/api/me`, { headers: auth(alice.token) });
    expect(r.status).toBe(429); // the address waits, whatever it presents
    expect(Number(r.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    // The socket upgrade is throttled the same way.
    const ws = await fetch(`${srv.url}/ws`, { headers: { ...auth(alice.token), Upgrade: "websocket" } });
    expect(ws.status).toBe(429);
    expect(srv.log.lines.filter((l) => l.includes("failed sign-ins throttled")).length).toBe(1);
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    expect(Number(metrics.match(/^pichat_sign_ins_throttled_total (\d+)/m)?.[1])).toBe(22);
  });
});

/** A fresh store of `kind` (on a Cosmos test server of its own, or in a new SQLite file) and how to remove it. */
async function freshStore(kind: "sqlite" | "cosmos"): Promise<{ store: Store; drop(): Promise<void> }> {
  if (kind === "cosmos") {
    const cosmos = await startCosmosServer();
    const store = await openTestCosmosStore(cosmos, "pichat-bounds");
    return {
      store,
      drop: async () => {
        await store.close();
        await cosmos.stop();
      },
    };
  }
  const dir = mkdtempSync(join(tmpdir(), "pichat-bounds-"));
  const store = openSqliteStore(join(dir, "pichat.db"));
  return {
    store,
    drop: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe("WATCH reads the store once per frame", () => {
  for (const kind of ["sqlite", "cosmos"] as const) {
    test(kind, async () => {
      const { store: base, drop } = await freshStore(kind);
      const calls: Calls = new Map();
      const srv = await startTestServer({}, { store: counted(base, calls) });
      try {
        const alice = await addUser(base);
        const bob = await addUser(base);
        const ids: string[] = [];
        for (let i = 0; i < 100; i++) {
          const id = crypto.randomUUID();
          ids.push(id);
          await base.createChat(alice.id, { id, name: `c${i}`, active: true, created_at: T(i), updated_at: T(i) });
        }
        const bobsChat = crypto.randomUUID();
        await base.createChat(bob.id, { id: bobsChat, name: "bob's", active: true, created_at: T(0), updated_at: T(0) });
        const c = await srv.connect({ token: alice.token });
        calls.clear();
        const w = await c.request({ type: "WATCH", chatIds: ids }, "WATCHING");
        expect(w.chatIds.length).toBe(100);
        expect(calls.get("getChats")).toBe(1);
        expect(calls.get("getChat") ?? 0).toBe(0);
        // Another user's chat in the list: refused as missing, nothing watched from this frame.
        const c2 = await srv.connect({ token: alice.token });
        calls.clear();
        const refused = await c2.request({ type: "WATCH", chatIds: [...ids.slice(0, 50), bobsChat] }, "WATCHING");
        expect(refused).toMatchObject({ type: "ERROR", code: "CHAT_NOT_FOUND" });
        // The 50 are known from memory; bob's is read in the one batched read, as a missing one is.
        expect(calls.get("getChats")).toBe(1);
        expect(calls.get("getChat") ?? 0).toBe(0);
      } finally {
        await srv.close();
        await drop();
      }
    });
  }
});

describe("a large branched chat's history is cached like any chat's", () => {
  for (const kind of ["sqlite", "cosmos"] as const) {
    test(kind, async () => {
      const { store: base, drop } = await freshStore(kind);
      const calls: Calls = new Map();
      const srv = await startTestServer({ CHAT_TITLES: "false" }, { store: counted(base, calls) });
      try {
        const alice = await addUser(base);
        // As an import of a branched chat leaves it: `selected` set, 1,200 messages.
        const chatId = crypto.randomUUID();
        const N = kind === "cosmos" ? 600 : 1200; // more than a history page keeps (500)
        await base.createChat(alice.id, {
          id: chatId,
          name: "Imported",
          active: true,
          created_at: T(0),
          updated_at: T(N),
          selected: `m${N - 1}`,
        });
        for (let i = 0; i < N; i++)
          await base.addMessage({
            id: `m${i}`,
            chat_id: chatId,
            role: i % 2 ? "assistant" : "user",
            content: `message ${i}`,
            created_at: T(i + 1),
          });
        const c = await srv.connect({ token: alice.token });
        const page = async () => c.request({ type: "GET_CHAT_HISTORY", chatId, limit: 50 }, "CHAT_HISTORY");
        const reads = () => (calls.get("listMessages") ?? 0) + (calls.get("pageMessages") ?? 0);
        const first = await page();
        expect(first.messages.map((m: { id: string }) => m.id)).toEqual(Array.from({ length: 50 }, (_, i) => `m${N - 50 + i}`));
        const after = reads();
        for (let i = 0; i < 5; i++) expect((await page()).messages.length).toBe(50);
        expect(reads()).toBe(after); // five more pages, no message read
        // A new question and its reply land in the cached tree (through the bus), on the branch.
        c.send({ type: "SEND_MESSAGE", chatId, content: "one more" });
        await c.reply(chatId);
        const latest = await page();
        expect(latest.messages.at(-2)).toMatchObject({ role: "user", content: "one more" });
        expect(latest.messages.at(-1).role).toBe("assistant");
      } finally {
        await srv.close();
        await drop();
      }
    }, 60_000);
  }
});

describe("search work per query", () => {
  test("sqlite: the owner is matched inside the index; another owner's rows are never visited, and an older index file is rebuilt with owners", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pichat-bounds-"));
    const path = join(dir, "pichat.db");
    // A file whose index predates the owner column.
    const old = new Database(path, { create: true });
    old.exec(`CREATE TABLE chats (id TEXT PRIMARY KEY, owner TEXT NOT NULL DEFAULT 'default', name TEXT NOT NULL, active INTEGER NOT NULL,
      created_at TEXT NOT NULL, updated_at TEXT NOT NULL, device_id TEXT, selected TEXT);
      CREATE TABLE messages (chat_id TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE, id TEXT NOT NULL, role TEXT NOT NULL,
      content TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT, device_id TEXT, parent_id TEXT, PRIMARY KEY (chat_id, id));
      CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='', contentless_delete=1, tokenize='unicode61 remove_diacritics 2');
      CREATE VIRTUAL TABLE chats_fts USING fts5(name, content='chats', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2');`);
    old.query("INSERT INTO chats VALUES ('c-old', 'alice', 'Old', 1, ?, ?, NULL, NULL)").run(T(0), T(0));
    old.query("INSERT INTO messages VALUES ('c-old', 'm-old', 'user', 'walrus facts', ?, NULL, NULL, NULL)").run(T(1));
    old.exec("INSERT INTO messages_fts (rowid, content) SELECT rowid, content FROM messages");
    old.close();

    const store = openSqliteStore(path);
    try {
      // Bob has many messages with the word; alice has one old and one new.
      await store.createChat("bob", { id: "c-bob", name: "Walrus", active: true, created_at: T(0), updated_at: T(0) });
      for (let i = 0; i < 300; i++)
        await store.addMessage({ id: `b${i}`, chat_id: "c-bob", role: "user", content: `walrus ${i}`, created_at: T(i + 2) });
      await store.createChat("alice", { id: "c-new", name: "New", active: true, created_at: T(0), updated_at: T(0) });
      await store.addMessage({ id: "m-new", chat_id: "c-new", role: "user", content: "a walrus", created_at: T(5) });
      const page = await store.searchChats("alice", "walrus", { limit: 50 });
      expect(page.items.map((h) => h.messageId).sort()).toEqual(["m-new", "m-old"]);
      expect((await store.searchChats("bob", "walrus", { limit: 50 })).items.length).toBe(50);
      // The index itself answers per owner: FTS5 returns alice's rows only, before any join.
      const db = new Database(path, { readonly: true });
      const count = (q: string) =>
        db.query<{ n: number }, [string]>("SELECT count(*) AS n FROM messages_fts WHERE messages_fts MATCH ?").get(q)!.n;
      expect(count(`owner : "${ownerKey("alice")}" AND content : ("walrus"*)`)).toBe(2);
      expect(count(`owner : "${ownerKey("bob")}" AND content : ("walrus"*)`)).toBe(300);
      // A term that is the start of an owner's hex token matches no text.
      expect((await store.searchChats("alice", ownerKey("alice").slice(0, 6), { limit: 50 })).items).toEqual([]);
      const names = db.query<{ n: number }, [string]>("SELECT count(*) AS n FROM chats_fts WHERE chats_fts MATCH ?");
      expect(names.get(`owner : "${ownerKey("bob")}" AND name : ("walrus"*)`)!.n).toBe(1);
      expect(names.get(`owner : "${ownerKey("alice")}" AND name : ("walrus"*)`)!.n).toBe(0);
      db.close();
      // Renames and deletes keep the index right.
      await store.patchChat("alice", "c-new", { name: "Walrus notes" });
      expect((await store.searchChats("alice", "walrus", { limit: 50 })).items.filter((h) => !h.messageId).map((h) => h.chatId)).toEqual([
        "c-new",
      ]);
      await store.deleteChat("alice", "c-new");
      expect((await store.searchChats("alice", "walrus", { limit: 50 })).items.map((h) => h.messageId)).toEqual(["m-old"]);
    } finally {
      await store.close();
    }
    // Reopening does not index again (the table is already in its current shape).
    const again = openSqliteStore(path);
    expect((await again.searchChats("bob", "walrus", { limit: 50 })).items.length).toBe(50);
    await again.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("cosmos: a search scans the owner's newest chats up to its cap and says hasMore; no cap reached, no hasMore", async () => {
    const cosmos = await startCosmosServer();
    const store = await openTestCosmosStore(cosmos, "pichat-bounds", { searchMaxChats: 3 });
    try {
      for (let i = 0; i < 5; i++) {
        const id = `chat-${i}`;
        await store.createChat("alice", { id, name: `Chat ${i}`, active: true, created_at: T(i), updated_at: T(i * 10) });
        const m: Message = { id: `m${i}`, chat_id: id, role: "user", content: `narwhal ${i}`, created_at: T(i) };
        await store.addMessage(m);
      }
      const page = await store.searchChats("alice", "narwhal", { limit: 50 });
      expect(page.items.map((h) => h.chatId).sort()).toEqual(["chat-2", "chat-3", "chat-4"]);
      expect(page.hasMore).toBe(true);
      await store.createChat("bob", { id: "bob-1", name: "x", active: true, created_at: T(0), updated_at: T(0) });
      await store.addMessage({ id: "bm", chat_id: "bob-1", role: "user", content: "narwhal", created_at: T(0) });
      const bobs = await store.searchChats("bob", "narwhal", { limit: 50 });
      expect(bobs.items.map((h) => h.messageId)).toEqual(["bm"]);
      expect(bobs.hasMore).toBeUndefined();
    } finally {
      await store.close();
      await cosmos.stop();
    }
  });
});

describe("sign-in throttle keys", () => {
  test("IPv4 as is, IPv4-mapped IPv6 as its IPv4, IPv6 by its /64 (one host's whole prefix is one key)", () => {
    expect(addressKey("203.0.113.7")).toBe("203.0.113.7");
    expect(addressKey("::ffff:203.0.113.7")).toBe("203.0.113.7");
    expect(addressKey("2001:db8:1:2:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(addressKey("2001:0db8:0001:0002:ffff:ffff:ffff:ffff")).toBe("2001:db8:1:2::/64");
    expect(addressKey("2001:db8::1")).toBe("2001:db8:0:0::/64");
    expect(addressKey("::1")).toBe("0:0:0:0::/64");
    const t = signInThrottle({ burst: 2, everyS: 30, log: () => {} });
    t.failed("2001:db8:1:2::10", 0);
    t.failed("2001:db8:1:2::20", 0);
    expect(t.refused("2001:db8:1:2:ffff::99", 0)).toBeGreaterThan(0);
    expect(t.refused("2001:db8:1:3::1", 0)).toBeUndefined();
  });
});
