import { readFileSync } from "node:fs";

// How many WebSockets this process takes. Each is a file descriptor: at the process's open-file
// limit accept() fails, Bun retries it in a busy loop (100% CPU) and even /health/live times out.
// So upgrades are refused well before that, leaving descriptors for the store, the model, the
// listener and plain HTTP requests such as the health probes.

/** Where the open-file limit cannot be read (not Linux) or is unlimited. */
export const FALLBACK_MAX_CONNECTIONS = 10_000;

/** The soft "Max open files" limit from /proc/self/limits; undefined when unreadable or unlimited. */
export function openFileLimit(limitsText?: string): number | undefined {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/limits", "utf8");
    } catch {
      return undefined;
    }
  }
  const soft = text.match(/^Max open files\s+(\S+)/m)?.[1];
  const n = soft === undefined ? NaN : Number(soft);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** MAX_CONNECTIONS when unset: the open-file limit less max(128, 10%) of it (at least 1). */
export function defaultMaxConnections(limit: number | undefined): number {
  if (limit === undefined) return FALLBACK_MAX_CONNECTIONS;
  return Math.max(1, limit - Math.max(128, Math.ceil(limit / 10)));
}

/** Sockets open now: in the whole process, and from one peer address. */
export type ConnectionLoad = { total(): number; from(address: string): number };
export type ConnectionCaps = { maxConnections: number; maxPerAddress: number };
export type Refusal = { status: 503 | 429; code: string; error: string; retryAfterS: number };

/** Why an upgrade from `address` must be refused, if it must. `maxPerAddress` 0 means no per-address cap. */
export function connectionRefusal(load: ConnectionLoad, address: string, caps: ConnectionCaps): Refusal | undefined {
  if (load.total() >= caps.maxConnections) {
    return {
      status: 503,
      code: "TOO_MANY_CONNECTIONS",
      error: "the server has as many connections as it takes; retry shortly",
      retryAfterS: 5,
    };
  }
  if (caps.maxPerAddress > 0 && load.from(address) >= caps.maxPerAddress) {
    return {
      status: 429,
      code: "TOO_MANY_CONNECTIONS_FROM_ADDRESS",
      error: `at most ${caps.maxPerAddress} connections from one address`,
      retryAfterS: 5,
    };
  }
  return undefined;
}
