import { tooManyForUser, type UserGenerations } from "../chat/user-generations";
import type { Logger } from "../log";
import type { RedisConnection } from "./client";
import { keys } from "./keys";
import { leasedMembers } from "./leases";
import { NOW_MS } from "./lua";

// MAX_GENERATIONS_PER_USER across replicas: each of a user's replies is a member of one sorted set,
// scored by its lease's end (Redis's clock), renewed by the replica holding it. A replica that dies
// stops renewing and its members lapse, so a crash never holds a user's slot for longer than a lease.

// KEYS: the user's set. ARGV: max, member, leaseMs. 1: taken; 0: full.
const TAKE = `
${NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1`;

/** The shared count; while Redis does not answer, `fallback` (this process's own count) decides. */
export function redisUserGenerations(
  redis: RedisConnection,
  o: { max: number; leaseMs: number; replicaId: string; log: Logger },
  fallback: UserGenerations,
): UserGenerations & { close(): void } {
  const members = leasedMembers(redis, o.leaseMs);
  const take = async (userId: string) => {
    const key = keys.userGenerations(userId);
    const member = `${o.replicaId}:${crypto.randomUUID()}`;
    let got: number;
    try {
      got = Number(await redis.cmd.eval(TAKE, 1, key, String(o.max), member, String(o.leaseMs)));
    } catch (e) {
      o.log.warn("redis did not answer; counting this user's replies in this replica alone", { error: e });
      return fallback(userId);
    }
    if (got !== 1) throw tooManyForUser(o.max);
    return members.hold(key, member);
  };
  return Object.assign(take, { close: members.close });
}
