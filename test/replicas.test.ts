import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Message } from "../src/records";
import { startIotHubPeer, type IotHubPeer } from "./support/amqp-peer";
import { startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startRedis, startRedisCluster, type RedisCluster, type RedisServer } from "./support/redis-server";
import { startReplicas, type Replicas } from "./support/replicas";
import { lastUserTurn, startSseModel, type SseModel } from "./support/sse-model";
import { makeLocalhostCert } from "./support/tls-cert";
import { until } from "./support/until";
import { connect, type Frame, type TestClient } from "./support/ws-client";

// Several replicas, one product: three real server processes on one Cosmos database and one Redis
// (a single node, then a 3-node cluster), checked over real sockets from browsers on different
// replicas, including kill -9 of the replica generating a reply and Redis going away.

const LEASE_MS = 2000;
let model: SseModel;
let cosmos: CosmosTestServer;
const clients: TestClient[] = [];

beforeAll(async () => {
  model = await startSseModel({ tokens: ["ok"] });
  cosmos = await startCosmosServer();
});
afterAll(async () => {
  for (const c of clients) c.close();
  await cosmos?.stop();
  model?.stop();
});

const words = (n: number) => Array.from({ length: n }, (_, i) => `w${i} `);
const env = () => ({
  OPENAI_BASE_URL: `${model.url}/v1`,
  OPENAI_MODEL: "m",
  CHAT_TITLES: "false",
  REPLY_CHECKPOINT_MS: "200",
  REPLY_LEASE_MS: String(LEASE_MS),
});
async function on(r: Replicas, i: number) {
  const c = await connect(r.replicas[i]!.wsUrl);
  clients.push(c);
  return c;
}
const newChat = async (c: TestClient) => (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat as { id: string };
const open = async (c: TestClient, chatId: string) => (await c.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY")) as Frame;
const health = async (r: Replicas, i: number) => (await (await fetch(`${r.replicas[i]!.httpUrl}/health`)).json()) as Frame;
/** Every query shape the test server compiles once, paid before the timed tests (cold: seconds). */
async function warmUp(r: Replicas) {
  model.setScript({ tokens: ["warm"] });
  for (let i = 0; i < r.replicas.length; i++) {
    const c = await on(r, i);
    const chat = await newChat(c);
    c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "warm up" });
    await c.reply(chat.id, 60_000);
    await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY", 30_000);
  }
}
const streamed = (c: TestClient, traceId: string) => c.frames.filter((f) => f.type === "MESSAGE" && f.traceId === traceId && !f.end);

