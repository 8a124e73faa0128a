import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { azureOpenAIModel, openAICompatibleModel } from "../src/model/openai";
import type { ToolCall, ToolSpec } from "../src/model/model";
import { toolCallAssembler } from "../src/model/tool-calls";
import { checkArguments } from "../src/tools/arguments";
import { builtinTools } from "../src/tools/builtin";
import { connectMcpServers, type McpClients } from "../src/tools/mcp";
import { addToDate, isTimeZone, wallClock } from "../src/tools/time";
import { createToolbox, shorten } from "../src/tools/toolbox";
import { memoryLogger } from "./support/harness";
import { startMcpServer, type McpTestServer } from "./support/mcp-server";
import { startSseModel, type SseModel } from "./support/sse-model";
import { until } from "./support/until";

// The tool parts on their own, each against real peers: the openai client against the local SSE
// server streaming tool calls as Azure OpenAI does, and the MCP SDK's client against an MCP server
// built with the same SDK on loopback.

let model: SseModel;
let mcp: McpTestServer;
const TOKEN = "mcp-bearer-secret-123";
beforeAll(async () => {
  model = await startSseModel({ tokens: ["Hi"] });
  mcp = await startMcpServer({ token: TOKEN });
});
afterAll(async () => {
  model.stop();
  await mcp.stop();
});

const ADD: ToolSpec = { name: "calc__add", description: "adds", parameters: { type: "object", properties: {} } };

async function streamOnce(m: ReturnType<typeof openAICompatibleModel>, tools?: ToolSpec[]) {
  let calls: ToolCall[] = [];
  let text = "";
  for await (const d of m.stream([{ role: "user", content: "q" }], {
    signal: new AbortController().signal,
    tools,
    onToolCalls: (c) => (calls = c),
  }))
    text += d;
  return { text, calls };
}

describe("tool calls streamed by the model", () => {
  const compatible = () => openAICompatibleModel({ baseURL: `${model.url}/v1`, model: "m", timeoutMs: 5000 });

  test("arguments split in 1-character pieces, two calls in one round, on the Azure path", async () => {
    const args0 = JSON.stringify({ a: 2, b: 40, note: 'ünïcödé " quote' });
    const args1 = JSON.stringify({ ms: 5 });
    model.setScript({
      tokens: ["Let me ", "check."],
      toolCalls: [
        { id: "call_A", name: "calc__add", arguments: args0 },
        { id: "call_B", name: "calc__sleep", arguments: args1 },
      ],
      argPiece: 1,
    });
    const m = azureOpenAIModel({ endpoint: model.url, apiKey: "k", apiVersion: "2024-10-21", deployment: "dep", timeoutMs: 5000 });
    const r = await streamOnce(m as never, [ADD]);
    expect(r.text).toBe("Let me check.");
    expect(r.calls).toEqual([
      { id: "call_A", name: "calc__add", arguments: args0 },
      { id: "call_B", name: "calc__sleep", arguments: args1 },
    ]);
    const body = model.requests.at(-1)!.body;
    expect(body.tools).toEqual([{ type: "function", function: ADD }]);
  });

  test("interleaved pieces of parallel calls are put back by index", async () => {
    const calls = [0, 1, 2].map((i) => ({ id: `c${i}`, name: `t${i}`, arguments: JSON.stringify({ i, pad: "x".repeat(10 + i * 7) }) }));
    model.setScript({ tokens: [], toolCalls: calls, argPiece: 3, interleave: true });
    const r = await streamOnce(compatible(), [ADD]);
    expect(r.calls).toEqual(calls);
  });

  test("without tools offered, tool deltas are not collected and text streams as before", async () => {
    model.setScript({ tokens: ["plain"] });
    const r = await streamOnce(compatible());
    expect(r).toEqual({ text: "plain", calls: [] });
    expect(model.requests.at(-1)!.body.tools).toBeUndefined();
  });

  test("a server that answers 400 to tools is asked again without them, and remembered", async () => {
    model.setScript({ tokens: ["no", " tools"], rejectTools: true });
    const m = compatible();
    const before = model.requests.length;
    expect((await streamOnce(m, [ADD])).text).toBe("no tools");
    expect(model.requests.slice(before).map((r) => Boolean(r.body.tools))).toEqual([true, false]);
    // Remembered: the next reply asks once, without tools.
    expect((await streamOnce(m, [ADD])).text).toBe("no tools");
    expect(model.requests.slice(before).map((r) => Boolean(r.body.tools))).toEqual([true, false, false]);
  });

  test("a 400 about something else is not taken for a lack of tool support", async () => {
    model.setScript({ status: 400 });
    const m = compatible();
    const before = model.requests.length;
    await expect(streamOnce(m, [ADD])).rejects.toThrow("HTTP 400");
    expect(model.requests.length - before).toBe(1);
  });

  test("the assembler: a missing index continues the call, a repeated name is not doubled", () => {
    const a = toolCallAssembler();
    a.add({ id: "x", function: { name: "f", arguments: '{"a"' } });
    a.add({ function: { name: "f", arguments: ":1}" } });
    a.add({ id: "y", function: { name: "g", arguments: "{}" } });
    expect(a.calls()).toEqual([
      { id: "x", name: "f", arguments: '{"a":1}' },
      { id: "y", name: "g", arguments: "{}" },
    ]);
  });
});

