// The Chat Completions stream, read straight off the response body: Server-Sent Events, one JSON
// chunk per `data:` line. The openai SDK's own stream reader costs about 7 µs per chunk against
// about 1 µs here (docs/performance.md, issue 15); everything else about the request (URL, auth,
// Azure's api-version, retries, HTTP errors) stays the SDK's.

import type { ToolCallDelta } from "./tool-calls";

const decoder = () => new TextDecoder("utf-8");

/**
 * Text deltas in order. Ends at `data: [DONE]` or at the end of the body; an `error` event throws.
 * Once `signal` is aborted nothing more is handed on, not even deltas already read (one read can
 * hold many), and the abort's reason is thrown.
 */
export async function* chatDeltas(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
  /** Each streamed tool-call piece, in order (src/model/tool-calls.ts puts them together). */
  onToolCall?: (d: ToolCallDelta) => void,
  /** The service's token count, from the usage chunk it sends last when asked (stream_options.include_usage). */
  onUsage?: (u: { promptTokens: number; completionTokens: number }) => void,
): AsyncGenerator<string> {
  const text = decoder();
  let carry = "";
  for await (const bytes of body as unknown as AsyncIterable<Uint8Array>) {
    // Decoding the whole read at once (a multi-byte character split across reads is kept by the
    // decoder in stream mode); lines are then cut from the string.
    const chunk = carry + text.decode(bytes, { stream: true });
    let start = 0;
    for (;;) {
      const end = chunk.indexOf("\n", start);
      if (end < 0) break;
      const line = chunk.charCodeAt(end - 1) === 13 ? chunk.slice(start, end - 1) : chunk.slice(start, end);
      start = end + 1;
      const delta = deltaOf(line, onToolCall, onUsage);
      if (delta === DONE) return;
      if (delta) {
        signal?.throwIfAborted();
        yield delta;
      }
    }
    carry = chunk.slice(start);
  }
  const last = deltaOf(carry + text.decode(), onToolCall, onUsage);
  if (last && last !== DONE) yield last;
}

const DONE = Symbol("done");

/** The content of one SSE line, DONE for the end marker, undefined for anything else (comments, event names, role-only chunks). */
function deltaOf(
  line: string,
  onToolCall?: (d: ToolCallDelta) => void,
  onUsage?: (u: { promptTokens: number; completionTokens: number }) => void,
): string | typeof DONE | undefined {
  if (!line.startsWith("data:")) return undefined;
  const data = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
  if (data === "[DONE]") return DONE;
  let parsed: {
    choices?: { delta?: { content?: unknown; tool_calls?: unknown } }[];
    error?: { message?: unknown };
    usage?: { prompt_tokens?: unknown; completion_tokens?: unknown } | null;
  };
  try {
    parsed = JSON.parse(data);
  } catch {
    throw new StreamError("the model sent a chunk that is not JSON");
  }
  if (parsed.error) throw new StreamError("the model reported an error mid-stream");
  const u = parsed.usage;
  if (u && onUsage && Number.isSafeInteger(u.prompt_tokens) && Number.isSafeInteger(u.completion_tokens))
    onUsage({ promptTokens: u.prompt_tokens as number, completionTokens: u.completion_tokens as number });
  const delta = parsed.choices?.[0]?.delta;
  if (onToolCall && Array.isArray(delta?.tool_calls)) for (const t of delta.tool_calls) if (t && typeof t === "object") onToolCall(t);
  const content = delta?.content;
  return typeof content === "string" && content.length > 0 ? content : undefined;
}

/** The stream itself was bad (not the HTTP request): mapped to MODEL_ERROR by the model. */
export class StreamError extends Error {
  override name = "StreamError";
}
