import { sleep } from "./lib/clock";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { round } from "./lib/stats";
import { envNumber, startApp, startBare, startModel, stopAll } from "./lib/sides";
import { closeAll, openMany } from "./lib/ws";
import { direct, figures, ours as viaSocket, type Stream } from "./streaming";

// Issue 15, paced streams: STREAMS replies at once, the model writing a token every PACE_MS, each
// token stamped with the time it was written. Three ways of reading them, in alternating order:
// the model's SSE stream read directly with fetch (no server: the floor), through the bare server
// forwarding the openai package's stream, and through ours. "Added" is a path's token latency
// minus the direct read's at the same percentile (bench/streaming.ts's definition).

const STREAMS = envNumber("BENCH_LIMIT_STREAMS", 20);
const TOKENS = envNumber("BENCH_LIMIT_STREAM_TOKENS", 200);
const REPEATS = envNumber("BENCH_LIMIT_STREAM_REPEATS", 3);
const PACE_MS = 1;

export const scenario: Scenario = {
  name: "limit-streams",
  title: `${STREAMS} concurrent streams at ${PACE_MS} ms per token: added latency per token`,
  timeoutMs: 240_000,
  async run() {
    const sse = await startModel();
    const app = await startApp(sse);
    const bare = await startBare(sse);
    const oursWs = await openMany(app.info.ws, STREAMS, 20);
    const bareWs = await openMany(bare.info.url, STREAMS, 20);
    try {
      const offset = await sse.clockOffsetMs();
      const prompt = `tokens=${TOKENS} stamp delay=${PACE_MS}`;
      const sides = {
        direct: () => Promise.all(Array.from({ length: STREAMS }, () => direct(sse.info.url, prompt))),
        bare: () => Promise.all(bareWs.map((ws) => viaSocket(ws, prompt))),
        ours: () => Promise.all(oursWs.map((ws) => viaSocket(ws, prompt))),
      };
      // Warm-up, not recorded: the first request of each side pays for connections and JIT.
      await Promise.all(oursWs.map((ws) => viaSocket(ws, "tokens=20 stamp")));
      await Promise.all(bareWs.map((ws) => viaSocket(ws, "tokens=20 stamp")));
      await direct(sse.info.url, "tokens=20 stamp");
      const names = Object.keys(sides) as (keyof typeof sides)[];
      const runs = { direct: [] as Stream[][], bare: [] as Stream[][], ours: [] as Stream[][] };
      for (let r = 0; r < REPEATS; r++) {
        for (let j = 0; j < names.length; j++) {
          const side = names[(j + r) % names.length]!;
          const streams = await sides[side]();
          for (const s of streams)
            if (s.tokens !== TOKENS) throw new Error(`${side}: a stream delivered ${s.tokens} tokens, not ${TOKENS}`);
          runs[side].push(streams);
          await sleep(20);
        }
      }
      const f = {
        direct: figures(runs.direct.flat(), offset),
        bare: figures(runs.bare.flat(), offset),
        ours: figures(runs.ours.flat(), offset),
      };
      const added = (side: "bare" | "ours", p: "p50" | "p99") => round(f[side].latencyMs[p] - f.direct.latencyMs[p]);
      const label = `${STREAMS} streams, ${PACE_MS} ms pacing`;
      const rows: Row[] = [
        {
          metric: `${label}: token latency p50`,
          unit: "ms",
          ours: f.ours.latencyMs.p50,
          baseline: f.bare.latencyMs.p50,
          ratio: ratio(f.ours.latencyMs.p50, f.bare.latencyMs.p50),
          better: "lower",
          note: `direct read ${f.direct.latencyMs.p50} ms; added: ours ${added("ours", "p50")} ms, bare ${added("bare", "p50")} ms`,
        },
        {
          metric: `${label}: token latency p99`,
          unit: "ms",
          ours: f.ours.latencyMs.p99,
          baseline: f.bare.latencyMs.p99,
          ratio: ratio(f.ours.latencyMs.p99, f.bare.latencyMs.p99),
          better: "lower",
          note: `direct read ${f.direct.latencyMs.p99} ms`,
        },
        {
          metric: `${label}: added per token at p99`,
          unit: "ms",
          ours: added("ours", "p99"),
          baseline: added("bare", "p99"),
          better: "lower",
          target: "< 1 ms",
          met: added("ours", "p99") < 1,
          note: `over the direct SSE read; ${REPEATS} runs × ${STREAMS} streams × ${TOKENS} tokens each side`,
        },
      ];
      return { rows, data: { streams: STREAMS, tokens: TOKENS, paceMs: PACE_MS, repeats: REPEATS, clockOffsetMs: offset, ...f } };
    } finally {
      closeAll(oursWs);
      closeAll(bareWs);
      await stopAll([app, bare, sse]);
    }
  },
};

if (import.meta.main) await runAlone(scenario);
