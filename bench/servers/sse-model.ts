import { now } from "../lib/clock";
import { serveChild } from "../lib/proc";

// The local model: an OpenAI-compatible Chat Completions server streaming Server-Sent Events, as
// fast as it can unless told otherwise. The script is read from the last user message, so the bench
// steers each request through the real server without a side channel:
//
//   tokens=N    stream N tokens (default 5)
//   delay=D     pause D ms before each token (default 0: a burst)
//   stamp       each token's text is the time it was written (ms, sub-ms precision), so a client can
//               tell how long each token took to reach it
//
// Each token is written and flushed on its own, as a real model server does.

let requests = 0;
const enc = new TextEncoder();
const HEAD = 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench","choices":[{"index":0,"delta":';
const TAIL = ',"finish_reason":null}]}\n\n';
const chunk = (content: string) => enc.encode(`${HEAD}{"content":${JSON.stringify(content)}}${TAIL}`);
const FIRST = enc.encode(`${HEAD}{"role":"assistant","content":""}${TAIL}`);
const LAST = enc.encode(`${HEAD}{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n`);
const FINISH = enc.encode(`${HEAD}{},"finish_reason":"stop"}]}\n\n`);
const DONE = enc.encode("data: [DONE]\n\n");
/** The usage chunk OpenAI sends last when asked (stream_options.include_usage): a rough count, as the bench needs no more. */
const usageChunk = (prompt: number, completion: number) =>
  enc.encode(
    `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench","choices":[],"usage":{"prompt_tokens":${prompt},"completion_tokens":${completion},"total_tokens":${prompt + completion}}}\n\n`,
  );

const server = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  idleTimeout: 0,
  async fetch(req) {
    const url = new URL(req.url);
    if (req.method !== "POST" || !url.pathname.endsWith("/chat/completions")) return new Response("not found", { status: 404 });
    requests++;
    const body = (await req.json()) as { messages?: { role: string; content: string }[]; stream_options?: { include_usage?: boolean } };
    const withUsage = body.stream_options?.include_usage === true;
    const last = body.messages?.findLast((m) => m.role === "user")?.content ?? "";
    const tokens = Number(/tokens=(\d+)/.exec(last)?.[1] ?? 5);
    const delay = Number(/delay=(\d+(?:\.\d+)?)/.exec(last)?.[1] ?? 0);
    const stamp = /\bstamp\b/.test(last);
    return new Response(
      new ReadableStream({
        type: "direct",
        async pull(controller) {
          controller.write(FIRST);
          controller.flush();
          for (let i = 0; i < tokens; i++) {
            if (delay > 0) await Bun.sleep(delay);
            if (req.signal.aborted) break;
            controller.write(chunk(stamp ? ` ${now().toFixed(3)}` : " word"));
            controller.flush();
          }
          if (withUsage) {
            const chars = (body.messages ?? []).reduce((n, m) => n + m.content.length, 0);
            controller.write(FINISH);
            controller.write(usageChunk(Math.ceil(chars / 4), tokens));
            controller.write(DONE);
          } else controller.write(LAST);
          controller.close();
        },
      }),
      { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } },
    );
  },
});

serveChild(
  { url: `http://127.0.0.1:${server.port}`, port: server.port },
  {
    requests: () => requests,
    stop: () => server.stop(true),
  },
);
