import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { formatReport, FrameGen, Rng, runFuzz, startFuzzTarget, type FuzzReport } from "./support/fuzz";
import type { TestServer } from "./support/harness";

// A seeded protocol fuzzer against the real server (SQLite, local SSE model): four clients pipeline
// random and hostile frames while a well-behaved client chats. Reproduce a failure with the same
// seed: FUZZ_SEED=1234 FUZZ_FRAMES=3000 bun test test/fuzz.test.ts, or longer with
// `bun scripts/fuzz.ts --seed 1234 --frames 100000`.

const SEED = Number(process.env.FUZZ_SEED ?? 1234);
const FRAMES = Number(process.env.FUZZ_FRAMES ?? 3000);

let target: Awaited<ReturnType<typeof startFuzzTarget>>;
let srv: TestServer;
let report: FuzzReport;

beforeAll(async () => {
  target = await startFuzzTarget();
  srv = target.srv;
});
afterAll(async () => {
  await target.stop();
});

describe("the PRNG and the generator", () => {
  test("the same seed gives the same frames", () => {
    const limits = { maxFrameBytes: 4096, maxMessageChars: 1000 };
    const take = (seed: number) => {
      const g = new FrameGen(new Rng(seed), "t", limits);
      return Array.from({ length: 300 }, () => {
        const f = g.next({ badOnly: false, ownChats: [] });
        return typeof f.data === "string" ? f.data : Buffer.from(f.data).toString("base64");
      });
    };
    expect(take(SEED)).toEqual(take(SEED));
    expect(take(SEED)).not.toEqual(take(SEED + 1));
  });

  test("near-limit frames are exactly the size they claim", () => {
    const g = new FrameGen(new Rng(SEED), "t", { maxFrameBytes: 4096, maxMessageChars: 1000 });
    let ok = 0;
    let over = 0;
    for (let i = 0; i < 200; i++) {
      const f = g.nearLimit();
      const bytes = typeof f.data === "string" ? Buffer.byteLength(f.data) : f.data.byteLength;
      expect(bytes).toBe(f.bytes);
      if (f.expect.kind === "ok") {
        ok++;
        expect(bytes).toBeLessThanOrEqual(4096);
      } else {
        over++;
        expect(bytes).toBeGreaterThan(4096);
        expect(bytes).toBeLessThanOrEqual(4 * 4096);
      }
    }
    expect(ok).toBeGreaterThan(0);
    expect(over).toBeGreaterThan(0);
  });
});

describe(`protocol fuzz (seed ${SEED}, ${FRAMES} frames)`, () => {
  test("every frame gets exactly its one answer; the well-behaved client is served; the store is intact", async () => {
    report = await runFuzz(srv, { seed: SEED, frames: FRAMES, clients: 4, window: 32 });
    console.log(formatReport(report));
    expect(report.violations).toEqual([]);

    const s = report.stats;
    expect(s.framesSent).toBeGreaterThanOrEqual(FRAMES);
    // Each bad frame drew one ERROR (the over-4× ones a 1009 close instead).
    const closes1009 = s.closes["1009"] ?? 0;
    expect(s.errorsForBadFrames + closes1009).toBe(s.badFramesSent);
    expect(Object.keys(s.closes).filter((code) => code !== "1009")).toEqual([]);
    expect(closes1009).toBe(s.reconnects);
    expect(closes1009).toBeGreaterThan(0);
    // The fuzz reached past the front checks, not just the rate limiter.
    for (const code of ["BAD_JSON", "INVALID_FRAME", "UNKNOWN_TYPE", "FRAME_TOO_LARGE", "CHAT_NOT_FOUND", "MESSAGE_TOO_LONG"]) {
      expect(s.errorCodes[code] ?? 0).toBeGreaterThan(0);
    }
    expect(s.errorCodes.RATE_LIMITED ?? 0).toBe(0);
    expect(s.errorCodes.INTERNAL_ERROR ?? 0).toBe(0);
    expect(s.replies.MESSAGE_ACCEPTED ?? 0).toBeGreaterThan(0);
    expect(report.good.repliesDuringFuzz).toBeGreaterThanOrEqual(1);
    expect(report.store.fuzzMessages).toBeGreaterThan(0);
  }, 30_000);

  // A JSON escape like "\ud800" yields a lone surrogate; SQLite would store it as U+FFFD, so the
  // server makes every string well-formed on arrival and what clients are told is what a reload shows.
  test("a lone surrogate in a name or a message is stored exactly as the clients were told", async () => {
    const a = await srv.connect();
    const watcher = await srv.connect();
    try {
      const created = (await a.request({ type: "CREATE_CHAT", name: "lone \ud800 surrogate" }, "NEW_CHAT")).chat;
      expect((await srv.store.getChat("default", created.id))?.name).toBe(created.name);
      await watcher.request({ type: "GET_CHAT_HISTORY", chatId: created.id }, "CHAT_HISTORY");
      a.send({ type: "SEND_MESSAGE", chatId: created.id, content: "half an emoji: \ud83d!" });
      const first = await watcher.next("FIRST_MESSAGE");
      await a.reply(created.id);
      const stored = await srv.store.listMessages(created.id, { limit: 10 });
      expect(stored[0]!.content).toBe(first.content);
    } finally {
      a.close();
      watcher.close();
      await Promise.all([a.closed, watcher.closed]);
    }
  });

  test("afterwards the server is healthy and holds no sockets", async () => {
    expect(srv.conns.count).toBe(0); // every fuzz socket (and every one closed with 1009) is gone
    const res = await fetch(`${srv.url}/health`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { status: string }).status).toBe("ok");
    expect(srv.chat.replies.size).toBe(0);
    const c = await srv.connect();
    expect((await c.request({ type: "GET_CHATS", limit: 1 }, "CHAT_LIST")).type).toBe("CHAT_LIST");
    c.close();
    await c.closed;
  });
});
