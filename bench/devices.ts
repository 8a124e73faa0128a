import { now, within } from "./lib/clock";
import { spawnChild } from "./lib/proc";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { percentile, round, summarize } from "./lib/stats";
import { startIotHubPeer, type C2DMessage, type IotHubPeer } from "../test/support/amqp-peer";
import { makeLocalhostCert } from "../test/support/tls-cert";

// Replies in parts vs one message, same run, same server: devices ask through the local AMQP peer
// (playing IoT Hub), the real server answers with a paced model (first token after FIRST_MS, then
// TOKENS_PER_S, REPLY_TOKENS tokens in sentences of SENTENCE tokens). For each reply: the first and
// last C2D message's arrival at the peer from the telemetry's enqueued time, the messages per reply,
// and how long after the model wrote its first sentence's full stop the first part arrived.
// The paced model runs in this process, so its clock is the peer's.

const REPLIES = Number(process.env.BENCH_DEVICES_REPLIES ?? 16); // per kind of device
const CONCURRENCY = Number(process.env.BENCH_DEVICES_CONCURRENCY ?? 8);
const FIRST_MS = 300;
const TOKENS_PER_S = 30;
const REPLY_TOKENS = 300;
const SENTENCE = 15;
const PARTITIONS = 2;

type Timing = { asked: number; sentence?: number; done?: number };

/** An OpenAI-compatible model, paced: `<id>` in the question names the reply whose times it records. */
function pacedModel() {
  const times = new Map<string, Timing>();
  const enc = new TextEncoder();
  const HEAD = 'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"paced","choices":[{"index":0,"delta":';
  const chunk = (content: string) => enc.encode(`${HEAD}{"content":${JSON.stringify(content)}},"finish_reason":null}]}\n\n`);
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    idleTimeout: 0,
    async fetch(req) {
      const body = (await req.json()) as { messages: { role: string; content: string }[] };
      const id = /<([^>]+)>/.exec(body.messages.findLast((m) => m.role === "user")?.content ?? "")?.[1] ?? "";
      const t = times.get(id);
      return new Response(
        new ReadableStream({
          type: "direct",
          async pull(c) {
            const start = now();
            for (let i = 0; i < REPLY_TOKENS; i++) {
              // Paced against the clock, not by sleeps that add up.
              const due = start + FIRST_MS + (i * 1000) / TOKENS_PER_S;
              if (due > now()) await Bun.sleep(due - now());
              if (req.signal.aborted) return;
              const end = i % SENTENCE === SENTENCE - 1;
              c.write(chunk(`${i % SENTENCE === 0 ? (i === 0 ? "Word" : " Word") : " word"}${end ? "." : ""}`));
              c.flush();
              if (end && t && t.sentence === undefined) t.sentence = now();
            }
            c.write(enc.encode(`${HEAD}{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n`));
            c.close();
            if (t) t.done = now();
          },
        }),
        { headers: { "content-type": "text/event-stream" } },
      );
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, times, stop: () => server.stop(true) };
}

const correlation = (m: C2DMessage) => String(m.raw.correlation_id ?? "");

