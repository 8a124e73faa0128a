import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import type { Frame, TestClient } from "./support/ws-client";

// The web UI's whole flow over a real socket, against the real server storing in Cosmos DB (the
// local wire-protocol test server, a fresh database per run) and replying from a real SSE model.
// The protocol details are covered on SQLite in ws.protocol.test.ts; this file checks that the
// same flow holds end to end when the store is Cosmos.

const TOKENS = ["Cosmos", " says", " hello", "."];
const REPLY = TOKENS.join("");

let cosmos: CosmosTestServer;
let store: Store;
let model: SseModel;
let srv: TestServer;
const open = () => srv.connect();

beforeAll(async () => {
  cosmos = await startCosmosServer();
  store = await openTestCosmosStore(cosmos, "pichat-flow");
  model = await startSseModel({ tokens: TOKENS });
  srv = await startTestServer({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "test-model", OPENAI_API_KEY: "sk-test" }, { store });
});
afterAll(async () => {
  await srv?.close();
  // The harness closes only stores it opened itself.
  await store?.close();
  await cosmos?.stop();
  model?.stop();
});

const newChat = async (c: TestClient, name?: string) => {
  const f = await c.request({ type: "CREATE_CHAT", payload: name ? { name } : {} }, "NEW_CHAT");
  expect(f.type).toBe("NEW_CHAT");
  return f.chat;
};
const history = async (c: TestClient, chatId: string) => {
  const f = await c.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY");
  expect(f.type).toBe("CHAT_HISTORY");
  return f.messages as Frame[];
};
const turns = (messages: Frame[]) => messages.map((m) => [m.role, m.content]);
/** Model requests answering `question`; counted by content because chat titling asks the model too. */
const askedAbout = (question: string) => model.requests.filter((r) => r.body.messages.at(-1)?.content === question).length;

describe("web UI flow on Cosmos DB", () => {
  test("CREATE_CHAT answers NEW_CHAT, others hear CHAT_CREATED, and the chat is first in CHAT_LIST", async () => {
    const a = await open();
    const b = await open();
    const chat = await newChat(a, "Cosmos trip");
    expect(chat).toMatchObject({ name: "Cosmos trip", active: true });
    expect((await b.next((f) => f.type === "CHAT_CREATED" && f.chat.id === chat.id)).chat).toEqual(chat);

    const list = await a.request({ type: "GET_CHATS" }, "CHAT_LIST");
    expect(list.chats[0]).toEqual(chat);
    // Read straight from Cosmos: the record round-trips without Cosmos' system fields.
    expect(await store.getChat("default", chat.id)).toEqual(chat);
  });

  test("SEND_MESSAGE streams the reply under one traceId; a watcher sees FIRST_MESSAGE and the same stream; history has both turns", async () => {
    const a = await open();
    const watcher = await open();
    const chat = await newChat(a);
    // Loading a chat's history is how the UI starts watching it.
    expect(await history(watcher, chat.id)).toEqual([]);

    a.send({ type: "SEND_MESSAGE", payload: { chatId: chat.id, content: "Hello Cosmos?" } });
    const mine = await a.reply(chat.id);
    expect(mine.text).toBe(REPLY);
    expect(mine.chunks.length).toBe(TOKENS.length);
    expect(new Set(mine.chunks.map((c) => c.traceId))).toEqual(new Set([mine.traceId]));
    expect(mine.end).toMatchObject({ type: "MESSAGE", chatId: chat.id, content: "", end: true, traceId: mine.traceId });
    expect(mine.end.reason).toBeUndefined();
    expect(a.frames.some((f) => f.type === "FIRST_MESSAGE" || f.type === "ERROR")).toBe(false);

    const first = await watcher.next("FIRST_MESSAGE");
    expect(first).toMatchObject({ chatId: chat.id, content: "Hello Cosmos?" });
    const seen = await watcher.reply(chat.id);
    expect(seen.text).toBe(REPLY);
    expect(seen.traceId).toBe(mine.traceId);

    // A page reload: both turns, oldest first; the reply's id is the stream's traceId.
    const msgs = await history(a, chat.id);
    expect(turns(msgs)).toEqual([
      ["user", "Hello Cosmos?"],
      ["assistant", REPLY],
    ]);
    expect(msgs[1]!.id).toBe(mine.traceId);
    expect(msgs[0]!.id).toBe(first.message.id);
    expect(msgs.every((m) => m.chat_id === chat.id && m.status === undefined)).toBe(true);
    expect(msgs).toEqual(await store.listMessages(chat.id, { limit: 10 }));

    // Activity moved the chat up; the list shows it first.
    expect((await a.request({ type: "GET_CHATS" }, "CHAT_LIST")).chats[0].id).toBe(chat.id);
  });

  test("a resend with the same message id is stored once and answered once (MESSAGE_ACCEPTED duplicate:true)", async () => {
    const a = await open();
    const chat = await newChat(a);
    const id = `ui-${crypto.randomUUID()}`;
    const send = { type: "SEND_MESSAGE", payload: { chatId: chat.id, message: { content: "only once", id } } };
    a.send(send);
    await a.reply(chat.id);

    const dup = await a.request(send, "MESSAGE_ACCEPTED");
    expect(dup).toMatchObject({ type: "MESSAGE_ACCEPTED", chatId: chat.id, messageId: id, duplicate: true });
    expect(askedAbout("only once")).toBe(1);
    const stored = await store.listMessages(chat.id, { limit: 10 });
    expect(stored.map((m) => [m.role, m.id === id])).toEqual([
      ["user", true],
      ["assistant", false],
    ]);
  });

  test("DELETE_CHAT reaches both clients and removes the chat and its messages from Cosmos", async () => {
    const a = await open();
    const b = await open();
    const chat = await newChat(a);
    a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "soon gone" });
    await a.reply(chat.id);
    expect((await store.listMessages(chat.id, { limit: 10 })).length).toBe(2);

    const gone = await a.request({ type: "DELETE_CHAT", chatId: chat.id }, "CHAT_DELETED");
    expect(gone).toMatchObject({ type: "CHAT_DELETED", chatId: chat.id });
    await b.next((f) => f.type === "CHAT_DELETED" && f.chatId === chat.id);

    expect(await store.getChat("default", chat.id)).toBeUndefined();
    expect(await store.listMessages(chat.id, { limit: 10 })).toEqual([]);
    const list = await a.request({ type: "GET_CHATS" }, "CHAT_LIST");
    expect(list.chats.some((c: Frame) => c.id === chat.id)).toBe(false);
    expect(await a.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).toMatchObject({
      type: "ERROR",
      code: "CHAT_NOT_FOUND",
    });
  });

  test("/health reports the cosmos store as ok", async () => {
    const res = await fetch(`${srv.url}/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      status: "ok",
      services: { store: { kind: "cosmos", ok: true }, model: { kind: "openai-compatible", ok: true } },
    });
  });
});
