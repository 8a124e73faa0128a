import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { OFFLINE_LABEL } from "../src/model/offline";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import { until } from "./support/until";

// Both model paths through the real `openai` client against a local SSE server, and the
// failures a real model service produces.

let model: SseModel;
beforeAll(async () => {
  model = await startSseModel({ tokens: ["Hi", " there"] });
});
afterAll(() => model.stop());

async function withServer(env: Record<string, string>, fn: (s: TestServer) => Promise<void>) {
  const s = await startTestServer(env);
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

const openaiEnv = () => ({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", MODEL_TIMEOUT_MS: "400" });

async function ask(s: TestServer, content = "question") {
  const c = await s.connect();
  const chat = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;
  c.send({ type: "SEND_MESSAGE", chatId: chat.id, content });
  return { c, chat };
}

describe("Azure OpenAI path", () => {
  test("uses the deployment URL, api-version and api-key header, and streams", async () => {
    model.setScript({ tokens: ["Azure", " says", " hi"] });
    await withServer(
      {
        AZURE_OPENAI_ENDPOINT: model.url,
        AZURE_OPENAI_KEY: "azure-secret-key",
        AZURE_OPENAI_DEPLOYMENT_NAME: "gpt-dep",
        AZURE_OPENAI_API_VERSION: "2024-10-21",
      },
      async (s) => {
        const { c, chat } = await ask(s);
        expect((await c.reply(chat.id)).text).toBe("Azure says hi");
        const req = model.requests.at(-1)!;
        expect(req.path).toBe("/openai/deployments/gpt-dep/chat/completions");
        expect(new URL(req.url).searchParams.get("api-version")).toBe("2024-10-21");
        expect(req.headers["api-key"]).toBe("azure-secret-key");
        const health: any = await (await fetch(`${s.url}/health`)).json();
        expect(health.services.model).toMatchObject({ kind: "azure-openai", name: "gpt-dep", ok: true });
        c.close();
      },
    );
  });
});

describe("failures", () => {
  test("the model dropping mid-stream: end:true, then ERROR; the partial text is stored as incomplete", async () => {
    model.setScript({ tokens: ["one", " two", " three", " four"], dropAfter: 3, delayMs: 5 });
    await withServer(openaiEnv(), async (s) => {
      const { c, chat } = await ask(s);
      const r = await c.reply(chat.id);
      // Bytes in flight when the connection dies may be lost; what the client saw is what is kept.
      expect(r.text.length).toBeGreaterThan(0);
      expect("one two three four".startsWith(r.text)).toBe(true);
      expect(r.text).not.toBe("one two three four");
      expect(r.end).toMatchObject({ end: true, content: "", reason: "error" });
      const err = await c.next("ERROR");
      expect(err).toMatchObject({ code: "MODEL_ERROR", chatId: chat.id, traceId: r.traceId });
      const stored = await s.store.listMessages(chat.id, { limit: 10 });
      expect(stored.map((m) => [m.role, m.content, m.status])).toEqual([
        ["user", "question", undefined],
        ["assistant", r.text, "incomplete"],
      ]);
      const health: any = await (await fetch(`${s.url}/health`)).json();
      expect(health.status).toBe("degraded");
      expect(health.services.model.ok).toBe(false);
      // The connection is fine and the next request works.
      model.setScript({ tokens: ["fine"] });
      c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "again" });
      expect((await c.reply(chat.id)).text).toBe("fine");
      c.close();
    });
  });

  test("an HTTP error from the model: ERROR MODEL_ERROR, the question kept, no empty reply stored", async () => {
    model.setScript({ status: 500 });
    // The client retries a 500 once after a back-off; give it room before the idle timeout.
    await withServer({ ...openaiEnv(), MODEL_TIMEOUT_MS: "10000" }, async (s) => {
      const { c, chat } = await ask(s);
      const r = await c.reply(chat.id);
      expect(r.text).toBe("");
      const err = await c.next("ERROR");
      expect(err.code).toBe("MODEL_ERROR");
      expect(err.error).toContain("500");
      const stored = await s.store.listMessages(chat.id, { limit: 10 });
      expect(stored.map((m) => m.role)).toEqual(["user"]);
      c.close();
    });
  });

  test("a model that goes silent mid-stream times out: MODEL_TIMEOUT, upstream aborted, partial kept", async () => {
    model.setScript({ tokens: ["slow", " and", " stuck"], hangAfter: 1 });
    await withServer(openaiEnv(), async (s) => {
      const { c, chat } = await ask(s);
      const r = await c.reply(chat.id);
      expect(r.text).toBe("slow");
      expect((await c.next("ERROR")).code).toBe("MODEL_TIMEOUT");
      await model.waitForAbort();
      const stored = await s.store.listMessages(chat.id, { limit: 10 });
      expect(stored[1]).toMatchObject({ role: "assistant", content: "slow", status: "incomplete" });
      c.close();
    });
  });

  test("a model that accepts the request but sends nothing times out before the first chunk: MODEL_TIMEOUT, upstream aborted, nothing stored for the reply", async () => {
    // hangAfter 0: the stream opens (headers, the role chunk) and then no content ever comes.
    // silent: not even the response headers come.
    for (const script of [{ tokens: ["never"], hangAfter: 0 }, { silent: true }]) {
      model.setScript(script);
      await withServer(openaiEnv(), async (s) => {
        const upstream = model.requests.length;
        const started = performance.now();
        const { c, chat } = await ask(s);
        const r = await c.reply(chat.id);
        const took = performance.now() - started;
        expect(r.chunks).toEqual([]);
        expect(r.end).toMatchObject({ end: true, content: "", seq: 1, reason: "error" });
        const err = await c.next("ERROR");
        expect(err).toMatchObject({ code: "MODEL_TIMEOUT", chatId: chat.id, traceId: r.traceId });
        expect(err.requestId).toBeUndefined();
        // Cut off by MODEL_TIMEOUT_MS (400), not by anything slower.
        expect(took).toBeGreaterThanOrEqual(390);
        expect(took).toBeLessThan(5_000);
        await until(() => model.requests[upstream]?.aborted, "the silent model request to be aborted upstream", 5_000);
        const stored = await s.store.listMessages(chat.id, { limit: 10 });
        expect(stored.map((m) => [m.role, m.content])).toEqual([["user", "question"]]);
        c.close();
      });
    }
  });

  test("model errors never leak the API key: not to the client, not in /health, not in the logs", async () => {
    model.setScript({ status: 401 });
    await withServer({ ...openaiEnv(), OPENAI_API_KEY: "sk-very-secret-value" }, async (s) => {
      const { c, chat } = await ask(s);
      await c.reply(chat.id);
      const err = await c.next("ERROR");
      expect(err.code).toBe("MODEL_ERROR");
      expect(JSON.stringify(c.frames)).not.toContain("sk-very-secret-value");
      const health = await (await fetch(`${s.url}/health`)).text();
      expect(health).not.toContain("sk-very-secret-value");
      // The test logger redacts nothing (production's does), so this sees what the code itself put in
      // the lines: the failure is logged (the check looks at real lines), and never with the key.
      const failure = s.log.lines.filter((l) => l.includes("model reply failed") && l.includes(chat.id));
      expect(failure).toHaveLength(1);
      expect(s.log.lines.join("\n")).not.toContain("sk-very-secret-value");
      expect(s.log.lines.join("\n")).not.toContain("[redacted]");
      c.close();
    });
  });
});

describe("offline responder", () => {
  test("with no model configured the whole flow works and says it is offline", async () => {
    await withServer({}, async (s) => {
      const { c, chat } = await ask(s, "ping");
      const r = await c.reply(chat.id);
      expect(r.text.startsWith(OFFLINE_LABEL)).toBe(true);
      expect(r.text).toContain('"ping"');
      expect(r.chunks.length).toBeGreaterThan(3);
      const health: any = await (await fetch(`${s.url}/health`)).json();
      expect(health.services.model).toMatchObject({ kind: "offline", ok: true });
      c.close();
    });
  });
});
