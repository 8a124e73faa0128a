import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Message } from "../src/records";
import { openSqliteStore } from "../src/store/sqlite";
import type { Store } from "../src/store/store";
import { openCosmosStoreAt, openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer } from "./support/harness";
import { startMcpServer, type McpTestServer } from "./support/mcp-server";
import { reapOnExit } from "./support/reaper";
import { spawnServer, type ServerProcess } from "./support/server-process";
import { startSseModel, type ModelRequest, type SseModel } from "./support/sse-model";
import { until } from "./support/until";
import { connect, type TestClient } from "./support/ws-client";

// Crashes around tool calls, as inputs: the PiChat process killed (kill -9) while a tool runs, and
// an MCP server killed while PiChat waits on its call. Both stores.

const LEASE_MS = 1500;
let model: SseModel;
let mcp: McpTestServer;
let cosmos: CosmosTestServer;
const procs: ServerProcess[] = [];
const clients: TestClient[] = [];

beforeAll(async () => {
  model = await startSseModel({ tokens: ["ok"] });
  mcp = await startMcpServer();
  cosmos = await startCosmosServer();
});
afterAll(async () => {
  for (const c of clients) c.close();
  for (const p of procs) await p.crash().catch(() => {});
  await mcp?.stop();
  await cosmos?.stop();
  model?.stop();
});

const rounds = (r: ModelRequest) => (r.body.messages as { tool_calls?: unknown }[]).filter((m) => m.tool_calls).length;

