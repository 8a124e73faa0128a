import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Message } from "../src/records";
import { openSqliteStore } from "../src/store/sqlite";
import type { Store } from "../src/store/store";
import type { Socket } from "../src/ws/connections";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { until } from "./support/until";
import { connect, type Frame, type TestClient } from "./support/ws-client";

// One connection must not take the server down: the bounds on what a socket may make the server
// hold (frames waiting on a slow store, bytes waiting for a client that does not read, one history
// page), and on how many sockets the process takes (MAX_CONNECTIONS, per address), on the real
// server over real sockets. RSS figures are printed, not asserted: the test shares the process.

const REPO = join(import.meta.dir, "..");
const MiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
const rss = () => (Bun.gc(true), process.memoryUsage().rss);
const figures: string[] = [];
afterAll(() => console.log(`abuse figures:\n${figures.map((f) => `  ${f}`).join("\n")}`));

type Pausable = WebSocket & { pause(): boolean; resume(): boolean };

/** The SQLite store whose listChats (GET_CHATS) waits while held: a store that has become slow. */
function slowStore(dir: string) {
  const inner = openSqliteStore(join(dir, "slow.db"));
  let gate: Promise<void> | undefined;
  let open = () => {};
  const store: Store = {
    ...inner,
    async listChats(owner, o) {
      await gate;
      return inner.listChats(owner, o);
    },
  };
  return {
    store,
    hold: () => void (gate = new Promise<void>((r) => (open = r))),
    release: () => ((gate = undefined), open()),
  };
}

/** The server's side of a newly connected client. */
async function connectWithConn(srv: TestServer): Promise<{ client: TestClient; conn: Socket }> {
  const before = new Set(srv.conns.all().map((ws) => ws.data.id));
  const client = await srv.connect();
  await client.request({ type: "GET_SETTINGS" }, "SETTINGS");
  const conn = srv.conns.all().find((ws) => !before.has(ws.data.id));
  if (!conn) throw new Error("no server socket for the new client");
  return { client, conn };
}

const isOpen = (srv: TestServer, conn: Socket) => srv.conns.all().includes(conn);

// ── Inbound: frames waiting behind a slow store ───────────────────────────────────────────────

