import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { summarize } from "./lib/stats";

// Start-up time: the production bundle (what the image runs) against src/ run directly, in the same run,
// alternating. Each start is timed from spawn to the "PiChat backend listening" log line (the port accepts
// connections) and to the "warmed up" line (what a first send loads is loaded: /health/ready answers 200
// from then on); RSS is read from /proc when ready.
//
//   bun bench/startup.ts            # 15 starts of each
//   BENCH_STARTUP_RUNS=30 bun bench/startup.ts
//
// Both run with the image's environment: ENVIRONMENT=production, SQLite in a temp dir, offline model, no
// IoT Hub, and BUN_RUNTIME_TRANSPILER_CACHE_PATH=0 as oven/bun's images set it (no transpiler cache).

const ROOT = join(import.meta.dir, "..");
const RUNS = Number(process.env.BENCH_STARTUP_RUNS ?? 15);
const START_TIMEOUT_MS = 20_000;

const work = mkdtempSync(join(tmpdir(), "pichat-startup-"));
const live = new Set<Bun.Subprocess>();
process.on("exit", () => {
  for (const p of live) p.kill("SIGKILL");
  rmSync(work, { recursive: true, force: true });
});
process.on("SIGINT", () => process.exit(130));

// The bundle in a directory of its own, as the image's runtime stage holds it: dist/ and nothing else.
const build = Bun.spawnSync([process.execPath, join(ROOT, "scripts", "build.ts"), "--outdir", join(work, "app", "dist")], {
  stdout: "pipe",
  stderr: "pipe",
});
if (build.exitCode !== 0) throw new Error(`build failed:\n${build.stdout}\n${build.stderr}`);
const bundleBytes = Bun.file(join(work, "app", "dist", "index.js")).size;

type Variant = { name: string; cmd: string[]; cwd: string };
const variants: Variant[] = [
  { name: "bundle", cmd: [process.execPath, "--no-install", "--no-env-file", "dist/index.js"], cwd: join(work, "app") },
  { name: "src", cmd: [process.execPath, "--no-env-file", "src/index.ts"], cwd: ROOT },
];

const rssBytes = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? Number.NaN) * 1024;

async function startOnce(v: Variant, i: number): Promise<{ ms: number; readyMs: number; rss: number }> {
  const started = performance.now();
  const proc = Bun.spawn(v.cmd, {
    cwd: v.cwd,
    env: {
      PATH: process.env.PATH ?? "",
      ENVIRONMENT: "production",
      API_TOKEN: "b7c1a8f6e0d9f3c9a7d5e2b4c",
      HOST: "127.0.0.1",
      SERVER_PORT: "0",
      SQLITE_PATH: join(work, `${v.name}-${i}.db`),
      BUN_RUNTIME_TRANSPILER_CACHE_PATH: "0",
    },
    stdout: "pipe",
    stderr: "pipe",
  });
  live.add(proc);
  try {
    const decoder = new TextDecoder();
    let out = "";
    let timer: Timer | undefined;
    const deadline = new Promise<never>(
      (_, reject) =>
        (timer = setTimeout(() => reject(new Error(`${v.name}: not listening within ${START_TIMEOUT_MS} ms:\n${out}`)), START_TIMEOUT_MS)),
    );
    const listening = (async () => {
      let ms: number | undefined;
      for await (const chunk of proc.stdout) {
        out += decoder.decode(chunk, { stream: true });
        if (ms === undefined && out.includes('"msg":"PiChat backend listening"')) ms = performance.now() - started;
        if (ms !== undefined && out.includes('"msg":"warmed up"')) return { ms, readyMs: performance.now() - started };
      }
      throw new Error(`${v.name}: exited (${await proc.exited}) before listening:\n${out}${await new Response(proc.stderr).text()}`);
    })();
    const { ms, readyMs } = await Promise.race([listening, deadline]).finally(() => clearTimeout(timer));
    return { ms, readyMs, rss: rssBytes(proc.pid) };
  } finally {
    proc.kill("SIGTERM");
    await proc.exited;
    live.delete(proc);
  }
}

// One unmeasured start of each first (disk cache, the SQLite schema's first creation in a fresh file is per run anyway).
for (const v of variants) await startOnce(v, -1);
const samples = new Map(variants.map((v) => [v.name, { ms: [] as number[], readyMs: [] as number[], rss: [] as number[] }]));
for (let i = 0; i < RUNS; i++) {
  for (const v of i % 2 ? [...variants].reverse() : variants) {
    const r = await startOnce(v, i);
    samples.get(v.name)!.ms.push(r.ms);
    samples.get(v.name)!.readyMs.push(r.readyMs);
    samples.get(v.name)!.rss.push(r.rss);
  }
}

const fmt = (x: number) => x.toFixed(0).padStart(6);
console.log(`start-up to listening, ${RUNS} starts each, alternating (bundle dist/index.js: ${(bundleBytes / 1e6).toFixed(2)} MB)`);
console.log("variant   p50 ms  min ms  p90 ms  max ms  ready p50 ms  RSS p50 MB");
const p50 = new Map<string, number>();
for (const [name, s] of samples) {
  const t = summarize(s.ms);
  p50.set(name, t.p50);
  console.log(
    `${name.padEnd(8)} ${fmt(t.p50)}  ${fmt(t.min)}  ${fmt(t.p90)}  ${fmt(t.max)}  ${fmt(summarize(s.readyMs).p50).padStart(12)}  ${(summarize(s.rss).p50 / 1e6).toFixed(1).padStart(10)}`,
  );
}
console.log(`bundle ÷ src (p50): ${(p50.get("bundle")! / p50.get("src")!).toFixed(2)}×`);
