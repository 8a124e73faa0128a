import { now, until, within } from "../lib/clock";
import { serveChild } from "../lib/proc";
import { closeAll, openMany } from "../lib/ws";

// A client process holding many sockets, so that 10,000 connections do not all sit in the bench's
// own event loop. Commands:
//   connect {url, count, mode, chatId?}  opens `count` more sockets; "watch-ours" then asks each for
//                                        GET_CHAT_HISTORY (so it watches the chat); "watch-baseline" and
//                                        "idle" only connect
//   times                                 receive times of every marked frame, by message number
//   close                                 closes every socket
// Marked frames are FIRST_MESSAGE frames whose content names a message number ("fanout <k>"); the
// handler takes the time first and does as little as it can, since it is part of what is measured.
// When every socket of this process has message k, it pushes {kind:"got", k}.

const PREFIX = '{"type":"FIRST_MESSAGE"';
const MARK = /fanout (\d+)/;

let sockets: WebSocket[] = [];
const times = new Map<number, number[]>();
let stray = 0;

function onMessage(e: MessageEvent) {
  const t = now();
  const d = e.data;
  if (typeof d !== "string" || !d.startsWith(PREFIX)) return;
  const m = MARK.exec(d);
  if (!m) return void stray++;
  const k = Number(m[1]);
  let list = times.get(k);
  if (!list) times.set(k, (list = []));
  list.push(t);
  if (list.length === sockets.length) child.event({ kind: "got", k, n: list.length });
}

async function watch(ws: WebSocket, chatId: string): Promise<void> {
  const answered = new Promise<void>((resolve, reject) => {
    ws.onmessage = (e) => {
      const d = String(e.data);
      if (d.startsWith('{"type":"CHAT_HISTORY"')) resolve();
      else if (d.startsWith('{"type":"ERROR"')) reject(new Error(d));
    };
    ws.send(JSON.stringify({ type: "GET_CHAT_HISTORY", chatId, limit: 1 }));
  });
  await within(answered, 30_000, "CHAT_HISTORY");
}

const child = serveChild(
  { pid: process.pid },
  {
    async connect(a: {
      url: string;
      count: number;
      mode: "idle" | "watch-ours" | "watch-baseline";
      chatId?: string;
      concurrency?: number;
    }) {
      const opened = await openMany(a.url, a.count, a.concurrency ?? 64, 120_000);
      if (a.mode === "watch-ours") {
        // In batches, so the server's queue of history reads stays bounded.
        for (let i = 0; i < opened.length; i += 200) await Promise.all(opened.slice(i, i + 200).map((ws) => watch(ws, a.chatId!)));
      }
      for (const ws of opened) ws.onmessage = onMessage;
      sockets = sockets.concat(opened);
      return { open: sockets.filter((ws) => ws.readyState === WebSocket.OPEN).length };
    },
    times: () => ({ times: Object.fromEntries(times), stray }),
    async close() {
      closeAll(sockets);
      await until(() => sockets.every((ws) => ws.readyState === WebSocket.CLOSED), "every socket to close", 10_000).catch(() => {});
      const left = sockets.filter((ws) => ws.readyState !== WebSocket.CLOSED).length;
      sockets = [];
      times.clear();
      return { left };
    },
  },
);