describe("a socket that floods frames while the store is slow", () => {
  const MAX_FRAMES = 20;
  const MAX_BYTES = 64 * 1024;
  let dir: string;
  let slow: ReturnType<typeof slowStore>;
  let srv: TestServer;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "pichat-abuse-"));
    slow = slowStore(dir);
    srv = await startTestServer(
      { INBOUND_QUEUE_MAX_FRAMES: String(MAX_FRAMES), INBOUND_QUEUE_MAX_BYTES: String(MAX_BYTES), RATE_LIMIT_FRAMES_PER_SECOND: "100000" },
      { store: slow.store },
    );
  });
  afterAll(async () => {
    slow.release();
    await srv.close();
    await slow.store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("past INBOUND_QUEUE_MAX_FRAMES each frame is dropped with ERROR RATE_LIMITED at once; the queued ones are answered in order when the store answers", async () => {
    const { client: c, conn } = await connectWithConn(srv);
    const FLOOD = 5_000;
    const pad = "x".repeat(1000);
    const before = rss();
    slow.hold();
    let maxPending = 0;
    for (let i = 0; i < FLOOD; i++) c.send({ type: "GET_CHATS", requestId: `r${i}`, limit: 1, pad });
    const refused = () => c.frames.filter((f) => f.type === "ERROR" && f.code === "RATE_LIMITED");
    await until(
      () => {
        maxPending = Math.max(maxPending, conn.data.budget.pending.frames);
        return refused().length >= FLOOD - MAX_FRAMES;
      },
      `${FLOOD - MAX_FRAMES} RATE_LIMITED errors`,
    );
    const after = rss();
    // Exactly MAX_FRAMES wait (the first one inside the store call); every other frame was refused.
    expect(conn.data.budget.pending.frames).toBe(MAX_FRAMES);
    expect(maxPending).toBeLessThanOrEqual(MAX_FRAMES);
    expect(refused()).toHaveLength(FLOOD - MAX_FRAMES);
    // Refused before parsing, like the frame-rate RATE_LIMITED: no requestId, with when to retry.
    expect(refused()[0]).toEqual({ type: "ERROR", code: "RATE_LIMITED", error: expect.any(String), retryAfterMs: 1000, limit: MAX_FRAMES });
    expect(srv.log.lines.filter((l) => l.includes("inbound queue is full")).length).toBe(1); // one line per run, not per frame

    slow.release();
    await c.next((f) => f.type === "CHAT_LIST" && f.requestId === `r${MAX_FRAMES - 1}`);
    expect(c.frames.filter((f) => f.type === "CHAT_LIST").map((f) => f.requestId)).toEqual(
      Array.from({ length: MAX_FRAMES }, (_, i) => `r${i}`),
    );
    // The socket stays usable and its queue is empty again.
    expect((await c.request({ type: "GET_CHATS", requestId: "after" }, "CHAT_LIST")).requestId).toBe("after");
    expect(conn.data.budget.pending).toEqual({ frames: 0, bytes: 0 });
    figures.push(
      `inbound: ${FLOOD} frames of 1 KB sent while the store was held: ${MAX_FRAMES} queued, ${refused().length} refused; RSS ${MiB(before)} -> ${MiB(after)} (test and server in one process)`,
    );
    c.close();
  });

  test("past INBOUND_QUEUE_MAX_BYTES large frames are refused even under the frame count", async () => {
    const { client: c, conn } = await connectWithConn(srv);
    slow.hold();
    const pad = "y".repeat(10_000);
    for (let i = 0; i < 50; i++) c.send({ type: "GET_CHATS", requestId: `b${i}`, limit: 1, pad });
    const refused = () => c.frames.filter((f) => f.type === "ERROR" && f.code === "RATE_LIMITED").length;
    await until(() => refused() > 0 && conn.data.budget.pending.frames + refused() === 50, "every frame queued or refused");
    expect(conn.data.budget.pending.bytes).toBeLessThanOrEqual(MAX_BYTES);
    expect(conn.data.budget.pending.frames).toBeLessThan(MAX_FRAMES);
    const queued = conn.data.budget.pending.frames;
    slow.release();
    await c.next((f) => f.type === "CHAT_LIST" && f.requestId === `b${queued - 1}`);
    c.close();
  });

  test("a flooder that does not read its refusals is closed 1008 once they pass SEND_BUFFER_LIMIT_BYTES: refusing costs bounded memory too", async () => {
    const { client: c, conn } = await connectWithConn(srv);
    slow.hold();
    expect((c.ws as Pausable).pause()).toBe(true);
    // Refusals (~110 B each) must outgrow the loopback socket buffers (a few MB) and then the limit (1 MiB).
    const FLOOD = 100_000;
    for (let i = 0; i < FLOOD; i++) c.sendRaw('{"type":"GET_CHATS"}');
    await until(() => !isOpen(srv, conn), "the flooder to be closed", 20_000);
    expect(conn.data.budget.pending.frames).toBeLessThanOrEqual(MAX_FRAMES);
    expect(srv.log.lines.some((l) => l.includes("does not keep up") && l.includes(conn.data.id))).toBe(true);
    (c.ws as Pausable).resume();
    slow.release();
    expect((await c.closed).code).toBe(1008);
  }, 30_000);
});

// ── Outbound: a client that never reads ─────────────────────────────────────────────────────────

/** `n` messages of `size` characters, alternately asked and answered, 1 ms apart (oldest first). */
async function seedChat(
  store: Store,
  srv: TestServer,
  n: number,
  size: (i: number) => number,
): Promise<{ chatId: string; stored: Message[] }> {
  const c = await srv.connect();
  const chatId = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat.id as string;
  c.close();
  const t0 = Date.parse("2025-01-01T00:00:00.000Z");
  const stored: Message[] = [];
  for (let i = 0; i < n; i++) {
    const m: Message = {
      id: crypto.randomUUID(),
      chat_id: chatId,
      role: i % 2 ? "assistant" : "user",
      content: `${i}:`.padEnd(size(i), "abcdefghij"),
      created_at: new Date(t0 + i).toISOString(),
    };
    await store.addMessage(m);
    stored.push(m);
  }
  return { chatId, stored };
}

