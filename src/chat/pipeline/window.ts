import { boundedMap } from "../../bounded";
import type { Turn } from "../../model/model";
import type { Message } from "../../records";
import type { Store } from "../../store/store";
import { ChatError } from "../errors";
import { getSettingsOf, type Settings } from "../settings";
import { type Encoding, REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, type Tokenizer, tokenizerFor } from "../tokenizer";

// What goes to the model: the system prompt, then the newest whole messages that fit the model's
// context window, counted in tokens (src/chat/tokenizer.ts). A message is never cut: older ones are
// dropped whole, and a question that cannot fit even alone is refused (CONTEXT_TOO_LARGE) before it
// is stored.

/** The token budget of one model request. */
export type ContextBudget = {
  /** The model's whole context window (prompt + reply), MODEL_CONTEXT_TOKENS. */
  contextTokens: number;
  /** Tokens kept free for the reply, MODEL_REPLY_RESERVE_TOKENS. */
  replyReserveTokens: number;
};

// Stored messages never change, so their counts are remembered (by encoding, id and length):
// a chat's history is counted once, not on every question.
const COUNT_CACHE_SIZE = 20_000;
const counted = boundedMap<string, number>(COUNT_CACHE_SIZE);

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
  o: { store: Store; owner: string; defaultModel: string; options: SystemPrompts; budget: ContextBudget; deviceId?: string },
  question: string,
): Promise<void> {
  const settings = await getSettingsOf(o.store, o.owner);
  const tok = await tokenizerFor(settings.model ?? o.defaultModel);
  assertFits(tok, systemPromptOf(settings, o.options, o.deviceId), question, o.budget);
}

type SystemPrompts = { systemPrompt: string; deviceSystemPrompt?: string };

/** The system prompt a question gets: a voice device's the spoken-style one (the user's own, else the server's). */
export function systemPromptOf(settings: Settings, options: SystemPrompts, deviceId?: string): string {
  return deviceId
    ? (settings.deviceSystemPrompt ?? options.deviceSystemPrompt ?? options.systemPrompt)
    : (settings.systemPrompt ?? options.systemPrompt);
}
