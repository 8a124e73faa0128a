import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError, type Tool as McpTool } from "@modelcontextprotocol/sdk/types.js";
import type { McpServerConfig } from "../config";
import type { Logger } from "../log";
import type { Tool } from "./tool";

// The operator's MCP servers (MCP_SERVERS), over Streamable HTTP with the official SDK. Each is
// connected in the background and reconnected after a failure, so a reply never waits for one:
// a server that is down or still connecting simply has no tools in that reply. Its tools are
// offered as `<server>__<tool>`, and the list is refreshed when the server says it changed.

export type McpServerStatus = { name: string; state: "connecting" | "ready" | "down"; tools: number; error?: string };

type Options = {
  servers: readonly McpServerConfig[];
  log: Logger;
  /** Bound on connecting and listing tools. */
  connectTimeoutMs?: number;
  /** First and longest wait before connecting again after a failure. */
  retryMs?: { min: number; max: number };
  /** How often a ready server is pinged, so /health notices one that went away while idle. */
  pingMs?: number;
};

type State = {
  cfg: McpServerConfig;
  state: McpServerStatus["state"];
  client?: Client;
  tools: Tool[];
  error?: string;
  retryIn: number;
  timer?: ReturnType<typeof setTimeout>;
  probing?: Promise<void>;
};

export const SEPARATOR = "__";

/**
 * Why a server is unavailable, in words safe for /health and the logs: an HTTP status, a timeout,
 * or "unreachable". The SDK's own messages can carry the URL (and a token in its query) or the
 * server's response body.
 */
function why(e: unknown): string {
  const text = e instanceof Error ? `${e.name} ${e.message}` : String(e);
  // The transport's HTTP errors carry the status as `code`.
  const code = (e as { code?: unknown } | undefined)?.code;
  if (typeof code === "number" && code >= 400 && code < 600) return `HTTP ${code}`;
  const status = /HTTP (\d{3})/.exec(text)?.[1];
  if (status) return `HTTP ${status}`;
  if (/time(d)? ?out|-32001/i.test(text)) return "timeout";
  return "unreachable";
}
const VALID_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

export type McpClients = ReturnType<typeof connectMcpServers>;

