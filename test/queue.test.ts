import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { lastUserTurn, startSseModel, type SseModel } from "./support/sse-model";
import type { Frame, TestClient } from "./support/ws-client";

// A message sent while a reply streams is never lost: it is stored at once and answered after
// the running reply, in order. The original web UI sends again as soon as the first chunk
// arrives and ignores refusals, so a refusal here was a silent loss. Both stores.

const QUEUE_LIMIT = 3;
let model: SseModel;
let cosmos: CosmosTestServer;
let cosmosStore: Store;

beforeAll(async () => {
  model = await startSseModel({ tokens: ["ok"] });
  cosmos = await startCosmosServer();
  cosmosStore = await openTestCosmosStore(cosmos, "pichat-queue");
});
afterAll(async () => {
  await cosmosStore?.close();
  await cosmos?.stop();
  model?.stop();
});

const env = () => ({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", CHAT_TITLES: "false", CHAT_QUEUE_LIMIT: String(QUEUE_LIMIT) });
const answerTo = (q: string) => [`re: `, q];

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`queued questions (${kind})`, () => {
    let srv: TestServer;
    beforeAll(async () => {
      srv = await startTestServer(env(), kind === "cosmos" ? { store: cosmosStore } : {});
    });
    afterAll(async () => {
      await srv?.close();
    });
    const newChat = async (c: TestClient) => (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;
    const history = async (c: TestClient, chatId: string) =>
      (await c.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY")).messages as Frame[];

    test("a question sent while a reply streams is stored at once and answered after it, in order", async () => {
      model.setScript((req) => ({ tokens: answerTo(lastUserTurn(req)), ...(lastUserTurn(req) === "first" ? { holdAfter: 1 } : {}) }));
      const asked0 = model.requests.length;
      const a = await srv.connect();
      const watcher = await srv.connect();
      const chat = await newChat(a);
      await watcher.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
      let firstDelta: Frame = {};
      try {
        a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "first" });
        firstDelta = await a.next((f) => f.type === "MESSAGE" && !f.end);
        // The reply to "first" is held mid-stream: these two arrive while it streams.
        const second = await a.request({ type: "SEND_MESSAGE", chatId: chat.id, content: "second", requestId: "r2" }, "MESSAGE_ACCEPTED");
        const third = await a.request({ type: "SEND_MESSAGE", chatId: chat.id, content: "third", requestId: "r3" }, "MESSAGE_ACCEPTED");
        expect(second).toMatchObject({ type: "MESSAGE_ACCEPTED", duplicate: false, queued: true, requestId: "r2" });
        expect(third).toMatchObject({ duplicate: false, queued: true });
        // Stored before any answer: a reload now shows both questions, and the other tab saw them arrive.
        const now = await history(watcher, chat.id);
        expect(now.filter((m) => m.role === "user").map((m) => m.content)).toEqual(["first", "second", "third"]);
        // The running reply sits where it started: after "first", before the questions asked during it.
        expect(now.map((m) => (m.content === undefined ? m.id : m.role))).toEqual(["user", "assistant", "user", "user"]);
        expect(now[1]).toMatchObject({ role: "assistant", streaming: true, id: firstDelta.traceId });
        expect(watcher.frames.filter((f) => f.type === "FIRST_MESSAGE").map((f) => f.content)).toEqual(["first", "second", "third"]);
        expect(model.requests.slice(asked0).filter((r) => lastUserTurn(r) === "second")).toHaveLength(0);
      } finally {
        model.release();
      }
      const replies = [await a.reply(chat.id), await a.reply(chat.id), await a.reply(chat.id)];
      // (the first reply's first chunk was read above)
      expect([firstDelta.content + replies[0]!.text, replies[1]!.text, replies[2]!.text]).toEqual(["re: first", "re: second", "re: third"]);
      const stored = await history(a, chat.id);
      // In the order things happened: the first reply began before the others were asked.
      expect(stored.map((m) => [m.role, m.content])).toEqual([
        ["user", "first"],
        ["assistant", "re: first"],
        ["user", "second"],
        ["user", "third"],
        ["assistant", "re: second"],
        ["assistant", "re: third"],
      ]);
      // Each reply names the question it answers, and sorts after it.
      const byId = new Map(stored.map((m) => [m.id, m]));
      for (const r of stored.filter((m) => m.role === "assistant")) {
        const q = byId.get(r.parent_id)!;
        expect(r.content).toBe(`re: ${q.content}`);
        expect(Date.parse(r.created_at)).toBeGreaterThan(Date.parse(q.created_at));
      }
      // The model saw each question with the history up to it, not the ones queued after it.
      const asked = model.requests.slice(asked0).filter((r) => ["second", "third"].includes(lastUserTurn(r)));
      const userTurns = (r: (typeof asked)[number]) => r.body.messages.filter((m: Frame) => m.role === "user").map((m: Frame) => m.content);
      expect(userTurns(asked[0]!)).toEqual(["first", "second"]);
      expect(userTurns(asked[1]!)).toEqual(["first", "second", "third"]);
    });

    test(`past ${QUEUE_LIMIT} waiting questions: ERROR QUEUE_FULL, and nothing is stored`, async () => {
      model.setScript((req) => ({ tokens: answerTo(lastUserTurn(req)), ...(lastUserTurn(req) === "busy" ? { holdAfter: 1 } : {}) }));
      const a = await srv.connect();
      const chat = await newChat(a);
      try {
        a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "busy" });
        await a.next((f) => f.type === "MESSAGE" && !f.end);
        for (let i = 0; i < QUEUE_LIMIT; i++) {
          expect(
            await a.request({ type: "SEND_MESSAGE", chatId: chat.id, content: `q${i}`, requestId: `q${i}` }, "MESSAGE_ACCEPTED"),
          ).toMatchObject({ queued: true });
        }
        const refused = await a.request(
          { type: "SEND_MESSAGE", chatId: chat.id, content: "one too many", requestId: "x" },
          "MESSAGE_ACCEPTED",
        );
        expect(refused).toMatchObject({ type: "ERROR", code: "QUEUE_FULL", limit: QUEUE_LIMIT, requestId: "x" });
      } finally {
        model.release();
      }
      for (let i = 0; i <= QUEUE_LIMIT; i++) await a.reply(chat.id);
      const stored = await history(a, chat.id);
      expect(stored.some((m) => m.content === "one too many")).toBe(false);
      expect(stored.filter((m) => m.role === "assistant")).toHaveLength(QUEUE_LIMIT + 1);
    });

    test("the same message id sent on two sockets at once is stored and answered once; the other is a duplicate", async () => {
      model.setScript((req) => ({ tokens: answerTo(lastUserTurn(req)), delayMs: 2 }));
      const a = await srv.connect();
      const b = await srv.connect();
      const chat = await newChat(a);
      for (let trial = 0; trial < 20; trial++) {
        const id = `same-${trial}`;
        const frame = { type: "SEND_MESSAGE", chatId: chat.id, content: `twice ${trial}`, messageId: id, requestId: id };
        a.send(frame);
        b.send(frame);
        const [ra, rb] = await Promise.all([a.next((f) => f.requestId === id), b.next((f) => f.requestId === id)]);
        expect([ra.type, rb.type]).toEqual(["MESSAGE_ACCEPTED", "MESSAGE_ACCEPTED"]);
        expect([ra.duplicate, rb.duplicate].sort()).toEqual([false, true]);
        const traceId = (ra.duplicate ? rb : ra).traceId;
        await (ra.duplicate ? b : a).next((f) => f.type === "MESSAGE" && f.end && f.traceId === traceId);
      }
      const stored = await history(a, chat.id);
      expect(stored.filter((m) => m.role === "user")).toHaveLength(20);
      expect(stored.filter((m) => m.role === "assistant")).toHaveLength(20);
    });

    test("resending an answered question is a duplicate; resending one with no reply answers it", async () => {
      model.setScript((req) => ({ tokens: answerTo(lastUserTurn(req)) }));
      const a = await srv.connect();
      const chat = await newChat(a);
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "asked", messageId: "m-asked" });
      await a.reply(chat.id);
      expect(
        await a.request(
          { type: "SEND_MESSAGE", chatId: chat.id, content: "asked", messageId: "m-asked", requestId: "again" },
          "MESSAGE_ACCEPTED",
        ),
      ).toMatchObject({ duplicate: true, messageId: "m-asked" });
      // A question stored with no reply (as a crash before the first checkpoint leaves it).
      const store = srv.store;
      await store.addMessage({
        id: "m-orphan",
        chat_id: chat.id,
        role: "user",
        content: "never answered",
        created_at: new Date().toISOString(),
      });
      const accepted = await a.request(
        { type: "SEND_MESSAGE", chatId: chat.id, content: "never answered", messageId: "m-orphan", requestId: "o" },
        "MESSAGE_ACCEPTED",
      );
      expect(accepted).toMatchObject({ duplicate: false, messageId: "m-orphan" });
      const r = await a.reply(chat.id);
      expect(r.text).toBe("re: never answered");
      const stored = await history(a, chat.id);
      expect(stored.filter((m) => m.id === "m-orphan")).toHaveLength(1);
      expect(stored.filter((m) => m.parent_id === "m-orphan").map((m) => m.id)).toEqual([r.traceId]);
    });
  });
}
