import { sleep, within } from "./lib/clock";
import { spawnChild, type Child } from "./lib/proc";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { round } from "./lib/stats";

// 4. Idle memory: the server's resident memory per open idle connection, at 1,000 and 10,000
// connections (held by client processes), beside the bare Bun.serve server holding the same number.
// Each figure is (RSS with N sockets − RSS with none) ÷ N, both read after a full GC and a pause;
// the JS heap's share is reported next to it. Kernel socket buffers are not in RSS and not counted.

const STEPS = (process.env.BENCH_MEM_STEPS ?? "1000,10000").split(",").map(Number);
const PER_PROCESS = Number(process.env.BENCH_MEM_PER_PROCESS ?? 5000);
const SETTLE_MS = 1500;

type Mem = { rss: number; heapUsed: number; conns: number };

async function settledMem(server: Child): Promise<Mem> {
  await sleep(SETTLE_MS);
  await server.call("mem", { gc: true });
  await sleep(300);
  const m = await server.call<{ heapUsed: number; conns: number }>("mem", { gc: true });
  return { rss: server.rssBytes(), heapUsed: m.heapUsed, conns: m.conns };
}

async function perConnection(
  server: Child,
  url: string,
): Promise<{ zero: Mem; steps: { n: number; mem: Mem; rssPerConn: number; heapPerConn: number }[] }> {
  const clients: Child[] = [];
  try {
    // One warm-up connection cycle first, so code paths and pools the first socket creates are in the zero point.
    const warm = await spawnChild("clients/sockets.ts", { name: "warm" });
    clients.push(warm);
    await warm.call("connect", { url, count: 10, mode: "idle" });
    await warm.call("close");
    const zero = await settledMem(server);
    const steps = [];
    let open = 0;
    for (const n of STEPS) {
      while (open < n) {
        const count = Math.min(PER_PROCESS, n - open);
        const c = await spawnChild("clients/sockets.ts", { name: `clients${clients.length}` });
        clients.push(c);
        const r = await c.call<{ open: number }>("connect", { url, count, mode: "idle", concurrency: 100 }, 180_000);
        if (r.open !== count) throw new Error(`only ${r.open} of ${count} sockets opened`);
        open += count;
      }
      const mem = await settledMem(server);
      if (mem.conns !== n && mem.conns !== undefined) console.log(`   note: the server reports ${mem.conns} connections, expected ${n}`);
      steps.push({ n, mem, rssPerConn: (mem.rss - zero.rss) / n, heapPerConn: (mem.heapUsed - zero.heapUsed) / n });
      console.log(
        `   ${server.name} ${n}: rss ${(mem.rss / 2 ** 20).toFixed(1)} MiB (+${((mem.rss - zero.rss) / n).toFixed(0)} B/conn), heap +${((mem.heapUsed - zero.heapUsed) / n).toFixed(0)} B/conn`,
      );
    }
    return { zero, steps };
  } finally {
    await within(Promise.all(clients.map((c) => c.stop())), 30_000, "client processes to stop").catch(() => {});
  }
}

export const scenario: Scenario = {
  name: "idle-memory",
  title: "server RSS per open idle connection vs a bare Bun.serve",
  timeoutMs: 240_000,
  async run() {
    const rows: Row[] = [];
    const base = await spawnChild<{ url: string }>("servers/baseline.ts", { name: "baseline" });
    let b: Awaited<ReturnType<typeof perConnection>>;
    try {
      b = await perConnection(base, `${base.info.url}/idle`);
    } finally {
      await base.stop();
    }
    const app = await spawnChild<{ ws: string }>("servers/app.ts", { name: "app" });
    let o: Awaited<ReturnType<typeof perConnection>>;
    try {
      o = await perConnection(app, app.info.ws);
    } finally {
      await app.stop();
    }
    for (let i = 0; i < STEPS.length; i++) {
      const os = o.steps[i]!;
      const bs = b.steps[i]!;
      rows.push({
        metric: `${os.n.toLocaleString("en-US")} idle: RSS per connection`,
        unit: "B",
        ours: Math.round(os.rssPerConn),
        baseline: Math.round(bs.rssPerConn),
        ratio: ratio(os.rssPerConn, bs.rssPerConn),
        better: "lower",
        target: "< 16 KiB",
        met: os.rssPerConn < 16 * 1024,
        note: `RSS ${round(os.mem.rss / 2 ** 20, 1)} MiB (base ${round(bs.mem.rss / 2 ** 20, 1)} MiB); idle server ${round(o.zero.rss / 2 ** 20, 1)} MiB (base ${round(b.zero.rss / 2 ** 20, 1)} MiB)`,
      });
      rows.push({
        metric: `${os.n.toLocaleString("en-US")} idle: JS heap per connection`,
        unit: "B",
        ours: Math.round(os.heapPerConn),
        baseline: Math.round(bs.heapPerConn),
        ratio: ratio(os.heapPerConn, bs.heapPerConn),
        better: "lower",
      });
    }
    return { rows, data: { ours: o, baseline: b, perProcess: PER_PROCESS } };
  },
};

if (import.meta.main) await runAlone(scenario);
