import { describe, expect, test } from "bun:test";
import { ChatError } from "../src/chat/errors";
import { assertFits, buildPrompt, checkQuestionFits, minimalPromptTokens } from "../src/chat/pipeline/window";
import { openSqliteStore } from "../src/store/sqlite";
import { REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, encodingFor, tokenizerFor } from "../src/chat/tokenizer";
import { tokenBucket } from "../src/ws/limits";
import { nowIso } from "../src/chat/clock";

// Pure logic only: no sockets here.

describe("buildPrompt (token budget)", async () => {
  const tok = await tokenizerFor("gpt-4o");
  const m = (role: "user" | "assistant", content: string) => ({ role, content });
  const sys = "You are terse.";
  // What a prompt of these turns costs, counted the way OpenAI's chat format does.
  const cost = (turns: { content: string }[]) =>
    REPLY_PRIMING_TOKENS + turns.reduce((n, t) => n + TOKENS_PER_MESSAGE + tok.count(t.content), 0);
  const history = [m("user", "first question about apples"), m("assistant", "an answer about apples"), m("user", "and pears?")];

  test("keeps the newest whole messages that fit, in order, after the system prompt", () => {
    const all = [{ role: "system" as const, content: sys }, ...history];
    // Exactly the whole prompt: everything goes.
    expect(buildPrompt(tok, sys, history, { contextTokens: cost(all) + 100, replyReserveTokens: 100 })).toEqual(all);
    // One token short of the whole: the oldest message is dropped whole, not cut.
    const turns = buildPrompt(tok, sys, history, { contextTokens: cost(all) - 1 + 100, replyReserveTokens: 100 });
    expect(turns).toEqual([{ role: "system", content: sys }, history[1]!, history[2]!]);
  });

  test("the budget is in tokens, not characters: 4,000 characters of one word is far fewer tokens", () => {
    const long = "word ".repeat(800); // 4,000 characters, ~800 tokens
    expect(tok.count(long)).toBeLessThan(1000);
    const turns = buildPrompt(tok, sys, [m("user", long), m("assistant", "ok"), m("user", "again")], {
      contextTokens: 1200,
      replyReserveTokens: 100,
    });
    expect(turns.map((t) => t.content)).toEqual([sys, long, "ok", "again"]);
  });

  test("a question that cannot fit even alone is CONTEXT_TOO_LARGE with its token count and the limit", () => {
    const question = "x ".repeat(500);
    const need = cost([{ content: sys }, { content: question }]);
    let err: unknown;
    try {
      buildPrompt(tok, sys, [m("user", "old"), m("user", question)], { contextTokens: need + 10 - 1, replyReserveTokens: 10 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ChatError);
    expect((err as ChatError).code).toBe("CONTEXT_TOO_LARGE");
    expect((err as ChatError).details).toEqual({ tokens: need, limit: need - 1 });
    expect(() => assertFits(tok, sys, question, { contextTokens: need + 10 - 1, replyReserveTokens: 10 })).toThrow(ChatError);
    expect(() => assertFits(tok, sys, question, { contextTokens: need + 10, replyReserveTokens: 10 })).not.toThrow();
    expect(minimalPromptTokens(tok, sys, question)).toBe(need);
  });

  test("the check before a question is stored counts the system prompt the question will get: a device's, for a device", async () => {
    // The embedded store (in memory) only answers "no settings": the server's prompts apply.
    const store = openSqliteStore(":memory:");
    const question = "y ".repeat(200);
    const devicePrompt = "Speak plainly. ".repeat(100);
    const budget = { contextTokens: cost([{ content: sys }, { content: question }]) + 10, replyReserveTokens: 10 };
    const o = { store, owner: "u", defaultModel: "gpt-4o", options: { systemPrompt: sys, deviceSystemPrompt: devicePrompt }, budget };
    await checkQuestionFits(o, question);
    const err = await checkQuestionFits({ ...o, deviceId: "pi-1" }, question).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ChatError);
    expect((err as ChatError).code).toBe("CONTEXT_TOO_LARGE");
    await store.close();
  });

  test("empty messages (a failed reply with no text) are skipped", () => {
    expect(
      buildPrompt(tok, "s", [m("user", "q"), m("assistant", ""), m("user", "q2")], { contextTokens: 1000, replyReserveTokens: 0 }),
    ).toHaveLength(3);
  });

  test("per-message overhead matches gpt-tokenizer's own chat encoding for gpt-4o", async () => {
    const { encodeChat } = await import("gpt-tokenizer/encoding/o200k_base");
    const chat = [{ role: "system" as const, content: sys }, ...history];
    expect(cost(chat)).toBe(encodeChat(chat, "gpt-4o").length);
  });
});

describe("tokenizer", () => {
  test("the encoding follows the model family; unknown models get o200k_base", () => {
    for (const name of ["gpt-4o", "gpt-4o-mini", "gpt-4.1-nano", "o1", "o3-mini", "o4-mini", "gpt-5", "GPT-5-chat", "openai/gpt-4o"])
      expect(encodingFor(name)).toBe("o200k_base");
    for (const name of ["gpt-4", "gpt-4-turbo", "gpt-4-32k", "gpt-35-turbo", "gpt-3.5-turbo"])
      expect(encodingFor(name)).toBe("cl100k_base");
    for (const name of ["llama3.1", "qwen2.5:7b", "my-deployment", "offline"]) expect(encodingFor(name)).toBe("o200k_base");
  });

  test("counts are the library's exact counts for ordinary text, in both encodings", async () => {
    const o200k = await import("gpt-tokenizer/encoding/o200k_base");
    const cl100k = await import("gpt-tokenizer/encoding/cl100k_base");
    const text = "  def f(x):\n\treturn x  \r\n漢字かな 😀 <|endoftext|> https://example.com/a?b=c ".repeat(50);
    const asText = { disallowedSpecial: new Set<string>() };
    expect((await tokenizerFor("gpt-4o")).count(text)).toBe(o200k.countTokens(text, asText));
    expect((await tokenizerFor("gpt-4")).count(text)).toBe(cl100k.countTokens(text, asText));
  });

  test("a special token typed in a message is counted as text, not refused", async () => {
    const tok = await tokenizerFor("gpt-4o");
    expect(tok.count("<|endoftext|>")).toBeGreaterThan(1);
  });

  test("100,000 emoji in a row (one BPE piece) count in bounded time, not minutes", async () => {
    // The library's merge is quadratic in a piece's length: this took ~5 minutes unguarded.
    const tok = await tokenizerFor("gpt-4o");
    // Varied emoji, so no part repeats and the merge cache cannot help.
    const text = Array.from({ length: 100_000 }, (_, i) => String.fromCodePoint(0x1f300 + ((i * 7919) % 0x2ff))).join("");
    const started = performance.now();
    const n = tok.count(text);
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(n).toBeGreaterThan(100_000); // most of these emoji are 2-3 tokens each
    expect(tok.count("😀".repeat(100_000))).toBeWithin(99_000, 101_000); // one token each, give or take a token per part
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
