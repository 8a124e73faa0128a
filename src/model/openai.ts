import { getBearerTokenProvider, type TokenCredential } from "@azure/identity";
import OpenAI, { AzureOpenAI } from "openai";
import { ModelError, type Model, type ModelKind, type StreamOptions, type Turn } from "./model";

type ClientOptions = { timeoutMs: number };

const COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default";

/** With `apiKey`, key auth; otherwise a Microsoft Entra token from `credential` on every request. */
export function azureOpenAIModel(o: ClientOptions & { endpoint: string; apiKey?: string; credential?: TokenCredential; apiVersion: string; deployment: string }): Model {
  const auth = o.apiKey
    ? { apiKey: o.apiKey }
    : { azureADTokenProvider: getBearerTokenProvider(o.credential!, COGNITIVE_SERVICES_SCOPE) };
  const client = new AzureOpenAI({
    endpoint: o.endpoint, apiVersion: o.apiVersion, deployment: o.deployment, ...auth,
    timeout: o.timeoutMs, maxRetries: 1,
  });
  return chatCompletionsModel("azure-openai", client, o.deployment);
}

export function openAICompatibleModel(o: ClientOptions & { baseURL: string; apiKey?: string; model: string }): Model {
  // Local servers (Ollama, llama.cpp) take no key, but the SDK insists on one.
  const client = new OpenAI({ baseURL: o.baseURL, apiKey: o.apiKey ?? "unused", timeout: o.timeoutMs, maxRetries: 1 });
  return chatCompletionsModel("openai-compatible", client, o.model);
}

function chatCompletionsModel(kind: ModelKind, client: OpenAI, name: string): Model {
  return {
    kind,
    name,
    async *stream(turns: Turn[], { signal, temperature, model }: StreamOptions) {
      let stream;
      try {
        stream = await client.chat.completions.create(
          { model: model ?? name, messages: turns, stream: true, ...(temperature === undefined ? {} : { temperature }) },
          { signal },
        );
      } catch (e) {
        throw toModelError(e, signal);
      }
      try {
        for await (const chunk of stream) {
          const delta = chunk.choices[0]?.delta?.content;
          if (delta) yield delta;
        }
      } catch (e) {
        throw toModelError(e, signal);
      }
    },
  };
}

// Upstream messages can echo request details; keep only the status and a generic reason.
function toModelError(e: unknown, signal: AbortSignal): unknown {
  if (signal.aborted) return signal.reason ?? e;
  if (e instanceof OpenAI.APIConnectionTimeoutError) return new ModelError("MODEL_TIMEOUT", "the model did not answer in time", { cause: e });
  if (e instanceof OpenAI.APIError && e.status) {
    return new ModelError("MODEL_ERROR", `the model service answered HTTP ${e.status}`, { cause: e });
  }
  return new ModelError("MODEL_ERROR", "the model service failed or the connection dropped", { cause: e });
}
