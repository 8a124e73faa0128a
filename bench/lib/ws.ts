import { within } from "./clock";

// Raw sockets for the load loops (no per-frame parsing unless a loop asks for it).

export function openSocket(url: string, timeoutMs = 10_000): Promise<WebSocket> {
  const ws = new WebSocket(url);
  const opened = new Promise<WebSocket>((resolve, reject) => {
    ws.addEventListener("open", () => resolve(ws), { once: true });
    ws.addEventListener("error", () => reject(new Error(`could not connect to ${url}`)), { once: true });
    ws.addEventListener("close", (e) => reject(new Error(`closed while connecting to ${url}: ${e.code}`)), { once: true });
  });
  return within(opened, timeoutMs, `a socket to ${url}`).catch((e) => {
    try {
      ws.close();
    } catch {}
    throw e;
  });
}

/** Opens `n` sockets, at most `concurrency` handshakes at a time. */
export async function openMany(
  url: string | ((i: number) => string),
  n: number,
  concurrency = 100,
  timeoutMs = 60_000,
): Promise<WebSocket[]> {
  const out: WebSocket[] = new Array(n);
  let next = 0;
  const deadline = Date.now() + timeoutMs;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      if (Date.now() > deadline) throw new Error(`opening ${n} sockets took longer than ${timeoutMs} ms (at ${i})`);
      out[i] = await openSocket(typeof url === "string" ? url : url(i));
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return out;
}

/** The next frame on a socket that matches, parsed; bounded. */
export function nextFrame(ws: WebSocket, pred: (f: any) => boolean, timeoutMs = 10_000, what = "a frame"): Promise<any> {
  let handler!: (e: MessageEvent) => void;
  const p = new Promise<any>((resolve) => {
    handler = (e: MessageEvent) => {
      const f = JSON.parse(String(e.data));
      if (pred(f)) resolve(f);
    };
    ws.addEventListener("message", handler);
  });
  return within(p, timeoutMs, what).finally(() => ws.removeEventListener("message", handler));
}

/** Sends a frame and waits for the reply of `type` (an ERROR frame fails). */
export async function request(ws: WebSocket, frame: object, type: string, timeoutMs = 10_000): Promise<any> {
  const reply = nextFrame(ws, (f) => f.type === type || f.type === "ERROR", timeoutMs, type);
  ws.send(JSON.stringify(frame));
  const f = await reply;
  if (f.type === "ERROR") throw new Error(`${type}: the server answered ${JSON.stringify(f)}`);
  return f;
}

export function closeAll(sockets: WebSocket[]) {
  for (const ws of sockets) {
    try {
      ws.close();
    } catch {}
  }
}

/** A chat of `pairs` questions and answers, made through the protocol (the model must be the bench SSE model). */
export async function seedChat(
  wsUrl: string,
  o: { name: string; pairs: number; tokens: number },
): Promise<{ chatId: string; ws: WebSocket }> {
  const ws = await openSocket(wsUrl);
  const { chat } = await request(ws, { type: "CREATE_CHAT", name: o.name }, "NEW_CHAT");
  for (let i = 0; i < o.pairs; i++) {
    const end = nextFrame(ws, (f) => (f.type === "MESSAGE" && f.end) || f.type === "ERROR", 10_000, "the reply's end");
    ws.send(
      JSON.stringify({
        type: "SEND_MESSAGE",
        chatId: chat.id,
        content: `Question ${i + 1}: what will the weather be like tomorrow? tokens=${o.tokens}`,
      }),
    );
    const f = await end;
    if (f.type === "ERROR" || f.reason) throw new Error(`seeding failed: ${JSON.stringify(f)}`);
  }
  return { chatId: chat.id, ws };
}