describe("built-in tools", () => {
  const fixed = new Date("2026-03-29T00:30:00Z"); // Europe/Paris switches to summer time at 01:00 UTC that day
  const [now, add, between] = builtinTools(() => fixed);
  const ctx = (timeZone: string) => ({ signal: new AbortController().signal, timeZone });

  test("current_time is the wall clock in the user's zone, with its offset", async () => {
    expect(JSON.parse(await now!.run({}, ctx("Europe/Paris")))).toEqual({
      timeZone: "Europe/Paris",
      date: "2026-03-29",
      time: "01:30:00",
      weekday: "Sunday",
      utcOffset: "+01:00",
      iso: "2026-03-29T01:30:00+01:00",
    });
    const later = wallClock(new Date("2026-03-29T01:30:00Z"), "Europe/Paris");
    expect(later.utcOffset).toBe("+02:00");
    expect(JSON.parse(await now!.run({}, ctx("America/Los_Angeles"))).date).toBe("2026-03-28");
    expect(wallClock(new Date("2026-01-01T00:00:00Z"), "Asia/Kolkata").utcOffset).toBe("+05:30");
  });

  test("date_add: months clamp to the month's end, leap years, weekdays, default today in the zone", async () => {
    expect(addToDate("2026-01-31", { months: 1 })).toBe("2026-02-28");
    expect(addToDate("2028-01-31", { months: 1 })).toBe("2028-02-29");
    expect(addToDate("2028-02-29", { years: 1 })).toBe("2029-02-28");
    expect(addToDate("2026-12-30", { days: 3 })).toBe("2027-01-02");
    expect(addToDate("2026-02-30", { days: 1 })).toBeUndefined();
    expect(JSON.parse(await add!.run({ days: 5 }, ctx("Europe/Paris")))).toEqual({
      from: "2026-03-29",
      date: "2026-04-03",
      weekday: "Friday",
    });
    await expect(add!.run({ date: "2026-13-01" }, ctx("UTC"))).rejects.toThrow("not a date");
  });

  test("days_between counts whole days, negative backwards", async () => {
    expect(JSON.parse(await between!.run({ from: "2026-12-07", to: "2027-01-01" }, ctx("UTC"))).days).toBe(25);
    expect(JSON.parse(await between!.run({ to: "2026-03-01" }, ctx("UTC"))).days).toBe(-28);
  });

  test("time zone names: IANA names this runtime knows, nothing else", () => {
    for (const ok of ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5"]) expect(isTimeZone(ok)).toBe(true);
    for (const bad of ["Mars/Olympus", "", "Europe/Paris; drop", "../etc", "x".repeat(80)]) expect(isTimeZone(bad)).toBe(false);
  });
});

describe("arguments against the schema", () => {
  const schema = { type: "object", properties: { a: { type: "number" } }, required: ["a"], additionalProperties: false };
  test("accepted, refused with a reason the model can use", () => {
    expect(checkArguments(schema, '{"a": 1}')).toEqual({ ok: true, args: { a: 1 } });
    expect(checkArguments({ type: "object" }, "")).toEqual({ ok: true, args: {} });
    const missing = checkArguments(schema, "{}");
    expect(missing.ok).toBe(false);
    expect(!missing.ok && missing.error).toContain("a");
    expect(checkArguments(schema, '{"a": "1"}').ok).toBe(false);
    expect(checkArguments(schema, '{"a": 1, "b": 2}').ok).toBe(false);
    expect(checkArguments(schema, '{"a": 1').ok).toBe(false);
    expect(checkArguments(schema, "[1]").ok).toBe(false);
  });
});

describe("MCP servers through the SDK", () => {
  let clients: McpClients;
  const log = memoryLogger("debug", [TOKEN]);
  const box = () => createToolbox({ builtins: builtinTools(), mcp: clients, log, timeoutMs: 300, resultMaxChars: 1000 });
  const call = (name: string, args: unknown, signal = new AbortController().signal) =>
    box().run({ id: "c1", name, arguments: JSON.stringify(args) }, box().available(), { signal, timeZone: "UTC" });

  beforeAll(async () => {
    clients = connectMcpServers({
      servers: [
        { name: "calc", url: mcp.url, headers: { Authorization: `Bearer ${TOKEN}` } },
        { name: "gone", url: "http://127.0.0.1:9/mcp", headers: {} },
      ],
      log,
      connectTimeoutMs: 2000,
      retryMs: { min: 50, max: 200 },
      pingMs: 100,
    });
    await clients.until((s) => s[0]!.state === "ready" && s[1]!.state === "down", 5000);
  });
  afterAll(() => clients.close());

  test("tools are offered with the server's name as a prefix; a down server has none", () => {
    const names = box()
      .available()
      .map((t) => t.name);
    expect(names).toEqual(["current_time", "date_add", "days_between", "calc__add", "calc__sleep", "calc__fail", "calc__big"]);
    expect(clients.status()).toMatchObject([
      { name: "calc", state: "ready", tools: 4 },
      { name: "gone", state: "down", tools: 0 },
    ]);
    expect(mcp.authHeaders.every((h) => h === `Bearer ${TOKEN}`)).toBe(true);
  });

  test("a user's settings turn a server or one tool off", () => {
    const names = (off: string[]) =>
      box()
        .available({ toolsOff: off })
        .map((t) => t.name);
    expect(names(["calc"])).toEqual(["current_time", "date_add", "days_between"]);
    expect(names(["calc__fail", "date_add"])).toEqual(["current_time", "days_between", "calc__add", "calc__sleep", "calc__big"]);
  });

  test("add answers; fail is an error result; 1 MB is shortened with a note", async () => {
    expect(await call("calc__add", { a: 2, b: 40 })).toMatchObject({ ok: true, result: "42", name: "calc__add", id: "c1" });
    expect(await call("calc__fail", {})).toMatchObject({
      ok: false,
      error: "failed",
      result: expect.stringContaining("the fail tool failed"),
    });
    const big = await call("calc__big", {});
    expect(big.ok).toBe(true);
    expect(big.result.startsWith("x".repeat(1000))).toBe(true);
    expect(big.result).toContain("[result shortened: the first 1000 of 1000000 characters are shown]");
    expect(shorten("abc", 3)).toBe("abc");
  });

  test("unknown tool and arguments off the schema are results the model sees, and nothing is sent to the server", async () => {
    const n = mcp.calls.length;
    expect(await call("calc__nope", {})).toMatchObject({ ok: false, error: "unknown_tool", result: expect.stringContaining("calc__add") });
    expect(await call("calc__add", { a: "2" })).toMatchObject({
      ok: false,
      error: "invalid_arguments",
      result: expect.stringContaining("schema"),
    });
    expect(mcp.calls.length).toBe(n);
  });

  test("a slow call times out as a result, and the server is told to cancel", async () => {
    const before = mcp.cancelled.length;
    const r = await call("calc__sleep", { ms: 5000 });
    expect(r).toMatchObject({ ok: false, error: "timeout", result: "Error: the tool did not answer within 300 ms." });
    await mcp.until(() => mcp.cancelled.length > before);
  });

  test("a stop aborts a running call: the abort is thrown and the server cancels", async () => {
    const before = mcp.cancelled.length;
    const ac = new AbortController();
    const p = call("calc__sleep", { ms: 5000 }, ac.signal);
    await mcp.until(() => mcp.started.filter((n) => n === "sleep").length > 0);
    ac.abort({ stop: "stopped" });
    await expect(p).rejects.toEqual({ stop: "stopped" });
    await mcp.until(() => mcp.cancelled.length > before);
  });

  test("tools/list_changed refreshes the list", async () => {
    await mcp.addTool("extra");
    await until(
      () =>
        box()
          .available()
          .some((t) => t.name === "calc__extra"),
      "the new tool offered",
      5000,
    );
    expect(await call("calc__extra", {})).toMatchObject({ ok: true, result: "extra ran" });
  });

  test("logs: name, time and outcome at info; arguments only at debug; never the bearer token", () => {
    const info = log.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === "tool call");
    expect(info.some((l) => l.tool === "calc__add" && l.outcome === "ok" && typeof l.ms === "number")).toBe(true);
    expect(info.every((l) => !("arguments" in l))).toBe(true);
    expect(log.lines.join("\n")).not.toContain(TOKEN);
  });
});

