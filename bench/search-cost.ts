import { Database } from "bun:sqlite";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Message } from "../src/records";
import { openSqliteStore } from "../src/store/sqlite";
import { median, round, summarize } from "./lib/stats";

// What full-text search costs the SQLite hot paths, and what a search costs.
// Two files, the same store code; on one the FTS5 triggers are dropped (the baseline: writes as
// before search existed). Rounds alternate between the two, so drift on a shared machine hits both.
//   - addMessage of a question (~300 characters, ~50 words): the insert trigger indexes it;
//   - putMessage of a streaming checkpoint (~2000 characters, rewritten): the triggers skip it;
//   - putMessage of the final reply over its checkpoint: indexed once;
//   - SEARCH: searchChats over BENCH_SEARCH_MESSAGES messages of 10 owners, one owner's hits.
// Usage: bun bench/search-cost.ts   (BENCH_SEARCH_ROUNDS, BENCH_SEARCH_N, BENCH_SEARCH_MESSAGES)

const ROUNDS = Number(process.env.BENCH_SEARCH_ROUNDS ?? 5);
const N = Number(process.env.BENCH_SEARCH_N ?? 2000);
const CORPUS = Number(process.env.BENCH_SEARCH_MESSAGES ?? 20_000);

const WORDS = (
  "the a of and to in is you that it he was for on are as with his they at be this have from or one had by word but not " +
  "what all were we when your can said there use an each which she do how their if will up other about out many then them these so " +
  "some her would make like him into time has look two more write go see number no way could people my than first water been call " +
  "who oil its now find long down day did get come made may part lisbon recipe garden python kernel invoice budget"
).split(" ");
let seed = 42;
const rand = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
const text = (chars: number) => {
  const out: string[] = [];
  let n = 0;
  while (n < chars) {
    const w = WORDS[Math.floor(rand() * WORDS.length)]!;
    out.push(w);
    n += w.length + 1;
  }
  return out.join(" ");
};

const dir = join(tmpdir(), `pichat-search-bench-${process.pid}`);
const open = (name: string, triggers: boolean) => {
  const path = join(dir, `${name}.db`);
  const store = openSqliteStore(path);
  if (!triggers) {
    // The baseline: the same file without the index's triggers (the store's statements re-prepare).
    const raw = new Database(path);
    for (const t of ["messages_search_insert", "messages_search_update", "messages_search_delete"]) raw.exec(`DROP TRIGGER ${t}`);
    raw.close();
  }
  return store;
};

const t0 = Date.parse("2025-01-01T00:00:00.000Z");
const iso = (i: number) => new Date(t0 + i).toISOString();

try {
  const sides = { fts: open("fts", true), bare: open("bare", false) };
  const chatId = crypto.randomUUID();
  for (const s of Object.values(sides))
    await s.createChat("bench", { id: chatId, name: "bench", active: true, created_at: iso(0), updated_at: iso(0) });
  const questions = Array.from({ length: N }, () => text(300));
  const replies = Array.from({ length: N }, () => text(2000));

  const perOp: Record<string, Record<"fts" | "bare", number[]>> = {
    "addMessage (question, 300 chars)": { fts: [], bare: [] },
    "putMessage (streaming checkpoint, 2000 chars)": { fts: [], bare: [] },
    "putMessage (final reply over its checkpoint, 2000 chars)": { fts: [], bare: [] },
  };
  const time = async (fn: (i: number) => Promise<unknown>) => {
    const started = performance.now();
    for (let i = 0; i < N; i++) await fn(i);
    return ((performance.now() - started) * 1000) / N; // µs per operation
  };
  let next = 1;
  for (let round_ = 0; round_ < ROUNDS; round_++) {
    for (const side of round_ % 2 === 0 ? (["fts", "bare"] as const) : (["bare", "fts"] as const)) {
      const s = sides[side];
      const base = next;
      next += N;
      const reply = (i: number, streaming: boolean): Message => ({
        id: `r${base + i}`,
        chat_id: chatId,
        role: "assistant",
        content: replies[i]!,
        created_at: iso(base + i),
        parent_id: `q${base + i}`,
        ...(streaming ? { status: "streaming" as const, lease: { owner: "bench", until: Date.now() + 60_000, seq: 1 } } : {}),
      });
      perOp["addMessage (question, 300 chars)"]![side].push(
        await time((i) =>
          s.addMessage({ id: `q${base + i}`, chat_id: chatId, role: "user", content: questions[i]!, created_at: iso(base + i) }),
        ),
      );
      await time((i) => s.putMessage(reply(i, true))); // the first checkpoint inserts the row
      perOp["putMessage (streaming checkpoint, 2000 chars)"]![side].push(await time((i) => s.putMessage(reply(i, true))));
      perOp["putMessage (final reply over its checkpoint, 2000 chars)"]![side].push(await time((i) => s.putMessage(reply(i, false))));
    }
  }
  console.log(`SQLite, ${ROUNDS} rounds of ${N} operations per side, median of the rounds' means (µs per operation):`);
  for (const [op, r] of Object.entries(perOp)) {
    const fts = median(r.fts);
    const bare = median(r.bare);
    console.log(
      `  ${op}: with FTS triggers ${round(fts, 1)} µs, without ${round(bare, 1)} µs, added ${round(fts - bare, 1)} µs (${round((fts / bare - 1) * 100, 0)} %)`,
    );
  }
  for (const s of Object.values(sides)) await s.close();

  // Search over a larger file: 10 owners, CORPUS messages; one owner's hits only.
  const store = open("corpus", true);
  const owners = Array.from({ length: 10 }, (_, i) => `owner-${i}`);
  const chats = owners.flatMap((o) => Array.from({ length: 20 }, () => ({ owner: o, id: crypto.randomUUID() })));
  for (const c of chats)
    await store.createChat(c.owner, { id: c.id, name: text(30), active: true, created_at: iso(0), updated_at: iso(0) });
  for (let i = 0; i < CORPUS; i++) {
    await store.addMessage({
      id: `m${i}`,
      chat_id: chats[i % chats.length]!.id,
      role: i % 2 ? "assistant" : "user",
      content: text(i % 2 ? 1200 : 200),
      created_at: iso(i),
    });
  }
  for (const query of ["lisbon", "recipe garden", "the", "pyth", "invoice budget kernel"]) {
    const samples: number[] = [];
    let hits = 0;
    for (let i = 0; i < 30; i++) {
      const started = performance.now();
      hits = (await store.searchChats("owner-3", query, { limit: 20 })).items.length;
      samples.push(performance.now() - started);
    }
    const s = summarize(samples.slice(5));
    console.log(
      `  SEARCH "${query}" over ${CORPUS} messages (10 owners): p50 ${round(s.p50, 2)} ms, p90 ${round(s.p90, 2)} ms (${hits} hits on the page)`,
    );
  }
  await store.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
