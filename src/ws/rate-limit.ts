/** A token bucket: `burst` tokens, refilled at `perSecond`. Pure, so it is tested without a clock. */
export function tokenBucket({ perSecond, burst }: { perSecond: number; burst: number }) {
  let tokens = burst;
  let last = -1;
  return function take(nowMs: number): { ok: true } | { ok: false; retryAfterMs: number } {
    if (last >= 0) tokens = Math.min(burst, tokens + ((nowMs - last) / 1000) * perSecond);
    last = nowMs;
    if (tokens >= 1) {
      tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterMs: Math.ceil(((1 - tokens) / perSecond) * 1000) };
  };
}
export type TokenBucket = ReturnType<typeof tokenBucket>;
