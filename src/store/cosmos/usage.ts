import type { UsageRecord } from "../../records";
import type { UsageOps } from "../ops";
import { type Cosmos, query, read, safeId, strip, tolerate } from "./requests";

// Usage records in the `usage` container, partitioned by user (a user's day is one partition query);
// each user's budget override is a `limit:` document in the users container (one point read).

type LimitDoc = { id: string; type: "limit"; user_id: string; tokens_per_day: number | null };

const limitId = (userId: string) => `limit:${Buffer.from(userId, "utf8").toString("base64url")}`;

export function usageOps(k: Cosmos): UsageOps {
  const { c, o } = k;
  return {
    // Create, never upsert: the id decides, so a record written twice (a retry, another replica) is stored once.
    addUsage: (r) =>
      tolerate(async () => (await c.usage.items.create({ ...r, id: safeId(r.id), record_id: r.id }, o()), true), [409], false),
    putUsage: async (r) => void (await c.usage.items.upsert({ ...r, id: safeId(r.id), record_id: r.id }, o())),
    listUsage: async ({ userId, since }) => {
      const docs = await query<Record<string, unknown>>(
        k,
        c.usage,
        {
          query: `SELECT * FROM c WHERE ${userId === undefined ? "" : "c.user_id = @user AND "}c.created_at >= @since ORDER BY c.created_at`,
          parameters: [...(userId === undefined ? [] : [{ name: "@user", value: userId }]), { name: "@since", value: since }],
        },
        userId,
      );
      return docs.map((d) => ({ ...strip<UsageRecord>(d, ["record_id"]), id: String(d.record_id ?? d.id) }));
    },
    tokensUsedSince: async (userId, since) => {
      const [n] = await query<number | null>(
        k,
        c.usage,
        {
          query: "SELECT VALUE SUM(c.prompt_tokens + c.completion_tokens) FROM c WHERE c.user_id = @user AND c.created_at >= @since",
          parameters: [
            { name: "@user", value: userId },
            { name: "@since", value: since },
          ],
        },
        userId,
      );
      return typeof n === "number" ? n : 0;
    },
    tokensPerDay: async (userId) => {
      const doc = await read<LimitDoc>(k, c.users, limitId(userId), limitId(userId));
      return doc ? doc.tokens_per_day : undefined;
    },
    setTokensPerDay: async (userId, n) => {
      const id = limitId(userId);
      if (n === undefined) return void (await tolerate(async () => void (await c.users.item(id, id).delete(o())), [404], undefined));
      const doc: LimitDoc = { id, type: "limit", user_id: userId, tokens_per_day: n };
      await c.users.items.upsert(doc, o());
    },
  };
}
