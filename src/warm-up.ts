import { localBus } from "./chat/events";
import { type Config, loadConfig } from "./config";
import { silentLogger } from "./log";
import type { Model } from "./model/model";
import { openAICompatibleModel } from "./model/openai";
import { cannedModelServer } from "./model/warm-up";
import type { Store } from "./store/store";
import { openSqliteStore } from "./store/sqlite";

/** What this needs of src/server.ts's startServer (passed in: server.ts calls this). */
type Start = (parts: {
  config: Config;
  store: Store;
  model: Model;
  log: typeof silentLogger;
  bus: ReturnType<typeof localBus>;
  warm: false;
}) => {
  url: string;
  stop(deadlineMs?: number): Promise<void>;
};

let warmed: Promise<void> | undefined;

/**
 * Runs `warm` once per process: what it loads and compiles is the process's, so a second server in
 * the same process (the tests start hundreds) finds it done. A failed warm-up is tried again by the next.
 */
export function warmOnce(warm: () => Promise<void>): Promise<void> {
  warmed ??= warm().catch((e) => {
    warmed = undefined;
    throw e;
  });
  return warmed;
}

/** The settings that decide which code a send runs (auth and origin checks, the window, usage, tools). */
const SHAPES_A_SEND = [
  "ENVIRONMENT",
  "SYSTEM_PROMPT",
  "DEVICE_SYSTEM_PROMPT",
  "MODEL_CONTEXT_TOKENS",
  "MODEL_REPLY_RESERVE_TOKENS",
  "HISTORY_MAX_MESSAGES",
  "HISTORY_PAGE_MAX_BYTES",
  "USAGE_RECORDS",
  "TOOLS_ENABLED",
  "TOOL_MAX_ROUNDS",
  "TOOL_TIMEOUT_MS",
  "TOOL_RESULT_MAX_CHARS",
] as const satisfies readonly (keyof Config)[];

const pick = <K extends keyof Config>(c: Config, keys: readonly K[]) => Object.fromEntries(keys.map((k) => [k, c[k]])) as Pick<Config, K>;

/**
 * Sends the warm-up makes. With two, a fresh process's first send took 1.8–2.1x a warm one's time
 * to its first chunk (bench/first-chunk.ts); with eight 1.6–1.7x (more of a send's code compiled
 * past the interpreter), start-up unchanged within its noise; with thirty 3.9–4.3x (the compiler
 * still busy when the first send came).
 */
const WARM_SENDS = 8;
/** Frames the warm-up waits for, at most this long each. */
const FRAME_TIMEOUT_MS = 10_000;

/**
 * A few sends through a throwaway server built as the real one is (src/server.ts), over a real
 * WebSocket on loopback: the upgrade, the frame pipeline, the handler table, the chat service, the
 * fan-out and the frame builders have run before a user's send runs them. Its store is a private
 * in-memory SQLite database, its bus nobody else hears, its model `cannedModelServer`: nothing is
 * stored where the server stores, nothing reaches the model, no frame reaches a real client. A
 * fresh process's first send waited ~3x a warm one for its first chunk when only the chat layer was warmed.
 */
export async function warmThroughSocket(start: Start, config: Config, modelName: string): Promise<void> {
  const canned = cannedModelServer(["Warm", "ing", " up", "."]);
  const store = openSqliteStore(":memory:");
  const token = Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString("hex");
  const running = start({
    config: {
      // The defaults, not the operator's configuration: none of its limits, peers or secrets can
      // refuse or reach the warm-up. Only what shapes the code a send runs is copied.
      ...loadConfig({}),
      ...pick(config, SHAPES_A_SEND),
      SERVER_PORT: 0,
      HOST: "127.0.0.1",
      API_TOKEN: token,
      CHAT_TITLES: false,
    },
    store,
    model: openAICompatibleModel({ baseURL: `http://127.0.0.1:${canned.port}/v1`, model: modelName, timeoutMs: FRAME_TIMEOUT_MS }),
    log: silentLogger,
    bus: localBus(),
    warm: false,
  });
  const ws = new WebSocket(`${running.url.replace(/^http/, "ws")}/ws`, { headers: { authorization: `Bearer ${token}` } } as never);
  try {
    const next = frames(ws);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("the warm-up socket did not open"));
    });
    ws.send(JSON.stringify({ type: "CREATE_CHAT", name: "warm-up", requestId: "chat" }));
    const created = await next((f) => f.type === "NEW_CHAT", "NEW_CHAT");
    const chatId = (created.chat as { id: string }).id;
    for (let i = 0; i < WARM_SENDS; i++) {
      ws.send(JSON.stringify({ type: "SEND_MESSAGE", chatId, content: `Warming up ${i}: what will the weather be like tomorrow?` }));
      await next((f) => f.type === "MESSAGE" && f.end === true, "the reply's end");
    }
    ws.send(JSON.stringify({ type: "GET_CHAT_HISTORY", chatId }));
    await next((f) => f.type === "CHAT_HISTORY", "CHAT_HISTORY");
  } finally {
    ws.close();
    await running.stop(1000);
    await store.close();
    canned.stop(true);
  }
}

type Frame = Record<string, unknown>;

/** `next(match)`: the next frame that matches, of those not taken yet. Any ERROR frame fails it. */
function frames(ws: WebSocket) {
  const seen: Frame[] = [];
  let wake: (() => void) | undefined;
  let failed: Error | undefined;
  ws.onmessage = (e) => {
    seen.push(JSON.parse(String(e.data)) as Frame);
    wake?.();
  };
  ws.onclose = (e) => {
    failed = new Error(`the warm-up socket closed (${e.code})`);
    wake?.();
  };
  return async (match: (f: Frame) => boolean, what: string): Promise<Frame> => {
    const deadline = Date.now() + FRAME_TIMEOUT_MS;
    for (;;) {
      const error = seen.find((f) => f.type === "ERROR");
      if (error) throw new Error(`the warm-up got ${String(error.code)} waiting for ${what}`);
      const i = seen.findIndex(match);
      if (i >= 0) return seen.splice(0, i + 1).at(-1)!;
      if (failed) throw failed;
      if (Date.now() > deadline) throw new Error(`the warm-up timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  };
}
