// A WebSocket test client that keeps every frame in arrival order. Waits consume frames from a
// cursor and reject at once if the socket closes, so a missing message fails fast, not at timeout.

export type Frame = Record<string, any>;

export type TestClient = {
  ws: WebSocket;
  frames: Frame[];
  send(frame: unknown): void;
  sendRaw(data: string | Uint8Array<ArrayBuffer>): void;
  /** The next frame (after the last one waited for) that matches; frames skipped stay in `frames`. */
  next(pred?: ((f: Frame) => boolean) | string, timeoutMs?: number): Promise<Frame>;
  /** Sends a frame and waits for the reply of `type` (or an ERROR). */
  request(frame: Frame, replyType: string, timeoutMs?: number): Promise<Frame>;
  /** Collects one streamed reply in a chat until its end:true frame. */
  reply(chatId: string, timeoutMs?: number): Promise<{ text: string; traceId: string; chunks: Frame[]; end: Frame }>;
  closed: Promise<{ code: number; reason: string }>;
  close(): void;
};

/** `token` signs in as its user (an Authorization header), like a script or a device would. */
export async function connect(
  url: string,
  o: { protocols?: string[]; headers?: Record<string, string>; token?: string } = {},
): Promise<TestClient> {
  const headers = o.token ? { ...o.headers, Authorization: `Bearer ${o.token}` } : o.headers;
  const ws = new WebSocket(url, { protocols: o.protocols, headers } as any);
  const frames: Frame[] = [];
  let cursor = 0;
  const waiters = new Set<() => void>();
  let closeInfo: { code: number; reason: string } | undefined;
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.addEventListener("close", (e) => {
      closeInfo = { code: e.code, reason: e.reason };
      resolve(closeInfo);
      for (const w of waiters) w();
    });
  });
  ws.addEventListener("message", (e) => {
    frames.push(JSON.parse(String(e.data)));
    for (const w of waiters) w();
  });
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener("open", () => resolve(), { once: true });
    ws.addEventListener("error", () => reject(new Error(`could not connect to ${url}`)), { once: true });
  });

  function next(pred: ((f: Frame) => boolean) | string = () => true, timeoutMs = 5000): Promise<Frame> {
    const match = typeof pred === "string" ? (f: Frame) => f.type === pred : pred;
    return new Promise((resolve, reject) => {
      const check = () => {
        for (let i = cursor; i < frames.length; i++) {
          if (match(frames[i]!)) {
            cursor = i + 1;
            done();
            return resolve(frames[i]!);
          }
        }
        if (closeInfo) {
          done();
          reject(
            new Error(
              `socket closed (${closeInfo.code} ${closeInfo.reason}) while waiting; frames: ${JSON.stringify(frames.slice(cursor)).slice(0, 500)}`,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no matching frame within ${timeoutMs} ms; unread: ${JSON.stringify(frames.slice(cursor)).slice(0, 800)}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });
  }

  const client: TestClient = {
    ws,
    frames,
    send: (frame) => ws.send(JSON.stringify(frame)),
    sendRaw: (data) => ws.send(data),
    next,
    async request(frame, replyType, timeoutMs) {
      client.send(frame);
      return next((f) => f.type === replyType || f.type === "ERROR", timeoutMs);
    },
    async reply(chatId, timeoutMs = 10_000) {
      const chunks: Frame[] = [];
      let end: Frame;
      for (;;) {
        const f = await next((x) => x.type === "MESSAGE" && x.chatId === chatId, timeoutMs);
        if (f.end) {
          end = f;
          break;
        }
        chunks.push(f);
      }
      return { text: chunks.map((c) => c.content).join(""), traceId: end.traceId, chunks, end };
    },
    closed,
    close: () => ws.close(),
  };
  return client;
}