export function connectMcpServers(o: Options) {
  const connectTimeoutMs = o.connectTimeoutMs ?? 10_000;
  const retry = o.retryMs ?? { min: 1_000, max: 30_000 };
  const pingMs = o.pingMs ?? 30_000;
  let closed = false;
  const states = o.servers.map((cfg): State => ({ cfg, state: "connecting", tools: [], retryIn: retry.min }));
  const changeWaiters = new Set<() => void>();
  const changed = () => {
    for (const w of changeWaiters) w();
  };

  // Only the name and where it is: a URL's query or a header may carry a token.
  const where = (st: State) => ({ server: st.cfg.name, host: new URL(st.cfg.url).host });

  const toTools = (st: State, list: McpTool[]): Tool[] =>
    list.flatMap((t) => {
      const name = `${st.cfg.name}${SEPARATOR}${t.name}`;
      if (!VALID_NAME.test(name)) {
        o.log.warn("MCP tool left out: its name is not one a model takes", { ...where(st), tool: t.name.slice(0, 80) });
        return [];
      }
      return [
        {
          source: st.cfg.name,
          name,
          description: t.description ?? t.title ?? t.name,
          parameters: t.inputSchema as Record<string, unknown>,
          run: (args, ctx) => call(st, t.name, args, ctx.signal),
        },
      ];
    });

  async function call(st: State, tool: string, args: Record<string, unknown>, signal: AbortSignal): Promise<string> {
    const client = st.client;
    if (!client || st.state !== "ready") throw new Error(`the ${st.cfg.name} server is not connected`);
    let r: Awaited<ReturnType<Client["callTool"]>>;
    try {
      // Aborting `signal` (STOP, the tool timeout) sends notifications/cancelled to the server.
      r = await client.callTool({ name: tool, arguments: args }, undefined, { signal, timeout: 24 * 3600_000 });
    } catch (e) {
      // Not an answer from the server (a refused connection, a dropped stream, no answer in time):
      // is it still there? One that does not answer a ping either is down, its tools left out.
      const timedOut = signal.aborted && (signal.reason as { name?: string } | undefined)?.name === "TimeoutError";
      if (timedOut || (!signal.aborted && !(e instanceof McpError && e.code !== -32000))) void probe(st);
      throw signal.aborted ? signal.reason : e;
    }
    const content = Array.isArray(r.content) ? r.content : [];
    const text = content.map((c) => (c.type === "text" ? c.text : JSON.stringify(c))).join("\n");
    const out = text || (r.structuredContent ? JSON.stringify(r.structuredContent) : "");
    if (r.isError) throw new Error(out || "the tool reported an error");
    return out;
  }

  /** A ready server that failed a call or a ping is asked once more; no answer: down, and reconnected later. */
  function probe(st: State): Promise<void> {
    st.probing ??= (async () => {
      try {
        await st.client?.ping({ timeout: Math.min(connectTimeoutMs, 3_000) });
      } catch (e) {
        if (st.state === "ready") down(st, e);
      } finally {
        st.probing = undefined;
      }
    })();
    return st.probing;
  }

  function down(st: State, e: unknown) {
    const was = st.state;
    st.state = "down";
    st.tools = [];
    st.error = why(e);
    const client = st.client;
    st.client = undefined;
    // Closing settles calls still waiting on it (they become error results at once).
    void client?.close().catch(() => {});
    if (was !== "down") o.log.warn("MCP server unavailable", { ...where(st), error: st.error });
    changed();
    schedule(st, st.retryIn);
    st.retryIn = Math.min(st.retryIn * 2, retry.max);
  }

  function schedule(st: State, ms: number) {
    clearTimeout(st.timer);
    if (!closed) st.timer = setTimeout(() => void connect(st), ms);
  }

  async function connect(st: State) {
    if (closed) return;
    const client = new Client(
      { name: "pichat", version: "1" },
      {
        listChanged: {
          tools: {
            debounceMs: 0,
            onChanged: (error, tools) => {
              if (st.client !== client) return;
              if (error || !tools) return void o.log.warn("MCP tool list could not be refreshed", { ...where(st) });
              st.tools = toTools(st, tools);
              o.log.info("MCP tool list changed", { ...where(st), tools: st.tools.length });
              changed();
            },
          },
        },
      },
    );
    // Nothing of the headers is logged; the transport's own errors are kept at debug level.
    client.onerror = (e) => {
      o.log.debug("MCP transport error", { ...where(st), error: why(e) });
      if (st.client === client && st.state === "ready") void probe(st);
    };
    const transport = new StreamableHTTPClientTransport(new URL(st.cfg.url), {
      requestInit: { headers: st.cfg.headers },
      reconnectionOptions: { maxRetries: 2, initialReconnectionDelay: 500, maxReconnectionDelay: 2_000, reconnectionDelayGrowFactor: 2 },
    });
    try {
      await client.connect(transport, { timeout: connectTimeoutMs });
      const list: McpTool[] = [];
      let cursor: string | undefined;
      do {
        const page = await client.listTools(cursor ? { cursor } : undefined, { timeout: connectTimeoutMs });
        list.push(...page.tools);
        cursor = page.nextCursor;
      } while (cursor && list.length < 1_000);
      if (closed) return void client.close().catch(() => {});
      st.client = client;
      st.state = "ready";
      st.error = undefined;
      st.retryIn = retry.min;
      st.tools = toTools(st, list);
      o.log.info("MCP server connected", { ...where(st), tools: st.tools.length });
      changed();
      keepAlive(st, client);
    } catch (e) {
      void client.close().catch(() => {});
      st.client = client; // so down() closes nothing twice and logs once
      st.state = st.state === "down" ? "down" : "connecting";
      down(st, e);
    }
  }

  function keepAlive(st: State, client: Client) {
    const tick = () => {
      if (closed || st.client !== client) return;
      void probe(st).then(() => {
        if (st.client === client) st.timer = setTimeout(tick, pingMs);
      });
    };
    st.timer = setTimeout(tick, pingMs);
  }

  for (const st of states) void connect(st);

  return {
    /** The tools of every server that is connected now. */
    tools: (): Tool[] => states.flatMap((st) => (st.state === "ready" ? st.tools : [])),
    status: (): McpServerStatus[] =>
      states.map((st) => ({ name: st.cfg.name, state: st.state, tools: st.tools.length, ...(st.error ? { error: st.error } : {}) })),
    /** Resolves when `ok` holds for the servers' status, false after `ms` (tests, start-up). */
    async until(ok: (s: McpServerStatus[]) => boolean, ms: number): Promise<boolean> {
      const deadline = Date.now() + ms;
      while (!ok(this.status())) {
        const left = deadline - Date.now();
        if (left <= 0) return false;
        await new Promise<void>((resolve) => {
          const t = setTimeout(done, left);
          function done() {
            clearTimeout(t);
            changeWaiters.delete(done);
            resolve();
          }
          changeWaiters.add(done);
        });
      }
      return true;
    },
    async close() {
      closed = true;
      await Promise.all(
        states.map(async (st) => {
          clearTimeout(st.timer);
          await st.client?.close().catch(() => {});
          st.client = undefined;
        }),
      );
    },
  };
}
