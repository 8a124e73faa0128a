import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { connectWithConn as connectAndFind, modelEnv, newChat } from "./support/fixtures";
import { startTestServer, type TestServer } from "./support/harness";
import { createHolds } from "./support/held-model";
import { startSseModel, type SseModel } from "./support/sse-model";
import { until, within } from "./support/until";
import type { TestClient } from "./support/ws-client";

// Clients the server cannot count on: a reader that stops reading (real TCP backpressure, bounded
// memory, merged deltas, then 1008) and a sender that vanishes mid-reply. Everything waits on
// frames, events or process exit, each with a deadline; nothing sleeps to sync.

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
const MiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

const clients: TestClient[] = [];
const track = (c: TestClient) => (clients.push(c), c);
afterEach(() => {
  for (const c of clients.splice(0)) if (c.ws.readyState <= 1) c.ws.close();
});
const connectWithConn = (srv: TestServer) => connectAndFind(srv, track);

// ── A slow reader ───────────────────────────────────────────────────────────────────────────

describe("a reader that stops reading during a long, fast reply", () => {
  const TOKENS = 40_000;
  const LIMIT = 64 * 1024;
  const tokens = Array.from(
    { length: TOKENS },
    (_, i) => `<${String(i).padStart(5, "0")}>${"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".slice(0, 43)}`,
  );
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

  test("server memory stays bounded: the queue never passes SEND_BUFFER_LIMIT_BYTES, the slow socket's deltas are merged, then it is closed 1008 with an intact prefix; a good watcher gets everything", async () => {
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
    const seen = {
      events: 0,
      maxQueuedBytes: 0,
      maxSlowQueuedBytes: 0,
      maxSlowQueueLength: 0,
      slowPausedEvents: 0,
      maxSlowSocketBuffer: 0,
      slowClosedAtEvent: -1,
    };
    const unsubscribe = srv.chat.bus.subscribe(() => {
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

    // A reply of 2 MB against a 64 KiB limit: once the kernel's buffers are full, what waits for the
    // slow reader passes the limit, and the server closes it (the CJK test below relies on the same).
    const closedByServer = !srv.conns.all().some((ws) => ws.data.id === slowId);
    expect(closedByServer).toBe(true);
    expect(seen.slowClosedAtEvent).toBeGreaterThan(0);
    expect(srv.log.lines.some((l) => l.includes("does not keep up") && l.includes(slowId))).toBe(true);
    // Resume reading: the slow client sees what was buffered for it, then the 1008.
    (slow.ws as WebSocket & { resume(): boolean }).resume();
    const closed = await within(slow.closed, 15_000, "the slow client's close");
    expect(closed).toEqual({ code: 1008, reason: "client too slow" });
    const deltas = slow.frames.filter((f) => f.type === "MESSAGE" && f.chatId === chat.id && !f.end);
    const slowFrames = deltas.length;
    const slowText = deltas.map((f) => f.content).join("");
    // What it did get is an intact prefix: merged deltas keep order and content.
    expect(slowText.length).toBeGreaterThan(0);
    expect(slowText.length).toBeLessThan(full.length);
    expect(full.startsWith(slowText)).toBe(true);
    const seqs = deltas.map((f) => f.seq as number);
    expect(seqs.every((s, i) => i === 0 || s > seqs[i - 1]!)).toBe(true);

    console.log(
      [
        `slow reader: ${TOKENS} tokens x 50 B streamed in ${Math.round(streamMs)} ms; SEND_BUFFER_LIMIT_BYTES=${LIMIT}`,
        `  max queued bytes (any socket) ${seen.maxQueuedBytes}; slow socket: max queued ${seen.maxSlowQueuedBytes} B, max queue entries ${seen.maxSlowQueueLength}, max uWS buffer ${seen.maxSlowSocketBuffer} B, paused during ${seen.slowPausedEvents} events`,
        `  slow socket closed 1008 at event ${seen.slowClosedAtEvent}; it received ${slowFrames} delta frames, ${slowText.length} of ${full.length} chars (an intact prefix)`,
        `  good watcher (own process): ${good.frames} delta frames, ${good.length} chars, sha256 ok`,
        `  test process RSS ${MiB(before.rss)} -> ${MiB(after.rss)}, heap used ${MiB(before.heapUsed)} -> ${MiB(after.heapUsed)} (server, model and slow client share it)`,
      ].join("\n"),
    );
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
      const unsubscribe = srv.chat.bus.subscribe(() => {
        maxUtf8 = Math.max(
          maxUtf8,
          conn.data.queue.reduce((n, q) => n + Buffer.byteLength(q.data), 0),
        );
      });
      const accepted = await sender.request({ type: "SEND_MESSAGE", requestId: "go", chatId: chat.id, content: "go" }, "MESSAGE_ACCEPTED");
      sender.ws.close(); // it would be too slow itself: this process also runs the server and the model
      await srv.chat.replies.get(chat.id)?.done;
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
  const holds = createHolds();
  let model: SseModel;
  let srv: TestServer;

  beforeAll(async () => {
    model = await startSseModel({ tokens });
    srv = await startTestServer(modelEnv(model), { wrapModel: holds.wrap });
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

      // The reply pauses after its first chunk until the sender is gone: it is in flight when it vanishes.
      const question = `are you there? (${how})`;
      const hold = holds.hold({ question });
      const accepted = await sender.request(
        { type: "SEND_MESSAGE", requestId: "q", chatId: chat.id, content: question },
        "MESSAGE_ACCEPTED",
      );
      expect(accepted.type).toBe("MESSAGE_ACCEPTED");
      await sender.next((f) => f.type === "MESSAGE" && !f.end);
      await within(hold.reached, 5_000, "the reply to pause after its first chunk");
      if (how === "close") sender.ws.close();
      else (sender.ws as WebSocket & { terminate(): void }).terminate();
      // The vanished socket is gone from the server's table (and from the chat's watchers) while the reply runs.
      await until(() => !srv.conns.all().includes(senderConn), "the server to drop the vanished socket", 5_000);
      expect(srv.chat.replies.get(chat.id)?.traceId).toBe(accepted.traceId);
      hold.release();

      const seen = await watcher.reply(chat.id, 10_000);
      expect(seen.traceId).toBe(accepted.traceId);
      expect(seen.text).toBe(full);
      expect(seen.end.reason).toBeUndefined();
      expect(seen.chunks.map((c) => c.seq)).toEqual(tokens.map((_, i) => i + 1));

      const stored = await srv.store.listMessages(chat.id, { limit: 10 });
      expect(stored.map((m) => [m.role, m.content, m.status])).toEqual([
        ["user", question, undefined],
        ["assistant", full, undefined],
      ]);
      expect(stored[1]!.id).toBe(accepted.traceId);
      expect(model.requests.at(-1)!.aborted).toBe(false);
      expect(srv.conns.all().includes(senderConn)).toBe(false);
      expect(srv.chat.replies.size).toBe(0);
    });
  }
});
