import { alternate, closedLoop, isSendEnd } from "./lib/loops";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { createChats, envNumber, ROUND_MS, ROUNDS, startApp, startModel, stopAll, WARMUP_MS } from "./lib/sides";
import { closeAll, openMany } from "./lib/ws";
import { sendFrame } from "./limit-send";

// What usage accounting adds to a send: the same server three times over the same model, in
// alternating rounds: accounting off (USAGE_RECORDS=false), on (a usage record per model call,
// the model's own count, written after the reply), and on with a budget (USER_TOKENS_PER_DAY:
// before each send the question is counted with the tokenizer and today's total read from the store,
// and the prompt is counted before the model call). Server CPU per send and latency, each against "off".

const TOKENS = envNumber("BENCH_USAGE_TOKENS", 20);
const CLIENTS = envNumber("BENCH_USAGE_CLIENTS", 4);
const RING = envNumber("BENCH_USAGE_CHATS", 200);

export const scenario: Scenario = {
  name: "usage-cost",
  title: `SEND_MESSAGE (${TOKENS}-chunk reply) with usage accounting off, on, and on with a budget`,
  timeoutMs: 300_000,
  async run() {
    const sse = await startModel();
    const sides = {
      off: await startApp(sse, { USAGE_RECORDS: "false", CHAT_TITLES: "false" }),
      on: await startApp(sse, { USAGE_RECORDS: "true", CHAT_TITLES: "false" }),
      budget: await startApp(sse, { USAGE_RECORDS: "true", CHAT_TITLES: "false", USER_TOKENS_PER_DAY: "100000000000" }),
    };
    try {
      const rings: Record<string, string[]> = {};
      for (const [name, app] of Object.entries(sides)) {
        const setup = await openMany(app.info.ws, 4, 4);
        rings[name] = await createChats(setup, RING, "bench usage");
        closeAll(setup);
      }
      const ringFrame = (ring: string[]) => {
        const per = Math.max(1, Math.floor(ring.length / CLIENTS));
        return (i: number, k: number) => sendFrame(ring[(i * per + (k % per)) % ring.length]!, k, TOKENS);
      };
      const loop = (name: keyof typeof sides) => () =>
        closedLoop({
          url: sides[name].info.ws,
          clients: CLIENTS,
          frame: ringFrame(rings[name]!),
          classify: isSendEnd,
          server: sides[name],
          warmupMs: WARMUP_MS,
          roundMs: ROUND_MS,
        });
      const send = await alternate(ROUNDS, { off: loop("off"), on: loop("on"), budget: loop("budget") }, `send, ${CLIENTS} clients`, {
        warmRound: true,
      });
      const rows: Row[] = [];
      for (const side of ["on", "budget"] as const) {
        rows.push({
          metric: `send: server CPU, accounting ${side === "on" ? "on" : "on + budget"} vs off`,
          unit: "µs",
          ours: send[side].serverCpuUs,
          baseline: send.off.serverCpuUs,
          ratio: ratio(send[side].serverCpuUs, send.off.serverCpuUs),
          better: "lower",
          note: `per second ${Math.round(send[side].perS)} vs ${Math.round(send.off.perS)}`,
        });
        rows.push({
          metric: `send: latency p50, accounting ${side === "on" ? "on" : "on + budget"} vs off`,
          unit: "ms",
          ours: send[side].latencyMs.p50,
          baseline: send.off.latencyMs.p50,
          ratio: ratio(send[side].latencyMs.p50, send.off.latencyMs.p50),
          better: "lower",
        });
      }
      const errors = send.off.errors + send.on.errors + send.budget.errors;
      if (errors)
        rows.push({ metric: "errors", unit: "", ours: errors, note: send.off.firstError ?? send.on.firstError ?? send.budget.firstError });
      return { rows, data: { tokens: TOKENS, clients: CLIENTS, rounds: ROUNDS, roundMs: ROUND_MS, send } };
    } finally {
      await stopAll([...Object.values(sides), sse]);
    }
  },
};

if (import.meta.main) await runAlone(scenario);
