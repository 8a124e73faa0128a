import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, tokenizerFor } from "../src/chat/tokenizer";
import type { UsageRecord } from "../src/records";
import { openSqliteStore } from "../src/store/sqlite";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type ModelRequest, type SseModel } from "./support/sse-model";
import { until } from "./support/until";
import { addUser } from "./support/users";
import type { TestClient } from "./support/ws-client";

// Usage records and budgets through the real server, on SQLite and on the Cosmos test server, with
// the local OpenAI-compatible model server (which reports usage when asked, or not).

type Calls = Map<string, number>;
function counted(store: Store, calls: Calls): Store {
  return new Proxy(store, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        calls.set(String(key), (calls.get(String(key)) ?? 0) + 1);
        return v.apply(target, args);
      };
    },
  });
}
const WRITES = ["addQuestion", "addMessage", "putMessage", "createChat", "patchChat", "touchChat", "addUsage"];
const writes = (calls: Calls) => WRITES.reduce((n, k) => n + (calls.get(k) ?? 0), 0);

const newChat = async (c: TestClient) => (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat.id as string;

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`usage on ${kind}`, () => {
    let cosmos: CosmosTestServer | undefined;
    let dir: string | undefined;
    let base: Store;
    const calls: Calls = new Map();
    let model: SseModel;
    let srv: TestServer;

    beforeAll(async () => {
      model = await startSseModel({ tokens: ["Hello", ",", " world", "!"] });
      if (kind === "cosmos") {
        cosmos = await startCosmosServer();
        base = await openTestCosmosStore(cosmos, "pichat-usage");
      } else {
        dir = mkdtempSync(join(tmpdir(), "pichat-usage-"));
        base = openSqliteStore(join(dir, "pichat.db"));
      }
      srv = await startTestServer(
        { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "gpt-4o", CHAT_TITLES: "true", MODEL_REPLY_RESERVE_TOKENS: "100" },
        { store: counted(base, calls) },
      );
    });
    afterAll(async () => {
      await srv?.close();
      await base?.close();
      await cosmos?.stop();
      model?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const recordsOf = (userId: string) => base.listUsage({ userId, since: "2000-01-01T00:00:00.000Z" });

    test("a reply and its title: one record each, with the model server's reported usage exactly; GET_USAGE sums them", async () => {
      model.setScript((req) => (req.body.messages[0].content.startsWith("Write a short title") ? { tokens: ["Greeting"] } : {}));
      const u = await addUser(base);
      const c = await srv.connect({ token: u.token });
      const chatId = await newChat(c);
      const sentBefore = model.requests.length;
      c.send({ type: "SEND_MESSAGE", chatId, content: "Say hello" });
      const reply = await c.reply(chatId);
      expect(reply.text).toBe("Hello, world!");
      await c.next((f) => f.type === "CHAT_UPDATED" && f.chat.name === "Greeting");
      const records = await until(async () => {
        const r = await recordsOf(u.id);
        return r.length === 2 && r.every((x) => !x.estimated) && r;
      }, "two usage records, final");
      const asked = model.requests.slice(sentBefore);
      expect(asked.every((r) => r.body.stream_options?.include_usage === true)).toBe(true);
      const byKind = Object.fromEntries(records.map((r) => [r.kind, r])) as Record<string, UsageRecord>;
      const replyReq = asked.find((r) => !r.body.messages[0].content.startsWith("Write a short title"))!;
      const titleReq = asked.find((r) => r.body.messages[0].content.startsWith("Write a short title"))!;
      expect(byKind.reply).toMatchObject({
        user_id: u.id,
        chat_id: chatId,
        message_id: reply.traceId,
        model: "gpt-4o",
        prompt_tokens: replyReq.usage!.prompt_tokens,
        completion_tokens: replyReq.usage!.completion_tokens,
        estimated: false,
      });
      expect(byKind.title).toMatchObject({
        user_id: u.id,
        chat_id: chatId,
        kind: "title",
        prompt_tokens: titleReq.usage!.prompt_tokens,
        completion_tokens: titleReq.usage!.completion_tokens,
        estimated: false,
      });
      const usage = await c.request({ type: "GET_USAGE", days: 1 }, "USAGE");
      const total = records.reduce((n, r) => n + r.prompt_tokens + r.completion_tokens, 0);
      expect(usage.today.used).toBe(total);
      expect(usage.today.budget).toBeNull();
      expect(usage.days).toEqual([
        {
          date: usage.today.date,
          model: "gpt-4o",
          promptTokens: records.reduce((n, r) => n + r.prompt_tokens, 0),
          completionTokens: records.reduce((n, r) => n + r.completion_tokens, 0),
          calls: 2,
          estimated: 0,
        },
      ]);
      const metrics = await (await fetch(`${srv.url}/metrics`)).text();
      expect(metrics).toMatch(/pichat_model_usage_tokens_total\{kind="reply",model="gpt-4o",part="completion"\} \d+/);
      expect(metrics).not.toContain(u.id);
    });

    test("a model server that sends no usage: the tokenizer's counts, marked estimated", async () => {
      model.setScript({ tokens: ["Bonjour", " à", " tous"], usage: false });
      const u = await addUser(base);
      const c = await srv.connect({ token: u.token });
      const chatId = await newChat(c);
      await c.request({ type: "RENAME_CHAT", chatId, name: "Named" }, "CHAT_UPDATED"); // no title call
      const before = model.requests.length;
      c.send({ type: "SEND_MESSAGE", chatId, content: "Salut" });
      const reply = await c.reply(chatId);
      const [r] = await until(async () => {
        const x = await recordsOf(u.id);
        return x.length === 1 && x[0]!.completion_tokens > 0 && x;
      }, "one usage record, final");
      const req = model.requests[before] as ModelRequest;
      expect(req.usage).toBeUndefined();
      const tok = await tokenizerFor("gpt-4o");
      const prompt = (req.body.messages as { content: string }[]).reduce(
        (n, m) => n + TOKENS_PER_MESSAGE + tok.count(m.content),
        REPLY_PRIMING_TOKENS,
      );
      expect(r).toMatchObject({ kind: "reply", estimated: true, prompt_tokens: prompt, completion_tokens: tok.count(reply.text) });
      model.setScript({ tokens: ["Hello", ",", " world", "!"] });
    });

    test("over budget: BUDGET_EXCEEDED {resetsAt} before any store write or model call; another user is not affected", async () => {
      const u = await addUser(base);
      const c = await srv.connect({ token: u.token });
      const chatId = await newChat(c);
      await c.request({ type: "RENAME_CHAT", chatId, name: "Named" }, "CHAT_UPDATED");
      await base.setTokensPerDay(u.id, 50); // less than one question plus the 100-token reply reserve
      const sent = model.requests.length;
      calls.clear();
      const err = await c.request({ type: "SEND_MESSAGE", chatId, content: "Hello there" }, "MESSAGE_ACCEPTED");
      expect(err).toMatchObject({ type: "ERROR", code: "BUDGET_EXCEEDED", budget: 50 });
      const tomorrow = new Date();
      tomorrow.setUTCHours(24, 0, 0, 0);
      expect(err.resetsAt).toBe(tomorrow.toISOString());
      expect(writes(calls)).toBe(0);
      expect(model.requests.length).toBe(sent);
      expect(await base.listMessages(chatId, { limit: 10 })).toEqual([]);
      const usage = await c.request({ type: "GET_USAGE" }, "USAGE");
      expect(usage.today).toMatchObject({ used: 0, budget: 50, resetsAt: tomorrow.toISOString() });
      // Regenerating is refused the same way, before the question is even looked for.
      const regen = await c.request({ type: "REGENERATE", chatId }, "REGENERATING");
      expect(regen).toMatchObject({ type: "ERROR", code: "BUDGET_EXCEEDED" });
      expect(model.requests.length).toBe(sent);
      // Another user, with no budget, is answered meanwhile.
      const other = await addUser(base);
      const o = await srv.connect({ token: other.token });
      const theirs = await newChat(o);
      o.send({ type: "SEND_MESSAGE", chatId: theirs, content: "Hello there" });
      expect((await o.reply(theirs)).text).toBe("Hello, world!");
    });

    test("a reply with a tool round: one record per model call, each with that call's reported usage", async () => {
      // The first request asks for the built-in clock; the second (with its result) answers.
      model.setScript((req) =>
        req.body.messages.some((m: { role: string }) => m.role === "tool")
          ? { tokens: ["It is", " noon."], usage: { prompt_tokens: 61, completion_tokens: 4 } }
          : {
              tokens: [],
              toolCalls: [{ id: "call_1", name: "current_time", arguments: "{}" }],
              usage: { prompt_tokens: 40, completion_tokens: 9 },
            },
      );
      const u = await addUser(base);
      const c = await srv.connect({ token: u.token });
      const chatId = await newChat(c);
      await c.request({ type: "RENAME_CHAT", chatId, name: "Named" }, "CHAT_UPDATED");
      c.send({ type: "SEND_MESSAGE", chatId, content: "What time is it?" });
      const reply = await c.reply(chatId);
      expect(reply.text).toBe("It is noon.");
      const records = await until(async () => {
        const r = await recordsOf(u.id);
        return r.length === 2 && r.every((x) => !x.estimated) && r;
      }, "two usage records, final");
      expect(records.map((r) => [r.id, r.prompt_tokens, r.completion_tokens, r.estimated]).sort()).toEqual([
        [`reply:${reply.traceId}:1`, 40, 9, false],
        [`reply:${reply.traceId}:2`, 61, 4, false],
      ]);
      model.setScript({ tokens: ["Hello", ",", " world", "!"] });
    });

    test("a record written twice (a retry, another replica) is stored once", async () => {
      const r: UsageRecord = {
        id: `reply:${crypto.randomUUID()}:1`,
        user_id: "someone",
        chat_id: crypto.randomUUID(),
        message_id: crypto.randomUUID(),
        model: "gpt-4o",
        kind: "reply",
        prompt_tokens: 10,
        completion_tokens: 5,
        estimated: false,
        created_at: new Date().toISOString(),
      };
      const results = await Promise.all(Array.from({ length: 8 }, () => base.addUsage(r)));
      expect(results.filter(Boolean).length).toBe(1);
      expect(await base.listUsage({ userId: "someone", since: "2000-01-01T00:00:00.000Z" })).toEqual([r]);
      expect(await base.tokensUsedSince("someone", "2000-01-01T00:00:00.000Z")).toBe(15);
    });
  });
}

describe("titles are model calls like any", () => {
  test("a title counts in MODEL_CALLS_PER_MINUTE: after a reply and its title, a limit of 2 refuses the next question, nothing stored", async () => {
    const model = await startSseModel({ tokens: ["Hi"] });
    model.setScript((req) =>
      req.body.messages[0].content.startsWith("Write a short title") ? { tokens: ["Greeting"] } : { tokens: ["Hi"] },
    );
    const srv = await startTestServer({
      OPENAI_BASE_URL: `${model.url}/v1`,
      OPENAI_MODEL: "gpt-4o",
      CHAT_TITLES: "true",
      MODEL_CALLS_PER_MINUTE: "2",
    });
    try {
      // Near the end of a minute the window may turn over mid-test: start at the top of one.
      const intoMinute = Date.now() % 60_000;
      if (intoMinute > 50_000) await Bun.sleep(60_000 - intoMinute + 50);
      const c = await srv.connect();
      const chatId = await newChat(c);
      c.send({ type: "SEND_MESSAGE", chatId, content: "hello" });
      await c.reply(chatId);
      await c.next((f) => f.type === "CHAT_UPDATED" && f.chat.name === "Greeting");
      expect(model.requests.length).toBe(2);
      const other = await newChat(c);
      const refused = await c.request({ type: "SEND_MESSAGE", chatId: other, content: "again" }, "MESSAGE_ACCEPTED");
      expect(refused).toMatchObject({ type: "ERROR", code: "TOO_MANY_GENERATIONS" });
      expect(await srv.store.listMessages(other, { limit: 5 })).toEqual([]);
      expect(model.requests.length).toBe(2);
    } finally {
      await srv.close();
      model.stop();
    }
  }, 30_000);
});

/** A reply's usage record of `user`'s at `at`, its message id its own. */
const usageRecord = (id: string, user: string, at: string, p: number, c: number, estimated: boolean): UsageRecord => ({
  id,
  user_id: user,
  chat_id: "c",
  message_id: id,
  model: "m",
  kind: "reply",
  prompt_tokens: p,
  completion_tokens: c,
  estimated,
  created_at: at,
});

describe("sqlite daily totals", () => {
  test("a budget check reads each day's total, kept with every record; a file with records and no totals gets them on open", async () => {
    const { Database } = await import("bun:sqlite");
    const dir = mkdtempSync(join(tmpdir(), "pichat-usage-daily-"));
    const path = join(dir, "pichat.db");
    const rec = (id: string, day: string, p: number, c: number) => usageRecord(id, "u1", `${day}T10:00:00.000Z`, p, c, false);
    let store = openSqliteStore(path);
    await store.addUsage(rec("a", "2025-01-01", 10, 1));
    await store.addUsage(rec("b", "2025-01-02", 20, 2));
    await store.addUsage(rec("b", "2025-01-02", 20, 2)); // again: counted once
    expect(await store.tokensUsedSince("u1", "2025-01-02T00:00:00.000Z")).toBe(22);
    expect(await store.tokensUsedSince("u1", "2025-01-01T00:00:00.000Z")).toBe(33);
    expect(await store.tokensUsedSince("u1", "2025-01-01T12:00:00.000Z")).toBe(22); // not a day's start: from the records
    await store.close();
    const raw = new Database(path);
    raw.exec("DELETE FROM usage_daily");
    raw.close();
    store = openSqliteStore(path);
    expect(await store.tokensUsedSince("u1", "2025-01-01T00:00:00.000Z")).toBe(33);
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
});

describe("sqlite final counts over an estimate", () => {
  test("putUsage replaces the record by id and moves the day's total by the difference: in place (same user and time) and otherwise", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pichat-usage-put-"));
    const store = openSqliteStore(join(dir, "pichat.db"));
    const since = "2000-01-01T00:00:00.000Z";
    try {
      await store.addUsage(usageRecord("a", "u1", "2025-01-01T10:00:00.000Z", 100, 0, true));
      await store.putUsage(usageRecord("a", "u1", "2025-01-01T10:00:00.000Z", 10, 1, false));
      expect(await store.listUsage({ userId: "u1", since })).toEqual([usageRecord("a", "u1", "2025-01-01T10:00:00.000Z", 10, 1, false)]);
      expect(await store.tokensUsedSince("u1", "2025-01-01T00:00:00.000Z")).toBe(11);
      // Another time (a takeover's clock, another day) or another user: the row moves, and both days' totals with it.
      await store.putUsage(usageRecord("a", "u1", "2025-01-02T10:00:00.000Z", 20, 2, false));
      expect(await store.tokensUsedSince("u1", "2025-01-02T00:00:00.000Z")).toBe(22);
      expect(await store.tokensUsedSince("u1", "2025-01-01T00:00:00.000Z")).toBe(22);
      await store.putUsage(usageRecord("a", "u2", "2025-01-02T10:00:00.000Z", 30, 3, false));
      expect(await store.listUsage({ userId: "u1", since })).toEqual([]);
      expect(await store.tokensUsedSince("u1", "2025-01-01T00:00:00.000Z")).toBe(0);
      expect(await store.listUsage({ userId: "u2", since })).toEqual([usageRecord("a", "u2", "2025-01-02T10:00:00.000Z", 30, 3, false)]);
      expect(await store.tokensUsedSince("u2", "2025-01-02T00:00:00.000Z")).toBe(33);
      // A put with nothing to replace is an add.
      await store.putUsage(usageRecord("b", "u2", "2025-01-02T11:00:00.000Z", 4, 0, true));
      expect(await store.tokensUsedSince("u2", "2025-01-02T00:00:00.000Z")).toBe(37);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
