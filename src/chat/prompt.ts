import type { Turn } from "../model/model";
import type { Message } from "../records";
import type { Store } from "../store/store";
import { ChatError } from "./errors";
import { getSettingsOf } from "./settings";

// What goes to the model: the system prompt, then the newest whole messages that fit the model's
// context window, counted in tokens with the model family's own tokenizer (gpt-tokenizer, pure JS:
// o200k_base and cl100k_base are OpenAI's published encodings, so counts match what the API bills).
// A message is never cut: older ones are dropped whole, and a question that cannot fit even alone
// is refused (CONTEXT_TOO_LARGE) before it is stored.

export type Encoding = "o200k_base" | "cl100k_base";

/** The token budget of one model request. */
export type ContextBudget = {
  /** The model's whole context window (prompt + reply), MODEL_CONTEXT_TOKENS. */
  contextTokens: number;
  /** Tokens kept free for the reply, MODEL_REPLY_RESERVE_TOKENS. */
  replyReserveTokens: number;
};

export type Tokenizer = { readonly encoding: Encoding; count(text: string): number };

// OpenAI's chat format: each message costs 3 tokens (<|im_start|>, <|im_sep|>/newline, <|im_end|>)
// plus its role name (1 token), and every reply is primed with 3 more (<|im_start|>assistant<|im_sep|>).
// This is the cookbook's count, and gpt-tokenizer's encodeChat gives the same for gpt-4o.
export const TOKENS_PER_MESSAGE = 4;
export const REPLY_PRIMING_TOKENS = 3;

/**
 * The encoding of a model or deployment name. o200k_base is OpenAI's current encoding (GPT-4o,
 * GPT-4.1, GPT-4.5, o1/o3/o4, GPT-5); cl100k_base is GPT-4 and GPT-3.5's. Any other name (an
 * Azure deployment called "chat", a local Llama, Mistral or Qwen) gets o200k_base as an
 * approximation: those models' own tokenizers differ, typically by 10-20%, so keep
 * MODEL_CONTEXT_TOKENS below their real window.
 */
