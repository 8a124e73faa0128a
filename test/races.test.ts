import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Message } from "../src/records";
import { encodeCursor } from "../src/store/cursor";
import type { Store } from "../src/store/store";
import { isoAt } from "./store.contract";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { lastUserTurn, startSseModel, type SseModel } from "./support/sse-model";
import { until } from "./support/until";
import type { Frame, TestClient } from "./support/ws-client";

// "Nothing lost, nothing mixed up", over real sockets against the real server, once on SQLite and
// once on the Cosmos DB test server: concurrent commands that touch the same record keep every
// change, a deleted chat leaves nothing behind, and history pages are exact.

const TRIALS = 20;

type Backend = { name: string; open(env: Record<string, string>): Promise<{ srv: TestServer; store: Store; cleanup(): Promise<void> }> };

const backends: Backend[] = [
  {
    name: "sqlite",
    async open(env) {
      const srv = await startTestServer(env);
      return { srv, store: srv.store, cleanup: () => srv.close() };
    },
  },
  {
    name: "cosmos",
    async open(env) {
      const cosmos: CosmosTestServer = await startCosmosServer();
      const store = await openTestCosmosStore(cosmos, "pichat-races", { requestTimeoutMs: 5000 });
      const srv = await startTestServer(env, { store });
      return {
        srv,
        store,
        async cleanup() {
          await srv.close();
          await store.close();
          await cosmos.stop();
        },
      };
    },
  },
];

const ordered = (a: Message, b: Message) =>
  a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;

