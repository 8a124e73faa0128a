import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { envNumber, startModel, stopAll } from "./lib/sides";
import { chatSide, cpuPer } from "./pipeline-cost";
import { round } from "./lib/stats";

// Whether a send costs more as the process ages: the chat layer in one process (as pipeline-cost,
// SQLite on a file in a temp dir, as in production: an in-memory database slows as it grows), SENDS sends in a row round a ring of CHATS chats made beforehand, more than the
// caches a send fills hold (known chats, token counts, calls, history), so each is full and turning
// over long before the end. CPU per send in the last window against the second (the first pays for
// compiling): the baseline is the same process, younger. By the end each chat holds a few earlier
// turns, so the last window's prompts are a little longer (flat-cost measures what history costs).
// A cache whose eviction grows with its size would show here (docs/performance.md, aging).

const SENDS = envNumber("BENCH_AGING_SENDS", 60_000);
const WINDOW = envNumber("BENCH_AGING_WINDOW", 5_000);
const CHATS = envNumber("BENCH_AGING_CHATS", 20_000);

export const scenario: Scenario = {
  name: "aging",
  title: `CPU per send as the process ages (${SENDS} sends in one process round ${CHATS} chats)`,
  timeoutMs: 600_000,
  async run() {
    const sse = await startModel();
    const dir = mkdtempSync(join(tmpdir(), "pichat-aging-"));
    const side = chatSide(`${sse.info.url}/v1`, join(dir, "pichat.db"), CHATS);
    const windows: { from: number; cpuUs: number }[] = [];
    try {
      await side.setUp();
      for (let from = 0; from + WINDOW <= SENDS; from += WINDOW) {
        windows.push({ from, cpuUs: await cpuPer(WINDOW, side.sends) });
        console.log(`   sends ${from}–${from + WINDOW}: ${round(windows.at(-1)!.cpuUs, 0)} µs of CPU per send`);
      }
    } finally {
      await side.close();
      await stopAll([sse]);
      rmSync(dir, { recursive: true, force: true });
    }
    // The first window pays for compiling and loading: the second is the young process.
    const young = windows[1] ?? windows[0]!;
    const old = windows.at(-1)!;
    const x = ratio(old.cpuUs, young.cpuUs);
    const rows: Row[] = [
      {
        metric: `CPU per send: sends ${old.from}–${old.from + WINDOW} vs ${young.from}–${young.from + WINDOW}`,
        unit: "µs",
        ours: round(old.cpuUs, 0),
        baseline: round(young.cpuUs, 0),
        ratio: x,
        better: "lower",
        target: "≤ 1.25× (no dearer with age)",
        met: x <= 1.25,
      },
    ];
    return { rows, data: { sends: SENDS, window: WINDOW, chats: CHATS, windows } };
  },
};

if (import.meta.main) await runAlone(scenario);