for (const kind of ["single", "cluster"] as const) {
  describe(`three replicas on one Redis ${kind === "single" ? "node" : "cluster"}`, () => {
    let redis: RedisServer | RedisCluster;
    let r: Replicas;
    beforeAll(async () => {
      redis = kind === "single" ? await startRedis() : await startRedisCluster({ nodes: 3 });
      r = await startReplicas({ n: 3, redis, cosmos, env: env() });
      await warmUp(r);
    }, 120_000);
    afterAll(async () => {
      await r?.stop();
      await redis?.stop();
    });

    test("/health shows Redis and the replica", async () => {
      for (let i = 0; i < 3; i++) {
        const h = await health(r, i);
        expect(h.replica).toBe(`r${i}`);
        expect(h.services.redis).toMatchObject({ ok: true, mode: kind, latency_ms: expect.any(Number) });
      }
    });

    test("chat events reach every replica's sockets once; a reply generated on r0 streams token by token to a watcher on r1, exactly", async () => {
      const [a, b, c] = [await on(r, 0), await on(r, 1), await on(r, 2)];
      const chat = await newChat(a);
      for (const x of [b, c]) await x.next((f) => f.type === "CHAT_CREATED" && f.chat.id === chat.id);
      await open(b, chat.id);
      model.setScript({ tokens: words(30), delayMs: 3 });
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "hello from r0" });
      expect((await b.next((f) => f.type === "FIRST_MESSAGE" && f.chatId === chat.id)).content).toBe("hello from r0");
      const got = await b.reply(chat.id, 15_000);
      expect(got.text).toBe(words(30).join(""));
      expect(got.chunks.map((f) => f.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
      expect(got.end).toMatchObject({ end: true, seq: 31 });
      // c never opened the chat: it sees no frame of it but the creation.
      expect(c.frames.filter((f) => f.chatId === chat.id && f.type !== "CHAT_CREATED")).toEqual([]);
      expect(c.frames.filter((f) => f.type === "CHAT_CREATED" && f.chat.id === chat.id)).toHaveLength(1);
      // r1 kept the chat's (then empty) newest messages when b opened it: what it answers now came
      // over the bus, and equals the store exactly.
      const stored = (await r.store.pageMessages(chat.id, { limit: 10 })).items;
      expect((await open(b, chat.id)).messages).toEqual(stored);
      expect(stored.map((m) => m.content)).toEqual(["hello from r0", words(30).join("")]);
    }, 30_000);

    test("deltas read in one tick go to the other replicas in few bus messages: every seq arrives once, in order", async () => {
      const [a, b] = [await on(r, 0), await on(r, 1)];
      const chat = await newChat(a);
      await open(b, chat.id);
      const published = async () =>
        Number(
          /pichat_bus_messages_total\{direction="published"\} (\d+)/.exec(
            await (await fetch(`${r.replicas[0]!.httpUrl}/metrics`)).text(),
          )?.[1] ?? 0,
        );
      const before = await published();
      // No pacing: the model's deltas come several to a network read.
      model.setScript({ tokens: words(300) });
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "all at once" });
      const got = await b.reply(chat.id, 15_000);
      expect(got.chunks.map((f) => f.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
      expect(got.text).toBe(words(300).join(""));
      const sent = (await published()) - before;
      console.log(`${kind}: 300 deltas went to the other replicas in ${sent} bus messages (with the question, start and end)`);
      expect(sent).toBeLessThan(300);
    }, 30_000);

    test("history on another replica mid-stream: the text so far, then the rest live, no gap, no repeat", async () => {
      const a = await on(r, 0);
      const chat = await newChat(a);
      model.setScript((req) => ({ tokens: words(40), ...(lastUserTurn(req) === "resume me" ? { holdAfter: 15 } : {}) }));
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "resume me" });
      await model.waitHeld(1, 10_000);
      const b = await on(r, 2);
      const h = await open(b, chat.id);
      const partial = (h.messages as (Message & { streaming?: boolean; seq?: number })[]).at(-1)!;
      // The text so far as r2 has it (the held model sent 15 chunks; some may still be on their way here).
      expect(partial).toMatchObject({ role: "assistant", streaming: true });
      expect(partial.seq).toBeLessThanOrEqual(15);
      expect(partial.content).toBe(words(partial.seq!).join(""));
      model.release();
      const rest = await b.reply(chat.id, 15_000);
      expect(rest.chunks.map((c) => c.seq)).toEqual(Array.from({ length: 40 - partial.seq! }, (_, i) => partial.seq! + 1 + i));
      expect(partial.content + rest.text).toBe(words(40).join(""));
      const stored = (await r.store.pageMessages(chat.id, { limit: 10 })).items.find((m) => m.id === partial.id)!;
      expect(stored.content).toBe(partial.content + rest.text);
    }, 30_000);

    test("RESUME and STOP_GENERATION on a replica that is not generating: resumed exactly, then stopped upstream", async () => {
      const a = await on(r, 0);
      const chat = await newChat(a);
      model.setScript({ tokens: words(500), delayMs: 5 });
      const asked = model.requests.length;
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "long one" });
      const first = await a.next((f) => f.type === "MESSAGE" && !f.end && f.chatId === chat.id);
      const b = await on(r, 1);
      const caught = await b.request({ type: "RESUME", chatId: chat.id, traceId: first.traceId, fromSeq: 0 }, "MESSAGE");
      expect(caught).toMatchObject({ type: "MESSAGE", traceId: first.traceId, end: false });
      await b.next((f) => f.type === "MESSAGE" && f.traceId === first.traceId && f.seq > caught.seq);
      const stopped = await b.request({ type: "STOP_GENERATION", chatId: chat.id }, "GENERATION_STOPPED");
      expect(stopped).toMatchObject({ type: "GENERATION_STOPPED", traceId: first.traceId });
      await until(() => model.requests[asked]?.aborted, "the model request on r0 to be aborted upstream");
      // GENERATION_STOPPED is sent once the end frame went out: it is already here.
      const end = b.frames.find((f) => f.type === "MESSAGE" && f.end && f.traceId === first.traceId)!;
      expect(end.reason).toBe("stopped");
      const text =
        caught.content +
        streamed(b, first.traceId)
          .filter((f) => f.seq > caught.seq)
          .map((f) => f.content)
          .join("");
      const stored = (await r.store.pageMessages(chat.id, { limit: 10 })).items.find((m) => m.id === first.traceId)!;
      expect(stored.status).toBe("stopped");
      expect(stored.content).toBe(text);
    }, 30_000);

    test("settings are kept per replica, and an update on r0 drops r1's copy: r1's next reply uses the new system prompt", async () => {
      const [a, b] = [await on(r, 0), await on(r, 1)];
      const chat = await newChat(b);
      model.setScript({ tokens: ["ok"] });
      const systemOf = (i: number) => model.requests[i]!.body.messages.find((m: { role: string }) => m.role === "system")?.content;
      // r1 reads (and keeps) the settings for this question.
      const before = model.requests.length;
      b.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "first" });
      await b.reply(chat.id, 15_000);
      const prompt = `Answer as a pirate ${crypto.randomUUID()}`;
      expect(systemOf(before)).not.toBe(prompt);
      await a.request({ type: "UPDATE_SETTINGS", systemPrompt: prompt }, "SETTINGS");
      // The update reaches r1 over the bus (milliseconds); GET_SETTINGS there reads what a reply would.
      await until(
        async () => (await b.request({ type: "GET_SETTINGS" }, "SETTINGS")).settings.systemPrompt === prompt,
        "r1 to see the new settings",
        5_000,
      );
      const asked = model.requests.length;
      b.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "second" });
      await b.reply(chat.id, 15_000);
      expect(systemOf(asked)).toBe(prompt);
      await a.request({ type: "UPDATE_SETTINGS", systemPrompt: null }, "SETTINGS");
    }, 30_000);

    test("one reply per chat across replicas: a question on r1 while r0 answers waits, and is answered next, once", async () => {
      const a = await on(r, 0);
      const b = await on(r, 1);
      const chat = await newChat(a);
      model.setScript((req) => ({ tokens: ["re: ", lastUserTurn(req)], ...(lastUserTurn(req) === "one" ? { holdAfter: 1 } : {}) }));
      const asked = model.requests.length;
      a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "one" });
      await model.waitHeld(1, 10_000);
      const accepted = await b.request({ type: "SEND_MESSAGE", chatId: chat.id, content: "two", requestId: "t" }, "MESSAGE_ACCEPTED");
      expect(accepted).toMatchObject({ duplicate: false, queued: true });
      expect(model.requests.slice(asked).map(lastUserTurn)).toEqual(["one"]);
      model.release();
      const second = await b.next((f) => f.type === "MESSAGE" && f.end && f.traceId === accepted.traceId, 15_000);
      expect(second.end).toBe(true);
      expect(model.requests.slice(asked).map(lastUserTurn)).toEqual(["one", "two"]);
      const stored = (await r.store.pageMessages(chat.id, { limit: 10 })).items;
      expect(stored.filter((m) => m.role === "assistant").map((m) => m.content)).toEqual(["re: one", "re: two"]);
    }, 30_000);
  });
}

