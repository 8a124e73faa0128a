/**
 * A Chat Completions server of this process's own on loopback, answering every request with a
 * streamed answer from memory (`tokens` as its deltas, then the usage chunk, as a model sends
 * them): what a warm-up talks to instead of the model. `stop` it after.
 */
export function cannedModelServer(tokens: string[]) {
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
