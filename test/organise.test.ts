import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { addUser } from "./support/users";
import type { Frame, TestClient } from "./support/ws-client";

// Pins, folders and ratings over real sockets on both stores: CHAT_LIST order and filters, the
// owner's other sockets told, search limited to a folder, ratings in history, export and /metrics,
// and another user's ids answered exactly like missing ones.

const LEGACY = "legacy-token-7d2e9a1b3c5f4e6a8b0d";
const word = (prefix = "w") => `${prefix}${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;

let cosmos: CosmosTestServer;
beforeAll(async () => {
  cosmos = await startCosmosServer();
});
afterAll(async () => {
  await cosmos?.stop();
});

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`pins, folders and feedback on ${kind}`, () => {
    let store: Store | undefined;
    let srv: TestServer;
    beforeAll(async () => {
      if (kind === "cosmos") store = await openTestCosmosStore(cosmos, "pichat-organise");
      srv = await startTestServer({ API_TOKEN: LEGACY, CHAT_TITLES: "false" }, store ? { store } : {});
    });
    afterAll(async () => {
      await srv?.close();
      await store?.close();
    });

    const person = async () => {
      const u = await addUser(srv.store);
      return { ...u, c: await srv.connect({ token: u.token }), other: await srv.connect({ token: u.token }) };
    };
    const create = async (c: TestClient, name: string) => (await c.request({ type: "CREATE_CHAT", name }, "NEW_CHAT")).chat as Frame;
    const list = async (c: TestClient, payload: Frame = {}) => {
      const f = await c.request({ type: "GET_CHATS", ...payload }, "CHAT_LIST");
      expect(f.type).toBe("CHAT_LIST");
      return f;
    };
    const ids = (f: Frame) => (f.chats as Frame[]).map((c) => c.id);

    test("a pinned chat lists first, its socket siblings hear it; folders filter the list and are synced", async () => {
      const { c, other } = await person();
      const a = await create(c, "a");
      const b = await create(c, "b");
      const d = await create(c, "d");
      // Newest first before any pin, exactly as chats always listed (no new fields on a chat never organised).
      const before = await list(c);
      expect(ids(before)).toEqual([d.id, b.id, a.id]);
      expect(before.chats).toEqual([d, b, a]);

      const pinned = await c.request({ type: "PIN_CHAT", requestId: "p1", chatId: a.id }, "CHAT_UPDATED");
      expect(pinned).toMatchObject({ type: "CHAT_UPDATED", requestId: "p1", chat: { id: a.id, name: "a", pinned: true, folderId: null } });
      expect((await other.next((f) => f.type === "CHAT_UPDATED" && f.chat.id === a.id)).chat).toMatchObject({ pinned: true });
      expect(ids(await list(c))).toEqual([a.id, d.id, b.id]);
      // Paged one at a time: every chat once, pinned first.
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await list(c, { limit: 1, ...(cursor ? { cursor } : {}) });
        seen.push(...ids(page));
        cursor = page.cursor;
      } while (cursor);
      expect(seen).toEqual([a.id, d.id, b.id]);
      expect(ids(await list(c, { pinned: true }))).toEqual([a.id]);
      expect(ids(await list(c, { pinned: false }))).toEqual([d.id, b.id]);

      const made = await c.request({ type: "CREATE_FOLDER", name: "Work" }, "FOLDERS");
      const folder = made.folder as Frame;
      expect(made.folders).toEqual([folder]);
      expect(folder).toMatchObject({ name: "Work" });
      expect((await other.next("FOLDERS")).folders).toEqual([folder]);
      const moved = await c.request({ type: "MOVE_CHAT", chatId: b.id, folderId: folder.id }, "CHAT_UPDATED");
      expect(moved.chat).toMatchObject({ id: b.id, folderId: folder.id, pinned: false });
      expect((await other.next((f) => f.type === "CHAT_UPDATED" && f.chat.id === b.id)).chat.folderId).toBe(folder.id);
      await c.request({ type: "MOVE_CHAT", chatId: a.id, folderId: folder.id }, "CHAT_UPDATED");
      const inFolder = await list(c, { folderId: folder.id });
      expect(ids(inFolder)).toEqual([a.id, b.id]);
      expect(ids(await list(c, { folderId: folder.id, limit: 1 }))).toEqual([a.id]);
      const rest = await list(c, { folderId: folder.id, limit: 1, cursor: (await list(c, { folderId: folder.id, limit: 1 })).cursor });
      expect(ids(rest)).toEqual([b.id]);
      expect(rest.cursor).toBeUndefined();

      const renamed = await c.request({ type: "RENAME_FOLDER", folderId: folder.id, name: "Work stuff" }, "FOLDERS");
      expect(renamed.folder).toEqual({ ...folder, name: "Work stuff" });
      expect((await c.request({ type: "GET_FOLDERS" }, "FOLDERS")).folders).toEqual([{ ...folder, name: "Work stuff" }]);
      // Unpin, out of the folder, delete the folder: its chats stay, in no folder.
      expect((await c.request({ type: "PIN_CHAT", chatId: a.id, pinned: false }, "CHAT_UPDATED")).chat.pinned).toBe(false);
      expect((await c.request({ type: "MOVE_CHAT", chatId: a.id, folderId: null }, "CHAT_UPDATED")).chat.folderId).toBeNull();
      expect((await c.request({ type: "DELETE_FOLDER", folderId: folder.id }, "FOLDERS")).folders).toEqual([]);
      expect((await other.next((f) => f.type === "FOLDERS" && f.folders.length === 0)).folders).toEqual([]);
      const after = await list(c);
      expect(ids(after)).toEqual([d.id, b.id, a.id]);
      for (const chat of after.chats) expect(chat.pinned ?? false).toBe(false);
      for (const chat of after.chats) expect(chat.folderId ?? null).toBeNull();
      // A pinned chat deleted is no longer listed (its pin goes with it).
      await c.request({ type: "PIN_CHAT", chatId: d.id }, "CHAT_UPDATED");
      await c.request({ type: "DELETE_CHAT", chatId: d.id }, "CHAT_DELETED");
      expect(ids(await list(c))).toEqual([b.id, a.id]);
    });

    test("SEARCH with folderId finds only that folder's chats", async () => {
      const { id, c } = await person();
      const term = word("tram");
      const inside = await create(c, `${term} inside`);
      const outside = await create(c, `${term} outside`);
      const folder = (await c.request({ type: "CREATE_FOLDER", name: "Trips" }, "FOLDERS")).folder as Frame;
      await c.request({ type: "MOVE_CHAT", chatId: inside.id, folderId: folder.id }, "CHAT_UPDATED");
      await srv.store.addMessage({
        id: "m1",
        chat_id: outside.id,
        role: "user",
        content: `${term} again`,
        created_at: new Date().toISOString(),
      });
      const all = await c.request({ type: "SEARCH", query: term }, "SEARCH_RESULTS");
      expect(new Set((all.hits as Frame[]).map((h) => h.chatId))).toEqual(new Set([inside.id, outside.id]));
      const limited = await c.request({ type: "SEARCH", query: term, folderId: folder.id }, "SEARCH_RESULTS");
      expect((limited.hits as Frame[]).map((h) => h.chatId)).toEqual([inside.id]);
      // Limit 1 per page, walked with cursors: still only the folder's chat.
      const paged = await c.request({ type: "SEARCH", query: term, folderId: folder.id, limit: 1 }, "SEARCH_RESULTS");
      expect((paged.hits as Frame[]).map((h) => h.chatId)).toEqual([inside.id]);
      expect(id).toBeTruthy();
    });

    test("another user's chat, folder and reply ids answer exactly like missing ones", async () => {
      const alice = await person();
      const bob = await person();
      const chat = await create(alice.c, "alice's");
      const folder = (await alice.c.request({ type: "CREATE_FOLDER", name: "Private" }, "FOLDERS")).folder as Frame;
      const bobsChat = await create(bob.c, "bob's");
      const missing = crypto.randomUUID();
      const strip = (f: Frame, id: string) => JSON.parse(JSON.stringify(f).replaceAll(id, "<id>"));
      const same = async (frame: (id: string) => Frame, reply: string, foreign: string) => {
        const a = await bob.c.request(frame(foreign), reply);
        const b = await bob.c.request(frame(missing), reply);
        expect(a.type).toBe("ERROR");
        expect(strip(a, foreign)).toEqual(strip(b, missing));
        return a;
      };
      expect((await same((id) => ({ type: "PIN_CHAT", chatId: id }), "CHAT_UPDATED", chat.id)).code).toBe("CHAT_NOT_FOUND");
      expect((await same((id) => ({ type: "MOVE_CHAT", chatId: id, folderId: null }), "CHAT_UPDATED", chat.id)).code).toBe(
        "CHAT_NOT_FOUND",
      );
      expect((await same((id) => ({ type: "RENAME_FOLDER", folderId: id, name: "x" }), "FOLDERS", folder.id)).code).toBe(
        "FOLDER_NOT_FOUND",
      );
      expect((await same((id) => ({ type: "DELETE_FOLDER", folderId: id }), "FOLDERS", folder.id)).code).toBe("FOLDER_NOT_FOUND");
      expect((await same((id) => ({ type: "GET_CHATS", folderId: id }), "CHAT_LIST", folder.id)).code).toBe("FOLDER_NOT_FOUND");
      expect((await same((id) => ({ type: "SEARCH", query: "x", folderId: id }), "SEARCH_RESULTS", folder.id)).code).toBe(
        "FOLDER_NOT_FOUND",
      );
      expect((await same((id) => ({ type: "MOVE_CHAT", chatId: bobsChat.id, folderId: id }), "CHAT_UPDATED", folder.id)).code).toBe(
        "FOLDER_NOT_FOUND",
      );
      expect((await same((id) => ({ type: "RATE_REPLY", chatId: id, messageId: "m", rating: "up" }), "FEEDBACK", chat.id)).code).toBe(
        "CHAT_NOT_FOUND",
      );
      // Nothing of alice's changed, and bob's socket is still usable.
      expect((await list(alice.c)).chats.find((x: Frame) => x.id === chat.id)).toEqual(chat);
      expect((await alice.c.request({ type: "GET_FOLDERS" }, "FOLDERS")).folders).toEqual([folder]);
      expect(ids(await list(bob.c))).toEqual([bobsChat.id]);
    });

    test("a rating per reply version: changeable, in history and export, counted by model at /metrics", async () => {
      const { c, token } = await person();
      const chat = await create(c, "rated");
      c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "hello there" });
      const { traceId } = await c.reply(chat.id);
      const history = await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
      const question = (history.messages as Frame[]).find((m) => m.role === "user")!;
      expect((history.messages as Frame[]).some((m) => "feedback" in m)).toBe(false);

      const up = await c.request({ type: "RATE_REPLY", requestId: "f1", chatId: chat.id, messageId: traceId, rating: "up" }, "FEEDBACK");
      expect(up).toMatchObject({ type: "FEEDBACK", requestId: "f1", chatId: chat.id, messageId: traceId, feedback: { rating: "up" } });
      const down = await c.request(
        { type: "RATE_REPLY", chatId: chat.id, messageId: traceId, rating: "down", comment: "wrong <b>date</b>" },
        "FEEDBACK",
      );
      expect(down.feedback).toMatchObject({ rating: "down", comment: "wrong <b>date</b>" });
      const shown = (await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).messages as Frame[];
      expect(shown.find((m) => m.id === traceId)!.feedback).toEqual(down.feedback);
      expect(shown.find((m) => m.id === question.id)!.feedback).toBeUndefined();

      // Only a reply can be rated; unknown ids and bad ratings are refused, nothing changes.
      expect(await c.request({ type: "RATE_REPLY", chatId: chat.id, messageId: question.id, rating: "up" }, "FEEDBACK")).toMatchObject({
        type: "ERROR",
        code: "INVALID_ARGUMENT",
      });
      expect(await c.request({ type: "RATE_REPLY", chatId: chat.id, messageId: "nope", rating: "up" }, "FEEDBACK")).toMatchObject({
        code: "MESSAGE_NOT_FOUND",
      });
      expect(await c.request({ type: "RATE_REPLY", chatId: chat.id, messageId: traceId, rating: "meh" }, "FEEDBACK")).toMatchObject({
        code: "INVALID_FRAME",
      });

      // A regeneration is another version: rated on its own.
      const regen = await c.request({ type: "REGENERATE", chatId: chat.id }, "REGENERATING");
      await c.reply(chat.id);
      const second = await c.request({ type: "RATE_REPLY", chatId: chat.id, messageId: regen.traceId, rating: "up" }, "FEEDBACK");
      expect(second.feedback.rating).toBe("up");

      const exported = (await (
        await fetch(`${srv.url}/api/chats/${chat.id}/export`, { headers: { Authorization: `Bearer ${token}` } })
      ).json()) as Frame;
      const byId = new Map((exported.messages as Frame[]).map((m) => [m.id, m]));
      expect(byId.get(traceId)!.feedback).toEqual(down.feedback);
      expect(byId.get(regen.traceId)!.feedback).toEqual(second.feedback);
      const md = await (
        await fetch(`${srv.url}/api/chats/${chat.id}/export?format=md`, { headers: { Authorization: `Bearer ${token}` } })
      ).text();
      expect(md).toContain("rated 👎");
      expect(md).toContain("> Feedback: wrong <b>date</b>");

      const metrics = await (await fetch(`${srv.url}/metrics`, { headers: { Authorization: `Bearer ${LEGACY}` } })).text();
      const count = (rating: string) =>
        Number(new RegExp(`pichat_feedback_total\\{model="[^"]+",rating="${rating}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
      expect(count("up")).toBeGreaterThanOrEqual(2);
      expect(count("down")).toBeGreaterThanOrEqual(1);
      expect(metrics).not.toContain("wrong");

      // Taken back: gone from history.
      expect((await c.request({ type: "RATE_REPLY", chatId: chat.id, messageId: traceId, rating: null }, "FEEDBACK")).feedback).toBeNull();
      const again = (await c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).messages as Frame[];
      expect(again.find((m) => m.id === traceId)?.feedback).toBeUndefined();
    });
  });
}