describe("losing a replica and losing Redis", () => {
  let redis: RedisServer;
  let r: Replicas;
  beforeAll(async () => {
    redis = await startRedis();
    r = await startReplicas({ n: 3, redis, cosmos, env: env() });
    await warmUp(r);
  }, 120_000);
  afterAll(async () => {
    await r?.stop();
    await redis?.stop();
  });

  test("kill -9 the replica generating a reply: watchers elsewhere get the end frame within 20 s, and it is stored interrupted", async () => {
    const a = await on(r, 0);
    const b = await on(r, 1);
    const chat = await newChat(a);
    model.setScript({ tokens: words(2000), delayMs: 5 });
    a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "then crash" });
    const first = await a.next((f) => f.type === "MESSAGE" && !f.end && f.chatId === chat.id);
    await open(b, chat.id);
    await b.next((f) => f.type === "MESSAGE" && f.traceId === first.traceId && f.seq > 20, 10_000);
    // Killed once its text is checkpointed (before that, a crash leaves the question unanswered: crash.test.ts).
    await until(
      async () => (await r.store.pageMessages(chat.id, { limit: 10 })).items.some((m) => m.id === first.traceId && m.content.length > 0),
      "a checkpoint of the reply",
    );
    const killedAt = Date.now();
    await r.kill(0);
    const end = await b
      .next((f) => f.type === "MESSAGE" && f.end && f.traceId === first.traceId, 20_000)
      .catch((e) => {
        for (const i of [1, 2])
          console.log(
            `r${i}`,
            r.replicas[i]!.lines.filter((l) => /orphan|finalis|error|warn/i.test(l))
              .slice(-6)
              .join("\n"),
          );
        throw e;
      });
    console.log(`watcher on r1 got the end frame ${Date.now() - killedAt} ms after r0 was killed (lease ${LEASE_MS} ms)`);
    expect(end.reason).toBe("interrupted");
    const stored = (await r.store.pageMessages(chat.id, { limit: 10 })).items.find((m) => m.id === first.traceId)!;
    expect(stored.status).toBe("interrupted");
    expect(stored.content.length).toBeGreaterThan(0);
    const seen = streamed(b, first.traceId)
      .map((f) => f.content)
      .join("");
    expect(seen.length).toBeGreaterThan(0);
    await r.restart(0);
  }, 40_000);

  test("Redis down: each replica serves its own sockets (degraded in /health); back up: clients are told to reload, and replicas talk again", async () => {
    const a = await on(r, 1);
    const b = await on(r, 2);
    await redis.stop();
    await until(async () => (await health(r, 1)).services.redis.ok === false, "r1 to see Redis down");
    expect((await health(r, 1)).status).toBe("degraded");
    model.setScript({ tokens: ["still", " here"] });
    const chat = await newChat(a);
    a.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "during the outage" });
    expect((await a.reply(chat.id, 10_000)).text).toBe("still here");

    await redis.start();
    for (const c of [a, b]) await c.next((f) => f.type === "RESYNC", 15_000);
    await until(async () => (await health(r, 2)).services.redis.ok === true, "r2 to see Redis back");
    const chat2 = await newChat(a);
    await b.next((f) => f.type === "CHAT_CREATED" && f.chat.id === chat2.id, 10_000);
  }, 60_000);
});

