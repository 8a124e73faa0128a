import type { Logger } from "../log";
import type { RedisConnection } from "./client";
import { keys } from "./keys";

// A user's exports and imports across replicas (src/http/throttle.ts keeps them per process): one at
// a time (a key holding the running one, a lease renewed while it runs, so a replica that dies frees
// it within a lease) and TRANSFERS_PER_MINUTE started (a token bucket on Redis's clock), checked
// and taken in one script.

// KEYS: slot, bucket. ARGV: member, leaseMs, perMinute. 0: taken; -1: busy; n > 0: wait n ms.
const TAKE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local cap = tonumber(ARGV[3])
local perMs = cap / 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[2], 'tokens', 'at')
local tokens = tonumber(b[1]) or cap
local at = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - at) * perMs)
if tokens < 1 then return math.ceil((1 - tokens) / perMs) end
redis.call('HSET', KEYS[2], 'tokens', tostring(tokens - 1), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[2], math.ceil(cap / perMs) + 1000)
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
  const held = new Map<string, string>(); // member -> slot key
  const renewer = setInterval(
    () => {
      for (const [member, key] of held) redis.cmd.eval(KEEP, 1, key, member, String(o.leaseMs)).catch(() => {});
    },
    Math.max(100, o.leaseMs / 3),
  );
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
      held.set(member, slot);
      return {
        release() {
          if (!held.delete(member)) return;
          redis.cmd.eval(KEEP, 1, slot, member, "0").catch(() => {});
        },
      };
    },
    close: () => clearInterval(renewer),
  };
}
