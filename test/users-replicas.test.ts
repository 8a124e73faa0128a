import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startRedis, type RedisServer } from "./support/redis-server";
import { startReplicas, type Replicas } from "./support/replicas";
import { lastUserTurn, startSseModel, type SseModel } from "./support/sse-model";
import { addUser } from "./support/users";
import { connect, type Frame, type TestClient } from "./support/ws-client";

// Two users across two replicas (real server processes on one Cosmos database and one Redis): A's
// chat frames cross to A's socket on the other replica, and never reach B's socket there, even one
// that keeps trying to open, watch, join and resume A's chat while A's reply streams.

let model: SseModel;
let redis: RedisServer;
let r: Replicas;
const clients: TestClient[] = [];
let A: { id: string; token: string };
let B: { id: string; token: string };

beforeAll(async () => {
  model = await startSseModel();
  // 30 tokens 5 ms apart, each naming the question's marker (a leaked token is recognisable), held
  // after the 10th until the test lets it go: B's probes overlap the stream however slow the machine.
  model.setScript((req) => {
    const marker = /secret-[\w-]+/.exec(lastUserTurn(req))?.[0] ?? "plain";
    return {
      tokens: Array.from({ length: 30 }, (_, i) => ` ${marker}-t${i}`),
      delayMs: 5,
      ...(marker === "plain" ? {} : { holdAfter: 10 }),
    };
  });
  redis = await startRedis();
  r = await startReplicas({
    n: 2,
    redis,
    env: {
      API_TOKEN: "legacy-token-for-replicas-3c5e7a9b",
      OPENAI_BASE_URL: `${model.url}/v1`,
      OPENAI_MODEL: "m",
      CHAT_TITLES: "false",
      RATE_LIMIT_FRAMES_PER_SECOND: "100000",
    },
  });
  [A, B] = await Promise.all([addUser(r.store), addUser(r.store)]);
  // The Cosmos test server compiles each query shape once (cold: seconds): paid here, on both replicas.
  for (let i = 0; i < 2; i++) {
    const c = await on(i, A);
    const chat = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT", 30_000)).chat;
    c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "warm up" });
    await c.reply(chat.id, 30_000);
    await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY", 30_000);
    await c.request({ type: "DELETE_CHAT", chatId: chat.id }, "CHAT_DELETED", 30_000);
    c.close();
  }
}, 120_000);
afterAll(async () => {
  for (const c of clients) c.close();
  await r?.stop();
  await redis?.stop();
  model?.stop();
});

async function on(i: number, who: { token: string }) {
  const c = await connect(r.replicas[i]!.wsUrl, { token: who.token });
  clients.push(c);
  return c;
}
const answerTo = async (c: TestClient, frame: Frame, timeoutMs = 10_000) => {
  const requestId = `probe-${crypto.randomUUID()}`;
  c.send({ ...frame, requestId });
  return c.next((f) => f.requestId === requestId, timeoutMs);
};

describe("users across replicas", () => {
  test("A's CHAT_CREATED, FIRST_MESSAGE and streamed MESSAGE frames reach A's socket on the other replica, never B's there", async () => {
    const a0 = await on(0, A);
    const a1 = await on(1, A);
    const b1 = await on(1, B);
    const b0 = await on(0, B);
    const name = `secret-${crypto.randomUUID()}`;
    const chat = (await a0.request({ type: "CREATE_CHAT", name }, "NEW_CHAT")).chat;
    expect((await a1.next((f) => f.type === "CHAT_CREATED" && f.chat.id === chat.id)).chat.name).toBe(name);
    await a1.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");

    const marker = `secret-${crypto.randomUUID()}`;
    const question = `${marker} across replicas`;
    a0.send({ type: "SEND_MESSAGE", chatId: chat.id, content: question });
    const first = await a0.next((f) => f.type === "MESSAGE" && f.chatId === chat.id);
    // B, on the replica that mirrors A's reply, keeps trying to get at it while it streams.
    let streaming = true;
    const probing = (async () => {
      let n = 0;
      for (; streaming; n++) {
        const tries: Frame[] = [
          { type: "GET_CHAT_HISTORY", chatId: chat.id },
          { type: "WATCH", chatIds: [chat.id] },
          { type: "SEND_MESSAGE", chatId: chat.id, content: "let me in" },
          { type: "RESUME", chatId: chat.id, traceId: first.traceId, fromSeq: 0 },
          { type: "STOP_GENERATION", traceId: first.traceId },
        ];
        const f = await answerTo(b1, tries[n % tries.length]!);
        expect(f.code).toBe(n % tries.length === 4 ? "NO_GENERATION" : "CHAT_NOT_FOUND");
        // Two rounds of probes in, the rest of the reply streams while they go on.
        if (n === 2 * tries.length) {
          await model.waitHeld(1);
          model.release();
        }
      }
      return n;
    })();
    const mine = await a0.reply(chat.id);
    streaming = false;
    expect(await probing).toBeGreaterThan(10);
    expect(mine.end.reason).toBeUndefined();
    expect(await a1.next((f) => f.type === "FIRST_MESSAGE" && f.chatId === chat.id)).toMatchObject({ content: question });
    const theirs = await a1.reply(chat.id);
    expect(theirs.traceId).toBe(first.traceId);
    expect(theirs.text).toBe(Array.from({ length: 30 }, (_, i) => ` ${marker}-t${i}`).join(""));

    await a0.request({ type: "RENAME_CHAT", chatId: chat.id, name: `${name}-renamed` }, "CHAT_UPDATED");
    await a1.next((f) => f.type === "CHAT_UPDATED" && f.chat.id === chat.id);
    await a0.request({ type: "DELETE_CHAT", chatId: chat.id }, "CHAT_DELETED");
    await a1.next((f) => f.type === "CHAT_DELETED" && f.chatId === chat.id);

    // A round trip on each of B's sockets: whatever was sent to them before is in by now.
    for (const b of [b0, b1]) await answerTo(b, { type: "GET_CHATS" });
    const secrets = [chat.id, first.traceId, marker, name];
    for (const b of [b0, b1]) {
      const leaked = b.frames.filter((f) => f.requestId === undefined && secrets.some((s) => JSON.stringify(f).includes(s)));
      expect(leaked).toEqual([]);
      expect(b.frames.filter((f) => [marker, name].some((s) => JSON.stringify(f).includes(s)))).toEqual([]);
    }
  }, 30_000);
});
