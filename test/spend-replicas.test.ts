import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startRedis, type RedisServer } from "./support/redis-server";
import { startReplicas, type Replicas } from "./support/replicas";
import { startSseModel, type SseModel } from "./support/sse-model";
import { until } from "./support/until";
import { addUser } from "./support/users";
import { connect, type Frame, type TestClient } from "./support/ws-client";

// Fair shares and budgets across two replicas sharing the Cosmos test server and one Redis, each
// replica its own process: MAX_GENERATIONS_PER_USER counted across them, and the bound on what a
// user can spend past their budget when 20 questions arrive at once through both.

const BUDGET = 150;
const RESERVE = 50;
const SHARE = 6;
/** What the model server reports for every call: under the estimate of each (its prompt plus RESERVE). */
const REPORTED = { prompt_tokens: 20, completion_tokens: 30 };

let model: SseModel;
let redis: RedisServer;
let r: Replicas;
const clients: TestClient[] = [];

beforeAll(async () => {
  model = await startSseModel({ tokens: ["ok"], usage: REPORTED });
  redis = await startRedis();
  r = await startReplicas({
    n: 2,
    redis,
    env: {
      OPENAI_BASE_URL: `${model.url}/v1`,
      OPENAI_MODEL: "gpt-4o",
      CHAT_TITLES: "false",
      MAX_GENERATIONS_PER_USER: String(SHARE),
      MAX_GENERATIONS_PER_CONNECTION: "100",
      RATE_LIMIT_MESSAGES_PER_MINUTE: "100000",
      RATE_LIMIT_FRAMES_PER_SECOND: "100000",
      MODEL_REPLY_RESERVE_TOKENS: String(RESERVE),
      SYSTEM_PROMPT: "Be brief.",
    },
  });
}, 120_000);
afterAll(async () => {
  for (const c of clients) c.close();
  await r?.stop();
  await redis?.stop();
  model?.stop();
});

