import type { Reservations } from "../chat/reservations";
import type { Logger } from "../log";
import type { RedisConnection } from "./client";
import { keys } from "./keys";
import { leasedMembers } from "./leases";
import { NOW_MS } from "./lua";

// A user's admitted and unrecorded tokens across replicas (src/chat/reservations.ts): one sorted set
// per user, a member per admitted call ("<replica>:<id>:<tokens>") scored by its lease's end on
// Redis's clock, renewed by the replica that holds it. The check and the reservation are one script,
// so two replicas admitting at once see each other. A replica that dies stops renewing: its
// reservations lapse after a lease (its calls died with it, and recorded whatever they recorded).

// KEYS: the user's set. ARGV: tokens, used, budget, member, leaseMs. 1: reserved; 0: over budget.
const TAKE = `
${NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  held = held + tonumber(string.match(m, ':(%d+)$'))
end
if tonumber(ARGV[2]) + held + tonumber(ARGV[1]) > tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]) * 2)
return 1`;

/** The shared reservations; while Redis does not answer, `fallback` (this process's own) decides. */
export function redisReservations(
  redis: RedisConnection,
  o: { leaseMs: number; replicaId: string; log: Logger },
  fallback: Reservations,
): Reservations & { close(): void } {
  const members = leasedMembers(redis, o.leaseMs);
  const take: Reservations = async (userId, n, used, budget) => {
    const key = keys.userReservations(userId);
    const member = `${o.replicaId}:${crypto.randomUUID()}:${Math.max(0, Math.round(n))}`;
    let got: number;
    try {
      got = Number(await redis.cmd.eval(TAKE, 1, key, String(Math.round(n)), String(used), String(budget), member, String(o.leaseMs)));
    } catch (e) {
      o.log.warn("redis did not answer; checking this budget against this replica's reservations alone", { error: e });
      return fallback(userId, n, used, budget);
    }
    if (got !== 1) return "full";
    return members.hold(key, member);
  };
  return Object.assign(take, { close: members.close });
}
