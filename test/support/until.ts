// The one deadline helper for tests and bench (bench/lib/clock.ts re-exports `within`): every wait is
// bounded, and a missed deadline fails with what was awaited instead of hanging the run.

const describe = (what: string | (() => string)) => (typeof what === "string" ? what : what());

/** Resolves as `p` does, or rejects after `ms` naming what was awaited (`what` may be computed late, for detail). */
export async function within<T>(p: Promise<T>, ms: number, what: string | (() => string)): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${describe(what)}`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits for a condition that has no event of its own (an SDK's internal state, a status), checking
 * it every few milliseconds and failing at the deadline with what was last seen.
 */
export async function until<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    const value = await probe();
    if (value) return value;
    last = value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await Bun.sleep(20);
  }
}
