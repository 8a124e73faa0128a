import { IMPORT_MAX_CHARS, IMPORT_MAX_MESSAGES } from "../src/chat/transfer";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Model } from "../src/model/model";
import type { Chat, Message } from "../src/records";
import { openSqliteStore } from "../src/store/sqlite";
import { StoreUnavailableError } from "../src/store/errors";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { addUser } from "./support/users";

// GET /api/chats/:id/export and POST /api/chats/import over real HTTP, on SQLite and on the Cosmos
// test server, as personal-token users (docs/protocol.md, "Export and import").

const API_TOKEN = "legacy-token-for-export-tests-0123456789";
const UI_ORIGIN = "https://ui.example";
/** A message with this content fails to be written (the store wrapper below): a write failing mid-import. */
const FAIL_WRITE = "this write fails";

type User = Awaited<ReturnType<typeof addUser>>;

/** A message with this content waits to be written until `release()` (an import caught half-way). */
const PAUSE_WRITE = "this write waits";

/** The store as the server uses it, except that writing a FAIL_WRITE message throws; the chat ids it was asked to write into. */
function failingWrites(store: Store) {
  const chatIds = new Set<string>();
  let gate = Promise.withResolvers<void>();
  let paused = Promise.withResolvers<void>();
  const wrapped: Store = {
    ...store,
    async addMessage(m: Message) {
      chatIds.add(m.chat_id);
      if (m.content === FAIL_WRITE) throw new StoreUnavailableError("test: this write fails");
      if (m.content === PAUSE_WRITE) {
        paused.resolve();
        await gate.promise;
      }
      return store.addMessage(m);
    },
  };
  return {
    store: wrapped,
    chatIds,
    /** Resolves once a PAUSE_WRITE write waits. */
    paused: () => paused.promise,
    release() {
      gate.resolve();
      gate = Promise.withResolvers<void>();
      paused = Promise.withResolvers<void>();
    },
  };
}

/** A JSON answer, loosely typed: the test checks its shape itself. */
const json = async (r: Response): Promise<any> => r.json();

