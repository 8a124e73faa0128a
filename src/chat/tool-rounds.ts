import type { ModelTurn, StreamOptions, ToolCall } from "../model/model";
import type { ToolCallRecord } from "../records";
import type { Tool, ToolOutcome } from "../tools/tool";
import { shorten, type Toolbox } from "../tools/toolbox";
import type { ChatContext } from "./context";
import type { Lanes } from "./pipeline/lanes";
import { ChatError } from "./errors";
import type { ToolCallEvent } from "./events";
import { promptLimit } from "./pipeline/window";
import { tokenizerFor, TOKENS_PER_MESSAGE, REPLY_PRIMING_TOKENS } from "./tokenizer";
import type { Generation } from "./pipeline/replies";

// A reply with tools: the model streams text and may ask for calls; the calls of one round run in
// parallel, their results go back, and the model is asked again, at most TOOL_MAX_ROUNDS times,
// then once more with tool_choice "none" so it answers. Every call is announced to the chat's
// watchers when it starts and when it ends (each takes a `seq` among the reply's deltas).

/** What the chat service is given to run tools with (src/server.ts builds it). */
export type ToolParts = {
  toolbox: Toolbox;
  maxRounds: number;
  /** Each model request after the first counts against the user's sends (false: refused). */
  userRound?: (owner: string) => Promise<boolean>;
};

/** What the rounds use: the tools, the model, the bus, the context window, the service's model-call limit. */
export type RoundsParts = Pick<ChatContext, "tools" | "model" | "bus" | "options"> & { lanes: Pick<Lanes, "admitModelCall"> };

/** Whose reply it is, for the tools: the owner's time zone and what they turned off. */
export type ToolPrefs = { owner: string; timeZone?: string; toolsOff?: string[] };

/** A result as clients and the stored reply show it (the model saw up to TOOL_RESULT_MAX_CHARS). */
const DISPLAY_CHARS = 1_000;
/** Arguments as stored and shown. */
const ARGUMENTS_CHARS = 2_000;
/** Calls run in one round; more get an error result (a stored reply stays well under a Cosmos item's 2 MB). */
const MAX_CALLS_PER_ROUND = 16;
/** A tool result is never cut below this to make room in the context window. */
const MIN_RESULT_CHARS = 200;

export type ToolRoundsRun = {
  turns: ModelTurn[];
  options: Omit<StreamOptions, "tools" | "onToolCalls" | "toolChoice">;
  prefs?: ToolPrefs;
  /** Tells the idle watchdog the reply is waiting on tools, not on the model. */
  busy(waiting: boolean): void;
};

/** The finished calls of a reply, as stored with it. */
export const finishedCalls = (g: Pick<Generation, "toolCalls">): ToolCallRecord[] =>
  (g.toolCalls ?? []).filter((c): c is ToolCallRecord => c.ok !== undefined);

/** The reply's text deltas, over as many model requests as its tool rounds need. */
export async function* replyRounds(ctx: RoundsParts, g: Generation, r: ToolRoundsRun): AsyncGenerator<string> {
  const parts = ctx.tools;
  const offered = parts && r.prefs && parts.maxRounds > 0 ? parts.toolbox.available({ toolsOff: r.prefs.toolsOff }) : [];
  if (!parts || !r.prefs || offered.length === 0) {
    yield* ctx.model.stream(r.turns, r.options);
    return;
  }
  const prefs = r.prefs;
  const specs = offered.map(({ name, description, parameters }) => ({ name, description, parameters }));
  let turns = r.turns;
  const history = { from: 1, to: r.turns.length - 1 }; // turns[from, to) may be dropped to make room
  for (let round = 0; ; round++) {
    const last = round >= parts.maxRounds;
    let calls: ToolCall[] = [];
    let text = "";
    for await (const delta of ctx.model.stream(turns, {
      ...r.options,
      tools: specs,
      ...(last ? { toolChoice: "none" as const } : {}),
      onToolCalls: (c) => (calls = c),
    })) {
      text += delta;
      yield delta;
    }
    // Asked to answer without tools, a model that asks anyway has answered with what it wrote.
    if (calls.length === 0 || last) return;
    const outcomes = await runRound(ctx, g, parts.toolbox, offered, calls, prefs, r);
    turns = [
      ...turns,
      { role: "assistant", content: text, tool_calls: calls },
      ...outcomes.map((o) => ({ role: "tool" as const, tool_call_id: o.id, content: o.result })),
    ];
    turns = await fitWindow(ctx, turns, history, specs, r.options.model);
    // The next request is another model call: the service's limit and the user's sends count it.
    await ctx.lanes.admitModelCall?.();
    if (parts.userRound && !(await parts.userRound(prefs.owner))) {
      throw new ChatError("TOO_MANY_GENERATIONS", "this user is at their request limit: the reply stops after its tool calls");
    }
  }
}

