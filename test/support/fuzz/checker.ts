import * as v from "valibot";
import { ChatSchema, MessageSchema, type Chat } from "../../../src/records";
import type { Store } from "../../../src/store/store";
import { sameText, type FuzzFrame } from "./generators";
import type { FuzzReport } from "./report";
import { FUZZ_MODEL_TEXT } from "./target";

// The expected-answer checker: each answer against what its frame's generator predicted, and at the
// end the store against what the clients were told (the ledger).

/** What the fuzz clients learn about the chats they create, to check the store against at the end. */
export type Ledger = {
  chats: Map<
    string,
    {
      chat: Chat;
      name: string;
      deleted: boolean;
      sent: { id: string; content: string; traceId: string }[];
      /** Replies cut short by STOP_GENERATION: stored as "stopped" with a prefix of the text, or not at all if empty. */
      stopped: Set<string>;
    }
  >;
};

/** A frame as a violation message names it. */
export const describeFrame = (frame: FuzzFrame) =>
  `${frame.category} frame ${JSON.stringify(typeof frame.data === "string" ? frame.data.slice(0, 120) : `<${frame.bytes} binary bytes>`)}`;

/** Why `f` (raw text `data`) is not the answer `frame` expects, or undefined when it is. */
export function answerProblem(frame: FuzzFrame, f: Record<string, any>, data: string): string | undefined {
  const e = frame.expect;
  const what = describeFrame(frame);
  const got = data.slice(0, 240);
  const isError = f.type === "ERROR";
  if (e.kind === "close") return `${what}: expected close ${e.code}, got ${got}`;
  if (e.kind === "error") {
    if (!isError) return `${what}: expected an ERROR, got ${got}`;
    if (e.codes && !e.codes.includes(f.code)) return `${what}: expected ${e.codes.join("|")}, got ${got}`;
  } else if (e.kind === "ok") {
    if (isError ? !e.orCodes?.includes(f.code) : !e.replies.includes(f.type)) {
      return `${what}: expected ${[...e.replies, ...(e.orCodes ?? [])].join("|")}, got ${got}`;
    }
  } else if (!isError && !e.replies.includes(f.type)) {
    return `${what}: a mutation got an impossible success ${got}`;
  }
  if ("requestId" in e && e.requestId !== undefined) {
    if (e.requestId === null ? "requestId" in f : !sameText(f.requestId, e.requestId)) {
      return `${what}: requestId ${JSON.stringify(f.requestId)} where ${JSON.stringify(e.requestId)} was due; got ${got}`;
    }
  }
  return undefined;
}

const sameIgnoringLoneSurrogates = (a: string, b: string) => sameText(a, b);

/**
 * Everything in the store is well-formed, and is exactly what the clients were told: every chat
 * the ledger knows (and no other, besides the well-behaved client's), each accepted question with
 * its reply, deleted chats gone. Adds to `violations` and `knownIssues`; returns the counts.
 */
