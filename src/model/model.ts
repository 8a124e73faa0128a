import * as v from "valibot";

export const TurnSchema = v.object({
  role: v.picklist(["system", "user", "assistant"]),
  content: v.string(),
});
export type Turn = v.InferOutput<typeof TurnSchema>;

export type ModelKind = "azure-openai" | "openai-compatible" | "offline";

/** A function the model may call: its name, what it does, and its arguments as a JSON schema. */
export type ToolSpec = { name: string; description: string; parameters: Record<string, unknown> };
/** One call the model asked for, assembled from the stream; `arguments` is the model's JSON text, unchecked. */
export type ToolCall = { id: string; name: string; arguments: string };

/** What a model request carries: the chat's turns, and within a reply's tool rounds the calls and their results. */
export type ModelTurn =
  | Turn
  | { role: "assistant"; content: string; tool_calls: ToolCall[] }
  | { role: "tool"; tool_call_id: string; content: string };

/** Tokens the model service says one call used (its `usage`, sent last when asked for). */
export type ReportedUsage = { promptTokens: number; completionTokens: number };

/** Who a model call is for and why: the usage record it becomes (src/chat/usage.ts). */
export type UsageTag = {
  userId: string;
  chatId: string;
  /** The reply's id (a title: its first reply's); several calls for one reply (tool rounds) are numbered. */
  messageId: string;
  kind: "reply" | "regeneration" | "title" | "device";
};

export type StreamOptions = {
  signal: AbortSignal;
  temperature?: number;
  model?: string;
  /** Whose call this is; a metered model records it (src/chat/usage.ts). */
  usage?: UsageTag;
  /** Told the service's own count, when it sends one (after the last delta). */
  onUsage?: (u: ReportedUsage) => void;
  /** Functions offered to the model; a model server that refuses them is asked without (and remembered). */
  tools?: ToolSpec[];
  /** "none": the tools are shown (earlier rounds used them) but the model must answer in text. */
  toolChoice?: "none";
  /** Called once, after the last delta, with the calls the model asked for (none: not called). */
  onToolCalls?: (calls: ToolCall[]) => void;
};

/** A streaming chat model: yields text deltas in order; aborting the signal cancels upstream. */
export type Model = {
  readonly kind: ModelKind;
  readonly name: string;
  stream(turns: ModelTurn[], options: StreamOptions): AsyncIterable<string>;
};

/** Thrown for upstream failures; `code` is the ERROR frame code, `message` is safe to show. */
export class ModelError extends Error {
  override name = "ModelError";
  constructor(
    readonly code: "MODEL_ERROR" | "MODEL_TIMEOUT",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