export function encodingFor(model: string): Encoding {
  const m = model.toLowerCase().replace(/^.*\//, "");
  if (/^(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4|chatgpt-4o|gpt-oss)/.test(m)) return "o200k_base";
  if (/^(gpt-4|gpt-35|gpt-3\.5)/.test(m)) return "cl100k_base";
  return "o200k_base";
}

// Longest run of whitespace or of non-whitespace that is handed to the BPE merge in one piece.
// gpt-tokenizer's merge is quadratic in a piece's length: 100,000 emoji in a row (one piece, as no
// regex split falls inside) took minutes, blocking the server. Real tokens are far shorter than
// this, so cutting a longer run changes its count by about one token per cut.
const MAX_RUN = 128;
// A text is counted in slices of about this size, cut between pieces (so slices count the same as
// the whole), which keeps each slice's work bounded.
const SLICE = 8192;
// User text is counted as text: "<|endoftext|>" typed in a message is not a special token to the
// API either, and the tokenizer would otherwise throw on it.
const AS_TEXT = { disallowedSpecial: new Set<string>() };

type Api = { countTokens(text: string, o: typeof AS_TEXT): number; setMergeCacheSize(n: number): void };

async function load(encoding: Encoding): Promise<{ api: Api; split: RegExp }> {
  // Loaded on first use (each encoding's table is 1-2 MB of JS): only what the model needs.
  const { O200K_TOKEN_SPLIT_REGEX, CL100K_TOKEN_SPLIT_REGEX } = await import("gpt-tokenizer/encodingParams/constants");
  const api: Api =
    encoding === "o200k_base" ? await import("gpt-tokenizer/encoding/o200k_base") : await import("gpt-tokenizer/encoding/cl100k_base");
  // The default merge cache keeps 100,000 pieces; a tenth bounds its memory and still hits on common words.
  api.setMergeCacheSize(10_000);
  return { api, split: encoding === "o200k_base" ? O200K_TOKEN_SPLIT_REGEX : CL100K_TOKEN_SPLIT_REGEX };
}

const tokenizers = new Map<Encoding, Promise<Tokenizer>>();

/** The tokenizer of a model's family, loaded once per encoding. */
export function tokenizerFor(model: string): Promise<Tokenizer> {
  const encoding = encodingFor(model);
  let t = tokenizers.get(encoding);
  if (!t) {
    t = load(encoding).then(({ api, split }) => ({ encoding, count: (text: string) => countText(api, split, text) }));
    t.catch(() => tokenizers.delete(encoding));
    tokenizers.set(encoding, t);
  }
  return t;
}

/** Whether `text` has a run of whitespace or of non-whitespace longer than MAX_RUN (code units). */
function hasLongRun(text: string): boolean {
  let run = 0;
  let space = false;
  for (let i = 0; i < text.length; i++) {
    const s = isSpace(text.charCodeAt(i));
    run = s === space ? run + 1 : 1;
    space = s;
    if (run > MAX_RUN) return true;
  }
  return false;
}

function isSpace(c: number): boolean {
  return (
    c === 32 ||
    (c >= 9 && c <= 13) ||
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000 ||
    c === 0xfeff ||
    c === 0x85
  );
}

/**
 * Tokens in `text`. Ordinary text (no long runs) is counted exactly as the library does; text with
 * a long run is counted piece by piece, long pieces in MAX_RUN-sized parts (never splitting a
 * surrogate pair), so the work stays linear in the text's length.
 */
function countText(api: Api, split: RegExp, text: string): number {
  if (!text) return 0;
  if (!hasLongRun(text)) return api.countTokens(text, AS_TEXT);
  let total = 0;
  let from = 0; // start of the slice of ordinary pieces not yet counted
  const flush = (to: number) => {
    if (to > from) total += api.countTokens(text.slice(from, to), AS_TEXT);
  };
  for (const m of text.matchAll(new RegExp(split.source, split.flags))) {
    const piece = m[0];
    const at = m.index;
    if (piece.length <= MAX_RUN) {
      if (at + piece.length - from >= SLICE) {
        flush(at + piece.length);
        from = at + piece.length;
      }
      continue;
    }
    flush(at);
    for (let i = 0; i < piece.length; ) {
      let end = Math.min(i + MAX_RUN, piece.length);
      // Keep a surrogate pair whole.
      if (end < piece.length && isHighSurrogate(piece.charCodeAt(end - 1))) end--;
      total += api.countTokens(piece.slice(i, end), AS_TEXT);
      i = end;
    }
    from = at + piece.length;
  }
  flush(text.length);
  return total;
}

const isHighSurrogate = (c: number) => c >= 0xd800 && c <= 0xdbff;

// Stored messages never change, so their counts are remembered (by encoding, id and length):
// a chat's history is counted once, not on every question.
const COUNT_CACHE_SIZE = 20_000;
const counted = new Map<string, number>();

// The same message objects come back for every question while a chat's newest messages are kept
// (src/chat/recent.ts): looked up by identity first, with no key to build (a prompt of 500
// messages built 500 keys per question).
const byObject = new WeakMap<object, { encoding: Encoding; length: number; n: number }>();

function messageTokens(tok: Tokenizer, m: Message | Turn): number {
  const hit = byObject.get(m);
  if (hit && hit.encoding === tok.encoding && hit.length === m.content.length) return hit.n;
  const n = keyedTokens(tok, m);
  byObject.set(m, { encoding: tok.encoding, length: m.content.length, n });
  return n;
}

function keyedTokens(tok: Tokenizer, m: Message | Turn): number {
  const id = "id" in m ? m.id : undefined;
  if (id === undefined) return TOKENS_PER_MESSAGE + tok.count(m.content);
  const key = `${tok.encoding}\u0000${"chat_id" in m ? m.chat_id : ""}\u0000${id}\u0000${m.content.length}`;
  let n = counted.get(key);
  if (n === undefined) {
    n = TOKENS_PER_MESSAGE + tok.count(m.content);
    if (counted.size >= COUNT_CACHE_SIZE) counted.delete(counted.keys().next().value!);
    counted.set(key, n);
  }
  return n;
}

/** Tokens available for the prompt: the window less the reply's reserve. */
export const promptLimit = (b: ContextBudget) => Math.max(0, b.contextTokens - b.replyReserveTokens);

// System prompts are few (the server's and each user's) and counted for every question: remembered.
const systemCounts = new Map<string, number>();
function systemTokens(tok: Tokenizer, systemPrompt: string): number {
  const key = `${tok.encoding}\u0000${systemPrompt}`;
  let n = systemCounts.get(key);
  if (n === undefined) {
    n = tok.count(systemPrompt);
    if (systemCounts.size >= 1_000) systemCounts.clear();
    systemCounts.set(key, n);
  }
  return n;
}

/** Tokens of the smallest prompt that answers `question`: the system prompt and the question alone. */
export function minimalPromptTokens(tok: Tokenizer, systemPrompt: string, question: string): number {
  return REPLY_PRIMING_TOKENS + TOKENS_PER_MESSAGE + systemTokens(tok, systemPrompt) + TOKENS_PER_MESSAGE + tok.count(question);
}

export function contextTooLarge(tokens: number, b: ContextBudget): ChatError {
  const limit = promptLimit(b);
  return new ChatError(
    "CONTEXT_TOO_LARGE",
    `this message needs ${tokens} tokens with the system prompt, but the model takes at most ${limit} ` +
      `(a ${b.contextTokens}-token window less ${b.replyReserveTokens} kept for the reply); shorten it or split it into several messages`,
    { tokens, limit },
  );
}

/**
 * Throws CONTEXT_TOO_LARGE (with `tokens` and `limit`) when the question with the system prompt
 * does not fit the window: such a question could never be answered, so it must not be stored.
 */
export function assertFits(tok: Tokenizer, systemPrompt: string, question: string, b: ContextBudget): void {
  const tokens = minimalPromptTokens(tok, systemPrompt, question);
  if (tokens > promptLimit(b)) throw contextTooLarge(tokens, b);
}

/**
 * The system prompt, then as many of the newest whole messages of `history` as fit the budget,
 * oldest dropped first, in order. The last entry (the question) always goes; if it cannot fit
 * this throws CONTEXT_TOO_LARGE. Empty messages (a failed reply with no text) are skipped.
 */
export function buildPrompt(tok: Tokenizer, systemPrompt: string, history: readonly (Message | Turn)[], b: ContextBudget): Turn[] {
  const limit = promptLimit(b);
  let used = REPLY_PRIMING_TOKENS + TOKENS_PER_MESSAGE + systemTokens(tok, systemPrompt);
  const turns: Turn[] = [];
  for (let i = history.length - 1; i >= 0; i--) {
    const m = history[i]!;
    if (!m.content) continue;
    const cost = messageTokens(tok, m);
    if (used + cost > limit) {
      if (turns.length === 0) throw contextTooLarge(used + cost, b);
      break;
    }
    used += cost;
    turns.push({ role: m.role, content: m.content });
  }
  return [{ role: "system", content: systemPrompt }, ...turns.reverse()];
}

/**
 * The send path's check, before a question is stored: CONTEXT_TOO_LARGE unless it fits the window
 * with the system prompt and model in effect now (the settings, else the server's defaults).
 */
export async function checkQuestionFits(
  o: { store: Store; owner: string; defaultModel: string; defaultSystemPrompt: string; budget: ContextBudget },
  question: string,
): Promise<void> {
  const settings = await getSettingsOf(o.store, o.owner);
  const tok = await tokenizerFor(settings.model ?? o.defaultModel);
  assertFits(tok, settings.systemPrompt ?? o.defaultSystemPrompt, question, o.budget);
}
