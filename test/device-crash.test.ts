import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Message } from "../src/records";
import { openSqliteStore } from "../src/store/sqlite";
import type { Store } from "../src/store/store";
import { startIotHubPeer, type C2DMessage, type IotHubPeer } from "./support/amqp-peer";
import { openCosmosStoreAt, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { spawnServer, type ServerProcess } from "./support/server-process";
import { lastUserTurn, startSseModel, type SseModel } from "./support/sse-model";
import { makeLocalhostCert, type LocalhostCert } from "./support/tls-cert";
import { until } from "./support/until";
import { connect, type TestClient } from "./support/ws-client";

// kill -9 of the replica answering a parts device, between two parts: the device (dropping repeats
// as docs/protocol.md §7 says) never speaks a part twice, and hears a whole answer to the end.

let model: SseModel;
let cosmos: CosmosTestServer;
let peer: IotHubPeer;
let cert: LocalhostCert;
const procs: ServerProcess[] = [];
const clients: TestClient[] = [];

beforeAll(async () => {
  cert = await makeLocalhostCert();
  [model, cosmos, peer] = await Promise.all([
    startSseModel({ tokens: ["ok"] }),
    startCosmosServer(),
    startIotHubPeer({ partitions: 1, tls: cert }),
  ]);
});
afterAll(async () => {
  for (const c of clients) c.close();
  for (const p of procs) await p.crash().catch(() => {});
  await peer?.stop();
  await cosmos?.stop();
  model?.stop();
});

type Part = { response: string; message_id: string; part: number; last: boolean; offset: number; timestamp: string };

/** What a device that drops repeats speaks: per reply, only text past what it has heard of that reply. */
function hear(parts: Part[]) {
  const heard = new Map<string, number>();
  const spoken: { replyId: string; text: string }[] = [];
  for (const p of parts) {
    const upTo = heard.get(p.message_id) ?? 0;
    const cps = [...p.response];
    // A gap would be an unheard piece: parts never leave one.
    expect(p.offset).toBeLessThanOrEqual(upTo);
    const fresh = cps.slice(upTo - p.offset).join("");
    if (fresh) spoken.push({ replyId: p.message_id, text: fresh });
    heard.set(p.message_id, Math.max(upTo, p.offset + cps.length));
  }
  return spoken;
}

/** The test's own handle on the store the servers write. */
async function openStoreOf(kind: "sqlite" | "cosmos", env: Record<string, string>, dbPath: string): Promise<Store> {
  if (kind === "sqlite") return openSqliteStore(dbPath);
  return openCosmosStoreAt(cosmos, env.COSMOS_DATABASE!);
}

const envFor = (kind: "sqlite" | "cosmos", replyLeaseMs = 1500): Record<string, string> => ({
  OPENAI_BASE_URL: `${model.url}/v1`,
  OPENAI_MODEL: "m",
  CHAT_TITLES: "false",
  REPLY_CHECKPOINT_MS: "100",
  REPLY_LEASE_MS: String(replyLeaseMs),
  IOT_HUB_ENABLE: "true",
  EVENT_HUB_COMPATIBLE_CONN_STR: peer.eventHubConnectionString,
  IOT_HUB_CONNECTION_STRING: peer.iotHubConnectionString,
  NODE_EXTRA_CA_CERTS: cert.certPath,
  DEVICE_CLAIM_LEASE_S: "1",
  IOT_HUB_LOAD_BALANCING: "greedy",
  IOT_HUB_LOAD_BALANCING_INTERVAL_MS: "200",
  IOT_HUB_PARTITION_EXPIRY_MS: "1000",
  DEVICE_REPLY_MAX_AGE_S: "60",
  DEVICE_DEFAULT_OWNER: "default",
  ...(kind === "cosmos"
    ? {
        COSMOS_ENDPOINT: cosmos.endpoint,
        COSMOS_KEY: cosmos.key,
        COSMOS_ALLOW_SELF_SIGNED_CERT: "true",
        COSMOS_DATABASE: `pichat-crash-parts-${crypto.randomUUID()}`,
      }
    : {}),
});
/** The test's replicas die with it, passed or failed: one left alive would answer the next test's device too. */
async function withServers(run: (spawn: (env: Record<string, string>, dbPath: string) => Promise<ServerProcess>) => Promise<void>) {
  const mine: ServerProcess[] = [];
  try {
    await run(async (env, dbPath) => {
      const p = await spawnServer(env, { dbPath });
      procs.push(p);
      mine.push(p);
      return p;
    });
  } finally {
    for (const p of mine) await p.crash().catch(() => {});
  }
}

const running = (p: ServerProcess) =>
  until(
    async () =>
      ((await (await fetch(`${p.httpUrl}/health`)).json()) as { services: { iot_hub: { status: string } } }).services.iot_hub.status ===
      "running",
    "the device consumer to run",
    15_000,
  );

/**
 * The first replica dies after part 0, its reply held by the model. With the reply's lease shorter
 * than the device message's claim, the new owner finds the reply lapsed; longer, it finds it still
 * under the dead replica's lease, and waits for that to lapse rather than take it for an answer.
 */
const crashMidReply = (kind: "sqlite" | "cosmos", replyLeaseMs: number) =>
  withServers(async (spawn) => {
    const dbPath = join(tmpdir(), `pichat-crash-parts-${crypto.randomUUID()}.db`);
    const env = envFor(kind, replyLeaseMs);
    const question = `tell me a story (${kind}, lease ${replyLeaseMs} ms)`;
    const messageId = `d-${crypto.randomUUID()}`;
    const deviceId = `pi-crash-parts-${kind}-${replyLeaseMs}`;
    const first = ["Once upon a time. ", "There ", "was ", "a ", "fox."];
    const second = ["A fox lived in a wood. ", "It was clever. ", "The end."];
    // The first replica's reply is held after its first sentence (a part is out); it dies there.
    model.setScript((req) => (lastUserTurn(req) === question ? { tokens: first, holdAfter: 2 } : { tokens: ["ok"] }));
    const a = await spawn(env, dbPath);
    await running(a);
    peer.sendTelemetry({ deviceId, body: { message: question, reply_in_parts: true }, messageId, contentType: "application/json" });
    const correlated = (m: C2DMessage) => (m.raw as { correlation_id?: unknown }).correlation_id === messageId;
    const part0 = await peer.waitForC2D(correlated, 15_000);
    expect(part0.body).toMatchObject({ response: "Once upon a time.", part: 0, last: false, offset: 0 });
    // It dies with its reply checkpointed under a lease (the new owner finds it stored, streaming).
    const store = await openStoreOf(kind, env, dbPath);
    const checkpoint = await until(
      async () => {
        const chat = await store.findDeviceChat("default", deviceId);
        const r = chat && (await store.findReply(chat.id, messageId));
        return r?.status === "streaming" && r.content.startsWith("Once upon a time.") ? r : undefined;
      },
      "the reply's checkpoint to be stored",
      10_000,
    );
    await store.close();
    await a.crash();
    model.setScript((req) => (lastUserTurn(req) === question ? { tokens: second } : { tokens: ["ok"] }));
    model.release();

    const b = await spawn(env, dbPath);
    await peer.waitForC2D((m) => correlated(m) && (m.body as Part).last === true, 30_000);
    // This question's own outcome (the same process may answer earlier tests' questions, re-read from the hub).
    await b.waitLine(new RegExp(`device message handled.*"messageId":"${messageId}","outcome":"answered"`), 10_000);
    const parts = peer.c2d.filter(correlated).map((m) => m.body as Part);
    const spoken = hear(parts);
    // Exactly what protocol.md §7 says the device may hear: the interrupted reply's parts so far,
    // then the new owner's whole reply (a new message_id, from offset 0), ending with its last part.
    const replies = [...new Set(parts.map((p) => p.message_id))];
    expect(replies).toHaveLength(2);
    expect(spoken.filter((s) => s.replyId === replies[0]).map((s) => s.text)).toEqual(["Once upon a time."]);
    expect(
      spoken
        .filter((s) => s.replyId === replies[1])
        .map((s) => s.text)
        .join(""),
    ).toBe(second.join(""));
    expect(parts.filter((p) => p.last)).toHaveLength(1);
    expect(parts.at(-1)!.last).toBe(true);
    // Nobody answered again over the dead replica's lease while it ran.
    const answeredAgainAt = Date.parse(parts.find((p) => p.message_id === replies[1])!.timestamp);
    expect(answeredAgainAt).toBeGreaterThanOrEqual(checkpoint.lease!.until);

    const c = await connect(b.wsUrl);
    clients.push(c);
    const chats = (await c.request({ type: "GET_CHATS" }, "CHAT_LIST")).chats as { id: string; device_id?: string }[];
    const chat = chats.find((x) => x.device_id === deviceId)!;
    const history = (await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).messages as Message[];
    const answers = history.filter((m) => m.parent_id === messageId);
    expect(answers.find((m) => m.id === replies[1])).toMatchObject({ content: second.join("") });
    // The interrupted reply is never a finished answer (history may show only the current version).
    expect(answers.filter((m) => !m.status).map((m) => m.id)).toEqual([replies[1]!]);
    rmSync(dbPath, { force: true });
  });

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`kill -9 between parts (${kind})`, () => {
    test(
      "the new owner answers to the end; no part is spoken twice; what the device heard is exactly as documented",
      () => crashMidReply(kind, 1500),
      60_000,
    );

    test(
      "the dead replica's reply lease outlasts the device message's claim: the new owner waits it out, then answers the same way",
      () => crashMidReply(kind, 6000),
      60_000,
    );

    test(
      "the reply stored, its last part not yet accepted (IoT Hub throttling): the new owner sends it again from offset 0 under the same id; the device hears each sentence once, to the end",
      () =>
        withServers(async (spawn) => {
          const dbPath = join(tmpdir(), `pichat-crash-stored-${crypto.randomUUID()}.db`);
          const env = envFor(kind);
          const question = `tell me again (${kind})`;
          const messageId = `d-${crypto.randomUUID()}`;
          const deviceId = `pi-crash-stored-${kind}`;
          const story = ["It was a dark night. ", "The fox slept. ", "The owl did not. ", "Morning came."];
          model.setScript((req) => (lastUserTurn(req) === question ? { tokens: story, delayMs: 30 } : { tokens: ["ok"] }));
          const a = await spawn(env, dbPath);
          await running(a);
          const correlated = (m: C2DMessage) => (m.raw as { correlation_id?: unknown }).correlation_id === messageId;
          peer.sendTelemetry({ deviceId, body: { message: question, reply_in_parts: true }, messageId, contentType: "application/json" });
          await peer.waitForC2D(correlated, 15_000);
          // From here IoT Hub answers 429 to everything: the rest of the reply waits in the sender's backoff.
          peer.refuseNext("throttle", 10_000);
          const c = await connect(a.wsUrl);
          clients.push(c);
          const stored = await until(
            async () => {
              const chats = (await c.request({ type: "GET_CHATS" }, "CHAT_LIST")).chats as { id: string; device_id?: string }[];
              const chat = chats.find((x) => x.device_id === deviceId);
              if (!chat) return undefined;
              const h = (await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).messages as Message[];
              return h.find((m) => m.parent_id === messageId && !m.status && !("streaming" in m));
            },
            "the whole reply to be stored",
            15_000,
          );
          expect(stored.content).toBe(story.join(""));
          const before = peer.c2d.filter(correlated).length;
          expect(before).toBeLessThan(4);
          c.close();
          await a.crash();
          peer.stopRefusing();

          const b = await spawn(env, dbPath);
          await peer.waitForC2D((m) => correlated(m) && (m.body as Part).last === true, 30_000);
          const parts = peer.c2d.filter(correlated).map((m) => m.body as Part);
          // One reply id throughout; the new owner's parts start again at offset 0.
          expect([...new Set(parts.map((p) => p.message_id))]).toEqual([stored.id]);
          expect(parts.slice(before).map((p) => p.offset)[0]).toBe(0);
          const spoken = hear(parts);
          expect(spoken.map((x) => x.text).join("")).toBe(story.join(""));
          expect(parts.filter((p) => p.last)).toHaveLength(1);
          // No model call for it again: the stored reply was sent, not made again.
          expect(model.requests.filter((r) => lastUserTurn(r) === question)).toHaveLength(1);
          rmSync(dbPath, { force: true });
        }),
      60_000,
    );
  });
}
