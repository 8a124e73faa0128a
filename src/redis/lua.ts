// Pieces of the Lua scripts several of our Redis modules run. Time is Redis's own (replicas' clocks
// may differ), read inside the script so the check and the write see the same instant.

/** Sets the local `now`: Redis's clock in milliseconds. */
export const NOW_MS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/**
 * A token bucket in the hash at `key`, refilled up to `cap` at `perMs` tokens a millisecond since it
 * was last saved (both locals must be set before): sets the locals `now` and `tokens`.
 */
export const refillBucket = (key: string) => `${NOW_MS}
local b = redis.call('HMGET', ${key}, 'tokens', 'at')
local tokens = tonumber(b[1]) or cap
local at = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - at) * perMs)`;

/** Saves the bucket at `key` with `tokens` left as of `now`, kept until it would be full again (and a second). */
export const saveBucket = (key: string, tokens: string) => `redis.call('HSET', ${key}, 'tokens', tostring(${tokens}), 'at', tostring(now))
redis.call('PEXPIRE', ${key}, math.ceil(cap / perMs) + 1000)`;
