import { now, sleep, within } from "./lib/clock";
import { cpuWindow, spawnChild, type Child } from "./lib/proc";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { median, round, summarize } from "./lib/stats";
import { closeAll, openMany, request, seedChat } from "./lib/ws";

// 1. Request/response: N clients each loop GET_CHAT_HISTORY on a chat of 20 messages (closed loop:
// the next request leaves when the reply arrives). Beside it, the echo baseline answers the same
// request frame with a prebuilt reply of the same size. Rounds alternate baseline/ours so drift on
// a shared machine hits both sides alike.

const CLIENTS = (process.env.BENCH_RR_CLIENTS ?? "1,50,200").split(",").map(Number);
const ROUNDS = Number(process.env.BENCH_RR_ROUNDS ?? 3);
const ROUND_MS = Number(process.env.BENCH_RR_ROUND_MS ?? 2500);
const WARMUP_MS = 500;

type Loop = { replies: number; seconds: number; latencies: number[]; errors: number; cpu: Record<string, number> };

/** Runs the closed loop on fresh sockets: warm-up, then a measured window, then a bounded drain. */
async function loop(url: string, clients: number, frame: string, expectPrefix: string, server: Child): Promise<Loop> {
  const sockets = await openMany(url, clients, 50);
  let recording = false;
  let stopping = false;
  let replies = 0;
  let errors = 0;
  let outstanding = 0;
  const latencies: number[] = [];
  const sentAt = new Float64Array(clients);
  sockets.forEach((ws, i) => {
    ws.onmessage = (e) => {
      const t = now();
      outstanding--;
      if (recording) {
        replies++;
        latencies.push(t - sentAt[i]!);
        if (!(e.data as string).startsWith(expectPrefix)) errors++;
      }
      if (stopping) return;
      sentAt[i] = now();
      outstanding++;
      ws.send(frame);
    };
  });
  for (let i = 0; i < clients; i++) {
    sentAt[i] = now();
    outstanding++;
    sockets[i]!.send(frame);
  }
  await sleep(WARMUP_MS);
  const cpu = cpuWindow([{ name: "server", cpuSeconds: () => server.cpuSeconds() }]);
  const t0 = now();
  recording = true;
  await sleep(ROUND_MS);
  recording = false;
  const seconds = (now() - t0) / 1000;
  const used = cpu();
  stopping = true;
  const deadline = Date.now() + 5000;
  while (outstanding > 0 && Date.now() < deadline) await sleep(5);
  closeAll(sockets);
  return { replies, seconds, latencies, errors, cpu: used };
}

