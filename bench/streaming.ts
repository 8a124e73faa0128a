import { now, sleep, within } from "./lib/clock";
import { spawnChild } from "./lib/proc";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { median, round, summarize } from "./lib/stats";
import { closeAll, openMany, request } from "./lib/ws";

// 2. Streaming: SEND_MESSAGE whose model streams 500 tokens, delivered through the server to a
// WebSocket client, beside the baseline of a client reading the same local SSE server's stream
// directly with fetch. Two ways of running the model:
//
//  - burst: the model writes the 500 tokens as fast as it can. Gives tokens/s delivered, time to
//    first token (from the client's send), and the amortised cost per token: the difference of the
//    two whole-stream times divided by the tokens.
//  - paced: a token every PACE_MS (well under what either path can carry), each token carrying the
//    time it was written. Gives the per-token latency from the model's write to the client, both
//    ways; "added per token" is ours minus direct at the same percentile.
//
// Then the same with 20 generations at once (20 sockets, 20 chats; 20 concurrent fetches).

const TOKENS = Number(process.env.BENCH_STREAM_TOKENS ?? 500);
const REPEATS = Number(process.env.BENCH_STREAM_REPEATS ?? 5);
const CONCURRENT = Number(process.env.BENCH_STREAM_CONCURRENT ?? 20);
const PACE_MS = 1;
const SLOW_PACE_MS = 5;

export type Stream = { sentAt: number; recv: number[]; stamps: number[]; tokens: number };

