import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config";
import { startDeviceBridge } from "../../src/devices/bridge";
import { deviceBridgeOptions } from "../../src/devices/options";
import { createLogger } from "../../src/log";
import { modelFromConfig } from "../../src/model";
import { startServer } from "../../src/server";
import { storeFromConfig } from "../../src/store";
import { serveChild } from "../lib/proc";
import { stageCounters } from "../lib/stages";
import { localBus } from "../../src/chat/events";

// The server under test, in a process of its own: the real startServer on loopback, SQLite in a
// temp dir unless the bench passes a Cosmos endpoint. The configuration comes only from
// BENCH_APP_ENV (JSON), never from the ambient environment or a .env file, so a developer's
// settings cannot leak into a run. Limits are raised so the bench measures work, not refusals.
//
// BENCH_DEVICES (JSON {certPath}) turns the IoT Hub bridge on against the local AMQP peer whose
// connection strings are in BENCH_APP_ENV; the child is ready once the consumer owns every partition.

const dir = mkdtempSync(join(tmpdir(), "pichat-bench-"));
const overrides = JSON.parse(process.env.BENCH_APP_ENV ?? "{}") as Record<string, string>;
const config = loadConfig({
  SERVER_PORT: "0",
  HOST: "127.0.0.1",
  ENVIRONMENT: "development",
  LOG_LEVEL: "warn",
  SQLITE_PATH: join(dir, "pichat.db"),
  RATE_LIMIT_FRAMES_PER_SECOND: "100000",
  RATE_LIMIT_MESSAGES_PER_MINUTE: "100000",
  MAX_GENERATIONS: "100000",
  MAX_GENERATIONS_PER_CONNECTION: "1000",
  // Every bench client is on 127.0.0.1 (10,000 watchers in fan-out): no per-address cap. MAX_CONNECTIONS
  // stays derived from the open-file limit, as in production.
  MAX_CONNECTIONS_PER_ADDRESS: "0",
  OFFLINE_MODEL_DELAY_MS: "0",
  ...overrides,
});
const log = createLogger({ level: config.LOG_LEVEL, json: false, write: (l) => process.stderr.write(`[app] ${l}\n`) });
// BENCH_STAGES=1: stage counters at the server's seams (bench/lib/stages.ts), read with `stages`.
const stages = process.env.BENCH_STAGES === "1" && !overrides.REDIS_URL ? stageCounters() : undefined;
const rawStore = await storeFromConfig(config);
const store = stages ? stages.store(rawStore) : rawStore;
const rawModel = await modelFromConfig(config);
const model = stages ? stages.model(rawModel) : rawModel;

const devices = process.env.BENCH_DEVICES
  ? (JSON.parse(process.env.BENCH_DEVICES) as { certPath: string; partitions?: number })
  : undefined;
const bridge = devices ? await deviceBridgeOptions(config) : undefined;
// The test peer's transport (trusting its certificate) is loaded only when the bridge is on.
const amqpTrusting = devices ? (await import("../../test/support/amqp-peer")).amqpTrusting : undefined;
const running = startServer({
  config,
  store,
  model,
  log,
  ...(stages ? { bus: stages.bus(localBus((e) => log.error("event listener failed", { error: e }))) } : {}),
  startDevices: devices
    ? (parts) =>
        startDeviceBridge(parts, {
          ...bridge!,
          c2dTransport: amqpTrusting!(readFileSync(devices.certPath, "utf8")),
          retryDelayMs: 200,
          loadBalancing: { strategy: "greedy", updateIntervalInMs: 200 },
        })
    : undefined,
});

// Ready as /health/ready says: what the first send loads is loaded (bench/first-chunk.ts measures a fresh start from here).
await running.warmed;

if (devices) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const s = running.devices?.status();
    if (s?.status === "running" && s.partitions.length === (devices.partitions ?? 2)) break;
    if (Date.now() > deadline) throw new Error(`the device consumer did not own every partition in time: ${JSON.stringify(s)}`);
    await Bun.sleep(20);
  }
}

let stopped = false;
async function stop() {
  if (stopped) return;
  stopped = true;
  await running.stop(1000);
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

serveChild(
  { port: running.server.port, url: running.url, ws: `${running.url.replace(/^http/, "ws")}/ws`, store: store.kind, model: model.kind },
  {
    mem: (a: { gc?: boolean } = {}) => {
      if (a?.gc) Bun.gc(true);
      return { ...process.memoryUsage(), conns: running.conns.count };
    },
    stop,
    /** The stage counters since the last read (BENCH_STAGES=1), or null. */
    stages: () => stages?.read() ?? null,
    /**
     * Writes `pairs` questions and answers straight into a chat through the store (a chat of 10,000
     * messages in well under a second, where the protocol would take minutes), older than anything
     * sent after. The chat itself is made through the protocol first, so it is an ordinary chat.
     */
    seed: async (a: { chatId: string; pairs: number; words?: number }) => {
      const base = Date.now() - (2 * a.pairs + 10);
      const at = (i: number) => new Date(base + i).toISOString();
      const answer = Array.from({ length: a.words ?? 20 }, () => " word").join("");
      for (let i = 0; i < a.pairs; i++) {
        const q = {
          id: crypto.randomUUID(),
          chat_id: a.chatId,
          role: "user" as const,
          content: `Question ${i + 1}: what will the weather be like tomorrow?`,
          created_at: at(2 * i),
        };
        await store.addMessage(q);
        await store.addMessage({
          id: crypto.randomUUID(),
          chat_id: a.chatId,
          role: "assistant",
          content: answer,
          created_at: at(2 * i + 1),
          parent_id: q.id,
        });
      }
      return 2 * a.pairs;
    },
  },
);
