import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import type { Message } from "../src/records";
import { openSqliteStore } from "../src/store/sqlite";
import type { Store } from "../src/store/store";
import { openCosmosStoreAt, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startIotHubPeer, type IotHubPeer } from "./support/amqp-peer";
import { spawnServer, type ServerProcess } from "./support/server-process";
import { makeLocalhostCert, type LocalhostCert } from "./support/tls-cert";
import { lastUserTurn, startSseModel, type SseModel } from "./support/sse-model";
import { until } from "./support/until";
import { connect, type TestClient } from "./support/ws-client";

// A crash is an input: kill -9 the real server process mid-reply, start another on the same store,
// and check that nothing is stuck and nothing is unanswerable. Both stores.

const LEASE_MS = 1500;
const CHECKPOINT_MS = 100;
let model: SseModel;
let cosmos: CosmosTestServer;
const procs: ServerProcess[] = [];
const clients: TestClient[] = [];

beforeAll(async () => {
  model = await startSseModel({ tokens: ["ok"] });
  cosmos = await startCosmosServer();
});
afterAll(async () => {
  for (const c of clients) c.close();
  for (const p of procs) await p.crash().catch(() => {});
  await cosmos?.stop();
  model?.stop();
});

const words = (n: number) => Array.from({ length: n }, (_, i) => `w${i} `);

