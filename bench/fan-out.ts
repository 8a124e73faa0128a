import { now, sleep, within } from "./lib/clock";
import { cpuWindow, spawnChild, type Child } from "./lib/proc";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { round, summarize } from "./lib/stats";
import { nextFrame, openSocket, request } from "./lib/ws";

// 3. Fan-out: one sender, N watchers of the chat (each did GET_CHAT_HISTORY on it), spread over
// client processes. For each of K messages: the time from the sender's send until the last watcher
// has the FIRST_MESSAGE frame, and every watcher's own delay. Beside it, the baseline: the same
// frame sent to a bare server that server.publish()es it to N subscribers.
// The next message leaves only when every watcher has the previous one (and, on ours, its one-token
// reply has ended), so each message is measured on its own.

const SIZES = (process.env.BENCH_FANOUT_SIZES ?? "1000,10000").split(",").map(Number);
const MESSAGES = Number(process.env.BENCH_FANOUT_MESSAGES ?? 30);
const PER_PROCESS = Number(process.env.BENCH_FANOUT_PER_PROCESS ?? 5000);

type Side = { lastMs: number[]; eachMs: number[]; cpu: Record<string, number> };

async function measure(o: {
  clients: Child[];
  perClient: number;
  connect: Record<string, unknown>;
  sender: WebSocket;
  frameFor: (k: number) => string;
  waitSenderEnd: boolean;
  server: Child;
}): Promise<Side> {
  await Promise.all(o.clients.map((c) => c.call("connect", { count: o.perClient, ...o.connect }, 180_000)));
  const watchers = o.clients.length * o.perClient;
  const got = new Map<number, number>();
  let wake: (() => void) | undefined;
  for (const c of o.clients) {
    c.onEvent((e) => {
      if (e.kind !== "got") return;
      got.set(e.k as number, (got.get(e.k as number) ?? 0) + 1);
      wake?.();
    });
  }
  const sentAt: number[] = [];
  const cpu = cpuWindow([
    { name: "server", cpuSeconds: () => o.server.cpuSeconds() },
    ...o.clients.map((c) => ({ name: c.name, cpuSeconds: () => c.cpuSeconds() })),
  ]);
  for (let k = 0; k < MESSAGES; k++) {
    const all = within(
      new Promise<void>((resolve) => {
        wake = () => (got.get(k) ?? 0) >= o.clients.length && resolve();
        wake();
      }),
      15_000,
      `every watcher to get message ${k}`,
    );
    const end = o.waitSenderEnd ? nextFrame(o.sender, (f) => f.type === "MESSAGE" && f.end, 15_000, "the reply's end") : Promise.resolve();
    sentAt[k] = now();
    o.sender.send(o.frameFor(k));
    await Promise.all([all, end]);
    await sleep(o.waitSenderEnd ? 50 : 10);
  }
  const used = cpu();
  const offsets = await Promise.all(o.clients.map((c) => c.clockOffsetMs()));
  const reports = await Promise.all(
    o.clients.map((c) => c.call<{ times: Record<string, number[]>; stray: number }>("times", undefined, 60_000)),
  );
  const lastMs: number[] = [];
  const eachMs: number[] = [];
  for (let k = 0; k < MESSAGES; k++) {
    let last = -Infinity;
    let n = 0;
    reports.forEach((r, i) => {
      for (const t of r.times[k] ?? []) {
        const d = t - offsets[i]! - sentAt[k]!;
        eachMs.push(d);
        if (d > last) last = d;
        n++;
      }
    });
    if (n !== watchers) throw new Error(`message ${k} reached ${n} of ${watchers} watchers`);
    lastMs.push(last);
  }
  await Promise.all(o.clients.map((c) => c.call("close", undefined, 30_000)));
  return { lastMs, eachMs, cpu: used };
}