async function on(i: number, token: string) {
  const c = await connect(r.replicas[i]!.wsUrl, { token });
  clients.push(c);
  return c;
}
const newChat = async (c: TestClient) => (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT", 30_000)).chat.id as string;

describe("across two replicas", () => {
  test("MAX_GENERATIONS_PER_USER is one count for both replicas; another user is not held up; a finished reply frees a slot", async () => {
    model.setScript({ tokens: ["held"], holdAfter: 0, usage: REPORTED });
    const a = await addUser(r.store);
    const b = await addUser(r.store);
    const a0 = await on(0, a.token);
    const a1 = await on(1, a.token);
    const b1 = await on(1, b.token);
    // SHARE chats, half through each replica, plus one more.
    const chats: { c: TestClient; chatId: string }[] = [];
    for (let i = 0; i <= SHARE; i++) {
      // A socket per chat: each waits for its own reply.
      const c = i === 0 ? a0 : i === 1 ? a1 : await on(i % 2, a.token);
      chats.push({ c, chatId: await newChat(c) });
    }
    const sent = model.requests.length;
    for (const { c, chatId } of chats.slice(0, SHARE))
      expect(await c.request({ type: "SEND_MESSAGE", requestId: chatId, chatId, content: "hi" }, "MESSAGE_ACCEPTED", 30_000)).toMatchObject(
        {
          duplicate: false,
        },
      );
    await model.waitHeld(SHARE, 20_000);
    // One more reply for A, on either replica: refused, nothing stored.
    const last = chats[SHARE]!.chatId;
    for (const c of [await on(0, a.token), await on(1, a.token)]) {
      const more = await c.request({ type: "SEND_MESSAGE", requestId: "more", chatId: last, content: "hi" }, "MESSAGE_ACCEPTED", 30_000);
      expect(more).toMatchObject({ type: "ERROR", code: "TOO_MANY_GENERATIONS", limit: SHARE });
    }
    expect(await r.store.listMessages(last, { limit: 5 })).toEqual([]);
    expect(model.requests.length).toBe(sent + SHARE);
    // B has slots of their own.
    const bChat = await newChat(b1);
    expect(
      await b1.request({ type: "SEND_MESSAGE", requestId: "b", chatId: bChat, content: "hi" }, "MESSAGE_ACCEPTED", 30_000),
    ).toMatchObject({
      duplicate: false,
    });
    await model.waitHeld(SHARE + 1, 20_000);
    model.setScript({ tokens: ["ok"], usage: REPORTED });
    model.release();
    await Promise.all([...chats.slice(0, SHARE).map(({ c, chatId }) => c.reply(chatId, 30_000)), b1.reply(bChat, 30_000)]);
    // Slots are given back as replies settle (on the replica that held them).
    const a2 = await on(1, a.token);
    const again = await until(async () => {
      const f = await a2.request(
        { type: "SEND_MESSAGE", requestId: `again-${Date.now()}`, chatId: last, content: "again" },
        "MESSAGE_ACCEPTED",
        30_000,
      );
      return f.type === "MESSAGE_ACCEPTED" && f;
    }, "a slot for A again");
    expect(again.duplicate).toBe(false);
    await a2.reply(last, 30_000);
  }, 90_000);

  test("20 questions at once through both replicas on a budget: some refused before anything is stored, and what is spent stays within the stated bound", async () => {
    const u = await addUser(r.store);
    await r.store.setTokensPerDay(u.id, BUDGET);
    // Each replica holds 10 sockets, each with a chat of its own (one reply per chat at a time).
    const socks: { c: TestClient; chatId: string }[] = [];
    for (let i = 0; i < 20; i++) {
      const c = await on(i % 2, u.token);
      socks.push({ c, chatId: await newChat(c) });
    }
    // Every admitted reply waits in the model until all 20 are decided: the worst case for the budget.
    model.setScript({ tokens: ["ok"], holdAfter: 0, usage: REPORTED });
    const sentBefore = model.requests.length;
    const answers = await Promise.all(
      socks.map(({ c, chatId }) =>
        c.request({ type: "SEND_MESSAGE", requestId: chatId, chatId, content: "What is two plus two?" }, "MESSAGE_ACCEPTED", 30_000),
      ),
    );
    const admitted = socks.filter((_, i) => answers[i]!.type === "MESSAGE_ACCEPTED");
    const refused = answers.filter((f: Frame) => f.type === "ERROR");
    // MAX_GENERATIONS_PER_USER is on too: what is not admitted is refused by either rule, never stored.
    expect(refused.every((f) => f.code === "BUDGET_EXCEEDED" || f.code === "TOO_MANY_GENERATIONS")).toBe(true);
    expect(refused.some((f) => f.code === "BUDGET_EXCEEDED")).toBe(true);
    expect(refused.length).toBeGreaterThan(0);
    if (admitted.length > 0) await model.waitHeld(admitted.length, 20_000);
    model.setScript({ tokens: ["ok"], usage: REPORTED });
    model.release();
    await Promise.all(admitted.map(({ c, chatId }) => c.reply(chatId, 30_000)));
    expect(model.requests.length - sentBefore).toBe(admitted.length);
    for (let i = 0; i < 20; i++) {
      const stored = await r.store.listMessages(socks[i]!.chatId, { limit: 5 });
      expect(stored.length).toBe(answers[i]!.type === "MESSAGE_ACCEPTED" ? 2 : 0);
    }
    const used = await until(async () => {
      const n = await r.store.tokensUsedSince(u.id, new Date(Date.now() - 86_400_000).toISOString());
      return n === admitted.length * (REPORTED.prompt_tokens + REPORTED.completion_tokens) ? n : false;
    }, "every admitted call recorded, once");
    // The bound (docs/security.md): a question is admitted on today's recorded use plus every
    // replica's unrecorded admissions (reservations in Redis), so the estimates admitted together
    // never pass the budget; calls then cost what the service reports, here under their estimates.
    expect(used).toBeLessThanOrEqual(BUDGET);
    expect(admitted.length).toBeGreaterThan(0);
    // Once recorded, the budget holds on both replicas.
    for (const i of [0, 1]) {
      const c = await on(i, u.token);
      const chatId = await newChat(c);
      const after = await c.request({ type: "SEND_MESSAGE", requestId: "after", chatId, content: "more" }, "MESSAGE_ACCEPTED", 30_000);
      if (used + 60 > BUDGET) expect(after).toMatchObject({ code: "BUDGET_EXCEEDED" });
    }
  }, 120_000);

  test("kill -9 of the replica generating a reply: its usage record is there, at its estimate (written as the call began)", async () => {
    const u = await addUser(r.store);
    const c = await on(1, u.token);
    const chatId = await newChat(c);
    model.setScript({ tokens: ["never", " finished"], holdAfter: 1, usage: REPORTED });
    const accepted = await c.request(
      { type: "SEND_MESSAGE", requestId: "q", chatId, content: "a question before a crash" },
      "MESSAGE_ACCEPTED",
      30_000,
    );
    await model.waitHeld(1, 20_000);
    const [record] = await until(async () => {
      const x = await r.store.listUsage({ userId: u.id, since: "2000-01-01T00:00:00.000Z" });
      return x.length === 1 && x;
    }, "the call's record before the crash");
    await r.kill(1);
    model.setScript({ tokens: ["ok"], usage: REPORTED });
    model.release();
    expect(record).toMatchObject({
      id: `reply:${accepted.traceId}:1`,
      kind: "reply",
      user_id: u.id,
      estimated: true,
      completion_tokens: 0,
    });
    expect(record!.prompt_tokens).toBeGreaterThan(0);
    // Still there, once, after the process is gone.
    expect(await r.store.listUsage({ userId: u.id, since: "2000-01-01T00:00:00.000Z" })).toEqual([record!]);
  }, 60_000);
});
