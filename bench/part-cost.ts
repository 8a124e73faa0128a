import { sendFrame } from "./limit-send";
import { alternate, closedLoop, isSendEnd } from "./lib/loops";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { createChats, envNumber, ROUND_MS, ROUNDS, startApp, startModel, stopAll, WARMUP_MS } from "./lib/sides";
import { closeAll, openMany } from "./lib/ws";

// What each optional part of a send costs: our server as configured by default against the same
// server with one part turned off, side by side in one run (rounds alternate), N clients looping
// SEND_MESSAGE as limit-send does. The parts: usage accounting (USAGE_RECORDS), the tools offered
// with every request (TOOLS_ENABLED), the SQLite file (against SQLite in memory), and all three.
// None of these is a setting to turn off for speed: the rows say where a send's CPU goes.

const CLIENTS = envNumber("BENCH_PART_COST_CLIENTS", 10);
const TOKENS = 20;
const CHATS = 1000;

const VARIANTS: { name: string; env: Record<string, string> }[] = [
  { name: "usage accounting off", env: { USAGE_RECORDS: "false" } },
  { name: "tools off", env: { TOOLS_ENABLED: "false" } },
  { name: "SQLite in memory", env: { SQLITE_PATH: ":memory:" } },
  { name: "all three", env: { USAGE_RECORDS: "false", TOOLS_ENABLED: "false", SQLITE_PATH: ":memory:" } },
];

export const scenario: Scenario = {
  name: "part-cost",
  title: `server CPU per send with each optional part off vs the default server (${CLIENTS} clients, ${TOKENS}-chunk replies)`,
  timeoutMs: 600_000,
  async run() {
    const sse = await startModel();
    const rows: Row[] = [];
    const data: Record<string, unknown> = {};
    try {
      for (const v of VARIANTS) {
        const sides = { full: await startApp(sse), without: await startApp(sse, v.env) };
        try {
          const chats: Record<string, string[]> = {};
          for (const [name, app] of Object.entries(sides)) {
            const setup = await openMany(app.info.ws, 10, 10);
            chats[name] = await createChats(setup, CHATS);
            closeAll(setup);
          }
          const per = Math.floor(CHATS / CLIENTS);
          const loop = (name: "full" | "without") => () =>
            closedLoop({
              url: sides[name].info.ws,
              clients: CLIENTS,
              frame: (i, k) => sendFrame(chats[name]![i * per + (k % per)]!, k, TOKENS),
              classify: isSendEnd,
              server: sides[name],
              warmupMs: WARMUP_MS,
              roundMs: ROUND_MS,
            });
          const r = await alternate(ROUNDS, { full: loop("full"), without: loop("without") }, v.name, { warmRound: true });
          data[v.name] = r;
          rows.push({
            metric: `${v.name}: server CPU per send`,
            unit: "µs",
            ours: r.without.serverCpuUs,
            baseline: r.full.serverCpuUs,
            ratio: ratio(r.without.serverCpuUs, r.full.serverCpuUs),
            better: "lower",
            note: `the part's share: ${Math.round(r.full.serverCpuUs - r.without.serverCpuUs)} µs of ${Math.round(r.full.serverCpuUs)}`,
          });
        } finally {
          await stopAll([sides.full, sides.without]);
        }
      }
      return { rows, data };
    } finally {
      await stopAll([sse]);
    }
  },
};

if (import.meta.main) await runAlone(scenario);