/** One round's calls, in parallel; each announced as it starts and ends. A STOP ends every call still running. */
async function runRound(
  ctx: RoundsParts,
  g: Generation,
  toolbox: Toolbox,
  tools: Tool[],
  calls: ToolCall[],
  prefs: ToolPrefs,
  r: ToolRoundsRun,
): Promise<ToolOutcome[]> {
  const timeZone = prefs.timeZone ?? "UTC";
  for (const c of calls) announce(ctx, g, { id: c.id, name: c.name, arguments: clip(c.arguments) });
  r.busy(true);
  try {
    const settled = await Promise.allSettled(
      calls.map(async (c, i) => {
        // Every call needs a result, but a round runs at most MAX_CALLS_PER_ROUND of them.
        const o =
          i < MAX_CALLS_PER_ROUND ? await toolbox.run(c, tools, { signal: g.controller.signal, timeZone, chatId: g.chatId }) : tooMany(c);
        announce(ctx, g, display(o));
        return o;
      }),
    );
    if (g.controller.signal.aborted) {
      for (const [i, s] of settled.entries()) {
        if (s.status === "rejected") {
          const c = calls[i]!;
          announce(ctx, g, {
            id: c.id,
            name: c.name,
            arguments: clip(c.arguments),
            ok: false,
            result: "cancelled",
            error: "cancelled",
            ms: 0,
          });
        }
      }
      throw g.controller.signal.reason;
    }
    // toolbox.run resolves for everything but an abort.
    return settled.map((s) => (s as PromiseFulfilledResult<ToolOutcome>).value);
  } finally {
    r.busy(false);
  }
}

const display = (o: ToolOutcome): ToolCallEvent => ({ ...o, arguments: clip(o.arguments), result: shorten(o.result, DISPLAY_CHARS) });
/** Arguments as stored and shown: a model's runaway arguments must not fill a stored reply. */
const clip = (args: string) => shorten(args, ARGUMENTS_CHARS);

const tooMany = (c: ToolCall): ToolOutcome => ({
  id: c.id,
  name: c.name,
  arguments: c.arguments,
  ok: false,
  result: `Error: at most ${MAX_CALLS_PER_ROUND} tool calls run in one round; call this one again in the next round if it is still needed.`,
  error: "failed",
  ms: 0,
});

/** A call's start or end, as a chunk of the reply (empty text, its own seq) and an event for every replica. */
function announce(ctx: RoundsParts, g: Generation, call: ToolCallEvent) {
  g.chunks.push("");
  const calls = (g.toolCalls ??= []);
  const i = calls.findIndex((c) => c.id === call.id);
  if (i >= 0) calls[i] = call;
  else calls.push(call);
  ctx.bus.publish({ type: "reply_tool", chatId: g.chatId, traceId: g.traceId, seq: g.chunks.length, call });
}

/**
 * Tool results count in the context window: the oldest history turns are dropped first (never the
 * system prompt or the question), then the longest results are cut, with a note, down to a floor.
 */
async function fitWindow(
  ctx: RoundsParts,
  turns: ModelTurn[],
  history: { from: number; to: number },
  specs: object[],
  model: string | undefined,
): Promise<ModelTurn[]> {
  const tok = await tokenizerFor(model ?? ctx.model.name);
  const limit = promptLimit(ctx.options.context);
  const fixed = REPLY_PRIMING_TOKENS + tok.count(JSON.stringify(specs));
  const cost = (t: ModelTurn) =>
    TOKENS_PER_MESSAGE + tok.count(t.content) + ("tool_calls" in t ? tok.count(JSON.stringify(t.tool_calls)) : 0);
  const out = [...turns];
  let used = fixed + out.reduce((n, t) => n + cost(t), 0);
  while (used > limit && history.to > history.from) {
    used -= cost(out[history.from]!);
    out.splice(history.from, 1);
    history.to--;
  }
  while (used > limit) {
    const i = longestResult(out);
    if (i < 0) break;
    const t = out[i] as Extract<ModelTurn, { role: "tool" }>;
    const keep = Math.max(MIN_RESULT_CHARS, Math.floor(t.content.length / 2));
    if (keep >= t.content.length) break;
    const cut = { ...t, content: cutForWindow(t.content, keep) };
    used += cost(cut) - cost(t);
    out[i] = cut;
  }
  return out;
}

function longestResult(turns: ModelTurn[]): number {
  let best = -1;
  for (let i = 0; i < turns.length; i++) {
    const t = turns[i]!;
    if (t.role === "tool" && t.content.length > MIN_RESULT_CHARS && (best < 0 || t.content.length > turns[best]!.content.length)) best = i;
  }
  return best;
}

const cutForWindow = (text: string, keep: number) =>
  `${text.slice(0, keep)}\n[result shortened to fit the model's context window: ${keep} of ${text.length} characters shown]`;