export const scenario: Scenario = {
  name: "devices",
  title: "device replies in parts vs one message: first C2D, last C2D, messages per reply",
  timeoutMs: 300_000,
  async run() {
    const cert = await makeLocalhostCert();
    const model = pacedModel();
    const peer: IotHubPeer = await startIotHubPeer({ tls: cert, partitions: PARTITIONS });
    const app = await spawnChild("servers/app.ts", {
      name: "app",
      env: {
        BENCH_APP_ENV: JSON.stringify({
          OPENAI_BASE_URL: `${model.url}/v1`,
          OPENAI_MODEL: "paced",
          CHAT_TITLES: "false",
          IOT_HUB_ENABLE: "true",
          EVENT_HUB_COMPATIBLE_CONN_STR: peer.eventHubConnectionString,
          IOT_HUB_CONNECTION_STRING: peer.iotHubConnectionString,
          // Latency, not the budget, is measured here (the budget's own behaviour is tested).
          IOT_HUB_C2D_PER_MINUTE: "100000",
          DEVICE_REPLY_DEADLINE_S: "60",
          DEVICE_REPLY_MAX_AGE_S: "120",
        }),
        BENCH_DEVICES: JSON.stringify({ certPath: cert.certPath, partitions: PARTITIONS }),
      },
    });
    try {
      type Result = { parts: boolean; first: number; last: number; messages: number; lag?: number; total: number };
      const results: Result[] = [];
      const ask = async (n: number, parts: boolean) => {
        const id = `${parts ? "p" : "o"}-${n}-${crypto.randomUUID().slice(0, 8)}`;
        const deviceId = `bench-${id}`;
        const t: Timing = { asked: now() };
        model.times.set(id, t);
        const last = peer.waitForC2D((m) => correlation(m) === id && (!parts || (m.body as { last?: boolean }).last === true), 60_000);
        peer.sendTelemetry({
          deviceId,
          messageId: id,
          contentType: "application/json",
          body: { message: `tell me about it <${id}>`, ...(parts ? { reply_in_parts: true } : {}) },
        });
        await last;
        const arrived = peer.c2d.filter((m) => correlation(m) === id);
        const at = (m: C2DMessage) => m.at;
        const first = at(arrived[0]!);
        results.push({
          parts,
          first: first - t.asked,
          last: at(arrived.at(-1)!) - t.asked,
          messages: arrived.length,
          lag: t.sentence === undefined ? undefined : first - t.sentence,
          total: (t.done ?? Number.NaN) - t.asked,
        });
      };
      // Warm-up: the C2D link, the SDKs' paths, the tokenizer.
      await Promise.all([ask(-1, true), ask(-2, false)]);
      results.length = 0;
      // Parts and one-message devices interleaved, CONCURRENCY replies at a time.
      const jobs = Array.from({ length: 2 * REPLIES }, (_, i) => () => ask(i, i % 2 === 0));
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          for (let job = jobs.shift(); job; job = jobs.shift()) await job();
        }),
      );

      const parts = results.filter((r) => r.parts);
      const one = results.filter((r) => !r.parts);
      const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
      const p95 = (xs: number[]) => percentile(sorted(xs), 95);
      const pf = summarize(parts.map((r) => r.first));
      const of = summarize(one.map((r) => r.first));
      const lag95 = p95(parts.map((r) => r.lag ?? Number.NaN));
      const msgs95 = p95(parts.map((r) => r.messages));
      const sentence = summarize(parts.map((r) => r.first - (r.lag ?? 0)));
      const rows: Row[] = [
        {
          metric: "first C2D, parts device (p50)",
          unit: "ms",
          ours: pf.p50,
          baseline: of.p50,
          ratio: ratio(pf.p50, of.p50),
          better: "lower",
          note: `baseline: a one-message device, same run; the model's first sentence ends at ${round(sentence.p50, 0)} ms (p50)`,
        },
        {
          metric: "first C2D, parts device (p95)",
          unit: "ms",
          ours: p95(parts.map((r) => r.first)),
          baseline: p95(one.map((r) => r.first)),
          ratio: ratio(p95(parts.map((r) => r.first)), p95(one.map((r) => r.first))),
          better: "lower",
        },
        {
          metric: "first part after the model's first sentence (p95)",
          unit: "ms",
          ours: lag95,
          target: "≤ 150",
          met: lag95 <= 150,
          note: "from the model writing the sentence's full stop to the C2D message accepted by the hub",
        },
        {
          metric: "C2D messages per reply, parts device (p95)",
          unit: "msgs",
          ours: msgs95,
          target: "≤ 4",
          met: msgs95 <= 4,
          note: `max ${Math.max(...parts.map((r) => r.messages))}; a one-message device: ${Math.max(...one.map((r) => r.messages))}`,
        },
        {
          metric: "last C2D, parts device (p50)",
          unit: "ms",
          ours: summarize(parts.map((r) => r.last)).p50,
          baseline: summarize(one.map((r) => r.last)).p50,
          ratio: ratio(summarize(parts.map((r) => r.last)).p50, summarize(one.map((r) => r.last)).p50),
          better: "lower",
          note: `the model's whole reply: ${round(summarize(results.map((r) => r.total)).p50, 0)} ms (p50)`,
        },
      ];
      return {
        rows,
        data: {
          replies: REPLIES,
          concurrency: CONCURRENCY,
          model: { firstMs: FIRST_MS, tokensPerS: TOKENS_PER_S, tokens: REPLY_TOKENS, sentenceTokens: SENTENCE },
          parts: { first: pf, lagP95: lag95, messagesP95: msgs95 },
          one: { first: of },
        },
      };
    } finally {
      await within(app.stop(), 10_000, "the server to stop").catch(() => {});
      await peer.stop();
      model.stop();
    }
  },
};

if (import.meta.main) await runAlone(scenario);
