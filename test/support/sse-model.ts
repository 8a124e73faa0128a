// A local OpenAI-compatible server that streams Chat Completions as Server-Sent Events, on both
// the OpenAI path (/v1/chat/completions) and the Azure path
// (/openai/deployments/<name>/chat/completions?api-version=...). Behaviour is scripted per request.

export type Script = {
  tokens?: string[];
  /** Pause before each token. */
  delayMs?: number;
  /** Cut the connection after this many tokens (no [DONE]). */
  dropAfter?: number;
  /** Stop sending after this many tokens but keep the connection open. */
  hangAfter?: number;
  /** Answer with this HTTP status and an error body instead of a stream. */
  status?: number;
  /** After this many tokens, wait for `release()` before sending the rest: a reply held in flight. */
  holdAfter?: number;
  /** Send nothing at all, not even the response headers, until the client gives up. */
  silent?: boolean;
  /**
   * After the tokens, ask for these function calls, streamed as Azure OpenAI does: a chunk with empty
   * `choices` (prompt_filter_results) first, then per call a chunk with its index, id, type and name
   * (arguments ""), then the arguments in pieces of `argPiece` characters under the same index, and
   * finish_reason "tool_calls". `interleave` sends the calls' argument pieces in turn instead.
   */
  toolCalls?: { id?: string; name: string; arguments: string }[];
  argPiece?: number;
  interleave?: boolean;
  /** Answer 400 (as a server without function calling does) to any request that offers tools. */
  rejectTools?: boolean;
  /**
   * The usage chunk sent last when the request asks for it (stream_options.include_usage), as
   * OpenAI does: these counts, or by default one prompt token per 4 characters of the messages
   * and one completion token per streamed token. `false`: never sent, even when asked.
   */
  usage?: { prompt_tokens: number; completion_tokens: number } | false;
};

export type ModelRequest = {
  url: string;
  path: string;
  headers: Record<string, string>;
  body: any;
  aborted: boolean;
  /** The usage chunk this server sent for the request, if it sent one. */
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
};

