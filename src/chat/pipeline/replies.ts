import type { ToolCallEvent } from "../events";
import type { Turn } from "../../model/model";
import type { Message, MessageStatus } from "../../records";
import { ChatError } from "../errors";

// The replies this process generates, and the one owner of the rule "one reply per chat": each
// chat has a lane, a reply running and the questions waiting behind it, answered in order.
// Process-local on purpose: a stream lives where its model request lives.

export type Generation = {
  chatId: string;
  traceId: string;
  /** The question this reply answers. */
  questionId: string;
  /** The reply's created_at (set when it starts: after its question's). */
  createdAt: string;
  /** Every delta so far; chunk n (1-based) has seq n, so a client can resume after any seq. */
  chunks: string[];
  /** Tool calls so far (src/chat/tool-rounds.ts): started ones without `ok`, finished ones with their result. */
  toolCalls?: ToolCallEvent[];
  controller: AbortController;
  done: Promise<void>;
};

/** What became of a reply; `message` is the stored reply, absent when nothing could be stored. */
export type ReplyOutcome = {
  message?: Message;
  status?: MessageStatus;
  error?: { code: string; message: string };
};

/** Why a generation was cut short; carried as the AbortController's reason. */
export type StopReason = { stop: Extract<MessageStatus, "stopped" | "interrupted"> };
export const isStopReason = (r: unknown): r is StopReason => typeof r === "object" && r !== null && "stop" in r;

/** A question to answer, as plain data: any replica can run it (multi-replica lanes queue it in Redis). */
export type JobSpec = {
  /** The chat's owner: their settings shape the reply. */
  owner: string;
  chatId: string;
  traceId: string;
  question: Message;
  deviceId?: string;
  /** The device's own conversation, sent instead of the stored history. */
  context?: Turn[];
  /** The connection that asked, if any. */
  origin?: string;
  /** Its place in the lane when that is not the question's id (a regeneration: src/chat/branches.ts). */
  laneKey?: string;
  /** The chat is branched: the prompt is the question's path in the tree, not the stored order. */
  branched?: boolean;
};

/**
 * A place in a chat's lane, taken before the question is stored (so nothing is stored that the
 * lane cannot take) and given its work once it is.
 */
export type Ticket = {
  readonly chatId: string;
  readonly traceId: string;
  readonly questionId: string;
  /** Settles when the reply is stored (or was dropped). */
  readonly result: Promise<ReplyOutcome>;
};

type Entry = Ticket & {
  spec?: JobSpec;
  settle(r: ReplyOutcome | Promise<ReplyOutcome>): void;
};
type Lane = { running?: Generation; waiting: Entry[] };

export type Replies = ReturnType<typeof createReplies>;

