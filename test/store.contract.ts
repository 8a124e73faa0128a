import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Chat, Message } from "../src/records";
import { nowIso } from "../src/chat/clock";
import { interruptedOver } from "../src/chat/lease";
import { encodeCursor } from "../src/store/cursor";
import { InvalidCursorError } from "../src/store/errors";
import type { Store } from "../src/store/store";

// One suite, every store: the SQLite default and Cosmos DB must be interchangeable.

export const chatFixture = (over: Partial<Chat> = {}): Chat => {
  const t = nowIso();
  return { id: crypto.randomUUID(), name: "New Chat", active: true, created_at: t, updated_at: t, ...over };
};

export const messageFixture = (chat_id: string, over: Partial<Message> = {}): Message => ({
  id: crypto.randomUUID(),
  chat_id,
  role: "user",
  content: "hello",
  created_at: nowIso(),
  ...over,
});

/** A fixed timestamp `ms` after a base, for messages written straight to the store. */
export const isoAt = (ms: number, base = Date.parse("2025-03-14T09:00:00.000Z")) => new Date(base + ms).toISOString();

const byPosition = (a: Message, b: Message) =>
  a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;

/** Every page of a chat's history, newest page first, as the chat layer walks it. */
export async function allPages(store: Store, chatId: string, limit: number) {
  const pages: Message[][] = [];
  let cursor: string | undefined;
  do {
    const page = await store.pageMessages(chatId, { limit, cursor });
    expect(page.items.length).toBeLessThanOrEqual(limit);
    pages.push(page.items);
    cursor = page.cursor;
  } while (cursor);
  return pages;
}

const rejectsCursor = async (p: Promise<unknown>) =>
  expect(
    await p.then(
      () => "accepted",
      (e: unknown) => e,
    ),
  ).toBeInstanceOf(InvalidCursorError);

