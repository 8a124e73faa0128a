import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { rmSync } from "node:fs";
import { modelEnv, newChat, UPGRADE_HEADERS } from "./support/fixtures";
import { spawnServer, type ServerProcess } from "./support/server-process";
import { startSseModel, type SseModel } from "./support/sse-model";
import { within } from "./support/until";
import { connect, type TestClient } from "./support/ws-client";

// Graceful shutdown on a real `bun src/index.ts` process: SIGTERM during a reply, the drain, new
// sockets refused, replies finished or stored as interrupted, 1001, exit 0. Everything waits on
// frames, log lines or process exit, each with a deadline; nothing sleeps to sync.

const clients: TestClient[] = [];
const track = (c: TestClient) => (clients.push(c), c);
afterEach(() => {
  for (const c of clients.splice(0)) if (c.ws.readyState <= 1) c.ws.close();
});

// ── SIGTERM on a real process ───────────────────────────────────────────────────────────────

describe("SIGTERM during a reply (a real `bun src/index.ts` process)", () => {
  let model: SseModel;
  const spawned: ServerProcess[] = [];
  beforeAll(async () => {
    model = await startSseModel();
  });
  afterAll(() => {
    for (const s of spawned) {
      if (s.proc.exitCode === null) s.proc.kill("SIGKILL");
      rmSync(s.dir, { recursive: true, force: true });
    }
    model.stop();
  });

  const storedMessages = (dbPath: string) => {
    const db = new Database(dbPath);
    try {
      return db.query("SELECT role, content, status FROM messages ORDER BY created_at, rowid").all() as {
        role: string;
        content: string;
        status: string | null;
      }[];
    } finally {
      db.close();
    }
  };

  // Each test holds its reply in flight at the model (holdAfter) until it has done what it needs
  // during the drain, so "the reply is still running when SIGTERM lands" never depends on pacing.

  test("past SHUTDOWN_TIMEOUT_MS the reply is cut off and stored as interrupted; the client gets the end, then 1001; exit 0", async () => {
    const tokens = Array.from({ length: 100 }, (_, i) => ` t${i}`);
    // Three chunks, then the model goes quiet for good: only the shutdown deadline ends this reply.
    model.setScript({ tokens, holdAfter: 3 });
    const s = await spawnServer({ ...modelEnv(model), SHUTDOWN_TIMEOUT_MS: "500" });
    spawned.push(s);
    const c = track(await connect(s.wsUrl));
    const chat = await newChat(c);
    c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "a long story, please" });
    const seen = [];
    for (let i = 1; i <= 3; i++) seen.push(await c.next((f) => f.type === "MESSAGE" && !f.end, 15_000));
    await model.waitHeld(1, 15_000);

    const t0 = performance.now();
    s.proc.kill("SIGTERM");
    const rest = await c.reply(chat.id, 5_000);
    const r = { ...rest, text: seen.map((f) => f.content).join("") + rest.text, chunks: [...seen, ...rest.chunks] };
    const closed = await within(c.closed, 5_000, "the close after shutdown");
    const code = await within(s.proc.exited, 5_000, "process exit");
    const shutdownMs = performance.now() - t0;

    expect(r.end.reason).toBe("interrupted");
    expect(r.end.seq).toBe(4);
    expect(r.text).toBe(tokens.slice(0, 3).join(""));
    expect(closed).toEqual({ code: 1001, reason: "server shutting down" });
    expect(code).toBe(0);
    expect(shutdownMs).toBeGreaterThanOrEqual(450);
    expect(shutdownMs).toBeLessThan(4_000);
    expect((await model.waitForAbort(1_000)).aborted).toBe(true);
    expect(s.lines.some((l) => l.includes("stopped"))).toBe(true);

    // The file the process left behind has the question and exactly the text the client saw.
    expect(storedMessages(s.dbPath)).toEqual([
      { role: "user", content: "a long story, please", status: null },
      { role: "assistant", content: r.text, status: "interrupted" },
    ]);
    console.log(
      `SIGTERM, SHUTDOWN_TIMEOUT_MS=500: exited 0 after ${Math.round(shutdownMs)} ms; reply interrupted at ${r.chunks.length}/${tokens.length} tokens`,
    );
  }, 30_000);

  test("within SHUTDOWN_TIMEOUT_MS the reply finishes normally before the process exits; new sockets get 503 SHUTTING_DOWN with Retry-After meanwhile", async () => {
    const tokens = Array.from({ length: 30 }, (_, i) => ` u${i}`);
    model.setScript({ tokens, holdAfter: 1 });
    const s = await spawnServer({ ...modelEnv(model), SHUTDOWN_TIMEOUT_MS: "10000" });
    spawned.push(s);
    const c = track(await connect(s.wsUrl));
    const chat = await newChat(c);
    c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "short one" });
    const first = await c.next((f) => f.type === "MESSAGE" && !f.end, 15_000);
    await model.waitHeld(1, 15_000);

    const t0 = performance.now();
    s.proc.kill("SIGTERM");
    await s.waitLine(/shutting down/, 5_000);
    // Draining, with the reply still held: the listener is still up but takes no new sockets.
    const refused = await fetch(`${s.httpUrl}/ws`, { headers: UPGRADE_HEADERS });
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("2");
    expect(await refused.json()).toEqual({ error: expect.any(String), code: "SHUTTING_DOWN" });
    // Nothing about the drain ended the reply: it is still waiting on the model.
    expect(c.frames.some((f) => f.type === "MESSAGE" && f.end)).toBe(false);
    model.release();

    const r = await c.reply(chat.id, 5_000);
    const closed = await within(c.closed, 5_000, "the close after shutdown");
    const code = await within(s.proc.exited, 5_000, "process exit");
    const shutdownMs = performance.now() - t0;

    expect(r.end.reason).toBeUndefined();
    expect(first.content + r.text).toBe(tokens.join(""));
    expect(closed).toEqual({ code: 1001, reason: "server shutting down" });
    expect(code).toBe(0);
    expect(shutdownMs).toBeLessThan(5_000);
    expect(storedMessages(s.dbPath)).toEqual([
      { role: "user", content: "short one", status: null },
      { role: "assistant", content: tokens.join(""), status: null },
    ]);
    console.log(`SIGTERM, SHUTDOWN_TIMEOUT_MS=10000: reply finished, exited 0 after ${Math.round(shutdownMs)} ms`);
  }, 30_000);

  // Before the fix a SEND_MESSAGE during the drain was accepted, but stop() only waited for the
  // replies in flight when it began, so that reply was neither finished nor stored. Once the drain
  // has begun (the "shutting down" line is logged as stop() starts), a new reply is refused.
  test("a SEND_MESSAGE that arrives while the server drains is refused with SHUTTING_DOWN and stores nothing; the reply in flight still finishes", async () => {
    const tokens = Array.from({ length: 30 }, (_, i) => ` v${i}`);
    model.setScript({ tokens, holdAfter: 1 });
    const s = await spawnServer({ ...modelEnv(model), SHUTDOWN_TIMEOUT_MS: "10000" });
    spawned.push(s);
    const c = track(await connect(s.wsUrl));
    const chat1 = await newChat(c);
    const chat2 = await newChat(c);
    c.send({ type: "SEND_MESSAGE", chatId: chat1.id, content: "first" });
    const first = await c.next((f) => f.type === "MESSAGE" && !f.end, 15_000);
    await model.waitHeld(1, 15_000);
    s.proc.kill("SIGTERM");
    await s.waitLine(/shutting down/, 5_000);
    const late = await c.request(
      { type: "SEND_MESSAGE", requestId: "late", chatId: chat2.id, content: "sent while draining" },
      "MESSAGE_ACCEPTED",
    );
    expect(late).toMatchObject({ type: "ERROR", code: "SHUTTING_DOWN", retryAfterMs: 2000, requestId: "late" });
    expect(typeof late.error).toBe("string");
    model.release();

    const closed = await within(c.closed, 15_000, "the close after shutdown");
    expect(closed.code).toBe(1001);
    expect(await within(s.proc.exited, 5_000, "process exit")).toBe(0);
    // Nothing of chat2 was stored, or shown: no reply ever started there.
    expect(c.frames.filter((f) => f.type === "MESSAGE" && f.chatId === chat2.id)).toEqual([]);
    const db = new Database(s.dbPath);
    const rows = (chatId: string) =>
      db.query("SELECT role, content, status FROM messages WHERE chat_id = ? ORDER BY created_at, rowid").all(chatId);
    const chat1Rows = rows(chat1.id);
    const chat2Rows = rows(chat2.id);
    db.close();
    expect(chat2Rows).toEqual([]);
    // The reply in flight was finished, whole, before the process exited.
    expect(first.content).toBe(tokens[0]);
    expect(chat1Rows).toEqual([
      { role: "user", content: "first", status: null },
      { role: "assistant", content: tokens.join(""), status: null },
    ]);
  }, 30_000);
});
