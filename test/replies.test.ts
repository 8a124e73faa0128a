import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import { until } from "./support/until";
import type { TestClient } from "./support/ws-client";

// Replies that survive people: stop, resume after reconnect, one generation per chat, pages,
// rename and titles, settings. Real sockets, real SSE model, SQLite.

let model: SseModel;
let srv: TestServer;
const open = () => srv.connect();
const words = (n: number) => Array.from({ length: n }, (_, i) => `w${i} `);
const newChat = async (c: TestClient) => (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;

beforeAll(async () => {
  model = await startSseModel({ tokens: ["ok"] });
  srv = await startTestServer({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "base-model", CHAT_TITLES: "false" });
});
afterAll(async () => {
  await srv.close();
  model.stop();
});

describe("STOP_GENERATION", () => {
  for (const by of ["chatId", "traceId"] as const) {
    test(`by ${by}: aborts the model request upstream, stores the partial reply as stopped, ends with reason "stopped"`, async () => {
      model.setScript({ tokens: words(200), delayMs: 10 });
      const a = await open();
      const chat = await newChat(a);
      const upstream = model.requests.length;
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "talk a lot" });
      const first = await a.next((f) => f.type === "MESSAGE" && !f.end);
      const stopped = await a.request({ type: "STOP_GENERATION", ...(by === "chatId" ? { chatId: chat.id } : { traceId: first.traceId }) }, "GENERATION_STOPPED");
      expect(stopped).toMatchObject({ type: "GENERATION_STOPPED", chatId: chat.id, traceId: first.traceId });
      const end = a.frames.find((f) => f.type === "MESSAGE" && f.end && f.traceId === first.traceId)!;
      expect(end).toMatchObject({ content: "", reason: "stopped" });
      const seen = a.frames.filter((f) => f.type === "MESSAGE" && !f.end && f.traceId === first.traceId).map((f) => f.content).join("");
      await until(() => model.requests[upstream]?.aborted, "the model request to be aborted upstream");
      const stored = (await srv.store.listMessages(chat.id, { limit: 5 })).find((m) => m.id === first.traceId)!;
      expect(stored.status).toBe("stopped");
      expect(stored.content).toBe(seen);
      expect(seen.length).toBeLessThan(words(200).join("").length);
      // No ERROR for a stop the user asked for.
      expect(a.frames.some((f) => f.type === "ERROR")).toBe(false);
    });
  }

  test("nothing to stop → ERROR NO_GENERATION", async () => {
    const a = await open();
    const chat = await newChat(a);
    expect((await a.request({ type: "STOP_GENERATION", chatId: chat.id }, "GENERATION_STOPPED")).code).toBe("NO_GENERATION");
    expect((await a.request({ type: "STOP_GENERATION" }, "GENERATION_STOPPED")).code).toBe("INVALID_FRAME");
  });
});

