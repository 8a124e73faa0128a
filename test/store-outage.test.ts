import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { openAICompatibleModel } from "../src/model/openai";
import type { Store } from "../src/store/store";
import { handlers } from "../src/ws/handlers";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { createHolds } from "./support/held-model";
import { startSseModel, type SseModel } from "./support/sse-model";
import type { Frame, TestClient } from "./support/ws-client";

// Cosmos DB going away mid-session and coming back (the test server's stop()/start() on the same
// port, data kept). One server process and one browser socket live through the whole outage: the
// point is that nothing has to be restarted or reconnected once the database is back.

const TOKENS = ["Still", " here", ",", " still", " answering", "."];
const REPLY = TOKENS.join("");
/** The bound the brief sets on every answer while the store is down. */
const DOWN_BOUND_MS = 10_000;
/** Per test: a hanging store call would need its full timeouts before the bound assertions fail. */
const TEST_TIMEOUT_MS = 60_000;

let cosmos: CosmosTestServer;
let store: Store;
let sse: SseModel;
/**
 * The SSE model behind a hold the mid-reply tests arm: the reply to one question pauses after its
 * first delta until released. That makes "the store dies between storing the question and storing
 * the reply" deterministic, with no timing race between the stream and stopping the database.
 * The hold is keyed by the question because chat titling streams from the same model meanwhile.
 */
const holds = createHolds();
let srv: TestServer;
let a: TestClient; // the one browser socket that lives through every outage
const figures: Record<string, string> = {};

beforeAll(async () => {
  cosmos = await startCosmosServer();
  // Production timeouts (no requestTimeoutMs), as storeFromConfig opens it.
  store = await openTestCosmosStore(cosmos, "pichat-outage");
  sse = await startSseModel({ tokens: TOKENS });
  const model = holds.wrap(openAICompatibleModel({ baseURL: `${sse.url}/v1`, apiKey: "sk-test", model: "test-model", timeoutMs: 30_000 }));
  srv = await startTestServer({}, { store, model });
  a = await srv.connect();
});
// Each test that needs the database down stops it itself (stop() is a no-op when down), and none
// leaves it down for the next (start() is a no-op when up), so a failure cannot cascade.
afterEach(async () => cosmos.start());
afterAll(async () => {
  console.log(
    `store outage figures:\n${Object.entries(figures)
      .map(([k, v]) => `  ${k}: ${v}`)
      .join("\n")}`,
  );
  a?.close();
  await srv?.close();
  await store?.close();
  await cosmos?.stop();
  sse?.stop();
});

