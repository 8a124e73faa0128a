import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createC2DSender } from "../src/devices/c2d";
import { SORRY } from "../src/devices/handle";
import { openSqliteStore } from "../src/store/sqlite";
import { amqpTrusting, startIotHubPeer, type IotHubPeer } from "./support/amqp-peer";
import { startDeviceServer } from "./support/device-server";
import type { TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import { makeLocalhostCert, type LocalhostCert } from "./support/tls-cert";
import { until } from "./support/until";
import type { TestClient } from "./support/ws-client";

// Voice devices end to end: the real Event Hubs and IoT Hub SDKs against a local AMQP 1.0 peer,
// the real server, SQLite, and the local SSE model.

let cert: LocalhostCert;
let peer: IotHubPeer;
let model: SseModel;
let srv: TestServer;
let browser: TestClient;
const TOKENS = ["It", " is", " sunny", " today", "."];

beforeAll(async () => {
  cert = await makeLocalhostCert();
  peer = await startIotHubPeer({ tls: cert });
  model = await startSseModel({ tokens: TOKENS });
  srv = await startDeviceServer({ peer, cert, env: { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m" } });
  browser = await srv.connect();
});
afterAll(async () => {
  browser?.close();
  await srv?.close();
  await peer?.stop();
  model?.stop();
});

const ask = (deviceId: string, body: object, o: { messageId?: string; enqueuedTime?: Date } = {}) => {
  const messageId = o.messageId ?? crypto.randomUUID();
  peer.sendTelemetry({ deviceId, body, messageId, contentType: "application/json", enqueuedTime: o.enqueuedTime });
  return messageId;
};
const c2dFor = (deviceId: string, timeoutMs = 10_000) => peer.waitForC2D((m) => m.deviceId === deviceId, timeoutMs);

describe("a device question", () => {
  test("is answered by C2D, stored as two turns in the device's chat, announced to browsers", async () => {
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    const started = performance.now();
    const messageId = ask(deviceId, { message: "What's the weather like?", timestamp: Date.now() / 1000, device_id: "body-id-ignored" });
    const created = await browser.next((f) => f.type === "CHAT_CREATED" && f.chat.device_id === deviceId);
    expect(created.chat).toMatchObject({ name: deviceId, active: true, device_id: deviceId });

    const c2d = await c2dFor(deviceId);
    const ms = performance.now() - started;
    console.log(`device round trip (telemetry in → C2D out, instant model): ${ms.toFixed(1)} ms`);
    expect(c2d.body).toEqual({
      response: "It is sunny today.", conversation_id: created.chat.id,
      message_id: expect.stringMatching(/^[0-9a-f-]{36}$/), timestamp: expect.any(String),
    });
    expect(new Date((c2d.body as any).timestamp).toISOString()).toBe((c2d.body as any).timestamp);
    expect(c2d.messageId).toBe((c2d.body as any).message_id);

    const stored = await srv.store.listMessages(created.chat.id, { limit: 10 });
    expect(stored.map((m) => [m.role, m.content, m.id])).toEqual([
      ["user", "What's the weather like?", messageId],
      ["assistant", "It is sunny today.", (c2d.body as any).message_id],
    ]);
    expect(stored[0]!.device_id).toBe(deviceId);
    expect(model.requests.at(-1)!.body.messages.at(-1)).toEqual({ role: "user", content: "What's the weather like?" });
  });

  test("browsers watching the device chat see FIRST_MESSAGE, then the reply really streamed", async () => {
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    ask(deviceId, { message: "hello" });
    const { chat } = await browser.next((f) => f.type === "CHAT_CREATED" && f.chat.device_id === deviceId);
    await c2dFor(deviceId);
    const watcher = await srv.connect();
    await watcher.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
    ask(deviceId, { message: "tell me more" });
    expect(await watcher.next("FIRST_MESSAGE")).toMatchObject({ chatId: chat.id, content: "tell me more" });
    const reply = await watcher.reply(chat.id);
    expect(reply.text).toBe(TOKENS.join(""));
    expect(reply.chunks.length).toBe(TOKENS.length);
    const c2d = await peer.waitForC2D((m) => m.deviceId === deviceId && (m.body as any).message_id === reply.traceId);
    expect((c2d.body as any).conversation_id).toBe(chat.id);
    // The second question reuses the device's chat.
    expect(browser.frames.filter((f) => f.type === "CHAT_CREATED" && f.chat.device_id === deviceId)).toHaveLength(1);
    watcher.close();
  });

  test("the device's own conversation is the model's context when given", async () => {
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    ask(deviceId, { message: "and tomorrow?", conversation: [{ role: "user", content: "weather today?" }, { role: "assistant", content: "sunny" }, { role: "bogus", content: "dropped" }] });
    await c2dFor(deviceId);
    const sent = model.requests.find((r) => r.body.messages.at(-1)?.content === "and tomorrow?")!;
    expect(sent.body.messages.slice(1)).toEqual([
      { role: "user", content: "weather today?" }, { role: "assistant", content: "sunny" }, { role: "user", content: "and tomorrow?" },
    ]);
  });
});

describe("at most once", () => {
  test("a duplicate delivery of the same message id is stored and answered once", async () => {
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    const messageId = crypto.randomUUID();
    ask(deviceId, { message: "only once" }, { messageId });
    ask(deviceId, { message: "only once" }, { messageId });
    ask(deviceId, { message: "then this" });
    // The device's messages are handled in order: once "then this" is answered, the duplicate was seen.
    await peer.waitForC2D((m) => m.deviceId === deviceId && peer.c2d.filter((x) => x.deviceId === deviceId).length >= 2);
    const chat = (await srv.store.findDeviceChat(deviceId))!;
    await until(async () => (await srv.store.listMessages(chat.id, { limit: 20 })).length === 4, "both exchanges stored");
    const stored = await srv.store.listMessages(chat.id, { limit: 20 });
    expect(stored.filter((m) => m.id === messageId)).toHaveLength(1);
    expect(peer.c2d.filter((m) => m.deviceId === deviceId)).toHaveLength(2);
    expect(srv.log.lines.some((l) => l.includes("already processed") && l.includes(messageId))).toBe(true);
  });

  test("a message too old to be waited for is stored and shown, not answered", async () => {
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    const before = model.requests.length;
    ask(deviceId, { message: "are you there?" }, { enqueuedTime: new Date(Date.now() - 5 * 60_000) });
    const { chat } = await browser.next((f) => f.type === "CHAT_CREATED" && f.chat.device_id === deviceId);
    await until(async () => (await srv.store.listMessages(chat.id, { limit: 5 })).length === 1, "the stale question stored");
    ask(deviceId, { message: "fresh one" });
    const c2d = await c2dFor(deviceId);
    expect((c2d.body as any).response).toBe(TOKENS.join(""));
    expect(peer.c2d.filter((m) => m.deviceId === deviceId)).toHaveLength(1);
    expect(model.requests.length).toBe(before + 1);
    const stored = await srv.store.listMessages(chat.id, { limit: 5 });
    expect(stored.map((m) => m.content)).toEqual(["are you there?", "fresh one", TOKENS.join("")]);
  });
});

describe("bad telemetry", () => {
  test("is logged and skipped; the consumer keeps going", async () => {
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    peer.sendTelemetry({ deviceId, body: Buffer.from("not json at all"), messageId: crypto.randomUUID() });
    ask(deviceId, { nope: "no message field" });
    ask(deviceId, { message: 42 });
    ask(deviceId, { message: "valid after the junk" });
    const c2d = await c2dFor(deviceId);
    expect((c2d.body as any).response).toBe(TOKENS.join(""));
    const skipped = srv.log.lines.filter((l) => l.includes("not valid telemetry") && l.includes(deviceId));
    expect(skipped).toHaveLength(3);
    expect(peer.c2d.filter((m) => m.deviceId === deviceId)).toHaveLength(1);
  });
});

describe("C2D failures", () => {
  test("the hub refusing the reply: reply stored, error logged, consumer keeps going", async () => {
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    peer.setC2DMode("reject-not-found");
    try {
      ask(deviceId, { message: "will the reply get through?" });
      await until(() => srv.log.lines.find((l) => l.includes("could not send the reply") && l.includes(deviceId)), "the C2D failure to be logged");
    } finally {
      peer.setC2DMode("accept");
    }
    const chat = (await srv.store.findDeviceChat(deviceId))!;
    const stored = await srv.store.listMessages(chat.id, { limit: 5 });
    expect(stored.map((m) => m.role)).toEqual(["user", "assistant"]);
    ask(deviceId, { message: "and now?" });
    expect((await c2dFor(deviceId)).body).toMatchObject({ response: TOKENS.join(""), conversation_id: chat.id });
  });

  test("a model failure still answers the device, with an apology and the error code", async () => {
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    model.setScript({ status: 400 });
    try {
      ask(deviceId, { message: "break please" });
      const c2d = await c2dFor(deviceId);
      expect(c2d.body).toMatchObject({ response: SORRY, error: "MODEL_ERROR" });
    } finally {
      model.setScript({ tokens: TOKENS });
    }
  });

  test("a C2D send racing a dropped connection fails or succeeds, and never crashes the process", async () => {
    const sender = createC2DSender({ access: { connectionString: peer.iotHubConnectionString }, Transport: amqpTrusting(cert.cert), retryDelayMs: 100 });
    const reply = { response: "x", conversation_id: crypto.randomUUID(), message_id: crypto.randomUUID(), timestamp: new Date().toISOString() };
    await sender.send("race-dev", reply, { correlationId: "c", expiresInMs: 30_000 });
    peer.dropConnections();
    const outcome = await sender.send("race-dev", { ...reply, message_id: crypto.randomUUID() }, { correlationId: "c2", expiresInMs: 30_000 }).then(() => "sent", (e: Error) => e.name);
    expect(typeof outcome).toBe("string");
    await sender.close();
  });
});

describe("connection loss and restarts", () => {
  test("the peer dropping every connection: the consumer and C2D reconnect, the next question is answered", async () => {
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    peer.dropConnections();
    ask(deviceId, { message: "still there?" });
    expect((await c2dFor(deviceId, 20_000)).body).toMatchObject({ response: TOKENS.join("") });
  });

  test("/health shows the consumer running with its partitions and last event time", async () => {
    const health: any = await (await fetch(`${srv.url}/health`)).json();
    expect(health.services.iot_hub).toMatchObject({ status: "running", partitions: ["0", "1"], last_event_at: expect.any(String) });
    expect(JSON.stringify(health)).not.toContain("SharedAccessKey");
  });
});

describe("restart", () => {
  test("a restarted server resumes from its checkpoint: no re-read, no second answer", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pichat-restart-"));
    const ownPeer = await startIotHubPeer({ tls: cert });
    const env = { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m" };
    try {
      const store1 = openSqliteStore(join(dir, "db.sqlite"));
      const first = await startDeviceServer({ peer: ownPeer, cert, env, store: store1 });
      ownPeer.sendTelemetry({ deviceId: "pi-r", body: { message: "before restart" }, messageId: crypto.randomUUID(), partitionId: "0" });
      await ownPeer.waitForC2D((m) => m.deviceId === "pi-r", 10_000);
      // The checkpoint is written after the batch is handled: wait for it before stopping.
      const db = new Database(join(dir, "db.sqlite"), { readonly: true });
      await until(() => db.query<{ n: number }, []>("SELECT count(*) AS n FROM checkpoints").get()!.n > 0, "a checkpoint");
      db.close();
      await first.close();
      await store1.close();

      const attachesBefore = ownPeer.receiverAttaches.length;
      const store2 = openSqliteStore(join(dir, "db.sqlite"));
      const second = await startDeviceServer({ peer: ownPeer, cert, env, store: store2 });
      ownPeer.sendTelemetry({ deviceId: "pi-r", body: { message: "after restart" }, messageId: crypto.randomUUID(), partitionId: "0" });
      await ownPeer.waitForC2D((m) => m.deviceId === "pi-r" && ownPeer.c2d.filter((x) => x.deviceId === "pi-r").length === 2, 10_000);
      const resumed = ownPeer.receiverAttaches.slice(attachesBefore).find((a) => a.partitionId === "0")!;
      expect(resumed.filter).not.toContain("'-1'");
      expect(resumed.filter).toMatch(/x-opt-(offset|sequence-number) >/);
      expect(second.log.lines.some((l) => l.includes("already processed"))).toBe(false);
      expect(ownPeer.c2d.filter((m) => m.deviceId === "pi-r")).toHaveLength(2);
      await second.close();
      await store2.close();
    } finally {
      await ownPeer.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the C2D endpoint unreachable: the reply is stored, the error logged, the consumer keeps going", async () => {
    const ownPeer = await startIotHubPeer({ tls: cert });
    const closed = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const deadPort = closed.port;
    closed.stop(true);
    const s = await startDeviceServer({
      peer: ownPeer, cert, env: { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m" },
      iotHubConnectionString: `HostName=localhost:${deadPort};SharedAccessKeyName=service;SharedAccessKey=a2V5`,
    });
    try {
      for (const text of ["first", "second"]) ownPeer.sendTelemetry({ deviceId: "pi-x", body: { message: text }, messageId: crypto.randomUUID() });
      await until(() => s.log.lines.filter((l) => l.includes("could not send the reply")).length === 2, "both C2D failures logged", 20_000);
      const chat = (await s.store.findDeviceChat("pi-x"))!;
      const stored = await s.store.listMessages(chat.id, { limit: 10 });
      expect(stored.map((m) => [m.role, m.content])).toEqual([
        ["user", "first"], ["assistant", TOKENS.join("")], ["user", "second"], ["assistant", TOKENS.join("")],
      ]);
      expect(s.log.lines.join("\n")).not.toContain("a2V5");
    } finally {
      await s.close();
      await ownPeer.stop();
    }
  });
});
