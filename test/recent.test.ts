import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { localBus } from "../src/chat/events";
import { recentMessages } from "../src/chat/recent";
import type { Message } from "../src/records";
import { openSqliteStore } from "../src/store/sqlite";
import type { Store } from "../src/store/store";
import { Rng } from "./support/fuzz";

// The kept newest messages (src/chat/recent.ts) must answer exactly what the store answers, for any
// page size, through every way messages change: questions, replies (also ones that started before
// later questions), replaced replies, replies ended without a stored message, deletions. Checked
// against a real SQLite store after every step of a seeded random history.

let dir: string;
let store: Store;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "pichat-recent-"));
  store = openSqliteStore(join(dir, "recent.db"));
});
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const at = (ms: number) => new Date(Date.parse("2026-01-01T00:00:00.000Z") + ms).toISOString();

describe("recentMessages", () => {
  test("every page the kept messages answer equals the store's, through a random history (3 seeds × 150 steps)", async () => {
    for (const seed of [1, 2, 3]) {
      const bus = localBus();
      const recent = recentMessages(store, bus, { perChat: 7, maxChars: 1_000_000, ttlMs: 60_000 });
      const owner = "default";
      const chat = { id: crypto.randomUUID(), name: `seed ${seed}`, active: true, created_at: at(0), updated_at: at(0) };
      await store.createChat(owner, chat);
      const rng = new Rng(seed);
      let clock = 1000;
      const replies: Message[] = [];
      for (let step = 0; step < 150; step++) {
        const r = rng.int(0, 9);
        if (r < 4) {
          // A question, sometimes sharing a timestamp with the one before.
          clock += rng.int(0, 1) * 3;
          const m: Message = {
            id: `q${step}-${rng.int(0, 999)}`,
            chat_id: chat.id,
            role: "user",
            content: `q ${step}`,
            created_at: at(clock),
          };
          await store.addMessage(m);
          bus.publish({ type: "user_message", owner, message: m });
        } else if (r < 7) {
          // A reply that started a little earlier (questions were asked while it streamed).
          const m: Message = {
            id: `r${step}`,
            chat_id: chat.id,
            role: "assistant",
            content: `r ${step}`,
            created_at: at(clock - rng.int(0, 6)),
          };
          await store.putMessage(m);
          replies.push(m);
          bus.publish({ type: "reply_end", chatId: chat.id, traceId: m.id, seq: 2, message: m });
        } else if (r < 8 && replies.length > 0) {
          // A reply stored again (finalised with more text).
          const old = replies[rng.int(0, replies.length - 1)]!;
          const m: Message = { ...old, content: `${old.content}+`, status: "stopped" };
          await store.putMessage(m);
          bus.publish({ type: "reply_end", chatId: chat.id, traceId: m.id, seq: 3, message: m });
        } else if (r < 9) {
          // Finalised elsewhere without the message on the event (an orphan swept as interrupted).
          const m: Message = {
            id: `i${step}`,
            chat_id: chat.id,
            role: "assistant",
            content: `i ${step}`,
            created_at: at(clock),
            status: "interrupted",
          };
          await store.putMessage(m);
          bus.publish({ type: "reply_end", chatId: chat.id, traceId: m.id, seq: 1, status: "interrupted" });
        } else {
          // A streaming checkpoint: not announced, and never shown by the kept messages.
          await store.putMessage({
            id: `s${step}`,
            chat_id: chat.id,
            role: "assistant",
            content: "…",
            created_at: at(clock),
            status: "streaming",
            lease: { owner: "x", until: 0, seq: 1 },
          });
          await store.finalizeStale(Date.now(), chat.id);
          bus.publish({ type: "reply_end", chatId: chat.id, traceId: `s${step}`, seq: 2, status: "interrupted" });
        }
        for (const limit of [1, 3, 7]) {
          const want = await store.pageMessages(chat.id, { limit });
          const got = await recent.newest(chat.id, limit);
          expect({ seed, step, limit, ...got }).toEqual({ seed, step, limit, ...want });
        }
      }
      expect(recent.stats().chats).toBe(1);
      // Deleted: nothing kept, and the store's answer (empty) is what comes back.
      await store.deleteChat(owner, chat.id);
      bus.publish({ type: "chat_deleted", owner, chatId: chat.id });
      expect(recent.stats().chats).toBe(0);
      expect(await recent.newest(chat.id, 3)).toEqual({ items: [] });
      recent.stop();
    }
  });

  test("a store read that races a change is answered but not kept; a message stored before but never announced is read again after messages_changed", async () => {
    const bus = localBus();
    // A store whose page reads answer late: the read is made at once, its answer held until `open`.
    let gate = Promise.resolve();
    const slow: Store = {
      ...store,
      pageMessages: async (...a) => {
        const page = await store.pageMessages(...a);
        await gate;
        return page;
      },
    };
    const recent = recentMessages(slow, bus, { perChat: 10, maxChars: 1_000_000, ttlMs: 60_000 });
    const chat = { id: crypto.randomUUID(), name: "race", active: true, created_at: at(0), updated_at: at(0) };
    await store.createChat("default", chat);
    const first: Message = { id: "a", chat_id: chat.id, role: "user", content: "a", created_at: at(1) };
    await store.addMessage(first);
    // The read is made, then a question lands and is announced before its answer comes back.
    let open!: () => void;
    gate = new Promise<void>((r) => (open = r));
    const reading = recent.newest(chat.id, 10);
    const second: Message = { id: "b", chat_id: chat.id, role: "user", content: "b", created_at: at(2) };
    await store.addMessage(second);
    bus.publish({ type: "user_message", owner: "default", message: second });
    open();
    // Answered as read (it started before the question), but not kept: it missed the question.
    expect((await reading).items.map((m) => m.id)).toEqual(["a"]);
    expect(recent.stats().chats).toBe(0);
    expect((await recent.newest(chat.id, 10)).items.map((m) => m.id)).toEqual(["a", "b"]);
    // Written by a process that died before announcing it: invisible to what is kept...
    await store.addMessage({ id: "c", chat_id: chat.id, role: "user", content: "c", created_at: at(3) });
    expect((await recent.newest(chat.id, 10)).items.map((m) => m.id)).toEqual(["a", "b"]);
    // ...until its resend says the chat's messages may differ.
    bus.publish({ type: "messages_changed", chatId: chat.id });
    expect((await recent.newest(chat.id, 10)).items.map((m) => m.id)).toEqual(["a", "b", "c"]);
    recent.stop();
  });

  test("bounded: past maxChars the least recently used chats go; one chat over a quarter of it is not kept; 0 turns it off", async () => {
    const bus = localBus();
    const recent = recentMessages(store, bus, { perChat: 5, maxChars: 4_000, ttlMs: 60_000 });
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const chat = { id: crypto.randomUUID(), name: `c${i}`, active: true, created_at: at(0), updated_at: at(0) };
      await store.createChat("default", chat);
      await store.addMessage({ id: "m", chat_id: chat.id, role: "user", content: "x".repeat(i === 5 ? 2_000 : 300), created_at: at(1) });
      ids.push(chat.id);
    }
    for (const id of ids.slice(0, 5)) await recent.newest(id, 5);
    expect(recent.stats().chats).toBe(5);
    expect(recent.stats().chars).toBeLessThanOrEqual(4_000);
    await recent.newest(ids[5]!, 5); // 2,200 characters with overhead: more than a quarter
    expect(recent.stats().chats).toBe(5);
    const off = recentMessages(store, bus, { perChat: 5, maxChars: 0, ttlMs: 60_000 });
    expect(await off.newest(ids[0]!, 5)).toEqual(await store.pageMessages(ids[0]!, { limit: 5 }));
    expect(off.stats().chats).toBe(0);
    recent.stop();
    off.stop();
  });
});
