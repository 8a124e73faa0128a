import { Redis } from "ioredis";
import { loadavg } from "node:os";
import { startRedis, type RedisServer } from "../test/support/redis-server";
import { now, sleep, within } from "./lib/clock";
import { cpuSecondsOf, spawnChild, type Child } from "./lib/proc";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { round, summarize, type Summary } from "./lib/stats";
import { openSocket, request } from "./lib/ws";

// 7. Several replicas: three server processes (bench/servers/app.ts with REDIS_URL and the shared
// Cosmos store) on one real redis-server, beside one server without Redis on the same Cosmos test
// server, all on loopback, all in the same run.
//
//  A. Cross-replica token latency. A reply generated on r0 (the sender's replica), the model pacing
//     tokens at 1 ms and at 5 ms, each token carrying the time it was written. One watcher socket on
//     r0 (same replica: the baseline) and one on r1 (its tokens went through Redis), both in the
//     bench process, so "added per token" is r1's arrival minus r0's arrival for the same seq, on one
//     clock. Both are also given against the model's write time, and beside a watcher on the server
//     without Redis (one replica: what a token cost before multi-replica mode). Sides alternate.
//  B. Fan-out across replicas. W idle watcher sockets (WATCH) of one chat, held by client processes
//     (bench/clients/delta-watchers.ts), socket i on replica i mod 3; replies generated on r0, a
//     delta every 250 ms and then every 100 ms, each delta timed at every socket from the model's
//     write. Beside them, as many watchers of another chat on the one server without Redis, held by
//     the same client processes; replies alternate between the two sides.

const A_TOKENS = Number(process.env.BENCH_REPLICAS_TOKENS ?? 300);
const A_REPEATS = Number(process.env.BENCH_REPLICAS_REPEATS ?? 5);
const A_PACES = [1, 5];
const B_WATCHERS = Number(process.env.BENCH_REPLICAS_WATCHERS ?? 10_000);
const B_REPLIES = Number(process.env.BENCH_REPLICAS_REPLIES ?? 5);
const B_TOKENS = Number(process.env.BENCH_REPLICAS_FANOUT_TOKENS ?? 20);
// 250 ms: each delta's fan-out (about 60 ms of one core for 10,000 sockets) is done before the next
// comes, so each is measured on its own; 100 ms: close to what this 2-core machine can carry.
const B_PACES = (process.env.BENCH_REPLICAS_FANOUT_PACES_MS ?? "250,100").split(",").map(Number);
const PER_PROCESS = Number(process.env.BENCH_REPLICAS_PER_PROCESS ?? 5000);
const REPLICAS = 3;

type App = Child<{ ws: string }>;
const MESSAGE = '{"type":"MESSAGE"';

// ---- A: one reply, timed at a few watcher sockets in this process ----

type Timed = { recv: number[][]; stamps: number[] };

/**
 * A new named chat (no title request) made by `sender`; every watcher opens it (GET_CHAT_HISTORY
 * moves its focus there, so the previous chat stops streaming to it); the sender asks; each
 * watcher's arrival time per seq. Resolves when every watcher has the end frame.
 */
async function timedReply(sender: WebSocket, watchers: WebSocket[], prompt: string, tokens: number, timeoutMs = 60_000): Promise<Timed> {
  const { chat } = await request(sender, { type: "CREATE_CHAT", name: "bench replicas" }, "NEW_CHAT");
  for (const w of watchers) await request(w, { type: "GET_CHAT_HISTORY", chatId: chat.id, limit: 1 }, "CHAT_HISTORY", 30_000);
  const out: Timed = { recv: watchers.map(() => new Array<number>(tokens)), stamps: new Array<number>(tokens) };
  const ended = watchers.map(
    (w, i) =>
      new Promise<void>((resolve, reject) => {
        w.onmessage = (e) => {
          const t = now();
          const d = e.data as string;
          if (!d.startsWith(MESSAGE)) return;
          const f = JSON.parse(d);
          if (f.chatId !== chat.id) return;
          if (f.end) {
            w.onmessage = null;
            return f.reason ? reject(new Error(`the reply ended with ${f.reason}`)) : resolve();
          }
          out.recv[i]![f.seq - 1] = t;
          out.stamps[f.seq - 1] = Number(f.content);
        };
      }),
  );
  sender.send(JSON.stringify({ type: "SEND_MESSAGE", chatId: chat.id, content: prompt }));
  await within(Promise.all(ended), timeoutMs, "the streamed reply at every watcher");
  for (const [i, r] of out.recv.entries()) {
    const got = r.filter((x) => x !== undefined).length;
    if (got !== tokens) throw new Error(`watcher ${i} got ${got} of ${tokens} tokens`);
  }
  return out;
}

