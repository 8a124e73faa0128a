import { now, sleep } from "./clock";
import { cpuWindow, type Child } from "./proc";
import { median, round, summarize } from "./stats";
import { closeAll, openMany } from "./ws";

// A closed loop over WebSocket clients, for commands whose answer is one frame (a history) or a
// stream of frames ending in a marked one (a send's MESSAGE ... end:true): client i sends
// `frame(i, k)` for its k-th request and sends the next as soon as `isEnd` sees the answer's last
// frame. The same code drives ours and the baselines. Warm-up, a measured window, a bounded drain.

export type LoopSpec = {
  url: string;
  clients: number;
  frame(client: number, k: number): string;
  /** The answer's last frame ("ok") or an error ("error"); anything else is a frame along the way. */
  classify(data: string): "ok" | "error" | "more";
  server: Child;
  warmupMs: number;
  roundMs: number;
};

export type LoopResult = {
  replies: number;
  errors: number;
  seconds: number;
  latencies: number[];
  /** Frames received per completed request (a send's deltas and end), over the window. */
  framesPerReply: number;
  /** Server CPU time per completed request, µs (from /proc: 10 ms ticks, so use windows of seconds). */
  serverCpuUs: number;
  cpu: Record<string, number>;
  firstError?: string;
};

export async function closedLoop(s: LoopSpec): Promise<LoopResult> {
  const sockets = await openMany(s.url, s.clients, 50);
  let recording = false;
  let stopping = false;
  let replies = 0;
  let errors = 0;
  let frames = 0;
  let outstanding = 0;
  let firstError: string | undefined;
  const latencies: number[] = [];
  const sentAt = new Float64Array(s.clients);
  const count = new Uint32Array(s.clients);
  const send = (i: number) => {
    sentAt[i] = now();
    outstanding++;
    sockets[i]!.send(s.frame(i, count[i]!++));
  };
  sockets.forEach((ws, i) => {
    ws.onmessage = (e) => {
      const t = now();
      const data = e.data as string;
      if (recording) frames++;
      const kind = s.classify(data);
      if (kind === "more") return;
      outstanding--;
      if (recording) {
        if (kind === "ok") {
          replies++;
          latencies.push(t - sentAt[i]!);
        } else {
          errors++;
          firstError ??= data.slice(0, 300);
        }
      }
      if (!stopping) send(i);
    };
  });
  for (let i = 0; i < s.clients; i++) send(i);
  await sleep(s.warmupMs);
  const cpu = cpuWindow([{ name: "server", cpuSeconds: () => s.server.cpuSeconds() }]);
  const t0 = now();
  recording = true;
  await sleep(s.roundMs);
  recording = false;
  const seconds = (now() - t0) / 1000;
  const used = cpu();
  stopping = true;
  const deadline = Date.now() + 10_000;
  while (outstanding > 0 && Date.now() < deadline) await sleep(5);
  closeAll(sockets);
  return {
    replies,
    errors,
    seconds,
    latencies,
    cpu: used,
    firstError,
    framesPerReply: replies ? frames / replies : Number.NaN,
    serverCpuUs: replies ? ((used.server! / 100) * seconds * 1e6) / replies : Number.NaN,
  };
}

/** Several rounds of one side, pooled: throughput is the median of rounds, latencies pool every sample. */
export function aggregate(ls: LoopResult[]) {
  const lat = summarize(ls.flatMap((l) => l.latencies));
  return {
    perS: median(ls.map((l) => l.replies / l.seconds)),
    perRound: ls.map((l) => round(l.replies / l.seconds, 0)),
    serverCpuUs: round(median(ls.map((l) => l.serverCpuUs)), 1),
    serverCpuPercent: ls.map((l) => l.cpu.server),
    clientCpuPercent: ls.map((l) => l.cpu.bench),
    latencyMs: { p50: round(lat.p50), p99: round(lat.p99), max: round(lat.max), n: lat.n },
    framesPerReply: round(median(ls.map((l) => l.framesPerReply)), 2),
    errors: ls.reduce((n, l) => n + l.errors, 0),
    firstError: ls.find((l) => l.firstError)?.firstError,
  };
}
export type Aggregate = ReturnType<typeof aggregate>;

/**
 * Rounds alternate which side goes first, so drift on a shared machine hits every side alike.
 * `sides` run one after another in each round, rotated by one each round.
 */
export async function alternate<K extends string>(
  rounds: number,
  sides: Record<K, () => Promise<LoopResult>>,
  label: string,
  o: { warmRound?: boolean } = {},
): Promise<Record<K, Aggregate>> {
  const names = Object.keys(sides) as K[];
  const out = Object.fromEntries(names.map((n) => [n, [] as LoopResult[]])) as Record<K, LoopResult[]>;
  // A first round not recorded: the first send of a process loads the tokenizer and warms the JIT.
  if (o.warmRound) for (const side of names) await sides[side]();
  for (let r = 0; r < rounds; r++) {
    for (let j = 0; j < names.length; j++) {
      const side = names[(j + r) % names.length]!;
      const res = await sides[side]();
      out[side].push(res);
      console.log(
        `   ${label}, ${side}: ${Math.round(res.replies / res.seconds)}/s, server ${round(res.serverCpuUs, 1)} µs each, cpu ${JSON.stringify(res.cpu)}${res.errors ? `, ${res.errors} errors: ${res.firstError}` : ""}`,
      );
    }
  }
  return Object.fromEntries(names.map((n) => [n, aggregate(out[n])])) as Record<K, Aggregate>;
}

/** Cheap checks on the raw frame, as a client would do before parsing. */
export const isHistory = (d: string) =>
  d.startsWith('{"type":"CHAT_HISTORY"') ? "ok" : d.startsWith('{"type":"ERROR"') ? "error" : "more";
// A reply that fails ends with end:true and a reason, then an ERROR naming its traceId (counted once,
// at the end frame); an ERROR without a traceId is a refused send.
export const isSendEnd = (d: string) =>
  d.startsWith('{"type":"MESSAGE"')
    ? d.includes('"end":true')
      ? d.includes('"reason"')
        ? "error"
        : "ok"
      : "more"
    : d.startsWith('{"type":"ERROR"') && !d.includes('"traceId"')
      ? "error"
      : "more";