export function storeContract(name: string, open: () => Promise<{ store: Store; cleanup: () => Promise<void> }>) {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    let cleanup: () => Promise<void>;
    beforeAll(async () => ({ store, cleanup } = await open()));
    afterAll(async () => cleanup?.());

    test("ping answers", async () => {
      await expect(store.ping()).resolves.toBeUndefined();
    });

    test("a created chat reads back identically and lists first", async () => {
      const chat = chatFixture({ name: "contract 1" });
      await store.createChat("default", chat);
      expect(await store.getChat("default", chat.id)).toEqual(chat);
      const page = await store.listChats("default", { limit: 5 });
      expect(page.items[0]).toEqual(chat);
    });

    test("device chats keep device_id and are found by it; inactive ones are not", async () => {
      const deviceId = `pi-${crypto.randomUUID()}`;
      expect(await store.findDeviceChat("default", deviceId)).toBeUndefined();
      const old = chatFixture({ device_id: deviceId, active: false, name: deviceId });
      const current = chatFixture({ device_id: deviceId, name: deviceId });
      await store.createChat("default", old);
      await store.createChat("default", current);
      expect(await store.findDeviceChat("default", deviceId)).toEqual(current);
    });

    test("a user's devices: their active device chats (not others', not plain chats) and the devices assigned to them", async () => {
      const alice = `u-${crypto.randomUUID()}`;
      const bob = `u-${crypto.randomUUID()}`;
      const kitchen = chatFixture({ device_id: `pi-k-${crypto.randomUUID()}`, name: "kitchen" });
      const gone = chatFixture({ device_id: `pi-g-${crypto.randomUUID()}`, active: false });
      await store.createChat(alice, kitchen);
      await store.createChat(alice, gone);
      await store.createChat(alice, chatFixture());
      await store.createChat(bob, chatFixture({ device_id: `pi-b-${crypto.randomUUID()}` }));
      expect(await store.listDeviceChats(alice)).toEqual([kitchen]);
      const hall = `pi-h-${crypto.randomUUID()}`;
      await store.assignDevice(hall, alice);
      await store.assignDevice(`pi-x-${crypto.randomUUID()}`, bob);
      expect(await store.assignedDevices(alice)).toEqual([hall]);
      await store.assignDevice(hall, bob);
      expect(await store.assignedDevices(alice)).toEqual([]);
    });

    test("listChats pages newest-activity first with a cursor, no gaps or repeats", async () => {
      const made: Chat[] = [];
      for (let i = 0; i < 5; i++) {
        const c = chatFixture({ name: `page ${i}` });
        await store.createChat("default", c);
        made.push(c);
      }
      // Touch the oldest: activity, not creation, decides the order.
      const touched = { ...made[0]!, updated_at: nowIso() };
      expect(await store.patchChat("default", touched.id, { updated_at: touched.updated_at })).toEqual(touched);
      const seen: Chat[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.listChats("default", { limit: 2, cursor });
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

    test("a chat is its owner's only: another owner cannot read, list, find, patch or delete it", async () => {
      const [alice, bob] = [`alice-${crypto.randomUUID()}`, `bob-${crypto.randomUUID()}`];
      const deviceId = `pi-${crypto.randomUUID()}`;
      const chat = chatFixture({ name: "alice's", device_id: deviceId });
      await store.createChat(alice, chat);
      const m = messageFixture(chat.id, { content: "private" });
      await store.addMessage(m);
      expect(await store.getChat(bob, chat.id)).toBeUndefined();
      expect((await store.listChats(bob, { limit: 50 })).items).toEqual([]);
      expect(await store.findDeviceChat(bob, deviceId)).toBeUndefined();
      expect(await store.patchChat(bob, chat.id, { name: "taken" })).toBeUndefined();
      expect(await store.deleteChat(bob, chat.id)).toBe(false);
      // Untouched, messages included.
      expect(await store.getChat(alice, chat.id)).toEqual(chat);
      expect((await store.listChats(alice, { limit: 50 })).items).toEqual([chat]);
      expect(await store.findDeviceChat(alice, deviceId)).toEqual(chat);
      expect((await store.pageMessages(chat.id, { limit: 10 })).items).toEqual([m]);
      expect(await store.deleteChat(alice, chat.id)).toBe(true);
      expect(await store.getChat(alice, chat.id)).toBeUndefined();
    });

    test("messages: idempotent add, oldest first, limit keeps the newest, before pages back", async () => {
      const chat = chatFixture();
      await store.createChat("default", chat);
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
      await store.createChat("default", chat);
      const reply = messageFixture(chat.id, { role: "assistant", content: "par", status: "incomplete" });
      await store.putMessage(reply);
      const done: Message = {
        id: reply.id,
        chat_id: chat.id,
        role: "assistant",
        content: "partial then whole",
        created_at: reply.created_at,
      };
      await store.putMessage(done);
      expect(await store.listMessages(chat.id, { limit: 10 })).toEqual([done]);
    });

    test("the same message id in two chats is two messages", async () => {
      const a = chatFixture();
      const b = chatFixture();
      await store.createChat("default", a);
      await store.createChat("default", b);
      const id = crypto.randomUUID();
      expect(await store.addMessage(messageFixture(a.id, { id }))).toBe(true);
      expect(await store.addMessage(messageFixture(b.id, { id }))).toBe(true);
    });

    test("deleteChat removes the chat and its messages; a second delete is false", async () => {
      const chat = chatFixture();
      await store.createChat("default", chat);
      for (let i = 0; i < 3; i++) await store.addMessage(messageFixture(chat.id));
      expect(await store.deleteChat("default", chat.id)).toBe(true);
      expect(await store.getChat("default", chat.id)).toBeUndefined();
      expect(await store.listMessages(chat.id, { limit: 10 })).toEqual([]);
      expect(await store.deleteChat("default", chat.id)).toBe(false);
    });

    test('addQuestion stores a question with its chat\'s activity time; a known id is "exists" (nothing written); another owner\'s or a missing chat is "gone" (nothing left written)', async () => {
      const chat = chatFixture({ name: "asked", created_at: isoAt(1000), updated_at: isoAt(1000) });
      await store.createChat("default", chat);
      const q = messageFixture(chat.id, { content: "why?", created_at: isoAt(2000) });
      expect(await store.addQuestion("default", q)).toBe("added");
      expect((await store.getChat("default", chat.id))?.updated_at).toBe(isoAt(2000));
      expect(await store.addQuestion("default", { ...q, content: "again", created_at: isoAt(3000) })).toBe("exists");
      expect((await store.getChat("default", chat.id))?.updated_at).toBe(isoAt(2000));
      const foreign = messageFixture(chat.id, { content: "not mine" });
      expect(await store.addQuestion("someone-else", foreign)).toBe("gone");
      expect((await store.pageMessages(chat.id, { limit: 10 })).items).toEqual([q]);
      const orphan = messageFixture(crypto.randomUUID(), { content: "no chat" });
      expect(await store.addQuestion("default", orphan)).toBe("gone");
      expect((await store.pageMessages(orphan.chat_id, { limit: 10 })).items).toEqual([]);
    });

    test("touchChat moves only updated_at, in one call; a missing or another owner's chat is false and untouched", async () => {
      const chat = chatFixture({ name: "touched", created_at: isoAt(1000), updated_at: isoAt(1000) });
      await store.createChat("default", chat);
      expect(await store.touchChat("default", chat.id, isoAt(3000))).toBe(true);
      expect(await store.getChat("default", chat.id)).toStrictEqual({ ...chat, updated_at: isoAt(3000) });
      expect(await store.touchChat("someone-else", chat.id, isoAt(9000))).toBe(false);
      expect(await store.touchChat("default", crypto.randomUUID(), isoAt(9000))).toBe(false);
      expect(await store.getChat("default", chat.id)).toStrictEqual({ ...chat, updated_at: isoAt(3000) });
      // Activity now puts it first in its owner's list.
      expect(await store.touchChat("default", chat.id, nowIso())).toBe(true);
      expect((await store.listChats("default", { limit: 1 })).items[0]?.id).toBe(chat.id);
    });

    test("patchChat changes only the named fields; updated_at never moves backwards; a missing chat is undefined", async () => {
      const chat = chatFixture({ created_at: isoAt(0), updated_at: isoAt(1000) });
      await store.createChat("default", chat);
      const renamed = await store.patchChat("default", chat.id, { name: "Renamed" });
      expect(renamed).toStrictEqual({ ...chat, name: "Renamed" });
      expect(await store.patchChat("default", chat.id, { updated_at: isoAt(2000) })).toStrictEqual({
        ...chat,
        name: "Renamed",
        updated_at: isoAt(2000),
      });
      // An older activity time (a late writer) is ignored; the name still lands.
      expect(await store.patchChat("default", chat.id, { name: "Again", updated_at: isoAt(1500) })).toStrictEqual({
        ...chat,
        name: "Again",
        updated_at: isoAt(2000),
      });
      expect(await store.getChat("default", chat.id)).toStrictEqual({ ...chat, name: "Again", updated_at: isoAt(2000) });
      expect(await store.patchChat("default", crypto.randomUUID(), { name: "x" })).toBeUndefined();
    });

    test("patchChat: a rename racing an activity update keeps both (20 trials)", async () => {
      for (let i = 0; i < 20; i++) {
        const chat = chatFixture({ created_at: isoAt(0), updated_at: isoAt(0) });
        await store.createChat("default", chat);
        await Promise.all([
          store.patchChat("default", chat.id, { name: `rename ${i}`, updated_at: isoAt(10) }),
          store.patchChat("default", chat.id, { updated_at: isoAt(20) }),
          store.patchChat("default", chat.id, { updated_at: isoAt(5) }),
        ]);
        expect(await store.getChat("default", chat.id)).toStrictEqual({ ...chat, name: `rename ${i}`, updated_at: isoAt(20) });
      }
    });

    test("deleteChat of a missing chat is false and leaves other chats alone", async () => {
      const keep = chatFixture();
      await store.createChat("default", keep);
      const m = messageFixture(keep.id);
      await store.addMessage(m);
      expect(await store.deleteChat("default", crypto.randomUUID())).toBe(false);
      expect(await store.listMessages(keep.id, { limit: 10 })).toStrictEqual([m]);
    });

    test("pageMessages: messages sharing one created_at come back exactly once, in (created_at, id) order", async () => {
      const chat = chatFixture();
      await store.createChat("default", chat);
      const made: Message[] = [];
      // Eleven messages on three timestamps, written in an order unrelated to their ids.
      for (let i = 0; i < 11; i++) {
        const m = messageFixture(chat.id, {
          id: `m-${(i * 7) % 11}-${crypto.randomUUID().slice(0, 4)}`,
          created_at: isoAt(i < 2 ? 0 : i < 9 ? 1 : 2),
          content: `c${i}`,
        });
        expect(await store.addMessage(m)).toBe(true);
        made.push(m);
      }
      const ordered = [...made].sort(byPosition);
      for (const limit of [1, 2, 3, 4, 11]) {
        const pages = await allPages(store, chat.id, limit);
        // Pages come newest first; each page is oldest first.
        expect(pages.reverse().flat()).toStrictEqual(ordered);
      }
      // Exactly `limit` messages in all: no cursor, since nothing older exists.
      expect((await store.pageMessages(chat.id, { limit: 11 })).cursor).toBeUndefined();
      expect((await store.pageMessages(chat.id, { limit: 10 })).cursor).toBeString();
      // listMessages keeps its signature, now in the same order.
      expect(await store.listMessages(chat.id, { limit: 100 })).toStrictEqual(ordered);
      expect(await store.listMessages(chat.id, { limit: 3 })).toStrictEqual(ordered.slice(-3));
      // `before` (older clients) still selects messages strictly older than a timestamp.
      expect((await store.pageMessages(chat.id, { limit: 100, before: isoAt(1) })).items).toStrictEqual(ordered.slice(0, 2));
      expect(await store.pageMessages(crypto.randomUUID(), { limit: 5 })).toStrictEqual({ items: [] });
    });

    test("cursors this store did not issue are InvalidCursorError, for history and chat lists", async () => {
      const chat = chatFixture();
      const other = chatFixture();
      await store.createChat("default", chat);
      await store.createChat("default", other);
      for (let i = 0; i < 3; i++) {
        await store.addMessage(messageFixture(chat.id, { created_at: isoAt(i) }));
        await store.addMessage(messageFixture(other.id, { created_at: isoAt(i) }));
      }
      const issued = (await store.pageMessages(chat.id, { limit: 1 })).cursor!;
      expect((await store.pageMessages(chat.id, { limit: 1, cursor: issued })).items.length).toBe(1);
      const chatsCursor = (await store.listChats("default", { limit: 1 })).cursor!;
      const forged = [
        encodeCursor(["a", "b", "c"]), // three arbitrary strings
        encodeCursor([isoAt(0), isoAt(0), crypto.randomUUID()]), // the old, untagged chat-list shape
        encodeCursor(["messages", chat.id, "yesterday", "m-1"]),
        encodeCursor(["messages", chat.id, isoAt(0), "a/b"]),
        encodeCursor(["messages", chat.id, isoAt(0), ""]),
        encodeCursor(["messages", "not-a-uuid", isoAt(0), "m-1"]),
        encodeCursor(["messages", chat.id, isoAt(0), "m-1", "extra"]),
        "not base64 at all!",
        "",
        "W10",
        "bnVsbA",
        chatsCursor, // a chat-list cursor is not a history cursor
        (await store.pageMessages(other.id, { limit: 1 })).cursor!, // nor another chat's
      ];
      for (const cursor of forged) await rejectsCursor(store.pageMessages(chat.id, { limit: 5, cursor }));
      const forgedChats = [
        encodeCursor(["a", "b", "c"]),
        encodeCursor([isoAt(0), isoAt(0), crypto.randomUUID()]),
        encodeCursor(["chats", isoAt(0), isoAt(0), "not-a-uuid"]),
        encodeCursor(["chats", "later", isoAt(0), crypto.randomUUID()]),
        issued, // a history cursor is not a chat-list cursor
        "%%%",
      ];
      for (const cursor of forgedChats) await rejectsCursor(store.listChats("default", { limit: 5, cursor }));
      expect((await store.listChats("default", { limit: 1, cursor: chatsCursor })).items.length).toBe(1);
    });

    test("parent_id and lease persist and read back exactly as written; findReply finds the reply to a question", async () => {
      const chat = chatFixture();
      const other = chatFixture();
      await store.createChat("default", chat);
      await store.createChat("default", other);
      const question = messageFixture(chat.id, { created_at: isoAt(0) });
      await store.addMessage(question);
      expect(await store.findReply(chat.id, question.id)).toBeUndefined();
      const streaming: Message = {
        id: crypto.randomUUID(),
        chat_id: chat.id,
        role: "assistant",
        content: "par",
        created_at: isoAt(1),
        status: "streaming",
        parent_id: question.id,
        lease: { owner: "replica-a", until: Date.now() + 60_000, seq: 3 },
      };
      await store.putMessage(streaming);
      expect(await store.findReply(chat.id, question.id)).toStrictEqual(streaming);
      expect(await store.findReply(other.id, question.id)).toBeUndefined();
      expect(await store.listMessages(chat.id, { limit: 10 })).toStrictEqual([question, streaming]);
      // Finalised: the lease goes with the status.
      const done: Message = {
        id: streaming.id,
        chat_id: chat.id,
        role: "assistant",
        content: "partial, then whole",
        created_at: isoAt(1),
        parent_id: question.id,
      };
      await store.putMessage(done);
      expect(await store.findReply(chat.id, question.id)).toStrictEqual(done);
      expect((await store.pageMessages(chat.id, { limit: 10 })).items).toStrictEqual([question, done]);
      // A user message pointing at the question is not a reply.
      await store.addMessage(messageFixture(other.id, { parent_id: question.id }));
      expect(await store.findReply(other.id, question.id)).toBeUndefined();
    });

    test("finalizeStale interrupts only lapsed streaming replies (text kept, lease gone), once, per chat when asked", async () => {
      const now = Date.now();
      const a = chatFixture();
      const b = chatFixture();
      await store.createChat("default", a);
      await store.createChat("default", b);
      const stream = (chat_id: string, until: number, content: string, created_at: string): Message => ({
        id: crypto.randomUUID(),
        chat_id,
        role: "assistant",
        content,
        created_at,
        status: "streaming",
        lease: { owner: "dead-replica", until, seq: 2 },
      });
      const lapsed = stream(a.id, now - 1000, "  half a reply\n", isoAt(1));
      const alive = stream(a.id, now + 60_000, "still going", isoAt(2));
      const elsewhere = stream(b.id, now - 1000, "other chat", isoAt(1));
      const finished = messageFixture(a.id, { role: "assistant", created_at: isoAt(0) });
      for (const m of [lapsed, alive, elsewhere, finished]) await store.putMessage(m);

      const { lease: _l, ...rest } = lapsed;
      const interrupted: Message = { ...rest, status: "interrupted" };
      // Two callers racing: each stale reply is finalised (and returned) exactly once.
      const [x, y] = await Promise.all([store.finalizeStale(now, a.id), store.finalizeStale(now, a.id)]);
      expect([...x!, ...y!]).toStrictEqual([interrupted]);
      expect(await store.listMessages(a.id, { limit: 10 })).toStrictEqual([finished, interrupted, alive]);
      expect(await store.listMessages(b.id, { limit: 10 })).toStrictEqual([elsewhere]);
      expect(await store.finalizeStale(now, a.id)).toStrictEqual([]);
      // Without a chat: every chat's (a maintenance sweep).
      const swept = await store.finalizeStale(now);
      expect(swept.map((m) => m.id)).toContain(elsewhere.id);
      expect(swept.map((m) => m.id)).not.toContain(alive.id);
      // Once its lease has run out, the other one goes too.
      expect((await store.finalizeStale(now + 120_000, a.id)).map((m) => m.id)).toStrictEqual([alive.id]);
    });

    test("rewriteMessage is a compare-and-set: concurrent read-modify-writes of one message lose no update (10 trials × 6 writers)", async () => {
      const chat = chatFixture();
      await store.createChat("default", chat);
      for (let trial = 0; trial < 10; trial++) {
        const id = crypto.randomUUID();
        const base = messageFixture(chat.id, { id, role: "assistant", content: "" });
        // Six writers, each appending its letter to whatever is stored (absent: created with it).
        const written = await Promise.all(
          ["a", "b", "c", "d", "e", "f"].map((letter) =>
            store.rewriteMessage(chat.id, id, (cur) => ({ ...(cur ?? base), content: (cur?.content ?? "") + letter })),
          ),
        );
        const stored = (await store.listMessages(chat.id, { limit: 100 })).find((m) => m.id === id)!;
        expect([...stored.content].sort().join("")).toBe("abcdef");
        expect(written.every((m) => m !== undefined)).toBe(true);
      }
      // `next` answering undefined writes nothing.
      const none = crypto.randomUUID();
      expect(await store.rewriteMessage(chat.id, none, () => undefined)).toBeUndefined();
      expect((await store.listMessages(chat.id, { limit: 100 })).some((m) => m.id === none)).toBe(false);
    });

    test("an orphaned reply finalised by several survivors at once is stored once, interrupted, with the longest text any of them saw (10 trials)", async () => {
      const chat = chatFixture();
      await store.createChat("default", chat);
      const now = Date.now();
      for (let trial = 0; trial < 10; trial++) {
        const id = crypto.randomUUID();
        const orphan = (content: string): Message => ({
          id,
          chat_id: chat.id,
          role: "assistant",
          content,
          created_at: isoAt(trial),
          parent_id: "q",
        });
        // Odd trials: a checkpoint whose lease lapsed was stored first (shorter than what survivors saw).
        if (trial % 2) await store.putMessage({ ...orphan("w0 "), status: "streaming", lease: { owner: "dead", until: now - 1, seq: 1 } });
        const texts = ["w0 w1 ", "w0 w1 w2 w3 ", "w0 w1 w2 "];
        // Each survivor's last decision is the one that counted (a lost race asks again).
        const outcomes = await Promise.all(
          texts.map(async (t) => {
            let last = "";
            await store.rewriteMessage(chat.id, id, (cur) => {
              const d = interruptedOver(cur, orphan(t), now);
              last = d.outcome;
              return d.write;
            });
            return last;
          }),
        );
        const stored = (await store.listMessages(chat.id, { limit: 100 })).filter((m) => m.id === id);
        expect(stored).toStrictEqual([{ ...orphan("w0 w1 w2 w3 "), status: "interrupted" }]);
        // Exactly one survivor's write was the first (it announces the end); the others only lengthened or kept it.
        expect(outcomes.filter((x) => x === "first")).toHaveLength(1);
        expect(outcomes.filter((x) => x !== "first").every((x) => x === "longer" || x === "kept")).toBe(true);
        const settled = await store.rewriteMessage(chat.id, id, (cur) => interruptedOver(cur, orphan("w0 "), now).write);
        expect(settled).toBeUndefined();
      }
      // Never over a finished reply, nor over a checkpoint whose lease still runs.
      const done = messageFixture(chat.id, { role: "assistant", content: "all of it" });
      await store.putMessage(done);
      expect(
        await store.rewriteMessage(chat.id, done.id, (cur) => interruptedOver(cur, { ...done, content: "all of it and more" }, now).write),
      ).toBeUndefined();
      const alive: Message = {
        ...messageFixture(chat.id, { role: "assistant", content: "going" }),
        status: "streaming",
        lease: { owner: "r1", until: now + 60_000, seq: 1 },
      };
      await store.putMessage(alive);
      expect(interruptedOver(alive, { ...alive, content: "going on" }, now).outcome).toBe("alive");
      expect(
        await store.rewriteMessage(chat.id, alive.id, (cur) => interruptedOver(cur, { ...alive, content: "going on" }, now).write),
      ).toBeUndefined();
    });

    test("claims: claimed, held by another, reclaimed after the lease lapses, renewed only by the owner, done when completed", async () => {
      const id = `device-msg-${crypto.randomUUID()}`;
      expect(await store.claimMessage(id, "a", 60_000)).toBe("claimed");
      expect(await store.claimMessage(id, "b", 60_000)).toBe("held");
      expect(await store.claimMessage(id, "a", 60_000)).toBe("claimed"); // its own claim again
      expect(await store.renewClaim(id, "a", 60_000)).toBe(true);
      expect(await store.renewClaim(id, "b", 60_000)).toBe(false);
      // A lease already over (negative length): the next claimer takes it.
      expect(await store.claimMessage(id, "a", -1)).toBe("claimed");
      expect(await store.claimMessage(id, "b", 60_000)).toBe("claimed");
      expect(await store.renewClaim(id, "a", 60_000)).toBe(false);
      await store.completeClaim(id, "a", 3600); // not a's any more: no effect
      expect(await store.claimMessage(id, "c", 60_000)).toBe("held");
      await store.completeClaim(id, "b", 3600);
      expect(await store.claimMessage(id, "c", 60_000)).toBe("done");
      expect(await store.claimMessage(id, "b", 60_000)).toBe("done");
      expect(await store.renewClaim(id, "b", 60_000)).toBe(false);
      expect(await store.claimProcessed(id, 3600)).toBe(false);
      // An id recorded by claimProcessed is done for claimers too.
      const old = `device-msg-${crypto.randomUUID()}`;
      expect(await store.claimProcessed(old, 3600)).toBe(true);
      expect(await store.claimMessage(old, "a", 60_000)).toBe("done");
      // A done record that expired can be claimed again.
      const expired = `device-msg-${crypto.randomUUID()}`;
      expect(await store.claimMessage(expired, "a", 60_000)).toBe("claimed");
      await store.completeClaim(expired, "a", -1);
      expect(await store.claimMessage(expired, "b", 60_000)).toBe("claimed");
      // Completing an id never claimed (its record purged meanwhile) still records it.
      const purged = `device-msg/${crypto.randomUUID()}`;
      await store.completeClaim(purged, "a", 3600);
      expect(await store.claimMessage(purged, "b", 60_000)).toBe("done");
    });

    test("claimMessage raced by 8 owners: exactly one claims", async () => {
      for (let trial = 0; trial < 20; trial++) {
        const id = crypto.randomUUID();
        const results = await Promise.all(Array.from({ length: 8 }, (_, i) => store.claimMessage(id, `owner-${i}`, 60_000)));
        expect(results.filter((r) => r === "claimed").length).toBe(1);
        expect(results.filter((r) => r === "held").length).toBe(7);
      }
    });

    test("patchSettings merges (null removes, undefined leaves) and returns what is stored", async () => {
      const owner = `owner-${crypto.randomUUID()}`;
      expect(await store.patchSettings(owner, { systemPrompt: "Be brief." })).toStrictEqual({ systemPrompt: "Be brief." });
      expect(await store.patchSettings(owner, { temperature: 0.3, systemPrompt: undefined })).toStrictEqual({
        systemPrompt: "Be brief.",
        temperature: 0.3,
      });
      expect(await store.patchSettings(owner, { systemPrompt: null, model: "m" })).toStrictEqual({ temperature: 0.3, model: "m" });
      expect(await store.getSettings(owner)).toStrictEqual({ temperature: 0.3, model: "m" });
    });

    test("patchSettings: patches of different keys racing keep both (20 trials)", async () => {
      for (let i = 0; i < 20; i++) {
        const owner = `owner-${crypto.randomUUID()}`;
        if (i % 2) await store.putSettings(owner, { model: "before" });
        await Promise.all([
          store.patchSettings(owner, { systemPrompt: `prompt ${i}` }),
          store.patchSettings(owner, { temperature: i / 10 }),
          store.patchSettings(owner, { model: null }),
        ]);
        expect(await store.getSettings(owner)).toStrictEqual({ systemPrompt: `prompt ${i}`, temperature: i / 10 });
      }
    });

    test("content and names are stored byte for byte", async () => {
      const samples = [
        "  leading and trailing spaces  ",
        "\ttabs\tinside\t",
        "\n\nnewlines around\n\n",
        "```ts\n    const x = 1;\n\tindented();\n```\n",
        "CRLF line\r\nnext\r\n",
        "emoji 👩‍💻🎉 and é ü 中文",
        " ",
        "x".repeat(100_000),
      ];
      for (const text of samples) {
        const chat = chatFixture({ name: text.slice(0, 200) });
        await store.createChat("default", chat);
        expect(await store.getChat("default", chat.id)).toStrictEqual(chat);
        expect((await store.patchChat("default", chat.id, { name: ` ${text.slice(0, 150)}\t` }))?.name).toBe(` ${text.slice(0, 150)}\t`);
        const m = messageFixture(chat.id, { content: text });
        await store.addMessage(m);
        const [back] = await store.listMessages(chat.id, { limit: 1 });
        expect(back!.content === text).toBe(true);
        expect(back).toStrictEqual(m);
        const reply: Message = { ...messageFixture(chat.id, { role: "assistant", content: text }), parent_id: m.id };
        await store.putMessage(reply);
        expect((await store.findReply(chat.id, m.id))?.content === text).toBe(true);
      }
    });

    test("claimProcessed is true exactly once, even when raced", async () => {
      const id = crypto.randomUUID();
      const results = await Promise.all(Array.from({ length: 8 }, () => store.claimProcessed(id, 3600)));
      expect(results.filter(Boolean).length).toBe(1);
      expect(await store.claimProcessed(id, 3600)).toBe(false);
    });

    // A TTL of 0 expires the record the moment it is written, so expiry needs no clock and no sleep.
    test("claimProcessed: an expired record is claimed again and then holds; purgeProcessed drops expired records only", async () => {
      const id = `dev/msg?#${crypto.randomUUID()}`; // characters Cosmos forbids in ids
      expect(await store.claimProcessed(id, 0)).toBe(true);
      expect(await store.claimProcessed(id, 3600)).toBe(true); // expired: taken over
      expect(await store.claimProcessed(id, 3600)).toBe(false); // and now live for an hour
      const gone = crypto.randomUUID();
      expect(await store.claimProcessed(gone, 0)).toBe(true);
      expect(await store.purgeProcessed()).toBeGreaterThanOrEqual(1);
      expect(await store.purgeProcessed()).toBe(0);
      // The purge kept the live record and removed the expired one, which can be claimed afresh.
      expect(await store.claimProcessed(id, 3600)).toBe(false);
      expect(await store.claimProcessed(gone, 3600)).toBe(true);
      expect(await store.claimProcessed(gone, 3600)).toBe(false);
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

  // Branches (src/chat/branches.ts): a chat's `selected` message and the parents questions carry.
  describe(`Store contract: ${name}: branches`, () => {
    let store: Store;
    let cleanup: () => Promise<void>;
    beforeAll(async () => ({ store, cleanup } = await open()));
    afterAll(async () => cleanup?.());

    test("patchChat sets selected and changes nothing else; every read returns it; name and activity updates keep it; a chat never branched has none", async () => {
      const chat = chatFixture({ name: "branched", created_at: isoAt(0), updated_at: isoAt(1000) });
      const plain = chatFixture({ name: "plain", created_at: isoAt(0), updated_at: isoAt(500) });
      await store.createChat("default", chat);
      await store.createChat("default", plain);
      expect(await store.patchChat("default", chat.id, { selected: "m-1" })).toStrictEqual({ ...chat, selected: "m-1" });
      expect(await store.getChat("default", chat.id)).toStrictEqual({ ...chat, selected: "m-1" });
      expect(await store.patchChat("default", chat.id, { selected: "m-2", updated_at: isoAt(2000) })).toStrictEqual({
        ...chat,
        updated_at: isoAt(2000),
        selected: "m-2",
      });
      expect(await store.patchChat("default", chat.id, { name: "renamed" })).toStrictEqual({
        ...chat,
        name: "renamed",
        updated_at: isoAt(2000),
        selected: "m-2",
      });
      expect(await store.touchChat("default", chat.id, isoAt(3000))).toBe(true);
      const after = { ...chat, name: "renamed", updated_at: isoAt(3000), selected: "m-2" };
      expect(await store.getChat("default", chat.id)).toStrictEqual(after);
      expect((await store.listChats("default", { limit: 1000 })).items.filter((c) => c.id === chat.id || c.id === plain.id)).toStrictEqual([
        after,
        plain,
      ]);
      expect(await store.getChat("default", plain.id)).toStrictEqual(plain);
      // Another owner's chat is not there to patch.
      expect(await store.patchChat("someone-else", chat.id, { selected: "m-3" })).toBeUndefined();
      expect((await store.getChat("default", chat.id))?.selected).toBe("m-2");
    });

    test('a question\'s parent_id round-trips, "" (the top of the chat) included; listMessages reads a whole chat of replies and questions in order', async () => {
      const chat = chatFixture();
      await store.createChat("default", chat);
      const q1 = messageFixture(chat.id, { id: "q1", created_at: isoAt(0) });
      const a1 = messageFixture(chat.id, { id: "a1", role: "assistant", parent_id: "q1", created_at: isoAt(1) });
      const edit = messageFixture(chat.id, { id: "q1b", parent_id: "", created_at: isoAt(2) });
      const a2 = messageFixture(chat.id, { id: "a1b", role: "assistant", parent_id: "q1", created_at: isoAt(3) });
      const q2 = messageFixture(chat.id, { id: "q2", parent_id: "a1b", created_at: isoAt(4) });
      for (const m of [q1, a1, edit, a2, q2]) expect(await store.addMessage(m)).toBe(true);
      expect(await store.listMessages(chat.id, { limit: 2000 })).toStrictEqual([q1, a1, edit, a2, q2]);
      expect(await store.findReply(chat.id, "q1")).toStrictEqual(a2);
      expect(await store.deleteChat("default", chat.id)).toBe(true);
      expect(await store.listMessages(chat.id, { limit: 2000 })).toEqual([]);
    });

    test("folders, pins and placements are per owner; a pin and a move of the same chat both land", async () => {
      const owner = `org-${crypto.randomUUID()}`;
      const f1 = { id: crypto.randomUUID(), name: "Work", created_at: isoAt(0) };
      const f2 = { id: crypto.randomUUID(), name: "Home", created_at: isoAt(1) };
      await store.createFolder(owner, f2);
      await store.createFolder(owner, f1);
      expect(await store.listFolders(owner)).toStrictEqual([f1, f2]);
      expect(await store.listFolders("someone-else")).toStrictEqual([]);
      expect(await store.renameFolder("someone-else", f1.id, "x")).toBeUndefined();
      expect(await store.renameFolder(owner, f1.id, "Work 2")).toStrictEqual({ ...f1, name: "Work 2" });
      const a = crypto.randomUUID();
      const b = crypto.randomUUID();
      await Promise.all([store.setPinned(owner, a, true), store.setFolder(owner, a, f1.id), store.setFolder(owner, b, f2.id)]);
      const sorted = async (o: string) => (await store.listMarks(o)).sort((x, y) => x.chat_id.localeCompare(y.chat_id));
      expect(await sorted(owner)).toStrictEqual(
        [
          { chat_id: a, pinned: true, folder_id: f1.id },
          { chat_id: b, pinned: false, folder_id: f2.id },
        ].sort((x, y) => x.chat_id.localeCompare(y.chat_id)),
      );
      expect(await store.listMarks("someone-else")).toStrictEqual([]);
      // Another owner cannot delete the folder; its owner's delete unfiles its chats.
      expect(await store.deleteFolder("someone-else", f2.id)).toBe(false);
      expect(await store.deleteFolder(owner, f2.id)).toBe(true);
      expect(await store.deleteFolder(owner, f2.id)).toBe(false);
      expect(await sorted(owner)).toStrictEqual([{ chat_id: a, pinned: true, folder_id: f1.id }]);
      await store.setPinned(owner, a, false);
      expect(await sorted(owner)).toStrictEqual([{ chat_id: a, pinned: false, folder_id: f1.id }]);
      await store.setPinned(owner, a, true);
      await store.forgetChat(owner, a);
      expect(await sorted(owner)).toStrictEqual([]);
      // Twenty chats, each pinned, moved and rated at once: no write is lost to another.
      const chats = Array.from({ length: 20 }, () => crypto.randomUUID());
      await Promise.all(
        chats.flatMap((id, i) => [
          store.setPinned(owner, id, true),
          store.setFolder(owner, id, i % 2 ? f1.id : `f-${i}`),
          store.putFeedback({
            user_id: owner,
            chat_id: id,
            message_id: "r",
            rating: "up",
            model: "m",
            created_at: isoAt(0),
            updated_at: isoAt(1),
          }),
        ]),
      );
      const raced = await sorted(owner);
      expect(raced.length).toBe(20);
      for (const [i, id] of chats.entries())
        expect(raced.find((m) => m.chat_id === id)).toStrictEqual({ chat_id: id, pinned: true, folder_id: i % 2 ? f1.id : `f-${i}` });
      for (const id of chats) expect((await store.chatFeedback(owner, id)).length).toBe(1);
    });

    test("feedback: one per user and reply, replaced on change, per user, listed for export by time", async () => {
      const chat = crypto.randomUUID();
      const user = `fb-${crypto.randomUUID()}`;
      const since = nowIso();
      const up = {
        user_id: user,
        chat_id: chat,
        message_id: "r/1?",
        rating: "up" as const,
        model: "m1",
        created_at: isoAt(0),
        updated_at: nowIso(),
      };
      await store.putFeedback(up);
      expect(await store.chatFeedback(user, chat)).toStrictEqual([up]);
      const down = { ...up, rating: "down" as const, comment: "wrong date", updated_at: nowIso() };
      await store.putFeedback(down);
      expect(await store.chatFeedback(user, chat)).toStrictEqual([down]);
      expect(await store.chatFeedback("someone-else", chat)).toStrictEqual([]);
      const other = { ...up, user_id: `${user}-2`, updated_at: nowIso() };
      await store.putFeedback(other);
      const listed = (await store.listFeedback({ since })).filter((f) => f.chat_id === chat);
      expect(listed).toStrictEqual([down, other]);
      expect(await store.removeFeedback("someone-else", chat, "r/1?")).toBe(false);
      expect(await store.removeFeedback(user, chat, "r/1?")).toBe(true);
      expect(await store.chatFeedback(user, chat)).toStrictEqual([]);
      await store.putFeedback(down);
      await store.forgetChat(user, chat);
      expect(await store.chatFeedback(user, chat)).toStrictEqual([]);
    });

    test("shares: read by id by anyone, listed and deleted by their owner only", async () => {
      const owner = `sh-${crypto.randomUUID()}`;
      const chat = crypto.randomUUID();
      const messages = [messageFixture(chat, { id: "q" }), messageFixture(chat, { id: "a", role: "assistant", content: "**hi**" })];
      const share = { id: crypto.randomUUID(), owner, chat_id: chat, name: "n", public: false, up_to: "a", messages, created_at: isoAt(0) };
      const second = { ...share, id: crypto.randomUUID(), public: true, up_to: undefined, created_at: isoAt(1) };
      delete (second as { up_to?: string }).up_to;
      await store.createShare(share);
      await store.createShare(second);
      expect(await store.getShare(share.id)).toStrictEqual(share);
      expect(await store.getShare(second.id)).toStrictEqual(second);
      expect(await store.listShares(owner)).toStrictEqual([
        { ...second, messages: [] },
        { ...share, messages: [] },
      ]);
      expect(await store.listShares("someone-else")).toStrictEqual([]);
      expect(await store.deleteShare("someone-else", share.id)).toBe(false);
      expect(await store.getShare(share.id)).toStrictEqual(share);
      expect(await store.deleteShare(owner, share.id)).toBe(true);
      expect(await store.getShare(share.id)).toBeUndefined();
      expect(await store.deleteChatShares(owner, chat)).toBe(1);
      expect(await store.getShare(second.id)).toBeUndefined();
    });

    test("temporary marks: listed with the chat's marks, due when expired or not renewed, renewals bounded by the expiry, kept on unmark", async () => {
      const owner = `tmp-${crypto.randomUUID()}`;
      const [a, b, c] = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];
      const base = Date.now() + 3_600_000; // later than any other test's marks
      const at = (s: number) => new Date(base + s * 1000).toISOString();
      await store.markTemporary(owner, a, at(100), at(10));
      await store.markTemporary(owner, b, at(100), at(50));
      await store.markTemporary(owner, c, at(5), at(50));
      await store.setPinned(owner, a, true);
      const marks = (await store.listMarks(owner)).sort((x, y) => x.chat_id.localeCompare(y.chat_id));
      expect(marks).toStrictEqual(
        [
          { chat_id: a, pinned: true, expires_at: at(100) },
          { chat_id: b, pinned: false, expires_at: at(100) },
          { chat_id: c, pinned: false, expires_at: at(5) },
        ].sort((x, y) => x.chat_id.localeCompare(y.chat_id)),
      );
      const due = async (s: number) =>
        (await store.dueTemporary(at(s)))
          .filter((d) => d.owner === owner)
          .map((d) => d.chat_id)
          .sort();
      expect(await due(1)).toEqual([]);
      expect(await due(6)).toEqual([c]);
      expect(await due(20)).toEqual([a, c].sort());
      // Renewed: alive until 60 s, but never past its own expiry (c expires at 5 s).
      await store.renewTemporary(owner, at(60));
      expect(await due(20)).toEqual([c]);
      expect(await due(55)).toEqual([c]);
      expect(await due(61)).toEqual([a, b, c].sort());
      expect(await store.unmarkTemporary("someone-else", a)).toBe(false);
      expect(await store.unmarkTemporary(owner, a)).toBe(true);
      expect(await store.unmarkTemporary(owner, a)).toBe(false);
      expect(await due(200)).toEqual([b, c].sort());
      expect((await store.listMarks(owner)).find((m) => m.chat_id === a)).toStrictEqual({ chat_id: a, pinned: true });
      await store.forgetChat(owner, b);
      expect(await due(200)).toEqual([c]);
    });
  });
}