describe("the server owns the stream", () => {
  test("the sender disconnects mid-stream; a new client gets the partial reply in history, then the rest live, exactly the stored text", async () => {
    model.setScript({ tokens: words(60), delayMs: 8 });
    const a = await open();
    const chat = await newChat(a);
    a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "long answer please" });
    await a.next((f) => f.type === "MESSAGE" && f.seq === 5);
    a.close();
    await a.closed;

    const b = await open();
    const hist = await b.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
    const partial = hist.messages.at(-1);
    expect(partial).toMatchObject({ role: "assistant", streaming: true });
    expect(partial.seq).toBeGreaterThanOrEqual(5);
    expect(partial.content).toBe(words(partial.seq).join(""));
    const rest = await b.reply(chat.id);
    expect(rest.traceId).toBe(partial.id);
    expect(rest.chunks[0]?.seq ?? rest.end.seq).toBe(partial.seq + 1);
    const text = partial.content + rest.text;
    expect(text).toBe(words(60).join(""));
    const stored = (await srv.store.listMessages(chat.id, { limit: 5 })).at(-1)!;
    expect(stored).toMatchObject({ id: partial.id, content: text });
    expect(stored.status).toBeUndefined();
  });

  test("RESUME {chatId, traceId, fromSeq}: a catch-up frame with what was missed, then live, no gap, no repeat", async () => {
    model.setScript({ tokens: words(60), delayMs: 8 });
    const a = await open();
    const chat = await newChat(a);
    a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "resume me" });
    const upTo3 = [await a.next((f) => f.type === "MESSAGE"), await a.next((f) => f.type === "MESSAGE"), await a.next((f) => f.type === "MESSAGE")];
    const have = upTo3.map((f) => f.content).join("");
    const traceId = upTo3[0]!.traceId;
    a.close();

    const b = await open();
    b.send({ type: "RESUME", chatId: chat.id, traceId, fromSeq: 3 });
    const rest = await b.reply(chat.id);
    expect(have + rest.text).toBe(words(60).join(""));
    const seqs = rest.chunks.map((c) => c.seq);
    expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
    expect(new Set(seqs).size).toBe(seqs.length);
  });

  test("RESUME after the reply finished: the end frame carries the stored message", async () => {
    model.setScript({ tokens: ["done", " now"] });
    const a = await open();
    const chat = await newChat(a);
    a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "quick" });
    const r = await a.reply(chat.id);
    const b = await open();
    const fin = await b.request({ type: "RESUME", chatId: chat.id, traceId: r.traceId, fromSeq: 1 }, "MESSAGE");
    expect(fin).toMatchObject({ end: true, content: "", traceId: r.traceId, message: { id: r.traceId, content: "done now" } });
    const missing = await b.request({ type: "RESUME", chatId: chat.id, traceId: crypto.randomUUID(), fromSeq: 0 }, "MESSAGE");
    expect(missing.code).toBe("GENERATION_NOT_FOUND");
  });

  test("a second SEND_MESSAGE while the chat's reply streams is stored at once and answered next (queued: true), not refused", async () => {
    model.setScript({ tokens: words(40), delayMs: 10 });
    const a = await open();
    const chat = await newChat(a);
    a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "first" });
    const first = await a.next((f) => f.type === "MESSAGE");
    const accepted = await a.request({ type: "SEND_MESSAGE", chatId: chat.id, content: "second" }, "MESSAGE_ACCEPTED");
    expect(accepted).toMatchObject({ type: "MESSAGE_ACCEPTED", duplicate: false, queued: true });
    // Stored before the first reply ends.
    expect((await srv.store.listMessages(chat.id, { limit: 10 })).map((m) => m.content)).toContain("second");
    expect(srv.chat.replies.get(chat.id)?.traceId).toBe(first.traceId);
    await a.reply(chat.id);
    const second = await a.reply(chat.id);
    expect(second.traceId).toBe(accepted.traceId);
    const stored = await srv.store.listMessages(chat.id, { limit: 10 });
    expect(stored.filter((m) => m.role === "assistant").map((m) => m.parent_id)).toEqual([stored[0]!.id, accepted.messageId]);
  });
});

test("a resend of a question whose reply is still streaming is a duplicate, not GENERATION_IN_PROGRESS", async () => {
  model.setScript({ tokens: words(30), delayMs: 10 });
  const a = await open();
  const chat = await newChat(a);
  const id = crypto.randomUUID();
  a.send({ type: "SEND_MESSAGE", chatId: chat.id, message: { id, content: "once" } });
  await a.next((f) => f.type === "MESSAGE");
  const again = await a.request({ type: "SEND_MESSAGE", chatId: chat.id, message: { id, content: "once" } }, "MESSAGE_ACCEPTED");
  expect(again).toMatchObject({ type: "MESSAGE_ACCEPTED", duplicate: true, messageId: id });
  await a.reply(chat.id);
});

describe("pages", () => {
  test("GET_CHAT_HISTORY {limit, before} pages back through the history with hasMore", async () => {
    model.setScript({ tokens: ["r"] });
    const a = await open();
    const chat = await newChat(a);
    for (let i = 0; i < 4; i++) {
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: `q${i}` });
      await a.reply(chat.id);
    }
    const all = (await a.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).messages;
    expect(all).toHaveLength(8);
    const p1 = await a.request({ type: "GET_CHAT_HISTORY", chatId: chat.id, limit: 3 }, "CHAT_HISTORY");
    expect(p1.messages).toEqual(all.slice(5));
    expect(p1.hasMore).toBe(true);
    const p2 = await a.request({ type: "GET_CHAT_HISTORY", chatId: chat.id, limit: 3, before: p1.messages[0].created_at }, "CHAT_HISTORY");
    expect(p2.messages).toEqual(all.slice(2, 5));
    const p3 = await a.request({ type: "GET_CHAT_HISTORY", chatId: chat.id, limit: 3, before: p2.messages[0].created_at }, "CHAT_HISTORY");
    expect(p3.messages).toEqual(all.slice(0, 2));
    expect(p3.hasMore).toBe(false);
  });

  test("GET_CHATS {limit, cursor} walks every chat once", async () => {
    const a = await open();
    for (let i = 0; i < 5; i++) await newChat(a);
    const everything = (await a.request({ type: "GET_CHATS" }, "CHAT_LIST")).chats.map((c: any) => c.id);
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await a.request({ type: "GET_CHATS", payload: { limit: 2, ...(cursor ? { cursor } : {}) } }, "CHAT_LIST");
      expect(page.chats.length).toBeLessThanOrEqual(2);
      seen.push(...page.chats.map((c: any) => c.id));
      cursor = page.cursor;
    } while (cursor);
    expect(seen).toEqual(everything);
    const bad = await a.request({ type: "GET_CHATS", cursor: "not-a-cursor" }, "CHAT_LIST");
    expect(bad).toMatchObject({ type: "ERROR", code: "INVALID_FRAME" });
  });
});

