import { describe, expect, test } from "bun:test";
import { fitPage, messageBytes } from "../src/chat/page-budget";
import { connectionRefusal, defaultMaxConnections, FALLBACK_MAX_CONNECTIONS, openFileLimit } from "../src/http/caps";
import { admitInbound, newBudget, type SocketLimits } from "../src/ws/limits";

// The pure parts of the abuse bounds (test/abuse.test.ts runs them on the real server).

const msg = (i: number, size: number) => ({ id: `m${i}`, content: "x".repeat(size) });

describe("fitPage: a history page cut to a byte budget", () => {
  test("keeps the newest messages that fit, oldest first, and says how many older ones were cut", () => {
    const page = Array.from({ length: 10 }, (_, i) => msg(i, 100));
    const one = messageBytes(page[0]!);
    const fit = fitPage(page, one * 3 + one - 1);
    expect(fit.messages.map((m) => m.id)).toEqual(["m7", "m8", "m9"]);
    expect(fit.trimmed).toBe(7);
  });

  test("everything fits: nothing is cut", () => {
    const page = Array.from({ length: 5 }, (_, i) => msg(i, 10));
    expect(fitPage(page, 10_000)).toEqual({ messages: page, trimmed: 0 });
    expect(fitPage([], 10)).toEqual({ messages: [], trimmed: 0 });
  });

  test("the newest message is kept even when it alone is over the budget, so paging always moves on", () => {
    const page = [msg(0, 10), msg(1, 5000)];
    expect(fitPage(page, 100)).toEqual({ messages: [page[1]!], trimmed: 1 });
  });

  test("bytes are UTF-8 bytes of the JSON, not characters", () => {
    const wide = { id: "w", content: "é".repeat(100) };
    expect(messageBytes(wide)).toBe(Buffer.byteLength(JSON.stringify(wide)) + 1);
    expect(messageBytes(wide)).toBeGreaterThan(JSON.stringify(wide).length + 1);
  });
});

describe("connection caps", () => {
  const limits = (soft: string) =>
    `Limit                     Soft Limit           Hard Limit           Units     \nMax open files            ${soft}                20000                files     \n`;

  test("the open-file limit is read from /proc/self/limits; unlimited or unreadable is undefined", () => {
    expect(openFileLimit(limits("1024"))).toBe(1024);
    expect(openFileLimit(limits("unlimited"))).toBeUndefined();
    expect(openFileLimit("garbage")).toBeUndefined();
  });

  test("MAX_CONNECTIONS defaults to the limit less max(128, 10%), at least 1; a fixed number when the limit is unknown", () => {
    expect(defaultMaxConnections(20_000)).toBe(18_000);
    expect(defaultMaxConnections(1024)).toBe(896);
    expect(defaultMaxConnections(256)).toBe(128);
    expect(defaultMaxConnections(64)).toBe(1);
    expect(defaultMaxConnections(undefined)).toBe(FALLBACK_MAX_CONNECTIONS);
  });

  test("the global cap answers 503, the per-address cap 429; 0 turns the per-address cap off", () => {
    const load = (total: number, mine: number) => ({ total: () => total, from: () => mine });
    expect(connectionRefusal(load(10, 1), "a", { maxConnections: 10, maxPerAddress: 5 })).toMatchObject({
      status: 503,
      code: "TOO_MANY_CONNECTIONS",
    });
    expect(connectionRefusal(load(9, 5), "a", { maxConnections: 10, maxPerAddress: 5 })).toMatchObject({
      status: 429,
      code: "TOO_MANY_CONNECTIONS_FROM_ADDRESS",
    });
    expect(connectionRefusal(load(9, 5), "a", { maxConnections: 10, maxPerAddress: 0 })).toBeUndefined();
    expect(connectionRefusal(load(9, 4), "a", { maxConnections: 10, maxPerAddress: 5 })).toBeUndefined();
  });
});

describe("admitInbound: frames waiting on one socket", () => {
  const l = { inboundMaxFrames: 3, inboundMaxBytes: 1000 } as SocketLimits;
  test("refused past the count or the bytes; an idle socket always gets one frame in", () => {
    const b = newBudget({ framesPerSecond: 1, messagesPerMinute: 1 } as SocketLimits);
    expect(admitInbound(l, b, 5000)).toBe(true); // nothing waits: even a big one (Bun caps its size)
    b.pending = { frames: 1, bytes: 600 };
    expect(admitInbound(l, b, 400)).toBe(true);
    expect(admitInbound(l, b, 401)).toBe(false);
    b.pending = { frames: 3, bytes: 3 };
    expect(admitInbound(l, b, 1)).toBe(false);
  });
});
