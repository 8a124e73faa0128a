import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Chat, Message } from "../src/records";
import { fold } from "../src/store/search-text";
import type { Store } from "../src/store/store";
import { openCosmosStoreAt, openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { addUser } from "./support/users";
import type { Frame, TestClient } from "./support/ws-client";

// SEARCH over real sockets on both stores (SQLite FTS5; on Cosmos, the test server's path: the
// parameterised scan, since it does not parse FullTextContains). Every user is fresh per test, so
// the tests share a server without seeing each other's data, exactly as two people would not.

const LEGACY = "legacy-token-5c1e9a7b3d2f4e6a8b0c";

/** A word no other test (or run) uses: letters and digits only, so it is one search term. */
const word = (prefix = "w") => `${prefix}${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
const search = (c: TestClient, payload: Frame) => c.request({ type: "SEARCH", ...payload }, "SEARCH_RESULTS");
/** The marked words of a hit, as the client would cut them out. */
const marked = (h: Frame) => (h.highlights as [number, number][]).map(([s, e]) => (h.snippet as string).slice(s, e));

let cosmos: CosmosTestServer;
beforeAll(async () => {
  cosmos = await startCosmosServer();
});
afterAll(async () => {
  await cosmos?.stop();
});

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`SEARCH on ${kind}`, () => {
    let store: Store | undefined;
    let srv: TestServer;
    beforeAll(async () => {
      if (kind === "cosmos") store = await openTestCosmosStore(cosmos, "pichat-search");
      srv = await startTestServer({ API_TOKEN: LEGACY, CHAT_TITLES: "false" }, store ? { store } : {});
    });
    afterAll(async () => {
      await srv?.close();
      await store?.close();
    });

    let clock = Date.parse("2025-03-14T09:00:00.000Z");
    const at = () => new Date(clock++).toISOString();
    /** A chat of `owner` holding these turns, written straight to the store (oldest first). */
    async function seed(owner: string, name: string, turns: string[]): Promise<{ chat: Chat; messages: Message[] }> {
      const t = at();
      const chat: Chat = { id: crypto.randomUUID(), name, active: true, created_at: t, updated_at: t };
      await srv.store.createChat(owner, chat);
      const messages: Message[] = [];
      for (const [i, content] of turns.entries()) {
        const m: Message = {
          id: crypto.randomUUID(),
          chat_id: chat.id,
          role: i % 2 === 0 ? "user" : "assistant",
          content,
          created_at: at(),
        };
        await srv.store.addMessage(m);
        messages.push(m);
      }
      return { chat, messages };
    }
    const person = async () => {
      const u = await addUser(srv.store);
      return { ...u, c: await srv.connect({ token: u.token }) };
    };

    test("hits are ranked, name hits carry no messageId, and snippets mark the matched words with offsets", async () => {
      const { id, c } = await person();
      const city = word("lisbon");
      const trip = await seed(id, `${city} weekend`, [`We fly to ${city} soon`, `${city} trams and ${city} hills`]);
      const other = await seed(id, "Groceries", [`tarts from ${city}`, "nothing to see here"]);
      const f = await search(c, { query: city, requestId: "s-1" });
      expect(f).toMatchObject({ type: "SEARCH_RESULTS", query: city, requestId: "s-1" });
      expect(f.cursor).toBeUndefined();
      const hits = f.hits as Frame[];
      const keys = hits.map((h) => h.messageId ?? `name:${h.chatId}`);
      expect(keys.sort()).toEqual([`name:${trip.chat.id}`, trip.messages[0]!.id, trip.messages[1]!.id, other.messages[0]!.id].sort());
      // Twice the word in as many words ranks above once.
      expect(hits.findIndex((h) => h.messageId === trip.messages[1]!.id)).toBeLessThan(
        hits.findIndex((h) => h.messageId === trip.messages[0]!.id),
      );
      for (const h of hits) {
        expect(marked(h).length).toBeGreaterThan(0);
        for (const m of marked(h)) expect(m).toBe(city);
      }
      const nameHit = hits.find((h) => h.messageId === undefined)!;
      expect(nameHit).toEqual({
        chatId: trip.chat.id,
        chatName: `${city} weekend`,
        created_at: trip.chat.created_at,
        snippet: `${city} weekend`,
        highlights: [[0, city.length]],
      });
      const two = hits.find((h) => h.messageId === trip.messages[1]!.id)!;
      expect(two).toMatchObject({
        chatId: trip.chat.id,
        chatName: `${city} weekend`,
        role: "assistant",
        created_at: trip.messages[1]!.created_at,
        snippet: trip.messages[1]!.content,
      });
      expect(two.highlights).toEqual([
        [0, city.length],
        [city.length + 11, 2 * city.length + 11],
      ]);

      // A long message: a snippet around the first match, cut with "…", offsets into the snippet.
      const long = `${"filler words ".repeat(40)}then ${city} at last ${"and more text ".repeat(40)}`;
      const {
        messages: [lm],
      } = await seed(id, "long", [long]);
      const h = ((await search(c, { query: `${city} last` })).hits as Frame[]).find((x) => x.messageId === lm!.id)!;
      expect(h.snippet.length).toBeLessThanOrEqual(162);
      expect(h.snippet.startsWith("…") && h.snippet.endsWith("…")).toBe(true);
      expect(marked(h)).toEqual([city, "last"]);
    });

    test("case and diacritics are ignored both ways, and a word matches by its beginning", async () => {
      const { id, c } = await person();
      const w = word("x");
      const {
        messages: [m],
      } = await seed(id, "dessert", [`Crème BRÛLÉE at the Café ${w}`]);
      for (const query of [`creme brulee ${w}`, `CAFE ${w}`, `crème ${w}`, `CRÈME Brûlée ${w.toUpperCase()}`, `cré ${w.slice(0, 6)}`]) {
        const hits = (await search(c, { query })).hits as Frame[];
        expect(hits.map((h) => h.messageId)).toEqual([m!.id]);
      }
      const [h] = (await search(c, { query: `creme brulee cafe ${w}` })).hits as Frame[];
      expect(marked(h!)).toEqual(["Crème", "BRÛLÉE", "Café", w]);
      // Every term is required.
      expect((await search(c, { query: `creme ${w} pistachio` })).hits).toEqual([]);
    });

    test("paging with the cursor returns every hit once; a cursor from another query or forged is INVALID_FRAME", async () => {
      const { id, c } = await person();
      const w = word("page");
      const { messages } = await seed(
        id,
        "many",
        Array.from({ length: 7 }, (_, i) => `${w} number ${i}`),
      );
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const f = await search(c, { query: w, limit: 3, ...(cursor ? { cursor } : {}) });
        expect(f.type).toBe("SEARCH_RESULTS");
        seen.push(...(f.hits as Frame[]).map((h) => h.messageId));
        cursor = f.cursor;
        pages++;
      } while (cursor);
      expect(pages).toBe(3);
      expect(seen.length).toBe(7);
      expect(new Set(seen)).toEqual(new Set(messages.map((m) => m.id)));

      const first = await search(c, { query: w, limit: 3 });
      const wrong = await search(c, { query: `${w} number`, cursor: first.cursor });
      expect(wrong).toMatchObject({ type: "ERROR", code: "INVALID_FRAME" });
      expect((await search(c, { query: w, cursor: "WyJhIiwiYiJd" })).code).toBe("INVALID_FRAME");
      expect((await search(c, { query: w, limit: 51 })).error).toBe("limit must be at most 50");
    });

    test("another user's identical chats and messages are never returned", async () => {
      const a = await person();
      const b = await person();
      const w = word("secret");
      const mine = await seed(a.id, `plans ${w}`, [`the ${w} is here`]);
      const theirs = await seed(b.id, `plans ${w}`, [`the ${w} is here`]);
      const legacy = await srv.connect({ token: LEGACY });

      const ids = async (c: TestClient) =>
        ((await search(c, { query: w })).hits as Frame[]).map((h) => `${h.chatId}/${h.messageId ?? ""}`).sort();
      expect(await ids(a.c)).toEqual([`${mine.chat.id}/`, `${mine.chat.id}/${mine.messages[0]!.id}`].sort());
      expect(await ids(b.c)).toEqual([`${theirs.chat.id}/`, `${theirs.chat.id}/${theirs.messages[0]!.id}`].sort());
      expect(await ids(legacy)).toEqual([]);
    });

    test("a deleted chat vanishes from results; a renamed chat is found by its new name only", async () => {
      const { c } = await person();
      const w = word("gone");
      const chat = (await c.request({ type: "CREATE_CHAT", name: `doomed ${w}` }, "NEW_CHAT")).chat;
      c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: `remember ${w} please` });
      await c.reply(chat.id);
      const question = (await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).messages[0].id;
      // The name, the question (and the offline model's reply, which quotes it).
      expect(((await search(c, { query: w })).hits as Frame[]).map((h) => h.messageId ?? "name")).toEqual(
        expect.arrayContaining(["name", question]),
      );
      await c.request({ type: "DELETE_CHAT", chatId: chat.id }, "CHAT_DELETED");
      expect((await search(c, { query: w })).hits).toEqual([]);

      const before = word("old");
      const after = word("new");
      const kept = (await c.request({ type: "CREATE_CHAT", name: `trip ${before}` }, "NEW_CHAT")).chat;
      await c.request({ type: "RENAME_CHAT", chatId: kept.id, name: `journey ${after}` }, "CHAT_UPDATED");
      expect((await search(c, { query: before })).hits).toEqual([]);
      expect((await search(c, { query: `journey ${after}` })).hits).toEqual([
        {
          chatId: kept.id,
          chatName: `journey ${after}`,
          created_at: kept.created_at,
          snippet: `journey ${after}`,
          highlights: [
            [0, 7],
            [8, 8 + after.length],
          ],
        },
      ]);
    });

    test("a reply's streaming checkpoint is not searchable until it is final", async () => {
      const { id, c } = await person();
      const w = word("draft");
      const {
        chat,
        messages: [q],
      } = await seed(id, "streams", ["question"]);
      const reply: Message = {
        id: crypto.randomUUID(),
        chat_id: chat.id,
        role: "assistant",
        content: `half ${w}`,
        created_at: at(),
        parent_id: q!.id,
        status: "streaming",
        lease: { owner: "elsewhere", until: Date.now() + 60_000, seq: 1 },
      };
      await srv.store.putMessage(reply);
      expect((await search(c, { query: w })).hits).toEqual([]);
      await srv.store.putMessage({ ...reply, content: `half ${w} and more`, lease: { ...reply.lease!, seq: 2 } });
      expect((await search(c, { query: w })).hits).toEqual([]);
      const { lease: _l, status: _s, ...final } = { ...reply, content: `whole ${w} reply` };
      await srv.store.putMessage(final);
      const hits = (await search(c, { query: w })).hits as Frame[];
      expect(hits.map((h) => [h.messageId, h.snippet])).toEqual([[reply.id, `whole ${w} reply`]]);
      // Rewritten: found by the new text only.
      await srv.store.putMessage({ ...final, content: `other ${word()}` });
      expect((await search(c, { query: w })).hits).toEqual([]);
    });

    test("hostile queries are words, never syntax: no error but INVALID_FRAME for nothing to search, and the store is intact", async () => {
      const { id, c } = await person();
      const w = word("safe");
      const { chat, messages } = await seed(id, "syntax", [
        `apple or orange ${w}`,
        `apple only ${w}`,
        `near the station ${w}`,
        `column content ${w} here`,
        `it's ${w}; drop table messages`,
      ]);
      const found = async (query: string) => ((await search(c, { query })).hits as Frame[]).map((h) => h.messageId).sort();
      const ids = (...i: number[]) => i.map((n) => messages[n]!.id).sort();
      // Operators are plain words: OR and NEAR are required terms, - and : and * separate.
      expect(await found(`apple OR orange ${w}`)).toEqual(ids(0));
      expect(await found(`NEAR(station ${w})`)).toEqual(ids(2));
      expect(await found(`-apple ${w}`)).toEqual(ids(0, 1));
      expect(await found(`content:${w}`)).toEqual(ids(3));
      expect(await found(`"apple ${w}`)).toEqual(ids(0, 1));
      expect(await found(`apple* ${w}*`)).toEqual(ids(0, 1));
      expect(await found(`'; DROP TABLE messages; -- ${w}`)).toEqual(ids(4));
      for (const query of [
        `"`,
        `*`,
        `NEAR(`,
        `OR`,
        `-`,
        `:`,
        `a"b`,
        `^x`,
        `(((`,
        `AND OR NOT`,
        `\\`,
        `%_[]`,
        `{x}`,
        `.*+?|$`,
        `${w} NOT apple`,
        `"${"x".repeat(150)}`,
      ]) {
        const f = await search(c, { query });
        if (f.type === "ERROR") expect({ query, code: f.code }).toEqual({ query, code: "INVALID_FRAME" });
        else expect(f.type).toBe("SEARCH_RESULTS");
      }
      for (const query of [`"`, `*`, `-`, `:`, `(((`, `\\`, `%_[]`, `.*+?|$`, `"-:*()"`, "  \t "]) {
        expect(await search(c, { query })).toMatchObject({ type: "ERROR", code: "INVALID_FRAME" });
      }
      expect((await search(c, { query: `NEAR(` })).type).toBe("SEARCH_RESULTS");
      expect((await search(c, { query: "x".repeat(201) })).error).toBe("query must be at most 200 characters");
      expect((await search(c, { query: `${w} `.repeat(200 / (w.length + 1)) })).type).toBe("SEARCH_RESULTS");
      expect((await search(c, { query: 42 })).code).toBe("INVALID_FRAME");
      // Nothing was touched, and the socket still answers.
      expect((await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).messages.length).toBe(5);
      expect(await found(w)).toEqual(ids(0, 1, 2, 3, 4));
    });
  });
}

