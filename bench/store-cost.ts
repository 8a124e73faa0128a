import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Agent } from "node:https";
import { CosmosClient } from "@azure/cosmos";
import { createHttpsServer } from "@vercel/cosmosdb-server";
import { sleep, within } from "./lib/clock";
import { spawnChild } from "./lib/proc";
import { runAlone, type Row, type Scenario } from "./lib/report";
import { nextFrame, openSocket, request } from "./lib/ws";

// 6. Store cost: what each WebSocket command costs the store, against the local Cosmos DB wire-protocol
// server (@vercel/cosmosdb-server, as in the tests). For each command, N runs after one warm-up:
//   - store operations, from the server's own /metrics (pichat_store_operation_duration_seconds_count by op);
//   - HTTP requests the Cosmos server received, by container and kind, and whether each named a
//     partition key (single-partition) or not;
//   - request units, summed from the x-ms-request-charge header of each response.
// The test server charges a flat 1 RU for every request, whatever it does, so here RU = requests;
// real Cosmos charges ~1 RU for a 1 KB point read, ~5+ for a write, more for queries.
// Baseline: one direct SDK point read and one query naming its partition key, from the bench, counted
// the same way: the least a command that touches the store can cost.

const N = Number(process.env.BENCH_STORE_N ?? 10);
export const EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XqBNQ==";

type Req = { label: string; partition: "single" | "cross" | "meta"; charge: number };

function classify(req: IncomingMessage): Omit<Req, "charge"> {
  const path = (req.url ?? "").split("?")[0]!.replace(/\/$/, "");
  const seg = path.split("/").filter(Boolean).map(decodeURIComponent);
  const h = req.headers;
  const pk = h["x-ms-documentdb-partitionkey"] !== undefined;
  const coll = seg[3];
  if (seg[2] === "colls" && seg[4] === "docs") {
    let kind: string;
    if (seg.length === 5) {
      if (h["x-ms-cosmos-is-query-plan-request"]) kind = "query-plan";
      else if (h["x-ms-documentdb-isquery"] || String(h["content-type"]).includes("query+json")) kind = "query";
      else if (String(h["x-ms-documentdb-is-upsert"]).toLowerCase() === "true") kind = "upsert";
      else if (req.method === "GET") kind = "read-feed";
      else kind = "create";
    } else {
      kind = ({ GET: "read", PUT: "replace", DELETE: "delete", PATCH: "patch" } as Record<string, string>)[req.method ?? ""] ?? req.method!;
    }
    const single = pk || h["x-ms-documentdb-partitionkeyrangeid"] !== undefined;
    return { label: `${coll}.${kind}`, partition: kind === "query-plan" ? "meta" : single && pk ? "single" : "cross" };
  }
  if (seg[2] === "colls" && seg[4] === "pkranges") return { label: `${coll}.pkranges`, partition: "meta" };
  if (seg[2] === "colls" && seg.length === 4) return { label: `${coll}.container-read`, partition: "meta" };
  if (seg[0] === "dbs" && seg.length <= 2) return { label: `database.${req.method === "GET" ? "read" : req.method}`, partition: "meta" };
  if (seg.length === 0) return { label: "account.read", partition: "meta" };
  return { label: `${req.method} ${seg.slice(0, 5).join("/")}`, partition: "meta" };
}

export async function startCountingCosmos() {
  const server = createHttpsServer();
  const log: Req[] = [];
  server.prependListener("request", (req: IncomingMessage, res: ServerResponse) => {
    const c = classify(req);
    res.once("finish", () => log.push({ ...c, charge: Number(res.getHeader("x-ms-request-charge") ?? 0) }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `https://127.0.0.1:${port}/`,
    log,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

export async function storeOps(metricsUrl: string): Promise<Map<string, number>> {
  const text = await (await within(fetch(metricsUrl), 10_000, "/metrics")).text();
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^pichat_store_operation_duration_seconds_count\{([^}]*)\} (\d+)/gm)) {
    const op = /op="([^"]+)"/.exec(m[1]!)?.[1] ?? "?";
    const outcome = /outcome="([^"]+)"/.exec(m[1]!)?.[1] ?? "ok";
    const key = outcome === "ok" ? op : `${op}(${outcome})`;
    out.set(key, (out.get(key) ?? 0) + Number(m[2]));
  }
  return out;
}

export type Cost = {
  command: string;
  n: number;
  opsPerCommand: number;
  ops: Record<string, number>;
  requestsPerCommand: number;
  requests: Record<string, number>;
  ruPerCommand: number;
  crossPartitionPerCommand: number;
  queryPlanPerCommand: number;
  metadataPerCommand: number;
};

/**
 * Runs `step` for `warmups` warm-ups (-warmups … -1, not counted) and then `n` times, and diffs the
 * store's operation counters (/metrics) and the Cosmos server's request log around the n.
 */
