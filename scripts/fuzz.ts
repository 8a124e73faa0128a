// The /ws protocol fuzzer as a longer standalone run: starts its own server (SQLite in a temp dir,
// a local SSE model) on loopback, fuzzes it, checks the store, prints a summary, and exits non-zero
// on any violation. The same fuzzer runs briefly in CI as test/fuzz.test.ts.
//
//   bun scripts/fuzz.ts [--seed 1234] [--frames 100000] [--clients 4] [--window 32] [--runs 1]
//
// --runs N repeats with seeds seed, seed+1, ... each against a fresh server.

import { parseArgs } from "node:util";
import { formatReport, runFuzz, startFuzzTarget } from "../test/support/fuzz";

const { values } = parseArgs({
  options: {
    seed: { type: "string", default: process.env.FUZZ_SEED ?? "1234" },
    frames: { type: "string", default: process.env.FUZZ_FRAMES ?? "100000" },
    clients: { type: "string", default: "4" },
    window: { type: "string", default: "32" },
    runs: { type: "string", default: "1" },
    help: { type: "boolean", short: "h", default: false },
  },
});

if (values.help) {
  console.log("usage: bun scripts/fuzz.ts [--seed N] [--frames N] [--clients N] [--window N] [--runs N]");
  process.exit(0);
}

const num = (name: string, raw: string, min: number) => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    console.error(`fuzz: --${name} must be a whole number >= ${min} (got ${JSON.stringify(raw)})`);
    process.exit(2);
  }
  return n;
};
const seed = num("seed", values.seed, 0);
const frames = num("frames", values.frames, 1);
const clients = num("clients", values.clients, 1);
const window = num("window", values.window, 1);
const runs = num("runs", values.runs, 1);

let failed = 0;
for (let run = 0; run < runs; run++) {
  const s = seed + run;
  const target = await startFuzzTarget();
  const rssBefore = process.memoryUsage().rss;
  try {
    const report = await runFuzz(target.srv, {
      seed: s,
      frames,
      clients,
      window,
      progress: (line) => console.log(`  seed ${s}: ${line}`),
    });
    console.log(formatReport(report));
    console.log(`  process RSS ${(rssBefore / 2 ** 20).toFixed(0)} MiB -> ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`);
    if (report.violations.length) failed++;
  } catch (e) {
    console.error(`fuzz seed=${s}: the run itself failed:`, e);
    failed++;
  } finally {
    await target.stop();
  }
}

if (failed) {
  console.error(`fuzz: ${failed} of ${runs} run(s) found violations; rerun one with --seed <its seed> to reproduce`);
  process.exit(1);
}
console.log(`fuzz: ${runs} run(s) clean`);
process.exit(0);
