import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import { connect, type Frame, type TestClient } from "./support/ws-client";

// The server under stress: a reader that stops reading, a sender that vanishes mid-reply, SIGTERM
// during a reply on a real process, the rate limits, oversized frames and the generation caps.
// Everything waits on frames, events or process exit, each with a deadline; nothing sleeps to sync.

const REPO = join(import.meta.dir, "..");
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
const MiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** The model's env for a test server; titles off so no second model call interferes. */
const modelEnv = (m: SseModel) => ({ OPENAI_BASE_URL: `${m.url}/v1`, OPENAI_MODEL: "test-model", OPENAI_API_KEY: "sk-test", CHAT_TITLES: "false" });

const clients: TestClient[] = [];
const track = (c: TestClient) => (clients.push(c), c);
afterEach(() => {
  for (const c of clients.splice(0)) if (c.ws.readyState <= 1) c.ws.close();
});

const newChat = async (c: TestClient) => (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat as { id: string };

/** Connects and returns the client with the server's side of its socket (found once the server has answered it). */
async function connectWithConn(srv: TestServer) {
  const before = new Set(srv.conns.all().map((ws) => ws.data.id));
  const client = track(await srv.connect());
  await client.request({ type: "GET_CHATS", limit: 1 }, "CHAT_LIST");
  const conn = srv.conns.all().find((ws) => !before.has(ws.data.id));
  if (!conn) throw new Error("the server has no socket for the new client");
  return { client, conn };
}

// ── A slow reader ───────────────────────────────────────────────────────────────────────────

describe("a reader that stops reading during a long, fast reply", () => {
  const TOKENS = 40_000;
  const LIMIT = 64 * 1024;
  const tokens = Array.from({ length: TOKENS }, (_, i) => `<${String(i).padStart(5, "0")}>${"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".slice(0, 43)}`);
  const full = tokens.join("");
  let model: SseModel;
  let srv: TestServer;

  beforeAll(async () => {
    model = await startSseModel({ tokens });
    srv = await startTestServer({ ...modelEnv(model), SEND_BUFFER_LIMIT_BYTES: String(LIMIT), MODEL_TIMEOUT_MS: "30000" });
  });
  afterAll(async () => {
    await srv.close();
    model.stop();
  });

  test("server memory stays bounded: the queue never passes SEND_BUFFER_LIMIT_BYTES, the slow socket is merged or closed 1008, a good watcher gets everything", async () => {
    expect(tokens[0]!.length).toBe(50);
    const owner = track(await srv.connect());
    const chat = await newChat(owner);
    owner.close();
    await owner.closed;

    // The slow reader: Bun's WebSocket client can pause reading (ws.pause()), so the kernel
    // buffers fill and the server sees real TCP backpressure.
    const { client: slow, conn: slowConn } = await connectWithConn(srv);
    await slow.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
    const slowId = slowConn.data.id;
    expect((slow.ws as WebSocket & { pause(): boolean }).pause()).toBe(true);

    // Sampled at every chat event, right after the server has fanned it out: no polling.
    const seen = { events: 0, maxQueuedBytes: 0, maxSlowQueuedBytes: 0, maxSlowQueueLength: 0, slowPausedEvents: 0, maxSlowSocketBuffer: 0, slowClosedAtEvent: -1 };
    const unsubscribe = srv.deps.bus.subscribe(() => {
      seen.events++;
      for (const ws of srv.conns.all()) {
        seen.maxQueuedBytes = Math.max(seen.maxQueuedBytes, ws.data.queuedBytes);
        if (ws.data.id !== slowId) continue;
        seen.maxSlowQueuedBytes = Math.max(seen.maxSlowQueuedBytes, ws.data.queuedBytes);
        seen.maxSlowQueueLength = Math.max(seen.maxSlowQueueLength, ws.data.queue.length);
        seen.maxSlowSocketBuffer = Math.max(seen.maxSlowSocketBuffer, ws.getBufferedAmount());
        if (ws.data.paused) seen.slowPausedEvents++;
      }
      if (seen.slowClosedAtEvent < 0 && slowConn.readyState !== 1) seen.slowClosedAtEvent = seen.events;
    });

    Bun.gc(true);
    const before = process.memoryUsage();

    // The well-behaved watcher runs in its own process: a client sharing this event loop with the
    // server and the model cannot read 40,000 frames as fast as they are produced and would itself
    // be paused and closed. It sends the message, so it is the sender and a watcher at once.
    const child = Bun.spawn([process.execPath, "-e", GOOD_WATCHER], {
      env: { ...process.env, WS_URL: srv.wsUrl, CHAT_ID: chat.id },
      stdout: "pipe",
      stderr: "inherit",
    });
    const started = performance.now();
    const out = await within(new Response(child.stdout).text(), 25_000, "the good watcher").finally(() => child.kill());
    const streamMs = performance.now() - started;
    expect(await child.exited).toBe(0);
    const good = JSON.parse(out.trim().split("\n").at(-1)!);
    unsubscribe();

    Bun.gc(true);
    const after = process.memoryUsage();

    // The good watcher got the whole text, in order, and it is stored whole.
    expect(good.error).toBeUndefined();
    expect(good.length).toBe(full.length);
    expect(good.sha256).toBe(sha256(full));
    expect(good.endReason).toBeNull();
    const stored = await srv.store.listMessages(chat.id, { limit: 10 });
    expect(stored.map((m) => m.role)).toEqual(["user", "assistant"]);
    expect(stored[1]!.content.length).toBe(full.length);
    expect(stored[1]!.content === full).toBe(true);
    expect(stored[1]!.status).toBeUndefined();

    // Memory held for any client never passed the limit.
    expect(seen.events).toBeGreaterThanOrEqual(TOKENS);
    expect(seen.maxQueuedBytes).toBeLessThanOrEqual(LIMIT);
    expect(seen.maxSlowQueuedBytes).toBeLessThanOrEqual(LIMIT);
    // The slow socket did come under backpressure, and its deltas were merged, not queued one by one.
    expect(seen.slowPausedEvents).toBeGreaterThan(0);
    expect(seen.maxSlowQueueLength).toBeLessThanOrEqual(3);

    // Resume reading: the slow client sees what was buffered for it, then either the rest or a 1008.
    (slow.ws as WebSocket & { resume(): boolean }).resume();
    const closedByServer = !srv.conns.all().some((ws) => ws.data.id === slowId);
    let slowText = "";
    let slowFrames = 0;
    if (closedByServer) {
      expect(srv.log.lines.some((l) => l.includes("does not keep up") && l.includes(slowId))).toBe(true);
      const closed = await within(slow.closed, 15_000, "the slow client's close");
      expect(closed.code).toBe(1008);
      const deltas = slow.frames.filter((f) => f.type === "MESSAGE" && f.chatId === chat.id && !f.end);
      slowFrames = deltas.length;
      slowText = deltas.map((f) => f.content).join("");
      // What it did get is an intact prefix: merged deltas keep order and content.
      expect(full.startsWith(slowText)).toBe(true);
      const seqs = deltas.map((f) => f.seq as number);
      expect(seqs.every((s, i) => i === 0 || s > seqs[i - 1]!)).toBe(true);
    } else {
      const r = await slow.reply(chat.id, 15_000);
      slowFrames = r.chunks.length;
      slowText = r.text;
      expect(r.text === full).toBe(true);
    }

    console.log([
      `slow reader: ${TOKENS} tokens x 50 B streamed in ${Math.round(streamMs)} ms; SEND_BUFFER_LIMIT_BYTES=${LIMIT}`,
      `  max queued bytes (any socket) ${seen.maxQueuedBytes}; slow socket: max queued ${seen.maxSlowQueuedBytes} B, max queue entries ${seen.maxSlowQueueLength}, max uWS buffer ${seen.maxSlowSocketBuffer} B, paused during ${seen.slowPausedEvents} events`,
      `  slow socket ${closedByServer ? `closed 1008 at event ${seen.slowClosedAtEvent}` : "kept"}; it received ${slowFrames} delta frames, ${slowText.length} of ${full.length} chars (an intact prefix)`,
      `  good watcher (own process): ${good.frames} delta frames, ${good.length} chars, sha256 ok`,
      `  test process RSS ${MiB(before.rss)} -> ${MiB(after.rss)}, heap used ${MiB(before.heapUsed)} -> ${MiB(after.heapUsed)} (server, model and slow client share it)`,
    ].join("\n"));
  }, 40_000);
});

// The queue is measured in UTF-8 bytes as sent: counting string.length (UTF-16 code units) let a
// paused reader of CJK text hold ~3x SEND_BUFFER_LIMIT_BYTES (measured: 196,280 bytes, limit 65,536).
describe("a reader that stops reading during a long non-ASCII reply", () => {
  const LIMIT = 64 * 1024;
  const tokens = Array.from({ length: 60_000 }, (_, i) => `${"漢字".repeat(7)}${String(i % 100).padStart(2, "0")}`);
  test("the bytes queued for it (UTF-8, as sent) never pass SEND_BUFFER_LIMIT_BYTES", async () => {
    const model = await startSseModel({ tokens });
    const srv = await startTestServer({ ...modelEnv(model), SEND_BUFFER_LIMIT_BYTES: String(LIMIT), MODEL_TIMEOUT_MS: "30000" });
    try {
      const sender = track(await srv.connect());
      const chat = await newChat(sender);
      const { client: slow, conn } = await connectWithConn(srv);
      await slow.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
      (slow.ws as WebSocket & { pause(): boolean }).pause();
      let maxUtf8 = 0;
      const unsubscribe = srv.deps.bus.subscribe(() => {
        maxUtf8 = Math.max(maxUtf8, conn.data.queue.reduce((n, q) => n + Buffer.byteLength(q.data), 0));
      });
      const accepted = await sender.request({ type: "SEND_MESSAGE", requestId: "go", chatId: chat.id, content: "go" }, "MESSAGE_ACCEPTED");
      sender.ws.close(); // it would be too slow itself: this process also runs the server and the model
      await srv.deps.inflight.get(chat.id)?.done;
      unsubscribe();
      expect(accepted.type).toBe("MESSAGE_ACCEPTED");
      expect(srv.conns.all().includes(conn)).toBe(false); // closed as too slow
      expect(maxUtf8).toBeGreaterThan(0);
      expect(maxUtf8).toBeLessThanOrEqual(LIMIT);
    } finally {
      await srv.close();
      model.stop();
    }
  }, 30_000);
});

/** The well-behaved watcher, run with `bun -e`: sends the message, reads the whole reply, prints a summary. */
const GOOD_WATCHER = `
const { createHash } = require("node:crypto");
const ws = new WebSocket(process.env.WS_URL);
let text = "", frames = 0, lastSeq = 0, done = false;
const finish = (o) => { if (done) return; done = true; console.log(JSON.stringify(o)); ws.close(); };
setTimeout(() => finish({ error: "timeout", length: text.length }), 20000).unref();
ws.onopen = () => ws.send(JSON.stringify({ type: "SEND_MESSAGE", chatId: process.env.CHAT_ID, content: "tell me everything" }));
ws.onmessage = (e) => {
  const f = JSON.parse(e.data);
  if (f.type === "ERROR") return finish({ error: f.code });
  if (f.type !== "MESSAGE" || f.chatId !== process.env.CHAT_ID) return;
  if (f.seq <= lastSeq) return finish({ error: "seq went backwards" });
  lastSeq = f.seq;
  if (!f.end) { text += f.content; frames++; return; }
  finish({ length: text.length, sha256: createHash("sha256").update(text).digest("hex"), frames, endReason: f.reason ?? null });
};
ws.onclose = (e) => { if (!done) finish({ error: "closed " + e.code, length: text.length }); setTimeout(() => process.exit(0), 10); };
`;

// ── A sender that vanishes ──────────────────────────────────────────────────────────────────

describe("a sender that vanishes mid-reply", () => {
  const tokens = Array.from({ length: 40 }, (_, i) => ` w${i}`);
  const full = tokens.join("");
  let model: SseModel;
  let srv: TestServer;

  beforeAll(async () => {
    model = await startSseModel({ tokens, delayMs: 5 });
    srv = await startTestServer(modelEnv(model));
  });
  afterAll(async () => {
    await srv.close();
    model.stop();
  });

  for (const how of ["close", "terminate"] as const) {
    test(`${how}(): the reply still completes, is stored whole, and watchers see all of it`, async () => {
      const { client: sender, conn: senderConn } = await connectWithConn(srv);
      const watcher = track(await srv.connect());
      const chat = await newChat(sender);
      await watcher.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");

      const accepted = await sender.request({ type: "SEND_MESSAGE", requestId: "q", chatId: chat.id, content: "are you there?" }, "MESSAGE_ACCEPTED");
      expect(accepted.type).toBe("MESSAGE_ACCEPTED");
      await sender.next((f) => f.type === "MESSAGE" && !f.end);
      if (how === "close") sender.ws.close();
      else (sender.ws as WebSocket & { terminate(): void }).terminate();

      const seen = await watcher.reply(chat.id, 10_000);
      expect(seen.traceId).toBe(accepted.traceId);
      expect(seen.text).toBe(full);
      expect(seen.end.reason).toBeUndefined();
      expect(seen.chunks.map((c) => c.seq)).toEqual(tokens.map((_, i) => i + 1));

      const stored = await srv.store.listMessages(chat.id, { limit: 10 });
      expect(stored.map((m) => [m.role, m.content, m.status])).toEqual([
        ["user", "are you there?", undefined],
        ["assistant", full, undefined],
      ]);
      expect(stored[1]!.id).toBe(accepted.traceId);
      expect(model.requests.at(-1)!.aborted).toBe(false);
      // The vanished socket is gone from the server's table (and from the chat's watchers).
      expect(srv.conns.all().includes(senderConn)).toBe(false);
      expect(srv.deps.inflight.size).toBe(0);
    });
  }
});

// ── SIGTERM on a real process ───────────────────────────────────────────────────────────────

type Spawned = { proc: Subprocess<"ignore", "pipe", "pipe">; wsUrl: string; httpUrl: string; dbPath: string; dir: string; waitLine(re: RegExp, ms: number): Promise<string>; lines: string[] };

/** `bun src/index.ts` with only the env given (and PATH/HOME), in a temp dir; resolves once it listens. */
async function spawnServer(env: Record<string, string>): Promise<Spawned> {
  const dir = mkdtempSync(join(tmpdir(), "pichat-proc-"));
  const dbPath = join(dir, "pichat.db");
  const proc = Bun.spawn([process.execPath, join(REPO, "src/index.ts")], {
    cwd: dir, // no .env from the repository
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? dir, ENVIRONMENT: "test", HOST: "127.0.0.1", SERVER_PORT: "0", SQLITE_PATH: dbPath, LOG_LEVEL: "info", ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  void (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.stdout) {
      buf += decoder.decode(chunk, { stream: true });
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
      for (const w of waiters) w();
    }
    for (const w of waiters) w();
  })();
  const stderr = new Response(proc.stderr).text();
  const waitLine = (re: RegExp, ms: number) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const hit = lines.find((l) => re.test(l));
        if (hit) {
          done();
          resolve(hit);
        } else if (proc.exitCode !== null) {
          done();
          void stderr.then((e) => reject(new Error(`the server exited (${proc.exitCode}) before logging ${re}: ${e.slice(0, 500)} ${lines.join("\n").slice(-500)}`)));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no log line ${re} within ${ms} ms; got: ${lines.join("\n").slice(-800)}`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      void proc.exited.then(check);
      check();
    });
  const listening = await waitLine(/PiChat backend listening/, 15_000);
  const wsUrl = /"websocket":"(ws:\/\/[^"]+)"/.exec(listening)?.[1];
  if (!wsUrl) throw new Error(`no websocket url in: ${listening}`);
  return { proc, wsUrl, httpUrl: wsUrl.replace(/^ws/, "http").replace(/\/ws$/, ""), dbPath, dir, waitLine, lines };
}

describe("SIGTERM during a reply (a real `bun src/index.ts` process)", () => {
  let model: SseModel;
  const spawned: Spawned[] = [];
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
      return db.query("SELECT role, content, status FROM messages ORDER BY created_at, rowid").all() as { role: string; content: string; status: string | null }[];
    } finally {
      db.close();
    }
  };

  test("past SHUTDOWN_TIMEOUT_MS the reply is cut off and stored as interrupted; the client gets the end, then 1001; exit 0", async () => {
    const tokens = Array.from({ length: 100 }, (_, i) => ` t${i}`);
    model.setScript({ tokens, delayMs: 30 });
    const s = await spawnServer({ ...modelEnv(model), SHUTDOWN_TIMEOUT_MS: "500" });
    spawned.push(s);
    const c = track(await connect(s.wsUrl));
    const chat = await newChat(c);
    c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "a long story, please" });
    const first = await c.next((f) => f.type === "MESSAGE" && !f.end, 5_000);

    const t0 = performance.now();
    s.proc.kill("SIGTERM");
    const rest = await c.reply(chat.id, 5_000);
    const r = { ...rest, text: first.content + rest.text, chunks: [first, ...rest.chunks] };
    const closed = await within(c.closed, 5_000, "the close after shutdown");
    const code = await within(s.proc.exited, 5_000, "process exit");
    const shutdownMs = performance.now() - t0;

    expect(r.end.reason).toBe("interrupted");
    expect(r.text.length).toBeGreaterThan(0);
    expect(r.text.length).toBeLessThan(tokens.join("").length);
    expect(tokens.join("").startsWith(r.text)).toBe(true);
    expect(closed.code).toBe(1001);
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
    console.log(`SIGTERM, SHUTDOWN_TIMEOUT_MS=500: exited 0 after ${Math.round(shutdownMs)} ms; reply interrupted at ${r.chunks.length}/${tokens.length} tokens`);
  }, 30_000);

  test("within SHUTDOWN_TIMEOUT_MS the reply finishes normally before the process exits; new sockets are refused meanwhile", async () => {
    const tokens = Array.from({ length: 30 }, (_, i) => ` u${i}`);
    model.setScript({ tokens, delayMs: 30 });
    const s = await spawnServer({ ...modelEnv(model), SHUTDOWN_TIMEOUT_MS: "10000" });
    spawned.push(s);
    const c = track(await connect(s.wsUrl));
    const chat = await newChat(c);
    c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "short one" });
    const first = await c.next((f) => f.type === "MESSAGE" && !f.end, 5_000);

    const t0 = performance.now();
    s.proc.kill("SIGTERM");
    await s.waitLine(/shutting down/, 5_000);
    // Draining: the listener is still up but takes no new sockets.
    const refused = await fetch(`${s.httpUrl}/ws`, { headers: { upgrade: "websocket", connection: "Upgrade", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" } });
    expect(refused.status).toBe(503);

    const r = await c.reply(chat.id, 5_000);
    const closed = await within(c.closed, 5_000, "the close after shutdown");
    const code = await within(s.proc.exited, 5_000, "process exit");
    const shutdownMs = performance.now() - t0;

    expect(r.end.reason).toBeUndefined();
    expect(first.content + r.text).toBe(tokens.join(""));
    expect(closed.code).toBe(1001);
    expect(code).toBe(0);
    expect(shutdownMs).toBeLessThan(5_000);
    expect(storedMessages(s.dbPath)).toEqual([
      { role: "user", content: "short one", status: null },
      { role: "assistant", content: tokens.join(""), status: null },
    ]);
    console.log(`SIGTERM, SHUTDOWN_TIMEOUT_MS=10000: reply finished, exited 0 after ${Math.round(shutdownMs)} ms`);
  }, 30_000);

  // Before the fix a SEND_MESSAGE during the drain was accepted, but stop() only waited for the
  // replies in flight when it began, so that reply was neither finished nor stored.
  test("a SEND_MESSAGE that arrives while the server drains is refused with SHUTTING_DOWN, or finished and stored before exit", async () => {
    const tokens = Array.from({ length: 30 }, (_, i) => ` v${i}`);
    model.setScript({ tokens, delayMs: 30 });
    const s = await spawnServer({ ...modelEnv(model), SHUTDOWN_TIMEOUT_MS: "10000" });
    spawned.push(s);
    const c = track(await connect(s.wsUrl));
    const chat1 = await newChat(c);
    const chat2 = await newChat(c);
    c.send({ type: "SEND_MESSAGE", chatId: chat1.id, content: "first" });
    await c.next((f) => f.type === "MESSAGE" && !f.end, 5_000);
    s.proc.kill("SIGTERM");
    await s.waitLine(/shutting down/, 5_000);
    const late = await c.request({ type: "SEND_MESSAGE", requestId: "late", chatId: chat2.id, content: "sent while draining" }, "MESSAGE_ACCEPTED");
    const closed = await within(c.closed, 15_000, "the close after shutdown");
    expect(closed.code).toBe(1001);
    expect(await within(s.proc.exited, 5_000, "process exit")).toBe(0);
    const db = new Database(s.dbPath);
    const chat2Rows = db.query("SELECT role, status FROM messages WHERE chat_id = ? ORDER BY created_at, rowid").all(chat2.id);
    db.close();
    if (late.type === "ERROR") {
      expect(late.code).toBe("SHUTTING_DOWN");
      expect(chat2Rows).toEqual([]);
    } else {
      expect(late.type).toBe("MESSAGE_ACCEPTED");
      const end = c.frames.find((f) => f.type === "MESSAGE" && f.end && f.traceId === late.traceId);
      expect(end).toBeDefined();
      expect(chat2Rows).toEqual([{ role: "user", status: null }, { role: "assistant", status: end!.reason ?? null }]);
    }
  }, 30_000);
});

// ── Rate limits ─────────────────────────────────────────────────────────────────────────────

describe("rate limits", () => {
  let model: SseModel;
  let msgSrv: TestServer;
  let frameSrv: TestServer;
  beforeAll(async () => {
    model = await startSseModel({ tokens: ["ok", "."] });
    msgSrv = await startTestServer({ ...modelEnv(model), RATE_LIMIT_MESSAGES_PER_MINUTE: "3" });
    frameSrv = await startTestServer({ ...modelEnv(model), RATE_LIMIT_FRAMES_PER_SECOND: "5" });
  });
  afterAll(async () => {
    await msgSrv.close();
    await frameSrv.close();
    model.stop();
  });

  /** Sends SEND_MESSAGEs one at a time (each to its own chat, each reply awaited) and returns the answers. */
  async function sendInARow(c: TestClient, chats: { id: string }[]) {
    const answers: Frame[] = [];
    for (const [i, chat] of chats.entries()) {
      const a = await c.request({ type: "SEND_MESSAGE", requestId: `m${i}`, chatId: chat.id, message: { id: `msg-${i}`, content: `message ${i}` } }, "MESSAGE_ACCEPTED");
      answers.push(a);
      if (a.type === "MESSAGE_ACCEPTED") await c.reply(chat.id);
    }
    return answers;
  }

  test("RATE_LIMIT_MESSAGES_PER_MINUTE=3: the 4th+ SEND_MESSAGE in a row gets RATE_LIMITED with retryAfterMs, nothing is stored for it, the connection stays usable", async () => {
    const c = track(await msgSrv.connect());
    const chats = [];
    for (let i = 0; i < 6; i++) chats.push(await newChat(c));
    const answers = await sendInARow(c, chats);

    const accepted = answers.filter((a) => a.type === "MESSAGE_ACCEPTED").length;
    expect(accepted).toBeGreaterThanOrEqual(1);
    expect(answers.slice(0, accepted).every((a) => a.type === "MESSAGE_ACCEPTED")).toBe(true);
    for (const [i, a] of answers.entries()) {
      if (i < accepted) continue;
      expect(a).toMatchObject({ type: "ERROR", code: "RATE_LIMITED", requestId: `m${i}` });
      expect(typeof a.error).toBe("string");
      expect(typeof a.retryAfterMs).toBe("number");
      expect(a.retryAfterMs).toBeGreaterThan(0);
      expect(await msgSrv.store.listMessages(chats[i]!.id, { limit: 10 })).toEqual([]);
    }
    // "3 per minute" would accept three in a row; see the todo below for the current burst of 1.
    expect(answers.slice(3).every((a) => a.code === "RATE_LIMITED")).toBe(true);
    for (let i = 0; i < accepted; i++) {
      expect((await msgSrv.store.listMessages(chats[i]!.id, { limit: 10 })).map((m) => m.id)[0]).toBe(`msg-${i}`);
    }
    // Other frames still go through on the same connection.
    expect((await c.request({ type: "GET_CHATS", limit: 1 }, "CHAT_LIST")).type).toBe("CHAT_LIST");
    expect((await c.request({ type: "GET_CHAT_HISTORY", chatId: chats[0]!.id }, "CHAT_HISTORY")).messages).toHaveLength(2);
    console.log(`RATE_LIMIT_MESSAGES_PER_MINUTE=3: ${accepted} of 6 accepted in a row; then RATE_LIMITED, retryAfterMs=${answers.at(-1)!.retryAfterMs}`);
  });

  // The burst is a whole minute's allowance: "3 per minute" must accept three in a row.
  test("RATE_LIMIT_MESSAGES_PER_MINUTE=3 accepts the first three messages in a row", async () => {
    const c = track(await msgSrv.connect());
    const chats = [];
    for (let i = 0; i < 4; i++) chats.push(await newChat(c));
    const answers = await sendInARow(c, chats);
    expect(answers.map((a) => a.code ?? a.type)).toEqual(["MESSAGE_ACCEPTED", "MESSAGE_ACCEPTED", "MESSAGE_ACCEPTED", "RATE_LIMITED"]);
  });

  test("RATE_LIMIT_FRAMES_PER_SECOND=5: a burst past 2x gets RATE_LIMITED (a refused SEND_MESSAGE stores nothing); after retryAfterMs the connection works", async () => {
    const other = track(await frameSrv.connect());
    const chat = await newChat(other); // on another connection: each has its own bucket
    const c = track(await frameSrv.connect());
    const N = 24;
    for (let i = 0; i < N; i++) {
      if (i < 10) c.send({ type: "GET_CHATS", requestId: `f${i}`, limit: 1 });
      else c.send({ type: "SEND_MESSAGE", requestId: `f${i}`, chatId: chat.id, message: { id: `burst-${i}`, content: `burst ${i}` } });
    }
    // Frames are answered in order, one answer each (an accepted SEND_MESSAGE with a requestId answers MESSAGE_ACCEPTED).
    const answers: Frame[] = [];
    for (let i = 0; i < N; i++) answers.push(await c.next((f) => f.type === "ERROR" || f.type === "CHAT_LIST" || f.type === "MESSAGE_ACCEPTED"));
    const ok = answers.filter((a) => a.type !== "ERROR");
    const limited = answers.filter((a) => a.code === "RATE_LIMITED");
    // The burst is 2 x 5 = 10; a token refills every 200 ms, so a slow run may let one or two more in.
    expect(answers.slice(0, 10).every((a) => a.type === "CHAT_LIST")).toBe(true);
    expect(ok.length).toBeLessThanOrEqual(12);
    expect(limited.length).toBe(N - ok.length);
    for (const a of limited) {
      expect(typeof a.error).toBe("string");
      expect(typeof a.retryAfterMs).toBe("number");
      expect(a.retryAfterMs).toBeGreaterThan(0);
      expect(a.retryAfterMs).toBeLessThanOrEqual(200);
    }
    const acceptedIds = answers.filter((a) => a.type === "MESSAGE_ACCEPTED").map((a) => a.messageId);
    for (const a of answers.filter((x) => x.type === "MESSAGE_ACCEPTED")) await c.next((f) => f.type === "MESSAGE" && f.end && f.traceId === a.traceId);
    const stored = await frameSrv.store.listMessages(chat.id, { limit: 100 });
    expect(stored.filter((m) => m.role === "user").map((m) => m.id)).toEqual(acceptedIds);

    // Honour the server's retryAfterMs (the protocol's own instruction, not a synchronisation guess).
    await Bun.sleep(Math.max(...limited.map((a) => a.retryAfterMs as number)));
    const list = await c.request({ type: "GET_CHATS", requestId: "after", limit: 1 }, "CHAT_LIST");
    expect(list).toMatchObject({ type: "CHAT_LIST", requestId: "after" });
    console.log(`RATE_LIMIT_FRAMES_PER_SECOND=5: ${ok.length} of ${N} frames accepted in a burst, ${limited.length} RATE_LIMITED (retryAfterMs ${limited[0]?.retryAfterMs})`);
  });
});

// ── Oversized frames ────────────────────────────────────────────────────────────────────────

describe("oversized frames (MAX_FRAME_BYTES=4096)", () => {
  let model: SseModel;
  let srv: TestServer;
  const MAX = 4096;
  beforeAll(async () => {
    model = await startSseModel({ tokens: ["still", " here"] });
    srv = await startTestServer({ ...modelEnv(model), MAX_FRAME_BYTES: String(MAX) });
  });
  afterAll(async () => {
    await srv.close();
    model.stop();
  });

  /** A SEND_MESSAGE of exactly `bytes` UTF-8 bytes, padded with `unit`. */
  const sized = (chatId: string, bytes: number, unit = "x") => {
    const base = JSON.stringify({ type: "SEND_MESSAGE", chatId, content: "" });
    const room = bytes - Buffer.byteLength(base);
    const n = Math.floor(room / Buffer.byteLength(unit));
    const frame = JSON.stringify({ type: "SEND_MESSAGE", chatId, content: unit.repeat(n) + "x".repeat(room - n * Buffer.byteLength(unit)) });
    expect(Buffer.byteLength(frame)).toBe(bytes);
    return frame;
  };

  test("between 1x and 4x: FRAME_TOO_LARGE, nothing stored, the connection stays (bytes are counted, not characters)", async () => {
    const c = track(await srv.connect());
    const chat = await newChat(c);
    for (const [bytes, unit] of [[MAX + 1, "x"], [8000, "x"], [4 * MAX, "x"], [MAX + 100, "é"], [MAX + 3, "😀"]] as const) {
      const frame = sized(chat.id, bytes, unit);
      if (unit !== "x") expect(frame.length).toBeLessThan(MAX); // fewer UTF-16 units than the limit
      c.sendRaw(frame);
      const err = await c.next("ERROR");
      expect(err).toMatchObject({ code: "FRAME_TOO_LARGE", limit: MAX });
      expect(typeof err.error).toBe("string");
    }
    expect(await srv.store.listMessages(chat.id, { limit: 10 })).toEqual([]);
    // Exactly the limit is accepted (MAX_MESSAGE_CHARS is 16000, so the content is fine).
    c.sendRaw(sized(chat.id, MAX));
    const r = await c.reply(chat.id);
    expect(r.text).toBe("still here");
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
  });

  test("over 4x: the socket is closed with 1009, nothing is stored, and the server keeps serving others", async () => {
    const bystander = track(await srv.connect());
    const { client: big, conn: bigConn } = await connectWithConn(srv);
    const chat = await newChat(bystander);
    big.sendRaw(sized(chat.id, 4 * MAX + 1));
    const closed = await within(big.closed, 5_000, "the 1009 close");
    expect(closed.code).toBe(1009);
    expect(srv.conns.all().includes(bigConn)).toBe(false);
    expect(await srv.store.listMessages(chat.id, { limit: 10 })).toEqual([]);

    bystander.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "are you still there?" });
    expect((await bystander.reply(chat.id)).text).toBe("still here");
    const fresh = track(await srv.connect());
    expect((await fresh.request({ type: "GET_CHATS", limit: 1 }, "CHAT_LIST")).chats[0].id).toBe(chat.id);
  });
});

// ── Generation caps ─────────────────────────────────────────────────────────────────────────

describe("MAX_GENERATIONS_PER_CONNECTION=1", () => {
  const tokens = Array.from({ length: 40 }, (_, i) => ` g${i}`);
  let model: SseModel;
  let srv: TestServer;
  beforeAll(async () => {
    model = await startSseModel({ tokens });
    // The first reply streams slowly (~1 s) so the refusals land while it runs; later ones are instant.
    model.setScript(() => ({ tokens, delayMs: model.requests.length === 1 ? 25 : 0 }));
    srv = await startTestServer({ ...modelEnv(model), MAX_GENERATIONS_PER_CONNECTION: "1" });
  });
  afterAll(async () => {
    await srv.close();
    model.stop();
  });

  test("while one reply streams: another chat gets TOO_MANY_GENERATIONS, the same chat from elsewhere GENERATION_IN_PROGRESS; nothing stored for either", async () => {
    const a = track(await srv.connect());
    const b = track(await srv.connect());
    const chat1 = await newChat(a);
    const chat2 = await newChat(a);
    const send = (c: TestClient, requestId: string, chatId: string) =>
      c.request({ type: "SEND_MESSAGE", requestId, chatId, message: { id: requestId, content: `from ${requestId}` } }, "MESSAGE_ACCEPTED");

    const first = await send(a, "a1", chat1.id);
    expect(first.type).toBe("MESSAGE_ACCEPTED");
    const firstDelta = await a.next((f) => f.type === "MESSAGE" && f.chatId === chat1.id && !f.end);
    expect(srv.deps.inflight.get(chat1.id)).toBeDefined();

    const other = await send(a, "a2", chat2.id);
    expect(other).toMatchObject({ type: "ERROR", code: "TOO_MANY_GENERATIONS", requestId: "a2" });
    expect(typeof other.retryAfterMs).toBe("number");
    // The same connection, the same chat: the per-connection cap is checked first.
    const again = await send(a, "a3", chat1.id);
    expect(again).toMatchObject({ type: "ERROR", requestId: "a3" });
    expect(["TOO_MANY_GENERATIONS", "GENERATION_IN_PROGRESS"]).toContain(again.code);
    const elsewhere = await send(b, "b1", chat1.id);
    expect(elsewhere).toMatchObject({ type: "ERROR", code: "GENERATION_IN_PROGRESS", requestId: "b1" });
    // All of that happened while the first reply was still streaming.
    expect(srv.deps.inflight.get(chat1.id)?.traceId).toBe(first.traceId);

    const r = await a.reply(chat1.id);
    expect(firstDelta.content + r.text).toBe(tokens.join(""));
    expect((await srv.store.listMessages(chat1.id, { limit: 10 })).map((m) => [m.id, m.role])).toEqual([["a1", "user"], [first.traceId, "assistant"]]);
    expect(await srv.store.listMessages(chat2.id, { limit: 10 })).toEqual([]);

    // The slot is free again: both connections can send now.
    expect((await send(a, "a4", chat2.id)).type).toBe("MESSAGE_ACCEPTED");
    expect((await a.reply(chat2.id)).text).toBe(tokens.join(""));
    expect((await send(b, "b2", chat1.id)).type).toBe("MESSAGE_ACCEPTED");
    expect((await b.reply(chat1.id)).text).toBe(tokens.join(""));
    expect((await srv.store.listMessages(chat1.id, { limit: 10 })).map((m) => m.id).filter((id) => !id.match(/^[0-9a-f-]{36}$/))).toEqual(["a1", "b2"]);
  });
});
