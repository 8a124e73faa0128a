import { runAlone, type Row, type Scenario } from "./lib/report";
import { envNumber, startApp, startModel, stopAll } from "./lib/sides";
import { nextFrame, openSocket, request } from "./lib/ws";
import { EMULATOR_KEY, measureCost, startCountingCosmos } from "./store-cost";

// Issue 15 on Cosmos: what one SEND_MESSAGE (its reply included) and one GET_CHAT_HISTORY cost the
// store, on the Cosmos test server (@vercel/cosmosdb-server, counting every HTTP request it gets, as
// bench/store-cost.ts does). Two counts: our store operations (the server's own /metrics) and the
// requests the Cosmos server received, with the SDK's query-plan requests (one beside every query,
// even a single-partition one; see docs/performance.md, "Store cost") shown apart.

const N = envNumber("BENCH_LIMIT_COSMOS_N", 10);
const TOKENS = envNumber("BENCH_LIMIT_SEND_TOKENS", 20);

export const scenario: Scenario = {
  name: "limit-cosmos",
  title: "store operations and Cosmos requests per SEND_MESSAGE and per GET_CHAT_HISTORY",
  timeoutMs: 180_000,
  async run() {
    const cosmos = await startCountingCosmos();
    const sse = await startModel();
    const app = await startApp(sse, {
      COSMOS_ENDPOINT: cosmos.endpoint,
      COSMOS_KEY: EMULATOR_KEY,
      COSMOS_DATABASE: `pichat-limit-${crypto.randomUUID().slice(0, 8)}`,
      COSMOS_ALLOW_SELF_SIGNED_CERT: "true",
      // The orphan sweep (a finalizeStale every half lease) is not part of any command: at the
      // longest lease it runs at start-up and then every 150 s, outside the counted windows.
      REPLY_LEASE_MS: "300000",
    });
    const ws = await openSocket(app.info.ws);
    try {
      if (app.info.store !== "cosmos") throw new Error(`the server uses ${app.info.store}, not Cosmos`);
      const metricsUrl = `${app.info.url}/metrics`;
      const { chat } = await request(ws, { type: "CREATE_CHAT", name: "bench cosmos" }, "NEW_CHAT");
      const send = async (i: number) => {
        const end = nextFrame(
          ws,
          (f) => (f.type === "MESSAGE" && f.chatId === chat.id && f.end) || f.type === "ERROR",
          15_000,
          "the reply's end",
        );
        ws.send(JSON.stringify({ type: "SEND_MESSAGE", chatId: chat.id, content: `question ${i} tokens=${TOKENS}` }));
        const f = await end;
        if (f.type === "ERROR" || f.reason) throw new Error(`SEND_MESSAGE failed: ${JSON.stringify(f)}`);
      };
      const history = async () => void (await request(ws, { type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY"));
      // Two warm-ups (the SDK reads container metadata once), then N counted.
      const measure = (command: string, step: (i: number) => Promise<void>) =>
        measureCost({ metricsUrl, cosmos, n: N, warmups: 2 }, command, step);
      const s = await measure("SEND_MESSAGE", send);
      const h = await measure("GET_CHAT_HISTORY", history);
      const text = (o: Record<string, number>) =>
        Object.entries(o)
          .map(([k, v]) => (v === 1 ? k : `${k}×${+v.toFixed(2)}`))
          .join(", ");
      // The usage record (one per model call, written after the reply: docs/security.md, "Cost") and
      // the budget's reads are accounting, counted on their own rows; the send's own path keeps its targets.
      const accounting = (o: Record<string, number>, prefixes: string[]) =>
        Object.entries(o).reduce((n, [k, v]) => (prefixes.some((p) => k.startsWith(p)) ? n + v : n), 0);
      const usageOps = accounting(s.ops, ["addUsage", "putUsage", "tokensUsedSince", "tokensPerDay"]);
      const usageRequests = accounting(s.requests, ["usage.", "users.read"]);
      const rows: Row[] = [
        {
          metric: "SEND_MESSAGE (its reply included): store operations, usage accounting apart",
          unit: "",
          ours: +(s.opsPerCommand - usageOps).toFixed(2),
          target: "≤ 3",
          met: s.opsPerCommand - usageOps <= 3,
          note: text(s.ops),
        },
        {
          metric: "SEND_MESSAGE: Cosmos requests, usage accounting apart",
          unit: "",
          ours: +(s.requestsPerCommand - usageRequests).toFixed(2),
          target: "≤ 3 (query plans apart)",
          met: s.requestsPerCommand - usageRequests - s.queryPlanPerCommand <= 3,
          note: `${text(s.requests)}; ${s.queryPlanPerCommand} of them SDK query-plan requests`,
        },
        {
          metric: "SEND_MESSAGE: usage accounting's Cosmos requests (no budget set)",
          unit: "",
          ours: +usageRequests.toFixed(2),
          target: "≤ 2.1 (the record at its estimate as the call begins, then its counts; a budget lookup per user every 10 s)",
          met: usageRequests <= 2.1,
        },
        {
          metric: "GET_CHAT_HISTORY: store operations",
          unit: "",
          ours: +h.opsPerCommand.toFixed(2),
          target: "≤ 1 (0: served from the replica's kept messages)",
          met: h.opsPerCommand <= 1,
          note: text(h.ops),
        },
        {
          metric: "GET_CHAT_HISTORY: Cosmos requests",
          unit: "",
          ours: +h.requestsPerCommand.toFixed(2),
          target: "≤ 1 query (query plans apart)",
          met: h.requestsPerCommand - h.queryPlanPerCommand <= 1,
          note: `${text(h.requests)}; ${h.queryPlanPerCommand} of them SDK query-plan requests`,
        },
      ];
      return { rows, data: { n: N, tokens: TOKENS, send: s, history: h } };
    } finally {
      ws.close();
      await stopAll([app, sse]);
      await cosmos.stop();
    }
  },
};

if (import.meta.main) await runAlone(scenario);
