import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js";

// A real MCP server built with the official SDK, over Streamable HTTP on loopback (stateful: one
// SDK Server per session, so the standalone SSE stream carries tools/list_changed). Its tools:
//   add {a, b}          → a + b
//   sleep {ms}          → waits, ends early when the client cancels (counted in `cancelled`)
//   fail {}             → an error result (isError)
//   big {chars}         → that many characters (1 MB by default)
//   extra {}            → only after addTool("extra"): announces tools/list_changed
// Run as a script (`bun test/support/mcp-server.ts [token]`) it prints its URL, for tests that kill it.

type ToolDef = { name: string; description: string; inputSchema: Record<string, unknown> };

const TOOLS: ToolDef[] = [
  {
    name: "add",
    description: "Adds two numbers",
    inputSchema: {
      type: "object",
      properties: { a: { type: "number" }, b: { type: "number" } },
      required: ["a", "b"],
      additionalProperties: false,
    },
  },
  {
    name: "sleep",
    description: "Waits for ms milliseconds",
    inputSchema: { type: "object", properties: { ms: { type: "integer", minimum: 0 } }, required: ["ms"] },
  },
  { name: "fail", description: "Always fails", inputSchema: { type: "object", properties: {} } },
  { name: "big", description: "Returns a long text", inputSchema: { type: "object", properties: { chars: { type: "integer" } } } },
];

export async function startMcpServer(o: { token?: string; port?: number } = {}) {
  const sessions = new Map<string, { server: Server; transport: WebStandardStreamableHTTPServerTransport }>();
  const extra: ToolDef[] = [];
  const calls: { name: string; args: unknown }[] = [];
  const cancelled: string[] = [];
  const started: string[] = [];
  const authHeaders: (string | null)[] = [];
  const waiters = new Set<() => void>();
  const poke = () => {
    for (const w of waiters) w();
  };

  function newSession() {
    const server = new Server({ name: "test-mcp", version: "1.0.0" }, { capabilities: { tools: { listChanged: true } } });
    server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: [...TOOLS, ...extra] }));
    server.setRequestHandler(CallToolRequestSchema, async (req, ctx) => {
      const args = (req.params.arguments ?? {}) as Record<string, number>;
      calls.push({ name: req.params.name, args });
      started.push(req.params.name);
      poke();
      switch (req.params.name) {
        case "add":
          return { content: [{ type: "text", text: String(args.a! + args.b!) }] };
        case "sleep": {
          const done = await new Promise<boolean>((resolve) => {
            const t = setTimeout(() => resolve(true), args.ms);
            ctx.signal.addEventListener("abort", () => (clearTimeout(t), resolve(false)), { once: true });
          });
          if (!done) {
            cancelled.push("sleep");
            poke();
          }
          return { content: [{ type: "text", text: `slept ${args.ms} ms` }] };
        }
        case "fail":
          return { content: [{ type: "text", text: "the fail tool failed, as it always does" }], isError: true };
        case "big":
          return { content: [{ type: "text", text: "x".repeat(args.chars ?? 1_000_000) }] };
        case "extra":
          if (extra.length) return { content: [{ type: "text", text: "extra ran" }] };
      }
      return { content: [{ type: "text", text: `no tool ${req.params.name}` }], isError: true };
    });
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => crypto.randomUUID(),
      onsessioninitialized: (id) => void sessions.set(id, { server, transport }),
      onsessionclosed: (id) => void sessions.delete(id),
    });
    return { server, transport };
  }

  const http = Bun.serve({
    port: o.port ?? 0,
    hostname: "127.0.0.1",
    idleTimeout: 0,
    async fetch(req) {
      authHeaders.push(req.headers.get("authorization"));
      if (o.token && req.headers.get("authorization") !== `Bearer ${o.token}`) return new Response("unauthorized", { status: 401 });
      const id = req.headers.get("mcp-session-id");
      const known = id ? sessions.get(id) : undefined;
      if (known) return known.transport.handleRequest(req);
      if (id) return new Response("unknown session", { status: 404 });
      const s = newSession();
      await s.server.connect(s.transport);
      return s.transport.handleRequest(req);
    },
  });

  return {
    url: `http://127.0.0.1:${http.port}/mcp`,
    port: http.port,
    calls,
    started,
    cancelled,
    authHeaders,
    /** A new tool appears and every session is told its list changed. */
    async addTool(name = "extra") {
      extra.push({ name, description: "Appeared later", inputSchema: { type: "object", properties: {} } });
      await Promise.all([...sessions.values()].map((s) => s.server.sendToolListChanged().catch(() => {})));
    },
    /** Resolves when `ok()` holds, checked whenever a call starts or is cancelled. */
    until(ok: () => boolean, ms = 5000): Promise<void> {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!ok()) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => (waiters.delete(check), reject(new Error("MCP server: condition not met in time"))), ms);
        waiters.add(check);
        check();
      });
    },
    async stop() {
      await Promise.all([...sessions.values()].map((s) => s.server.close().catch(() => {})));
      http.stop(true);
    },
  };
}
export type McpTestServer = Awaited<ReturnType<typeof startMcpServer>>;

if (import.meta.main) {
  const s = await startMcpServer({ token: process.argv[2] || undefined, port: Number(process.argv[3] ?? 0) });
  console.log(s.url);
  // Say which calls start, so a test can kill this process mid-call.
  const seen = { n: 0 };
  setInterval(() => {
    while (seen.n < s.started.length) console.log(`started ${s.started[seen.n++]}`);
  }, 5);
}
