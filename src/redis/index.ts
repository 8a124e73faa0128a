import type { Replies } from "../chat/pipeline/replies";
import type { Logger } from "../log";
import type { Metrics } from "../metrics";
import { redisBus } from "./bus";
import { connectRedis } from "./client";
import { redisUserSends } from "./user-sends";
import { redisLanes } from "./lanes";
import { redisUserGenerations } from "./user-generations";
import { redisReservations } from "./reservations";
import { redisTransfers } from "./transfers";
import type { Reservations } from "../chat/reservations";
import type { UserGenerations } from "../chat/user-generations";

export type SharedOptions = {
  url: string;
  cluster: boolean;
  replicaId: string;
  leaseMs: number;
  queueLimit: number;
  maxActive: number;
  modelCallsPerMinute: number;
};

/**
 * Multi-replica mode: the event bus, the chat lanes and the service-wide limits through Redis.
 * server.ts hands the parts to the chat service; /health reads `health()`.
 */
export function startSharedMode(o: SharedOptions, log: Logger, metrics: Metrics) {
  const redis = connectRedis({ url: o.url, cluster: o.cluster, log, name: o.replicaId });
  const bus = redisBus({
    redis,
    replicaId: o.replicaId,
    log,
    liveStreamTtlMs: o.leaseMs * 3,
    onMessage: (direction, lagMs) => {
      metrics.busMessages.inc({ direction });
      if (lagMs !== undefined) metrics.busLag.observe(lagMs / 1000);
    },
  });
  let lanes: ReturnType<typeof redisLanes> | undefined;
  let generations: ReturnType<typeof redisUserGenerations> | undefined;
  let reservations: ReturnType<typeof redisReservations> | undefined;
  let transfers: ReturnType<typeof redisTransfers> | undefined;
  return {
    bus,
    backfill: bus.backfill,
    sharedLanes: (local: Replies) => (lanes = redisLanes(local, { ...o, redis, bus, log })),
    /** Each user's sends per minute, counted across replicas. */
    userSends: (perMinute: number, fallback: Parameters<typeof redisUserSends>[2]) => redisUserSends(redis, perMinute, fallback, log),
    /** Each user's replies at once (MAX_GENERATIONS_PER_USER), counted across replicas. */
    userGenerations: (max: number, fallback: UserGenerations) =>
      (generations = redisUserGenerations(redis, { max, leaseMs: o.leaseMs, replicaId: o.replicaId, log }, fallback)),
    /** Each user's admitted and unrecorded tokens (budgets), seen by every replica. */
    reservations: (fallback: Reservations) =>
      (reservations = redisReservations(redis, { leaseMs: o.leaseMs, replicaId: o.replicaId, log }, fallback)),
    /** Each user's exports and imports, one at a time and a rate, across replicas. */
    transfers: (perMinute: number, fallback: Parameters<typeof redisTransfers>[2]) =>
      (transfers = redisTransfers(redis, { perMinute, leaseMs: o.leaseMs, replicaId: o.replicaId, log }, fallback)),
    /** Takes over the questions of replicas that died. */
    sweep: async () => lanes?.sweep(),
    /** `connected`: the bus has subscribed once since start-up; before that this replica is not ready. */
    async health() {
      const latency = await redis.ping();
      const connected = bus.connected();
      return latency === undefined
        ? { ok: false, mode: redis.mode, connected }
        : { ok: true, mode: redis.mode, connected, latency_ms: Math.round(latency * 100) / 100 };
    },
    async close() {
      lanes?.close();
      generations?.close();
      reservations?.close();
      transfers?.close();
      await redis.close();
    },
  };
}
export type SharedMode = ReturnType<typeof startSharedMode>;