export const scenario: Scenario = {
  name: "request-response",
  title: "GET_CHAT_HISTORY (20 messages) in a closed loop vs an echo of the same size",
  timeoutMs: 180_000,
  async run() {
    const sse = await spawnChild<{ url: string }>("servers/sse-model.ts", { name: "sse-model" });
    const app = await spawnChild<{ ws: string }>("servers/app.ts", {
      name: "app",
      env: { BENCH_APP_ENV: JSON.stringify({ OPENAI_BASE_URL: `${sse.info.url}/v1`, OPENAI_MODEL: "bench" }) },
    });
    const base = await spawnChild<{ url: string }>("servers/baseline.ts", { name: "baseline" });
    try {
      // A chat of 20 messages: 10 questions, 10 answers of 80 tokens.
      const { chatId, ws } = await seedChat(app.info.ws, { name: "bench history", pairs: 10, tokens: 80 });
      const history = await request(ws, { type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY");
      ws.close();
      if (history.messages.length !== 20) throw new Error(`the seeded chat has ${history.messages.length} messages, not 20`);
      const replyBytes = Buffer.byteLength(JSON.stringify(history));
      const frame = JSON.stringify({ type: "GET_CHAT_HISTORY", chatId });
      await sse.stop();

      const rows: Row[] = [];
      const data: Record<string, unknown> = { replyBytes, requestBytes: frame.length, rounds: ROUNDS, roundMs: ROUND_MS, byClients: {} };
      for (const clients of CLIENTS) {
        const ours: Loop[] = [];
        const baseline: Loop[] = [];
        for (let r = 0; r < ROUNDS; r++) {
          const order = r % 2 === 0 ? (["baseline", "ours"] as const) : (["ours", "baseline"] as const);
          for (const side of order) {
            const res =
              side === "ours"
                ? await loop(app.info.ws, clients, frame, '{"type":"CHAT_HISTORY"', app)
                : await loop(`${base.info.url}/echo?bytes=${replyBytes}`, clients, frame, '{"type":"ECHO"', base);
            (side === "ours" ? ours : baseline).push(res);
            console.log(`   ${clients} clients, ${side}: ${Math.round(res.replies / res.seconds)} msg/s, cpu ${JSON.stringify(res.cpu)}`);
          }
        }
        const agg = (ls: Loop[]) => {
          const lat = summarize(ls.flatMap((l) => l.latencies));
          return {
            serverCpuUsPerReply: Number.NaN,
            msgsPerS: median(ls.map((l) => l.replies / l.seconds)),
            perRound: ls.map((l) => round(l.replies / l.seconds, 0)),
            latencyMs: { p50: round(lat.p50), p99: round(lat.p99), max: round(lat.max), n: lat.n },
            errors: ls.reduce((s, l) => s + l.errors, 0),
            cpuPercent: ls.map((l) => l.cpu),
          };
        };
        const o = agg(ours);
        const b = agg(baseline);
        (data.byClients as Record<string, unknown>)[clients] = { ours: o, baseline: b };
        const r = ratio(o.msgsPerS, b.msgsPerS);
        const cpuNote = (x: ReturnType<typeof agg>) =>
          `server ${x.cpuPercent.map((c) => c.server).join("/")}%, client ${x.cpuPercent.map((c) => c.bench).join("/")}%`;
        // Server CPU time per reply: what one request costs the server, whatever else shares the machine.
        const usPerReply = (ls: Loop[]) => median(ls.map((l) => ((l.cpu.server! / 100) * l.seconds * 1e6) / l.replies));
        o.serverCpuUsPerReply = round(usPerReply(ours), 1);
        b.serverCpuUsPerReply = round(usPerReply(baseline), 1);
        rows.push({
          metric: `${clients} client${clients > 1 ? "s" : ""}: replies/s`,
          unit: "msg/s",
          ours: o.msgsPerS,
          baseline: b.msgsPerS,
          ratio: r,
          better: "higher",
          target: "≥ 0.5× baseline",
          met: r >= 0.5,
          note: `cpu ours: ${cpuNote(o)}; base: ${cpuNote(b)}${o.errors ? `; ${o.errors} non-history replies` : ""}`,
        });
        rows.push({
          metric: `${clients} client${clients > 1 ? "s" : ""}: server CPU per reply`,
          unit: "µs",
          ours: o.serverCpuUsPerReply,
          baseline: b.serverCpuUsPerReply,
          ratio: ratio(o.serverCpuUsPerReply, b.serverCpuUsPerReply),
          better: "lower",
          note: "CPU time of the server process ÷ replies (from /proc, 10 ms ticks)",
        });
        rows.push({
          metric: `${clients} client${clients > 1 ? "s" : ""}: latency p50`,
          unit: "ms",
          ours: o.latencyMs.p50,
          baseline: b.latencyMs.p50,
          ratio: ratio(o.latencyMs.p50, b.latencyMs.p50),
          better: "lower",
        });
        rows.push({
          metric: `${clients} client${clients > 1 ? "s" : ""}: latency p99`,
          unit: "ms",
          ours: o.latencyMs.p99,
          baseline: b.latencyMs.p99,
          ratio: ratio(o.latencyMs.p99, b.latencyMs.p99),
          better: "lower",
        });
      }
      rows.unshift({ metric: "reply frame size (both sides)", unit: "B", ours: replyBytes, baseline: replyBytes });
      return { rows, data };
    } finally {
      await within(Promise.all([app.stop(), base.stop(), sse.stop()]), 20_000, "servers to stop").catch(() => {});
    }
  },
};

if (import.meta.main) await runAlone(scenario);