describe("a client that never reads a multi-MB history", () => {
  const LIMIT = 1_048_576;
  const SOCKETS = 5;
  // Loopback kernel buffers take about 4 MB of a frame before Bun has to hold the rest: 12 MB
  // leaves Bun ~8 MB, as a history on a real network would.
  const MESSAGES = 120;

  test("without a page cap the one large CHAT_HISTORY frame alone passes SEND_BUFFER_LIMIT_BYTES: closed 1008, Bun's buffer dropped", async () => {
    // The page cap set out of the way, so one frame carries the whole 12 MB history.
    const srv = await startTestServer({ SEND_BUFFER_LIMIT_BYTES: String(LIMIT), HISTORY_PAGE_MAX_BYTES: String(64 * 2 ** 20) });
    try {
      const { chatId } = await seedChat(srv.store, srv, MESSAGES, () => 100_000);
      const before = rss();
      const readers = await Promise.all(Array.from({ length: SOCKETS }, () => connectWithConn(srv)));
      for (const { client } of readers) {
        expect((client.ws as Pausable).pause()).toBe(true);
        client.send({ type: "GET_CHAT_HISTORY", chatId });
      }
      await until(() => readers.every(({ conn }) => !isOpen(srv, conn)), "every non-reader to be closed");
      const after = rss();
      for (const { conn } of readers) {
        // The close happened right after the send that overfilled the buffer, and the log says how full it was.
        const line = srv.log.lines.find((l) => l.includes("does not keep up") && l.includes(conn.data.id));
        expect(line).toBeDefined();
        expect(JSON.parse(line!).bufferedBytes).toBeGreaterThan(0);
        expect(conn.getBufferedAmount()).toBe(0); // closed: Bun holds nothing for it any more
      }
      expect(srv.conns.count).toBe(0);
      figures.push(
        `outbound: ${SOCKETS} paused sockets each asked for a 12 MB history: all closed 1008; RSS ${MiB(before)} -> ${MiB(after)} (was +444 MB for 100 before the fix)`,
      );
      const { client } = readers[0]!;
      (client.ws as Pausable).resume();
      expect((await client.closed).code).toBe(1008);
    } finally {
      await srv.close();
    }
  }, 30_000);

  test("with the default page cap (HISTORY_PAGE_MAX_BYTES) the same non-reader gets a page well under the limit and stays connected", async () => {
    const srv = await startTestServer({ SEND_BUFFER_LIMIT_BYTES: String(LIMIT) });
    try {
      const { chatId } = await seedChat(srv.store, srv, 40, () => 100_000);
      const { client, conn } = await connectWithConn(srv);
      (client.ws as Pausable).pause();
      client.send({ type: "GET_CHAT_HISTORY", chatId, requestId: "h" });
      await until(
        () => srv.log.lines.some((l) => l.includes('"type":"GET_CHAT_HISTORY"') && l.includes(conn.data.id)),
        "the history to be sent",
      );
      expect(isOpen(srv, conn)).toBe(true);
      (client.ws as Pausable).resume();
      const page = await client.next("CHAT_HISTORY");
      expect(page.hasMore).toBe(true);
      expect(Buffer.byteLength(JSON.stringify(page))).toBeLessThan(srv.config.HISTORY_PAGE_MAX_BYTES + 1024);
      client.close();
    } finally {
      await srv.close();
    }
  });
});

// ── One history page's size, on both stores ─────────────────────────────────────────────────────

const PAGE_CAP = 50_000;

/** Pages back with `cursor` (or, as older clients do, `before` = the oldest created_at). */
async function pagesOfHistory(srv: TestServer, store: Store, by: "cursor" | "before") {
  // 30 messages of 1-20 KB, and one of 70 KB (alone over the cap) in the middle.
  const { chatId, stored } = await seedChat(store, srv, 31, (i) => (i === 15 ? 70_000 : 1_000 + ((i * 7919) % 19_000)));
  const c = await srv.connect();
  const pages: Frame[] = [];
  let back: Record<string, string> = {};
  for (;;) {
    const page = await c.request({ type: "GET_CHAT_HISTORY", chatId, ...back }, "CHAT_HISTORY");
    expect(page.type).toBe("CHAT_HISTORY");
    pages.push(page);
    if (!page.hasMore) break;
    back = by === "cursor" ? { cursor: page.cursor } : { before: page.messages[0].created_at };
    if (pages.length > 40) throw new Error("paging does not end");
  }
  c.close();
  return { stored, pages };
}

