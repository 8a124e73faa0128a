import { scenario as aging } from "./aging";
import { scenario as device } from "./device";
import { scenario as devices } from "./devices";
import { scenario as fanOut } from "./fan-out";
import { scenario as firstChunk } from "./first-chunk";
import { scenario as flatCost } from "./flat-cost";
import { scenario as idleMemory } from "./idle-memory";
import { scenario as limitCosmos } from "./limit-cosmos";
import { scenario as limitHistory } from "./limit-history";
import { scenario as limitSend } from "./limit-send";
import { scenario as limitStreams } from "./limit-streams";
import { scenario as replicas } from "./replicas";
import { runScenarios, targetsTable, type Scenario } from "./lib/report";
import { scenario as requestResponse } from "./request-response";
import { scenario as storeCost } from "./store-cost";
import { scenario as streaming } from "./streaming";
import { scenario as toolCalls } from "./tool-calls";
import { scenario as partCost } from "./part-cost";
import { scenario as pipelineCost } from "./pipeline-cost";
import { scenario as usageCost } from "./usage-cost";

// `bun run bench` runs every scenario; `bun run bench -- fan-out streaming` runs those only.
// `bun run bench targets` runs the scenarios behind a send's targets (limit-send, first-chunk);
// `bun run bench limits` every scenario against the bare stack (limit-*, flat-cost).
// Each scenario is also a script of its own: `bun bench/fan-out.ts`. `--md` also prints the tables
// as Markdown. Results go to bench/results/<time>.json. docs/performance.md explains the figures.
// After the full table, every row with a target is printed again in one table: ratio, target, met.

const ALL: Scenario[] = [
  requestResponse,
  streaming,
  fanOut,
  idleMemory,
  device,
  devices,
  storeCost,
  replicas,
  limitHistory,
  limitSend,
  firstChunk,
  limitStreams,
  flatCost,
  limitCosmos,
  usageCost,
  toolCalls,
  pipelineCost,
  partCost,
  aging,
];
// Names that stand for several scenarios.
const GROUPS: Record<string, string[]> = {
  targets: [limitSend, firstChunk, pipelineCost].map((s) => s.name),
  limits: [limitHistory, limitSend, limitStreams, flatCost, limitCosmos].map((s) => s.name),
};

const names = process.argv
  .slice(2)
  .filter((a) => a !== "--" && !a.startsWith("-"))
  .flatMap((n) => GROUPS[n] ?? [n]);
const unknown = names.filter((n) => !ALL.some((s) => s.name === n));
if (unknown.length) {
  console.error(
    `unknown scenario ${unknown.join(", ")}; choose from: ${ALL.map((s) => s.name).join(", ")} (or ${Object.keys(GROUPS).join(", ")})`,
  );
  process.exit(2);
}
const chosen = names.length ? ALL.filter((s) => names.includes(s.name)) : ALL;
const { results } = await runScenarios(chosen, { label: names.length ? names.join("+") : undefined });
console.log(`\ntargets (each against the same run's baseline):\n${targetsTable(results)}\n`);
process.exit(results.some((r) => r.error) ? 1 : 0);
