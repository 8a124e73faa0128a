import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startRedis, type RedisServer } from "./support/redis-server";
import { startReplicas, type Replicas } from "./support/replicas";
import { lastUserTurn, startSseModel, type SseModel } from "./support/sse-model";
import { connect, type Frame, type TestClient } from "./support/ws-client";

// Branches across two replicas (real server processes on one Cosmos database and one Redis). A
// replica remembers which chats were never branched (so their history costs one query); a chat
// branched through the other replica must read as branched here from then on, and the owner's
// sockets on both replicas hear BRANCH_SELECTED.

let model: SseModel;
let redis: RedisServer;
let r: Replicas;
const clients: TestClient[] = [];
const TOKEN = "legacy-token-for-branch-replicas-7e1f";
let n = 0;

beforeAll(async () => {
  model = await startSseModel();
  model.setScript((req) => ({ tokens: [`re:${lastUserTurn(req)}`, ` #${++n}`] }));
  redis = await startRedis();
  r = await startReplicas({
    n: 2,
    redis,
    env: {
      API_TOKEN: TOKEN,
      OPENAI_BASE_URL: `${model.url}/v1`,
      OPENAI_MODEL: "m",
      CHAT_TITLES: "false",
      RATE_LIMIT_FRAMES_PER_SECOND: "100000",
    },
  });
}, 120_000);
afterAll(async () => {
  for (const c of clients) c.close();
  await r?.stop();
  await redis?.stop();
  model?.stop();
});

async function on(i: number) {
  const c = await connect(r.replicas[i]!.wsUrl, { token: TOKEN });
  clients.push(c);
  return c;
}
const turns = (h: Frame) => (h.messages as Frame[]).map((m) => [m.role, m.content, ...(m.siblings ? [`${m.sibling}/${m.siblings}`] : [])]);
const history = (c: TestClient, chatId: string) => c.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY", 30_000);
async function ask(c: TestClient, chatId: string, content: string) {
  const accepted = await c.request({ type: "SEND_MESSAGE", requestId: content, chatId, content }, "MESSAGE_ACCEPTED", 30_000);
  const reply = await c.reply(chatId, 30_000);
  return { questionId: accepted.messageId as string, ...reply };
}

describe("branches across replicas", () => {
  test("a chat branched through replica 0 reads as branched on replica 1, which knew it unbranched; SELECT_BRANCH there is heard back on 0, and a question sent on 1 follows the selected branch", async () => {
    const a0 = await on(0);
    const a1 = await on(1);
    const chatId = (await a0.request({ type: "CREATE_CHAT" }, "NEW_CHAT", 30_000)).chat.id as string;
    const q1 = await ask(a0, chatId, "Q1");
    const q2 = await ask(a0, chatId, "Q2");
    // Replica 1 reads the chat now: it remembers it as never branched.
    expect(turns(await history(a1, chatId))).toEqual([
      ["user", "Q1"],
      ["assistant", q1.text],
      ["user", "Q2"],
      ["assistant", q2.text],
    ]);

    const g = await a0.request({ type: "REGENERATE", chatId }, "REGENERATING", 30_000);
    expect(g).toMatchObject({ questionId: q2.questionId, queued: false });
    const again = await a0.reply(chatId, 30_000);
    expect((await a1.next((f) => f.type === "BRANCH_SELECTED", 10_000)).messageId).toBe(q2.questionId);
    expect(turns(await history(a1, chatId))).toEqual([
      ["user", "Q1"],
      ["assistant", q1.text],
      ["user", "Q2"],
      ["assistant", again.text, "2/2"],
    ]);

    const back = await a1.request({ type: "SELECT_BRANCH", chatId, messageId: q2.traceId }, "CHAT_HISTORY", 30_000);
    expect(turns(back)).toEqual([
      ["user", "Q1"],
      ["assistant", q1.text],
      ["user", "Q2"],
      ["assistant", q2.text, "1/2"],
    ]);
    expect((await a0.next((f) => f.type === "BRANCH_SELECTED", 10_000)).messageId).toBe(q2.traceId);
    expect(turns(await history(a0, chatId))).toEqual(turns(back));

    const q3 = await ask(a1, chatId, "Q3");
    const stored = (await r.store.listMessages(chatId, { limit: 50 })).find((m) => m.id === q3.questionId);
    expect(stored?.parent_id).toBe(q2.traceId);
    expect(turns(await history(a0, chatId)).map((t) => t[1])).toEqual(["Q1", q1.text, "Q2", q2.text, "Q3", q3.text]);
  }, 60_000);
});