export async function measureCost(
  o: { metricsUrl: string; cosmos: Awaited<ReturnType<typeof startCountingCosmos>>; n: number; warmups?: number },
  command: string,
  step: (i: number) => Promise<void>,
): Promise<Cost> {
  const N = o.n;
  for (let w = o.warmups ?? 1; w > 0; w--) await step(-w);
  await sleep(150);
  const ops0 = await storeOps(o.metricsUrl);
  const r0 = o.cosmos.log.length;
  for (let i = 0; i < N; i++) await step(i);
  // A reply's last write lands before its end frame; give stragglers (a checkpoint) a moment.
  await sleep(300);
  const ops1 = await storeOps(o.metricsUrl);
  const reqs = o.cosmos.log.slice(r0);
  const ops: Record<string, number> = {};
  for (const [k, v] of ops1) if (v - (ops0.get(k) ?? 0) > 0) ops[k] = (v - (ops0.get(k) ?? 0)) / N;
  const counts: Record<string, number> = {};
  for (const r of reqs) counts[r.label] = (counts[r.label] ?? 0) + 1;
  const requests = Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, v / N]));
  return {
    command,
    n: N,
    ops,
    opsPerCommand: Object.values(ops).reduce((a, b) => a + b, 0),
    requests,
    requestsPerCommand: reqs.length / N,
    ruPerCommand: reqs.reduce((s, r) => s + r.charge, 0) / N,
    crossPartitionPerCommand: reqs.filter((r) => r.partition === "cross").length / N,
    queryPlanPerCommand: reqs.filter((r) => r.label.endsWith(".query-plan")).length / N,
    metadataPerCommand: reqs.filter((r) => r.partition === "meta" && !r.label.endsWith(".query-plan")).length / N,
  };
}

