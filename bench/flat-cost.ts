import { alternate, closedLoop, isHistory, isSendEnd } from "./lib/loops";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { createChats, envList, envNumber, ROUND_MS, ROUNDS, startApp, startModel, stopAll, WARMUP_MS } from "./lib/sides";
import { closeAll, openMany } from "./lib/ws";
import { sendFrame } from "./limit-send";

// Issue 15, cost that does not grow with the work: our server's cost per history request and per
// send in a small chat against the same in a large one (SMALL vs LARGE messages, written straight
// into the store), side by side in alternating rounds. The work asked is the same on both sides:
// a history page of PAGE messages (`limit`), and a send with a TOKENS-chunk reply. Sends grow a
// chat by two messages each, so each side cycles through a ring of chats of its size (the small
// ones grow from SMALL to about SMALL + 2 × sends ÷ ring over a run; the large ones barely).

const [SMALL, LARGE] = envList("BENCH_FLAT_SIZES", "10,10000") as [number, number];
const PAGE = envNumber("BENCH_FLAT_PAGE", 10);
const TOKENS = envNumber("BENCH_LIMIT_SEND_TOKENS", 20);
const HISTORY_CLIENTS = envNumber("BENCH_FLAT_HISTORY_CLIENTS", 10);
const SEND_CLIENTS = envNumber("BENCH_FLAT_SEND_CLIENTS", 1);
const SMALL_RING = envNumber("BENCH_FLAT_SMALL_CHATS", 1000);
const LARGE_RING = envNumber("BENCH_FLAT_LARGE_CHATS", 4);

export const scenario: Scenario = {
  name: "flat-cost",
  title: `history and send cost in a chat of ${SMALL} vs ${LARGE.toLocaleString("en-US")} messages`,
  timeoutMs: 300_000,
  async run() {
    const sse = await startModel();
    const app = await startApp(sse);
    try {
      const setup = await openMany(app.info.ws, 10, 10);
      const small = await createChats(setup, SMALL_RING, "bench small");
      const large = await createChats(setup, LARGE_RING, "bench large");
      closeAll(setup);
      for (const chatId of small) await app.call("seed", { chatId, pairs: SMALL / 2 });
      for (const chatId of large) await app.call("seed", { chatId, pairs: LARGE / 2 }, 120_000);

      const rows: Row[] = [];
      const data: Record<string, unknown> = { small: SMALL, large: LARGE, page: PAGE, tokens: TOKENS, rounds: ROUNDS, roundMs: ROUND_MS };
      const cpuRow = (what: string, r: Record<"small" | "large", { serverCpuUs: number; perS: number }>, note: string): Row => {
        const x = ratio(r.large.serverCpuUs, r.small.serverCpuUs);
        return {
          metric: `${what}: server CPU, ${LARGE.toLocaleString("en-US")} vs ${SMALL} messages`,
          unit: "µs",
          ours: r.large.serverCpuUs,
          baseline: r.small.serverCpuUs,
          ratio: x,
          better: "lower",
          target: "≤ 1.2× (flat within 20%)",
          met: x <= 1.2,
          note: `${note}; per second ${Math.round(r.large.perS)} vs ${Math.round(r.small.perS)}`,
        };
      };

      const historyFrame = (ring: string[]) => (i: number, k: number) =>
        JSON.stringify({ type: "GET_CHAT_HISTORY", chatId: ring[(i + k) % ring.length], limit: PAGE });
      const history = await alternate(
        ROUNDS,
        {
          small: () =>
            closedLoop({
              url: app.info.ws,
              clients: HISTORY_CLIENTS,
              frame: historyFrame(small),
              classify: isHistory,
              server: app,
              warmupMs: WARMUP_MS,
              roundMs: ROUND_MS,
            }),
          large: () =>
            closedLoop({
              url: app.info.ws,
              clients: HISTORY_CLIENTS,
              frame: historyFrame(large),
              classify: isHistory,
              server: app,
              warmupMs: WARMUP_MS,
              roundMs: ROUND_MS,
            }),
        },
        `history, ${HISTORY_CLIENTS} clients`,
      );
      data.history = history;
      rows.push(cpuRow("history", history, `GET_CHAT_HISTORY limit ${PAGE}, ${HISTORY_CLIENTS} clients`));

      // Each client has its own slice of the ring (a chat answers one reply at a time).
      const ringFrame = (ring: string[]) => {
        const per = Math.max(1, Math.floor(ring.length / SEND_CLIENTS));
        return (i: number, k: number) => sendFrame(ring[(i * per + (k % per)) % ring.length]!, k, TOKENS);
      };
      const send = await alternate(
        ROUNDS,
        {
          small: () =>
            closedLoop({
              url: app.info.ws,
              clients: SEND_CLIENTS,
              frame: ringFrame(small),
              classify: isSendEnd,
              server: app,
              warmupMs: WARMUP_MS,
              roundMs: ROUND_MS,
            }),
          large: () =>
            closedLoop({
              url: app.info.ws,
              clients: SEND_CLIENTS,
              frame: ringFrame(large),
              classify: isSendEnd,
              server: app,
              warmupMs: WARMUP_MS,
              roundMs: ROUND_MS,
            }),
        },
        `send, ${SEND_CLIENTS} client(s)`,
        { warmRound: true },
      );
      data.send = send;
      rows.push(cpuRow("send", send, `SEND_MESSAGE, ${TOKENS}-chunk reply, ${SEND_CLIENTS} client(s)`));
      rows.push({
        metric: `send: latency p50, ${LARGE.toLocaleString("en-US")} vs ${SMALL} messages`,
        unit: "ms",
        ours: send.large.latencyMs.p50,
        baseline: send.small.latencyMs.p50,
        ratio: ratio(send.large.latencyMs.p50, send.small.latencyMs.p50),
        better: "lower",
      });
      const errors = history.small.errors + history.large.errors + send.small.errors + send.large.errors;
      if (errors)
        rows.push({
          metric: "errors",
          unit: "",
          ours: errors,
          note: history.small.firstError ?? history.large.firstError ?? send.small.firstError ?? send.large.firstError,
        });
      return { rows, data };
    } finally {
      await stopAll([app, sse]);
    }
  },
};

if (import.meta.main) await runAlone(scenario);
