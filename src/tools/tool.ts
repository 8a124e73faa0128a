import type { ToolSpec } from "../model/model";

/** What a tool is told about the call: when to give up, and whose clock it is. */
export type ToolContext = { signal: AbortSignal; timeZone: string };

/** A function the model may call. `source` is "builtin" or the MCP server's name. */
export type Tool = ToolSpec & {
  source: string;
  /** The result as text for the model; a thrown error becomes an error result the model sees. */
  run(args: Record<string, unknown>, ctx: ToolContext): Promise<string>;
};

/** Why a call gave no result: each is shown to the model as the call's result. */
export type ToolFailure = "unknown_tool" | "invalid_arguments" | "timeout" | "failed" | "unavailable";

/**
 * One call as it ran: stored with the reply, shown to clients. `result` is what the model was
 * given (shortened past TOOL_RESULT_MAX_CHARS, with a note saying so).
 */
export type ToolOutcome = {
  id: string;
  name: string;
  arguments: string;
  ok: boolean;
  result: string;
  error?: ToolFailure;
  ms: number;
};
