import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import type { ChatEvent } from "../src/chat/events";
import { startTestServer, type TestServer } from "./support/harness";
import { createHolds } from "./support/held-model";
import { type ModelRequest, startSseModel, type SseModel } from "./support/sse-model";
import { until, within } from "./support/until";
import type { Frame, TestClient } from "./support/ws-client";

// Replies that survive people: stop, resume after reconnect, one generation per chat, pages,
// rename and titles, settings. Real sockets, real SSE model, SQLite.
//
// A test that needs a reply in flight holds it at the model (`holdAfter`: the SSE server sends that
// many chunks, then waits for release() or for the request to be aborted), so "still streaming"
// is a fact the test arranged, not a bet on the model's pacing.

let model: SseModel;
let srv: TestServer;
const open = () => srv.connect();
const words = (n: number) => Array.from({ length: n }, (_, i) => `w${i} `);
const newChat = async (c: TestClient) => (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;

beforeAll(async () => {
  model = await startSseModel({ tokens: ["ok"] });
  srv = await startTestServer({
    OPENAI_BASE_URL: `${model.url}/v1`,
    OPENAI_MODEL: "base-model",
    CHAT_TITLES: "false",
    MODEL_ALLOWED: "base-model,pirate-7b",
  });
});
afterAll(async () => {
  await srv.close();
  model.stop();
});
// A failing test must not leave a reply held for the next one.
afterEach(() => model.release());

/** Sends a question and waits until the model holds its reply after `n` chunks, all of them seen by `c`. */
async function sendHeld(c: TestClient, chatId: string, content: string, n: number, extra: Record<string, unknown> = {}) {
  c.send({ type: "SEND_MESSAGE", chatId, content, ...extra });
  const chunks: Frame[] = [];
  for (let i = 0; i < n; i++) chunks.push(await c.next((f) => f.type === "MESSAGE" && f.chatId === chatId && !f.end));
  await model.waitHeld();
  return chunks;
}

describe("STOP_GENERATION", () => {
  for (const by of ["chatId", "traceId"] as const) {
    test(`by ${by}: aborts the model request upstream, stores the partial reply as stopped, ends with reason "stopped"`, async () => {
      model.setScript({ tokens: words(200), holdAfter: 3 });
      const a = await open();
      const chat = await newChat(a);
      const upstream = model.requests.length;
      const [first] = await sendHeld(a, chat.id, "talk a lot", 3);
      const stopped = await a.request(
        { type: "STOP_GENERATION", ...(by === "chatId" ? { chatId: chat.id } : { traceId: first!.traceId }) },
        "GENERATION_STOPPED",
      );
      expect(stopped).toMatchObject({ type: "GENERATION_STOPPED", chatId: chat.id, traceId: first!.traceId });
      const end = a.frames.find((f) => f.type === "MESSAGE" && f.end && f.traceId === first!.traceId)!;
      expect(end).toMatchObject({ content: "", reason: "stopped", seq: 4 });
      // The end frame comes before GENERATION_STOPPED.
      expect(a.frames.indexOf(end)).toBeLessThan(a.frames.indexOf(stopped));
      const seen = a.frames
        .filter((f) => f.type === "MESSAGE" && !f.end && f.traceId === first!.traceId)
        .map((f) => f.content)
        .join("");
      await until(() => model.requests[upstream]?.aborted, "the model request to be aborted upstream");
      const stored = (await srv.store.listMessages(chat.id, { limit: 5 })).find((m) => m.id === first!.traceId)!;
      expect(stored.status).toBe("stopped");
      expect(stored.content).toBe(seen);
      expect(seen).toBe(words(3).join(""));
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
    model.setScript({ tokens: words(60), holdAfter: 5 });
    const a = await open();
    const chat = await newChat(a);
    await sendHeld(a, chat.id, "long answer please", 5);
    a.close();
    await a.closed;

    const b = await open();
    const hist = await b.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
    const partial = hist.messages.at(-1);
    expect(partial).toMatchObject({ role: "assistant", streaming: true, seq: 5 });
    expect(partial.content).toBe(words(5).join(""));
    model.release();
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
    model.setScript({ tokens: words(60), holdAfter: 6 });
    const a = await open();
    const chat = await newChat(a);
    // a gets six chunks but has applied only three when its socket drops.
    const upTo6 = await sendHeld(a, chat.id, "resume me", 6);
    const have = upTo6
      .slice(0, 3)
      .map((f) => f.content)
      .join("");
    const traceId = upTo6[0]!.traceId;
    a.close();

    const b = await open();
    const catchUp = await b.request({ type: "RESUME", requestId: "r", chatId: chat.id, traceId, fromSeq: 3 }, "MESSAGE");
    expect(catchUp).toMatchObject({
      type: "MESSAGE",
      chatId: chat.id,
      traceId,
      end: false,
      seq: 6,
      content: words(6).slice(3).join(""),
      requestId: "r",
    });
    model.release();
    const rest = await b.reply(chat.id);
    expect(have + catchUp.content + rest.text).toBe(words(60).join(""));
    const seqs = rest.chunks.map((c) => c.seq);
    expect(seqs).toEqual(Array.from({ length: 54 }, (_, i) => i + 7));
    expect(rest.end.seq).toBe(61);
  });

  test("RESUME with nothing new (fromSeq = the latest seq): an empty catch-up frame, then the rest live", async () => {
    model.setScript({ tokens: words(10), holdAfter: 3 });
    const a = await open();
    const chat = await newChat(a);
    const got = await sendHeld(a, chat.id, "nothing new", 3);
    const traceId = got[0]!.traceId;

    const b = await open();
    const catchUp = await b.request({ type: "RESUME", chatId: chat.id, traceId, fromSeq: 3 }, "MESSAGE");
    expect(catchUp).toEqual({ type: "MESSAGE", chatId: chat.id, content: "", traceId, end: false, seq: 3 });
    model.release();
    const rest = await b.reply(chat.id);
    expect(rest.chunks.map((c) => c.seq)).toEqual([4, 5, 6, 7, 8, 9, 10]);
    expect(rest.text).toBe(words(10).slice(3).join(""));
    expect(rest.end).toMatchObject({ traceId, seq: 11 });
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
    // The first reply is held after its first chunk (and each later reply too, until release).
    model.setScript({ tokens: words(40), holdAfter: 1 });
    const a = await open();
    const chat = await newChat(a);
    const [first] = await sendHeld(a, chat.id, "first", 1);
    const accepted = await a.request({ type: "SEND_MESSAGE", chatId: chat.id, content: "second" }, "MESSAGE_ACCEPTED");
    expect(accepted).toMatchObject({ type: "MESSAGE_ACCEPTED", duplicate: false, queued: true });
    // Stored before the first reply ends.
    expect((await srv.store.listMessages(chat.id, { limit: 10 })).map((m) => m.content)).toContain("second");
    expect(srv.chat.replies.get(chat.id)?.traceId).toBe(first!.traceId);
    model.setScript({ tokens: words(40) });
    model.release();
    await a.reply(chat.id);
    const second = await a.reply(chat.id);
    expect(second.traceId).toBe(accepted.traceId);
    const stored = await srv.store.listMessages(chat.id, { limit: 10 });
    expect(stored.filter((m) => m.role === "assistant").map((m) => m.parent_id)).toEqual([stored[0]!.id, accepted.messageId]);
  });
});

test("a resend of a question whose reply is still streaming is a duplicate, not GENERATION_IN_PROGRESS", async () => {
  model.setScript({ tokens: words(30), holdAfter: 1 });
  const a = await open();
  const chat = await newChat(a);
  const id = crypto.randomUUID();
  const [first] = await sendHeld(a, chat.id, "once", 1, { messageId: id });
  const again = await a.request({ type: "SEND_MESSAGE", chatId: chat.id, message: { id, content: "once" } }, "MESSAGE_ACCEPTED");
  expect(again).toMatchObject({ type: "MESSAGE_ACCEPTED", duplicate: true, messageId: id });
  // The resend was answered while the reply was still streaming: no end frame yet, and it is still registered.
  expect(a.frames.some((f) => f.type === "MESSAGE" && f.end)).toBe(false);
  expect(srv.chat.replies.get(chat.id)?.traceId).toBe(first!.traceId);
  model.release();
  const r = await a.reply(chat.id);
  expect(first!.content + r.text).toBe(words(30).join(""));
  const stored = await srv.store.listMessages(chat.id, { limit: 10 });
  expect(stored.map((m) => [m.role, m.id])).toEqual([
    ["user", id],
    ["assistant", first!.traceId],
  ]);
});

describe("during a stream", () => {
  test('DELETE_CHAT stops the reply first: watchers get its end with reason "stopped", then CHAT_DELETED; no GENERATION_STOPPED; upstream aborted; nothing left stored', async () => {
    model.setScript({ tokens: words(50), holdAfter: 2 });
    const a = await open();
    const watcher = await open();
    const chat = await newChat(a);
    await watcher.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
    const upstream = model.requests.length;
    const [first] = await sendHeld(a, chat.id, "delete me mid-way", 2);

    const gone = await a.request({ type: "DELETE_CHAT", requestId: "d", chatId: chat.id }, "CHAT_DELETED");
    expect(gone).toMatchObject({ type: "CHAT_DELETED", chatId: chat.id, requestId: "d" });
    const deleted = await watcher.next((f) => f.type === "CHAT_DELETED" && f.chatId === chat.id);
    for (const c of [a, watcher]) {
      const end = c.frames.find((f) => f.type === "MESSAGE" && f.end && f.traceId === first!.traceId);
      expect(end).toMatchObject({ chatId: chat.id, content: "", reason: "stopped", seq: 3 });
      expect(c.frames.indexOf(end!)).toBeLessThan(c.frames.indexOf(c === a ? gone : deleted));
      expect(c.frames.some((f) => f.type === "GENERATION_STOPPED" || f.type === "ERROR")).toBe(false);
    }
    await until(() => model.requests[upstream]?.aborted, "the model request to be aborted upstream");
    expect(srv.chat.replies.get(chat.id)).toBeUndefined();
    // The stopped partial reply was not left behind as an orphan.
    expect(await srv.store.getChat("default", chat.id)).toBeUndefined();
    expect(await srv.store.listMessages(chat.id, { limit: 10 })).toEqual([]);
    expect((await watcher.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).code).toBe("CHAT_NOT_FOUND");
  });

  test("GET_CHAT_HISTORY with `before`: stored messages only, no streaming entry, yet the connection watches the live rest", async () => {
    model.setScript({ tokens: ["r"] });
    const a = await open();
    const chat = await newChat(a);
    a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "q0" });
    await a.reply(chat.id);
    model.setScript({ tokens: words(8), holdAfter: 2 });
    const [first] = await sendHeld(a, chat.id, "q1", 2);

    const b = await open();
    const future = new Date(Date.now() + 60_000).toISOString();
    const page = await b.request({ type: "GET_CHAT_HISTORY", chatId: chat.id, before: future }, "CHAT_HISTORY");
    expect(page.messages.map((m: Frame) => [m.role, m.content])).toEqual([
      ["user", "q0"],
      ["assistant", "r"],
      ["user", "q1"],
    ]);
    expect(page.messages.some((m: Frame) => m.streaming || m.id === first!.traceId)).toBe(false);
    expect(page.hasMore).toBe(false);
    // Without `before`, the same moment shows the streaming entry (the contrast the docs draw).
    const whole = await b.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
    expect(whole.messages.at(-1)).toMatchObject({ id: first!.traceId, streaming: true, seq: 2 });

    model.release();
    const rest = await b.reply(chat.id);
    expect(rest.traceId).toBe(first!.traceId);
    expect(rest.chunks.map((c) => c.seq)).toEqual([3, 4, 5, 6, 7, 8]);
    expect(rest.text).toBe(words(8).slice(2).join(""));
  });
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
    model.setScript((req) => ({
      tokens: req.body.messages[0].content.includes("title") ? ['"Paris', " trip", ' ideas"'] : ["Go", " in", " May"],
    }));
    try {
      const a = await titled.connect();
      const watcher = await titled.connect();
      const chat = await newChat(a);
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "When should I visit Paris?" });
      await a.reply(chat.id);
      const update = await watcher.next((f) => f.type === "CHAT_UPDATED" && f.chat.id === chat.id);
      expect(update.chat.name).toBe("Paris trip ideas");
      expect((await titled.store.getChat("default", chat.id))!.name).toBe("Paris trip ideas");
      a.close();
      watcher.close();
    } finally {
      await titled.close();
    }
  });
  test("a title that comes back empty is not asked for again on every later send; a model error is retried", async () => {
    const titled = await startTestServer({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", CHAT_TITLES: "true" });
    const isTitle = (r: ModelRequest) => /title/i.test(r.body.messages[0]?.content ?? "");
    const titleOf = (r: ModelRequest) => r.body.messages.find((m: { role: string }) => m.role === "user")?.content as string;
    let failTitles = false;
    model.setScript((req) =>
      isTitle(req) ? (failTitles ? { status: 400 } : { tokens: [' "', '"  '] }) : { tokens: ["Go", " in", " May"] },
    );
    const from = model.requests.length;
    const titles = () => model.requests.slice(from).filter(isTitle).map(titleOf);
    try {
      const a = await titled.connect();
      const empty = await newChat(a);
      a.send({ type: "SEND_MESSAGE", chatId: empty.id, content: "empty 1" });
      await a.reply(empty.id);
      await until(() => titles().length === 1, "the first title request");
      for (const content of ["empty 2", "empty 3"]) {
        a.send({ type: "SEND_MESSAGE", chatId: empty.id, content });
        await a.reply(empty.id);
      }
      // A chat whose titling fails: asked again on its next send. Its requests come after the
      // empty chat's sends, down the same path, so any title request for those has arrived by then.
      failTitles = true;
      const failing = await newChat(a);
      a.send({ type: "SEND_MESSAGE", chatId: failing.id, content: "failing 1" });
      await a.reply(failing.id);
      await until(() => titles().includes("failing 1"), "the failing chat's title request");
      a.send({ type: "SEND_MESSAGE", chatId: failing.id, content: "failing 2" });
      await a.reply(failing.id);
      await until(() => titles().includes("failing 2"), "the failing chat's second title request");
      expect(titles()).toEqual(["empty 1", "failing 1", "failing 2"]);
      expect((await titled.store.getChat("default", empty.id))!.name).toBe("New Chat");
      a.close();
    } finally {
      await titled.close();
    }
  });

  test("a rename while the title is being generated wins: the model's title is dropped, no second CHAT_UPDATED", async () => {
    const holds = createHolds();
    const titled = await startTestServer(
      { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", CHAT_TITLES: "true" },
      { wrapModel: holds.wrap },
    );
    model.setScript((req) => ({
      tokens: req.body.messages[0].content.includes("title") ? ['"Paris', " trip", ' ideas"'] : ["Go", " in", " May"],
    }));
    const updates: ChatEvent[] = [];
    const unsubscribe = titled.chat.bus.subscribe((e) => void (e.type === "chat_updated" && updates.push(e)));
    // The title request (its system turn asks for a title) is held after its first chunk.
    const hold = holds.hold({ match: (turns) => turns[0]?.role === "system" && /title/i.test(turns[0].content) });
    try {
      const a = await titled.connect();
      const watcher = await titled.connect();
      const chat = await newChat(a);
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "When should I visit Paris?" });
      await a.reply(chat.id);
      await within(hold.reached, 5_000, "the title request to be held");
      const renamed = await a.request({ type: "RENAME_CHAT", chatId: chat.id, name: "Mine" }, "CHAT_UPDATED");
      expect(renamed.chat.name).toBe("Mine");
      hold.release();
      // The title stream ends; what titling does after it touches only SQLite (synchronous under its
      // promises) and the in-process bus, so one turn of the event loop later it has finished.
      await within(hold.ended, 5_000, "the title stream to end");
      await new Promise((resolve) => setImmediate(resolve));
      expect(updates.map((e) => e.type === "chat_updated" && e.chat.name)).toEqual(["Mine"]);
      expect((await titled.store.getChat("default", chat.id))!.name).toBe("Mine");
      expect((await watcher.next((f) => f.type === "CHAT_UPDATED" && f.chat.id === chat.id)).chat.name).toBe("Mine");
      expect(watcher.frames.filter((f) => f.type === "CHAT_UPDATED" && f.chat.id === chat.id)).toHaveLength(1);
      a.close();
      watcher.close();
    } finally {
      hold.release();
      unsubscribe();
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
    const set = await a.request(
      { type: "UPDATE_SETTINGS", payload: { systemPrompt: "Answer like a pirate.", temperature: 0.3, model: "pirate-7b" } },
      "SETTINGS",
    );
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

  test("MODEL_ALLOWED: another model is refused (INVALID_ARGUMENT) naming the allowed ones, nothing stored; a stored one no longer allowed is not used", async () => {
    const a = await open();
    const before = await srv.store.getSettings("default");
    const err = await a.request({ type: "UPDATE_SETTINGS", payload: { model: "gpt-4-32k" } }, "SETTINGS");
    expect(err).toMatchObject({
      type: "ERROR",
      code: "INVALID_ARGUMENT",
      error: "model must be one of: base-model, pirate-7b",
      allowed: ["base-model", "pirate-7b"],
    });
    expect(await srv.store.getSettings("default")).toEqual(before);
    // A setting written before the list changed (straight into the store): the configured model answers.
    await srv.store.patchSettings("default", { model: "gpt-4-32k" });
    model.setScript({ tokens: ["ok"] });
    const b = await open();
    const chat = await newChat(b);
    b.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "hi" });
    await b.reply(chat.id);
    expect(model.requests.at(-1)!.body.model).toBe("base-model");
    await srv.store.patchSettings("default", { model: null });
  });
  test("MODEL_ALLOWED unset: only the configured model may be chosen", async () => {
    const only = await startTestServer({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "base-model", CHAT_TITLES: "false" });
    try {
      const a = await only.connect();
      expect(await a.request({ type: "UPDATE_SETTINGS", payload: { model: "pirate-7b" } }, "SETTINGS")).toMatchObject({
        code: "INVALID_ARGUMENT",
        error: "model must be one of: base-model",
      });
      expect((await a.request({ type: "UPDATE_SETTINGS", payload: { model: "base-model" } }, "SETTINGS")).settings).toEqual({
        model: "base-model",
      });
    } finally {
      await only.close();
    }
  });
});