// The file before search existed (the first schema, as test/store.sqlite.test.ts has it).
const FIRST_SCHEMA = `
CREATE TABLE chats (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, active INTEGER NOT NULL,
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL, device_id TEXT
);
CREATE TABLE messages (
  chat_id TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE, id TEXT NOT NULL,
  role TEXT NOT NULL, content TEXT NOT NULL, created_at TEXT NOT NULL,
  status TEXT, device_id TEXT, PRIMARY KEY (chat_id, id)
);
CREATE TABLE processed_messages (id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE settings (owner TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

test("sqlite: a file from before search is migrated on open and its old chats and messages are found; reopening adds no duplicates", async () => {
  const { Database } = await import("bun:sqlite");
  const dir = mkdtempSync(join(tmpdir(), "pichat-search-"));
  const path = join(dir, "old.db");
  const old = new Database(path, { create: true });
  old.exec(FIRST_SCHEMA);
  const chatId = crypto.randomUUID();
  old.query("INSERT INTO chats VALUES (?, 'Almanac of old', 1, '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z', NULL)").run(chatId);
  old
    .query("INSERT INTO messages VALUES (?, 'q1', 'user', 'Where is the Pyrénées almanac?', '2024-01-01T00:00:01.000Z', NULL, NULL)")
    .run(chatId);
  old
    .query("INSERT INTO messages VALUES (?, 'a1', 'assistant', 'The almanac is on the shelf', '2024-01-01T00:00:02.000Z', NULL, NULL)")
    .run(chatId);
  old.close();

  const run = async () => {
    const srv = await startTestServer({ API_TOKEN: LEGACY, SQLITE_PATH: path });
    try {
      const c = await srv.connect({ token: LEGACY });
      return (await search(c, { query: "almanac" })).hits as Frame[];
    } finally {
      await srv.close();
    }
  };
  for (let i = 0; i < 2; i++) {
    const hits = await run();
    expect(hits.map((h) => h.messageId ?? "name").sort()).toEqual(["a1", "name", "q1"]);
    expect(hits.every((h) => h.chatId === chatId)).toBe(true);
  }
  const raw = new Database(path, { readonly: true });
  const names = raw
    .query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger') AND name LIKE '%fts%'")
    .all()
    .map((r) => r.name);
  expect(names).toEqual(expect.arrayContaining(["messages_fts", "chats_fts", "chats_fts_update"]));
  const triggers = raw
    .query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'messages_search_%'")
    .all()
    .map((r) => r.name);
  expect(triggers.sort()).toEqual(["messages_search_delete", "messages_search_insert", "messages_search_update"]);
  raw.close();
  rmSync(dir, { recursive: true, force: true });
});

test("cosmos: the test server does not parse FullTextContains, so `auto` falls back to the scan and `on` fails there", async () => {
  const open = (fullTextSearch: "auto" | "on") => openCosmosStoreAt(cosmos, `pichat-fts-${crypto.randomUUID()}`, { fullTextSearch });
  const chat: Chat = {
    id: crypto.randomUUID(),
    name: "n",
    active: true,
    created_at: "2025-01-01T00:00:00.000Z",
    updated_at: "2025-01-01T00:00:00.000Z",
  };
  const message: Message = { id: "m1", chat_id: chat.id, role: "user", content: "Ünïcode words", created_at: "2025-01-01T00:00:01.000Z" };
  for (const mode of ["auto", "on"] as const) {
    const store = await open(mode);
    try {
      await store.createChat("o", chat);
      await store.addMessage(message);
      const result = store.searchChats("o", "unicode", { limit: 5 });
      if (mode === "auto") expect((await result).items.map((h) => fold(h.snippet))).toEqual(["unicode words"]);
      else
        expect(
          await result.then(
            () => "answered",
            (e: { code?: number }) => e.code,
          ),
        ).toBe(400);
    } finally {
      await store.close();
    }
  }
});