export const scenario: Scenario = {
  name: "fan-out",
  title: "one sender, N watchers: send → last watcher has FIRST_MESSAGE, vs server.publish",
  timeoutMs: 300_000,
  async run() {
    const sse = await spawnChild<{ url: string }>("servers/sse-model.ts", { name: "sse-model" });
    const rows: Row[] = [];
    const data: Record<string, unknown> = { messages: MESSAGES, perProcess: PER_PROCESS };
    try {
      for (const n of SIZES) {
        const procs = Math.max(1, Math.ceil(n / PER_PROCESS));
        const perClient = Math.ceil(n / procs);
        const watchers = perClient * procs;
        const clients = await Promise.all(
          Array.from({ length: procs }, (_, i) => spawnChild("clients/sockets.ts", { name: `clients${i}` })),
        );
        const app = await spawnChild<{ ws: string }>("servers/app.ts", {
          name: "app",
          env: { BENCH_APP_ENV: JSON.stringify({ OPENAI_BASE_URL: `${sse.info.url}/v1`, OPENAI_MODEL: "bench" }) },
        });
        const base = await spawnChild<{ url: string }>("servers/baseline.ts", { name: "baseline" });
        try {
          // Ours: a named chat (no auto-title), the sender on its own socket.
          const sender = await openSocket(app.info.ws);
          const { chat } = await request(sender, { type: "CREATE_CHAT", name: "bench fan-out" }, "NEW_CHAT");
          const content = (k: number) => `fanout ${k} tokens=1`;
          const shape = (k: number) =>
            JSON.stringify({
              type: "FIRST_MESSAGE",
              chatId: chat.id,
              content: content(k),
              message: {
                id: crypto.randomUUID(),
                chat_id: chat.id,
                role: "user",
                content: content(k),
                created_at: new Date().toISOString(),
              },
            });
          const frameBytes = shape(0).length;

          const pub = await openSocket(`${base.info.url}/pub?topic=fanout`);
          const b = await measure({
            clients,
            perClient,
            connect: { url: `${base.info.url}/sub?topic=fanout`, mode: "watch-baseline" },
            sender: pub,
            frameFor: shape,
            waitSenderEnd: false,
            server: base,
          });
          pub.close();
          console.log(`   ${watchers} watchers, baseline: last p50 ${round(summarize(b.lastMs).p50)} ms, cpu ${JSON.stringify(b.cpu)}`);
          await base.stop();

          const o = await measure({
            clients,
            perClient,
            connect: { url: app.info.ws, mode: "watch-ours", chatId: chat.id },
            sender,
            frameFor: (k) => JSON.stringify({ type: "SEND_MESSAGE", chatId: chat.id, content: content(k) }),
            waitSenderEnd: true,
            server: app,
          });
          sender.close();
          console.log(`   ${watchers} watchers, ours: last p50 ${round(summarize(o.lastMs).p50)} ms, cpu ${JSON.stringify(o.cpu)}`);

          const ol = summarize(o.lastMs),
            bl = summarize(b.lastMs),
            oe = summarize(o.eachMs),
            be = summarize(b.eachMs);
          data[n] = {
            watchers,
            processes: procs,
            frameBytes,
            ours: {
              lastMs: { p50: round(ol.p50), p99: round(ol.p99), max: round(ol.max) },
              eachMs: { p50: round(oe.p50), p99: round(oe.p99) },
              cpuPercent: o.cpu,
              raw: o.lastMs.map((x) => round(x)),
            },
            baseline: {
              lastMs: { p50: round(bl.p50), p99: round(bl.p99), max: round(bl.max) },
              eachMs: { p50: round(be.p50), p99: round(be.p99) },
              cpuPercent: b.cpu,
              raw: b.lastMs.map((x) => round(x)),
            },
          };
          const label = `${watchers.toLocaleString("en-US")} watchers`;
          const big = watchers >= 10_000;
          rows.push({
            metric: `${label}: last watcher p50`,
            unit: "ms",
            ours: ol.p50,
            baseline: bl.p50,
            ratio: ratio(ol.p50, bl.p50),
            better: "lower",
            note: `${procs} client process${procs > 1 ? "es" : ""}, ${MESSAGES} messages, ${frameBytes} B frame`,
          });
          rows.push({
            metric: `${label}: last watcher p99`,
            unit: "ms",
            ours: ol.p99,
            baseline: bl.p99,
            ratio: ratio(ol.p99, bl.p99),
            better: "lower",
            ...(big ? { target: "< 100 ms", met: ol.p99 < 100 } : {}),
            note: `cpu ours: server ${o.cpu.server}%, clients ${clients.map((c) => o.cpu[c.name]).join("/")}%; base: server ${b.cpu.server}%`,
          });
          rows.push({
            metric: `${label}: each watcher p50 / p99`,
            unit: "ms",
            ours: `${round(oe.p50, 2)} / ${round(oe.p99, 2)} ms`,
            baseline: `${round(be.p50, 2)} / ${round(be.p99, 2)} ms`,
            ratio: ratio(oe.p99, be.p99),
            better: "lower",
          });
        } finally {
          await within(Promise.all([app.stop(), base.stop(), ...clients.map((c) => c.stop())]), 30_000, "fan-out processes to stop").catch(
            () => {},
          );
        }
      }
      return { rows, data };
    } finally {
      await sse.stop();
    }
  },
};

if (import.meta.main) await runAlone(scenario);
