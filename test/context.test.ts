import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { encodeChat } from "gpt-tokenizer/encoding/o200k_base";
import type { Store } from "../src/store/store";
import { startIotHubPeer, type IotHubPeer } from "./support/amqp-peer";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startDeviceServer } from "./support/device-server";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type ModelRequest, type SseModel } from "./support/sse-model";
import { makeLocalhostCert, type LocalhostCert } from "./support/tls-cert";
import type { Frame, TestClient } from "./support/ws-client";

// The history sent to the model is budgeted in tokens (MODEL_CONTEXT_TOKENS less
// MODEL_REPLY_RESERVE_TOKENS), counted with the model family's tokenizer: the system prompt, then
// the newest whole messages that fit. Nothing is ever cut in the middle. A question that cannot fit
// even alone is refused with CONTEXT_TOO_LARGE and its counts before anything is stored.
// The expected counts come from gpt-tokenizer's own chat encoding, not from our code.

const SYSTEM = "You are a test.";
const TOKENS = ["ok"];
const WINDOW = 400;
const RESERVE = 100;
const LIMIT = WINDOW - RESERVE;
type Turn = { role: "system" | "user" | "assistant"; content: string };
/** Prompt tokens of these turns as OpenAI counts them for gpt-4o (per-message overhead and reply priming included). */
const promptTokens = (turns: Turn[]) => encodeChat(turns, "gpt-4o").length;

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`context budget on ${kind}`, () => {
    let cosmos: CosmosTestServer | undefined;
    let store: Store | undefined;
    let model: SseModel;
    let small: TestServer; // a 400-token window
    let wide: TestServer; // the default window (128,000)

    beforeAll(async () => {
      model = await startSseModel({ tokens: TOKENS });
      if (kind === "cosmos") {
        cosmos = await startCosmosServer();
        store = await openTestCosmosStore(cosmos, "pichat-context");
      }
      const env = {
        OPENAI_BASE_URL: `${model.url}/v1`,
        OPENAI_MODEL: "gpt-4o",
        OPENAI_API_KEY: "sk-test",
        CHAT_TITLES: "false",
        SYSTEM_PROMPT: SYSTEM,
        MODEL_ALLOWED: "gpt-4o,gpt-4",
      };
      small = await startTestServer(
        { ...env, MODEL_CONTEXT_TOKENS: String(WINDOW), MODEL_REPLY_RESERVE_TOKENS: String(RESERVE) },
        store ? { store } : {},
      );
      wide = await startTestServer(env, store ? { store } : {});
    });
    afterAll(async () => {
      await small?.close();
      await wide?.close();
      await store?.close();
      await cosmos?.stop();
      model?.stop();
    });

    const newChat = async (c: TestClient) => (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;
    const lastRequestAbout = (content: string): ModelRequest | undefined =>
      model.requests.findLast((r) => r.body.messages.at(-1)?.content === content);
    async function ask(c: TestClient, chatId: string, content: string) {
      const accepted = await c.request(
        { type: "SEND_MESSAGE", requestId: `ask-${content.length}-${content.slice(0, 8)}`, chatId, content },
        "MESSAGE_ACCEPTED",
      );
      expect(accepted.type).toBe("MESSAGE_ACCEPTED");
      await c.reply(chatId, 20_000);
      const req = lastRequestAbout(content);
      expect(req).toBeDefined();
      return req!.body.messages as Turn[];
    }

    test("the model gets the system prompt and the newest whole messages that fit the token budget; older ones are dropped whole", async () => {
      const a = await small.connect();
      const chat = await newChat(a);
      // Each question is ~40 tokens; with the short replies, a few exchanges fill a 300-token prompt.
      const questions = Array.from(
        { length: 8 },
        (_, i) => `Question ${i + 1}: ${"tell me more about the history of tea and coffee ".repeat(4)}`,
      );
      let sent: Turn[] = [];
      for (const q of questions) {
        sent = await ask(a, chat.id, q);
        // Nothing is cut: every turn is a stored message, whole.
        expect(sent[0]).toEqual({ role: "system", content: SYSTEM });
        const stored = (await small.store.listMessages(chat.id, { limit: 100 })).map((m) => ({ role: m.role, content: m.content }));
        const kept = sent.slice(1);
        // The kept turns are the newest stored messages up to this question, in order.
        const upToQuestion = stored.slice(0, stored.findIndex((m) => m.content === q) + 1);
        expect(kept).toEqual(upToQuestion.slice(upToQuestion.length - kept.length));
        // Within the budget, and the next older message would not have fitted.
        expect(promptTokens(sent)).toBeLessThanOrEqual(LIMIT);
        const older = upToQuestion[upToQuestion.length - kept.length - 1];
        if (older) expect(promptTokens([sent[0]!, older as Turn, ...kept])).toBeGreaterThan(LIMIT);
      }
      // By the last question, history had to be dropped.
      expect(sent.length - 1).toBeLessThan(questions.length * 2 - 1);
      expect(sent.length).toBeGreaterThan(2);
    });

    test("the budget is in tokens, not characters: a 1,200-character message of 150 tokens goes whole", async () => {
      const a = await small.connect();
      const chat = await newChat(a);
      const long = "abcdefgh".repeat(150); // 1,200 characters; o200k makes about 150 tokens of it
      const sent = await ask(a, chat.id, long);
      expect(sent).toEqual([
        { role: "system", content: SYSTEM },
        { role: "user", content: long },
      ]);
      expect(promptTokens(sent)).toBeLessThanOrEqual(LIMIT);
    });

    test("a question over the window even alone is CONTEXT_TOO_LARGE with {tokens, limit}; nothing is stored or asked", async () => {
      const a = await small.connect();
      const watcher = await small.connect();
      const chat = await newChat(a);
      await watcher.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
      const fits = "a question that fits";
      await ask(a, chat.id, fits);
      const before = model.requests.length;

      const big = "word ".repeat(400); // ~400 tokens: over the 300-token limit on its own
      const need = promptTokens([
        { role: "system", content: SYSTEM },
        { role: "user", content: big },
      ]);
      expect(need).toBeGreaterThan(LIMIT);
      const err = await a.request(
        { type: "SEND_MESSAGE", requestId: "big", payload: { chatId: chat.id, message: { content: big, id: "too-big-1" } } },
        "MESSAGE_ACCEPTED",
      );
      expect(err).toMatchObject({ type: "ERROR", code: "CONTEXT_TOO_LARGE", tokens: need, limit: LIMIT, requestId: "big" });
      expect(err.error).toContain(String(need));
      expect(err.error).toContain(String(LIMIT));

      // Nothing stored (history and the store itself), nobody told, the model not asked.
      const history = (await a.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).messages as Frame[];
      expect(history.map((m) => m.content)).toEqual([fits, TOKENS.join("")]);
      expect((await small.store.listMessages(chat.id, { limit: 10 })).some((m) => m.id === "too-big-1")).toBe(false);
      expect(model.requests.length).toBe(before);
      expect(watcher.frames.some((f) => f.type === "FIRST_MESSAGE" && f.message?.id === "too-big-1")).toBe(false);

      // The chat is still usable, and a resend of the same id is refused the same way, not a duplicate.
      const again = await a.request(
        { type: "SEND_MESSAGE", payload: { chatId: chat.id, message: { content: big, id: "too-big-1" } } },
        "MESSAGE_ACCEPTED",
      );
      expect(again).toMatchObject({ type: "ERROR", code: "CONTEXT_TOO_LARGE" });
      await ask(a, chat.id, "still here?");
    });

    test("with the default window, 100,000 characters of 𝔘 (about 300,000 tokens) get CONTEXT_TOO_LARGE with the counts", async () => {
      const a = await wide.connect();
      const chat = await newChat(a);
      const text = "𝔘".repeat(100_000);
      const err = await a.request({ type: "SEND_MESSAGE", chatId: chat.id, content: text }, "MESSAGE_ACCEPTED", 30_000);
      expect(err).toMatchObject({ type: "ERROR", code: "CONTEXT_TOO_LARGE", limit: 128_000 - 4_096 });
      // The library alone takes minutes on one 100,000-character run (its merge is quadratic in a
      // run's length), so the expected figure is scaled up from 100 characters; the server counts
      // long runs in parts (src/chat/tokenizer.ts), within a token or so a part of the exact count.
      const per100 = promptTokens([{ role: "user", content: "𝔘".repeat(100) }]) - promptTokens([{ role: "user", content: "" }]);
      const expected =
        promptTokens([
          { role: "system", content: SYSTEM },
          { role: "user", content: "" },
        ]) +
        per100 * 1000;
      expect(expected).toBeGreaterThan(250_000);
      expect(Math.abs(err.tokens - expected)).toBeLessThan(expected / 100);
      expect(await wide.store.listMessages(chat.id, { limit: 10 })).toEqual([]);
    }, 60_000);

    test("the model and deployment in effect pick the tokenizer: an UPDATE_SETTINGS model of gpt-4 counts with cl100k", async () => {
      const a = await small.connect();
      const chat = await newChat(a);
      // 250 emoji: one token each in o200k (fits 300), two in cl100k (does not).
      const emoji = "😀".repeat(250);
      await a.request({ type: "UPDATE_SETTINGS", model: "gpt-4" }, "SETTINGS");
      try {
        const err = await a.request({ type: "SEND_MESSAGE", chatId: chat.id, content: emoji }, "MESSAGE_ACCEPTED");
        expect(err).toMatchObject({ type: "ERROR", code: "CONTEXT_TOO_LARGE", limit: LIMIT });
      } finally {
        await a.request({ type: "UPDATE_SETTINGS", model: null }, "SETTINGS");
      }
      expect((await ask(a, chat.id, emoji)).at(-1)).toEqual({ role: "user", content: emoji });
    });
  });
}

