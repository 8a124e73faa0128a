// Per-key bounds for HTTP work that costs the store or memory: failed sign-ins per address, and a
// user's exports and imports (one at a time, and a rate). Pure apart from Date.now(), which callers
// pass in, so the rules are tested without a clock. Per process: each replica bounds its own share.

import { boundedMap } from "../bounded";

/**
 * Keys remembered at most (an address sweep cannot grow the map without bound): the least recently
 * used go first, and a forgotten key's owner gets a fresh bucket, at worst.
 */
const MAX_KEYS = 10_000;

type Bucket = { tokens: number; last: number };

/** Token buckets by key: `burst` tokens each, refilled at `perSecond`. */
export function keyedBuckets({ perSecond, burst }: { perSecond: number; burst: number }) {
  const buckets = boundedMap<string, Bucket>(MAX_KEYS);
  function current(key: string, now: number): Bucket {
    let b = buckets.get(key);
    if (!b) {
      b = { tokens: burst, last: now };
      buckets.set(key, b);
    }
    b.tokens = Math.min(burst, b.tokens + ((now - b.last) / 1000) * perSecond);
    b.last = now;
    return b;
  }
  const wait = (b: Bucket) => Math.ceil(((1 - b.tokens) / perSecond) * 1000);
  return {
    /** Whether `key` has a token left, without taking it; else how long until it has. */
    check(key: string, now: number): { ok: true } | { ok: false; retryAfterMs: number } {
      const b = buckets.get(key) && current(key, now);
      return !b || b.tokens >= 1 ? { ok: true } : { ok: false, retryAfterMs: wait(b) };
    },
    /** Takes a token if there is one. */
    take(key: string, now: number): { ok: true } | { ok: false; retryAfterMs: number } {
      const b = current(key, now);
      if (b.tokens >= 1) {
        b.tokens -= 1;
        return { ok: true };
      }
      return { ok: false, retryAfterMs: wait(b) };
    },
  };
}

/**
 * The key an address is throttled under: an IPv4 address as is (an IPv4-mapped IPv6 one as its
 * IPv4), an IPv6 address by its /64, since one host is usually given a whole /64 to pick from.
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(":")) return address;
  const [head = "", tail = ""] = address.toLowerCase().split("%")[0]!.split("::");
  const left = head ? head.split(":") : [];
  const right = address.includes("::") ? (tail ? tail.split(":") : []) : [];
  const groups = address.includes("::") ? [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ""))
    .join(":")}::/64`;
}

export type SignInThrottle = ReturnType<typeof signInThrottle>;

/**
 * Failed sign-ins per address (an IPv6 one by its /64): `burst` failures, then one per `everyS` seconds. An address over it
 * is refused before its token is looked at (no store read, no authenticator log line), and the
 * refusals are logged as one line per `windowMs` (how many, from how many addresses).
 */
export function signInThrottle(o: {
  burst: number;
  everyS: number;
  windowMs?: number;
  onThrottled?: () => void;
  /** Once per window with a refusal: the address refused first, and what the previous window refused. */
  log: (summary: { address: string; previous: { refused: number; addresses: number } }) => void;
}) {
  const failures = keyedBuckets({ perSecond: 1 / o.everyS, burst: o.burst });
  const windowMs = o.windowMs ?? 60_000;
  let window = { start: -Infinity, refused: 0, addresses: new Set<string>() };
  return {
    /** Undefined when the address may try; else seconds to wait. */
    refused(address: string, now = Date.now()): number | undefined {
      const r = failures.check(addressKey(address), now);
      if (r.ok) return undefined;
      o.onThrottled?.();
      if (now - window.start >= windowMs) {
        o.log({ address, previous: { refused: window.refused, addresses: window.addresses.size } });
        window = { start: now, refused: 0, addresses: new Set() };
      }
      window.refused += 1;
      if (window.addresses.size < 1000) window.addresses.add(address);
      return Math.max(1, Math.ceil(r.retryAfterMs / 1000));
    },
    /** A sign-in from `address` failed. */
    failed(address: string, now = Date.now()) {
      failures.take(addressKey(address), now);
    },
  };
}

/** A slot for one export or import (release it once, when the work ends), or how long to wait. */
export type TransferAdmission = { release: () => void } | { retryAfterS: number; reason: "busy" | "rate" };
/** A user's exports and imports: in this process (`transferGate`) or across replicas (src/redis/transfers.ts). */
export type TransferGate = { admit(userId: string): Promise<TransferAdmission> };

/**
 * A user's exports and imports: at most `concurrent` at a time (an export counts until its download
 * ends or is cut), and `perMinute` started per minute with a burst of as many.
 */
export function transferGate(o: { concurrent: number; perMinute: number }): TransferGate {
  const running = new Map<string, number>();
  const starts = keyedBuckets({ perSecond: o.perMinute / 60, burst: o.perMinute });
  return {
    admit: async (userId) => admitNow(userId),
  };
  /** A release function (call it once, when the work ends), or how many seconds to wait. */
  function admitNow(userId: string): TransferAdmission {
    const now = Date.now();
    if ((running.get(userId) ?? 0) >= o.concurrent) return { retryAfterS: 1, reason: "busy" };
    const r = starts.take(userId, now);
    if (!r.ok) return { retryAfterS: Math.max(1, Math.ceil(r.retryAfterMs / 1000)), reason: "rate" };
    running.set(userId, (running.get(userId) ?? 0) + 1);
    let done = false;
    return {
      release() {
        if (done) return;
        done = true;
        const n = (running.get(userId) ?? 1) - 1;
        if (n <= 0) running.delete(userId);
        else running.set(userId, n);
      },
    };
  }
}
