import { alternate, closedLoop, isHistory } from "./lib/loops";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { envList, ROUND_MS, ROUNDS, startApp, startBare, startModel, stopAll, WARMUP_MS } from "./lib/sides";
import { request, seedChat } from "./lib/ws";

// Issue 15, history: N clients loop GET_CHAT_HISTORY on a chat of 20 messages (closed loop), ours
// against the bare protocol server answering the same frame from memory with the very messages our
// server returned (same JSON shape, same bytes: parse, look up, serialise, send). Rounds alternate.

const CLIENTS = envList("BENCH_LIMIT_HISTORY_CLIENTS", "10,50");

export const scenario: Scenario = {
  name: "limit-history",
  title: "GET_CHAT_HISTORY (20 messages) vs the bare protocol server from memory",
  timeoutMs: 240_000,
  async run() {
    const sse = await startModel();
    const app = await startApp(sse);
    const bare = await startBare();
    try {
      const { chatId, ws } = await seedChat(app.info.ws, { name: "bench history", pairs: 10, tokens: 80 });
      const history = await request(ws, { type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY");
      ws.close();
      if (history.messages.length !== 20) throw new Error(`the seeded chat has ${history.messages.length} messages, not 20`);
      await bare.call("seed", { chat: { id: chatId }, messages: history.messages });
      const frame = JSON.stringify({ type: "GET_CHAT_HISTORY", chatId });
      // Both sides must answer with the same frame, byte for byte in size.
      const bws = new WebSocket(bare.info.url);
      await new Promise((r) => bws.addEventListener("open", r, { once: true }));
      const bareReply = await request(bws, { type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY");
      bws.close();
      const bytes = { ours: Buffer.byteLength(JSON.stringify(history)), bare: Buffer.byteLength(JSON.stringify(bareReply)) };
      if (bytes.ours !== bytes.bare) throw new Error(`the frames differ in size: ours ${bytes.ours} B, bare ${bytes.bare} B`);

      const rows: Row[] = [{ metric: "CHAT_HISTORY frame (both sides)", unit: "B", ours: bytes.ours, baseline: bytes.bare }];
      const data: Record<string, unknown> = { bytes, rounds: ROUNDS, roundMs: ROUND_MS, byClients: {} };
      for (const clients of CLIENTS) {
        const loop = (url: string, server: typeof app | typeof bare) => () =>
          closedLoop({ url, clients, frame: () => frame, classify: isHistory, server, warmupMs: WARMUP_MS, roundMs: ROUND_MS });
        const r = await alternate(ROUNDS, { bare: loop(bare.info.url, bare), ours: loop(app.info.ws, app) }, `${clients} clients`);
        (data.byClients as Record<string, unknown>)[clients] = r;
        const x = ratio(r.ours.perS, r.bare.perS);
        const label = `history, ${clients} clients`;
        rows.push({
          metric: `${label}: replies/s`,
          unit: "/s",
          ours: r.ours.perS,
          baseline: r.bare.perS,
          ratio: x,
          better: "higher",
          target: "≥ 0.5× bare",
          met: x >= 0.5,
          note: `server cpu ours ${r.ours.serverCpuPercent.join("/")}%, bare ${r.bare.serverCpuPercent.join("/")}%${r.ours.errors ? `; ${r.ours.errors} errors: ${r.ours.firstError}` : ""}`,
        });
        rows.push({
          metric: `${label}: server CPU per reply`,
          unit: "µs",
          ours: r.ours.serverCpuUs,
          baseline: r.bare.serverCpuUs,
          ratio: ratio(r.ours.serverCpuUs, r.bare.serverCpuUs),
          better: "lower",
        });
        rows.push({
          metric: `${label}: latency p50`,
          unit: "ms",
          ours: r.ours.latencyMs.p50,
          baseline: r.bare.latencyMs.p50,
          ratio: ratio(r.ours.latencyMs.p50, r.bare.latencyMs.p50),
          better: "lower",
        });
        rows.push({
          metric: `${label}: latency p99`,
          unit: "ms",
          ours: r.ours.latencyMs.p99,
          baseline: r.bare.latencyMs.p99,
          ratio: ratio(r.ours.latencyMs.p99, r.bare.latencyMs.p99),
          better: "lower",
        });
      }
      return { rows, data };
    } finally {
      await stopAll([app, bare, sse]);
    }
  },
};

if (import.meta.main) await runAlone(scenario);
