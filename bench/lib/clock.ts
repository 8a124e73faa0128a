// One clock for every bench process: wall-clock milliseconds with sub-millisecond resolution.
// All processes on this machine read the same realtime clock, so a time taken in one process can be
// compared with a time taken in another (children are also calibrated against the parent; see proc.ts).
export const now = (): number => performance.timeOrigin + performance.now();

export const sleep = (ms: number) => Bun.sleep(ms);

/** Every wait in the bench is bounded, with the tests' own deadline helper. */
export { until, within } from "../../test/support/until";
