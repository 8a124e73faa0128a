import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BRANCH_MAX_MESSAGES, branchHistory } from "../src/chat/branches";
import { openSqliteStore } from "../src/store/sqlite";
import type { Chat, Message } from "../src/records";

// What a branched chat's history page costs against a chat never branched, on SQLite, in-process
// (no socket): the never-branched page is one indexed query (pageMessages, 500 newest); the branched
// one reads the chat's newest BRANCH_MAX_MESSAGES and walks the tree in memory (src/chat/tree.ts).
// Chats of n messages (question/answer pairs, every 10th question edited once in the branched one).
// Run: bun bench/branch-cost.ts   (BENCH_BRANCH_RUNS, default 50, per size)

const RUNS = Number(process.env.BENCH_BRANCH_RUNS ?? 50);
const dir = mkdtempSync(join(tmpdir(), "pichat-branch-bench-"));
const store = openSqliteStore(join(dir, "b.db"));
const base = Date.parse("2025-03-14T09:00:00.000Z");
const at = (i: number) => new Date(base + i).toISOString();
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function chatOf(n: number, branched: boolean): Promise<Chat> {
  const chat: Chat = { id: crypto.randomUUID(), name: "bench", active: true, created_at: at(0), updated_at: at(0) };
  await store.createChat("bench", chat);
  let t = 1;
  let prev: string | undefined;
  for (let i = 0; i < n / 2; i++) {
    const q: Message = {
      id: `q${i}`,
      chat_id: chat.id,
      role: "user",
      content: `question ${i} `.repeat(20),
      created_at: at(t++),
      ...(branched && prev !== undefined ? { parent_id: prev } : {}),
    };
    await store.addMessage(q);
    const a: Message = {
      id: `a${i}`,
      chat_id: chat.id,
      role: "assistant",
      content: `answer ${i} `.repeat(60),
      created_at: at(t++),
      parent_id: q.id,
    };
    await store.addMessage(a);
    if (branched && i % 10 === 9) {
      // An edit beside q: a sibling with its own answer (the branch continues from the newer one).
      const e: Message = { ...q, id: `e${i}`, created_at: at(t++), content: `edited ${i}` };
      await store.addMessage(e);
      await store.addMessage({ ...a, id: `ea${i}`, parent_id: e.id, created_at: at(t++) });
      prev = `ea${i}`;
    } else prev = a.id;
  }
  if (branched) return (await store.patchChat("bench", chat.id, { selected: prev }))!;
  return chat;
}

console.log(`history page cost on SQLite, median of ${RUNS} (ms)`);
console.log("messages | never branched (pageMessages 500) | branched (listMessages " + BRANCH_MAX_MESSAGES + " + tree) | branch length");
for (const n of [100, 500, 2000]) {
  const plain = await chatOf(n, false);
  const tree = await chatOf(n, true);
  const a: number[] = [];
  const b: number[] = [];
  let length = 0;
  for (let i = 0; i < RUNS + 10; i++) {
    let t0 = performance.now();
    await store.pageMessages(plain.id, { limit: 500 });
    const ta = performance.now() - t0;
    t0 = performance.now();
    const stored = await store.listMessages(tree.id, { limit: BRANCH_MAX_MESSAGES });
    const page = branchHistory(tree, stored, { limit: 500 });
    const tb = performance.now() - t0;
    length = page.messages.length;
    if (i >= 10) a.push(ta), b.push(tb);
  }
  console.log(`${n} | ${median(a).toFixed(2)} | ${median(b).toFixed(2)} | ${length}`);
}
await store.close();
rmSync(dir, { recursive: true, force: true });
