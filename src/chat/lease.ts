import type { Message } from "../records";
import type { Bus, ChatEvent } from "./events";
import type { LiveReplies, LiveReply } from "./live";
import type { Generation } from "./pipeline/replies";
import type { Logger } from "../log";
import type { Store } from "../store/store";
import { finishedCalls } from "./tool-rounds";

// A reply's lease: the one place that says when a reply's process is alive, and what becomes of a
// reply whose process died. The generating process renews it two ways: its checkpoints in the store
// carry `lease.until`, and while it generates it is heard on the bus (every delta, and a heartbeat
// every third of a lease). Other replicas mirror the reply (src/chat/live.ts); a mirror not heard
// from for a whole lease, or a stored checkpoint whose lease ended, is an orphan: whichever replica
// finds it first stores its text as "interrupted" (a conditional write, so several finders store it
// once, and the longest text any of them saw wins) and ends its stream for every watcher.

/** A stored checkpoint whose generating process stopped renewing it (or never took a lease). */
export const lapsed = (m: Message, now = Date.now()) => m.status === "streaming" && (!m.lease || m.lease.until < now);

/** A stored reply a crash cut short: interrupted, or a checkpoint whose lease lapsed. */
export const cutShort = (m: Message, now = Date.now()) => m.status === "interrupted" || lapsed(m, now);

/**
 * A stored reply once it is settled: a checkpoint whose lease still runs (its process may be alive,
 * or died less than a lease ago) is read again until it is finished or cut short. Whoever takes a
 * question over after a crash (a device message's claim may lapse before the reply's lease) would
 * otherwise take a reply that will never end for one still being written.
 */
export async function settledReply(
  read: () => Promise<Message | undefined>,
  found: Message | undefined,
  pollMs = 250,
): Promise<Message | undefined> {
  let m = found;
  while (m?.status === "streaming" && !lapsed(m)) {
    // Read again when the lease would lapse, or sooner: a live process may finish it meanwhile.
    await Bun.sleep(Math.max(20, Math.min(pollMs, (m.lease?.until ?? 0) - Date.now() + 20)));
    m = await read();
  }
  return m;
}

/** How often the generating process says on the bus that it is alive. */
export const heartbeatEvery = (leaseMs: number) => Math.max(50, Math.floor(leaseMs / 3));

/** How often the orphan sweep runs. */
export const sweepEvery = (leaseMs: number) => Math.max(250, leaseMs / 2);

/**
 * What an orphan's text does to the stored record: written when nothing is stored, or over a lapsed
 * checkpoint (the longer text kept), or over a shorter interrupted one; never over a finished reply
 * nor a checkpoint whose lease still runs. `outcome` says which.
 */
type Outcome = "first" | "longer" | "alive" | "kept";
export function interruptedOver(current: Message | undefined, orphan: Message, now: number): { write?: Message; outcome: Outcome } {
  if (!current) return { write: { ...orphan, status: "interrupted" }, outcome: "first" };
  if (current.status === "streaming") {
    if (!lapsed(current, now)) return { outcome: "alive" };
    const { lease: _lease, ...rest } = current;
    const content = orphan.content.length > current.content.length ? orphan.content : current.content;
    return { write: { ...rest, content, status: "interrupted" }, outcome: "first" };
  }
  if (current.status === "interrupted" && orphan.content.length > current.content.length) {
    return { write: { ...current, content: orphan.content }, outcome: "longer" };
  }
  return { outcome: "kept" };
}

/** The longest run of chunks from seq 1 with no gap, from `a` and then `b`. */
function contiguous(a: string[], b: string[] = []): string[] {
  const out: string[] = [];
  for (let i = 0; ; i++) {
    const c = a[i] ?? b[i];
    if (c === undefined) return out;
    out.push(c);
  }
}

export type ReplyLeases = ReturnType<typeof replyLeases>;

