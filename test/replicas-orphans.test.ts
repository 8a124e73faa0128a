import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Message } from "../src/records";
import { startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { redisCommand, startRedis, startRedisCluster, type RedisCluster, type RedisServer } from "./support/redis-server";
import { redisEnv, startReplicas, type Replicas } from "./support/replicas";
import { spawnServer, type ServerProcess } from "./support/server-process";
import { lastUserTurn, startSseModel, type SseModel } from "./support/sse-model";
import { until } from "./support/until";
import { connect, type Frame, type TestClient } from "./support/ws-client";

// A replica killed (-9) at any moment of a reply, with the DEFAULT checkpoint period (1 s) and lease
// (10 s): before its first checkpoint and after one. Every watcher on every surviving replica gets
// the end frame within the lease and one sweep (half a lease), history on every survivor stops
// showing the reply streaming, the text the survivors saw is stored once as interrupted, and the
// reply's Redis stream gets its expiry. On a single Redis node and on a 3-node cluster, run at once.
// Also: a replica is not ready until its bus has connected once.

const LEASE_MS = 10_000;
const SWEEP_MS = LEASE_MS / 2;
let model: SseModel;
let cosmos: CosmosTestServer;
const clients: TestClient[] = [];
const procs: ServerProcess[] = [];

const words = (n: number) => Array.from({ length: n }, (_, i) => `w${i} `);

beforeAll(async () => {
  // Long replies for the questions the tests kill, a short one for everything else.
  model = await startSseModel();
  model.setScript((req) => (/^(before|after) /.test(lastUserTurn(req)) ? { tokens: words(4000), delayMs: 5 } : { tokens: ["ok"] }));
  cosmos = await startCosmosServer();
});
afterAll(async () => {
  for (const c of clients) c.close();
  for (const p of procs) await p.crash().catch(() => {});
  await cosmos?.stop();
  model?.stop();
});

// Nothing about the checkpoint period or the lease: the defaults.
const env = () => ({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", CHAT_TITLES: "false" });
async function on(r: Replicas, i: number) {
  const c = await connect(r.replicas[i]!.wsUrl);
  clients.push(c);
  return c;
}
async function newChat(c: TestClient) {
  const f = await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT", 30_000);
  if (f.type !== "NEW_CHAT") throw new Error(`CREATE_CHAT answered ${JSON.stringify(f)}`);
  return f.chat as { id: string };
}
const history = async (c: TestClient, chatId: string) =>
  (await c.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY", 30_000)).messages as (Message & { streaming?: boolean })[];
const seenBy = (c: TestClient, traceId: string) =>
  c.frames
    .filter((f) => f.type === "MESSAGE" && f.traceId === traceId && !f.end)
    .map((f) => f.content)
    .join("");
/** The end frame of a reply on a socket (frames are kept in arrival order; waits have a deadline). */
const endOn = (c: TestClient, traceId: string, ms: number) =>
  until(() => c.frames.find((f: Frame) => f.type === "MESSAGE" && f.end && f.traceId === traceId), `the end of ${traceId}`, ms);

/** The reply stream's time to live in ms, asked of whichever node holds its key (-2: no such key). */
async function streamTtl(redis: RedisServer | RedisCluster, chatId: string, traceId: string): Promise<number> {
  const key = `pichat:{c:${chatId}}:r:${traceId}`;
  for (const port of "nodes" in redis ? redis.nodes.map((n) => n.port) : [redis.port]) {
    const got = await redisCommand(port, "PTTL", key);
    if (typeof got === "number") return got;
  }
  throw new Error(`no node answered PTTL ${key}`);
}

async function killMidReply(kind: "single" | "cluster") {
  const redis = kind === "single" ? await startRedis() : await startRedisCluster({ nodes: 3 });
  const r = await startReplicas({ n: 3, redis, cosmos, env: env() });
  try {
    // Every replica has answered once (the test server compiles its queries on first use).
    for (let i = 0; i < 3; i++) {
      const c = await on(r, i);
      const chat = await newChat(c);
      c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "warm up" });
      await c.reply(chat.id, 60_000);
      await history(c, chat.id);
    }
    const a = await on(r, 0);
    const late = await newChat(a);
    const early = await newChat(a);
    // A socket watches the chat it last opened: one watcher per chat on each survivor.
    const watchers = { [late.id]: [await on(r, 1), await on(r, 2)], [early.id]: [await on(r, 1), await on(r, 2)] };
    for (const [chatId, ws] of Object.entries(watchers)) for (const w of ws) await history(w, chatId);
    const firstDelta = async (chatId: string) =>
      (await watchers[chatId]![0]!.next((f) => f.type === "MESSAGE" && !f.end && f.chatId === chatId, 30_000)).traceId as string;

    // One reply checkpointed (the first checkpoint comes a period after it starts)...
    a.send({ type: "SEND_MESSAGE", chatId: late.id, content: `after ${kind}` });
    const lateTrace = await firstDelta(late.id);
    await until(
      async () => (await r.store.pageMessages(late.id, { limit: 5 })).items.some((m) => m.id === lateTrace && m.content.length > 0),
      "a checkpoint of the first reply",
      30_000,
    );
    // ...and one killed right after its first delta reached another replica, long before its first checkpoint.
    a.send({ type: "SEND_MESSAGE", chatId: early.id, content: `before ${kind}` });
    const earlyTrace = await firstDelta(early.id);
    await r.kill(0);
    const killedAt = Date.now();
    expect((await r.store.pageMessages(early.id, { limit: 5 })).items.map((m) => m.role)).toEqual(["user"]);

    // Every watcher on every survivor gets the end, within the lease and one sweep.
    const deadline = LEASE_MS + SWEEP_MS + 3000;
    const replies = [
      { chat: late, trace: lateTrace },
      { chat: early, trace: earlyTrace },
    ];
    const ends = await Promise.all(
      replies.flatMap(({ chat, trace }) =>
        watchers[chat.id]!.map(async (w) => ({ end: await endOn(w, trace, deadline), at: Date.now() - killedAt })),
      ),
    );
    console.log(`${kind}: end frames on the survivors ${ends.map((e) => e.at).join(", ")} ms after kill -9 (lease ${LEASE_MS} ms)`);
    for (const e of ends) {
      expect(e.end.reason).toBe("interrupted");
      expect(e.at).toBeLessThan(LEASE_MS + SWEEP_MS + 2000);
    }

    // Stored once each, interrupted, holding everything any survivor's watcher saw.
    for (const { chat, trace } of replies) {
      const stored = (await r.store.pageMessages(chat.id, { limit: 10 })).items.filter((m) => m.id === trace);
      expect(stored).toHaveLength(1);
      expect(stored[0]).toMatchObject({ role: "assistant", status: "interrupted" });
      expect("lease" in stored[0]!).toBe(false);
      for (const w of watchers[chat.id]!) {
        const seen = seenBy(w, trace);
        expect(seen.length).toBeGreaterThan(0);
        expect(stored[0]!.content.startsWith(seen)).toBe(true);
      }
      // History on every survivor, from a socket that never watched: interrupted, not streaming, the stored text.
      for (const i of [1, 2]) {
        const fresh = await on(r, i);
        const shown = (await history(fresh, chat.id)).find((m) => m.id === trace)!;
        expect(shown).toMatchObject({ status: "interrupted", content: stored[0]!.content });
        expect(shown.streaming).toBeUndefined();
      }
      // The reply's Redis stream expires (a few minutes after its end).
      const ttl = await streamTtl(redis, chat.id, trace);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(3 * LEASE_MS + 300_000);
    }
  } finally {
    await r.stop();
    await redis.stop();
  }
}

describe("kill -9 of the replica generating, default checkpoint period and lease", () => {
  test.concurrent("three replicas on one Redis node: before the first checkpoint and after one", () => killMidReply("single"), 120_000);
  test.concurrent(
    "three replicas on a 3-node Redis Cluster: before the first checkpoint and after one",
    () => killMidReply("cluster"),
    120_000,
  );
});

// One at a time: six server processes at once on two cores are slow enough to start that a timed
// start-up step fails for the wrong reason.
describe("a replica is not ready before its bus has connected once", () => {
  for (const kind of ["single", "cluster"] as const) {
    test(`${kind}: /health 503 "starting" and /health/ready 503 until Redis answers; a later outage is "degraded", still ready`, async () => {
      const redis = kind === "single" ? await startRedis() : await startRedisCluster({ nodes: 3 });
      const nodes = "nodes" in redis ? redis.nodes : [redis];
      try {
        // Redis is not there when the replica starts (as a cluster client still connecting).
        await Promise.all(nodes.map((n) => n.stop()));
        const p = await spawnServer({
          ...env(),
          ...redisEnv(redis),
          COSMOS_ENDPOINT: cosmos.endpoint,
          COSMOS_KEY: cosmos.key,
          COSMOS_ALLOW_SELF_SIGNED_CERT: "true",
          COSMOS_DATABASE: `pichat-ready-${crypto.randomUUID()}`,
        });
        procs.push(p);
        const get = async (path: string) => {
          const res = await fetch(`${p.httpUrl}${path}`);
          return { status: res.status, body: (await res.json()) as Frame };
        };
        const h = await get("/health");
        expect(h.status).toBe(503);
        expect(h.body).toMatchObject({ status: "starting", services: { redis: { ok: false, connected: false } } });
        expect(await get("/health/ready")).toMatchObject({ status: 503, body: { ready: false, redis: false } });

        await Promise.all(nodes.map((n) => n.start()));
        if ("waitOk" in redis) await redis.waitOk(30_000);
        await until(async () => (await get("/health/ready")).status === 200, "the replica to be ready", 30_000);
        await until(async () => (await get("/health")).body.status === "ok", "/health ok", 30_000);
        expect((await get("/health")).status).toBe(200);

        // Connected once: a later outage is degraded, not "starting", and the replica stays ready.
        await Promise.all(nodes.map((n) => n.stop()));
        await until(async () => (await get("/health")).body.services.redis.ok === false, "Redis seen down", 15_000);
        expect(await get("/health")).toMatchObject({ status: 200, body: { status: "degraded" } });
        expect((await get("/health/ready")).status).toBe(200);
        await p.crash();
      } finally {
        await redis.stop();
      }
    }, 90_000);
  }
});