describe("an MCP server that refuses us", () => {
  test("a wrong token: down with the HTTP status only, in /health's words and the logs; the URL's query never shows", async () => {
    const log = memoryLogger();
    const clients = connectMcpServers({
      servers: [{ name: "locked", url: `${mcp.url}?key=secret-in-the-url`, headers: { Authorization: "Bearer wrong-token-value" } }],
      log,
      retryMs: { min: 5_000, max: 5_000 },
    });
    try {
      expect(await clients.until((s) => s[0]!.state === "down", 5000)).toBe(true);
      expect(clients.status()).toEqual([{ name: "locked", state: "down", tools: 0, error: "HTTP 401" }]);
      const logged = log.lines.join("\n");
      expect(logged).toContain("MCP server unavailable");
      expect(logged).not.toContain("secret-in-the-url");
      expect(logged).not.toContain("wrong-token-value");
    } finally {
      await clients.close();
    }
  });
});

describe("an MCP server that does not answer", () => {
  test("connecting gives up after its bound: the server is down, its tools are left out, and nothing waits for it", async () => {
    // Accepts connections and never answers a request.
    const silent = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Promise<Response>(() => {}) });
    const clients = connectMcpServers({
      servers: [{ name: "slow", url: `http://127.0.0.1:${silent.port}/mcp`, headers: {} }],
      log: memoryLogger(),
      connectTimeoutMs: 300,
      retryMs: { min: 5_000, max: 5_000 },
    });
    try {
      const box = createToolbox({ builtins: builtinTools(), mcp: clients, log: memoryLogger(), timeoutMs: 1000, resultMaxChars: 1000 });
      // While it connects, a reply is offered the built-ins only, at once.
      expect(clients.status()[0]!.state).toBe("connecting");
      expect(box.available().map((t) => t.name)).toEqual(["current_time", "date_add", "days_between"]);
      expect(await clients.until((s) => s[0]!.state === "down", 3000)).toBe(true);
      expect(clients.status()[0]!.tools).toBe(0);
    } finally {
      await clients.close();
      silent.stop(true);
    }
  });
});