type LatencySide = { sender: WebSocket; watchers: WebSocket[]; close(): void };
async function latencySide(senderWs: string, watcherWs: string[]): Promise<LatencySide> {
  const sender = await openSocket(senderWs);
  const watchers = await Promise.all(watcherWs.map((u) => openSocket(u)));
  return { sender, watchers, close: () => [sender, ...watchers].forEach((w) => w.close()) };
}

/**
 * The floor under "added": a bare SPUBLISH of the send time to a subscriber (ioredis, two
 * connections, in this process) at the same pacing, so a message crosses loopback to Redis and back
 * with no server of ours in the way.
 */
async function redisHop(url: string, count: number, paceMs: number): Promise<number[]> {
  const pub = new Redis(url, { maxRetriesPerRequest: 1 });
  const sub = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    const out: number[] = [];
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    sub.on("smessage", (_c: string, m: string) => {
      out.push(now() - Number(m));
      if (out.length === count) done();
    });
    await sub.ssubscribe("bench:hop");
    for (let i = 0; i < count; i++) {
      await sleep(paceMs);
      void pub.spublish("bench:hop", now().toFixed(4));
    }
    await within(all, 10_000, "the bare Redis messages");
    return out;
  } finally {
    pub.disconnect();
    sub.disconnect();
  }
}

// ---- B: W watchers in client processes ----

type Samples = {
  n: number[];
  lat: string[];
  extremes: Record<string, { min: number; max: number }>;
  ends: number;
  failedEnds: number;
  stray: number;
};
type FanOut = { each: number[]; byReplica: number[][]; lastPerDelta: number[]; firstPerDelta: number[]; cpu: Record<string, number> };
type FanOutSide = { name: string; label: string; urls: string[]; sender: WebSocket; cpuOf: { name: string; cpuSeconds(): number }[] };

const decode = (b64: string) => new Float64Array(new Uint8Array(Buffer.from(b64, "base64")).buffer);

/**
 * Both sides' watchers connected at once (each side its own chat and socket group in every client
 * process), then one warm-up reply each and, per pace, B_REPLIES measured replies per side,
 * alternating sides reply by reply so drift in the machine's load hits both. Closes the sockets.
 */
