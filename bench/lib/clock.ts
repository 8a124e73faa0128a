// One clock for every bench process: wall-clock milliseconds with sub-millisecond resolution.
// All processes on this machine read the same realtime clock, so a time taken in one process can be
// compared with a time taken in another (children are also calibrated against the parent; see proc.ts).
export const now = (): number => performance.timeOrigin + performance.now();

export const sleep = (ms: number) => Bun.sleep(ms);

/** Rejects after `ms` with a message naming what was awaited: every wait in the bench is bounded. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
