import { now, until, within } from "../lib/clock";
import { serveChild } from "../lib/proc";
import { closeAll, openMany } from "../lib/ws";

// A client process holding many sockets that WATCH a chat and time every streamed reply delta
// (MESSAGE, end: false) they get. The model writes each token as the time it was written (the SSE
// model's `stamp`), so a delta's latency is its arrival here minus its content, in this process's
// clock minus the model's: the bench corrects that by the two calibrated clock offsets.
// Sockets come in named groups (one per side of a comparison), so both sides can be connected at
// once and their replies interleaved. Commands:
//   connect {group, urls, count, chatId}  opens `count` sockets in `group`, socket i to
//                                          urls[i % urls.length] (a load balancer's round robin over
//                                          replicas); each WATCHes chatId
//   samples {group}   every delta's raw latency (Float64 little-endian, base64), one list per URL
//                     (replica); the smallest and largest per delta (keyed by its stamp); end frames,
//                     failed ones, deltas that were not stamps
//   reset {group}     forgets the group's samples
//   close             closes every socket
// When every socket of a group has had its reply's end frame, it pushes {kind:"ended", group, replies}.
// The handler takes the time first and does as little as it can: it is part of what is measured.

const PREFIX = '{"type":"MESSAGE"';
const CONTENT = '"content":"';

type Group = {
  sockets: WebSocket[];
  /** Raw latencies by the index of the URL the socket went to (by replica). */
  lat: Float64Array[];
  n: number[];
  extremes: Map<string, { min: number; max: number }>;
  ends: number;
  failedEnds: number;
  stray: number;
};
const groups = new Map<string, Group>();

function push(g: Group, u: number, x: number) {
  while (g.lat.length <= u) {
    g.lat.push(new Float64Array(1 << 16));
    g.n.push(0);
  }
  if (g.n[u] === g.lat[u]!.length) {
    const next = new Float64Array(g.lat[u]!.length * 2);
    next.set(g.lat[u]!);
    g.lat[u] = next;
  }
  g.lat[u]![g.n[u]!++] = x;
}

function onMessage(name: string, g: Group, u: number, e: MessageEvent) {
  const t = now();
  const d = e.data;
  if (typeof d !== "string" || !d.startsWith(PREFIX)) return;
  const i = d.indexOf(CONTENT) + CONTENT.length;
  const j = d.indexOf('"', i);
  if (j === i) {
    // content "" is the end frame.
    if (d.includes('"reason"')) g.failedEnds++;
    if (++g.ends % g.sockets.length === 0) child.event({ kind: "ended", group: name, replies: g.ends / g.sockets.length });
    return;
  }
  const key = d.slice(i, j);
  const x = t - Number(key);
  if (!Number.isFinite(x)) return void g.stray++;
  push(g, u, x);
  const m = g.extremes.get(key);
  if (!m) g.extremes.set(key, { min: x, max: x });
  else if (x > m.max) m.max = x;
  else if (x < m.min) m.min = x;
}

async function watch(ws: WebSocket, chatId: string): Promise<void> {
  const answered = new Promise<void>((resolve, reject) => {
    ws.onmessage = (e) => {
      const d = String(e.data);
      if (d.startsWith('{"type":"WATCHING"')) resolve();
      else if (d.startsWith('{"type":"ERROR"')) reject(new Error(d));
    };
    ws.send(JSON.stringify({ type: "WATCH", chatIds: [chatId] }));
  });
  await within(answered, 60_000, "WATCHING");
}

const group = (name: string) => {
  const g = groups.get(name);
  if (!g) throw new Error(`no group ${name}`);
  return g;
};

const child = serveChild(
  { pid: process.pid },
  {
    async connect(a: { group: string; urls: string[]; count: number; chatId: string; concurrency?: number }) {
      if (groups.has(a.group)) throw new Error(`group ${a.group} is already connected`);
      const opened = await openMany((i) => a.urls[i % a.urls.length]!, a.count, a.concurrency ?? 64, 120_000);
      // In batches, so the servers' queues of store reads (WATCH checks the chat exists) stay bounded.
      for (let i = 0; i < opened.length; i += 200) await Promise.all(opened.slice(i, i + 200).map((ws) => watch(ws, a.chatId)));
      const g: Group = { sockets: opened, lat: [], n: [], extremes: new Map(), ends: 0, failedEnds: 0, stray: 0 };
      groups.set(a.group, g);
      opened.forEach((ws, i) => (ws.onmessage = (e) => onMessage(a.group, g, i % a.urls.length, e)));
      return { open: opened.filter((ws) => ws.readyState === WebSocket.OPEN).length };
    },
    samples: (a: { group: string }) => {
      const g = group(a.group);
      return {
        n: g.n,
        lat: g.lat.map((b, u) => Buffer.from(b.buffer, 0, g.n[u]! * 8).toString("base64")),
        extremes: Object.fromEntries(g.extremes),
        ends: g.ends,
        failedEnds: g.failedEnds,
        stray: g.stray,
      };
    },
    reset: (a: { group: string }) => {
      const g = group(a.group);
      g.n = g.n.map(() => 0);
      g.extremes.clear();
      g.ends = 0;
      g.failedEnds = 0;
      g.stray = 0;
    },
    async close() {
      const all = [...groups.values()].flatMap((g) => g.sockets);
      closeAll(all);
      await until(() => all.every((ws) => ws.readyState === WebSocket.CLOSED), "every socket to close", 10_000).catch(() => {});
      groups.clear();
      return { left: all.filter((ws) => ws.readyState !== WebSocket.CLOSED).length };
    },
  },
);
