import type { RedisConnection } from "./client";
import { NOW_MS } from "./lua";

// What this replica holds in Redis under a lease: each is renewed every third of a lease until it is
// released, so a replica that dies stops renewing and what it held lapses within a lease.

/** A member of the key it is held under, renewed and released by the caller's commands. */
export function heldLeases(
  leaseMs: number,
  o: { renew(key: string, member: string): Promise<unknown>; release(key: string, member: string): Promise<unknown> },
) {
  const held = new Map<string, string>(); // member -> key
  const renewer = setInterval(
    () => {
      for (const [member, key] of held) o.renew(key, member).catch(() => {});
    },
    Math.max(100, leaseMs / 3),
  );
  return {
    /** Starts renewing; the returned release stops it and releases once (again does nothing). */
    hold(key: string, member: string): () => void {
      held.set(member, key);
      return () => {
        if (!held.delete(member)) return;
        o.release(key, member).catch(() => {});
      };
    },
    close: () => clearInterval(renewer),
  };
}

// KEYS: the sorted set. ARGV: member, leaseMs. A member that already lapsed is not brought back.
const RENEW_MEMBER = `
${NOW_MS}
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
end
return 1`;

/** Members of sorted sets scored by their lease's end on Redis's clock (the set expires after two leases idle). */
export function leasedMembers(redis: RedisConnection, leaseMs: number) {
  return heldLeases(leaseMs, {
    renew: (key, member) => redis.cmd.eval(RENEW_MEMBER, 1, key, member, String(leaseMs)),
    release: (key, member) => redis.cmd.zrem(key, member),
  });
}