export async function startSseModel(defaultScript: Script = { tokens: ["Hello", ",", " world", "!"] }) {
  let script: (req: ModelRequest) => Script = () => defaultScript;
  const requests: ModelRequest[] = [];
  const abortWaiters = new Set<() => void>();
  const streams = new Set<ReadableStreamDefaultController>();
  // Streams waiting at their holdAfter point, and the gate that lets them all go.
  const held = new Set<ModelRequest>();
  const heldWaiters = new Set<() => void>();
  let gate = Promise.withResolvers<void>();

  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    idleTimeout: 0,
    async fetch(req) {
      const url = new URL(req.url);
      if (req.method !== "POST" || !/\/chat\/completions$/.test(url.pathname)) return new Response("not found", { status: 404 });
      const record: ModelRequest = {
        url: req.url,
        path: url.pathname,
        headers: Object.fromEntries(req.headers),
        body: await req.json(),
        aborted: false,
      };
      requests.push(record);
      req.signal.addEventListener("abort", () => {
        record.aborted = true;
        for (const w of abortWaiters) w();
      });
      const s = script(record);
      const aborted = new Promise<void>((resolve) => {
        if (req.signal.aborted) resolve();
        else req.signal.addEventListener("abort", () => resolve(), { once: true });
      });
      if (s.silent) {
        await aborted;
        return new Response(null, { status: 499 });
      }
      if (s.rejectTools && record.body.tools) {
        return Response.json(
          { error: { message: "tools is not supported", type: "invalid_request_error", param: "tools" } },
          { status: 400 },
        );
      }
      if (s.status) return Response.json({ error: { message: "scripted failure", type: "server_error" } }, { status: s.status });
      const tokens = s.tokens ?? defaultScript.tokens ?? [];
      const enc = new TextEncoder();
      const chunk = (delta: object, finish: string | null = null) =>
        enc.encode(
          `data: ${JSON.stringify({
            id: "chatcmpl-test",
            object: "chat.completion.chunk",
            created: Math.floor(Date.now() / 1000),
            model: record.body.model ?? "test",
            choices: [{ index: 0, delta, finish_reason: finish }],
          })}\n\n`,
        );
      const raw = (o: object) =>
        enc.encode(
          `data: ${JSON.stringify({ id: "chatcmpl-test", object: "chat.completion.chunk", created: Math.floor(Date.now() / 1000), model: record.body.model ?? "test", ...o })}\n\n`,
        );
      const toolChunks = (calls: NonNullable<Script["toolCalls"]>) => {
        const piece = s.argPiece ?? 4;
        const out: Uint8Array[] = [raw({ choices: [], prompt_filter_results: [{ prompt_index: 0, content_filter_results: {} }] })];
        const pieces = calls.map((c) => {
          const p: string[] = [];
          for (let i = 0; i < c.arguments.length; i += piece) p.push(c.arguments.slice(i, i + piece));
          return p;
        });
        const head = (c: (typeof calls)[number], index: number) =>
          chunk({
            content: null,
            role: "assistant",
            tool_calls: [
              {
                index,
                id: c.id ?? `call_${index}_${crypto.randomUUID().slice(0, 8)}`,
                type: "function",
                function: { name: c.name, arguments: "" },
              },
            ],
          });
        const arg = (index: number, a: string) => chunk({ tool_calls: [{ index, function: { arguments: a } }] });
        if (s.interleave) {
          calls.forEach((c, i) => void out.push(head(c, i)));
          const longest = Math.max(...pieces.map((p) => p.length));
          for (let k = 0; k < longest; k++) pieces.forEach((p, i) => p[k] !== undefined && out.push(arg(i, p[k]!)));
        } else {
          calls.forEach((c, i) => {
            out.push(head(c, i));
            for (const a of pieces[i]!) out.push(arg(i, a));
          });
        }
        return out;
      };
      const stream = new ReadableStream({
        async start(controller) {
          streams.add(controller);
          try {
            controller.enqueue(chunk({ role: "assistant", content: "" }));
            for (let i = 0; i < tokens.length; i++) {
              if (s.dropAfter !== undefined && i >= s.dropAfter) return controller.error(new Error("scripted drop"));
              if (s.hangAfter !== undefined && i >= s.hangAfter) return; // never closes
              if (s.holdAfter === i) {
                const open = gate.promise;
                held.add(record);
                for (const w of heldWaiters) w();
                // An abort (a stop, a shutdown) ends the hold too, as it would end a live model's stream.
                await Promise.race([open, aborted]);
                held.delete(record);
              }
              if (s.delayMs) await Bun.sleep(s.delayMs);
              if (req.signal.aborted) return;
              controller.enqueue(chunk({ content: tokens[i] }));
            }
            // The usage chunk (empty choices) after the finish, when asked for.
            const usage = () => {
              if (!record.body.stream_options?.include_usage || s.usage === false) return;
              const chars = (record.body.messages as { content?: string | null }[]).reduce((n, m) => n + (m.content ?? "").length, 0);
              const u = s.usage ?? { prompt_tokens: Math.ceil(chars / 4), completion_tokens: tokens.length };
              record.usage = { ...u, total_tokens: u.prompt_tokens + u.completion_tokens };
              controller.enqueue(
                enc.encode(
                  `data: ${JSON.stringify({ id: "chatcmpl-test", object: "chat.completion.chunk", choices: [], usage: record.usage })}\n\n`,
                ),
              );
            };
            if (s.toolCalls?.length) {
              for (const c of toolChunks(s.toolCalls)) controller.enqueue(c);
              controller.enqueue(chunk({}, "tool_calls"));
              usage();
              controller.enqueue(enc.encode("data: [DONE]\n\n"));
              return controller.close();
            }
            controller.enqueue(chunk({}, "stop"));
            usage();
            controller.enqueue(enc.encode("data: [DONE]\n\n"));
            controller.close();
          } catch {
            // the client went away
          } finally {
            streams.delete(controller);
          }
        },
      });
      return new Response(stream, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } });
    },
  });

  return {
    url: `http://127.0.0.1:${server.port}`,
    requests,
    setScript(s: Script | ((req: ModelRequest) => Script)) {
      script = typeof s === "function" ? s : () => s;
    },
    /** Resolves when some request has been aborted by the client. */
    waitForAbort(timeoutMs = 5000): Promise<ModelRequest> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const r = requests.find((x) => x.aborted);
          if (r) {
            clearTimeout(timer);
            abortWaiters.delete(check);
            resolve(r);
          }
        };
        const timer = setTimeout(() => {
          abortWaiters.delete(check);
          reject(new Error("no model request was aborted in time"));
        }, timeoutMs);
        abortWaiters.add(check);
        check();
      });
    },
    /** Resolves once `n` streams wait at their `holdAfter` point, with those requests. */
    waitHeld(n = 1, timeoutMs = 5000): Promise<ModelRequest[]> {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (held.size < n) return;
          clearTimeout(timer);
          heldWaiters.delete(check);
          resolve([...held]);
        };
        const timer = setTimeout(() => {
          heldWaiters.delete(check);
          reject(new Error(`${held.size} of ${n} model streams held in time`));
        }, timeoutMs);
        heldWaiters.add(check);
        check();
      });
    },
    /** Lets every held stream go on; streams that reach their hold later wait for the next release. */
    release() {
      const open = gate;
      gate = Promise.withResolvers<void>();
      open.resolve();
    },
    stop: () => server.stop(true),
  };
}

/** The last user turn of a model request: which question it answers. */
export const lastUserTurn = (req: ModelRequest): string =>
  [...(req.body?.messages ?? [])].reverse().find((m: { role: string }) => m.role === "user")?.content ?? "";
export type SseModel = Awaited<ReturnType<typeof startSseModel>>;
