import OpenAI from "openai";
import { chatDeltas } from "./sse";

// A streamed Chat Completions answer of one delta, served from memory.
const CANNED = 'data: {"choices":[{"delta":{"content":"ok"}}]}\n\ndata: [DONE]\n\n';

/**
 * Runs the openai package's request path and our stream reader once, against a fetch that answers
 * from memory (nothing leaves the process): the first real request then finds the SDK's lazily
 * built parts built and its code compiled, instead of paying for them while a user waits.
 */
export async function warmModelClient(): Promise<void> {
  const client = new OpenAI({
    baseURL: "http://127.0.0.1/v1",
    apiKey: "warm-up",
    maxRetries: 0,
    fetch: async () => new Response(CANNED, { headers: { "content-type": "text/event-stream" } }),
  });
  const signal = new AbortController().signal;
  const res = await client.chat.completions
    .create({ model: "warm-up", messages: [{ role: "user", content: "warm up" }], stream: true }, { signal })
    .asResponse();
  if (res.body) for await (const _ of chatDeltas(res.body, signal));
}

/**
 * Opens a connection to the model's host ahead of the first request (DNS, TCP and TLS, through
 * Bun's `fetch.preconnect`; no HTTP request is sent), so the first reply does not wait for it.
 */
export function preconnect(url: string): void {
  try {
    fetch.preconnect(new URL(url).origin);
  } catch {
    // Only a head start: the first request connects as it always does.
  }
}
