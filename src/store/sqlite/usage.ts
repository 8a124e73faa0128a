import type { Database } from "bun:sqlite";
import type { UsageRecord } from "../../records";
import type { UsageOps } from "../ops";
import type { Guard } from "./guard";

// Usage records and per-user token budgets (tables in schema.ts).

type Row = Omit<UsageRecord, "estimated"> & { estimated: number };

const COLUMNS = "id, user_id, chat_id, message_id, model, kind, prompt_tokens, completion_tokens, estimated, created_at";
const toRecord = (r: Row): UsageRecord => ({ ...r, estimated: r.estimated === 1 });
/** A record's parameters but its user and time (which an update in place keeps). */
const countParams = (r: UsageRecord) => ({
  $id: r.id,
  $chat_id: r.chat_id,
  $message_id: r.message_id,
  $model: r.model,
  $kind: r.kind,
  $prompt: r.prompt_tokens,
  $completion: r.completion_tokens,
  $estimated: r.estimated ? 1 : 0,
});

export function usageOps(db: Database, guard: Guard): UsageOps {
  const q = {
    // The id decides: a record written twice (a retry, another replica) is stored once.
    add: db.query(
      `INSERT INTO usage (${COLUMNS}) VALUES ($id, $user_id, $chat_id, $message_id, $model, $kind, $prompt, $completion, $estimated, $created_at)
       ON CONFLICT (id) DO NOTHING`,
    ),
    ofUser: db.query<Row, { $user: string; $since: string }>(
      `SELECT ${COLUMNS} FROM usage WHERE user_id = $user AND created_at >= $since ORDER BY created_at, id`,
    ),
    ofAll: db.query<Row, { $since: string }>(`SELECT ${COLUMNS} FROM usage WHERE created_at >= $since ORDER BY created_at, id`),
    used: db.query<{ n: number | null }, { $user: string; $since: string }>(
      "SELECT sum(prompt_tokens + completion_tokens) AS n FROM usage WHERE user_id = $user AND created_at >= $since",
    ),
    usedDays: db.query<{ n: number | null }, { $user: string; $day: string }>(
      "SELECT sum(tokens) AS n FROM usage_daily WHERE user_id = $user AND day >= $day",
    ),
    old: db.query<{ tokens: number; day: string; user_id: string; created_at: string }, { $id: string }>(
      "SELECT prompt_tokens + completion_tokens AS tokens, substr(created_at, 1, 10) AS day, user_id, created_at FROM usage WHERE id = $id",
    ),
    // The columns no index holds: a record's final counts over its estimate change only these.
    counts: db.query(
      `UPDATE usage SET chat_id = $chat_id, message_id = $message_id, model = $model, kind = $kind, prompt_tokens = $prompt,
       completion_tokens = $completion, estimated = $estimated WHERE id = $id`,
    ),
    drop: db.query("DELETE FROM usage WHERE id = $id"),
    addDaily: db.query(
      `INSERT INTO usage_daily (user_id, day, tokens) VALUES ($user, $day, $n)
       ON CONFLICT (user_id, day) DO UPDATE SET tokens = tokens + excluded.tokens`,
    ),
    limit: db.query<{ tokens_per_day: number | null }, { $user: string }>("SELECT tokens_per_day FROM user_limits WHERE user_id = $user"),
    setLimit: db.query(
      "INSERT INTO user_limits (user_id, tokens_per_day) VALUES ($user, $n) ON CONFLICT (user_id) DO UPDATE SET tokens_per_day = excluded.tokens_per_day",
    ),
    dropLimit: db.query("DELETE FROM user_limits WHERE user_id = $user"),
  };
  // A file whose records predate the daily totals gets them once, from its records.
  db.transaction(() => {
    const daily = db.query<{ n: number }, []>("SELECT count(*) AS n FROM usage_daily").get()?.n ?? 0;
    if (daily === 0)
      db.exec(`INSERT INTO usage_daily (user_id, day, tokens)
        SELECT user_id, substr(created_at, 1, 10), sum(prompt_tokens + completion_tokens) FROM usage GROUP BY user_id, substr(created_at, 1, 10)`);
  }).immediate();
  // The record and its day's total in one transaction; a record written before adds nothing.
  const addTx = db.transaction((r: UsageRecord) => {
    const added = q.add.run({ ...countParams(r), $user_id: r.user_id, $created_at: r.created_at }).changes > 0;
    if (added) q.addDaily.run({ $user: r.user_id, $day: r.created_at.slice(0, 10), $n: r.prompt_tokens + r.completion_tokens });
    return added;
  });
  // Replaces by id, moving the day's total by the difference. The usual case (the final counts over
  // the estimate: same user, same time) updates the row in place, leaving its indexes alone.
  const putTx = db.transaction((r: UsageRecord) => {
    const old = q.old.get({ $id: r.id });
    if (old && old.user_id === r.user_id && old.created_at === r.created_at) {
      q.counts.run(countParams(r));
      const n = r.prompt_tokens + r.completion_tokens - old.tokens;
      if (n !== 0) q.addDaily.run({ $user: r.user_id, $day: old.day, $n: n });
      return;
    }
    if (old) {
      q.addDaily.run({ $user: old.user_id, $day: old.day, $n: -old.tokens });
      q.drop.run({ $id: r.id });
    }
    addTx(r);
  });
  return {
    addUsage: guard.write((r: UsageRecord) => addTx.immediate(r)),
    putUsage: guard.write((r: UsageRecord) => void putTx.immediate(r)),
    listUsage: guard(({ userId, since }: { userId?: string; since: string }) =>
      (userId === undefined ? q.ofAll.all({ $since: since }) : q.ofUser.all({ $user: userId, $since: since })).map(toRecord),
    ),
    // From a day's start (what a budget asks): the daily totals; from any other time: the records.
    tokensUsedSince: guard((userId: string, since: string) =>
      since.endsWith("T00:00:00.000Z")
        ? (q.usedDays.get({ $user: userId, $day: since.slice(0, 10) })?.n ?? 0)
        : (q.used.get({ $user: userId, $since: since })?.n ?? 0),
    ),
    tokensPerDay: guard((userId: string) => {
      const row = q.limit.get({ $user: userId });
      return row ? row.tokens_per_day : undefined;
    }),
    setTokensPerDay: guard((userId: string, n: number | null | undefined) => {
      if (n === undefined) q.dropLimit.run({ $user: userId });
      else q.setLimit.run({ $user: userId, $n: n });
    }),
  };
}