describe("rename and titles", () => {
  test("RENAME_CHAT → CHAT_UPDATED to every client; bad names are refused", async () => {
    const a = await open();
    const b = await open();
    const chat = await newChat(a);
    const updated = await a.request({ type: "RENAME_CHAT", chatId: chat.id, name: "Holiday" }, "CHAT_UPDATED");
    expect(updated.chat).toMatchObject({ id: chat.id, name: "Holiday" });
    expect((await b.next((f) => f.type === "CHAT_UPDATED" && f.chat.id === chat.id)).chat.name).toBe("Holiday");
    expect((await a.request({ type: "RENAME_CHAT", chatId: chat.id, name: " " }, "CHAT_UPDATED")).code).toBe("INVALID_FRAME");
    expect((await a.request({ type: "RENAME_CHAT", chatId: crypto.randomUUID(), name: "x" }, "CHAT_UPDATED")).code).toBe("CHAT_NOT_FOUND");
  });

  test("a chat with the default name gets a title from the model after its first exchange", async () => {
    const titled = await startTestServer({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", CHAT_TITLES: "true" });
    model.setScript((req) => ({ tokens: req.body.messages[0].content.includes("title") ? ['"Paris', " trip", ' ideas"'] : ["Go", " in", " May"] }));
    try {
      const a = await titled.connect();
      const watcher = await titled.connect();
      const chat = await newChat(a);
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "When should I visit Paris?" });
      await a.reply(chat.id);
      const update = await watcher.next((f) => f.type === "CHAT_UPDATED" && f.chat.id === chat.id);
      expect(update.chat.name).toBe("Paris trip ideas");
      expect((await titled.store.getChat(chat.id))!.name).toBe("Paris trip ideas");
      a.close();
      watcher.close();
    } finally {
      await titled.close();
    }
  });
});

describe("settings", () => {
  test("UPDATE_SETTINGS is stored and applied to the next request; null resets; bad values are refused", async () => {
    model.setScript({ tokens: ["ok"] });
    const a = await open();
    const initial = await a.request({ type: "GET_SETTINGS" }, "SETTINGS");
    expect(initial.defaults).toMatchObject({ model: "base-model" });
    const set = await a.request({ type: "UPDATE_SETTINGS", payload: { systemPrompt: "Answer like a pirate.", temperature: 0.3, model: "pirate-7b" } }, "SETTINGS");
    expect(set.settings).toEqual({ systemPrompt: "Answer like a pirate.", temperature: 0.3, model: "pirate-7b" });
    expect(await srv.store.getSettings("default")).toEqual(set.settings);

    const chat = await newChat(a);
    a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "hi" });
    await a.reply(chat.id);
    const sent = model.requests.at(-1)!.body;
    expect(sent.messages[0]).toEqual({ role: "system", content: "Answer like a pirate." });
    expect(sent.temperature).toBe(0.3);
    expect(sent.model).toBe("pirate-7b");

    for (const bad of [{ temperature: 3 }, { temperature: "hot" }, { systemPrompt: "" }, { model: "no spaces allowed" }]) {
      expect((await a.request({ type: "UPDATE_SETTINGS", payload: bad }, "SETTINGS")).code).toBe("INVALID_FRAME");
    }
    const reset = await a.request({ type: "UPDATE_SETTINGS", payload: { systemPrompt: null, temperature: null, model: null } }, "SETTINGS");
    expect(reset.settings).toEqual({});
  });
});