for (const backend of backends) {
  describe(`races and exact history on ${backend.name}`, () => {
    let model: SseModel;
    let srv: TestServer;
    let store: Store;
    let cleanup: () => Promise<void>;

    beforeAll(async () => {
      model = await startSseModel({ tokens: ["Fine", ",", " thanks", "."] });
      ({ srv, store, cleanup } = await backend.open({
        OPENAI_BASE_URL: `${model.url}/v1`,
        OPENAI_MODEL: "test-model",
        OPENAI_API_KEY: "sk-test",
        // A model-made title would rename chats on its own; the trials send many messages quickly.
        CHAT_TITLES: "false",
        RATE_LIMIT_MESSAGES_PER_MINUTE: "10000",
        RATE_LIMIT_FRAMES_PER_SECOND: "10000",
      }));
    });
    afterAll(async () => {
      model?.release();
      await cleanup?.();
      model?.stop();
    });

    const newChat = async (c: TestClient): Promise<Frame> => (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;
    const settled = () => until(() => srv.chat.replies.size === 0, "no reply running");

    test(`RENAME_CHAT racing SEND_MESSAGE keeps the new name and the latest activity time (${TRIALS} trials)`, async () => {
      const sender = await srv.connect();
      const renamer = await srv.connect();
      for (let i = 0; i < TRIALS; i++) {
        const chat = await newChat(sender);
        const name = `Renamed ${i}`;
        sender.send({ type: "SEND_MESSAGE", requestId: `s${i}`, chatId: chat.id, content: `question ${i}` });
        const renamed = await renamer.request({ type: "RENAME_CHAT", chatId: chat.id, name }, "CHAT_UPDATED");
        expect(renamed).toMatchObject({ type: "CHAT_UPDATED", chat: { id: chat.id, name } });
        expect((await sender.reply(chat.id)).end.reason).toBeUndefined();
        await settled();
        const question = (await store.listMessages(chat.id, { limit: 10 })).find((m) => m.role === "user")!;
        const stored = await store.getChat("default", chat.id);
        expect(stored?.name).toBe(name);
        expect(stored?.updated_at).toBe([renamed.chat.updated_at as string, question.created_at].sort().at(-1)!);
        // What the server lists is what is stored.
        expect((await sender.request({ type: "GET_CHATS" }, "CHAT_LIST")).chats.find((c: Frame) => c.id === chat.id)).toEqual(stored!);
      }
    });

    test(`two UPDATE_SETTINGS of different keys racing keep both (${TRIALS} trials)`, async () => {
      const a = await srv.connect();
      const b = await srv.connect();
      for (let i = 0; i < TRIALS; i++) {
        await store.putSettings("default", {});
        a.send({ type: "UPDATE_SETTINGS", systemPrompt: `Prompt ${i}` });
        b.send({ type: "UPDATE_SETTINGS", temperature: i / 20 });
        await Promise.all([a.next("SETTINGS"), b.next("SETTINGS")]);
        const got = await a.request({ type: "GET_SETTINGS" }, "SETTINGS");
        expect(got.settings).toEqual({ systemPrompt: `Prompt ${i}`, temperature: i / 20 });
        expect(await store.getSettings("default")).toEqual({ systemPrompt: `Prompt ${i}`, temperature: i / 20 });
      }
      await store.putSettings("default", {});
    });

    test(`DELETE_CHAT racing SEND_MESSAGE (in flight, or sent together) leaves nothing of the chat (${TRIALS} trials)`, async () => {
      const sender = await srv.connect();
      const deleter = await srv.connect();
      for (let i = 0; i < TRIALS; i++) {
        const chat = await newChat(sender);
        const question = `doomed ${i}`;
        // Even trials: the reply is held in flight when the delete comes. Odd: both frames at once.
        const inFlight = i % 2 === 0;
        model.setScript((req) => (inFlight && lastUserTurn(req) === question ? { holdAfter: 1 } : {}));
        const sent = sender.next((f) => (f.type === "MESSAGE_ACCEPTED" && f.chatId === chat.id) || f.type === "ERROR");
        sender.send({ type: "SEND_MESSAGE", requestId: `d${i}`, chatId: chat.id, content: question });
        if (inFlight)
          await until(async () => (await model.waitHeld(1)).some((r) => lastUserTurn(r) === question), "the reply held in flight");
        const deleted = await deleter.request({ type: "DELETE_CHAT", chatId: chat.id }, "CHAT_DELETED");
        expect(deleted).toMatchObject({ type: "CHAT_DELETED", chatId: chat.id });
        const outcome = await sent;
        // The send either got in first (accepted, then its reply stopped) or found the chat gone.
        if (outcome.type === "ERROR") expect(outcome.code).toBe("CHAT_NOT_FOUND");
        await settled();
        model.release();
        expect(await store.getChat("default", chat.id)).toBeUndefined();
        expect(await store.listMessages(chat.id, { limit: 100 })).toEqual([]);
        const h = await deleter.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
        expect(h).toMatchObject({ type: "ERROR", code: "CHAT_NOT_FOUND" });
      }
      model.setScript({});
    });

    test("history pages over messages sharing one created_at return each exactly once, in (created_at, id) order", async () => {
      const c = await srv.connect();
      const chat = await newChat(c);
      const made: Message[] = [];
      // Written straight to the store: nine messages on one millisecond, two around them.
      for (let i = 0; i < 11; i++) {
        const m: Message = {
          id: `m-${(i * 5) % 11}-${crypto.randomUUID().slice(0, 8)}`,
          chat_id: chat.id,
          role: i % 2 ? "assistant" : "user",
          content: `message ${i}`,
          created_at: i === 0 ? isoAt(0) : i === 10 ? isoAt(2) : isoAt(1),
        };
        await store.addMessage(m);
        made.push(m);
      }
      const expected = [...made].sort(ordered);
      for (const limit of [2, 3, 5]) {
        const pages: Frame[][] = [];
        let cursor: string | undefined;
        do {
          const page = await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id, limit, ...(cursor ? { cursor } : {}) }, "CHAT_HISTORY");
          expect(page.type).toBe("CHAT_HISTORY");
          expect(page.messages.length).toBeLessThanOrEqual(limit);
          expect(page.hasMore).toBe(page.cursor !== undefined);
          pages.push(page.messages);
          cursor = page.cursor;
        } while (cursor);
        expect(pages.reverse().flat()).toEqual(expected);
      }
      const whole = await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
      expect(whole.messages).toEqual(expected);
      expect(whole.hasMore).toBe(false);
      expect(whole.cursor).toBeUndefined();
    });

    test("a forged cursor (three arbitrary strings) and other cursors the server did not issue get INVALID_FRAME", async () => {
      const c = await srv.connect();
      const chat = await newChat(c);
      const other = await newChat(c);
      for (const id of [chat.id, other.id]) {
        for (let i = 0; i < 3; i++) await store.addMessage({ id: `x${i}`, chat_id: id, role: "user", content: "hi", created_at: isoAt(i) });
      }
      const issued = (await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id, limit: 1 }, "CHAT_HISTORY")).cursor as string;
      const otherChats = (await c.request({ type: "GET_CHAT_HISTORY", chatId: other.id, limit: 1 }, "CHAT_HISTORY")).cursor as string;
      const listCursor = (await c.request({ type: "GET_CHATS", limit: 1 }, "CHAT_LIST")).cursor as string;
      expect([issued, otherChats, listCursor].every((x) => typeof x === "string")).toBe(true);
      const forged = [
        encodeCursor(["a", "b", "c"]),
        encodeCursor([isoAt(0), "x1"]),
        listCursor,
        otherChats,
        "garbage",
        encodeCursor(["messages", chat.id, isoAt(0), "a b/c"]),
      ];
      for (const cursor of forged) {
        const f = await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id, cursor }, "CHAT_HISTORY");
        expect(f).toMatchObject({ type: "ERROR", code: "INVALID_FRAME" });
      }
      for (const cursor of [encodeCursor(["a", "b", "c"]), issued]) {
        const f = await c.request({ type: "GET_CHATS", cursor }, "CHAT_LIST");
        expect(f).toMatchObject({ type: "ERROR", code: "INVALID_FRAME" });
      }
      // The issued ones still work, and the connection stayed usable.
      expect(
        (await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id, cursor: issued }, "CHAT_HISTORY")).messages.map((m: Frame) => m.id),
      ).toEqual(["x0", "x1"]);
    });

    test("a stored streaming reply of a dead process is shown (and stored) as interrupted; another live process's as streaming; never with its lease", async () => {
      const c = await srv.connect();
      const chat = await newChat(c);
      const now = Date.now();
      const q1: Message = { id: "q1", chat_id: chat.id, role: "user", content: "first?", created_at: isoAt(0) };
      const dead: Message = {
        id: "r1",
        chat_id: chat.id,
        role: "assistant",
        content: "half of",
        created_at: isoAt(1),
        status: "streaming",
        parent_id: "q1",
        lease: { owner: "dead-replica", until: now - 1000, seq: 2 },
      };
      const q2: Message = { id: "q2", chat_id: chat.id, role: "user", content: "second?", created_at: isoAt(2) };
      const live: Message = {
        id: "r2",
        chat_id: chat.id,
        role: "assistant",
        content: "going on",
        created_at: isoAt(3),
        status: "streaming",
        parent_id: "q2",
        lease: { owner: "other-replica", until: now + 60_000, seq: 4 },
      };
      for (const m of [q1, dead, q2, live]) await store.putMessage(m);

      c.send({ type: "GET_CHAT_HISTORY", chatId: chat.id });
      const raw = await new Promise<string>((resolve) =>
        c.ws.addEventListener("message", (e) => String(e.data).includes('"CHAT_HISTORY"') && resolve(String(e.data))),
      );
      expect(raw).not.toContain("lease");
      const { lease: _d, ...deadRest } = dead;
      const { lease: _l, status: _s, ...liveRest } = live;
      expect(JSON.parse(raw).messages).toEqual([q1, { ...deadRest, status: "interrupted" }, q2, { ...liveRest, streaming: true, seq: 4 }]);
      expect(await store.findReply(chat.id, "q1")).toEqual({ ...deadRest, status: "interrupted" });
      expect(await store.findReply(chat.id, "q2")).toEqual(live);
    });
  });
}
