import type { Bus } from "../chat/events";
import { ChatError } from "../chat/errors";
import { localLanes, modelCallLimit, type Lanes } from "../chat/pipeline/lanes";
import type { JobSpec, Replies, ReplyOutcome, Ticket } from "../chat/pipeline/replies";
import type { Logger } from "../log";
import type { RedisConnection } from "./client";
import { keys } from "./keys";

// One reply per chat across replicas. A chat's lane is a Redis key naming the replica that answers
// its questions (a lease, renewed while it works); questions asked anywhere while the lane is held
// wait in a Redis list and the lane's holder answers them in order. A replica that dies stops
// renewing: another one takes the lane and the questions waiting in it over (the takeover sweep).

// KEYS: lane, queue. ARGV: replica, leaseMs, job.
const ACQUIRE_OR_ENQUEUE = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'run' end
redis.call('RPUSH', KEYS[2], ARGV[3])
return 'queued'`;
// KEYS: lane, queue. ARGV: replica, leaseMs. The next job, or the lane given up when none waits.
const NEXT_OR_RELEASE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local job = redis.call('LPOP', KEYS[2])
if job then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return job end
redis.call('DEL', KEYS[1])
return false`;
// KEYS: lane, queue. ARGV: replica, leaseMs. A waiting job whose lane nobody holds.
const CLAIM_ORPHAN = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 'busy' end
local job = redis.call('LPOP', KEYS[2])
if not job then return 'empty' end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return job`;
// KEYS: lane. ARGV: replica, leaseMs.
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;

type RemoteTicket = Ticket & { settle(r: ReplyOutcome): void };

/** Redis not answering (as opposed to a refusal we decided). */
const unreachable = (e: unknown) => !(e instanceof ChatError);

export function redisLanes(
  local: Replies,
  o: {
    redis: RedisConnection;
    bus: Bus;
    replicaId: string;
    log: Logger;
    leaseMs: number;
    queueLimit: number;
    maxActive: number;
    modelCallsPerMinute: number;
  },
): Lanes & { sweep(): Promise<void>; close(): void } {
  const { cmd } = o.redis;
  const owned = new Set<string>();
  // Questions answered elsewhere (or later here), settled by their reply's end event.
  const awaiting = new Map<string, RemoteTicket>();
  // A question mark lives while the replica that set it waits for the answer (renewed below); if
  // that replica dies, it lapses and a resend of the question is answered.
  const questionTtlMs = o.leaseMs * 2;
  const marks = new Set<string>();

  const unsubscribe = o.bus.subscribe((e) => {
    if (e.type === "reply_end") {
      const t = awaiting.get(e.traceId);
      if (!t) return;
      awaiting.delete(e.traceId);
      t.settle({
        ...(e.message ? { message: e.message } : {}),
        ...(e.status ? { status: e.status } : {}),
        ...(e.error ? { error: e.error } : {}),
      });
    } else if (e.type === "chat_deleted") {
      // Questions still waiting in a deleted chat are never answered.
      cmd.del(keys.queue(e.chatId)).catch(() => {});
      for (const t of awaiting.values()) if (t.chatId === e.chatId) awaiting.delete(t.traceId), t.settle({ status: "stopped" });
    }
  });

  const renewer = setInterval(
    () => {
      for (const k of marks) cmd.pexpire(k, questionTtlMs).catch(() => {});
      for (const chatId of owned) {
        cmd.eval(RENEW, 1, keys.lane(chatId), o.replicaId, String(o.leaseMs)).catch(() => {});
        cmd.zadd(keys.active, String(Date.now() + o.leaseMs), chatId).catch(() => {});
      }
    },
    Math.max(100, o.leaseMs / 3),
  );

  /** Runs a job here, then the next one waiting in the lane, until none waits. */
  function runHere(spec: JobSpec): Promise<ReplyOutcome> {
    owned.add(spec.chatId);
    const t = local.admit(spec.chatId, spec.laneKey ?? spec.question.id, { traceId: spec.traceId, admitted: true });
    if (t === "duplicate") return local.pending(spec.chatId, spec.laneKey ?? spec.question.id) ?? Promise.resolve({});
    local.start(t, spec);
    void t.result.then(() => next(spec.chatId));
    return t.result;
  }

  async function next(chatId: string) {
    try {
      const job = (await cmd.eval(NEXT_OR_RELEASE, 2, keys.lane(chatId), keys.queue(chatId), o.replicaId, String(o.leaseMs))) as
        | string
        | null;
      if (job) return void runHere(JSON.parse(job) as JobSpec);
      owned.delete(chatId);
      await cmd.zrem(keys.active, chatId);
    } catch (e) {
      // Redis is down: the lease lapses and whoever sweeps first after it is back goes on.
      owned.delete(chatId);
      o.log.warn("could not hand a chat's lane on", { chatId, error: e });
    }
  }

  // One limit for shared and fallback admission: counted in Redis, or here while it is down.
  const admitModelCall = modelCallLimit(o.modelCallsPerMinute, async (minute) => {
    const k = keys.modelCalls(minute);
    const count = await cmd.incr(k);
    if (count === 1) await cmd.expire(k, 120);
    return count;
  });

  function unmark(chatId: string, questionId: string) {
    const mark = keys.question(chatId, questionId);
    marks.delete(mark);
    cmd.del(mark).catch(() => {});
  }

  // While Redis is down each replica answers its own sockets' questions in its own lanes.
  const localTickets = new WeakSet<Ticket>();
  const fallback = localLanes(local, admitModelCall);
  async function admitLocally(chatId: string, questionId: string) {
    const t = await fallback.admit(chatId, questionId);
    if (t !== "duplicate") localTickets.add(t);
    return t;
  }

  async function admitShared(chatId: string, questionId: string): Promise<Ticket | "duplicate"> {
    const [waiting, lane, active] = await Promise.all([
      cmd.llen(keys.queue(chatId)),
      cmd.exists(keys.lane(chatId)),
      cmd.zcount(keys.active, String(Date.now()), "+inf"),
    ]);
    if (!lane && active >= o.maxActive) {
      throw new ChatError("TOO_MANY_GENERATIONS", "the service is generating as many replies as it allows; try again shortly", {
        retryAfterMs: 1000,
      });
    }
    if (waiting >= o.queueLimit) {
      throw new ChatError("QUEUE_FULL", `at most ${o.queueLimit} messages may wait for a reply in one chat; wait for the current reply`, {
        limit: o.queueLimit,
      });
    }
    // One replica answers a question: the first to mark it.
    const mark = keys.question(chatId, questionId);
    if (!(await cmd.set(mark, o.replicaId, "PX", questionTtlMs, "NX"))) return "duplicate";
    marks.add(mark);
    await admitModelCall().catch(async (e) => {
      marks.delete(mark);
      await cmd.del(mark).catch(() => {});
      throw e;
    });
    let settle!: (r: ReplyOutcome) => void;
    const result = new Promise<ReplyOutcome>((r) => (settle = r));
    const ticket: RemoteTicket = { chatId, questionId, traceId: crypto.randomUUID(), result, settle };
    return ticket;
  }

  return {
    async admit(chatId, questionId) {
      if (local.closed) throw new ChatError("SHUTTING_DOWN", "the server is shutting down; send again shortly", { retryAfterMs: 2000 });
      if (local.pending(chatId, questionId)) return "duplicate";
      if (!o.redis.up()) return admitLocally(chatId, questionId);
      try {
        return await admitShared(chatId, questionId);
      } catch (e) {
        if (!unreachable(e)) throw e;
        o.log.warn("redis did not answer; answering this question in this replica's own lane", { chatId, error: e });
        return admitLocally(chatId, questionId);
      }
    },

    async start(ticket, spec) {
      if (localTickets.has(ticket)) return local.start(ticket, spec);
      const t = ticket as RemoteTicket;
      let got: unknown;
      try {
        got = await cmd.eval(
          ACQUIRE_OR_ENQUEUE,
          2,
          keys.lane(spec.chatId),
          keys.queue(spec.chatId),
          o.replicaId,
          String(o.leaseMs),
          JSON.stringify(spec),
        );
      } catch (e) {
        // Redis went away after the question was stored: answer it here rather than not at all.
        o.log.warn("redis did not answer; answering this question in this replica's own lane", { chatId: spec.chatId, error: e });
        const lt = local.admit(spec.chatId, spec.laneKey ?? spec.question.id, { traceId: spec.traceId, admitted: true });
        if (lt === "duplicate") return { queued: false };
        void lt.result.then(t.settle);
        return local.start(lt, spec);
      }
      void t.result.finally(() => unmark(ticket.chatId, ticket.questionId));
      if (got === "run") {
        await cmd.zadd(keys.active, String(Date.now() + o.leaseMs), spec.chatId);
        void runHere(spec).then(t.settle);
        return { queued: false };
      }
      awaiting.set(spec.traceId, t);
      await cmd.sadd(keys.queued, spec.chatId);
      return { queued: true };
    },

    release(ticket) {
      if (localTickets.has(ticket)) return local.release(ticket);
      unmark(ticket.chatId, ticket.questionId);
      (ticket as RemoteTicket).settle({});
    },

    pending(chatId, questionId) {
      return (
        local.pending(chatId, questionId) ?? [...awaiting.values()].find((t) => t.chatId === chatId && t.questionId === questionId)?.result
      );
    },

    admitModelCall,

    /** Questions waiting in a lane that nobody holds (its replica died): take them over. */
    async sweep() {
      const chats = await cmd.smembers(keys.queued);
      for (const chatId of chats) {
        const got = (await cmd.eval(CLAIM_ORPHAN, 2, keys.lane(chatId), keys.queue(chatId), o.replicaId, String(o.leaseMs))) as string;
        if (got === "empty") await cmd.srem(keys.queued, chatId);
        else if (got !== "busy") {
          o.log.info("took over a chat whose replica stopped answering", { chatId });
          await cmd.zadd(keys.active, String(Date.now() + o.leaseMs), chatId);
          void runHere(JSON.parse(got) as JobSpec);
        }
      }
      await cmd.zremrangebyscore(keys.active, "-inf", String(Date.now()));
    },

    close() {
      clearInterval(renewer);
      unsubscribe();
    },
  };
}
