import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { C2D_MAX_BYTES } from "../src/devices/parts";
import { DEADLINE_NOTE, TOO_LONG_NOTE } from "../src/devices/speaker";
import type { Store } from "../src/store/store";
import { startIotHubPeer, type C2DMessage, type IotHubPeer } from "./support/amqp-peer";
import { startCosmosServer, openTestCosmosStore, type CosmosTestServer } from "./support/cosmos-server";
import { startDeviceServer } from "./support/device-server";
import type { TestServer } from "./support/harness";
import { startSseModel, type ModelRequest, type SseModel } from "./support/sse-model";
import { makeLocalhostCert, type LocalhostCert } from "./support/tls-cert";
import { until } from "./support/until";

// Replies in parts for devices that ask for them, one message for the original client, both within
// IoT Hub's limits: the real SDKs against the local AMQP peer, the real server, SQLite and Cosmos.

setDefaultTimeout(30_000);

let cert: LocalhostCert;
let model: SseModel;
let cosmos: CosmosTestServer;

/** Scripts by question: the test's question → its tokens and pace. */
const scripts = new Map<string, { tokens: string[]; delayMs?: number; holdAfter?: number }>();
const lastUserTurn = (r: ModelRequest) => String(r.body.messages.at(-1)?.content ?? "");

beforeAll(async () => {
  [cert, model, cosmos] = await Promise.all([makeLocalhostCert(), startSseModel({ tokens: ["ok"] }), startCosmosServer()]);
  model.setScript((req) => scripts.get(lastUserTurn(req)) ?? { tokens: ["ok"] });
});
afterAll(async () => {
  model?.stop();
  await cosmos?.stop();
});

const correlationOf = (m: C2DMessage) => String((m.raw as { correlation_id?: unknown }).correlation_id ?? "");
type Body = {
  response: string;
  conversation_id: string;
  message_id: string;
  part?: number;
  last?: boolean;
  offset?: number;
  error?: string;
};
const bodyOf = (m: C2DMessage) => m.body as Body;
const bytesOf = (m: C2DMessage) => {
  const content = (m.raw.body as { content?: unknown })?.content ?? m.raw.body;
  return Buffer.isBuffer(content) ? content.length : Buffer.byteLength(String(content));
};

