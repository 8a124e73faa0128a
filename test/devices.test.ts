import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SORRY } from "../src/devices/handle";
import { openSqliteStore } from "../src/store/sqlite";
import { startIotHubPeer, type IotHubPeer } from "./support/amqp-peer";
import { startDeviceServer } from "./support/device-server";
import type { TestServer } from "./support/harness";
import { createHolds } from "./support/held-model";
import { startSseModel, type SseModel } from "./support/sse-model";
import { makeLocalhostCert, type LocalhostCert } from "./support/tls-cert";
import { until, within } from "./support/until";
import { addUser } from "./support/users";
import type { TestClient } from "./support/ws-client";

// Voice devices end to end: the real Event Hubs and IoT Hub SDKs against a local AMQP 1.0 peer,
// the real server, SQLite, and the local SSE model.

let cert: LocalhostCert;
let peer: IotHubPeer;
let model: SseModel;
let srv: TestServer;
let browser: TestClient;
const TOKENS = ["It", " is", " sunny", " today", "."];
/** Holds a reply in flight (by its question) for the tests where a device and a browser contend for a chat. */
const holds = createHolds();

beforeAll(async () => {
  cert = await makeLocalhostCert();
  peer = await startIotHubPeer({ tls: cert });
  model = await startSseModel({ tokens: TOKENS });
  srv = await startDeviceServer({ peer, cert, env: { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m" }, wrapModel: holds.wrap });
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
      response: "It is sunny today.",
      conversation_id: created.chat.id,
      message_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      timestamp: expect.any(String),
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
    ask(deviceId, {
      message: "and tomorrow?",
      conversation: [
        { role: "user", content: "weather today?" },
        { role: "assistant", content: "sunny" },
        { role: "bogus", content: "dropped" },
      ],
    });
    await c2dFor(deviceId);
    const sent = model.requests.find((r) => r.body.messages.at(-1)?.content === "and tomorrow?")!;
    expect(sent.body.messages.slice(1)).toEqual([
      { role: "user", content: "weather today?" },
      { role: "assistant", content: "sunny" },
      { role: "user", content: "and tomorrow?" },
    ]);
  });
});

describe("a device and a browser in one chat", () => {
  test("one reply at a time: a browser's question during the device's reply waits its turn (queued), the device's next question during a browser's reply waits too; browser replies never go to the device", async () => {
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    const c2dCount = () => peer.c2d.filter((m) => m.deviceId === deviceId).length;
    const asked = (q: string) => model.requests.filter((r) => r.body.messages.at(-1)?.content === q).length;
    const deviceFirst = holds.hold({ question: "device asks first" });
    const browserReply = holds.hold({ question: "browser asks" });
    const tab = await srv.connect();
    try {
      // 1. The device's reply is held: a browser's question is stored at once and waits its turn.
      ask(deviceId, { message: "device asks first" });
      const { chat } = await browser.next((f) => f.type === "CHAT_CREATED" && f.chat.device_id === deviceId);
      await within(deviceFirst.reached, 10_000, "the device's reply to be held");
      const queued = await tab.request(
        { type: "SEND_MESSAGE", requestId: "me-too", chatId: chat.id, content: "me too" },
        "MESSAGE_ACCEPTED",
      );
      expect(queued).toMatchObject({ type: "MESSAGE_ACCEPTED", duplicate: false, queued: true, requestId: "me-too" });
      expect((await srv.store.listMessages(chat.id, { limit: 10 })).map((m) => m.content)).toContain("me too");
      expect(asked("me too")).toBe(0);
      deviceFirst.release();
      const firstC2D = await c2dFor(deviceId);
      expect((firstC2D.body as any).response).toBe(TOKENS.join(""));
      // Then the browser's question is answered, to browsers only.
      const meToo = await tab.next((f) => f.type === "MESSAGE" && f.end && f.traceId === queued.traceId);
      expect(meToo.reason).toBeUndefined();
      expect(asked("me too")).toBe(1);

      // 2. A browser's reply is held: the device's next question is stored and shown, but not answered.
      const mine = await tab.request(
        { type: "SEND_MESSAGE", requestId: "mine", chatId: chat.id, content: "browser asks" },
        "MESSAGE_ACCEPTED",
      );
      expect(mine).toMatchObject({ type: "MESSAGE_ACCEPTED", queued: false });
      await within(browserReply.reached, 5_000, "the browser's reply to be held");
      ask(deviceId, { message: "device asks again" });
      await tab.next((f) => f.type === "FIRST_MESSAGE" && f.chatId === chat.id && f.content === "device asks again", 10_000);
      expect(asked("device asks again")).toBe(0);
      expect(c2dCount()).toBe(1);
      expect(srv.chat.replies.get(chat.id)?.traceId).toBe(mine.traceId);
      browserReply.release();

      const browserEnd = await tab.next((f) => f.type === "MESSAGE" && f.end && f.traceId === mine.traceId);
      expect(browserEnd.reason).toBeUndefined();
      // Then the device's question is answered, to the device.
      const secondC2D = await peer.waitForC2D((m) => m.deviceId === deviceId && m !== firstC2D);
      expect(secondC2D.body).toMatchObject({ response: TOKENS.join(""), conversation_id: chat.id });
      const stored = await srv.store.listMessages(chat.id, { limit: 10 });
      expect(stored.map((m) => [m.role, m.content, m.device_id])).toEqual([
        ["user", "device asks first", deviceId],
        ["assistant", TOKENS.join(""), deviceId],
        ["user", "me too", undefined],
        ["assistant", TOKENS.join(""), undefined],
        ["user", "browser asks", undefined],
        ["assistant", TOKENS.join(""), undefined],
        ["user", "device asks again", deviceId],
        ["assistant", TOKENS.join(""), deviceId],
      ]);
      expect([stored[3]!.id, stored[5]!.id]).toEqual([queued.traceId, mine.traceId]);
      expect(stored[7]!.id).toBe((secondC2D.body as any).message_id);
      // Exactly one C2D per device question; the browsers' replies went to browsers only.
      expect(c2dCount()).toBe(2);
      expect(tab.frames.filter((f) => f.type === "ERROR")).toEqual([]);
    } finally {
      deviceFirst.release();
      browserReply.release();
      tab.close();
    }
  });
});

describe("one effect per message, however often it is delivered", () => {
  test("a duplicate delivery of the same message id is stored and answered once", async () => {
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    const messageId = crypto.randomUUID();
    ask(deviceId, { message: "only once" }, { messageId });
    ask(deviceId, { message: "only once" }, { messageId });
    ask(deviceId, { message: "then this" });
    // The device's messages are handled in order: once "then this" is answered, the duplicate was seen.
    await peer.waitForC2D((m) => m.deviceId === deviceId && peer.c2d.filter((x) => x.deviceId === deviceId).length >= 2);
    const chat = (await srv.store.findDeviceChat("default", deviceId))!;
    await until(async () => (await srv.store.listMessages(chat.id, { limit: 20 })).length === 4, "both exchanges stored");
    const stored = await srv.store.listMessages(chat.id, { limit: 20 });
    expect(stored.filter((m) => m.id === messageId)).toHaveLength(1);
    expect(peer.c2d.filter((m) => m.deviceId === deviceId)).toHaveLength(2);
    expect(srv.log.lines.some((l) => l.includes("already handled") && l.includes(messageId))).toBe(true);
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
      await until(
        () => srv.log.lines.find((l) => l.includes("could not send the reply") && l.includes(deviceId)),
        "the C2D failure to be logged",
      );
    } finally {
      peer.setC2DMode("accept");
    }
    const chat = (await srv.store.findDeviceChat("default", deviceId))!;
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

  test("spend: a device's answer is a usage record of its owner (kind device); over the owner's budget the device hears an apology with BUDGET_EXCEEDED, nothing asked or stored", async () => {
    const owner = await addUser(srv.store);
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    await srv.store.assignDevice(deviceId, owner.id);
    ask(deviceId, { message: "count me" });
    const answered = await c2dFor(deviceId);
    const replyId = (answered.body as any).message_id;
    const [record] = await until(async () => {
      const r = await srv.store.listUsage({ userId: owner.id, since: "2000-01-01T00:00:00.000Z" });
      return r.length === 1 && !r[0]!.estimated && r;
    }, "the device answer's usage record, final");
    expect(record).toMatchObject({ kind: "device", user_id: owner.id, message_id: replyId, model: "m" });

    const poor = await addUser(srv.store);
    const other = `pi-${crypto.randomUUID().slice(0, 8)}`;
    await srv.store.assignDevice(other, poor.id);
    await srv.store.setTokensPerDay(poor.id, 1);
    const asked = model.requests.length;
    ask(other, { message: "anything?" });
    expect((await c2dFor(other)).body).toMatchObject({ response: SORRY, error: "BUDGET_EXCEEDED" });
    expect(model.requests.length).toBe(asked);
    const chat = await srv.store.findDeviceChat(poor.id, other);
    expect(chat && (await srv.store.listMessages(chat.id, { limit: 5 }))).toEqual([]);
  });

  // azure-iothub 1.16.6 once overflowed the stack formatting a NotConnectedError inside a socket
  // handler, taking the process down (src/devices/c2d.ts guards it). A crash like that escapes any
  // promise, so the race runs in its own process: "never crashes" means it prints its outcome,
  // sends again once reconnected, and exits 0 with nothing on stderr about a crash.
  test("a C2D send racing a dropped connection (cut mid-send) fails or succeeds, and never crashes the process", async () => {
    const child = Bun.spawn([process.execPath, "-e", C2D_RACE], {
      env: { ...process.env, REPO: join(import.meta.dir, ".."), CONNECTION_STRING: peer.iotHubConnectionString, CA: cert.cert, DEBUG: "" },
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    });
    const lines: string[] = [];
    const stdout = (async () => {
      let buf = "";
      for await (const chunk of child.stdout) {
        buf += new TextDecoder().decode(chunk);
        let i: number;
        while ((i = buf.indexOf("\n")) >= 0) lines.push(buf.slice(0, i)), (buf = buf.slice(i + 1));
      }
    })();
    let err = "";
    const stderr = (async () => {
      for await (const chunk of child.stderr) err += new TextDecoder().decode(chunk);
    })();
    const output = () => `stdout: ${lines.join(" | ")}; stderr: ${err.slice(-600)}`;
    try {
      await until(() => lines.includes("first sent") || child.exitCode !== null, "the child's first C2D send", 10_000).catch((e) => {
        throw new Error(`${e.message}; ${output()}`);
      });
      expect(lines).toContain("first sent");
      // The next C2D message is dropped mid-send: the connection dies with the send outstanding.
      peer.setC2DMode("drop-once");
      child.stdin.write("go\n");
      await child.stdin.flush();
      const code = await within(child.exited, 20_000, () => `the race process to exit (${output()})`);
      await Promise.all([stdout, stderr]);
      expect({ code, err: err.split("\n").filter((l) => /RangeError|call stack|uncaught|panic/i.test(l)) }).toEqual({ code: 0, err: [] });
      const result = JSON.parse(lines.at(-1)!);
      // Sent (the client reconnected in time) or refused with the SDK's connection error: never anything else.
      expect(["sent", "NotConnectedError"]).toContain(result.outcome);
      // And the sender is usable afterwards: the next send went out.
      expect(result.after).toBe("sent");
      await peer.waitForC2D((m) => m.deviceId === "race-dev" && (m.body as { response?: string }).response === "after the race");
      console.log(`C2D race: ${result.outcome}, then ${result.after}`);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });
});

/** The C2D race, run with `bun -e`: send, wait for the test to drop the connection, send again, then once more. */
const C2D_RACE = `
const { createC2DSender } = await import(process.env.REPO + "/src/devices/c2d.ts");
const { amqpTrusting } = await import(process.env.REPO + "/test/support/amqp-peer.ts");
const sender = createC2DSender({ access: { connectionString: process.env.CONNECTION_STRING }, Transport: amqpTrusting(process.env.CA), retryDelayMs: 100 });
const reply = (response) => ({ response, conversation_id: crypto.randomUUID(), message_id: crypto.randomUUID(), timestamp: new Date().toISOString() });
await sender.send("race-dev", reply("x"), { correlationId: "c", expiresInMs: 30000 });
console.log("first sent");
for await (const line of console) break;
const outcome = await sender.send("race-dev", reply("raced"), { correlationId: "c2", expiresInMs: 30000 }).then(() => "sent", (e) => e.name);
const after = await sender.send("race-dev", reply("after the race"), { correlationId: "c3", expiresInMs: 30000 }).then(() => "sent", (e) => e.name);
console.log(JSON.stringify({ outcome, after }));
await sender.close();
`;

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
      expect(second.log.lines.some((l) => l.includes("already handled"))).toBe(false);
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
      peer: ownPeer,
      cert,
      env: { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m" },
      iotHubConnectionString: `HostName=localhost:${deadPort};SharedAccessKeyName=service;SharedAccessKey=a2V5`,
    });
    try {
      for (const text of ["first", "second"])
        ownPeer.sendTelemetry({ deviceId: "pi-x", body: { message: text }, messageId: crypto.randomUUID() });
      await until(() => s.log.lines.filter((l) => l.includes("could not send the reply")).length === 2, "both C2D failures logged", 20_000);
      const chat = (await s.store.findDeviceChat("default", "pi-x"))!;
      const stored = await s.store.listMessages(chat.id, { limit: 10 });
      expect(stored.map((m) => [m.role, m.content])).toEqual([
        ["user", "first"],
        ["assistant", TOKENS.join("")],
        ["user", "second"],
        ["assistant", TOKENS.join("")],
      ]);
      expect(s.log.lines.join("\n")).not.toContain("a2V5");
    } finally {
      await s.close();
      await ownPeer.stop();
    }
  });
});