/** The test's own handle on a Cosmos database the servers write. */
const openCosmosAt = (database: string) => openCosmosStoreAt(cosmos, database);

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`kill -9 mid-reply (${kind})`, () => {
    let store: Store;
    let env: Record<string, string>;
    const dbPath = join(tmpdir(), `pichat-crash-${crypto.randomUUID()}.db`);
    beforeAll(async () => {
      const database = `pichat-crash-${crypto.randomUUID()}`;
      env = {
        OPENAI_BASE_URL: `${model.url}/v1`,
        OPENAI_MODEL: "m",
        CHAT_TITLES: "false",
        REPLY_CHECKPOINT_MS: String(CHECKPOINT_MS),
        REPLY_LEASE_MS: String(LEASE_MS),
        ...(kind === "cosmos"
          ? { COSMOS_ENDPOINT: cosmos.endpoint, COSMOS_KEY: cosmos.key, COSMOS_ALLOW_SELF_SIGNED_CERT: "true", COSMOS_DATABASE: database }
          : {}),
      };
      // The test reads the store the servers write, directly.
      store = kind === "cosmos" ? await openCosmosAt(database) : openSqliteStore(dbPath);
    });
    afterAll(async () => {
      await store?.close();
      rmSync(dbPath, { force: true });
    });
    const start = async () => {
      const p = await spawnServer(env, { dbPath });
      procs.push(p);
      return p;
    };
    const client = async (p: ServerProcess) => {
      const c = await connect(p.wsUrl);
      clients.push(c);
      return c;
    };
    const stored = async (chatId: string) => (await store.pageMessages(chatId, { limit: 100 })).items;

    test("the partial reply survives as interrupted, history never shows it streaming after the lease, and a resend is a duplicate", async () => {
      model.setScript({ tokens: words(400), delayMs: 10 });
      const a = await start();
      const c = await client(a);
      const chat = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;
      c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "talk", messageId: "q-talk" });
      const first = await c.next((f) => f.type === "MESSAGE" && !f.end);
      // A checkpoint with some text is in the store: the reply is now worth keeping.
      const checkpoint = await until(async () => {
        const r = (await stored(chat.id)).find((m) => m.id === first.traceId);
        return r?.status === "streaming" && r.content.length > 0 && r;
      }, "a streaming checkpoint in the store");
      expect(checkpoint).toMatchObject({
        role: "assistant",
        parent_id: "q-talk",
        lease: { owner: expect.any(String), seq: expect.any(Number) },
      });
      await a.crash();
      const seen = c.frames
        .filter((f) => f.type === "MESSAGE" && f.traceId === first.traceId)
        .map((f) => f.content)
        .join("");

      const b = await start();
      const d = await client(b);
      // Within the lease (and a sweep) the reply is final: interrupted, its text a prefix of what the client saw.
      const started = Date.now();
      const final = await until(
        async () => {
          const h = await d.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
          const r = (h.messages as (Message & { streaming?: boolean })[]).find((m) => m.id === first.traceId);
          return r && !r.streaming && r.status !== "streaming" && r;
        },
        "the orphaned reply to be finalised",
        4 * LEASE_MS + 5000,
      );
      console.log(`${kind}: orphaned reply finalised ${Date.now() - started} ms after the restart (lease ${LEASE_MS} ms)`);
      expect(final.status).toBe("interrupted");
      expect(final.content.length).toBeGreaterThan(0);
      expect(seen.startsWith(final.content)).toBe(true);
      expect("lease" in final).toBe(false);
      expect(
        await d.request(
          { type: "SEND_MESSAGE", chatId: chat.id, content: "talk", messageId: "q-talk", requestId: "again" },
          "MESSAGE_ACCEPTED",
        ),
      ).toMatchObject({ duplicate: true });
      await b.crash();
    }, 30_000);

    test("a question whose reply had not been checkpointed is answered when it is sent again", async () => {
      model.setScript((req) => (lastUserTurn(req) === "unlucky" ? { tokens: ["never"], hangAfter: 0 } : { tokens: ["answered", " now"] }));
      const a = await start();
      const c = await client(a);
      const chat = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;
      const asked = model.requests.length;
      c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "unlucky", messageId: "q-unlucky" });
      await until(() => model.requests.length > asked, "the model to be asked");
      await a.crash();
      expect((await stored(chat.id)).map((m) => m.id)).toEqual(["q-unlucky"]);

      model.setScript({ tokens: ["answered", " now"] });
      const b = await start();
      const d = await client(b);
      const accepted = await d.request(
        { type: "SEND_MESSAGE", chatId: chat.id, content: "unlucky", messageId: "q-unlucky", requestId: "retry" },
        "MESSAGE_ACCEPTED",
      );
      expect(accepted).toMatchObject({ duplicate: false, messageId: "q-unlucky" });
      expect((await d.reply(chat.id)).text).toBe("answered now");
      const after = await stored(chat.id);
      expect(after.map((m) => [m.role, m.content, m.parent_id])).toEqual([
        ["user", "unlucky", undefined],
        ["assistant", "answered now", "q-unlucky"],
      ]);
      await b.crash();
    }, 30_000);
  });
}

