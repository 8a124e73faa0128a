export type Backoff = { minMs: number; maxMs: number; factor: number };

export const DEFAULT_BACKOFF: Backoff = { minMs: 250, maxMs: 15_000, factor: 2 };

/**
 * The wait before reconnect attempt `attempt` (0 = the first after a drop): exponential up to `maxMs`,
 * then "equal jitter" (half fixed, half random) so clients dropped together do not come back together.
 */
export function backoffDelay(attempt: number, b: Backoff, random: () => number = Math.random): number {
  const ceiling = Math.min(b.maxMs, b.minMs * b.factor ** Math.max(0, attempt));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