/** `run` answers a job in a generation this module registered. */
export function createReplies({
  max,
  queueLimit,
  run,
}: {
  max: number;
  queueLimit: number;
  run: (spec: JobSpec, g: Generation) => Promise<ReplyOutcome>;
}) {
  const lanes = new Map<string, Lane>();
  // Every question waiting or being answered here, by chatId + "\n" + questionId.
  const answering = new Map<string, Entry>();
  const key = (chatId: string, questionId: string) => `${chatId}\n${questionId}`;
  // Shutdown: no new replies, and a way to wait until the last one is stored.
  let closed = false;
  let interrupt: StopReason | undefined;
  // Chats being deleted: a reply that would start in one of these is stopped at once.
  const cancelled = new Map<string, number>();
  const idleWaiters = new Set<() => void>();
  const settleIdle = () => {
    if (lanes.size > 0) return;
    for (const w of idleWaiters) w();
    idleWaiters.clear();
  };

  function pump(chatId: string) {
    const lane = lanes.get(chatId);
    if (!lane || lane.running) return;
    const head = lane.waiting[0];
    if (!head) {
      lanes.delete(chatId);
      return settleIdle();
    }
    if (!head.spec) return; // its question is still being stored
    lane.waiting.shift();
    const g: Generation = {
      chatId,
      traceId: head.traceId,
      questionId: head.questionId,
      createdAt: new Date().toISOString(),
      chunks: [],
      controller: new AbortController(),
      done: Promise.resolve(),
    };
    lane.running = g;
    if (interrupt) g.controller.abort(interrupt);
    if ((cancelled.get(chatId) ?? 0) > Date.now()) g.controller.abort({ stop: "stopped" } satisfies StopReason);
    const result = run(head.spec, g).finally(() => {
      lane.running = undefined;
      answering.delete(key(chatId, head.questionId));
      pump(chatId);
    });
    g.done = result.then(
      () => {},
      () => {},
    );
    head.settle(result);
  }

  function drop(e: Entry, outcome: ReplyOutcome) {
    const lane = lanes.get(e.chatId);
    if (lane) lane.waiting = lane.waiting.filter((w) => w !== e);
    answering.delete(key(e.chatId, e.questionId));
    e.settle(outcome);
    pump(e.chatId);
  }

  return {
    /** The reply running in a chat, if any. */
    get: (chatId: string) => lanes.get(chatId)?.running,
    byTrace(traceId: string) {
      for (const lane of lanes.values()) if (lane.running?.traceId === traceId) return lane.running;
      return undefined;
    },
    /** Chats with a reply running or waiting. */
    get size() {
      return lanes.size;
    },
    /** The reply to that question while it waits or is being answered here. */
    pending: (chatId: string, questionId: string) => answering.get(key(chatId, questionId))?.result,

    /**
     * Takes a place in the chat's lane for a question, or says why not: "duplicate" when that
     * question is already waiting or being answered; SHUTTING_DOWN, TOO_MANY_GENERATIONS (the
     * server's cap, for a chat with nothing running) or QUEUE_FULL (the chat's lane is full).
     * Synchronous, so two sends of one id cannot both take a place.
     */
    admit(chatId: string, questionId: string, o: { traceId?: string; admitted?: boolean } = {}): Ticket | "duplicate" {
      if (closed && !o.admitted)
        throw new ChatError("SHUTTING_DOWN", "the server is shutting down; send again shortly", { retryAfterMs: 2000 });
      if (answering.has(key(chatId, questionId))) return "duplicate";
      let lane = lanes.get(chatId);
      // `admitted`: a job the shared lanes already let in (the limits were checked service-wide).
      if (!o.admitted && !lane && lanes.size >= max) {
        throw new ChatError("TOO_MANY_GENERATIONS", "the server is generating as many replies as it allows; try again shortly", {
          retryAfterMs: 1000,
        });
      }
      if (!o.admitted && lane && lane.waiting.length >= queueLimit) {
        throw new ChatError("QUEUE_FULL", `at most ${queueLimit} messages may wait for a reply in one chat; wait for the current reply`, {
          limit: queueLimit,
        });
      }
      let settle!: Entry["settle"];
      const result = new Promise<ReplyOutcome>((r) => (settle = r));
      const entry: Entry = { chatId, questionId, traceId: o.traceId ?? crypto.randomUUID(), result, settle };
      if (!lane) lanes.set(chatId, (lane = { waiting: [] }));
      lane.waiting.push(entry);
      answering.set(key(chatId, questionId), entry);
      return entry;
    },
    /** The question is stored: the ticket's reply runs when its turn comes. `queued`: others come first. */
    start(t: Ticket, spec: JobSpec): { queued: boolean } {
      const e = t as Entry;
      const lane = lanes.get(t.chatId);
      if (!lane?.waiting.includes(e)) return { queued: false }; // dropped meanwhile (chat deleted)
      const queued = lane.running !== undefined || lane.waiting[0] !== e;
      e.spec = spec;
      pump(t.chatId);
      return { queued };
    },
    /** Gives a ticket's place back (its question was not stored, or needs no answer). */
    release(t: Ticket) {
      drop(t as Entry, {});
    },

    /**
     * Deleting a chat: questions waiting in it are dropped, its running reply is stopped (its text
     * stored as "stopped"), and any reply that would start in it in the next `windowMs` is stopped
     * too. Resolves once none runs, so what it stored is there to be deleted.
     */
    async cancel(chatId: string, windowMs = 10_000) {
      cancelled.set(chatId, Date.now() + windowMs);
      setTimeout(() => cancelled.delete(chatId), windowMs).unref?.();
      for (let lane = lanes.get(chatId); lane; lane = lanes.get(chatId)) {
        for (const e of [...lane.waiting]) drop(e, { status: "stopped" });
        const g = lane.running;
        if (!g) break;
        g.controller.abort({ stop: "stopped" } satisfies StopReason);
        await g.done;
      }
    },

    /** The chat was not deleted after all (the store failed): replies may start in it again. */
    uncancel(chatId: string) {
      cancelled.delete(chatId);
    },
    /** Refuse new replies from now on (SHUTTING_DOWN). */
    close() {
      closed = true;
    },
    get closed() {
      return closed;
    },
    /** Resolves once no reply is waiting or running. */
    idle(): Promise<void> {
      return lanes.size === 0 ? Promise.resolve() : new Promise((r) => idleWaiters.add(r));
    },
    /** Cuts every running reply, and any that starts later, short with `reason`. */
    interruptAll(reason: StopReason) {
      interrupt = reason;
      for (const lane of lanes.values()) lane.running?.controller.abort(reason);
    },
  };
}