const timed = async <T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> => {
  const t0 = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - t0 };
};
const ms = (n: number) => `${n.toFixed(1)} ms`;
let rid = 0;
/** A request whose answer is told apart by requestId, with a deadline well past DOWN_BOUND_MS so the bound is what fails. */
const ask = (frame: Frame, replyType: string) => {
  const requestId = `r-${++rid}`;
  a.send({ ...frame, requestId });
  return a.next((f) => f.requestId === requestId && (f.type === replyType || f.type === "ERROR"), DOWN_BOUND_MS + 5_000);
};
const newChat = async () => {
  const f = await ask({ type: "CREATE_CHAT" }, "NEW_CHAT");
  expect(f.type).toBe("NEW_CHAT");
  return f.chat as Frame;
};
const historyOf = async (chatId: string) => {
  const f = await ask({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY");
  expect(f.type).toBe("CHAT_HISTORY");
  return f.messages as Frame[];
};
const turns = (messages: Frame[]) => messages.map((m) => [m.role, m.content]);
/** Model requests answering `question`; counted by content because chat titling asks the model too. */
const askedAbout = (question: string) => sse.requests.filter((r) => r.body.messages.at(-1)?.content === question).length;
const health = async () => {
  const res = await fetch(`${srv.url}/health`);
  return { status: res.status, body: (await res.json()) as Frame };
};

describe("the store goes away mid-session and comes back", () => {
  let kept: Frame; // written before the outage; must survive it
  let keptTraceId: string;
  let spare: Frame; // deleted while the store is down: must survive that too

  test("before the outage: a chat with one exchange", async () => {
    kept = await newChat();
    a.send({ type: "SEND_MESSAGE", chatId: kept.id, content: "remember me" });
    const r = await a.reply(kept.id);
    expect(r.text).toBe(REPLY);
    keptTraceId = r.traceId;
    expect((await health()).status).toBe(200);
  });

  test(
    "while it is down, every command that needs the store (every type but STOP_GENERATION and UNWATCH) answers STORE_UNAVAILABLE within the bound and the socket stays open; UNWATCH still answers",
    async () => {
      spare = await newChat();
      // Read once, so this replica keeps its newest messages and knows its ratings (none).
      expect(turns(await historyOf(kept.id))).toEqual([
        ["user", "remember me"],
        ["assistant", REPLY],
      ]);
      await cosmos.stop();
      const framesBefore = a.frames.length;
      const commands: [string, Frame, string][] = [
        ["GET_CHATS", { type: "GET_CHATS" }, "CHAT_LIST"],
        ["CREATE_CHAT", { type: "CREATE_CHAT", name: "during the outage" }, "NEW_CHAT"],
        ["SEND_MESSAGE", { type: "SEND_MESSAGE", chatId: kept.id, content: "anyone there?" }, "MESSAGE_ACCEPTED"],
        // A chat whose newest messages this replica has not kept (src/chat/recent.ts) must be read.
        ["GET_CHAT_HISTORY", { type: "GET_CHAT_HISTORY", chatId: spare.id }, "CHAT_HISTORY"],
        ["DELETE_CHAT", { type: "DELETE_CHAT", chatId: spare.id }, "CHAT_DELETED"],
        ["RENAME_CHAT", { type: "RENAME_CHAT", chatId: kept.id, name: "renamed during the outage" }, "CHAT_UPDATED"],
        ["RESUME", { type: "RESUME", chatId: kept.id, traceId: keptTraceId, fromSeq: 0 }, "MESSAGE"],
        ["UPDATE_SETTINGS", { type: "UPDATE_SETTINGS", temperature: 1.5 }, "SETTINGS"],
        // The failed update may or may not have landed: the kept copy was dropped, so this must read.
        ["GET_SETTINGS", { type: "GET_SETTINGS" }, "SETTINGS"],
        // Branches (src/chat/branches.ts): each reads the chat and its messages first.
        ["REGENERATE", { type: "REGENERATE", chatId: kept.id }, "REGENERATING"],
        [
          "EDIT_MESSAGE",
          { type: "EDIT_MESSAGE", chatId: kept.id, messageId: keptTraceId, content: "edited during the outage" },
          "MESSAGE_ACCEPTED",
        ],
        ["GET_BRANCHES", { type: "GET_BRANCHES", chatId: kept.id, messageId: keptTraceId }, "BRANCHES"],
        ["SELECT_BRANCH", { type: "SELECT_BRANCH", chatId: kept.id, messageId: keptTraceId }, "CHAT_HISTORY"],
        // Search reads the owner's chats first (Cosmos) or the index (SQLite).
        ["SEARCH", { type: "SEARCH", query: "anyone there" }, "SEARCH_RESULTS"],
        // Pins, folders and ratings (src/chat/organise.ts, src/chat/feedback.ts): each reads the store first.
        ["PIN_CHAT", { type: "PIN_CHAT", chatId: kept.id }, "CHAT_UPDATED"],
        ["MOVE_CHAT", { type: "MOVE_CHAT", chatId: kept.id, folderId: null }, "CHAT_UPDATED"],
        ["GET_FOLDERS", { type: "GET_FOLDERS" }, "FOLDERS"],
        ["KEEP_CHAT", { type: "KEEP_CHAT", chatId: kept.id }, "CHAT_UPDATED"],
        ["CREATE_FOLDER", { type: "CREATE_FOLDER", name: "during the outage" }, "FOLDERS"],
        ["RENAME_FOLDER", { type: "RENAME_FOLDER", folderId: crypto.randomUUID(), name: "x" }, "FOLDERS"],
        ["DELETE_FOLDER", { type: "DELETE_FOLDER", folderId: crypto.randomUUID() }, "FOLDERS"],
        // On the spare chat: a rating that may or may not have landed drops what is known of that chat's ratings, so
        // the kept chat's history below could no longer be answered from memory.
        ["RATE_REPLY", { type: "RATE_REPLY", chatId: spare.id, messageId: crypto.randomUUID(), rating: "up" }, "FEEDBACK"],
        // Devices and usage: each reads the caller's devices or records first.
        ["GET_DEVICES", { type: "GET_DEVICES" }, "DEVICES"],
        ["SEND_TO_DEVICE", { type: "SEND_TO_DEVICE", deviceId: "kitchen-pi", text: "dinner is ready" }, "DEVICE_SENT"],
        ["GET_USAGE", { type: "GET_USAGE" }, "USAGE"],
        // Shared links (src/chat/shares.ts).
        ["SHARE_CHAT", { type: "SHARE_CHAT", chatId: kept.id }, "SHARE"],
        ["GET_SHARES", { type: "GET_SHARES" }, "SHARES"],
        ["REVOKE_SHARE", { type: "REVOKE_SHARE", shareId: "D".repeat(32) }, "SHARE_REVOKED"],
        // The tools a user's replies may call depend on their settings, whose kept copy the failed update dropped.
        ["GET_TOOLS", { type: "GET_TOOLS" }, "TOOLS"],
      ];
      // Every frame type is here except the two that read no store: UNWATCH (below) and
      // STOP_GENERATION (the next test).
      // What this replica keeps answers from memory: the newest messages of a chat it has read, and the
      // settings it has read (both kept exact by the bus). Asked first, so they are known to be kept.
      const fromMemory: [string, Frame, string][] = [
        ["GET_CHAT_HISTORY", { type: "GET_CHAT_HISTORY", chatId: kept.id }, "CHAT_HISTORY"],
        // A chat this replica knows is the caller's (created here): no store read to watch it.
        ["WATCH", { type: "WATCH", chatIds: [spare.id] }, "WATCHING"],
      ];
      expect([...new Set([...commands, ...fromMemory].map(([name]) => name)), "STOP_GENERATION", "UNWATCH"].sort()).toEqual(
        Object.keys(handlers).sort(),
      );
      for (const [name, frame, replyType] of commands) {
        const { value: f, ms: took } = await timed(() => ask(frame, replyType));
        figures[`${name} → STORE_UNAVAILABLE while down`] = ms(took);
        expect({ name, ...f }).toMatchObject({ name, type: "ERROR", code: "STORE_UNAVAILABLE", retryAfterMs: expect.any(Number) });
        expect(took).toBeLessThan(DOWN_BOUND_MS);
        expect(a.ws.readyState).toBe(WebSocket.OPEN);
      }
      // Nothing half-happened: no chat announced, deleted or renamed, no question shown, no reply
      // started, no settings changed, the model not asked. (A late CHAT_UPDATED from titling the
      // earlier chat may land here, so renames are told apart by name.)
      const during = a.frames.slice(framesBefore);
      expect(during.filter((f) => f.type === "ERROR").length).toBe(commands.length);
      expect(
        during
          .map((f) => f.type)
          .filter((t) =>
            ["NEW_CHAT", "CHAT_CREATED", "CHAT_DELETED", "FIRST_MESSAGE", "MESSAGE", "MESSAGE_ACCEPTED", "SETTINGS", "WATCHING"].includes(
              t,
            ),
          ),
      ).toEqual([]);
      expect(during.filter((f) => f.type === "CHAT_UPDATED" && f.chat.name === "renamed during the outage")).toEqual([]);
      expect(askedAbout("anyone there?")).toBe(0);
      // UNWATCH needs no store: it answers as usual, within the bound.
      const { value: unwatched, ms: unwatchMs } = await timed(() => ask({ type: "UNWATCH", chatIds: [kept.id] }, "WATCHING"));
      figures["UNWATCH → WATCHING while down"] = ms(unwatchMs);
      expect(unwatched).toMatchObject({ type: "WATCHING", chatIds: expect.any(Array) });
      // Kept reads still answer, exactly what was stored before the outage, within the bound.
      for (const [name, frame, replyType] of fromMemory) {
        const { value: f, ms: took } = await timed(() => ask(frame, replyType));
        figures[`${name} → from memory while down`] = ms(took);
        expect({ name, type: f.type }).toEqual({ name, type: replyType });
        expect(took).toBeLessThan(DOWN_BOUND_MS);
        if (name === "GET_CHAT_HISTORY")
          expect(turns(f.messages)).toEqual([
            ["user", "remember me"],
            ["assistant", REPLY],
          ]);
      }
      expect(unwatchMs).toBeLessThan(DOWN_BOUND_MS);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    'while it is down, STOP_GENERATION (which reads no store) still stops a running reply within the bound: end "stopped", then ERROR STORE_UNAVAILABLE (the partial reply could not be saved), then GENERATION_STOPPED',
    async () => {
      const chat = await newChat();
      const question = "stop me while the store is down";
      const { release } = holds.hold({ question });
      try {
        a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: question });
        const first = await a.next((f) => f.type === "MESSAGE" && f.chatId === chat.id && !f.end);
        await cosmos.stop();
        const { value: stopped, ms: took } = await timed(() => ask({ type: "STOP_GENERATION", chatId: chat.id }, "GENERATION_STOPPED"));
        figures["STOP_GENERATION → GENERATION_STOPPED while down"] = ms(took);
        expect(stopped).toMatchObject({ type: "GENERATION_STOPPED", chatId: chat.id, traceId: first.traceId });
        expect(took).toBeLessThan(DOWN_BOUND_MS);
        const end = a.frames.find((f) => f.type === "MESSAGE" && f.end && f.traceId === first.traceId);
        expect(end).toMatchObject({ content: "", reason: "stopped", seq: 2 });
        const err = a.frames.find((f) => f.type === "ERROR" && f.traceId === first.traceId);
        expect(err).toMatchObject({ code: "STORE_UNAVAILABLE", chatId: chat.id });
        expect(err!.requestId).toBeUndefined();
        // In that order: the end, the ERROR about it, then the answer to the stop.
        expect([a.frames.indexOf(end!), a.frames.indexOf(err!)]).toEqual([a.frames.indexOf(stopped) - 2, a.frames.indexOf(stopped) - 1]);
        expect(a.ws.readyState).toBe(WebSocket.OPEN);
      } finally {
        release();
      }
      await cosmos.start();
      // The question had been stored; the stopped reply could not be.
      expect(turns(await historyOf(chat.id))).toEqual([["user", question]]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "while it is down, /health answers 503 with the store not ok",
    async () => {
      await cosmos.stop();
      const { value: h, ms: took } = await timed(health);
      figures["GET /health while down"] = `${ms(took)} (status ${h.status})`;
      expect(h.status).toBe(503);
      expect(h.body).toMatchObject({ status: "degraded", services: { store: { kind: "cosmos", ok: false } } });
      expect(took).toBeLessThan(DOWN_BOUND_MS);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "after start(), the same server and the same socket work again without reconnecting; earlier data is intact",
    async () => {
      // This socket sees the outage first, so what follows is a recovery, not a fresh start.
      await cosmos.stop();
      expect(await ask({ type: "GET_CHATS" }, "CHAT_LIST")).toMatchObject({ type: "ERROR", code: "STORE_UNAVAILABLE" });
      const framesBefore = a.frames.length;
      await cosmos.start();
      // Recovery: how long from the database listening again to the first command it answers.
      const { value: list, ms: took } = await timed(() => ask({ type: "GET_CHATS" }, "CHAT_LIST"));
      figures["first command answered after start()"] = ms(took);
      expect(list.type).toBe("CHAT_LIST");
      expect(list.chats.some((c: Frame) => c.id === kept.id)).toBe(true);
      // Nothing written during the outage leaked in: no chat, no rename, no settings, no delete.
      expect(list.chats.some((c: Frame) => c.name === "during the outage")).toBe(false);
      expect(list.chats.some((c: Frame) => c.id === spare.id)).toBe(true);
      expect(list.chats.some((c: Frame) => c.name === "renamed during the outage")).toBe(false);
      expect((await ask({ type: "GET_SETTINGS" }, "SETTINGS")).settings).toEqual({});

      // The chat from before the outage still holds exactly its one exchange.
      const old = await historyOf(kept.id);
      expect(turns(old)).toEqual([
        ["user", "remember me"],
        ["assistant", REPLY],
      ]);
      expect(old[1]!.id).toBe(keptTraceId);

      // The refused SEND_MESSAGE released the chat's generation slot: the same chat takes a new one.
      a.send({ type: "SEND_MESSAGE", chatId: kept.id, content: "back again?" });
      expect((await a.reply(kept.id)).text).toBe(REPLY);

      // A new chat, a streamed reply, and history as stored.
      const chat = await newChat();
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "after the outage" });
      const r = await a.reply(chat.id);
      expect(r.text).toBe(REPLY);
      expect(r.end).toMatchObject({ end: true, content: "", traceId: r.traceId });
      const msgs = await historyOf(chat.id);
      expect(turns(msgs)).toEqual([
        ["user", "after the outage"],
        ["assistant", REPLY],
      ]);
      expect(msgs[1]!.id).toBe(r.traceId);

      const h = await health();
      expect(h.status).toBe(200);
      expect(h.body.services.store).toMatchObject({ kind: "cosmos", ok: true });
      // Same socket throughout, and no ERROR since the database came back.
      expect(a.ws.readyState).toBe(WebSocket.OPEN);
      expect(a.frames.slice(framesBefore).filter((f) => f.type === "ERROR")).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  // KNOWN BUG at the time of writing (src/chat/chat-commands.ts deleteChat): replies.cancel() marks the chat
  // "deleted" for 10 s before the store is asked, and nothing undoes it when the delete fails, so
  // the next reply in a chat that still exists ends at once, empty. Flip to test() once fixed.
  test(
    "a DELETE_CHAT that fails while the store is down leaves the chat answering as before",
    async () => {
      const chat = await newChat();
      await cosmos.stop();
      expect(await ask({ type: "DELETE_CHAT", chatId: chat.id }, "CHAT_DELETED")).toMatchObject({
        type: "ERROR",
        code: "STORE_UNAVAILABLE",
      });
      await cosmos.start();
      expect(turns(await historyOf(chat.id))).toEqual([]);
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "still here after a failed delete?" });
      const r = await a.reply(chat.id);
      expect(r.end.reason).toBeUndefined();
      expect(r.text).toBe(REPLY);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "the store dies after the question is stored, before the reply is: the whole stream, end, then ERROR STORE_UNAVAILABLE; then recovery",
    async () => {
      const chat = await newChat();
      const question = "the question is stored";
      const { release } = holds.hold({ question });
      try {
        a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: question });
        // The first delta means the question is stored and the model is answering; the reply is now held.
        const first = await a.next((f) => f.type === "MESSAGE" && f.chatId === chat.id && !f.end);
        expect(first.seq).toBe(1);
        await cosmos.stop();
      } finally {
        release();
      }

      // The client still gets the whole reply and its end frame (the model does not need the store)...
      const rest = await a.reply(chat.id, DOWN_BOUND_MS + 5_000);
      const text = TOKENS[0] + rest.text;
      expect(text).toBe(REPLY);
      expect(rest.end).toMatchObject({ end: true, content: "", traceId: rest.traceId });
      // ...then one ERROR saying the reply could not be saved.
      const err = await a.next((f) => f.type === "ERROR" && f.chatId === chat.id, DOWN_BOUND_MS + 5_000);
      expect(err).toMatchObject({ code: "STORE_UNAVAILABLE", traceId: rest.traceId });

      await cosmos.start();
      // The question was stored before the outage. The finished reply was not; at most the checkpoint
      // of its first text, saved before the store went away, remains (a prefix, never shown as complete).
      const after = await historyOf(chat.id);
      const partial = after.filter((m) => m.id === rest.traceId);
      expect(partial.every((m) => REPLY.startsWith(m.content) && m.content !== REPLY && (m.streaming || m.status === "interrupted"))).toBe(
        true,
      );
      expect(turns(after.filter((m) => m.id !== rest.traceId))).toEqual([["user", question]]);
      // The chat's slot was freed when the failed save ended the generation: it answers again.
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "and now?" });
      const again = await a.reply(chat.id);
      expect(again.text).toBe(REPLY);
      expect(turns((await historyOf(chat.id)).filter((m) => m.id !== rest.traceId))).toEqual([
        ["user", question],
        ["user", "and now?"],
        ["assistant", REPLY],
      ]);
      expect((await health()).status).toBe(200);
      expect(a.ws.readyState).toBe(WebSocket.OPEN);
    },
    TEST_TIMEOUT_MS,
  );
});
