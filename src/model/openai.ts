import { getBearerTokenProvider, type TokenCredential } from "@azure/identity";
import OpenAI, { AzureOpenAI } from "openai";
import { ModelError, type Model, type ModelKind, type ModelTurn, type StreamOptions, type ToolSpec } from "./model";
import { chatDeltas } from "./sse";
import { toolCallAssembler } from "./tool-calls";

type ClientOptions = { timeoutMs: number };

const COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default";

/** With `apiKey`, key auth; otherwise a Microsoft Entra token from `credential` on every request. */
export function azureOpenAIModel(
  o: ClientOptions & { endpoint: string; apiKey?: string; credential?: TokenCredential; apiVersion: string; deployment: string },
): Model {
  const auth = o.apiKey ? { apiKey: o.apiKey } : { azureADTokenProvider: getBearerTokenProvider(o.credential!, COGNITIVE_SERVICES_SCOPE) };
  const client = new AzureOpenAI({
    endpoint: o.endpoint,
    apiVersion: o.apiVersion,
    deployment: o.deployment,
    ...auth,
    timeout: o.timeoutMs,
    maxRetries: 1,
  });
  return chatCompletionsModel("azure-openai", client, o.deployment);
}

export function openAICompatibleModel(o: ClientOptions & { baseURL: string; apiKey?: string; model: string }): Model {
  // Local servers (Ollama, llama.cpp) take no key, but the SDK insists on one.
  const client = new OpenAI({ baseURL: o.baseURL, apiKey: o.apiKey ?? "unused", timeout: o.timeoutMs, maxRetries: 1 });
  return chatCompletionsModel("openai-compatible", client, o.model);
}

/**
 * The SDK makes the request (URL, auth, Azure's api-version, retries, HTTP errors); the body is
 * read by src/model/sse.ts: the SDK's stream reader was most of a send's CPU (issue 15).
 */
function chatCompletionsModel(kind: ModelKind, client: OpenAI, name: string): Model {
  // Model names whose server answered 400 to a request with tools: asked without them from then on.
  const noTools = new Set<string>();
  return {
    kind,
    name,
    async *stream(turns: ModelTurn[], { signal, temperature, model, tools, toolChoice, onToolCalls, onUsage }: StreamOptions) {
      const target = model ?? name;
      const offer = tools?.length && !noTools.has(target) ? tools : undefined;
      const request = (withTools: ToolSpec[] | undefined) =>
        client.chat.completions
          .create(
            {
              model: target,
              messages: withTools ? turns.map(toApiTurn) : withoutToolTurns(turns),
              stream: true,
              // The service's own token count, in one last chunk (Azure OpenAI and OpenAI send it).
              ...(onUsage ? { stream_options: { include_usage: true } } : {}),
              ...(temperature === undefined ? {} : { temperature }),
              ...(withTools ? { tools: withTools.map((t) => ({ type: "function" as const, function: t })) } : {}),
              ...(withTools && toolChoice ? { tool_choice: toolChoice } : {}),
            },
            { signal },
          )
          .asResponse();
      let body: ReadableStream<Uint8Array> | null;
      try {
        try {
          body = (await request(offer)).body;
        } catch (e) {
          if (!(offer && refusesTools(e)) || signal.aborted) throw e;
          noTools.add(target);
          body = (await request(undefined)).body;
        }
      } catch (e) {
        throw toModelError(e, signal);
      }
      if (!body) throw new ModelError("MODEL_ERROR", "the model service answered without a body");
      const calls = toolCallAssembler();
      try {
        yield* chatDeltas(body, signal, offer && !toolChoice ? calls.add : undefined, onUsage);
        signal.throwIfAborted();
      } catch (e) {
        throw toModelError(e, signal);
      } finally {
        // Stopped early (an abort, a consumer that left): the connection is not read to the end.
        await body.cancel().catch(() => {});
      }
      const asked = calls.calls();
      if (asked.length) onToolCalls?.(asked);
    },
  };
}

/**
 * A 400 about the tools themselves (Ollama's "does not support tools", vLLM's tool-choice flag, a
 * `param: "tools"`), not one about something else in a request that happened to offer them.
 */
function refusesTools(e: unknown): boolean {
  if (!(e instanceof OpenAI.APIError) || e.status !== 400) return false;
  return /tool|function/i.test(`${e.param ?? ""} ${e.message}`);
}

/** A turn in the Chat Completions shape: an assistant's calls as `{id, type: "function", function}`. */
function toApiTurn(t: ModelTurn): OpenAI.ChatCompletionMessageParam {
  if (t.role === "tool") return t;
  if ("tool_calls" in t) {
    return {
      role: "assistant",
      content: t.content || null,
      tool_calls: t.tool_calls.map((c) => ({ id: c.id, type: "function" as const, function: { name: c.name, arguments: c.arguments } })),
    };
  }
  return { role: t.role, content: t.content };
}

/** A server that takes no tools is shown earlier rounds' calls and results as plain text turns. */
function withoutToolTurns(turns: ModelTurn[]): OpenAI.ChatCompletionMessageParam[] {
  return turns.map(
    (t): OpenAI.ChatCompletionMessageParam =>
      t.role === "tool" ? { role: "user", content: `[tool result] ${t.content}` } : { role: t.role, content: t.content },
  );
}

// Upstream messages can echo request details; keep only the status and a generic reason.
function toModelError(e: unknown, signal: AbortSignal): unknown {
  if (signal.aborted) return signal.reason ?? e;
  if (e instanceof OpenAI.APIConnectionTimeoutError)
    return new ModelError("MODEL_TIMEOUT", "the model did not answer in time", { cause: e });
  if (e instanceof OpenAI.APIError && e.status) {
    return new ModelError("MODEL_ERROR", `the model service answered HTTP ${e.status}`, { cause: e });
  }
  return new ModelError("MODEL_ERROR", "the model service failed or the connection dropped", { cause: e });
}