async function fanOut(o: { sides: FanOutSide[]; clients: Child[]; perClient: number; sse: Child; paces: number[] }) {
  const watchers = o.perClient * o.clients.length;
  const chats: Record<string, string> = {};
  const connectS: Record<string, number> = {};
  for (const side of o.sides) {
    const { chat } = await request(side.sender, { type: "CREATE_CHAT", name: `bench replicas fan-out ${side.name}` }, "NEW_CHAT");
    chats[side.name] = chat.id;
    const t0 = now();
    await Promise.all(
      o.clients.map((c) => c.call("connect", { group: side.name, urls: side.urls, count: o.perClient, chatId: chat.id }, 240_000)),
    );
    connectS[side.name] = (now() - t0) / 1000;
    console.log(`   ${side.label}: ${watchers} watchers connected and watching in ${connectS[side.name]!.toFixed(1)} s`);
  }

  const replied: Record<string, number[]> = Object.fromEntries(o.sides.map((x) => [x.name, o.clients.map(() => 0)]));
  let wake: (() => void) | undefined;
  o.clients.forEach((c, i) =>
    c.onEvent((e) => {
      if (e.kind !== "ended") return;
      replied[e.group as string]![i] = e.replies as number;
      wake?.();
    }),
  );
  const reply = async (side: FanOutSide, tokens: number, pace: number) => {
    const counts = replied[side.name]!;
    const target = Math.min(...counts) + 1;
    const all = within(
      new Promise<void>((resolve) => {
        wake = () => counts.every((r) => r >= target) && resolve();
      }),
      tokens * pace + 60_000,
      `every watcher to get the reply's end (${side.label})`,
    );
    side.sender.send(JSON.stringify({ type: "SEND_MESSAGE", chatId: chats[side.name], content: `tokens=${tokens} delay=${pace} stamp` }));
    await all;
  };
  const cpuSnap = (side: FanOutSide) => side.cpuOf.map((x) => x.cpuSeconds());

  // Warm-up, not recorded: the first reply pays for JIT on every path and for the model connection.
  for (const side of o.sides) {
    await reply(side, 3, o.paces[0]!);
    await sleep(500);
  }

  const byPace: Record<number, Record<string, FanOut>> = {};
  for (const pace of o.paces) {
    for (const side of o.sides) {
      await Promise.all(o.clients.map((c) => c.call("reset", { group: side.name })));
      replied[side.name]!.fill(0);
    }
    // CPU seconds each process used during its own side's replies, and their wall time.
    const cpuUsed: Record<string, number[]> = Object.fromEntries(o.sides.map((x) => [x.name, x.cpuOf.map(() => 0)]));
    const wall: Record<string, number> = Object.fromEntries(o.sides.map((x) => [x.name, 0]));
    for (let k = 0; k < B_REPLIES; k++) {
      for (const side of k % 2 === 0 ? o.sides : [...o.sides].reverse()) {
        const c0 = cpuSnap(side);
        const t0 = now();
        await reply(side, B_TOKENS, pace);
        wall[side.name]! += (now() - t0) / 1000;
        cpuSnap(side).forEach((x, i) => (cpuUsed[side.name]![i]! += x - c0[i]!));
        // Whatever a slow socket still had queued is delivered before the next reply is asked for.
        await sleep(500);
      }
    }

    const sseOffset = await o.sse.clockOffsetMs();
    const offsets = await Promise.all(o.clients.map((c) => c.clockOffsetMs()));
    byPace[pace] = {};
    for (const side of o.sides) {
      const reports = await Promise.all(o.clients.map((c) => c.call<Samples>("samples", { group: side.name }, 60_000)));
      const each: number[] = [];
      const byReplica: number[][] = side.urls.map(() => []);
      const last = new Map<string, number>();
      const first = new Map<string, number>();
      reports.forEach((r, i) => {
        if (r.failedEnds) throw new Error(`${r.failedEnds} replies ended with a reason at ${o.clients[i]!.name}`);
        // raw = arrival (client clock) − write (model clock); on the bench clock: raw − (client − model).
        const shift = offsets[i]! - sseOffset;
        r.lat.forEach((b64, u) => {
          for (const x of decode(b64)) {
            const y = x - shift;
            each.push(y);
            byReplica[u]!.push(y);
          }
        });
        for (const [k, x] of Object.entries(r.extremes)) {
          last.set(k, Math.max(last.get(k) ?? -Infinity, x.max - shift));
          first.set(k, Math.min(first.get(k) ?? Infinity, x.min - shift));
        }
      });
      const expected = watchers * B_TOKENS * B_REPLIES;
      if (each.length !== expected) throw new Error(`${side.label}: ${each.length} of ${expected} deltas reached their watchers`);
      // In the order the model wrote them (the key is the write time).
      const inOrder = (m: Map<string, number>) => [...m.entries()].sort((x, y) => Number(x[0]) - Number(y[0])).map(([, v]) => v);
      const cpu = Object.fromEntries(side.cpuOf.map((x, i) => [x.name, Math.round((cpuUsed[side.name]![i]! / wall[side.name]!) * 100)]));
      byPace[pace]![side.name] = { each, byReplica, lastPerDelta: inOrder(last), firstPerDelta: inOrder(first), cpu };
      const sum = summarize(each);
      console.log(`   ${side.label}, a delta every ${pace} ms: p50 ${round(sum.p50, 1)} ms, p99 ${round(sum.p99, 1)} ms`);
    }
  }
  await Promise.all(o.clients.map((c) => c.call("close", undefined, 30_000)));
  return { connectS, byPace };
}

// ---- the scenario ----

const ms = (s: Summary) => ({ p50: round(s.p50), p90: round(s.p90), p99: round(s.p99), max: round(s.max), n: s.n });
/** First and last watcher per delta, in the model's order: where in a reply the time goes. */
const raw = (f: FanOut) => ({
  firstPerDeltaMs: f.firstPerDelta.map((x) => round(x, 1)),
  lastPerDeltaMs: f.lastPerDelta.map((x) => round(x, 1)),
});
const pair = (a: number, b: number) => `${round(a, 3)} / ${round(b, 3)} ms`;