describe("an MCP server that goes away", () => {
  test("hung mid-call (SIGSTOP): the call times out, the server answers no ping and is down, its tools left out; SIGCONT brings it back", async () => {
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = probe.port;
    probe.stop(true);
    const proc = Bun.spawn(["bun", `${import.meta.dir}/support/mcp-server.ts`, "", String(port)], { stdout: "pipe", stderr: "inherit" });
    const reader = proc.stdout.getReader();
    let out = "";
    await until(
      async () => {
        out += new TextDecoder().decode((await reader.read()).value ?? new Uint8Array());
        return out.includes("/mcp");
      },
      "the MCP server up",
      5000,
    );
    const log = memoryLogger();
    const clients = connectMcpServers({
      servers: [{ name: "hung", url: `http://127.0.0.1:${port}/mcp`, headers: {} }],
      log,
      connectTimeoutMs: 500,
      retryMs: { min: 100, max: 200 },
      pingMs: 60_000,
    });
    try {
      await clients.until((s) => s[0]!.state === "ready", 5000);
      const box = createToolbox({ builtins: [], mcp: clients, log, timeoutMs: 300, resultMaxChars: 1000 });
      proc.kill("SIGSTOP");
      const r = await box.run({ id: "h", name: "hung__add", arguments: '{"a":1,"b":2}' }, box.available(), {
        signal: new AbortController().signal,
        timeZone: "UTC",
      });
      expect(r).toMatchObject({ ok: false, error: "timeout" });
      expect(await clients.until((s) => s[0]!.state === "down", 3000)).toBe(true);
      expect(clients.status()[0]!.error).toBe("timeout");
      expect(box.available()).toEqual([]);
      proc.kill("SIGCONT");
      expect(await clients.until((s) => s[0]!.state === "ready", 5000)).toBe(true);
      expect(box.available().map((t) => t.name)).toContain("hung__add");
    } finally {
      proc.kill(9);
      await clients.close();
    }
  });

  test("killed mid-call: the call ends as an error result, the server is down with its tools left out, and it comes back", async () => {
    // A port the OS just handed out, so the restarted server can take the same one.
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = probe.port;
    probe.stop(true);
    const spawn = () =>
      Bun.spawn(["bun", `${import.meta.dir}/support/mcp-server.ts`, "", String(port)], { stdout: "pipe", stderr: "inherit" });
    let proc = spawn();
    const reader = proc.stdout.getReader();
    let out = "";
    const read = async (what: string) =>
      until(
        async () => {
          if (out.includes(what)) return true;
          const { value } = await reader.read();
          out += new TextDecoder().decode(value ?? new Uint8Array());
          return out.includes(what);
        },
        what,
        5000,
      );
    await read("/mcp");
    const log = memoryLogger();
    const clients = connectMcpServers({
      servers: [{ name: "far", url: `http://127.0.0.1:${port}/mcp`, headers: {} }],
      log,
      retryMs: { min: 50, max: 100 },
      pingMs: 100,
    });
    try {
      await clients.until((s) => s[0]!.state === "ready", 5000);
      const box = createToolbox({ builtins: [], mcp: clients, log, timeoutMs: 5000, resultMaxChars: 1000 });
      const started = performance.now();
      const p = box.run({ id: "k", name: "far__sleep", arguments: '{"ms":60000}' }, box.available(), {
        signal: new AbortController().signal,
        timeZone: "UTC",
      });
      await read("started sleep");
      proc.kill(9);
      const r = await p;
      expect(r.ok).toBe(false);
      expect(["unavailable", "failed", "timeout"]).toContain(r.error!);
      expect(performance.now() - started).toBeLessThan(6000);
      await clients.until((s) => s[0]!.state === "down", 5000);
      expect(box.available()).toEqual([]);
      // Started again on the same port: reconnected, tools back.
      proc = spawn();
      await clients.until((s) => s[0]!.state === "ready", 5000);
      expect(box.available().map((t) => t.name)).toContain("far__add");
    } finally {
      proc.kill(9);
      await clients.close();
    }
  });
});
