import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { startMcpServer, type McpTestServer } from "./support/mcp-server";
import { startSseModel, type ModelRequest, type Script, type SseModel } from "./support/sse-model";
import { until } from "./support/until";
import type { Frame, TestClient } from "./support/ws-client";

// Tools in replies, end to end: the real server, the openai client against the local SSE model
// streaming tool calls as Azure OpenAI does, a real MCP server (the SDK's) on loopback, both stores.

let model: SseModel;
let mcp: McpTestServer;
let cosmos: CosmosTestServer;
let cosmosStore: Store;
const MCP_TOKEN = "mcp-secret-token-0123456789";

beforeAll(async () => {
  model = await startSseModel({ tokens: ["ok"] });
  mcp = await startMcpServer({ token: MCP_TOKEN });
  cosmos = await startCosmosServer();
  cosmosStore = await openTestCosmosStore(cosmos, "pichat-tools");
});
afterAll(async () => {
  await cosmosStore?.close();
  await cosmos?.stop();
  await mcp?.stop();
  model?.stop();
});

const env = () => ({
  OPENAI_BASE_URL: `${model.url}/v1`,
  OPENAI_MODEL: "gpt-4o",
  CHAT_TITLES: "false",
  TOOL_MAX_ROUNDS: "3",
  TOOL_TIMEOUT_MS: "3000",
  TOOL_RESULT_MAX_CHARS: "5000",
  REPLY_CHECKPOINT_MS: "50",
  MCP_SERVERS: JSON.stringify({ calc: { url: mcp.url, headers: { Authorization: `Bearer ${MCP_TOKEN}` } } }),
});

type Msg = {
  role: string;
  content: string | null;
  tool_calls?: { id: string; type?: string; function: { name: string; arguments: string } }[];
  tool_call_id?: string;
};
const messages = (r: ModelRequest): Msg[] => r.body.messages;
const question = (r: ModelRequest) =>
  messages(r).find((m) => m.role === "user" && !String(m.content).startsWith("[tool result]"))?.content ?? "";
const lastQuestion = (r: ModelRequest) =>
  [...messages(r)].reverse().find((m) => m.role === "user" && !String(m.content).startsWith("[tool result]"))?.content ?? "";
const toolTurns = (r: ModelRequest) => messages(r).filter((m) => m.role === "tool");

