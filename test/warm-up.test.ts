import { Database } from "bun:sqlite";
import { afterAll, describe, expect, test } from "bun:test";
import { spawnServer, type ServerProcess } from "./support/server-process";
import { startSseModel } from "./support/sse-model";
import { until, within } from "./support/until";

// What the first send would load on first use (the model's tokenizer, the model client's request
// path, one whole send on a throwaway stack) is done at start-up, and /health/ready says not ready
// until it is: a load balancer sends a fresh replica no socket whose first question would wait for
// it. A process of its own, so nothing is loaded before it starts.

describe("start-up warm-up", () => {
  const started: ServerProcess[] = [];
  afterAll(async () => {
    for (const s of started) await s.crash();
  });

  test("/health/ready is 503 (warm: false) until the warm-up is done, then 200 (warm: true); the warm-up sends the model nothing; the first send is answered", async () => {
    const model = await startSseModel({ tokens: ["warm", " reply"] });
    try {
      const srv = await spawnServer({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "gpt-4o", CHAT_TITLES: "false" });
      started.push(srv);
      // From listening on, every answer is "not ready, not warm" or "ready, warm". (Under load the
      // warm-up may finish before the first answer; on an idle machine the first answers come while
      // the tokenizer still loads.)
      const seen: { status: number; warm: unknown }[] = [];
      await until(
        async () => {
          const res = await fetch(`${srv.httpUrl}/health/ready`);
          seen.push({ status: res.status, warm: ((await res.json()) as { warm: unknown }).warm });
          return res.status === 200;
        },
        "/health/ready to answer 200",
        20_000,
      );
      for (const s of seen) expect(s).toEqual(s.status === 200 ? { status: 200, warm: true } : { status: 503, warm: false });
      await srv.waitLine(/ warmed up /, 5_000);
      // Every part of it ran (a failed warm-up logs and still says ready).
      expect(srv.lines.filter((l) => /could not warm up/.test(l))).toEqual([]);
      // The warm-up sent nothing to the model: its request path ran against an answer from memory.
      expect(model.requests.length).toBe(0);
      // Nor did its sends (src/warm-up.ts, a throwaway server) store anything where the server stores.
      const db = new Database(srv.dbPath, { readonly: true });
      try {
        for (const table of ["chats", "messages", "usage", "usage_daily"])
          expect(db.query<{ n: number }, []>(`SELECT count(*) AS n FROM ${table}`).get()).toEqual({ n: 0 });
      } finally {
        db.close();
      }

      const ws = new WebSocket(srv.wsUrl);
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = reject;
      });
      // Frames as they come; `next` waits (bounded) for the first one a predicate accepts.
      const frames: Record<string, any>[] = [];
      const waiting = new Set<() => void>();
      ws.onmessage = (e) => {
        frames.push(JSON.parse(String(e.data)));
        for (const w of waiting) w();
      };
      const next = (pred: (f: Record<string, any>) => boolean) =>
        within(
          new Promise<Record<string, any>>((resolve) => {
            const check = () => {
              const f = frames.find(pred);
              if (f) waiting.delete(check), resolve(f);
            };
            waiting.add(check);
            check();
          }),
          10_000,
          "a frame",
        );
      ws.send(JSON.stringify({ type: "CREATE_CHAT", name: "warm" }));
      const chatId = (await next((f) => f.type === "NEW_CHAT")).chat.id as string;
      ws.send(JSON.stringify({ type: "SEND_MESSAGE", chatId, content: "the first question after start-up" }));
      await next((f) => f.type === "MESSAGE" && f.end);
      const text = frames
        .filter((f) => f.type === "MESSAGE" && !f.end)
        .map((f) => f.content)
        .join("");
      expect(text).toBe("warm reply");
      expect(model.requests.length).toBe(1);
      ws.close();
    } finally {
      model.stop();
    }
  }, 30_000);

  test("an operator's tight frame, send and message-length limits do not refuse the warm-up (its throwaway server keeps its own)", async () => {
    const srv = await spawnServer({
      RATE_LIMIT_FRAMES_PER_SECOND: "1",
      RATE_LIMIT_MESSAGES_PER_MINUTE: "1",
      MAX_GENERATIONS_PER_USER: "1",
      MAX_MESSAGE_CHARS: "5",
    });
    started.push(srv);
    await srv.waitLine(/ warmed up /, 15_000);
    expect(srv.lines.filter((l) => /could not warm up/.test(l))).toEqual([]);
  }, 30_000);
});
