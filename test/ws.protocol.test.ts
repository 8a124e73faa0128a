import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import type { TestClient } from "./support/ws-client";

// The web UI's whole flow over a real socket, against the real server with SQLite and a real
// OpenAI-compatible SSE server.

let model: SseModel;
let srv: TestServer;
const open = () => srv.connect();

beforeAll(async () => {
  model = await startSseModel({ tokens: ["The", " answer", " is", " 42", "."] });
  srv = await startTestServer({
    OPENAI_BASE_URL: `${model.url}/v1`,
    OPENAI_MODEL: "test-model",
    OPENAI_API_KEY: "sk-test",
    CHAT_TITLES: "false",
  });
});
afterAll(async () => {
  await srv.close();
  model.stop();
});

const newChat = async (c: TestClient, name?: string) =>
  (await c.request({ type: "CREATE_CHAT", payload: name ? { name } : {} }, "NEW_CHAT")).chat;

describe("chats", () => {
  test("CREATE_CHAT answers NEW_CHAT to the sender only; others get CHAT_CREATED", async () => {
    const a = await open();
    const b = await open();
    const chat = await a.request({ type: "CREATE_CHAT", payload: { name: "Trip plans" } }, "NEW_CHAT");
    expect(chat.type).toBe("NEW_CHAT");
    expect(chat.chat).toMatchObject({ name: "Trip plans", active: true });
    expect(chat.chat.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Date(chat.chat.created_at).toISOString()).toBe(chat.chat.created_at);
    const seen = await b.next((f) => f.type === "CHAT_CREATED" && f.chat.id === chat.chat.id);
    expect(seen.chat).toEqual(chat.chat);
    expect(b.frames.some((f) => f.type === "NEW_CHAT")).toBe(false);
    expect(a.frames.some((f) => f.type === "CHAT_CREATED" && f.chat.id === chat.chat.id)).toBe(false);
  });

  test("a chat just created is first in the next CHAT_LIST (top-level and payload forms)", async () => {
    const a = await open();
    const chat = await newChat(a);
    expect(chat.name).toBe("New Chat");
    const list = await a.request({ type: "GET_CHATS" }, "CHAT_LIST");
    expect(list.chats[0]).toEqual(chat);
    const list2 = await a.request({ type: "GET_CHATS", payload: {} }, "CHAT_LIST");
    expect(list2.chats[0]).toEqual(chat);
  });

  test("an empty or null name falls back to the default", async () => {
    const a = await open();
    expect((await a.request({ type: "CREATE_CHAT", payload: { name: "  " } }, "NEW_CHAT")).chat.name).toBe("New Chat");
    expect((await a.request({ type: "CREATE_CHAT", name: null }, "NEW_CHAT")).chat.name).toBe("New Chat");
  });

  test("requestId is echoed on replies and errors", async () => {
    const a = await open();
    const list = await a.request({ type: "GET_CHATS", requestId: "r-1" }, "CHAT_LIST");
    expect(list.requestId).toBe("r-1");
    const err = await a.request({ type: "DELETE_CHAT", requestId: "r-2", payload: { chatId: crypto.randomUUID() } }, "CHAT_DELETED");
    expect(err).toMatchObject({ type: "ERROR", code: "CHAT_NOT_FOUND", requestId: "r-2" });
  });

  test("DELETE_CHAT reaches every client and removes the messages", async () => {
    const a = await open();
    const b = await open();
    const chat = await newChat(a);
    a.send({ type: "SEND_MESSAGE", payload: { chatId: chat.id, content: "hi" } });
    await a.reply(chat.id);
    const gone = await a.request({ type: "DELETE_CHAT", chatId: chat.id }, "CHAT_DELETED");
    expect(gone).toMatchObject({ type: "CHAT_DELETED", chatId: chat.id });
    await b.next((f) => f.type === "CHAT_DELETED" && f.chatId === chat.id);
    expect(await srv.store.listMessages(chat.id, { limit: 10 })).toEqual([]);
    const list = await a.request({ type: "GET_CHATS" }, "CHAT_LIST");
    expect(list.chats.find((c: any) => c.id === chat.id)).toBeUndefined();
    const hist = await a.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
    expect(hist).toMatchObject({ type: "ERROR", code: "CHAT_NOT_FOUND" });
  });
});

