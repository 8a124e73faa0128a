import type { Logger } from "../log";
import type { RedisConnection } from "./client";
import { keys } from "./keys";
import { refillBucket, saveBucket } from "./lua";

// Each user's sends per minute as one token bucket in Redis, so a user's limit is the same however
// many sockets and replicas they use. Redis's own clock refills it (replicas' clocks may differ).
const TAKE = `
local cap = tonumber(ARGV[1])
local perMs = tonumber(ARGV[2])
${refillBucket("KEYS[1]")}
local wait = -1
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / perMs) end
${saveBucket("KEYS[1]", "tokens")}
return wait
`;

type Admission = { ok: true } | { ok: false; retryAfterMs: number };

/** How long a send waits for the shared bucket before this replica counts it alone. */
const ANSWER_MS = 500;

/** The shared bucket; while Redis does not answer, `fallback` (this process's own buckets) decides. */
export function redisUserSends(redis: RedisConnection, perMinute: number, fallback: (userId: string) => Promise<Admission>, log: Logger) {
  const perMs = perMinute / 60_000;
  let warned = false;
  return async (userId: string): Promise<Admission> => {
    try {
      // A Redis that holds the answer must not hold the socket's frames: past ANSWER_MS, count here.
      const wait = Number(
        await Promise.race([
          redis.cmd.eval(TAKE, 1, keys.userSends(userId), String(perMinute), String(perMs)),
          Bun.sleep(ANSWER_MS).then(() => Promise.reject(new Error(`redis did not answer within ${ANSWER_MS} ms`))),
        ]),
      );
      warned = false;
      return wait < 0 ? { ok: true } : { ok: false, retryAfterMs: wait };
    } catch (e) {
      if (!warned) log.warn("redis did not answer; counting user sends in this replica alone", { error: e });
      warned = true;
      return fallback(userId);
    }
  };
}