function expectPagedWhole(stored: Message[], pages: Frame[]) {
  expect(pages.length).toBeGreaterThan(5);
  for (const p of pages) {
    const bytes = p.messages.reduce((n: number, m: object) => n + Buffer.byteLength(JSON.stringify(m)) + 1, 0);
    // Within the cap, unless the page is the one message that alone is larger.
    if (p.messages.length > 1) expect(bytes).toBeLessThanOrEqual(PAGE_CAP);
    expect(p.messages.length).toBeGreaterThan(0);
  }
  expect(pages.some((p) => p.messages.length === 1 && p.messages[0].content.length === 70_000)).toBe(true);
  // Nothing lost, nothing repeated, oldest first.
  const all = pages.toReversed().flatMap((p) => p.messages);
  expect(all.map((m: Message) => m.id)).toEqual(stored.map((m) => m.id));
  expect(all.map((m: Message) => m.content)).toEqual(stored.map((m) => m.content));
}

describe(`a history larger than HISTORY_PAGE_MAX_BYTES=${PAGE_CAP} comes in pages with hasMore, nothing lost`, () => {
  test("SQLite", async () => {
    const srv = await startTestServer({ HISTORY_PAGE_MAX_BYTES: String(PAGE_CAP) });
    try {
      for (const by of ["before", "cursor"] as const) {
        const { stored, pages } = await pagesOfHistory(srv, srv.store, by);
        expectPagedWhole(stored, pages);
        if (by === "cursor")
          figures.push(
            `history pages (SQLite): 31 messages, ${Math.round(stored.reduce((n, m) => n + m.content.length, 0) / 1000)} KB, in ${pages.length} pages of ≤ ${PAGE_CAP} B`,
          );
      }
    } finally {
      await srv.close();
    }
  });

  describe("Cosmos DB", () => {
    let cosmos: CosmosTestServer;
    let store: Store;
    beforeAll(async () => {
      cosmos = await startCosmosServer();
      store = await openTestCosmosStore(cosmos, "pichat-abuse");
    });
    afterAll(async () => {
      await store?.close();
      await cosmos?.stop();
    });

    test("Cosmos DB", async () => {
      const srv = await startTestServer({ HISTORY_PAGE_MAX_BYTES: String(PAGE_CAP) }, { store });
      try {
        for (const by of ["before", "cursor"] as const) {
          const { stored, pages } = await pagesOfHistory(srv, store, by);
          expectPagedWhole(stored, pages);
        }
      } finally {
        await srv.close();
      }
    }, 30_000);
  });
});

// ── Connection caps ──────────────────────────────────────────────────────────────────────────