describe("messages", () => {
  test('SEND_MESSAGE streams the reply with one traceId; the last frame has content ""; history has both turns', async () => {
    const a = await open();
    const chat = await newChat(a);
    a.send({ type: "SEND_MESSAGE", payload: { chatId: chat.id, content: "What is the answer?" } });
    const r = await a.reply(chat.id);
    expect(r.text).toBe("The answer is 42.");
    expect(r.chunks.length).toBe(5);
    expect(new Set(r.chunks.map((c) => c.traceId))).toEqual(new Set([r.traceId]));
    expect(r.chunks.map((c) => c.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(r.end).toMatchObject({ type: "MESSAGE", chatId: chat.id, content: "", end: true, traceId: r.traceId });
    expect(a.frames.some((f) => f.type === "FIRST_MESSAGE")).toBe(false);

    const hist = await a.request({ type: "GET_CHAT_HISTORY", payload: { chatId: chat.id } }, "CHAT_HISTORY");
    expect(hist.chatId).toBe(chat.id);
    expect(hist.messages.map((m: any) => [m.role, m.content])).toEqual([
      ["user", "What is the answer?"],
      ["assistant", "The answer is 42."],
    ]);
    expect(hist.messages[1].id).toBe(r.traceId);
    expect(hist.messages[0]).toMatchObject({ chat_id: chat.id });
  });

  test("the model gets the system prompt and the chat's history", async () => {
    const a = await open();
    const chat = await newChat(a);
    a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "first question" });
    await a.reply(chat.id);
    a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "second question" });
    await a.reply(chat.id);
    const sent = model.requests.at(-1)!.body;
    expect(sent.model).toBe("test-model");
    expect(sent.stream).toBe(true);
    expect(sent.messages[0].role).toBe("system");
    expect(sent.messages.slice(1)).toEqual([
      { role: "user", content: "first question" },
      { role: "assistant", content: "The answer is 42." },
      { role: "user", content: "second question" },
    ]);
    expect(model.requests.at(-1)!.headers.authorization).toBe("Bearer sk-test");
  });

  test("{chatId, message:{content, id}}: a resend with the same id is stored once and answered once", async () => {
    const a = await open();
    const chat = await newChat(a);
    const id = crypto.randomUUID();
    a.send({ type: "SEND_MESSAGE", payload: { chatId: chat.id, message: { content: "once please", id } } });
    await a.reply(chat.id);
    const before = model.requests.length;
    const dup = await a.request(
      { type: "SEND_MESSAGE", payload: { chatId: chat.id, message: { content: "once please", id } } },
      "MESSAGE_ACCEPTED",
    );
    expect(dup).toMatchObject({ duplicate: true, messageId: id, chatId: chat.id });
    expect(model.requests.length).toBe(before);
    const hist = await a.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
    expect(hist.messages.filter((m: any) => m.role === "user").map((m: any) => m.id)).toEqual([id]);
    expect(hist.messages.filter((m: any) => m.role === "assistant").length).toBe(1);
  });

  test("payload wins over top-level arguments", async () => {
    const a = await open();
    const real = await newChat(a);
    a.send({ type: "SEND_MESSAGE", chatId: crypto.randomUUID(), content: "top", payload: { chatId: real.id, content: "from payload" } });
    await a.reply(real.id);
    const hist = await a.request({ type: "GET_CHAT_HISTORY", chatId: real.id }, "CHAT_HISTORY");
    expect(hist.messages[0].content).toBe("from payload");
  });

  test("watchers see the question as FIRST_MESSAGE and the reply live; the sender gets no FIRST_MESSAGE", async () => {
    const a = await open();
    const watcher = await open();
    const bystander = await open();
    const chat = await newChat(a);
    await watcher.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
    a.send({ type: "SEND_MESSAGE", payload: { chatId: chat.id, content: "hello watchers" } });
    const first = await watcher.next("FIRST_MESSAGE");
    expect(first).toMatchObject({ chatId: chat.id, content: "hello watchers" });
    const seen = await watcher.reply(chat.id);
    const mine = await a.reply(chat.id);
    expect(seen.text).toBe(mine.text);
    expect(seen.traceId).toBe(mine.traceId);
    expect(a.frames.some((f) => f.type === "FIRST_MESSAGE")).toBe(false);
    // A client that never looked at the chat hears nothing of it but its creation.
    expect(bystander.frames.filter((f) => f.chatId === chat.id)).toEqual([]);
  });

  test("a message sent to a chat moves it to the top of CHAT_LIST", async () => {
    const a = await open();
    const older = await newChat(a, "older");
    await newChat(a, "newer");
    a.send({ type: "SEND_MESSAGE", chatId: older.id, content: "bump" });
    await a.reply(older.id);
    const list = await a.request({ type: "GET_CHATS" }, "CHAT_LIST");
    expect(list.chats[0].id).toBe(older.id);
  });
});

