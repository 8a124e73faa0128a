import type { Logger } from "../log";
import type { ToolCall } from "../model/model";
import { checkArguments } from "./arguments";
import type { McpClients } from "./mcp";
import { SEPARATOR } from "./mcp";
import type { Tool, ToolFailure, ToolOutcome } from "./tool";

// The tools a reply may use, and running the model's calls: arguments checked against the tool's
// schema, each call bounded by TOOL_TIMEOUT_MS, a long result shortened with a note, and every
// failure turned into a result the model reads (a reply never fails because a tool did).

export type ToolboxOptions = {
  builtins: readonly Tool[];
  mcp?: Pick<McpClients, "tools" | "status">;
  log: Logger;
  timeoutMs: number;
  resultMaxChars: number;
};

/** What a user turned off: a server's name (all its tools) or a tool's full name. */
export type ToolPrefs = { toolsOff?: readonly string[] };

export type Toolbox = ReturnType<typeof createToolbox>;

export function createToolbox(o: ToolboxOptions) {
  /** The tools offered in a reply now: the built-ins and every connected server's, less what the user turned off. */
  function available(prefs: ToolPrefs = {}): Tool[] {
    const off = new Set(prefs.toolsOff ?? []);
    return [...o.builtins, ...(o.mcp?.tools() ?? [])].filter((t) => !off.has(t.name) && !off.has(t.source));
  }

  /**
   * Runs one call. Resolves with its outcome in every case but one: when `signal` is aborted (a
   * STOP), the abort's reason is thrown, after the tool was told (an MCP server gets notifications/cancelled).
   */
  async function run(
    call: ToolCall,
    tools: readonly Tool[],
    ctx: { signal: AbortSignal; timeZone: string; chatId?: string },
  ): Promise<ToolOutcome> {
    const started = performance.now();
    const outcome = (ok: boolean, result: string, error?: ToolFailure): ToolOutcome => {
      const ms = Math.round(performance.now() - started);
      const out: ToolOutcome = {
        id: call.id,
        name: call.name,
        arguments: call.arguments,
        ok,
        result: shorten(result, o.resultMaxChars),
        ms,
        ...(error ? { error } : {}),
      };
      // Name, time and outcome only: arguments can hold anything the user said.
      o.log.info("tool call", { chatId: ctx.chatId, tool: call.name.slice(0, 64), ms, outcome: error ?? "ok" });
      o.log.debug("tool call arguments", { chatId: ctx.chatId, tool: call.name.slice(0, 64), arguments: call.arguments.slice(0, 2_000) });
      return out;
    };
    const tool = tools.find((t) => t.name === call.name);
    if (!tool) {
      const known = tools.map((t) => t.name).join(", ") || "none";
      const why = isServerTool(call.name) ? "its server is unavailable or it was turned off" : "there is no such tool";
      return outcome(false, `Error: unknown tool "${call.name.slice(0, 64)}" (${why}). Available tools: ${known}.`, "unknown_tool");
    }
    const checked = checkArguments(tool.parameters, call.arguments);
    if (!checked.ok)
      return outcome(false, `Error: ${checked.error}. Call ${tool.name} again with arguments that match its schema.`, "invalid_arguments");
    const timeout = AbortSignal.timeout(o.timeoutMs);
    const signal = AbortSignal.any([ctx.signal, timeout]);
    try {
      const result = await raceAbort(tool.run(checked.args, { signal, timeZone: ctx.timeZone }), signal);
      return outcome(true, result);
    } catch (e) {
      if (ctx.signal.aborted) {
        o.log.info("tool call", {
          chatId: ctx.chatId,
          tool: call.name.slice(0, 64),
          ms: Math.round(performance.now() - started),
          outcome: "cancelled",
        });
        throw ctx.signal.reason;
      }
      if (timeout.aborted) return outcome(false, `Error: the tool did not answer within ${o.timeoutMs} ms.`, "timeout");
      const unavailable = tool.source !== "builtin" && o.mcp?.status().find((s) => s.name === tool.source)?.state !== "ready";
      // A connection's failure is said in our words (the transport's could carry the URL); a tool's own error in its.
      if (unavailable) return outcome(false, `Error: the ${tool.source} server is unavailable; try again later.`, "unavailable");
      const message = e instanceof Error ? e.message : String(e);
      return outcome(false, `Error: ${message.slice(0, 1_000)}`, "failed");
    }
  }

  /**
   * Every tool there is now (built-ins and connected servers'), each marked `off` when the user
   * turned it or its server off, and every configured server with its state: what a settings
   * screen needs to let a user choose.
   */
  function catalogue(prefs: ToolPrefs = {}) {
    const off = new Set(prefs.toolsOff ?? []);
    const tools = [...o.builtins, ...(o.mcp?.tools() ?? [])].map((t) => ({
      name: t.name,
      description: t.description,
      source: t.source,
      off: off.has(t.name) || off.has(t.source),
    }));
    const servers = (o.mcp?.status() ?? []).map((s) => ({ name: s.name, state: s.state, tools: s.tools, off: off.has(s.name) }));
    return { tools, servers };
  }

  return { available, run, catalogue };
}

const isServerTool = (name: string) => name.includes(SEPARATOR);

/** A result past `max` characters keeps its start, with a note the model reads. */
export function shorten(text: string, max: number): string {
  if (text.length <= max) return text;
  return `${text.slice(0, max)}\n[result shortened: the first ${max} of ${text.length} characters are shown]`;
}

/** Settles when the tool does or the signal aborts, whichever is first (a tool that ignores its signal cannot hold a reply). */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
