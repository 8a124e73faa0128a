import { type BoundedMap, boundedMap } from "../bounded";
import type { Logger } from "../log";
import type { Model, ModelTurn, ReportedUsage, StreamOptions, UsageTag } from "../model/model";
import type { UsageRecord } from "../records";
import type { Store } from "../store/store";
import { ChatError } from "./errors";
import { heldUntilReply } from "./held-until-reply";
import { REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, tokenizerFor } from "./tokenizer";
import { localReservations, type Reservations } from "./reservations";
import { usageRecords } from "./usage-records";
import { usageReport } from "./usage-report";

// What each person spends on the model, and the budget that bounds it (docs/security.md, "Cost").
//
// - Every model call tagged with a UsageTag (replies, regenerations, device answers, titles, each
//   tool round) becomes one UsageRecord: the service's own token count (stream_options.include_usage)
//   or, when it sends none, the tokenizer's (estimated: true). The record is written after the
//   stream ends, off the token path, retried until the store takes it; its id is derived from the
//   reply's id, so a record written twice (a retry, a takeover) is stored once.
// - A budget (USER_TOKENS_PER_DAY, or the user's own from `bun run users limit`) is checked before
//   a question is stored (`admitQuestion`: its tokens plus the reply reserve); the reply's first
//   call replaces that reservation with its own (the prompt's tokens plus the reserve) without being
//   refused, and tool rounds and titles are checked before they run. What calls have been admitted
//   for and not yet recorded counts as spent (src/chat/reservations.ts: on every replica with
//   Redis), so the estimates admitted never pass the budget together. The bound on overspend: the
//   replies admitted finish, each costing its actual prompt and completion instead of its estimate.

export type UsageOptions = {
  /** Record calls at all (USAGE_RECORDS). Without records there is no budget either. */
  enabled: boolean;
  /** USER_TOKENS_PER_DAY: null for none. */
  tokensPerDay: number | null;
  /** Tokens reserved for a reply in an estimate (MODEL_REPLY_RESERVE_TOKENS). */
  replyReserveTokens: number;
};

export type UsageDeps = {
  store: Store;
  log: Logger;
  options: UsageOptions;
  /** Admitted and unrecorded tokens: across replicas with Redis; this process's own by default. */
  reservations?: Reservations;
  /** Counted by src/metrics.ts (tokens by kind and model, budget refusals); no user in either. */
  onRecorded?: (r: UsageRecord) => void;
  onRefused?: () => void;
  now?: () => number;
};

/** A UTC day: its start, and the next (when a budget resets). */
export function dayOf(ms: number): { start: string; resetsAt: string; date: string } {
  const d = new Date(ms);
  const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
  const iso = new Date(start).toISOString();
  return { start: iso, resetsAt: new Date(start + 86_400_000).toISOString(), date: iso.slice(0, 10) };
}

/** Budget overrides are read at most this often per user and replica (`users limit` takes effect within it). */
const LIMIT_TTL_MS = 10_000;
/** Characters of prompt text whose token counts are remembered, per encoding (about 16 MB; most servers use one). */
const COUNTED_CHARS = 8_000_000;