describe("bad input gets an ERROR and the connection stays usable", () => {
  const cases: [string, string | object, string][] = [
    ["malformed JSON", "{not json", "BAD_JSON"],
    ["not an object", "[1,2]", "INVALID_FRAME"],
    ["no type", { payload: {} }, "INVALID_FRAME"],
    ["unknown type", { type: "LAUNCH_ROCKETS" }, "UNKNOWN_TYPE"],
    ["lowercase type", { type: "get_chats" }, "UNKNOWN_TYPE"],
    ["missing chatId", { type: "GET_CHAT_HISTORY" }, "INVALID_FRAME"],
    ["chatId not a UUID", { type: "DELETE_CHAT", chatId: "abc" }, "INVALID_FRAME"],
    ["chatId wrong type", { type: "DELETE_CHAT", payload: { chatId: 12 } }, "INVALID_FRAME"],
    ["empty content", { type: "SEND_MESSAGE", chatId: crypto.randomUUID(), content: "   " }, "INVALID_FRAME"],
    ["content wrong type", { type: "SEND_MESSAGE", chatId: crypto.randomUUID(), content: { a: 1 } }, "INVALID_FRAME"],
    ["payload not an object", { type: "GET_CHATS", payload: "x" }, "INVALID_FRAME"],
    ["unknown chat", { type: "SEND_MESSAGE", chatId: crypto.randomUUID(), content: "hi" }, "CHAT_NOT_FOUND"],
    ["unknown chat history", { type: "GET_CHAT_HISTORY", chatId: crypto.randomUUID() }, "CHAT_NOT_FOUND"],
    ["name too long", { type: "CREATE_CHAT", name: "x".repeat(201) }, "INVALID_FRAME"],
  ];
  for (const [name, frame, code] of cases) {
    test(`${name} → ${code}`, async () => {
      const a = await open();
      if (typeof frame === "string") a.sendRaw(frame);
      else a.send(frame);
      const err = await a.next("ERROR");
      expect(err.code).toBe(code);
      expect(typeof err.error).toBe("string");
      expect(err.error.length).toBeGreaterThan(0);
      // still usable
      expect((await a.request({ type: "GET_CHATS" }, "CHAT_LIST")).type).toBe("CHAT_LIST");
    });
  }

  test("an oversized frame gets FRAME_TOO_LARGE and nothing is stored", async () => {
    const a = await open();
    const chat = await newChat(a);
    a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "x".repeat(srv.config.MAX_FRAME_BYTES + 10) });
    const err = await a.next("ERROR");
    expect(err.code).toBe("FRAME_TOO_LARGE");
    expect(await srv.store.listMessages(chat.id, { limit: 10 })).toEqual([]);
    expect((await a.request({ type: "GET_CHATS" }, "CHAT_LIST")).type).toBe("CHAT_LIST");
  });

  test("errors are always uppercase ERROR frames", async () => {
    const a = await open();
    a.sendRaw("nope");
    await a.next("ERROR");
    expect(a.frames.some((f) => f.type === "error")).toBe(false);
  });
});

describe("HTTP", () => {
  test("/health reports every dependency", async () => {
    const res = await fetch(`${srv.url}/health`);
    expect(res.status).toBe(200);
    const body: any = await res.json();
    expect(body).toMatchObject({
      status: "ok",
      services: { store: { kind: "sqlite", ok: true }, model: { kind: "openai-compatible", ok: true }, iot_hub: { status: "disabled" } },
      version: expect.any(String),
    });
    expect(typeof body.uptime_s).toBe("number");
  });

  test("/ is the chat page, /api says what this is; /ws without an upgrade is 426", async () => {
    const page = await fetch(srv.url);
    expect(page.headers.get("content-type")).toContain("text/html");
    const root: any = await (await fetch(`${srv.url}/api`)).json();
    expect(root.websocket).toBe("/ws");
    expect((await fetch(`${srv.url}/ws`)).status).toBe(426);
  });
});