// The same on one process with the DEFAULT checkpoint period (1 s) and lease (10 s): a reply killed
// after a checkpoint is shown interrupted (never streaming) within the lease and a sweep of the
// kill; one killed before its first checkpoint leaves only its question (its text lived in the dead
// process alone: docs/protocol.md), never a reply shown streaming, and a resend answers it.
describe("kill -9 and restart of the one process, default checkpoint period and lease", () => {
  const DEFAULT_LEASE_MS = 10_000;
  for (const kind of ["sqlite", "cosmos"] as const) {
    test.concurrent(`before the first checkpoint and after one (${kind})`, async () => {
      const dbPath = join(tmpdir(), `pichat-crash-default-${crypto.randomUUID()}.db`);
      const env: Record<string, string> = {
        OPENAI_BASE_URL: `${model.url}/v1`,
        OPENAI_MODEL: "m",
        CHAT_TITLES: "false",
        ...(kind === "cosmos"
          ? {
              COSMOS_ENDPOINT: cosmos.endpoint,
              COSMOS_KEY: cosmos.key,
              COSMOS_ALLOW_SELF_SIGNED_CERT: "true",
              COSMOS_DATABASE: `pichat-crash-default-${crypto.randomUUID()}`,
            }
          : {}),
      };
      const start = async () => {
        const p = await spawnServer(env, { dbPath });
        procs.push(p);
        return p;
      };
      const client = async (p: ServerProcess) => {
        const c = await connect(p.wsUrl);
        clients.push(c);
        return c;
      };
      type Shown = Message & { streaming?: boolean };
      const history = async (c: TestClient, chatId: string) =>
        (await c.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY", 30_000)).messages as Shown[];
      // Only this test's questions get the long reply (the model server is shared by concurrent tests).
      const long = `long ${kind}`;
      const cut = `cut ${kind}`;
      model.setScript((req) => (/^(long|cut) /.test(lastUserTurn(req)) ? { tokens: words(4000), delayMs: 5 } : { tokens: ["answered"] }));
      const store = kind === "cosmos" ? await openCosmosAt(env.COSMOS_DATABASE!) : openSqliteStore(dbPath);
      try {
        const a = await start();
        const [c1, c2] = [await client(a), await client(a)];
        const late = (await c1.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;
        const early = (await c2.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;
        c1.send({ type: "SEND_MESSAGE", chatId: late.id, content: long, messageId: `q-long-${kind}` });
        const lateTrace = (await c1.next((f) => f.type === "MESSAGE" && !f.end, 10_000)).traceId;
        await until(
          async () => (await store.pageMessages(late.id, { limit: 5 })).items.some((m) => m.id === lateTrace && m.content.length > 0),
          "a checkpoint of the first reply",
          10_000,
        );
        c2.send({ type: "SEND_MESSAGE", chatId: early.id, content: cut, messageId: `q-cut-${kind}` });
        const earlyTrace = (await c2.next((f) => f.type === "MESSAGE" && !f.end, 10_000)).traceId;
        await a.crash();
        const killedAt = Date.now();
        const seen = c1.frames
          .filter((f) => f.type === "MESSAGE" && f.traceId === lateTrace)
          .map((f) => f.content)
          .join("");

        const b = await start();
        const d = await client(b);
        // Before its first checkpoint: only the question, at once and from then on.
        expect((await history(d, early.id)).map((m) => [m.role, m.id])).toEqual([["user", `q-cut-${kind}`]]);
        // After one: interrupted within the lease and one sweep; never streaming after that.
        const final = await until(
          async () => {
            const r = (await history(d, late.id)).find((m) => m.id === lateTrace);
            return r && !r.streaming && r.status !== "streaming" && r;
          },
          "the checkpointed reply to be shown interrupted",
          DEFAULT_LEASE_MS * 1.5 + 5000,
        );
        const after = Date.now() - killedAt;
        console.log(`${kind}: checkpointed reply shown interrupted ${after} ms after kill -9 (lease ${DEFAULT_LEASE_MS} ms)`);
        expect(after).toBeLessThan(DEFAULT_LEASE_MS * 1.5 + 2000);
        expect(final.status).toBe("interrupted");
        expect(final.content.length).toBeGreaterThan(0);
        expect(seen.startsWith(final.content)).toBe(true);
        expect((await history(d, early.id)).some((m) => m.id === earlyTrace || m.streaming)).toBe(false);
        // The question cut short before a checkpoint is answered when sent again.
        const again = await d.request(
          { type: "SEND_MESSAGE", chatId: early.id, content: "again", messageId: `q-cut-${kind}`, requestId: "again" },
          "MESSAGE_ACCEPTED",
        );
        expect(again).toMatchObject({ duplicate: false });
        await b.crash();
      } finally {
        await store.close();
        rmSync(dbPath, { force: true });
      }
    }, 60_000);
  }
});

describe("kill -9 mid-device-message", () => {
  let peer: IotHubPeer;
  let cert: LocalhostCert;
  beforeAll(async () => {
    cert = await makeLocalhostCert();
    peer = await startIotHubPeer({ partitions: 1, tls: cert });
  });
  afterAll(async () => {
    await peer?.stop();
  });

  for (const kind of ["sqlite", "cosmos"] as const) {
    test(`the restarted server takes the claim over and the device gets exactly one full answer (${kind})`, async () => {
      const dbPath = join(tmpdir(), `pichat-crash-dev-${crypto.randomUUID()}.db`);
      const env: Record<string, string> = {
        OPENAI_BASE_URL: `${model.url}/v1`,
        OPENAI_MODEL: "m",
        CHAT_TITLES: "false",
        REPLY_CHECKPOINT_MS: String(CHECKPOINT_MS),
        REPLY_LEASE_MS: String(LEASE_MS),
        IOT_HUB_ENABLE: "true",
        EVENT_HUB_COMPATIBLE_CONN_STR: peer.eventHubConnectionString,
        IOT_HUB_CONNECTION_STRING: peer.iotHubConnectionString,
        NODE_EXTRA_CA_CERTS: cert.certPath,
        DEVICE_CLAIM_LEASE_S: "1",
        IOT_HUB_LOAD_BALANCING: "greedy",
        IOT_HUB_LOAD_BALANCING_INTERVAL_MS: "200",
        IOT_HUB_PARTITION_EXPIRY_MS: "1000",
        DEVICE_REPLY_MAX_AGE_S: "60",
        ...(kind === "cosmos"
          ? {
              COSMOS_ENDPOINT: cosmos.endpoint,
              COSMOS_KEY: cosmos.key,
              COSMOS_ALLOW_SELF_SIGNED_CERT: "true",
              COSMOS_DATABASE: `pichat-crash-dev-${crypto.randomUUID()}`,
            }
          : {}),
      };
      const running = async (p: ServerProcess) =>
        until(
          async () =>
            ((await (await fetch(`${p.httpUrl}/health`)).json()) as { services: { iot_hub: { status: string } } }).services.iot_hub
              .status === "running",
          "the device consumer to run",
          15_000,
        );
      const question = `what time is it? ${kind}`;
      const messageId = `d-${crypto.randomUUID()}`;
      model.setScript((req) =>
        lastUserTurn(req) === question ? { tokens: ["half", " an", " answer"], holdAfter: 1 } : { tokens: ["ok"] },
      );
      const a = await spawnServer(env, { dbPath });
      procs.push(a);
      await running(a);
      peer.sendTelemetry({ deviceId: "pi-crash", body: { message: question }, messageId, contentType: "application/json" });
      await model.waitHeld(1, 10_000);
      await a.crash();
      model.setScript((req) => (lastUserTurn(req) === question ? { tokens: ["the", " whole", " answer"] } : { tokens: ["ok"] }));
      model.release();

      const b = await spawnServer(env, { dbPath });
      procs.push(b);
      const c2d = await peer.waitForC2D((m) => (m.raw as { correlation_id?: unknown }).correlation_id === messageId, 20_000);
      expect(c2d.body).toMatchObject({ response: "the whole answer" });
      expect((c2d.body as { error?: string }).error).toBeUndefined();
      await b.waitLine(/device message handled.*"outcome":"answered"/, 10_000);
      // Exactly one reply reached the device, and the question is stored once.
      const toDevice = peer.c2d.filter((m) => (m.raw as { correlation_id?: unknown }).correlation_id === messageId);
      expect(toDevice).toHaveLength(1);
      const c = await connect(b.wsUrl);
      clients.push(c);
      const chats = (await c.request({ type: "GET_CHATS" }, "CHAT_LIST")).chats as { id: string; device_id?: string }[];
      const chat = chats.find((x) => x.device_id === "pi-crash")!;
      const history = (await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).messages as Message[];
      expect(history.filter((m) => m.id === messageId)).toHaveLength(1);
      expect(history.filter((m) => m.parent_id === messageId && !m.status).map((m) => m.content)).toContain("the whole answer");
      await b.crash();
      rmSync(dbPath, { force: true });
    }, 60_000);
  }
});