const T = (ms: number) => new Date(Date.UTC(2025, 0, 2, 3, 4, 5) + ms).toISOString();

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`export and import on ${kind}`, () => {
    let cosmos: CosmosTestServer | undefined;
    let base: Store;
    let dir: string | undefined;
    let writes: ReturnType<typeof failingWrites>;
    let srv: TestServer;
    let modelCalls = 0;
    let alice: User;
    let bob: User;

    beforeAll(async () => {
      if (kind === "cosmos") {
        cosmos = await startCosmosServer();
        base = await openTestCosmosStore(cosmos, "pichat-export");
      } else {
        dir = mkdtempSync(join(tmpdir(), "pichat-export-"));
        base = openSqliteStore(join(dir, "pichat.db"));
      }
      writes = failingWrites(base);
      const wrapModel = (m: Model): Model => ({ kind: m.kind, name: m.name, stream: (t, o) => (modelCalls++, m.stream(t, o)) });
      srv = await startTestServer({ API_TOKEN, ALLOWED_ORIGINS: UI_ORIGIN, CHAT_TITLES: "false" }, { store: writes.store, wrapModel });
      alice = await addUser(base);
      bob = await addUser(base);
    });
    afterAll(async () => {
      await srv?.close();
      await base?.close();
      await cosmos?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const get = (path: string, token?: string, headers: Record<string, string> = {}) =>
      fetch(`${srv.url}${path}`, { headers: { ...headers, ...(token ? { Authorization: `Bearer ${token}` } : {}) } });
    const post = (
      body: string | ReadableStream<Uint8Array>,
      token?: string,
      headers: Record<string, string> = { "Content-Type": "application/json" },
    ) =>
      fetch(`${srv.url}/api/chats/import`, {
        method: "POST",
        body,
        headers: { ...headers, ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      });
    const chatsOf = async (u: User) => (await base.listChats(u.id, { limit: 1000 })).items;

    /** A chat of `owner` with content that is easy to get wrong: whitespace, CRLF, unicode, code fences, cut-short replies, a device. */
    async function variedChat(owner: User) {
      const chat: Chat = { id: crypto.randomUUID(), name: 'Plans 🚀 "Q1"/v2', active: true, created_at: T(0), updated_at: T(9) };
      await base.createChat(owner.id, chat);
      const q1 = "  Hello, wörld! 👋🏽 Ünïcödé ✓\n";
      const a1 = "Here you go:\n\n```ts\nconst tick = `x`;\n~~~ not a fence here\n```\n\nDone.";
      const q2 = "\tCRLF line\r\nnext line  \r\n\n";
      const a2 = 'Sure:\n\n```python\nprint("中文")';
      const lease = { owner: "someone", until: Date.now() + 3_600_000, seq: 3 };
      const messages: Message[] = [
        { id: "sys-1", chat_id: chat.id, role: "system", content: "Be terse.", created_at: T(1) },
        { id: "q-1", chat_id: chat.id, role: "user", content: q1, created_at: T(2) },
        { id: crypto.randomUUID(), chat_id: chat.id, role: "assistant", content: a1, created_at: T(3), parent_id: "q-1" },
        { id: "q-2", chat_id: chat.id, role: "user", content: q2, created_at: T(4) },
        {
          id: crypto.randomUUID(),
          chat_id: chat.id,
          role: "assistant",
          content: a2,
          created_at: T(5),
          status: "stopped",
          parent_id: "q-2",
        },
        { id: "dev-msg-1", chat_id: chat.id, role: "user", content: "何？", created_at: T(6), device_id: "pi-kitchen" },
        {
          id: crypto.randomUUID(),
          chat_id: chat.id,
          role: "assistant",
          content: "Half a rep",
          created_at: T(7),
          status: "streaming",
          parent_id: "dev-msg-1",
          device_id: "pi-kitchen",
          lease,
        },
        // Two messages with one timestamp: their order is (created_at, id), kept through an import.
        { id: "z-same-time", chat_id: chat.id, role: "user", content: "", created_at: T(8) },
        { id: "zz-same-time", chat_id: chat.id, role: "user", content: "   ", created_at: T(8) },
      ];
      for (const m of messages) expect(await base.addMessage(m)).toBe(true);
      return { chat, messages, texts: { q1, a1, q2, a2 } };
    }

    /** What the export promises for a stored message: no chat_id, no lease; a live checkpoint as "streaming". */
    const shown = (m: Message) => {
      const { chat_id: _c, lease: _l, ...rest } = m;
      return rest;
    };

    test("JSON export is exact: the versioned shape, every message in order with parent links and statuses, no owner or lease; headers for a download", async () => {
      const { chat, messages } = await variedChat(alice);
      const before = Date.now();
      const res = await get(`/api/chats/${chat.id}/export?format=json`, alice.token);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("application/json; charset=utf-8");
      expect(res.headers.get("cache-control")).toBe("no-store");
      expect(res.headers.get("content-disposition")).toBe(
        `attachment; filename="Plans _ _Q1__v2.json"; filename*=UTF-8''Plans%20%F0%9F%9A%80%20_Q1__v2.json`,
      );
      const text = await res.text();
      const body = JSON.parse(text);
      expect(Date.parse(body.exported_at)).toBeGreaterThanOrEqual(before - 5);
      const expected = {
        format: "pichat.chat",
        version: 1,
        exported_at: body.exported_at,
        chat: { id: chat.id, name: chat.name, created_at: chat.created_at, updated_at: chat.updated_at },
        messages: messages.map(shown),
      };
      // Byte for byte: the key order is part of the format.
      expect(text).toBe(`${JSON.stringify(expected)}\n`);
      expect(text).not.toContain(alice.id);
      expect(text).not.toContain("lease");
      // The default format is JSON.
      const again = await get(`/api/chats/${chat.id}/export`, alice.token);
      expect(again.headers.get("content-type")).toBe("application/json; charset=utf-8");
      expect(((await json(again)) as any).messages).toEqual(expected.messages);
    });

    test("Markdown export is exact: title, a heading per message (role, device, time, status), content as stored, an open code fence closed", async () => {
      const { chat, texts } = await variedChat(alice);
      const res = await get(`/api/chats/${chat.id}/export?format=md&token=${alice.token}`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("text/markdown; charset=utf-8");
      expect(res.headers.get("cache-control")).toBe("no-store");
      expect(res.headers.get("content-disposition")).toEndWith(`filename*=UTF-8''Plans%20%F0%9F%9A%80%20_Q1__v2.md`);
      const text = await res.text();
      const exportedAt = /^Exported from PiChat on (\S+)\. /m.exec(text)?.[1];
      expect(exportedAt).toBeDefined();
      expect(text).toBe(
        [
          `# Plans 🚀 "Q1"/v2\n\nExported from PiChat on ${exportedAt}. Chat created ${T(0)}.\n\n`,
          `## System · ${T(1)}\n\nBe terse.\n\n`,
          `## User · ${T(2)}\n\n${texts.q1}\n\n`,
          `## Assistant · ${T(3)}\n\n${texts.a1}\n\n`,
          `## User · ${T(4)}\n\n${texts.q2}\n\n`,
          `## Assistant · ${T(5)} · stopped\n\n${texts.a2}\n\`\`\`\n\n`,
          `## User (pi-kitchen) · ${T(6)}\n\n何？\n\n`,
          `## Assistant (pi-kitchen) · ${T(7)} · still streaming\n\nHalf a rep\n\n`,
          `## User · ${T(8)}\n\n\n\n`,
          `## User · ${T(8)}\n\n   \n\n`,
        ].join(""),
      );
    });

    test("another user's chat id and a random id answer the same 404 body; a bad format is 400; no or a wrong token is 401 as for /api/me", async () => {
      const { chat } = await variedChat(alice);
      const foreign = await get(`/api/chats/${chat.id}/export`, bob.token);
      const missing = await get(`/api/chats/${crypto.randomUUID()}/export`, bob.token);
      const notAnId = await get(`/api/chats/not-a-chat/export?format=md`, bob.token);
      expect([foreign.status, missing.status, notAnId.status]).toEqual([404, 404, 404]);
      const bodies = await Promise.all([foreign.text(), missing.text(), notAnId.text()]);
      expect(JSON.parse(bodies[0]!)).toEqual({ error: "there is no such chat", code: "CHAT_NOT_FOUND" });
      expect(new Set(bodies).size).toBe(1);
      expect(foreign.headers.get("content-type")).toBe(missing.headers.get("content-type"));

      const bad = await get(`/api/chats/${chat.id}/export?format=pdf`, alice.token);
      expect(bad.status).toBe(400);
      expect(await json(bad)).toEqual({ error: "format must be json or md", code: "INVALID_ARGUMENT" });

      const me = await get("/api/me");
      for (const res of [
        await get(`/api/chats/${chat.id}/export`),
        await get(`/api/chats/${chat.id}/export`, "pct_not-a-real-token"),
        await post("{}"),
      ]) {
        expect(res.status).toBe(401);
        expect(res.headers.get("www-authenticate")).toBe(me.headers.get("www-authenticate"));
        expect(await res.text()).toBe(await me.clone().text());
      }
      expect(me.status).toBe(401);
    });

    test("an import of an export is a new chat of the importer: new ids, same contents and order, parent links remapped; CHAT_CREATED reaches the importer's other socket only; the model is not asked", async () => {
      const { chat, messages } = await variedChat(alice);
      const exported = await (await get(`/api/chats/${chat.id}/export`, alice.token)).text();
      const bobSocket = await srv.connect({ token: bob.token });
      const aliceSocket = await srv.connect({ token: alice.token });
      const callsBefore = modelCalls;

      const res = await post(exported, bob.token);
      expect(res.status).toBe(201);
      expect(res.headers.get("cache-control")).toBe("no-store");
      const { chat: made } = (await json(res)) as { chat: Chat };
      expect(made.id).not.toBe(chat.id);
      // Created and updated as in the file (updated = the last message's time); no device binding on a copy.
      expect(made).toEqual({ id: made.id, name: chat.name, active: true, created_at: chat.created_at, updated_at: T(8) });
      expect((await bobSocket.next((f) => f.type === "CHAT_CREATED" && f.chat.id === made.id)).chat).toEqual(made);

      const bobList = await bobSocket.request({ type: "GET_CHATS" }, "CHAT_LIST");
      expect(bobList.chats.map((c: Chat) => c.id)).toContain(made.id);
      const aliceList = await aliceSocket.request({ type: "GET_CHATS" }, "CHAT_LIST");
      expect(aliceList.chats.map((c: Chat) => c.id)).not.toContain(made.id);
      expect(aliceSocket.frames.some((f) => f.type === "CHAT_CREATED")).toBe(false);
      expect((await get(`/api/chats/${made.id}/export`, alice.token)).status).toBe(404);

      const copy = ((await json(await get(`/api/chats/${made.id}/export`, bob.token))) as { messages: Message[] }).messages;
      expect(copy.length).toBe(messages.length);
      const ids = new Map(messages.map((m, i) => [m.id, copy[i]!.id]));
      for (const [i, m] of messages.entries()) {
        const c = copy[i]!;
        expect(c.id).not.toBe(m.id);
        expect(c.id).toMatch(/^[0-9a-f-]{36}$/);
        // The reply that was mid-stream is not generated by anyone in the copy: it is cut short.
        expect({ ...c, id: "" } as unknown).toEqual({
          ...shown(m),
          id: "",
          ...(m.status === "streaming" ? { status: "interrupted" } : {}),
          ...(m.parent_id ? { parent_id: ids.get(m.parent_id) } : {}),
        });
      }
      expect(new Set(copy.map((m) => m.id)).size).toBe(copy.length);
      // History over the socket reads the same, and the source chat is untouched.
      const history = await bobSocket.request({ type: "GET_CHAT_HISTORY", chatId: made.id }, "CHAT_HISTORY");
      expect(history.messages.map((m: Message) => m.content)).toEqual(messages.map((m) => m.content));
      expect((await base.pageMessages(chat.id, { limit: 100 })).items.length).toBe(messages.length);
      expect(modelCalls).toBe(callsBefore);
    });

    test('a branched chat survives export and import: parent links ("" for an edited first question) and the selected message, remapped', async () => {
      const base0 = { chat_id: "", content: "" };
      const chat = { id: crypto.randomUUID(), name: "branched", active: true, created_at: T(0), updated_at: T(6), selected: "q3" } as Chat;
      await base.createChat(alice.id, chat);
      const messages: Message[] = [
        { ...base0, id: "q1", role: "user", content: "first question", created_at: T(1) },
        { ...base0, id: "a1", role: "assistant", content: "first answer", created_at: T(2), parent_id: "q1" },
        { ...base0, id: "a1b", role: "assistant", content: "regenerated answer", created_at: T(3), parent_id: "q1" },
        { ...base0, id: "q1-edit", role: "user", content: "edited first question", created_at: T(4), parent_id: "" },
        { ...base0, id: "a1-edit", role: "assistant", content: "answer to the edit", created_at: T(5), parent_id: "q1-edit" },
        { ...base0, id: "q3", role: "user", content: "follow-up on the regenerated answer", created_at: T(6), parent_id: "a1b" },
      ].map((m) => ({ ...m, chat_id: chat.id }) as Message);
      for (const m of messages) expect(await base.addMessage(m)).toBe(true);
      const file = await json(await get(`/api/chats/${chat.id}/export`, alice.token));
      expect(file.chat.selected).toBe("q3");
      expect(file.messages.map((m: Message) => m.parent_id)).toEqual([undefined, "q1", "q1", "", "q1-edit", "a1b"]);

      const res = await post(JSON.stringify(file), bob.token);
      expect(res.status).toBe(201);
      const { chat: made } = await json(res);
      const copy = await json(await get(`/api/chats/${made.id}/export`, bob.token));
      const ids = copy.messages.map((m: Message) => m.id) as string[];
      expect(copy.messages.map((m: Message) => m.content)).toEqual(messages.map((m) => m.content));
      expect(copy.messages.map((m: Message) => m.parent_id)).toEqual([undefined, ids[0], ids[0], "", ids[3], ids[2]]);
      expect(copy.chat.selected).toBe(ids[5]);
      expect(made.selected).toBe(ids[5]);

      const dangling = await post(JSON.stringify({ ...file, chat: { ...file.chat, selected: "nobody" } }), bob.token);
      expect(dangling.status).toBe(400);
      expect((await json(dangling)).error).toBe("chat.selected: names no message of this export");
    });

    test("malformed imports are refused with the first problem and store nothing", async () => {
      const { chat } = await variedChat(alice);
      const good = await json(await get(`/api/chats/${chat.id}/export`, alice.token));
      const before = (await chatsOf(bob)).length;
      const variants: [string | ReadableStream<Uint8Array>, number, string, string?][] = [
        ["{not json", 400, "BAD_JSON"],
        [JSON.stringify(good), 415, "UNSUPPORTED_MEDIA_TYPE", "text/plain"],
        [JSON.stringify([]), 400, "INVALID_ARGUMENT"],
        [JSON.stringify({ ...good, version: 2 }), 400, "INVALID_ARGUMENT"],
        [JSON.stringify({ ...good, format: "other" }), 400, "INVALID_ARGUMENT"],
        [
          JSON.stringify({ ...good, messages: good.messages.map((m: Message, i: number) => (i === 3 ? { ...m, role: "robot" } : m)) }),
          400,
          "INVALID_ARGUMENT",
        ],
        [
          JSON.stringify({ ...good, messages: good.messages.map((m: Message, i: number) => (i === 2 ? { ...m, content: 42 } : m)) }),
          400,
          "INVALID_ARGUMENT",
        ],
        [
          JSON.stringify({
            ...good,
            messages: good.messages.map((m: Message, i: number) => (i === 1 ? { ...m, created_at: "yesterday" } : m)),
          }),
          400,
          "INVALID_ARGUMENT",
        ],
        [
          JSON.stringify({
            ...good,
            messages: good.messages.map((m: Message, i: number) => (i === 4 ? { ...m, parent_id: "nobody" } : m)),
          }),
          400,
          "INVALID_ARGUMENT",
        ],
        [JSON.stringify({ ...good, messages: [...good.messages, good.messages[0]] }), 400, "INVALID_ARGUMENT"],
        [JSON.stringify({ ...good, chat: { ...good.chat, name: "x".repeat(201) } }), 400, "INVALID_ARGUMENT"],
        // Within 10 MiB, but past the bounds of one import.
        [
          JSON.stringify({
            ...good,
            messages: good.messages.map((m: Message, i: number) => (i === 0 ? { ...m, content: "y".repeat(IMPORT_MAX_CHARS + 1) } : m)),
          }),
          400,
          "INVALID_ARGUMENT",
        ],
        [
          JSON.stringify({
            ...good,
            messages: Array.from({ length: IMPORT_MAX_MESSAGES + 1 }, (_, i) => ({
              id: `n${i}`,
              role: "user",
              content: "",
              created_at: T(i),
            })),
          }),
          400,
          "INVALID_ARGUMENT",
        ],
      ];
      const errors: string[] = [];
      for (const [body, status, code, type] of variants) {
        const res = await post(body, bob.token, { "Content-Type": type ?? "application/json" });
        const answer = await json(res);
        expect({ status: res.status, code: answer.code }).toEqual({ status, code });
        errors.push(answer.error);
      }
      expect(errors.slice(3, 10)).toEqual([
        "version: must be 1 (the only version this server reads)",
        'format: must be "pichat.chat"',
        'messages.3.role: must be "user", "assistant" or "system"',
        "messages.2.content: must be a string",
        "messages.1.created_at: must be an ISO 8601 timestamp",
        "messages.4.parent_id: names no message of this export",
        `messages.9.id: "sys-1" appears twice`,
      ]);
      expect(errors.slice(11)).toEqual([
        `messages.0.content: must be at most ${IMPORT_MAX_CHARS} characters`,
        `messages: must hold at most ${IMPORT_MAX_MESSAGES} messages`,
      ]);
      expect((await chatsOf(bob)).length).toBe(before);
    });

    test("an import over 10 MiB is refused with 413, with or without a Content-Length, and stores nothing", async () => {
      const before = (await chatsOf(bob)).length;
      const big = JSON.stringify({
        format: "pichat.chat",
        version: 1,
        chat: { name: "big", created_at: T(0) },
        messages: [{ id: "m", role: "user", content: "x".repeat(10 * 1024 * 1024), created_at: T(1) }],
      });
      const sized = await post(big, bob.token);
      expect(sized.status).toBe(413);
      expect((await json(sized)).code).toBe("PAYLOAD_TOO_LARGE");
      const bytes = new TextEncoder().encode(big);
      const chunked = new ReadableStream<Uint8Array>({
        start(c) {
          for (let i = 0; i < bytes.length; i += 1 << 20) c.enqueue(bytes.subarray(i, i + (1 << 20)));
          c.close();
        },
      });
      const streamed = await post(chunked, bob.token);
      expect(streamed.status).toBe(413);
      expect((await chatsOf(bob)).length).toBe(before);
    });

    test("a history read while an import is half written does not stick: after the import, history holds every message", async () => {
      const messages = Array.from({ length: 24 }, (_, i) => ({
        id: `h${i}`,
        role: i % 2 ? "assistant" : "user",
        content: i === 16 ? PAUSE_WRITE : `part ${i}`,
        created_at: T(i + 1),
      }));
      writes.chatIds.clear();
      const importing = post(
        JSON.stringify({ format: "pichat.chat", version: 1, chat: { name: "half", created_at: T(0) }, messages }),
        alice.token,
      );
      await writes.paused();
      const [chatId] = [...writes.chatIds];
      // The owner opens the chat (it is listed from its first write) while the import waits.
      const c = await srv.connect({ token: alice.token });
      const partial = await c.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY");
      expect(partial.messages.length).toBeLessThan(messages.length);
      writes.release();
      expect((await importing).status).toBe(201);
      const whole = await c.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY");
      expect(whole.messages.map((m: Message) => m.content)).toEqual(messages.map((m) => m.content));
      c.close();
    });

    test("a message write failing mid-import leaves no chat and no messages behind", async () => {
      const before = (await chatsOf(bob)).length;
      const messages = Array.from({ length: 30 }, (_, i) => ({
        id: `m${i}`,
        role: i % 2 ? "assistant" : "user",
        content: i === 17 ? FAIL_WRITE : `message ${i}`,
        created_at: T(i + 1),
      }));
      writes.chatIds.clear();
      const res = await post(
        JSON.stringify({ format: "pichat.chat", version: 1, chat: { name: "doomed", created_at: T(0) }, messages }),
        bob.token,
      );
      expect(res.status).toBe(503);
      expect((await json(res)).code).toBe("STORE_UNAVAILABLE");
      expect((await chatsOf(bob)).length).toBe(before);
      expect(writes.chatIds.size).toBe(1);
      for (const id of writes.chatIds) expect((await base.pageMessages(id, { limit: 100 })).items).toEqual([]);
    });

    test("a 1,000-message chat imports whole and exports whole, in order, as JSON and as Markdown", async () => {
      const messages = Array.from({ length: 1000 }, (_, i) => ({
        id: `m-${i}`,
        role: i % 2 ? "assistant" : "user",
        content: `message ${i} ✓`,
        created_at: T(i + 1),
        ...(i % 2 ? { parent_id: `m-${i - 1}` } : {}),
      }));
      let started = performance.now();
      const res = await post(
        JSON.stringify({ format: "pichat.chat", version: 1, chat: { name: "long", created_at: T(0) }, messages }),
        alice.token,
      );
      const importMs = performance.now() - started;
      expect(res.status).toBe(201);
      const { chat } = await json(res);
      started = performance.now();
      const exported = await json(await get(`/api/chats/${chat.id}/export`, alice.token));
      const exportMs = performance.now() - started;
      expect(exported.messages.map((m: Message) => m.content)).toEqual(messages.map((m) => m.content));
      expect(exported.messages.map((m: Message) => m.created_at)).toEqual(messages.map((m) => m.created_at));
      // Every reply still points at the question right before it, under the new ids.
      exported.messages.forEach((m: Message, i: number) => expect(m.parent_id).toBe(i % 2 ? exported.messages[i - 1].id : undefined));
      const md = await (await get(`/api/chats/${chat.id}/export?format=md`, alice.token)).text();
      expect(md.match(/^## /gm)?.length).toBe(1000);
      expect(md).toContain(`## User · ${T(1)}\n\nmessage 0 ✓\n\n## Assistant · ${T(2)}\n\nmessage 1 ✓\n\n`);
      expect(md).toEndWith(`## Assistant · ${T(1000)}\n\nmessage 999 ✓\n\n`);
      console.log(
        `export.test [${kind}]: 1,000 messages imported in ${importMs.toFixed(0)} ms, exported as JSON in ${exportMs.toFixed(0)} ms`,
      );
    });

    test("cross-origin: a listed origin may read (CORS headers, preflight); any other origin is refused with 403 and no CORS headers", async () => {
      const { chat } = await variedChat(alice);
      const listed = await get(`/api/chats/${chat.id}/export`, alice.token, { Origin: UI_ORIGIN });
      expect(listed.status).toBe(200);
      expect(listed.headers.get("access-control-allow-origin")).toBe(UI_ORIGIN);
      expect(listed.headers.get("access-control-expose-headers")).toBe("Content-Disposition");
      expect(listed.headers.get("access-control-allow-credentials")).toBeNull();
      await listed.arrayBuffer();
      const other = await get(`/api/chats/${chat.id}/export`, alice.token, { Origin: "https://evil.example" });
      expect(other.status).toBe(403);
      expect(other.headers.get("access-control-allow-origin")).toBeNull();
      expect((await json(other)).code).toBe("ORIGIN_NOT_ALLOWED");
      const otherImport = await post("{}", alice.token, { "Content-Type": "application/json", Origin: "https://evil.example" });
      expect(otherImport.status).toBe(403);

      const preflight = (origin: string) =>
        fetch(`${srv.url}/api/chats/import`, {
          method: "OPTIONS",
          headers: {
            Origin: origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
          },
        });
      const ok = await preflight(UI_ORIGIN);
      expect(ok.status).toBe(204);
      expect(ok.headers.get("access-control-allow-origin")).toBe(UI_ORIGIN);
      expect(ok.headers.get("access-control-allow-headers")).toBe("Authorization, Content-Type");
      const refused = await preflight("https://evil.example");
      expect(refused.status).toBe(403);
      expect(refused.headers.get("access-control-allow-origin")).toBeNull();
    });
  });
}