export async function checkStore(
  store: Store,
  o: { ledger: Ledger; goodIds: Set<string>; violations: string[]; knownIssues: FuzzReport["knownIssues"] },
): Promise<FuzzReport["store"]> {
  const { ledger, goodIds, violations, knownIssues } = o;
  const storeSummary = { chats: 0, messages: 0, fuzzChats: 0, fuzzChatsDeleted: 0, fuzzMessages: 0 };
  const seen = new Set<string>();
  let cursor: string | undefined;
  do {
    const page = await store.listChats("default", { limit: 200, cursor });
    cursor = page.cursor;
    for (const chat of page.items) {
      storeSummary.chats++;
      seen.add(chat.id);
      if (!v.is(ChatSchema, chat)) violations.push(`[store] invalid chat ${JSON.stringify(chat).slice(0, 200)}`);
      if (chat.updated_at < chat.created_at) violations.push(`[store] chat ${chat.id} updated before it was created`);
      const messages = await store.listMessages(chat.id, { limit: 10_000 });
      storeSummary.messages += messages.length;
      for (const m of messages) {
        if (!v.is(MessageSchema, m) || m.chat_id !== chat.id) violations.push(`[store] invalid message ${JSON.stringify(m).slice(0, 200)}`);
      }
      if (goodIds.has(chat.id)) continue;
      const entry = ledger.chats.get(chat.id);
      if (!entry) {
        violations.push(`[store] a chat nobody was told about: ${JSON.stringify(chat).slice(0, 200)}`);
        continue;
      }
      storeSummary.fuzzChats++;
      storeSummary.fuzzMessages += messages.length;
      if (entry.deleted) violations.push(`[store] chat ${chat.id} is still stored after CHAT_DELETED`);
      if (chat.created_at !== entry.chat.created_at) violations.push(`[store] chat ${chat.id} created_at changed`);
      if (chat.name !== entry.name) {
        if (sameIgnoringLoneSurrogates(chat.name, entry.name)) {
          knownIssues.loneSurrogateRoundTrip++;
          if (knownIssues.examples.length < 3)
            knownIssues.examples.push(`chat name told ${JSON.stringify(entry.name)}, stored ${JSON.stringify(chat.name)}`);
        } else
          violations.push(`[store] chat ${chat.id} name ${JSON.stringify(chat.name)}, clients were told ${JSON.stringify(entry.name)}`);
      }
      // Each accepted question once, in the order sent; each reply once, after its question (a
      // question sent while a reply streamed is stored at once and answered later, so replies need
      // not follow their question directly): whole and unmarked, or (if stopped) a non-empty prefix
      // marked "stopped" or nothing.
      const got = messages.map((m) => ({ id: m.id, role: m.role, content: m.content, status: m.status, parent_id: m.parent_id }));
      const problem = (() => {
        const questions = got.filter((m) => m.role === "user");
        if (questions.length !== entry.sent.length) return `${questions.length} questions stored for ${entry.sent.length} sent`;
        const at = new Map(got.map((m, i) => [m.id, i] as const));
        let expected = entry.sent.length;
        for (const [k, s] of entry.sent.entries()) {
          const u = questions[k]!;
          if (u.id !== s.id || u.status !== undefined) return `question ${s.id} missing or out of place`;
          if (u.content !== s.content) {
            if (!sameIgnoringLoneSurrogates(u.content, s.content)) return `question ${s.id} content changed`;
            knownIssues.loneSurrogateRoundTrip++;
          }
          const ai = at.get(s.traceId);
          const a = ai === undefined ? undefined : got[ai];
          if (entry.stopped.has(s.traceId)) {
            if (!a) continue; // stopped before any text: not stored
            if (a.role !== "assistant" || a.status !== "stopped" || !a.content || !FUZZ_MODEL_TEXT.startsWith(a.content))
              return `stopped reply ${s.traceId} stored as ${JSON.stringify(a)}`;
          } else if (a?.role !== "assistant" || a.status !== undefined || a.content !== FUZZ_MODEL_TEXT) {
            return `reply ${s.traceId} stored as ${JSON.stringify(a)}`;
          }
          if (a.parent_id !== s.id || ai! < at.get(s.id)!) return `reply ${s.traceId} does not follow its question ${s.id}`;
          expected++;
        }
        return expected === got.length ? undefined : `${got.length - expected} messages nobody sent`;
      })();
      if (problem) violations.push(`[store] chat ${chat.id}: ${problem}; stored ${JSON.stringify(got).slice(0, 400)}`);
    }
  } while (cursor);
  for (const [id, entry] of ledger.chats) {
    if (entry.deleted) {
      storeSummary.fuzzChatsDeleted++;
      if (seen.has(id)) continue; // reported above
      if ((await store.listMessages(id, { limit: 1 })).length) violations.push(`[store] deleted chat ${id} still has messages`);
    } else if (!seen.has(id)) violations.push(`[store] chat ${id} (NEW_CHAT was sent) is missing`);
  }
  for (const id of goodIds) if (!seen.has(id)) violations.push(`[store] the well-behaved chat ${id} is missing`);

  return storeSummary;
}