export const scenario: Scenario = {
  name: "store-cost",
  title: "store operations, Cosmos HTTP requests and RUs per WebSocket command",
  timeoutMs: 180_000,
  async run() {
    const cosmos = await startCountingCosmos();
    const sse = await spawnChild<{ url: string }>("servers/sse-model.ts", { name: "sse-model" });
    const database = `pichat-bench-${crypto.randomUUID().slice(0, 8)}`;
    const app = await spawnChild<{ ws: string; url: string; store: string }>("servers/app.ts", {
      name: "app",
      env: {
        BENCH_APP_ENV: JSON.stringify({
          OPENAI_BASE_URL: `${sse.info.url}/v1`,
          OPENAI_MODEL: "bench",
          COSMOS_ENDPOINT: cosmos.endpoint,
          COSMOS_KEY: EMULATOR_KEY,
          COSMOS_DATABASE: database,
          COSMOS_ALLOW_SELF_SIGNED_CERT: "true",
        }),
      },
    });
    const ws = await openSocket(app.info.ws);
    try {
      if (app.info.store !== "cosmos") throw new Error(`the server uses ${app.info.store}, not Cosmos`);
      const metricsUrl = `${app.info.url}/metrics`;

      const measure = (command: string, step: (i: number) => Promise<void>) => measureCost({ metricsUrl, cosmos, n: N }, command, step);

      const costs: Cost[] = [];
      const chats: string[] = [];
      costs.push(
        await measure("CREATE_CHAT", async (i) => {
          const { chat } = await request(ws, { type: "CREATE_CHAT", name: `bench cost ${i}` }, "NEW_CHAT");
          chats.push(chat.id);
        }),
      );
      const main = chats[0]!;
      const send = async (chatId: string, content: string) => {
        const end = nextFrame(
          ws,
          (f) => (f.type === "MESSAGE" && f.chatId === chatId && f.end) || f.type === "ERROR",
          15_000,
          "the reply's end",
        );
        ws.send(JSON.stringify({ type: "SEND_MESSAGE", chatId, content }));
        const f = await end;
        if (f.type === "ERROR" || f.reason) throw new Error(`SEND_MESSAGE failed: ${JSON.stringify(f)}`);
        return f;
      };
      let lastTrace = "";
      costs.push(
        await measure("SEND_MESSAGE (reply included)", async (i) => {
          lastTrace = (await send(main, `question ${i} tokens=5`)).traceId;
        }),
      );
      costs.push(
        await measure("GET_CHAT_HISTORY", async () => void (await request(ws, { type: "GET_CHAT_HISTORY", chatId: main }, "CHAT_HISTORY"))),
      );
      costs.push(await measure("GET_CHATS", async () => void (await request(ws, { type: "GET_CHATS" }, "CHAT_LIST"))));
      costs.push(
        await measure(
          "RESUME (finished reply)",
          async () => void (await request(ws, { type: "RESUME", chatId: main, traceId: lastTrace }, "MESSAGE")),
        ),
      );
      costs.push(
        await measure(
          "RENAME_CHAT",
          async (i) => void (await request(ws, { type: "RENAME_CHAT", chatId: main, name: `renamed ${i}` }, "CHAT_UPDATED")),
        ),
      );
      costs.push(await measure("GET_SETTINGS", async () => void (await request(ws, { type: "GET_SETTINGS" }, "SETTINGS"))));
      costs.push(
        await measure(
          "UPDATE_SETTINGS",
          async (i) => void (await request(ws, { type: "UPDATE_SETTINGS", temperature: (i + 2) / 20 }, "SETTINGS")),
        ),
      );
      // The first message in an unnamed chat also titles it (a second model request, then a rename).
      const unnamed: string[] = [];
      for (let i = 0; i <= N; i++) unnamed.push((await request(ws, { type: "CREATE_CHAT" }, "NEW_CHAT")).chat.id);
      let u = 0;
      costs.push(
        await measure("SEND_MESSAGE, first in an unnamed chat (+ title)", async () => {
          const chatId = unnamed[u++]!;
          const titled = nextFrame(ws, (f) => f.type === "CHAT_UPDATED" && f.chat.id === chatId, 15_000, "the chat's title");
          await send(chatId, "hello tokens=5");
          await titled;
        }),
      );
      const empty: string[] = [];
      for (let i = 0; i <= N; i++) empty.push((await request(ws, { type: "CREATE_CHAT", name: "to delete" }, "NEW_CHAT")).chat.id);
      let d = 0;
      costs.push(
        await measure(
          "DELETE_CHAT (empty chat)",
          async () => void (await request(ws, { type: "DELETE_CHAT", chatId: empty[d++]! }, "CHAT_DELETED")),
        ),
      );
      let e = 0;
      costs.push(
        await measure(
          "DELETE_CHAT (2 messages)",
          async () => void (await request(ws, { type: "DELETE_CHAT", chatId: unnamed[e++]! }, "CHAT_DELETED")),
        ),
      );

      // Baseline: the SDK alone, one point read and one single-partition query per "command".
      const client = new CosmosClient({
        endpoint: cosmos.endpoint,
        key: EMULATOR_KEY,
        agent: new Agent({ keepAlive: true, rejectUnauthorized: false }),
        connectionPolicy: { enableEndpointDiscovery: false },
      });
      const messages = client.database(database).container("messages");
      const chatsC = client.database(database).container("chats");
      const baseRead = async () => {
        const r0 = cosmos.log.length;
        await chatsC.item(main, "default").read();
        for (let i = 0; i < N; i++) await chatsC.item(main, "default").read();
        return cosmos.log.length - r0 - 1;
      };
      const baseQuery = async () => {
        const q = () =>
          messages.items
            .query(
              {
                query: "SELECT TOP 21 * FROM c WHERE c.chat_id = @c ORDER BY c.created_at DESC",
                parameters: [{ name: "@c", value: main }],
              },
              { partitionKey: main },
            )
            .fetchAll();
        await q();
        const r0 = cosmos.log.length;
        for (let i = 0; i < N; i++) await q();
        return cosmos.log.length - r0;
      };
      const baseline = { pointReadRequests: (await baseRead()) / N, queryRequests: (await baseQuery()) / N };
      client.dispose();

      const HOT = new Set(["SEND_MESSAGE (reply included)", "GET_CHAT_HISTORY", "GET_CHATS"]);
      const rows: Row[] = [
        {
          metric: "baseline: the SDK alone",
          unit: "",
          ours: "",
          baseline: `point read ${baseline.pointReadRequests} req; query ${baseline.queryRequests} req`,
          note: "one SDK call from the bench; a query also sends the SDK's query-plan request",
        },
      ];
      for (const c of costs) {
        const hot = HOT.has(c.command);
        const opsText = Object.entries(c.ops)
          .map(([k, v]) => (v === 1 ? k : `${k}×${+v.toFixed(2)}`))
          .join(", ");
        const extra = [
          c.crossPartitionPerCommand ? `${c.crossPartitionPerCommand} cross-partition req` : "no cross-partition req",
          c.queryPlanPerCommand ? `incl. ${c.queryPlanPerCommand} SDK query-plan req` : "",
          c.metadataPerCommand ? `${c.metadataPerCommand} metadata` : "",
        ]
          .filter(Boolean)
          .join(", ");
        rows.push({
          metric: `${c.command}`,
          unit: "",
          ours: `${+c.opsPerCommand.toFixed(2)} op, ${+c.requestsPerCommand.toFixed(2)} req, ${+c.ruPerCommand.toFixed(2)} RU`,
          ...(hot ? { target: "≤ 1 single-partition op", met: c.opsPerCommand <= 1 && c.crossPartitionPerCommand === 0 } : {}),
          note: `${opsText}; ${extra}`,
        });
      }
      rows.push({
        metric: "RU source",
        unit: "",
        ours: "x-ms-request-charge",
        note: "the Cosmos test server answers a flat 1 RU per request; real Cosmos charges by work",
      });
      return { rows, data: { n: N, costs, baseline, ruNote: "@vercel/cosmosdb-server sets x-ms-request-charge: 1 on every response" } };
    } finally {
      ws.close();
      await within(Promise.all([app.stop(), sse.stop()]), 20_000, "servers to stop").catch(() => {});
      await cosmos.stop();
    }
  },
};

if (import.meta.main) await runAlone(scenario);