/** Scripts keyed by the question: `first` answers the request without tool results, `then` the ones with. */
const routes = new Map<string, (r: ModelRequest, round: number) => Script>();
function route(q: string, f: (r: ModelRequest, round: number) => Script) {
  routes.set(q, f);
}
const requestsFor = (q: string) => model.requests.filter((r) => lastQuestion(r) === q);

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`tools in replies (${kind})`, () => {
    let srv: TestServer;
    let c: TestClient;
    beforeAll(async () => {
      model.setScript((r) => {
        const q = lastQuestion(r);
        const f = routes.get(q.replace(/ #\w+$/, ""));
        const round = messages(r).filter((m) => m.role === "assistant" && m.tool_calls).length;
        return f ? f(r, round) : { tokens: ["plain"] };
      });
      srv = await startTestServer(env(), kind === "cosmos" ? { store: cosmosStore } : {});
      c = await srv.connect();
      await until(async () => ((await (await fetch(`${srv.url}/health`)).json()) as any).services.mcp.ok, "the MCP server connected");
    });
    afterAll(async () => {
      await srv?.close();
    });
    const newChat = async () => (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat.id as string;
    const tag = () => `#${kind}${Math.floor(Math.random() * 1e9)}`;
    /** Every frame of one reply, in arrival order, up to its end. */
    async function replyFrames(chatId: string, timeoutMs = 10_000) {
      const out: Frame[] = [];
      for (;;) {
        const f = await c.next((x) => x.chatId === chatId && ["MESSAGE", "TOOL_CALL_START", "TOOL_CALL_END"].includes(x.type), timeoutMs);
        out.push(f);
        if (f.type === "MESSAGE" && f.end) return out;
      }
    }
    const history = async (chatId: string) => (await c.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY")).messages as any[];

    test("what time is it: current_time in the user's time zone, frames in seq order, stored with the reply", async () => {
      route("what time is it?", (r, round) =>
        round === 0
          ? { tokens: [], toolCalls: [{ id: "call_now", name: "current_time", arguments: "{}" }], argPiece: 1 }
          : {
              tokens: [
                "It is ",
                JSON.parse(toolTurns(r)[0]!.content!).time.slice(0, 5),
                " in ",
                JSON.parse(toolTurns(r)[0]!.content!).timeZone,
              ],
            },
      );
      expect((await c.request({ type: "UPDATE_SETTINGS", timeZone: "Asia/Tokyo" }, "SETTINGS")).settings.timeZone).toBe("Asia/Tokyo");
      const bad = await c.request({ type: "UPDATE_SETTINGS", timeZone: "Mars/Olympus_Mons" }, "SETTINGS");
      expect(bad).toMatchObject({ type: "ERROR", code: "INVALID_FRAME" });
      expect(bad.error).toContain("timeZone");
      const chatId = await newChat();
      c.send({ type: "SEND_MESSAGE", chatId, content: "what time is it?" });
      const frames = await replyFrames(chatId);
      expect(frames.map((f) => f.type)).toEqual([
        "TOOL_CALL_START",
        "TOOL_CALL_END",
        "MESSAGE",
        "MESSAGE",
        "MESSAGE",
        "MESSAGE",
        "MESSAGE",
      ]);
      const seqs = frames.map((f) => f.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      expect(new Set(seqs).size).toBe(seqs.length);
      expect(frames[0]).toMatchObject({ call: { id: "call_now", name: "current_time", arguments: "{}" }, seq: 1 });
      const end = frames[1]!.call;
      expect(end).toMatchObject({ id: "call_now", ok: true });
      const now = JSON.parse(end.result);
      const tokyo = new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Tokyo", year: "numeric", month: "2-digit", day: "2-digit" }).format(
        new Date(),
      );
      expect(now).toMatchObject({ timeZone: "Asia/Tokyo", utcOffset: "+09:00", date: tokyo });
      const text = frames
        .filter((f) => f.type === "MESSAGE" && !f.end)
        .map((f) => f.content)
        .join("");
      expect(text).toBe(`It is ${now.time.slice(0, 5)} in Asia/Tokyo`);
      // The model's second request carries the call and its result, linked by id.
      const [first, second] = requestsFor("what time is it?").slice(-2);
      expect(first!.body.tools.map((t: any) => t.function.name)).toEqual(
        expect.arrayContaining(["current_time", "date_add", "days_between", "calc__add", "calc__sleep"]),
      );
      const asked = messages(second!).find((m) => m.tool_calls)!;
      expect(asked.tool_calls).toEqual([{ id: "call_now", type: "function", function: { name: "current_time", arguments: "{}" } }]);
      expect(toolTurns(second!)).toEqual([{ role: "tool", tool_call_id: "call_now", content: end.result }]);
      // Stored: history shows the calls with the reply.
      const stored = (await history(chatId)).at(-1)!;
      expect(stored).toMatchObject({
        role: "assistant",
        content: text,
        tool_calls: [{ id: "call_now", name: "current_time", ok: true, result: end.result }],
      });
      expect(stored.status).toBeUndefined();
      await c.request({ type: "UPDATE_SETTINGS", timeZone: null }, "SETTINGS");
    });

    test("one round, four calls in parallel: add, a failing tool, an unknown tool, arguments off the schema; all are results, the reply completes", async () => {
      route("parallel", (r, round) =>
        round === 0
          ? {
              tokens: ["Checking. "],
              toolCalls: [
                { id: "a", name: "calc__add", arguments: '{"a": 19, "b": 23}' },
                { id: "b", name: "calc__fail", arguments: "{}" },
                { id: "c", name: "calc__nope", arguments: "{}" },
                { id: "d", name: "calc__add", arguments: '{"a": "x"}' },
              ],
              argPiece: 3,
            }
          : {
              tokens: [
                toolTurns(r)
                  .map((t) => t.content!.slice(0, 12))
                  .join("|"),
              ],
            },
      );
      const chatId = await newChat();
      const before = mcp.calls.length;
      c.send({ type: "SEND_MESSAGE", chatId, content: "parallel" });
      const frames = await replyFrames(chatId);
      const ends = frames.filter((f) => f.type === "TOOL_CALL_END").map((f) => f.call);
      expect(Object.fromEntries(ends.map((e) => [e.id, [e.ok, e.error ?? null]]))).toEqual({
        a: [true, null],
        b: [false, "failed"],
        c: [false, "unknown_tool"],
        d: [false, "invalid_arguments"],
      });
      // Only the valid calls reached the server.
      expect(mcp.calls.slice(before).map((x) => x.name)).toEqual(expect.arrayContaining(["add", "fail"]));
      expect(mcp.calls.length - before).toBe(2);
      const second = requestsFor("parallel").at(-1)!;
      expect(toolTurns(second).map((t) => t.tool_call_id)).toEqual(["a", "b", "c", "d"]);
      expect(toolTurns(second)[0]!.content).toBe("42");
      const end = frames.at(-1)!;
      expect(end.reason).toBeUndefined();
      const stored = (await history(chatId)).at(-1)!;
      expect(stored.content.startsWith("Checking. 42|Error: ")).toBe(true);
      expect(stored.tool_calls.map((t: any) => t.id)).toEqual(["a", "b", "c", "d"]);
      {
        // Found by what a tool returned: "always" is only in the fail tool's result, not in the text
        // (on Cosmos by the scan: the test server has no full-text search).
        expect(stored.content).not.toContain("always");
        const found = await c.request({ type: "SEARCH", query: "always does" }, "SEARCH_RESULTS");
        expect(found.hits.map((h: any) => h.messageId)).toContain(stored.id);
        const hit = found.hits.find((h: any) => h.messageId === stored.id);
        expect(hit.snippet).toContain("always does");
      }
    });

    test("at most 16 calls run in one round: the rest get an error result, and every call is answered", async () => {
      route("many", (r, round) =>
        round === 0
          ? {
              tokens: [],
              toolCalls: Array.from({ length: 18 }, (_, i) => ({
                id: `m${i}`,
                name: "days_between",
                arguments: `{"to":"2030-01-${String(i + 1).padStart(2, "0")}"}`,
              })),
            }
          : { tokens: ["counted"] },
      );
      const chatId = await newChat();
      c.send({ type: "SEND_MESSAGE", chatId, content: "many" });
      const frames = await replyFrames(chatId);
      const ends = frames.filter((f) => f.type === "TOOL_CALL_END").map((f) => f.call);
      expect(ends.length).toBe(18);
      expect(ends.filter((e) => e.ok).length).toBe(16);
      expect(
        ends
          .filter((e) => !e.ok)
          .map((e) => e.id)
          .sort(),
      ).toEqual(["m16", "m17"]);
      expect(toolTurns(requestsFor("many").at(-1)!).length).toBe(18);
    });

    test("a model that never stops asking: TOOL_MAX_ROUNDS rounds, then asked with tool_choice none, and the reply comes", async () => {
      route("loop", () => ({ tokens: ["still "], toolCalls: [{ name: "calc__add", arguments: '{"a":1,"b":1}' }] }));
      const chatId = await newChat();
      const before = requestsFor("loop").length;
      c.send({ type: "SEND_MESSAGE", chatId, content: "loop" });
      const frames = await replyFrames(chatId);
      const reqs = requestsFor("loop").slice(before);
      expect(reqs.length).toBe(4); // 3 rounds with tools, then one to answer
      expect(reqs.map((r) => r.body.tool_choice ?? null)).toEqual([null, null, null, "none"]);
      expect(frames.filter((f) => f.type === "TOOL_CALL_END").length).toBe(3);
      expect(frames.at(-1)!.reason).toBeUndefined();
      expect((await history(chatId)).at(-1)!.content).toBe("still still still still ");
    });

    test("a 1 MB result is shortened for the model with a note, and for display", async () => {
      route("big", (r, round) =>
        round === 0 ? { tokens: [], toolCalls: [{ name: "calc__big", arguments: "{}" }] } : { tokens: ["done"] },
      );
      const chatId = await newChat();
      c.send({ type: "SEND_MESSAGE", chatId, content: "big" });
      const frames = await replyFrames(chatId);
      const result = toolTurns(requestsFor("big").at(-1)!)[0]!.content!;
      expect(result).toBe(`${"x".repeat(5000)}\n[result shortened: the first 5000 of 1000000 characters are shown]`);
      const shown = frames.find((f) => f.type === "TOOL_CALL_END")!.call.result as string;
      expect(shown.length).toBeLessThan(1200);
      expect(shown).toContain("[result shortened");
    });

    test("STOP during a tool call cancels it on the MCP server and ends the reply as stopped", async () => {
      route("sleepy", () => ({ tokens: ["Waiting. "], toolCalls: [{ id: "zz", name: "calc__sleep", arguments: '{"ms": 20000}' }] }));
      const chatId = await newChat();
      const cancelled = mcp.cancelled.length;
      c.send({ type: "SEND_MESSAGE", chatId, content: "sleepy" });
      const start = await c.next((f) => f.type === "TOOL_CALL_START" && f.chatId === chatId);
      await mcp.until(() => mcp.started.filter((n) => n === "sleep").length > 0);
      // RESUME and history mid-tool show the call so far.
      const resumed = await c.request({ type: "RESUME", chatId, traceId: start.traceId, fromSeq: 0 }, "MESSAGE");
      expect(resumed).toMatchObject({ content: "Waiting. ", toolCalls: [{ id: "zz", name: "calc__sleep" }] });
      const live = (await history(chatId)).at(-1)!;
      expect(live).toMatchObject({ streaming: true, content: "Waiting. " });
      const stopped = await c.request({ type: "STOP_GENERATION", chatId }, "GENERATION_STOPPED");
      expect(stopped.traceId).toBe(start.traceId);
      await mcp.until(() => mcp.cancelled.length > cancelled);
      const end = c.frames.find((f) => f.type === "MESSAGE" && f.end && f.traceId === start.traceId)!;
      expect(end.reason).toBe("stopped");
      const stored = (await history(chatId)).at(-1)!;
      expect(stored).toMatchObject({ status: "stopped", content: "Waiting. ", tool_calls: [{ id: "zz", ok: false, error: "cancelled" }] });
    });

    test("the user's settings turn a server off: its tools are not offered", async () => {
      route("offered", () => ({ tokens: ["fine"] }));
      await c.request({ type: "UPDATE_SETTINGS", toolsOff: ["calc", "days_between"] }, "SETTINGS");
      const chatId = await newChat();
      c.send({ type: "SEND_MESSAGE", chatId, content: "offered" });
      await replyFrames(chatId);
      expect(
        requestsFor("offered")
          .at(-1)!
          .body.tools.map((t: any) => t.function.name),
      ).toEqual(["current_time", "date_add"]);
      const listed = await c.request({ type: "GET_TOOLS" }, "TOOLS");
      expect(listed.servers).toEqual([{ name: "calc", state: "ready", tools: 4, off: true }]);
      const offNames = listed.tools.filter((t: any) => t.off).map((t: any) => t.name);
      expect(offNames).toEqual(["days_between", "calc__add", "calc__sleep", "calc__fail", "calc__big"]);
      expect(listed.tools.find((t: any) => t.name === "current_time")).toMatchObject({ source: "builtin", off: false });
      const bad = await c.request({ type: "UPDATE_SETTINGS", toolsOff: ["no spaces allowed"] }, "SETTINGS");
      expect(bad).toMatchObject({ type: "ERROR", code: "INVALID_FRAME" });
      await c.request({ type: "UPDATE_SETTINGS", toolsOff: null }, "SETTINGS");
    });

    test("regenerate runs the tools again; export (JSON and Markdown) shows the calls", async () => {
      route("regen", (r, round) =>
        round === 0 ? { tokens: [], toolCalls: [{ id: "r1", name: "calc__add", arguments: '{"a":2,"b":3}' }] } : { tokens: ["five"] },
      );
      const chatId = await newChat();
      c.send({ type: "SEND_MESSAGE", chatId, content: "regen" });
      await replyFrames(chatId);
      const adds = mcp.calls.filter((x) => x.name === "add").length;
      await c.request({ type: "REGENERATE", chatId }, "REGENERATING");
      const again = await replyFrames(chatId);
      expect(again.filter((f) => f.type === "TOOL_CALL_END").map((f) => f.call.result)).toEqual(["5"]);
      expect(mcp.calls.filter((x) => x.name === "add").length).toBe(adds + 1);
      const headers = { Authorization: `Bearer ${srv.config.API_TOKEN ?? ""}` };
      const json = (await (await fetch(`${srv.url}/api/chats/${chatId}/export?format=json`, { headers })).json()) as any;
      const replies = json.messages.filter((m: any) => m.role === "assistant");
      expect(replies.length).toBe(2);
      for (const m of replies)
        expect(m.tool_calls).toMatchObject([{ id: "r1", name: "calc__add", arguments: '{"a":2,"b":3}', ok: true, result: "5" }]);
      const md = await (await fetch(`${srv.url}/api/chats/${chatId}/export?format=md`, { headers })).text();
      expect(md).toContain("> Tool `calc__add` (ok, ");
      expect(md).toContain('`{"a":2,"b":3}` → `5`');
      // Imported back, the calls come with the messages.
      const imported = await fetch(`${srv.url}/api/chats/import`, {
        method: "POST",
        headers: { ...headers, "content-type": "application/json" },
        body: JSON.stringify(json),
      });
      expect(imported.status).toBe(201);
      const copy = ((await imported.json()) as { chat: { id: string } }).chat.id;
      const copied = (await history(copy)).filter((m) => m.role === "assistant");
      expect(copied.at(-1)!.tool_calls).toEqual(replies.at(-1).tool_calls);
    });

    test("a model server without tool support (400 for tools): asked without them, the reply still comes", async () => {
      route("no tools here", () => ({ tokens: ["answer ", "without tools"], rejectTools: true }));
      const chatId = await newChat();
      c.send({ type: "SEND_MESSAGE", chatId, content: "no tools here" });
      const frames = await replyFrames(chatId);
      expect(frames.at(-1)!.reason).toBeUndefined();
      expect(
        frames
          .filter((f) => !f.end)
          .map((f) => f.content)
          .join(""),
      ).toBe("answer without tools");
    });

    test("/health shows the MCP server; logs have tool names and outcomes, never arguments or the token", async () => {
      const health = (await (await fetch(`${srv.url}/health`)).json()) as any;
      expect(health.services.mcp).toMatchObject({ ok: true, servers: [{ name: "calc", state: "ready" }] });
      const lines = srv.log.lines.map((l) => JSON.parse(l));
      const calls = lines.filter((l) => l.msg === "tool call" && l.level === "info");
      expect(calls.length).toBeGreaterThan(3);
      expect(calls.every((l) => !("arguments" in l))).toBe(true);
      expect(srv.log.lines.join("\n")).not.toContain(MCP_TOKEN);
    });
  });
}

describe("tool rounds and the limits", () => {
  test("tool results count in the context window: old history is left out first, then the result is cut with a note", async () => {
    const srv = await startTestServer({
      ...env(),
      MODEL_CONTEXT_TOKENS: "3000",
      MODEL_REPLY_RESERVE_TOKENS: "200",
      TOOL_RESULT_MAX_CHARS: "100000",
    });
    try {
      await until(async () => ((await (await fetch(`${srv.url}/health`)).json()) as any).services.mcp.ok, "the MCP server connected");
      model.setScript((r) => {
        if (lastQuestion(r) !== "fill the window") return { tokens: ["noted ".repeat(40)] };
        return toolTurns(r).length
          ? { tokens: ["done"] }
          : { tokens: [], toolCalls: [{ id: "w", name: "calc__big", arguments: '{"chars":40000}' }] };
      });
      const c = await srv.connect();
      const chatId = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat.id;
      for (const q of ["one", "two", "three"]) {
        c.send({ type: "SEND_MESSAGE", chatId, content: `${q} ${"word ".repeat(150)}` });
        await c.reply(chatId);
      }
      c.send({ type: "SEND_MESSAGE", chatId, content: "fill the window" });
      const r = await c.reply(chatId);
      expect(r.end.reason).toBeUndefined();
      const [first, second] = model.requests.filter((q) => lastQuestion(q) === "fill the window").slice(-2);
      // The first request had the earlier exchange; with the result, it had to go.
      expect(messages(first!).some((m) => String(m.content).startsWith("one "))).toBe(true);
      expect(messages(second!).some((m) => String(m.content).startsWith("one "))).toBe(false);
      expect(messages(second!)[0]!.role).toBe("system");
      expect(messages(second!).some((m) => m.content === "fill the window")).toBe(true);
      const result = toolTurns(second!)[0]!.content!;
      expect(result.length).toBeLessThan(40_000);
      expect(result).toContain("[result shortened to fit the model's context window");
    } finally {
      await srv.close();
    }
  });

  test("each round after the first is one more of the user's sends: past RATE_LIMIT_MESSAGES_PER_MINUTE the reply ends incomplete", async () => {
    const srv = await startTestServer({ ...env(), RATE_LIMIT_MESSAGES_PER_MINUTE: "2", TOOL_MAX_ROUNDS: "5" });
    try {
      model.setScript(() => ({ tokens: ["more "], toolCalls: [{ name: "current_time", arguments: "{}" }] }));
      const c = await srv.connect();
      const chatId = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat.id;
      const before = model.requests.length;
      c.send({ type: "SEND_MESSAGE", chatId, content: "per user" });
      const r = await c.reply(chatId);
      expect(r.end.reason).toBe("error");
      expect(await c.next("ERROR")).toMatchObject({ code: "TOO_MANY_GENERATIONS" });
      // The send (1) and one more round (2).
      expect(model.requests.length - before).toBe(2);
      // The user's bucket is empty now: the next send is refused before it is stored.
      expect(await c.request({ type: "SEND_MESSAGE", chatId, content: "again", requestId: "x" }, "MESSAGE_ACCEPTED")).toMatchObject({
        type: "ERROR",
        code: "RATE_LIMITED",
      });
    } finally {
      await srv.close();
    }
  });

  test("each round after the first counts in MODEL_CALLS_PER_MINUTE: past it the reply ends incomplete, keeping its calls", async () => {
    // The limit counts per calendar minute: start well inside one, so the count is not reset mid-test.
    await until(() => Date.now() % 60_000 < 50_000, "a minute with time left in it", 15_000);
    const srv = await startTestServer({ ...env(), MODEL_CALLS_PER_MINUTE: "2", TOOL_MAX_ROUNDS: "5" });
    try {
      model.setScript(() => ({ tokens: ["again "], toolCalls: [{ name: "current_time", arguments: "{}" }] }));
      const c = await srv.connect();
      const chatId = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat.id;
      const before = model.requests.length;
      c.send({ type: "SEND_MESSAGE", chatId, content: "limited" });
      const r = await c.reply(chatId);
      expect(r.end.reason).toBe("error");
      expect(await c.next("ERROR")).toMatchObject({ code: "TOO_MANY_GENERATIONS" });
      // The question (1) and one more round (2): the third request was never made.
      expect(model.requests.length - before).toBe(2);
      const stored = (await c.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY")).messages.at(-1);
      expect(stored).toMatchObject({ status: "incomplete", content: "again again ", tool_calls: [{ ok: true }, { ok: true }] });
    } finally {
      await srv.close();
    }
  }, 30_000);
});