const openCosmosAt = (database: string) => openCosmosStoreAt(cosmos, database);

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`tool calls and crashes (${kind})`, () => {
    test("kill -9 during a tool call: the reply is finalised as interrupted with the calls that ended, and the MCP server saw the call", async () => {
      const database = `pichat-tools-crash-${crypto.randomUUID()}`;
      const dbPath = join(tmpdir(), `pichat-tools-crash-${crypto.randomUUID()}.db`);
      const env = {
        OPENAI_BASE_URL: `${model.url}/v1`,
        OPENAI_MODEL: "m",
        CHAT_TITLES: "false",
        REPLY_CHECKPOINT_MS: "100",
        REPLY_LEASE_MS: String(LEASE_MS),
        TOOL_TIMEOUT_MS: "60000",
        MCP_SERVERS: JSON.stringify({ calc: mcp.url }),
        ...(kind === "cosmos"
          ? { COSMOS_ENDPOINT: cosmos.endpoint, COSMOS_KEY: cosmos.key, COSMOS_ALLOW_SELF_SIGNED_CERT: "true", COSMOS_DATABASE: database }
          : {}),
      };
      model.setScript((r) =>
        rounds(r) === 0
          ? { tokens: [], toolCalls: [{ id: "k-add", name: "calc__add", arguments: '{"a":1,"b":2}' }] }
          : { tokens: ["Three. ", "Now wait. "], toolCalls: [{ id: "k-sleep", name: "calc__sleep", arguments: '{"ms":60000}' }] },
      );
      const store: Store = kind === "cosmos" ? await openCosmosAt(database) : openSqliteStore(dbPath);
      try {
        const a = await spawnServer(env, { dbPath });
        procs.push(a);
        const c = await connect(a.wsUrl);
        clients.push(c);
        // The MCP server is connected in the background: wait for its tools.
        await until(async () => ((await (await fetch(`${a.httpUrl}/health`)).json()) as any).services.mcp.ok, "MCP connected", 10_000);
        const chat = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;
        const sleeps = mcp.started.filter((n) => n === "sleep").length;
        c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "crash in a tool", messageId: "q-crash" });
        const start = await c.next((f) => f.type === "TOOL_CALL_START" && f.call.name === "calc__sleep", 10_000);
        await mcp.until(() => mcp.started.filter((n) => n === "sleep").length > sleeps);
        // A checkpoint that holds the first call's result and the text so far.
        await until(async () => {
          const r = (await store.pageMessages(chat.id, { limit: 10 })).items.find((m) => m.id === start.traceId);
          return r?.status === "streaming" && r.content === "Three. Now wait. " && r.tool_calls?.length === 1;
        }, "a checkpoint with the first call");
        await a.crash();

        const b = await spawnServer(env, { dbPath });
        procs.push(b);
        const d = await connect(b.wsUrl);
        clients.push(d);
        const final = await until(
          async () => {
            const h = await d.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
            const r = (h.messages as (Message & { streaming?: boolean })[]).find((m) => m.id === start.traceId);
            return r && !r.streaming && r.status !== "streaming" && r;
          },
          "the reply finalised",
          4 * LEASE_MS + 5000,
        );
        expect(final).toMatchObject({
          status: "interrupted",
          content: "Three. Now wait. ",
          tool_calls: [{ id: "k-add", name: "calc__add", ok: true, result: "3" }],
        });
        await b.crash();
      } finally {
        await store.close();
        rmSync(dbPath, { force: true });
      }
    }, 40_000);

    test("an MCP server killed mid-call: the call is an error result, the reply completes, /health is degraded, the next reply has none of its tools", async () => {
      const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      const port = probe.port;
      probe.stop(true);
      const far = Bun.spawn(["bun", `${import.meta.dir}/support/mcp-server.ts`, "", String(port)], { stdout: "pipe", stderr: "inherit" });
      reapOnExit(far as never);
      const reader = far.stdout.getReader();
      let out = "";
      const read = (what: string) =>
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
      const cosmosStore = kind === "cosmos" ? await openTestCosmosStore(cosmos, `pichat-tools-mcpkill-${crypto.randomUUID()}`) : undefined;
      const srv = await startTestServer(
        {
          OPENAI_BASE_URL: `${model.url}/v1`,
          OPENAI_MODEL: "m",
          CHAT_TITLES: "false",
          TOOL_TIMEOUT_MS: "20000",
          MCP_SERVERS: JSON.stringify({ far: `http://127.0.0.1:${port}/mcp` }),
        },
        cosmosStore ? { store: cosmosStore } : {},
      );
      try {
        await until(async () => ((await (await fetch(`${srv.url}/health`)).json()) as any).services.mcp.ok, "MCP connected", 10_000);
        model.setScript((r) =>
          rounds(r) === 0
            ? { tokens: [], toolCalls: [{ id: "f1", name: "far__sleep", arguments: '{"ms":60000}' }] }
            : { tokens: ["The tool is gone: ", String((r.body.messages as any[]).at(-1).content).slice(0, 6)] },
        );
        const c = await srv.connect();
        const chat = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat;
        const started = performance.now();
        c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "use the far tool" });
        await read("started sleep");
        far.kill(9);
        const endCall = await c.next((f) => f.type === "TOOL_CALL_END", 15_000);
        expect(endCall.call).toMatchObject({ id: "f1", ok: false });
        expect(["unavailable", "failed"]).toContain(endCall.call.error);
        const reply = await c.reply(chat.id, 15_000);
        expect(reply.end.reason).toBeUndefined();
        expect(reply.text).toBe("The tool is gone: Error:");
        // Well before the 20 s tool timeout: the dropped connection ended the call.
        expect(performance.now() - started).toBeLessThan(15_000);
        const health = await until(async () => {
          const h = (await (await fetch(`${srv.url}/health`)).json()) as any;
          return h.services.mcp.servers[0].state === "down" && h;
        }, "the server marked down");
        expect(health.status).toBe("degraded");
        model.setScript({ tokens: ["fine"] });
        c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "next" });
        await c.reply(chat.id);
        const offered = (model.requests.at(-1)!.body.tools as { function: { name: string } }[]).map((t) => t.function.name);
        expect(offered).toEqual(["current_time", "date_add", "days_between"]);
      } finally {
        far.kill(9);
        await srv.close();
        await cosmosStore?.close();
      }
    }, 40_000);
  });
}