/** A raw WebSocket upgrade from `localAddress` (any 127.x address works on loopback); resolves to the status. */
function rawUpgrade(port: number, localAddress: string): Promise<{ status: number; head: string; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress });
    socket.once("error", reject);
    socket.once("data", (d) => {
      const head = String(d);
      resolve({ status: Number(head.split(" ")[1]), head, socket });
    });
    socket.write(
      `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    );
  });
}

describe("MAX_CONNECTIONS=4 and MAX_CONNECTIONS_PER_ADDRESS=2", () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ MAX_CONNECTIONS: "4", MAX_CONNECTIONS_PER_ADDRESS: "2" });
  });
  afterAll(() => srv.close());

  test("the third socket from one address gets 429, a fifth overall 503 with Retry-After; /health/live answers at the cap; a freed slot is taken again", async () => {
    const port = Number(new URL(srv.url).port);
    const a1 = await srv.connect();
    const a2 = await srv.connect();
    const third = await rawUpgrade(port, "127.0.0.1");
    expect(third.status).toBe(429);
    expect(third.head).toContain('"code":"TOO_MANY_CONNECTIONS_FROM_ADDRESS"');
    expect(third.head.toLowerCase()).toContain("retry-after: 5");
    third.socket.destroy();

    // Another address still gets in, up to the global cap.
    const b1 = await rawUpgrade(port, "127.0.0.2");
    const b2 = await rawUpgrade(port, "127.0.0.2");
    expect([b1.status, b2.status]).toEqual([101, 101]);
    await until(() => srv.conns.count === 4, "four sockets open");
    const fifth = await rawUpgrade(port, "127.0.0.3");
    expect(fifth.status).toBe(503);
    expect(fifth.head).toContain('"code":"TOO_MANY_CONNECTIONS"');
    expect(fifth.head.toLowerCase()).toContain("retry-after: 5");
    fifth.socket.destroy();

    const live = await fetch(`${srv.url}/health/live`);
    expect(live.status).toBe(200);
    expect((await srv.connect().catch((e) => e)) instanceof Error).toBe(true);

    a1.close();
    await until(() => srv.conns.count === 3, "the freed slot");
    const again = await srv.connect();
    expect((await again.request({ type: "GET_CHATS" }, "CHAT_LIST")).type).toBe("CHAT_LIST");
    for (const s of [b1, b2]) s.socket.destroy();
    for (const c of [a2, again]) c.close();
  });
});

describe("MAX_CONNECTIONS derived from the open-file limit (a real `bun src/index.ts` under `ulimit -n 256`)", () => {
  test("upgrades past limit - 128 get 503; /health/live keeps answering", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pichat-fd-"));
    const proc = Bun.spawn(["sh", "-c", `ulimit -n 256 && exec "${process.execPath}" "${join(REPO, "src/index.ts")}"`], {
      cwd: dir,
      env: {
        PATH: process.env.PATH ?? "",
        HOME: dir,
        ENVIRONMENT: "test",
        HOST: "127.0.0.1",
        SERVER_PORT: "0",
        SQLITE_PATH: join(dir, "db.sqlite"),
        MAX_CONNECTIONS_PER_ADDRESS: "0",
        WS_IDLE_TIMEOUT_S: "0",
      },
      stdout: "pipe",
      stderr: "pipe",
    });
    const clients: WebSocket[] = [];
    try {
      let out = "";
      const reader = proc.stdout.getReader();
      const deadline = Date.now() + 15_000;
      while (!/127\.0\.0\.1:(\d+)/.test(out)) {
        if (Date.now() > deadline) throw new Error(`the server did not start: ${out}`);
        const { value, done } = await reader.read();
        if (done) throw new Error(`the server exited: ${out}${await new Response(proc.stderr).text()}`);
        out += new TextDecoder().decode(value);
      }
      reader.releaseLock();
      const base = `127.0.0.1:${out.match(/127\.0\.0\.1:(\d+)/)![1]}`;
      const opened: boolean[] = [];
      for (let i = 0; i < 140; i++) {
        const ws = new WebSocket(`ws://${base}/ws`);
        clients.push(ws);
        opened.push(
          await new Promise<boolean>((resolve) => {
            ws.onopen = () => resolve(true);
            ws.onerror = () => resolve(false);
          }),
        );
      }
      expect(opened.filter(Boolean).length).toBe(128);
      expect(opened.slice(0, 128).every(Boolean)).toBe(true);
      const refused = await fetch(`http://${base}/ws`);
      expect(refused.status).toBe(503);
      expect(((await refused.json()) as { code: string }).code).toBe("TOO_MANY_CONNECTIONS");
      const live = await fetch(`http://${base}/health/live`);
      expect(live.status).toBe(200);
      figures.push(`fd limit 256: ${opened.filter(Boolean).length} of 140 sockets accepted, the rest 503; /health/live ${live.status}`);
    } finally {
      for (const ws of clients) ws.close();
      proc.kill();
      await proc.exited;
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

// ── The production origin rule ──────────────────────────────────────────────────────────────────

describe("production with ALLOWED_ORIGINS", () => {
  const TOKEN = "5b2e8c4a9f1d7e3b6a0c8d2f4e6a1b3c";
  test("an Origin equal to Host is refused 403 (DNS rebinding); a listed one passes; no Origin (not a browser) passes", async () => {
    const srv = await startTestServer({ ENVIRONMENT: "production", API_TOKEN: TOKEN, ALLOWED_ORIGINS: "https://chat.example.com" });
    try {
      const host = new URL(srv.url).host;
      const res = await fetch(`${srv.url}/ws?token=${TOKEN}`, {
        headers: {
          Origin: `http://${host}`,
          Connection: "Upgrade",
          Upgrade: "websocket",
          "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
      });
      expect(res.status).toBe(403);
      expect(((await res.json()) as { code: string }).code).toBe("ORIGIN_NOT_ALLOWED");
      const listed = await connect(`${srv.wsUrl}?token=${TOKEN}`, { headers: { Origin: "https://chat.example.com" } });
      listed.close();
      const tool = await connect(`${srv.wsUrl}?token=${TOKEN}`);
      tool.close();
    } finally {
      await srv.close();
    }
  });

  test("without ALLOWED_ORIGINS, production still accepts a same-origin page (the built-in page at /)", async () => {
    const srv = await startTestServer({ ENVIRONMENT: "production", API_TOKEN: TOKEN });
    try {
      const c = await connect(`${srv.wsUrl}?token=${TOKEN}`, { headers: { Origin: `http://${new URL(srv.url).host}` } });
      c.close();
    } finally {
      await srv.close();
    }
  });
});
