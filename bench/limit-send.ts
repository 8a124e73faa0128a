import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { alternate, closedLoop, isSendEnd } from "./lib/loops";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { createChats, envList, envNumber, ROUND_MS, ROUNDS, startApp, startBare, startModel, stopAll, WARMUP_MS } from "./lib/sides";
import { closeAll, openMany } from "./lib/ws";

// Sends: N clients loop SEND_MESSAGE (closed loop: the next question leaves when the
// reply's end frame arrives), the model streaming a TOKENS-chunk reply as fast as it can, against
// the bare server making the same streamed call with the `openai` package to the same model and
// forwarding each delta as our frame (storing nothing). Rounds alternate. A third side, the durable
// forwarder (the same bare server storing the question and the reply in a SQLite file, one INSERT
// committed each), is the floor of a send that keeps its turns: its rows have no target.
//
// Each client cycles through its own ring of named chats (CHATS in all), so chats stay small (about
// 0 to 20 messages over a run) and every reply's prompt is a short history: the size of a chat is
// what bench/flat-cost.ts varies. The bare server's prompt is the system prompt and the question.

const CLIENTS = envList("BENCH_LIMIT_SEND_CLIENTS", "1,10");
const TOKENS = envNumber("BENCH_LIMIT_SEND_TOKENS", 20);
const CHATS = envNumber("BENCH_LIMIT_SEND_CHATS", 1000);

export const sendFrame = (chatId: string, k: number, tokens: number) =>
  JSON.stringify({ type: "SEND_MESSAGE", chatId, content: `Question ${k + 1}: what will the weather be like tomorrow? tokens=${tokens}` });

/** The stage counters (BENCH_STAGES=1, bench/lib/stages.ts) per send: one addQuestion is one send. */
function printStages(label: string, stages: Record<string, { n: number; ms: number; max: number }>) {
  const sends = stages["store addQuestion"]?.n ?? 0;
  if (!sends) return;
  console.log(`   stages per send, ${label} (${sends} sends: our rounds, their warm-up, the bare rounds' idle time):`);
  for (const [name, c] of Object.entries(stages).sort((a, b) => b[1].ms - a[1].ms))
    console.log(
      `     ${name.padEnd(58)} ${(c.n / sends).toFixed(2).padStart(6)} per send  ${((c.ms / sends) * 1000).toFixed(0).padStart(6)} µs  max ${c.max.toFixed(1)} ms`,
    );
}

export const scenario: Scenario = {
  name: "limit-send",
  title: `SEND_MESSAGE with a ${TOKENS}-chunk streamed reply vs the bare server forwarding the same model call`,
  timeoutMs: 300_000,
  async run() {
    const sse = await startModel();
    const app = await startApp(sse);
    const bare = await startBare(sse);
    const dir = mkdtempSync(join(tmpdir(), "pichat-durable-"));
    const durable = await startBare(sse, { sqlitePath: join(dir, "bare.db") });
    try {
      const setup = await openMany(app.info.ws, 10, 10);
      const chats = await createChats(setup, CHATS);
      closeAll(setup);
      // The stage counters start with the measured rounds (start-up and set-up are not a send's).
      if (process.env.BENCH_STAGES === "1") await app.call("stages");
      const rows: Row[] = [];
      const data: Record<string, unknown> = { tokens: TOKENS, chats: CHATS, rounds: ROUNDS, roundMs: ROUND_MS, byClients: {} };
      for (const clients of CLIENTS) {
        const per = Math.floor(CHATS / clients);
        const ring = (i: number, k: number) => chats[i * per + (k % per)]!;
        const loop = (url: string, server: typeof app | typeof bare) => () =>
          closedLoop({
            url,
            clients,
            frame: (i, k) => sendFrame(ring(i, k), k, TOKENS),
            classify: isSendEnd,
            server,
            warmupMs: WARMUP_MS,
            roundMs: ROUND_MS,
          });
        const r = await alternate(
          ROUNDS,
          { bare: loop(bare.info.url, bare), ours: loop(app.info.ws, app), durable: loop(durable.info.url, durable) },
          `${clients} clients`,
          {
            warmRound: true,
          },
        );
        (data.byClients as Record<string, unknown>)[clients] = r;
        if (process.env.BENCH_STAGES === "1") {
          const stages = await app.call<Record<string, { n: number; ms: number; max: number }>>("stages");
          (data as Record<string, unknown>)[`stages${clients}`] = stages;
          printStages(`${clients} client${clients > 1 ? "s" : ""}`, stages);
        }
        const label = `send, ${clients} client${clients > 1 ? "s" : ""}`;
        const x = ratio(r.ours.perS, r.bare.perS);
        const errors =
          r.ours.errors + r.bare.errors
            ? `; errors ours ${r.ours.errors}, bare ${r.bare.errors}: ${r.ours.firstError ?? r.bare.firstError}`
            : "";
        rows.push({
          metric: `${label}: sends/s`,
          unit: "/s",
          ours: r.ours.perS,
          baseline: r.bare.perS,
          ratio: x,
          better: "higher",
          ...(clients >= 10 ? { target: "≥ 0.5× bare", met: x >= 0.5 } : {}),
          note: `server cpu ours ${r.ours.serverCpuPercent.join("/")}%, bare ${r.bare.serverCpuPercent.join("/")}%${errors}`,
        });
        const cpu = ratio(r.ours.serverCpuUs, r.bare.serverCpuUs);
        rows.push({
          metric: `${label}: server CPU per send`,
          unit: "µs",
          ours: r.ours.serverCpuUs,
          baseline: r.bare.serverCpuUs,
          ratio: cpu,
          better: "lower",
          target: "≤ 2× bare",
          met: cpu <= 2,
          note: "server process CPU ÷ sends (the model runs in its own process)",
        });
        rows.push({
          metric: `${label}: server CPU per send, vs the durable forwarder`,
          unit: "µs",
          ours: r.ours.serverCpuUs,
          baseline: r.durable.serverCpuUs,
          ratio: ratio(r.ours.serverCpuUs, r.durable.serverCpuUs),
          better: "lower",
          note: `the durable forwarder commits each write alone (ours shares commits); it is ${ratio(r.durable.serverCpuUs, r.bare.serverCpuUs).toFixed(2)}× the bare one; its sends/s ${Math.round(r.durable.perS)}`,
        });
        rows.push({
          metric: `${label}: latency p50`,
          unit: "ms",
          ours: r.ours.latencyMs.p50,
          baseline: r.bare.latencyMs.p50,
          ratio: ratio(r.ours.latencyMs.p50, r.bare.latencyMs.p50),
          better: "lower",
          note: "send to the reply's end frame",
        });
        const p99 = ratio(r.ours.latencyMs.p99, r.bare.latencyMs.p99);
        rows.push({
          metric: `${label}: latency p99`,
          unit: "ms",
          ours: r.ours.latencyMs.p99,
          baseline: r.bare.latencyMs.p99,
          ratio: p99,
          better: "lower",
          ...(clients >= 10 ? { target: "≤ 2× bare", met: p99 <= 2 } : {}),
        });
        rows.push({
          metric: `${label}: frames per send`,
          unit: "",
          ours: r.ours.framesPerReply,
          baseline: r.bare.framesPerReply,
          note: `${TOKENS} deltas + the end frame expected`,
        });
      }
      return { rows, data };
    } finally {
      await stopAll([app, bare, durable, sse]);
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

if (import.meta.main) await runAlone(scenario);
