import { describe, expect, test } from "bun:test";
import { buildPrompt } from "../src/chat/prompt";
import { tokenBucket } from "../src/ws/limits";
import { nowIso } from "../src/chat/clock";

// Pure logic only: no sockets here.

describe("buildPrompt", () => {
  const m = (role: "user" | "assistant", content: string) => ({ role, content });
  test("keeps the newest turns that fit the budget, in order, after the system prompt", () => {
    const turns = buildPrompt("sys", [m("user", "aaaa"), m("assistant", "bbbb"), m("user", "cccc")], 9);
    expect(turns).toEqual([{ role: "system", content: "sys" }, m("assistant", "bbbb"), m("user", "cccc")]);
  });
  test("the latest turn always goes, trimmed from the front if it alone is over budget", () => {
    const turns = buildPrompt("sys", [m("user", "old"), m("user", "0123456789")], 4);
    expect(turns).toEqual([{ role: "system", content: "sys" }, m("user", "6789")]);
  });
  test("empty messages (a failed reply with no text) are skipped", () => {
    expect(buildPrompt("s", [m("user", "q"), m("assistant", ""), m("user", "q2")], 100)).toHaveLength(3);
  });
});

describe("tokenBucket", () => {
  test("allows a burst, then refills at the rate and says when to retry", () => {
    const take = tokenBucket({ perSecond: 2, burst: 3 });
    expect([take(0), take(0), take(0)].every((r) => r.ok)).toBe(true);
    const denied = take(0);
    expect(denied).toEqual({ ok: false, retryAfterMs: 500 });
    expect(take(499).ok).toBe(false);
    expect(take(1000).ok).toBe(true);
  });
});

describe("clock", () => {
  test("timestamps strictly increase even within one millisecond", () => {
    const ts = Array.from({ length: 50 }, nowIso);
    expect(new Set(ts).size).toBe(50);
    expect([...ts].sort()).toEqual(ts);
  });
});