export const scenario: Scenario = {
  name: "replicas",
  title: `several replicas through Redis: a token on r0 vs r1, and ${B_WATCHERS.toLocaleString("en-US")} watchers over ${REPLICAS} replicas vs one server`,
  timeoutMs: 600_000,
  async run() {
    const loadAtStart = loadavg().map((x) => round(x, 2));
    console.log(`   load average at start: ${loadAtStart.join(", ")}`);
    const children: Child[] = [];
    let redis: RedisServer | undefined;
    const rows: Row[] = [];
    const data: Record<string, unknown> = { loadAtStart };
    try {
      const [r, cosmos, sse] = await Promise.all([
        startRedis(),
        spawnChild<{ endpoint: string; key: string }>("servers/cosmos.ts", { name: "cosmos" }),
        spawnChild<{ url: string }>("servers/sse-model.ts", { name: "sse-model" }),
      ]);
      redis = r;
      children.push(cosmos, sse);
      const common = {
        OPENAI_BASE_URL: `${sse.info.url}/v1`,
        OPENAI_MODEL: "bench",
        COSMOS_ENDPOINT: cosmos.info.endpoint,
        COSMOS_KEY: cosmos.info.key,
        COSMOS_ALLOW_SELF_SIGNED_CERT: "true",
      };
      const replicaDb = `bench-replicas-${crypto.randomUUID()}`;
      const app = async (name: string, env: Record<string, string>) => {
        const c = await spawnChild<{ ws: string }>("servers/app.ts", {
          name,
          env: { BENCH_APP_ENV: JSON.stringify({ ...common, ...env }) },
          readyTimeoutMs: 90_000,
        });
        children.push(c);
        return c;
      };
      const replica = (i: number) => app(`r${i}`, { COSMOS_DATABASE: replicaDb, REDIS_URL: redis!.url, REPLICA_ID: `r${i}` });
      // r0 first: it creates the shared database and containers, so the others do not race to.
      const r0 = await replica(0);
      const rest = await Promise.all(Array.from({ length: REPLICAS - 1 }, (_, i) => replica(i + 1)));
      const replicas: App[] = [r0, ...rest];
      const solo = await app("solo", { COSMOS_DATABASE: `bench-solo-${crypto.randomUUID()}` });
      const sseOffset = await sse.clockOffsetMs();

      // ---- A ----
      const multi = await latencySide(r0.info.ws, [r0.info.ws, replicas[1]!.info.ws, ...replicas.slice(2).map((x) => x.info.ws)]);
      const one = await latencySide(solo.info.ws, [solo.info.ws]);
      try {
        // Warm-up, not recorded: every query shape on the Cosmos test server, JIT, the model
        // connection; and proof that every replica is subscribed to the bus: a watcher on each must
        // get every token (a replica subscribes a moment after it listens, so the first tries may not).
        for (let i = 0, ok = 0; ok < 3; i++) {
          const tried = await timedReply(multi.sender, multi.watchers, "tokens=20 delay=1 stamp", 20, 10_000).then(
            () => true,
            (e) => {
              if (i >= 5) throw e;
              return false;
            },
          );
          if (tried) ok++;
          await timedReply(one.sender, one.watchers, "tokens=20 delay=1 stamp", 20);
        }
        const lat = (t: Timed, w: number) => t.recv[w]!.map((x, i) => x - (t.stamps[i]! - sseOffset));
        const a: Record<number, { r0: number[]; r1: number[]; added: number[]; solo: number[] }> = {};
        for (const pace of A_PACES) a[pace] = { r0: [], r1: [], added: [], solo: [] };
        for (let rep = 0; rep < A_REPEATS; rep++) {
          for (const pace of A_PACES) {
            const prompt = `tokens=${A_TOKENS} delay=${pace} stamp`;
            for (const side of rep % 2 === 0 ? (["multi", "one"] as const) : (["one", "multi"] as const)) {
              if (side === "multi") {
                // r0's and r1's watchers are timed; r2's stays on the warm-up chat, and r2 (a third
                // replica, as in part B) still receives every token from Redis and drops it.
                const t = await timedReply(multi.sender, multi.watchers.slice(0, 2), prompt, A_TOKENS);
                a[pace]!.r0.push(...lat(t, 0));
                a[pace]!.r1.push(...lat(t, 1));
                a[pace]!.added.push(...t.recv[1]!.map((x, i) => x - t.recv[0]![i]!));
              } else {
                const t = await timedReply(one.sender, one.watchers, prompt, A_TOKENS);
                a[pace]!.solo.push(...lat(t, 0));
              }
              await sleep(50);
            }
          }
        }
        const hops: Record<number, Summary> = {};
        for (const pace of A_PACES) hops[pace] = summarize(await redisHop(redis.url, A_TOKENS, pace));
        const aData: Record<string, unknown> = {};
        for (const pace of A_PACES) {
          const s = {
            r0: summarize(a[pace]!.r0),
            r1: summarize(a[pace]!.r1),
            added: summarize(a[pace]!.added),
            solo: summarize(a[pace]!.solo),
          };
          aData[`paced${pace}ms`] = {
            r0: ms(s.r0),
            r1: ms(s.r1),
            addedSameSeq: ms(s.added),
            oneReplicaNoRedis: ms(s.solo),
            bareRedisHop: ms(hops[pace]!),
            // Per token in send order (repeat after repeat), to see when the slow ones come.
            rawAddedMs: a[pace]!.added.map((x) => round(x)),
            rawR0Ms: a[pace]!.r0.map((x) => round(x)),
          };
          const label = `token paced ${pace} ms`;
          const tokens = `${A_REPEATS} replies × ${A_TOKENS} tokens`;
          rows.push({
            metric: `${label}: latency p50, watcher on r1 vs on r0`,
            unit: "ms",
            ours: s.r1.p50,
            baseline: s.r0.p50,
            ratio: ratio(s.r1.p50, s.r0.p50),
            better: "lower",
            note: `added (r1 − r0, same seq): p50 ${round(s.added.p50)} ms; ${tokens}`,
          });
          rows.push({
            metric: `${label}: latency p99, watcher on r1 vs on r0`,
            unit: "ms",
            ours: s.r1.p99,
            baseline: s.r0.p99,
            ratio: ratio(s.r1.p99, s.r0.p99),
            better: "lower",
            target: "≤ 2 ms added",
            met: s.added.p99 <= 2,
            note: `added (r1 − r0, same seq): p99 ${round(s.added.p99)} ms, max ${round(s.added.max)} ms; p99 − p99 ${round(s.r1.p99 - s.r0.p99)} ms`,
          });
          rows.push({
            metric: `${label}: latency p50 / p99, r0 vs one server without Redis`,
            unit: "ms",
            ours: pair(s.r0.p50, s.r0.p99),
            baseline: pair(s.solo.p50, s.solo.p99),
            ratio: ratio(s.r0.p99, s.solo.p99),
            better: "lower",
            note: `the generating replica's own cost of multi-replica mode (XADD + SPUBLISH per token)`,
          });
          rows.push({
            metric: `${label}: latency p50 / p99, r1 vs one server without Redis`,
            unit: "ms",
            ours: pair(s.r1.p50, s.r1.p99),
            baseline: pair(s.solo.p50, s.solo.p99),
            ratio: ratio(s.r1.p99, s.solo.p99),
            better: "lower",
            note: `p99 − p99: ${round(s.r1.p99 - s.solo.p99)} ms`,
          });
          rows.push({
            metric: `${label}: added (r1 − r0, same seq) p50 / p99 vs a bare Redis hop`,
            unit: "ms",
            ours: pair(s.added.p50, s.added.p99),
            baseline: pair(hops[pace]!.p50, hops[pace]!.p99),
            ratio: ratio(s.added.p99, hops[pace]!.p99),
            better: "lower",
            note: `bare: SPUBLISH of the time → subscriber, ioredis in the bench process, ${A_TOKENS} messages`,
          });
        }
        data.latency = { tokens: A_TOKENS, repeats: A_REPEATS, sseClockOffsetMs: sseOffset, ...aData };
      } finally {
        multi.close();
        one.close();
      }

      // ---- B ----
      const procs = Math.max(1, Math.ceil(B_WATCHERS / PER_PROCESS));
      const perClient = Math.ceil(B_WATCHERS / procs);
      const watchers = perClient * procs;
      const clients = await Promise.all(
        Array.from({ length: procs }, (_, i) => spawnChild(`clients/delta-watchers.ts`, { name: `clients${i}` })),
      );
      children.push(...clients);
      const redisCpu = { name: "redis", cpuSeconds: () => cpuSecondsOf(redis!.pid() ?? -1) };
      const clientCpu = clients.map((c) => ({ name: c.name, cpuSeconds: () => c.cpuSeconds() }));

      const senderM = await openSocket(r0.info.ws);
      const senderS = await openSocket(solo.info.ws);
      const f = await fanOut({
        clients,
        perClient,
        sse,
        paces: B_PACES,
        sides: [
          {
            name: "replicas",
            label: `${REPLICAS} replicas`,
            urls: replicas.map((x) => x.info.ws),
            sender: senderM,
            cpuOf: [...replicas.map((x) => ({ name: x.name, cpuSeconds: () => x.cpuSeconds() })), redisCpu, ...clientCpu],
          },
          {
            name: "one",
            label: "one server",
            urls: [solo.info.ws],
            sender: senderS,
            cpuOf: [{ name: "solo", cpuSeconds: () => solo.cpuSeconds() }, ...clientCpu],
          },
        ],
      });
      senderM.close();
      senderS.close();

      const bData: Record<string, unknown> = {};
      const cpuNote = (c: Record<string, number>, names: string[]) => names.map((n) => `${n} ${c[n]}%`).join(", ");
      for (const pace of B_PACES) {
        const mp = f.byPace[pace]!.replicas!,
          sp = f.byPace[pace]!.one!;
        const me = summarize(mp.each),
          se = summarize(sp.each),
          ml = summarize(mp.lastPerDelta),
          sl = summarize(sp.lastPerDelta);
        const per = mp.byReplica.map((x) => summarize(x));
        const label = `${watchers.toLocaleString("en-US")} watchers, a delta every ${pace} ms`;
        rows.push({
          metric: `${label}: latency p50, ${REPLICAS} replicas vs one server`,
          unit: "ms",
          ours: me.p50,
          baseline: se.p50,
          ratio: ratio(me.p50, se.p50),
          better: "lower",
          note: `${B_REPLIES} replies × ${B_TOKENS} deltas, ${procs} client processes`,
        });
        rows.push({
          metric: `${label}: latency p99, ${REPLICAS} replicas vs one server`,
          unit: "ms",
          ours: me.p99,
          baseline: se.p99,
          ratio: ratio(me.p99, se.p99),
          better: "lower",
          target: "≤ 100 ms",
          met: me.p99 <= 100,
          note: `cpu: ${cpuNote(mp.cpu, [...replicas.map((x) => x.name), "redis", ...clients.map((c) => c.name)])}; one server: ${cpuNote(sp.cpu, ["solo", ...clients.map((c) => c.name)])}`,
        });
        rows.push({
          metric: `${label}: last watcher per delta p50 / p99`,
          unit: "ms",
          ours: pair(ml.p50, ml.p99),
          baseline: pair(sl.p50, sl.p99),
          ratio: ratio(ml.p99, sl.p99),
          better: "lower",
          note: `${ml.n} deltas each side`,
        });
        rows.push({
          metric: `${label}: latency p50 / p99 by replica`,
          unit: "ms",
          ours: per.map((x, i) => `r${i} ${round(x.p50, 1)}/${round(x.p99, 1)}`).join(", "),
          note: `r0 generates; r1, r2 get the deltas through Redis; ${per.map((x, i) => `r${i} ${x.n / (B_TOKENS * B_REPLIES)} sockets`).join(", ")}`,
        });
        bData[`every${pace}ms`] = {
          replicas: { each: ms(me), lastPerDelta: ms(ml), byReplica: per.map(ms), cpuPercent: mp.cpu, raw: raw(mp) },
          oneServer: { each: ms(se), lastPerDelta: ms(sl), cpuPercent: sp.cpu, raw: raw(sp) },
        };
      }
      data.fanOut = {
        watchers,
        processes: procs,
        replies: B_REPLIES,
        tokens: B_TOKENS,
        pacesMs: B_PACES,
        connectS: { replicas: round(f.connectS.replicas!, 1), oneServer: round(f.connectS.one!, 1) },
        ...bData,
      };
      const loadAtEnd = loadavg().map((x) => round(x, 2));
      data.loadAtEnd = loadAtEnd;
      rows.push({
        metric: "load average (1, 5, 15 min) at start / end",
        unit: "",
        ours: `${loadAtStart.join(", ")} / ${loadAtEnd.join(", ")}`,
        note: "2 cores shared with other work",
      });
      return { rows, data };
    } finally {
      await within(Promise.all(children.map((c) => c.stop())), 30_000, "replica bench processes to stop").catch(() => {});
      await redis?.stop();
    }
  },
};

if (import.meta.main) await runAlone(scenario);
