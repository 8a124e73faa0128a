import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { until } from "./support/until";
import { addUser } from "./support/users";
import type { Frame, TestClient } from "./support/ws-client";

// Temporary chats over real sockets on both stores: never in the chat list, search or export, never
// told to the user's other sockets (the original web UI), gone with their messages once the owner's
// last socket closes or the TTL passes, and kept as a normal chat on KEEP_CHAT.

const LEGACY = "legacy-token-temporary-4f6a8c0e2b";
const TTL_S = 4;

let cosmos: CosmosTestServer;
beforeAll(async () => {
  cosmos = await startCosmosServer();
});
afterAll(async () => {
  await cosmos?.stop();
});

for (const kind of ["sqlite", "cosmos"] as const) {
  // The tests wait out real leases and TTLs, each with users of its own: they run side by side.
  describe.concurrent(`temporary chats on ${kind}`, () => {
    let store: Store | undefined;
    let other: Store | undefined;
    let short: TestServer; // TEMPORARY_CHAT_TTL_S=4
    let srv: TestServer; // the default TTL (an hour): only the owner leaving ends a chat
    beforeAll(async () => {
      if (kind === "cosmos") store = await openTestCosmosStore(cosmos, "pichat-temporary");
      const env = { API_TOKEN: LEGACY, CHAT_TITLES: "false" };
      short = await startTestServer({ ...env, TEMPORARY_CHAT_TTL_S: String(TTL_S) }, store ? { store } : {});
      // Its own store (a database of its own on Cosmos): the short-TTL server's sweeps are its own to announce.
      other = kind === "cosmos" ? await openTestCosmosStore(cosmos, "pichat-temporary-long") : undefined;
      srv = await startTestServer(env, other ? { store: other } : {});
    });
    afterAll(async () => {
      await srv?.close();
      await short?.close();
      await store?.close();
      await other?.close();
    });

    const person = async (on = srv) => {
      const u = await addUser(on.store);
      return { ...u, c: await on.connect({ token: u.token }) };
    };
    const temporary = async (c: TestClient, name = "secret plans") =>
      (await c.request({ type: "CREATE_CHAT", name, temporary: true }, "NEW_CHAT")).chat as Frame;
    const ids = async (c: TestClient, payload: Frame = {}) =>
      ((await c.request({ type: "GET_CHATS", ...payload }, "CHAT_LIST")).chats as Frame[]).map((x) => x.id);

    test("not listed, searched, exported, shared or told to other sockets; usable like any chat; gone after the TTL", async () => {
      const u = await person(short);
      const other = await short.connect({ token: u.token });
      const normal = (await u.c.request({ type: "CREATE_CHAT", name: "normal" }, "NEW_CHAT")).chat as Frame;
      const word = `ephemeral${crypto.randomUUID().slice(0, 8)}`;
      const chat = await temporary(u.c, `${word} chat`);
      expect(chat).toMatchObject({ temporary: true, name: `${word} chat` });
      // The expiry is marked just before the chat is written, so it is the TTL from a moment before created_at.
      const lifetime = Date.parse(chat.expiresAt) - Date.parse(chat.created_at);
      expect(lifetime).toBeGreaterThan(TTL_S * 1000 - 1000);
      expect(lifetime).toBeLessThanOrEqual(TTL_S * 1000);

      u.c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: `${word} question` });
      await u.c.reply(chat.id);
      const history = await u.c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY");
      expect((history.messages as Frame[]).length).toBe(2);

      expect(await ids(u.c)).toEqual([normal.id]);
      expect(await ids(u.c, { temporary: true })).toEqual([chat.id]);
      const listed = (await u.c.request({ type: "GET_CHATS", temporary: true }, "CHAT_LIST")).chats[0];
      expect(listed).toMatchObject({ id: chat.id, temporary: true, expiresAt: chat.expiresAt });
      expect((await u.c.request({ type: "SEARCH", query: word }, "SEARCH_RESULTS")).hits).toEqual([]);
      const exported = await fetch(`${short.url}/api/chats/${chat.id}/export`, { headers: { Authorization: `Bearer ${u.token}` } });
      expect(exported.status).toBe(400);
      expect(await u.c.request({ type: "SHARE_CHAT", chatId: chat.id }, "SHARE")).toMatchObject({ code: "INVALID_ARGUMENT" });

      // The TTL passes while the owner is connected: the chat goes, messages and all, and the socket is told.
      await u.c.next((f) => f.type === "CHAT_DELETED" && f.chatId === chat.id, (TTL_S + 8) * 1000);
      expect(await short.store.getChat(u.id, chat.id)).toBeUndefined();
      expect(await short.store.listMessages(chat.id, { limit: 10 })).toEqual([]);
      expect(await u.c.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).toMatchObject({ code: "CHAT_NOT_FOUND" });
      // The other socket (as the original web UI would be) never heard of it being made.
      expect(other.frames.filter((f) => f.type === "CHAT_CREATED" || f.type === "CHAT_UPDATED").map((f) => f.chat.id)).toEqual([normal.id]);
    }, 30_000);

    test("gone once its owner's last socket closes; another user's temporary chats stay", async () => {
      const u = await person();
      const second = await srv.connect({ token: u.token });
      const bystander = await person();
      const chat = await temporary(u.c);
      const theirs = await temporary(bystander.c);
      u.c.close();
      // One socket still open: the chat stays past the leave grace (3 s) and a sweep (every 2 s).
      await Bun.sleep(6_000);
      expect(await ids(second, { temporary: true })).toEqual([chat.id]);
      second.close();
      await until(async () => (await srv.store.getChat(u.id, chat.id)) === undefined, "the temporary chat to go", 15_000);
      expect(await srv.store.getChat(bystander.id, theirs.id)).toBeDefined();
    }, 30_000);

    test("KEEP_CHAT makes it a normal chat: listed, searchable, told to other sockets, and it outlives the socket", async () => {
      const u = await person();
      const other = await srv.connect({ token: u.token });
      const stranger = await person();
      const chat = await temporary(u.c, "keep me");
      expect(await stranger.c.request({ type: "KEEP_CHAT", chatId: chat.id }, "CHAT_UPDATED")).toMatchObject({ code: "CHAT_NOT_FOUND" });
      const kept = await u.c.request({ type: "KEEP_CHAT", requestId: "k1", chatId: chat.id }, "CHAT_UPDATED");
      expect(kept).toMatchObject({ type: "CHAT_UPDATED", requestId: "k1", chat: { id: chat.id, name: "keep me", temporary: false } });
      expect((await other.next((f) => f.type === "CHAT_CREATED" && f.chat.id === chat.id)).chat.temporary).toBeUndefined();
      expect(await ids(u.c)).toEqual([chat.id]);
      u.c.close();
      other.close();
      // Past the leave grace and a sweep: still there.
      await Bun.sleep(6_000);
      expect(await srv.store.getChat(u.id, chat.id)).toBeDefined();
    }, 30_000);
  });
}
