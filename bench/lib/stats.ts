// Summaries of samples. Percentiles are nearest-rank on the sorted samples.

export type Summary = { n: number; mean: number; p50: number; p90: number; p99: number; max: number; min: number };

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export function summarize(samples: readonly number[]): Summary {
  const s = Float64Array.from(samples).sort();
  const arr = Array.from(s);
  let sum = 0;
  for (const x of arr) sum += x;
  return {
    n: arr.length,
    mean: arr.length ? sum / arr.length : Number.NaN,
    p50: percentile(arr, 50),
    p90: percentile(arr, 90),
    p99: percentile(arr, 99),
    max: arr.length ? arr[arr.length - 1]! : Number.NaN,
    min: arr.length ? arr[0]! : Number.NaN,
  };
}

export const round = (x: number, digits = 3) => (Number.isFinite(x) ? Math.round(x * 10 ** digits) / 10 ** digits : x);

/** Median of a few repeated figures (throughput of repeated rounds). */
export const median = (xs: readonly number[]) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );
