import { ChatError } from "../errors";
import type { JobSpec, Replies, ReplyOutcome, Ticket } from "./replies";

/**
 * Who answers a chat's questions, and in what order: one reply at a time per chat, the rest wait.
 * One replica keeps its lanes in memory (`localLanes`); several share them through Redis
 * (src/redis/lanes.ts), so a question sent to any replica waits behind a reply running on another.
 */
export type Lanes = {
  /**
   * A place for a question, taken before it is stored (so nothing is stored that cannot be
   * answered): "duplicate" when that question is already waiting or being answered somewhere;
   * throws SHUTTING_DOWN, TOO_MANY_GENERATIONS or QUEUE_FULL.
   */
  admit(chatId: string, questionId: string): Promise<Ticket | "duplicate">;
  /** The question is stored: answer it now or after the replies before it. */
  start(ticket: Ticket, spec: JobSpec): Promise<{ queued: boolean }>;
  /** Gives the place back (the question was not stored, or needs no answer). */
  release(ticket: Ticket): void;
  /** The reply to a question waiting or being answered, if this replica can see it settle. */
  pending(chatId: string, questionId: string): Promise<ReplyOutcome> | undefined;
  /** Counts a model call outside a reply (a title, a reply's tool rounds) in MODEL_CALLS_PER_MINUTE; throws TOO_MANY_GENERATIONS past it. */
  admitModelCall?(): Promise<void>;
};

/**
 * Questions let in per minute, service-wide (0: no limit). `shared` counts this minute's questions
 * across replicas (Redis); without it, or while it fails, this process counts alone.
 */
export function modelCallLimit(perMinute: number, shared?: (minute: number) => Promise<number>) {
  let window = { minute: 0, count: 0 };
  const countHere = (minute: number) => {
    if (window.minute !== minute) window = { minute, count: 0 };
    return ++window.count;
  };
  return async function admitModelCall(): Promise<void> {
    if (!perMinute) return;
    const minute = Math.floor(Date.now() / 60_000);
    const count = shared ? await shared(minute).catch(() => countHere(minute)) : countHere(minute);
    if (count > perMinute) {
      throw new ChatError("TOO_MANY_GENERATIONS", "the service is at its model request limit; try again shortly", {
        retryAfterMs: (minute + 1) * 60_000 - Date.now(),
      });
    }
  };
}

/** One replica's lanes, in memory; `admitModelCall` is the service's model request limit. */
export function localLanes(replies: Replies, admitModelCall: () => Promise<void>): Lanes {
  return {
    async admit(chatId, questionId) {
      const t = replies.admit(chatId, questionId);
      if (t === "duplicate") return t;
      try {
        await admitModelCall();
      } catch (e) {
        replies.release(t);
        throw e;
      }
      return t;
    },
    start: async (ticket, spec) => replies.start(ticket, spec),
    release: (ticket) => replies.release(ticket),
    pending: (chatId, questionId) => replies.pending(chatId, questionId),
    admitModelCall,
  };
}