describe("a device's own conversation goes through the same budget", () => {
  let cert: LocalhostCert;
  let peer: IotHubPeer;
  let model: SseModel;
  let srv: TestServer;
  beforeAll(async () => {
    cert = await makeLocalhostCert();
    peer = await startIotHubPeer({ tls: cert });
    model = await startSseModel({ tokens: TOKENS });
    srv = await startDeviceServer({
      peer,
      cert,
      env: {
        OPENAI_BASE_URL: `${model.url}/v1`,
        OPENAI_MODEL: "gpt-4o",
        SYSTEM_PROMPT: SYSTEM,
        // A device's chat is asked with the device system prompt: the same one here, so the budget is the browsers'.
        DEVICE_SYSTEM_PROMPT: SYSTEM,
        MODEL_CONTEXT_TOKENS: String(WINDOW),
        MODEL_REPLY_RESERVE_TOKENS: String(RESERVE),
      },
    });
  });
  afterAll(async () => {
    await srv?.close();
    await peer?.stop();
    model?.stop();
  });

  test("the question is kept exactly, and only the newest whole turns of its conversation that fit are sent; a blank one is refused", async () => {
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    // A whitespace-only message first: refused (not stored, not answered); handled in order, before the real one.
    peer.sendTelemetry({ deviceId, body: { message: " \n\t " }, messageId: crypto.randomUUID(), contentType: "application/json" });
    const message = "  and what about tomorrow?\n";
    const conversation = Array.from({ length: 12 }, (_, i) => ({
      role: i % 2 ? "assistant" : "user",
      content: `turn ${i}: ${"it was sunny and warm all afternoon ".repeat(3)}`,
    }));
    peer.sendTelemetry({ deviceId, body: { message, conversation }, messageId: crypto.randomUUID(), contentType: "application/json" });
    const c2d = await peer.waitForC2D((m) => m.deviceId === deviceId, 20_000);
    expect((c2d.body as Frame).response).toBe(TOKENS.join(""));

    const sent = model.requests.findLast((r) => r.body.messages.at(-1)?.content === message)!.body.messages as Turn[];
    expect(sent[0]).toEqual({ role: "system", content: SYSTEM });
    expect(sent.at(-1)).toEqual({ role: "user", content: message });
    const kept = sent.slice(1, -1);
    expect(kept.length).toBeGreaterThan(0);
    expect(kept.length).toBeLessThan(conversation.length);
    expect(kept).toEqual(conversation.slice(conversation.length - kept.length) as Turn[]);
    expect(promptTokens(sent)).toBeLessThanOrEqual(LIMIT);
    expect(promptTokens([sent[0]!, conversation[conversation.length - kept.length - 1] as Turn, ...sent.slice(1)])).toBeGreaterThan(LIMIT);

    const chat = (await srv.store.listChats("default", { limit: 100 })).items.find((c) => c.device_id === deviceId)!;
    expect((await srv.store.listMessages(chat.id, { limit: 10 })).map((m) => [m.role, m.content])).toEqual([
      ["user", message],
      ["assistant", TOKENS.join("")],
    ]);
  });
});
