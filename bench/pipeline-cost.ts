import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ChatOptions } from "../src/chat/context";
import { localBus } from "../src/chat/events";
import { createChatService } from "../src/chat/service";
import { createUsage } from "../src/chat/usage";
import { silentLogger } from "../src/log";
import { openAICompatibleModel } from "../src/model/openai";
import { openSqliteStore } from "../src/store/sqlite";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { envNumber, startModel, stopAll } from "./lib/sides";
import { median, round } from "./lib/stats";

// What the chat layer costs per send without sockets, in one process, against the model call alone:
// `chat.send` through the real chat service (admission, the question stored, the lane, the prompt
// fitted to the window, the metered model call, the deltas on the bus, the reply and its usage
// records stored) on SQLite (a file in a temp dir, and in memory), against the same model client
// streaming the same reply with the system prompt and the question (what the bare forwarder asks).
// The model is the bench's SSE server in a child process, so this process's CPU is ours alone.
// Rounds alternate; CPU from process.cpuUsage, the median of the rounds after the first.

const SENDS = envNumber("BENCH_PIPELINE_SENDS", 1000);
const ROUNDS = envNumber("BENCH_PIPELINE_ROUNDS", 5);
const TOKENS = 20;
const CHATS = 100;

const options: ChatOptions = {
  systemPrompt: "You are a helpful assistant.",
  context: { contextTokens: 128_000, replyReserveTokens: 4096 },
  modelIdleTimeoutMs: 30_000,
  historyMaxMessages: 500,
  autoTitle: false,
  maxGenerations: 1000,
  queueLimit: 20,
  replyCheckpointMs: 1000,
  replyLeaseMs: 10_000,
  instanceId: "bench",
  modelCallsPerMinute: 0,
  deviceDefaultOwner: "none",
  historyCacheChars: 32 * 500_000,
  historyCacheTtlMs: 60_000,
};
const question = (k: number) => `Question ${k + 1}: what will the weather be like tomorrow? tokens=${TOKENS}`;

/** CPU per unit of `fn(n)`, in µs. */
export async function cpuPer(n: number, fn: (n: number) => Promise<void>): Promise<number> {
  const c0 = process.cpuUsage();
  await fn(n);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}

/** The chat layer as src/server.ts builds it, on SQLite at `path`, sending round `chatCount` chats of its own. */
export function chatSide(modelUrl: string, path: string, chatCount = CHATS) {
  const store = openSqliteStore(path);
  const model = openAICompatibleModel({ baseURL: modelUrl, model: "bench", timeoutMs: 30_000 });
  const usage = createUsage({ store, log: silentLogger, options: { enabled: true, tokensPerDay: null, replyReserveTokens: 4096 } });
  const chat = createChatService({ store, model, bus: localBus(), usage, log: silentLogger, options });
  const chats: string[] = [];
  let k = 0;
  return {
    async setUp() {
      for (let i = 0; i < chatCount; i++) chats.push((await chat.createChat({ owner: "bench", name: `bench ${i}`, announce: false })).id);
    },
    async sends(n: number) {
      for (let i = 0; i < n; i++, k++) {
        const sent = await chat.send({ owner: "bench", chatId: chats[k % chatCount]!, content: question(k) });
        await sent.reply;
      }
    },
    async close() {
      await usage.drained();
      chat.close();
      await store.close();
    },
  };
}

function modelAlone(modelUrl: string) {
  const model = openAICompatibleModel({ baseURL: modelUrl, model: "bench", timeoutMs: 30_000 });
  let k = 0;
  return async (n: number) => {
    for (let i = 0; i < n; i++, k++) {
      const turns = [
        { role: "system" as const, content: options.systemPrompt },
        { role: "user" as const, content: question(k) },
      ];
      for await (const _ of model.stream(turns, { signal: new AbortController().signal, onUsage: () => {} }));
    }
  };
}

export const scenario: Scenario = {
  name: "pipeline-cost",
  title: `the chat layer per send without sockets (${SENDS} sends a round, ${TOKENS}-chunk replies) vs the model call alone`,
  timeoutMs: 300_000,
  async run() {
    const sse = await startModel();
    const dir = mkdtempSync(join(tmpdir(), "pichat-pipeline-"));
    const url = `${sse.info.url}/v1`;
    const file = chatSide(url, join(dir, "pichat.db"));
    const memory = chatSide(url, ":memory:");
    const alone = modelAlone(url);
    try {
      await file.setUp();
      await memory.setUp();
      const t = { alone: [] as number[], file: [] as number[], memory: [] as number[] };
      for (let r = 0; r < ROUNDS; r++) {
        t.alone.push(await cpuPer(SENDS, alone));
        t.file.push(await cpuPer(SENDS, file.sends));
        t.memory.push(await cpuPer(SENDS, memory.sends));
      }
      const m = { alone: median(t.alone.slice(1)), file: median(t.file.slice(1)), memory: median(t.memory.slice(1)) };
      const rows: Row[] = [
        {
          metric: "CPU per send: chat.send on SQLite (file) vs the model call alone",
          unit: "µs",
          ours: round(m.file, 0),
          baseline: round(m.alone, 0),
          ratio: ratio(m.file, m.alone),
          better: "lower",
        },
        {
          metric: "CPU per send: chat.send on SQLite (in memory) vs the model call alone",
          unit: "µs",
          ours: round(m.memory, 0),
          baseline: round(m.alone, 0),
          ratio: ratio(m.memory, m.alone),
          better: "lower",
          note: "the file's share: the file row less this one",
        },
      ];
      return { rows, data: { sends: SENDS, rounds: ROUNDS, tokens: TOKENS, chats: CHATS, cpuUs: t, medianUs: m } };
    } finally {
      await file.close();
      await memory.close();
      rmSync(dir, { recursive: true, force: true });
      await stopAll([sse]);
    }
  },
};

if (import.meta.main) await runAlone(scenario);
