import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem, release } from "node:os";
import { join } from "node:path";
import { now, within } from "./clock";
import { BENCH_DIR } from "./proc";

// What a scenario reports: rows for the table (ours beside the baseline, as a ratio) and the raw
// figures for the JSON file, so runs on different days can be compared figure by figure.

export type Row = {
  metric: string;
  unit: string;
  ours: number | string;
  baseline?: number | string;
  /** ours ÷ baseline. Whether higher or lower is better is said by `better`. */
  ratio?: number;
  better?: "higher" | "lower";
  target?: string;
  /** true/false when the row has a target. */
  met?: boolean;
  note?: string;
};

export type ScenarioOutput = { rows: Row[]; data: Record<string, unknown> };
export type Scenario = {
  name: string;
  title: string;
  /** A bound on the whole scenario; past it the scenario fails and its children are killed. */
  timeoutMs: number;
  run(): Promise<ScenarioOutput>;
};
export type ScenarioResult = ScenarioOutput & { name: string; title: string; seconds: number; error?: string };

export const ratio = (ours: number, baseline: number) => (baseline > 0 && Number.isFinite(ours) ? ours / baseline : Number.NaN);

function fmt(x: number | string | undefined, unit = ""): string {
  if (x === undefined) return "";
  if (typeof x === "string") return x;
  if (!Number.isFinite(x)) return "n/a";
  const a = Math.abs(x);
  const s =
    a >= 1000
      ? Math.round(x).toLocaleString("en-US")
      : a >= 100
        ? x.toFixed(0)
        : a >= 10
          ? x.toFixed(1)
          : a >= 1
            ? x.toFixed(2)
            : x.toFixed(3);
  return unit ? `${s} ${unit}` : s;
}
const fmtRatio = (r?: number) => (r === undefined ? "" : Number.isFinite(r) ? `${r.toFixed(2)}×` : "n/a");
const fmtMet = (m?: boolean) => (m === undefined ? "" : m ? "yes" : "NO");

function cells(r: ScenarioResult, row: Row) {
  return [
    r.name,
    row.metric,
    fmt(row.ours, row.unit),
    fmt(row.baseline, row.unit),
    fmtRatio(row.ratio),
    row.target ?? "",
    fmtMet(row.met),
    row.note ?? "",
  ];
}
const HEAD = ["scenario", "metric", "ours", "baseline", "ours÷base", "target", "met", "note"];

export function textTable(results: ScenarioResult[]): string {
  const rows = results.flatMap((r) =>
    r.error ? [[r.name, "FAILED", r.error.slice(0, 120), "", "", "", "", ""]] : r.rows.map((row) => cells(r, row)),
  );
  const widths = HEAD.map((h, i) => Math.min(i === 7 ? 60 : 48, Math.max(h.length, ...rows.map((c) => c[i]!.length))));
  const line = (c: string[]) =>
    c
      .map((x, i) => (i >= 2 && i <= 4 ? x.padStart(widths[i]!) : x.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(HEAD), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/** Only the rows with a target: what was measured, against what, the ratio, the target and whether it was met. */
export function targetsTable(results: ScenarioResult[]): string {
  const rows = results.flatMap((r) => r.rows.filter((row) => row.target).map((row) => ({ r, row })));
  if (!rows.length) return "(no row with a target in this run)";
  const cells = rows.map(({ r, row }) => [
    `${r.name}: ${row.metric}`,
    fmt(row.ours, row.unit),
    fmt(row.baseline, row.unit),
    fmtRatio(row.ratio),
    row.target!,
    row.met ? "met" : "MISSED",
  ]);
  const head = ["target row", "ours", "baseline", "ratio", "target", ""];
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) =>
    c
      .map((x, i) => (i >= 1 && i <= 3 ? x.padStart(widths[i]!) : x.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...cells.map(line)].join("\n");
}

export function markdownTable(results: ScenarioResult[]): string {
  const rows = results.flatMap((r) => (r.error ? [[r.name, "FAILED", r.error, "", "", "", "", ""]] : r.rows.map((row) => cells(r, row))));
  const esc = (s: string) => s.replaceAll("|", "\\|");
  return [`| ${HEAD.join(" | ")} |`, `|${HEAD.map(() => "---").join("|")}|`, ...rows.map((c) => `| ${c.map(esc).join(" | ")} |`)].join(
    "\n",
  );
}

export function machine() {
  const c = cpus();
  return {
    cpus: c.length,
    cpuModel: c[0]?.model,
    memGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    bun: Bun.version,
    platform: process.platform,
  };
}

/** Runs scenarios one after another, each bounded, prints the table and writes the JSON file. */
export async function runScenarios(list: Scenario[], o: { label?: string } = {}): Promise<{ results: ScenarioResult[]; file: string }> {
  const startedAt = new Date();
  const t0 = now();
  const results: ScenarioResult[] = [];
  for (const s of list) {
    console.log(`\n== ${s.name}: ${s.title}`);
    const ts = now();
    try {
      const out = await within(s.run(), s.timeoutMs, `the scenario (${s.timeoutMs / 1000} s at most)`);
      results.push({ name: s.name, title: s.title, seconds: (now() - ts) / 1000, ...out });
    } catch (e) {
      const error = e instanceof Error ? e.message : String(e);
      console.error(`!! ${s.name} failed: ${error}`);
      if (e instanceof Error && e.stack) console.error(e.stack);
      results.push({ name: s.name, title: s.title, seconds: (now() - ts) / 1000, rows: [], data: {}, error });
    }
    console.log(`   (${((now() - ts) / 1000).toFixed(1)} s)`);
  }
  const seconds = (now() - t0) / 1000;
  console.log(`\n${textTable(results)}\n`);
  const dir = join(BENCH_DIR, "results");
  mkdirSync(dir, { recursive: true });
  const stamp = startedAt
    .toISOString()
    .replaceAll(":", "-")
    .replace(/\.\d+Z$/, "Z");
  const file = join(dir, `${stamp}${o.label ? `-${o.label}` : ""}.json`);
  writeFileSync(
    file,
    `${JSON.stringify({ startedAt: startedAt.toISOString(), seconds, machine: machine(), scenarios: results }, null, 2)}\n`,
  );
  console.log(`results: ${file}`);
  console.log(`total: ${seconds.toFixed(1)} s`);
  if (process.argv.includes("--md")) console.log(`\n${markdownTable(results)}\n`);
  return { results, file };
}

/** For `bun bench/<name>.ts`: run this one scenario and exit with the right status. */
export async function runAlone(s: Scenario) {
  const { results } = await runScenarios([s], { label: s.name });
  process.exit(results.some((r) => r.error) ? 1 : 0);
}
