import type { Store } from "../store/store";

// GET_USAGE: a user's tokens per UTC day and model, from their usage records, and today's budget.

export type UsageReport = {
  days: { date: string; model: string; promptTokens: number; completionTokens: number; calls: number; estimated: number }[];
  today: { date: string; used: number; budget: number | null; resetsAt: string };
};

/** The last `days` days (today included) of `userId`'s records; `today` is the current UTC day. */
export async function usageReport(
  store: Store,
  userId: string,
  days: number,
  today: { start: string; date: string; resetsAt: string },
  budget: () => Promise<number | null>,
): Promise<UsageReport> {
  const since = new Date(Date.parse(today.start) - (days - 1) * 86_400_000).toISOString();
  const rows = new Map<string, UsageReport["days"][number]>();
  let used = 0;
  for (const r of await store.listUsage({ userId, since })) {
    const date = r.created_at.slice(0, 10);
    const key = `${date}\u0000${r.model}`;
    const row = rows.get(key) ?? { date, model: r.model, promptTokens: 0, completionTokens: 0, calls: 0, estimated: 0 };
    row.promptTokens += r.prompt_tokens;
    row.completionTokens += r.completion_tokens;
    row.calls += 1;
    if (r.estimated) row.estimated += 1;
    rows.set(key, row);
    if (r.created_at >= today.start) used += r.prompt_tokens + r.completion_tokens;
  }
  return {
    days: [...rows.values()].sort((a, b) => (a.date < b.date ? 1 : a.date > b.date ? -1 : a.model < b.model ? -1 : 1)),
    today: { date: today.date, used, budget: await budget(), resetsAt: today.resetsAt },
  };
}
