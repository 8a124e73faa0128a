import OpenAI from "openai";
import { chatDeltas } from "./sse";

/**
 * A Chat Completions server of this process's own on loopback, answering every request with a
 * streamed answer from memory (`tokens` as its deltas, then the usage chunk, as a model sends
 * them): what a warm-up talks to instead of the model. `stop` it after.
 */
export function cannedModelServer(tokens: string[] = ["ok"]) {
  const body =
    tokens.map((t) => `data: ${JSON.stringify({ choices: [{ delta: { content: t } }] })}\n\n`).join("") +
    'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n' +
    "data: [DONE]\n\n";
  return Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: () => new Response(body, { headers: { "content-type": "text/event-stream" } }),
  });
}

/**
 * Runs the openai package's request path and our stream reader once, over the runtime's real
 * `fetch`, against `cannedModelServer` (nothing reaches the model): the first real request then
 * finds the SDK's lazily built parts built, the runtime's HTTP client started and the code
 * compiled, instead of paying for them while a user waits.
 */
export async function warmModelClient(): Promise<void> {
  const server = cannedModelServer();
  try {
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${server.port}/v1`, apiKey: "warm-up", maxRetries: 0, timeout: 10_000 });
    const signal = new AbortController().signal;
    const res = await client.chat.completions
      .create(
        { model: "warm-up", messages: [{ role: "user", content: "warm up" }], stream: true, stream_options: { include_usage: true } },
        { signal },
      )
      .asResponse();
    if (res.body) for await (const _ of chatDeltas(res.body, signal, undefined, () => {}));
  } finally {
    server.stop(true);
  }
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
