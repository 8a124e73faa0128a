import { describe, expect, test } from "bun:test";
import { openSqliteStore } from "../src/store/sqlite";
import { startTestServer } from "./support/harness";
import { startSseModel } from "./support/sse-model";

const TOKEN = "9b1e4c7a2f5d8e0b3a6c9f2e5d8b1a4c";
const metricValue = (text: string, series: string) => {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(" ")[1]) : undefined;
};

describe("/metrics", () => {
  test("counts connections, commands by type and outcome, model tokens and first-token time, store operations", async () => {
    const model = await startSseModel({ tokens: ["a", "b", "c"] });
    const srv = await startTestServer({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", CHAT_TITLES: "false" });
    try {
      const c = await srv.connect();
      const chat = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;
      c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "count me" });
      await c.reply(chat.id);
      await c.request({ type: "GET_CHAT_HISTORY", chatId: crypto.randomUUID() }, "CHAT_HISTORY");
      await c.request({ type: "NO_SUCH_TYPE_1" }, "X");
      await c.request({ type: "NO_SUCH_TYPE_2" }, "X");
      const res = await fetch(`${srv.url}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toContain("text/plain");
      const text = await res.text();
      expect(metricValue(text, "pichat_ws_connections")).toBe(1);
      expect(metricValue(text, 'pichat_ws_commands_total{type="CREATE_CHAT",outcome="ok"}')).toBe(1);
      expect(metricValue(text, 'pichat_ws_commands_total{type="GET_CHAT_HISTORY",outcome="CHAT_NOT_FOUND"}')).toBe(1);
      // Unknown types share one series, whatever the client sends.
      expect(metricValue(text, 'pichat_ws_commands_total{type="invalid",outcome="UNKNOWN_TYPE"}')).toBe(2);
      expect(text).not.toContain("NO_SUCH_TYPE");
      expect(metricValue(text, "pichat_model_tokens_streamed_total")).toBe(3);
      expect(metricValue(text, "pichat_model_time_to_first_token_seconds_count")).toBe(1);
      expect(metricValue(text, 'pichat_model_requests_total{outcome="ok"}')).toBe(1);
      expect(metricValue(text, 'pichat_store_operation_duration_seconds_count{op="addQuestion",outcome="ok"}')).toBe(1);
      expect(metricValue(text, "pichat_process_resident_memory_bytes")).toBeGreaterThan(0);
      c.close();
    } finally {
      await srv.close();
      model.stop();
    }
  });

  test("in production it takes API_TOKEN, or METRICS_TOKEN when set", async () => {
    const prod = await startTestServer({ ENVIRONMENT: "production", API_TOKEN: TOKEN });
    expect((await fetch(`${prod.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${prod.url}/metrics`, { headers: { Authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
    await prod.close();
    const separate = await startTestServer({ ENVIRONMENT: "production", API_TOKEN: TOKEN, METRICS_TOKEN: "metrics-token-0123456789" });
    expect((await fetch(`${separate.url}/metrics`, { headers: { Authorization: `Bearer ${TOKEN}` } })).status).toBe(401);
    expect((await fetch(`${separate.url}/metrics?token=metrics-token-0123456789`)).status).toBe(200);
    await separate.close();
  });
});

describe("probes", () => {
  test("/health/live is up while the store is down; /health/ready follows the store", async () => {
    const store = openSqliteStore(":memory:");
    const srv = await startTestServer({}, { store });
    try {
      expect((await fetch(`${srv.url}/health/ready`)).status).toBe(200);
      await store.close();
      expect((await fetch(`${srv.url}/health/live`)).status).toBe(200);
      const ready = await fetch(`${srv.url}/health/ready`);
      expect(ready.status).toBe(503);
      expect(await ready.json()).toMatchObject({ ready: false, store: false });
      expect((await fetch(`${srv.url}/health`)).status).toBe(503);
    } finally {
      await srv.close();
    }
  });
});

describe("logs", () => {
  test("every command is logged once, with its type, outcome, duration and connection (at debug when it went through, at info when refused)", async () => {
    const srv = await startTestServer();
    try {
      const c = await srv.connect();
      await c.request({ type: "GET_CHATS", requestId: "r1" }, "CHAT_LIST");
      await c.request({ type: "DELETE_CHAT", chatId: "nope" }, "CHAT_DELETED");
      const lines = srv.log.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === "ws command");
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatchObject({
        level: "debug",
        type: "GET_CHATS",
        outcome: "ok",
        connId: expect.any(String),
        durationMs: expect.any(Number),
      });
      expect(lines[1]).toMatchObject({ level: "info", type: "DELETE_CHAT", outcome: "INVALID_FRAME" });
      expect(typeof lines[0].time).toBe("string");
      c.close();
    } finally {
      await srv.close();
    }
  });
});
