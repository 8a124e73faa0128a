import { now } from "./lib/clock";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { envNumber, startApp, startBare, startModel, stopAll, type Sse } from "./lib/sides";
import { median } from "./lib/stats";
import { nextFrame, openSocket, request } from "./lib/ws";

// The first send after a fresh start against a warm one: each start is a new server process (ready
// as soon as it reports ready), one socket, one named chat, then sends one after another; the time
// to the reply's first chunk (the first MESSAGE delta) is taken for the first send and for the
// WARM sends after it. What a first send loads on first use (a tokenizer table, a lazy import, a
// connection to the model) shows as the first send's excess. The bare forwarder (bench/servers/bare.ts),
// started fresh the same way, shows what the runtime, the openai package and the model server cost.

const STARTS = envNumber("BENCH_FIRST_CHUNK_STARTS", 5);
const WARM = envNumber("BENCH_FIRST_CHUNK_WARM", 10);
const TOKENS = 20;

type Side = { ws: string; stop(): Promise<void> };

/** Milliseconds from SEND_MESSAGE to the reply's first delta, then to its end (waited for, not timed). */
async function firstChunk(ws: WebSocket, chatId: string, k: number): Promise<number> {
  const first = nextFrame(ws, (f) => (f.type === "MESSAGE" && !f.end) || f.type === "ERROR", 30_000, "the first chunk");
  const end = nextFrame(ws, (f) => (f.type === "MESSAGE" && f.end) || f.type === "ERROR", 30_000, "the reply's end");
  const t0 = now();
  ws.send(
    JSON.stringify({
      type: "SEND_MESSAGE",
      chatId,
      content: `Question ${k + 1}: what will the weather be like tomorrow? tokens=${TOKENS}`,
    }),
  );
  const f = await first;
  const ms = now() - t0;
  if (f.type === "ERROR") throw new Error(`send failed: ${JSON.stringify(f)}`);
  await end;
  return ms;
}

/** One fresh start: the first send's first chunk, and the median of the warm sends after it. */
async function oneStart(start: () => Promise<Side>): Promise<{ fresh: number; warm: number }> {
  const side = await start();
  try {
    const ws = await openSocket(side.ws);
    const { chat } = await request(ws, { type: "CREATE_CHAT", name: "bench first chunk" }, "NEW_CHAT");
    const fresh = await firstChunk(ws, chat.id, 0);
    const warm: number[] = [];
    for (let k = 1; k <= WARM; k++) warm.push(await firstChunk(ws, chat.id, k));
    ws.close();
    return { fresh, warm: median(warm) };
  } finally {
    await side.stop();
  }
}

async function starts(start: () => Promise<Side>) {
  const fresh: number[] = [];
  const warm: number[] = [];
  for (let i = 0; i < STARTS; i++) {
    const r = await oneStart(start);
    fresh.push(r.fresh);
    warm.push(r.warm);
  }
  return { fresh: median(fresh), warm: median(warm), freshAll: fresh, warmAll: warm };
}

const ours = (sse: Sse) => async (): Promise<Side> => {
  const app = await startApp(sse);
  return { ws: app.info.ws, stop: () => stopAll([app]) };
};
const bare = (sse: Sse) => async (): Promise<Side> => {
  const b = await startBare(sse);
  return { ws: b.info.url, stop: () => stopAll([b]) };
};

export const scenario: Scenario = {
  name: "first-chunk",
  title: `first chunk of the first send after a fresh start vs a warm send (${STARTS} starts, ${WARM} warm sends each)`,
  timeoutMs: 300_000,
  async run() {
    const sse = await startModel();
    try {
      const o = await starts(ours(sse));
      const b = await starts(bare(sse));
      const x = ratio(o.fresh, o.warm);
      const rows: Row[] = [
        {
          metric: "first chunk after a fresh start ÷ warm (ours)",
          unit: "ms",
          ours: o.fresh,
          baseline: o.warm,
          ratio: x,
          better: "lower",
          target: "≤ 2× warm",
          met: x <= 2,
          note: `median of ${STARTS} starts; baseline column: our warm sends' median`,
        },
        {
          metric: "first chunk after a fresh start (ours vs bare)",
          unit: "ms",
          ours: o.fresh,
          baseline: b.fresh,
          ratio: ratio(o.fresh, b.fresh),
          better: "lower",
          note: `bare fresh ÷ warm ${ratio(b.fresh, b.warm).toFixed(2)}× (${b.fresh.toFixed(1)} / ${b.warm.toFixed(1)} ms)`,
        },
        {
          metric: "first chunk, warm (ours vs bare)",
          unit: "ms",
          ours: o.warm,
          baseline: b.warm,
          ratio: ratio(o.warm, b.warm),
          better: "lower",
        },
      ];
      return { rows, data: { starts: STARTS, warmSends: WARM, tokens: TOKENS, ours: o, bare: b } };
    } finally {
      await stopAll([sse]);
    }
  },
};

if (import.meta.main) await runAlone(scenario);
