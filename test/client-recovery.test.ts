import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { createClient, type PiChatClient, type ServerFrame } from "../client";
import { openSqliteStore } from "../src/store/sqlite";
import { startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { frameProblems } from "./support/frame-check";
import { startRedis, type RedisServer } from "./support/redis-server";
import { startReplicas, type Replicas } from "./support/replicas";
import { spawnServer, type ServerProcess } from "./support/server-process";
import { startSseModel, type SseModel } from "./support/sse-model";
import { startSwitchRelay } from "./support/switch-relay";
import { until, within } from "./support/until";

// The typed client through the failures it exists for, on real server processes: the server killed -9
// and started again mid-reply, and a reply's socket moved to another replica (two replicas on Redis).
// Each time the client ends the reply once (resumed whole, or as interrupted) and shows no chunk twice.

const LEASE_MS = 1500;
const words = (n: number) => Array.from({ length: n }, (_, i) => `w${i} `);
let model: SseModel;
const clients: PiChatClient[] = [];
const procs: ServerProcess[] = [];

beforeAll(async () => {
  model = await startSseModel({ tokens: ["ok"] });
});
afterAll(async () => {
  for (const c of clients) c.close();
  for (const p of procs) await p.crash().catch(() => {});
  model?.stop();
});

const env = () => ({
  OPENAI_BASE_URL: `${model.url}/v1`,
  OPENAI_MODEL: "m",
  CHAT_TITLES: "false",
  REPLY_CHECKPOINT_MS: "100",
  REPLY_LEASE_MS: String(LEASE_MS),
});

function open(url: string) {
  const frames: ServerFrame[] = [];
  const problems: string[] = [];
  const client = createClient({ url, reconnect: { minMs: 50, maxMs: 400 } });
  client.on("*", (f) => {
    frames.push(f);
    problems.push(...frameProblems(f as Record<string, unknown>));
  });
  clients.push(client);
  const messages = (traceId: string) => frames.filter((f): f is ServerFrame<"MESSAGE"> => f.type === "MESSAGE" && f.traceId === traceId);
  return { client, frames, problems, messages };
}
const ended = (c: PiChatClient) => new Promise<ServerFrame<"MESSAGE">>((resolve) => c.on("MESSAGE", (f) => f.end && resolve(f)));

/** No chunk handed on twice, seqs in order, one end. */
function expectOnce(fs: ServerFrame<"MESSAGE">[]) {
  const seqs = fs.filter((f) => !f.end).map((f) => f.seq!);
  expect(seqs).toEqual([...new Set(seqs)].sort((a, b) => a - b));
  expect(fs.filter((f) => f.end).length).toBe(1);
}

describe("the server killed -9 mid-reply and started again", () => {
  test("the client reconnects, RESUMEs, and ends the reply once as interrupted with the stored text; it can send again", async () => {
    model.setScript({ tokens: words(400), delayMs: 10 });
    const dbPath = join(tmpdir(), `pichat-client-crash-${crypto.randomUUID()}.db`);
    const first = await spawnServer(env(), { dbPath });
    procs.push(first);
    const port = new URL(first.httpUrl).port;
    const { client, problems, messages } = open(first.wsUrl);
    const chat = (await client.request("CREATE_CHAT", {})).chat;
    await client.request("GET_CHAT_HISTORY", { chatId: chat.id });
    const end = ended(client);
    await client.send(chat.id, "talk", { messageId: "q-talk" });
    const traceId = await until(() => client.following()[0]?.traceId, "a reply streaming");
    await until(() => messages(traceId).length >= 10, "ten chunks");
    await first.crash();
    await until(() => client.state === "reconnecting", "the client to notice the crash");

    const second = await spawnServer({ ...env(), SERVER_PORT: port }, { dbPath });
    procs.push(second);
    const last = await within(end, 4 * LEASE_MS + 10_000, "the reply to end on the client");
    expect(last.traceId).toBe(traceId);
    expect(last.reason).toBe("interrupted");
    expectOnce(messages(traceId));
    const store = openSqliteStore(dbPath);
    try {
      const stored = (await store.pageMessages(chat.id, { limit: 10 })).items.find((m) => m.id === traceId)!;
      expect(stored.status).toBe("interrupted");
      // The end carries the stored reply (a prefix of what was shown: a crash loses at most a checkpoint).
      expect(last.message?.content).toBe(stored.content);
      const shown = messages(traceId)
        .map((f) => f.content)
        .join("");
      expect(shown.startsWith(stored.content)).toBe(true);
    } finally {
      await store.close();
    }
    model.setScript({ tokens: ["again"] });
    expect(await client.send(chat.id, "still there?")).toMatchObject({ type: "MESSAGE_ACCEPTED", duplicate: false });
    expect(problems).toEqual([]);
    await second.crash();
  }, 60_000);
});

describe("two replicas on Redis: the socket moves to the other replica mid-reply", () => {
  let cosmos: CosmosTestServer;
  let redis: RedisServer;
  let r: Replicas;
  beforeAll(async () => {
    cosmos = await startCosmosServer();
    redis = await startRedis();
    r = await startReplicas({ n: 2, redis, cosmos, env: env() });
  }, 120_000);
  afterAll(async () => {
    await r?.stop();
    await redis?.stop();
    await cosmos?.stop();
  });

  test("the client RESUMEs on the other replica: the reply arrives whole, each chunk once", async () => {
    const portOf = (i: number) => Number(new URL(r.replicas[i]!.httpUrl).port);
    const relay = startSwitchRelay(portOf(0));
    try {
      const { client, problems, messages } = open(relay.url);
      const chat = (await client.request("CREATE_CHAT", {})).chat;
      await client.request("GET_CHAT_HISTORY", { chatId: chat.id });
      // Watched explicitly too: after the move the WATCH is restored first, so live chunks race RESUME's catch-up.
      await client.request("WATCH", { chatIds: [chat.id] });
      model.setScript({ tokens: words(150), delayMs: 15 });
      const end = ended(client);
      await client.send(chat.id, "count");
      const traceId = await until(() => client.following()[0]?.traceId, "a reply streaming", 30_000);
      await until(() => messages(traceId).length >= 5, "five chunks from replica 0", 30_000);
      relay.to(portOf(1));
      relay.cut();
      const last = await within(end, 30_000, "the reply to end on the client");
      expect(relay.connections()).toBe(2);
      expect(last.traceId).toBe(traceId);
      expect(last.reason).toBeUndefined();
      expectOnce(messages(traceId));
      const shown = messages(traceId)
        .map((f) => f.content)
        .join("");
      // Five chunks came from replica 0, the rest as replica 1's catch-up and live frames (a RESUME answered
      // with the finished reply instead would leave the shown text short).
      expect(shown).toBe(words(150).join(""));
      const stored = await until(
        async () => (await r.store.pageMessages(chat.id, { limit: 10 })).items.find((m) => m.id === traceId && !m.status),
        "the reply stored",
      );
      expect(stored.content).toBe(words(150).join(""));
      expect(problems).toEqual([]);
    } finally {
      relay.stop();
    }
  }, 90_000);
});
