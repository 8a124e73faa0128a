import type { Logger } from "../log";
import type { RedisConnection } from "./client";
import { keys } from "./keys";
import { heldLeases } from "./leases";
import { refillBucket, saveBucket } from "./lua";

// A user's exports and imports across replicas (src/http/throttle.ts keeps them per process): one at
// a time (a key holding the running one, a lease renewed while it runs, so a replica that dies frees
// it within a lease) and TRANSFERS_PER_MINUTE started (a token bucket on Redis's clock), checked
// and taken in one script.

// KEYS: slot, bucket. ARGV: member, leaseMs, perMinute. 0: taken; -1: busy; n > 0: wait n ms.
const TAKE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local cap = tonumber(ARGV[3])
local perMs = cap / 60000
${refillBucket("KEYS[2]")}
if tokens < 1 then return math.ceil((1 - tokens) / perMs) end
${saveBucket("KEYS[2]", "tokens - 1")}
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 0`;
// KEYS: slot. ARGV: member, leaseMs (0: release).
const KEEP = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])`;

type Admission = { release: () => void } | { retryAfterS: number; reason: "busy" | "rate" };

/** The shared gate; while Redis does not answer, `fallback` (this process's own gate) decides. */
export function redisTransfers(
  redis: RedisConnection,
  o: { perMinute: number; leaseMs: number; replicaId: string; log: Logger },
  fallback: { admit(userId: string): Promise<Admission> },
) {
  const slots = heldLeases(o.leaseMs, {
    renew: (slot, member) => redis.cmd.eval(KEEP, 1, slot, member, String(o.leaseMs)),
    release: (slot, member) => redis.cmd.eval(KEEP, 1, slot, member, "0"),
  });
  return {
    async admit(userId: string): Promise<Admission> {
      const slot = keys.userTransfer(userId);
      const member = `${o.replicaId}:${crypto.randomUUID()}`;
      let got: number;
      try {
        got = Number(await redis.cmd.eval(TAKE, 2, slot, keys.userTransfers(userId), member, String(o.leaseMs), String(o.perMinute)));
      } catch (e) {
        o.log.warn("redis did not answer; counting this user's exports and imports in this replica alone", { error: e });
        return fallback.admit(userId);
      }
      if (got === -1) return { retryAfterS: 1, reason: "busy" };
      if (got > 0) return { retryAfterS: Math.max(1, Math.ceil(got / 1000)), reason: "rate" };
      return { release: slots.hold(slot, member) };
    },
    close: slots.close,
  };
}
