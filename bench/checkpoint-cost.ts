import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSqliteStore } from "../src/store/sqlite";

// What a reply checkpoint costs: one save of a streaming reply's text so far (the join
// of its chunks and the upsert), on the embedded store, and what that is per token at a given
// checkpoint interval and token rate. Compare with the marginal time per token of `bench/streaming.ts`.
// Usage: bun bench/checkpoint-cost.ts

const path = join(tmpdir(), `pichat-checkpoint-bench-${process.pid}.db`);
const store = openSqliteStore(path);
try {
  const t = new Date().toISOString();
  const chat = { id: crypto.randomUUID(), name: "bench", active: true, created_at: t, updated_at: t };
  await store.createChat("default", chat);
  for (const tokens of [200, 2000, 10_000]) {
    const chunks = Array.from({ length: tokens }, (_, i) => `tok${i} `);
    const save = () =>
      store.putMessage({
        id: `r${tokens}`,
        chat_id: chat.id,
        role: "assistant",
        content: chunks.join(""),
        created_at: t,
        status: "streaming",
        lease: { owner: "bench", until: Date.now() + 10_000, seq: tokens },
      });
    for (let i = 0; i < 20; i++) await save(); // warm
    const n = 300;
    const started = performance.now();
    for (let i = 0; i < n; i++) await save();
    const ms = (performance.now() - started) / n;
    const kb = Math.round(Buffer.byteLength(chunks.join("")) / 1024);
    console.log(
      `${tokens} chunks (${kb} KB): one checkpoint ${ms.toFixed(3)} ms;` +
        ` per token at 1,000 tokens/s: ${(ms).toFixed(3)} µs (every 1 s), ${(ms * 10).toFixed(3)} µs (every 100 ms)`,
    );
  }
} finally {
  await store.close();
  for (const f of [path, `${path}-wal`, `${path}-shm`]) rmSync(f, { force: true });
}