export function createUsage(d: UsageDeps) {
  const now = d.now ?? Date.now;
  const { store, log, options } = d;
  const reservations = d.reservations ?? localReservations();
  const limits = new Map<string, { value: number | null; at: number }>();
  /** Calls made so far per reply (tool rounds are several), for their records' ids; the oldest go past 10,000. */
  const calls = boundedMap<string, number>(10_000);
  /** Question estimates admitted before their question was stored, per chat, until the reply's call starts. */
  const held = new Map<string, { release: () => void; tokens: number }[]>();
  const { record, drained } = usageRecords({ store, log, onRecorded: d.onRecorded });

  async function budgetOf(userId: string): Promise<number | null> {
    const known = limits.get(userId);
    if (known && now() - known.at < LIMIT_TTL_MS) return known.value;
    const own = await store.tokensPerDay(userId);
    const value = own === undefined ? options.tokensPerDay : own;
    if (limits.size > 10_000) limits.clear();
    limits.set(userId, { value, at: now() });
    return value;
  }

  /**
   * Throws BUDGET_EXCEEDED when the user's tokens today, plus every admitted and unrecorded
   * reservation, plus `estimate`, pass the budget; else reserves `estimate` and returns its release.
   * `replacing`: tokens of a reservation still held that this one replaces (released by the caller
   * once this one is taken, so there is no moment when neither holds them). `admitted`: the call was
   * admitted already (a reply's first call, its question checked before it was stored): reserved, never refused.
   */
  async function admit(userId: string, estimate: number, replacing = 0, admitted = false): Promise<() => void> {
    if (!options.enabled) return () => {};
    const budget = await budgetOf(userId);
    if (budget === null) return () => {};
    const day = dayOf(now());
    const used = await store.tokensUsedSince(userId, day.start);
    const release = await reservations(userId, estimate, used - replacing, admitted ? Number.MAX_SAFE_INTEGER : budget);
    if (release === "full") {
      d.onRefused?.();
      throw new ChatError("BUDGET_EXCEEDED", `your ${budget} tokens for today are spent; they renew at ${day.resetsAt}`, {
        resetsAt: day.resetsAt,
        budget,
        used,
      });
    }
    return release;
  }

  // A chat's history is the same text in every prompt of it: each turn's count is remembered (by
  // encoding and text; the strings are the ones the prompt already holds, and JS caches their hashes).
  // The texts held may be the only reference left to them: at most COUNTED_CHARS per encoding.
  const turnCounts = new Map<string, BoundedMap<string, number>>();
  /** Prompt tokens as the model counts a chat prompt (src/chat/tokenizer.ts). */
  async function promptTokens(model: string, turns: ModelTurn[]): Promise<number> {
    const tok = await tokenizerFor(model);
    let known = turnCounts.get(tok.encoding);
    if (!known) turnCounts.set(tok.encoding, (known = boundedMap(COUNTED_CHARS, { weight: (text) => text.length })));
    let n = REPLY_PRIMING_TOKENS;
    for (const t of turns) {
      const text = "tool_calls" in t ? t.content + JSON.stringify(t.tool_calls) : t.content;
      let c = known.get(text);
      if (c === undefined) {
        c = tok.count(text);
        known.set(text, c);
      }
      n += TOKENS_PER_MESSAGE + c;
    }
    return n;
  }

  /**
   * The model, metered: a call with a UsageTag is checked against its user's budget first and
   * recorded when its stream ends (finished, stopped or failed: whatever the service charged).
   */
  function meter(model: Model): Model {
    if (!options.enabled) return model;
    return {
      kind: model.kind,
      name: model.name,
      async *stream(turns: ModelTurn[], o: StreamOptions) {
        const tag = o.usage;
        if (!tag) return yield* model.stream(turns, o);
        const name = o.model ?? model.name;
        const key = `${tag.kind}:${tag.messageId}`;
        const n = (calls.get(key) ?? 0) + 1;
        calls.set(key, n);
        // A reply's first call takes over its question's estimate (replaced, never dropped first) and
        // is not refused: its question was admitted before it was stored, and a reply admitted runs.
        // Its tool rounds and titles are new calls, checked on their own.
        const first = n === 1 && tag.kind !== "title";
        const question = first ? takeHeld(tag.chatId) : undefined;
        let release: () => void;
        let promptEstimate = 0;
        try {
          if ((await budgetOf(tag.userId)) !== null) promptEstimate = await promptTokens(name, turns);
          release = await admit(tag.userId, promptEstimate + options.replyReserveTokens, question?.tokens ?? 0, first);
        } finally {
          question?.release();
        }
        let reported: ReportedUsage | undefined;
        const parts: string[] = [];
        const at = new Date(now()).toISOString();
        const base = {
          id: `${key}:${n}`,
          user_id: tag.userId,
          chat_id: tag.chatId,
          message_id: tag.messageId,
          model: name,
          kind: tag.kind,
          created_at: at,
        };
        // Written as the call begins (off its path), so a process killed mid-reply leaves the call
        // recorded at its estimate; the final counts replace it, by id.
        const chars = turns.reduce((x, t) => x + t.content.length, 0);
        record({ ...base, prompt_tokens: promptEstimate || Math.ceil(chars / 4), completion_tokens: 0, estimated: true }, () => {}, {
          replace: false,
          final: false,
        });
        try {
          for await (const delta of model.stream(turns, { ...o, onUsage: (u) => ((reported = u), o.onUsage?.(u)) })) {
            parts.push(delta);
            yield delta;
          }
        } finally {
          void settle();
        }
        // After the stream, off its path: counting (when the service sent no count) and the write.
        async function settle() {
          let queued = false;
          try {
            const counted = reported ?? {
              promptTokens: promptEstimate || (await promptTokens(name, turns)),
              completionTokens: (await tokenizerFor(name)).count(parts.join("")),
            };
            record(
              { ...base, prompt_tokens: counted.promptTokens, completion_tokens: counted.completionTokens, estimated: !reported },
              release,
              { replace: true, final: true },
            );
            queued = true;
          } catch (e) {
            log.error("could not count a model call's tokens", { chatId: tag!.chatId, error: e });
          } finally {
            if (!queued) release();
          }
        }
      },
    };
  }

  /**
   * Before a question is stored: its estimate (its tokens plus the reply reserve) is checked and
   * held until the reply's model call takes it over (`meter`, for the same chat) or `release` is called.
   */
  async function admitQuestion(userId: string, chatId: string, model: string, text: string): Promise<() => void> {
    if (!options.enabled || (await budgetOf(userId)) === null) return () => {};
    const tokens = (await promptTokens(model, [{ role: "user", content: text }])) + options.replyReserveTokens;
    const entry = { release: await admit(userId, tokens), tokens };
    const list = held.get(chatId) ?? [];
    list.push(entry);
    held.set(chatId, list);
    return () => {
      entry.release();
      const i = list.indexOf(entry);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0 && held.get(chatId) === list) held.delete(chatId);
    };
  }
  /** The oldest question estimate held for a chat, handed over to its reply's model call (which releases it). */
  function takeHeld(chatId: string) {
    const list = held.get(chatId);
    const entry = list?.shift();
    if (list && list.length === 0) held.delete(chatId);
    return entry;
  }

  return {
    meter,
    admit,
    admitQuestion,
    /** GET_USAGE (src/chat/usage-report.ts), with today's budget. */
    report: (userId: string, days: number) =>
      usageReport(store, userId, days, dayOf(now()), async () => (options.enabled ? await budgetOf(userId) : null)),
    budgetOf,
    drained,
  };
}
export type Usage = ReturnType<typeof createUsage>;

/**
 * A send checked against the budget before anything is stored: the question's estimate is held
 * until its reply's model call takes it over, or the send fails or needs no reply.
 */
export function budgeted<
  A extends { owner: string; chatId: string; content: string },
  C extends unknown[],
  R extends { reply?: Promise<unknown> },
>(usage: Usage, model: string, send: (o: A, ...rest: C) => Promise<R>) {
  return heldUntilReply<A, C, R>((o, ..._rest) => usage.admitQuestion(o.owner, o.chatId, model, o.content), send);
}