export function replyLeases(o: {
  store: Store;
  bus: Bus;
  live: LiveReplies;
  log: Logger;
  leaseMs: number;
  checkpointMs: number;
  instanceId: string;
  /** The reply's chunks as the shared bus kept them (src/redis/bus.ts), when there is one. */
  backfill?: (chatId: string, traceId: string) => Promise<string[]>;
}) {
  const { store, bus, live, log, leaseMs } = o;
  const streamOf = (chatId: string, traceId: string) => (o.backfill ? o.backfill(chatId, traceId).catch(() => []) : Promise.resolve([]));
  const finalizing = new Map<string, Promise<void>>();

  /**
   * Stores what this replica (and the shared stream) saw of a mirror nobody renews, as interrupted,
   * and ends it for every watcher. The replica whose write comes first announces the end on the
   * bus; any other that saw more lengthens the stored text and tells replicas to read it again.
   */
  function finalizeMirror(r: LiveReply): Promise<void> {
    const running = finalizing.get(r.traceId);
    if (running) return running;
    const p = (async () => {
      const chunks = contiguous(r.chunks, await streamOf(r.chatId, r.traceId));
      const now = Date.now();
      const seen: { outcome: Outcome; current?: Message } = { outcome: "kept" };
      const orphan = r.questionId
        ? ({
            id: r.traceId,
            chat_id: r.chatId,
            role: "assistant",
            content: chunks.join(""),
            created_at: r.createdAt,
            parent_id: r.questionId,
            ...(r.deviceId ? { device_id: r.deviceId } : {}),
          } satisfies Message)
        : undefined;
      const written = await store.rewriteMessage(r.chatId, r.traceId, (m) => {
        // A mirror first seen mid-stream does not know its question: only a stored checkpoint is finalised.
        const d = orphan
          ? interruptedOver(m, orphan, now)
          : m
            ? interruptedOver(m, { ...m, content: "" }, now)
            : { outcome: "kept" as const };
        seen.outcome = d.outcome;
        seen.current = m;
        return d.write;
      });
      const { outcome } = seen;
      const stored = written ?? seen.current;
      if (outcome === "alive") return live.heard(r.traceId);
      if (outcome === "first") {
        log.info("finalised a reply whose replica stopped answering as interrupted", { chatId: r.chatId, traceId: r.traceId });
        bus.publish(endOf(r.chatId, r.traceId, chunks.length, stored));
        return;
      }
      if (outcome === "longer") bus.publish({ type: "messages_changed", chatId: r.chatId });
      // Someone else finalised it (or it finished and this replica missed its end): their end frame
      // is on its way; if it does not come, this replica's watchers get one of their own.
      if (!(await live.waitEnd(r.traceId, 2000))) bus.publishHere(endOf(r.chatId, r.traceId, chunks.length, stored));
    })()
      .catch((e) => log.warn("could not finalise an orphaned reply", { chatId: r.chatId, traceId: r.traceId, error: e }))
      .finally(() => finalizing.delete(r.traceId));
    finalizing.set(r.traceId, p);
    return p;
  }

  /** Stored checkpoints whose lease lapsed: finalised, lengthened from the shared stream, announced. */
  async function finalizeStored(now: number, chatId?: string): Promise<Message[]> {
    const stale = await store.finalizeStale(now, chatId);
    const out: Message[] = [];
    for (const m of stale) {
      const chunks = await streamOf(m.chat_id, m.id);
      let final = m;
      const text = contiguous(chunks);
      if (text.join("").length > m.content.length) {
        final =
          (await store
            .rewriteMessage(m.chat_id, m.id, (cur) => (cur ? interruptedOver(cur, { ...m, content: text.join("") }, now).write : undefined))
            .catch(() => undefined)) ?? m;
      }
      bus.publish(endOf(m.chat_id, m.id, text.length, final));
      out.push(final);
    }
    return out;
  }

  // Mirrors are judged from memory, often (a tenth of a lease): an orphan is found within about a
  // lease of its last sign of life, not a lease and a sweep period.
  const watcher = setInterval(
    () => {
      const silent = live.silent();
      if (silent.length > 0) void Promise.all(silent.map(finalizeMirror));
    },
    Math.max(100, leaseMs / 10),
  );
  watcher.unref?.();

  return {
    /** Stops judging mirrors (the chat service's close). */
    stop: () => clearInterval(watcher),
    /**
     * The sweep, on every replica every half lease: mirrors not heard from for a lease, then stored
     * checkpoints whose lease lapsed. Returns how many replies it finalised or looked at.
     */
    async sweep(): Promise<number> {
      const silent = live.silent();
      await Promise.all(silent.map(finalizeMirror));
      const stored = await finalizeStored(Date.now());
      if (stored.length > 0) log.info("finalised orphaned replies as interrupted", { count: stored.length });
      return silent.length + stored.length;
    },

    /**
     * Before a history page is read: the chat's mirror, if nobody renews it, is finalised first, and
     * stored checkpoints on the page whose lease lapsed are finalised and shown as the store returns
     * them. A dead reply is never shown as finished, nor as still streaming.
     */
    async settle(chatId: string): Promise<void> {
      const r = live.silentIn(chatId);
      if (r) await finalizeMirror(r);
    },
    async finalizeLapsed(chatId: string, messages: Message[], liveTrace?: string): Promise<Message[]> {
      const now = Date.now();
      if (!messages.some((m) => m.id !== liveTrace && lapsed(m, now))) return messages;
      const finalized = new Map((await finalizeStored(now, chatId)).map((m) => [m.id, m] as const));
      return messages.map((m) => finalized.get(m.id) ?? m);
    },

    /**
     * The generating process's side: checkpoints the reply's text every `checkpointMs` once it has
     * text, off the token path (one write in flight at a time; a failed one is retried at the next
     * tick), renewing the stored lease while the model is silent, and says on the bus that it is
     * alive every third of a lease. A process that dies stops both: its reply is then an orphan.
     */
    hold(g: Generation, base: Message) {
      let writing: Promise<void> | undefined;
      let savedSeq = 0;
      let renewBy = 0;
      let stopped = false;
      const tick = () => {
        const seq = g.chunks.length;
        if (writing || stopped || seq === 0 || (seq === savedSeq && Date.now() < renewBy)) return;
        const until = Date.now() + leaseMs;
        const calls = finishedCalls(g);
        const m: Message = {
          ...base,
          content: g.chunks.join(""),
          status: "streaming",
          lease: { owner: o.instanceId, until, seq },
          // A crash mid-tool leaves the calls that ended with the interrupted reply.
          ...(calls.length ? { tool_calls: calls } : {}),
        };
        writing = store
          .putMessage(m)
          .then(
            () => {
              savedSeq = seq;
              renewBy = until - leaseMs / 2;
            },
            (e) => log.debug("reply checkpoint failed", { chatId: g.chatId, traceId: g.traceId, error: e }),
          )
          .finally(() => (writing = undefined));
      };
      // Deltas are signs of life too, but a slow model may send one a minute: the heartbeat is
      // unconditional (one small message per reply every third of a lease), and renews the expiry of
      // the reply's shared stream (src/redis/bus.ts).
      const beat = () =>
        bus.publish({ type: "reply_alive", chatId: g.chatId, traceId: g.traceId, questionId: base.parent_id, seq: g.chunks.length });
      const timer = setInterval(tick, o.checkpointMs);
      const heart = setInterval(beat, heartbeatEvery(leaseMs));
      return {
        /** The last checkpoint lands before the final write, never after it. */
        async stop() {
          stopped = true;
          clearInterval(timer);
          await writing;
        },
        /** After the reply's end went out. */
        release: () => clearInterval(heart),
      };
    },
  };
}

const endOf = (chatId: string, traceId: string, seq: number, stored: Message | undefined) =>
  ({
    type: "reply_end",
    chatId,
    traceId,
    seq: seq + 1,
    ...(stored ? { message: stored, ...(stored.status ? { status: stored.status } : {}) } : { status: "interrupted" }),
  }) satisfies ChatEvent;
