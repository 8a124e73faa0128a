import { within } from "./clock";
import { spawnChild, type Child } from "./proc";
import { request } from "./ws";

// The processes the limit scenarios put side by side: the local SSE model, our server on it, and
// the two bare limits (bench/servers/bare.ts) on the same model.

export type Sse = Child<{ url: string }>;
export type App = Child<{ ws: string; url: string; store: string }>;
export type Bare = Child<{ url: string; mode: string }>;

export const envNumber = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
export const envList = (name: string, fallback: string) => (process.env[name] ?? fallback).split(",").map(Number);

/** Rounds per side and the measured window of each (the closed loops of bench/lib/loops.ts). */
export const ROUNDS = envNumber("BENCH_LIMIT_ROUNDS", 3);
export const ROUND_MS = envNumber("BENCH_LIMIT_ROUND_MS", 2000);
export const WARMUP_MS = 500;

export const startModel = () => spawnChild<{ url: string }>("servers/sse-model.ts", { name: "sse-model" });

/** Our server on the bench model; `env` adds configuration (a Cosmos endpoint, ...). */
export const startApp = (sse: Sse, env: Record<string, string> = {}) =>
  spawnChild<{ ws: string; url: string; store: string }>("servers/app.ts", {
    name: "app",
    env: { BENCH_APP_ENV: JSON.stringify({ OPENAI_BASE_URL: `${sse.info.url}/v1`, OPENAI_MODEL: "bench", ...env }) },
  });

/** The bare protocol server from memory, or (with the model) the bare server forwarding the model's stream. */
export const startBare = (sse?: Sse, o: { sqlitePath?: string } = {}) =>
  spawnChild<{ url: string; mode: string }>("servers/bare.ts", {
    name: o.sqlitePath ? "bare-durable" : sse ? "bare-model" : "bare-protocol",
    env: {
      ...(sse ? { BARE_MODEL_URL: `${sse.info.url}/v1` } : {}),
      ...(o.sqlitePath ? { BARE_SQLITE_PATH: o.sqlitePath } : {}),
    },
  });

export async function stopAll(children: (Child | undefined)[]) {
  await within(Promise.all(children.map((c) => c?.stop())), 20_000, "servers to stop").catch(() => {});
}

/** `n` named chats (a name: no auto-title request), made over `sockets` in parallel. */
export async function createChats(sockets: WebSocket[], n: number, name = "bench limit"): Promise<string[]> {
  const ids: string[] = [];
  let next = 0;
  await Promise.all(
    sockets.map(async (ws) => {
      while (next < n) {
        next++;
        ids.push((await request(ws, { type: "CREATE_CHAT", name }, "NEW_CHAT")).chat.id);
      }
    }),
  );
  return ids;
}
