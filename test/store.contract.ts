import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Chat, Message } from "../src/records";
import { nowIso } from "../src/chat/clock";
import type { Store } from "../src/store/store";

// One suite, every store: the SQLite default and Cosmos DB must be interchangeable.

export const chatFixture = (over: Partial<Chat> = {}): Chat => {
  const t = nowIso();
  return { id: crypto.randomUUID(), name: "New Chat", active: true, created_at: t, updated_at: t, ...over };
};

export const messageFixture = (chat_id: string, over: Partial<Message> = {}): Message => ({
  id: crypto.randomUUID(), chat_id, role: "user", content: "hello", created_at: nowIso(), ...over,
});

export function storeContract(name: string, open: () => Promise<{ store: Store; cleanup: () => Promise<void> }>) {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    let cleanup: () => Promise<void>;
    beforeAll(async () => ({ store, cleanup } = await open()));
    afterAll(async () => cleanup?.());

    test("ping answers", async () => {
      await store.ping();
    });

    test("a created chat reads back identically and lists first", async () => {
      const chat = chatFixture({ name: "contract 1" });
      await store.createChat(chat);
      expect(await store.getChat(chat.id)).toEqual(chat);
      const page = await store.listChats({ limit: 5 });
      expect(page.items[0]).toEqual(chat);
    });

    test("device chats keep device_id and are found by it; inactive ones are not", async () => {
      const deviceId = `pi-${crypto.randomUUID()}`;
      expect(await store.findDeviceChat(deviceId)).toBeUndefined();
      const old = chatFixture({ device_id: deviceId, active: false, name: deviceId });
      const current = chatFixture({ device_id: deviceId, name: deviceId });
      await store.createChat(old);
      await store.createChat(current);
      expect(await store.findDeviceChat(deviceId)).toEqual(current);
    });

    test("listChats pages newest-activity first with a cursor, no gaps or repeats", async () => {
      const made: Chat[] = [];
      for (let i = 0; i < 5; i++) {
        const c = chatFixture({ name: `page ${i}` });
        await store.createChat(c);
        made.push(c);
      }
      // Touch the oldest: activity, not creation, decides the order.
      const touched = { ...made[0]!, updated_at: nowIso() };
      expect(await store.updateChat(touched)).toBe(true);
      const seen: Chat[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.listChats({ limit: 2, cursor });
        expect(page.items.length).toBeLessThanOrEqual(2);
        seen.push(...page.items);
        cursor = page.cursor;
      } while (cursor);
      const ids = seen.map((c) => c.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids[0]).toBe(touched.id);
      for (const c of made) expect(ids).toContain(c.id);
      const times = seen.map((c) => c.updated_at);
      expect([...times].sort().reverse()).toEqual(times);
    });

    test("updateChat replaces; on a missing chat it returns false", async () => {
      const chat = chatFixture();
      await store.createChat(chat);
      const renamed = { ...chat, name: "Renamed", updated_at: nowIso() };
      expect(await store.updateChat(renamed)).toBe(true);
      expect(await store.getChat(chat.id)).toEqual(renamed);
      expect(await store.updateChat(chatFixture())).toBe(false);
    });

    test("messages: idempotent add, oldest first, limit keeps the newest, before pages back", async () => {
      const chat = chatFixture();
      await store.createChat(chat);
      const msgs: Message[] = [];
      for (let i = 0; i < 5; i++) {
        const m = messageFixture(chat.id, { content: `m${i}`, role: i % 2 ? "assistant" : "user" });
        expect(await store.addMessage(m)).toBe(true);
        msgs.push(m);
      }
      expect(await store.addMessage({ ...msgs[0]!, content: "changed" })).toBe(false);
      expect(await store.listMessages(chat.id, { limit: 100 })).toEqual(msgs);
      expect(await store.listMessages(chat.id, { limit: 2 })).toEqual(msgs.slice(3));
      expect(await store.listMessages(chat.id, { limit: 2, before: msgs[3]!.created_at })).toEqual(msgs.slice(1, 3));
    });

    test("putMessage creates, then replaces content and status", async () => {
      const chat = chatFixture();
      await store.createChat(chat);
      const reply = messageFixture(chat.id, { role: "assistant", content: "par", status: "incomplete" });
      await store.putMessage(reply);
      const done: Message = { id: reply.id, chat_id: chat.id, role: "assistant", content: "partial then whole", created_at: reply.created_at };
      await store.putMessage(done);
      expect(await store.listMessages(chat.id, { limit: 10 })).toEqual([done]);
    });

    test("the same message id in two chats is two messages", async () => {
      const a = chatFixture();
      const b = chatFixture();
      await store.createChat(a);
      await store.createChat(b);
      const id = crypto.randomUUID();
      expect(await store.addMessage(messageFixture(a.id, { id }))).toBe(true);
      expect(await store.addMessage(messageFixture(b.id, { id }))).toBe(true);
    });

    test("deleteChat removes the chat and its messages; a second delete is false", async () => {
      const chat = chatFixture();
      await store.createChat(chat);
      for (let i = 0; i < 3; i++) await store.addMessage(messageFixture(chat.id));
      expect(await store.deleteChat(chat.id)).toBe(true);
      expect(await store.getChat(chat.id)).toBeUndefined();
      expect(await store.listMessages(chat.id, { limit: 10 })).toEqual([]);
      expect(await store.deleteChat(chat.id)).toBe(false);
    });

    test("claimProcessed is true exactly once, even when raced", async () => {
      const id = crypto.randomUUID();
      const results = await Promise.all(Array.from({ length: 8 }, () => store.claimProcessed(id, 3600)));
      expect(results.filter(Boolean).length).toBe(1);
      expect(await store.claimProcessed(id, 3600)).toBe(false);
    });

    test("ownership: create-if-absent, then only with the current etag", async () => {
      const scope = `ns/hub/${crypto.randomUUID()}`;
      const first = await store.claimOwnership(scope, "0", "owner-a");
      expect(first?.ownerId).toBe("owner-a");
      expect(await store.claimOwnership(scope, "0", "owner-b")).toBeUndefined();
      expect(await store.claimOwnership(scope, "0", "owner-b", "stale-etag")).toBeUndefined();
      const second = await store.claimOwnership(scope, "0", "owner-b", first!.etag);
      expect(second?.ownerId).toBe("owner-b");
      expect(second?.etag).not.toBe(first!.etag);
      const listed = await store.listOwnership(scope);
      expect(listed).toEqual([second!]);
      expect(await store.listOwnership(`ns/hub/${crypto.randomUUID()}`)).toEqual([]);
    });

    test("checkpoints: last write wins per partition, scoped", async () => {
      const scope = `ns/hub/${crypto.randomUUID()}`;
      await store.putCheckpoint(scope, { partitionId: "0", sequenceNumber: 1, offset: "10" });
      await store.putCheckpoint(scope, { partitionId: "0", sequenceNumber: 2, offset: "20" });
      await store.putCheckpoint(scope, { partitionId: "1", sequenceNumber: 7, offset: "70" });
      const cps = (await store.listCheckpoints(scope)).sort((a, b) => a.partitionId.localeCompare(b.partitionId));
      expect(cps).toEqual([
        { partitionId: "0", sequenceNumber: 2, offset: "20" },
        { partitionId: "1", sequenceNumber: 7, offset: "70" },
      ]);
    });

    test("settings round-trip per owner", async () => {
      const owner = `owner-${crypto.randomUUID()}`;
      expect(await store.getSettings(owner)).toBeUndefined();
      await store.putSettings(owner, { systemPrompt: "Be brief.", temperature: 0.2 });
      await store.putSettings(owner, { systemPrompt: "Be kind.", temperature: 0.5 });
      expect(await store.getSettings(owner)).toEqual({ systemPrompt: "Be kind.", temperature: 0.5 });
    });
  });
}
