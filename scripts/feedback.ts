// Ratings of replies, for the operator, from the store the server uses (same env / .env).
//
//   bun run feedback export [--since <date>] [--format csv|json]
//
// One line per rating changed since the date (default: every rating), oldest first: when, the model
// that wrote the reply, up or down, the comment, and which user, chat and reply it was. JSON lines by
// default; CSV with --format csv. A summary by model and day goes to stderr.
import type { Feedback } from "../src/records";
import { runAdmin, UsageError } from "./admin";

const USAGE = "usage: bun run feedback export [--since <ISO date>] [--format json|csv]";

const csvCell = (s: string) => (/[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s);
const COLUMNS = ["updated_at", "created_at", "model", "rating", "comment", "user_id", "chat_id", "message_id"] as const;

function options(args: string[]) {
  let since = "1970-01-01T00:00:00.000Z";
  let format: "json" | "csv" = "json";
  for (let i = 1; i < args.length; i += 2) {
    const [flag, value] = [args[i], args[i + 1]];
    if (value === undefined) throw new UsageError(`${flag}: needs a value`);
    if (flag === "--since") {
      const t = Date.parse(value);
      if (Number.isNaN(t)) throw new UsageError(`--since: "${value}" is not a date`);
      since = new Date(t).toISOString();
    } else if (flag === "--format") {
      if (value !== "json" && value !== "csv") throw new UsageError(`--format: "${value}" is not json or csv`);
      format = value;
    } else throw new UsageError(`unknown option ${flag}`);
  }
  return { since, format };
}

await runAdmin(USAGE, async (store, args) => {
  if (args[0] !== "export") throw new UsageError(`unknown command ${args[0]}`);
  const { since, format } = options(args);
  const all: Feedback[] = await store.listFeedback({ since });
  if (format === "csv") {
    console.log(COLUMNS.join(","));
    for (const f of all) console.log(COLUMNS.map((c) => csvCell(String(f[c] ?? ""))).join(","));
  } else for (const f of all) console.log(JSON.stringify(f));
  const byModelDay = new Map<string, { up: number; down: number }>();
  for (const f of all) {
    const key = `${f.model} ${f.updated_at.slice(0, 10)}`;
    const n = byModelDay.get(key) ?? { up: 0, down: 0 };
    n[f.rating]++;
    byModelDay.set(key, n);
  }
  for (const [key, n] of [...byModelDay].sort()) console.error(`${key}: ${n.up} up, ${n.down} down`);
  console.error(`${all.length} rating${all.length === 1 ? "" : "s"} since ${since}`);
});