describe("device partitions shared by three replicas", () => {
  let redis: RedisServer;
  let r: Replicas;
  let peer: IotHubPeer;
  beforeAll(async () => {
    const cert = await makeLocalhostCert();
    peer = await startIotHubPeer({ partitions: 6, tls: cert });
    redis = await startRedis();
    r = await startReplicas({
      n: 3,
      redis,
      cosmos,
      env: {
        ...env(),
        IOT_HUB_ENABLE: "true",
        EVENT_HUB_COMPATIBLE_CONN_STR: peer.eventHubConnectionString,
        IOT_HUB_CONNECTION_STRING: peer.iotHubConnectionString,
        NODE_EXTRA_CA_CERTS: cert.certPath,
        IOT_HUB_LOAD_BALANCING: "balanced",
        IOT_HUB_LOAD_BALANCING_INTERVAL_MS: "300",
        IOT_HUB_PARTITION_EXPIRY_MS: "3000",
        DEVICE_CLAIM_LEASE_S: "5",
        DEVICE_REPLY_MAX_AGE_S: "120",
      },
    });
  }, 120_000);
  afterAll(async () => {
    await r?.stop();
    await redis?.stop();
    await peer?.stop();
  });
  const owned = async (i: number) => ((await health(r, i)).services.iot_hub.partitions ?? []) as string[];

  test("the partitions are shared out, every device message is answered exactly once, and a killed replica's partitions are taken over", async () => {
    const all = ["0", "1", "2", "3", "4", "5"];
    const balanced = await until(
      async () => {
        const each = await Promise.all([0, 1, 2].map(owned));
        const union = each.flat().sort();
        return JSON.stringify(union) === JSON.stringify(all) && each.every((p) => p.length === 2) && each;
      },
      "the six partitions shared two per replica",
      60_000,
    );
    console.log(`partitions: ${balanced.map((p, i) => `r${i}=[${p}]`).join(" ")}`);

    model.setScript((req) => ({ tokens: ["answer to ", lastUserTurn(req)], delayMs: 20 }));
    const ask = (n: number) =>
      Array.from({ length: n }, (_, i) => {
        const messageId = `dev-${crypto.randomUUID()}`;
        peer.sendTelemetry({
          deviceId: `pi-${i % 6}`,
          body: { message: `q ${messageId}` },
          messageId,
          contentType: "application/json",
          partitionId: String(i % 6),
        });
        return messageId;
      });
    const first = ask(12);
    for (const id of first) await peer.waitForC2D((m) => (m.raw as { correlation_id?: unknown }).correlation_id === id, 30_000);
    // Every one of them marked done (a reply sent but not yet marked is the documented at-least-once window).
    await until(
      () => first.every((id) => r.replicas.some((p) => p.lines.some((l) => l.includes("device message handled") && l.includes(id)))),
      "the first batch marked done",
    );

    // Kill a replica while its partitions have questions in flight: each device's first question is
    // held mid-reply (before any C2D), on whichever replica owns its partition.
    const victim = balanced[0]!;
    model.setScript((req) => ({ tokens: ["answer to ", lastUserTurn(req)], holdAfter: 1 }));
    const second = ask(12);
    await model.waitHeld(6, 30_000);
    const killedAt = Date.now();
    await r.kill(0);
    model.setScript((req) => ({ tokens: ["answer to ", lastUserTurn(req)], delayMs: 20 }));
    model.release();
    const takenOver = await until(
      async () => {
        const each = await Promise.all([1, 2].map(owned));
        return JSON.stringify(each.flat().sort()) === JSON.stringify(all) && Date.now() - killedAt;
      },
      "the survivors to own every partition",
      30_000,
    );
    console.log(`r0's partitions [${victim}] taken over ${takenOver} ms after kill -9 (expiry 3000 ms)`);
    for (const id of second) await peer.waitForC2D((m) => (m.raw as { correlation_id?: unknown }).correlation_id === id, 45_000);
    // A late duplicate would come within a claim lease; every message got exactly one reply.
    const counts = new Map<string, number>();
    for (const m of peer.c2d) {
      const id = String((m.raw as { correlation_id?: unknown }).correlation_id);
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    expect([...first, ...second].map((id) => counts.get(id))).toEqual([...first, ...second].map(() => 1));
    for (const m of peer.c2d.filter((x) =>
      [...first, ...second].includes(String((x.raw as { correlation_id?: unknown }).correlation_id)),
    )) {
      expect((m.body as { response: string }).response).toStartWith("answer to q dev-");
    }
  }, 150_000);
});

describe("limits that protect the service are shared", () => {
  let redis: RedisServer;
  let r: Replicas;
  beforeAll(async () => {
    redis = await startRedis();
    r = await startReplicas({ n: 2, redis, cosmos, env: { ...env(), MAX_GENERATIONS: "1" } });
    await warmUp(r);
  }, 120_000);
  afterAll(async () => {
    await r?.stop();
    await redis?.stop();
  });

  test("MAX_GENERATIONS counts every replica: while r0 answers one chat, r1 refuses another (nothing stored), then takes it", async () => {
    const a = await on(r, 0);
    const b = await on(r, 1);
    const [one, two] = [await newChat(a), await newChat(b)];
    model.setScript((req) => ({ tokens: ["re: ", lastUserTurn(req)], ...(lastUserTurn(req) === "busy" ? { holdAfter: 1 } : {}) }));
    a.send({ type: "SEND_MESSAGE", chatId: one.id, content: "busy" });
    await model.waitHeld(1, 10_000);
    const refused = await b.request({ type: "SEND_MESSAGE", chatId: two.id, content: "elsewhere", requestId: "x" }, "MESSAGE_ACCEPTED");
    expect(refused).toMatchObject({ type: "ERROR", code: "TOO_MANY_GENERATIONS", requestId: "x" });
    expect((await r.store.pageMessages(two.id, { limit: 5 })).items).toEqual([]);
    model.release();
    await a.reply(one.id, 15_000);
    await until(
      async () => {
        const again = await b.request(
          { type: "SEND_MESSAGE", chatId: two.id, content: "elsewhere", requestId: `y${Date.now()}` },
          "MESSAGE_ACCEPTED",
        );
        return again.type === "MESSAGE_ACCEPTED" && again;
      },
      "r1 to take the chat once r0 is done",
      10_000,
    );
    expect((await b.reply(two.id, 15_000)).text).toBe("re: elsewhere");
    // The bus is counted: events published here were received there.
    const metrics = await (await fetch(`${r.replicas[1]!.httpUrl}/metrics`)).text();
    expect(metrics).toMatch(/pichat_bus_messages_total\{direction="received"\} [1-9]/);
    expect(metrics).toMatch(/pichat_bus_lag_seconds_count [1-9]/);
  }, 60_000);
});