/** The model's own stream, read with fetch: the time each token arrived and the time it was written. */
export async function direct(sseUrl: string, prompt: string): Promise<Stream> {
  const sentAt = now();
  const res = await fetch(`${sseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "bench", stream: true, messages: [{ role: "user", content: prompt }] }),
  });
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  const s: Stream = { sentAt, recv: [], stamps: [], tokens: 0 };
  let buf = "";
  for (;;) {
    const { done, value } = await reader.read();
    const t = now();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
      const content = JSON.parse(event.slice(6)).choices?.[0]?.delta?.content;
      if (!content) continue;
      s.recv.push(t);
      s.stamps.push(Number(content));
      s.tokens++;
    }
  }
  return s;
}

/** The same through the server: SEND_MESSAGE on a fresh chat, every MESSAGE delta timed on arrival. */
export async function ours(ws: WebSocket, prompt: string): Promise<Stream> {
  const { chat } = await request(ws, { type: "CREATE_CHAT", name: "bench stream" }, "NEW_CHAT");
  const s: Stream = { sentAt: 0, recv: [], stamps: [], tokens: 0 };
  const done = new Promise<void>((resolve, reject) => {
    ws.onmessage = (e) => {
      const t = now();
      const f = JSON.parse(e.data as string);
      if (f.type === "MESSAGE" && f.chatId === chat.id) {
        if (f.end) {
          ws.onmessage = null;
          return f.reason ? reject(new Error(`the reply ended with ${f.reason}`)) : resolve();
        }
        s.recv.push(t);
        s.stamps.push(Number(f.content));
        s.tokens++;
      } else if (f.type === "ERROR") reject(new Error(JSON.stringify(f)));
    };
  });
  s.sentAt = now();
  ws.send(JSON.stringify({ type: "SEND_MESSAGE", chatId: chat.id, content: prompt }));
  await within(done, 30_000, "the streamed reply");
  return s;
}

type Figures = {
  tokensPerS: number;
  ttftMs: number;
  totalMs: number;
  interArrivalMs: { p50: number; p99: number };
  latencyMs: { p50: number; p99: number; max: number };
};
export function figures(streams: Stream[], offsetMs: number): Figures {
  const gaps: number[] = [];
  const lat: number[] = [];
  for (const s of streams) {
    for (let i = 1; i < s.recv.length; i++) gaps.push(s.recv[i]! - s.recv[i - 1]!);
    for (let i = 0; i < s.recv.length; i++) lat.push(s.recv[i]! - (s.stamps[i]! - offsetMs));
  }
  const g = summarize(gaps);
  const l = summarize(lat);
  const first = Math.min(...streams.map((s) => s.sentAt));
  const last = Math.max(...streams.map((s) => s.recv.at(-1) ?? s.sentAt));
  const tokens = streams.reduce((n, s) => n + s.tokens, 0);
  return {
    tokensPerS: tokens / ((last - first) / 1000),
    ttftMs: median(streams.map((s) => (s.recv[0] ?? Number.NaN) - s.sentAt)),
    totalMs: last - first,
    interArrivalMs: { p50: round(g.p50, 4), p99: round(g.p99, 4) },
    latencyMs: { p50: round(l.p50, 4), p99: round(l.p99, 4), max: round(l.max, 4) },
  };
}

export const scenario: Scenario = {
  name: "streaming",
  title: `SEND_MESSAGE streaming ${TOKENS} tokens vs reading the SSE stream directly`,
  timeoutMs: 180_000,
  async run() {
    const sse = await spawnChild<{ url: string }>("servers/sse-model.ts", { name: "sse-model" });
    const app = await spawnChild<{ ws: string }>("servers/app.ts", {
      name: "app",
      // BENCH_CHECKPOINT_MS: how often replies are checkpointed (REPLY_CHECKPOINT_MS; 60000 ≈ only the first save).
      env: {
        BENCH_APP_ENV: JSON.stringify({
          OPENAI_BASE_URL: `${sse.info.url}/v1`,
          OPENAI_MODEL: "bench",
          ...(process.env.BENCH_CHECKPOINT_MS ? { REPLY_CHECKPOINT_MS: process.env.BENCH_CHECKPOINT_MS } : {}),
        }),
      },
    });
    const sockets = await openMany(app.info.ws, CONCURRENT, 20);
    try {
      const offset = await sse.clockOffsetMs();
      const check = (s: Stream[], tokens: number) => {
        for (const x of s) if (x.tokens !== tokens) throw new Error(`a stream delivered ${x.tokens} tokens, not ${tokens}`);
        return s;
      };
      const run = async (mode: "burst" | "paced", concurrency: number, repeats: number, pace = PACE_MS, tokens = TOKENS) => {
        const prompt = `tokens=${tokens} stamp${mode === "paced" ? ` delay=${pace}` : ""}`;
        const d: Stream[][] = [];
        const o: Stream[][] = [];
        // Warm-up, not recorded: the first request of each side pays for connection set-up and JIT.
        await Promise.all(sockets.slice(0, concurrency).map((ws) => ours(ws, `tokens=20 stamp`)));
        await direct(sse.info.url, "tokens=20 stamp");
        for (let r = 0; r < repeats; r++) {
          for (const side of r % 2 === 0 ? (["direct", "ours"] as const) : (["ours", "direct"] as const)) {
            const streams =
              side === "direct"
                ? await Promise.all(Array.from({ length: concurrency }, () => direct(sse.info.url, prompt)))
                : await Promise.all(sockets.slice(0, concurrency).map((ws) => ours(ws, prompt)));
            (side === "direct" ? d : o).push(check(streams, tokens));
            await sleep(20);
          }
        }
        // Throughput and first token: the median over repeats; latencies: every token of every repeat.
        const per = (runs: Stream[][]) => {
          const each = runs.map((x) => figures(x, offset));
          const all = figures(runs.flat(), offset);
          return {
            ...all,
            tokensPerS: median(each.map((f) => f.tokensPerS)),
            ttftMs: median(each.map((f) => f.ttftMs)),
            totalMs: median(each.map((f) => f.totalMs)),
          };
        };
        return { direct: per(d), ours: per(o), repeats };
      };

      // A one-token reply gives each path's fixed cost (for ours: the store operations and the model
      // request), so the marginal cost of a token is what the 500-token stream adds on top of it.
      const single = {
        burst: await run("burst", 1, REPEATS),
        paced: await run("paced", 1, Math.max(2, Math.ceil(REPEATS / 2))),
        one: await run("burst", 1, REPEATS, PACE_MS, 1),
      };
      const multi = {
        burst: await run("burst", CONCURRENT, Math.max(2, Math.ceil(REPEATS / 2))),
        paced: await run("paced", CONCURRENT, 2),
        one: await run("burst", CONCURRENT, Math.max(2, Math.ceil(REPEATS / 2)), PACE_MS, 1),
      };
      // At 1 ms per token, 20 streams are 20,000 tokens/s arriving in step (one timer paces them all);
      // a fast real model streams 50-200 tokens/s. The same at 5 ms per token (4,000 tokens/s in all):
      const slow = await run("paced", CONCURRENT, 2, SLOW_PACE_MS);

      const rows: Row[] = [];
      const add = (label: string, x: typeof single, streams: number) => {
        const b = x.burst;
        const p = x.paced;
        const marginal = (side: "ours" | "direct") => (b[side].totalMs - x.one[side].totalMs) / ((TOKENS - 1) * streams);
        rows.push({
          metric: `${label}: tokens/s delivered (burst)`,
          unit: "tok/s",
          ours: b.ours.tokensPerS,
          baseline: b.direct.tokensPerS,
          ratio: ratio(b.ours.tokensPerS, b.direct.tokensPerS),
          better: "higher",
          note: `${TOKENS} tokens per stream, median of ${x.burst.repeats} runs`,
        });
        rows.push({
          metric: `${label}: time to first token (burst)`,
          unit: "ms",
          ours: b.ours.ttftMs,
          baseline: b.direct.ttftMs,
          ratio: ratio(b.ours.ttftMs, b.direct.ttftMs),
          better: "lower",
          note: "ours includes storing the question and the model request",
        });
        rows.push({
          metric: `${label}: time per token, marginal (burst)`,
          unit: "µs",
          ours: marginal("ours") * 1000,
          baseline: marginal("direct") * 1000,
          ratio: ratio(marginal("ours"), marginal("direct")),
          better: "lower",
          note: `(${TOKENS}-token stream − 1-token stream) ÷ ${streams > 1 ? `${TOKENS - 1} × ${streams}` : TOKENS - 1} tokens`,
        });
        rows.push({
          metric: `${label}: token latency p50 (paced ${PACE_MS} ms)`,
          unit: "ms",
          ours: p.ours.latencyMs.p50,
          baseline: p.direct.latencyMs.p50,
          ratio: ratio(p.ours.latencyMs.p50, p.direct.latencyMs.p50),
          better: "lower",
          note: `added: ${round(p.ours.latencyMs.p50 - p.direct.latencyMs.p50)} ms`,
        });
        const added99 = p.ours.latencyMs.p99 - p.direct.latencyMs.p99;
        rows.push({
          metric: `${label}: token latency p99 (paced ${PACE_MS} ms)`,
          unit: "ms",
          ours: p.ours.latencyMs.p99,
          baseline: p.direct.latencyMs.p99,
          ratio: ratio(p.ours.latencyMs.p99, p.direct.latencyMs.p99),
          better: "lower",
          target: "< 1 ms added",
          met: added99 < 1,
          note: `added: ${round(added99)} ms`,
        });
      };
      add("1 stream", single, 1);
      add(`${CONCURRENT} streams`, multi, CONCURRENT);
      const added = slow.ours.latencyMs.p99 - slow.direct.latencyMs.p99;
      rows.push({
        metric: `${CONCURRENT} streams: token latency p99 (paced ${SLOW_PACE_MS} ms)`,
        unit: "ms",
        ours: slow.ours.latencyMs.p99,
        baseline: slow.direct.latencyMs.p99,
        ratio: ratio(slow.ours.latencyMs.p99, slow.direct.latencyMs.p99),
        better: "lower",
        target: "< 1 ms added",
        met: added < 1,
        note: `added: ${round(added)} ms (p50 added ${round(slow.ours.latencyMs.p50 - slow.direct.latencyMs.p50)} ms)`,
      });
      return {
        rows,
        data: {
          tokens: TOKENS,
          paceMs: PACE_MS,
          clockOffsetMs: offset,
          single,
          concurrent: { streams: CONCURRENT, ...multi, pacedSlow: { paceMs: SLOW_PACE_MS, ...slow } },
        },
      };
    } finally {
      closeAll(sockets);
      await within(Promise.all([app.stop(), sse.stop()]), 20_000, "servers to stop").catch(() => {});
    }
  },
};

if (import.meta.main) await runAlone(scenario);
