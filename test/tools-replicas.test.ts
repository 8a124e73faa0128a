import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startMcpServer, type McpTestServer } from "./support/mcp-server";
import { redisCommand, startRedis, type RedisServer } from "./support/redis-server";
import { startReplicas, type Replicas } from "./support/replicas";
import { startSseModel, type ModelRequest, type SseModel } from "./support/sse-model";
import { until } from "./support/until";
import { connect, type Frame, type TestClient } from "./support/ws-client";

// Tool calls seen through another replica (two server processes, one Redis, one Cosmos database):
// the frames in the same seq order, history and RESUME mid-call with the calls, STOP from the
// other replica cancelling the call where it runs.

let model: SseModel;
let mcp: McpTestServer;
let cosmos: CosmosTestServer;
let redis: RedisServer;
let r: Replicas;
const clients: TestClient[] = [];

const question = (q: ModelRequest) =>
  [...(q.body.messages as { role: string; content: string }[])].reverse().find((m) => m.role === "user")?.content ?? "";
const hasResult = (q: ModelRequest) => (q.body.messages as { role: string }[]).some((m) => m.role === "tool");

beforeAll(async () => {
  model = await startSseModel();
  mcp = await startMcpServer();
  cosmos = await startCosmosServer();
  redis = await startRedis();
  model.setScript((q) => {
    const ms = question(q) === "stop me" ? 30_000 : question(q) === "a tool first" ? 2_000 : 800;
    if (question(q) === "a tool first" && !hasResult(q))
      return { tokens: [], toolCalls: [{ id: "first", name: "calc__sleep", arguments: JSON.stringify({ ms }) }] };
    return hasResult(q)
      ? { tokens: ["Slept", " well."] }
      : { tokens: ["Sleeping. "], toolCalls: [{ id: `s-${ms}`, name: "calc__sleep", arguments: JSON.stringify({ ms }) }] };
  });
  r = await startReplicas({
    n: 2,
    redis,
    cosmos,
    env: { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", CHAT_TITLES: "false", MCP_SERVERS: JSON.stringify({ calc: mcp.url }) },
  });
  for (const p of r.replicas) {
    await until(async () => ((await (await fetch(`${p.httpUrl}/health`)).json()) as any).services.mcp.ok, "MCP connected", 10_000);
  }
}, 60_000);
afterAll(async () => {
  for (const c of clients) c.close();
  await r?.stop();
  await redis?.stop();
  await cosmos?.stop();
  await mcp?.stop();
  model?.stop();
});

const client = async (i: number) => {
  const c = await connect(r.replicas[i]!.wsUrl);
  clients.push(c);
  return c;
};
const frameOf = (f: Frame) => `${f.type}:${f.seq}:${f.call?.id ?? f.content}`;

describe("tool calls across replicas", () => {
  test("a reply that begins with a tool call: its Redis stream has an expiry from that first seq, before any heartbeat", async () => {
    const a = await client(0);
    const chatId = (await a.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat.id;
    a.send({ type: "SEND_MESSAGE", chatId, content: "a tool first" });
    const start = await a.next((f) => f.type === "TOOL_CALL_START" && f.chatId === chatId, 10_000);
    expect(start.seq).toBe(1);
    // The heartbeat renews it only every third of the 10 s lease: an expiry now came with seq 1.
    const ttl = await until(
      async () => {
        const t = await redisCommand(redis.port, "PTTL", `pichat:{c:${chatId}}:r:${start.traceId}`);
        return typeof t === "number" && t !== -2 && t;
      },
      "the reply's stream in Redis",
      2_000,
    );
    expect(ttl).toBeGreaterThan(0);
    await a.reply(chatId, 15_000);
  }, 30_000);

  test("a watcher on the other replica gets the tool frames in the same seq order; RESUME mid-call there shows the call", async () => {
    const a = await client(0);
    const b = await client(1);
    const chatId = (await a.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat.id;
    await b.request({ type: "WATCH", chatIds: [chatId] }, "WATCHING");
    a.send({ type: "SEND_MESSAGE", chatId, content: "sleep a little" });
    const seenByA = a.reply(chatId, 15_000);
    const start = await b.next((f) => f.type === "TOOL_CALL_START" && f.chatId === chatId, 10_000);
    expect(start.call).toMatchObject({ name: "calc__sleep", arguments: '{"ms":800}' });
    const resumed = await b.request({ type: "RESUME", chatId, traceId: start.traceId, fromSeq: 0 }, "MESSAGE");
    expect(resumed).toMatchObject({ content: "Sleeping. ", toolCalls: [{ id: "s-800", name: "calc__sleep" }] });
    await seenByA;
    // Every frame of the reply (not RESUME's catch-up, which carries toolCalls).
    const ofTrace = (c: TestClient) => c.frames.filter((f) => f.traceId === start.traceId && !("toolCalls" in f));
    await until(() => ofTrace(b).some((f) => f.end), "the end on the other replica");
    expect(ofTrace(b).map(frameOf)).toEqual(ofTrace(a).map(frameOf));
    const stored = (await b.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY")).messages.at(-1);
    expect(stored).toMatchObject({ content: "Sleeping. Slept well.", tool_calls: [{ id: "s-800", ok: true, result: "slept 800 ms" }] });
  }, 30_000);

  test("STOP from the other replica during a tool call cancels it where it runs; the reply is stored stopped", async () => {
    const a = await client(0);
    const b = await client(1);
    const chatId = (await a.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat.id;
    const cancelled = mcp.cancelled.length;
    a.send({ type: "SEND_MESSAGE", chatId, content: "stop me" });
    const start = await a.next((f) => f.type === "TOOL_CALL_START" && f.chatId === chatId, 10_000);
    await b.request({ type: "WATCH", chatIds: [chatId] }, "WATCHING");
    const stopped = await b.request({ type: "STOP_GENERATION", chatId }, "GENERATION_STOPPED", 10_000);
    expect(stopped).toMatchObject({ type: "GENERATION_STOPPED", traceId: start.traceId });
    await mcp.until(() => mcp.cancelled.length > cancelled);
    const end = await a.next((f) => f.type === "MESSAGE" && f.end && f.traceId === start.traceId);
    expect(end.reason).toBe("stopped");
    const stored = (await b.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY")).messages.at(-1);
    expect(stored).toMatchObject({ status: "stopped", tool_calls: [{ id: "s-30000", ok: false, error: "cancelled" }] });
  }, 30_000);
});