/** A sentence-rich reply in several scripts, as the model's tokens (words with their spaces). */
const tokensOf = (text: string) => text.match(/\S+\s*/gu)!;
const LONG_SENTENCES = [
  "Der Regen in München fällt leise.",
  "東京の空は晴れています。",
  "Ça va très bien, merci 😊!",
  "Here is a longer sentence that keeps going for a while so that the part grows past its first size.",
  "Another sentence follows, with numbers like 3.14 and 2,000 inside it.",
  "Какая хорошая погода сегодня?",
  "Then a few more words to make the reply long enough for several parts to be worth it.",
  "The end is near.",
  "Really, this is the last sentence of the reply.",
];

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`replies to devices (${kind})`, () => {
    let peer: IotHubPeer;
    let srv: TestServer;
    let store: Store | undefined;
    beforeAll(async () => {
      peer = await startIotHubPeer({ tls: cert });
      store = kind === "cosmos" ? await openTestCosmosStore(cosmos, "pichat-parts") : undefined;
      srv = await startDeviceServer({
        peer,
        cert,
        store,
        env: { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", CHAT_TITLES: "false", DEVICE_REPLY_DEADLINE_S: "2" },
      });
    });
    afterAll(async () => {
      await srv?.close();
      await peer?.stop();
    });

    const ask = (deviceId: string, body: object) => {
      // Not UUID-shaped: the SDK would send the correlation id as 16 raw bytes.
      const messageId = `q-${crypto.randomUUID()}`;
      peer.sendTelemetry({ deviceId, body, messageId, contentType: "application/json" });
      return messageId;
    };
    const toDevice = (messageId: string) => peer.c2d.filter((m) => correlationOf(m) === messageId);
    /** Every part of the reply to `messageId`, once its last one arrived, in order. */
    const partsOf = async (messageId: string, timeoutMs = 15_000) => {
      await peer.waitForC2D((m) => correlationOf(m) === messageId && bodyOf(m).last === true, timeoutMs);
      return toDevice(messageId).sort((a, b) => bodyOf(a).part! - bodyOf(b).part!);
    };
    const storedReply = async (deviceId: string, questionId: string) => {
      const chat = (await srv.store.findDeviceChat("default", deviceId))!;
      return until(
        async () => (await srv.store.listMessages(chat.id, { limit: 50 })).find((m) => m.parent_id === questionId && !m.status),
        "the reply to be stored",
      );
    };

    test("a parts device: the first part is the first sentence, sent while the model still writes; joined in order the parts are the stored reply; at most 4", async () => {
      const deviceId = `pi-parts-${crypto.randomUUID().slice(0, 8)}`;
      const text = LONG_SENTENCES.join(" ");
      const question = `tell me a lot (${deviceId})`;
      scripts.set(question, { tokens: tokensOf(text), delayMs: 15 });
      const started = Date.now();
      const id = ask(deviceId, { message: question, reply_in_parts: true });
      const first = await peer.waitForC2D((m) => correlationOf(m) === id, 10_000);
      const firstAt = Date.now();
      expect(bodyOf(first)).toMatchObject({ response: LONG_SENTENCES[0], part: 0, last: false, offset: 0 });
      const parts = await partsOf(id);
      const lastAt = Date.now();
      const stored = await storedReply(deviceId, id);
      expect(stored.content).toBe(text);
      // The first part went out long before the reply was finished (~70 tokens at 15 ms).
      expect(lastAt - firstAt).toBeGreaterThan(300);
      console.log(`parts device: first part after ${firstAt - started} ms, last after ${lastAt - started} ms, ${parts.length} messages`);
      expect(parts.map((p) => bodyOf(p).response).join("")).toBe(stored.content);
      expect(parts.length).toBeLessThanOrEqual(4);
      expect(parts.length).toBeGreaterThanOrEqual(2);
      let offset = 0;
      for (const [i, p] of parts.entries()) {
        const b = bodyOf(p);
        expect(b).toMatchObject({ part: i, last: i === parts.length - 1, offset, message_id: stored.id, conversation_id: stored.chat_id });
        expect(p.messageId).toBe(`${stored.id}:${offset}`);
        offset += [...b.response].length;
      }
    });

    test("the original client (no opt-in): one message with the whole reply, today's shape, and nothing after it", async () => {
      const deviceId = `pi-orig-${crypto.randomUUID().slice(0, 8)}`;
      const text = LONG_SENTENCES.slice(0, 4).join(" ");
      const question = `original (${deviceId})`;
      scripts.set(question, { tokens: tokensOf(text), delayMs: 5 });
      const id = ask(deviceId, { message: question, timestamp: Date.now() / 1000, device_id: deviceId, conversation: [] });
      const one = await peer.waitForC2D((m) => correlationOf(m) === id, 10_000);
      expect(Object.keys(one.body as object).sort()).toEqual(["conversation_id", "message_id", "response", "timestamp"]);
      expect(bodyOf(one).response).toBe(text);
      expect(one.messageId).toBe(bodyOf(one).message_id);
      // A later question's reply arrives, and still only one message answered the first.
      const next = ask(deviceId, { message: "ok?" });
      await peer.waitForC2D((m) => correlationOf(m) === next, 10_000);
      expect(toDevice(id)).toHaveLength(1);
    });

    test("Markdown is read naturally: no markup reaches a device, the stored reply keeps it", async () => {
      const deviceId = `pi-md-${crypto.randomUUID().slice(0, 8)}`;
      const question = `markdown (${deviceId})`;
      const md = "## Steps\n\n1. Open the **door**\n2. Say `hello`\n\n```js\nconsole.log(1)\n```\nSee [the docs](https://example.com).";
      scripts.set(question, { tokens: [md] });
      const id = ask(deviceId, { message: question });
      const one = await peer.waitForC2D((m) => correlationOf(m) === id, 10_000);
      expect(bodyOf(one).response).toBe("Steps.\n\nOpen the door.\nSay hello.\n\nI've put the code in the app.\nSee the docs.");
      expect((await storedReply(deviceId, id)).content).toBe(md);
    });

    test("a device question is asked with the device system prompt; a user's own device prompt overrides it", async () => {
      const deviceId = `pi-prompt-${crypto.randomUUID().slice(0, 8)}`;
      const id = ask(deviceId, { message: `prompt? ${deviceId}` });
      await peer.waitForC2D((m) => correlationOf(m) === id, 10_000);
      const sent = model.requests.find((r) => lastUserTurn(r) === `prompt? ${deviceId}`)!;
      expect(sent.body.messages[0].content).toBe(srv.config.DEVICE_SYSTEM_PROMPT);
      expect(srv.config.DEVICE_SYSTEM_PROMPT).toMatch(/no Markdown/);
      const browser = await srv.connect();
      const updated = await browser.request({ type: "UPDATE_SETTINGS", deviceSystemPrompt: "Speak like a pirate." }, "SETTINGS");
      expect(updated.settings.deviceSystemPrompt).toBe("Speak like a pirate.");
      const again = ask(deviceId, { message: `prompt again? ${deviceId}` });
      await peer.waitForC2D((m) => correlationOf(m) === again, 10_000);
      expect(model.requests.find((r) => lastUserTurn(r) === `prompt again? ${deviceId}`)!.body.messages[0].content).toBe(
        "Speak like a pirate.",
      );
      // A browser's question in the same chat keeps the ordinary system prompt.
      await browser.request({ type: "UPDATE_SETTINGS", deviceSystemPrompt: null }, "SETTINGS");
      browser.close();
    });

    test("a reply over 64 KB: a parts device gets more parts, each under the limit, joined = stored; a one-message device gets one cut to fit, with a spoken ending", async () => {
      const big = `${"Ünïcödé wörds and 東京 text go on. ".repeat(2600)}The end.`;
      expect(Buffer.byteLength(big)).toBeGreaterThan(90_000);
      const chunk = 4000;
      const tokens = Array.from({ length: Math.ceil(big.length / chunk) }, (_, i) => big.slice(i * chunk, (i + 1) * chunk));
      const partsDevice = `pi-bigp-${crypto.randomUUID().slice(0, 8)}`;
      const oneDevice = `pi-big1-${crypto.randomUUID().slice(0, 8)}`;
      scripts.set(`big for ${partsDevice}`, { tokens });
      scripts.set(`big for ${oneDevice}`, { tokens });
      const p = ask(partsDevice, { message: `big for ${partsDevice}`, reply_in_parts: true });
      const o = ask(oneDevice, { message: `big for ${oneDevice}` });
      const parts = await partsOf(p);
      expect(parts.length).toBeGreaterThanOrEqual(2);
      for (const m of parts) expect(bytesOf(m)).toBeLessThanOrEqual(C2D_MAX_BYTES - 1024);
      expect(parts.map((m) => bodyOf(m).response).join("")).toBe((await storedReply(partsDevice, p)).content);

      const one = await peer.waitForC2D((m) => correlationOf(m) === o, 10_000);
      expect(bytesOf(one)).toBeLessThanOrEqual(C2D_MAX_BYTES - 1024);
      const response = bodyOf(one).response;
      expect(response.endsWith(` ${TOO_LONG_NOTE}`)).toBe(true);
      const said = response.slice(0, -TOO_LONG_NOTE.length - 1);
      expect(big.startsWith(said)).toBe(true);
      expect(said.endsWith(".")).toBe(true);
      expect((await storedReply(oneDevice, o)).content).toBe(big);
    });

    test("a one-message device whose reply is not finished by DEVICE_REPLY_DEADLINE_S hears what is ready and that the rest is in the app", async () => {
      const deviceId = `pi-late-${crypto.randomUUID().slice(0, 8)}`;
      const question = `slow (${deviceId})`;
      scripts.set(question, { tokens: ["First", " sentence.", " Second", " half", " and", " more."], holdAfter: 3 });
      const started = Date.now();
      const id = ask(deviceId, { message: question });
      const one = await peer.waitForC2D((m) => correlationOf(m) === id, 10_000);
      const waited = Date.now() - started;
      expect(bodyOf(one).response).toBe(`First sentence. ${DEADLINE_NOTE}`);
      expect(waited).toBeGreaterThanOrEqual(1_500);
      model.release();
      expect((await storedReply(deviceId, id)).content).toBe("First sentence. Second half and more.");
      await until(() => srv.log.lines.find((l) => l.includes("device message handled") && l.includes(id)), "the message to be handled");
      expect(toDevice(id)).toHaveLength(1);
    });

    test("IoT Hub answering 429 and 403004: retried with backoff, every part arrives, the throttles are counted", async () => {
      const deviceId = `pi-busy-${crypto.randomUUID().slice(0, 8)}`;
      const question = `busy (${deviceId})`;
      const text = LONG_SENTENCES.slice(0, 5).join(" ");
      scripts.set(question, { tokens: tokensOf(text), delayMs: 10 });
      const before = peer.refused.length;
      peer.refuseNext("throttle", 2);
      peer.refuseNext("queue-full", 1);
      const id = ask(deviceId, { message: question, reply_in_parts: true });
      const parts = await partsOf(id);
      expect(parts.map((m) => bodyOf(m).response).join("")).toBe(text);
      expect(peer.refused.slice(before).map((r) => r.kind)).toEqual(["throttle", "throttle", "queue-full"]);
      const metrics = await (await fetch(`${srv.url}/metrics`)).text();
      expect(Number(/pichat_c2d_throttles_total\{kind="throttled"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(2);
      expect(Number(/pichat_c2d_throttles_total\{kind="queue_full"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);

      // A one-message device through a 403004 too.
      const oneDevice = `pi-busy1-${crypto.randomUUID().slice(0, 8)}`;
      peer.refuseNext("queue-full", 1);
      const o = ask(oneDevice, { message: "hello there" });
      expect(bodyOf(await peer.waitForC2D((m) => correlationOf(m) === o, 10_000)).response).toBe("ok");
      expect(metrics).toMatch(/pichat_device_first_c2d_seconds_bucket\{le="[\d.]+",mode="parts"\}/);
      expect(metrics).toMatch(/pichat_device_c2d_messages_per_reply_count\{mode="parts"\} [1-9]/);
    });
  });
}
